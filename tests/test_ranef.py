"""Conditional modes and SDs of the random effects against lme4's ``ranef(condVar = TRUE)``
(../shared/reference, every case), predictions and caterpillar data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import tiers
import tiers.engine.sparse_modes
from tiers.errors import DataError

from .conftest import REFERENCE, fit_reference, load_case

#: At tiers' own optimum: modes and conditional SDs depend on theta to first order, and theta
#: agrees with lme4's to ~1e-4 absolute (tolerances.THETA_ATOL); the largest deviation seen is
#: 6e-5 relative (exam's ML slope model).
OWN_FIT_RTOL = 2e-4
#: At lme4's theta (beta and sigma read off at that theta): the same closed-form quantities, so
#: only rounding and lme4's printed digits separate them.
AT_THETA_RTOL = 1e-6


def _all_fits() -> list[tuple[str, str]]:
    out = []
    for path in sorted(REFERENCE.glob("*.json")):
        for key in json.loads(path.read_text())["fits"]:
            out.append((path.stem, key))
    return out


FITS = _all_fits()


_fit = fit_reference


def _compare(frames: dict[str, pd.DataFrame], spec: dict, rtol: float) -> None:
    refs = spec["ranef_first_levels"]
    assert set(frames) == set(refs)
    for group, r in refs.items():
        df = frames[group]
        assert len(df) == r["nlevels"]
        rows = df.loc[r["levels"]]  # matched by level label ("a:A" for pastes' cask:batch)
        for term, values in r["conditional_modes"].items():
            np.testing.assert_allclose(
                rows[term], values, rtol=rtol, atol=1e-12, err_msg=f"{group} {term}"
            )
        for term, values in r["conditional_sd"].items():
            np.testing.assert_allclose(
                rows[f"{term}_sd"], values, rtol=rtol, atol=1e-12, err_msg=f"{group} {term} sd"
            )


@pytest.mark.parametrize(("case", "key"), FITS)
def test_ranef_matches_lme4(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    _compare(res.ranef(cond_var=True), spec, OWN_FIT_RTOL)


@pytest.mark.parametrize(("case", "key"), FITS)
def test_ranef_at_lme4_theta(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    names = res.to_dict()["theta_names"]
    theta = np.array([spec["theta"][n] for n in names])
    prep = res.design
    devfun = tiers.deviance_function(prep, reml=res.reml)
    sol = devfun.solve(theta)
    modes = devfun.conditional_modes(theta, sol.beta, sol.sigma)
    frames = {}
    for t, m in zip(prep.terms, modes, strict=True):
        cols = {z: m.b[:, j] for j, z in enumerate(t.znames)}
        cols |= {f"{z}_sd": np.sqrt(m.cov[:, j, j]) for j, z in enumerate(t.znames)}
        frames[t.name] = pd.DataFrame(cols, index=t.factor.labels(prep.frame.data))
    _compare(frames, spec, AT_THETA_RTOL)


def test_ranef_without_cond_var_and_singular_fit() -> None:
    res, _ = _fit("dyestuff2", "ri_REML")
    frames = res.ranef(cond_var=False)
    assert list(frames["Batch"].columns) == ["(Intercept)"]
    assert (frames["Batch"]["(Intercept)"] == 0).all()


def test_crossed_cond_var_above_the_dense_limit(monkeypatch) -> None:
    """Above the dense limit the crossed engine's own conditional SDs are used."""
    res, spec = _fit("penicillin", "crossed_REML")
    monkeypatch.setattr(tiers.engine.sparse_modes, "DENSE_LIMIT", 10)
    _compare(res.ranef(), spec, OWN_FIT_RTOL)


def test_nested_tree_equals_dense_computation() -> None:
    """The tree recursion (three nested levels with a slope) against dense linear algebra."""
    rng = np.random.default_rng(4)
    n = 480
    a = rng.integers(0, 6, n)
    b = a * 3 + rng.integers(0, 3, n)
    c = b * 2 + rng.integers(0, 2, n)
    x = rng.normal(size=n)
    y = (
        1
        + 0.5 * x
        + 1.5 * rng.normal(size=6)[a]
        + rng.normal(size=18)[b]
        + 0.8 * rng.normal(size=36)[c]
        + 0.7 * rng.normal(size=36)[c] * x
        + 0.5 * rng.normal(size=n)
    )
    data = pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "c": c})
    res = tiers.fit("y ~ x + (1 | a) + (1 | b) + (1 + x | c)", data)
    assert res.engine == "tree"
    prep = res.design
    blocks, lam = [], []
    at = 0
    for t in prep.terms:
        T = t.cov.factor(res.theta[at : at + t.cov.n_theta])
        at += t.cov.n_theta
        Z = np.zeros((n, t.nlevels * t.q))
        for j in range(t.q):
            Z[np.arange(n), t.codes * t.q + j] = t.Z[:, j]
        blocks.append(Z)
        lam.append(np.kron(np.eye(t.nlevels), T))
    Z = np.hstack(blocks)
    L = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for m in lam:
        L[o : o + m.shape[0], o : o + m.shape[0]] = m
        o += m.shape[0]
    ZL = Z @ L
    P = ZL.T @ ZL + np.eye(Z.shape[1])
    r = prep.frame.y - prep.frame.X @ res.beta
    bvec = L @ np.linalg.solve(P, ZL.T @ r)
    C = res.sigma**2 * L @ np.linalg.inv(P) @ L.T
    modes = res.conditional_modes()
    o = 0
    for t, m in zip(prep.terms, modes, strict=True):
        k = t.nlevels * t.q
        np.testing.assert_allclose(m.b.ravel(), bvec[o : o + k], rtol=1e-9, atol=1e-12)
        for g in range(t.nlevels):
            sl = slice(o + g * t.q, o + (g + 1) * t.q)
            np.testing.assert_allclose(m.cov[g], C[sl, sl], rtol=1e-9, atol=1e-12)
        o += k


# -------------------------------------------------------------------------------- predict --


def test_fitted_values_are_fixed_plus_random_parts() -> None:
    res, _ = _fit("sleepstudy", "corr_REML")
    data, _ = load_case("sleepstudy")
    fitted = res.predict()["mean"]
    re = res.ranef(cond_var=False)["Subject"]
    b = re.loc[data["Subject"].astype(str)].to_numpy()
    expect = (
        res.fixef["(Intercept)"]
        + res.fixef["Days"] * data["Days"]
        + b[:, 0]
        + b[:, 1] * data["Days"]
    )
    np.testing.assert_allclose(fitted, expect, rtol=1e-12)
    pop = res.predict(data, re="exclude")["mean"]
    np.testing.assert_allclose(pop, res.fixef["(Intercept)"] + res.fixef["Days"] * data["Days"])
    np.testing.assert_allclose(res.predict(data)["mean"], fitted, rtol=1e-12)


def test_prediction_intervals() -> None:
    res, _ = _fit("sleepstudy", "corr_REML")
    new = pd.DataFrame({"Days": [3.0, 3.0], "Subject": [308, 999]})
    out = res.predict(new, interval=True, level=0.9)
    assert list(out.columns) == ["mean", "lower", "upper"]
    x = np.array([1.0, 3.0])
    z = 1.6448536269514722  # normal quantile of 0.95
    v_fix = x @ res.vcov.to_numpy() @ x
    # seen subject: conditional covariance of its effects
    sd = res.ranef()["Subject"].loc["308"]
    modes = res.conditional_modes()[0]
    C = modes.cov[0]
    v_seen = v_fix + x @ C @ x + res.sigma**2
    assert out["upper"].iloc[0] - out["mean"].iloc[0] == pytest.approx(z * np.sqrt(v_seen))
    assert C[0, 0] == pytest.approx(sd["(Intercept)_sd"] ** 2)
    # unseen subject: the population mean and the full random-effect covariance
    G = res.sigma**2 * np.array(
        [
            [res.theta[0] ** 2, res.theta[0] * res.theta[1]],
            [res.theta[0] * res.theta[1], res.theta[1] ** 2 + res.theta[2] ** 2],
        ]
    )
    v_new = v_fix + x @ G @ x + res.sigma**2
    assert out["mean"].iloc[1] == pytest.approx(x @ res.beta)
    assert out["upper"].iloc[1] - out["mean"].iloc[1] == pytest.approx(z * np.sqrt(v_new))
    assert v_new > v_seen


def test_new_level_error_names_factor_and_level() -> None:
    res, _ = _fit("pastes", "nested_REML")
    new = pd.DataFrame({"batch": ["A", "A", "K"], "cask": ["a", "z", "a"]})
    with pytest.raises(DataError, match=r"grouping factor 'batch'.*'K'"):
        res.predict(new, new_levels="error")
    with pytest.raises(DataError, match=r"grouping factor 'cask:batch'.*'z:A'"):
        res.predict(new.iloc[:2], new_levels="error")
    out = res.predict(new)  # population: unseen groups contribute 0
    re = res.ranef(cond_var=False)
    assert out["mean"].iloc[0] == pytest.approx(
        res.beta[0]
        + re["batch"].loc["A", "(Intercept)"]
        + re["cask:batch"].loc["a:A", "(Intercept)"]
    )
    assert out["mean"].iloc[1] == pytest.approx(res.beta[0] + re["batch"].loc["A", "(Intercept)"])
    assert out["mean"].iloc[2] == pytest.approx(res.beta[0])


def test_predict_bad_options_and_missing_columns() -> None:
    res, _ = _fit("dyestuff", "ri_REML")
    with pytest.raises(ValueError, match="include, exclude"):
        res.predict(re="some")
    with pytest.raises(ValueError, match="population, error"):
        res.predict(new_levels="drop")
    with pytest.raises(DataError, match="'Batch'"):
        res.predict(pd.DataFrame({"x": [1]}))


def test_predict_with_a_categorical_fixed_effect() -> None:
    data, _ = load_case("sleepstudy")
    data = data.assign(grp=(data["Subject"] % 3).astype(str))
    res = tiers.fit("Reaction ~ Days + C(grp) + (1 | Subject)", data)
    one = data.iloc[[5]]
    assert res.predict(one)["mean"].iloc[0] == pytest.approx(res.predict()["mean"].iloc[5])


def test_caterpillar_sorted_with_intervals() -> None:
    res, _ = _fit("exam", "rs_REML")
    cat = res.caterpillar("school", "standLRT", level=0.95)
    assert list(cat.columns) == ["level", "mode", "lower", "upper"]
    assert len(cat) == 65 and cat["mode"].is_monotonic_increasing
    row = cat.set_index("level").loc["1"]
    sd = res.ranef()["school"].loc["1", "standLRT_sd"]
    assert row["upper"] - row["mode"] == pytest.approx(1.959963984540054 * sd)
    with pytest.raises(ValueError, match="school"):
        res.caterpillar("pupil")
    with pytest.raises(ValueError, match=r"\(Intercept\), standLRT"):
        res.caterpillar("school", "age")


def test_fitted_and_residuals_add_up_to_the_response() -> None:
    data, _ = load_case("sleepstudy")
    res = tiers.fit("Reaction ~ Days + (Days | Subject)", data)
    fitted, resid = res.fitted(), res.residuals()
    np.testing.assert_allclose(fitted.to_numpy() + resid.to_numpy(), data["Reaction"], rtol=1e-12)
    # BLUP residuals are orthogonal to the fixed-effects columns (the GLS normal equations with
    # the conditional modes plugged in): X' r = 0 up to rounding
    X = np.column_stack([np.ones(len(data)), data["Days"]])
    np.testing.assert_allclose(
        X.T @ resid.to_numpy(), 0.0, atol=1e-6 * np.abs(data["Reaction"]).sum()
    )
