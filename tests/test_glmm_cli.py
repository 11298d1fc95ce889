"""GLMMs from the command line and Stata's me* commands: summaries, JSON fields, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tiers
from tests.conftest import REFERENCE
from tests.test_glmm_reference import _cbpp
from tiers.cli.main import app
from tiers.formula.glm import read_glm

CBPP = str(REFERENCE / "glmm" / "cbpp.csv")


def test_cli_fit_family_link_json(tmp_path: Path) -> None:
    out = tmp_path / "fit.json"
    res = CliRunner().invoke(
        app,
        [
            "fit",
            "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
            CBPP,
            "--family",
            "binomial",
            "--link",
            "probit",
            "--style",
            "lme4",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Family: binomial  ( probit )" in res.output
    doc = json.loads(out.read_text())
    assert (doc["family"], doc["link"], doc["nAGQ"]) == ("binomial", "probit", 1)
    api = tiers.fit(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
        _cbpp(),
        family="binomial",
        link="probit",
    )
    assert doc["deviance"] == pytest.approx(api.deviance, rel=1e-9)
    # the keys every linear fit's document has (tests/test_cli.py), plus the GLMM's own
    lmm_keys = {"formula", "method", "nobs", "ngroups", "fixed_effects", "random_effects",
                "residual_sd", "theta", "loglik", "converged", "singular", "fit_seconds"}  # fmt: skip
    assert lmm_keys | {"family", "link", "nAGQ", "deviance", "aic"} <= set(doc)


def test_cli_stata_command_with_quadrature_and_odds_ratios() -> None:
    res = CliRunner().invoke(
        app, ["fit", "melogit incidence i.period || herd:, binomial(size) intpoints(5) or", CBPP]
    )
    assert res.exit_code == 0, res.output
    assert "Mixed-effects logistic regression" in res.output
    assert "Odds ratio" in res.output
    assert "Integration pts.  =          5" in res.output


def test_cli_refuses_bad_link_in_words() -> None:
    res = CliRunner().invoke(
        app, ["fit", "incidence ~ 1 + (1 | herd)", CBPP, "--family", "poisson", "--link", "logit"]
    )
    assert res.exit_code != 0
    assert "valid combinations" in res.output


def test_odds_ratios_are_the_exponentiated_coefficients() -> None:
    res = tiers.fit("melogit incidence i.period || herd:, binomial(size) or", _cbpp())
    table = res.coef_table()
    np.testing.assert_allclose(table["estimate"], np.exp(res.fit.beta), rtol=1e-12)
    np.testing.assert_allclose(table["std_error"], np.exp(res.fit.beta) * res.fit.se, rtol=1e-12)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("meprobit y x || g:", {"family": "binomial", "link": "probit", "base": "y x || g:"}),
        ("mepoisson y x || g:, exposure(e) irr", {"exposure": "e", "exponentiate": True}),
        ("mepoisson y x || g:, offset(lo) laplace", {"offsets": ("lo",), "nagq": 1}),
        ("y ~ x + offset(log(e)) + (1 | g)", {"offsets": ("log(e)",), "base": "y ~ x + (1 | g)"}),
        ("cbind(s, n - s) ~ x + (1 | g)", {"failures": "n - s", "base": "s ~ x + (1 | g)"}),
    ],
)
def test_glm_parts_are_read_off_the_formula(text: str, fields: dict) -> None:
    spec = read_glm(text)
    for key, value in fields.items():
        assert getattr(spec, key) == value


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("mepoisson y x || g:, or", "does not apply"),
        ("melogit y x || g:, intpoints(0)", "positive whole number"),
        ("melogit y x || g:, intpoints(7) laplace", "contradict"),
        ("cbind(s) ~ x + (1 | g)", "two columns"),
    ],
)
def test_bad_glm_options_are_refused(text: str, match: str) -> None:
    with pytest.raises(tiers.FormulaError, match=match):
        read_glm(text)
