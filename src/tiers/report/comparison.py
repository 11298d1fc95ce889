"""Side-by-side tables of fitted models (Stata's ``estimates table``).

Mixed models and panel estimators in columns; coefficients with SEs, every variance parameter
(SDs and correlations, named by group and term), log-likelihoods, AIC, BIC, N and groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tiers.errors import ComparisonError
from tiers.panel.estimators import PanelResult
from tiers.results.result import FitResult


def _column(res: FitResult | PanelResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(res, FitResult):
        table = res.coef_table()
        for name, row in table.iterrows():
            out[f"b:{name}"] = (row.estimate, row.std_error)
        out.update(_variance_rows(res))
        out.update(
            {
                "N": res.nobs,
                "groups": ", ".join(f"{k} {v:,}" for k, v in res.ngroups.items()),
                "ll": res.loglik,
                "aic": res.aic,
                "bic": res.bic,
                "method": res.method,
            }
        )
        return out
    for name, row in res.coef.iterrows():
        out[f"b:{'(Intercept)' if name == '_cons' else name}"] = (row.estimate, row.std_error)
    if res.sigma_u is not None:  # the id's intercept SD (fe: the SD of the estimated u_i)
        out[f"sd:{res.id or 'id'}:(Intercept)"] = (res.sigma_u, None)
    if res.sigma_e is not None:
        out["sd:Residual"] = (res.sigma_e, None)
    out.update(
        {
            "N": res.nobs,
            "groups": f"{res.ngroups:,}" if res.ngroups else "",
            "ll": None,
            "aic": None,
            "bic": None,
            "method": res.estimator,
        }
    )
    return out


def _variance_rows(res: FitResult) -> dict[str, tuple[float, None]]:
    """One entry per variance parameter: each effect's SD, each correlation, the residual SD.

    Keys ``sd:<group>:<term>``, ``corr:<group>:<term1>,<term2>`` (lme4's order, as
    `FitResult.correlations`), ``sd:Residual``; a key met twice (two terms with the same effect
    on one factor) gets ``.1``, ``.2`` appended, as lme4 numbers such terms.
    """
    out: dict[str, tuple[float, None]] = {}

    def put(key: str, value: float) -> None:
        k, i = key, 0
        while k in out:
            i += 1
            k = f"{key}.{i}"
        out[k] = (float(value), None)

    for row in res.varcorr.itertuples(index=False):
        if row.term:
            put(f"sd:{row.group}:{row.term}", row.sd)
    for row in res.correlations.itertuples(index=False):
        put(f"corr:{row.group}:{row.term1},{row.term2}", row.correlation)
    put("sd:Residual", res.sigma)
    return out


def compare(*models: FitResult | PanelResult, names: list[str] | None = None) -> pd.DataFrame:
    """A side-by-side table of coefficients (with SEs), variance parameters and fit statistics.

    Rows are ``b:<name>`` (estimate) and ``se:<name>`` for each fixed effect; then one row per
    variance parameter, named by grouping factor and term: ``sd:<group>:<term>`` (the SD of one
    effect, e.g. ``sd:school:(Intercept)``, ``sd:school:cses``),
    ``corr:<group>:<term1>,<term2>`` (a correlation, e.g. ``corr:school:cses,(Intercept)``) and
    ``sd:Residual``; then ``ll``, ``aic``, ``bic``, ``N``, ``groups``, ``method``. Panel
    estimators' ``sigma_u`` is ``sd:<id>:(Intercept)`` (for ``fe`` Stata's SD of the estimated
    fixed effects, not a variance parameter) and ``sigma_e`` is ``sd:Residual``. A model without
    a row's parameter shows NaN there. Log-likelihoods of panel estimators are left empty (they
    are not likelihood fits), and those of REML and ML fits are labelled by the ``method`` row so
    they are not compared by mistake.

    Raises
    ------
    ComparisonError
        The models were fitted to different numbers of rows.
    """
    if not models:
        raise ComparisonError("compare needs at least one model")
    for i, m in enumerate(models):
        if not hasattr(m, "nobs"):
            raise ComparisonError(
                f"compare takes fitted models (tiers.fit or tiers.panel results); argument "
                f"{i + 1} is a {type(m).__name__} ({m!r:.40})"
            )
    names = names or [f"m{i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise ComparisonError(f"{len(names)} names for {len(models)} models")
    counts = {m.nobs for m in models}
    if len(counts) > 1:
        raise ComparisonError(
            f"the models were fitted on different numbers of rows ({', '.join(f'{c:,}' for c in sorted(counts))}): "
            "a side-by-side table would compare estimates from different samples; fit all models "
            "to the same rows"
        )
    cols = [_column(m) for m in models]
    coef_keys = list(dict.fromkeys(k for c in cols for k in c if k.startswith("b:")))
    sd_keys = [
        k
        for k in dict.fromkeys(k for c in cols for k in c if k.startswith(("sd:", "corr:")))
        if k != "sd:Residual"
    ]
    sd_keys += ["sd:Residual"] if any("sd:Residual" in c for c in cols) else []
    rows: dict[str, list[Any]] = {}
    for key in coef_keys:
        rows[key] = [c[key][0] if key in c else np.nan for c in cols]
        rows["se:" + key[2:]] = [c[key][1] if key in c else np.nan for c in cols]
    for key in sd_keys:
        rows[key] = [c[key][0] if key in c else np.nan for c in cols]
    for key in ("ll", "aic", "bic", "N", "groups", "method"):
        rows[key] = [c[key] if c[key] is not None else np.nan for c in cols]
    return pd.DataFrame(rows, index=names).T
