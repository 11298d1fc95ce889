"""The GLMM's shortcuts change the path to the optimum, never the optimum.

* a tree restricted to some rows is the tree of those rows' design;
* a large nested fit started from its subsample's optimum ends where the fit from lme4's start
  does (the threshold lowered so that a small design takes the subsample);
* PIRLS with chord steps (the factor of ``A`` reused near the modes) finds the same modes and
  Laplace deviance as with a new factor at every step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tiers
import tiers.optimize.glmm as glmm_opt
from tiers.design.design import build_design
from tiers.engine.glm_family import family
from tiers.engine.glmm_sparse import SparseSystem
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm

#: PIRLS stops with the modes converged to ~1e-10 (Newton: error ~ step^2 below 1e-6; chord:
#: contraction-corrected below 1e-10); the Laplace deviance moves at second order in the
#: penalised part and first order (times O(1) derivatives) in the log-determinant.
MODES_ATOL = 1e-8
#: Two runs of the certified optimizer from different starts: both end within a Newton step of
#: 1e-4 (STEP_TOL) on a deviance that is quadratic there, so within ~1e-8 of each other relative.
OPTIMUM_RTOL = 1e-7


def _nested(seed: int = 5, top: int = 48) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(top), 15)
    b = a * 3 + rng.integers(0, 3, a.size)
    x = rng.normal(size=a.size)
    eta = -0.2 + 0.6 * x + rng.normal(0, 0.5, top)[a] + rng.normal(0, 0.7, 3 * top)[b]
    y = (rng.uniform(size=a.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


def test_restricted_tree_is_the_subset_design() -> None:
    d = _nested()
    des = build_design("y ~ x + (1 | a/b)", d, glmm=True)
    assert des.nesting is not None
    full = TreeSystem(des.terms, des.nesting.tree)
    rows = np.flatnonzero(d["a"].astype(int).to_numpy() % 3 == 0)
    sub = full.restrict(rows)
    sdes = build_design("y ~ x + (1 | a/b)", d.iloc[rows].reset_index(drop=True), glmm=True)
    assert sdes.nesting is not None
    fresh = TreeSystem(sdes.terms, sdes.nesting.tree)
    assert sub.sizes == fresh.sizes
    fam = family("binomial")
    y, X = d["y"].to_numpy(float)[rows], des.frame.X[rows]
    ones = np.ones(rows.size)
    theta, beta = np.array([0.6, 0.8]), np.array([-0.1, 0.5])
    dev_sub = Glmm(y, ones, 0 * ones, X, sub, fam).laplace(theta, beta)
    dev_fresh = Glmm(y, ones, 0 * ones, sdes.frame.X, fresh, fam).laplace(theta, beta)
    assert dev_sub == pytest.approx(dev_fresh, rel=1e-12)


def test_subsample_start_reaches_the_same_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    d = _nested()
    plain = tiers.fit("y ~ x + (1 | a/b)", d, family="binomial")
    calls: list[int] = []
    original = glmm_opt.subsample_start

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(*args, **kwargs)
        calls.append(0 if out is None else 1)
        return out

    monkeypatch.setattr(glmm_opt, "SUBSAMPLE_ROWS", 100)
    monkeypatch.setattr("tiers.api.glmm.subsample_start", counted)
    started = tiers.fit("y ~ x + (1 | a/b)", d, family="binomial")
    assert calls == [1]
    assert started.converged and plain.converged
    assert started.deviance == pytest.approx(plain.deviance, rel=OPTIMUM_RTOL)
    np.testing.assert_allclose(started.fit.theta, plain.fit.theta, atol=1e-3)
    np.testing.assert_allclose(started.fit.beta, plain.fit.beta, atol=1e-3)


def test_chord_steps_find_the_same_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    n = 600
    d = pd.DataFrame(
        {
            "y": (rng.uniform(size=n) < 0.4).astype(float),
            "x": rng.normal(size=n),
            "g": rng.integers(0, 25, n).astype(str),
            "h": rng.integers(0, 15, n).astype(str),
        }
    )
    des = build_design("y ~ x + (1 | g) + (1 | h)", d, glmm=True)
    fam = family("binomial")
    one = np.ones(n)

    def run(chord: bool) -> list[tuple[np.ndarray, float]]:
        monkeypatch.setattr(SparseSystem, "costly_factor", chord)
        g = Glmm(des.frame.y, one, 0 * one, des.frame.X, SparseSystem(des.terms, n), fam)
        out = []
        for theta, beta in [
            ((1.0, 1.0), (0.0, 0.0)),
            ((0.9, 1.1), (0.1, 0.2)),
            ((0.9, 1.1), (0.1, 0.21)),
        ]:
            m = g.modes(np.array(theta), np.array(beta))
            out.append((m.u, m.minus2loglik + float(m.u @ m.u) + m.logdet))
        return out

    for (u_c, dev_c), (u_n, dev_n) in zip(run(True), run(False), strict=True):
        np.testing.assert_allclose(u_c, u_n, atol=MODES_ATOL)
        assert dev_c == pytest.approx(dev_n, abs=MODES_ATOL)
