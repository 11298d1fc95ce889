"""A fitted GLMM as the ``--json`` document of a linear fit, plus its own fields.

The fields a linear fit's document has (docs/json.md) mean the same here where the concept is
the same, and say so where a GLMM has none (``residual_sd`` is null; ``df`` and ``p_value`` of the
fixed effects are null: Wald z tests only); the GLMM adds ``family``, ``link``, ``nAGQ``,
``approximation`` and ``latent_residual_variance``. `tests/test_json_schema.py` validates both
kinds of document against docs/json.schema.json.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tiers.design.design import Design
from tiers.inference.r2 import R2
from tiers.report.json import SCHEMA_VERSION, level_rows
from tiers.results.glmm import GlmmFit
from tiers.results.lrtest import LRTest


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def approximation(fit: GlmmFit) -> str:
    """``Laplace`` or ``adaptive Gauss-Hermite quadrature`` (with ``nAGQ`` points)."""
    return "Laplace" if fit.nagq == 1 else "adaptive Gauss-Hermite quadrature"


def _random_effects(fit: GlmmFit, design: Design, z: float) -> list[dict[str, Any]]:
    """One row per SD; a scalar term's SE and log-scale interval from theta's (its SD's) SE."""
    rows = []
    for info, term in zip(design.term_infos, fit.terms, strict=True):
        for i, eff in enumerate(term.znames):
            sd = float(term.sd[i])
            se = float(fit.theta_se[info.start]) if info.q == 1 else math.nan
            ok = sd > 0 and math.isfinite(se)
            half = z * se / sd if ok else math.nan  # delta method on log(sd), Stata's scale
            rows.append({
                "group": term.group, "term": eff, "variance": _num(sd**2), "sd": _num(sd),
                "std_error": _num(se) if ok else None,
                "ci_lower": _num(sd * math.exp(-half)) if ok else None,
                "ci_upper": _num(sd * math.exp(half)) if ok else None,
            })  # fmt: skip
    return rows


def _correlations(fit: GlmmFit, design: Design) -> list[dict[str, Any]]:
    """The correlations of unstructured terms, without SEs (none for a GLMM's correlations)."""
    rows = []
    for info, term in zip(design.term_infos, fit.terms, strict=True):
        if info.q < 2 or info.covariance != "unstructured":
            continue
        corr = term.corr
        for j in range(info.q):
            for i in range(j + 1, info.q):
                rows.append({"group": term.group, "term1": term.znames[j],
                             "term2": term.znames[i], "correlation": _num(corr[i, j]),
                             "std_error": None, "ci_lower": None, "ci_upper": None})  # fmt: skip
    return rows


def _wald(fit: GlmmFit) -> dict[str, Any] | None:
    from scipy.special import chdtrc

    idx = [i for i, n in enumerate(fit.xnames) if n != "(Intercept)"]
    if not idx:
        return None
    b, v = fit.beta[idx], fit.vcov[np.ix_(idx, idx)]
    try:
        chi2 = float(b @ np.linalg.solve(v, b))
    except np.linalg.LinAlgError:
        chi2 = math.nan
    return {"chi2": _num(chi2), "df": len(idx), "p_value": _num(float(chdtrc(len(idx), chi2)))}


def glmm_dict(
    fit: GlmmFit,
    table: pd.DataFrame,
    design: Design,
    lrt: LRTest,
    shares: pd.DataFrame | None,
    r2: R2,
    latent_variance: float | None,
) -> dict[str, Any]:
    """The fit as one JSON-able document (docs/json.md).

    ``table`` is `GlmmResult.coef_table` on the link scale, ``lrt`` the LR test against the GLM,
    ``shares`` the latent-scale shares (None for Poisson or random slopes).
    """
    from scipy.stats import norm

    z = float(norm.ppf(0.975))
    infos = design.term_infos
    return {
        "schema_version": SCHEMA_VERSION,
        "formula": fit.formula,
        "syntax": design.formula.syntax,
        "method": "ML",
        "family": fit.family,
        "link": fit.link,
        "nAGQ": fit.nagq,
        "approximation": approximation(fit),
        "latent_residual_variance": latent_variance,
        "nobs": fit.nobs,
        "n_dropped": design.frame.n_dropped,
        "ngroups": {lv.name: lv.ngroups for lv in design.level_infos},
        "levels": level_rows(design.level_infos),
        "fixed_effects": [
            {
                "name": str(name),
                "estimate": _num(r["estimate"]),
                "std_error": _num(r["std_error"]),
                "z": _num(r["z"]),
                "p_value_normal": _num(r["p_value"]),
                "ci_lower": _num(r["lower"]),
                "ci_upper": _num(r["upper"]),
                "df": None,
                "p_value": None,
            }
            for name, r in table.iterrows()
        ],  # fmt: skip
        "random_effects": _random_effects(fit, design, z),
        "correlations": _correlations(fit, design),
        "terms": [
            {"group": t.group, "effects": list(t.znames), "covariance": t.covariance} for t in infos
        ],  # fmt: skip
        "residual_sd": None,
        "residual_sd_std_error": None,
        "residual_sd_ci": [None, None],
        "theta": [float(t) for t in fit.theta],
        "theta_names": list(fit.theta_names),
        "loglik": _num(fit.loglik),
        "deviance": _num(fit.deviance),
        "aic": _num(fit.aic),
        "bic": _num(fit.bic),
        "n_params": int(fit.df),
        "wald_chi2": _wald(fit),
        "lr_test_vs_linear": {
            "chi2": _num(lrt.chi2),
            "df": lrt.df,
            "p_value": _num(lrt.p_value),
            "kind": lrt.test,
            "conservative": lrt.conservative,
        },  # fmt: skip
        "variance_shares": []
        if shares is None
        else [
            {
                "level": str(r.component),
                "variance": _num(r.variance),
                "share": _num(r.share),
                "share_ci": [None, None],
                "icc": _num(r.icc),
                "icc_ci": [None, None],
            }
            for r in shares.itertuples()
        ],  # fmt: skip
        "r2": {"marginal": _num(r2.marginal), "conditional": _num(r2.conditional)},
        "converged": bool(fit.opt.converged),
        "singular": bool(fit.is_singular),
        "optimizer": {
            "name": fit.opt.optimizer,
            "n_evaluations": fit.opt.n_evaluations,
            "max_abs_gradient": _num(max((abs(g) for g in fit.opt.gradient), default=0.0)),
            "newton_step": _num(fit.opt.newton_step),
            "message": fit.opt.message,
        },
        "engine": design.engine,
        "notes": list(fit.notes),
        "warnings": list(fit.warnings),
        "fit_seconds": fit.seconds,
        "residual_structure": None,
    }


def glmm_confint_dict(conf: pd.DataFrame, fit: GlmmFit, method: str, level: float) -> dict:
    """`GlmmResult.confint` as the document's ``confint`` entry, in lme4's names.

    ``sd_<group>.(Intercept)`` becomes ``sd_(Intercept)|<group>`` (lme4's ``confint`` rows).
    """
    est = dict(zip(fit.xnames, fit.beta, strict=True))
    est |= {f"sd_{n}": t for n, t in zip(fit.theta_names, fit.theta, strict=True)}
    params = []
    for name, row in conf.iterrows():
        label = str(name)
        if label.startswith("sd_") and label not in fit.xnames:
            group, _, effect = label[3:].rpartition(".")
            label = f"sd_{effect}|{group}"
        params.append({"name": label, "estimate": _num(est[str(name)]),
                       "lower": _num(row.iloc[0]), "upper": _num(row.iloc[1])})  # fmt: skip
    return {"method": method, "level": level, "criterion": "ML", "notes": [],
            "parameters": params}  # fmt: skip
