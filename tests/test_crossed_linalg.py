"""The crossed engine's linear algebra against dense computations: the inverse from a Cholesky
factor (double and single precision), the count cross-products of intercepts, the coupling of
one-effect levels, and the rough gradient."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import tiers.engine.crossed_blocks as cb
from tiers.design.covariance import CovStructure
from tiers.design.grouping import GroupingFactor
from tiers.design.terms import TermSpec
from tiers.engine.crossed import CrossedProblem
from tiers.engine.spd_inverse import BASE, invert_from_cholesky


@pytest.mark.parametrize("r", [1, 7, BASE, BASE + 1, 300, 701])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_invert_from_cholesky_is_the_inverse(r, dtype):
    """Lower triangle: ``S^-1`` within rounding of the precision (the block recursion above
    `BASE`); the strict upper triangle is left as it was."""
    rng = np.random.default_rng(r)
    A = rng.standard_normal((r, 2 * r))
    S = A @ A.T / r + np.eye(r)
    work = np.asfortranarray(np.linalg.cholesky(S).astype(dtype))
    work[np.triu_indices(r, 1)] = 7.0
    out = invert_from_cholesky(work)
    assert out is work and out.dtype == dtype
    inv = np.linalg.inv(S)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    low = np.tril_indices(r)
    np.testing.assert_allclose(out[low], inv[low], atol=tol * np.abs(inv).max(), rtol=0)
    assert np.all(out[np.triu_indices(r, 1)] == 7.0)


@pytest.mark.parametrize("seed", range(4))
def test_count_crossprods_equal_the_sparse_products(seed):
    """``Z_r'D`` and ``Z_r'Z_r`` from bincounts equal the products of the sparse ``Z_r``; the
    third term's cells with the first are too many for a count table (the sorting branch)."""
    rng = np.random.default_rng(seed)
    n = 500
    sizes = [40, 7, 3000]
    codes = [rng.integers(0, m, n) for m in sizes]
    codes[1][:7] = np.arange(7)
    blocks, offset = [], 0
    for m in sizes:
        blocks.append(cb.Block(offset, m, 1))
        offset += m
    D = rng.standard_normal((n, 3))
    Zr = sp.hstack(
        [
            sp.csr_matrix((np.ones(n), (np.arange(n), c)), shape=(n, m))
            for c, m in zip(codes, sizes, strict=True)
        ]
    ).tocsr()
    ZrD, zrzr = cb.count_crossprods(codes, blocks, D)
    np.testing.assert_allclose(ZrD, Zr.T @ D, rtol=1e-13, atol=1e-12)
    expected = (Zr.T @ Zr).toarray()
    np.testing.assert_array_equal(zrzr.toarray(), expected)
    assert zrzr.has_canonical_format


@pytest.mark.parametrize("seed", range(6))
def test_coupling_of_one_effect_per_level(seed):
    """The size-class listing: ``N P N'`` at the entries and ``Q_j = N_j' X N_j`` equal the dense
    products, with levels of no nonzeros and values other than 1."""
    rng = np.random.default_rng(seed)
    r, n1 = int(rng.integers(5, 60)), int(rng.integers(5, 90))
    N = sp.random(r, n1, density=float(rng.uniform(0.05, 0.5)), random_state=seed, format="csc")
    N.data = rng.integers(1, 4, N.nnz).astype(np.float64)
    N = sp.csc_matrix(N.toarray() * (rng.random(n1) > 0.2)[None, :])  # some levels empty
    assert np.any(np.diff(N.indptr) == 0)
    N.sort_indices()
    level = np.repeat(np.arange(n1), np.diff(N.indptr))
    cp = cb.coupling(level, N.indices.astype(np.int64), N.data[:, None], n1, r)
    dense = N.toarray()
    p = rng.uniform(0.1, 2.0, n1)
    G = dense @ np.diag(p) @ dense.T
    np.testing.assert_allclose(cp.npn(p[:, None, None]), G[cp.rows, cp.cols], rtol=1e-13)
    pattern = (dense != 0).astype(float) @ (dense != 0).T.astype(float)
    low = np.tril(pattern) > 0
    # the entries: the lower triangle of the pattern of N N' (row-major keys a r + b, a >= b)
    assert np.array_equal(np.sort(cp.rows * r + cp.cols), np.flatnonzero(low.ravel()))
    B = rng.standard_normal((r, r))
    X = B + B.T
    Q = cp.quadratic(X[cp.rows, cp.cols], n1)[:, 0, 0]
    np.testing.assert_allclose(Q, np.einsum("aj,ab,bj->j", dense, X, dense), rtol=1e-12, atol=1e-12)
    h, h2 = cp.npn2(p[:, None, None], (p * p)[:, None, None])
    np.testing.assert_allclose(h, G[cp.rows, cp.cols], rtol=1e-13)
    np.testing.assert_allclose(h2, (dense @ np.diag(p * p) @ dense.T)[cp.rows, cp.cols], rtol=1e-13)


def _intercept(name: str, codes: np.ndarray) -> TermSpec:
    nlev = int(codes.max()) + 1
    gf = GroupingFactor(name, (name,), codes, nlev, counts=np.bincount(codes, minlength=nlev))
    return TermSpec(
        name, gf, np.ones((codes.size, 1)), ("(Intercept)",), CovStructure("unstructured", 1)
    )


def test_rough_gradient_is_the_gradient_to_single_precision():
    """``rough``: the same deviance, the gradient's traces from a single-precision inverse of a
    Schur complement large enough for the block recursion (r = 320): within 1e-5 relative of the
    precise gradient but not equal to it; the factor of ``S`` is kept (its solves unchanged), and
    a precise evaluation after it is unchanged."""
    rng = np.random.default_rng(3)
    n = 6000
    codes = [rng.integers(0, 900, n), rng.integers(0, 300, n), rng.integers(0, 20, n)]
    y = rng.standard_normal(n) + 0.5 * rng.standard_normal(900)[codes[0]]
    y += 0.3 * rng.standard_normal(300)[codes[1]] + 0.2 * rng.standard_normal(20)[codes[2]]
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    problem = CrossedProblem(y, X, [_intercept(f"g{k}", c) for k, c in enumerate(codes)])
    assert problem.rough_gradient and problem.r == 320
    theta = np.array([0.6, 0.4, 0.3])
    problem.evaluate(theta)  # S factored at theta, not inverted
    rhs = rng.standard_normal((problem.r, 2))
    solved = problem.rest.solve(rhs)
    precise = problem.evaluate(theta, gradient=True)
    rough = problem.evaluate(theta, gradient=True, rough=True)
    np.testing.assert_array_equal(problem.rest.solve(rhs), solved)  # the factor was kept
    assert rough.deviance == precise.deviance
    scale = np.abs(precise.gradient).max()
    np.testing.assert_allclose(rough.gradient, precise.gradient, rtol=0, atol=1e-5 * scale)
    assert not np.array_equal(rough.gradient, precise.gradient)
    # the average information depends on the gradient through its diagonal terms only
    np.testing.assert_allclose(rough.information, precise.information, rtol=1e-7)
    again = problem.evaluate(theta, gradient=True)
    np.testing.assert_array_equal(again.gradient, precise.gradient)


def test_invert_from_cholesky_refuses_arrays_it_would_copy():
    """A C-ordered or integer array would be copied by LAPACK's wrappers: refused, not wrong."""
    L = np.linalg.cholesky(np.eye(200) * 2.0)
    with pytest.raises(ValueError, match="Fortran-ordered"):
        invert_from_cholesky(np.ascontiguousarray(L + np.tril(np.ones((200, 200)), -1) * 0.01))
    with pytest.raises(ValueError, match="Fortran-ordered"):
        invert_from_cholesky(np.asfortranarray(np.eye(3, dtype=np.int64)))
