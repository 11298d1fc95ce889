"""Benchmark the simulation-study runner on the four-level seed model.

One command::

    .venv/bin/python benchmarks/bench_study.py [--districts 50] [--replicates 1000] [--workers N]

Runs ``tiers.study.run_study`` on ``seed_design`` at ``--districts`` districts (50: 80,000 rows
per replicate) with the correctly nested four-level REML model only, ``--replicates`` replicates,
seed 1, into a temporary folder (so the per-batch CSV appends are timed too), and prints

* the total wall time (spawning the workers, preparing the model once per worker, drawing,
  fitting and storing every replicate, summarising),
* the median fit time per replicate (refit of the prepared model with that replicate's response
  and design matrix, as recorded in the ``seconds`` column),
* the wall time per replicate (total / replicates: what the workers achieve together),

and the summary table, so a fast but wrong run is visible at once. The target of issue #6: 1,000
replicates at 50 districts in under 2 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from threadpoolctl import threadpool_info

from tiers.simulation.presets import seed_design
from tiers.study.runner import run_study

FORMULA = "perform tutoring || dist_id: || school_id: || teach_id: || student_id:"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--districts", type=int, default=50)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    design = seed_design(districts=args.districts)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = run_study(
            design,
            {"nested": FORMULA},
            sizes=[args.districts],
            replicates=args.replicates,
            seed=1,
            workers=workers,
            out=out,
            progress=args.progress,
        )
        total = time.perf_counter() - start
    fits = result.replicates.drop_duplicates(["size", "replicate", "estimator"])
    median = float(fits["seconds"].median())
    print(
        f"{platform.node()} ({os.cpu_count()} cores, {workers} workers), Python "
        f"{platform.python_version()}: {args.replicates:,} replicates of the four-level REML model "
        f"at {args.districts} districts ({design.nrows:,} rows each)"
    )
    blas = ", ".join(
        f"{i['internal_api']} {i.get('version')} x{i['num_threads']}" for i in threadpool_info()
    )
    print(f"BLAS (parent; workers run one thread each): {blas}")
    print(f"total               {total:8.1f} s")
    print(f"median fit          {median * 1000:8.1f} ms per replicate")
    print(f"wall per replicate  {total / args.replicates * 1000:8.1f} ms (all workers together)")
    print(f"failed fits         {int(result.summary['n_failed'].max()):8d}")
    cols = ["parameter", "truth", "mean", "bias", "sd", "mean_se", "coverage", "n_singular"]
    print(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
