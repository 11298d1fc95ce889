"""Simulation studies: streams, reuse, resume, interruption, mapping, summary and bad input.

Designs are tiny (about a hundred rows) so the whole file runs in seconds; one test runs on two
workers, forked from the process and from a fork server, to show the numbers do not depend on
the number of processes or how they start.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers.study.replicate as study_mod
from tiers.cli.main import app
from tiers.errors import DesignError, FormulaError
from tiers.simulation.data import Covariate, Level, NestedDesign, simulate
from tiers.study.parallel import worker_context
from tiers.study.runner import (
    REPLICATE_COLUMNS,
    SUMMARY_COLUMNS,
    StudyError,
    draw_replicate,
    load_study,
    parse_estimator,
    replicate_seed,
    run_study,
    summarize,
)

NUMBERS = ["estimate", "se", "lower", "upper"]
NESTED = "y x || a: || b: || c:"
REVERSED = "y x || c: || b: || a:"


def tiny(units: int = 3, sd_a: float = 1.5) -> NestedDesign:
    """a > b > c with 3 x 3 x 4 units and 3 observations each: 108 rows at 3 units of a."""
    return NestedDesign(
        levels=(Level("a", units, sd_a), Level("b", 3, 1.0), Level("c", 4, 0.8)),
        obs_per_unit=3,
        residual_sd=1.0,
        covariates=(Covariate("x", "bernoulli", coef=0.5, p=0.4),),
        response="y",
    )


def numbers(result) -> np.ndarray:
    return result.replicates[NUMBERS].to_numpy(float)


# ---------------------------------------------------------------------------- random streams --


def test_replicate_stream_is_the_spawned_child():
    # SeedSequence(seed, spawn_key=(s, r)) is child r of child s of SeedSequence(seed).
    child = np.random.SeedSequence(7).spawn(11)[10].spawn(4)[3]
    key = replicate_seed(7, 10, 3)
    assert np.array_equal(child.generate_state(4), key.generate_state(4))


def test_draw_replicate_matches_simulate_bit_for_bit():
    design = NestedDesign(
        levels=(Level("a", 3, 1.5), Level("b", 2, 0.5)),
        obs_per_unit=4,
        residual_sd=2.0,
        covariates=(
            Covariate("x", "bernoulli", coef=0.5, p=0.3),
            Covariate("z", "normal", coef=-1.0, mean=2.0, sd=3.0),
        ),
        intercept=1.0,
        response="y",
    )
    y, covs = draw_replicate(design, np.random.default_rng(replicate_seed(1, 3, 5)))
    frame = simulate(design, np.random.default_rng(replicate_seed(1, 3, 5)))
    assert np.array_equal(y, frame["y"].to_numpy())
    assert np.array_equal(covs["x"], frame["x"].to_numpy(float))
    assert np.array_equal(covs["z"], frame["z"].to_numpy())


def test_prepared_refit_equals_a_full_fit_of_the_simulated_frame():
    """The fast path (prepare once, refit with new y and X) gives the fit of simulate()'s frame."""
    import tiers

    res = run_study(tiny(), {"nested": NESTED}, sizes=[3], replicates=3, seed=4, workers=1)
    data = simulate(tiny(), np.random.default_rng(replicate_seed(4, 3, 2)))
    full = tiers.fit(NESTED, data)
    rows = res.replicates[res.replicates["replicate"] == 2].set_index("parameter")["estimate"]
    assert rows["beta_x"] == pytest.approx(full.fixef["x"], rel=1e-8)
    assert rows["sd_residual"] == pytest.approx(full.sigma, rel=1e-8)
    assert rows["sd_a"] == pytest.approx(full.theta[0] * full.sigma, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("seed", [3, 4])  # 3: replicate 0 has x constant; 4: replicates 3 and 5
def test_a_covariate_drawn_constant_goes_through_the_full_fit(seed):
    """With p = 0.01 and 108 rows, x is all zero in about a third of the replicates; those (and
    all of them, if replicate 0 is one) take the full fit, which drops x; the others match it."""
    import tiers

    design = NestedDesign(tiny().levels, 3, 1.0, (Covariate("x", "bernoulli", 0.5, p=0.01),),
                          response="y")  # fmt: skip
    res = run_study(design, {"m": NESTED}, sizes=[3], replicates=8, seed=seed, workers=1)
    constant = 0
    for r in range(8):
        data = simulate(design, np.random.default_rng(replicate_seed(seed, 3, r)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = tiers.fit(NESTED, data)
        got = res.replicates[res.replicates["replicate"] == r].set_index("parameter")
        assert (got["status"] == "ok").all()
        if data["x"].nunique() == 1:
            constant += 1
            assert math.isnan(got.loc["beta_x", "estimate"])
        else:
            assert got.loc["beta_x", "estimate"] == pytest.approx(full.fixef["x"], rel=1e-8)
        assert got.loc["sd_residual", "estimate"] == pytest.approx(full.sigma, rel=1e-8)
    assert 0 < constant < 8


# -------------------------------------------------------------------------- reproducibility --


def check_one_and_two_workers(thread: bool) -> None:
    """1 and 2 workers give the same numbers; the pool forks from this process when it runs no
    other thread, else (another thread alive, as in a notebook) from a fork server."""
    import threading

    import tiers.study.parallel as parallel

    methods = []

    def context(preload):
        ctx = worker_context(preload)
        methods.append(ctx.get_start_method())
        return ctx

    kw = dict(sizes=[3, 4], replicates=6, seed=2, batch_size=2)
    one = run_study(tiny(), None, workers=1, **kw)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    if thread:
        other.start()
    saved, parallel.worker_context = parallel.worker_context, context
    try:
        two = run_study(tiny(), None, workers=2, **kw)
    finally:
        parallel.worker_context = saved
        stop.set()
        if thread:
            other.join()
    assert methods == ["forkserver" if thread else "fork"]
    assert np.array_equal(numbers(one), numbers(two), equal_nan=True)
    cols = [c for c in SUMMARY_COLUMNS if c != "median_seconds"]
    pd.testing.assert_frame_equal(one.summary[cols], two.summary[cols])


def test_same_numbers_on_one_and_two_workers_forked():
    # a fresh interpreter: threads other tests leave behind (Dask's, a server's) would rightly
    # send this process down the fork-server path
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = "from tests.test_study import check_one_and_two_workers as c; c(False)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_same_numbers_on_one_and_two_workers_from_a_fork_server():
    check_one_and_two_workers(thread=True)


def test_resume_and_extend_fit_only_what_is_missing(tmp_path):
    est = {"fe": "fe", "nested": NESTED}
    first = run_study(tiny(), est, sizes=[3], replicates=4, seed=5, workers=1, out=tmp_path)
    assert first.n_new == 8
    assert (first.summary["n_unconverged"] == 0).all() and (first.summary["n_ok"] == 4).all()
    more = run_study(tiny(), est, sizes=[3, 4], replicates=6, seed=5, workers=1, out=tmp_path)
    assert more.n_new == 2 * 2 + 6 * 2  # two more replicates at size 3, six at the new size 4
    fresh = run_study(tiny(), est, sizes=[3, 4], replicates=6, seed=5, workers=1)
    assert np.array_equal(numbers(more), numbers(fresh), equal_nan=True)
    again = run_study(tiny(), est, sizes=[3, 4], replicates=6, seed=5, workers=1, out=tmp_path)
    assert again.n_new == 0
    loaded = load_study(tmp_path)
    assert np.array_equal(numbers(loaded), numbers(fresh), equal_nan=True)
    on_disk = pd.read_csv(tmp_path / "summary.csv")
    assert list(on_disk.columns) == list(SUMMARY_COLUMNS)
    assert list(pd.read_csv(tmp_path / "replicates.csv").columns) == list(REPLICATE_COLUMNS)


def test_interrupt_keeps_the_finished_replicates(tmp_path):
    est = {"nested": NESTED}

    def stop_after_three(done: int) -> None:
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(tiny(), est, sizes=[3], replicates=8, seed=6, workers=1, out=tmp_path,
                  batch_size=1, on_batch=stop_after_three)  # fmt: skip
    kept = pd.read_csv(tmp_path / "replicates.csv")
    assert sorted(set(kept["replicate"])) == [0, 1, 2]
    # A line cut mid-write (a hard kill) is dropped on resume, and its fit redone.
    with open(tmp_path / "replicates.csv", "a") as fh:
        fh.write("3,3,nested,sd_a,0.5")
    resumed = run_study(tiny(), est, sizes=[3], replicates=8, seed=6, workers=1, out=tmp_path)
    assert resumed.n_new == 5
    fresh = run_study(tiny(), est, sizes=[3], replicates=8, seed=6, workers=1)
    assert np.array_equal(numbers(resumed), numbers(fresh), equal_nan=True)


# ------------------------------------------------------------------- estimators and mapping --


def test_parameters_of_each_estimator_and_the_reversed_nesting():
    est = {"ols": "ols", "fe": "fe", "re": "re:b", "one": "y x || c:", "nested": NESTED,
           "reversed": REVERSED}  # fmt: skip
    res = run_study(tiny(), est, sizes=[3], replicates=3, seed=1, workers=1)
    params = res.summary.groupby("estimator", sort=False)["parameter"].apply(list).to_dict()
    betas = ["beta_intercept", "beta_x"]
    assert params["ols"] == ["sd_residual", *betas]
    assert params["fe"] == ["sd_c", "sd_residual", *betas]
    assert params["re"] == ["sd_b", "sd_residual", *betas]
    assert params["one"] == ["sd_c", "sd_residual", *betas]
    assert params["nested"] == ["sd_a", "sd_b", "sd_c", "sd_residual", *betas]
    assert params["reversed"] == params["nested"]
    # The truth is always the design's, whatever the estimator means by the parameter.
    truth = tiny().true_parameters()
    assert all(res.summary["truth"] == res.summary["parameter"].map(truth))
    # The wrongly nested model is fitted with force, counted, and its warnings kept.
    rev = res.replicates[res.replicates["estimator"] == "reversed"]
    assert (rev["status"] == "ok").all()
    assert rev["warnings"].str.contains("not identified").all()
    s = res.summary.set_index(["estimator", "parameter"])
    assert s.loc[("reversed", "sd_a"), "n_ok"] == 3
    # The one-level model's student SD absorbs every level: its bias shows it.
    absorbed = math.sqrt(1.5**2 + 1.0**2 + 0.8**2)
    assert s.loc[("one", "sd_c"), "mean"] > 0.8 + 0.5 * (absorbed - 0.8)
    # Panel SDs have no interval: coverage over no replicate is NaN, not 0.
    assert s.loc[("fe", "sd_c"), "n_interval"] == 0 and math.isnan(
        s.loc[("fe", "sd_c"), "coverage"]
    )


def test_sizes_can_vary_an_inner_level():
    res = run_study(tiny(), {"n": NESTED}, sizes=[2, 5], level="c", replicates=2, workers=1)
    assert res.sizes == (2, 5) and res.level == "c"
    assert set(res.summary["size"]) == {2, 5}
    with pytest.raises(DesignError, match="no level named 'teacher'"):
        run_study(tiny(), {"n": NESTED}, sizes=[2], level="teacher")


def test_failed_fits_are_counted_not_dropped(monkeypatch):
    real = study_mod._fit_mixed
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise np.linalg.LinAlgError("simulated breakdown")
        return real(*args)

    monkeypatch.setattr(study_mod, "_fit_mixed", flaky)
    res = run_study(tiny(), {"nested": NESTED}, sizes=[3], replicates=6, seed=1, workers=1)
    s = res.summary.set_index("parameter")
    assert (s["n_ok"] == 3).all() and (s["n_failed"] == 3).all()
    failed = res.replicates[res.replicates["status"] == "failed"]
    assert failed["error"].str.contains("simulated breakdown").all()
    assert failed["estimate"].isna().all()


def test_summary_statistics_by_hand():
    rows = []
    for rep, (est, lo, hi) in enumerate(
        [(1.0, 0.5, 1.5), (2.0, 1.6, 2.4), (3.0, math.nan, math.nan)]
    ):
        rows.append(
            (
                5,
                rep,
                "m",
                "sd_a",
                est,
                0.4,
                lo,
                hi,
                rep == 0,
                True,
                0.1 * (rep + 1),
                "",
                "",
                1,
                "ok",
            )
        )
    rows.append((5, 3, "m", "sd_a", math.nan, math.nan, math.nan, math.nan, False, False, 1.0, "", "boom", 1, "failed"))  # fmt: skip
    out = summarize(pd.DataFrame(rows, columns=list(REPLICATE_COLUMNS)), {"sd_a": 1.2}).iloc[0]
    assert out["mean"] == pytest.approx(2.0) and out["bias"] == pytest.approx(0.8)
    assert out["sd"] == pytest.approx(1.0)
    assert out["rmse"] == pytest.approx(math.sqrt((0.2**2 + 0.8**2 + 1.8**2) / 3))
    assert out["coverage"] == pytest.approx(0.5) and out["n_interval"] == 2
    assert (out["n_ok"], out["n_failed"], out["n_singular"]) == (3, 1, 1)
    assert out["median_seconds"] == pytest.approx(0.25)


def test_plots_are_written(tmp_path):
    from tiers.study.plots import plot_rmse

    res = run_study(tiny(), {"fe": "fe", "nested": NESTED}, sizes=[3, 4], replicates=3, seed=1,
                    workers=1)  # fmt: skip
    paths = res.plot(tmp_path, fmt="png")
    assert [p.name for p in paths] == ["sd_distributions.png", "coverage.png", "rmse.png"]
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    svg = plot_rmse(res, tmp_path / "rmse.svg")
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


# ------------------------------------------------------------------------------- bad input --


def _no_work(tmp_path):
    return not (tmp_path / "replicates.csv").exists()


def test_negative_sd_and_zero_units_are_refused_before_any_work(tmp_path):
    bad = tiny().to_dict()
    bad["levels"][1]["sd"] = -1.0
    with pytest.raises(DesignError, match="sd"):
        run_study(bad, None, sizes=[3], replicates=2, out=tmp_path)
    bad = tiny().to_dict()
    bad["levels"][2]["units"] = 0
    with pytest.raises(DesignError, match="units"):
        run_study(bad, None, sizes=[3], replicates=2, out=tmp_path)
    with pytest.raises(DesignError, match="units of 'a'"):
        run_study(tiny(), None, sizes=[0, 3], replicates=2, out=tmp_path)
    with pytest.raises(DesignError, match="replicates"):
        run_study(tiny(), None, sizes=[3], replicates=0, out=tmp_path)
    assert _no_work(tmp_path)


def test_too_many_rows_are_refused_until_the_limit_is_raised(tmp_path):
    with pytest.raises(DesignError, match="max_rows"):
        run_study(tiny(), None, sizes=[3, 1_000_000], replicates=2, out=tmp_path)
    with pytest.raises(DesignError, match="max_rows"):
        run_study(tiny(), None, sizes=[3], replicates=2, max_rows=100, out=tmp_path)
    assert _no_work(tmp_path)
    ok = run_study(tiny(), {"fe": "fe"}, sizes=[3], replicates=1, max_rows=108, workers=1)
    assert ok.summary["n_ok"].eq(1).all()


def test_formula_naming_a_missing_column_is_refused(tmp_path):
    with pytest.raises(FormulaError, match="'tutoring'.*not produced"):
        run_study(tiny(), {"m": "y tutoring || a:"}, sizes=[3], out=tmp_path)
    with pytest.raises(FormulaError, match="'school'"):
        run_study(tiny(), {"m": "y ~ x + (1 | school)"}, sizes=[3], out=tmp_path)
    with pytest.raises(FormulaError, match="'score'"):
        run_study(tiny(), {"m": "score ~ x + (1 | a)"}, sizes=[3], out=tmp_path)
    assert _no_work(tmp_path)


def test_unknown_estimators_are_refused():
    with pytest.raises(StudyError, match="unknown estimator 'gmm'"):
        parse_estimator("m=gmm")
    with pytest.raises(StudyError, match="unknown estimator"):
        run_study(tiny(), ["pooled"], sizes=[3])
    with pytest.raises(StudyError, match="not a level"):
        run_study(tiny(), {"fe": "fe:teacher"}, sizes=[3])
    with pytest.raises(StudyError, match="own name"):
        run_study(tiny(), ["fe=fe", "fe=re"], sizes=[3])


def test_an_output_folder_of_another_study_is_refused(tmp_path):
    run_study(tiny(), {"fe": "fe"}, sizes=[3], replicates=1, seed=1, workers=1, out=tmp_path)
    with pytest.raises(StudyError, match="another seed"):
        run_study(tiny(), {"fe": "fe"}, sizes=[3], replicates=1, seed=2, out=tmp_path)
    with pytest.raises(StudyError, match="defined differently"):
        run_study(tiny(), {"fe": "re"}, sizes=[3], replicates=1, seed=1, out=tmp_path)


# ------------------------------------------------------------------------------------- CLI --


def test_cli_study_writes_the_tables_and_plots(tmp_path):
    design = tmp_path / "design.json"
    design.write_text(json.dumps(tiny().to_dict()))
    out = tmp_path / "out"
    args = ["study", "--design", str(design), "--sizes", "3,4", "--replicates", "2", "--seed",
            "1", "--workers", "1", "--out", str(out), "--no-progress", "--estimator", "fe=fe",
            "--estimator", f"nested={NESTED}", "--plots", str(out / "plots"), "--parquet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert set(summary["estimator"]) == {"fe", "nested"} and set(summary["size"]) == {3, 4}
    assert len(pd.read_parquet(out / "replicates.parquet")) == len(
        pd.read_csv(out / "replicates.csv")
    )
    assert (out / "plots" / "coverage.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--estimator", "m=gmm"], "unknown estimator"),
        (["--estimator", "m=y ~ x + (1 | school)"], "'school'"),
        (["--sizes", "3,0"], "units"),
        (["--sizes", "3,x"], "--sizes"),
        (["--sizes", "1000000"], "max_rows"),
    ],
)
def test_cli_study_bad_input_exits_2(tmp_path, extra, message):
    design = tmp_path / "design.json"
    design.write_text(json.dumps(tiny().to_dict()))
    args = ["study", "--design", str(design), "--out", str(tmp_path / "o"), "--no-progress"]
    result = CliRunner().invoke(app, args + extra)
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert not (tmp_path / "o" / "replicates.csv").exists()


def test_cli_study_refuses_a_design_file_with_a_negative_sd(tmp_path):
    bad = tiny().to_dict()
    bad["levels"][0]["sd"] = -2.0
    design = tmp_path / "bad.json"
    design.write_text(json.dumps(bad))
    result = CliRunner().invoke(app, ["study", "--design", str(design), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "error:" in result.output and "sd" in result.output


def test_estimator_whose_factors_do_not_nest_is_refused_in_words() -> None:
    """A study fits nested mixed models: crossed grouping is a StudyError naming the estimator,
    not an AttributeError from inside a worker."""
    with pytest.raises(StudyError, match="cannot be fitted: the grouping factors"):
        run_study(
            tiny(), {"crossed": "y ~ x + (1 | a) + (1 | obs)"}, sizes=[3], replicates=2, seed=1
        )
