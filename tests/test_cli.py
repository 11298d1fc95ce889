"""The ``tiers`` command line: simulate, fit (text, JSON, file formats, syntaxes) and errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers
from tiers.cli.main import app

from .conftest import SHARED

SEED_LME4 = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
SEED_STATA = "perform tutoring || dist_id: || school_id: || teach_id: || student_id:"
SEED_COLUMNS = ["dist_id", "school_id", "teach_id", "student_id", "semester", "tutoring", "perform"]
REQUIRED_KEYS = {
    "formula",
    "method",
    "nobs",
    "ngroups",
    "fixed_effects",
    "random_effects",
    "residual_sd",
    "theta",
    "loglik",
    "converged",
    "singular",
    "fit_seconds",
}
TOL = 1e-10

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
        f"exception: {result.exception!r}"
    )
    return result.stdout


def assert_clean_error(result, *needles: str) -> str:
    """Exit code 2, 'error: <message>' on stderr, no traceback anywhere."""
    assert result.exit_code == 2, (
        f"exit {result.exit_code}, exception {result.exception!r}\n{result.output}"
    )
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def seed_data() -> pd.DataFrame:
    return tiers.simulate(tiers.seed_design(5), seed=1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def seed_csv(workdir: Path) -> Path:
    path = workdir / "tmp" / "data.csv"
    path.parent.mkdir(exist_ok=True)  # an output file's folder must exist
    ok(invoke("simulate", "--preset", "seed", "--districts", "5", "--seed", "1", "-o", path))
    return path


@pytest.fixture(scope="module")
def reml_run(workdir: Path, seed_csv: Path) -> tuple[str, dict]:
    out = workdir / "out.json"
    stdout = ok(invoke("fit", SEED_LME4, seed_csv, "--json", out))
    return stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def ml_run(workdir: Path, seed_csv: Path) -> tuple[str, dict]:
    out = workdir / "out_ml.json"
    stdout = ok(invoke("fit", SEED_LME4, seed_csv, "--ml", "--json", out))
    return stdout, json.loads(out.read_text())


def assert_json_matches(doc: dict, res: tiers.LmmResult) -> None:
    """Every number of the JSON equals the in-process fit's to 1e-10."""
    close = lambda a, b: a == pytest.approx(b, rel=TOL, abs=TOL)  # noqa: E731
    assert doc["nobs"] == res.nobs
    assert doc["ngroups"] == res.ngroups
    assert doc["method"] == res.method
    assert [fe["name"] for fe in doc["fixed_effects"]] == list(res.xnames)
    for fe, est, se in zip(doc["fixed_effects"], res.beta, res.std_errors, strict=True):
        assert close(fe["estimate"], est), (fe, est)
        assert close(fe["std_error"], se), (fe, se)
    sds = np.asarray(res.theta) * res.sigma
    assert [re_["group"] for re_ in doc["random_effects"]] == [lv.name for lv in res.levels]
    for re_, sd in zip(doc["random_effects"], sds, strict=True):
        assert close(re_["sd"], sd), (re_, sd)
    assert close(doc["residual_sd"], res.sigma)
    assert doc["theta"] == pytest.approx(list(res.theta), rel=TOL, abs=TOL)
    assert close(doc["loglik"], res.loglik)
    assert doc["converged"] is res.converged
    assert doc["singular"] is res.is_singular


# --------------------------------------------------------------------------------- simulate --


def test_simulate_csv_writes_8000_rows(seed_csv: Path, seed_data: pd.DataFrame) -> None:
    frame = pd.read_csv(seed_csv)
    assert frame.shape == (8000, 7)
    assert list(frame.columns) == SEED_COLUMNS
    pd.testing.assert_frame_equal(frame, seed_data, check_dtype=False, rtol=1e-15)


def test_simulate_reports_what_it_wrote(workdir: Path) -> None:
    path = workdir / "report.csv"
    stdout = ok(invoke("simulate", "--districts", "5", "--seed", "1", "-o", path))
    assert "8,000 rows" in stdout
    assert str(path) in stdout


def test_simulate_parquet(workdir: Path, seed_data: pd.DataFrame) -> None:
    path = workdir / "data.parquet"
    ok(invoke("simulate", "--preset", "seed", "--districts", "5", "--seed", "1", "-o", path))
    frame = pd.read_parquet(path)
    assert len(frame) == 8000
    pd.testing.assert_frame_equal(frame, seed_data)


def test_simulate_restart_ids(workdir: Path, seed_data: pd.DataFrame) -> None:
    path = workdir / "restart.parquet"
    ok(invoke("simulate", "--districts", "5", "--seed", "1", "--restart-ids", "-o", path))
    frame = pd.read_parquet(path)
    assert len(frame) == 8000
    assert frame[["dist_id", "school_id", "teach_id", "student_id"]].max().tolist() == [5, 5, 8, 20]
    # same draws as with global ids: only the labels differ
    np.testing.assert_array_equal(frame["perform"], seed_data["perform"])
    # and the nested model fits it with implicit nesting, to the same estimates
    out = workdir / "restart.json"
    stdout = ok(invoke("fit", SEED_LME4, path, "--json", out))
    doc = json.loads(out.read_text())
    assert doc["ngroups"]["student_id:teach_id:school_id:dist_id"] == 4000
    assert "labels repeat" in stdout
    assert_json_matches(doc, tiers.fit(SEED_LME4, seed_data))


def test_simulate_unwritable_extension(workdir: Path) -> None:
    assert_clean_error(
        invoke("simulate", "--districts", "5", "--seed", "1", "-o", workdir / "x.xlsx"), "x.xlsx"
    )


def test_simulate_unknown_preset(workdir: Path) -> None:
    assert_clean_error(
        invoke("simulate", "--preset", "bogus", "-o", workdir / "x.csv"), "bogus", "seed"
    )


# -------------------------------------------------------------------------------------- fit --


def test_fit_prints_stata_summary(reml_run) -> None:
    stdout, _ = reml_run
    assert "Mixed-effects REML regression" in stdout
    assert "Random-effects Parameters" in stdout
    assert "LR test vs. linear model" in stdout
    assert "Number of obs     =      8,000" in stdout
    assert "tutoring |" in stdout


def test_fit_json_has_the_documented_keys(reml_run) -> None:
    _, doc = reml_run
    missing = (REQUIRED_KEYS | {"reml_criterion"}) - doc.keys()
    assert not missing, missing
    assert "deviance" not in doc
    assert doc["formula"] == SEED_LME4
    assert doc["method"] == "REML"
    assert doc["nobs"] == 8000
    assert doc["ngroups"] == {
        "dist_id": 5,
        "school_id:dist_id": 25,
        "teach_id:school_id:dist_id": 200,
        "student_id:teach_id:school_id:dist_id": 4000,
    }
    for fe in doc["fixed_effects"]:
        assert {"name", "estimate", "std_error"} <= fe.keys()
    for re_ in doc["random_effects"]:
        assert {"group", "term", "sd"} <= re_.keys()
    assert isinstance(doc["converged"], bool) and isinstance(doc["singular"], bool)
    assert doc["fit_seconds"] > 0
    assert math.isfinite(doc["reml_criterion"])


def test_fit_json_equals_library_fit(reml_run, seed_data: pd.DataFrame) -> None:
    _, doc = reml_run
    res = tiers.fit(SEED_LME4, seed_data)
    assert_json_matches(doc, res)
    assert doc["reml_criterion"] == pytest.approx(res.criterion, rel=TOL)


def test_fit_ml(ml_run, seed_data: pd.DataFrame) -> None:
    stdout, doc = ml_run
    assert "Mixed-effects ML regression" in stdout
    assert doc["method"] == "ML"
    assert "deviance" in doc
    assert "reml_criterion" not in doc
    missing = REQUIRED_KEYS - doc.keys()
    assert not missing, missing
    res = tiers.fit(SEED_LME4, seed_data, reml=False)
    assert_json_matches(doc, res)
    assert doc["deviance"] == pytest.approx(res.criterion, rel=TOL)


def test_fit_ml_and_reml_differ(reml_run, ml_run) -> None:
    _, reml_doc = reml_run
    _, ml_doc = ml_run
    assert reml_doc["residual_sd"] != pytest.approx(ml_doc["residual_sd"], rel=1e-8)
    assert ml_doc["loglik"] == pytest.approx(-0.5 * ml_doc["deviance"], rel=TOL)


def test_fit_style_lme4(seed_csv: Path) -> None:
    stdout = ok(invoke("fit", SEED_LME4, seed_csv, "--style", "lme4"))
    assert stdout.startswith("Linear mixed model fit by REML")
    assert f"Formula: {SEED_LME4}" in stdout
    assert "REML criterion at convergence:" in stdout
    assert "Random effects:" in stdout
    assert "Fixed effects:" in stdout
    # R's cat(fill = TRUE) puts a groups list wider than 80 columns on its own line
    assert "Number of obs: 8000, groups:\nstudent_id:teach_id:school_id:dist_id, 4000;" in stdout
    assert "Mixed-effects" not in stdout


def test_fit_style_lme4_residual_row_has_no_nan(seed_csv: Path) -> None:
    stdout = ok(invoke("fit", SEED_LME4, seed_csv, "--style", "lme4"))
    residual = [ln for ln in stdout.splitlines() if ln.strip().startswith("Residual")]
    assert residual, stdout
    assert "nan" not in residual[0].split(), residual[0]


def test_fit_bad_style(seed_csv: Path) -> None:
    assert_clean_error(invoke("fit", SEED_LME4, seed_csv, "--style", "bogus"), "stata", "lme4")


def test_fit_dta_equals_csv(workdir: Path, seed_data: pd.DataFrame, reml_run) -> None:
    path = workdir / "data.dta"
    seed_data.to_stata(path, write_index=False)
    out = workdir / "dta.json"
    stdout = ok(invoke("fit", SEED_LME4, path, "--json", out))
    assert "Mixed-effects REML regression" in stdout
    doc = json.loads(out.read_text())
    _, csv_doc = reml_run
    assert_json_matches(doc, tiers.fit(SEED_LME4, seed_data))
    for key in ("nobs", "ngroups", "method"):
        assert doc[key] == csv_doc[key]


def test_fit_parquet_equals_csv(workdir: Path, seed_data: pd.DataFrame) -> None:
    path = workdir / "fit.parquet"
    seed_data.to_parquet(path, index=False)
    out = workdir / "parquet.json"
    ok(invoke("fit", SEED_LME4, path, "--json", out))
    assert_json_matches(json.loads(out.read_text()), tiers.fit(SEED_LME4, seed_data))


def test_fit_stata_syntax_equals_lme4_syntax(workdir: Path, seed_csv: Path, reml_run) -> None:
    out = workdir / "stata.json"
    stdout = ok(invoke("fit", SEED_STATA, seed_csv, "--json", out))
    doc = json.loads(out.read_text())
    _, lme4_doc = reml_run
    assert doc["formula"] == SEED_STATA
    assert doc["syntax"] == "stata"
    assert doc["nobs"] == lme4_doc["nobs"]
    assert list(doc["ngroups"].values()) == list(lme4_doc["ngroups"].values())
    for a, b in zip(doc["fixed_effects"], lme4_doc["fixed_effects"], strict=True):
        assert a["name"] == b["name"]
        assert a["estimate"] == pytest.approx(b["estimate"], rel=TOL, abs=TOL)
        assert a["std_error"] == pytest.approx(b["std_error"], rel=TOL, abs=TOL)
    for a, b in zip(doc["random_effects"], lme4_doc["random_effects"], strict=True):
        assert a["sd"] == pytest.approx(b["sd"], rel=TOL, abs=TOL)
    assert doc["residual_sd"] == pytest.approx(lme4_doc["residual_sd"], rel=TOL)
    assert doc["reml_criterion"] == pytest.approx(lme4_doc["reml_criterion"], rel=TOL)
    assert "student_id |" in stdout  # Stata's names for the levels


def test_fit_counts_dropped_rows(workdir: Path, seed_data: pd.DataFrame) -> None:
    frame = seed_data.copy()
    frame.loc[[10, 20, 30], "perform"] = np.nan
    frame.loc[[30, 40], "tutoring"] = np.nan
    path = workdir / "holes.csv"
    frame.to_csv(path, index=False)
    out = workdir / "holes.json"
    stdout = ok(invoke("fit", SEED_LME4, path, "--json", out))
    doc = json.loads(out.read_text())
    assert doc["n_dropped"] == 4
    assert doc["nobs"] == 7996
    assert "4 rows dropped because of missing values" in stdout


# ----------------------------------------------------------------------------------- errors --


def test_error_unknown_column(seed_csv: Path) -> None:
    assert_clean_error(
        invoke("fit", "perform ~ tutorng + (1 | dist_id)", seed_csv), "'tutorng'", "'tutoring'"
    )


def test_error_unknown_grouping_column(seed_csv: Path) -> None:
    assert_clean_error(
        invoke("fit", "perform ~ tutoring + (1 | dist_id/schol_id)", seed_csv),
        "'schol_id'",
        "'school_id'",
    )


def test_error_bad_formula(seed_csv: Path) -> None:
    err = assert_clean_error(
        invoke("fit", "perform ~ tutoring + (1 | dist_id", seed_csv), "missing ')'"
    )
    assert "perform ~ tutoring + (1 | dist_id\n" in err
    assert err.rstrip().endswith("^")


def test_error_bad_stata_formula(seed_csv: Path) -> None:
    assert_clean_error(invoke("fit", "perform tutoring || dist_id", seed_csv), "colon")


def test_error_missing_file(workdir: Path) -> None:
    assert_clean_error(invoke("fit", SEED_LME4, workdir / "nope.csv"), "nope.csv", "does not exist")


def test_error_unsupported_file(workdir: Path) -> None:
    path = workdir / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    assert_clean_error(invoke("fit", SEED_LME4, path), "data.xlsx", ".csv")


def test_error_reversed_nesting_proposes_order(seed_csv: Path) -> None:
    reversed_ = "perform tutoring || student_id: || teach_id: || school_id: || dist_id:"
    assert_clean_error(
        invoke("fit", reversed_, seed_csv),
        "not identified",
        "|| dist_id: || school_id: || teach_id: || student_id:",
        "--force",
    )


def test_error_non_finite_predictor(workdir: Path, seed_data: pd.DataFrame) -> None:
    frame = seed_data.assign(score=seed_data["tutoring"].astype(float))
    frame.loc[5, "score"] = np.inf
    path = workdir / "inf.csv"
    frame.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # judge the exit code, not numpy's noise
        result = invoke("fit", "perform ~ score + (1 | dist_id/school_id)", path)
    assert_clean_error(result, "score")


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("tiers")
    if script.exists():
        return [str(script)]
    found = shutil.which("tiers")
    return [found] if found else [sys.executable, "-m", "tiers.cli"]


def test_console_script_exit_code_and_stderr(seed_csv: Path) -> None:
    proc = subprocess.run(
        [*_console_script(), "fit", "perform ~ tutorng + (1 | dist_id)", str(seed_csv)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: column 'tutorng'"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("ci", [[], ["--ci", "profile"]])
def test_a_fit_warning_is_printed_once_in_words(ci: list[str]) -> None:
    """The summary carries the warning; Python's own display (file:line) is not added to it."""
    data = SHARED / "reference" / "dyestuff2.csv"
    cmd = [sys.executable, "-m", "tiers", "fit", "Yield ~ 1 + (1 | Batch)", str(data), *ci]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert both.count("boundary (singular) fit") == 1
    assert "SingularFitWarning" not in both and ".py:" not in both


def test_plain_fit_runs_as_through_typer(seed_csv: Path) -> None:
    """``tiers fit FORMULA DATA`` skips typer's parsing (`tiers.cli.main._plain_fit`): the same
    output as with an option that makes typer parse (the fit's time aside)."""

    def run(*extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "tiers", "fit", SEED_LME4, str(seed_csv), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if not line.startswith("Fit: ")]

    assert run() == run("--style", "stata")
