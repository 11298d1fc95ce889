"""Stata-like text for panel results (``xtreg`` / ``regress`` layouts)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiers.panel.estimators import PanelResult


def _g(v: float | None) -> str:
    return f"{'.':>11}" if v is None or math.isnan(v) else f"{v:11.7g}"


def _fmt_r2(v: float | None) -> str:
    return "     ." if v is None else f"{v:6.4f}"


def panel_text(res: PanelResult) -> str:
    """Plain-text table laid out like Stata's ``xtreg`` / ``regress`` output."""
    title = {
        "pooled": "Linear regression (pooled OLS)",
        "fe": "Fixed-effects (within) regression",
        "re": "Random-effects GLS regression",
    }[res.estimator]
    lines = [f"{title:<48}Number of obs     = {res.nobs:>10,}"]
    if res.ngroups is not None:
        lines.append(
            f"{'Group variable: ' + str(res.id):<48}Number of groups  = {res.ngroups:>10,}"
        )
    if res.nobs_dropped:
        lines.append(f"({res.nobs_dropped} rows with missing values dropped)")
    r2 = [("within", res.r2_within), ("between", res.r2_between), ("overall", res.r2_overall)]
    lines.append("")
    if res.estimator == "pooled":
        lines.append(f"R-squared = {_fmt_r2(res.r2_overall)}")
    else:
        gmin, gavg, gmax = res.group_sizes or (0, 0.0, 0)
        sizes = [("min", f"{gmin:>10,}"), ("avg", f"{gavg:>10.1f}"), ("max", f"{gmax:>10,}")]
        lines.append(f"{'R-squared:':<48}Obs per group:")
        for (lab, val), (slab, sval) in zip(r2, sizes, strict=True):
            lines.append(f"     {lab:<7} = {_fmt_r2(val):<30}{slab:>20} = {sval}")
    if res.corr_u_xb is not None:
        lines.append(f"corr(u_i, Xb) = {res.corr_u_xb:.4f}")
    if res.estimator == "re":
        th = res.theta_summary
        if res.theta is not None:
            lines.append(f"theta = {res.theta:.7g}")
        elif th is not None:
            lines.append(
                f"theta: min {th['min']:.4f}  median {th['median']:.4f}  max {th['max']:.4f}"
            )
    sname = "t" if res.df_resid is not None else "z"
    rule = "-" * 13 + "+" + "-" * 64
    lines += ["", "-" * 78]
    if res.vce == "cluster":
        lines.append(f"{'':>12} | {'':>11} {'Robust':>11}")
    lines += [
        f"{res.depvar[:12]:>12} | {'Coefficient':>11} {'Std. err.':>11} {sname:>7} "
        f"{'P>|' + sname + '|':>6}   [{res.level:.0%} conf. interval]",
        rule,
    ]
    for name, row in res.coef.iterrows():
        lines.append(
            f"{str(name)[:12]:>12} | {_g(row.estimate)} {_g(row.std_error)} "
            f"{row.stat:7.2f} {row.p_value:6.3f}   {_g(row.ci_lower)} "
            f"{_g(row.ci_upper)}"
        )
    if res.estimator != "pooled":
        lines.append(rule)
        lines.append(f"{'sigma_u':>12} | {_g(res.sigma_u)}")
        lines.append(f"{'sigma_e':>12} | {_g(res.sigma_e)}")
        lines.append(f"{'rho':>12} | {_g(res.rho)}   (fraction of variance due to u_i)")
    lines.append("-" * 78)
    if res.f_test is not None:
        f = res.f_test
        lines.append(
            f"F test that all u_i=0: F({f.df1}, {f.df2}) = {f.F:.2f}"
            f"{'Prob > F = ':>24}{f.p_value:.4f}"
        )
    lines += list(res.notes)
    return "\n".join(lines)
