"""Predictive margins and average marginal effects against R's emmeans (tests/data/margins)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers

from .conftest import load_case
from .tolerances import BETA_ATOL_SE, BETA_RTOL, SE_RTOL

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "margins" / "margins.json").read_text(encoding="utf-8"))["margins"]
#: Satterthwaite df at our optimum against lmerTest's at lme4's (as tests/test_satterthwaite.py).
OWN_FIT_DF_RTOL = 2e-4


@cache
def _fit(case: str, formula: str) -> tiers.LmmResult:
    data = pd.read_csv(DATA / "machines.csv") if case == "machines" else load_case(case)[0]
    return tiers.fit(formula, data)


@pytest.mark.parametrize("key", list(REF))
def test_margins_match_emmeans(key: str) -> None:
    spec = REF[key]
    res = _fit(spec["case"], spec["formula"])
    got = res.margins(spec["term"], spec.get("at"), kind=spec["kind"], ddf=spec["ddf"])
    rows = spec["rows"]
    assert len(got) == len(rows)
    for (_, g), r in zip(got.iterrows(), rows, strict=True):
        if spec["kind"] == "predictive":
            assert float(g.value) == float(r["value"]) if spec.get("at") else g.value == r["value"]
        elif r["value"] != "overall":
            assert g.value == r["value"]  # emmeans writes "B - A" too
        np.testing.assert_allclose(
            g.estimate, r["estimate"], rtol=BETA_RTOL, atol=BETA_ATOL_SE * r["std_error"]
        )
        np.testing.assert_allclose(g.std_error, r["std_error"], rtol=SE_RTOL)
        if r["df"] == "Inf":
            assert np.isinf(g.df)
        else:
            np.testing.assert_allclose(g.df, r["df"], rtol=OWN_FIT_DF_RTOL)
        half = r["conf_high"] - r["estimate"]
        np.testing.assert_allclose(g.conf_high - g.estimate, half, rtol=SE_RTOL + OWN_FIT_DF_RTOL)
    assert got.attrs["term"] == spec["term"] and got.attrs["kind"] == spec["kind"]


def test_dydx_of_a_quadratic_is_the_mean_derivative() -> None:
    # d/dx (b1 x + b2 x^2) = b1 + 2 b2 x: the central difference is exact for a quadratic
    data, _ = load_case("sleepstudy")
    res = tiers.fit("Reaction ~ Days + I(Days**2) + (1 | Subject)", data)
    b = res.fixef
    got = res.margins("Days", kind="dydx")
    want = b["Days"] + 2.0 * b["I(Days ** 2)"] * data["Days"].mean()
    np.testing.assert_allclose(got.estimate.iloc[0], want, rtol=1e-8)
    at = res.margins("Days", [0.0, 9.0], kind="dydx")
    np.testing.assert_allclose(
        at.estimate, [b["Days"], b["Days"] + 18.0 * b["I(Days ** 2)"]], rtol=1e-7
    )
    # the SE of b1 + 2 b2 x by the delta method
    g = np.array([0.0, 1.0, 18.0])
    np.testing.assert_allclose(
        at.std_error.iloc[1], np.sqrt(g @ res.vcov.to_numpy() @ g), rtol=1e-7
    )


def test_factor_effects_are_against_the_fits_reference_level() -> None:
    data = pd.read_csv(DATA / "machines.csv")
    a = _fit("machines", "score ~ Machine + (1 | Worker)").margins("Machine", kind="dydx")
    res = tiers.fit('score ~ C(Machine, Treatment("B")) + (1 | Worker)', data)
    b = res.margins("Machine", kind="dydx")
    assert list(b.value) == ["A - B", "C - B"]
    want = [-a.estimate[0], a.estimate[1] - a.estimate[0]]
    np.testing.assert_allclose(b.estimate, want, rtol=1e-6)
    np.testing.assert_allclose(b.estimate, res.fixef.iloc[1:], rtol=1e-10)  # the coefficients


def test_margins_refuse_bad_input() -> None:
    res = _fit("machines", "score ~ Machine + (1 | Worker)")
    with pytest.raises(ValueError, match="'Worker' is not a variable of the model's fixed part"):
        res.margins("Worker")
    with pytest.raises(ValueError, match="its levels: A, B, C"):
        res.margins("Machine", ["D"])
    with pytest.raises(ValueError, match="predictive, dydx"):
        res.margins("Machine", kind="eyex")
    with pytest.raises(ValueError, match="normal, satterthwaite, kenward-roger"):
        res.margins("Machine", ddf="kr")
    hsb = _fit("hsb82", "mAch ~ meanses * cses + (cses | school)")
    with pytest.raises(ValueError, match="numeric: give the values"):
        hsb.margins("cses")
    with pytest.raises(ValueError, match="numbers"):
        hsb.margins("cses", ["low"])
    data, _ = load_case("dyestuff")
    with pytest.raises(ValueError, match="intercept only"):
        tiers.fit("Yield ~ 1 + (1 | Batch)", data).margins("Batch")


def test_marginsplot_draws_each_margin() -> None:
    res = _fit("machines", "score ~ Machine + (1 | Worker)")
    fig = tiers.marginsplot(res.margins("Machine", kind="dydx"))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["B - A", "C - A"]
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_ydata(), res.margins("Machine", kind="dydx").estimate)
    assert any(ln.get_linestyle() == "--" for ln in ax.lines)  # zero line for effects
    with pytest.raises(ValueError, match="lacks conf_low"):
        tiers.marginsplot(pd.DataFrame({"value": [1], "estimate": [2.0]}))
