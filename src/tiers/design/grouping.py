"""Grouping factors: integer codes per row for each random term, and the nesting between them.

The structure (nested tree or not, implicit nesting, identical partitions) is decided here once,
before any likelihood is evaluated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.errors import DataError
from tiers.formula.types import Formula

IntArray = NDArray[np.int64]
#: Per-row group codes, int32 while the rows fit (half the memory of int64: 32 MB per factor at 8
#: million rows), else int64; typed by its element kind only so that code written for int64 codes
#: accepts both. A combined key (``a * n_b + b``) must be formed in int64: `combined_key`.
Codes = NDArray[Any]


@dataclass(frozen=True, slots=True)
class Tree:
    """Nesting of K levels, outermost first.

    Attributes
    ----------
    leaf : Codes
        For each observation, its node at the innermost level K.
    parents : tuple of IntArray
        ``parents[k]`` maps each node of level ``k + 1`` to its node at level ``k``
        (0-based levels; ``len(parents) == K - 1``).
    sizes : tuple of int
        Number of nodes per level.
    """

    leaf: Codes
    parents: tuple[IntArray, ...]
    sizes: tuple[int, ...]


def renumber_levels(
    parents: list[IntArray], sizes: list[int]
) -> tuple[list[IntArray], list[IntArray]]:
    """Renumber the non-leaf levels so each level's nodes are sorted by parent.

    Siblings are then contiguous and summing children into parents is one ``reduceat`` with no
    gather. Returns, per non-leaf level, the new index of each original node, and per level k the
    first child (in level k) of each node of level k - 1.
    """
    new = [np.arange(sizes[0], dtype=np.int64)]
    starts: list[IntArray] = [np.zeros(0, dtype=np.int64)]
    for k in range(1, len(sizes) - 1):
        parent_new = new[k - 1][parents[k - 1]]
        order = np.argsort(parent_new, kind="stable")
        idx = np.empty(sizes[k], dtype=np.int64)
        idx[order] = np.arange(sizes[k])
        new.append(idx)
        starts.append(np.searchsorted(parent_new[order], np.arange(sizes[k - 1])))
    return new, starts


@dataclass(frozen=True, slots=True)
class GroupingFactor:
    """The groups of one random term.

    Attributes
    ----------
    name : str
        Display name (lme4's ``cask:batch`` or Stata's ``cask``).
    columns : tuple of str
        Columns whose interaction defines the groups.
    row_codes : IntArray or None
        Group of each row, ``0..nlevels-1``, in sorted order of the labels; None when the codes
        are read through ``leaf_path`` (`codes` gives them either way).
    nlevels : int
    implicit : bool
        The last column's labels repeat across the groups of the others, so the groups were formed
        as their combination (teacher 1 in every school).
    parent_codes : IntArray or None
        For implicit nesting, the codes of the other columns' combination (for diagnostics).
    prefix_map : IntArray or None
        For a multi-column group, the group of the other columns' combination that contains each
        group (known to nest, so the tree need not check it again).
    counts : IntArray
        Number of observations in each group.
    leaf_path : tuple or None
        For an outer level of a nesting tree (`compact_levels`): the leaf level's codes per row and
        the parent maps from the leaves up to this level, which give the codes without keeping
        them (the codes of every level of a nested design are a function of the leaf's).
    """

    name: str
    columns: tuple[str, ...]
    row_codes: Codes | None = field(repr=False)
    nlevels: int
    implicit: bool = False
    parent_codes: Codes | None = field(default=None, repr=False)
    prefix_map: IntArray | None = field(default=None, repr=False)
    counts: Codes = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    leaf_path: tuple[Codes, tuple[IntArray, ...]] | None = field(default=None, repr=False)

    @property
    def codes(self) -> Codes:
        """Group of each row, ``0..nlevels-1`` (built from ``leaf_path`` when not kept)."""
        if self.row_codes is not None:
            return self.row_codes
        assert self.leaf_path is not None
        leaf, maps = self.leaf_path
        up = maps[0]
        for parent in maps[1:]:
            up = parent[up]
        out = np.empty(leaf.size, dtype=_code_dtype(self.nlevels))
        for a in range(0, leaf.size, _STEP):  # whole: an intp copy of the leaf codes
            out[a : a + _STEP] = up[leaf[a : a + _STEP]]
        return out

    def labels(self, data: pd.DataFrame, *, lme4_order: bool = True) -> list[str]:
        """Group labels: the column values joined by ``:``, in the order of the factor's name."""
        cols = list(self.columns)
        if lme4_order and self.name == ":".join(reversed(cols)) and len(cols) > 1:
            cols = cols[::-1]
        # labels for millions of groups are costly, so they are built on demand from a row of each
        first = _first_rows(self.codes, self.nlevels)
        # numpy's str conversion per column, then Python's join: 3x faster than np.char.add
        parts = [data[c].to_numpy()[first].astype(str).tolist() for c in cols]
        if len(parts) == 1:
            return [str(v) for v in parts[0]]
        return list(map(":".join, zip(*parts, strict=True)))

    def sizes(self) -> Codes:
        """Number of observations in each group."""
        return self.counts


#: Rows per step of the passes over per-row codes: whole, numpy's casts of int32 codes to intp
#: (bincount, take) are n-row int64 copies, 64 MB at 8 million rows.
_STEP = 1 << 20


def count_codes(codes: Codes, nlevels: int) -> Codes:
    """Rows in each group, a block of rows at a time over the groups it holds.

    Rows grouped by code (data sorted by id) touch a few groups per block; codes spread over
    more groups than a block has rows are counted in one pass, as `numpy.bincount` does.
    """
    # a count is at most the rows: int32 while they fit (16 MB for 4 million pupils, not 32 MB)
    dtype = _code_dtype(codes.size)
    out = np.zeros(nlevels, dtype=dtype)
    for a in range(0, codes.size, _STEP):
        c = codes[a : a + _STEP]
        lo, hi = int(c.min()), int(c.max()) + 1
        if hi - lo > 4 * c.size:
            return np.bincount(codes, minlength=nlevels).astype(dtype, copy=False)
        out[lo:hi] += np.bincount(np.subtract(c, lo, dtype=np.intp), minlength=hi - lo)
    return out


def _code_dtype(n: int) -> type[np.int32] | type[np.int64]:
    """int32 codes when every code (at most ``n``) fits, else int64."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def combined_key(a: Codes, n_b: int, b: Codes) -> IntArray:
    """``a * n_b + b`` in int64: the product of two level counts can pass int32's range."""
    return a.astype(np.int64) * n_b + b


def sorted_runs(values: np.ndarray) -> NDArray[np.bool_] | None:
    """Where a column of integers sorted by value (data stored by id) changes, else None.

    ``change[i]``: row ``i + 1`` starts a group.
    """
    if values.dtype.kind not in "iu" or values.size < 2 or not np.all(values[1:] >= values[:-1]):
        return None
    return np.not_equal(values[1:], values[:-1])


def _run_starts(change: NDArray[np.bool_]) -> NDArray[np.intp]:
    """The first row of each run."""
    first = np.empty(np.count_nonzero(change) + 1, dtype=np.intp)
    first[0] = 0
    np.add(np.flatnonzero(change), 1, out=first[1:])
    return first


def _factorize_runs(arr: np.ndarray, change: NDArray[np.bool_]) -> tuple[Codes, int, Codes]:
    """`_factorize` of a sorted column from its runs: no table, no sort; the sizes are the runs'."""
    first = _run_starts(change)
    n = first.size
    dtype = _code_dtype(arr.size)
    counts = np.empty(n, dtype=dtype)
    np.subtract(first[1:], first[:-1], out=counts[:-1], casting="unsafe")
    counts[-1] = arr.size - first[-1]
    del first
    lo = int(arr[0])
    if int(arr[-1]) - lo + 1 == n:  # every id of the range used: the codes are the ids shifted
        return np.subtract(arr, lo, dtype=dtype, casting="unsafe"), n, counts
    return np.repeat(np.arange(n, dtype=dtype), counts), n, counts


def _factorize(values: pd.Series | np.ndarray) -> tuple[Codes, int, Codes]:
    """Codes in sorted order of the values, their number, and the rows in each group.

    A categorical column's codes follow its categories' order. Integer ids in a compact range (the usual case) are coded by a count table, O(n) without
    hashing or sorting; when every id of the range is used (ids numbered 1, 2, ...) the codes are
    the ids minus the smallest, with no lookup. Indices are ``intp`` while coding: numpy's
    scatters and gathers convert any other index type first (a scatter by int32 codes costs 2x).
    """
    # text (and other non-integer) columns go to pandas' factorize as they are: their to_numpy
    # makes one Python object per row (InstEval's four text ids: 7 ms)
    integers = not isinstance(values, pd.Series) or values.dtype.kind in "iu"
    arr = values.to_numpy() if isinstance(values, pd.Series) and integers else values
    dtype = _code_dtype(len(values))
    if integers and arr.dtype.kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo <= 4 * arr.size + 1024:
            shifted = np.subtract(arr, lo, dtype=np.intp, casting="unsafe")
            table = np.bincount(shifted, minlength=hi - lo + 1)
            if table.all():
                return shifted.astype(dtype), table.size, table.astype(dtype)
            present = table > 0
            index = np.cumsum(present, dtype=np.intp) - 1
            return index[shifted].astype(dtype), int(index[-1] + 1), table[present].astype(dtype)
    codes, uniques = pd.factorize(values, sort=True)
    codes = codes.astype(dtype, copy=False)
    return codes, len(uniques), count_codes(codes, len(uniques))


def _first_rows(codes: Codes, nlevels: int) -> IntArray:
    first = np.full(nlevels, -1, dtype=np.int64)
    # reversed assignment leaves the smallest row index for each code
    rows = np.arange(codes.size - 1, -1, -1, dtype=np.int64)
    first[codes[::-1]] = rows
    return first


def _sorted_parent_map(child: Codes, nchild: int, parent: Codes) -> IntArray | None:
    """The child-to-parent map of rows sorted by the child's code; None for other rows.

    None too when some code is unused or the parent changes inside a child's run. Each child is then one run of rows with one parent, read at the run's first row: no n-row
    scatter or gather, and a block of rows at a time (no n-row temporary).
    """
    n = child.size
    if n < 2 or int(child[0]) != 0 or int(child[-1]) != nchild - 1:
        return None
    mapping = np.empty(nchild, dtype=parent.dtype if parent.dtype.kind in "iu" else np.int64)
    mapping[0] = parent[0]
    k = 1
    for a in range(0, n - 1, _STEP):
        b = min(n - 1, a + _STEP)
        before, after = child[a:b], child[a + 1 : b + 1]
        if not np.all(after >= before):
            return None
        change = np.not_equal(after, before)
        if np.any(np.not_equal(parent[a + 1 : b + 1], parent[a:b]) > change):
            return None
        starts = np.flatnonzero(change)
        if k + starts.size > nchild:
            return None
        mapping[k : k + starts.size] = parent[a + 1 + starts]
        k += starts.size
    return mapping if k == nchild else None


def parent_map(child: Codes, nchild: int, parent: Codes) -> tuple[IntArray, bool]:
    """Map each child group to a parent group; ``ok`` is False when some child has two parents."""
    # rows sorted by child (data stored by id): read at each run's first row
    sorted_map = _sorted_parent_map(child, nchild, parent)
    if sorted_map is not None:
        return sorted_map, True
    # the parent codes' own dtype (int32 while the rows fit): 16 MB rather than 32 MB of map for
    # the 4 million pupils of the 8-million-row seed design
    mapping = np.empty(nchild, dtype=parent.dtype if parent.dtype.kind in "iu" else np.int64)
    for a in range(0, child.size, _STEP):
        # intp indices once a block: a scatter and a gather by int32 codes each convert them
        index = np.asarray(child[a : a + _STEP], dtype=np.intp)
        mapping[index] = parent[a : a + _STEP]
    # np.take gathers faster than fancy indexing (no index-shape handling); a block at a time
    for a in range(0, child.size, _STEP):
        index = np.asarray(child[a : a + _STEP], dtype=np.intp)
        if not np.array_equal(np.take(mapping, index), parent[a : a + _STEP]):
            return mapping, False
    return mapping, True


class _FactorBuilder:
    """Builds factors once per column set.

    A class rather than recursive closures: a closure that refers to itself is a reference cycle,
    which kept every fit's codes (hundreds of MB at 8 million rows) alive until the garbage
    collector ran.
    """

    def __init__(self, data: pd.DataFrame) -> None:
        self.data = data
        self.single: dict[str, tuple[Codes, int, Codes]] = {}
        self.built: dict[tuple[str, ...], GroupingFactor] = {}

    def codes_of(self, col: str) -> tuple[Codes, int, Codes]:
        if col not in self.single:
            column = self.data[col]
            values = column.to_numpy() if isinstance(column.dtype, np.dtype) else None
            # a column sorted by id is coded from its runs (parent_map finds them again in the
            # codes, a block at a time: kept here, the mask fragmented the heap)
            runs = None if values is None else sorted_runs(values)
            if values is not None and runs is not None:
                self.single[col] = _factorize_runs(values, runs)
                return self.single[col]
            try:
                self.single[col] = _factorize(self.data[col])
            except (TypeError, ValueError) as exc:  # values that cannot be compared or hashed
                raise DataError(
                    f"the grouping factor {col!r} cannot be coded into groups ({exc}); give it "
                    "plain labels (numbers or text), e.g. df[col].astype(str)"
                ) from exc
        return self.single[col]

    def factor(self, group: tuple[str, ...], name: str) -> GroupingFactor:
        if group in self.built:
            return self.built[group]
        own, n_own, counts = self.codes_of(group[-1])
        parent_codes = prefix_map = None
        if len(group) == 1:
            codes, nlevels = own, n_own
        else:
            prefix = self.factor(group[:-1], ":".join(group[:-1]))
            prefix_map, nested = parent_map(own, n_own, prefix.codes)
            if nested:
                codes, nlevels = own, n_own
                self._derive(prefix, own, prefix_map)
                del prefix
            else:
                parent_codes = prefix.codes
                codes, nlevels, counts = _factorize(combined_key(prefix.codes, n_own, own))
                prefix_map = np.empty(nlevels, dtype=np.int64)
                prefix_map[codes] = prefix.codes  # a combination nests in its prefix
        gf = GroupingFactor(
            name,
            group,
            codes,
            nlevels,
            parent_codes is not None,
            parent_codes,
            prefix_map,
            counts,
        )
        self.built[group] = gf
        return gf

    def _derive(self, coarse: GroupingFactor, codes: Codes, mapping: IntArray) -> None:
        """Hold ``coarse``'s codes (and those read through them) as a nested level's and a map.

        Through ``leaf_path``: at most two levels' per-row codes are held while a nested design's
        factors are built (the seed design's four levels held 122 MB at 8 million rows).
        """
        old = coarse.row_codes
        if old is None:
            return
        for group, gf in list(self.built.items()):
            if gf.row_codes is old:
                self.built[group] = dataclasses.replace(
                    gf, row_codes=None, leaf_path=(codes, (mapping,))
                )
            elif gf.leaf_path is not None and gf.leaf_path[0] is old:
                path = (codes, (mapping, *gf.leaf_path[1]))
                self.built[group] = dataclasses.replace(gf, leaf_path=path)
        # a later term on that column alone codes it again
        self.single = {c: v for c, v in self.single.items() if v[0] is not old}


def build_factors(formula: Formula, data: pd.DataFrame) -> list[GroupingFactor]:
    """One grouping factor per distinct group of the formula's random terms.

    A multi-column group ``(a, b)`` reuses the codes of ``b`` alone when ``b``'s labels are already
    unique across ``a`` (cheap and the common case), and otherwise forms the combination,
    flagging it as implicit nesting.
    """
    builder = _FactorBuilder(data)
    for term in formula.random:
        builder.factor(term.group, term.name)
    # read back once all are built: a level nested in a later one keeps no codes of its own
    out: list[GroupingFactor] = []
    for term in formula.random:
        gf = builder.built[term.group]
        if gf.name != term.name:  # same columns reached under another name first
            gf = dataclasses.replace(gf, name=term.name)
        out.append(gf)
    for term, gf in zip(formula.random, out, strict=True):
        if gf.nlevels < 2:
            raise DataError(
                f"the grouping factor {term.name!r} has {gf.nlevels} group; a random effect needs at "
                f"least 2 groups to estimate a variance (drop the term '(1 | {term.name})' or use "
                "data with more groups)"
            )
    return out


@dataclass(frozen=True, slots=True)
class Nesting:
    """Factors ordered outermost first, with the tree the nested engine needs.

    ``identical`` lists pairs of consecutive levels that partition the rows the same way (their
    variance components are not identified); the caller decides whether that is an error.
    """

    factors: tuple[GroupingFactor, ...]
    tree: Tree
    identical: tuple[tuple[GroupingFactor, GroupingFactor], ...]


def nested_chain(factors: list[GroupingFactor]) -> Nesting | None:
    """Order the factors coarse to fine and check each nests in the one before it.

    Returns None when the factors do not form a chain (crossed factors): the general engine handles
    those.
    """
    order = sorted(range(len(factors)), key=lambda i: factors[i].nlevels)
    chain = [factors[i] for i in order]
    parents: list[IntArray] = []
    identical = []
    for coarse, fine in zip(chain[:-1], chain[1:], strict=True):
        if fine.prefix_map is not None and fine.columns[:-1] == coarse.columns:
            mapping, ok = fine.prefix_map, True  # checked when the factor was built
        else:
            mapping, ok = parent_map(fine.codes, fine.nlevels, coarse.codes)
        if not ok:
            return None
        if fine.nlevels == coarse.nlevels:
            identical.append((coarse, fine))
        parents.append(mapping)
    leaf = chain[-1].codes
    tree = Tree(leaf, tuple(parents), tuple(f.nlevels for f in chain))
    return Nesting(tuple(chain), tree, tuple(identical))


def compact_levels(nesting: Nesting) -> dict[tuple[str, ...], GroupingFactor]:
    """The nesting's factors with only the leaf level's codes kept per row, by columns.

    Each outer level reads its codes through the parent maps the tree holds anyway
    (``leaf_path``): at 8 million rows of the seed design, 96 MB of per-row codes not kept.
    """
    chain, tree = nesting.factors, nesting.tree
    out = {chain[-1].columns: chain[-1]}
    for k in range(len(chain) - 1):
        maps = tuple(tree.parents[j] for j in range(len(chain) - 2, k - 1, -1))
        gf = chain[k]
        out[gf.columns] = dataclasses.replace(gf, row_codes=None, leaf_path=(tree.leaf, maps))
    return out
