"""What a nested fit keeps beyond the data frame, and that what it no longer keeps is rebuilt exactly.

* the fixed-effects matrix of a plain sum of columns is held as the frame's columns
  (`tiers.data.columns.ColumnMatrix`): a block of rows, the cross-product and the dense matrix
  equal those of the matrix built whole, and the dense matrix is not kept once no one holds it;
* of a nested design's per-row group codes only the leaf level's are kept; every level's codes
  read through the tree equal the codes of its column;
* rows sorted by leaf give the engine `tiers.engine.statistics.RowSums` (no leaf table): its
  statistics, leaf sums read again in blocks and the engine built from it equal those of the
  bincount path, also when blocks of rows end inside a leaf.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pandas as pd
import pytest

import tiers
import tiers.design.grouping as grouping_mod
import tiers.engine.statistics as st_mod
from tiers.data.columns import model_columns
from tiers.design.grouping import Tree, count_codes, parent_map
from tiers.engine.nested_scalar import NestedProblem
from tiers.engine.registry import build_engine
from tiers.engine.statistics import NestedStatistics, RowSums

from .test_engine import random_tree

NESTED = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


@pytest.fixture(scope="module")
def seed_data() -> pd.DataFrame:
    return tiers.simulate(tiers.seed_design(districts=3), seed=1)


def test_columns_equal_the_matrix_built_whole() -> None:
    rng = np.random.default_rng(0)
    n = 50
    data = pd.DataFrame(
        {"i": rng.integers(-5, 5, n), "f": rng.normal(size=n), "b": rng.integers(0, 2, n) == 1}
    )
    X, names = model_columns("i + f + b", data, what="test")
    assert names == ["(Intercept)", "i", "f", "b"] and not X.held
    whole = np.column_stack([np.ones(n), data.i, data.f, data.b.astype(float)])
    np.testing.assert_array_equal(X.dense(), whole)
    np.testing.assert_array_equal(X.rows(7, 19), whole[7:19])
    np.testing.assert_allclose(X.cross_product(), whole.T @ whole, rtol=1e-14)
    np.testing.assert_array_equal(X.select([0, 2]).dense(), whole[:, [0, 2]])
    # shared while held, then freed: the frame does not keep it
    first = X.dense()
    assert X.dense() is first
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None


def test_a_nested_fit_keeps_the_leaf_codes_only(seed_data: pd.DataFrame) -> None:
    design = tiers.prepare(NESTED, seed_data)
    assert design.engine == "nested"
    assert not design.frame.x_columns.held
    factors = design.nesting.factors
    assert [gf.row_codes is None for gf in factors] == [True, True, True, False]
    for gf in factors:
        codes, _ = pd.factorize(seed_data[gf.columns[-1]], sort=True)
        np.testing.assert_array_equal(gf.codes, codes)
        np.testing.assert_array_equal(gf.sizes(), np.bincount(codes))
    for t in design.terms:  # the terms share the factors' storage
        np.testing.assert_array_equal(
            t.codes, pd.factorize(seed_data[t.factor.columns[-1]], sort=True)[0]
        )
    engine = build_engine(design)
    assert isinstance(engine, NestedProblem) and isinstance(engine.stats, RowSums)


def test_a_level_also_used_alone_keeps_its_codes(seed_data: pd.DataFrame) -> None:
    """A column coded again for a term of its own after its codes were dropped while building."""
    design = tiers.prepare("perform ~ (1 | school_id/teach_id) + (1 | school_id)", seed_data)
    for gf in design.factors:
        codes, _ = pd.factorize(seed_data[gf.columns[-1]], sort=True)
        np.testing.assert_array_equal(gf.codes, codes)


def test_codes_counted_and_mapped_in_blocks(monkeypatch) -> None:
    monkeypatch.setattr(grouping_mod, "_STEP", 7)
    rng = np.random.default_rng(3)
    grouped = np.repeat(np.arange(40), rng.integers(1, 5, 40)).astype(np.int32)
    spread = rng.integers(0, 500, 60).astype(np.int32)  # more groups than a block has rows
    for codes, nlevels in ((grouped, 40), (spread, 500)):
        np.testing.assert_array_equal(
            count_codes(codes, nlevels), np.bincount(codes, minlength=nlevels)
        )
    parent = (np.arange(40) // 4).astype(np.int32)[grouped]
    mapping, ok = parent_map(grouped, 40, parent)
    assert ok
    np.testing.assert_array_equal(mapping, np.arange(40) // 4)
    moved = parent.copy()
    moved[-1] += 1  # one row in another parent, in the last block
    assert not parent_map(grouped, 40, moved)[1]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("balanced", [True, False])
def test_row_sums_equal_the_statistics_of_the_rows(monkeypatch, weighted, balanced) -> None:
    rng = np.random.default_rng(5)
    tree, n = random_tree(rng, 3, balanced)
    order = np.argsort(tree.leaf, kind="stable")
    tree = Tree(tree.leaf[order], tree.parents, tree.sizes)  # rows sorted by leaf
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 3, n)])
    y = rng.normal(size=n) * 3 + 2
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    monkeypatch.setattr(st_mod, "_CHUNK_CELLS", 5 * (X.shape[1] + 1))  # blocks end inside leaves
    monkeypatch.setattr(st_mod, "_BLOCK", 5)
    sums = RowSums.from_rows(y, X, tree, weights=w)
    assert sums is not None
    table = NestedStatistics.from_arrays(y, X, tree, weights=w)
    scale = np.abs(table.dtd).max()
    np.testing.assert_allclose(sums.shift, table.shift, rtol=1e-14)
    np.testing.assert_allclose(sums.dtd, table.dtd, rtol=1e-13, atol=1e-13 * scale)
    np.testing.assert_allclose(sums.leaf_table(), table.leaf, rtol=1e-13, atol=1e-13 * scale)
    np.testing.assert_allclose(sums.leaf_sizes(), table.leaf[:, 0], rtol=1e-14)
    assert sums.leaf_size_range() == pytest.approx(table.leaf_size_range(), rel=1e-14)
    blocks = list(sums.leaf_blocks())
    assert len(blocks) > 1
    assert [lo for lo, _ in blocks] == list(np.cumsum([0] + [b.shape[0] for _, b in blocks[:-1]]))
    # the engine from the rows (RowSums) and from rows in another order (bincounts, a table)
    shuffled = rng.permutation(n)
    from_rows = NestedProblem(y, X, tree, reml=True, weights=w)
    from_table = NestedProblem(
        y[shuffled],
        X[shuffled],
        Tree(tree.leaf[shuffled], tree.parents, tree.sizes),
        reml=True,
        weights=None if w is None else w[shuffled],
    )
    assert isinstance(from_rows.stats, RowSums)
    assert isinstance(from_table.stats, NestedStatistics)
    theta = np.array([0.8, 0.5, 1.2])
    a, ga = from_table.deviance_and_gradient(theta)
    b, gb = from_rows.deviance_and_gradient(theta)
    np.testing.assert_allclose(b, a, rtol=1e-12)
    np.testing.assert_allclose(gb, ga, rtol=1e-9, atol=1e-9)
    sol = from_table.solve(theta)
    for m1, m2 in zip(
        from_table.conditional_modes(theta, sol.beta, sol.sigma),
        from_rows.conditional_modes(theta, sol.beta, sol.sigma),
        strict=True,
    ):
        np.testing.assert_allclose(m2.b, m1.b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m2.cov, m1.cov, rtol=1e-9, atol=1e-14)


def test_unsorted_rows_keep_the_table() -> None:
    rng = np.random.default_rng(8)
    tree, n = random_tree(rng, 2, False)  # leaves shuffled over the rows
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    assert RowSums.from_rows(rng.normal(size=n), X, tree) is None
