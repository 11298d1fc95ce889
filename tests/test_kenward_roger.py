"""Kenward-Roger's adjusted covariance, df and F tests against pbkrtest, and their properties.

References: ``tests/data/kr/*.json`` (made by tests/data/kr/make_kr.R with pbkrtest 0.5.2: a
split-plot, a crossed design, nested designs with slopes, balanced and unbalanced) and
``../shared/reference/rside/sleepstudy_kr.json``.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla

import tiers
from tiers.errors import FormulaError, InferenceError, SingularFitWarning
from tiers.inference import kr_parts as parts_module
from tiers.inference.kenward_roger import KenwardRoger
from tiers.inference.kr_parts import covariance_basis, kr_parts
from tiers.inference.satterthwaite import term_columns

from .conftest import REFERENCE
from .tolerances import (
    BETA_RTOL,
    KR_ADJUSTMENT_RTOL,
    KR_DF_RTOL,
    KR_EXACT_RTOL,
    KR_F_RTOL,
    KR_SE_RTOL,
)

KR_DIR = Path(__file__).parent / "data" / "kr"
CASES = ("oats_splitplot", "penicillin_crossed", "sleepstudy_unbalanced", "nested")


def _load(case: str) -> dict[str, Any]:
    with open(KR_DIR / f"{case}.json") as fh:
        return dict(json.load(fh))


def _data(spec: dict[str, Any]) -> pd.DataFrame:
    csv = spec["csv"]
    path = KR_DIR / csv if (KR_DIR / csv).exists() else REFERENCE / csv
    data = pd.read_csv(path)
    dropped = np.asarray(spec["rows_dropped"], dtype=int)
    return data.drop(index=data.index[dropped - 1]) if dropped.size else data


def _r_name(name: str) -> str:
    """formulaic's ``Variety[T.Victory]:N[T.N2]`` as R's ``VarietyVictory:NN2``."""
    return re.sub(r"\[T\.([^\]]*)\]", r"\1", name)


FITS = [(case, key) for case in CASES for key in _load(case)["fits"]]
_fitted: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}


def _fit(case: str, key: str) -> tuple[Any, dict[str, Any]]:
    if (case, key) not in _fitted:
        spec = _load(case)["fits"][key]
        with warnings.catch_warnings():  # dyestuff2 is a singular fit, as in lme4
            warnings.simplefilter("ignore", SingularFitWarning)
            _fitted[case, key] = (tiers.fit(spec["formula"], _data(spec)), spec)
    return _fitted[case, key]


@pytest.mark.parametrize(("case", "key"), FITS)
def test_coefficients_match_pbkrtest(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    assert [_r_name(n) for n in res.xnames] == [fe["name"] for fe in spec["fixed_effects"]]
    table = res.coef_table(ddf="kenward-roger")
    assert table.attrs["method"] == "Kenward-Roger"
    for name, fe in zip(res.xnames, spec["fixed_effects"], strict=True):
        row = table.loc[name]
        np.testing.assert_allclose(
            row["estimate"], fe["estimate"], rtol=BETA_RTOL, atol=1e-4 * fe["std_error"]
        )
        np.testing.assert_allclose(row["std_error"], fe["std_error_kr"], rtol=KR_SE_RTOL)
        np.testing.assert_allclose(row["df"], fe["df_kr"], rtol=KR_DF_RTOL)
        np.testing.assert_allclose(row["t"], fe["t_kr"], rtol=KR_SE_RTOL, atol=1e-4)


@pytest.mark.parametrize(("case", "key"), FITS)
def test_adjusted_covariance_matches_vcovadj(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    kr = res._kenward_roger
    p = len(res.xnames)  # (jsonlite writes a 1 x 1 matrix as a vector)
    v0 = np.asarray(spec["vcov"]).reshape(p, p)
    va = np.asarray(spec["vcov_adj"]).reshape(p, p)
    se = np.sqrt(np.diag(v0))
    # a covariance: twice an SE's relative error, on the scale of the SEs' product
    assert np.all(np.abs(kr.vcov - v0) <= 2 * KR_SE_RTOL * np.outer(se, se))
    ref_adj, adj = va - v0, kr.vcov_adj - kr.vcov
    scale = np.abs(va).max()
    if np.abs(ref_adj).max() < 1e-10 * scale:  # balanced: no adjustment, in R as here
        assert np.abs(adj).max() < 1e-10 * scale
    else:
        np.testing.assert_allclose(adj, ref_adj, atol=KR_ADJUSTMENT_RTOL * np.abs(ref_adj).max())
    np.testing.assert_allclose(res.vcov_kr.to_numpy(), kr.vcov_adj)


@pytest.mark.parametrize(("case", "key"), FITS)
def test_f_tests_match_krmodcomp(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    for test in spec["kr_tests"]:
        out = res.ftest(np.asarray(test["L"]), ddf="kenward-roger")
        assert out["num_df"] == test["NumDF"]
        np.testing.assert_allclose(out["den_df"], test["DenDF"], rtol=KR_DF_RTOL)
        np.testing.assert_allclose(out["F"], test["F"], rtol=KR_F_RTOL)
        np.testing.assert_allclose(out["p_value"], test["p_value"], rtol=1e-3, atol=1e-12)


def test_sleepstudy_shared_reference() -> None:
    with open(REFERENCE / "rside" / "sleepstudy_kr.json") as fh:
        ref = json.load(fh)
    spec = ref["fits"]["kr_slopes"]
    res = tiers.fit(spec["formula"], pd.read_csv(REFERENCE / "rside" / "sleepstudy_kr.csv"))
    table = res.coef_table(ddf="kenward-roger")
    for fe in spec["fixed_effects"]:
        row = table.loc[fe["name"]]
        np.testing.assert_allclose(row["std_error"], fe["std_error_kr"], rtol=KR_SE_RTOL)
        np.testing.assert_allclose(row["df"], fe["df_kr"], rtol=KR_DF_RTOL)
        np.testing.assert_allclose(row["p_value"], fe["p_value_kr"], rtol=1e-3)
    anova = res.anova(ddf="kenward-roger")
    for test in spec["anova_kr"]:
        row = anova.loc[test["term"]]
        assert row["num_df"] == test["NumDF"]
        np.testing.assert_allclose(row["den_df"], test["DenDF"], rtol=KR_DF_RTOL)
        np.testing.assert_allclose(row["F"], test["F"], rtol=KR_F_RTOL)


def test_balanced_split_plot_gives_the_anova_df() -> None:
    """Yates' oats: whole-plot error df (6-1)(3-1) = 10, subplot error df 3*(4-1)*(6-1) = 45."""
    res, _ = _fit("oats_splitplot", "balanced")
    names = [_r_name(n) for n in res.xnames]
    p = len(names)
    variety = np.zeros((2, p))
    for i, v in enumerate(("VarietyMarvellous", "VarietyVictory")):
        variety[i, names.index(v)] = 1.0
        variety[i, [j for j, n in enumerate(names) if n.startswith(v + ":")]] = 0.25
    nitro = np.zeros((3, p))
    for i, n in enumerate(("NN2", "NN4", "NN6")):
        nitro[i, names.index(n)] = 1.0
        nitro[i, [j for j, c in enumerate(names) if c.endswith(":" + n)]] = 1.0 / 3.0
    inter = np.eye(p)[[j for j, n in enumerate(names) if ":" in n]]
    for L, ndf, ddf in ((variety, 2, 10.0), (nitro, 3, 45.0), (inter, 6, 45.0)):
        out = res.ftest(L, ddf="kenward-roger")
        assert out["num_df"] == ndf
        np.testing.assert_allclose(out["den_df"], ddf, rtol=KR_EXACT_RTOL)
        # balanced: no adjustment and no scaling, the F of the classical split-plot ANOVA
        wald = L @ res.beta @ np.linalg.solve(L @ res.vcov.to_numpy() @ L.T, L @ res.beta)
        np.testing.assert_allclose(out["F"], wald / ndf, rtol=KR_EXACT_RTOL)
    for j, n in enumerate(names):  # a subplot contrast within a whole plot
        if n.startswith("NN") or ":" in n:
            assert res._kenward_roger.df(np.eye(p)[j]) == pytest.approx(45.0, rel=KR_EXACT_RTOL)


def test_balanced_one_way_and_slopes_df_are_groups_minus_one() -> None:
    pastes, _ = _fit("nested", "pastes")  # 10 batches
    assert pastes.coef_table(ddf="kenward-roger")["df"].iloc[0] == pytest.approx(9.0, 1e-8)
    data = pd.read_csv(REFERENCE / "sleepstudy.csv")  # 18 subjects, every one with Days 0-9
    res = tiers.fit("Reaction ~ Days + (Days | Subject)", data)
    np.testing.assert_allclose(res.coef_table(ddf="kenward-roger")["df"], 17.0, rtol=1e-8)


@pytest.mark.parametrize(("case", "key"), FITS)
def test_adjusted_covariance_is_at_least_the_unadjusted(case: str, key: str) -> None:
    kr = _fit(case, key)[0]._kenward_roger
    gap = np.linalg.eigvalsh(kr.vcov_adj - kr.vcov)
    assert gap.min() >= -1e-10 * np.abs(kr.vcov).max()
    se_adj, se = np.sqrt(np.diag(kr.vcov_adj)), np.sqrt(np.diag(kr.vcov))
    assert np.all(se_adj >= se * (1 - 1e-12))
    if key.startswith("unbalanced") or key in ("slopes", "independent", "exam_slopes"):
        assert gap.max() > 1e-8 * np.abs(kr.vcov).max()  # and strictly larger somewhere


def _dense_parts(res: Any) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """Phi, P_r, Q_rs, T_rs straight from the definitions with n x n matrices."""
    X, sigma = np.asarray(res.X), res.sigma
    n = X.shape[0]
    G: list[np.ndarray] = []
    at = 0
    for term in res.design.terms:
        th = np.asarray(res.theta)[at : at + term.cov.n_theta]
        at += term.cov.n_theta
        same = term.codes[:, None] == term.codes[None, :]
        for E in covariance_basis(term.cov):
            G.append(np.where(same, term.Z @ E @ term.Z.T, 0.0))
        assert th.size == term.cov.n_theta
    G.append(np.eye(n))
    gamma = []
    for term, info in zip(res.design.terms, res.terms, strict=True):
        C = sigma**2 * term.cov.covariance(np.asarray(res.theta)[info.start : info.stop])
        basis = covariance_basis(term.cov)
        B = np.array([E.ravel() for E in basis]).T
        gamma += list(np.linalg.lstsq(B, C.ravel(), rcond=None)[0])
    gamma.append(sigma**2)
    Sigma = sum(g * Gr for g, Gr in zip(gamma, G, strict=True))
    Si = sla.inv(Sigma)
    phi = np.linalg.inv(X.T @ Si @ X)
    P = [-X.T @ Si @ Gr @ Si @ X for Gr in G]
    Q = np.array([[X.T @ Si @ Gr @ Si @ Gs @ Si @ X for Gs in G] for Gr in G])
    T = np.array([[np.trace(Si @ Gr @ Si @ Gs) for Gs in G] for Gr in G])
    return phi, P, Q, T


@pytest.mark.parametrize(
    ("case", "key"),
    [
        ("sleepstudy_unbalanced", "slopes"),
        ("sleepstudy_unbalanced", "independent"),
        ("penicillin_crossed", "unbalanced"),
        ("oats_splitplot", "unbalanced"),
    ],
)
def test_blockwise_parts_equal_dense_algebra(case: str, key: str) -> None:
    res, _ = _fit(case, key)
    phi, P, Q, T = _dense_parts(res)
    got = kr_parts(list(res.design.terms), np.asarray(res.X), np.asarray(res.theta), res.sigma)
    np.testing.assert_allclose(got.phi, phi, rtol=KR_EXACT_RTOL)
    for r in range(len(P)):
        np.testing.assert_allclose(got.P[r], P[r], rtol=1e-7, atol=1e-9 * np.abs(P[r]).max())
        for s in range(len(P)):
            tol = 1e-9 * np.abs(Q[r, s]).max()
            np.testing.assert_allclose(got.Q[r, s], Q[r, s], rtol=1e-7, atol=tol)
    np.testing.assert_allclose(got.T, T, rtol=1e-7)


def test_exchangeable_structure_matches_dense_algebra() -> None:
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 6)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(size=12)[g] + 0.3 * x * rng.normal(size=12)[g]
    y = y + rng.normal(size=g.size)
    data = pd.DataFrame({"y": y, "x": x, "g": g}).iloc[rng.permutation(g.size)[:60]]
    res = tiers.fit("y x || g: x, covariance(exchangeable)", data)
    phi, P, Q, T = _dense_parts(res)
    got = kr_parts(list(res.design.terms), np.asarray(res.X), np.asarray(res.theta), res.sigma)
    np.testing.assert_allclose(got.phi, phi, rtol=KR_EXACT_RTOL)
    np.testing.assert_allclose(got.T, T, rtol=1e-7)
    np.testing.assert_allclose(got.P, np.array(P), rtol=1e-7, atol=1e-12)


def test_row_order_does_not_matter() -> None:
    spec = _load("sleepstudy_unbalanced")["fits"]["slopes"]
    data = _data(spec)
    a = tiers.fit(spec["formula"], data)
    b = tiers.fit(spec["formula"], data.sample(frac=1.0, random_state=7))
    np.testing.assert_allclose(
        a.coef_table(ddf="kenward-roger").to_numpy(),
        b.coef_table(ddf="kenward-roger").to_numpy(),
        rtol=1e-6,
    )


def test_one_contrast_f_is_t_squared() -> None:
    res, _ = _fit("sleepstudy_unbalanced", "slopes")
    row = res.coef_table(ddf="kenward-roger").loc["Days"]
    out = res.ftest("Days", ddf="kenward-roger")
    assert out["F"] == pytest.approx(row["t"] ** 2, rel=1e-10)
    assert out["den_df"] == pytest.approx(row["df"], rel=1e-10)
    assert out["p_value"] == pytest.approx(row["p_value"], rel=1e-8)
    # a row repeated tests the same hypothesis
    again = res.ftest(np.array([[0.0, 1.0], [0.0, 2.0]]), ddf="kenward-roger")
    assert again["num_df"] == 1 and again["F"] == pytest.approx(out["F"], rel=1e-10)


def test_anova_by_term() -> None:
    res, _ = _fit("oats_splitplot", "unbalanced")
    anova = res.anova(ddf="kenward-roger")
    assert anova.attrs["method"] == "Kenward-Roger"
    assert list(anova.index) == list(term_columns(res))
    for term in anova.index:
        one = res.ftest(term, ddf="kenward-roger")
        assert anova.loc[term, "F"] == pytest.approx(one["F"])


def test_ml_fit_is_refused() -> None:
    res, _ = _fit("sleepstudy_unbalanced", "slopes")
    ml = res.refit(reml=False)
    with pytest.raises(InferenceError, match="REML"):
        ml.coef_table(ddf="kenward-roger")
    assert ml.refit(reml=True).coef_table(ddf="kenward-roger")["df"].notna().all()


def test_bad_ddf_is_refused() -> None:
    res, _ = _fit("nested", "pastes")
    with pytest.raises(ValueError, match="normal, satterthwaite, kenward-roger"):
        res.coef_table(ddf="kr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="satterthwaite, kenward-roger"):
        res.anova(ddf="normal")


def test_block_limit_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    res, _ = _fit("penicillin_crossed", "balanced")  # 24 plates x 6 samples: one block of 30
    monkeypatch.setattr(parts_module, "MAX_BLOCK", 20)
    with pytest.raises(InferenceError, match="links 30 of them in one block"):
        KenwardRoger.from_result(res)
    nested, _ = _fit("nested", "pastes")  # 10 blocks of 1 batch + 3 casks
    assert KenwardRoger.from_parts  # noqa: B018 - nested designs are done per top-level group
    assert np.isfinite(KenwardRoger.from_result(nested).vcov_adj).all()


def test_summaries_and_document() -> None:
    data = pd.read_csv(KR_DIR / "oats.csv")
    res = tiers.fit("yield i.Variety##i.N || Block: || Variety:, dfmethod(kroger)", data)
    stata = res.summary()
    assert "DF method: Kenward-Roger" in stata and "P>|t|" in stata and "F(11, " in stata
    assert "Wald chi2" not in stata
    lme4 = res.summary("lme4")
    assert "Kenward-Roger's method" in lme4
    plain = res.summary(ddf="normal")
    assert "P>|z|" in plain and "DF method" not in plain
    doc = res.to_dict()
    kr = doc["kenward_roger"]
    assert [fe["name"] for fe in kr["fixed_effects"]] == list(res.xnames)
    assert kr["fixed_effects"][0]["df"] == pytest.approx(res._kenward_roger.df(np.eye(12)[0]))
    assert "kenward_roger" not in res.to_dict(kenward_roger=False)
    schema = json.loads((Path(__file__).parents[1] / "docs" / "json.schema.json").read_text())
    jsonschema.validate(json.loads(json.dumps(doc)), schema)


def test_stata_dfmethod_option() -> None:
    assert tiers.parse("y x || g:, dfmethod(kroger)").dfmethod == "kenward-roger"
    assert tiers.parse("y x || g:, dfm(sat)").dfmethod == "satterthwaite"
    assert tiers.parse("y x || g:").dfmethod is None
    with pytest.raises(FormulaError, match="valid: dfmethod\\(kroger\\)"):
        tiers.parse("y x || g:, dfmethod(residual)")
    with pytest.raises(FormulaError, match="needs REML"):
        tiers.parse("y x || g:, dfmethod(kroger) mle")
    data = pd.read_csv(KR_DIR / "oats.csv")
    with pytest.raises(InferenceError, match="needs REML"):
        tiers.fit("yield i.N || Block:, dfmethod(kroger)", data, reml=False)


def test_cli_ddf(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tiers.cli.main import app

    runner = CliRunner()
    csv = REFERENCE / "sleepstudy.csv"
    out = runner.invoke(app, ["fit", "Reaction ~ Days + (Days | Subject)", str(csv), "--ddf", "kr"])
    assert out.exit_code == 0, out.output
    assert "DF method: Kenward-Roger" in out.output and "P>|t|" in out.output
    doc_path = tmp_path / "fit.json"
    args = ["fit", "Reaction ~ Days + (Days | Subject)", str(csv), "--ddf", "kr", "--style", "lme4"]
    out = runner.invoke(app, [*args, "--json", str(doc_path), "--ci", "wald"])
    assert out.exit_code == 0, out.output
    assert "Kenward-Roger's method" in out.output and "(pbkrtest's method)" in out.output
    doc = json.loads(doc_path.read_text())
    assert doc["kenward_roger"]["fixed_effects"][1]["df"] == pytest.approx(17.0, rel=1e-8)
    out = runner.invoke(app, ["fit", "Reaction ~ Days + (Days | Subject)", str(csv), "--ddf", "k"])
    assert out.exit_code != 0 and "normal, satterthwaite, kr" in out.output
    out = runner.invoke(
        app, ["fit", "Reaction ~ Days + (Days | Subject)", str(csv), "--ddf", "kr", "--ml"]
    )
    assert out.exit_code != 0 and "defined for REML fits" in out.output


@pytest.mark.parametrize(
    ("case", "key"),
    [
        ("sleepstudy_unbalanced", "slopes"),
        ("penicillin_crossed", "unbalanced"),
        ("nested", "pastes"),
    ],
)
def test_sparse_large_block_path_equals_stacked_dense(
    case: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    res, _ = _fit(case, key)
    args = (list(res.design.terms), np.asarray(res.X), np.asarray(res.theta), res.sigma)
    dense = kr_parts(*args)
    monkeypatch.setattr(parts_module, "SMALL_BLOCK", 0)  # every block by the sparse path
    sparse = kr_parts(*args)
    for a, b in ((dense.phi, sparse.phi), (dense.P, sparse.P), (dense.Q, sparse.Q)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * np.abs(a).max())
    np.testing.assert_allclose(sparse.T, dense.T, rtol=1e-9)


def test_tidy_and_margins_take_kenward_roger() -> None:
    res, _ = _fit("oats_splitplot", "unbalanced")
    table = res.coef_table(ddf="kenward-roger")
    fixed = res.tidy(("fixed",), ddf="kenward-roger").set_index("term")
    np.testing.assert_allclose(fixed["std_error"], table["std_error"], rtol=1e-12)
    np.testing.assert_allclose(fixed["df"], table["df"], rtol=1e-12)
    kr = res.margins("Variety", ddf="kenward-roger")
    plain = res.margins("Variety", ddf="satterthwaite")
    np.testing.assert_allclose(kr["estimate"], plain["estimate"], rtol=1e-12)
    assert np.all(kr["std_error"] >= plain["std_error"] * (1 - 1e-12))
    assert np.all(kr["std_error"] > plain["std_error"])  # unbalanced: a real adjustment


def test_cli_ddf_with_residual_structure_and_weights(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tiers.cli.main import app

    data = pd.read_csv(REFERENCE / "sleepstudy.csv")
    data["w"] = 1.0 + (data["Days"] % 3)
    csv = tmp_path / "sleep.csv"
    data.to_csv(csv, index=False)
    runner = CliRunner()
    formula = "Reaction ~ Days + (1 | Subject)"
    for extra, python in (
        (["--residuals", "ar 1, t(Days)"], {"residuals": tiers.AR1("Days")}),
        (["--weights", "w"], {"weights": "w"}),
    ):
        doc_path = tmp_path / "fit.json"
        args = ["fit", formula, str(csv), "--ddf", "kr", *extra, "--json", str(doc_path)]
        out = runner.invoke(app, args)
        assert out.exit_code == 0, out.output
        assert "DF method: Kenward-Roger" in out.output
        want = tiers.fit(formula, data, **python).coef_table(ddf="kenward-roger")
        got = json.loads(doc_path.read_text())["kenward_roger"]["fixed_effects"][1]
        assert got["df"] == pytest.approx(want.loc["Days", "df"], rel=1e-6)
