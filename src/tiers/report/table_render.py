"""Renderings of a publication `tiers.report.table.Table`: booktabs LaTeX, Markdown, HTML, frame.

They lay out the text cells the table holds and escape them for each format; the numbers were
formatted when the table was built.
"""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from tiers.report.table import Row, Table

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _label(row: Row) -> str:
    return "" if row.secondary else row.label


def _breaks(t: Table) -> list[bool]:
    """Whether a rule (a new section) goes above each row."""
    return [i > 0 and r.section != t.rows[i - 1].section for i, r in enumerate(t.rows)]


def frame(t: Table) -> pd.DataFrame:
    """The cells with their marks, indexed by (section, label, line).

    ``line`` is ``"estimate"`` for a coefficient, ``t.statistic`` for the line under it and
    ``""`` for the other rows.
    """
    index = pd.MultiIndex.from_tuples(
        [
            (
                r.section,
                r.label,
                t.statistic if r.secondary else "estimate" if r.section == "fixed" else "",
            )
            for r in t.rows
        ],
        names=["section", "label", "line"],
    )
    data = [[c + s for c, s in zip(r.cells, r.stars, strict=True)] for r in t.rows]
    out = pd.DataFrame(data, index=index, columns=list(t.models))
    out.attrs["notes"] = list(t.notes)
    return out


def latex(t: Table) -> str:
    """A booktabs ``tabular``; the notes follow it in a footnote-size paragraph."""
    k = len(t.models)
    lines = [
        f"\\begin{{tabular}}{{l{'c' * k}}}",
        "\\toprule",
        " & ".join(["", *(latex_escape(m) for m in t.models)]) + " \\\\",
        "\\midrule",
    ]
    for row, rule in zip(t.rows, _breaks(t), strict=True):
        if rule:
            lines.append("\\midrule")
        cells = [
            latex_escape(c) + (f"$^{{{s}}}$" if s else "")
            for c, s in zip(row.cells, row.stars, strict=True)
        ]
        lines.append(" & ".join([latex_escape(_label(row)), *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if t.notes:
        notes = " ".join(latex_escape(n) + "." for n in t.notes)
        lines.append(f"\\par\\smallskip{{\\footnotesize {notes}\\par}}")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def markdown(t: Table) -> str:
    """A pipe table, the numbers right-aligned; the notes follow as a paragraph."""
    head = ["", *t.models]
    body = [[_label(r), *(c + s for c, s in zip(r.cells, r.stars, strict=True))] for r in t.rows]
    widths = [max(len(_md_cell(row[j])) for row in [head, *body]) for j in range(len(head))]
    widths = [max(w, 3) for w in widths]

    def line(cells: list[str]) -> str:
        padded = [
            _md_cell(c).ljust(widths[0]) if j == 0 else _md_cell(c).rjust(widths[j])
            for j, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if j == 0 else "-" * (w + 1) + ":" for j, w in enumerate(widths))
        + "|"
    )
    out = [line(head), rule, *(line(b) for b in body)]
    if t.notes:
        out += ["", " ".join(_md_cell(n) + "." for n in t.notes)]
    return "\n".join(out) + "\n"


def html(t: Table) -> str:
    """A ``<table>``: a ``<tbody>`` per section, the notes in the ``<tfoot>``."""
    esc = _html.escape
    k = len(t.models)
    out = ['<table class="tiers-table">', "<thead><tr><th></th>"]
    out += [f"<th>{esc(m)}</th>" for m in t.models]
    out.append("</tr></thead>")
    section = None
    for row in t.rows:
        if row.section != section:
            if section is not None:
                out.append("</tbody>")
            out.append(f'<tbody class="{esc(row.section)}">')
            section = row.section
        cells = "".join(
            f'<td style="text-align:right">{esc(c)}'
            + (f"<sup>{esc(s)}</sup>" if s else "")
            + "</td>"
            for c, s in zip(row.cells, row.stars, strict=True)
        )
        out.append(f'<tr><th style="text-align:left">{esc(_label(row))}</th>{cells}</tr>')
    if section is not None:
        out.append("</tbody>")
    if t.notes:
        out.append("<tfoot>")
        out += [f'<tr><td colspan="{k + 1}">{esc(n)}.</td></tr>' for n in t.notes]
        out.append("</tfoot>")
    out.append("</table>")
    return "\n".join(out) + "\n"
