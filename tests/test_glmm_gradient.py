"""The analytic gradient of the Laplace deviance equals central differences of its values.

Random designs: nested intercepts on the tree, crossed factors and correlated slopes on a dense
factor of ``A``, and crossed factors on the Schur-complement factor (forced on a small design by
lowering its threshold); binomial (0/1 and with trials) and Poisson with their canonical links.
The gradient is checked at random points away from the optimum (theta in [0.3, 1.3]), where
every term of it is non-zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tiers.engine.glmm_sparse as glmm_sparse
from tiers.design.design import build_design
from tiers.engine.glm_family import family
from tiers.engine.glmm_sparse import SparseSystem
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm
from tiers.optimize.glmm import GlmmObjective

#: Central differences with step 1e-5 on a deviance of a few hundred, evaluated with PIRLS
#: converged to ~1e-12: truncation ~1e-10 x third derivative, rounding ~1e-13 / 1e-5 = 1e-8.
#: Relative to the gradient's size (~1-100) 1e-6 leaves room for both and catches any missing
#: term (each is of the gradient's own order here).
GRAD_RTOL = 1e-6


def _data(seed: int, fam: str, n: int = 480) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 12, n)
    b = rng.integers(0, 9, n)
    cls = rng.integers(0, 4, 30)[np.arange(n) % 30]
    x = rng.normal(size=n)
    eta = 0.2 + 0.5 * x + rng.normal(0, 0.6, 12)[a] + rng.normal(0, 0.4, 9)[b]
    eta = eta + rng.normal(0, 0.3, 12)[a] * x
    trials = rng.integers(1, 6, n).astype(float)
    if fam == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
    else:
        y = rng.binomial(trials.astype(int), 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pd.DataFrame(
        {
            "y": y,
            "p": y / trials,
            "m": trials,
            "x": x,
            "a": a.astype(str),
            "b": b.astype(str),
            "c": cls.astype(str),
            "s": (np.arange(n) % 30).astype(str),
        }
    )


def _problem(formula: str, data: pd.DataFrame, fam: str, trials: bool, tree: bool) -> Glmm:
    des = build_design(formula, data, glmm=True)
    if tree:
        assert des.nesting is not None
        system: TreeSystem | SparseSystem = TreeSystem(des.terms, des.nesting.tree)
    else:
        system = SparseSystem(des.terms, des.frame.nobs)
    n = des.frame.nobs
    wt = data["m"].to_numpy(float) if trials else np.ones(n)
    y = data["p"].to_numpy(float) if trials else des.frame.y
    return Glmm(y, wt, np.zeros(n), des.frame.X, system, family(fam))


def _check(problem: Glmm, seed: int) -> None:
    obj = GlmmObjective(problem, 1)
    assert obj.has_gradient
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(0.3, 1.3, problem.n_theta), rng.normal(0.0, 0.3, problem.p)])
    lower = obj.lower
    x[: problem.n_theta] = np.where(
        np.isfinite(lower[: problem.n_theta]), x[: problem.n_theta], rng.normal(0, 0.3)
    )
    _, grad = obj.value_and_gradient(x)
    fd = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = 1e-5
        fd[i] = (obj(x + e) - obj(x - e)) / 2e-5
    np.testing.assert_allclose(grad, fd, rtol=GRAD_RTOL, atol=GRAD_RTOL * np.max(np.abs(fd)))


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(
    ("fam", "trials"), [("binomial", False), ("binomial", True), ("poisson", False)]
)
def test_tree_gradient(seed: int, fam: str, trials: bool) -> None:
    d = _data(seed, fam)
    resp = "p" if trials else "y"
    problem = _problem(f"{resp} ~ x + (1 | c/s)", d, fam, trials, tree=True)
    _check(problem, seed)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(
    "formula",
    ["y ~ x + (1 | a) + (1 | b)", "y ~ x + (x | a) + (1 | b)", "y ~ x + (x || a) + (1 | b)"],
)
def test_sparse_gradient_dense_factor(seed: int, formula: str) -> None:
    d = _data(seed, "binomial")
    d["y"] = (d["p"] > 0.5).astype(float)
    _check(_problem(formula, d, "binomial", False, tree=False), seed)


@pytest.mark.parametrize(("fam", "trials"), [("binomial", True), ("poisson", False)])
def test_sparse_gradient_schur_factor(
    monkeypatch: pytest.MonkeyPatch, fam: str, trials: bool
) -> None:
    # the Schur complement form is used above SCHUR_MIN random effects; lowered so that this
    # 21-effect design takes it (its first term, a, holds at least half of them)
    monkeypatch.setattr(glmm_sparse, "SCHUR_MIN", 5)
    d = _data(3, fam)
    d["a"] = (np.arange(len(d)) % 24).astype(str)
    resp = "p" if trials else "y"
    problem = _problem(f"{resp} ~ x + (1 | a) + (1 | b)", d, fam, trials, tree=False)
    system = problem.system
    assert isinstance(system, SparseSystem) and system.schur_first
    _check(problem, 3)
