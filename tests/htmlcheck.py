"""A strict check of the HTML that tiers writes, on the standard library's parser.

Every non-void element closed in order, one ``html``/``head``/``body``/``title``, unique ids, no
resource from the network, every ``img`` an inline PNG that decodes to a non-empty image.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass
class Page:
    tags: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.page = Page()
        self.errors: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.page.tags[tag] = self.page.tags.get(tag, 0) + 1
        if "id" in a:
            self.page.ids.append(str(a["id"]))
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith(("data:", "#")):
                self.errors.append(f"<{tag} {key}={a[key]!r:.60}>: not inline")
        if tag == "img":
            src = str(a.get("src", ""))
            if not src.startswith("data:image/png;base64,"):
                self.errors.append("an img that is not an inline PNG")
            else:
                self.page.images.append(base64.b64decode(src.split(",", 1)[1], validate=True))
            if not a.get("alt"):
                self.errors.append("an img without alt text")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"</{tag}> closes a void element")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(
                f"</{tag}> does not close the open <{self.stack[-1] if self.stack else '-'}>"
            )
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.page.text.append(data.strip())


def check_html(html: str, *, fragment: bool = False) -> Page:
    """Parse ``html``; AssertionError listing what is wrong. A ``fragment`` has no document shell."""
    c = _Checker()
    c.feed(html)
    c.close()
    errors = list(c.errors)
    if c.stack:
        errors.append(f"unclosed: {c.stack}")
    if len(set(c.page.ids)) != len(c.page.ids):
        errors.append("duplicate ids")
    if not fragment:
        if not c.doctype:
            errors.append("no <!DOCTYPE html>")
        for tag in ("html", "head", "body", "title"):
            if c.page.tags.get(tag) != 1:
                errors.append(f"{c.page.tags.get(tag, 0)} <{tag}> elements")
    for png in c.page.images:
        if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 1000:
            errors.append("an inline image that is not a PNG of some size")
    assert not errors, "invalid HTML: " + "; ".join(errors[:10])
    return c.page
