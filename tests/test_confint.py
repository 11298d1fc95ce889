"""Intervals for the variance parameters and fixed effects (wald, profile, profile-ml, bootstrap)
and for the variance shares, against lme4's profile intervals in ../shared/reference."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.optimize import minimize

import tiers
from tiers.errors import SingularFitWarning
from tiers.inference.profile import Profiler
from tiers.variance.scale import SdCor

from .conftest import fit_reference, load_case

#: lme4's profile intervals come from a spline through its profile grid, ours from root finding
#: on the same ML profile: the observed agreement is 2e-4 or better (dyestuff's SD and dyestuff2's
#: intercept, where lme4's grid is coarsest); 1e-3 is the tolerance asked for.
PROFILE_RTOL = 1e-3
#: hsb82: lme4 warned "non-monotonic profile" and "bad spline fit ... falling back to linear
#: interpolation" for the correlation, and "unexpected decrease in profile: using minstep" (4x);
#: its correlation lower end (-0.5743) lies outside the set where the ML profile stays below
#: z^2 (tiers' profile deviance there is 3.9007 > 3.8415, confirmed by Nelder-Mead from several
#: starts in `test_hsb82_bounds_are_true_crossings`), and at its lower end for sd_cses (0.4322) the
#: profile deviance is 3.807 < 3.8415. tiers' bounds differ from lme4's by 5.9e-3 and 4.8e-3
#: relative there; they are checked to 1e-2 and shown to be true crossings instead.
LOOSE = {("hsb82", "cor_cses.(Intercept)|school"): 1e-2, ("hsb82", "sd_cses|school"): 1e-2}

PROFILE_CASES = [
    ("sleepstudy", "corr_REML"),
    ("sleepstudy", "uncorr_REML"),
    ("dyestuff", "ri_REML"),
    ("dyestuff2", "ri_REML"),
    ("pastes", "nested_REML"),
    ("penicillin", "crossed_REML"),
    ("exam", "ri_REML"),
    ("exam", "rs_REML"),
    ("hsb82", "rs_REML"),
]


_fit = fit_reference


def test_every_reference_profile_is_covered() -> None:
    import json

    from .conftest import REFERENCE

    have = set()
    for path in REFERENCE.glob("*.json"):
        ref = json.loads(path.read_text())
        for key, spec in ref["fits"].items():
            cp = spec.get("confint_profile")
            if cp and not cp.get("skipped"):
                have.add((path.stem, key))
    assert have == set(PROFILE_CASES)


@pytest.mark.parametrize(("case", "key"), PROFILE_CASES)
def test_profile_ml_matches_lme4(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        ci = res.confint("profile-ml")
    got = ci.set_index("name")
    ref = spec["confint_profile"]["parameters"]
    assert set(got.index) == {p["name"] for p in ref}
    for p in ref:
        rtol = LOOSE.get((case, p["name"]), PROFILE_RTOL)
        row = got.loc[p["name"]]
        for end in ("lower", "upper"):
            if p[end] == 0.0:
                assert row[end] == 0.0, (p["name"], end)
            else:
                np.testing.assert_allclose(
                    row[end], p[end], rtol=rtol, err_msg=f"{p['name']} {end}"
                )
    assert ci.attrs["criterion"] == "ML"
    assert "ML" in ci.attrs["notes"][0]


def test_hsb82_bounds_are_true_crossings() -> None:
    """Where tiers and lme4 disagree (hsb82), an independent optimiser agrees with tiers: the
    profile deviance at tiers' bounds is z^2, and at lme4's correlation lower end it is above."""
    res, spec = _fit("hsb82", "rs_REML", reml=False)
    sc = SdCor.from_terms(res.terms)
    pr = Profiler(res.devfun, sc, np.asarray(res.theta), res.sigma, res.xnames)
    z2 = stats.norm.ppf(0.975) ** 2
    i = sc.names.index("cor_cses.(Intercept)|school")
    free = [k for k in range(sc.size) if k != i]

    def nelder_mead(v: float) -> float:
        def f(x):
            p = pr.p_hat.copy()
            p[i] = v
            p[free] = np.abs(x)
            return pr._f(p) - pr.dev_min

        return min(
            minimize(
                f,
                pr.p_hat[free] * s,
                method="Nelder-Mead",
                options={"xatol": 1e-9, "fatol": 1e-11, "maxfev": 4000},
            ).fun
            for s in (1.0, 0.8, 1.2)
        )

    lo, hi = pr.varpar_interval(i, float(np.sqrt(z2)))
    assert nelder_mead(lo.value) == pytest.approx(z2, abs=1e-5)
    assert nelder_mead(hi.value) == pytest.approx(z2, abs=1e-5)
    lme4_lo = next(
        p["lower"] for p in spec["confint_profile"]["parameters"] if p["name"] == sc.names[i]
    )
    assert nelder_mead(lme4_lo) > z2 + 0.05


def test_profile_on_an_ml_fit_equals_profile_ml() -> None:
    res, _ = _fit("dyestuff", "ri_ML")
    a, b = res.confint("profile"), res.confint("profile-ml")
    pd.testing.assert_frame_equal(a, b)


def test_reml_profile_bounds_are_crossings_of_the_reml_criterion() -> None:
    """REML profiles (no lme4 reference): at each bound the REML criterion minimised over the
    other parameters by an independent optimiser exceeds its minimum by z^2; halfway to the
    estimate it is below."""
    res, _ = _fit("sleepstudy", "uncorr_REML")
    ci = res.confint("profile").set_index("name")
    assert ci.attrs["criterion"] == "REML" and "REML" in ci.attrs["notes"][0]
    ml = res.confint("profile-ml").set_index("name")
    # REML intervals of the SDs sit above the ML ones (REML removes the downward bias)
    assert ci.loc["sd_(Intercept)|Subject", "upper"] > ml.loc["sd_(Intercept)|Subject", "upper"]
    sc = SdCor.from_terms(res.terms)
    pr = Profiler(res.devfun, sc, np.asarray(res.theta), res.sigma, res.xnames)
    z2 = stats.norm.ppf(0.975) ** 2
    for i, name in enumerate(sc.names):
        free = [k for k in range(sc.size) if k != i]

        def prof(v, i=i, free=free):
            def f(x):
                p = pr.p_hat.copy()
                p[i] = v
                p[free] = np.abs(x)
                return pr._f(p) - pr.dev_min

            return minimize(
                f, pr.p_hat[free], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11}
            ).fun

        for end in ("lower", "upper"):
            v = ci.loc[name, end]
            assert prof(v) == pytest.approx(z2, abs=1e-4), (name, end)
            assert prof(0.5 * (v + pr.p_hat[i])) < z2


def test_fixed_effect_reml_profile_is_centred_on_the_estimate() -> None:
    res, _ = _fit("exam", "ri_REML")
    ci = res.confint("profile").set_index("name")
    wald = res.confint("wald").set_index("name")
    for name in res.xnames:
        assert ci.loc[name, "lower"] < res.fixef[name] < ci.loc[name, "upper"]
        # 4,059 rows: the profile interval is close to the normal one
        np.testing.assert_allclose(
            ci.loc[name, ["lower", "upper"]], wald.loc[name, ["lower", "upper"]], atol=2e-3
        )


def test_wald_uses_stata_scales() -> None:
    res, _ = _fit("sleepstudy", "corr_REML")
    ci = res.confint("wald").set_index("name")
    sdi, cor = res.sd_inference, res.corr_inference
    assert list(ci.index) == [
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
        "(Intercept)",
        "Days",
    ]
    assert ci.loc["sd_Days|Subject", "lower"] == sdi.lower[1]
    assert ci.loc["cor_Days.(Intercept)|Subject", "upper"] == cor.upper[0]
    assert ci.loc["sigma", "upper"] == sdi.upper[-1]
    table = res.coef_table()
    assert ci.loc["Days", "lower"] == table.loc["Days", "ci_lower"]
    # another level: the same SE on the log scale
    ci90 = res.confint("wald", 0.9).set_index("name")
    half95 = np.log(ci.loc["sigma", "upper"] / ci.loc["sigma", "estimate"])
    half90 = np.log(ci90.loc["sigma", "upper"] / ci90.loc["sigma", "estimate"])
    assert half90 / half95 == pytest.approx(stats.norm.ppf(0.95) / stats.norm.ppf(0.975))


# ------------------------------------------------------------------------------ bad input --


def test_singular_fit_interval_starts_at_zero() -> None:
    res, _ = _fit("dyestuff2", "ri_REML")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prof = res.confint("profile").set_index("name")
        wald = res.confint("wald").set_index("name")
    assert prof.loc["sd_(Intercept)|Batch", "lower"] == 0.0
    assert 0.0 < prof.loc["sd_(Intercept)|Batch", "upper"] < 5.0
    assert any("estimated at zero" in n and "starts at 0" in n for n in prof.attrs["notes"])
    assert np.isnan(wald.loc["sd_(Intercept)|Batch", "lower"])
    assert any("method='profile'" in n for n in wald.attrs["notes"])


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1, 95])
def test_level_outside_the_unit_interval(level) -> None:
    res, _ = _fit("dyestuff", "ri_REML")
    with pytest.raises(ValueError, match=r"between 0 and 1"):
        res.confint("wald", level)
    with pytest.raises(ValueError, match=r"between 0 and 1"):
        res.variance_shares(level)


def test_unknown_method_lists_the_valid_ones() -> None:
    res, _ = _fit("dyestuff", "ri_REML")
    with pytest.raises(ValueError, match="wald, profile, profile-ml, bootstrap"):
        res.confint("likelihood")
    with pytest.raises(ValueError, match="delta, profile, bootstrap"):
        res.variance_shares(method="wald")


# ------------------------------------------------------------------------------ bootstrap --


def test_bootstrap_is_reproducible_whatever_the_workers() -> None:
    res, _ = _fit("dyestuff", "ri_REML")
    a = res.bootstrap(24, seed=7, workers=1, progress=False)
    b = res.bootstrap(24, seed=8, workers=2, progress=True)
    c = tiers.fit(res.formula, load_case("dyestuff")[0]).bootstrap(24, seed=7, workers=2)
    np.testing.assert_array_equal(a.models[0].theta, c.models[0].theta)
    assert not np.array_equal(a.models[0].theta, b.models[0].theta)
    ci = res.confint("bootstrap", n_boot=24, seed=7).set_index("name")
    assert ci.attrs["n_boot"] == 24 and ci.attrs["n_failed"] == 0
    assert ci.loc["sigma", "lower"] < res.sigma < ci.loc["sigma", "upper"]
    again = res.bootstrap(24, seed=7)  # a new value, the same replicates for the same seed
    assert again is not res.bootstrap(24, seed=7)
    assert np.array_equal(again.models[0].theta, res.bootstrap(24, seed=7).models[0].theta)


def test_bootstrap_counts_failed_replicates(monkeypatch) -> None:
    import tiers.inference.bootstrap

    res, _ = _fit("dyestuff", "ri_REML")
    real = tiers.inference.bootstrap.fit_design
    calls = {"n": 0}

    def flaky(prep, **kw):
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            raise np.linalg.LinAlgError("simulated failure")
        r = real(prep, **kw)
        if calls["n"] % 7 == 0:
            return dataclasses.replace(r, opt=dataclasses.replace(r.opt, converged=False))
        return r

    monkeypatch.setattr(tiers.inference.bootstrap, "fit_design", flaky)
    boot = res.bootstrap(30, seed=1, workers=1)
    assert int(boot.failed.sum()) == 6  # calls 5, 10, ..., 30
    assert boot.n_failed == 6 + 4  # and 7, 14, 21, 28 did not converge
    notes = " ".join(boot.notes)
    assert "10 of 30 replicates left out" in notes and "did not converge" in notes
    assert "simulated failure" in notes
    calls["n"] = 0  # a new bootstrap (results are not cached): the same failures again
    ci = res.confint("bootstrap", n_boot=30, seed=1, workers=1)
    assert ci.attrs["n_failed"] == 10
    assert any("left out" in n for n in ci.attrs["notes"])
    assert np.isfinite(ci["lower"]).all()


def test_bootstrap_bad_arguments() -> None:
    res, _ = _fit("dyestuff", "ri_REML")
    with pytest.raises(ValueError, match="n_boot"):
        res.bootstrap(0)
    with pytest.raises(ValueError, match="workers"):
        res.bootstrap(10, workers=0)


# ------------------------------------------------------------------------- variance shares --


@pytest.mark.parametrize("method", ["delta", "profile", "bootstrap"])
def test_share_intervals_stay_in_the_unit_interval(method: str) -> None:
    res, _ = _fit("pastes", "nested_REML")
    table = res.variance_shares(method=method, n_boot=60, seed=3)
    assert table.attrs["method"] == method
    for col in ("share", "icc"):
        rows = table.dropna(subset=[col])
        lo, hi = rows[f"{col}_lower"], rows[f"{col}_upper"]
        assert ((lo >= 0) & (hi <= 1) & (lo <= rows[col] + 1e-12) & (rows[col] <= hi + 1e-12)).all()


def test_profile_share_of_a_zero_component_starts_at_zero() -> None:
    res, _ = _fit("dyestuff2", "ri_REML")
    table = res.variance_shares(method="profile")
    assert table.loc[0, "share"] == 0.0 and table.loc[0, "share_lower"] == 0.0
    assert 0.0 < table.loc[0, "share_upper"] < 1.0


def test_profile_share_agrees_with_the_sd_profile() -> None:
    """One random intercept: the ICC is a monotone function of theta = sd/sigma, so its profile
    interval is the image of theta's. Check against the profile of sd/sigma computed directly."""
    res, _ = _fit("dyestuff", "ri_ML")
    table = res.variance_shares(method="profile")
    sc = SdCor.from_terms(res.terms)
    pr = Profiler(res.devfun, sc, np.asarray(res.theta), res.sigma, res.xnames)
    z2 = stats.norm.ppf(0.975) ** 2

    def theta_profile(t: float) -> float:  # sigma profiled analytically: the profiled deviance
        return res.devfun.deviance(np.array([t])) - pr.dev_min

    for end in ("icc_lower", "icc_upper"):
        icc = table.loc[0, end]
        t = np.sqrt(icc / (1 - icc))
        assert theta_profile(t) == pytest.approx(z2, abs=1e-5)
