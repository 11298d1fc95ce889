"""Degenerate fits and sizes: refused with the reason, or fitted correctly; never NaN estimates.

Issue 19, items 9, 11, 14, 15 and the formula messages of 18.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest

import tiers
import tiers.panel
from tiers.design.design import build_design
from tiers.design.diagnostics import Limits
from tiers.errors import DataError, FormulaError, TiersError


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    """12 groups of 10 rows: y, x, z, w > 0 and g."""
    rng = np.random.default_rng(1)
    n = 120
    g = np.repeat(np.arange(12), 10)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "g": g,
            "x": x,
            "z": rng.normal(size=n),
            "w": np.abs(rng.normal(size=n)) + 0.1,
            "y": x + rng.normal(size=12)[g] + rng.normal(size=n),
        }
    )


def _fit(formula: str, data: pd.DataFrame) -> tiers.LmmResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tiers.fit(formula, data)


# item 9: what cannot be estimated is refused with the reason


@pytest.mark.parametrize("factor", [1e200, 1e-200])
def test_response_beyond_double_precision_is_refused(data: pd.DataFrame, factor: float) -> None:
    d = data.assign(y=data.y * factor)
    with pytest.raises(DataError, match="response 'y' has values of order.*rescale"):
        _fit("y ~ x + (1 | g)", d)


@pytest.mark.parametrize(
    ("fy", "fx"), [(1e100, 1.0), (1e149, 1.0), (1e-149, 1.0), (1.0, 1e149), (1.0, 1e-149)]
)
def test_scaled_within_range_fits_as_scaled(data: pd.DataFrame, fy: float, fx: float) -> None:
    """Up to the limits, theta is unchanged and beta, sigma and the SEs scale."""
    formula = "y ~ x + (1 + z | g)"
    base = _fit(formula, data)
    res = _fit(formula, data.assign(y=data.y * fy, x=data.x * fx))
    np.testing.assert_allclose(res.theta, base.theta, rtol=1e-6, atol=1e-7)
    scale = np.array([fy, fy / fx])
    np.testing.assert_allclose(res.beta, base.beta * scale, rtol=1e-6)
    np.testing.assert_allclose(
        np.sqrt(np.diag(res.vcov)), np.sqrt(np.diag(base.vcov)) * scale, rtol=1e-5
    )
    assert res.sigma == pytest.approx(base.sigma * fy, rel=1e-6)


def test_extreme_random_slope_is_refused(data: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="random effect 'v' has values of order"):
        _fit("y ~ x + (v | g)", data.assign(v=data.z * 1e-200))


@pytest.mark.parametrize(("fy", "fx"), [(1e149, 1e-149), (1e-149, 1e149)])
def test_response_and_predictor_scales_too_far_apart(
    data: pd.DataFrame, fy: float, fx: float
) -> None:
    """Each within range, but the coefficient's variance (order (fy/fx)^2) is not."""
    with pytest.raises(DataError, match="differ in scale by more than"):
        _fit("y ~ x + (1 + z | g)", data.assign(y=data.y * fy, x=data.x * fx))


@pytest.mark.parametrize("factor", [1e300, 1e-300])
def test_extreme_predictor_is_not_dropped_as_collinear(data: pd.DataFrame, factor: float) -> None:
    """Refused with the reason (not silently dropped as collinear)."""
    frame_x = tiers.data.frame.independent_columns(
        np.column_stack([np.ones(len(data)), data.x * factor]), ["(Intercept)", "x"]
    )
    assert frame_x[0] == [0, 1]
    with pytest.raises(DataError, match="predictor 'x' has values of order"):
        _fit("y ~ x + (1 | g)", data.assign(x=data.x * factor))


def test_response_constant_within_groups_is_refused(data: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="constant within every group of 'g'"):
        _fit("y ~ x + (1 | g)", data.assign(y=data.g * 1.5))
    with pytest.raises(DataError, match="constant within every group of 'g'"):
        _fit("g ~ x + (1 | g)", data)


def test_response_fitted_exactly_by_random_slopes_is_refused(data: pd.DataFrame) -> None:
    """Found by the fuzz suite: ``x ~ (x | h)`` ended in numpy's LinAlgError."""
    d = data.assign(v=3.0 * data.x + data.g)
    with pytest.raises(DataError, match="fitted exactly within every group of 'g'.*, x"):
        _fit("v ~ z + (x | g)", d)


@pytest.mark.parametrize("y", ["const", "exact"])
def test_response_fitted_exactly_is_refused(data: pd.DataFrame, y: str) -> None:
    d = data.assign(y=3.0) if y == "const" else data.assign(y=2.0 * data.x + 1.0)
    with pytest.raises(DataError, match="fit the response 'y' exactly"):
        _fit("y ~ x + (1 | g)", d)


@pytest.mark.parametrize("formula", ["y ~ y + (1 | g)", "y y x || g:"])
def test_response_as_predictor_is_refused(data: pd.DataFrame, formula: str) -> None:
    with pytest.raises(DataError, match="response 'y' is also a predictor"):
        _fit(formula, data)


@pytest.mark.parametrize("slope", ["log(-w)", "np.log(w - 100)"])
def test_non_finite_random_slope_is_refused(data: pd.DataFrame, slope: str) -> None:
    with pytest.raises(DataError, match="random term for 'g' has 120 non-finite values"):
        _fit(f"y ~ z + ({slope} | g)", data)


def test_infinite_random_slope_only_is_refused(data: pd.DataFrame) -> None:
    d = data.assign(v=data.x)
    d.loc[3, "v"] = np.inf
    with pytest.raises(DataError, match="'v' of the random term for 'g' has 1 non-finite"):
        _fit("y ~ x + (v | g)", d)


# item 11: a model too large for the machine is refused before any allocation


def test_many_slopes_refused_fast_naming_the_term() -> None:
    rng = np.random.default_rng(0)
    n = 20 * 250
    d = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(200)})
    d["g"] = np.repeat(np.arange(20), 250)
    d["y"] = rng.normal(size=n)
    formula = "y ~ 1 + (1 + " + " + ".join(f"x{i}" for i in range(200)) + " | g)"
    start = time.perf_counter()
    with pytest.raises(DataError, match="20,301 covariance parameters.*'g' with 201 effects"):
        tiers.fit(formula, d)
    assert time.perf_counter() - start < 1.0


def test_limits_can_be_raised_or_lowered(data: pd.DataFrame) -> None:
    formula = "y ~ x + (1 + x + z | g)"
    with pytest.raises(DataError, match="above the limit of 3.*max_theta"):
        build_design(formula, data, limits=Limits(max_theta=3))
    with pytest.raises(DataError, match="GiB of working memory.*max_bytes"):
        build_design(formula, data, limits=Limits(max_bytes=1000.0))
    with pytest.raises(DataError, match="hours to fit.*max_seconds"):
        build_design(formula, data, limits=Limits(max_seconds=1e-9))
    assert build_design(formula, data).n_theta == 6


def test_nested_intercepts_are_estimated_by_rows_alone() -> None:
    """The engine of nested random intercepts works on per-group sums: time linear in the rows.

    The slope formula (n_theta x rows x effects) put the seed design at 8,000,000 rows, fitted
    in 2.7 s, at about 3 minutes and announced a long fit.
    """
    from tiers.fitting import LONG_FIT_SECONDS

    seed = tiers.simulate(tiers.seed_design(districts=2), seed=1)
    nested = build_design("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", seed)
    per_row = nested.estimated_seconds / nested.nobs
    assert per_row * 8_000_000 < LONG_FIT_SECONDS
    # slopes, and a residual structure, keep the per-parameter passes over the rows
    slopes = build_design("perform ~ tutoring + (1 + tutoring | school_id)", seed)
    assert slopes.estimated_seconds / slopes.nobs > 5 * per_row


# item 15: degenerate sizes


def test_one_row_is_a_clear_error(data: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="1 group"):
        _fit("y ~ x + (1 | g)", data.iloc[:1])


@pytest.mark.parametrize("extra", ["+ z + w + v + u", "+ z + w + v", "+ z + w"])
def test_as_many_predictors_as_rows_is_a_clear_error(extra: str) -> None:
    rng = np.random.default_rng(2)
    d = pd.DataFrame({c: rng.normal(size=6) for c in "xzwvuy"}).assign(g=[0, 0, 1, 1, 2, 2])
    with pytest.raises(DataError, match="exactly|constant within every group"):
        _fit(f"y ~ x {extra} + (1 | g)", d)


def test_exchangeable_with_slopes_fits(data: pd.DataFrame) -> None:
    res = _fit("y x || g: x z, cov(ex)", data)
    assert np.isfinite(res.criterion)
    assert len(res.theta) == 2


@pytest.mark.parametrize("estimator", ["fixed_effects", "random_effects"])
def test_xtreg_constant_response_is_refused(data: pd.DataFrame, estimator: str) -> None:
    fn = getattr(tiers.panel, estimator)
    with pytest.raises(DataError, match="constant within every group of 'g'"):
        fn(data.assign(y=data.g * 0.1), "y", ["x"], "g")


# item 14 and 18: formula messages with the formula quoted and a caret


@pytest.mark.parametrize(
    ("formula", "column", "words"),
    [
        ("y ~ (1 + | g)", 7, "operator '\\+' is missing a term"),
        ("y ~ (1 + x + | g)", 11, "operator '\\+' is missing a term"),
        ("y ~ ( | g)", 6, "missing effects left of"),
        ("y ~ x + (x: | g)", 10, "operator ':' is missing a term"),
        ("y ~ x +* z + (1 | g)", 7, "cannot read the fixed term"),
        ("y ~ x # comment\n + (1|g)", 6, "R comment"),
        ("y ~ x + offset(z) + (1 | g)", 8, "subtract the offset from the response"),
        ("y R.x || g:", 2, "R. declares a crossed factor"),
        ("y L.x || g:", 2, "time-series operators"),
        ("y x D.z || g:", 4, "time-series operators"),
    ],
)
def test_formula_errors_have_a_caret(formula: str, column: int, words: str) -> None:
    with pytest.raises(FormulaError, match=words) as info:
        tiers.parse(formula)
    lines = str(info.value).split("\n")
    assert lines[-2].strip() == formula.replace("\n", " ").strip()
    assert lines[-1].index("^") - 2 == column
    assert "\x1b" not in str(info.value)
    assert isinstance(info.value, TiersError)


# item 13: the collinearity check is one pass, not one QR or solve per column


@pytest.mark.parametrize("qr_rows", [20_000, 10])
def test_independent_columns_greedy_in_order(qr_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiers.data import frame

    monkeypatch.setattr(frame, "_QR_ROWS", qr_rows)
    rng = np.random.default_rng(3)
    x, z, w = rng.normal(size=(3, 50))
    X = np.column_stack([np.ones(50), x, 2 * x, z, np.zeros(50), x + z, w * 1e-300, w])
    keep, omitted = frame.independent_columns(X, list("abcdefgh"))
    assert keep == [0, 1, 3, 6]
    assert omitted == ["c", "e", "f", "h"]


def test_many_dummy_columns_are_checked_fast() -> None:
    """402 columns on 2,000 rows: about 25 s before (one QR per column), 0.2 s now."""
    from tiers.data.frame import independent_columns

    rng = np.random.default_rng(0)
    n, k = 5000, 860
    f = rng.permutation(np.arange(n) % (k + 1))
    X = np.column_stack([np.ones(n), rng.normal(size=n)] + [f == j for j in range(1, k + 1)])
    X = X.astype(float)
    # CPU seconds, not wall: on a loaded machine (other processes on both cores) the wall clock
    # of a 10 s budget stretched past it while the work done stayed the same. One BLAS thread
    # for both: a second thread spinning on a busy core made the yardstick's CPU time swing
    # 0.4-2.3 s. The quadratic version (a QR per column) took about 80 QRs' time.
    from tiers._threads import single_thread_blas

    with single_thread_blas():
        start = time.process_time()
        np.linalg.qr(X, mode="r")  # one QR of the whole matrix: the yardstick, whatever the load
        one_qr = time.process_time() - start
        start = time.process_time()
        keep, _ = independent_columns(X, [str(j) for j in range(k + 2)])
        assert time.process_time() - start < 25.0 * one_qr + 1.0
    assert keep == list(range(k + 2))


def test_long_fit_is_announced(data: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiers import fitting

    monkeypatch.setattr(fitting, "LONG_FIT_SECONDS", 0.0)
    with pytest.warns(tiers.errors.TiersWarning, match="may take about .* minutes to fit"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_singular_matrix_during_the_fit_is_a_tiers_error(
    data: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The net under the design's checks: numpy's LinAlgError never reaches the user."""
    from tiers import fitting

    def singular(engine: object) -> None:
        raise np.linalg.LinAlgError("Matrix is not positive definite")

    monkeypatch.setattr(fitting, "optimize_theta", singular)
    with pytest.raises(DataError, match="cannot be estimated on these data.*not positive definite"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_exact_fit_on_large_data_is_explained_after_the_fit() -> None:
    """Above EXACT_FIT_ROWS the exact-fit check runs only when the fit comes out degenerate
    (it would cost more than the fit); the reason is the same."""
    from tiers.design.diagnostics import EXACT_FIT_ROWS

    rng = np.random.default_rng(1)
    n = 3 * EXACT_FIT_ROWS
    g = rng.integers(0, n // 20, n)
    data = pd.DataFrame({"y": rng.normal(size=n // 20)[g], "x": rng.normal(size=n), "g": g})
    with pytest.raises(tiers.DataError, match="constant within every group of 'g'"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_limits_can_be_set_per_fit_and_on_the_command_line(tmp_path) -> None:
    """The size limits are per call too: tiers.fit(limits=) and tiers fit --max-params."""
    from typer.testing import CliRunner

    from tiers.cli.main import app

    from .conftest import REFERENCE

    data = pd.read_csv(REFERENCE / "sleepstudy.csv")
    formula = "Reaction ~ Days + (Days | Subject)"  # 3 covariance parameters
    with pytest.raises(tiers.DataError, match="covariance parameters"):
        tiers.fit(formula, data, limits=tiers.Limits(max_theta=2))
    assert tiers.fit(formula, data, limits=tiers.Limits(max_theta=3)).converged
    runner = CliRunner()
    path = str(REFERENCE / "sleepstudy.csv")
    refused = runner.invoke(app, ["fit", formula, path, "--max-params", "2"])
    assert refused.exit_code == 2 and "covariance parameters" in refused.stderr
    assert runner.invoke(app, ["fit", formula, path, "--max-params", "3"]).exit_code == 0
    assert runner.invoke(app, ["fit", formula, path, "--max-params", "0"]).exit_code == 2


def test_the_collinearity_check_solves_as_scipy_does_with_few_columns_or_many() -> None:
    """Up to `FEW_COLUMNS` columns its triangular solves are plain forward substitution (no
    scipy.linalg to import), beyond them scipy's; the two agree, and so do the kept columns."""
    from scipy.linalg import solve_triangular

    from tiers.data import frame
    from tiers.data.crossprod import FEW_COLUMNS, forward_substitution

    rng = np.random.default_rng(5)
    for k in (1, 5, FEW_COLUMNS):
        A = rng.normal(size=(k + 3, k))
        L = np.linalg.cholesky(A.T @ A)
        b = rng.normal(size=k)
        np.testing.assert_allclose(
            forward_substitution(L, b), solve_triangular(L, b, lower=True), rtol=1e-10, atol=1e-12
        )
    n = frame._QR_ROWS + 10  # the cross-product path
    for p in (6, FEW_COLUMNS + 8):
        X = rng.normal(size=(n, p))
        X[:, 3] = X[:, 1] - 2.0 * X[:, 2]  # exactly collinear: the later column goes
        keep, omitted = frame.independent_columns(X, [f"x{j}" for j in range(p)])
        assert omitted == ["x3"] and keep == [j for j in range(p) if j != 3]
