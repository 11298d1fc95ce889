"""Number and name formats of Stata's and R's printed output, reproduced exactly.

Stata: the general format ``%w.0g`` (`stata_g`) and the name abbreviation of ``abbrev()``
(`stata_abbrev`). R: ``format()`` of a numeric vector (`r_format`, R's ``formatReal``: one
number of decimals for the whole vector, fixed or scientific, whichever is narrower),
``round``/``zapsmall``, ``format.pval``, ``abbreviate()`` and ``print()`` of a character matrix
or a named vector, as lme4 and lmerTest print a summary. These format numbers they are given;
they compute no statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: R's ``.Machine$double.eps``: p-values below it print as ``< 2e-16``.
DOUBLE_EPS = 2.220446049250313e-16


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# ------------------------------------------------------------------------------------ Stata --


def stata_g(x: float | None, width: int = 9) -> str:
    """Stata's ``%{width}.0g``, right-aligned in ``width`` columns.

    As many significant digits as fit in ``width - 1`` columns (one is kept for the sign), no
    leading zero (``.0390124``), trailing zeros dropped (``5.04926``); exponent notation
    (``1.32e-06``) when fixed notation would not fit or would show fewer than three significant
    digits. Missing and non-finite values print as Stata's ``.``.
    """
    if not _finite(x):
        return ".".rjust(width)
    assert x is not None
    if x == 0:
        return "0".rjust(width)
    avail = width - 1
    a = abs(x)
    e = math.floor(math.log10(a))
    text = None
    for _ in range(2):  # a second pass when rounding carries into a new digit (9.9999999 -> 10)
        if e >= 0:
            if e + 1 > avail:
                break
            decimals = max(0, avail - (e + 1) - 1)
            s = f"{a:.{decimals}f}"
        else:
            if avail + e < 3:  # fixed would show fewer than 3 significant digits
                break
            s = f"{a:.{avail - 1}f}"
            if not s.startswith("0"):  # rounded up to 1 (0.99999999)
                e += 1
                continue
            s = s[1:]  # ".0390124": no leading zero
        if len(s) > avail:
            e += 1
            continue
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        text = s or "0"
        break
    if text is None:
        for decimals in range(max(0, avail - 6), -1, -1):
            text = f"{a:.{decimals}e}"
            if len(text) <= avail:
                break
    assert text is not None
    return (("-" if x < 0 else "") + text).rjust(width)


def stata_abbrev(name: str, n: int = 12) -> str:
    """Stata's ``abbrev(name, n)``: the start and the last character with ``~`` between.

    ``abbrev("videorelevant", 12)`` is ``videorelev~t``. A factor-variable prefix (``c.``, ``i.``)
    is kept and the variable name after it abbreviated.
    """
    if len(name) <= n:
        return name
    if len(name) > 2 and name[1] == "." and name[0] in "ci" and n > 4:
        return name[:2] + stata_abbrev(name[2:], n - 2)
    return name[: n - 2] + "~" + name[-1]


def stata_label(label: str, n: int) -> str:
    """A level's label cut to ``n`` characters as Stata cuts value labels (``Smoking ce..``)."""
    return label if len(label) <= n else label[: n - 2] + ".."


# ---------------------------------------------------------------------------------------- R --


def r_round(x: float, digits: float) -> float:
    """R's ``round(x, digits)``: ``digits`` itself is rounded half up first (as R's fround)."""
    if not _finite(x):
        return x
    return round(x, math.floor(digits + 0.5))


def r_zapsmall(values: Sequence[float], digits: int) -> list[float]:
    """R's ``zapsmall(x, digits)``: round to ``digits - log10(max |x|)`` decimals."""
    finite = [abs(v) for v in values if _finite(v)]
    mx = max(finite, default=0.0)
    d = max(0.0, digits - math.log10(mx)) if mx > 0 else float(digits)
    return [r_round(v, d) for v in values]


def _scientific(x: float, digits: int) -> tuple[int, int, bool]:
    """R's ``scientific()``: (power of ten, significant digits needed, rounding widened it)."""
    if x == 0:
        return 0, 1, False
    mant, exp = f"{abs(x):.{digits - 1}e}".split("e")
    kp = int(exp)
    nsig = max(1, len(mant.replace(".", "").rstrip("0")))
    widens = 0 < kp and abs(x) < 10.0**kp
    return kp, nsig, widens


def r_format(values: Sequence[float], digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's ``format(x, digits = digits, nsmall = nsmall)`` of a numeric vector.

    One format for the whole vector: fixed notation with the decimals the element needing most
    requires to show ``digits`` significant digits (trailing zeros not counted), unless
    scientific notation is narrower; right-aligned to a common width. ``NA``, ``NaN`` and
    ``Inf`` as R prints them.
    """
    vals = [float("nan") if v is None else float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    specials = {i: _r_special(v) for i, v in enumerate(vals) if not math.isfinite(v)}
    if not finite:
        cells = [specials[i] for i in range(len(vals))]
        w = max((len(c) for c in cells), default=0)
        return [c.rjust(w) for c in cells]
    neg = any(v < 0 for v in finite)
    rgt = mxsl = mxns = -(10**9)
    mxe, mne = -(10**9), 10**9
    for v in finite:
        kp, nsig, widens = _scientific(v, digits)
        left = kp + 1 - (1 if widens else 0)
        sleft = (1 if v < 0 else 0) + (1 if left <= 0 else left)
        rgt = max(rgt, nsig - left)
        mxsl = max(mxsl, sleft)
        mxns = max(mxns, nsig)
        mxe, mne = max(mxe, kp), min(mne, kp)
    rgt = max(rgt, 0)
    w_fixed = mxsl + rgt + (1 if rgt else 0)
    e_digits = 2 if (mxe >= 100 or mne <= -99) else 1
    d_sci = mxns - 1
    w_sci = (1 if neg else 0) + (1 if d_sci > 0 else 0) + d_sci + 4 + e_digits
    if w_fixed <= w_sci:
        d = max(rgt, nsmall)
        cells = [specials.get(i) or f"{v:.{d}f}" for i, v in enumerate(vals)]
    else:
        cells = [specials.get(i) or f"{v:.{d_sci}e}" for i, v in enumerate(vals)]
    w = max(len(c) for c in cells)
    return [c.rjust(w) for c in cells]


def _r_special(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    return "Inf" if v > 0 else "-Inf"


def r_format_pval(pvalues: Sequence[float], digits: int, eps: float = DOUBLE_EPS) -> list[str]:
    """R's ``format.pval(pv, digits, eps)``: ``< 2e-16`` below ``eps``, the rest as R formats them.

    Values of 0.0001 and above (0.001 for ``digits = 1``) are formatted together, smaller ones
    together (usually in scientific notation); missing values print as ``NA``.
    """
    out = ["NA"] * len(pvalues)
    idx = [i for i, p in enumerate(pvalues) if _finite(p)]
    tiny = [i for i in idx if pvalues[i] < eps]
    rest = [i for i in idx if pvalues[i] >= eps]
    expo = {i: math.floor(math.log10(pvalues[i])) if pvalues[i] > 0 else -50 for i in rest}
    fixp = [i for i in rest if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
    sci = [i for i in rest if i not in fixp]
    for group in (fixp, sci):
        for i, s in zip(group, r_format([pvalues[i] for i in group], digits), strict=True):
            out[i] = s
    if tiny:
        d = max(1, digits - 2)
        if rest:
            nc = max(len(out[i]) for i in rest)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if (d == 1 and nc <= 6) else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + r_format([eps], d)[0].strip()
        for i in tiny:
            out[i] = text
    return out


def _strip(chars: list[str], minlen: int, *, use_classes: bool = True) -> str:
    """R's C routine behind ``abbreviate()`` for one name (method "left.kept")."""

    def first(i: int) -> bool:  # the first character of a word
        return chars[i - 1].isspace()

    def last(i: int) -> bool:  # the last character of a word
        return not chars[i - 1].isspace() and (i + 1 >= len(chars) or chars[i + 1].isspace())

    def short() -> bool:
        return len(chars) - sum(c.isspace() for c in chars) <= minlen

    def sweep(drop: object) -> bool:
        for i in range(len(chars) - 1, 0, -1):
            if i < len(chars) and drop(i):  # type: ignore[operator]
                del chars[i]
            if short():
                return True
        return False

    if len(chars) >= minlen and not short():
        vowel = set("aeiou")
        done = use_classes and (
            sweep(lambda i: chars[i] in vowel and last(i))
            or sweep(lambda i: chars[i] in vowel and not first(i))
            or sweep(lambda i: chars[i].islower() and last(i))
            or sweep(lambda i: chars[i].islower() and not first(i))
        )
        if not done:
            sweep(lambda i: not first(i) and not chars[i].isspace())
    if len(chars) > minlen:
        chars = [chars[0]] + [c for c in chars[1:] if not c.isspace()]
    return "".join(chars)


def r_abbreviate(names: Sequence[str], minlength: int) -> list[str]:
    """R's ``abbreviate(names, minlength)``.

    Lower-case vowels dropped from the right, then lower-case letters, then any character but
    a word's first; names that collide are redone with a larger ``minlength``.
    ``abbreviate("(Intercept)", 6)`` is ``(Intr)``.
    """
    old = [n.strip() for n in names]
    uniq = list(dict.fromkeys(old))
    out = list(uniq)
    redo = [True] * len(uniq)
    m = minlength
    while True:
        for i, name in enumerate(uniq):
            if redo[i]:
                out[i] = _strip(list(name), m)
        seen: dict[str, int] = {}
        dup = [False] * len(out)
        for i, a in enumerate(out):
            if a in seen:
                dup[i] = True
            seen.setdefault(a, i)
        if not any(dup):
            break
        m += 1
        dup_values = {out[i] for i in range(len(out)) if dup[i]}
        redo = [dup[i] or out[i] in dup_values for i in range(len(out))]
    return [out[uniq.index(n)] for n in old]


def r_matrix(
    cells: Sequence[Sequence[str]],
    colnames: Sequence[str],
    rownames: Sequence[str] | None = None,
    *,
    right: bool = False,
    width: int = 80,
) -> list[str]:
    """R's ``print(m, quote = FALSE, right = right)`` of a character matrix, lines right-stripped.

    Row names left-aligned; each column as wide as its widest entry or header, one space
    before it, entries and header left- or right-aligned. Columns that do not fit in ``width``
    go to further blocks, each with the row names again, as R prints a wide matrix.
    """
    rows = [list(r) for r in cells]
    rn = list(rownames) if rownames is not None else [""] * len(rows)
    rlabw = max((len(r) for r in rn), default=0)
    widths = [max([len(colnames[j]), *(len(r[j]) for r in rows)]) for j in range(len(colnames))]

    def line(label: str, items: Sequence[str], cols: range) -> str:
        body = "".join(
            " " + (items[j].rjust(widths[j]) if right else items[j].ljust(widths[j])) for j in cols
        )
        return (label.ljust(rlabw) + body).rstrip()

    out: list[str] = []
    jmin = 0
    while jmin < len(colnames) or (jmin == 0 and not colnames):
        jmax, used = jmin, rlabw
        while jmax < len(colnames):  # R: add columns while the line stays under ``width``
            used += widths[jmax] + 1
            jmax += 1
            if jmax < len(colnames) and used + widths[jmax] + 1 >= width:
                break
        cols = range(jmin, jmax)
        out.append(line("", colnames, cols))
        out += [line(r, c, cols) for r, c in zip(rn, rows, strict=True)]
        if jmax == jmin:
            break
        jmin = jmax
    return out


def r_named(values: Sequence[str], names: Sequence[str]) -> list[str]:
    """R's ``print()`` of a named vector already formatted: names over values, right-aligned."""
    w = max([*(len(v) for v in values), *(len(n) for n in names)])
    return ["".join(n.rjust(w) + " " for n in names).rstrip()] + [
        "".join(v.rjust(w) + " " for v in values).rstrip()
    ]


def r_cat_fill(items: Sequence[str], width: int = 80, sep: str = " ") -> list[str]:
    """R's ``cat(..., sep = sep, fill = TRUE)``: a new line before an item that would pass ``width``.

    As R counts it: the line so far and its separator, the item and its separator.
    """
    lines: list[str] = []
    current = ""
    for item in items:
        if current and len(current) + 2 * len(sep) + len(item) > width:
            lines.append(current)
            current = item
        else:
            current += (sep if current else "") + item
    lines.append(current)
    return [ln.rstrip() for ln in lines]
