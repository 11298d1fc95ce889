"""Likelihood engine for crossed random-effects terms (any mix of intercepts and slopes).

The model is ``y = X beta + Z b + e`` with ``b = Lambda u``, ``u ~ N(0, sigma^2 I)`` and
``Lambda`` block diagonal: ``I_{nlevels_k} (x) T_k(theta_k)`` for each term ``k``. As in lme4
(Bates et al. 2015, JSS 67(1), eqs. 10-34) the profiled deviance depends on theta through

    ldL2 = log det(Lambda' Z' Z Lambda + I)
    A    = [X y]'[X y] - [X y]' Z Lambda (Lambda' Z' Z Lambda + I)^-1 Lambda' Z' [X y],

from which `ProfiledProblem.finish` reads off beta, pwrss and ldRX2.

The terms are sorted by their number of columns ``q * nlevels``, largest first (lme4's and
MixedModels.jl's order). The first term's diagonal block is block diagonal (``nlevels1`` blocks of
``q1 x q1``) and is eliminated level by level, vectorised; the Schur complement left on the other
terms (``r`` columns) is factored densely or sparsely (`crossed_rest`). Everything that does not
depend on theta (``Z'Z`` blocks, ``Z'[X y]``, the pairs of columns that the first term couples) is
computed once in ``__init__``; an evaluation does no O(n) work. Where the coupled pairs are too
many to list (ratings designs), ``N P N'`` is formed per evaluation instead (`crossed_direct`); a
design whose factor would not fit in memory is refused there, before any numeric work
(`crossed_fill`). Random intercepts start from moment estimates (`moment_start`), close enough
that the optimiser takes Newton steps in log theta from there on the average-information Hessian
that each gradient evaluation also returns (``information_first``, `crossed_information`,
`tiers.optimize.scoring`: 4 evaluations on InstEval where L-BFGS-B and its polish took 19). The
last point's numbers are kept, so the read-off at the optimiser's end point does not factor again.

For intercept-only terms the gradient in theta is analytic (``has_gradient``), from the same factor:

* ``d ldL2 / d theta_k = 2 (m_k - tr Omega_kk) / theta_k`` with ``Omega = (Lambda'Z'Z Lambda + I)^-1``
  (for the first term in a cancellation-free form read off the pairs);
* ``dA / d theta_k = -(v_k' (Z'R)_k + (Z'R)_k' v_k)`` with ``v = Omega Lambda Z'[X y]`` and
  ``R = [X y] - Z Lambda v`` (the residuals of every column of ``[X y]``, as ``Z'R``).

The deviance is even in each intercept's theta, so the gradient at ``theta_k = 0`` is 0. The
rest terms' ``m_k - tr Omega_kk`` loses about ``eps m_k / theta_k`` to cancellation, negligible
unless theta_k is within ~1e-8 of the boundary. A gradient evaluation costs about 2.5 plain ones:
the traces need the inverse of the Schur complement (`spd_inverse`), which far from the optimum
is taken in single precision (``rough``, for `tiers.optimize.scoring`'s steps: about 2 plain ones).
The read-off (conditional modes and SDs) is `crossed_readoff`'s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from tiers.design.terms import TermSpec, split_theta
from tiers.engine import crossed_blocks as cb
from tiers.engine import crossed_fill as fill
from tiers.engine import crossed_rest as cr
from tiers.engine.contract import Evaluation, TermModes
from tiers.engine.crossed_direct import KEEP, PAIRS_MAX, DirectCoupling
from tiers.engine.crossed_information import log_theta_hessian, working_gram
from tiers.engine.crossed_readoff import conditional_sds
from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.moment_start import moment_theta, ols_residuals
from tiers.engine.sparse_modes import sparse_modes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class CrossedProblem(ProfiledProblem):
    """The profiled deviance of an LMM with crossed (or any) random-effects terms.

    Parameters
    ----------
    y : array (n,)
    X : array (n, p)
        Full column rank.
    terms : list of TermSpec
        Random-effects terms; ``theta`` is the concatenation of their parameters in this order.
    reml : bool
        REML criterion (lme4's default) or ML deviance.
    weights : array (n,), optional
        Precision weights, or frequency weights with ``frequency``: rows of ``X``, ``y`` and
        every ``Z`` scaled by ``sqrt(w)`` (`tiers.engine.gaussian`).

    Attributes
    ----------
    n_theta, theta_lower, theta_upper, theta_start
        Size, bounds and start of theta: lme4's, or for random intercepts only the moment
        estimates of `moment_start` (fewer evaluations to the same optimum).
    term_slices : list of slice
        Entries of theta belonging to each term (in the order of ``terms``).
    has_gradient : bool
        ``evaluate(theta, gradient=True)`` fills an analytic gradient (intercept-only terms with a
        dense Schur complement).
    rough_gradient : bool
        ``evaluate(theta, gradient=True, rough=True)`` takes the gradient's traces from a
        single-precision inverse (`tiers.optimize.scoring`'s steps far from the optimum).
    dense : bool
        Whether the Schur complement on the non-first terms is factored densely (``r`` up to
        `crossed_blocks.DENSE_MAX` columns) or by SuperLU.

    Notes
    -----
    An evaluation writes into a private workspace (the ``r x r`` factor), so one problem must not
    be evaluated from two threads at once; copies made by `with_reml` share the workspace and
    are evaluated one at a time (and share the memo of the last point, whose numbers do not depend
    on the criterion). Terms with one effect (``q = 1``, an intercept or a lone slope)
    count as intercepts for the gradient.
    """

    label = "crossed"

    def __init__(
        self,
        y: FloatArray,
        X: FloatArray,
        terms: list[TermSpec],
        *,
        reml: bool = True,
        weights: FloatArray | None = None,
        frequency: bool = False,
        max_bytes: float | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        #: the last point's ``(theta bytes, A, ldL2)``, in a list the copies of `with_reml` share
        self._last: list[tuple[bytes, FloatArray, float] | None] = [None]
        self.y = y = np.asarray(y, dtype=np.float64)
        self.X = X = np.asarray(X, dtype=np.float64)
        self.reml = reml
        self.rows_shift: FloatArray | None = None
        D = self._centred(y, X)
        self.sw = self._weigh(weights, frequency=frequency)
        if self.sw is not None:
            # rows scaled by sqrt(w) (`tiers.engine.gaussian`): Z's too, so the terms carry them
            D *= self.sw[:, None]
            terms = [dataclasses.replace(t, Z=t.Z * self.sw[:, None]) for t in terms]
        self.terms = list(terms)
        sizes = [term.cov.n_theta for term in terms]
        bounds = np.cumsum([0, *sizes])
        self.term_slices = [
            slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.n_theta = int(bounds[-1])
        self.theta_lower = np.concatenate([t.cov.lower() for t in terms])
        self.theta_upper = np.concatenate([t.cov.upper() for t in terms])
        self.theta_start = np.concatenate([t.cov.start() for t in terms])
        # lme4's order: most columns first (stable for ties)
        self.order = sorted(range(len(terms)), key=lambda k: -terms[k].q * terms[k].nlevels)
        self.dtd = D.T @ D
        first = terms[self.order[0]]
        self.n1, self.q1 = first.nlevels, first.q
        c1 = first.codes
        Z1 = first.Z
        self.C1 = np.empty((self.n1, self.q1, self.q1))
        for s in range(self.q1):
            for t in range(self.q1):
                self.C1[:, s, t] = np.bincount(c1, weights=Z1[:, s] * Z1[:, t], minlength=self.n1)
        self.Z1D = np.empty((self.n1, self.q1, self.p + 1))
        for s in range(self.q1):
            for a in range(self.p + 1):
                self.Z1D[:, s, a] = np.bincount(c1, weights=Z1[:, s] * D[:, a], minlength=self.n1)
        rest = [terms[k] for k in self.order[1:]]
        self.blocks: list[cb.Block] = []
        offset = 0
        for term in rest:
            self.blocks.append(cb.Block(offset, term.nlevels, term.q))
            offset += term.nlevels * term.q
        self.r = offset
        self.intercepts = all(t.q == 1 for t in terms)
        self.dense = True
        self.rest: cr.DenseRest | cr.SparseRest | None = None
        shared = self._init_rest(rest, D, c1, Z1) if self.r else None
        moment_start = False
        if all(t.intercept_only for t in terms):
            # unweighted OLS residuals (D is scaled by the weights when there are any)
            resid = ols_residuals(D, self.dtd) if self.sw is None else None
            start = moment_theta(y, X, [t.codes for t in terms], shared, resid)
            if start is not None:
                self.theta_start = start
                moment_start = True
        self.has_gradient = self.intercepts and self.dense
        # from the moment start, Newton steps in log theta on the average information
        # (`tiers.optimize.scoring`) need ~4 gradients where L-BFGS-B and the polish took ~20
        self.information_first = self.has_gradient and moment_start
        #: `evaluate` takes ``rough``: Newton steps far from the optimum need less precision
        self.rough_gradient = self.has_gradient

    @classmethod
    def from_leaf_rows(
        cls,
        rows: FloatArray,
        terms: list[TermSpec],
        *,
        n: int,
        shift: FloatArray,
        intercept: int | None,
        reml: bool = True,
    ) -> CrossedProblem:
        """The engine from rows that reproduce each cell's cross-product (`tiers.scale`).

        A cell is a combination of every factor's level; ``rows`` holds ``[x y]`` about ``shift``
        (the intercept column unshifted), a few per cell, with ``R_c' R_c = sum_(i in c) w_i w_i'``
        for ``w = [z x y]`` (the terms' ``Z`` and codes are those rows'). Every block this engine
        forms (``Z'Z``, ``Z'[X y]``, ``[X y]'[X y]``) is a sum over rows of products within a
        cell, and its conditional modes a linear map of the rows, so the engine is the data's;
        ``n`` is the number of observations, and beta is mapped back from the shift.
        """
        p = rows.shape[1] - 1
        obj = cls(rows[:, p], rows[:, :p], terms, reml=reml)
        obj.n, obj.shift, obj.intercept = int(n), np.asarray(shift, dtype=np.float64), intercept
        obj.rows_shift = obj.shift if intercept is not None else None
        return obj

    def _init_rest(
        self, rest: list[TermSpec], D: FloatArray, c1: IntArray, Z1: FloatArray
    ) -> FloatArray | None:
        """``Z_r`` as a sparse matrix, its cross-products, and the pairs coupled by the first term.

        Returns the ``C_kl`` of `moment_start` (theta order) when every ``Z`` is a column of ones
        (`crossed_blocks.cell_pairs`), else None.
        """
        n = self.y.size
        obs_parts, coord_parts, val_parts = [], [], []
        for term, blk in zip(rest, self.blocks, strict=True):
            for a in range(term.q):
                obs_parts.append(np.arange(n, dtype=np.int64))
                coord_parts.append(blk.offset + term.codes.astype(np.int64) * term.q + a)
                val_parts.append(term.Z[:, a])
        obs = np.concatenate(obs_parts)
        coord = np.concatenate(coord_parts)
        zval = np.concatenate(val_parts)
        ones = all(t.q == 1 and bool((t.Z == 1.0).all()) for t in self.terms)
        if ones:
            self.ZrD, zrzr = cb.count_crossprods([t.codes for t in rest], self.blocks, D)
        else:
            Zr = sp.csr_matrix((zval, (obs, coord)), shape=(n, self.r))
            self.ZrD = np.asarray(Zr.T @ D)
            zrzr = (Zr.T @ Zr).tocsc()
            del Zr
        # sparse for the gradient's products (InstEval: diagonal blocks and the d x dept:service
        # counts, 1 ms a product less than dense)
        self.zrzr = zrzr
        level, row, vals = cb.level_pattern(obs, coord, zval, c1, Z1, self.r, self.n1)
        del obs, coord, zval
        shared = None
        if ones:
            # the cells' counts: the moment start need not sort the rows' pairs of codes again
            C = cb.cell_pairs(row, vals[:, 0], zrzr, self.blocks)  # sorted order
            shared = np.empty_like(C)
            shared[np.ix_(self.order, self.order)] = C
        cols = level[:, None] * self.q1 + np.arange(self.q1)[None, :]
        self.N = sp.csr_matrix(
            (vals.ravel(), (np.repeat(row, self.q1), cols.ravel())),
            shape=(self.r, self.n1 * self.q1),
        )
        self.NT = self.N.T.tocsr()
        k = np.bincount(level, minlength=self.n1)
        pairs = int((k * (k + 1) // 2).sum())
        self.coupling: cb.Coupling | DirectCoupling
        if pairs > PAIRS_MAX and self.q1 == 1 and self.r <= cb.DENSE_MAX:
            fill.check_dense(self.r, self.max_bytes, matrices=3 + KEEP)
            self.coupling = DirectCoupling(self.N)  # too many pairs to list (ratings designs)
            self.dense = True
        else:
            fill.check_pairs(pairs, self.r, self.max_bytes)
            self.dense = cb.use_dense(self.r, 0)  # small: dense whatever the pattern
            if not self.dense:
                # the pattern of S (N N' and Z_r'Z_r) decides dense or sparse and predicts the
                # fill, before the pairs are listed
                ones = sp.csr_matrix((np.ones(level.size), (row, level)), shape=(self.r, self.n1))
                pattern = ones @ ones.T + zrzr
                self.dense = cb.use_dense(self.r, (pattern.nnz + self.r) // 2)
                if not self.dense:
                    fill.check_sparse(pattern, self.max_bytes)
                del ones, pattern
            if self.dense:
                fill.check_dense(self.r, self.max_bytes)
            self.coupling = cb.coupling(level, row, vals, self.n1, self.r)
        if self.dense:
            self.rest = cr.DenseRest(zrzr, self.coupling, self.blocks)
        else:
            self.rest = cr.SparseRest(zrzr, self.coupling, self.blocks)
        return shared

    # ------------------------------------------------------------------------------ evaluation --

    def _factors(self, theta: FloatArray) -> list[FloatArray]:
        """The relative factors ``T_k``, in sorted order (first term first)."""
        return [self.terms[k].cov.factor(theta[self.term_slices[k]]) for k in self.order]

    def _first_block(self, T1: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        """``log det`` of the first diagonal block, ``B_j^-1`` and ``P_j = T1 B_j^-1 T1'``."""
        if self.q1 == 1:
            t = T1[0, 0]
            d = 1.0 + t * t * self.C1[:, 0, 0]
            Binv = (1.0 / d)[:, None, None]
            return float(np.log(d).sum()), Binv, (t * t) * Binv
        B = np.einsum("sa,jst,tb->jab", T1, self.C1, T1)
        B[:, np.arange(self.q1), np.arange(self.q1)] += 1.0
        L = np.linalg.cholesky(B)
        ld = 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
        Binv = np.linalg.inv(B)
        P = np.einsum("sa,jab,tb->jst", T1, Binv, T1)
        return ld, Binv, P

    def evaluate(
        self, theta: FloatArray, *, gradient: bool = False, rough: bool = False
    ) -> Evaluation:
        """Eliminate at ``theta``: the deviance and its parts (and the gradient if asked).

        Parameters
        ----------
        theta : array (n_theta,)
            The terms' parameters, in the order of ``terms``.
        gradient : bool
            Also return d deviance / d theta; needs ``has_gradient``.
        rough : bool
            The gradient's traces from a single-precision inverse of ``S`` (`rough_gradient`):
            for a Newton step far from the optimum, never for a certificate. The deviance is
            exact either way.
        """
        theta = np.asarray(theta, dtype=np.float64)
        key = theta.tobytes()
        last = self._last[0]
        if not gradient and last is not None and last[0] == key:
            # the optimiser's last point again (the read-off's solve, the other criterion): the
            # factor's numbers do not depend on the criterion
            return self.finish(theta, last[1].copy(), last[2])
        if not gradient and not theta.any():
            # the linear model (the LR test's null): Omega = I, nothing to factor (a dense
            # factorisation of the identity took 0.65 s on the ratings design)
            return self.finish(theta, self.dtd.copy(), 0.0)
        return self._eliminate(theta, gradient, rough)

    def _eliminate(self, theta: FloatArray, gradient: bool, rough: bool = False) -> Evaluation:
        """`evaluate` without the memo; leaves ``S`` factored at ``theta`` unless ``gradient``."""
        T = self._factors(theta)
        ld, Binv, P = self._first_block(T[0])
        self._state = (theta.copy(), T, Binv, P)
        if self.rest is not None:
            if gradient and isinstance(self.rest, cr.DenseRest):
                ld += self.rest.factor(P, T[1:], Binv * Binv)  # N P2 N' for `coupled_trace`
            else:
                ld += self.rest.factor(P, T[1:])
        A, V = self.downdate(self.Z1D, self.ZrD if self.rest is not None else None, self.dtd)
        A = 0.5 * (A + A.T)
        self._last[0] = (theta.tobytes(), A, ld)
        ev = self.finish(theta, A, ld)
        if not gradient:
            return ev
        if not self.has_gradient:
            raise NotImplementedError(
                "the analytic gradient covers intercept-only terms with a dense Schur complement"
            )
        return self._gradient(ev, theta, Binv[:, 0, 0], V, rough)

    def downdate(
        self, Z1W: FloatArray, ZrW: FloatArray | None, WtW: FloatArray
    ) -> tuple[FloatArray, FloatArray | None]:
        """``W'W - W'Z Lambda Omega Lambda'Z'W`` for columns ``W`` given by their cross-products.

        ``Z1W`` (nlevels1, q1, m) and ``ZrW`` (r, m) are ``Z'W``, ``WtW`` is ``W'W``; the first
        block's weights and the factor of ``S`` are the last `_eliminate`'s. Also returns the rest
        part of ``Omega Lambda'Z'W`` (None without rest terms).
        """
        _, T, _, P = self._state
        PZ1W = P * Z1W if self.q1 == 1 else P @ Z1W
        m1 = self.n1 * self.q1
        A = WtW - Z1W.reshape(m1, -1).T @ PZ1W.reshape(m1, -1)
        if self.rest is None:
            return A, None
        assert ZrW is not None
        S_rW = cb.lam_t(T[1:], self.blocks, ZrW - self.N @ PZ1W.reshape(m1, -1))
        V = self.rest.solve(S_rW)
        return A - S_rW.T @ V, V

    def _gradient(
        self,
        ev: Evaluation,
        theta: FloatArray,
        dinv: FloatArray,
        Vr: FloatArray | None,
        rough: bool = False,
    ) -> Evaluation:
        """Analytic gradient for intercept-only terms (see the module docstring)."""
        K = len(self.order)
        th = np.array([theta[self.term_slices[k]][0] for k in self.order])
        t1 = th[0]
        c = self.C1[:, 0, 0]
        Z1D = self.Z1D[:, 0, :]
        dld = np.zeros(K)
        # v = Omega Lambda Z'D and Z'R = Z'D - Z'Z Lambda v, blockwise
        U1 = t1 * Z1D
        if Vr is None:
            V1 = U1 * dinv[:, None]
            ZtR1 = Z1D - (c * t1)[:, None] * V1
        else:
            thr = np.concatenate([np.full(b.nlevels, th[i + 1]) for i, b in enumerate(self.blocks)])
            LVr = thr[:, None] * Vr
            V1 = (U1 - t1 * (self.NT @ LVr)) * dinv[:, None]
            ZtR1 = Z1D - (c * t1)[:, None] * V1 - self.NT @ LVr
            ZtRr = self.ZrD - self.N @ (t1 * V1) - self.zrzr @ LVr
        # the modes b = Lambda u (u = v_y - v_X beta) give the working variates of the average
        # information, whose reduction needs the factor of S before it is inverted
        p = self.p
        b1 = t1 * (V1[:, p] - V1[:, :p] @ ev.beta)
        br = np.zeros(0) if Vr is None else LVr[:, p] - LVr[:, :p] @ ev.beta
        gram = working_gram(self, b1, br)
        dA = np.zeros((K, self.p + 1, self.p + 1))
        half = V1.T @ ZtR1
        dA[0] = -(half + half.T)
        # first term: m1 - tr Omega_11 = t1^2 [sum c_j/d_j - sum Q_j/d_j^2]
        first = float(c @ dinv)
        if Vr is not None:
            assert isinstance(self.rest, cr.DenseRest)
            T = self._state[1]
            diag = self.rest.inverse_diagonal(single=rough)
            first -= self.rest.coupled_trace((dinv * dinv)[:, None, None], T[1:])
            for i, b in enumerate(self.blocks):
                sl = slice(b.offset, b.stop)
                half = Vr[sl].T @ ZtRr[sl]
                dA[i + 1] = -(half + half.T)
                if th[i + 1] != 0.0:
                    dld[i + 1] = 2.0 * (b.nlevels - float(diag[sl].sum())) / th[i + 1]
        dld[0] = 2.0 * t1 * first
        g_sorted, (_, dpw, dldrx) = self.gradient_parts(ev, dA, dld)
        grad = np.zeros(self.n_theta)
        parts = np.zeros((3, self.n_theta))
        for i, k in enumerate(self.order):
            j = self.term_slices[k].start
            grad[j] = g_sorted[i]
            if th[i] != 0.0:  # d/dt = d/dtheta / (2 theta); 0 where theta = 0
                parts[:, j] = np.array([dld[i], dpw[i], dldrx[i]]) / (2.0 * th[i])
        grad_t = parts[0] + self.nu * parts[1] / ev.pwrss + parts[2]
        index = [self.term_slices[k].start for k in self.order]
        info = np.zeros((self.n_theta, self.n_theta))
        info[np.ix_(index, index)] = log_theta_hessian(gram, g_sorted * th, self.nu)
        return dataclasses.replace(
            ev, gradient=grad, gradient_t=grad_t, parts_t=parts, information=info
        )

    # ------------------------------------------------------------------------------- read-off --

    def conditional_sds(self, theta: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
        """Conditional modes and conditional SDs of the random effects, per term (order of ``terms``).

        Returns
        -------
        list of (b, cond_sd)
            ``b`` (nlevels, q): ``Lambda u``, the conditional modes on the data scale: lme4's
            ``ranef`` as is (no factor sigma). ``cond_sd`` (nlevels, q): the square roots of the
            diagonal of ``Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda'``, i.e. of the conditional
            variance divided by sigma^2: multiply by sigma to get lme4's
            ``ranef(condVar = TRUE)`` SDs. With a sparse factor whose inversion on the needed
            entries would cost more than `crossed_rest.COND_VAR_MAX_FLOPS`, ``cond_sd`` is NaN.
        """
        return conditional_sds(self, theta)

    def conditional_modes(
        self, theta: FloatArray, beta: FloatArray, sigma: float, *, cond_var: bool = True
    ) -> list[TermModes]:
        """Conditional modes (and covariance blocks) of every term, in theta order.

        See `tiers.engine.sparse_modes` (this engine's `conditional_sds` serve designs too large for
        a dense inverse).
        """
        theta = np.asarray(theta, dtype=np.float64)
        beta = np.array(beta, dtype=np.float64)
        if self.rows_shift is not None and self.intercept is not None:
            # rows about the shift: y - X beta = y_c - X_c beta + (s_y - s_x . beta) * 1
            beta[self.intercept] -= self.rows_shift[self.p] - self.rows_shift[: self.p] @ beta
        r = self.y - self.X @ beta
        if self.sw is not None:
            r = r * self.sw
        return sparse_modes(
            self.terms,
            split_theta(self.terms, theta),
            r,
            sigma,
            cond_var,
            lambda: self.conditional_sds(theta),
        )
