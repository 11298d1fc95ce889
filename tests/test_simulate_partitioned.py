"""`tiers simulate --format`: a partitioned dataset, reproducible whatever the chunk size."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers
from tiers.cli.main import app
from tiers.errors import DesignError
from tiers.simulation.partitioned import write_partitioned


def read_all(folder: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))], ignore_index=True
    )


def test_same_data_whatever_the_chunk_size(tmp_path: Path):
    design = tiers.seed_design(districts=5)
    small = write_partitioned(design, tmp_path / "a", 7, rows_per_file=1600)
    big = write_partitioned(design, tmp_path / "b", 7, rows_per_file=4000)
    assert len(small) == 5 and len(big) == 3
    a, b = read_all(tmp_path / "a"), read_all(tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    # the layout (ids, columns, row order) is that of one simulate call; the draws differ
    whole = tiers.simulate(design, seed=7)
    ids = ["dist_id", "school_id", "teach_id", "student_id", "semester"]
    pd.testing.assert_frame_equal(a[ids], whole[ids])
    assert list(a.columns) == list(whole.columns)
    other = write_partitioned(design, tmp_path / "c", 8, rows_per_file=4000)
    assert len(other) == 3 and not read_all(tmp_path / "c")["perform"].equals(a["perform"])


def test_cli_writes_a_folder_and_refuses_a_full_one(tmp_path: Path):
    out = tmp_path / "data"
    args = ["simulate", "--districts", "3", "-o", str(out), "--format", "csv", "--seed", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.csv"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "already holds" in again.output
    bad = CliRunner().invoke(app, [*args[:-4], "--format", "xml"])
    assert bad.exit_code != 0 and "parquet, csv" in bad.output
    with pytest.raises(DesignError, match="rows_per_file"):
        write_partitioned(tiers.seed_design(districts=2), tmp_path / "x", 1, rows_per_file=0)
