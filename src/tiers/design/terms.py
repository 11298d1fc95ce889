"""Random-effects terms with their model matrices: the input of the general engines.

Each formula term ``(expr | g)`` becomes a `TermSpec`: the grouping factor's codes, the term's
model matrix ``Z`` (n x q: an intercept and slopes), and its covariance structure. The engines build
``Lambda(theta)`` from the terms' relative factors ``T_t(theta_t)`` and never see a DataFrame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.frame import model_matrix
from tiers.design.covariance import CovStructure
from tiers.design.grouping import Codes, GroupingFactor
from tiers.errors import DataError
from tiers.formula.types import Formula

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class TermSpec:
    """One random-effects term.

    Attributes
    ----------
    name : str
        Grouping factor's display name.
    factor : GroupingFactor
        Codes (per row) and number of groups.
    Z : array (n, q)
        The term's effects per row: ``1`` for an intercept, the slope variables.
    znames : tuple of str
        Names of Z's columns (``(Intercept)``, ``Days``).
    cov : CovStructure
        How theta parametrises the term's relative covariance factor.
    """

    name: str
    factor: GroupingFactor
    Z: FloatArray = field(repr=False)
    znames: tuple[str, ...]
    cov: CovStructure

    @property
    def q(self) -> int:
        """Effects per group."""
        return self.Z.shape[1]

    @property
    def nlevels(self) -> int:
        """Number of groups."""
        return self.factor.nlevels

    @property
    def codes(self) -> Codes:
        """Group of each row."""
        return self.factor.codes

    @property
    def intercept_only(self) -> bool:
        """A scalar random intercept."""
        return self.znames == ("(Intercept)",)


def build_terms(
    formula: Formula, data: pd.DataFrame, factors: list[GroupingFactor]
) -> list[TermSpec]:
    """One `TermSpec` per formula term, in formula order.

    Raises
    ------
    DataError
        A term with no columns, or a slope that does not vary within any group (its variance is not
        identified).
    """
    out = []
    for term, gf in zip(formula.random, factors, strict=True):
        if term.is_intercept_only:
            # a read-only view of one 1.0 for every row: an n-row column of ones per term was
            # 64 MB at 8 million rows (and its first-touch page faults), never written to
            Z = np.broadcast_to(np.ones((1, 1)), (len(data), 1))
            names = ["(Intercept)"]
        else:
            Z, names = model_matrix(
                term.expr, data, what=f"random-effects term ({term.expr} | {term.name})"
            )
            Z = np.ascontiguousarray(Z)
        if Z.shape[1] == 0:
            raise DataError(f"the random-effects term ({term.expr} | {term.name}) has no columns")
        cov = CovStructure(term.covariance, Z.shape[1])
        out.append(TermSpec(term.name, gf, Z, tuple(names), cov))
    return out


def slopes_without_within_variation(term: TermSpec) -> list[str]:
    """Slope columns that are constant within every group.

    Their variance is not identified (it is confounded with the intercept's).
    """
    out = []
    for j, name in enumerate(term.znames):
        if name == "(Intercept)":
            continue
        z = term.Z[:, j]
        lo = np.full(term.nlevels, np.inf)
        hi = np.full(term.nlevels, -np.inf)
        np.minimum.at(lo, term.codes, z)
        np.maximum.at(hi, term.codes, z)
        if np.all(hi - lo <= 1e-12 * max(1.0, float(np.abs(z).max()))):
            out.append(name)
    return out


def split_theta(terms: list[TermSpec], theta: FloatArray) -> list[FloatArray]:
    """Each term's entries of theta (theta order is the order of ``terms``)."""
    out, at = [], 0
    for t in terms:
        out.append(theta[at : at + t.cov.n_theta])
        at += t.cov.n_theta
    return out
