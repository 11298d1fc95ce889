"""Kenward-Roger with residual structures and precision/frequency weights.

Oracles: a dense implementation of Kenward and Roger (1997) on the n x n ``Sigma`` of small
designs (derivatives of ``Sigma`` by central differences of a closed form built here from the
data, independently of tiers' residual code), pbkrtest on the equivalent lmer fit for
exchangeable residuals (``tests/data/kr/rside_exchangeable.json``, made by
``tests/data/kr/make_kr_rside.R`` with pbkrtest 0.5.2), and the unweighted KR for unit weights.
pbkrtest cannot serve for precision weights: its ``get_SigmaG`` builds the residual's ``G`` as
the identity whatever lmer's ``weights=``, so its KR ignores them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.errors import InferenceError
from tiers.inference.kenward_roger import KenwardRoger
from tiers.inference.kr_parts import covariance_basis

from .tolerances import KR_DF_RTOL, KR_SE_RTOL

DATA = Path(__file__).parent / "data"
#: Central differences of a smooth closed form (steps 1e-5, 1e-4 for second derivatives):
#: truncation ~1e-8 and rounding ~1e-10 relative, carried through W and Phi_A.
DENSE_KR_RTOL = 1e-6

CASES: dict[str, tuple[str, tiers.ResidualStructure]] = {
    "ar1": ("y ~ x + wave + (1 | school/student)", tiers.AR1("wave")),
    "car1": ("y ~ x + wave + (1 | school/student)", tiers.CAR1("months")),
    "toeplitz2": ("y ~ x + wave + (1 | school/student)", tiers.Toeplitz("wave", 2)),
    "varident": ("y ~ x + wave + (1 | school/student)", tiers.Independent(by="mode")),
    "ar1_varident": ("y ~ x + wave + (1 | school/student)", tiers.AR1("wave", by="mode")),
    "exchangeable": ("y ~ x + wave + (1 | school)", tiers.Exchangeable(group="student")),
    "exchangeable_by": (
        "y ~ x + wave + (1 | school)",
        tiers.Exchangeable(group="student", by="mode"),
    ),
    "unstructured": ("y ~ x + (1 | school)", tiers.Unstructured("wave", group="student")),
    "ar1_slopes": ("y ~ x + wave + (1 | school) + (0 + x | school:student)", tiers.AR1("wave")),
}


@cache
def _sim() -> pd.DataFrame:
    return pd.read_csv(DATA / "rside" / "rside_sim.csv")


@cache
def _small_fit(case: str) -> tiers.LmmResult:
    data = _sim()
    small = data[data["school"].isin([f"s{i:02d}" for i in range(1, 16)])]
    formula, structure = CASES[case]
    return tiers.fit(formula, small, residuals=structure)


# ------------------------------------------------------------------------------ dense oracle --


def _residual_model(res: Any) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The residual parameters at the estimates and ``V(psi)`` (n x n), from the data.

    SAS's parametrisation of each structure: covariances where ``V`` is linear in them (CS,
    TOEP, UN, variances by stratum), else (variances by stratum, correlations) (AR(1), SP(POW),
    CSH/ARH).
    """
    spec = res.design.residuals.spec
    params = res.design.residuals.params
    data = res.design.frame.data
    n = len(data)
    rho = np.asarray(res.theta)[len(res.theta) - params.n_rho :]
    nat = params.natural(rho)
    corr, ratios = nat[: params.n_corr], np.concatenate(([1.0], nat[params.n_corr :]))
    v = res.sigma**2 * ratios**2
    key = data["school"].astype(str) + "/" + data["student"].astype(str)
    same = (key.to_numpy()[:, None] == key.to_numpy()[None, :]).astype(float)
    t = data[spec.time].to_numpy(float) if spec.time else np.zeros(n)
    lag = np.abs(t[:, None] - t[None, :])
    eye = np.eye(n)
    if spec.kind == "unstructured":
        occ = np.searchsorted(params.occasions, t)
        k = params.occasions.size
        C = np.eye(k)
        C[np.triu_indices(k, 1)] = corr
        C = np.triu(C) + np.triu(C, 1).T
        S = np.sqrt(np.outer(v, v)) * C
        il = np.tril_indices(k)
        psi0 = S[il]

        def V_un(psi: np.ndarray) -> np.ndarray:
            M = np.zeros((k, k))
            M[il] = psi
            M = M + np.tril(M, -1).T
            return same * M[occ[:, None], occ[None, :]]

        return psi0, V_un
    code = pd.factorize(data[spec.by], sort=True)[0] if spec.by is not None else np.zeros(n, int)
    S = v.size
    if spec.kind == "toeplitz" or (spec.kind == "exchangeable" and spec.by is None):
        # linear: the variance and the covariances
        psi0 = np.concatenate([v, v[0] * corr])

        def V_lin(psi: np.ndarray) -> np.ndarray:
            out = psi[0] * eye
            if spec.kind == "exchangeable":
                return out + psi[1] * same * (1.0 - eye)
            for h in range(1, psi.size):
                out = out + psi[h] * same * (lag == h)
            return out

        return psi0, V_lin
    psi0 = np.concatenate([v, corr])

    def V_nl(psi: np.ndarray) -> np.ndarray:
        a = np.sqrt(psi[:S][code])
        f = np.outer(a, a)
        if spec.kind in ("ar1", "car1"):
            C = np.power(psi[S], lag)
        elif spec.kind == "exchangeable":
            C = eye + psi[S] * (1.0 - eye)
        else:
            C = eye
        return same * f * C

    return psi0, V_nl


def _dense_kr(
    res: Any, reparam: Callable[[np.ndarray], np.ndarray] | None = None, *, second: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Phi, Phi_A, P and W of KR 1997 on the dense ``Sigma``.

    ``reparam`` maps new parameters ``eta`` to the residual ``psi`` (identity by default), with
    ``eta`` at its inverse found numerically; ``second`` includes ``R_ij``.
    """
    X, sigma = np.asarray(res.X), res.sigma
    n = X.shape[0]
    G: list[np.ndarray] = []
    gamma: list[float] = []
    n_re = sum(t.cov.n_theta for t in res.design.terms)
    th = np.asarray(res.theta)[:n_re]
    at = 0
    for term in res.design.terms:
        cov = term.cov.covariance(th[at : at + term.cov.n_theta]) * sigma**2
        at += term.cov.n_theta
        same = term.codes[:, None] == term.codes[None, :]
        basis = covariance_basis(term.cov)
        B = np.array([E.ravel() for E in basis]).T
        gamma += list(np.linalg.lstsq(B, cov.ravel(), rcond=None)[0])
        G += [np.where(same, term.Z @ E @ term.Z.T, 0.0) for E in basis]
    psi0, V = _residual_model(res)
    if reparam is None:
        eta0, Vf = psi0, V
    else:
        from scipy.optimize import least_squares

        eta0 = least_squares(lambda e: reparam(e) - psi0, np.zeros(psi0.size), xtol=1e-15).x
        Vf = lambda e: V(reparam(e))  # noqa: E731
    e, m = len(G), len(G) + psi0.size
    Sigma = sum(g * Gr for g, Gr in zip(gamma, G, strict=True)) + Vf(eta0)
    h1, h2 = 1e-5, 1e-4
    d1 = list(G)
    d2: dict[tuple[int, int], np.ndarray] = {}  # the nonzero second derivatives only
    for a in range(psi0.size):
        up, dn = eta0.copy(), eta0.copy()
        up[a] += h1
        dn[a] -= h1
        d1.append((Vf(up) - Vf(dn)) / (2 * h1))
        if not second:
            continue
        for b in range(a, psi0.size):
            val = np.zeros((n, n))
            for sa, sb in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                x = eta0.copy()
                x[a] += sa * h2
                x[b] += sb * h2
                val += sa * sb * Vf(x)
            val /= 4 * h2 * h2
            if np.abs(val).max() > 1e-6 * np.abs(Sigma).max():  # else zero up to rounding
                d2[e + a, e + b] = d2[e + b, e + a] = val
    Si = np.linalg.inv(Sigma)
    phi = np.linalg.inv(X.T @ Si @ X)
    SX = Si @ X
    Pm = Si - SX @ phi @ SX.T
    P = np.array([-SX.T @ D @ SX for D in d1])
    PD = [Pm @ D for D in d1]
    info = np.array([[0.5 * np.sum(A * B.T) for B in PD] for A in PD])
    W = np.linalg.inv(info)
    A = [(SX.T @ D) @ Si for D in d1]
    B = [D @ SX for D in d1]
    U = np.zeros_like(phi)
    for r in range(m):
        for s in range(m):
            R = SX.T @ d2[r, s] @ SX if (r, s) in d2 else 0.0
            U += W[r, s] * (A[r] @ B[s] - P[r] @ phi @ P[s] - 0.25 * R)
    return phi, phi + 2 * phi @ U @ phi, P, W


def _kr_of(res: Any, phi: np.ndarray, adj: np.ndarray, P: np.ndarray, W: np.ndarray) -> Any:
    names = tuple(res.xnames)
    return KenwardRoger(np.asarray(res.beta), phi, adj, P, W, names, (), False, 0)


def _joint(res: Any) -> np.ndarray:
    L = np.eye(len(res.xnames))[1:]
    return L


@pytest.mark.parametrize("case", list(CASES))
def test_blockwise_kr_equals_dense_kr_1997(case: str) -> None:
    res = _small_fit(case)
    kr = KenwardRoger.from_result(res)
    phi, adj, P, W = _dense_kr(res)
    dense = _kr_of(res, phi, adj, P, W)
    np.testing.assert_allclose(kr.vcov, phi, rtol=1e-9)
    np.testing.assert_allclose(kr.vcov_adj, adj, rtol=DENSE_KR_RTOL)
    assert not np.allclose(kr.vcov_adj, kr.vcov, rtol=1e-6)  # a real adjustment
    p = len(res.xnames)
    for j in range(p):
        L = np.eye(p)[j]
        assert kr.df(L) == pytest.approx(dense.df(L), rel=DENSE_KR_RTOL)
    got, want = kr.contest(_joint(res)), dense.contest(_joint(res))
    np.testing.assert_allclose(got, want, rtol=DENSE_KR_RTOL)


def test_second_derivative_term_is_used_for_ar1() -> None:
    """AR(1) has no linear parametrisation: Phi_A holds R_ij (dense with and without it)."""
    res = _small_fit("ar1_varident")
    kr = KenwardRoger.from_result(res)
    full = _dense_kr(res)[1]
    first = _dense_kr(res, second=False)[1]
    gap = np.abs(full - first).max()
    assert gap > 1e-4 * np.abs(full).max()  # R_ij matters here
    np.testing.assert_allclose(kr.vcov_adj, full, rtol=DENSE_KR_RTOL)


def test_reparametrisation_changes_only_the_second_derivative_term() -> None:
    """The df and the first-order Phi_A are invariant; R_ij's part is not (KR 2009).

    AR(1) in (log v, atanh phi) instead of (v, phi): P, Q and W transform as tensors, so the df
    and the adjustment without R_ij agree; R_ij gains ``-sum_k (d2 psi_k) P_k`` and Phi_A moves.
    """
    res = _small_fit("ar1")

    def reparam(eta: np.ndarray) -> np.ndarray:
        return np.array([np.exp(eta[0]), np.tanh(eta[1])])

    phi, adj, P, W = _dense_kr(res)
    phi2, adj2, P2, W2 = _dense_kr(res, reparam)
    a, b = _kr_of(res, phi, adj, P, W), _kr_of(res, phi2, adj2, P2, W2)
    for j in range(len(res.xnames)):
        L = np.eye(len(res.xnames))[j]
        assert a.df(L) == pytest.approx(b.df(L), rel=DENSE_KR_RTOL)
    first = _dense_kr(res, second=False)[1]
    first2 = _dense_kr(res, reparam, second=False)[1]
    np.testing.assert_allclose(first, first2, rtol=DENSE_KR_RTOL)
    assert np.abs(adj - adj2).max() > 1e-3 * np.abs(adj - phi).max()


def test_exchangeable_residuals_match_pbkrtest_on_the_random_intercept_fit() -> None:
    ref = json.loads((DATA / "kr" / "rside_exchangeable.json").read_text(encoding="utf-8"))
    res = tiers.fit(
        "y ~ x + wave + (1 | school)", _sim(), residuals=tiers.Exchangeable(group="student")
    )
    lmer = tiers.fit(ref["formula"], _sim())
    table = res.coef_table(ddf="kenward-roger")
    for fe in ref["fixed_effects"]:
        row = table.loc[fe["name"]]
        assert row["std_error"] == pytest.approx(fe["std_error_kr"], rel=KR_SE_RTOL)
        assert row["df"] == pytest.approx(fe["df_kr"], rel=KR_DF_RTOL)
    np.testing.assert_allclose(res.vcov_kr.to_numpy(), ref["vcov_adj"], rtol=KR_SE_RTOL)
    test = res.ftest(_joint(res), ddf="kenward-roger")
    assert test["F"] == pytest.approx(ref["kr_test"]["F"], rel=KR_SE_RTOL)
    assert test["den_df"] == pytest.approx(ref["kr_test"]["DenDF"], rel=KR_DF_RTOL)
    # and the same as tiers' KR of the lmer fit, to the two fits' agreement
    np.testing.assert_allclose(res.vcov_kr.to_numpy(), lmer.vcov_kr.to_numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------------- weights --


def _sleep() -> pd.DataFrame:
    from .conftest import REFERENCE

    data = pd.read_csv(REFERENCE / "sleepstudy.csv")
    data["w"] = 1.0 + (data["Days"] % 3)
    data["one"] = 1.0
    return data


def test_unit_precision_weights_equal_unweighted_kr() -> None:
    data = _sleep()
    plain = tiers.fit("Reaction ~ Days + (Days | Subject)", data)
    ones = tiers.fit("Reaction ~ Days + (Days | Subject)", data, weights="one")
    a, b = plain.coef_table(ddf="kenward-roger"), ones.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6)


def _dense_weighted(res: Any, w: np.ndarray, extra: float) -> Any:
    """KR on ``Sigma = Z G Z' + sigma^2 W^-1``, the residual's ``G = W^-1`` (linear)."""
    X, sigma = np.asarray(res.X), res.sigma
    G, gamma = [], []
    for term, info in zip(res.design.terms, res.terms, strict=True):
        cov = sigma**2 * term.cov.covariance(np.asarray(res.theta)[info.start : info.stop])
        basis = covariance_basis(term.cov)
        B = np.array([E.ravel() for E in basis]).T
        gamma += list(np.linalg.lstsq(B, cov.ravel(), rcond=None)[0])
        same = term.codes[:, None] == term.codes[None, :]
        G += [np.where(same, term.Z @ E @ term.Z.T, 0.0) for E in basis]
    G.append(np.diag(1.0 / w))
    gamma.append(sigma**2)
    Sigma = sum(g * Gr for g, Gr in zip(gamma, G, strict=True))
    Si = np.linalg.inv(Sigma)
    phi = np.linalg.inv(X.T @ Si @ X)
    SX = Si @ X
    Pm = Si - SX @ phi @ SX.T
    P = np.array([-SX.T @ D @ SX for D in G])
    PD = [Pm @ D for D in G]
    info = np.array([[0.5 * np.sum(A * B.T) for B in PD] for A in PD])
    info[-1, -1] += 0.5 * extra / sigma**4  # the expanded rows' within-replicate contrasts
    W = np.linalg.inv(info)
    U = sum(
        W[r, s] * (SX.T @ G[r] @ Si @ G[s] @ SX - P[r] @ phi @ P[s])
        for r in range(len(G))
        for s in range(len(G))
    )
    return _kr_of(res, phi, phi + 2 * phi @ U @ phi, P, W)


@pytest.mark.parametrize("kind", ["precision", "frequency"])
def test_weighted_kr_equals_dense_kr(kind: str) -> None:
    data = _sleep()
    res = tiers.fit("Reaction ~ Days + (Days | Subject)", data, weights="w", weight_type=kind)
    w = data["w"].to_numpy(float)
    dense = _dense_weighted(res, w, float(w.sum() - w.size) if kind == "frequency" else 0.0)
    kr = KenwardRoger.from_result(res)
    np.testing.assert_allclose(kr.vcov_adj, dense.vcov_adj, rtol=1e-7)
    for j in range(2):
        L = np.eye(2)[j]
        assert kr.df(L) == pytest.approx(dense.df(L), rel=1e-7)


def test_frequency_weights_equal_the_expanded_data() -> None:
    data = _sleep()
    w = data["w"].astype(int)
    res = tiers.fit(
        "Reaction ~ Days + (Days | Subject)", data, weights="w", weight_type="frequency"
    )
    long = data.loc[data.index.repeat(w)].reset_index(drop=True)
    expanded = tiers.fit("Reaction ~ Days + (Days | Subject)", long)
    a, b = res.coef_table(ddf="kenward-roger"), expanded.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5)


def test_sampling_weights_and_sandwiches_are_refused_with_the_alternative() -> None:
    data = _sleep()
    pw = tiers.fit("Reaction ~ Days + (1 | Subject)", data, weights="w", weight_type="sampling")
    with pytest.raises(InferenceError, match="pseudo-likelihood.*ddf='normal'"):
        pw.coef_table(ddf="kenward-roger")
    with pytest.raises(InferenceError, match="pseudo-likelihood"):
        KenwardRoger.from_result(pw)
    assert np.isfinite(pw.coef_table(ddf="normal")["p_value"]).all()  # what is supported
    with pytest.raises(InferenceError, match=r"dfmethod\(kroger\).*pseudo-likelihood"):
        tiers.fit("Reaction Days [pw=w] || Subject:, dfmethod(kroger)", data)
    rob = tiers.fit("Reaction ~ Days + (1 | Subject)", data, vce="robust", reml=False)
    with pytest.raises(InferenceError, match="sandwich.*vce='cr2'"):
        rob.ftest("Days", ddf="kenward-roger")
    cr2 = tiers.fit("Reaction ~ Days + (1 | Subject)", data, vce="cr2")
    with pytest.raises(InferenceError, match="CR2.*satterthwaite"):
        cr2.anova(ddf="kenward-roger")
    assert cr2.satterthwaite()["df"].notna().all()


def test_residual_structure_through_every_entry_point(tmp_path: Path) -> None:
    data = _sim()
    res = tiers.fit(
        "y x wave || school: || student:, residuals(ar 1, t(wave)) dfmethod(kroger)", data
    )
    table = res.coef_table(ddf="kenward-roger")
    kr = KenwardRoger.from_result(res)
    assert table.loc["x", "df"] == pytest.approx(kr.df(np.eye(3)[1]), rel=1e-12)
    aov = res.anova("kenward-roger")
    assert aov.loc["x", "den_df"] == pytest.approx(table.loc["x", "df"], rel=1e-9)
    doc = res.to_dict()
    assert "kenward_roger" in doc
    mm = res.margins("wave", at=[1, 5], ddf="kenward-roger")
    assert np.isfinite(mm["df"]).all()


@pytest.mark.parametrize("case", ["ar1_varident", "unstructured", "ar1_slopes"])
def test_sparse_large_block_path_equals_stacked_dense(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiers.inference import kr_parts as parts_module
    from tiers.inference.kr_rside import residual_parts

    res = _small_fit(case)
    args = (list(res.design.terms), np.asarray(res.X), np.asarray(res.theta), res.sigma)
    dense = residual_parts(*args, res.design.residuals)
    monkeypatch.setattr(parts_module, "SMALL_BLOCK", 0)  # every block by the sparse path
    sparse = residual_parts(*args, res.design.residuals)
    for a, b in ((dense.P, sparse.P), (dense.Q, sparse.Q), (dense.R, sparse.R)):
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * np.abs(a).max())
    np.testing.assert_allclose(sparse.T, dense.T, rtol=1e-9)
