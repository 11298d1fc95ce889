"""Golden files of the rendered summaries, at lme4's theta (../shared/STYLE.md section 5: pin
theta first, then compare text exactly).

Each reference model is assembled at the theta lme4 reported, with the staged API and no
optimisation, rendered in Stata's and in lme4's layout, and compared character for character with
``tests/golden/<case>_<fit>.<style>.txt``. After a deliberate change to the output, regenerate the
files and review the diff before committing::

    .venv/bin/python -m pytest tests/test_golden.py --regen-golden -p no:cacheprovider
    TIERS_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py -p no:cacheprovider

The files are compared exactly, character for character (UTF-8: lme4's significance legend
quotes as R prints it in a UTF-8 locale); keep editors and hooks from rewriting whitespace in
``tests/golden/``. ``tests/golden/r/`` holds R's own printed summaries, which
``tests/test_layouts.py`` compares the lme4 layout with.
"""

from __future__ import annotations

import difflib
import re
import warnings
from functools import cache
from pathlib import Path

import pytest

import tiers

from .conftest import load_case

GOLDEN = Path(__file__).resolve().parent / "golden"
STYLES = ("stata", "lme4")

#: (reference case, fit key in its JSON): what each one covers.
CASES = [
    ("pastes", "nested_REML"),  # nested random intercepts (1 | batch/cask), implicit nesting
    ("dyestuff2", "ri_REML"),  # singular fit: the Batch SD is exactly 0
    ("sleepstudy", "corr_REML"),  # random slope with a correlation, (Days | Subject)
    ("sleepstudy", "uncorr_REML"),  # independent slopes, (Days || Subject)
    ("penicillin", "crossed_REML"),  # crossed (1 | plate) + (1 | sample)
    ("sleepstudy", "corr_ML"),  # an ML fit with a correlation (lme4's AIC/BIC table)
    ("dyestuff", "ri_ML"),  # an ML fit of one level (variance shares in Stata's layout)
]

#: The footer's "..., 12 ms" is the wall time of the assemble call: it differs between runs, so
#: it is the one thing replaced before comparing. Everything else is a function of the data and
#: the pinned theta.
_ELAPSED = re.compile(r"^(Fit: .*), \d+ ms$", re.MULTILINE)


def _normalise(text: str) -> str:
    """Replace the volatile elapsed time of the ``Fit:`` footer line.

    Parameters
    ----------
    text : str
        A rendered summary.

    Returns
    -------
    str
        The text with ``<elapsed> ms`` in place of the milliseconds, ending in one newline.
    """
    return _ELAPSED.sub(r"\1, <elapsed> ms", text).rstrip("\n") + "\n"


@cache
def _pinned(case: str, key: str) -> tiers.LmmResult:
    """The result of one reference model at lme4's theta, not optimised.

    lme4 orders theta innermost level first for nested terms; tiers orders it outermost first
    but names it the lme4 way (``cask:batch.(Intercept)``): lme4's theta is reordered by the
    design's ``theta_names``.

    Parameters
    ----------
    case : str
        Reference case (a ``<case>.json`` in the shared reference folder).
    key : str
        The fit within the case, e.g. ``"corr_REML"``.

    Returns
    -------
    tiers.LmmResult
        Assembled at the reference theta by the reference's criterion. Its warnings (singular
        fit, theta not a certified optimum) are kept on the result and in the text; they are
        not raised here.
    """
    data, ref = load_case(case)
    spec = ref["fits"][key]
    reml = spec["method"] == "REML"
    theta = spec["theta"]
    design = tiers.prepare(spec["formula"], data)
    names = list(design.theta_names)
    assert sorted(names) == sorted(theta), f"theta names {names} vs lme4's {list(theta)}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tiers.TiersWarning)
        res = tiers.assemble(design, [theta[n] for n in names], reml=reml)
    assert res.to_dict()["theta_names"] == names
    return res


def _golden_path(case: str, key: str, style: str) -> Path:
    """Where the golden text of one model and layout lives.

    Parameters
    ----------
    case, key : str
        As in `CASES`.
    style : str
        ``"stata"`` or ``"lme4"``.

    Returns
    -------
    Path
        ``tests/golden/<case>_<key>.<style>.txt``.
    """
    return GOLDEN / f"{case}_{key}.{style}.txt"


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("case", "key"), CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_summary_matches_golden(case: str, key: str, style: str, regen_golden: bool) -> None:
    text = _normalise(_pinned(case, key).summary(style))
    path = _golden_path(case, key, style)
    if regen_golden:
        GOLDEN.mkdir(exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        return
    if not path.is_file():
        pytest.fail(
            f"golden file {path} is missing; create it with "
            "`pytest tests/test_golden.py --regen-golden` and review it",
            pytrace=False,
        )
    with open(path, encoding="utf-8", newline="") as fh:
        expected = fh.read()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{path.name}",
                tofile="rendered now",
            )
        )
        pytest.fail(
            f"{style} summary of {case} {key} differs from {path.name} "
            f"(regenerate with --regen-golden if the change is intended):\n{diff}",
            pytrace=False,
        )


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("case", "key"), CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_no_line_is_wider_than_the_layout(case: str, key: str, style: str) -> None:
    """Stata's layout is 78 columns, lme4's fits R's default width of 80."""
    limit = 78 if style == "stata" else 80
    wide = [ln for ln in _pinned(case, key).summary(style).splitlines() if len(ln) > limit]
    assert not wide, f"{style} lines wider than {limit}: {wide}"


def test_no_stale_golden_files(regen_golden: bool) -> None:
    expected = {_golden_path(c, k, s).name for c, k in CASES for s in STYLES}
    stale = sorted(p.name for p in GOLDEN.glob("*.txt") if p.name not in expected)
    if regen_golden:
        for name in stale:
            (GOLDEN / name).unlink()
        return
    assert not stale, f"golden files no test reads (delete them or add the case): {stale}"
