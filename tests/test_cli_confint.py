"""``tiers fit --ci``: intervals printed and written to the JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tiers
from tiers.cli.main import app

from .conftest import REFERENCE, load_case

runner = CliRunner()
SLEEP = "Reaction ~ Days + (Days | Subject)"
CSV = REFERENCE / "sleepstudy.csv"


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("method", ["wald", "profile"])
def test_fit_ci_prints_and_writes_intervals(method: str, tmp_path: Path) -> None:
    out = tmp_path / "fit.json"
    result = invoke("fit", SLEEP, CSV, "--ci", method, "--json", out)
    assert result.exit_code == 0, result.output
    assert "95% intervals" in result.stdout and "Satterthwaite" in result.stdout
    doc = json.loads(out.read_text())
    ci = doc["confint"]
    assert ci["method"] == method and ci["level"] == 0.95 and ci["criterion"] == "REML"
    names = [p["name"] for p in ci["parameters"]]
    assert names == [
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
        "(Intercept)",
        "Days",
    ]
    data, _ = load_case("sleepstudy")
    res = tiers.fit(SLEEP, data)
    expect = res.confint(method).set_index("name")
    tests = res.satterthwaite()
    for p in ci["parameters"]:
        assert p["lower"] == pytest.approx(expect.loc[p["name"], "lower"], rel=1e-9)
        assert p["upper"] == pytest.approx(expect.loc[p["name"], "upper"], rel=1e-9)
        if p["name"] in res.xnames:
            assert p["df"] == pytest.approx(tests.loc[p["name"], "df"])
            assert p["p_value"] == pytest.approx(tests.loc[p["name"], "p_value"])
        else:
            assert "df" not in p
    assert "fixed_effects" in doc  # the rest of the document is unchanged


def test_fit_ci_bootstrap_with_seed(tmp_path: Path) -> None:
    out = tmp_path / "boot.json"
    args = ("fit", "Yield ~ 1 + (1 | Batch)", REFERENCE / "dyestuff.csv", "--ci", "bootstrap")
    result = invoke(*args, "--n-boot", "40", "--seed", "3", "--level", "0.9", "--json", out)
    assert result.exit_code == 0, result.output
    ci = json.loads(out.read_text())["confint"]
    assert ci["n_boot"] == 40 and ci["n_failed"] == 0 and ci["seed"] == 3 and ci["level"] == 0.9


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--ci", "exact"), "wald, profile, profile-ml, bootstrap"),
        (("--ci", "wald", "--level", "2"), "between 0 and 1"),
    ],
)
def test_fit_ci_bad_input(args, needle: str) -> None:
    result = invoke("fit", SLEEP, CSV, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and needle in result.stderr
