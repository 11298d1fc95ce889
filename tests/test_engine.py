"""The nested engine against a dense computation, and its gradient against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiers.design.grouping import Tree
from tiers.engine.nested_scalar import NestedProblem


def random_tree(rng: np.random.Generator, K: int, balanced: bool) -> tuple[Tree, int]:
    """A random nesting of K levels; ``balanced`` gives equal children and equal leaf sizes."""
    sizes = [int(rng.integers(3, 5))]
    parents = []
    for _ in range(1, K):
        kids = np.full(sizes[-1], 2) if balanced else rng.integers(1, 4, sizes[-1])
        parents.append(np.repeat(np.arange(sizes[-1]), kids))
        sizes.append(int(kids.sum()))
    obs = np.full(sizes[-1], 4) if balanced else rng.integers(2, 7, sizes[-1])
    leaf = np.repeat(np.arange(sizes[-1]), obs)
    leaf = leaf[rng.permutation(leaf.size)]
    # shuffle node labels within each level so that trees are not given sorted
    perms = [rng.permutation(s) for s in sizes]
    leaf = perms[-1][leaf]
    new_parents = []
    for k, par in enumerate(parents):
        mapped = np.empty_like(par)
        mapped[perms[k + 1]] = perms[k][par]
        new_parents.append(mapped)
    return Tree(leaf, tuple(new_parents), tuple(sizes)), int(leaf.size)


def dense_deviance(y, X, tree: Tree, theta, reml: bool) -> tuple[float, np.ndarray]:
    """lme4's profiled deviance from dense matrices (Bates et al. 2015, eqs. 34 and 41)."""
    n = y.size
    codes = [tree.leaf]
    for par in reversed(tree.parents):
        codes.append(par[codes[-1]])
    codes = codes[::-1]  # outermost first
    blocks = []
    for k, (c, size) in enumerate(zip(codes, tree.sizes, strict=True)):
        Z = np.zeros((n, size))
        Z[np.arange(n), c] = theta[k]
        blocks.append(Z)
    ZL = np.hstack(blocks)
    V = np.eye(n) + ZL @ ZL.T
    ldL2 = np.linalg.slogdet(np.eye(ZL.shape[1]) + ZL.T @ ZL)[1]
    Vi = np.linalg.inv(V)
    xtvx = X.T @ Vi @ X
    beta = np.linalg.solve(xtvx, X.T @ Vi @ y)
    r = y - X @ beta
    pwrss = r @ Vi @ r
    nu = n - X.shape[1] if reml else n
    dev = ldL2 + nu * (1 + np.log(2 * np.pi * pwrss / nu))
    if reml:
        dev += np.linalg.slogdet(xtvx)[1]
    return float(dev), beta


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    K=st.integers(1, 4),
    balanced=st.booleans(),
    reml=st.booleans(),
    intercept=st.booleans(),
)
def test_matches_dense(seed: int, K: int, balanced: bool, reml: bool, intercept: bool) -> None:
    rng = np.random.default_rng(seed)
    tree, n = random_tree(rng, K, balanced)
    binary = np.arange(n) % 2  # never constant, never collinear with the intercept
    cols = [rng.normal(size=n) + 5.0, rng.permutation(binary).astype(float)]
    X = np.column_stack(([np.ones(n)] if intercept else []) + cols)
    y = rng.normal(size=n) * 3 + 10
    theta = rng.uniform(0.0, 2.0, K)
    problem = NestedProblem(y, X, tree, reml=reml)
    ev = problem.evaluate(theta)
    dev, beta = dense_deviance(y, X, tree, theta, reml)
    np.testing.assert_allclose(ev.deviance, dev, rtol=1e-11)
    np.testing.assert_allclose(problem.beta(ev), beta, rtol=1e-8, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), K=st.integers(1, 4), balanced=st.booleans(), reml=st.booleans())
def test_gradient_matches_finite_differences(seed: int, K: int, balanced: bool, reml: bool) -> None:
    rng = np.random.default_rng(seed)
    tree, n = random_tree(rng, K, balanced)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n) * 2
    problem = NestedProblem(y, X, tree, reml=reml)
    theta = rng.uniform(0.2, 1.5, K)
    _, grad = problem.deviance_and_gradient(theta)
    h = 1e-6
    fd = np.array(
        [
            (problem.deviance(theta + h * e) - problem.deviance(theta - h * e)) / (2 * h)
            for e in np.eye(K)
        ]
    )
    # central differences of a deviance of size ~1e2 carry ~1e-16 * 1e2 / 1e-6 = 1e-8 of rounding
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_theta_zero_is_ordinary_least_squares() -> None:
    rng = np.random.default_rng(3)
    tree, n = random_tree(rng, 3, False)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n)
    for reml in (False, True):
        problem = NestedProblem(y, X, tree, reml=reml)
        ev = problem.evaluate(np.zeros(3))
        beta, rss, *_ = np.linalg.lstsq(X, y, rcond=None)
        np.testing.assert_allclose(problem.beta(ev), beta, rtol=1e-10)
        np.testing.assert_allclose(ev.pwrss, rss[0], rtol=1e-10)
        nu = n - 2 if reml else n
        expected = nu * (1 + np.log(2 * np.pi * rss[0] / nu))
        if reml:
            expected += np.linalg.slogdet(X.T @ X)[1]
        np.testing.assert_allclose(ev.deviance, expected, rtol=1e-12)


def test_row_order_does_not_move_the_optimum() -> None:
    """The same rows in another order (sums rounded differently) give the same estimates.

    Before the polish took its last Newton step the fit stopped anywhere inside its 1e-7
    certificate: on this design 16 row orders moved theta by up to 1.4e-8, which is what a Dask
    fit's partition order does too (`tests.tolerances.DISTRIBUTED_ESTIMATE_TOL`).
    """
    import warnings

    import tiers

    from .tolerances import DISTRIBUTED_ESTIMATE_TOL

    data = tiers.simulate(tiers.seed_design(districts=6), seed=11)
    formula = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = tiers.fit(formula, data)
        for k in range(16):
            order = np.random.default_rng(100 + k).permutation(len(data))
            res = tiers.fit(formula, data.iloc[order])
            np.testing.assert_allclose(res.theta, ref.theta, rtol=0, atol=DISTRIBUTED_ESTIMATE_TOL)
            np.testing.assert_allclose(res.beta, ref.beta, rtol=DISTRIBUTED_ESTIMATE_TOL)


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_engine_built_in_small_steps(monkeypatch, balanced: bool, weighted: bool) -> None:
    """The engine set up three leaves at a time equals the one set up whole.

    10^8-row fits sum a million leaves at a time; here every chunked step runs over many chunks.
    """
    import tiers.engine.group_sums as group_sums
    import tiers.engine.nested_scalar as ns

    rng = np.random.default_rng(11)
    tree, n = random_tree(rng, 4, balanced)
    if weighted and not balanced:  # more leaves than 64: weight totals take the vectorised sums
        leaf = rng.permutation(np.repeat(np.arange(150), rng.integers(1, 5, 150)))
        parents = (rng.integers(0, 4, 12), rng.integers(0, 12, 150))
        tree, n = Tree(leaf, parents, (4, 12, 150)), leaf.size
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n) * 2 + 1
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    theta = np.array([0.7, 0.4, 1.1, 0.9])[: len(tree.sizes)]
    whole = NestedProblem(y, X, tree, reml=True, weights=w)
    monkeypatch.setattr(ns, "STEP", 3)  # the engine's own steps, and the sums by group
    monkeypatch.setattr(group_sums, "STEP", 3)
    steps = NestedProblem(y, X, tree, reml=True, weights=w)
    assert steps.uniform_from == whole.uniform_from
    a, ga = whole.deviance_and_gradient(theta)
    b, gb = steps.deviance_and_gradient(theta)
    np.testing.assert_allclose(b, a, rtol=1e-13)
    np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-10)
    if not weighted:
        np.testing.assert_allclose(b, dense_deviance(y, X, tree, theta, True)[0], rtol=1e-11)
    else:
        assert steps.uniform_from == len(tree.sizes)  # leaf size classes: the weight totals
        assert steps.leaf_sizes.size > (64 if not balanced else 1)
