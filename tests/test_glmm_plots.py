"""A GLMM's residuals (against lme4) and figures (``tiers fit --family ... --plots``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers
from tests.conftest import REFERENCE
from tiers.cli.main import app
from tiers.errors import DataError

pytest.importorskip("matplotlib")

from tiers.report.plots import figure_of, write_plots  # noqa: E402
from tiers.report.plots.write import available  # noqa: E402

DATA = Path(__file__).parent / "data" / "glmm"
RESID = {f["label"]: f for f in json.loads((DATA / "glmm_residuals.json").read_text())["fits"]}


def _structures() -> pd.DataFrame:
    return pd.read_csv(DATA / "glmm_structures.csv", dtype={"subj": str, "item": str})


def _fits() -> dict:
    cbpp = pd.read_csv(REFERENCE / "glmm" / "cbpp.csv", dtype={"herd": str, "period": str})
    d = _structures()
    return {
        "cbpp": tiers.fit(
            "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", cbpp, family="binomial"
        ),
        "binary": tiers.fit("y ~ x + (1 | subj)", d, family="binomial"),
        "count": tiers.fit("count ~ x + (1 | subj) + (1 | item)", d, family="poisson"),
    }


@pytest.fixture(scope="module")
def fits() -> dict:
    return _fits()


@pytest.mark.parametrize("label", ["cbpp", "binary", "count"])
@pytest.mark.parametrize("kind", ["deviance", "pearson", "response"])
def test_residuals_match_lme4(fits: dict, label: str, kind: str) -> None:
    # The residuals are functions of the estimates, which agree with glmer's to its optimizer's
    # tolerance (|d beta| < 2e-5 here); 5e-4 absolute allows for that, 1e-6 where they agree to
    # 1e-7 (cbpp).
    ref, res = RESID[label], fits[label]
    assert np.max(np.abs(res.fit.beta - ref["beta"])) < 5e-5
    atol = 1e-6 if label == "cbpp" else 5e-4
    np.testing.assert_allclose(res.residuals(kind), ref[kind], rtol=0, atol=atol)


def test_deviance_residuals_add_up_to_the_conditional_deviance(fits: dict) -> None:
    res = fits["binary"]
    y, mu = res.problem.y, res.fit.mu
    direct = -2.0 * np.sum(y * np.log(mu) + (1 - y) * np.log1p(-mu))
    assert np.sum(res.residuals() ** 2) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(DataError, match="type must be"):
        res.residuals("working")


def test_figures_a_glmm_has_and_why_not_the_others(fits: dict, tmp_path: Path) -> None:
    kinds, notes = available(fits["binary"])
    assert kinds == ["caterpillar", "qq_ranef", "residuals_fitted", "shares"]
    assert any("per-group OLS" in n for n in notes) and any("normal reference" in n for n in notes)
    paths, _ = write_plots(fits["binary"], tmp_path / "b")
    assert [p.name for p in paths] == [f"{k}.png" for k in kinds]
    assert all(p.stat().st_size > 5_000 for p in paths)
    kinds, notes = available(fits["count"])
    assert "shares" not in kinds and any("Poisson GLMM" in n for n in notes)
    with pytest.raises(ValueError, match="no latent scale"):
        figure_of(fits["count"], "shares")
    with pytest.raises(ValueError, match="confint\\(method='profile'\\)"):
        figure_of(fits["count"], "zeta")
    assert [p.name for p in fits["count"].write_plots(tmp_path / "c")] == [
        "caterpillar.png", "qq_ranef.png", "residuals_fitted.png",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="per-group OLS"):
        fits["count"].plot("shrinkage")


def test_figures_read_the_right_numbers(fits: dict) -> None:
    res = fits["binary"]
    fig = figure_of(res, "shares")
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, res.shares()["share"], rtol=1e-12)
    assert "latent scale" in fig.axes[0].get_title()
    cat = figure_of(res, "caterpillar")
    assert "logit (link) scale" in cat.get_suptitle()
    modes = res.ranef()["subj"]
    xs = np.sort(cat.axes[0].lines[0].get_xdata())
    np.testing.assert_allclose(xs, np.sort(modes["(Intercept)"].to_numpy()), rtol=1e-12)


def test_cli_fit_glmm_plots(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    _structures().to_csv(data, index=False)
    out = tmp_path / "plots"
    r = CliRunner().invoke(
        app, ["fit", "y ~ x + (1 | subj)", str(data), "--family", "binomial", "--plots", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "caterpillar.png", "qq_ranef.png", "residuals_fitted.png", "shares.png",
    ]  # fmt: skip
    assert "no shrinkage figure for a GLMM" in r.output
