"""Newton's method from the moment start against the general path.

The crossed engine with random intercepts and a dense Schur complement opts in
(``information_first``: Newton in log theta on its average information, `tiers.optimize.scoring`,
with `tiers.optimize.newton`'s stopping rules); its optimum must be the one L-BFGS-B and the polish reach (the deviance no
worse, theta within the certificate's tolerance), on ratings-like designs with skewed counts,
levels seen once and a factor nested in another, and it must hand over to the general path where
a variance ends at 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tiers
import tiers.engine.crossed_direct as cd
from tiers.engine.crossed import CrossedProblem
from tiers.optimize import minimize as mz

from .test_crossed import build
from .test_crossed_scale import ratings_like


def general_path(problem: CrossedProblem) -> mz.OptSummary:
    """The optimum without the Newton start (L-BFGS-B, boundary logic, polish)."""
    fun, hessian = mz._objective(problem)
    return mz.minimize_theta(
        fun, problem.theta_start, problem.theta_lower, upper=problem.theta_upper, hessian=hessian
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "formula",
    ["y ~ x + (1 | u) + (1 | i)", "y ~ x + (1 | i) + (1 | u) + (1 | g)"],
)
@pytest.mark.parametrize("reml", [True, False])
def test_newton_reaches_the_general_optimum(seed, formula, reml):
    data = ratings_like(seed, n=500)
    g = data["g"].astype(int).to_numpy()
    data["y"] += 0.6 * np.random.default_rng(seed).normal(size=g.max() + 1)[g]  # users' groups
    problem, *_ = build(formula, data, reml=reml)
    assert problem.information_first
    opt = mz.optimize_theta(problem)
    ref = general_path(problem)
    assert opt.converged and ref.converged
    # never worse than the general path, beyond rounding of the criterion
    assert opt.deviance <= ref.deviance + 1e-10 * abs(ref.deviance)
    np.testing.assert_allclose(opt.theta, ref.theta, atol=1e-5)
    if opt.optimizer.startswith("Newton"):
        assert opt.n_evaluations < ref.n_evaluations
        assert opt.newton_step <= mz.STEP_TOL


def test_newton_with_the_direct_coupling_matches(monkeypatch):
    """The ratings path (N P N' formed densely, popular columns first) optimises the same."""
    data = ratings_like(5, n=600)
    ref = tiers.fit("y ~ x + (1 | u) + (1 | i)", data)
    monkeypatch.setattr(tiers.engine.crossed, "PAIRS_MAX", 0)
    monkeypatch.setattr(cd, "_POPULAR_FORCE", 0.4)
    res = tiers.fit("y ~ x + (1 | u) + (1 | i)", data)
    np.testing.assert_allclose(res.deviance, ref.deviance, rtol=1e-11)
    np.testing.assert_allclose(res.theta, ref.theta, atol=1e-6)


def test_variance_at_zero_goes_to_the_general_path():
    """No item effect in the data: theta_item ends at 0, which Newton hands over."""
    rng = np.random.default_rng(3)
    n = 400
    u, i = rng.integers(0, 30, n), rng.integers(0, 20, n)
    y = rng.normal(size=30)[u] + rng.normal(size=n)
    data = pd.DataFrame({"y": y, "u": u.astype(str), "i": i.astype(str)})
    problem, *_ = build("y ~ 1 + (1 | u) + (1 | i)", data, reml=True)
    opt = mz.optimize_theta(problem)
    ref = general_path(problem)
    assert opt.optimizer == ref.optimizer  # the fallback ran
    assert opt.at_bound == ref.at_bound
    np.testing.assert_allclose(opt.deviance, ref.deviance, rtol=1e-12)
    np.testing.assert_allclose(opt.theta, ref.theta, atol=1e-8)


@pytest.mark.parametrize(
    "formula", ["y ~ x + (1 | u) + (1 | i)", "y ~ x + (1 | i) + (1 | u) + (1 | g)"]
)
@pytest.mark.parametrize("reml", [True, False])
def test_average_information_equals_a_dense_computation(formula, reml):
    """`crossed_information`'s Hessian from the stored cross-products against P formed densely."""
    data = ratings_like(7, n=300)
    problem, frame, terms = build(formula, data, reml=reml)
    theta = problem.theta_start * np.array([1.3, 0.8, 1.1][: problem.n_theta])
    ev = problem.evaluate(theta, gradient=True)
    X, y = frame.X, frame.y
    Z = [np.eye(t.nlevels)[t.codes] for t in terms]
    H = np.eye(y.size) + sum(th**2 * Zk @ Zk.T for th, Zk in zip(theta, Z, strict=True))
    Hi = np.linalg.inv(H)
    P = Hi - Hi @ X @ np.linalg.solve(X.T @ Hi @ X, X.T @ Hi)  # sigma^2 P
    nu = y.size - X.shape[1] if reml else y.size
    sigma2 = float(y @ P @ y) / nu
    # working variates x_k = phi_k Z_k Z_k' P y, with phi_k P = theta_k^2 (sigma^2 P)
    x = [th**2 * Zk @ (Zk.T @ (P @ y)) for th, Zk in zip(theta, Z, strict=True)]
    M = np.array([[a @ P @ b for b in x] for a in x]) / sigma2
    m = np.array([a @ P @ y for a in x]) / sigma2
    g_log = ev.gradient * theta
    h0 = 4.0 * m + 2.0 * g_log
    expected = 4.0 * M + np.diag(2.0 * g_log) - np.outer(h0, h0) / (4.0 * nu)
    np.testing.assert_allclose(ev.information, expected, rtol=1e-8, atol=1e-8 * abs(expected).max())


def test_average_information_is_close_to_the_hessian_at_the_optimum():
    """Near the optimum the average information approximates the exact Hessian in log theta.

    Its difference from the observed information is ``y'PV_kPV_lPy - tr(PV_kPV_l)``-like, of the
    order of the sampling error of the variance estimates: a few per cent at hundreds of rows.
    """
    data = ratings_like(8, n=2000, users=60, items=50)
    problem, *_ = build("y ~ x + (1 | u) + (1 | i)", data, reml=True)
    opt = mz.optimize_theta(problem)
    theta = opt.theta
    ev = problem.evaluate(theta, gradient=True)
    exact = np.empty((2, 2))
    for j in range(2):
        h = 1e-5 * theta[j]
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        dg = (problem.deviance_and_gradient(up)[1] - problem.deviance_and_gradient(down)[1]) / (
            2 * h
        )
        exact[:, j] = (
            dg * theta * theta[j]
        )  # d2/dlog_i dlog_j = theta_i theta_j H_ij (+ g_i at i=j)
    exact += np.diag(ev.gradient * theta)
    ratio = np.linalg.eigvals(np.linalg.solve(0.5 * (exact + exact.T), ev.information))
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio


def test_scoring_theta_on_a_log_quadratic_and_toward_a_bound():
    from tiers.optimize.scoring import scoring_theta

    A = np.array([[4.0, 1.0], [1.0, 2.0]])
    ustar = np.log([0.7, 1.3])
    lower, upper = np.zeros(2), np.full(2, np.inf)

    def log_quadratic(x, rough):
        d = np.log(x) - ustar
        return float(0.5 * d @ A @ d), A @ d / x, A

    res = scoring_theta(log_quadratic, np.array([0.9, 1.0]), lower, upper)
    assert res.ok and res.step < 1e-7
    np.testing.assert_allclose(res.theta, np.exp(ustar), rtol=1e-10)
    assert res.evaluations == 2  # exact Hessian of a quadratic: one step, one confirmation

    def zero_optimum(x, rough):
        # the second parameter's optimum is on its bound: theta-Newton goes there in one step
        g = np.array([2.0 * (x[0] - 0.5), 2.0 * x[1]])
        return float((x[0] - 0.5) ** 2 + x[1] ** 2), g, 2.0 * np.diag(x * x) + np.diag(g * x)

    res = scoring_theta(zero_optimum, np.array([0.6, 0.1]), lower, upper)
    assert not res.ok and res.evaluations == 1


@pytest.mark.parametrize("start", [(3.0, 0.2), (0.9, 1.0), (0.7, 1.3)])
def test_scoring_theta_steers_by_rough_gradients_and_certifies_by_precise_ones(start):
    """With ``rough``, the start and the points after long steps are evaluated roughly, and the
    fit stops only on a precise gradient: the optimum is the precise one's, although the rough
    gradient (off by 1e-3 relative and 1e-4 absolute) vanishes elsewhere. Without ``rough`` no
    evaluation is rough."""
    from tiers.optimize.scoring import ROUGH_ABOVE, scoring_theta

    A = np.array([[4.0, 1.0], [1.0, 2.0]])
    ustar = np.log([0.7, 1.3])
    lower, upper = np.zeros(2), np.full(2, np.inf)
    asked = []

    def fun(x, rough):
        asked.append(rough)
        d = np.log(x) - ustar
        g = A @ d / x
        if rough:
            g = g * (1.0 + 1e-3) + 1e-4
        return float(0.5 * d @ A @ d), g, A

    res = scoring_theta(fun, np.array(start), lower, upper, rough=True)
    assert res.ok
    np.testing.assert_allclose(res.theta, np.exp(ustar), rtol=1e-9)
    assert asked[0] and not asked[-1]
    # rough only before the first precise evaluation, and only while the steps were long
    first_precise = asked.index(False)
    assert all(asked[:first_precise]) and not any(asked[first_precise:])
    assert res.evaluations == len(asked)
    d0 = np.log(start) - ustar
    if 0.5 * d0 @ A @ d0 > 2.0 * ROUGH_ABOVE:  # a long first step: its point is rough too
        assert asked[1]
    else:  # a start near the optimum: one try of its rough step at most, then precise
        assert first_precise == 1 and len(asked) <= 3
    asked.clear()
    assert scoring_theta(fun, np.array(start), lower, upper).ok
    assert not any(asked)
