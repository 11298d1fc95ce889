"""What a Stata or lme4 user expects of a command line (issue 12, items 17 and 18).

``--version``, ``-h``, ``python -m tiers``, shell completion, flags without a type, ``--level``
meaning the confidence level (and ``--unit-level`` the hierarchy level), ``tiers ranef`` and
``tiers predict``, and progress that a log (stderr not a terminal) can read.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers
import tiers.inference.bootstrap as boot
import tiers.inference.progress as progress_mod
from tiers.cli.main import app
from tiers.inference.lrtest import lrtest
from tiers.study.plan import plan_design

from .conftest import REFERENCE, fit_reference, load_case
from .test_cli import invoke, ok
from .test_ranef import OWN_FIT_RTOL
from .test_study import tiny

runner = CliRunner()
SLEEP = "Reaction ~ Days + (Days | Subject)"
SLEEP_CSV = REFERENCE / "sleepstudy.csv"
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)  # type: ignore[union-attr]
BOX = re.compile("[\u2500-\u257f\u2580-\u259f]")  # box drawing and block elements


def error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


# ---------------------------------------------------------------- version, help, python -m --


def test_version_prints_the_package_version() -> None:
    assert ok(invoke("--version")) == f"tiers {tiers.__version__}\n"


def test_python_m_tiers_runs_the_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tiers", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"tiers {tiers.__version__}\n"


def test_every_command_is_listed_and_takes_dash_h() -> None:
    assert {"fit", "ranef", "predict", "study", "plan", "lrtest", "xtreg"} <= set(COMMANDS)
    top = ok(invoke("-h"))
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", top, re.M), name
        text = ok(invoke(name, "-h"))
        assert "Usage:" in text and "-h, --help" in text, name
        assert text == ok(invoke(name, "--help")), name


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_no_bool_type_and_no_box_drawing(name: str) -> None:
    text = ok(invoke(name, "-h"))
    assert "<bool>" not in text, text
    assert not BOX.search(text), text


def test_flags_are_plain_switches() -> None:
    text = ok(invoke("fit", "-h"))
    assert re.search(r"^\s+--ml\s+maximum likelihood", text, re.M), text
    assert re.search(r"^\s+--force\s+fit even if", text, re.M), text
    assert "--progress / --no-progress" in text


def test_shell_completion_is_enabled_and_documented() -> None:
    top = ok(invoke("-h"))
    assert "--install-completion" in top and "--show-completion" in top
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tiers", "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "_TIERS_COMPLETE" in proc.stdout and "complete" in proc.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "tiers --install-completion" in readme


# ------------------------------------------------------------------- --level, --unit-level --


@pytest.fixture(scope="module")
def dyestuff() -> Path:
    return REFERENCE / "dyestuff.csv"


def _confint_doc(tmp_path: Path, csv: Path, *level: str) -> dict:
    out = tmp_path / f"ci{'_'.join(level) or 'default'}.json"
    ok(invoke("fit", "Yield ~ 1 + (1 | Batch)", csv, "--ci", "wald", *level, "--json", out))
    return json.loads(out.read_text())["confint"]


def test_fit_level_accepts_stata_percentages(tmp_path: Path, dyestuff: Path) -> None:
    frac = _confint_doc(tmp_path, dyestuff, "--level", "0.9")
    pct = _confint_doc(tmp_path, dyestuff, "--level", "90")
    default = _confint_doc(tmp_path, dyestuff)
    assert frac["level"] == pytest.approx(0.9) and pct["level"] == pytest.approx(0.9)
    assert default["level"] == pytest.approx(0.95)
    assert pct == frac
    assert pct != default


@pytest.mark.parametrize("value", ["0", "1", "2", "100", "-0.5"])
def test_fit_level_out_of_range_is_refused(dyestuff: Path, value: str) -> None:
    result = invoke("fit", "Yield ~ 1 + (1 | Batch)", dyestuff, "--ci", "wald", "--level", value)
    error(result, "--level", "between 0 and 1", "95")
    assert result.stdout == ""  # refused before fitting


def test_plan_takes_unit_level(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    args = ["plan", "--districts", "20", "--target-se", "sd_school_id=0.3", "--json", str(out)]
    ok(invoke(*args, "--unit-level", "school_id"))
    want = plan_design(tiers.seed_design(20), level="school_id", target_se={"sd_school_id": 0.3})
    assert json.loads(out.read_text())["target_se"] == want.to_dict()["target_se"]


@pytest.mark.parametrize("command", ["plan", "study"])
def test_old_level_spelling_in_study_and_plan_points_to_unit_level(
    tmp_path: Path, command: str
) -> None:
    extra = ["--out", str(tmp_path / "o")] if command == "study" else []
    error(invoke(command, *extra, "--level", "school_id"), "--unit-level school_id", "tiers fit")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- ranef --


@pytest.mark.parametrize(("case", "key"), [("sleepstudy", "corr_REML"), ("pastes", None)])
def test_ranef_csv_is_the_results_ranef_in_long_form(
    tmp_path: Path, case: str, key: str | None
) -> None:
    _, ref = load_case(case)
    key = key or next(iter(ref["fits"]))
    res, spec = fit_reference(case, key)
    out = tmp_path / "re.csv"
    args = ["ranef", spec["formula"], REFERENCE / f"{case}.csv", "-o", out]
    stdout = ok(invoke(*args, *([] if spec["method"] == "REML" else ["--ml"])))
    assert str(out) in stdout
    got = pd.read_csv(out, dtype={"level": str})
    assert list(got.columns) == ["group", "level", "effect", "mode", "sd"]
    frames = res.ranef(cond_var=True)
    assert len(got) == sum(
        len(f) * sum(not c.endswith("_sd") for c in f.columns) for f in frames.values()
    )
    for (group, effect), rows in got.groupby(["group", "effect"], sort=False):
        df = frames[group]
        np.testing.assert_allclose(rows["mode"], df[effect].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(rows["sd"], df[f"{effect}_sd"].to_numpy(), rtol=1e-12)
        assert rows["level"].tolist() == df.index.astype(str).tolist()
    # and lme4's conditional modes and SDs, matched by level label ("a:A" for nested factors)
    for group, r in spec["ranef_first_levels"].items():
        mine = got[got["group"] == group].set_index(["effect", "level"])
        for effect, values in r["conditional_modes"].items():
            rows = mine.loc[effect].loc[r["levels"]]
            np.testing.assert_allclose(rows["mode"], values, rtol=OWN_FIT_RTOL, atol=1e-9)
            sds = r["conditional_sd"][effect]
            np.testing.assert_allclose(rows["sd"], sds, rtol=OWN_FIT_RTOL, atol=1e-9)


def test_ranef_table_without_conditional_sds_leaves_sd_empty() -> None:
    from tiers.cli.predict import ranef_table

    frame = pd.DataFrame({"(Intercept)": [1.0, -1.0]}, index=pd.Index(["a", "b"], name="g"))
    table = ranef_table({"g": frame})
    assert table["level"].tolist() == ["a", "b"] and table["sd"].isna().all()


def test_ranef_with_ml_and_a_bad_formula(tmp_path: Path) -> None:
    out = tmp_path / "ml.csv"
    ok(invoke("ranef", SLEEP, SLEEP_CSV, "-o", out, "--ml"))
    data, _ = load_case("sleepstudy")
    want = tiers.fit(SLEEP, data, reml=False).ranef()["Subject"]
    got = pd.read_csv(out)
    np.testing.assert_allclose(got.loc[got.effect == "Days", "mode"], want["Days"], rtol=1e-12)
    error(invoke("ranef", "Reaction ~ Dys + (1 | Subject)", SLEEP_CSV, "-o", out), "'Dys'")


# ----------------------------------------------------------------------------- predict --


def test_predict_keeps_the_row_numbers_of_the_data(tmp_path: Path) -> None:
    data, _ = load_case("sleepstudy")
    holes = data.copy()
    holes.loc[[3, 10, 97], "Reaction"] = np.nan
    path = tmp_path / "holes.csv"
    holes.to_csv(path, index=False)
    out = tmp_path / "pred.csv"
    stdout = ok(invoke("predict", SLEEP, path, "-o", out, "--interval", "--level", "90"))
    assert "177 predictions" in stdout and "3 rows with missing values" in stdout
    got = pd.read_csv(out)
    assert list(got.columns) == ["row", "mean", "lower", "upper"]
    assert got["row"].tolist() == [i for i in range(len(data)) if i not in (3, 10, 97)]
    want = tiers.fit(SLEEP, holes).predict(interval=True, level=0.9)
    np.testing.assert_allclose(got[["mean", "lower", "upper"]], want, rtol=1e-12)
    full = tmp_path / "full.csv"
    stdout = ok(invoke("predict", SLEEP, path, "-o", full, "--na-action", "exclude"))
    assert "180 predictions" in stdout and "3 rows with missing values have empty" in stdout
    every = pd.read_csv(full)
    assert every["row"].tolist() == list(range(len(data)))
    assert every["mean"].isna().tolist() == [i in (3, 10, 97) for i in range(len(data))]
    np.testing.assert_allclose(every["mean"].dropna(), got["mean"], rtol=1e-12)
    # each prediction belongs to its row: fitted value plus residual gives the response
    used = holes.loc[got["row"]]
    resid = used["Reaction"].to_numpy() - got["mean"].to_numpy()
    assert np.abs(resid).max() < 4 * used["Reaction"].std()


def test_predict_newdata_re_and_new_levels(tmp_path: Path) -> None:
    data, _ = load_case("sleepstudy")
    new = pd.DataFrame({"Days": [0, 5, 9], "Subject": [308, 999, 372]})
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    res = tiers.fit(SLEEP, data)
    include, exclude = tmp_path / "inc.csv", tmp_path / "exc.csv"
    ok(invoke("predict", SLEEP, SLEEP_CSV, "--newdata", path, "-o", include))
    ok(invoke("predict", SLEEP, SLEEP_CSV, "--newdata", path, "-o", exclude, "--re", "exclude"))
    got_inc, got_exc = pd.read_csv(include), pd.read_csv(exclude)
    assert got_inc["row"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(got_inc["mean"], res.predict(new)["mean"], rtol=1e-12)
    np.testing.assert_allclose(got_exc["mean"], res.predict(new, re="exclude")["mean"], rtol=1e-12)
    assert got_inc["mean"][1] == pytest.approx(got_exc["mean"][1])  # unseen subject: population
    assert got_inc["mean"][0] != pytest.approx(got_exc["mean"][0])
    error(
        invoke("predict", SLEEP, SLEEP_CSV, "--newdata", path, "-o", include, "--new-levels",
               "error"),
        "Subject", "999",
    )  # fmt: skip
    error(invoke("predict", SLEEP, SLEEP_CSV, "-o", include, "--re", "some"), "include, exclude")
    error(
        invoke("predict", SLEEP, SLEEP_CSV, "-o", include, "--na-action", "drop"), "omit, exclude"
    )


# ------------------------------------------------------------------- progress in a log --


@pytest.fixture
def frequent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain progress lines after every 10% of the work, however quick."""
    monkeypatch.setattr(progress_mod, "PLAIN_EVERY_SECONDS", 0.0, raising=False)


def _lines(stderr: str, label: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"{label}:")]


def test_bootstrap_prints_plain_progress_lines_when_stderr_is_not_a_terminal(
    tmp_path: Path, dyestuff: Path, frequent: None
) -> None:
    args = ["fit", "Yield ~ 1 + (1 | Batch)", dyestuff, "--ci", "bootstrap", "--n-boot", "40"]
    result = invoke(*args, "--seed", "1")
    ok(result)
    lines = _lines(result.stderr, "bootstrap")
    assert len(lines) >= 3, result.stderr
    pattern = r"bootstrap: \d+/40 replicates, \d+ s elapsed, about \d+ s left"
    assert all(re.fullmatch(pattern, ln) for ln in lines[:-1]), lines
    assert re.fullmatch(r"bootstrap: 40/40 replicates done in \d+ s", lines[-1]), lines
    done = [int(re.search(r"(\d+)/40", ln).group(1)) for ln in lines[:-1]]  # type: ignore[union-attr]
    assert done == sorted(done) and done[-1] < 40
    assert not BOX.search(result.stderr), result.stderr
    quiet = invoke(*args, "--seed", "1", "--no-progress")
    assert _lines(quiet.stderr, "bootstrap") == []


def test_plain_lines_come_every_interval_or_fraction_whichever_is_later(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    clock = [0.0]
    monkeypatch.setattr(boot.time, "perf_counter", lambda: clock[0])
    with progress_mod.ProgressBar(
        True, 10, "bootstrap"
    ) as bar:  # 10% is one unit; 10 s is two units here
        for _ in range(10):
            clock[0] += 5.0
            bar.advance(1)
    lines = _lines(capsys.readouterr().err, "bootstrap")
    assert lines == [
        "bootstrap: 2/10 replicates, 10 s elapsed, about 40 s left",
        "bootstrap: 4/10 replicates, 20 s elapsed, about 30 s left",
        "bootstrap: 6/10 replicates, 30 s elapsed, about 20 s left",
        "bootstrap: 8/10 replicates, 40 s elapsed, about 10 s left",
        "bootstrap: 10/10 replicates done in 50 s",
    ]
    clock[0] = 0.0
    with progress_mod.ProgressBar(
        True, 1000, "bootstrap"
    ) as bar:  # 10 s pass quickly: every 10% only
        for _ in range(1000):
            clock[0] += 1.0
            bar.advance(1)
    lines = _lines(capsys.readouterr().err, "bootstrap")
    assert [ln.split(" replicates")[0] for ln in lines[:-1]] == [
        f"bootstrap: {k:,}/1,000" for k in range(100, 1000, 100)
    ]
    assert lines[-1] == "bootstrap: 1,000/1,000 replicates done in 16 min 40 s"


def test_a_short_run_in_a_log_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    with progress_mod.ProgressBar(True, 50, "bootstrap") as bar:
        for _ in range(50):
            bar.advance(1)
    with progress_mod.ProgressBar(
        None, 50, "bootstrap"
    ) as bar:  # the library default: a bar in a terminal only
        bar.advance(50)
    assert capsys.readouterr().err == ""


def test_study_prints_plain_lines_naming_the_size(tmp_path: Path, frequent: None) -> None:

    design = tmp_path / "design.json"
    design.write_text(json.dumps(tiny().to_dict()))
    args = ["study", "--design", str(design), "--sizes", "3,4", "--replicates", "4", "--seed",
            "1", "--workers", "1", "--out", str(tmp_path / "o"), "--estimator", "fe=fe"]  # fmt: skip
    result = runner.invoke(app, args)
    ok(result)
    lines = _lines(result.stderr, "study")
    assert lines, result.stderr
    assert not BOX.search(result.stderr), result.stderr
    sizes = {m.group(1) for ln in lines if (m := re.match(r"study: size (\d+), ", ln))}
    assert sizes == {"3", "4"}, lines
    assert re.fullmatch(r"study: 8/8 replicates done in \d+ s", lines[-1]), lines


def test_study_in_a_real_log_writes_no_box_drawing(tmp_path: Path) -> None:
    """A separate process whose stderr is a pipe, as under nohup or Slurm; a short run is quiet."""
    design = tmp_path / "design.json"
    design.write_text(json.dumps(tiny().to_dict()))
    args = ["study", "--design", str(design), "--sizes", "3", "--replicates", "2", "--seed", "1",
            "--workers", "1", "--out", str(tmp_path / "o"), "--estimator", "fe=fe"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "tiers", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert not BOX.search(proc.stderr), proc.stderr
    assert "fits run" in proc.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_study_bar_in_a_terminal_names_the_current_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from tiers.study.runner import run_study

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    run_study(tiny(), {"fe": "fe"}, sizes=[3, 4], replicates=2, seed=1, workers=1, progress=True,
              batch_size=1)  # fmt: skip
    text = term.getvalue()
    assert "study: size 3" in text and "study: size 4" in text, text
    assert "replicates" in text


# ----------------------------------------------------------------------------- --string-col --


@pytest.fixture(scope="module")
def decimal_ids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sleepstudy with two subjects labelled 3.1 and 3.10: one number, two labels."""
    data, _ = load_case("sleepstudy")
    subjects = sorted(data["Subject"].unique())
    labels = {s: f"{k}.{k}" for k, s in enumerate(subjects)}
    labels[subjects[0]], labels[subjects[1]] = "3.1", "3.10"
    path = tmp_path_factory.mktemp("ids") / "decimal_ids.csv"
    data.assign(Subject=data["Subject"].map(labels)).to_csv(path, index=False)
    return path


def test_string_col_keeps_labels_that_read_as_one_number(tmp_path: Path, decimal_ids: Path) -> None:
    formula = "Reaction ~ Days + (1 | Subject)"
    as_number, as_text = tmp_path / "number.json", tmp_path / "text.json"
    ok(invoke("fit", formula, decimal_ids, "--json", as_number))
    ok(invoke("fit", formula, decimal_ids, "--json", as_text, "--string-col", "Subject"))
    assert json.loads(as_number.read_text())["ngroups"] == {"Subject": 17}  # 3.1 == 3.10
    assert json.loads(as_text.read_text())["ngroups"] == {"Subject": 18}
    out = tmp_path / "re.csv"
    ok(invoke("ranef", formula, decimal_ids, "-o", out, "--string-col", "Subject"))
    levels = pd.read_csv(out, dtype={"level": str})["level"]
    assert {"3.1", "3.10"} <= set(levels) and len(levels) == 18
    pred = tmp_path / "pred.csv"
    args = ["predict", formula, decimal_ids, "-o", pred, "--newdata", decimal_ids]
    ok(invoke(*args, "--string-col", "Subject"))
    got = pd.read_csv(pred)
    data = tiers.read_data(decimal_ids, string_columns=["Subject"])
    want = tiers.fit(formula, data).predict(data)
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    lr = ok(invoke("lrtest", "Reaction ~ 1 + (1 | Subject)", formula, decimal_ids, "--ml",
                   "--string-col", "Subject"))  # fmt: skip
    m0, m1 = (tiers.fit(f, data, reml=False) for f in ("Reaction ~ 1 + (1 | Subject)", formula))
    assert lr.strip() == lrtest(m0, m1).summary().strip()
    both = tmp_path / "both.json"  # repeatable: Days read as text becomes a factor
    ok(invoke("fit", formula, decimal_ids, "--json", both, "--string-col", "Subject",
              "--string-col", "Days"))  # fmt: skip
    doc = json.loads(both.read_text())
    assert doc["ngroups"] == {"Subject": 18} and len(doc["fixed_effects"]) == data["Days"].nunique()
    xt = tmp_path / "xt.json"
    ok(invoke("xtreg", "Reaction", "Days", decimal_ids, "--id", "Subject", "--fe", "--json", xt,
              "--string-col", "Subject"))  # fmt: skip
    assert json.loads(xt.read_text())["fe"]["ngroups"] == 18


@pytest.mark.parametrize("command", ["fit", "ranef", "predict", "lrtest", "xtreg"])
def test_string_col_naming_no_column_is_refused(
    tmp_path: Path, decimal_ids: Path, command: str
) -> None:
    formula = "Reaction ~ Days + (1 | Subject)"
    args = {
        "fit": [formula, decimal_ids],
        "ranef": [formula, decimal_ids, "-o", tmp_path / "x.csv"],
        "predict": [formula, decimal_ids, "-o", tmp_path / "x.csv"],
        "lrtest": ["Reaction ~ 1 + (1 | Subject)", formula, decimal_ids],
        "xtreg": ["Reaction", "Days", decimal_ids, "--id", "Subject", "--fe"],
    }[command]
    error(invoke(command, *args, "--string-col", "Subjekt"), "'Subjekt'")


@pytest.mark.parametrize(
    "command", [["explore"], ["study", "--preset", "seed", "--replicates", "2"]]
)
def test_empty_sizes_are_refused(command: list[str], tmp_path: Path) -> None:
    """``--sizes ""`` used to fall back to the default sizes (800,000 rows in explore)."""
    result = invoke(*command, "--sizes", "", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "--sizes must list at least one positive integer" in result.stderr


def test_zero_workers_are_refused() -> None:
    """``workers=0`` used to mean "all cores"."""
    with pytest.raises(tiers.DesignError, match="workers must be an integer >= 1"):
        tiers.run_study(
            tiny(), {"m": "y x || a: || b:"}, sizes=[3], replicates=2, seed=1, workers=0
        )
