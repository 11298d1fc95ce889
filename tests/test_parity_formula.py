"""Formulas as Stata and lme4 users write them (issue 12, items 1, 7, 9, 10).

Stata's options where `mixed` takes them (and refused when tiers does not implement them), R's
``^`` as a power, a warning for a 0/1 response, and formulaic's stateful transforms (``center``,
``scale``, ``poly``), response transforms and R spellings, with predictions that reuse the fit's
centring.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.conftest import load_case
from tiers.errors import FormulaError, LinearProbabilityWarning, SingularFitWarning


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    return load_case("hsb82")[0]


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    return load_case("sleepstudy")[0]


def quiet_fit(formula: str, data: pd.DataFrame, **kw) -> tiers.LmmResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return tiers.fit(formula, data, **kw)


# ------------------------------------------------------------------ item 1: Stata's options --


def test_mle_after_the_last_level_fits_ml(hsb: pd.DataFrame) -> None:
    res = quiet_fit("mAch meanses || school: cses, cov(un) mle", hsb)
    ref = quiet_fit("mAch ~ meanses + (cses | school)", hsb, reml=False)
    assert res.reml is False
    assert res.loglik == pytest.approx(ref.loglik, rel=1e-9)
    np.testing.assert_allclose(res.beta, ref.beta, rtol=1e-6)


def test_reml_is_the_default_in_both_syntaxes(hsb: pd.DataFrame) -> None:
    stata = quiet_fit("mAch meanses || school: cses, covariance(unstructured)", hsb)
    lme4 = quiet_fit("mAch ~ meanses + (cses | school)", hsb)
    assert stata.reml is True and lme4.reml is True
    assert stata.reml_criterion == pytest.approx(lme4.reml_criterion, rel=1e-9)


@pytest.mark.parametrize(
    ("formula", "reml"),
    [
        ("y x || g: z, cov(un) reml", True),
        ("y x || g: z, cov(un) ml", False),
        ("y x || g: z, mle cov(un)", False),
        ("y x, mle || g: z", False),  # before the first '||', as tiers always accepted
        ("y x, reml || g: z, cov(un)", True),
        ("y x || a: || g: z, cov(un) mle nolog", False),
        ("y x || g: z", None),
    ],
)
def test_estimation_options(formula: str, reml: bool | None) -> None:
    assert tiers.parse(formula).reml is reml


def test_display_options_after_the_last_level() -> None:
    f = tiers.parse("y x || g: z, cov(un) stddev level(90)")
    assert f.stddeviations is True and f.level == pytest.approx(0.90)
    f = tiers.parse("y x || g: z, stddeviations")
    assert f.stddeviations is True and f.level is None
    f = tiers.parse("y x || g: z, var l(99)")
    assert f.stddeviations is False and f.level == pytest.approx(0.99)


@pytest.mark.parametrize(
    ("written", "structure"),
    [
        ("cov(un)", "unstructured"),
        ("covariance(unstructured)", "unstructured"),
        ("cova(unstr)", "unstructured"),
        ("cov(ind)", "independent"),
        ("cov(independent)", "independent"),
        ("cov(exc)", "exchangeable"),
        ("cov(exchangeable)", "exchangeable"),
        ("cov(id)", "identity"),
        ("cov(identity)", "identity"),
        ("", "independent"),
    ],
)
def test_covariance_abbreviations(written: str, structure: str) -> None:
    f = tiers.parse(f"y x || g: z, {written}")
    assert f.random[0].covariance == structure


def test_equation_options_per_level() -> None:
    f = tiers.parse("y x || a: z, noconstant cov(un) || b: w, nocons || c: v, noc mle")
    assert [t.expr for t in f.random] == ["0 + z", "0 + w", "0 + v"]
    assert [t.covariance for t in f.random] == ["unstructured", "independent", "independent"]
    assert f.reml is False


@pytest.mark.parametrize(
    ("formula", "named", "why"),
    [
        ("mAch meanses || school: cses, bogusoption(3)", "bogusoption(3)", "unknown option"),
        (
            "mAch meanses || school: cses, covarience(un)",
            "covarience(un)",
            "did you mean 'covariance'",
        ),  # fmt: skip
        ("mAch meanses || school: cses, mlee", "mlee", "did you mean 'mle'"),
        ("mAch meanses || school: cses, co(un)", "co(un)", "unknown option"),
        ("mAch meanses || school: cses, stdd", "stdd", "unknown option"),
        ("mAch meanses || school: , cov(un) cses", "cses", "variables go before the comma"),
    ],
)
def test_unsupported_options_are_refused(formula: str, named: str, why: str) -> None:
    with pytest.raises(FormulaError) as info:
        tiers.parse(formula)
    msg = str(info.value)
    assert named in msg and why in msg
    assert "covariance(" in msg and "stddeviations" in msg and "level(#)" in msg  # the supported
    text, caret = msg.splitlines()[-2:]
    assert text.strip() == formula
    assert text[caret.index("^") :].startswith(named)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y x || a:, mle || b:", "write it after the comma of the last level"),
        ("y x, stddev || g: z", "write it after the comma of the last level"),
        ("y x, cov(un) || g: z", "option of a random-effects level"),
        ("y x || g: z, reml mle", "contradicts"),
        ("y x || g: z, stddev variance", "contradicts"),
        ("y x || g: z, level(5)", "between 10 and 99.99"),
        ("y x || g: z, cov(banana)", "unknown covariance structure 'banana'"),
        ("y x || g: z, cov()", "needs a value"),
        ("y x || g: z, mle(1)", "takes no value"),
        ("y x || g:, noconstant", "no effects"),
        ("y x || g: z, cov(un), mle", "a second comma"),
        ("y x || _all: R.f, cov(un)", r"covariance\(identity\)"),
    ],
)
def test_misplaced_or_contradictory_options(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        tiers.parse(formula)


def test_noconstant_level_fits_slopes_only(hsb: pd.DataFrame) -> None:
    stata = quiet_fit("mAch meanses || school: cses, noconstant", hsb)
    lme4 = quiet_fit("mAch ~ meanses + (0 + cses | school)", hsb)
    assert stata.reml_criterion == pytest.approx(lme4.reml_criterion, rel=1e-9)


# ---------------------------------------------------------------- item 7: ^ is a power in R --


def test_caret_is_a_power_not_xor(sleep: pd.DataFrame) -> None:
    assert pd.api.types.is_integer_dtype(sleep["Days"])
    caret = quiet_fit("Reaction ~ Days + I(Days^2) + (Days | Subject)", sleep)
    power = quiet_fit("Reaction ~ Days + I(Days**2) + (Days | Subject)", sleep)
    assert caret.reml_criterion == pytest.approx(power.reml_criterion, rel=1e-10)
    np.testing.assert_allclose(caret.beta, power.beta, rtol=1e-8)
    assert caret.xnames == power.xnames
    assert any("I(Days^2) read as I(Days**2)" in n and "power" in n for n in caret.notes)
    assert "I(Days^2) read as I(Days**2)" in str(caret)


def test_caret_between_terms_crosses_them_as_in_r() -> None:
    f = tiers.parse("y ~ (a + b)^2 + (1 | g)")
    assert f.fixed == "(a + b)**2"


def test_caret_in_a_string_is_left_alone() -> None:
    f = tiers.parse("y ~ C(k, contr.treatment('a^b')) + (1 | g)")
    assert "'a^b'" in f.fixed and not f.notes


# ------------------------------------------------------ item 9: a 0/1 response gets a warning --


def test_binary_response_warns_linear_probability(sleep: pd.DataFrame) -> None:
    data = sleep.assign(slow=(sleep["Reaction"] > 300).astype(int))
    with pytest.warns(LinearProbabilityWarning, match="linear probability model"):
        res = tiers.fit("slow ~ Days + (1 | Subject)", data)
    (msg,) = [w for w in res.warnings if "linear probability" in w]
    assert "melogit" in msg and "glmer" in msg
    assert " ".join(msg.split()) in " ".join(str(res).split())  # notes wrap at 78 columns


def test_continuous_response_has_no_such_warning(sleep: pd.DataFrame) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinearProbabilityWarning)
        res = tiers.fit("Reaction ~ Days + (Days | Subject)", sleep)
    assert not any("linear probability" in w for w in res.warnings)


# --------------------------------------------- item 10: stateful transforms and R spellings --


def test_center_equals_a_centred_column(hsb: pd.DataFrame) -> None:
    res = quiet_fit("mAch ~ center(meanses) + cses + (cses | school)", hsb)
    data = hsb.assign(mc=hsb["meanses"] - hsb["meanses"].mean())
    ref = quiet_fit("mAch ~ mc + cses + (cses | school)", data)
    assert res.xnames == ("(Intercept)", "center(meanses)", "cses")
    np.testing.assert_allclose(res.beta, ref.beta, rtol=1e-7)
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-10)


def test_scale_equals_a_standardised_column(hsb: pd.DataFrame) -> None:
    res = quiet_fit("mAch ~ scale(meanses) + (1 | school)", hsb)
    z = (hsb["meanses"] - hsb["meanses"].mean()) / hsb["meanses"].std(ddof=1)  # R's scale()
    ref = quiet_fit("mAch ~ z + (1 | school)", hsb.assign(z=z))
    np.testing.assert_allclose(res.beta, ref.beta, rtol=1e-7)


def test_poly_of_a_variable_used_nowhere_else(hsb: pd.DataFrame) -> None:
    res = quiet_fit("mAch ~ poly(ses, 2) + (1 | school)", hsb, reml=False)
    raw = quiet_fit("mAch ~ ses + I(ses**2) + (1 | school)", hsb, reml=False)
    assert res.xnames[1:] == ("poly(ses, 2)[1]", "poly(ses, 2)[2]")
    # the same column space: the same likelihood (ML; REML's depends on the basis of X)
    assert res.loglik == pytest.approx(raw.loglik, rel=1e-9)


def test_transform_in_a_random_slope(sleep: pd.DataFrame) -> None:
    res = quiet_fit("Reaction ~ center(Days) + (center(Days) | Subject)", sleep)
    data = sleep.assign(dc=sleep["Days"] - sleep["Days"].mean())
    ref = quiet_fit("Reaction ~ dc + (dc | Subject)", data)
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-9)


def test_prediction_uses_the_fits_centre(sleep: pd.DataFrame) -> None:
    res = quiet_fit("Reaction ~ center(Days) + (1 | Subject)", sleep)
    new = sleep[sleep["Days"] == 9].head(3)
    pred = res.predict(new, re="exclude")["mean"].to_numpy()
    centre = sleep["Days"].mean()  # 4.5; the new rows alone would centre at 9
    expected = res.beta[0] + res.beta[1] * (9 - centre)
    np.testing.assert_allclose(pred, expected, rtol=1e-12)


def test_centre_is_of_the_rows_used(sleep: pd.DataFrame) -> None:
    data = sleep.copy()
    data.loc[data["Days"] < 3, "Reaction"] = np.nan  # dropped rows do not move the centre
    res = quiet_fit("Reaction ~ center(Days) + (1 | Subject)", data)
    used = data.dropna()
    new = pd.DataFrame({"Days": [9], "Subject": [308]})
    pred = res.predict(new, re="exclude")["mean"].to_numpy()
    expected = res.beta[0] + res.beta[1] * (9 - used["Days"].mean())
    np.testing.assert_allclose(pred, expected, rtol=1e-12)


def test_fixed_spec_agrees_with_the_frame(hsb: pd.DataFrame) -> None:
    res = quiet_fit("mAch ~ center(meanses) + poly(ses, 2) + (1 | school)", hsb)
    design = res.design
    mm = design.fixed_spec.get_model_matrix(design.frame.data)
    names = tuple("(Intercept)" if c == "Intercept" else c for c in mm.columns)
    assert names == design.frame.xnames
    np.testing.assert_allclose(np.asarray(mm, dtype=float), design.frame.X, rtol=1e-12)


@pytest.mark.parametrize(
    ("response", "column"),
    [
        ("np.log(Reaction)", lambda d: np.log(d["Reaction"])),
        ("log(Reaction)", lambda d: np.log(d["Reaction"])),
        ("log(Reaction + 1)", lambda d: np.log(d["Reaction"] + 1)),
        ("Reaction / 100", lambda d: d["Reaction"] / 100),
        ("sqrt(Reaction)", lambda d: np.sqrt(d["Reaction"])),
    ],
)
def test_response_transforms(sleep: pd.DataFrame, response: str, column) -> None:
    res = quiet_fit(f"{response} ~ Days + (Days | Subject)", sleep)
    ref = quiet_fit("ly ~ Days + (Days | Subject)", sleep.assign(ly=column(sleep)))
    np.testing.assert_allclose(res.beta, ref.beta, rtol=1e-7)
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-9)


def test_response_transform_of_bad_values_is_refused(sleep: pd.DataFrame) -> None:
    with pytest.raises(tiers.DataError, match=r"response 'np.log\(Reaction - 300\)'.*non-finite"):
        tiers.fit("np.log(Reaction - 300) ~ Days + (1 | Subject)", sleep)


def test_factor_is_read_as_C(sleep: pd.DataFrame) -> None:
    res = quiet_fit("Reaction ~ factor(Days) + (1 | Subject)", sleep)
    ref = quiet_fit("Reaction ~ C(Days) + (1 | Subject)", sleep)
    assert res.xnames == ref.xnames
    np.testing.assert_allclose(res.beta, ref.beta, rtol=1e-8)
    assert any("factor(Days) read as C(Days)" in n for n in res.notes)


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("foo(Days)", r"unknown function foo\(\)"),
        ("math.log(Days)", r"unknown name 'math'"),
        ("relevel(Days, ref = 3)", r"relevel\(\) is R's.*contr\.treatment"),
        ("as.numeric(Days)", r"as\.numeric\(\) is R's"),
        ("ns(Days, 3)", r"ns\(\) is R's.*cr\("),
    ],
)
def test_unknown_functions_are_named(sleep: pd.DataFrame, term: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message) as info:
        tiers.fit(f"Reaction ~ {term} + (1 | Subject)", sleep)
    assert "is not in the data" not in str(info.value)
