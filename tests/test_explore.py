"""`tiers explore` runs end to end on a small design and tells every part of the story."""

from __future__ import annotations

import io

from rich.console import Console

from tiers.cli.explore import run_exploration


def test_explore_small(tmp_path) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=False)
    tables = run_exploration(districts=5, seed=3, sizes=[5, 10], out=tmp_path, console=console)
    text = buf.getvalue()
    for step in range(1, 9):
        assert f"Step {step}." in text
    assert (
        "NestingError" in text and "|| dist_id: || school_id: || teach_id: || student_id:" in text
    )
    assert "ComparisonError" in text and "Likelihood-ratio test" in text
    assert "Mixed-effects REML regression" in text
    assert {"design", "panel", "recovered", "reml_ml", "sizes"} <= set(tables)
    for name in ("design", "panel", "recovered", "reml_ml", "sizes", "sizes_long"):
        assert (tmp_path / f"{name}.csv").exists()
    assert (tmp_path / "correct_fit.json").exists()
    # intervals shrink from 5 to 10 districts for the district SD in the long table
    long = tables["sizes_long"]
    width = long[long.level == "dist_id"].set_index("districts")["width"]
    assert width.loc[10] < width.loc[5]


def test_explore_numbers_follow_districts() -> None:
    """Issue 12, item 19: counts come from the design, print as integers, and the story states
    the rule instead of citing a commenter."""
    import re

    from tiers.simulation.presets import seed_design

    districts = 2
    design = seed_design(districts)
    students = design.ngroups["student_id"]
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    tables = run_exploration(districts=districts, seed=1, sizes=[districts], console=console)
    text = buf.getvalue()
    assert f"{students:,} groups each" in text
    for stale in ("40,000", "4,000", "8,000", "80,000"):  # the seed's and the 5-district counts
        assert stale not in text, stale
    assert f"{districts} districts, 5 schools per district" in text
    assert f"{design.nrows:,} rows" in text
    assert f"rests on {districts} districts" in text
    # unit counts are integers with thousands separators, not floats
    assert tables["design"]["units"].tolist() == [*design.ngroups.values(), design.nrows]
    assert re.search(rf"student_id\s+\S\s+20\s+\S\s+{students:,}\s+\S\s+5\.0", text), text
    step1 = text[text.index("Step 1.") : text.index("Step 2.")]
    assert not re.search(r"\d\.0\s+\S\s+\d", step1), step1  # no count printed as 20.0 or 1,600.0
    # the rule, not a person
    assert "Scott" not in text and "commenter" not in text
    assert "levels are listed outermost first, each nested in the one before it" in text
    # SDs, as the seed's xtmixed showed them
    assert "sd(_cons)" in text and "var(_cons)" not in text
