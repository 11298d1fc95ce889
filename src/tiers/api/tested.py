"""Tests of the fixed effects: Wald z, Satterthwaite's and Kenward-Roger's t and F.

The methods `tiers.LmmResult` inherits for its coefficient table, ``anova`` and ``ftest``; the
statistics are `tiers.inference.satterthwaite`'s and `tiers.inference.kenward_roger`'s.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from tiers._lazy import LazyModule
from tiers._threads import single_thread_blas
from tiers.api.display import DisplayedFit
from tiers.inference import weighted
from tiers.options import check_level, check_option

if TYPE_CHECKING:  # imported by the first Kenward-Roger (Satterthwaite) test
    from tiers.inference import satterthwaite as satt
    from tiers.inference.kenward_roger import KenwardRoger
else:
    satt = LazyModule("tiers.inference.satterthwaite")

#: Reference distributions of the fixed effects' tests: normal (z, Stata's default), or t and F
#: with Satterthwaite's (lmerTest's) or Kenward-Roger's (pbkrtest's) denominator df.
Ddf = Literal["normal", "satterthwaite", "kenward-roger"]
DDFS: tuple[str, ...] = ("normal", "satterthwaite", "kenward-roger")


def _contrast_matrix(L: Any, p: int) -> np.ndarray:
    """``L`` as a finite (rows, p) matrix with no all-zero row, or a ValueError saying why."""
    try:
        M = np.atleast_2d(np.asarray(L, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(
            f"L must be a term name, a vector of {p} numbers or a matrix with {p} columns; got "
            f"{L!r:.60}"
        ) from None
    if M.ndim != 2 or M.shape[1] != p:
        raise ValueError(f"L must have {p} columns (one per fixed effect); got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("L has non-finite entries (NaN or infinite)")
    zero = np.flatnonzero(~M.any(axis=1))
    if zero.size:
        raise ValueError(
            f"row {int(zero[0])} of L is all zero: it tests nothing; drop it or give the "
            "contrast's coefficients"
        )
    return M


class TestedFit(DisplayedFit):
    """`DisplayedFit` with the fixed effects' tests (see the module docstring)."""

    @cached_property
    def _satterthwaite(self) -> satt.Satterthwaite:
        with single_thread_blas():
            return satt.Satterthwaite.from_result(self)

    @cached_property
    def _kenward_roger(self) -> KenwardRoger:
        from tiers.inference.kenward_roger import KenwardRoger

        return KenwardRoger.from_result(self)

    def _ddf_tests(self, ddf: str, what: str) -> satt.DdfTests:
        """The tests of ``ddf`` (not ``"normal"``), computed once per result.

        Refused after a sandwich covariance: Satterthwaite's as all likelihood-based inference
        (``what``), Kenward-Roger's by `KenwardRoger.from_result`, which names CR2's df instead.
        """
        check_option(ddf, DDFS[1:], "ddf")
        if ddf == "kenward-roger":
            return self._kenward_roger
        weighted.check_likelihood_based(self, what)
        return self._satterthwaite

    @property
    def vcov_kr(self) -> pd.DataFrame:
        """Kenward-Roger's adjusted covariance of the fixed effects (pbkrtest's ``vcovAdj``).

        REML fits only (`tiers.errors.InferenceError` otherwise); see
        `tiers.inference.kenward_roger`.
        """
        names = list(self.xnames)
        return pd.DataFrame(self._kenward_roger.vcov_adj, index=names, columns=names)

    def coef_table(self, level: float = 0.95, *, ddf: Ddf = "normal") -> pd.DataFrame:
        """The fixed effects' estimates, SEs, tests and intervals.

        Parameters
        ----------
        level : float
            Of the intervals, in (0, 1).
        ddf : {"normal", "satterthwaite", "kenward-roger"}
            ``"normal"``: z tests and normal intervals, as Stata's ``mixed`` (columns estimate,
            std_error, z, p_value, ci_lower, ci_upper). Otherwise t tests and t intervals with
            Satterthwaite's df (lmerTest's) or Kenward-Roger's (pbkrtest's; with the adjusted SE;
            REML fits only): columns estimate, std_error, df, t, p_value, ci_lower, ci_upper,
            ``attrs["method"]`` the method.
        """
        check_level(level)
        check_option(ddf, DDFS, "ddf")
        if ddf == "normal":
            return super().coef_table(level)
        if ddf == "satterthwaite":
            return self.satterthwaite(level)
        return satt.coef_table(self, self._ddf_tests(ddf, "Kenward-Roger's df"), level)

    def satterthwaite(self, level: float = 0.95) -> pd.DataFrame:
        """T tests of the fixed effects with Satterthwaite's degrees of freedom (lmerTest's method).

        Columns: estimate, std_error, df, t, p_value, ci_lower, ci_upper. After ``vce="cr2"``
        the CR2 standard errors with their Satterthwaite df (Pustejovsky and Tipton 2018).
        """
        check_level(level)
        if self.robust is not None and self.robust.kind == "cr2":
            return weighted.cr2_table(self, level)
        weighted.check_likelihood_based(self, "Satterthwaite's df")
        return satt.coef_table(self, self._satterthwaite, level)

    def anova(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F test of each term of the fixed part (all its columns zero).

        With Satterthwaite's denominator df (``ddf="satterthwaite"``) or Kenward-Roger's scaled F
        and df (``"kenward-roger"``, REML fits only); by term: num_df, den_df, F, p_value. See
        `tiers.inference.satterthwaite` and `tiers.inference.kenward_roger`.
        """
        return satt.anova(self, self._ddf_tests(ddf, f"anova's {ddf} F tests"))

    def ftest(self, L: Any, ddf: str = "satterthwaite") -> pd.Series:
        """F test of ``L beta = 0`` with Satterthwaite's or Kenward-Roger's denominator df.

        ``L`` is a term name of the fixed part (its columns), a contrast vector or a matrix with one
        row per contrast. ``ddf`` as in `anova`.
        """
        check_option(ddf, DDFS[1:], "ddf")
        if isinstance(L, str):
            cols = satt.term_columns(self)
            if L not in cols:
                raise ValueError(f"term must be one of {', '.join(cols)}; got {L!r}")
            idx = cols[L]
            M = np.zeros((len(idx), len(self.xnames)))
            M[np.arange(len(idx)), idx] = 1.0
        else:
            M = _contrast_matrix(L, len(self.xnames))
        F, ndf, den, p = self._ddf_tests(ddf, f"the {ddf} F test").contest(M)
        return pd.Series({"F": F, "num_df": ndf, "den_df": den, "p_value": p})
