"""The HTML report of a fit and of a study: valid, self-contained, and showing the fit's numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers
from tests.conftest import REFERENCE, fit_reference
from tests.htmlcheck import check_html
from tiers.cli.main import app
from tiers.errors import OutputError
from tiers.report.document import gather, render

SLEEP = REFERENCE / "sleepstudy.csv"
FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_reml():
    return fit_reference("sleepstudy", "corr_REML")[0]


@pytest.fixture(scope="module")
def nested_with_missing(seed_small):
    data = seed_small.copy()
    data.loc[data.index[:7], "perform"] = np.nan
    data.loc[data.index[7:10], "tutoring"] = np.nan
    return tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", data)


def test_fit_report_is_valid_self_contained_html_with_the_numbers(sleep_reml, tmp_path):
    path = sleep_reml.report(tmp_path / "r.html")
    html = path.read_text()
    page = check_html(html)
    text = " ".join(page.text)
    # the model in both syntaxes
    assert "lmer(Reaction ~ Days + (Days | Subject), REML = TRUE)" in text
    assert "mixed Reaction Days || Subject: Days, covariance(unstructured), reml" in text
    # the fixed effects, the variance components, Satterthwaite's df, the certificate
    for name, r in sleep_reml.coef_table().iterrows():
        assert f"{r.estimate:.6g}" in text and f"{r.std_error:.6g}" in text, name
    df = sleep_reml.satterthwaite()["df"]
    assert f"{df['Days']:.1f}" in text
    for sd in sleep_reml.sd_inference.sd:
        assert f"{sd:.6g}" in text
    assert "Convergence certificate" in text and sleep_reml.opt.message in text
    assert f"{sleep_reml.opt.n_evaluations:,}" in text
    # rows used; no shares for a slopes model, said in the figures' notes
    assert "Rows used" in text and "180" in text
    assert "no variance-shares figure" in text
    # every figure embedded, none from the network
    assert page.tags["figure"] == len(page.images) == 6
    assert "http://" not in html and "https://" not in html


def test_fit_report_of_a_nested_model_has_shares_data_and_diagnostics(nested_with_missing):
    res = nested_with_missing
    html = render(gather(res, plots=False))
    page = check_html(html)
    text = " ".join(page.text)
    assert page.tags.get("img", 0) == 0 and page.tags["table"] >= 8
    assert "Variance shares and intraclass correlations" in text
    shares = res.variance_shares()
    for v in shares["share"]:
        assert f"{v:.4f}" in text
    assert f"{shares['icc_lower'].iloc[1]:.4f}" in text
    # 10 rows dropped: 7 for the response, 3 for the covariate
    assert res.n_dropped == 10
    assert "Rows dropped" in text and "missing perform" in text and "missing tutoring" in text
    for note in res.design.warnings:
        assert note in text
    assert (
        "mixed perform tutoring || dist_id: || school_id: || teach_id: || student_id:, reml" in text
    )


def test_report_refuses_a_path_in_a_missing_folder_before_any_work(sleep_reml, tmp_path):
    with pytest.raises(OutputError, match="does not exist; create it first"):
        sleep_reml.report(tmp_path / "missing" / "r.html")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(OutputError, match="is a folder"):
        sleep_reml.report(tmp_path)
    with pytest.raises(TypeError, match="plots must be True or False"):
        sleep_reml.report(tmp_path / "r.html", plots="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        sleep_reml.report(tmp_path / "r.html", level=95)


def test_cli_report(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", FORMULA, str(SLEEP), "-o", str(out), "--no-plots", "--ml"])
    assert res.exit_code == 0, res.output
    assert f"to {out}" in res.output
    page = check_html(out.read_text())
    assert "REML = FALSE" in " ".join(page.text) and page.tags.get("img", 0) == 0
    bad = runner.invoke(app, ["report", FORMULA, str(SLEEP), "-o", str(tmp_path / "no" / "r.html")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    assert not (tmp_path / "no").exists()
    bad = runner.invoke(app, ["report", "Reaction ~ Days + (1 | Nope)", str(SLEEP), "-o", str(out)])
    assert bad.exit_code == 2 and "Nope" in bad.output


def test_crossed_and_nested_models_get_their_stata_spelling():
    from tiers.report.document import _stata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pen = pd.read_csv(REFERENCE / "penicillin.csv")
        crossed = tiers.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", pen, reml=False)
        pastes = pd.read_csv(REFERENCE / "pastes.csv")
        nested = tiers.fit("strength ~ 1 + (1 | batch/cask)", pastes)
        written = tiers.fit("strength || batch: || cask:, mle", pastes)
        sleep = pd.read_csv(REFERENCE / "sleepstudy.csv").assign(half=lambda d: d["Days"] % 3)
        slopes = tiers.fit("Reaction ~ Days + (Days | Subject) + (1 | half)", sleep)
    # Stata reads || a: || b: as b nested in a: crossed factors are _all: R. terms
    assert _stata(crossed) == "mixed diameter || _all: R.plate || _all: R.sample, mle"
    assert _stata(nested) == "mixed strength || batch: || cask:, reml"
    assert _stata(written) == "mixed strength || batch: || cask:, mle"
    assert not slopes.nested and _stata(slopes).startswith("no direct spelling in Stata's mixed")
    html = render(gather(crossed, plots=False))
    assert (
        "sharing this factor&#x27;s level only" in html
        or "sharing this factor's level only" in html
    )


def test_cli_study_report(tmp_path):
    from tests.test_study import NESTED

    design = tmp_path / "d.json"
    design.write_text(
        '{"levels": [{"name": "a", "units": 3, "sd": 1.5}, {"name": "b", "units": 3, "sd": 1.0}, '
        '{"name": "c", "units": 4, "sd": 0.8}], "obs_per_unit": 3, "residual_sd": 1.0, '
        '"covariates": [{"name": "x", "kind": "bernoulli", "coef": 0.5, "p": 0.4}], "response": "y"}'
    )
    runner = CliRunner()
    args = ["study", "--design", str(design), "--sizes", "3", "--replicates", "2", "--workers",
            "1", "--estimator", f"nested={NESTED}", "--out", str(tmp_path / "out")]  # fmt: skip
    bad = runner.invoke(app, [*args, "--report", str(tmp_path / "no" / "s.html")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    assert not (tmp_path / "out").exists()  # refused before any work
    ok = runner.invoke(app, [*args, "--report", str(tmp_path / "s.html")])
    assert ok.exit_code == 0, ok.output
    assert check_html((tmp_path / "s.html").read_text()).tags["img"] == 3


def test_study_report(tmp_path):
    from tests.test_study import NESTED, tiny

    res = tiers.run_study(tiny(), {"fe": "fe", "nested": NESTED}, sizes=[3, 4], replicates=3,
                          seed=1, workers=1)  # fmt: skip
    html = res.report(tmp_path / "study.html").read_text()
    page = check_html(html)
    text = " ".join(page.text)
    assert len(page.images) == 3 and page.tags["table"] == 4
    s = res.summary
    row = s[(s["estimator"] == "nested") & (s["parameter"] == "sd_a")].iloc[0]
    assert f"{row['rmse']:.4g}" in text and NESTED in text
    with pytest.raises(OutputError, match="does not exist"):
        res.report(tmp_path / "missing" / "study.html")


def test_report_of_a_singular_fit_says_so():
    data = pd.read_csv(REFERENCE / "dyestuff2.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tiers.fit("Yield ~ 1 + (1 | Batch)", data)
    cells = check_html(render(gather(res, plots=False))).text
    assert res.is_singular
    assert cells[cells.index("theta on its bound (singular)") + 1] == "0"
    assert res.warnings and all(w in " ".join(cells) for w in res.warnings)


def test_render_takes_numbers_only(sleep_reml, monkeypatch):
    rep = gather(sleep_reml, plots=False)
    # rendering computes nothing: the inference functions are not called again
    import tiers.inference.satterthwaite as satt

    monkeypatch.setattr(satt.Satterthwaite, "from_result", None)
    assert "Fixed effects" in render(rep, footer="")


@pytest.mark.parametrize(
    ("extra", "option"),
    [(["fit", FORMULA, str(SLEEP), "--plots", "PLOTS"], "--plots"),
     (["report", FORMULA, str(SLEEP), "-o", "R"], "tiers report (without --no-plots)")],
)  # fmt: skip
def test_figures_without_matplotlib_are_refused_before_the_fit(
    tmp_path, monkeypatch, extra, option
):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    args = [str(tmp_path / a) if a in ("PLOTS", "R") else a for a in extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and f"{option} needs matplotlib" in res.output
    assert "Linear mixed model" not in res.output and not list(tmp_path.iterdir())
