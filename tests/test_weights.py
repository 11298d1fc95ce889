"""Precision and frequency weights against lme4 (every engine) and against expanded data.

References: ../shared/reference/weights/sleepstudy_weighted.json (lme4, tree engine) and
tests/data/weights/weighted_refs.json (lme4 with weights on pastes, exam and penicillin: the nested,
tree and crossed engines), made by tests/data/weights/make_references.R.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.engine.registry import build_engine
from tiers.errors import DataError

from .conftest import REFERENCE
from .tolerances import (
    BETA_RTOL,
    DEVIANCE_AT_THETA_RTOL,
    OPTIMUM_NOT_WORSE_RTOL,
    OPTIMUM_WITHIN_RTOL,
    SE_RTOL,
)

HERE = Path(__file__).parent / "data" / "weights"
REFS = json.loads((HERE / "weighted_refs.json").read_text())
CASES = {"pastes": "pastes", "exam": "exam", "penicillin": "penicillin"}


def weighted_data(case: str) -> pd.DataFrame:
    """The shared case with the script's weights: w = 1 + (i mod 4) / 3."""
    df = pd.read_csv(REFERENCE / f"{case}.csv")
    df["w"] = 1.0 + (np.arange(len(df)) % 4) / 3.0
    if case == "pastes":
        df["w_even"] = np.where(df.duplicated("sample"), 1.5, 0.5)
    return df


def _check_fit(data: pd.DataFrame, spec: dict[str, Any], engine: str) -> None:
    reml = spec["method"] == "REML"
    design = tiers.prepare(spec["formula"], data, weights=spec["weights"])
    assert design.engine == engine
    dev = build_engine(design, reml=reml)
    # lme4 orders theta by the number of levels of each term; map it by name
    by_name = dict(
        zip(np.atleast_1d(spec["theta_names"]), np.atleast_1d(spec["theta"]), strict=True)
    )
    theta = np.array([by_name[name] for name in design.theta_names], dtype=float)
    # the deviance at lme4's theta: the weighted criterion, Jacobian term included
    assert dev.deviance(theta) == pytest.approx(spec["criterion"], rel=DEVIANCE_AT_THETA_RTOL)
    sol = dev.solve(theta)
    np.testing.assert_allclose(sol.beta, spec["beta"], rtol=BETA_RTOL, atol=1e-10)
    se = sol.sigma * np.sqrt(np.diag(sol.unscaled_vcov))
    np.testing.assert_allclose(se, spec["std_error"], rtol=SE_RTOL)
    assert sol.sigma == pytest.approx(spec["sigma"], rel=SE_RTOL)
    res = tiers.fit(spec["formula"], data, weights=spec["weights"], reml=reml)
    # lmerTest's Satterthwaite df of the weighted fit; at our own optimum, as tests of the
    # unweighted cases do (test_satterthwaite.OWN_FIT_DF_RTOL)
    df = np.atleast_1d(spec["df_satterthwaite"])
    np.testing.assert_allclose(res.satterthwaite()["df"], df, rtol=2e-4)
    assert res.criterion <= spec["criterion"] * (1 + OPTIMUM_NOT_WORSE_RTOL)
    assert res.criterion == pytest.approx(spec["criterion"], rel=OPTIMUM_WITHIN_RTOL)
    assert res.nobs == spec["nobs"]


@pytest.mark.parametrize(
    ("key", "engine"),
    [
        (f"{case}_{m}", eng)
        for case, eng in [
            ("pastes_w", "nested"),
            ("pastes_w_even", "nested"),
            ("exam_w", "nested"),
            ("exam_slope_w", "tree"),
            ("penicillin_w", "crossed"),
        ]
        for m in ("REML", "ML")
    ],
)
def test_precision_weights_match_lme4(key: str, engine: str) -> None:
    spec = REFS["fits"][key]
    _check_fit(weighted_data(key.split("_")[0]), spec, engine)


@pytest.mark.parametrize("key", ["pw_REML", "pw_ML"])
def test_sleepstudy_weighted_matches_lme4(key: str) -> None:
    with open(REFERENCE / "weights" / "sleepstudy_weighted.json") as fh:
        ref = json.load(fh)["fits"][key]
    data = pd.read_csv(REFERENCE / "weights" / "sleepstudy_weighted.csv")
    res = tiers.fit(ref["formula"], data, weights="w", reml=ref["method"] == "REML")
    # lme4 reports no theta here: rebuild it from the SDs, the correlation and sigma
    sd = [r["sd"] for r in ref["random_effects"]]
    rho = ref["correlations"][0]["correlation"]
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    L = np.linalg.cholesky(cov) / sd[2]
    theta = np.array([L[0, 0], L[1, 0], L[1, 1]])
    assert res.devfun.deviance(theta) == pytest.approx(ref["criterion"], rel=DEVIANCE_AT_THETA_RTOL)
    assert res.criterion <= ref["criterion"] * (1 + OPTIMUM_NOT_WORSE_RTOL)
    assert res.loglik == pytest.approx(ref["logLik"], rel=OPTIMUM_WITHIN_RTOL)
    sol = res.devfun.solve(theta)
    np.testing.assert_allclose(
        sol.beta, [f["estimate"] for f in ref["fixed_effects"]], rtol=BETA_RTOL
    )
    se = sol.sigma * np.sqrt(np.diag(sol.unscaled_vcov))
    np.testing.assert_allclose(se, [f["std_error"] for f in ref["fixed_effects"]], rtol=SE_RTOL)


def test_unit_weights_change_nothing() -> None:
    data = weighted_data("pastes")
    data["one"] = 1.0
    plain = tiers.fit("strength ~ 1 + (1 | batch/cask)", data)
    ones = tiers.fit("strength ~ 1 + (1 | batch/cask)", data, weights="one")
    assert ones.criterion == pytest.approx(plain.criterion, rel=1e-12)
    # the same optimum; the optimiser's path differs by rounding
    np.testing.assert_allclose(ones.theta, plain.theta, rtol=1e-6)


@pytest.mark.parametrize(
    "formula",
    [
        "strength ~ 1 + (1 | batch/cask)",  # nested scalar
        "diameter ~ 1 + (1 | plate) + (1 | sample)",  # crossed
        "y ~ x + (x | g)",  # tree
    ],
)
def test_frequency_weights_equal_expanded_data(formula: str) -> None:
    """fweights are copies of rows: the criterion, estimates, SEs and nobs of the expanded data."""
    rng = np.random.default_rng(7)
    if formula.startswith("y"):
        g = np.repeat(np.arange(12), 6)
        x = rng.normal(size=g.size)
        y = 1 + 0.5 * x + rng.normal(size=12)[g] + 0.3 * x * rng.normal(size=12)[g]
        data = pd.DataFrame({"y": y + rng.normal(size=g.size), "x": x, "g": g})
    else:
        data = weighted_data("penicillin" if formula.startswith("diameter") else "pastes")
    data["f"] = rng.integers(1, 4, size=len(data))
    expanded = data.loc[data.index.repeat(data["f"])].reset_index(drop=True)
    for reml in (True, False):
        a = tiers.fit(formula, data, weights="f", weight_type="frequency", reml=reml)
        b = tiers.fit(formula, expanded, reml=reml)
        assert a.nobs == b.nobs == int(data["f"].sum())
        assert a.engine == b.engine
        assert a.criterion == pytest.approx(b.criterion, rel=1e-9)
        np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)
        np.testing.assert_allclose(a.std_errors, b.std_errors, rtol=1e-4)
        np.testing.assert_allclose(a.sd_inference.se, b.sd_inference.se, rtol=1e-4)
        np.testing.assert_allclose(a.satterthwaite()["df"], b.satterthwaite()["df"], rtol=1e-4)
        # at the same theta the two are the same function: exactly equal up to rounding
        th = np.asarray(b.theta)
        assert a.devfun.deviance(th) == pytest.approx(b.devfun.deviance(th), rel=1e-10)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ([np.nan], "1 missing"),
        ([-1.0, -2.0], "2 negative"),
        ([0.0], "1 zero"),
        ([np.inf], "1 infinite"),
    ],
)
def test_bad_weights_are_refused_with_counts(values: list[float], words: str) -> None:
    data = weighted_data("pastes")
    data.loc[: len(values) - 1, "w"] = values
    with pytest.raises(DataError, match=words) as info:
        tiers.fit("strength ~ 1 + (1 | batch/cask)", data, weights="w")
    assert "'w'" in str(info.value)


def test_weight_options_are_checked() -> None:
    data = weighted_data("pastes")
    with pytest.raises(ValueError, match="weight_type must be one of"):
        tiers.fit("strength ~ 1 + (1 | batch)", data, weights="w", weight_type="analytic")
    with pytest.raises(DataError, match="not whole numbers"):
        tiers.fit("strength ~ 1 + (1 | batch)", data, weights="w", weight_type="frequency")
    with pytest.raises(DataError, match="not in the data"):
        tiers.fit("strength ~ 1 + (1 | batch)", data, weights="ww")
    with pytest.raises(ValueError, match="apply to sampling weights only"):
        tiers.fit("strength ~ 1 + (1 | batch)", data, weights="w", pwscale="size")


def test_zero_precision_weights_dropped_only_on_request() -> None:
    data = weighted_data("pastes")
    data.loc[[3, 17], "w"] = 0.0
    with pytest.raises(DataError, match="2 zero"):
        tiers.fit("strength ~ 1 + (1 | batch/cask)", data, weights="w")
    res = tiers.fit("strength ~ 1 + (1 | batch/cask)", data, weights="w", drop_zero_weights=True)
    kept = tiers.fit("strength ~ 1 + (1 | batch/cask)", data.drop(index=[3, 17]), weights="w")
    assert res.nobs == 58
    assert res.criterion == pytest.approx(kept.criterion, rel=1e-12)
    assert any("2 rows with a zero weight dropped" in note for note in res.notes)
    with pytest.raises(ValueError, match="applies to precision weights"):
        tiers.fit("strength ~ 1 + (1 | batch)", data, drop_zero_weights=True)


def test_stata_fweights_are_frequency_weights() -> None:
    data = weighted_data("pastes")
    data["f"] = 1 + np.arange(len(data)) % 3
    stata = tiers.fit("strength [fw=f] || batch: || cask:, mle", data)
    python = tiers.fit(
        "strength ~ 1 + (1 | batch/cask)", data, weights="f", weight_type="frequency", reml=False
    )
    assert stata.nobs == python.nobs == int(data["f"].sum())
    assert stata.criterion == pytest.approx(python.criterion, rel=1e-10)
    with pytest.raises(DataError, match="given twice"):
        tiers.fit("strength [fw=f] || batch:", data, weights="f")


def test_cli_weights_and_vce(tmp_path) -> None:
    from typer.testing import CliRunner

    from tiers.cli.main import app

    path = tmp_path / "sleep.csv"
    pd.read_csv(REFERENCE / "weights" / "sleepstudy_weighted.csv").to_csv(path, index=False)
    runner = CliRunner()
    out = runner.invoke(
        app, ["fit", "Reaction ~ Days + (Days | Subject)", str(path), "--weights", "w"]
    )
    assert out.exit_code == 0, out.stdout
    assert "precision weights 'w'" in out.stdout
    out = runner.invoke(
        app, ["fit", "Reaction ~ Days + (Days | Subject)", str(path), "--vce", "cr2"]
    )
    assert out.exit_code == 0 and "CR2" in out.stdout
    out = runner.invoke(app, ["fit", "Reaction ~ Days + (1 | Subject)", str(path), "--vce", "hc1"])
    assert out.exit_code != 0 and "vce must be one of" in out.output
    out = runner.invoke(
        app,
        [
            "fit",
            "Reaction ~ Days + (1 | Subject)",
            str(path),
            "--weights",
            "w",
            "--weight-type",
            "x",
        ],
    )
    assert out.exit_code != 0 and "weight_type must be one of" in out.output


def test_cli_pool_refuses_weights(tmp_path) -> None:
    from typer.testing import CliRunner

    from tiers.cli.main import app

    out = CliRunner().invoke(
        app,
        ["fit", "y ~ x + (1 | g)", str(tmp_path / "imp_*.csv"), "--pool", "--weights", "w"],
    )
    assert out.exit_code != 0 and "--pool does not take --weights" in out.output
