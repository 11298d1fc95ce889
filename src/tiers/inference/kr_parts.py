"""The matrices Kenward and Roger's adjustment is made of, block by block over the random effects.

Kenward and Roger (1997, Biometrics 53(3), 983-997) write the marginal covariance as linear in
the variance parameters, ``Sigma = sum_r gamma_r G_r``, as pbkrtest does: for each term the
entries of its covariance matrix ``sigma^2 T T'`` that the structure leaves free (all of the lower
triangle for ``unstructured``, the variances for ``independent``, one variance for ``identity``,
a variance and a covariance for ``exchangeable``), then the residual variance with ``G = I``.
With that parametrisation the second derivatives of ``Sigma`` are zero (their ``R_ij``), and the
adjustment is the same for any linear reparametrisation. With ``Phi = (X' Sigma^-1 X)^-1``:

    P_r  = -X' Sigma^-1 G_r Sigma^-1 X
    Q_rs =  X' Sigma^-1 G_r Sigma^-1 G_s Sigma^-1 X
    T_rs =  tr(Sigma^-1 G_r Sigma^-1 G_s)

Nothing of size n x n is formed. ``Sigma = sigma^2 (I + U U')`` with ``U = Z Lambda``, so by
Woodbury ``sigma^2 Sigma^-1 = W0 = I - U K^-1 U'`` with ``K = U'U + I``, and since
``U' W0 = K^-1 U'``, ``W0^k = I - U (K^-1 + ... + K^-k) U'``. Every product above is then a
sum over the blocks of random effects that share observations (the connected components of
``Z'Z``: the top-level groups of a nested design; usually one block for crossed factors) of
products of ``Z'Z``, ``Lambda`` and ``K^-1`` on that block. The products with ``X`` are taken
from ``W0 X`` and ``W0^2 X`` formed by rows (``n x p``): written as ``X'X - X'U R U'X`` they
would cancel badly when the groups are large (``X'W0^3 X`` loses ~``(n_g theta^2)^3`` in relative
precision). Small blocks of equal size are stacked and done together with dense batched algebra;
larger ones (`SMALL_BLOCK`) one at a time with a sparse LU factor of ``K`` in minimum-degree
order (a nested tree's leaves first: no fill), so that, but for ``K^-1`` itself, their products
cost ``nnz * s`` rather than ``s^3``. `Algebra` (the blocks and ``W0``) is shared with
`tiers.inference.kr_rside`, which adds a residual structure's parameters on whitened data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from tiers.design.covariance import CovStructure
from tiers.design.terms import TermSpec, split_theta
from tiers.errors import InferenceError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Most random effects in one block (about five dense matrices of this size are held: 2500 is
#: 50 MB each). Nested designs are done per top-level group, so only crossed designs with many
#: levels, or one huge top-level group, reach it.
MAX_BLOCK = 2500
#: Blocks up to this size are stacked and done by dense batched algebra; larger ones one by one
#: with a sparse factor of ``K``.
SMALL_BLOCK = 64
#: Stacked blocks are processed in chunks of about this many matrix entries (memory bound).
CHUNK_ENTRIES = 2_000_000


@dataclass(frozen=True)
class KRParts:
    """``Phi``, ``P_r``, ``Q_rs`` and ``T_rs`` at the estimates (data scale).

    Attributes
    ----------
    phi : array (p, p)
        ``(X' Sigma^-1 X)^-1``, the unadjusted covariance of beta.
    P : array (m, p, p)
    Q : array (m, m, p, p)
        ``Q[r, s]``; ``Q[s, r] = Q[r, s]'``.
    T : array (m, m)
    names : tuple of str
        Each variance parameter (``var(group.effect)``, ``cov(group.a,b)``, ``var(Residual)``).
    largest_block : int
        Random effects in the largest block.
    R : array (m, m, p, p) or None
        ``R_rs = X' Sigma^-1 (d2 Sigma / d gamma_r d gamma_s) Sigma^-1 X``; None where ``Sigma``
        is linear in the parameters (zero).
    """

    phi: FloatArray
    P: FloatArray
    Q: FloatArray
    T: FloatArray
    names: tuple[str, ...]
    largest_block: int
    R: FloatArray | None = None


def covariance_basis(cov: CovStructure) -> list[FloatArray]:
    """Symmetric ``E_k`` with ``sigma^2 T T' = sum_k gamma_k E_k`` for the structure's free entries."""
    q = cov.q
    eye = np.eye(q)
    if cov.kind == "unstructured":
        out = []
        for j in range(q):
            for i in range(j, q):
                E = np.outer(eye[i], eye[j])
                out.append(E + E.T if i != j else E)
        return out
    if cov.kind == "independent":
        return [np.outer(eye[j], eye[j]) for j in range(q)]
    if cov.kind == "exchangeable" and q > 1:
        return [eye, np.ones((q, q)) - eye]
    return [eye]  # identity, or a scalar term


def _basis_names(term: TermSpec) -> list[str]:
    z, q = term.znames, term.q
    if term.cov.kind == "unstructured":
        return [
            f"var({term.name}.{z[i]})" if i == j else f"cov({term.name}.{z[j]},{z[i]})"
            for j in range(q)
            for i in range(j, q)
        ]
    if term.cov.kind == "independent":
        return [f"var({term.name}.{n})" for n in z]
    if term.cov.kind == "exchangeable" and q > 1:
        return [f"var({term.name})", f"cov({term.name})"]
    return [f"var({term.name})"]


def _sparse_z(terms: list[TermSpec], n: int) -> tuple[sp.csc_matrix, sp.csc_matrix]:
    """``Z`` (n x Q, each term's columns level-major, as lme4) and its pattern (ones)."""
    rows, cols, vals, at = [], [], [], 0
    for t in terms:
        q = t.q
        for j in range(q):
            rows.append(np.arange(n))
            cols.append(at + t.codes * q + j)
            vals.append(t.Z[:, j])
        at += t.nlevels * q
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    Z = sp.csc_matrix((v, (r, c)), shape=(n, at))
    pattern = sp.csc_matrix((np.ones_like(v), (r, c)), shape=(n, at))
    return Z, pattern


def _block_diag(terms: list[TermSpec], mats: list[FloatArray | None]) -> sp.csr_matrix:
    """``blockdiag_t(kron(I_{m_t}, M_t))``; a None ``M_t`` is a zero block."""
    blocks = []
    for t, M in zip(terms, mats, strict=True):
        size = t.nlevels * t.q
        if M is None:
            blocks.append(sp.csr_matrix((size, size)))
        else:
            blocks.append(sp.kron(sp.identity(t.nlevels, format="csr"), sp.csr_matrix(M)))
    return sp.csr_matrix(sp.block_diag(blocks, format="csr"))


class _Stacker:
    """Scatters block-diagonal sparse matrices into stacks of dense blocks of equal size."""

    def __init__(self, labels: IntArray) -> None:
        order = np.argsort(labels, kind="stable")
        self.order = order
        sorted_labels = labels[order]
        nblocks = int(sorted_labels[-1]) + 1 if sorted_labels.size else 0
        self.sizes = np.bincount(sorted_labels, minlength=nblocks)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.block_of = sorted_labels  # block of each permuted position
        self.local = np.arange(labels.size) - self.starts[sorted_labels]

    def permute(self, A: sp.spmatrix) -> sp.coo_matrix:
        """``A`` with rows and columns in block order."""
        return sp.coo_matrix(sp.csr_matrix(A)[self.order][:, self.order])

    def stack(self, A: sp.coo_matrix, blocks: IntArray, s: int) -> FloatArray:
        """The diagonal blocks ``blocks`` (all of size ``s``) of the permuted ``A``, stacked."""
        pos = np.full(self.sizes.size, -1)
        pos[blocks] = np.arange(blocks.size)
        b = self.block_of[A.row]
        keep = pos[b] >= 0
        out = np.zeros((blocks.size, s, s))
        out[pos[b[keep]], self.local[A.row[keep]], self.local[A.col[keep]]] = A.data[keep]
        return out

    def stack_rows(self, B: FloatArray, blocks: IntArray, s: int) -> FloatArray:
        """Rows of the permuted dense ``B`` for ``blocks`` as (nb, s, k)."""
        idx = self.starts[blocks][:, None] + np.arange(s)[None, :]
        return np.asarray(B[self.order][idx], dtype=np.float64)


def _t(A: FloatArray) -> FloatArray:
    return np.swapaxes(A, -1, -2)


def _cross(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a'b`` summed over any leading (batch) axes."""
    out = _t(a) @ b
    return np.asarray(out.reshape(-1, *out.shape[-2:]).sum(axis=0))


@dataclass
class Algebra:
    """The random effects' blockwise algebra at ``theta``: ``W0 = I - U K^-1 U'`` by blocks.

    Attributes
    ----------
    Z : sparse (n, Q)
    Lam : sparse (Q, Q)
        ``Lambda``.
    st : _Stacker
        The blocks of random effects that share observations.
    blocks : list
        `_Small` stacks and `_Large` blocks, holding ``K^-1`` or its factor.
    Dp : list of sparse
        Each random-effects variance parameter's ``D_r`` (``G_r = Z D_r Z'``), in block order.
    csr : list of sparse
        CSR copies of ``Z'Z``, ``Lambda`` and the ``D_r`` in block order (large blocks only).
    names : list of str
        The random effects' variance parameters.
    largest : int
    """

    Z: sp.csc_matrix
    Lam: sp.csr_matrix
    st: _Stacker
    blocks: list[_Small | _Large]
    Dp: list[sp.coo_matrix]
    csr: list[sp.csr_matrix]
    names: list[str]
    largest: int

    def w0(self, Y: FloatArray) -> FloatArray:
        """``W0 Y = Y - U K^-1 U'Y``, by rows: no cancellation of ``X'X`` against its correction."""
        st = self.st
        V = np.asarray(self.Lam.T @ (self.Z.T @ Y))[st.order]
        for blk in self.blocks:
            V[blk.idx] = blk.solve(V[blk.idx])
        back = np.empty_like(V)
        back[st.order] = V
        return np.asarray(Y - self.Z @ (self.Lam @ back))

    def zt(self, Y: FloatArray) -> FloatArray:
        """``Z'Y`` in block order."""
        return np.asarray(self.Z.T @ Y)[self.st.order]


def build_algebra(terms: list[TermSpec], n: int, theta: FloatArray) -> Algebra:
    """The blocks, ``K^-1`` and the ``D_r`` of the random effects ``terms`` on ``n`` rows.

    Raises
    ------
    InferenceError
        More than `MAX_BLOCK` random effects linked through shared observations.
    """
    Z, pattern = _sparse_z(terms, n)
    thetas = split_theta(terms, np.asarray(theta, dtype=np.float64))
    Lam = _block_diag(terms, [t.cov.factor(th) for t, th in zip(terms, thetas, strict=True)])
    basis: list[sp.csr_matrix] = []
    names: list[str] = []
    for k, t in enumerate(terms):
        names += _basis_names(t)
        for E in covariance_basis(t.cov):
            mats: list[FloatArray | None] = [None] * len(terms)
            mats[k] = E
            basis.append(_block_diag(terms, mats))
    _, labels = connected_components(sp.csr_matrix(pattern.T @ pattern), directed=False)
    st = _Stacker(np.asarray(labels, dtype=np.int64))
    largest = int(st.sizes.max())
    if largest > MAX_BLOCK:
        raise InferenceError(
            f"Kenward-Roger needs dense matrices over the random effects that share observations; "
            f"this design links {largest:,} of them in one block (crossed factors link all their "
            f"levels), more than the limit of {MAX_BLOCK:,}. Use ddf='satterthwaite' "
            "(or fewer levels)"
        )
    ZtZ = st.permute(Z.T @ Z)
    Lp = st.permute(Lam)
    Dp = [st.permute(D) for D in basis]
    blocks: list[_Small | _Large] = []
    # row slices of the large blocks come from CSR copies made once (ZtZ, Lambda, then the D_r)
    csr = [sp.csr_matrix(M) for M in (ZtZ, Lp, *Dp)] if st.sizes.max() > SMALL_BLOCK else []
    for s in np.unique(st.sizes):
        of_size = np.flatnonzero(st.sizes == s)
        if s > SMALL_BLOCK:
            blocks += [_Large.build(st, int(b), csr[0], csr[1]) for b in of_size]
            continue
        step = max(1, CHUNK_ENTRIES // int(s * s))
        blocks += [
            _Small.build(st, of_size[c : c + step], ZtZ, Lp) for c in range(0, of_size.size, step)
        ]
    return Algebra(Z, Lam, st, blocks, Dp, csr[2:], names, largest)


def kr_parts(
    terms: list[TermSpec],
    X: FloatArray,
    theta: FloatArray,
    sigma: float,
    *,
    replicates: float = 0.0,
) -> KRParts:
    """``Phi``, ``P``, ``Q`` and ``T`` of a linear mixed model at ``(theta, sigma)``.

    ``terms`` and ``X`` are those of ``Sigma = sigma^2 (Z Lambda Lambda' Z' + I)``: with precision
    weights, rows already scaled by ``sqrt(w)`` (the parts are invariant to that congruence).
    ``replicates`` is ``sum(w) - n`` for frequency weights: the expanded data's within-replicate
    contrasts carry only the residual variance, adding ``replicates / sigma^4`` to its ``T``.

    Raises
    ------
    InferenceError
        More than `MAX_BLOCK` random effects linked through shared observations.
    """
    alg = build_algebra(terms, X.shape[0], theta)
    return linear_parts(alg, X, sigma, replicates=replicates)


def linear_parts(alg: Algebra, X: FloatArray, sigma: float, *, replicates: float = 0.0) -> KRParts:
    """`kr_parts` from the algebra of the random effects (see there)."""
    n, p = X.shape
    WX = alg.w0(X)
    W2X = alg.w0(WX)
    C1 = alg.zt(WX)  # Z'W0 X
    C2 = alg.zt(W2X)  # Z'W0^2 X
    acc = _Accumulator(len(alg.Dp) + 1, p)
    for blk in alg.blocks:
        if isinstance(blk, _Large):
            blk.accumulate(acc, C1[blk.idx], C2[blk.idx], alg.csr)
        else:
            blk.accumulate(acc, C1[blk.idx], C2[blk.idx], alg.Dp, alg.st)
    acc.tr_s -= replicates
    XWX = (X.T @ WX, WX.T @ WX, WX.T @ W2X)
    return acc.finish(XWX, n, sigma, (*alg.names, "var(Residual)"), alg.largest)


@dataclass
class _Small:
    """Blocks of one small size, stacked: dense batched algebra."""

    blocks: IntArray
    idx: IntArray  # (nb, s) positions in block order
    A: FloatArray  # Z'Z
    L: FloatArray  # Lambda
    Kinv: FloatArray

    @classmethod
    def build(cls, st: _Stacker, bl: IntArray, ZtZ: sp.coo_matrix, Lp: sp.coo_matrix) -> _Small:
        s = int(st.sizes[bl[0]])
        A, L = st.stack(ZtZ, bl, s), st.stack(Lp, bl, s)
        Kinv = np.asarray(np.linalg.inv(_t(L) @ A @ L + np.eye(s)), dtype=np.float64)
        return cls(bl, st.starts[bl][:, None] + np.arange(s)[None, :], A, L, Kinv)

    def solve(self, V: FloatArray) -> FloatArray:
        """``K^-1 V`` block by block."""
        return np.asarray(self.Kinv @ V)

    def accumulate(
        self,
        acc: _Accumulator,
        C1: FloatArray,
        C2: FloatArray,
        Dp: list[sp.coo_matrix],
        st: _Stacker,
    ) -> None:
        s = self.idx.shape[1]
        ZU = self.A @ self.L  # Z'U
        R2 = self.Kinv + self.Kinv @ self.Kinv
        tr_s = float(np.einsum("bij,bji->", R2, _t(self.L) @ ZU))  # tr(R2 U'U)
        M1 = self.A - ZU @ self.Kinv @ _t(ZU)  # Z'W0 Z
        M2 = self.A - ZU @ R2 @ _t(ZU)  # Z'W0^2 Z
        D = [st.stack(Dr, self.blocks, s) for Dr in Dp]
        DC = [Dr @ C1 for Dr in D]
        DM = [Dr @ M1 for Dr in D]
        tr_dm2 = [float(np.einsum("bij,bij->", Dr, M2)) for Dr in D]
        acc.add(
            C1, C2, M1, DC, lambda r, u: float(np.einsum("bij,bji->", DM[r], DM[u])), tr_dm2, tr_s
        )


@dataclass
class _Large:
    """One large block by sparse algebra.

    ``K`` is factored sparse (no fill for a nested tree); every product but ``K^-1`` then costs
    ``nnz * s``, not ``s^3``.
    """

    block: int
    idx: IntArray
    A: sp.csr_matrix
    L: sp.csr_matrix
    lu: Any
    _inverse: FloatArray | None = None

    @classmethod
    def build(cls, st: _Stacker, b: int, ZtZ: sp.csr_matrix, Lp: sp.csr_matrix) -> _Large:
        s, a = int(st.sizes[b]), int(st.starts[b])
        A = sp.csr_matrix(ZtZ[a : a + s][:, a : a + s])
        L = sp.csr_matrix(Lp[a : a + s][:, a : a + s])
        K = sp.csc_matrix(sp.identity(s) + L.T @ A @ L)
        # symmetric minimum degree eliminates a tree's leaves first: no fill
        lu = splu(K, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
        return cls(b, np.arange(a, a + s), A, L, lu)

    def solve(self, V: FloatArray) -> FloatArray:
        """``K^-1 V``."""
        return np.asarray(self.lu.solve(np.ascontiguousarray(V)))

    def inverse(self) -> FloatArray:
        """``K^-1`` (dense), formed once."""
        if self._inverse is None:
            self._inverse = self.solve(np.eye(self.idx.size))
        return self._inverse

    def accumulate(
        self,
        acc: _Accumulator,
        C1: FloatArray,
        C2: FloatArray,
        Dp: list[sp.csr_matrix],
    ) -> None:
        s, a = self.idx.size, int(self.idx[0])
        Kinv = self.inverse()
        AL = sp.csr_matrix(self.A @ self.L)
        Ht = np.asarray(AL @ Kinv)  # A Lambda K^-1 = H'
        M1 = self.A.toarray() - np.asarray(AL @ Ht.T).T  # Z'W0 Z
        M1 = 0.5 * (M1 + M1.T)
        # tr(R2 U'U) = tr(I - K^-2): K^-1 U'U = I - K^-1
        tr_s = s - float(np.sum(Kinv * Kinv))
        D = [sp.csr_matrix(Dr[a : a + s][:, a : a + s]) for Dr in Dp]
        rows = [np.unique(Dr.nonzero()[0]) for Dr in D]
        DC = [np.asarray(Dr @ C1) for Dr in D]
        DM = [np.asarray(Dr[rw] @ M1) for Dr, rw in zip(D, rows, strict=True)]
        # Z'W0^2 Z = M1 - H'H on the entries D_r touches
        tr_dm2 = [float(np.sum(Dr.multiply(M1)) - np.sum(np.asarray(Dr @ Ht) * Ht)) for Dr in D]

        def trace(r: int, u: int) -> float:
            return float(np.sum(DM[r][:, rows[u]] * DM[u][:, rows[r]].T))

        acc.add(C1, C2, M1, DC, trace, tr_dm2, tr_s)


class _Accumulator:
    """Sums of the per-block products, in units of ``sigma`` (scaled in `finish`)."""

    def __init__(self, m: int, p: int) -> None:
        self.m = m
        self.tr_s = 0.0  # tr(R_2 S): tr(W0^2) = n - tr_s
        self.P = np.zeros((m, p, p))
        self.Q = np.zeros((m, m, p, p))
        self.T = np.zeros((m, m))

    def add(
        self,
        C1: FloatArray,
        C2: FloatArray,
        M1: FloatArray,
        DC: list[FloatArray],
        trace: Callable[[int, int], float],
        tr_dm2: list[float],
        tr_s: float,
    ) -> None:
        """One block or stack of blocks (a leading batch axis or none).

        ``C1 = Z'W0 X``, ``C2 = Z'W0^2 X``, ``M1 = Z'W0 Z``, ``DC[r] = D_r C1``, ``trace(r, u) =
        tr(D_r M1 D_u M1)``, ``tr_dm2[r] = tr(D_r Z'W0^2 Z)``, ``tr_s = tr((K^-1 + K^-2) U'U)``.
        """
        self.tr_s += tr_s
        e = self.m - 1
        for r in range(e):
            self.P[r] -= _cross(C1, DC[r])
            MDC = M1 @ DC[r]
            for u in range(r, e):
                self.Q[u, r] += _cross(DC[u], MDC)
                self.T[r, u] += trace(r, u)
            self.Q[r, e] += _cross(DC[r], C2)
            self.T[r, e] += tr_dm2[r]

    def finish(
        self,
        XWX: tuple[FloatArray, FloatArray, FloatArray],
        n: int,
        sigma: float,
        names: tuple[str, ...],
        largest: int,
    ) -> KRParts:
        """Add the residual variance's terms (``X'W0^k X``, ``tr W0^2``), scale by sigma."""
        X1, X2, X3 = (0.5 * (a + a.T) for a in XWX)
        e = self.m - 1
        self.P[e] -= X2
        self.Q[e, e] += X3
        self.T[e, e] += n - self.tr_s
        s2 = sigma * sigma
        phi = s2 * np.linalg.inv(X1)
        P = self.P / s2**2
        Q = self.Q / s2**3
        # filled: Q[u, r] for r <= u < e, and Q[r, e]; the rest by Q[s, r] = Q[r, s]'
        for r in range(e):
            Q[e, r] = Q[r, e].T
            for u in range(r + 1, e):
                Q[r, u] = Q[u, r].T
        T = self.T / s2**2
        T = np.triu(T) + np.triu(T, 1).T
        return KRParts(0.5 * (phi + phi.T), P, Q, T, names, largest)
