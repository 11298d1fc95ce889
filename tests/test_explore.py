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
