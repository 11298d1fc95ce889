"""GLMM columns in publication tables (tiers.table) against lme4's glmer on cbpp and performance's
R-squared (tests/data/glmm/glmm_tight.json, tests/data/r2/r2_glmm.json)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import tiers
from tests.conftest import load_case
from tests.htmlcheck import check_html
from tests.test_glmm_reference import CBPP_FORMULA, GT_FORMULA, _cbpp, _grouse
from tests.tolerances import GLMM_PARAM_ATOL, GLMM_SE_RTOL
from tiers.errors import ComparisonError, DataError

DATA = Path(__file__).parent / "data"
TIGHT = json.loads((DATA / "glmm" / "glmm_tight.json").read_text())
LME4 = next(f for f in TIGHT["fits"] if f["label"] == "cbpp_logit_laplace")
R2 = json.loads((DATA / "r2" / "r2_glmm.json").read_text())["fits"]
DIGITS = 6
#: a printed cell carries half a unit of its last digit of rounding on top of the fits' difference
ROUND = 0.5 * 10.0**-DIGITS


def _text(frame, label: str, col: str, line: str = "") -> str:
    return str(frame.loc[(label, line), col])


def _cell(frame, label: str, col: str, line: str = "") -> float:
    return float(_text(frame, label, col, line).replace(",", "").strip("()[]*"))


@pytest.fixture(scope="module")
def fits() -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (
            tiers.fit(CBPP_FORMULA, _cbpp(), family="binomial"),
            tiers.fit(GT_FORMULA, _grouse(), family="poisson"),
        )


def test_glmm_columns_match_lme4_and_performance(fits) -> None:
    cbpp, grouse = fits
    t = tiers.table(cbpp, grouse, names=["cbpp", "ticks"], digits=DIGITS)
    frame = t.to_frame().droplevel(0)
    # estimates and SEs (the unlabelled line under each) against glmer (tolPwrss = 1e-10)
    terms = ["(Intercept)", "C(period)[T.2]", "C(period)[T.3]", "C(period)[T.4]"]
    for name, b, se in zip(terms, LME4["beta"], LME4["std_error"], strict=True):
        got = _cell(frame, name, "cbpp", "estimate")
        assert got == pytest.approx(b, abs=GLMM_PARAM_ATOL + ROUND)
        below = _cell(frame, name, "cbpp", "std_error")
        assert below == pytest.approx(se, rel=GLMM_SE_RTOL, abs=ROUND)
    sd = _cell(frame, "SD (Intercept | herd)", "cbpp")
    assert sd == pytest.approx(LME4["theta"], abs=GLMM_PARAM_ATOL + ROUND)
    # the latent ICC of a logit model: sigma^2 / (sigma^2 + pi^2/3)
    icc = LME4["theta"] ** 2 / (LME4["theta"] ** 2 + math.pi**2 / 3)
    assert _cell(frame, "ICC (herd)", "cbpp") == pytest.approx(icc, abs=1e-4)
    for col, key in (("cbpp", "cbpp_logit"), ("ticks", "grouseticks_poisson")):
        for kind in ("marginal", "conditional"):
            got = _cell(frame, f"R2 {kind}", col)
            assert got == pytest.approx(R2[key][f"r2_{kind}"], rel=1e-4, abs=ROUND)
    dev = _cell(frame, "Deviance", "cbpp")
    assert dev == pytest.approx(LME4["minus2logLik"], abs=0.05)  # printed with one decimal
    assert _cell(frame, "AIC", "cbpp") == pytest.approx(LME4["minus2logLik"] + 2 * 5, abs=0.05)
    assert _text(frame, "Groups (herd)", "cbpp") == "15" and _text(frame, "N", "ticks") == "403"
    assert _text(frame, "Groups (INDEX)", "ticks") == "403"
    assert _text(frame, "Method", "cbpp") == "ML (Laplace)"
    assert any("binomial GLMM, fixed effects on the logit scale" in n for n in t.notes)
    check_html(t.to_html(), fragment=True)


def test_exponentiated_columns_are_ratios(fits) -> None:
    cbpp, grouse = fits
    t = tiers.table(cbpp, grouse, exponentiate=True, statistic="conf_int", digits=DIGITS)
    frame = t.to_frame().droplevel(0)
    b, se = LME4["beta"][1], LME4["std_error"][1]
    got = _cell(frame, "C(period)[T.2]", "(1)", "estimate")  # d exp(b) / exp(b) = db
    assert got == pytest.approx(math.exp(b), rel=GLMM_PARAM_ATOL, abs=ROUND)
    ci = _text(frame, "C(period)[T.2]", "(1)", "conf_int")
    lo, hi = (float(x) for x in ci.strip("[]").split(","))
    q = 1.959963984540054
    assert lo == pytest.approx(math.exp(b - q * se), rel=1e-3)  # exp of the Wald ends
    assert hi == pytest.approx(math.exp(b + q * se), rel=1e-3)
    rate = _cell(frame, "cHEIGHT", "(2)", "estimate")
    assert rate == pytest.approx(np.exp(grouse.fixef["cHEIGHT"]), abs=ROUND)
    notes = " ".join(t.notes)
    assert "odds ratios (exponentiated)" in notes and "rate ratios (exponentiated)" in notes


def test_exponentiate_refusals(fits) -> None:
    data, _ = load_case("sleepstudy")
    lmm = tiers.fit("Reaction ~ Days + (1 | Subject)", data)
    with pytest.raises(ComparisonError, match="none of the models is a GLMM"):
        tiers.table(lmm, exponentiate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probit = tiers.fit(CBPP_FORMULA, _cbpp(), family="binomial", link="probit")
    with pytest.raises(DataError, match="probit link has no such reading"):
        tiers.table(probit, exponentiate=True)
    t = tiers.table(fits[0], lmm, ddf="satterthwaite")  # the LMM gets its df, the GLMM says z
    assert any("a GLMM's tests are Wald z" in n for n in t.notes)


def test_cli_fit_table_for_a_glmm(fits) -> None:
    from typer.testing import CliRunner

    from tests.test_glmm_cli import CBPP
    from tiers.cli.main import app

    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    res = CliRunner().invoke(app, ["fit", formula, CBPP, "--family", "binomial", "--table", "md"])
    assert res.exit_code == 0, res.output
    assert res.output == tiers.table(fits[0]).to_markdown()
    # Stata's command with `or`: the table shows odds ratios, as its summary does
    stata = "melogit incidence i.period || herd:, binomial(size) or laplace"
    res = CliRunner().invoke(app, ["fit", stata, CBPP, "--table", "html"])
    assert res.exit_code == 0, res.output
    check_html(res.output, fragment=True)
    assert "odds ratios (exponentiated)" in res.output
    assert f"{math.exp(LME4['beta'][1]):.3f}" in res.output
