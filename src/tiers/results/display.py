"""`Table`: a small table of formatted cells, rendered as HTML, Markdown or LaTeX.

Tables are data first (a caption, a header, rows of already formatted text) and renderings
second, so a result's notebook display (``_repr_html_``, ``_repr_markdown_``, ``_repr_latex_``)
and its HTML report show the same cells. The LaTeX is an ``array`` for math mode, which is what
notebooks render (MathJax/KaTeX know ``array``, not ``tabular``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Table", "html_tables", "latex_tables", "markdown_tables"]

_NUM = "text-align:right;font-variant-numeric:tabular-nums"
_TABLE = 'style="border-collapse:collapse;margin-bottom:0.6em"'
_LATEX_SPECIAL = {
    "\\": r"\backslash ", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%", "&": r"\&",
    "#": r"\#", "$": r"\$", "^": r"\hat{}", "~": r"\sim ",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Table:
    """A captioned table of text cells.

    Attributes
    ----------
    caption : str
    header : tuple of str or None
        Column names; None for a two-column list of facts (name, value).
    rows : tuple of tuple of str
        The cells, already formatted.
    numeric_from : int
        Columns from this index on are numbers (right-aligned).
    notes : tuple of str
        Lines printed under the table.
    """

    caption: str
    header: tuple[str, ...] | None
    rows: tuple[tuple[str, ...], ...]
    numeric_from: int = 1
    notes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        caption: str,
        header: Sequence[str] | None,
        rows: Iterable[Sequence[str]],
        *,
        numeric_from: int = 1,
        notes: Iterable[str] = (),
    ) -> Table:
        """Build a table from any sequences (copied into tuples)."""
        return cls(
            caption,
            None if header is None else tuple(header),
            tuple(tuple(str(c) for c in r) for r in rows),
            numeric_from,
            tuple(notes),
        )

    # ---------------------------------------------------------------------------- renderings --

    def _html_row(self, cells: Sequence[str], tag: str) -> str:
        out = []
        for i, c in enumerate(cells):
            style = _NUM if i >= self.numeric_from else "text-align:left"
            out.append(f'<{tag} style="{style}">{escape(c)}</{tag}>')
        return "<tr>" + "".join(out) + "</tr>"

    def to_html(self) -> str:
        """A ``<table>`` with a ``<caption>``, ``<thead>`` (if any) and ``<tbody>``."""
        head = "" if self.header is None else f"<thead>{self._html_row(self.header, 'th')}</thead>"
        body = "".join(self._html_row(r, "td") for r in self.rows)
        notes = "".join(f'<p class="note">{escape(n)}</p>' for n in self.notes)
        return (
            f'<table {_TABLE}><caption style="text-align:left;font-weight:bold">'
            f"{escape(self.caption)}</caption>{head}<tbody>{body}</tbody></table>{notes}"
        )

    def to_markdown(self) -> str:
        """A pipe table under a bold caption (GitHub-flavoured Markdown)."""

        def cell(text: str) -> str:
            return text.replace("|", r"\|").replace("\n", " ") or " "

        header = self.header if self.header is not None else ("", "")
        width = max([len(header), *(len(r) for r in self.rows)])
        header = tuple(header) + ("",) * (width - len(header))
        align = ["---:" if i >= self.numeric_from else ":---" for i in range(width)]
        lines = [f"**{cell(self.caption)}**", ""]
        lines.append("| " + " | ".join(cell(h) for h in header) + " |")
        lines.append("|" + "|".join(align) + "|")
        for r in self.rows:
            lines.append("| " + " | ".join(cell(c) for c in r) + " |")
        lines += ["", *(f"*{cell(n)}*" for n in self.notes)]
        return "\n".join(lines).rstrip() + "\n"

    def to_latex(self) -> str:
        r"""The bold caption over an ``array`` (math mode), text cells in ``\text{}``."""
        width = max([len(self.header or ()), *(len(r) for r in self.rows), 2])
        cols = "".join("r" if i >= self.numeric_from else "l" for i in range(width))
        lines = [_latex_text(self.caption, r"\textbf") + r" \\", r"\begin{array}{" + cols + "}"]
        lines.append(r"\hline")
        if self.header is not None:
            lines.append(" & ".join(_latex_text(h) for h in self.header) + r" \\ \hline")
        for r in self.rows:
            lines.append(" & ".join(_latex_text(c) for c in r) + r" \\")
        lines.append(r"\hline")
        lines.append(r"\end{array}")
        lines += [r"\\ " + _latex_text(n) for n in self.notes]
        return "\n".join(lines)


def _latex_text(s: str, command: str = r"\text") -> str:
    r"""``s`` in math mode: runs of plain characters in ``\text{}``, special ones as math escapes.

    The escapes (``\_``, ``\%``, ``\&``, ...) are written outside ``\text{}``, where LaTeX and
    the notebooks' MathJax both read them, whether or not MathJax has its text-macros extension.
    """
    out: list[str] = []
    run: list[str] = []
    for ch in s:
        if ch in _LATEX_SPECIAL:
            if run:
                out.append(command + "{" + "".join(run) + "}")
                run = []
            out.append(_LATEX_SPECIAL[ch])
        else:
            run.append(ch)
    if run:
        out.append(command + "{" + "".join(run) + "}")
    return "".join(out)


def html_tables(tables: Iterable[Table], notes: Iterable[str] = (), cls: str = "tiers") -> str:
    """The tables in one ``<div>``, with notes after them."""
    body = "".join(t.to_html() for t in tables)
    lines = [escape(n) for n in notes]
    if lines:
        body += "<p>" + "<br>".join(lines) + "</p>"
    return f'<div class="{escape(cls)}">{body}</div>'


def markdown_tables(tables: Iterable[Table], notes: Iterable[str] = ()) -> str:
    """The tables one after another, notes as a list."""
    parts = [t.to_markdown() for t in tables]
    items = [f"- {n}" for n in notes]
    return "\n".join(parts) + ("\n" + "\n".join(items) + "\n" if items else "")


def latex_tables(tables: Iterable[Table]) -> str:
    """The tables stacked in one display-math block (``$$ ... $$``), as notebooks render it."""
    body = "\n\\\\[1em]\n".join(t.to_latex() for t in tables)
    return "$$\n\\begin{array}{l}\n" + body + "\n\\end{array}\n$$"
