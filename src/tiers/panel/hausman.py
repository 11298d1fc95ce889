"""Specification tests for the panel estimators in :mod:`tiers.panel`: the Hausman test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.errors import ComparisonError
from tiers.panel import PanelResult

__all__ = ["HausmanResult", "hausman"]


@dataclass(frozen=True, eq=False)
class HausmanResult:
    """Hausman (1978) test of FE (consistent) against RE (efficient under H0).

    Attributes
    ----------
    chi2, df, p_value
        ``p_value`` is None when chi2 < 0 (possible with a generalized inverse), as Stata
        prints no p-value then.
    coefficients : tuple of str
        The common slope coefficients compared.
    b_fe, b_re : Series
        Their estimates; ``se_diff`` holds sqrt(diag(V_fe - V_re)), NaN where negative.
    """

    chi2: float
    df: int
    p_value: float | None
    coefficients: tuple[str, ...]
    b_fe: pd.Series
    b_re: pd.Series
    se_diff: pd.Series
    notes: tuple[str, ...] = ()

    @property
    def diff(self) -> pd.Series:
        """b_fe - b_re."""
        return (self.b_fe - self.b_re).rename("diff")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: test, chi2, df, p_value, coefficients, diff, notes."""
        return {
            "test": "hausman",
            "chi2": float(self.chi2),
            "df": self.df,
            "p_value": None if self.p_value is None else float(self.p_value),
            "coefficients": list(self.coefficients),
            "diff": {k: float(v) for k, v in self.diff.items()},
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """Plain-text report laid out like Stata's ``hausman``."""
        lines = [
            f"{'':>12} | {'(b) fe':>11} {'(B) re':>11} {'(b-B)':>11} {'sqrt(diag(V_b-V_B))':>20}",
            "-" * 13 + "+" + "-" * 57,
        ]
        for name in self.coefficients:
            se = self.se_diff[name]
            lines.append(
                f"{name[:12]:>12} | {self.b_fe[name]:11.7g} {self.b_re[name]:11.7g} "
                f"{self.diff[name]:11.4g} {'.' if math.isnan(se) else f'{se:.7g}':>20}"
            )
        p = "." if self.p_value is None else f"{self.p_value:.4f}"
        lines += [
            "-" * 71,
            f"chi2({self.df}) = (b-B)'[(V_b-V_B)^(-1)](b-B) = {self.chi2:.2f}",
            f"Prob > chi2 = {p}",
            *self.notes,
        ]
        return "\n".join(lines)


def hausman(fe_result: PanelResult, re_result: PanelResult) -> HausmanResult:
    """Hausman test, H = (b_fe - b_re)' (V_fe - V_re)^-1 (b_fe - b_re) on the common slopes.

    As Stata's ``hausman fe re`` ([R] hausman, Methods and formulas): df is the rank of
    V_fe - V_re, and when that matrix is not positive definite a generalized (eigen-based
    Moore-Penrose) inverse is used and a note says so. Eigenvalues below sqrt(machine eps)
    times the largest diagonal entry of V_fe count as zero, so FE and RE fits that coincide
    (e.g. a balanced regressor with no between variation) give chi2 = 0 on 0 df, p = 1.

    Raises
    ------
    ComparisonError
        Not an (fe, re) pair, fits on different samples, cluster-robust covariances (the test
        needs RE efficient under H0; Stata refuses them too), or no common slope.
    """
    if fe_result.estimator != "fe" or re_result.estimator != "re":
        raise ComparisonError(
            "hausman needs a fixed_effects result then a random_effects result, "
            f"got {fe_result.estimator!r} and {re_result.estimator!r}"
        )
    if "cluster" in (fe_result.vce, re_result.vce):
        raise ComparisonError(
            "hausman needs conventional covariances: under vce='cluster' RE "
            "is not assumed efficient; refit both with vce='conventional'"
        )
    if (fe_result.nobs, fe_result.ngroups, fe_result.depvar, fe_result.id) != (
        re_result.nobs,
        re_result.ngroups,
        re_result.depvar,
        re_result.id,
    ):
        raise ComparisonError("hausman: the two fits use different data (rows, groups, y or id)")
    common = [c for c in fe_result.coef.index if c != "_cons" and c in re_result.coef.index]
    if not common:
        raise ComparisonError("hausman: FE and RE have no slope coefficient in common")
    b_fe = fe_result.coef.loc[common, "estimate"].rename("fe")
    b_re = re_result.coef.loc[common, "estimate"].rename("re")
    d = b_fe - b_re
    D = (
        fe_result.vcov.loc[common, common].to_numpy()
        - re_result.vcov.loc[common, common].to_numpy()
    )
    D = (D + D.T) / 2
    lam, Q = np.linalg.eigh(D)
    tol = math.sqrt(np.finfo(float).eps) * float(
        np.abs(np.diag(fe_result.vcov.loc[common, common].to_numpy())).max()
    )
    use = np.abs(lam) > tol
    rank = int(use.sum())
    notes: list[str] = []
    if (lam < -tol).any():
        notes.append("V_fe - V_re is not positive definite; a generalized inverse is used")
    if rank == 0:
        notes.append(
            "V_fe - V_re is numerically zero: FE and RE coincide on the common "
            "coefficients, so chi2 = 0 on 0 df"
        )
        chi2, p = 0.0, 1.0
    else:
        if rank < len(common):
            notes.append(
                f"rank of V_fe - V_re ({rank}) is below the number of coefficients "
                f"tested ({len(common)}); df = rank, generalized inverse used"
            )
        z = Q[:, use].T @ d.to_numpy()
        chi2 = float(np.sum(z * z / lam[use]))
        if chi2 < 0:
            notes.append(
                "chi2 < 0: the model fitted on these data fails to meet the "
                "asymptotic assumptions of the Hausman test"
            )
            p = None
        else:
            p = float(stats.chi2.sf(chi2, rank))
    diag = np.diag(D)
    se = pd.Series(np.where(diag >= 0, np.sqrt(np.abs(diag)), np.nan), index=common)
    return HausmanResult(
        chi2=chi2,
        df=rank,
        p_value=p,
        coefficients=tuple(common),
        b_fe=b_fe,
        b_re=b_re,
        se_diff=se,
        notes=tuple(notes),
    )
