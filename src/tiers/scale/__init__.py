"""Fits of data larger than memory on Dask: one distributed pass to sufficient statistics.

The engines depend on the data only through sufficient statistics (nested random intercepts:
`tiers.engine.statistics.NestedStatistics`; slopes and crossed factors: per-leaf or per-cell
cross-products, `tiers.engine.gram_statistics.LeafGrams`), so a model is fitted from a
`dask.dataframe` without ever holding its rows in one process: a cheap first pass learns what the design needs
from every row (missing values, the levels of categorical predictors, the distinct id tuples that
form the nesting tree), a second pass reduces each partition to statistics that combine exactly,
and the fit runs on the client (`tiers.scale.fit`).

Dask is imported when used, never at ``import tiers``.
"""
