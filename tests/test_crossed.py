"""The crossed engine: lme4's deviance and conditional modes, a dense computation, the nested engine,
finite differences of the analytic gradient, and the sparse path against the dense one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiers.engine.crossed_blocks as cb
import tiers.engine.crossed_rest as cr
from tiers.data.frame import build_frame
from tiers.design.covariance import CovStructure
from tiers.design.grouping import GroupingFactor, build_factors, nested_chain
from tiers.design.terms import TermSpec, build_terms
from tiers.engine.crossed import CrossedProblem
from tiers.engine.nested_scalar import NestedProblem
from tiers.formula.parse import parse
from tiers.formula.types import COVARIANCES

from .conftest import load_case
from .tolerances import DEVIANCE_AT_THETA_RTOL, OPTIMUM_NOT_WORSE_RTOL

LME4_MODELS = [
    ("penicillin", "crossed", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("pastes", "nested", "strength ~ 1 + (1 | batch/cask)"),
    ("sleepstudy", "corr", "Reaction ~ Days + (Days | Subject)"),
    ("sleepstudy", "uncorr", "Reaction ~ Days + (Days || Subject)"),
    ("exam", "rs", "normexam ~ standLRT + (standLRT | school)"),
    ("hsb82", "rs", "mAch ~ meanses * cses + (cses | school)"),
]


def build(formula: str, data: pd.DataFrame, *, reml: bool = True):
    """The engine for a formula, with the frame and terms it was built from."""
    f = parse(formula)
    frame = build_frame(f, data)
    factors = build_factors(f, frame.data)
    terms = build_terms(f, frame.data, factors)
    return CrossedProblem(frame.y, frame.X, terms, reml=reml), frame, terms


def lme4_theta(problem: CrossedProblem, terms: list[TermSpec], fit: dict) -> np.ndarray:
    """lme4's theta rearranged into the engine's order, matched by group and parameter name."""
    theta = np.empty(problem.n_theta)
    for term, sl in zip(terms, problem.term_slices, strict=True):
        names = term.cov.param_names(term.znames)
        theta[sl] = [fit["theta"][f"{term.name}.{name}"] for name in names]
    return theta


@pytest.fixture(params=["dense", "sparse"])
def mode(request, monkeypatch) -> str:
    """Run a test with the Schur complement factored densely and with SuperLU."""
    if request.param == "sparse":
        monkeypatch.setattr(cb, "DENSE_MAX", 0)
    return request.param


# -------------------------------------------------------------------------------- lme4 --


@pytest.mark.parametrize("case, model, formula", LME4_MODELS)
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_deviance_at_lme4_theta(case, model, formula, method, mode):
    data, ref = load_case(case)
    fit = ref["fits"][f"{model}_{method}"]
    problem, _, terms = build(formula, data, reml=method == "REML")
    theta = lme4_theta(problem, terms, fit)
    ev = problem.evaluate(theta)
    crit = fit["criteria"]["REML_criterion" if method == "REML" else "deviance"]
    np.testing.assert_allclose(ev.deviance, crit, rtol=DEVIANCE_AT_THETA_RTOL)
    np.testing.assert_allclose(ev.ldL2, fit["devcomp_cmp"]["ldL2"], rtol=DEVIANCE_AT_THETA_RTOL)


@pytest.mark.parametrize("case, model, formula", LME4_MODELS)
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_conditional_modes_at_lme4_theta(case, model, formula, method, mode):
    data, ref = load_case(case)
    fit = ref["fits"][f"{model}_{method}"]
    problem, frame, terms = build(formula, data, reml=method == "REML")
    theta = lme4_theta(problem, terms, fit)
    sigma = problem.sigma(problem.evaluate(theta))
    np.testing.assert_allclose(sigma, fit["residual_sd"], rtol=1e-7)
    modes = problem.conditional_sds(theta)
    checked = 0
    for term, (b, sd) in zip(terms, modes, strict=True):
        want = fit["ranef_first_levels"][term.name]
        labels = term.factor.labels(frame.data)
        rows = [labels.index(str(lab)) for lab in want["levels"]]
        for j, zname in enumerate(term.znames):
            # lme4's theta is printed to 15 digits: the modes agree to ~1e-9 relative
            np.testing.assert_allclose(
                b[rows, j], want["conditional_modes"][zname], rtol=1e-6, atol=1e-9
            )
            np.testing.assert_allclose(
                sd[rows, j] * sigma, want["conditional_sd"][zname], rtol=1e-6
            )
            checked += 1
    assert checked == sum(t.q for t in terms)


def test_penicillin_optimum_matches_lme4():
    """Minimising the engine's deviance lands on lme4's REML criterion and theta."""
    from scipy.optimize import minimize

    data, ref = load_case("penicillin")
    fit = ref["fits"]["crossed_REML"]
    problem, _, terms = build("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    assert problem.has_gradient
    res = minimize(
        problem.deviance_and_gradient,
        problem.theta_start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * problem.n_theta,
        options={"ftol": 1e-15, "gtol": 1e-9},
    )
    crit = fit["criteria"]["REML_criterion"]
    assert res.fun <= crit * (1 + OPTIMUM_NOT_WORSE_RTOL)
    np.testing.assert_allclose(res.fun, crit, atol=1e-4)
    # the sample SD rests on 6 levels: theta agrees to 1e-4 relative, not absolute
    np.testing.assert_allclose(res.x, lme4_theta(problem, terms, fit), rtol=1e-4)


# ---------------------------------------------------------------------- dense reference --


def dense_reference(y, X, terms: list[TermSpec], theta, slices, reml: bool):
    """lme4's formulas with dense matrices: ldL2, the deviance (via V = I + Z Lambda Lambda' Z',
    n x n), beta, the conditional modes and the conditional SDs / sigma."""
    n = y.size
    Zs, Ls = [], []
    for term, sl in zip(terms, slices, strict=True):
        Zk = np.zeros((n, term.nlevels * term.q))
        for a in range(term.q):
            Zk[np.arange(n), term.codes * term.q + a] = term.Z[:, a]
        Zs.append(Zk)
        Ls.append(np.kron(np.eye(term.nlevels), term.cov.factor(theta[sl])))
    Z = np.hstack(Zs)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for Lk in Ls:
        Lam[o : o + Lk.shape[0], o : o + Lk.shape[0]] = Lk
        o += Lk.shape[0]
    ZL = Z @ Lam
    M = ZL.T @ ZL + np.eye(Z.shape[1])
    ldL2 = np.linalg.slogdet(M)[1]
    Vi = np.linalg.inv(np.eye(n) + ZL @ ZL.T)
    xtvx = X.T @ Vi @ X
    beta = np.linalg.solve(xtvx, X.T @ Vi @ y)
    r = y - X @ beta
    pwrss = r @ Vi @ r
    nu = n - X.shape[1] if reml else n
    dev = ldL2 + nu * (1 + np.log(2 * np.pi * pwrss / nu))
    if reml:
        dev += np.linalg.slogdet(xtvx)[1]
    Minv = np.linalg.inv(M)
    b = Lam @ Minv @ ZL.T @ r
    sd = np.sqrt(np.diagonal(Lam @ Minv @ Lam.T))
    out, o = [], 0
    for term in terms:
        m = term.nlevels * term.q
        out.append((b[o : o + m].reshape(term.nlevels, term.q), sd[o : o + m].reshape(-1, term.q)))
        o += m
    return float(ldL2), float(dev), beta, out


def random_theta(rng: np.random.Generator, cov: CovStructure) -> np.ndarray:
    """A theta inside the bounds, with an occasional zero SD."""
    lo = cov.lower()
    th = np.where(np.isfinite(lo), rng.uniform(0.0, 1.5, lo.size), rng.normal(0.0, 0.5, lo.size))
    if cov.kind == "exchangeable" and cov.q > 1:
        th[1] = rng.uniform(-1.0 / (cov.q - 1) + 0.05, 0.95)
    if rng.random() < 0.15:
        th[0] = 0.0
    return th


def random_design(seed: int, nterms: int, intercepts_only: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(25, 70))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    if rng.random() < 0.2:
        X = X[:, 1:] + 0.3  # no intercept column
    terms, theta = [], []
    for k in range(nterms):
        nlev = int(rng.integers(2, 8))
        codes = rng.permutation(np.arange(n) % nlev).astype(np.int64)
        q = 1 if intercepts_only else int(rng.integers(1, 4))
        Z = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(q - 1)])
        if q > 1 and rng.random() < 0.3:
            Z[:, 1] = rng.integers(0, 2, n)  # a 0/1 slope: zeros inside the pattern
        kind = "unstructured" if intercepts_only else str(rng.choice(COVARIANCES))
        cov = CovStructure(kind, q)
        gf = GroupingFactor(f"g{k}", (f"g{k}",), codes, nlev, counts=np.bincount(codes))
        names = ("(Intercept)",) + tuple(f"z{a}" for a in range(1, q))
        terms.append(TermSpec(f"g{k}", gf, Z, names, cov))
        theta.append(random_theta(rng, cov))
    y = X @ rng.normal(size=X.shape[1]) + rng.normal(size=n)
    for term in terms:
        y += (term.Z * rng.normal(size=(term.nlevels, term.q))[term.codes]).sum(axis=1)
    return y, X, terms, np.concatenate(theta)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31 - 1),
    nterms=st.integers(1, 3),
    reml=st.booleans(),
    sparse=st.booleans(),
)
def test_equals_dense_computation(monkeypatch, seed, nterms, reml, sparse):
    monkeypatch.setattr(cb, "DENSE_MAX", 0 if sparse else 8000)
    y, X, terms, theta = random_design(seed, nterms, intercepts_only=False)
    problem = CrossedProblem(y, X, terms, reml=reml)
    ev = problem.evaluate(theta)
    ldL2, dev, beta, modes = dense_reference(y, X, terms, theta, problem.term_slices, reml)
    np.testing.assert_allclose(ev.ldL2, ldL2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ev.deviance, dev, rtol=1e-10)
    np.testing.assert_allclose(problem.beta(ev), beta, rtol=1e-8, atol=1e-10)
    for (b, sd), (b_ref, sd_ref) in zip(problem.conditional_sds(theta), modes, strict=True):
        np.testing.assert_allclose(b, b_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sd, sd_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_linear_model_at_zero_theta(mode, weighted):
    """At theta = 0 (the LR test's null) the shortcut equals the elimination and the GLS fit."""
    y, X, terms, _ = random_design(5, 3, intercepts_only=False)
    w = np.random.default_rng(5).uniform(0.5, 2.0, y.size) if weighted else None
    problem = CrossedProblem(y, X, terms, reml=True, weights=w)
    zero = np.zeros(problem.n_theta)
    ev = problem.evaluate(zero)
    ref = problem._eliminate(zero, False)
    np.testing.assert_allclose(ev.deviance, ref.deviance, rtol=1e-12)
    np.testing.assert_allclose(ev.beta, ref.beta, rtol=1e-10, atol=1e-12)
    sw = np.ones(y.size) if w is None else np.sqrt(w)
    beta = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
    np.testing.assert_allclose(problem.beta(ev), beta, rtol=1e-10)
    assert ev.ldL2 == 0.0


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**31 - 1), nterms=st.integers(2, 3), weighted=st.booleans())
def test_moment_start_from_the_cross_products(monkeypatch, seed, nterms, weighted):
    """The moment start's pair counts read off ``N`` and ``Z_r'Z_r`` equal the rows' (exactly),
    in theta order whatever the engine's order; weighted rows (``Z`` scaled) count from the codes."""
    import tiers.engine.crossed as crossed_module
    from tiers.engine.moment_start import moment_theta

    y, X, terms, _ = random_design(seed, nterms, intercepts_only=True)
    seen = []

    def spy(y, X, codes, shared=None, residuals=None):
        seen.append(shared)
        return moment_theta(y, X, codes, shared, residuals)

    monkeypatch.setattr(crossed_module, "moment_theta", spy)
    w = np.random.default_rng(seed).uniform(0.5, 2.0, y.size) if weighted else None
    problem = CrossedProblem(y, X, terms, weights=w)
    if weighted:
        assert seen == [None]
        return
    shared = seen[0]
    for k, tk in enumerate(terms):
        for m, tm in enumerate(terms):
            cells = np.unique(tk.codes * tm.nlevels + tm.codes, return_counts=True)[1]
            assert shared[k, m] == (0.0 if k == m else float(cells @ cells))
    # the OLS residuals by the normal equations of the centred [X y], not by lstsq: the same start
    # up to rounding
    start = moment_theta(y, X, [t.codes for t in terms])
    if start is not None:
        np.testing.assert_allclose(problem.theta_start, start, rtol=1e-9)


# -------------------------------------------------------------------------------- gradient --


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), nterms=st.integers(1, 3), reml=st.booleans())
def test_gradient_matches_finite_differences(seed, nterms, reml):
    y, X, terms, theta = random_design(seed, nterms, intercepts_only=True)
    theta = np.abs(theta) + 0.05  # central differences need the interior
    problem = CrossedProblem(y, X, terms, reml=reml)
    assert problem.has_gradient
    ev = problem.evaluate(theta, gradient=True)
    fd = np.empty_like(theta)
    for i in range(theta.size):
        h = 1e-5 * max(1.0, theta[i])
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        fd[i] = (problem.deviance(up) - problem.deviance(dn)) / (2 * h)
    np.testing.assert_allclose(ev.gradient, fd, rtol=1e-5, atol=1e-6 * max(1.0, abs(ev.deviance)))
    # parts_t: d/dt of (ldL2, pwrss, ldRX2) assemble into gradient_t = gradient / (2 theta)
    np.testing.assert_allclose(ev.gradient_t, ev.gradient / (2 * theta), rtol=1e-10)


def test_gradient_zero_at_zero_theta():
    """The deviance is even in an intercept's theta: the gradient there is exactly zero."""
    y, X, terms, theta = random_design(3, 3, intercepts_only=True)
    theta = np.array([0.0, 0.7, 0.0])
    ev = CrossedProblem(y, X, terms).evaluate(theta, gradient=True)
    assert ev.gradient[0] == 0.0 and ev.gradient[2] == 0.0
    assert ev.gradient[1] != 0.0


def test_no_gradient_for_slopes():
    y, X, terms, theta = random_design(5, 2, intercepts_only=True)
    slope = TermSpec(
        "s",
        terms[0].factor,
        np.column_stack([np.ones(y.size), X[:, -1]]),
        ("(Intercept)", "x"),
        CovStructure("unstructured", 2),
    )
    problem = CrossedProblem(y, X, [slope, terms[1]])
    assert not problem.has_gradient
    with pytest.raises(NotImplementedError):
        problem.evaluate(np.array([1.0, 0.0, 1.0, 1.0]), gradient=True)


# --------------------------------------------------------------------------------- nested --


@pytest.mark.parametrize("reml", [True, False])
def test_nested_factors_match_nested_engine(seed_small, reml, mode):
    """Crossed-engine deviance of a nested design (four levels, 8,000 rows) = the nested engine's."""
    formula = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
    f = parse(formula)
    frame = build_frame(f, seed_small)
    factors = build_factors(f, frame.data)
    nesting = nested_chain(factors)
    assert nesting is not None
    nested = NestedProblem(frame.y, frame.X, nesting.tree, reml=reml)
    terms = build_terms(f, frame.data, factors)
    crossed = CrossedProblem(frame.y, frame.X, terms, reml=reml)
    order = [next(i for i, t in enumerate(terms) if t.factor is gf) for gf in nesting.factors]
    for theta_nested in ([0.3, 0.5, 0.8, 1.1], [0.0, 0.5, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]):
        theta = np.empty(4)
        theta[order] = theta_nested
        ev_c = crossed.evaluate(theta)
        ev_n = nested.evaluate(np.array(theta_nested))
        np.testing.assert_allclose(ev_c.deviance, ev_n.deviance, rtol=1e-10)
        np.testing.assert_allclose(ev_c.ldL2, ev_n.ldL2, rtol=1e-10)
        np.testing.assert_allclose(crossed.beta(ev_c), nested.beta(ev_n), rtol=1e-8)


def test_pastes_batch_and_sample_match_nested_engine():
    data, _ = load_case("pastes")
    f = parse("strength ~ 1 + (1 | batch) + (1 | sample)")
    frame = build_frame(f, data)
    factors = build_factors(f, frame.data)
    nesting = nested_chain(factors)
    assert nesting is not None and [gf.name for gf in nesting.factors] == ["batch", "sample"]
    terms = build_terms(f, frame.data, factors)
    for reml in (True, False):
        nested = NestedProblem(frame.y, frame.X, nesting.tree, reml=reml)
        crossed = CrossedProblem(frame.y, frame.X, terms, reml=reml)
        for theta in ([1.5, 3.5], [0.0, 2.0], [0.7, 0.0]):
            np.testing.assert_allclose(
                crossed.deviance(np.array(theta)), nested.deviance(np.array(theta)), rtol=1e-10
            )


# ------------------------------------------------------------------------------ structure --


def test_interface_and_theta_layout():
    data, _ = load_case("sleepstudy")
    problem, _, terms = build("Reaction ~ Days + (Days | Subject) + (1 | Days)", data)
    assert problem.n_theta == 4
    assert problem.term_slices == [slice(0, 3), slice(3, 4)]
    np.testing.assert_array_equal(problem.theta_start, [1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(problem.theta_lower, [0.0, -np.inf, 0.0, 0.0])
    assert np.all(np.isinf(problem.theta_upper))
    assert not problem.has_gradient
    assert problem.deviance(problem.theta_start) > 0
    # the REML/ML switch of the base class keeps the structure
    ml = problem.with_reml(False)
    assert ml.deviance(problem.theta_start) != problem.deviance(problem.theta_start)


def test_sparse_conditional_sd_capped(monkeypatch):
    """A sparse factor too big to invert reports NaN conditional SDs, and still the modes."""
    monkeypatch.setattr(cb, "DENSE_MAX", 0)
    data, ref = load_case("penicillin")
    problem, _, terms = build("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    theta = lme4_theta(problem, terms, ref["fits"]["crossed_REML"])
    full = problem.conditional_sds(theta)
    monkeypatch.setattr(cr, "COND_VAR_MAX_FLOPS", 0.0)
    capped = problem.conditional_sds(theta)
    for (b, sd), (b_full, _) in zip(capped, full, strict=True):
        np.testing.assert_allclose(b, b_full, rtol=1e-12)
        assert np.all(np.isnan(sd))


def test_structure_choice():
    """Dense below SPARSE_FROM; above it, sparse when the Schur complement is sparse."""
    assert cb.use_dense(1500, 10)
    assert not cb.use_dense(3000, 3000 * 5)
    assert cb.use_dense(3000, 3000 * 3000 // 4)
    assert not cb.use_dense(cb.DENSE_MAX + 1, 10**9)
