"""Tidy and glance frames against lme4 / lmerTest references, and publication tables."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.errors import ComparisonError, SingularFitWarning

from .conftest import REFERENCE, fit_reference, load_case
from .tolerances import BETA_RTOL, OPTIMUM_WITHIN_RTOL, SE_RTOL, THETA_ATOL

#: Satterthwaite df of our own optimum against lmerTest's: the df move with theta to first order
#: (tests/test_satterthwaite.py uses the same bound for its own-fit comparison).
OWN_FIT_DF_RTOL = 2e-4


def _tidy_ref(case: str, key: str) -> tuple[pd.DataFrame, dict]:
    res, spec = fit_reference(case, key)
    return res.tidy(ddf="satterthwaite"), spec


@pytest.mark.parametrize(
    ("case", "key"), [("sleepstudy", "corr_REML"), ("hsb82", "rs_ML"), ("pastes", "nested_REML")]
)
def test_tidy_matches_lme4(case: str, key: str) -> None:
    t, spec = _tidy_ref(case, key)
    fixed = t[t.effect == "fixed"].set_index("term")
    for fe in spec["fixed_effects"]:
        row = fixed.loc[fe["name"]]
        np.testing.assert_allclose(row.estimate, fe["estimate"], rtol=BETA_RTOL)
        np.testing.assert_allclose(row.std_error, fe["std_error"], rtol=SE_RTOL)
        np.testing.assert_allclose(row.statistic, fe["t_value"], rtol=SE_RTOL)
        np.testing.assert_allclose(row.df, fe["df_satterthwaite"], rtol=OWN_FIT_DF_RTOL)
    ran = t[t.effect == "ran_pars"]
    sds = {(r.group, r.term): r.estimate for r in ran.itertuples()}
    for re_ in spec["random_effects"]:
        term = "sd__Observation" if re_["group"] == "Residual" else f"sd__{re_['term']}"
        np.testing.assert_allclose(sds[(re_["group"], term)], re_["sd"], rtol=SE_RTOL)
    for c in spec["correlations"]:
        got = sds[(c["group"], f"cor__{c['term1']}.{c['term2']}")]
        np.testing.assert_allclose(got, c["correlation"], atol=THETA_ATOL)
    # broom.mixed's order: each SD followed by its correlations with later effects, residual last
    assert ran.term.iloc[-1] == "sd__Observation"
    assert len(ran) == len(spec["random_effects"]) + len(spec["correlations"])


def test_tidy_intervals_and_ran_vals() -> None:
    res, _ = fit_reference("sleepstudy", "corr_REML")
    t = res.tidy(("fixed", "ran_pars", "ran_vals"), level=0.9)
    fixed = t[t.effect == "fixed"].set_index("term")
    table = res.coef_table(0.9)
    np.testing.assert_allclose(fixed.conf_low, table.ci_lower, rtol=1e-12)
    assert np.isinf(fixed.df).all()  # ddf="normal": z tests
    sd = t[(t.effect == "ran_pars") & (t.term == "sd__Days")].iloc[0]
    assert sd.conf_low < sd.estimate < sd.conf_high
    vals = t[t.effect == "ran_vals"]
    modes = res.ranef()["Subject"]
    days = vals[vals.term == "Days"].set_index("level")
    np.testing.assert_allclose(days.estimate.loc[modes.index], modes["Days"], rtol=1e-12)
    np.testing.assert_allclose(days.std_error.loc[modes.index], modes["Days_sd"], rtol=1e-12)


def test_glance_matches_lme4() -> None:
    res, spec = fit_reference("sleepstudy", "corr_REML")
    g = res.glance().iloc[0]
    crit = spec["criteria"]
    for ours, theirs in [
        ("loglik", "logLik"),
        ("aic", "AIC"),
        ("bic", "BIC"),
        ("reml_criterion", "REML_criterion"),
        ("deviance", "deviance_ML_at_REML_estimates"),
    ]:
        np.testing.assert_allclose(g[ours], crit[theirs], rtol=OPTIMUM_WITHIN_RTOL)
    assert g.nobs == 180 and g.ngroups_Subject == 18 and g.df_residual == 180 - 6
    assert g.method == "REML" and g.r2_marginal == res.r2().marginal


def test_tidy_refuses_unknown_options() -> None:
    res, _ = fit_reference("dyestuff", "ri_REML")
    with pytest.raises(ValueError, match="fixed, ran_pars, ran_vals"):
        res.tidy(("fixed", "random"))
    with pytest.raises(ValueError, match="normal, satterthwaite, kenward-roger"):
        res.tidy(ddf="kr")


# ------------------------------------------------------------------------------ tables --


@pytest.fixture(scope="module")
def exam_fits() -> tuple[tiers.LmmResult, tiers.LmmResult]:
    data, _ = load_case("exam")
    a = tiers.fit("normexam ~ standLRT + (1 | school)", data)
    b = tiers.fit("normexam ~ standLRT + (standLRT | school)", data, reml=False)
    return a, b


def _cell(t: tiers.report.table.Table, label: str, col: int = 0, second: bool = False) -> str:
    rows = [r for r in t.rows if r.label == label and r.secondary == second]
    assert len(rows) == 1, f"{label}: {len(rows)} rows"
    return rows[0].cells[col]


def test_table_cells_are_the_fits_numbers(exam_fits) -> None:
    a, b = exam_fits
    t = tiers.table(a, b, names=["RI", "RS"], digits=4)
    assert t.models == ("RI", "RS")
    for col, m in enumerate((a, b)):
        est, se = m.fixef["standLRT"], m.std_errors["standLRT"]
        assert float(_cell(t, "standLRT", col)) == pytest.approx(est, abs=5e-5)
        assert float(_cell(t, "standLRT", col, True).strip("()")) == pytest.approx(se, abs=5e-5)
        assert float(_cell(t, "SD (Residual)", col)) == pytest.approx(m.sigma, abs=5e-5)
        assert float(_cell(t, "R2 conditional", col)) == pytest.approx(m.r2().conditional, abs=5e-5)
        assert _cell(t, "N", col) == "4,059" and _cell(t, "Groups (school)", col) == "65"
        assert _cell(t, "Method", col) == m.method
    icc = a.variance_shares().set_index("level").loc["school", "icc"]
    assert float(_cell(t, "ICC (school)", 0)) == pytest.approx(icc, abs=5e-5)
    assert _cell(t, "ICC (school)", 1) == ""  # random slopes: no ICC, said in a note
    assert any("RS: no ICC with random slopes" in n for n in t.notes)
    assert _cell(t, "SD (standLRT | school)", 0) == ""  # a parameter the model does not have
    sections = [r.section for r in t.rows]
    assert sections == sorted(sections, key=["fixed", "variance", "icc", "r2", "fit"].index)


def test_table_intervals_stars_and_satterthwaite(exam_fits) -> None:
    a, b = exam_fits
    t = tiers.table(a, b, statistic="conf_int", stars=True, ddf="satterthwaite", level=0.9)
    tests = a.satterthwaite(0.9).loc["standLRT"]
    lo, hi = (float(x) for x in _cell(t, "standLRT", 0, True).strip("[]").split(","))
    assert (lo, hi) == pytest.approx((tests.ci_lower, tests.ci_upper), abs=5e-4)
    row = next(r for r in t.rows if r.label == "standLRT" and not r.secondary)
    assert row.stars == ("***", "***")
    row = next(r for r in t.rows if r.label == "(Intercept)" and not r.secondary)
    assert row.stars == ("", "")  # intercepts near 0 on the normalised scale
    assert any("90% confidence intervals" in n and "Satterthwaite" in n for n in t.notes)
    assert "* p < 0.05, ** p < 0.01, *** p < 0.001" in t.notes


def test_table_of_different_data_is_a_note_not_a_refusal(exam_fits) -> None:
    a, _ = exam_fits
    data, _ = load_case("exam")
    half = tiers.fit("normexam ~ standLRT + (1 | school)", data.iloc[: len(data) // 2])
    t = tiers.table(a, half)
    assert any("fitted to different data" in n and "2,029" in n for n in t.notes)
    same = tiers.table(a, a)
    assert not any("different data" in n for n in same.notes)


def test_table_refuses_bad_input(exam_fits) -> None:
    a, _ = exam_fits
    with pytest.raises(ComparisonError, match="at least one"):
        tiers.table()
    with pytest.raises(ComparisonError, match="argument 2 is a DataFrame"):
        tiers.table(a, pd.DataFrame())
    with pytest.raises(ComparisonError, match="distinct names"):
        tiers.table(a, a, names=["x", "x"])
    with pytest.raises(ValueError, match="std_error, conf_int"):
        tiers.table(a, statistic="se")
    with pytest.raises(TypeError, match="stars"):
        tiers.table(a, stars="yes")


class _Cells(HTMLParser):
    """Counts rows and cells of each row, and collects text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append(0)
        elif tag in ("td", "th"):
            self.rows[-1] += 1
        if tag not in ("br",):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()


def test_renderings_have_one_cell_per_model(exam_fits) -> None:
    a, b = exam_fits
    t = tiers.table(a, b, stars=True, names=["m_1", "50%"])
    n = len(t.rows)
    tex = t.to_latex()
    body = tex[tex.index("\\toprule") : tex.index("\\bottomrule")]
    lines = [ln for ln in body.splitlines() if ln.endswith("\\\\")]
    assert len(lines) == n + 1 and all(ln.count(" & ") == 2 for ln in lines)
    assert "m\\_1 & 50\\%" in tex and "$^{***}$" in tex
    assert tex.count("\\midrule") == 1 + len({r.section for r in t.rows}) - 1
    md = t.to_markdown().split("\n\n")[0].splitlines()
    assert len(md) == n + 2
    assert all(len(re.split(r"(?<!\\)\|", ln)) == 5 for ln in md)
    parser = _Cells()
    parser.feed(t.to_html())
    assert not parser.open and parser.rows[: n + 1] == [3] * (n + 1)
    assert len(parser.rows) == n + 1 + len(t.notes)
    frame = t.to_frame()
    assert frame.shape == (n, 2) and frame.loc[("fixed", "standLRT", "estimate"), "m_1"].endswith(
        "***"
    )
    assert frame.loc[("fixed", "standLRT", "std_error"), "50%"].startswith("(")


@pytest.mark.parametrize(
    ("fmt", "marker"), [("tex", "\\toprule"), ("md", "|---"), ("html", "<table")]
)
def test_cli_table(fmt: str, marker: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tiers.cli", "fit", "Yield ~ 1 + (1 | Batch)",
         str(REFERENCE / "dyestuff.csv"), "--table", fmt],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout and "ICC (Batch)" in proc.stdout
    assert "Mixed-effects" not in proc.stdout  # the table replaces the summary


def test_cli_table_refuses_unknown_format(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tiers.cli", "fit", "Yield ~ 1 + (1 | Batch)",
         str(REFERENCE / "dyestuff.csv"), "--table", "docx"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "tex, md, html" in proc.stderr


def test_singular_fit_table_has_no_icc_interval_problem() -> None:
    data, _ = load_case("dyestuff2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        res = tiers.fit("Yield ~ 1 + (1 | Batch)", data)
    t = tiers.table(res)
    assert float(_cell(t, "SD (Intercept | Batch)")) == 0.0


def test_augment_adds_fitted_fixed_and_residuals() -> None:
    res, _ = fit_reference("sleepstudy", "corr_REML")
    a = res.augment()
    np.testing.assert_allclose(a.fitted, res.fitted(), rtol=1e-12)
    np.testing.assert_allclose(a.resid, res.residuals(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.fixed, res.predict(re="exclude")["mean"], rtol=1e-12)
    np.testing.assert_allclose(a.Reaction, a.fitted + a.resid, rtol=1e-12)


def test_table_puts_panel_estimators_next_to_mixed_models() -> None:
    from tiers.panel import fixed_effects, random_effects

    data, _ = load_case("sleepstudy")
    mixed = tiers.fit("Reaction ~ Days + (1 | Subject)", data)
    fe = fixed_effects(data, "Reaction", ["Days"], "Subject")
    re_ = random_effects(data, "Reaction", ["Days"], "Subject")
    t = tiers.table(mixed, fe, re_, names=["mixed", "fe", "re"], digits=4)
    for col, m in ((1, fe), (2, re_)):
        est = m.coef.loc["Days"]
        assert float(_cell(t, "Days", col)) == pytest.approx(est.estimate, abs=5e-5)
        assert float(_cell(t, "Days", col, True).strip("()")) == pytest.approx(
            est.std_error, abs=5e-5
        )
        assert float(_cell(t, "SD (Residual)", col)) == pytest.approx(m.sigma_e, abs=5e-5)
        assert float(_cell(t, "ICC (Subject)", col)) == pytest.approx(m.rho, abs=5e-5)
        assert _cell(t, "Log-likelihood", col) == ""  # not likelihood fits
    assert _cell(t, "(Intercept)", 1) != ""  # Stata's _cons under the mixed model's name
    assert _cell(t, "R2 within", 0) == "" and _cell(t, "R2 marginal", 1) == ""
    assert [_cell(t, "Method", c) for c in range(3)] == ["REML", "FE (within)", "RE (GLS)"]
    assert any(n.startswith("fe: xtreg fe, t tests with 161 df") for n in t.notes)
    assert not any("different data" in n for n in t.notes)  # same N; panels keep no signature
