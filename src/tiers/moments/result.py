"""The result of a moment-based fit: the reading interface of a mixed model, where it applies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.options import check_level

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MomentsResult:
    """Variance components by moments (Gao and Owen 2017), fixed effects by GLS (backfitting).

    Attributes
    ----------
    formula : str
    nobs : int
    xnames : tuple of str
    beta : array (p,)
        GLS fixed effects at the estimated variance components.
    vcov_beta : array (p, p)
        ``(X' V^-1 X)^-1`` at the estimated components.
    groups : tuple of str
        The two grouping factors.
    nlevels : tuple of int
    variances : array (3,)
        ``(s_a^2, s_b^2, s_e^2)``; a negative moment solution is set to 0 (see ``notes``).
    sweeps : int
        Backfitting sweeps for the GLS step.
    seconds : float
    notes : tuple of str
    """

    formula: str
    nobs: int
    xnames: tuple[str, ...]
    beta: FloatArray
    vcov_beta: FloatArray
    groups: tuple[str, str]
    nlevels: tuple[int, int]
    variances: FloatArray
    sweeps: int
    seconds: float
    notes: tuple[str, ...]

    method = "moments"

    @property
    def fixef(self) -> pd.Series:
        """Fixed effects (GLS)."""
        return pd.Series(self.beta, index=list(self.xnames), name="fixef")

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors of the fixed effects at the estimated variance components."""
        return pd.Series(np.sqrt(np.diag(self.vcov_beta)), index=list(self.xnames), name="se")

    @property
    def sigma(self) -> float:
        """Residual SD."""
        return float(np.sqrt(self.variances[2]))

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components: group, variance and SD (the residual last)."""
        names = [*self.groups, "Residual"]
        return pd.DataFrame(
            {"group": names, "variance": self.variances, "sd": np.sqrt(self.variances)}
        )

    def coef_table(self, level: float = 0.95) -> pd.DataFrame:
        """Coefficient, SE, z, P>|z| and normal-theory interval."""
        from scipy.special import ndtr, ndtri

        check_level(level)
        est, se = self.beta, self.std_errors.to_numpy()
        z = est / se
        q = ndtri(0.5 + level / 2.0)
        return pd.DataFrame(
            {
                "estimate": est,
                "std_error": se,
                "z": z,
                "p_value": 2.0 * ndtr(-np.abs(z)),
                "ci_lower": est - q * se,
                "ci_upper": est + q * se,
            },
            index=list(self.xnames),
        )

    def __str__(self) -> str:
        lines = [
            "Crossed random intercepts by moments (Gao and Owen 2017), fixed effects by GLS "
            "(backfitting; Ghosh, Hastie and Owen 2022)",
            f"Formula: {self.formula}",
            f"Observations: {self.nobs:,}; groups: "
            + ", ".join(f"{g} {n:,}" for g, n in zip(self.groups, self.nlevels, strict=True)),
            "",
            self.varcorr.to_string(index=False, float_format=lambda v: f"{v:.6g}"),
            "",
            self.coef_table().to_string(float_format=lambda v: f"{v:.6g}"),
        ]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)
