"""Stateful transforms on Dask (tiers.scale.transforms): learned over every partition, as in memory.

``center()``, ``scale()``, ``standardize()`` and ``poly()`` are learned by formulaic from the
complete rows of the in-memory fit; the Dask fit must learn the same state from per-partition
summaries and code every partition, and new data, with it. Tolerances: `tests.tolerances`
(DISTRIBUTED_*): the state differs from formulaic's only by rounding in a different order of sums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.test_dask import assert_same, client, fit_quietly, frames_of  # noqa: F401
from tests.tolerances import DISTRIBUTED_ESTIMATE_TOL
from tiers.errors import DataError
from tiers.formula.parse import parse
from tiers.scale.transforms import learn, stateful_calls, summarise

dd = pytest.importorskip("dask.dataframe")


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    d = tiers.simulate(tiers.seed_design(districts=6), seed=11)
    rng = np.random.default_rng(7)
    d["x"] = rng.normal(50.0, 10.0, len(d))
    d["z"] = rng.gamma(2.0, 3.0, len(d))
    # missing values in partitions 0, 2 and 4 of `uneven`: centring must use the complete rows
    d.loc[d.index[[0, 3, 5000, 9000]], "x"] = np.nan
    d.loc[d.index[[10, 4000]], "perform"] = np.nan
    d.loc[d.index[[8000]], "z"] = np.nan
    return d


def uneven(d: pd.DataFrame):
    """Partitions of 1, 0, 6999, 0 and the remaining rows."""
    cuts = [0, 1, 1, 7000, 7000, len(d)]
    return frames_of([d.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)])


FORMULAS = [
    "perform ~ center(x) + scale(z) + (1 | dist_id/school_id)",
    "perform ~ poly(x, 3) + standardize(z) + scale(z, center=False, ddof=0) + (1 | dist_id/school_id)",
    "perform ~ poly(x, 2) * tutoring + poly(z, 2, raw=True) + (1 | school_id)",
    "perform ~ center(x) + (center(z) | school_id)",
    "center(perform) ~ I(center(x) ** 2) + np.log(scale(z, center=False)) + (1 | school_id)",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_stateful_transforms_equal_in_memory(client, data, formula):  # noqa: F811
    ref = fit_quietly(formula, data)
    res = fit_quietly(formula, uneven(data))
    assert ref.n_dropped > 0
    assert_same(res, ref)
    # the state learned from the summaries is formulaic's on all the complete rows
    want = ref.design.fixed_spec.transform_state
    got = res.design.fixed_spec.transform_state
    assert set(want) <= set(got)
    for key, state in want.items():
        for name, value in state.items():
            if isinstance(value, dict):  # poly: alpha and norms2 by degree
                assert value.keys() == got[key][name].keys()
                for k, v in value.items():
                    assert got[key][name][k] == pytest.approx(v, rel=1e-12)
            elif value is None:
                assert got[key][name] is None
            else:
                assert got[key][name] == pytest.approx(value, rel=1e-12)


def test_new_data_is_coded_with_the_learned_state(client, data):  # noqa: F811
    f = "perform ~ poly(x, 2) + center(z) + (center(z) | school_id)"
    ref = fit_quietly(f, data)
    res = fit_quietly(f, uneven(data))
    # far from the fitted rows, and a single row: relearning on it would centre it to 0
    new = data.dropna().sample(5, random_state=3).assign(x=lambda t: t["x"] + 40.0)
    for rows in (new, new.iloc[:1]):
        for re in ("exclude", "include"):
            a = res.predict(rows, re=re)["mean"].to_numpy()
            b = ref.predict(rows, re=re)["mean"].to_numpy()
            np.testing.assert_allclose(a, b, rtol=DISTRIBUTED_ESTIMATE_TOL, atol=1e-8)


def test_poly_state_is_exact_for_large_offsets_and_few_values():
    """The Gauss rules of the partitions give formulaic's recurrence on all rows.

    x is 1e4 plus unit noise (the monomials' moments would cancel to nothing), and one partition
    holds two distinct values, fewer than the rule's points; another holds one row.
    """
    from formulaic import model_matrix as fmm

    rng = np.random.default_rng(1)
    x = np.concatenate([1e4 + rng.normal(size=3000), [1e4 + 0.5] * 40 + [1e4 - 2.0] * 9, [1e4]])
    frame = pd.DataFrame({"x": x})
    parts = [frame.iloc[a:b] for a, b in [(0, 1000), (1000, 3000), (3000, 3049), (3049, 3050)]]
    calls = stateful_calls(parse("y ~ poly(x, 4) + scale(x) + (1 | g)"))
    state = learn(calls, [summarise(calls, p.reset_index(drop=True)) for p in parts])
    want = fmm("poly(x, 4) + scale(x)", frame).model_spec.transform_state
    for name in ("alpha", "norms2"):
        got = state["poly(x, 4)"][name]
        for k, v in want["poly(x, 4)"][name].items():
            assert got[k] == pytest.approx(v, rel=1e-9), (name, k)
    assert state["scale(x)"]["center"] == pytest.approx(want["scale(x)"]["center"], rel=1e-14)
    assert state["scale(x)"]["scale"] == pytest.approx(want["scale(x)"]["scale"], rel=1e-12)


@pytest.mark.parametrize(
    ("formula", "words"),
    [
        ("perform ~ bs(x, 3) + (1 | school_id)", r"bs\(\) in the fixed part .* knots at quantiles"),
        ("perform ~ lag(x) + (1 | school_id)", r"lag\(\) .* order of the rows"),
        ("perform ~ x + (cr(z, 3) | school_id)", r"cr\(\) in the random-effects term"),
        ("perform ~ poly(center(x), 2) + (1 | school_id)", r"center\(\) inside poly\(\)"),
    ],
)
def test_what_cannot_be_learned_from_partitions_is_refused(client, data, formula, words):  # noqa: F811
    with pytest.raises(DataError, match=words) as info:
        tiers.fit(formula, dd.from_pandas(data, npartitions=2))
    assert "center(), scale(), standardize(), poly()" in str(info.value) or "inside" in words
