"""The printed layouts: Stata's ``mixed`` (widths, ``%9.0g``, names, var/cov rows), lme4's
``summary`` with lmerTest (compared line by line with R's own output), ``repr`` and the HTML table.

R's printed summaries of the golden cases are in ``tests/golden/r`` (made by
``tests/golden/r/lmertest_summaries.R`` with the R, lme4 and lmerTest versions of the shared
reference); the Stata cells below are copied from Stata's own output.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.engine.gaussian import criterion_value, residual_df
from tiers.formula import parse
from tiers.report.lme4 import _correlation
from tiers.report.names import StataName, stata_effect, stata_name
from tiers.report.numfmt import (
    r_abbreviate,
    r_format,
    r_format_pval,
    r_zapsmall,
    stata_abbrev,
    stata_g,
)

from .conftest import fit_reference, load_case
from .test_golden import CASES, _normalise, _pinned

R_SUMMARIES = Path(__file__).resolve().parent / "golden" / "r"


@pytest.fixture(scope="module")
def sleep_reml() -> tiers.LmmResult:
    res, _ = fit_reference("sleepstudy", "corr_REML")
    return res


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    data, _ = load_case("hsb82")
    data = data.copy()
    data["sex"] = np.where(np.arange(len(data)) % 3 == 0, "girl", "boy")
    return data


# ------------------------------------------------------------------ item 12: Stata's formats --

# (value, Stata's %9.0g cell) as Stata printed them in mixed's output
STATA_CELLS = [
    (6.209896, " 6.209896"),
    (0.0390124, " .0390124"),
    (19.35561, " 19.35561"),
    (0.5974059, " .5974059"),
    (5.049260, "  5.04926"),
    (-0.00658794, "-.0065879"),
    (1.04e-09, " 1.04e-09"),
    (0.0000493, " .0000493"),
    (4.80e-06, " 4.80e-06"),
    (16754.0, "    16754"),
    (-0.0109771, "-.0109771"),
    (25337.49, " 25337.49"),
    (0.0, "        0"),
    (float("nan"), "        ."),
]


@pytest.mark.parametrize(("value", "cell"), STATA_CELLS)
def test_stata_g_is_stata_9_0g(value: float, cell: str) -> None:
    assert stata_g(value) == cell


def test_stata_g_10_for_the_log_likelihood() -> None:
    assert stata_g(-1014.92682, 10) == "-1014.9268"
    assert stata_g(1430.50174, 10) == " 1430.5017"


def test_stata_abbrev_keeps_start_and_last_character() -> None:
    assert stata_abbrev("videorelevant", 12) == "videorelev~t"
    assert stata_abbrev("displacement", 8) == "displa~t"
    assert stata_abbrev("c.reading_score_fall", 12) == "c.reading_~l"
    assert stata_abbrev("mpg", 12) == "mpg"


def _columns_end(line: str, ends: list[int]) -> None:
    """Every number of a table row ends exactly at its column."""
    for m in re.finditer(r"\S+", line.split("|", 1)[1]):
        end = line.index("|") + 1 + m.end() - 1
        assert end in ends, (line, m.group(0), end)


def test_stata_layout_is_78_columns_with_cells_under_their_headers(sleep_reml) -> None:
    text = sleep_reml.summary()
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) == 78
    head = next(ln for ln in lines if "P>|z|" in ln)
    assert head.index("Coef.") + len("Coef.") - 1 == 24
    assert head.index("P>|z|") + 4 == 52 and head.endswith("Interval]") and len(head) == 78
    days = next(ln for ln in lines if ln.startswith("        Days |"))
    # Stata's columns: coefficient ends at 24, SE 35, z 44, P>|z| 52, bounds 65 and 77
    _columns_end(days, [24, 35, 44, 52, 65, 77])
    assert re.fullmatch(r" {8}Days \| {2}[ \d.-]{9} {2}[ \d.-]{9} [ \d.-]{8} {3}\d\.\d{3}"
                        r" {4}[ \d.-]{9} {3}[ \d.-]{9}", days)  # fmt: skip
    re_row = next(ln for ln in lines if ln.lstrip().startswith("var(Days)"))
    _columns_end(re_row, [40, 51, 65, 77])


def test_long_names_get_statas_tilde_and_stay_distinct() -> None:
    data, _ = load_case("sleepstudy")
    data = data.assign(
        reading_score_fall=data["Days"] ** 2, reading_score_spring=data["Days"] ** 0.5
    )
    res = tiers.fit("Reaction reading_score_fall reading_score_spring || Subject:", data)
    lines = res.summary().splitlines()
    assert any(ln.startswith("reading_sc~l |") for ln in lines)
    assert any(ln.startswith("reading_sc~g |") for ln in lines)
    assert max(len(ln) for ln in lines) <= 78


def test_stata_header_names_the_estimator_and_tiers_default(sleep_reml) -> None:
    lines = sleep_reml.summary().splitlines()
    assert lines[0].startswith("Mixed-effects REML regression")
    assert any("REML: tiers' default for both syntaxes" in ln and "ML" in ln for ln in lines)
    ml = sleep_reml.refit(reml=False).summary().splitlines()
    assert ml[0].startswith("Mixed-effects ML regression")
    assert any(ln.startswith("ML, as asked: tiers' default") for ln in ml)


# --------------------------------------------------------- item 13: var/cov and sd/corr rows --


def _row(text: str, label: str) -> list[float]:
    line = next(ln for ln in text.splitlines() if ln.split("|")[0].strip() == label)
    return [float(x) for x in line.split("|")[1].split()]


def test_stata_shows_variances_and_covariances_slopes_before_cons(sleep_reml) -> None:
    text = sleep_reml.summary()
    labels = [ln.split("|")[0].strip() for ln in text.splitlines() if "|" in ln]
    at = labels.index("Subject: Unstructured")
    assert labels[at + 1 : at + 4] == ["var(Days)", "var(_cons)", "cov(Days,_cons)"]
    assert "var(Residual)" in labels and "sd(_cons)" not in labels
    sdi, ci = sleep_reml.sd_inference, sleep_reml.corr_inference
    est, se, lo, hi = _row(text, "var(Days)")
    np.testing.assert_allclose(est, sdi.sd[1] ** 2, rtol=1e-6)
    np.testing.assert_allclose(se, 2 * sdi.sd[1] * sdi.se[1], rtol=1e-6)
    np.testing.assert_allclose([lo, hi], [sdi.lower[1] ** 2, sdi.upper[1] ** 2], rtol=1e-6)
    est, se, lo, hi = _row(text, "cov(Days,_cons)")
    cov = ci.estimate[0] * sdi.sd[0] * sdi.sd[1]
    np.testing.assert_allclose(est, cov, rtol=1e-6)
    np.testing.assert_allclose([lo, hi], [cov - 1.959964 * se, cov + 1.959964 * se], rtol=1e-5)


def test_covariance_se_equals_the_information_in_the_variance_parametrisation(sleep_reml) -> None:
    """At the optimum the delta-method SEs of var and cov equal those from the Hessian of the
    criterion in (var0, var1, cov01, log sigma) directly: the observed information is invariant."""
    res = sleep_reml
    engine = res.devfun
    nu = residual_df(engine.n, engine.p, engine.reml)

    def crit(psi: np.ndarray) -> float:
        v0, v1, c, log_s = psi
        s = np.exp(log_s)
        T = np.linalg.cholesky(np.array([[v0, c], [c, v1]]) / s**2)
        ev = engine.evaluate(np.array([T[0, 0], T[1, 0], T[1, 1]]))
        return criterion_value(ev.ldL2, ev.ldRX2, ev.pwrss, nu, engine.reml, s)

    sd, r = res.sd_inference.sd, res.corr_inference.estimate[0]
    psi = np.array([sd[0] ** 2, sd[1] ** 2, r * sd[0] * sd[1], np.log(res.sigma)])
    h = np.array([1.0, 0.05, 0.2, 1e-3])
    H = np.empty((4, 4))
    for i in range(4):
        for j in range(4):
            e_i, e_j = np.eye(4)[i] * h[i], np.eye(4)[j] * h[j]
            H[i, j] = (
                crit(psi + e_i + e_j) - crit(psi + e_i - e_j) - crit(psi - e_i + e_j)
                + crit(psi - e_i - e_j)
            ) / (4 * h[i] * h[j])  # fmt: skip
    se = np.sqrt(np.diag(np.linalg.inv(0.5 * H)))
    var, var_se, _, _ = res.sd_inference.variance_scale()
    np.testing.assert_allclose(var_se[:2], se[:2], rtol=2e-3)
    np.testing.assert_allclose(res.corr_inference.cov_se[0], se[2], rtol=2e-3)


def test_stddeviations_shows_sds_and_correlations(sleep_reml) -> None:
    text = sleep_reml.summary(stddeviations=True)
    labels = [ln.split("|")[0].strip() for ln in text.splitlines() if "|" in ln]
    at = labels.index("Subject: Unstructured")
    assert labels[at + 1 : at + 4] == ["sd(Days)", "sd(_cons)", "corr(Days,_cons)"]
    assert "sd(Residual)" in labels and "var(_cons)" not in labels
    est, se, lo, hi = _row(text, "corr(Days,_cons)")
    ci = sleep_reml.corr_inference
    np.testing.assert_allclose([est, se, lo, hi], [ci.estimate[0], ci.se[0], ci.lower[0], ci.upper[0]], rtol=1e-6)  # fmt: skip


def test_the_formula_option_stddeviations_and_level_are_honoured() -> None:
    data, _ = load_case("sleepstudy")
    f = parse("Reaction Days || Subject: Days, covariance(unstructured) reml")
    res = tiers.fit(dataclasses.replace(f, stddeviations=True, level=0.90), data)
    text = res.summary()
    assert "sd(Days)" in text and "var(Days)" not in text
    assert text.count("[90% Conf. Interval]") == 2
    assert "var(Days)" in res.summary(stddeviations=False)  # the keyword overrides the formula
    lo, hi = _row(text, "Days")[4:]
    table = res.coef_table(0.90)
    np.testing.assert_allclose([lo, hi], table.loc["Days", ["ci_lower", "ci_upper"]], rtol=1e-6)
    sd_lo, sd_hi = _row(text, "sd(Days)")[2:]
    assert res.sd_inference.lower[1] < sd_lo < sd_hi < res.sd_inference.upper[1]  # 90% < 95%


# ----------------------------------------------------------------- item 11: Stata's names --


def test_stata_names_of_formulaic_columns() -> None:
    assert stata_name("(Intercept)") == StataName("_cons")
    assert stata_name("meanses") == StataName("meanses")
    assert stata_name("C(sex)[T.girl]") == StataName("sex", "girl")
    assert stata_name("sex[T.girl]") == StataName("sex", "girl")
    assert stata_name("meanses:cses") == StataName("c.meanses#c.cses")
    assert stata_name("C(grp)[T.b]:cses") == StataName("grp#c.cses", "b")
    assert stata_name("C(a)[T.2]:C(b)[T.x]") == StataName("a#b", "2 x")
    assert stata_name("np.log(x)") == StataName("np.log(x)")
    assert stata_effect("(Intercept)") == "_cons"
    assert stata_effect("C(grade)[T.2]") == "2.grade"


def test_stata_syntax_prints_stata_names(hsb) -> None:
    res = tiers.fit("mAch i.sex c.meanses##c.cses || school: cses, cov(un)", hsb)
    text = res.summary()
    lines = text.splitlines()
    assert "C(sex)" not in text and "meanses:cses" not in text and "(Intercept)" not in text
    at = lines.index("         sex |")
    assert lines[at + 1].startswith("       girl  |")  # the level under its variable
    assert not any(ln.strip().startswith("boy") for ln in lines)  # the base level left out
    at = lines.index("   c.meanses#|")  # Stata's split of a long interaction
    assert lines[at + 1].startswith("      c.cses |") and lines[at - 1] == " " * 13 + "|"
    assert lines[at + 2] == " " * 13 + "|" and lines[at + 3].startswith("       _cons |")
    assert max(len(ln) for ln in lines) <= 78


# ------------------------------------------------------------- item 14: lme4 with lmerTest --


def test_r_formats() -> None:
    """R's own results (R 4.2.2) of format(), zapsmall(), format.pval() and abbreviate()."""
    assert r_format([612.0898, 35.07171, 654.941], 4) == ["612.09", " 35.07", "654.94"]
    assert r_format([1527.5, 17.695, 6.0], 4) == ["1527.5", "  17.7", "   6.0"]
    assert r_format([3.26e-06, 1.2e-05], 3) == ["3.26e-06", "1.20e-05"]
    assert r_format([1.0, -0.138], 7, nsmall=3) == [" 1.000", "-0.138"]
    assert r_zapsmall([-2.0792298, 0.0629234, 2.97959], 5) == [-2.07923, 0.06292, 2.97959]
    assert r_format_pval([1e-20, 3.26e-06], 3) == ["< 2e-16", "3.26e-06"]
    assert r_format_pval([1e-20, 0.372], 3) == ["<2e-16", "0.372"]
    assert r_format_pval([0.000277, 1e-13], 3) == ["0.000277", "1e-13"]
    names = ["(Intercept)", "meanses", "cses", "meanses:cses"]
    assert r_abbreviate(names, 6) == ["(Intr)", "meanss", "cses", "mnss:c"]
    assert r_abbreviate(names, 11) == ["(Intercept)", "meanses", "cses", "meanses:css"]


def _without_footer(text: str) -> list[str]:
    lines = text.splitlines()
    while lines and lines[-1].startswith(("Fit: ", "Note: ", "Warning: ", "      ")):
        lines.pop()
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize(("case", "key"), CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_lme4_layout_is_what_r_prints(case: str, key: str) -> None:
    """Line for line R's ``print(summary(fit))`` with lmerTest, trailing blanks aside, except
    ``Data:`` (the data's name) and lme4's optimizer line; tiers' own footer follows it."""
    with open(R_SUMMARIES / f"{case}_{key}.txt", encoding="utf-8") as fh:
        r_lines = [
            ln.rstrip()
            for ln in fh.read().splitlines()
            if not ln.startswith(("   Data:", "optimizer ("))
        ]
    while r_lines and not r_lines[-1]:
        r_lines.pop()
    ours = _without_footer(_normalise(_pinned(case, key).summary("lme4")))
    assert ours == r_lines


def test_lme4_layout_of_a_stata_formula_shows_the_lme4_formula(hsb) -> None:
    res = tiers.fit("mAch meanses cses || school: cses, cov(un)", hsb)
    text = res.summary("lme4")
    assert "Formula: mAch ~ 1 + meanses + cses + (1 + cses | school)" in text
    assert "Pr(>|t|)" in text and "Correlation of Fixed Effects:" in text


# ------------------------------------------------------------------ item 15: repr and HTML --


def test_repr_is_one_line(sleep_reml) -> None:
    text = repr(sleep_reml)
    assert "\n" not in text and len(text) < 150
    assert text == (
        "<LmmResult REML tree: Reaction ~ Days + (Days | Subject), 180 obs, REML crit 1743.6>"
    )


def test_html_is_a_table_not_pre(sleep_reml) -> None:
    html = sleep_reml._repr_html_()
    assert "<pre>" not in html and html.count("<table") == 3
    for text in ("(Intercept)", "Days", "Residual", "Subject", "Estimate", "REML criterion"):
        assert text in html
    assert f"{sleep_reml.fixef['Days']:.6g}" in html
    assert "1743.6" in html and "180" in html


def test_a_wide_correlation_matrix_is_printed_in_blocks_as_r_does() -> None:
    names = ["(Intercept)", "x", "z", "C(grade)[T.k2]", "C(grade)[T.k3]", "x:z"]
    names += [f"{a}:C(grade)[T.{k}]" for a in ("x", "z", "x:z") for k in ("k2", "k3")]
    corr = np.full((12, 12), -0.5) + 1.5 * np.eye(12)
    lines = _correlation(names, corr)
    heads = [ln for ln in lines if ln.startswith(" " * 12)]
    # R 4.2.2's print of lme4's matrix: the first 8 columns, then the other 3 with the row names
    assert heads == [
        "            (Intr) x      z      C()[T.2 C()[T.3 x:z    x:C()[T.2 x:C()[T.3",
        "            z:C()[T.2 z:C()[T.3 x::C()[T.2",
    ]
    assert max(len(ln) for ln in lines) < 80


def test_stata_g_when_rounding_carries_a_digit() -> None:
    assert stata_g(0.99999999) == "        1"
    assert stata_g(9.99999999) == "       10"
    assert stata_g(99999999.7) == " 1.00e+08"  # 9 digits do not fit: exponent
    assert stata_g(-12345678) == "-12345678"


def test_lme4_layout_names_the_data_file_read_by_read_data() -> None:
    """lme4 prints ``Data: d``; tiers knows a file's name when read_data read it, else nothing."""
    from .conftest import REFERENCE

    read = tiers.read_data(REFERENCE / "sleepstudy.csv")
    text = tiers.fit("Reaction ~ Days + (Days | Subject)", read).summary("lme4")
    assert text.splitlines()[3] == "   Data: sleepstudy.csv"
    plain = tiers.fit(
        "Reaction ~ Days + (Days | Subject)", pd.read_csv(REFERENCE / "sleepstudy.csv")
    )
    assert "Data:" not in plain.summary("lme4")


def test_stata_layout_shows_value_labels_of_a_dta_factor(tmp_path) -> None:
    """Stata's .dta value labels name the levels of i.educ in the coefficient table."""
    rng = np.random.default_rng(0)
    n = 300
    data = pd.DataFrame(
        {
            "y": rng.normal(size=n) + rng.integers(0, 30, n) * 0.1,
            "educ": rng.integers(1, 4, n).astype("int32"),
            "g": rng.integers(0, 30, n).astype("int32"),
        }
    )
    labels = {"educ": {1: "primary", 2: "secondary", 3: "tertiary"}}
    path = tmp_path / "labelled.dta"
    data.to_stata(path, value_labels=labels, write_index=False)
    read = tiers.read_data(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tiers.TiersWarning)
        lines = tiers.fit("y i.educ || g:", read).summary().splitlines()
    rows = [line.split("|")[0].strip() for line in lines if "|" in line]
    assert "educ" in rows and "secondary" in rows and "tertiary" in rows
    assert "primary" not in rows  # the base level, left out as Stata does
