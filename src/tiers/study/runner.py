"""Simulation studies: "is the sample too small?" answered with replicates instead of hope.

:func:`run_study` draws ``replicates`` data sets from a :class:`~tiers.simulation.data.NestedDesign` at
each of several sizes (the units per parent of one level, by default the outermost), fits each
estimator to each data set and summarises, per size, estimator and parameter, the mean estimate,
bias, empirical SD, RMSE, mean reported SE, coverage of the reported 95% interval, and the counts
of fitted, failed and singular fits (Morris, White and Crowther 2019, *Stat. Med.* 38:2074, for
the performance measures and their names). This module runs the study and stores it;
:mod:`tiers.study_fit` holds the estimator specs and the drawing and fitting of one replicate.

Estimators
----------
``ols``, ``fe`` and ``re`` are :mod:`tiers.panel`'s pooled OLS, within and Swamy-Arora random-
effects estimators of the response on every covariate, with the innermost level as the panel id
(``fe:teach_id`` names another). Anything else is a mixed-model formula (lme4 or Stata syntax),
fitted with ``force=True`` so a wrongly nested model is fitted, counted and its warnings kept.
For a GLMM design (family binomial or poisson) a formula is a GLMM of the design's family and link
fitted by the Laplace approximation, unless its options say otherwise (``FORMULA; nagq=7``,
``; link=probit``, ``; family=gaussian`` for a linear probability model; see
`tiers.study.estimators.glmm_options`); its SDs are reported with Wald intervals (the SD plus or
minus 1.96 SEs, cut at 0), its fixed effects with Wald z intervals, and there is no
``sd_residual``.

Parameter names are those of :meth:`NestedDesign.true_parameters`: a mixed model's level SD is
``sd_<last grouping column of the level>``, its residual SD ``sd_residual``, its coefficients
``beta_intercept`` and ``beta_<covariate>``; a panel model's ``sigma_u`` is ``sd_<id>``,
``sigma_e`` (pooled OLS: the root mean squared residual) ``sd_residual`` and ``_cons``
``beta_intercept``. The truth is always the design's: an estimator that estimates a parameter under
another meaning (the one-level model's student SD absorbs every level) shows it as bias.

Coverage is computed over the replicates whose estimator reported an interval (``n_interval``):
a mixed model reports none for an SD estimated at zero, and panel models none for their SDs. An
interval ``[0, inf)`` (a non-identified SD) is an interval and covers.

Random streams
--------------
Replicate ``r`` at size ``s`` uses ``numpy.random.SeedSequence(seed, spawn_key=(s, r))``, which is
``SeedSequence(seed).spawn(s + 1)[s].spawn(r + 1)[r]``: a fixed function of (seed, size, r), so
results do not depend on the number of workers, on the order of the work, or on which other sizes
and replicates are run, and extending a study reuses the finished replicates. Its data are those of
``simulate(design_at_size, numpy.random.default_rng(stream))``, drawn by :func:`draw_replicate`
without building a DataFrame; each worker prepares every mixed model once per size, on replicate
0's data, and refits it with each replicate's response and fixed-effects matrix.

Storage
-------
With ``out``, ``out/study.json`` records the design, level, seed and estimators and
``out/replicates.csv`` holds one row per size, replicate, estimator and parameter. Each finished
batch is stored at once, whole or not at all, so an interrupted study keeps what was finished and a
rerun with the same or more replicates, sizes or estimators only fits what is missing; a lock keeps
a second run off the folder while one is running (:mod:`tiers.study.store`). ``out/summary.csv``
is rewritten at the end: the columns of `SUMMARY_COLUMNS`, that is size, estimator, parameter, truth, mean, bias,
sd (empirical, over replicates), rmse, mean_se (mean reported SE), coverage, n_ok, n_failed,
n_singular, median_seconds (of one fit), then n_interval and n_unconverged (fits whose optimum
was not certified, e.g. every fit of a non-identified model), and power: for a coefficient, the
share of the fits with an interval whose 95% interval excludes zero (the Wald test at 5%; with a
true coefficient of zero, the false-positive rate), NaN for an SD.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers._output import atomic_path
from tiers.errors import DesignError, OutputError, StudyError
from tiers.inference.progress import ProgressBar
from tiers.simulation.data import NestedDesign
from tiers.simulation.memory import check_memory
from tiers.simulation.presets import PRESETS, load_design
from tiers.study.estimators import (
    Estimator,
    _as_estimators,
    _check_estimators,
    default_estimators,
    parse_estimator,
)
from tiers.study.parallel import run_tasks
from tiers.study.replicate import _layout, _run_batch, draw_replicate, replicate_seed
from tiers.study.store import REPLICATE_COLUMNS, Store, load_rows, read_meta  # noqa: F401
from tiers.study.store import frame as _frame

__all__ = ["Estimator", "StudyError", "StudyResult", "default_estimators", "draw_replicate",
           "load_study", "parse_estimator", "replicate_seed", "run_study", "summarize"]  # fmt: skip

SUMMARY_COLUMNS: tuple[str, ...] = (
    "size", "estimator", "parameter", "truth", "mean", "bias", "sd", "rmse", "mean_se",
    "coverage", "n_ok", "n_failed", "n_singular", "median_seconds", "n_interval", "n_unconverged",
    "power",
)  # fmt: skip
DEFAULT_MAX_ROWS = 20_000_000


# ----------------------------------------------------------------------------- the runner --


@dataclass(frozen=True)
class StudyResult:
    """A study: the summary and the per-replicate table (both tidy), and what produced them."""

    summary: pd.DataFrame
    replicates: pd.DataFrame
    design: NestedDesign
    level: str
    sizes: tuple[int, ...]
    estimators: tuple[Estimator, ...]
    seed: int
    n_replicates: int
    out: Path | None = None
    seconds: float = 0.0
    n_new: int = 0  # fits run by this call; the others were loaded from ``out``
    notes: tuple[str, ...] = ()  # what loading ``out`` skipped or repaired, in words

    def plot(self, out: str | Path, *, fmt: Literal["png", "svg"] = "png") -> list[Path]:
        """Write the figures of :mod:`tiers.study.plots` into ``out``; return their paths.

        Each figure is drawn in a temporary folder inside ``out`` and renamed into place whole, so
        an interrupted or failed run leaves no partial figure.
        """
        import shutil
        import tempfile

        from tiers.study.plots import plot_study

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".plots-", dir=folder))
        try:
            paths = []
            for path in plot_study(self, tmp, fmt=fmt):
                os.replace(path, folder / path.name)
                paths.append(folder / path.name)
            return paths
        except OSError as exc:
            raise OutputError(f"could not write the figures in {folder}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def report(self, path: str | Path) -> Path:
        """Write a self-contained HTML report (tables and figures) to ``path``.

        See `tiers.study.report`; ``path``'s folder must exist (`tiers.errors.OutputError`).
        """
        from tiers.study.report import write_study_report

        return write_study_report(self, path)

    def __repr__(self) -> str:
        return (
            f"<StudyResult {len(self.estimators)} estimators x {len(self.sizes)} sizes x "
            f"{self.n_replicates} replicates, level {self.level}>"
        )

    def _repr_html_(self) -> str:
        from tiers.results.display import html_tables
        from tiers.study.report import study_tables

        return html_tables(study_tables(self), self.notes, cls="tiers-study")

    def _repr_markdown_(self) -> str:
        from tiers.results.display import markdown_tables
        from tiers.study.report import study_tables

        return markdown_tables(study_tables(self), self.notes)

    def _repr_latex_(self) -> str:
        from tiers.results.display import latex_tables
        from tiers.study.report import study_tables

        return latex_tables(study_tables(self))


def _as_design(design: Any) -> NestedDesign:
    if isinstance(design, NestedDesign):
        return design
    if isinstance(design, Mapping):
        return NestedDesign.from_dict(design)
    if isinstance(design, str) and design in PRESETS:
        return PRESETS[design]()
    if isinstance(design, str | os.PathLike):
        try:
            return load_design(design)
        except OSError as exc:
            raise DesignError(
                f"cannot read the design file {design}: {exc.strerror or exc}"
            ) from None
    raise DesignError(f"a study needs a NestedDesign, preset name or design file, not {design!r}")


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DesignError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def run_study(
    design: NestedDesign | str | os.PathLike | Mapping[str, Any],
    estimators: Mapping[str, str] | Iterable[str | Estimator] | None = None,
    sizes: Iterable[int] = (5, 10, 20, 50),
    replicates: int = 100,
    seed: int = 1,
    *,
    level: str | None = None,
    workers: int | None = None,
    out: str | os.PathLike | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
    batch_size: int | None = None,
) -> StudyResult:
    """Run, resume or extend a simulation study (module docstring).

    Parameters
    ----------
    design : NestedDesign, preset name, design file (.toml/.json) or its dict
    estimators : mapping NAME -> SPEC, "NAME=SPEC" strings or Estimator objects, optional
        SPEC: ``ols``, ``fe``, ``re`` (``fe:ID`` for another panel id) or a mixed-model formula.
        Default :func:`default_estimators`.
    sizes : iterable of int
        Units per parent of ``level`` (the outermost by default: the number of districts).
    replicates : int
        Data sets per size.
    seed : int
        Root of the random streams.
    level : str, optional
        The level whose units vary; default the outermost.
    workers : int, optional
        Processes, this one among them (default: the number of cores); the numbers do not
        depend on it. With more than one, a script calling this needs the
        ``if __name__ == "__main__":`` guard unless the workers are forked from it (Linux, no
        other thread running: `tiers._workers.worker_context`); others import the main
        module.
    out : path, optional
        Folder of study.json, replicates.csv (each batch stored whole as it finishes:
        resumable; locked while a run uses it) and summary.csv.
    max_rows : int
        Refuse sizes with more rows per replicate than this.
    progress : bool
        Progress on stderr: in a terminal a bar with an ETA naming the size being fitted, in a
        log (CI, Slurm, nohup) a plain line every 10 s or 10% of the work, whichever comes later.
    on_batch : callable, optional
        Called with the number of replicates finished so far after each batch is stored.
    batch_size : int, optional
        Replicates per task (default: about eight tasks per worker and size, at most 25).

    Raises
    ------
    DesignError
        Invalid design, level, sizes or replicates, or too many rows.
    FormulaError, StudyError
        An estimator naming a column the design does not produce, an unknown estimator, a model
        the design cannot support, an ``out`` folder holding another study or in use by another
        run, a corrupt study.json.
    OutputError
        ``out`` cannot be written (a file, under a file, read-only; or a full disk midway).

    All of these are raised before any replicate is fitted.
    """
    start = time.perf_counter()
    design = _as_design(design)
    names = [lv.name for lv in design.levels]
    level = names[0] if level is None else level
    if level not in names:
        raise DesignError(f"no level named {level!r}; the levels are {names}")
    size_list = sorted({_count(s, f"each size (units of {level!r})") for s in ([sizes] if isinstance(sizes, int) else sizes)})  # fmt: skip
    if not size_list:
        raise DesignError("give at least one size")
    R, max_rows = _count(replicates, "replicates"), _count(max_rows, "max_rows")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DesignError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    designs = {s: design.with_units(level, s) for s in size_list}
    for s, d in designs.items():
        if d.nrows > max_rows:
            raise DesignError(
                f"size {s} gives {d.nrows:,} rows per replicate, more than max_rows={max_rows:,} "
                f"(roughly {d.nrows * 8 * (6 + len(d.levels)) / 2**30:.1f} GiB per worker); "
                "raise max_rows (--max-rows) to run it anyway"
            )
    nworkers = _count(os.cpu_count() or 1 if workers is None else workers, "workers")
    biggest = designs[size_list[-1]]
    # each worker holds one replicate's columns (ids, covariates, response, design matrices)
    check_memory(biggest.nrows * 8 * (6 + len(biggest.levels)) * min(nworkers, R * len(size_list)),
                 f"size {size_list[-1]} with {nworkers} worker(s)")  # fmt: skip
    ests = _as_estimators(estimators, design)
    _check_estimators(design, ests)
    small = _layout(designs[size_list[0]], seed, size_list[0], ests)
    for e in ests:  # a model the design cannot support is refused here, not failed R times
        if isinstance(small.prepared.get(e.name), Exception):
            raise StudyError(f"estimator {e.name!r} cannot be fitted: {small.prepared[e.name]}")
    # The varied level's units are the sizes, so they are not part of what the study is.
    meta = {"design": design.with_units(level, 1).to_dict(), "level": level, "seed": seed}
    store = Store(Path(out), meta, {e.name: e.spec for e in ests}) if out is not None else None
    try:
        return _run(store, design, level, size_list, designs, ests, R, seed, nworkers, progress,
                    on_batch, batch_size, start)  # fmt: skip
    except BaseException:
        if store is not None:
            store.close(None)  # keep what finished; the lock is released
        raise


def _run(store: Store | None, design: NestedDesign, level: str, size_list: list[int],
         designs: dict[int, NestedDesign], ests: tuple[Estimator, ...], R: int, seed: int,
         nworkers: int, progress: bool, on_batch: Callable[[int], None] | None,
         batch_size: int | None, start: float) -> StudyResult:  # fmt: skip
    old = store.loaded.table if store is not None else _frame([])
    done = set(zip(old["size"], old["replicate"], old["estimator"], strict=True))
    tasks = []
    for s in size_list:
        todo = [(r, tuple(e.name for e in ests if (s, r, e.name) not in done)) for r in range(R)]
        todo = [t for t in todo if t[1]]
        # ~8 tasks per worker: they end within about 1/16 of the run of each other
        step = batch_size or max(1, min(25, math.ceil(len(todo) / (8 * nworkers))))
        tasks += [(designs[s].to_dict(), seed, s, ests, todo[i : i + step])
                  for i in range(0, len(todo), step)]  # fmt: skip
    new = _execute(tasks, nworkers, progress, store, on_batch)
    everything = pd.concat([old, _frame(new)], ignore_index=True) if new else old
    table = everything[everything["size"].isin(size_list) & (everything["replicate"] < R)
                       & everything["estimator"].isin([e.name for e in ests])]  # fmt: skip
    truth = design.true_parameters()
    table = _sorted(table, [e.name for e in ests], truth)
    summary = summarize(table, truth)
    notes: tuple[str, ...] = ()
    if store is not None:
        store.close(everything)
        with atomic_path(store.folder / "summary.csv", "study summary") as tmp:
            summary.to_csv(tmp, index=False)
        notes = store.notes
    return StudyResult(summary, table, design, level, tuple(size_list), ests, seed, R,
                       None if store is None else store.folder, time.perf_counter() - start,
                       len({r[:3] for r in new}), notes)  # fmt: skip


def _execute(tasks: list[tuple], workers: int, show: bool, store: Any, on_batch: Any) -> list:
    """Run the batches, storing each one as it finishes (`tiers.study.parallel`).

    On an exception or Ctrl-C the queued batches are dropped and the finished ones kept.
    """
    rows: list[tuple] = []
    finished = 0
    left: dict[int, int] = {}  # replicates still to fit, by size: the bar names the smallest
    for t in tasks:
        left[t[2]] = left.get(t[2], 0) + len(t[4])
    bar = ProgressBar(show, sum(left.values()), "study")
    bar.describe(f"size {min(left)}" if left else "")

    def finish(task: tuple, batch: list[tuple]) -> None:
        nonlocal finished
        n, size = len(task[4]), task[2]
        if store is not None:
            store.append(batch)
        rows.extend(batch)
        finished += n
        left[size] -= n
        bar.describe(f"size {min([s for s, k in left.items() if k > 0] or [size])}")
        bar.advance(n)
        if on_batch is not None:
            on_batch(finished)

    run_tasks(tasks, workers, _run_batch, finish, during=bar)  # the bar after the workers start
    return rows


def _sorted(table: pd.DataFrame, order: list[str], truth: Mapping[str, float]) -> pd.DataFrame:
    """Rows by size, estimator (as given), parameter (as the design lists them) and replicate.

    Sorted so that the summary's floating-point sums do not depend on the order batches finished in.
    """
    params = list(truth) + sorted(set(table["parameter"]) - set(truth))
    rank = {"e": {n: i for i, n in enumerate(order)}, "p": {n: i for i, n in enumerate(params)}}
    keys = table.assign(_e=table["estimator"].map(rank["e"]), _p=table["parameter"].map(rank["p"]))
    keys = keys.sort_values(["size", "_e", "_p", "replicate"], kind="stable")
    keys = keys.drop_duplicates(["size", "replicate", "estimator", "parameter"])
    return keys.drop(columns=["_e", "_p"]).reset_index(drop=True)


def summarize(table: pd.DataFrame, truth: Mapping[str, float]) -> pd.DataFrame:
    """One row per size, estimator and parameter (in the table's order), columns `SUMMARY_COLUMNS`.

    Statistics over the fits with status ``ok``; failed fits counted apart.
    """
    out = []
    for (size, est, param), g in table.groupby(["size", "estimator", "parameter"], sort=False):
        ok = g[g["status"] == "ok"]
        t = float(truth.get(param, math.nan))
        e = ok["estimate"].to_numpy(float)
        e, se = e[np.isfinite(e)], ok["se"].to_numpy(float)
        se = se[np.isfinite(se)]
        lo, hi = ok["lower"].to_numpy(float), ok["upper"].to_numpy(float)
        # Replicates whose estimator reported an interval; none can cover an unknown truth.
        has = ~np.isnan(lo) & ~np.isnan(hi) & np.isfinite(t)
        rejects = ((lo > 0) | (hi < 0))[has] if str(param).startswith("beta_") else []
        mean = float(e.mean()) if e.size else math.nan
        out.append({
            "size": int(size), "estimator": est, "parameter": param, "truth": t, "mean": mean,
            "bias": mean - t, "sd": float(e.std(ddof=1)) if e.size > 1 else math.nan,
            "rmse": float(np.sqrt(np.mean((e - t) ** 2))) if e.size else math.nan,
            "mean_se": float(se.mean()) if se.size else math.nan,
            "coverage": float(np.mean((lo[has] <= t) & (t <= hi[has]))) if has.any() else math.nan,
            "n_ok": len(ok), "n_failed": int((g["status"] == "failed").sum()),
            "n_singular": int(ok["singular"].sum()), "median_seconds": float(g["seconds"].median()),
            "n_interval": int(has.sum()), "n_unconverged": int((~ok["converged"]).sum()),
            "power": float(np.mean(rejects)) if len(rejects) else math.nan,
        })  # fmt: skip
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def load_study(out: str | os.PathLike) -> StudyResult:
    """Reload a study folder: every stored size and replicate, summarised afresh.

    Its ``design`` has the varied level's units set to 1 (the sizes say how many).
    """
    folder = Path(out)
    meta = read_meta(folder)
    try:
        design = NestedDesign.from_dict(meta["design"])
        ests = tuple(parse_estimator(f"{n}={s}") for n, s in meta["estimators"].items())
    except (DesignError, StudyError, AttributeError, TypeError) as exc:
        raise StudyError(f"{folder}/study.json does not describe a study: {exc}") from None
    truth = design.true_parameters()
    loaded = load_rows(folder)
    table = _sorted(loaded.table, [e.name for e in ests], truth)
    sizes = tuple(sorted(int(s) for s in set(table["size"])))
    R = int(table["replicate"].max()) + 1 if len(table) else 0
    return StudyResult(summarize(table, truth), table, design, meta["level"], sizes, ests,
                       meta["seed"], R, folder, notes=loaded.notes)  # fmt: skip
