"""Simulation studies and plans of GLMM designs: estimators, spawn workers, plan by simulation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

import tiers
from tiers.cli.main import app
from tiers.errors import DesignError, StudyError
from tiers.simulation.data import Covariate, Level, NestedDesign, simulate
from tiers.simulation.presets import seed_binary_design
from tiers.study.estimators import (
    Estimator,
    default_estimators,
    describe,
    glmm_options,
    parse_estimator,
)
from tiers.study.plan import plan_design
from tiers.study.plan_sim import plan_by_simulation
from tiers.study.replicate import draw_replicate, replicate_seed
from tiers.study.runner import load_study, run_study


def _small() -> NestedDesign:
    """Two levels, 10 obs per innermost unit: fits in tens of milliseconds."""
    return NestedDesign(
        (Level("school", 6, 0.7), Level("class", 4, 0.5)),
        obs_per_unit=10,
        residual_sd=0.0,
        covariates=(Covariate("tut", "bernoulli", 0.8, p=0.5),),
        response="pass",
        family="binomial",
    )


def test_estimator_specs_round_trip_and_pickle() -> None:
    e = parse_estimator("agq=pass ~ tut + (1 | school); nagq=5")
    assert e == Estimator("agq", "mixed", formula="pass ~ tut + (1 | school)", nagq=5)
    assert parse_estimator(f"agq={e.spec}") == e
    assert pickle.loads(pickle.dumps(e)) == e
    lpm = parse_estimator("lpm=pass ~ tut + (1 | school); family=gaussian")
    assert glmm_options(lpm, _small()) is None
    assert describe(lpm, _small()) == "linear mixed model"
    assert (
        describe(e, _small()) == "GLMM binomial/logit, adaptive Gauss-Hermite quadrature, 5 points"
    )
    stata = parse_estimator("s=meprobit pass tut || school:")
    assert glmm_options(stata, _small()) == {"family": None, "link": None, "nagq": None}
    assert "Stata's default" in describe(stata, _small())
    for bad, match in [
        ("a=y ~ x + (1 | g); nagq=0", "nagq must be a whole number"),
        ("a=y ~ x + (1 | g); quad=3", "key one of family, link, nagq"),
        ("a=y ~ x + (1 | g); family=gaussian; nagq=3", "takes no link or nagq"),
    ]:
        with pytest.raises(StudyError, match=match):
            parse_estimator(bad)


def test_default_estimators_of_a_glmm_design() -> None:
    ests = default_estimators(seed_binary_design())
    assert [e.name for e in ests] == ["one_level", "nested"]
    assert ests[1].formula == "pass ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
    counts = NestedDesign(
        (Level("g", 3, 0.5),), 4, 0.0, family="poisson", exposure="days", response="n"
    )
    assert default_estimators(counts)[0].formula == "n ~ 1 + offset(log(days)) + (1 | g)"


def test_replicate_draws_the_glmm_outcome_of_simulate() -> None:
    d = _small()
    y, covs = draw_replicate(d, np.random.default_rng(replicate_seed(3, 6, 2)))
    df = simulate(d, np.random.default_rng(replicate_seed(3, 6, 2)))
    np.testing.assert_array_equal(y, df["pass"])
    np.testing.assert_array_equal(covs["tut"], df["tut"])


def test_study_of_a_glmm_with_spawned_workers(tmp_path) -> None:
    d = _small()
    ests = {
        "laplace": "pass ~ tut + (1 | school/class)",
        "agq": "pass ~ tut + (1 | school); nagq=3",
    }
    res = run_study(d, ests, [6], replicates=4, seed=2, workers=2, out=tmp_path / "s", batch_size=2)
    s = res.summary.set_index(["estimator", "parameter"])
    assert list(s.loc["laplace"].index) == ["sd_school", "sd_class", "beta_intercept", "beta_tut"]
    assert (s["n_ok"] == 4).all() and (s["n_failed"] == 0).all()
    assert s.loc[("laplace", "beta_tut"), "truth"] == 0.8
    rows = res.replicates[(res.replicates["estimator"] == "laplace")
                          & (res.replicates["parameter"] == "beta_tut")]  # fmt: skip
    rejected = (rows["lower"] > 0) | (rows["upper"] < 0)
    assert s.loc[("laplace", "beta_tut"), "power"] == pytest.approx(rejected.mean())
    assert np.isnan(s.loc[("laplace", "sd_class"), "power"])
    # the same numbers with one worker, in the parent, and after reloading the folder
    one = run_study(d, ests, [6], replicates=4, seed=2, workers=1)
    cols = ["estimate", "se", "lower", "upper"]
    np.testing.assert_allclose(one.replicates[cols], res.replicates[cols], rtol=1e-9)
    again = load_study(tmp_path / "s")
    assert again.estimators == res.estimators
    # each row is the fit tiers.fit gives on the replicate's data
    rep = res.replicates
    row = rep[(rep["estimator"] == "laplace") & (rep["replicate"] == 3)].set_index("parameter")
    data = simulate(d, np.random.default_rng(replicate_seed(2, 6, 3)))
    fit = tiers.fit(ests["laplace"], data, family="binomial")
    np.testing.assert_allclose(row.loc["beta_tut", "estimate"], fit.fixef["tut"], rtol=1e-10)
    wald = fit.confint()
    np.testing.assert_allclose(
        row.loc[["beta_intercept", "beta_tut"], ["lower", "upper"]].to_numpy(),
        wald.loc[["(Intercept)", "tut"]].to_numpy(),
        rtol=1e-10,
    )
    sd = fit.fit.theta[1]
    assert row.loc["sd_class", "estimate"] == pytest.approx(sd, rel=1e-10)


def test_glmm_estimator_errors_are_refused_before_fitting() -> None:
    d = _small()
    with pytest.raises(StudyError, match="cannot be fitted"):
        run_study(d, {"p": "pass ~ tut + offset(log(days)) + (1 | school)"}, [6], 2, workers=1)
    gaussian = d.with_units("school", 6)
    with pytest.raises(StudyError, match="link and nagq are for a GLMM"):
        lin = NestedDesign(gaussian.levels, 10, 1.0, gaussian.covariates, response="pass")
        run_study(lin, {"a": "pass ~ tut + (1 | school); nagq=3"}, [6], 2, workers=1)


def test_plan_refuses_and_plans_by_simulation() -> None:
    d = _small()
    with pytest.raises(DesignError, match="plan it by simulation"):
        plan_design(d)
    plan = plan_by_simulation(d, replicates=6, workers=1, power_target=0.5, alpha=0.05)
    assert plan.approximation == "GLMM binomial/logit, Laplace approximation"
    row = plan.at(6).loc["beta_tut"]
    assert 0.0 <= row["power"] <= 1.0
    assert row["power_mcse"] == pytest.approx(np.sqrt(row["power"] * (1 - row["power"]) / 6))
    assert np.isnan(plan.at(6).loc["beta_intercept", "power"])
    units = plan.targets["beta_tut"]["units"]
    assert units is None or plan.at(units).loc["beta_tut", "power"] >= 0.5
    json.dumps(plan.to_dict())
    with pytest.raises(DesignError, match="linear design is planned analytically"):
        plan_by_simulation(NestedDesign(d.levels, 10, 1.0))


def test_cli_simulate_study_and_plan_with_a_glmm(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "b.csv"
    r = runner.invoke(app, ["simulate", "-o", str(out), "--preset", "seed-binary", "--districts",
                            "2", "--seed", "4", "--link", "probit"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["simulate", "-o", str(tmp_path / "c.csv"), "--preset", "seed",
                            "--family", "binomial"])  # fmt: skip
    assert r.exit_code == 2 and "residual SD of 6" in r.output
    design = tmp_path / "d.json"
    design.write_text(json.dumps(_small().to_dict()))
    r = runner.invoke(app, ["plan", "--design", str(design), "--replicates", "4", "--workers",
                            "1", "--nagq", "2", "--json", str(tmp_path / "p.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "adaptive Gauss-Hermite quadrature, 2 points" in r.output
    assert json.loads((tmp_path / "p.json").read_text())["method"] == "simulation"
    r = runner.invoke(app, ["plan", "--design", str(design), "--ml"])
    assert r.exit_code == 2 and "always fitted by maximum likelihood" in r.output
    r = runner.invoke(app, ["plan", "--replicates", "4"])
    assert r.exit_code == 2 and "go with a GLMM design" in r.output
    r = runner.invoke(app, ["study", "--out", str(tmp_path / "st"), "--design", str(design),
                            "--sizes", "6", "--replicates", "2", "--workers", "1",
                            "--no-progress", "--report", str(tmp_path / "r.html")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "GLMM binomial/logit, Laplace approximation" in (tmp_path / "r.html").read_text()


def test_plan_notes_a_clear_bias_and_names_the_remedy() -> None:
    import pandas as pd

    from tiers.study.plan_sim import _bias_notes

    # seed-binary at 5 districts, 100 Laplace fits (a measured study): the student SD 1.053 for 1.5
    table = pd.DataFrame({"size": [5, 5], "parameter": ["sd_student_id", "beta_tutoring"],
                          "truth": [1.5, 0.6], "bias": [-0.447, -0.056], "sd": [0.064, 0.081],
                          "n_ok": [100, 100]})  # fmt: skip
    note, why = _bias_notes(table, 1)
    assert note == "size 5: sd_student_id is biased by -30% of its true value 1.5 over 100 fits"
    assert "Laplace approximation" in why and "nagq > 1" in why
    assert "nagq" not in _bias_notes(table, 7)[1]
    assert _bias_notes(table.iloc[1:], 1) == ()


def test_plan_doubles_the_units_until_the_power_target_is_met() -> None:
    import dataclasses

    weak = dataclasses.replace(_small(), covariates=(Covariate("tut", "bernoulli", 0.3, p=0.5),))
    plan = plan_by_simulation(weak, replicates=8, workers=1, power_target=0.7, seed=3)
    sizes = sorted(set(plan.table["size"]))
    assert sizes[:2] == [6, 12] and all(b == 2 * a for a, b in zip(sizes, sizes[1:], strict=False))
    power = [plan.at(s).loc["beta_tut", "power"] for s in sizes]
    units = plan.targets["beta_tut"]["units"]
    assert all(p < 0.7 for p in power[:-1])  # the search stops at the first size that meets it
    assert (units == sizes[-1] and power[-1] >= 0.7) or (units is None and len(sizes) == 6)


def test_plan_target_se_and_bad_targets() -> None:
    plan = plan_by_simulation(_small(), replicates=3, workers=1, target_se={"beta_tut": 10.0})
    assert plan.targets["beta_tut"] == {"target_se": 10.0, "units": 6, "level": "school"}
    with pytest.raises(DesignError, match="unknown parameter 'sd_residual'"):
        plan_by_simulation(_small(), target_se={"sd_residual": 0.1})
    with pytest.raises(DesignError, match="nagq must be"):
        plan_by_simulation(_small(), nagq=0)
