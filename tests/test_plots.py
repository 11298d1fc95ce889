"""Figures of one fit: the numbers behind them (profile zeta against lme4's ``profile``, per-group
OLS against a per-group least-squares fit) and what each figure draws; the study figures' fixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.interpolate import CubicSpline
from typer.testing import CliRunner

import tiers
import tiers.plot
from tests.conftest import fit_reference
from tests.tolerances import ZETA_ATOL, ZETA_SPLINE_ATOL
from tiers.cli.main import app
from tiers.errors import OutputError
from tiers.inference.profile import Profiler
from tiers.inference.shrinkage import group_ols
from tiers.inference.zeta import zeta_profiles
from tiers.variance.scale import SdCor

DATA = Path(__file__).parent / "data" / "plots"


@pytest.fixture(scope="module")
def sleep_ml():
    return fit_reference("sleepstudy", "corr_ML")[0]


@pytest.fixture(scope="module")
def sleep_reml():
    return fit_reference("sleepstudy", "corr_REML")[0]


@pytest.fixture(scope="module")
def nested(seed_small):
    return tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", seed_small)


def _lme4_zeta() -> dict[str, np.ndarray]:
    ref = json.loads((DATA / "zeta_sleepstudy.json").read_text())
    out: dict[str, list] = {}
    for r in ref["rows"]:
        out.setdefault(r["parameter"], []).append((r["value"], r["zeta"]))
    return {k: np.array(sorted(v)) for k, v in out.items()}


# ------------------------------------------------------------------------- profile zeta --


def test_zeta_at_lme4s_values_matches_lme4s_profile(sleep_ml):
    ref = _lme4_zeta()
    sc = SdCor.from_terms(sleep_ml.terms)
    pr = Profiler(sleep_ml.devfun, sc, np.asarray(sleep_ml.theta), sleep_ml.sigma, sleep_ml.xnames)
    assert set(ref) == set(sc.names)
    checked = 0
    for i, name in enumerate(sc.names):
        for v, z_ref in ref[name]:
            if abs(z_ref) > 4.0 or abs(v - pr.p_hat[i]) < 1e-3 * abs(pr.p_hat[i]):
                continue  # lme4's outermost steps stop short; at the estimate the sign is moot
            z = np.sign(v - pr.p_hat[i]) * np.sqrt(max(pr.varpar_deviance(i, v, fresh=True), 0))
            assert z == pytest.approx(z_ref, abs=ZETA_ATOL), (name, v)
            checked += 1
    assert checked >= 50


def test_zeta_grid_lies_on_lme4s_profile_and_spans_the_99_percent_interval(sleep_ml):
    ref = _lme4_zeta()
    z = zeta_profiles(sleep_ml)
    assert z.attrs["criterion"] == "ML"
    assert list(dict.fromkeys(z["parameter"])) == list(SdCor.from_terms(sleep_ml.terms).names)
    for name, sub in z.groupby("parameter", sort=False):
        v, zz = ref[name].T
        keep = np.r_[True, np.diff(v) > 1e-6]
        spline = CubicSpline(v[keep], zz[keep])
        np.testing.assert_allclose(spline(sub["value"]), sub["zeta"], atol=ZETA_SPLINE_ATOL)
        assert np.all(np.diff(sub["zeta"]) > 0)  # increasing: a profile through one minimum
        assert (sub["zeta"] == 0).sum() == 1
        # both sides reach past the 99% critical value, or the end of the range (cor: 1)
        assert sub["zeta"].min() <= -2.576
        assert sub["zeta"].max() >= 2.576 or sub["value"].max() == 1.0


def test_zeta_refuses_bad_options(sleep_ml):
    with pytest.raises(ValueError, match="zeta_max"):
        zeta_profiles(sleep_ml, zeta_max=-1)
    with pytest.raises(ValueError, match="points"):
        zeta_profiles(sleep_ml, points=1)


# --------------------------------------------------------------------------- shrinkage --


def test_group_ols_is_each_subjects_least_squares_fit(sleep_reml):
    frame = sleep_reml.design.frame.data
    table = group_ols(sleep_reml)["Subject"]
    beta = sleep_reml.fixef
    for label, rows in frame.groupby(frame["Subject"].astype(str)):
        X = np.column_stack([np.ones(len(rows)), rows["Days"]])
        coef = np.linalg.lstsq(X, rows["Reaction"].to_numpy(), rcond=None)[0]
        got = table.loc[label, ["(Intercept)_ols", "Days_ols"]].to_numpy(float)
        # the per-group fit of y - X beta on Z: lmList's coefficients less the fixed effects
        np.testing.assert_allclose(got, coef - beta.to_numpy(), rtol=1e-9, atol=1e-9)
        assert table.loc[label, "n"] == len(rows)
    modes = sleep_reml.ranef(cond_var=False)["Subject"]
    np.testing.assert_array_equal(table[["(Intercept)", "Days"]].to_numpy(), modes.to_numpy())
    # shrinkage: the modes are pulled towards zero relative to the groups' own fits
    assert np.sum(table["(Intercept)"] ** 2) < np.sum(table["(Intercept)_ols"] ** 2)


def test_group_ols_of_a_nested_level_holds_the_other_levels_at_their_modes(nested):
    tables = group_ols(nested)
    assert list(tables) == [lv.name for lv in nested.levels]
    inner = tables[nested.levels[-1].name]
    # a group's intercept OLS is the mean of its partial residuals; its mode is that mean shrunk
    ratio = inner["(Intercept)"] / inner["(Intercept)_ols"]
    assert ((ratio > 0) & (ratio < 1)).all()


# ----------------------------------------------------------------------------- figures --


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.axison]


def test_caterpillar_sorts_each_factor_and_shows_a_subset_of_many_groups(nested):
    fig = tiers.plot.caterpillar(nested, max_groups=40)
    names = [lv.name for lv in nested.levels]
    assert _titles(fig) == [f"{n}: (Intercept)" for n in names]
    frames = nested.ranef()
    for ax, name in zip(fig.axes, names, strict=False):
        labels = [t.get_text() for t in ax.get_yticklabels()]
        modes = frames[name]["(Intercept)"]
        shown = modes.loc[labels].to_numpy()
        assert np.all(np.diff(shown) >= 0)  # sorted by mode, bottom to top
        assert len(labels) == min(len(modes), 40)
        if len(modes) > 40:  # both extremes kept, and the subset said
            assert shown[0] == modes.min() and shown[-1] == modes.max()
            assert f"40 of {len(modes):,} groups" in ax.get_xlabel()


def test_caterpillar_of_slopes_shares_one_order_and_refuses_bad_options(sleep_reml):
    fig = sleep_reml.plot("caterpillar")
    assert _titles(fig) == ["Subject: (Intercept)", "Subject: Days"]
    a, b = fig.axes[:2]
    assert [t.get_text() for t in a.get_yticklabels()] == list(
        sleep_reml.caterpillar("Subject")["level"]
    )
    assert len(b.get_yticks()) == len(a.get_yticks())
    with pytest.raises(ValueError, match="group must be one of Subject"):
        tiers.plot.caterpillar(sleep_reml, "School")
    with pytest.raises(ValueError, match="max_groups"):
        tiers.plot.caterpillar(sleep_reml, max_groups=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        sleep_reml.plot("pie")


def test_every_figure_draws_its_numbers(nested, sleep_reml):
    qq = tiers.plot.qq_residuals(sleep_reml)
    (ax,) = qq.axes
    pts = ax.lines[0].get_ydata()
    scaled = np.sort(sleep_reml.residuals().to_numpy() / sleep_reml.sigma)
    np.testing.assert_allclose(pts, scaled)
    rf = tiers.plot.residuals_fitted(sleep_reml)
    np.testing.assert_allclose(
        np.sort(rf.axes[0].lines[0].get_xdata()), np.sort(sleep_reml.fitted().to_numpy())
    )
    sh = tiers.plot.shares(nested)
    bars = [p.get_height() for p in sh.axes[0].patches]
    np.testing.assert_allclose(bars, nested.variance_shares()["share"])
    assert _titles(tiers.plot.qq_ranef(sleep_reml)) == ["Subject: (Intercept)", "Subject: Days"]
    assert len(_titles(tiers.plot.shrinkage(sleep_reml))) == 2
    with pytest.raises(ValueError, match="random-intercept models"):
        tiers.plot.shares(sleep_reml)


def test_residuals_of_many_rows_are_binned(nested):
    fig = tiers.plot.residuals_fitted(nested)
    assert fig.axes[0].collections  # hexbin: a PolyCollection, not 8,000 markers
    assert "rows (log scale)" in fig.axes[1].get_ylabel()


def test_write_plots_writes_each_figure_whole(sleep_reml, tmp_path):
    paths, notes = tiers.plot.write_plots(sleep_reml, tmp_path / "new" / "plots")
    names = [p.name for p in paths]
    assert names == [f"{k}.png" for k in tiers.plot.KINDS if k != "shares"]
    assert any("no variance-shares figure" in n for n in notes)
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000 for p in paths)
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".")]
    svg = sleep_reml.write_plots(tmp_path / "svg", fmt="svg")
    assert "<svg" in svg[0].read_text()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        tiers.plot.write_plots(sleep_reml, tmp_path / "file")
    with pytest.raises(ValueError, match="fmt must be one of png, svg"):
        tiers.plot.write_plots(sleep_reml, tmp_path, fmt="jpg")  # type: ignore[arg-type]


def test_cli_fit_plots(tmp_path):
    data = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "sleepstudy.csv"
    runner = CliRunner()
    out = tmp_path / "plots"
    res = runner.invoke(
        app, ["fit", "Reaction ~ Days + (Days | Subject)", str(data), "--plots", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{k}.png" for k in tiers.plot.KINDS if k != "shares"
    )
    assert "no variance-shares figure" in res.output
    (tmp_path / "file").write_text("x")
    bad = runner.invoke(app, ["fit", "Reaction ~ Days + (Days | Subject)", str(data), "--plots",
                              str(tmp_path / "file" / "plots")])  # fmt: skip
    assert bad.exit_code == 2 and "is a file" in bad.output
    assert "Linear mixed model" not in bad.output  # refused before the fit


# ------------------------------------------------------------------------- study figures --


def test_log_ticks_are_readable_on_short_ranges():
    from tiers.study.plots import log_ticks

    for lo, hi in [(0.041, 0.0799), (0.13, 0.21), (0.4, 1.05), (0.001, 10.0), (0.45, 0.75)]:
        ticks = log_ticks(lo, hi)
        assert len(ticks) >= 3 and all(lo * 0.999 <= t <= hi * 1.001 for t in ticks)
        assert all(len(f"{t:g}".replace("0.", "").lstrip("0")) <= 3 for t in ticks)


def test_study_sd_figure_drops_empty_panels_and_draws_truth_only_where_targeted():
    from tests.test_study import NESTED, tiny
    from tiers.study.plots import sd_figure

    res = tiers.run_study(tiny(), {"fe": "fe", "one": "y x || c:", "nested": NESTED},
                          sizes=[3, 4], replicates=3, seed=1, workers=1)  # fmt: skip
    fig = sd_figure(res)
    shown = {ax.get_title(): ax for ax in fig.axes if ax.axison}
    assert "not estimated" not in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert set(shown) == {
        "fe: sd_c", "fe: sd_residual", "one: sd_c", "one: sd_residual",
        "nested: sd_a", "nested: sd_b", "nested: sd_c", "nested: sd_residual",
    }  # fmt: skip

    def truth_line(title: str) -> bool:
        return any(line.get_linestyle() == "--" for line in shown[title].lines)

    # the one-level model's sd_c absorbs a and b: another quantity, no truth line
    assert not truth_line("one: sd_c") and not truth_line("fe: sd_c")
    assert truth_line("one: sd_residual") and truth_line("fe: sd_residual")
    assert all(truth_line(f"nested: sd_{p}") for p in ("a", "b", "c", "residual"))


def test_caterpillar_without_conditional_sds_says_why(sleep_reml, monkeypatch):
    import tiers.report.plots.ranef as ranef_mod

    real = ranef_mod.ranef_frames

    def no_sds(res, *, cond_var=True):
        if cond_var:  # as a crossed design with more than DENSE_LIMIT random effects answers
            raise ValueError(
                "conditional variances of this design need the inverse of a 9,000 x 9,000 "
                "matrix (more than 5,000 random effects in crossed terms); ask for "
                "ranef(cond_var=False)"
            )
        return real(res, cond_var=False)

    monkeypatch.setattr(ranef_mod, "ranef_frames", no_sds)
    fig = tiers.plot.caterpillar(sleep_reml)
    assert fig._suptitle.get_text().startswith("no intervals: conditional variances")
    assert not fig.axes[0].collections  # points, no error bars
    assert fig.axes[0].get_xlabel() == "conditional mode"
