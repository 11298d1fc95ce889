"""Crossed designs at ratings scale: ``N P N'`` formed per evaluation (`crossed_direct`) against the
pair list and a dense computation; the refusal of designs too large to factor (`crossed_fill`).

The direct form is exercised on small designs by lowering `crossed.PAIRS_MAX` to 0 and by moving
the dense/sparse split (`crossed_direct._DENSE_S`) so that all, none or some levels are dense.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import reverse_cuthill_mckee

import tiers
import tiers.engine.crossed as crossed
import tiers.engine.crossed_blocks as cb
import tiers.engine.crossed_direct as cd
import tiers.engine.crossed_fill as crossed_fill
from tiers.design import design as design_module
from tiers.design import diagnostics
from tiers.engine.crossed import CrossedProblem
from tiers.engine.crossed_direct import DirectCoupling
from tiers.engine.crossed_fill import envelope
from tiers.errors import DataError

from .test_crossed import dense_reference, random_design

#: Costs of a dense multiply-add and shares of popular columns: every block dense (one syrk),
#: none, a mix (a popular block of 40% of the columns, some levels dense in the rest), and the
#: cost model's own choice.
SPLITS = {"all_dense": 1e-15, "none_dense": 1.0, "mixed": 4e-10, "model": cd._DENSE_S}
POPULAR = {"all_dense": 1.0, "none_dense": 0.0, "mixed": 0.4, "model": None}


def direct_split(monkeypatch, split: str) -> None:
    monkeypatch.setattr(crossed, "PAIRS_MAX", 0)
    monkeypatch.setattr(cd, "_DENSE_S", SPLITS[split])
    monkeypatch.setattr(cd, "_POPULAR_FORCE", POPULAR[split])


def direct_problem(monkeypatch, y, X, terms, *, reml: bool, split: str) -> CrossedProblem:
    direct_split(monkeypatch, split)
    return CrossedProblem(y, X, terms, reml=reml)


def ratings_like(seed: int, n: int = 400, users: int = 30, items: int = 25) -> pd.DataFrame:
    """Skewed crossed counts, singleton items, a partly nested third factor."""
    rng = np.random.default_rng(seed)
    u = np.minimum(rng.geometric(0.08, n) - 1, users - 1)
    i = rng.integers(0, items - 3, n)
    i[:3] = [items - 3, items - 2, items - 1]  # three items rated once
    g = u // 5  # users nested in groups of 5
    y = rng.normal(size=n) + 0.5 * rng.normal(size=users)[u] + 0.4 * rng.normal(size=items)[i]
    return pd.DataFrame(
        {
            "y": y,
            "x": rng.normal(size=n),
            "u": u.astype(str),
            "i": i.astype(str),
            "g": g.astype(str),
        }
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31 - 1),
    nterms=st.integers(2, 3),
    reml=st.booleans(),
    split=st.sampled_from(sorted(SPLITS)),
)
def test_direct_equals_dense_computation(monkeypatch, seed, nterms, reml, split):
    y, X, terms, theta = random_design(seed, nterms, intercepts_only=True)
    problem = direct_problem(monkeypatch, y, X, terms, reml=reml, split=split)
    if problem.rest is None:  # one term left after the first: nothing coupled
        return
    assert isinstance(problem.coupling, DirectCoupling)
    ev = problem.evaluate(theta)
    ldL2, dev, beta, modes = dense_reference(y, X, terms, theta, problem.term_slices, reml)
    np.testing.assert_allclose(ev.ldL2, ldL2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ev.deviance, dev, rtol=1e-10)
    np.testing.assert_allclose(problem.beta(ev), beta, rtol=1e-8, atol=1e-10)
    for (b, sd), (b_ref, sd_ref) in zip(problem.conditional_sds(theta), modes, strict=True):
        np.testing.assert_allclose(b, b_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sd, sd_ref, rtol=1e-8, atol=1e-10)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31 - 1),
    nterms=st.integers(2, 3),
    reml=st.booleans(),
    split=st.sampled_from(sorted(SPLITS)),
)
def test_direct_gradient_matches_finite_differences(monkeypatch, seed, nterms, reml, split):
    """The direct path's analytic gradient (popular-first order, kept products) against central
    differences of its deviance."""
    y, X, terms, theta = random_design(seed, nterms, intercepts_only=True)
    theta = np.abs(theta) + 0.05  # central differences need the interior
    problem = direct_problem(monkeypatch, y, X, terms, reml=reml, split=split)
    if problem.rest is None:
        return
    assert problem.has_gradient and isinstance(problem.coupling, DirectCoupling)
    f, g = problem.deviance_and_gradient(theta)
    fd = np.empty_like(theta)
    for i in range(theta.size):
        h = 1e-5 * max(1.0, theta[i])
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        fd[i] = (problem.deviance(up) - problem.deviance(dn)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * max(1.0, abs(f)))
    # the kept products are reused, not stale: the start again gives the same numbers
    f2, g2 = problem.deviance_and_gradient(theta)
    assert f2 == f and np.array_equal(g2, g)


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 | u) + (1 | i)",
        "y ~ x + (1 | u) + (1 | i) + (1 | g)",
        "y ~ 1 + (1 | i) + (1 | u)",
    ],
)
def test_direct_equals_pair_list(monkeypatch, split, reml, formula):
    """Deviance and analytic gradient agree with the pair-list form (partly nested, singletons)."""
    data = ratings_like(7)
    problem_list, *_ = build(formula, data, reml=reml)
    y, X, terms = problem_list.y, problem_list.X, problem_list.terms
    problem = direct_problem(monkeypatch, y, X, terms, reml=reml, split=split)
    assert isinstance(problem.coupling, DirectCoupling)
    assert isinstance(problem_list.coupling, cb.Coupling)
    cp = problem.coupling
    if split == "mixed":
        assert 0 < cp.popular < cp.r
        assert 0 < cp.heavy.sum() < cp.heavy.size
    elif split != "model":
        assert cp.popular == (cp.r if split == "all_dense" else 0)
    rng = np.random.default_rng(1)
    for theta in (problem.theta_start, rng.uniform(0.1, 1.5, problem.n_theta)):
        f_list, g_list = problem_list.deviance_and_gradient(theta)
        f, g = problem.deviance_and_gradient(theta)
        np.testing.assert_allclose(f, f_list, rtol=1e-12)
        np.testing.assert_allclose(g, g_list, rtol=1e-8, atol=1e-8)


def build(formula: str, data: pd.DataFrame, *, reml: bool):
    from .test_crossed import build as build_crossed

    return build_crossed(formula, data, reml=reml)


def test_direct_fit_matches_pair_list_fit(monkeypatch):
    """The optimum does not depend on how N P N' is formed."""
    data = ratings_like(11, n=600)
    formula = "y ~ x + (1 | u) + (1 | i)"
    ref = tiers.fit(formula, data)
    direct_split(monkeypatch, "mixed")
    res = tiers.fit(formula, data)
    assert res.engine == "crossed"
    np.testing.assert_allclose(res.deviance, ref.deviance, rtol=1e-10)
    np.testing.assert_allclose(res.theta, ref.theta, atol=1e-6)


# ------------------------------------------------------------------------------- refusal --


def only_engine_limits(monkeypatch) -> None:
    """Skip the design's own size check (rows x effects), which a limit this low trips first."""
    monkeypatch.setattr(design_module, "check_resources", lambda *args: None)


def test_refused_above_the_memory_limit(monkeypatch):
    """A limit set low refuses the fit before any numeric work, naming the predicted size."""
    data = ratings_like(3)
    only_engine_limits(monkeypatch)
    low = tiers.Limits(max_bytes=1000.0)
    with pytest.raises(DataError, match=r"would need about [\d.]+ MiB \([\d,]+ pairs .* no fit"):
        tiers.fit("y ~ x + (1 | u) + (1 | i)", data, limits=low)
    # formed per evaluation, the pairs are not listed: the dense Schur complement, the product
    # being formed, its single-precision copy and the kept products are what count
    monkeypatch.setattr(crossed, "PAIRS_MAX", 0)
    with pytest.raises(DataError, match=rf"{3 + cd.KEEP} dense 25 x 25 matrices"):
        tiers.fit("y ~ x + (1 | u) + (1 | i)", data, limits=tiers.Limits(max_bytes=10_000.0))
    # the session-wide default applies when no limits are passed
    monkeypatch.setattr(diagnostics, "LIMITS", tiers.Limits(max_bytes=10_000.0))
    with pytest.raises(DataError, match=rf"{3 + cd.KEEP} dense 25 x 25 matrices"):
        tiers.fit("y ~ x + (1 | u) + (1 | i)", data)
    enough = tiers.Limits(max_bytes=(3 + cd.KEEP) * 8.0 * 25 * 25)
    fit = tiers.fit("y ~ x + (1 | u) + (1 | i)", data, limits=enough)
    assert np.isfinite(fit.deviance)


def test_sparse_path_refused_with_predicted_fill(monkeypatch):
    """The sparse factor's predicted fill (envelope after reverse Cuthill-McKee) is what is refused."""
    data = ratings_like(5)
    only_engine_limits(monkeypatch)
    monkeypatch.setattr(crossed_fill, "PAIR_BYTES", 0.0)  # on this small design the list is larger
    monkeypatch.setattr(cb, "DENSE_MAX", 0)
    with pytest.raises(DataError, match=r"sparse factor .* predicted at up to [\d,]+ nonzeros"):
        tiers.fit("y ~ x + (1 | u) + (1 | i)", data, limits=tiers.Limits(max_bytes=2000.0))


def test_nothing_refused_under_the_default_limit(monkeypatch):
    monkeypatch.setattr(cb, "DENSE_MAX", 0)
    res = tiers.fit("y ~ x + (1 | u) + (1 | i)", ratings_like(5))
    assert np.isfinite(res.deviance)


def test_envelope_bounds_the_fill():
    """In the reverse Cuthill-McKee ordering the Cholesky factor's nonzeros lie inside the envelope;
    a band has no fill beyond itself."""
    rng = np.random.default_rng(0)
    r = 60
    rows = rng.integers(0, r, 150)
    cols = rng.integers(0, r, 150)
    A = np.eye(r) * 400.0
    A[rows, cols] += 1.0
    A[cols, rows] += 1.0
    perm = reverse_cuthill_mckee(sp.csr_matrix(A), symmetric_mode=True)
    L = np.linalg.cholesky(A[np.ix_(perm, perm)])
    fill = np.count_nonzero(L)
    env = envelope(sp.csr_matrix(A))
    assert r < fill <= env < r * (r + 1) // 2
    band = np.arange(r - 1)
    tri = sp.coo_matrix((np.ones(r - 1), (band + 1, band)), shape=(r, r))
    assert envelope(tri + tri.T) == 2 * r - 1


def test_direct_with_precision_weights_equals_pair_list(monkeypatch):
    """Weights scale the rows of Z, hence N's values: both forms of N P N' carry them."""
    data = ratings_like(4)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(data))
    base, *_ = build("y ~ x + (1 | u) + (1 | i)", data, reml=True)
    listed = CrossedProblem(base.y, base.X, base.terms, weights=w)
    direct_split(monkeypatch, "mixed")
    direct = CrossedProblem(base.y, base.X, base.terms, weights=w)
    assert isinstance(direct.coupling, DirectCoupling)
    theta = np.array([0.6, 0.9])
    f_list, g_list = listed.deviance_and_gradient(theta)
    f, g = direct.deviance_and_gradient(theta)
    np.testing.assert_allclose(f, f_list, rtol=1e-12)
    np.testing.assert_allclose(g, g_list, rtol=1e-8, atol=1e-8)
