"""Intervals for every parameter (SDs, correlations, sigma, fixed effects) and the variance shares.

Several methods are offered; the statistics live in `tiers.inference.profile`,
`tiers.inference.bootstrap` and `tiers.variance.information`.

``confint`` returns a DataFrame with columns ``name, estimate, lower, upper`` in lme4's order and
with lme4's names (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ``sigma``, then
the fixed effects); ``attrs`` holds ``method``, ``level``, ``criterion`` (the likelihood the
intervals come from) and ``notes`` (plain-language caveats: bounds at the edge of a range, a
non-monotonic profile, bootstrap replicates left out).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers._threads import single_thread_blas
from tiers.fitting import refit
from tiers.options import check_level, check_option
from tiers.results.result import FitResult
from tiers.variance.scale import SdCor

Method = Literal["wald", "profile", "profile-ml", "bootstrap"]
METHODS: tuple[str, ...] = ("wald", "profile", "profile-ml", "bootstrap")
SHARE_METHODS: tuple[str, ...] = ("delta", "profile", "bootstrap")


def check_method(method: str, valid: tuple[str, ...] = METHODS) -> None:
    """A ValueError listing the valid methods."""
    check_option(method, valid, "method")


def _frame(rows: list[dict[str, Any]], attrs: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["name", "estimate", "lower", "upper"])
    df.attrs.update(attrs)
    return df


def confint(
    res: FitResult,
    method: str = "wald",
    level: float = 0.95,
    *,
    n_boot: int = 1000,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Intervals for the variance parameters and the fixed effects (see `FitResult.confint`)."""
    check_method(method)
    check_level(level)
    sc = SdCor.from_terms(res.terms)
    if method == "bootstrap":
        check_n_boot(n_boot)
        return _bootstrap(res, sc, level, n_boot, seed, workers, progress)
    with single_thread_blas():  # many small products: threads cost more than they give
        if method == "wald":
            return _wald(res, sc, level)
        return _profile(res, sc, level, ml=method == "profile-ml")


def _wald_varpar(res: FitResult, sc: SdCor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimates and Wald bounds in `SdCor` order (log scale for SDs, Fisher z for correlations)."""
    sdi, ci = res.sd_inference, res.corr_inference
    est = np.empty(sc.size)
    lo = np.empty(sc.size)
    hi = np.empty(sc.size)
    k_sd = k_cor = 0
    for b in sc.blocks:
        for at in b.sd_at:
            est[at], lo[at], hi[at] = sdi.sd[k_sd], sdi.lower[k_sd], sdi.upper[k_sd]
            k_sd += 1
        for at in b.cor_at:
            est[at], lo[at], hi[at] = ci.estimate[k_cor], ci.lower[k_cor], ci.upper[k_cor]
            k_cor += 1
    est[-1], lo[-1], hi[-1] = sdi.sd[-1], sdi.lower[-1], sdi.upper[-1]
    return est, lo, hi


def _se_varpar(res: FitResult, sc: SdCor) -> np.ndarray:
    """Observed-information SEs in `SdCor` order (first steps of the profile search)."""
    sdi, ci = res.sd_inference, res.corr_inference
    se = np.full(sc.size, np.nan)
    k_sd = k_cor = 0
    for b in sc.blocks:
        for at in b.sd_at:
            se[at] = sdi.se[k_sd]
            k_sd += 1
        for at in b.cor_at:
            se[at] = ci.se[k_cor]
            k_cor += 1
    se[-1] = sdi.se[-1]
    return se


def _rescale_level(est, lo, hi, kinds, old: float, new: float):
    """Wald bounds at another level: the same SE on the log (SD) or Fisher-z (correlation) scale."""
    f = float(stats.norm.ppf(0.5 + new / 2.0) / stats.norm.ppf(0.5 + old / 2.0))
    is_cor = kinds == "cor"
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fwd = np.where(is_cor, np.arctanh(np.clip(est, -1, 1)), np.log(est))
        half = f * (np.where(is_cor, np.arctanh(hi), np.log(hi)) - fwd)
        lo2 = np.where(is_cor, np.tanh(fwd - half), np.exp(fwd - half))
        hi2 = np.where(is_cor, np.tanh(fwd + half), np.exp(fwd + half))
    return lo2, hi2


def _wald(res: FitResult, sc: SdCor, level: float) -> pd.DataFrame:
    sdi = res.sd_inference
    est, lo, hi = _wald_varpar(res, sc)
    if abs(level - sdi.level) > 1e-12:
        lo, hi = _rescale_level(est, lo, hi, np.array(sc.kinds), sdi.level, level)
    rows = [
        {"name": n, "estimate": e, "lower": a, "upper": b}
        for n, e, a, b in zip(sc.names, est, lo, hi, strict=True)
    ]
    rinf = res.variance_at(level)[2] if res.design.residuals is not None else None
    if rinf is not None:  # the residual structure's parameters, named as nlme's intervals() row
        rows += [
            {"name": f"{n}|residual", "estimate": e, "lower": a, "upper": b}
            for n, e, a, b in zip(rinf.names, rinf.estimate, rinf.lower, rinf.upper, strict=True)
        ]
    table = res.coef_table(level)
    rows += [
        {"name": n, "estimate": r.estimate, "lower": r.ci_lower, "upper": r.ci_upper}
        for n, r in zip(res.xnames, table.itertuples(), strict=True)
    ]
    notes = [
        "Wald intervals: SDs on the log scale and correlations on Fisher's z scale with standard "
        "errors from the observed information (as Stata's mixed); fixed effects normal"
    ]
    if np.any(est[np.array(sc.kinds) == "sd"] == 0):
        notes.append(
            "an SD estimated at zero has no Wald interval (its log is -infinite); use "
            "method='profile', whose interval starts at 0"
        )
    return _frame(rows, {"method": "wald", "level": level, "criterion": res.method, "notes": notes})


def _profile(res: FitResult, sc: SdCor, level: float, *, ml: bool) -> pd.DataFrame:
    from tiers.inference.profile import Profiler

    target = refit(res, reml=False) if (ml and res.reml) else res
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    pr = Profiler(target.devfun, sc, np.asarray(target.theta), target.sigma, target.xnames)
    se = _se_varpar(target, sc)
    rows, notes = [], []
    if ml and res.reml:
        notes.append(
            "profiles of the ML deviance after refitting the REML model by ML, as lme4's "
            "confint(method = 'profile') does; estimates are the ML estimates"
        )
    elif target.reml:
        notes.append(
            "profiles of the REML criterion (the model was fitted by REML); for the fixed effects, "
            "of the REML criterion extended by beta. lme4 profiles the ML deviance after an ML "
            "refit: method='profile-ml'"
        )
    else:
        notes.append("profiles of the ML deviance")
    for i, name in enumerate(sc.names):
        lo, hi = pr.varpar_interval(i, z, se[i])
        rows.append({"name": name, "estimate": pr.p_hat[i], "lower": lo.value, "upper": hi.value})
        notes += _bound_notes(name, lo, hi, pr.p_hat[i], sc.kinds[i])
    if target.design.residuals is not None:
        from tiers.inference.residual_profile import profile_residual

        rp = profile_residual(target, level)
        rows += [
            {"name": f"{n}|residual", "estimate": e, "lower": a, "upper": b}
            for n, e, a, b in zip(rp.names, rp.estimate, rp.lower, rp.upper, strict=True)
        ]
        notes += list(rp.notes)
    for j, name in enumerate(target.xnames):
        lo, hi = pr.fixed_interval(j, z)
        rows.append({"name": name, "estimate": pr.beta[j], "lower": lo.value, "upper": hi.value})
        notes += _bound_notes(name, lo, hi, pr.beta[j], "beta")
    return _frame(
        rows,
        {
            "method": "profile-ml" if ml else "profile",
            "level": level,
            "criterion": target.method,
            "notes": notes,
            "n_evaluations": pr.n_evaluations,
        },
    )


def _bound_notes(name: str, lo, hi, est: float, kind: str) -> list[str]:
    out = []
    if kind == "sd" and est == 0.0:
        out.append(
            f"{name}: estimated at zero (a singular fit); its interval starts at 0 and the upper "
            "end is where the profile crosses the critical value"
        )
    elif kind == "sd" and lo.value == 0.0:
        out.append(f"{name}: the profile stays below the critical value down to 0, so 0 is inside")
    for b in (lo, hi):
        if b.note and "boundary" not in b.note and "down to 0" not in b.note:
            if kind == "sd" and b is lo and b.value == 0.0:
                continue
            out.append(f"{name}: {b.note}")
    return out


#: A percentile interval needs at least this many usable replicates (fewer give none).
MIN_BOOT = 10


def check_n_boot(n_boot: object) -> None:
    """Refuse a number of bootstrap replicates that cannot give a percentile interval."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < MIN_BOOT:
        raise ValueError(
            f"n_boot must be an integer of at least {MIN_BOOT} (percentile intervals need that "
            f"many replicates; 1000 or more for 95% intervals); got {n_boot!r}"
        )


def _bootstrap(
    res: FitResult,
    sc: SdCor,
    level: float,
    n_boot: int,
    seed: int | None,
    workers: int | None,
    progress: bool | None,
) -> pd.DataFrame:
    from tiers.inference.bootstrap import bootstrap, percentile

    boot = bootstrap(res, n_boot=n_boot, seed=seed, workers=workers, progress=progress)
    reps = boot.models[0]
    ok = boot.ok
    P = np.full((boot.n_boot, sc.size), np.nan)
    for i in np.flatnonzero(ok):
        P[i] = sc.from_theta(reps.theta[i], reps.sigma[i])
    est = sc.from_theta(np.asarray(res.theta), res.sigma)
    rows = []
    for k, name in enumerate(sc.names):
        lo, hi = percentile(P[:, k], ok, level)
        rows.append({"name": name, "estimate": est[k], "lower": lo, "upper": hi})
    lay = res.design.residuals
    if lay is not None:  # the residual structure's parameters on their natural scale
        params = lay.params
        nat = np.full((boot.n_boot, params.n_rho), np.nan)
        for i in np.flatnonzero(ok):
            nat[i] = params.natural(reps.theta[i, sc.n_theta :])
        est_r = params.natural(np.asarray(res.theta)[sc.n_theta :])
        for k, name in enumerate(params.names):
            lo, hi = percentile(nat[:, k], ok, level)
            rows.append(
                {"name": f"{name}|residual", "estimate": est_r[k], "lower": lo, "upper": hi}
            )
    for j, name in enumerate(res.xnames):
        lo, hi = percentile(reps.beta[:, j], ok, level)
        rows.append({"name": name, "estimate": float(res.beta[j]), "lower": lo, "upper": hi})
    notes = ["percentile intervals", *boot.notes]
    if ok.sum() < 10:
        notes.append("fewer than 10 usable replicates: no intervals")
    return _frame(
        rows,
        {
            "method": "bootstrap",
            "level": level,
            "criterion": res.method,
            "notes": notes,
            "n_boot": boot.n_boot,
            "n_failed": boot.n_failed,
            "seed": seed,
        },
    )


# ----------------------------------------------------------------------------- variance shares --


def share_groups(res: FitResult) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Components of each level's share and cumulative ICC (indices into the SDs, residual last).

    In the order of the rows of `tiers.inference.shares.variance_shares`.
    """
    K = len(res.terms)  # intercepts only: one SD per level (res.theta may end with rho)
    shares: list[tuple[int, ...]] = [(k,) for k in range(K + 1)]
    iccs = [tuple(range(k + 1)) for k in range(K)]
    return shares, iccs


def variance_shares(
    res: FitResult,
    level: float = 0.95,
    method: str = "delta",
    *,
    n_boot: int = 1000,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Variance shares and cumulative ICCs with intervals.

    Intervals by the delta method (logit scale), profile likelihood or parametric bootstrap
    (percentile); see `FitResult.variance_shares`.
    """
    from tiers.inference.shares import variance_shares as delta

    check_method(method, SHARE_METHODS)
    table = delta(res, level)
    table.attrs["method"] = method
    table.attrs["level"] = level
    if method == "delta":
        table.attrs["notes"] = ["delta method on the logit scale (Stata's estat icc)"]
        return table
    shares, iccs = share_groups(res)
    cols = ("share_lower", "share_upper", "icc_lower", "icc_upper")
    if method == "bootstrap":
        from tiers.inference.bootstrap import bootstrap, percentile

        check_n_boot(n_boot)
        boot = bootstrap(res, n_boot=n_boot, seed=seed, workers=workers, progress=progress)
        reps = boot.models[0]
        n_re = len(res.terms)  # intercepts only: one theta per level, then any residual rho
        var = np.column_stack([(reps.theta[:, :n_re] * reps.sigma[:, None]) ** 2, reps.sigma**2])
        frac = var / var.sum(axis=1, keepdims=True)
        for k, g in enumerate(shares):
            table.loc[k, cols[:2]] = percentile(frac[:, list(g)].sum(axis=1), boot.ok, level)
        for k, g in enumerate(iccs):
            table.loc[k, cols[2:]] = percentile(frac[:, list(g)].sum(axis=1), boot.ok, level)
        table.attrs["notes"] = ["percentile intervals", *boot.notes]
        table.attrs["n_failed"] = boot.n_failed
        return table

    with single_thread_blas():
        return _share_profiles(res, table, level, shares, iccs)


def _share_profiles(res, table, level, shares, iccs) -> pd.DataFrame:
    from tiers.inference.profile import Profiler

    K = len(res.terms)
    cols = ("share_lower", "share_upper", "icc_lower", "icc_upper")
    sc = SdCor.from_terms(res.terms)
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    pr = Profiler(res.devfun, sc, np.asarray(res.theta), res.sigma, res.xnames)
    notes = [
        f"profile intervals of the {res.method} criterion: each share (or ICC) held at a value "
        "while the total variance and the split within and outside the share are optimised"
    ]
    for k, g in enumerate(shares):
        se = (table.loc[k, "share_upper"] - table.loc[k, "share_lower"]) / (2 * z)
        lo, hi = pr.share_interval(g, z, float(se))
        table.loc[k, cols[:2]] = (lo.value, hi.value)
        notes += [f"share of {table.loc[k, 'level']}: {b.note}" for b in (lo, hi) if b.note]
    for k, g in enumerate(iccs):
        if k == K - 1:  # the last ICC is 1 - the residual's share
            r_lo, r_hi = table.loc[K, cols[:2]]
            table.loc[k, cols[2:]] = (1.0 - r_hi, 1.0 - r_lo)
            continue
        se = (table.loc[k, "icc_upper"] - table.loc[k, "icc_lower"]) / (2 * z)
        lo, hi = pr.share_interval(g, z, float(se))
        table.loc[k, cols[2:]] = (lo.value, hi.value)
        notes += [f"ICC of {table.loc[k, 'level']}: {b.note}" for b in (lo, hi) if b.note]
    table.attrs["notes"] = notes
    return table
