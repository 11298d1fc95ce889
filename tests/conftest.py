"""Shared fixtures: the R reference cases in ../shared/reference, read at test time."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TIERS_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


def load_case(case: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The data and the lme4 results of one reference case."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference folder {REFERENCE} is missing (set TIERS_SHARED)")
    data = pd.read_csv(REFERENCE / f"{case}.csv")
    with open(REFERENCE / f"{case}.json") as fh:
        ref = json.load(fh)
    return data, ref


def fit_reference(case: str, key: str, reml: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit one reference model as lme4 did (its method unless ``reml`` is given), quietly for
    the singular cases; return the result and the reference entry."""
    import warnings

    import tiers
    from tiers.errors import SingularFitWarning

    data, ref = load_case(case)
    spec = ref["fits"][key]
    reml = spec["method"] == "REML" if reml is None else reml
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        res = tiers.fit(spec["formula"], data, reml=reml)
    return res, spec


@pytest.fixture(scope="session")
def seed_small() -> pd.DataFrame:
    """The seed design with 5 districts (8,000 rows)."""
    import tiers

    return tiers.simulate(tiers.seed_design(districts=5), seed=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--regen-golden``: rewrite the golden files of tests/test_golden.py instead of comparing."""
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.txt from the current output (also: TIERS_REGEN_GOLDEN=1)",
    )


@pytest.fixture(scope="session")
def regen_golden(request: pytest.FixtureRequest) -> bool:
    """Whether golden files are rewritten: ``--regen-golden`` or ``TIERS_REGEN_GOLDEN=1``."""
    return bool(request.config.getoption("--regen-golden")) or (
        os.environ.get("TIERS_REGEN_GOLDEN") == "1"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner when the headless-browser check of the HTML report did not run (never silent)."""
    from tests.test_browser import NOT_RUN

    skipped = terminalreporter.stats.get("skipped", [])
    missed = [r for r in skipped if NOT_RUN in str(getattr(r, "longrepr", ""))]
    if missed:
        terminalreporter.write_sep("!", NOT_RUN, red=True, bold=True)
        terminalreporter.write_line(
            f"{len(missed)} headless-Chromium test(s) of the HTML report did NOT run: chromium is "
            "not installed. Install Debian's chromium (make test does, as root) to run them.",
            red=True,
            bold=True,
        )
