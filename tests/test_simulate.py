"""Tests for tiers.simulate: layout, reproducibility, draw order, validation, design files."""

from __future__ import annotations

import importlib
import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiers.errors import DesignError
from tiers.simulation.data import Covariate, Level, NestedDesign, simulate
from tiers.simulation.presets import PRESETS, load_design, seed_design

simmod = importlib.import_module("tiers.simulation.data")

SEED_NAMES = ["dist_id", "school_id", "teach_id", "student_id"]


@st.composite
def small_designs(draw: st.DrawFn) -> NestedDesign:
    nlev = draw(st.integers(1, 3))
    levels = tuple(
        Level(f"l{i}", draw(st.integers(1, 4)), draw(st.floats(0, 5))) for i in range(nlev)
    )
    covs = (Covariate("x", "normal", draw(st.floats(-3, 3))), Covariate("t", "bernoulli", 1.5))
    return NestedDesign(levels, draw(st.integers(1, 3)), 1.0, covs, intercept=0.5)


def _small() -> NestedDesign:
    return NestedDesign(
        (Level("a", 3, 1.0), Level("b", 2, 2.0)),
        obs_per_unit=2,
        residual_sd=1.0,
        covariates=(Covariate("t", "bernoulli", 2.0, p=0.3), Covariate("x", "normal", -1.0)),
    )


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("districts", [5, 50])
def test_seed_preset_rows_and_groups(districts: int) -> None:
    design = seed_design(districts)
    expected = {
        "dist_id": districts,
        "school_id": 5 * districts,
        "teach_id": 40 * districts,
        "student_id": 800 * districts,
    }
    assert design.nrows == 1600 * districts
    assert design.ngroups == expected
    df = simulate(design, 1)
    assert list(df.columns) == [*SEED_NAMES, "semester", "tutoring", "perform"]
    assert len(df) == 1600 * districts
    assert {c: df[c].nunique() for c in SEED_NAMES} == expected
    assert (df.groupby("student_id").size() == 2).all()
    assert df["semester"].value_counts().to_dict() == {1: 800 * districts, 2: 800 * districts}
    assert (df.dtypes[[*SEED_NAMES, "semester", "tutoring"]] == np.int64).all()
    assert df["perform"].dtype == np.float64


def test_seed_preset_sizes_without_simulating() -> None:
    big = seed_design(5000)
    assert big.nrows == 8_000_000
    assert big.ngroups["student_id"] == 4_000_000
    assert PRESETS["seed"] is seed_design
    assert PRESETS["seed"](districts=50).nrows == 80_000


@settings(max_examples=40, deadline=None)
@given(design=small_designs(), seed=st.integers(0, 2**32))
def test_layout_is_nested_and_ids_contiguous(design: NestedDesign, seed: int) -> None:
    df = simulate(design, seed)
    names = [lv.name for lv in design.levels]
    assert list(df.columns) == [*names, "obs", "x", "t", "y"]
    assert len(df) == design.nrows
    for name, n in design.ngroups.items():
        np.testing.assert_array_equal(np.unique(df[name]), np.arange(1, n + 1))
    for parent, child, lv in zip(names, names[1:], design.levels[1:], strict=False):
        assert (df.groupby(child)[parent].nunique() == 1).all()
        assert (df.groupby(parent)[child].nunique() == lv.units).all()
    obs = df.groupby(names[-1])["obs"].apply(list)
    assert all(o == list(range(1, design.obs_per_unit + 1)) for o in obs)


@settings(max_examples=40, deadline=None)
@given(design=small_designs(), seed=st.integers(0, 2**32))
def test_restart_ids(design: NestedDesign, seed: int) -> None:
    glob = simulate(design, seed)
    rest = simulate(design, seed, restart_ids=True)
    names = [lv.name for lv in design.levels]
    # Restarting only relabels: every non-id column is the same draw.
    pd.testing.assert_frame_equal(glob.drop(columns=names), rest.drop(columns=names))
    for k, lv in enumerate(design.levels):
        name = lv.name
        assert rest[name].min() == 1 and rest[name].max() == lv.units
        n = design.ngroups[name]
        # One-to-one with the global ids, whether combined with the global parent id or with the
        # restarted ids of every ancestor.
        keys = [glob[names[k - 1]]] if k else []
        combo = pd.DataFrame({"p": keys[0] if keys else 0, "r": rest[name], "g": glob[name]})
        assert len(combo.drop_duplicates()) == n
        assert len(combo[["p", "r"]].drop_duplicates()) == n
        chain = rest[names[: k + 1]].assign(g=glob[name]).drop_duplicates()
        assert len(chain) == n == len(chain.drop(columns="g").drop_duplicates())
        if k:
            per_parent = rest.groupby(glob[names[k - 1]])[name].agg(["nunique", "min", "max"])
            assert (per_parent == [lv.units, 1, lv.units]).all().all()


# ---------------------------------------------------------------- reproducibility


def test_same_seed_same_frame_different_seed_different() -> None:
    design = _small()
    a = simulate(design, 123)
    pd.testing.assert_frame_equal(a, simulate(design, 123))
    pd.testing.assert_frame_equal(a, simulate(design, np.random.SeedSequence(123)))
    pd.testing.assert_frame_equal(a, simulate(design, np.random.default_rng(123)))
    b = simulate(design, 124)
    assert not np.array_equal(a["y"], b["y"])
    assert not np.array_equal(a["x"], b["x"])


def test_generator_is_advanced() -> None:
    rng = np.random.default_rng(5)
    first, second = simulate(_small(), rng), simulate(_small(), rng)
    assert not np.array_equal(first["y"], second["y"])


def test_documented_draw_order() -> None:
    design = NestedDesign(
        (Level("a", 3, 1.5), Level("b", 4, 2.5)),
        obs_per_unit=3,
        residual_sd=0.7,
        covariates=(
            Covariate("t", "bernoulli", 2.0, p=0.3),
            Covariate("x", "normal", -1.0, 0.5, 4.0, 2.0),
        ),
        intercept=3.0,
    )
    df = simulate(design, 99)
    rng = np.random.default_rng(99)
    a = rng.standard_normal(3) * 1.5
    b = rng.standard_normal(12) * 2.5
    t = (rng.random(36) < 0.3).astype(np.int64)
    x = 4.0 + 2.0 * rng.standard_normal(36)
    e = 0.7 * rng.standard_normal(36)
    y = 3.0 + 2.0 * t - 1.0 * x + np.repeat(a, 12) + np.repeat(b, 3) + e
    np.testing.assert_array_equal(df["t"], t)
    np.testing.assert_allclose(df["x"], x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(df["y"], y, rtol=0, atol=1e-12)


def test_components_add_up_and_leave_the_rest_unchanged() -> None:
    design = _small()
    plain = simulate(design, 8)
    full = simulate(design, 8, components=True)
    pd.testing.assert_frame_equal(plain, full[plain.columns])
    assert list(full.columns[len(plain.columns) :]) == ["a_effect", "b_effect", "residual"]
    total = 2.0 * full["t"] - full["x"] + full["a_effect"] + full["b_effect"] + full["residual"]
    np.testing.assert_allclose(full["y"], total, rtol=0, atol=1e-12)
    assert (full.groupby("a")["a_effect"].nunique() == 1).all()
    assert full["a_effect"].nunique() == 3


def test_common_random_numbers_across_sds_and_p() -> None:
    base = _small()
    scaled = NestedDesign(
        (Level("a", 3, 3.0), Level("b", 2, 0.0)),
        2,
        4.0,
        (Covariate("t", "bernoulli", 2.0, p=0.6), Covariate("x", "normal", 5.0)),
    )
    one, two = simulate(base, 3, components=True), simulate(scaled, 3, components=True)
    np.testing.assert_allclose(two["a_effect"], 3.0 * one["a_effect"])
    assert (two["b_effect"] == 0.0).all()
    np.testing.assert_allclose(two["residual"], 4.0 * one["residual"])
    np.testing.assert_array_equal(two["x"], one["x"])
    # Same uniforms, higher threshold: every row treated at p=0.3 is treated at p=0.6.
    assert (two["t"] >= one["t"]).all() and two["t"].sum() > one["t"].sum()


# ---------------------------------------------------------------- distributions


def test_empirical_sds_match_truth() -> None:
    sds = {"a": 2.0, "b": 3.0, "c": 4.0}
    design = NestedDesign(
        (Level("a", 4000, 2.0), Level("b", 5, 3.0), Level("c", 3, 4.0)),
        obs_per_unit=2,
        residual_sd=6.0,
        covariates=(Covariate("x", "normal", 1.0, mean=1.0, sd=3.0),),
    )
    df = simulate(design, 2024, components=True)
    # The sample SD of n iid normals has standard error ~ sd / sqrt(2 (n - 1)); we allow 4 of
    # them, so a correct generator fails a given check with probability ~6e-5.
    for name, sd in sds.items():
        effects = df.drop_duplicates(name)[f"{name}_effect"].to_numpy()
        n = design.ngroups[name]
        assert len(effects) == n
        assert abs(effects.std(ddof=1) - sd) < 4 * sd / math.sqrt(2 * (n - 1)), name
    n = design.nrows
    assert abs(df["residual"].std(ddof=1) - 6.0) < 4 * 6.0 / math.sqrt(2 * (n - 1))
    assert abs(df["x"].std(ddof=1) - 3.0) < 4 * 3.0 / math.sqrt(2 * (n - 1))
    # Mean of n iid N(1, 3^2): standard error 3 / sqrt(n), again 4 of them.
    assert abs(df["x"].mean() - 1.0) < 4 * 3.0 / math.sqrt(n)


def test_tutoring_rate() -> None:
    df = simulate(seed_design(50), 7)
    n = len(df)
    assert set(np.unique(df["tutoring"])) == {0, 1}
    # Binomial proportion: standard error sqrt(p (1 - p) / n) ~ 0.0014 at n = 80,000; allow 4.
    assert abs(df["tutoring"].mean() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)


def test_boundary_values() -> None:
    design = NestedDesign(
        (Level("a", 4, 0.0),),
        obs_per_unit=5,
        residual_sd=0.0,
        covariates=(
            Covariate("never", "bernoulli", 1.0, p=0.0),
            Covariate("always", "bernoulli", 1.0, p=1.0),
        ),
        intercept=2.5,
    )
    df = simulate(design, 0)
    assert (df["never"] == 0).all() and (df["always"] == 1).all()
    assert (df["y"] == 3.5).all()


# ---------------------------------------------------------------- validation

LEVELS = (Level("dist_id", 2, 1.0), Level("school_id", 2, 1.0))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Level("school_id", 5, -1.0), r"'school_id': sd .*>= 0"),
        (lambda: Level("school_id", 5, math.nan), r"'school_id': sd"),
        (lambda: Level("school_id", 5, math.inf), r"'school_id': sd"),
        (lambda: Level("school_id", 0, 1.0), r"'school_id': units"),
        (lambda: Level("school_id", 2.5, 1.0), r"'school_id': units"),
        (lambda: Level("school_id", True, 1.0), r"'school_id': units"),
        (lambda: Level("", 2, 1.0), r"non-empty"),
        (lambda: NestedDesign(LEVELS, 0, 1.0), r"obs_per_unit"),
        (lambda: NestedDesign(LEVELS, 2, -0.5), r"residual_sd"),
        (lambda: NestedDesign(LEVELS, 2, math.nan), r"residual_sd"),
        (lambda: NestedDesign(LEVELS, 2, 1.0, intercept=math.inf), r"intercept"),
        (lambda: Covariate("tutoring", "bernoulli", 2.0, p=1.5), r"'tutoring': p"),
        (lambda: Covariate("tutoring", "bernoulli", 2.0, p=-0.1), r"'tutoring': p"),
        (lambda: Covariate("tutoring", "bernoulli", 2.0, p=math.nan), r"'tutoring': p"),
        (lambda: Covariate("z", "normal", 1.0, sd=-1.0), r"'z': sd"),
        (lambda: Covariate("z", "normal", math.nan), r"'z': coef"),
        (lambda: Covariate("z", "poisson", 1.0), r"'z': kind must be one of \['bernoulli'"),
        (lambda: NestedDesign((), 2, 1.0), r"at least one level"),
        (lambda: NestedDesign(("dist_id",), 2, 1.0), r"levels must be a tuple of Level"),
        (lambda: NestedDesign(LEVELS * 2, 2, 1.0), r"duplicate column name 'dist_id'"),
        (
            lambda: NestedDesign(LEVELS, 2, 1.0, (Covariate("school_id", "normal", 1.0),)),
            r"duplicate column name 'school_id'.*covariate",
        ),
        (lambda: NestedDesign(LEVELS, 2, 1.0, response="dist_id"), r"'dist_id'.*response"),
        (lambda: NestedDesign(LEVELS, 2, 1.0, obs_name="y"), r"duplicate column name 'y'"),
        (lambda: NestedDesign((Level("residual", 2, 1.0),), 2, 1.0), r"reserved"),
        (
            lambda: NestedDesign(LEVELS, 2, 1.0, (Covariate("intercept", "normal", 1.0),)),
            r"reserved",
        ),
        (lambda: seed_design(0), r"'dist_id': units"),
    ],
)
def test_design_errors(build, match: str) -> None:
    with pytest.raises(DesignError, match=match):
        build()


@settings(max_examples=30, deadline=None)
@given(sd=st.floats(max_value=-1e-300) | st.just(math.nan) | st.just(-math.inf))
def test_any_negative_or_nonfinite_sd_is_refused(sd: float) -> None:
    with pytest.raises(DesignError, match="'g'"):
        Level("g", 1, sd)


def test_max_rows_refused_before_any_draw() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    with pytest.raises(DesignError, match=r"8,000,000 rows.*max_rows=1,000,000.*max_rows=8000000"):
        simulate(seed_design(5000), rng, max_rows=1_000_000)
    assert rng.bit_generator.state == state
    assert len(simulate(seed_design(5), 0, max_rows=8000)) == 8000
    with pytest.raises(DesignError, match="max_rows"):
        simulate(seed_design(5), 0, max_rows=7999)


def test_component_name_clash() -> None:
    design = NestedDesign((Level("a", 2, 1.0),), 1, 1.0, (Covariate("a_effect", "normal", 1.0),))
    simulate(design, 0)
    with pytest.raises(DesignError, match="a_effect"):
        simulate(design, 0, components=True)


# ---------------------------------------------------------------- design objects


def test_with_units_and_true_parameters() -> None:
    design = seed_design()
    assert design.with_units("dist_id", 50) == seed_design(50)
    assert design.with_units("student_id", 3).ngroups["student_id"] == 5 * 5 * 8 * 3
    assert design.ngroups["dist_id"] == 5  # the original is untouched
    with pytest.raises(DesignError, match="'district'.*dist_id"):
        design.with_units("district", 5)
    with pytest.raises(DesignError, match="'school_id': units"):
        design.with_units("school_id", 0)
    assert design.true_parameters() == {
        "sd_dist_id": 2.0,
        "sd_school_id": 3.0,
        "sd_teach_id": 4.0,
        "sd_student_id": 5.0,
        "sd_residual": 6.0,
        "beta_intercept": 0.0,
        "beta_tutoring": 2.0,
    }


def test_lists_and_numpy_scalars_are_normalised() -> None:
    design = NestedDesign([Level("a", np.int64(3), np.float32(1.5))], np.int64(2), 1)
    assert isinstance(design.levels, tuple)
    assert type(design.levels[0].units) is int and type(design.levels[0].sd) is float
    assert type(design.residual_sd) is float
    hash(design)
    json.dumps(design.to_dict())


@settings(max_examples=40, deadline=None)
@given(design=small_designs())
def test_dict_round_trip(design: NestedDesign) -> None:
    assert NestedDesign.from_dict(design.to_dict()) == design
    assert NestedDesign.from_dict(json.loads(json.dumps(design.to_dict()))) == design


def test_seed_dict_round_trip() -> None:
    design = seed_design(50)
    assert NestedDesign.from_dict(json.loads(json.dumps(design.to_dict()))) == design


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(obs_per_units=2), r"unknown key.*obs_per_units"),
        (lambda d: d.pop("levels"), r"missing required key.*levels"),
        (lambda d: d["levels"][0].pop("sd"), r"levels\[0\].*missing.*sd"),
        (lambda d: d["covariates"][0].update(prob=0.3), r"covariates\[0\].*unknown.*prob"),
        (lambda d: d.update(levels={"name": "a"}), r"'levels' must be a list"),
        (lambda d: d["levels"].__setitem__(1, 7), r"levels\[1\] must be a table"),
        (lambda d: d.update(obs_per_unit="2"), r"obs_per_unit"),
    ],
)
def test_from_dict_errors(mutate, match: str) -> None:
    data = seed_design().to_dict()
    mutate(data)
    with pytest.raises(DesignError, match=match):
        NestedDesign.from_dict(data)


# ---------------------------------------------------------------- design files


def _docstring_toml() -> str:
    doc = simmod.__doc__ or ""
    start = doc.index("The seed design in TOML::") + len("The seed design in TOML::")
    block = []
    for line in doc[start:].splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_docstring_toml_example_is_the_seed_design(tmp_path) -> None:
    path = tmp_path / "seed.toml"
    path.write_text(_docstring_toml())
    assert load_design(path) == seed_design()


def test_load_design_toml_tables_and_defaults(tmp_path) -> None:
    path = tmp_path / "d.TOML"
    path.write_text(
        textwrap.dedent(
            """
            obs_per_unit = 3
            residual_sd = 1

            [[levels]]
            name = "school"
            units = 4
            sd = 2

            [[levels]]
            name = "pupil"
            units = 10
            sd = 0.5

            [[covariates]]
            name = "x"
            kind = "normal"
            coef = -1
            """
        )
    )
    design = load_design(path)
    assert design == NestedDesign(
        (Level("school", 4, 2.0), Level("pupil", 10, 0.5)),
        3,
        1.0,
        (Covariate("x", "normal", -1.0),),
    )
    assert (design.response, design.obs_name, design.intercept) == ("y", "obs", 0.0)
    assert len(simulate(design, 0)) == 120


def test_load_design_json(tmp_path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(seed_design(50).to_dict(), indent=2))
    assert load_design(str(path)) == seed_design(50)


def test_load_design_errors(tmp_path) -> None:
    bad_suffix = tmp_path / "d.yaml"
    bad_suffix.write_text("levels: []")
    with pytest.raises(DesignError, match=r"\.toml or \.json"):
        load_design(bad_suffix)
    broken = tmp_path / "broken.toml"
    broken.write_text("levels = [")
    with pytest.raises(DesignError, match=r"broken\.toml.*not valid TOML"):
        load_design(broken)
    broken_json = tmp_path / "broken.json"
    broken_json.write_text("{")
    with pytest.raises(DesignError, match=r"broken\.json.*not valid JSON"):
        load_design(broken_json)
    invalid = tmp_path / "invalid.json"
    data = seed_design().to_dict()
    data["levels"][1]["sd"] = -3.0
    invalid.write_text(json.dumps(data))
    with pytest.raises(DesignError, match=r"invalid\.json.*'school_id': sd"):
        load_design(invalid)
    with pytest.raises(OSError):
        load_design(tmp_path / "missing.toml")
