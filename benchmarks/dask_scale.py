"""Benchmark the Dask path (tiers.scale) against the in-memory fit on the seed design.

One command (not run in CI; needs ``pip install -e .[scale]``)::

    python benchmarks/dask_scale.py [--rows 8e6 | --districts 5000] [--workers 1,2] [--data DIR]
    nice -n 5 python benchmarks/dask_scale.py --rows 1e8 --workers 2 --data /big/disk/seed-1e8

1. writes ``seed_design(districts=D)`` with seed 1 as a partitioned Parquet dataset
   (``tiers.simulation.partitioned.write_partitioned``, 1,000,000 rows a file; 1,600 rows per
   district, so ``--rows 1e8`` is 62,500 districts) unless ``--data`` already holds it, and
   times it;
2. up to ``--in-memory-max`` rows (default 1e7), in a fresh subprocess, reads every file into one
   pandas frame and fits the seed's four-level REML model in memory: read and fit wall times, the
   process's peak RSS;
3. for each worker count, in a fresh subprocess, starts a ``LocalCluster`` of that many
   single-threaded worker processes and fits the same model from
   ``tiers.read_data(DIR/*.parquet, lazy=True)``: the wall time of the two passes
   (read-and-reduce, `tiers.scale.fit.prepare_dask`, with pass 1, the client's work and pass 2
   apart) and of the fit on the statistics, the client's peak RSS and each worker's (sampled
   every 0.2 s), the load average before and after; a run whose client or worker passes
   ``--max-rss-gb`` is stopped and reported as such;
4. prints a table and the largest differences of the criterion and estimates from the in-memory
   fit, and writes everything to ``bench-out/dask_scale.json``.

The targets of issue 13: 10^8 rows in under 10 minutes with no process above 4 GB; at 8,000,000
rows the Dask path within 3x of the in-memory fit's wall time, with the same estimates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


def _estimates(res: Any) -> dict[str, Any]:
    return {
        "criterion": float(res.criterion),
        "beta": [float(v) for v in res.beta],
        "theta": [float(v) for v in res.theta],
        "sigma": float(res.sigma),
        "nobs": int(res.nobs),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def in_memory(folder: Path) -> dict[str, Any]:
    """Read all files into one frame and fit (run in its own process)."""
    import pandas as pd

    import tiers

    t0 = time.perf_counter()
    data = pd.concat(
        [pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))], ignore_index=True
    )
    t1 = time.perf_counter()
    res = tiers.fit(FORMULA, data)
    t2 = time.perf_counter()
    return {
        "read_s": t1 - t0,
        "fit_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_rss_mb": _peak_rss_mb(),
        **_estimates(res),
    }


class _Sampler:
    """Peak RSS of some processes, sampled every ``every`` seconds in a thread.

    Past ``limit_mb`` in any of them, the worker processes and this one are stopped (exit 3),
    after printing the peaks as a JSON line with ``aborted``.
    """

    def __init__(self, pids: list[int], limit_mb: float, every: float = 0.2) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0.0] * len(pids)
        self.limit_mb = limit_mb
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for i, p in enumerate(self.procs):
                try:
                    self.peak[i] = max(self.peak[i], p.memory_info().rss / 2**20)
                except Exception:  # noqa: BLE001 - a worker restarting: keep sampling the rest
                    pass
            if max(self.peak) > self.limit_mb:
                print(json.dumps({"aborted": True, "peak_rss_mb": self.peak}), flush=True)
                for p in self.procs[1:]:
                    p.kill()
                os._exit(3)
            time.sleep(self.every)

    def __enter__(self) -> _Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


class _Steps(logging.Handler):
    """The passes' wall times that `tiers.scale.fit` tells its logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.steps: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        step, seconds = record.args  # type: ignore[misc]
        self.steps[str(step)] = float(seconds)


def on_dask(folder: Path, workers: int, limit_mb: float) -> dict[str, Any]:
    """Fit on a local cluster of ``workers`` processes (run in its own process)."""
    from distributed import Client, LocalCluster

    import tiers
    from tiers.api.summarised import SummarisedResult
    from tiers.fitting import fit_design
    from tiers.scale.fit import log, prepare_dask

    steps = _Steps()
    log.addHandler(steps)
    log.setLevel(logging.INFO)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,  # the sampler watches memory; Dask's own limit would pause workers
        ) as cluster,
        Client(cluster) as client,
    ):
        t1 = time.perf_counter()
        pids = [os.getpid(), *client.run(os.getpid).values()]
        with _Sampler(pids, limit_mb) as sampler:
            ddf = tiers.read_data(str(folder / "part-*.parquet"), lazy=True)
            design = prepare_dask(FORMULA, ddf)
            t2 = time.perf_counter()
            res = fit_design(design, result_type=SummarisedResult)
            t3 = time.perf_counter()
    return {
        "workers": workers,
        "cluster_start_s": t1 - t0,
        "read_reduce_s": t2 - t1,
        "steps_s": steps.steps,
        "fit_s": t3 - t2,
        "total_s": t3 - t1,
        "client_peak_rss_mb": max(_peak_rss_mb(), sampler.peak[0]),
        "worker_peak_rss_mb": sampler.peak[1:],
        "load_before": load_before,
        "load_after": os.getloadavg(),
        **_estimates(res),
    }


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    last = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    if out.returncode == 3 and last.get("aborted"):
        return last
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return last


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    rel = abs(a["criterion"] - b["criterion"]) / abs(b["criterion"])
    est = max(
        abs(x - y) / max(1.0, abs(y))
        for k in ("beta", "theta")
        for x, y in zip(a[k], b[k], strict=True)
    )
    return {"criterion_rel": rel, "estimates_max_rel": est}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--districts", type=int, default=5000)
    ap.add_argument("--rows", type=float, default=None, help="rows (1,600 a district): 1e8")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--in-memory-max", type=float, default=1e7, help="fit in memory up to this")
    ap.add_argument("--max-rss-gb", type=float, default=8.0, help="stop a run past this")
    ap.add_argument("--out", type=Path, default=Path("bench-out/dask_scale.json"))
    ap.add_argument("--in-memory", dest="child_mem", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--on-dask", dest="child_dask", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_mem is not None:
        print(json.dumps(in_memory(a.child_mem)))
        return
    if a.child_dask is not None:
        print(json.dumps(on_dask(a.child_dask, a.n, a.max_rss_gb * 1024)))
        return

    import numpy  # noqa: F401  (loads the BLAS that machine_line reports)
    from run import blas_config, machine_line  # benchmarks/run.py: BLAS and load record

    import tiers
    from tiers.simulation.partitioned import write_partitioned

    print(machine_line(), flush=True)
    districts = a.districts if a.rows is None else max(1, round(a.rows / 1600))
    rows = districts * 1600
    folder = a.data or Path(f"bench-out/seed-{districts}")
    report: dict[str, Any] = {"districts": districts, "rows": rows, "cpus": os.cpu_count()}
    report["blas"] = blas_config()
    if not any(folder.glob("part-*.parquet")):
        t0 = time.perf_counter()
        files = write_partitioned(tiers.seed_design(districts=districts), folder, 1)
        report["simulate_s"] = time.perf_counter() - t0
        report["files"] = len(files)
        print(
            f"wrote {rows:,} rows in {len(files)} files in {report['simulate_s']:.1f} s to {folder}"
        )
    mem: dict[str, Any] | None = None
    if rows <= a.in_memory_max:
        mem = _child(["--in-memory", str(folder)])
        report["in_memory"] = mem
        print(
            f"in memory: read {mem['read_s']:.1f} s, fit {mem['fit_s']:.1f} s, "
            f"peak {mem['peak_rss_mb']:.0f} MB"
        )
    report["dask"] = []
    for n in [int(w) for w in a.workers.split(",")]:
        args = ["--on-dask", str(folder), "--n", str(n), "--max-rss-gb", str(a.max_rss_gb)]
        run = _child(args)
        report["dask"].append(run)
        if run.get("aborted"):
            print(
                f"dask, {n} worker(s): stopped past {a.max_rss_gb} GB: peaks {run['peak_rss_mb']}"
            )
            continue
        if mem is not None:
            run.update(_diff(run, mem))
        steps = ", ".join(f"{k.split(' (')[0]} {v:.1f} s" for k, v in run["steps_s"].items())
        print(
            f"dask, {n} worker(s): cluster {run['cluster_start_s']:.1f} s, read+reduce "
            f"{run['read_reduce_s']:.1f} s ({steps}), fit {run['fit_s']:.1f} s; peak RSS: client "
            f"{run['client_peak_rss_mb']:.0f} MB, workers "
            f"{', '.join(f'{m:.0f}' for m in run['worker_peak_rss_mb'])} MB; load average "
            f"{run['load_before'][0]:.1f} before, {run['load_after'][0]:.1f} after"
            + (
                f"; vs in memory: criterion {run['criterion_rel']:.1e}, estimates "
                f"{run['estimates_max_rel']:.1e}"
                if mem is not None
                else ""
            )
        )
    report["load_average_end"] = os.getloadavg()
    print(machine_line(), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
