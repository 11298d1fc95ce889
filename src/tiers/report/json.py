"""The result as one JSON document; the schema is documented in docs/json.md and kept stable."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from tiers.design.design import LevelInfo, theta_names
from tiers.inference.r2 import R2
from tiers.results.result import FitResult

SCHEMA_VERSION = 2


def _num(x: float) -> float | None:
    """JSON has no NaN: missing numbers are null."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def result_dict(
    res: FitResult, tests: pd.DataFrame | None, shares: pd.DataFrame | None, *, r2: R2 | None
) -> dict[str, Any]:
    """Every number of the summary, as plain Python values.

    ``tests`` is the Satterthwaite table (`tiers.FitResult.satterthwaite`; None where it could
    not be computed: df and p-values are then null), ``shares`` the variance shares (None for
    models with random slopes) and ``r2`` the marginal and conditional R-squared.
    """
    table = res.coef_table()
    sdi = res.sd_inference
    random_effects = [
        {
            "group": group,
            "term": term,
            "variance": _num(sdi.sd[k] ** 2),
            "sd": _num(sdi.sd[k]),
            "std_error": _num(sdi.se[k]),
            "ci_lower": _num(sdi.lower[k]),
            "ci_upper": _num(sdi.upper[k]),
        }
        for k, (group, term) in enumerate(sdi.names[:-1])
    ]
    ci = res.corr_inference
    correlations = (
        []
        if ci is None
        else [
            {
                "group": group,
                "term1": a,
                "term2": b,
                "correlation": _num(ci.estimate[i]),
                "std_error": _num(ci.se[i]),
                "ci_lower": _num(ci.lower[i]),
                "ci_upper": _num(ci.upper[i]),
            }
            for i, (group, a, b) in enumerate(ci.names)
        ]
    )
    wald = res.wald
    lrt = res.lr_linear
    satt = tests
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "formula": res.formula.text,
        "syntax": res.formula.syntax,
        "method": res.method,
        "nobs": res.nobs,
        "n_dropped": res.n_dropped,
        "ngroups": res.ngroups,
        "levels": level_rows(res.levels),
        "fixed_effects": [
            {
                "name": name,
                "estimate": _num(row.estimate),
                "std_error": _num(row.std_error),
                "z": _num(row.z),
                "p_value_normal": _num(row.p_value),
                "ci_lower": _num(row.ci_lower),
                "ci_upper": _num(row.ci_upper),
                "df": _num(satt.loc[name, "df"]) if satt is not None else None,
                "p_value": _num(satt.loc[name, "p_value"]) if satt is not None else None,
            }
            for name, row in table.iterrows()
        ],
        "random_effects": random_effects,
        "correlations": correlations,
        "terms": [
            {"group": t.group, "effects": list(t.znames), "covariance": t.covariance}
            for t in res.terms
        ],
        "residual_sd": _num(res.sigma),
        "residual_sd_std_error": _num(sdi.se[-1]),
        "residual_sd_ci": [_num(sdi.lower[-1]), _num(sdi.upper[-1])],
        "theta": [float(t) for t in res.theta],
        "theta_names": list(theta_names(res.terms)) + _residual_theta_names(res),
        "loglik": _num(res.loglik),
        "aic": _num(res.aic),
        "bic": _num(res.bic),
        "n_params": res.n_params,
        "wald_chi2": None
        if wald is None
        else {"chi2": _num(wald[0]), "df": wald[1], "p_value": _num(wald[2])},
        "lr_test_vs_linear": {
            "chi2": _num(lrt.chi2),
            "df": lrt.df,
            "p_value": _num(lrt.p_value),
            "kind": lrt.test,
            "conservative": lrt.conservative,
        },
        "converged": res.converged,
        "singular": res.is_singular,
        "optimizer": {
            "name": res.opt.optimizer,
            "n_evaluations": res.opt.n_evaluations,
            "max_abs_gradient": _num(max((abs(g) for g in res.opt.gradient), default=0.0)),
            "newton_step": _num(res.opt.newton_step),
            "message": res.opt.message,
        },
        "engine": res.engine,
        "notes": list(res.notes),
        "warnings": list(res.warnings),
        "fit_seconds": res.fit_seconds,
        "residual_structure": _residual_structure(res),
    }
    out["variance_shares"] = (
        []
        if shares is None
        else [
            {
                "level": row.level,
                "variance": _num(row.variance),
                "share": _num(row.share),
                "share_ci": [_num(row.share_lower), _num(row.share_upper)],
                "icc": _num(row.icc),
                "icc_ci": [_num(row.icc_lower), _num(row.icc_upper)],
            }
            for row in shares.itertuples()
        ]
    )
    out["r2"] = (
        {"marginal": None, "conditional": None}
        if r2 is None
        else {"marginal": _num(r2.marginal), "conditional": _num(r2.conditional)}
    )
    if res.robust is not None:
        rob = res.robust
        out["vce"] = {
            "kind": rob.kind,
            "cluster": rob.cluster,
            "n_clusters": rob.n_clusters,
            "df": None if rob.df is None else [_num(v) for v in rob.df],
        }
    rw = res.design.weights if res._state is not None else None
    if rw is not None:
        spec = rw.spec
        out["weights"] = {
            "kind": spec.kind,
            "observation": rw.observation,
            "levels": dict(rw.levels),
            "pwscale": spec.pwscale,
        }
    if res.reml:
        out["reml_criterion"] = _num(res.criterion)
    else:
        out["deviance"] = _num(res.criterion)
    return out


def _residual_theta_names(res: FitResult) -> list[str]:
    lay = res.design.residuals
    return [] if lay is None else [f"residual.{n}" for n in lay.params.unconstrained_names]


def _residual_structure(res: FitResult) -> dict[str, Any] | None:
    """The ``residual_structure`` block: the structure, its groups and its parameters."""
    lay, rinf = res.design.residuals, res.residual_inference
    if lay is None or rinf is None:
        return None
    spec = lay.spec
    return {
        "kind": spec.kind,
        "time": spec.time,
        "by": spec.by,
        "group": spec.group,
        "groups": lay.group_name,
        "reference": rinf.reference,
        "parameters": [
            {
                "name": name,
                "estimate": _num(rinf.estimate[i]),
                "std_error": _num(rinf.se[i]),
                "ci_lower": _num(rinf.lower[i]),
                "ci_upper": _num(rinf.upper[i]),
                "unconstrained": _num(rinf.unconstrained[i]),
            }
            for i, name in enumerate(rinf.names)
        ],
    }


def confint_dict(ci: Any, tests: Any = None) -> dict[str, Any]:
    """The intervals of `FitResult.confint` as the document's ``confint`` entry.

    With ``tests`` (`FitResult.satterthwaite`), also the fixed effects' Satterthwaite df and
    p-values.
    """
    params = []
    for r in ci.itertuples():
        row: dict[str, Any] = {
            "name": r.name,
            "estimate": _num(r.estimate),
            "lower": _num(r.lower),
            "upper": _num(r.upper),
        }
        if tests is not None and r.name in tests.index:
            row["df"] = _num(tests.loc[r.name, "df"])
            row["p_value"] = _num(tests.loc[r.name, "p_value"])
        params.append(row)
    a = ci.attrs
    out: dict[str, Any] = {
        "method": a.get("method"),
        "level": a.get("level"),
        "criterion": a.get("criterion"),
        "parameters": params,
        "notes": list(a.get("notes", [])),
    }
    for key in ("n_boot", "n_failed", "seed"):
        if key in a:
            out[key] = a[key]
    return out


def kenward_roger_dict(
    table: pd.DataFrame, anova: pd.DataFrame, vcov_adj: pd.DataFrame
) -> dict[str, Any]:
    """Kenward-Roger's inference as the document's ``kenward_roger`` entry.

    ``table``, ``anova`` and ``vcov_adj`` are ``LmmResult.coef_table(ddf="kenward-roger")``,
    ``anova(ddf="kenward-roger")`` and ``vcov_kr``.
    """
    return {
        "method": "Kenward-Roger",
        "fixed_effects": [
            {
                "name": str(name),
                "std_error": _num(r.std_error),
                "df": _num(r.df),
                "t": _num(r.t),
                "p_value": _num(r.p_value),
                "ci_lower": _num(r.ci_lower),
                "ci_upper": _num(r.ci_upper),
            }
            for name, r in table.iterrows()
        ],
        "anova": [
            {
                "term": str(term),
                "num_df": int(r.num_df),
                "den_df": _num(r.den_df),
                "F": _num(r.F),
                "p_value": _num(r.p_value),
            }
            for term, r in anova.iterrows()
        ],
        "vcov_adjusted": [[_num(v) for v in row] for row in vcov_adj.to_numpy()],
    }


def level_rows(levels: Iterable[LevelInfo]) -> list[dict[str, Any]]:
    """The JSON document's ``levels``: one row per grouping level, innermost last."""
    return [
        {
            "name": lv.name,
            "columns": list(lv.columns),
            "ngroups": lv.ngroups,
            "min_obs": lv.min_obs,
            "mean_obs": lv.mean_obs,
            "max_obs": lv.max_obs,
            "implicit_nesting": lv.implicit,
        }
        for lv in levels
    ]
