"""What inference is valid after weights or a robust covariance, and the CR2 t table.

Profiles, likelihood-ratio tests, the parametric bootstrap and Satterthwaite's df all read the
model's likelihood as the truth. After a sandwich covariance (``vce="robust"``, and always with
sampling weights, whose pseudo-likelihood is not a likelihood) they would contradict the standard
errors reported, so they are refused with the alternatives named. Frequency weights are refused
by the bootstrap, which would draw one response per row where the weights stand for several.
"""

from __future__ import annotations

import pandas as pd

from tiers._lazy import stats
from tiers.errors import DataError
from tiers.results.result import FitResult


def check_likelihood_based(res: FitResult, what: str) -> None:
    """Refuse likelihood-based inference (``what``) on a fit with a sandwich covariance.

    Raises
    ------
    DataError
        Naming the covariance and what to use instead.
    """
    rob = res.robust
    if rob is None or rob.kind == "cr2":
        return
    why = (
        "a sampling-weighted fit maximises a pseudo-likelihood, which is not a likelihood"
        if res.design.weights is not None and res.design.weights.sampling
        else "this fit reports sandwich (vce robust) standard errors"
    )
    raise DataError(
        f"{what} reads the model's likelihood as the truth, but {why}; use Wald intervals "
        "(confint(method='wald')), which use the robust standard errors"
    )


def check_bootstrap(res: FitResult) -> None:
    """Refuse the parametric bootstrap where it cannot reproduce the data's design."""
    check_likelihood_based(res, "the parametric bootstrap")
    if res.design.weights is not None and res.design.weights.frequency:
        raise DataError(
            "the parametric bootstrap of a frequency-weighted fit would draw one response per "
            "row where each row stands for several; expand the rows (one per count) and fit "
            "without weights, or use Wald or profile intervals"
        )


def cr2_table(res: FitResult, level: float) -> pd.DataFrame:
    """Estimate, CR2 SE, Satterthwaite df, t, p and the t interval of each fixed effect."""
    rob = res.robust
    if rob is None or rob.df is None:  # pragma: no cover - called for CR2 fits only
        raise ValueError("not a CR2 fit")
    est = res.fixef.to_numpy()
    se = res.std_errors.to_numpy()
    t = est / se
    q = stats.t.ppf(0.5 + level / 2.0, rob.df)
    return pd.DataFrame(
        {
            "estimate": est,
            "std_error": se,
            "df": rob.df,
            "t": t,
            "p_value": 2.0 * stats.t.sf(abs(t), rob.df),
            "ci_lower": est - q * se,
            "ci_upper": est + q * se,
        },
        index=list(res.xnames),
    )
