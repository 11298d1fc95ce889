"""Which covariance a fit reports, decided at fit time: model-based, sandwich or CR2.

`check_vce` refuses, before the fit, what tiers cannot estimate (a sandwich without nested
clusters, a clustering variable other than the top level, REML with a pseudo-likelihood);
`robust_vcov` computes the chosen estimator at the estimates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tiers.design.design import Design
from tiers.design.terms import split_theta
from tiers.errors import DataError
from tiers.formula.weighting import VceSpec

# The sandwich and CR2 (with the pseudo-likelihood engine under them) are imported by the fit that
# asks for one: a model-based fit, and the `tiers fit` command, need none of them.
if TYPE_CHECKING:
    from tiers.engine.pseudo import PseudoTreeProblem
    from tiers.variance.robust import RobustVcov

FloatArray = NDArray[np.float64]


def pseudo_engine(design: Design, y: FloatArray, X: FloatArray) -> PseudoTreeProblem:
    """The design's likelihood split by top-level cluster (unit weights unless sampling weights)."""
    from tiers.engine.pseudo import PseudoTreeProblem

    if design.nesting is None:  # pragma: no cover - check_vce refuses crossed designs first
        raise DataError("a cluster-robust covariance needs nested grouping levels")
    rw = design.weights
    parents = list(design.nesting.tree.parents)
    if rw is not None and rw.sampling:
        return PseudoTreeProblem(y, X, design.levels, parents, rw.rows, list(rw.groups))
    ones = [np.ones(gf.nlevels) for gf in design.nesting.factors]
    if rw is not None:  # precision weights (check_vce refuses frequency weights)
        return PseudoTreeProblem(y, X, design.levels, parents, rw.rows, ones, precision=True)
    return PseudoTreeProblem(y, X, design.levels, parents, np.ones(y.size), ones)


def check_vce(design: Design, vce: VceSpec | None, reml: bool | None) -> VceSpec | None:
    """The covariance to compute, or None for the model's; refuse what cannot be estimated.

    Sampling weights always get the sandwich (as Stata's ``mixed`` with ``pweight``).

    Raises
    ------
    DataError
        A sandwich or CR2 for crossed factors, with frequency weights, CR2 with precision
        weights, a clustering variable that is not the top level, REML with the sandwich, the
        model-based covariance with sampling weights.
    """
    sampling = design.weights is not None and design.weights.sampling
    if sampling and vce is not None and vce.kind != "robust":
        raise DataError(
            f"vce='{vce.kind}' with sampling weights: a pseudo-likelihood's information is not "
            "the estimates' covariance; tiers reports the sandwich (vce='robust'), as Stata does"
        )
    if sampling and vce is None:
        vce = VceSpec("robust")
    if vce is None or vce.kind == "model":
        return None
    if design.nesting is None:
        raise DataError(
            f"vce='{vce.kind}' clusters on the top level of nested grouping factors; the factors "
            "of this model cross (tiers supports cluster-robust SEs for nested models only)"
        )
    if design.residuals is not None:
        raise DataError(
            f"vce='{vce.kind}' with a residual structure is not supported yet by tiers; use the "
            "model-based covariance (vce='model'), or drop the residual structure"
        )
    kind = design.weights.spec.kind if design.weights is not None else None
    if kind == "frequency" or (kind == "precision" and vce.kind == "cr2"):
        raise DataError(
            f"vce='{vce.kind}' with {kind} weights is not supported yet by tiers; use the "
            "model-based covariance" + (", or vce='robust'" if kind == "precision" else "")
        )
    top = design.nesting.factors[0]
    if vce.cluster is not None and (vce.cluster,) != top.columns and vce.cluster != top.name:
        raise DataError(
            f"vce(cluster {vce.cluster}): tiers clusters on the top level, {top.name}; a cluster "
            "variable other than the top level is not supported"
        )
    if vce.kind == "robust" and reml:
        raise DataError(
            "the sandwich estimator (vce robust, and sampling weights) is built on the ML "
            "(pseudo-)likelihood: REML has no such version (Stata refuses it too); fit with "
            "reml=False, or leave reml unset and tiers fits by ML"
        )
    return vce


def robust_vcov(
    design: Design,
    vce: VceSpec,
    theta: FloatArray,
    beta: FloatArray,
    sigma: float,
    y: FloatArray,
    X: FloatArray,
) -> RobustVcov:
    """The sandwich (every parameter) or CR2 (fixed effects) covariance at the estimates."""
    from tiers.variance.cr2 import cr2
    from tiers.variance.robust import sandwich

    if design.nesting is None:  # pragma: no cover - check_vce refuses crossed designs first
        raise DataError("a cluster-robust covariance needs nested grouping levels")
    top = design.nesting.factors[0]
    if vce.kind == "cr2":
        thetas = split_theta(design.terms, np.asarray(theta))
        return cr2(y, X, design.terms, thetas, top.codes, np.asarray(beta), top.name)
    engine = pseudo_engine(design, y, X)
    return sandwich(engine, design.terms, np.asarray(theta), sigma, top.name)
