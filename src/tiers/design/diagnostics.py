"""Nesting diagnostics, run before any fit: the traps of the founding Stata session.

* Two declared levels that partition the rows identically: the variance components are not
  identified (the seed's levels listed innermost first). When the id columns nest in another order,
  the corrected model is proposed in the syntax the user wrote.
* A child whose labels repeat across parents: implicit nesting when nearly every label repeats
  (teacher 1 in every school), but an error with examples when only a few do (a student under two
  teachers), which suggests crossed factors instead.
* Levels whose groups mostly hold one observation, and levels with very few groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tiers.design.grouping import GroupingFactor, parent_map
from tiers.errors import NestingError
from tiers.formula.render import render_nested
from tiers.formula.types import Formula

#: A child whose labels repeat under several parents is taken as implicitly nested (labels
#: restarted within each parent) when at least this share of its labels repeat; below it, the
#: repeats look like units that moved between parents.
IMPLICIT_SHARE = 0.5
#: Fewer groups than this: the level's SD is poorly determined (a handful of draws of the effect).
FEW_GROUPS = 10


def _codes(data: pd.DataFrame, col: str) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(data[col], sort=False)
    return codes.astype(np.int64, copy=False), len(uniques)


def check_child_nesting(
    formula: Formula, data: pd.DataFrame, factors: list[GroupingFactor]
) -> None:
    """Raise when a declared child is not nested in its parent but crosses it for a few units."""
    for term, gf in zip(formula.random, factors, strict=True):
        if not gf.implicit or len(term.group) < 2:
            continue
        child = term.group[-1]
        own, n_own = _codes(data, child)
        parent = gf.parent_codes
        assert parent is not None
        pairs = np.unique(parent * n_own + own)
        labels_parents = np.bincount(pairs % n_own, minlength=n_own)
        repeated = np.flatnonzero(labels_parents > 1)
        share = repeated.size / n_own
        if share >= IMPLICIT_SHARE:
            continue
        parent_name = ":".join(term.group[:-1])
        examples = []
        child_values = data[child].to_numpy()
        parent_cols = [data[c].to_numpy() for c in term.group[:-1]]
        own_rows = {int(k): np.flatnonzero(own == k) for k in repeated[:3]}
        for rows in own_rows.values():
            seen = sorted({":".join(str(col[r]) for col in parent_cols) for r in rows})[:3]
            examples.append(
                f"{child} {child_values[rows[0]]} under {parent_name} {', '.join(seen)}"
            )
        raise NestingError(
            f"{child} is not nested in {parent_name}: {repeated.size:,} of {n_own:,} {child} "
            f"values appear under more than one {parent_name} (e.g. {'; '.join(examples)}). If "
            f"units move between groups, the factors are crossed: write "
            f"(1 | {parent_name}) + (1 | {child}) in lme4 syntax. If the labels are meant to restart "
            f"within each {parent_name}, pass force=True (--force) to form the combinations."
        )


def propose_order(formula: Formula, data: pd.DataFrame) -> str | None:
    """The nested model with the levels reordered so each id column nests in the one before it.

    Returns None unless the columns, each taken alone, form a strict chain of nesting in some
    order (globally unique ids), and that order differs from the one written.
    """
    cols = list(dict.fromkeys(c for t in formula.random for c in t.group))
    if len(cols) < 2:
        return None
    coded = {c: _codes(data, c) for c in cols}
    order = sorted(cols, key=lambda c: coded[c][1])
    for coarse, fine in zip(order[:-1], order[1:], strict=True):
        if coded[coarse][1] >= coded[fine][1]:
            return None
        _, ok = parent_map(coded[fine][0], coded[fine][1], coded[coarse][0])
        if not ok:
            return None
    written = [t.group[-1] for t in formula.random]
    if written == order:
        return None
    return render_nested(formula, order)


def identical_partition_error(
    formula: Formula, data: pd.DataFrame, coarse: GroupingFactor, fine: GroupingFactor
) -> NestingError:
    """The 'not identified' error, with the corrected model when one can be proposed."""
    msg = (
        f"the levels {coarse.name!r} and {fine.name!r} define the same {fine.nlevels:,} groups "
        "(after nesting each level in the ones before it), so their variance components are not "
        "identified: the data cannot tell them apart, and any split of the variance between them "
        "fits equally well."
    )
    proposal = propose_order(formula, data)
    if proposal is not None:
        msg += (
            " The id columns nest in another order; levels are listed outermost first. Did you "
            f"mean:\n    {proposal}"
        )
    else:
        msg += " Remove one of the two levels, or check the order in which the levels are listed."
    msg += "\nTo fit anyway (the estimates of these components are then arbitrary), use force=True (--force)."
    return NestingError(msg)


def level_messages(factors: tuple[GroupingFactor, ...]) -> tuple[list[str], list[str]]:
    """Warnings (levels of singletons) and notes (levels with few groups), in plain words."""
    warns, notes = [], []
    for gf in factors:
        sizes = gf.sizes()
        single = float(np.mean(sizes == 1))
        if single > 0.5:
            warns.append(
                f"{single:.0%} of the {gf.nlevels:,} groups of {gf.name} hold a single observation: "
                f"its variance can hardly be told apart from the residual variance"
            )
        if gf.nlevels < FEW_GROUPS:
            notes.append(
                f"{gf.name} has only {gf.nlevels} groups: its SD is poorly determined (a variance "
                f"estimated from {gf.nlevels} draws); read its interval, not the point estimate"
            )
    return warns, notes
