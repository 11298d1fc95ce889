"""The engine contract, the staged API, sufficient statistics and results as values.

* every engine satisfies `tiers.engine.contract.Engine`, and nothing else is needed to fit;
* every analytic gradient equals central differences of the deviance on random designs and
  random theta (nested, tree and crossed engines, REML and ML);
* the nested engine built from sufficient statistics, combined chunk by chunk, equals the one
  built from the rows;
* prepare -> deviance_function -> optimize_theta -> assemble is tiers.fit;
* results and studies pickle to equal values, also across a process pool.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiers
from tiers.engine.contract import Engine
from tiers.engine.nested_scalar import NestedProblem
from tiers.engine.statistics import NestedStatistics

from .conftest import fit_reference

# lme4 syntax; which engine each design calls for
FORMULAS = {
    "nested": "y ~ x + (1 | a/b)",
    "tree": "y ~ x + (1 + x | a) + (1 | a:b)",
    "crossed": "y ~ x + (1 | a) + (1 | c)",
    "crossed_slopes": "y ~ x + (1 + x | a) + (1 | c)",
}


def random_data(seed: int, n: int = 300) -> pd.DataFrame:
    """Unbalanced nested a > b, a crossed factor c, a covariate x and a response."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 7, n)
    b = rng.integers(0, 4, n)
    c = rng.integers(0, 9, n)
    x = rng.normal(size=n)
    y = (
        1.0
        + 0.4 * x
        + rng.normal(size=7)[a] * (1 + 0.3 * x)
        + 0.7 * rng.normal(size=28)[a * 4 + b]
        + 0.5 * rng.normal(size=9)[c]
        + rng.normal(size=n)
    )
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "c": c})


def random_theta(engine: Engine, rng: np.random.Generator) -> np.ndarray:
    """A theta inside the bounds, away from the boundary where the gradient is one-sided."""
    lo = np.where(np.isfinite(engine.theta_lower), engine.theta_lower, -1.0)
    theta = lo + rng.uniform(0.2, 1.5, engine.n_theta)
    return np.minimum(
        theta, np.where(np.isfinite(engine.theta_upper), engine.theta_upper - 0.05, np.inf)
    )


@pytest.mark.parametrize("kind", list(FORMULAS))
def test_every_engine_satisfies_the_contract(kind: str) -> None:
    design = tiers.prepare(FORMULAS[kind], random_data(1))
    engine = tiers.deviance_function(design)
    assert isinstance(engine, Engine)
    assert engine.label == design.engine == ("crossed" if kind.startswith("crossed") else kind)
    assert engine.theta_start.shape == engine.theta_lower.shape == (engine.n_theta,)
    sol = engine.solve(engine.theta_start)
    assert sol.deviance == pytest.approx(engine.deviance(engine.theta_start), rel=1e-12)
    modes = engine.conditional_modes(engine.theta_start, sol.beta, sol.sigma)
    assert len(modes) == len(design.terms)
    for t, m in zip(design.terms, modes, strict=True):
        assert m.b.shape == (t.nlevels, t.q)
        assert m.cov is not None and m.cov.shape == (t.nlevels, t.q, t.q)
    assert engine.with_reml(not engine.reml).reml is not engine.reml


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["nested", "tree", "crossed"]),
    seed=st.integers(0, 2**31 - 1),
    reml=st.booleans(),
)
def test_analytic_gradient_equals_finite_differences(kind: str, seed: int, reml: bool) -> None:
    engine = tiers.deviance_function(
        tiers.prepare(FORMULAS[kind], random_data(seed % 97)), reml=reml
    )
    assert engine.has_gradient
    theta = random_theta(engine, np.random.default_rng(seed))
    _, grad = engine.deviance_and_gradient(theta)
    fd = np.empty_like(theta)
    for i in range(theta.size):
        h = 1e-5 * max(1.0, abs(theta[i]))
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        fd[i] = (engine.deviance(up) - engine.deviance(dn)) / (2 * h)
    # central differences: error ~ h^2 f''' + eps f / h, about 1e-6 of the gradient's scale
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_engine_without_gradient_says_so() -> None:
    engine = tiers.deviance_function(tiers.prepare(FORMULAS["crossed_slopes"], random_data(2)))
    assert not engine.has_gradient
    with pytest.raises(NotImplementedError, match="no analytic gradient"):
        engine.deviance_and_gradient(engine.theta_start)
    opt = tiers.optimize_theta(engine)  # the optimizer differentiates numerically instead
    assert opt.converged


def _same_modes(e1: Engine, e2: Engine, theta: np.ndarray, sol) -> None:
    """Both engines give the same conditional modes and covariances at theta."""
    m1s = e1.conditional_modes(theta, sol.beta, sol.sigma)
    m2s = e2.conditional_modes(theta, sol.beta, sol.sigma)
    for m1, m2 in zip(m1s, m2s, strict=True):
        np.testing.assert_allclose(m1.b, m2.b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m1.cov, m2.cov, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("chunks", [1, 3, 7])
def test_nested_engine_from_combined_statistics(chunks: int) -> None:
    design = tiers.prepare(FORMULAS["nested"], random_data(3))
    y, X, tree = design.frame.y, design.frame.X, design.nesting.tree
    whole = NestedProblem(y, X, tree, reml=True)
    rows = np.array_split(np.random.default_rng(0).permutation(y.size), chunks)
    stats = None
    for idx in rows:
        part_tree = type(tree)(tree.leaf[idx], tree.parents, tree.sizes)
        part = NestedStatistics.from_arrays(y[idx], X[idx], part_tree, intercept=0)
        stats = part if stats is None else stats.combine(part)
    built = NestedProblem.from_statistics(stats, reml=True)
    rng = np.random.default_rng(5)
    for _ in range(5):
        theta = rng.uniform(0.0, 2.0, whole.n_theta)
        assert built.deviance(theta) == pytest.approx(whole.deviance(theta), rel=1e-11)
        np.testing.assert_allclose(
            built.deviance_and_gradient(theta)[1], whole.deviance_and_gradient(theta)[1], rtol=1e-8
        )
    sol = whole.solve(theta)
    np.testing.assert_allclose(built.solve(theta).beta, sol.beta, rtol=1e-10)
    _same_modes(built, whole, theta, sol)


@pytest.mark.parametrize("weighted", [False, True])
def test_statistics_of_rows_sorted_by_leaf_equal_the_bincount_path(monkeypatch, weighted) -> None:
    """Sorted rows are summed by runs, chunk by chunk (a leaf may span chunks); shuffled rows by
    bincount: the same statistics up to rounding."""
    import tiers.engine.statistics as st_mod

    design = tiers.prepare(FORMULAS["nested"], random_data(4))
    y, X, tree = design.frame.y, design.frame.X, design.nesting.tree
    order = np.argsort(tree.leaf, kind="stable")
    w = np.random.default_rng(1).uniform(0.5, 2.0, y.size) if weighted else None
    sorted_tree = type(tree)(tree.leaf[order], tree.parents, tree.sizes)
    shuffled = np.random.default_rng(2).permutation(y.size)
    shuffled_tree = type(tree)(tree.leaf[shuffled], tree.parents, tree.sizes)
    assert st_mod._non_decreasing(sorted_tree.leaf, 7)
    assert not st_mod._non_decreasing(shuffled_tree.leaf, 7)
    monkeypatch.setattr(st_mod, "_CHUNK_CELLS", 7 * (X.shape[1] + 1))  # 7 rows a chunk
    runs = NestedStatistics.from_arrays(
        y[order], X[order], sorted_tree, weights=None if w is None else w[order]
    )
    counts = NestedStatistics.from_arrays(
        y[shuffled], X[shuffled], shuffled_tree, weights=None if w is None else w[shuffled]
    )
    # sums of the same O(1) centred values in another order: rounding of a few ulps of the total
    scale = np.abs(runs.dtd).max()
    np.testing.assert_allclose(runs.shift, counts.shift, rtol=1e-13)
    np.testing.assert_allclose(runs.dtd, counts.dtd, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(runs.leaf, counts.leaf, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(runs.colsum, counts.colsum, atol=1e-10 * scale)


@pytest.mark.parametrize("weighted", [False, True])
def test_balanced_leaves_are_summed_by_strides_as_by_bincount(monkeypatch, weighted) -> None:
    """r rows in every leaf, sorted by leaf: strided sums of chunks of whole leaves give bit for
    bit the leaf sums of the bincount path (each leaf's rows added in row order), in the leaf
    table and read again from the rows (`RowSums`)."""
    import tiers.engine.statistics as st_mod

    data = tiers.simulate(tiers.seed_design(districts=2), seed=3)  # 2 rows a student
    design = tiers.prepare("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", data)
    y, X, tree = design.frame.y, design.frame.X, design.nesting.tree
    assert st_mod.uniform_runs(tree.leaf, tree.sizes[-1]) == 2
    assert st_mod.uniform_runs(tree.leaf[::-1].copy(), tree.sizes[-1]) == 0
    w = np.random.default_rng(1).uniform(0.5, 2.0, y.size) if weighted else None
    monkeypatch.setattr(st_mod, "_CHUNK_CELLS", 7 * (X.shape[1] + 1))  # 7 rows: cut at 8
    strided = NestedStatistics.from_arrays(y, X, tree, weights=w)
    from_rows = st_mod.RowSums.from_rows(y, X, tree, weights=w)
    assert from_rows is not None
    monkeypatch.setattr(st_mod, "uniform_runs", lambda *args: 0)
    counted = NestedStatistics.from_arrays(y, X, tree, weights=w)
    np.testing.assert_array_equal(strided.leaf, counted.leaf)
    np.testing.assert_array_equal(from_rows.leaf_table(), counted.leaf)
    np.testing.assert_array_equal(strided.dtd, counted.dtd)


def test_nested_modes_from_statistics_equal_the_tree_engine() -> None:
    """The scalar engine's modes (from leaf sums) equal the general tree computation."""
    design = tiers.prepare(FORMULAS["nested"], random_data(4))
    scalar = tiers.deviance_function(design)
    from tiers.engine.nested_block import TreeProblem

    block = TreeProblem(
        design.frame.y, design.frame.X, design.levels, list(design.nesting.tree.parents)
    )
    theta = np.array([0.8, 0.5])
    sol = scalar.solve(theta)
    _same_modes(scalar, block, theta, sol)


@pytest.mark.filterwarnings("ignore::tiers.SingularFitWarning")
@pytest.mark.parametrize("kind", ["nested", "tree", "crossed"])
def test_staged_api_is_fit(kind: str) -> None:
    data = random_data(6)
    res = tiers.fit(FORMULAS[kind], data)
    design = tiers.prepare(FORMULAS[kind], data)
    devfun = tiers.deviance_function(design, reml=True)
    opt = tiers.optimize_theta(devfun)
    staged = tiers.assemble(design, opt, engine=devfun)
    assert isinstance(staged, tiers.LmmResult)
    np.testing.assert_array_equal(staged.theta, res.theta)
    np.testing.assert_array_equal(staged.beta, res.beta)
    assert staged.criterion == res.criterion
    pinned = tiers.assemble(design, res.theta)  # a theta given: certified, not moved
    assert pinned.opt.optimizer == "none (theta given)" and pinned.converged
    np.testing.assert_array_equal(pinned.theta, res.theta)
    assert pinned.criterion == pytest.approx(res.criterion, rel=1e-14)
    with pytest.raises(ValueError, match="theta must have"):
        tiers.assemble(design, np.ones(devfun.n_theta + 1))


def _values(res: tiers.LmmResult) -> tuple:
    return (
        res.to_dict() | {"fit_seconds": 0.0},
        res.summary("stata"),
        res.summary("lme4"),
        {k: v.to_dict() for k, v in res.ranef().items()},
    )


def _roundtrip(blob: bytes) -> bytes:
    """Unpickle in a worker, use the result there (engine rebuilt from the design), send back."""
    res = pickle.loads(blob)
    res.ranef()
    return pickle.dumps((res, _values(res)))


@pytest.mark.parametrize(
    ("case", "key"),
    [("pastes", "nested_REML"), ("sleepstudy", "corr_REML"), ("penicillin", "crossed_ML")],
)
def test_results_pickle_to_equal_values(case: str, key: str) -> None:
    res, _ = fit_reference(case, key)
    want = _values(res)
    back = pickle.loads(pickle.dumps(res))
    assert type(back) is tiers.LmmResult
    assert "devfun" not in pickle.loads(pickle.dumps(res)).__dict__  # the engine is rebuilt
    assert _values(back) == want
    assert back.refit(reml=not res.reml).criterion == res.refit(reml=not res.reml).criterion
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        remote, remote_values = pickle.loads(pool.submit(_roundtrip, pickle.dumps(res)).result())
    assert remote_values == want
    assert _values(remote) == want


def test_studies_pickle_to_equal_values() -> None:
    from tiers.simulation.data import Covariate, Level, NestedDesign

    design = NestedDesign(
        levels=(Level("a", 3, 1.0), Level("b", 3, 0.5)),
        obs_per_unit=4,
        residual_sd=1.0,
        covariates=(Covariate("x", "bernoulli", coef=0.5, p=0.4),),
        response="y",
    )
    study = tiers.run_study(design, {"m": "y x || a: || b:"}, sizes=[3], replicates=3, seed=1)
    back = pickle.loads(pickle.dumps(study))
    pd.testing.assert_frame_equal(back.summary, study.summary)
    pd.testing.assert_frame_equal(back.replicates, study.replicates)
    assert back.design == study.design and back.estimators == study.estimators
