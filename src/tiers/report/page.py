"""A self-contained HTML page: inline style, figures embedded as base64 PNG (no network).

The pieces every report shares: the document shell, a section, a figure, a list of notes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["document", "figure", "notes", "section"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin-bottom: 0.8em; font-size: 0.92em; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #e4e4e4; }
caption { padding-bottom: 0.3em; }
code { background: #f4f4f4; padding: 0.1em 0.3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
p.note, li.note { color: #555; font-size: 0.92em; }
.warning { color: #a33; }
"""


def document(title: str, body: Iterable[str], *, footer: str = "") -> str:
    """An HTML5 page with ``title`` and the given body parts, styled inline."""
    foot = f'<footer><p class="note">{escape(footer)}</p></footer>' if footer else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n" + "\n".join(body) + f"\n{foot}\n</body>\n</html>\n"
    )


def section(title: str, *parts: str, anchor: str = "") -> str:
    """A ``<section>`` with an ``<h2>`` heading."""
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}>\n<h2>{escape(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def notes(lines: Iterable[str], *, cls: str = "note") -> str:
    """A ``<ul>`` of notes (empty string for none)."""
    items = "".join(f'<li class="{escape(cls)}">{escape(n)}</li>' for n in lines)
    return f"<ul>{items}</ul>" if items else ""


def figure(fig: Figure, caption: str, *, name: str = "") -> str:
    """``fig`` as a ``<figure>`` with its PNG inline (base64 data URI) and a caption."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    width, height = (int(round(v * 100)) for v in fig.get_size_inches())
    alt = escape(caption, quote=True)
    ident = f' id="figure-{escape(name)}"' if name else ""
    return (
        f'<figure{ident}><img src="data:image/png;base64,{data}" alt="{alt}" '
        f'width="{width}" height="{height}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )
