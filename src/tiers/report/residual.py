"""The residual structure's rows in the summaries.

Stata's ``Residual: AR(1)`` block and nlme's ``Correlation Structure`` / ``Variance function``
paragraphs; renders numbers the result holds.
"""

from __future__ import annotations

from tiers.report.numfmt import stata_abbrev, stata_g
from tiers.variance.residual import ResidualInference

_STATA_NAME = {"phi": "rho"}


def _row(label: str, est: float, se: float, lo: float, hi: float) -> str:
    return f"{label:>28} |  {stata_g(est)}  {stata_g(se)}     {stata_g(lo)}   {stata_g(hi)}"


def stata_rows(rinf: ResidualInference) -> list[str]:
    """Stata's block: the structure and its parameters (``var(e)`` follows, from the caller)."""
    head = stata_abbrev(f"Residual: {rinf.structure}", 28)
    out = [f"{head:<29}|"]
    for i, name in enumerate(rinf.names):
        label = stata_abbrev(_STATA_NAME.get(name, name), 28)
        out.append(_row(label, rinf.estimate[i], rinf.se[i], rinf.lower[i], rinf.upper[i]))
    return out


def _nlme_vector(names: list[str], values: list[float]) -> list[str]:
    cells = [(n, f"{v:.7g}") for n, v in zip(names, values, strict=True)]
    widths = [max(len(n), len(v)) for n, v in cells]
    return [
        " ".join(n.rjust(w) for (n, _), w in zip(cells, widths, strict=True)) + " ",
        " ".join(v.rjust(w) for (_, v), w in zip(cells, widths, strict=True)) + " ",
    ]


def nlme_lines(rinf: ResidualInference, group: str, time: str | None, by: str | None) -> list[str]:
    """The paragraphs nlme prints: the correlation structure, then the variance function.

    ``Correlation Structure: AR(1)`` with its formula and estimates, then ``Variance function``
    with the SD ratios (the reference stratum's 1 included).
    """
    out: list[str] = []
    kind = rinf.structure.split(",")[0]
    corr = [i for i, n in enumerate(rinf.names) if not n.startswith("sd ratio")]
    ratio = [i for i, n in enumerate(rinf.names) if n.startswith("sd ratio")]
    if corr:
        title = {"CAR(1)": "Continuous AR(1)", "Exchangeable": "Compound symmetry"}
        if kind.startswith("MA("):  # nlme's corARMA(q = k); tiers prints its lag correlations
            title[kind] = f"ARMA(0,{kind[3:-1]})"
        form = f"~{time} | {group}" if time else f"~1 | {group}"
        names = [{"phi": "Phi", "rho": "Rho"}.get(rinf.names[i], rinf.names[i]) for i in corr]
        out += [
            f"Correlation Structure: {title.get(kind, kind)}",
            f" Formula: {form} ",
            " Parameter estimate(s):",
            *_nlme_vector(names, [float(rinf.estimate[i]) for i in corr]),
        ]
    if ratio:
        what = by if by is not None else time
        labels = [rinf.reference or "(ref)"] + [rinf.names[i].split("=", 1)[1] for i in ratio]
        out += [
            "Variance function:",
            " Structure: Different standard deviations per stratum",
            f" Formula: ~1 | {what} ",
            " Parameter estimates:",
            *_nlme_vector(labels, [1.0] + [float(rinf.estimate[i]) for i in ratio]),
        ]
    return out
