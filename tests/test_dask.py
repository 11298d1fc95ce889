"""Fits of Dask DataFrames (tiers.scale) equal the in-memory fit of the same rows; bad input is named.

One two-worker `LocalCluster` (processes) serves the module: every fit here runs its two passes
on real worker processes, with statistics pickled between them.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.tolerances import DISTRIBUTED_CRITERION_RTOL, DISTRIBUTED_ESTIMATE_TOL
from tiers.errors import DataError, NestingError, SingularFitWarning

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")
from dask import delayed  # noqa: E402

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    d = tiers.simulate(tiers.seed_design(districts=6), seed=11)
    rng = np.random.default_rng(3)
    d["region"] = rng.choice(["north", "south"], size=len(d))
    d.loc[d.index[:40], "region"] = "island"  # a level only in the first rows
    return d


def frames_of(parts: list[pd.DataFrame]):
    """A Dask DataFrame with exactly these partitions (empty ones included)."""
    meta = parts[0].iloc[:0]
    return dd.from_delayed([delayed(p) for p in parts], meta=meta, verify_meta=False)


def assert_same(res, ref) -> None:
    assert res.xnames == ref.xnames
    assert res.nobs == ref.nobs and res.n_dropped == ref.n_dropped
    assert abs(res.criterion - ref.criterion) <= DISTRIBUTED_CRITERION_RTOL * abs(ref.criterion)
    for a, b in [(res.beta, ref.beta), (res.theta, ref.theta), (res.sigma, ref.sigma)]:
        a, b = np.atleast_1d(a), np.atleast_1d(b)
        np.testing.assert_array_less(
            np.abs(a - b), DISTRIBUTED_ESTIMATE_TOL * np.maximum(1.0, np.abs(b)) + 1e-300
        )
    assert [lv.ngroups for lv in res.levels] == [lv.ngroups for lv in ref.levels]
    assert [lv.max_obs for lv in res.levels] == [lv.max_obs for lv in ref.levels]
    assert res.notes == ref.notes


def fit_quietly(formula: str, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return tiers.fit(formula, data, **kw)


@pytest.mark.parametrize("reml", [True, False])
def test_uneven_partitions_with_empty_ones_equal_in_memory(client, data, reml):
    # sizes 1, 0, most of the rows, 0, the rest: not aligned with any level
    cuts = [0, 1, 1, 7000, 7000, len(data)]
    parts = [data.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    ref = fit_quietly(FORMULA, data, reml=reml)
    res = fit_quietly(FORMULA, frames_of(parts), reml=reml)
    assert_same(res, ref)
    assert res.engine == "nested"


def test_partitions_aligned_with_districts_and_shuffled(client, data):
    ref = fit_quietly(FORMULA, data)
    aligned = [g for _, g in data.groupby("dist_id")]
    assert_same(fit_quietly(FORMULA, frames_of(aligned)), ref)
    shuffled = data.sample(frac=1.0, random_state=5)
    assert_same(fit_quietly(FORMULA, dd.from_pandas(shuffled, npartitions=5)), ref)


def test_level_in_one_partition_gives_the_in_memory_columns(client, data):
    f = "perform ~ tutoring + region + (1 | dist_id/school_id)"
    ref = fit_quietly(f, data)
    assert "region[T.north]" in ref.xnames  # 'island' is the reference level, in partition 0
    res = fit_quietly(f, dd.from_pandas(data, npartitions=4))
    assert_same(res, ref)


def test_missing_values_spread_over_partitions(client, data):
    d = data.copy()
    d.loc[d.index[[3, 5000, 9000]], "perform"] = np.nan
    d.loc[d.index[[10, 4000]], "tutoring"] = np.nan
    d.loc[d.index[[8000]], "teach_id"] = np.nan
    ref = fit_quietly(FORMULA, d)
    res = fit_quietly(FORMULA, dd.from_pandas(d, npartitions=3))
    assert ref.n_dropped == 6
    assert_same(res, ref)


def test_results_read_off_the_fit_equal_in_memory(client, data):
    f = "perform ~ tutoring + (1 | dist_id/school_id/teach_id)"
    ref = fit_quietly(f, data)
    res = fit_quietly(f, dd.from_pandas(data, npartitions=3))
    for name, a in ref.ranef().items():
        b = res.ranef()[name]
        assert (a.index == b.index).all()
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        res.variance_shares()["share"], ref.variance_shares()["share"], rtol=1e-8
    )
    np.testing.assert_allclose(res.satterthwaite()["df"], ref.satterthwaite()["df"], rtol=1e-6)
    a, b = ref.confint("profile"), res.confint("profile")
    np.testing.assert_allclose(b["lower"], a["lower"], rtol=1e-6, atol=1e-8)
    doc = res.to_dict()
    assert doc["nobs"] == ref.nobs and doc["engine"] == "nested"
    fields = ("marginal", "conditional", "var_fixed", "var_random", "var_residual")
    a, b = res.r2(), ref.r2()
    np.testing.assert_allclose(
        [getattr(a, k) for k in fields], [getattr(b, k) for k in fields], rtol=1e-8
    )
    assert str(res).splitlines()[:8] == str(ref).splitlines()[:8]


def test_what_needs_the_rows_refuses_clearly(client, data):
    res = fit_quietly(FORMULA, dd.from_pandas(data, npartitions=2))
    for call in (res.fitted, res.residuals, res.predict, lambda: res.confint("bootstrap")):
        with pytest.raises(DataError, match="needs the rows"):
            call()
    assert "not computed" in res.summary("lme4")
    new = res.predict(data.head(3), re="exclude")["mean"]  # new data is fine
    np.testing.assert_allclose(new, res.beta[0] + res.beta[1] * data.head(3)["tutoring"])


def test_lazy_files_and_the_scheduler_address(client, data, tmp_path: Path):
    from tiers.scale.cluster import dask_client

    for i, (_, g) in enumerate(data.groupby(data["dist_id"] % 3)):
        g.to_parquet(tmp_path / f"part{i}.parquet")
    ddf = tiers.read_data(str(tmp_path / "*.parquet"), lazy=True)
    assert ddf.npartitions == 3
    ref = fit_quietly(FORMULA, pd.concat([g for _, g in data.groupby(data["dist_id"] % 3)]))
    with dask_client(client.scheduler.address):
        res = fit_quietly(FORMULA, ddf)
    assert_same(res, ref)
    assert res.design.frame.source == "part0.parquet ... part2.parquet (3 files)"


def test_cli_fit_on_a_running_scheduler(client, data, tmp_path: Path):
    from typer.testing import CliRunner

    from tiers.cli.main import app

    for i in range(2):
        data.iloc[i * 4800 : (i + 1) * 4800].to_parquet(tmp_path / f"p{i}.parquet")
    stata = "perform tutoring || dist_id: || school_id: || teach_id:, mle"
    args = ["fit", stata, str(tmp_path / "*.parquet"), "--dask", "--json", str(tmp_path / "r.json")]
    out = CliRunner().invoke(app, [*args, "--scheduler", client.scheduler.address])
    assert out.exit_code == 0, out.output
    assert "Mixed-effects ML regression" in out.output
    doc = json.loads((tmp_path / "r.json").read_text())
    ref = fit_quietly(stata, data).to_dict()
    assert doc["nobs"] == ref["nobs"] and doc["method"] == ref["method"]
    assert abs(doc["loglik"] - ref["loglik"]) <= DISTRIBUTED_CRITERION_RTOL * abs(ref["loglik"])
    bad = CliRunner().invoke(app, ["fit", FORMULA, str(tmp_path / "*.parquet"), "--workers", "2"])
    assert bad.exit_code != 0 and "--dask" in bad.output


def test_unreachable_scheduler_fails_within_seconds():
    from tiers.scale.cluster import dask_client

    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot reach the Dask scheduler"):
        with dask_client("tcp://127.0.0.1:9", connect_seconds=2):
            pass
    assert time.perf_counter() - start < 15


# ----------------------------------------------------------------------------- bad input --


def test_glob_matching_nothing(tmp_path: Path):
    with pytest.raises(DataError, match="no data files match"):
        tiers.read_data(str(tmp_path / "*.parquet"), lazy=True)


def test_parquet_schemas_that_disagree(data, tmp_path: Path):
    data.iloc[:100].to_parquet(tmp_path / "a.parquet")
    data.iloc[100:200].drop(columns="tutoring").to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"'b.parquet' has no column 'tutoring'"):
        tiers.read_data(str(tmp_path / "*.parquet"), lazy=True)
    data.iloc[100:200].astype({"school_id": str}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"column 'school_id' .* 'b.parquet'"):
        tiers.read_data(str(tmp_path / "*.parquet"), lazy=True)


def test_id_float_in_one_csv_and_text_in_another(client, data, tmp_path: Path):
    a = data.iloc[:4800].copy()
    a.loc[a.index[0], "teach_id"] = np.nan  # float ids
    b = data.iloc[4800:].copy()
    b["teach_id"] = "t" + b["teach_id"].astype(str)
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    ddf = tiers.read_data(str(tmp_path / "*.csv"), lazy=True)
    with pytest.raises(
        DataError, match=r"column .teach_id. holds text in b.csv but numbers in a.csv"
    ):
        tiers.fit(FORMULA, ddf)


def test_grouping_not_nested_across_files(client, data, tmp_path: Path):
    # teacher ids unique overall; one teacher also appears under another school in another file
    d = data.copy()
    d["teacher"] = d["dist_id"] * 10_000 + d["school_id"] * 100 + d["teach_id"]
    a, b = d.iloc[:4800].copy(), d.iloc[4800:].copy()
    b.loc[b.index[:5], "teacher"] = a["teacher"].iloc[0]
    a.to_parquet(tmp_path / "a.parquet")
    b.to_parquet(tmp_path / "b.parquet")
    ddf = tiers.read_data(str(tmp_path / "*.parquet"), lazy=True)
    f = "perform ~ tutoring + (1 | dist_id/school_id/teacher)"
    with pytest.raises(NestingError, match=r"teacher .*a\.parquet, b\.parquet"):
        tiers.fit(f, ddf)


@pytest.mark.parametrize(
    "formula",
    [
        "perform ~ tutoring + x2 + (1 + x2 | dist_id/school_id)",
        "perform ~ tutoring + (1 | dist_id) + (1 + tutoring | dist_id:school_id)"
        " + (1 | dist_id:school_id:teach_id)",
        "perform ~ tutoring + (1 | dist_id) + (0 + x2 | dist_id) + (1 | dist_id:school_id)",
    ],
)
def test_nested_slopes_from_leaf_cross_products_equal_in_memory(client, data, formula):
    d = data.assign(x2=np.random.default_rng(1).normal(size=len(data)) + 50.0)
    ref = fit_quietly(formula, d)
    cuts = [0, 10, 10, 6000, len(d)]
    parts = [d.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    res = fit_quietly(formula, frames_of(parts))
    assert res.engine == ref.engine == "tree"
    assert_same(res, ref)
    assert res.design.term_infos == ref.design.term_infos
    a, b = res.r2(), ref.r2()
    np.testing.assert_allclose([a.marginal, a.conditional], [b.marginal, b.conditional], rtol=1e-8)
    with warnings.catch_warnings():
        # pandas 3 deprecates the join ranef() uses for two terms on one factor (not ours)
        warnings.simplefilter("ignore", DeprecationWarning)
        mine, theirs = res.ranef(), ref.ranef()
    for name, a in theirs.items():
        np.testing.assert_allclose(mine[name].to_numpy(), a.to_numpy(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "formula",
    [
        "perform ~ tutoring + (1 | dist_id) + (1 | semester) + (1 | rater)",
        "perform ~ tutoring + (1 | dist_id/school_id) + (1 | rater)",
        "perform ~ tutoring + x2 + (1 | school_id) + (1 + x2 | rater)",
    ],
)
def test_crossed_factors_from_cell_cross_products_equal_in_memory(client, data, formula):
    """Per cell (a level of every factor) cross-products give the in-memory criterion.

    The optimum is the same function's: the in-memory criterion at the Dask theta equals its own
    optimum. With slopes the optimiser is derivative-free and stops within its tolerance on a
    flat surface, so estimates are compared to `THETA_ATOL` there.
    """
    from tests.tolerances import THETA_ATOL

    rng = np.random.default_rng(1)
    d = data.assign(x2=rng.normal(size=len(data)) + 50.0, rater=rng.integers(0, 25, len(data)))
    ref = fit_quietly(formula, d)
    res = fit_quietly(formula, frames_of([d.iloc[:100], d.iloc[100:100], d.iloc[100:]]))
    assert res.engine == ref.engine == "crossed"
    assert abs(res.criterion - ref.criterion) <= DISTRIBUTED_CRITERION_RTOL * abs(ref.criterion)
    at_theirs = ref.devfun.deviance(np.asarray(res.theta))
    assert abs(at_theirs - ref.criterion) <= DISTRIBUTED_CRITERION_RTOL * abs(ref.criterion)
    tol = THETA_ATOL if "x2 |" in formula else 1e-6
    np.testing.assert_allclose(res.theta, ref.theta, atol=tol)
    np.testing.assert_allclose(res.beta, ref.beta, atol=tol * 10)
    assert [lv.max_obs for lv in res.levels] == [lv.max_obs for lv in ref.levels]
    assert str(res).splitlines()[:8] == str(ref).splitlines()[:8]


def test_interactions_and_functions_match_in_memory(client, data):
    f = "perform ~ tutoring * C(semester) + np.log(student_id) + (1 | dist_id/school_id)"
    ref = fit_quietly(f, data)
    assert_same(fit_quietly(f, dd.from_pandas(data, npartitions=3)), ref)


def _slow_part(frame: pd.DataFrame) -> pd.DataFrame:
    time.sleep(0.25)
    return frame


def test_a_worker_killed_during_the_reduction_changes_nothing(client, data):
    """Dask recomputes what a lost worker held; the statistics and the fit are unchanged."""
    import os
    import signal
    import threading

    ref = fit_quietly(FORMULA, data)
    parts = [data.iloc[i * 960 : (i + 1) * 960] for i in range(10)]
    ddf = dd.from_map(_slow_part, parts, meta=data.iloc[:0], enforce_metadata=False)
    pids = list(client.run(os.getpid).values())
    out: dict[str, object] = {}
    runner = threading.Thread(target=lambda: out.update(res=fit_quietly(FORMULA, ddf)))
    runner.start()
    time.sleep(1.0)  # pass 1 (10 x 0.25 s on two workers) is under way
    os.kill(pids[0], signal.SIGKILL)
    runner.join(timeout=120)
    assert "res" in out
    assert_same(out["res"], ref)
    assert pids[0] not in client.run(os.getpid).values()  # the worker was really lost
    client.wait_for_workers(2, timeout=60)


def test_the_staged_api_takes_a_dask_frame(client, data):
    ref = fit_quietly(FORMULA, data)
    design = tiers.prepare(FORMULA, dd.from_pandas(data, npartitions=2))
    assert design.frame.nobs == len(data) and design.engine == "nested"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        opt = tiers.optimize_theta(tiers.deviance_function(design))
        res = tiers.assemble(design, opt)
    assert_same(res, ref)
    with pytest.raises(DataError, match="needs the rows"):
        res.fitted()


def test_the_in_memory_checks_run_on_the_ranges(client, data):
    ddf = dd.from_pandas(data, npartitions=2)
    with pytest.raises(DataError, match="is also a predictor"):
        tiers.fit("perform ~ perform + (1 | dist_id)", ddf)
    const = data.assign(perform=3.0)
    with pytest.raises(DataError, match="constant"):
        tiers.fit("perform ~ tutoring + (1 | dist_id)", dd.from_pandas(const, npartitions=2))


def test_large_offsets_lose_no_precision(client, data):
    """Raw sums of y^2 at 1e8 + noise would lose every digit of the noise; co-moments do not."""
    d = data.assign(perform=data["perform"] + 1e8, tutoring=data["tutoring"] + 1e6)
    ref = fit_quietly(FORMULA, d)
    parts = [d.iloc[a:b] for a, b in [(0, 100), (100, 5000), (5000, len(d))]]
    assert_same(fit_quietly(FORMULA, frames_of(parts)), ref)


def assert_close_docs(a, b, rtol: float) -> None:
    """Two JSON documents equal: numbers to ``rtol`` (relative to max(1, |value|)), the rest exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_close_docs(a[k], b[k], rtol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close_docs(x, y, rtol)
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= rtol * max(1.0, abs(a)), (a, b)
    else:
        assert a == b


@pytest.mark.parametrize("vce", ["conventional", "cluster"])
@pytest.mark.parametrize("estimator", ["fixed_effects", "random_effects"])
@pytest.mark.parametrize("group", ["student_id", "teach_id"])
def test_xtreg_from_group_sums_equals_in_memory(client, data, estimator, group, vce):
    from tests.tolerances import CLOSED_FORM_RTOL
    from tiers.panel import estimators
    from tiers.scale import panel

    d = data.assign(
        inv=data["student_id"] % 7,  # time-invariant within students
        x2=np.random.default_rng(1).normal(size=len(data)),
    ).drop(index=data.index[[5, 77, 300]])  # unbalanced
    x = ["tutoring", "x2", "inv"]
    if vce == "cluster":  # missing values in the last pass's columns, dropped as in memory
        d.loc[d.index[[10, 11, 400]], "x2"] = np.nan
    ref = getattr(estimators, estimator)(d, "perform", x, group, vce=vce)
    res = getattr(panel, estimator)(dd.from_pandas(d, npartitions=3), "perform", x, group, vce=vce)
    assert_close_docs(res.to_dict(), ref.to_dict(), CLOSED_FORM_RTOL)
    if ref.theta_i is not None:
        assert (res.theta_i.index == ref.theta_i.index).all()
        np.testing.assert_allclose(res.theta_i, ref.theta_i, rtol=CLOSED_FORM_RTOL)
    assert res.summary() == ref.summary()


def test_xtreg_vce_other_than_conventional_or_cluster_is_refused_on_dask(client, data):
    from tiers.scale.panel import fixed_effects

    with pytest.raises(ValueError, match="'conventional' or 'cluster'"):
        fixed_effects(
            dd.from_pandas(data, npartitions=2), "perform", ["tutoring"], "teach_id", vce="robust"
        )


@pytest.mark.parametrize("estimators", [["--fe", "--re"], ["--re", "--vce", "cluster"]])
def test_cli_xtreg_on_dask_with_hausman(client, data, tmp_path: Path, estimators):
    from typer.testing import CliRunner

    from tiers.cli.main import app

    for i in range(2):
        data.iloc[i * 4800 : (i + 1) * 4800].to_parquet(tmp_path / f"p{i}.parquet")
    data.to_csv(tmp_path / "all.csv", index=False)
    common = ["xtreg", "perform", "tutoring"]
    opts = ["--id", "teach_id", *estimators]
    lazy = CliRunner().invoke(
        app,
        [
            *common,
            str(tmp_path / "*.parquet"),
            *opts,
            "--dask",
            "--scheduler",
            client.scheduler.address,
        ],
    )
    assert lazy.exit_code == 0, lazy.output
    whole = CliRunner().invoke(app, [*common, str(tmp_path / "all.csv"), *opts])
    assert whole.exit_code == 0, whole.output
    assert lazy.output == whole.output


def test_residual_structures_weights_and_vce_are_refused(client, data):
    ddf = dd.from_pandas(data, npartitions=2)
    with pytest.raises(DataError, match="residuals"):
        tiers.fit("perform tutoring || dist_id: || student_id:, residuals(ar 1, t(semester))", ddf)
    with pytest.raises(ValueError, match="weights="):
        tiers.fit("perform ~ tutoring + (1 | dist_id)", ddf, weights="tutoring")


def test_new_data_and_f_tests_code_the_levels_of_the_whole_data(client, data):
    f = "perform ~ tutoring * region + np.log(student_id) + (1 | dist_id/school_id)"
    ref = fit_quietly(f, data)
    res = fit_quietly(f, dd.from_pandas(data, npartitions=4))
    new = data.sample(50, random_state=2)
    np.testing.assert_allclose(
        res.predict(new)["mean"], ref.predict(new)["mean"], rtol=DISTRIBUTED_ESTIMATE_TOL, atol=1e-8
    )
    a, b = res.anova(), ref.anova()
    assert a.index.tolist() == b.index.tolist()
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6)


def test_cli_dask_refuses_what_it_cannot_do(tmp_path: Path):
    from typer.testing import CliRunner

    from tiers.cli.main import app

    glob = str(tmp_path / "*.parquet")
    for extra, words in [
        (["--pool"], "takes no --pool or --plots"),
        (["--weights", "tutoring"], "takes no --residuals, --weights or --vce"),
    ]:
        out = CliRunner().invoke(app, ["fit", FORMULA, glob, "--dask", *extra])
        assert out.exit_code != 0 and words in out.output
