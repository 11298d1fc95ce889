"""Benchmark the Dask path (tiers.scale) against the in-memory fit on the seed design.

One command (not run in CI; needs ``pip install -e .[scale]``)::

    python benchmarks/dask_scale.py [--districts 5000] [--workers 1,2] [--data DIR]

1. writes ``seed_design(districts=D)`` with seed 1 as a partitioned Parquet dataset
   (``tiers.simulation.partitioned.write_partitioned``, 1,000,000 rows a file; 1,600 rows per
   district, so 5000 -> 8,000,000 rows) unless ``--data`` already holds it;
2. in a fresh subprocess, reads every file into one pandas frame and fits the seed's four-level
   REML model in memory: read and fit wall times, the process's peak RSS;
3. for each worker count, in a fresh subprocess, starts a ``LocalCluster`` of that many
   single-threaded worker processes and fits the same model from
   ``tiers.read_data(DIR/*.parquet, lazy=True)``: the wall time of the two passes
   (read-and-reduce, `tiers.scale.fit.prepare_dask`) and of the fit on the statistics, the
   client's peak RSS and each worker's (sampled every 0.2 s);
4. prints a table and the largest differences of the criterion and estimates from the in-memory
   fit, and writes everything to ``bench-out/dask_scale.json``.

Do not point it at 10^8 rows on a shared machine without checking memory first.
"""

from __future__ import annotations

import argparse
import json
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
    """Peak RSS of some processes, sampled every ``every`` seconds in a thread."""

    def __init__(self, pids: list[int], every: float = 0.2) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0.0] * len(pids)
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
            time.sleep(self.every)

    def __enter__(self) -> _Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def on_dask(folder: Path, workers: int) -> dict[str, Any]:
    """Fit on a local cluster of ``workers`` processes (run in its own process)."""
    import os

    from distributed import Client, LocalCluster

    import tiers
    from tiers.api.summarised import SummarisedResult
    from tiers.fitting import fit_design
    from tiers.scale.fit import prepare_dask

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        t1 = time.perf_counter()
        pids = list(client.run(os.getpid).values())
        with _Sampler(pids) as sampler:
            ddf = tiers.read_data(str(folder / "part-*.parquet"), lazy=True)
            design = prepare_dask(FORMULA, ddf)
            t2 = time.perf_counter()
            res = fit_design(design, result_type=SummarisedResult)
            t3 = time.perf_counter()
    return {
        "workers": workers,
        "cluster_start_s": t1 - t0,
        "read_reduce_s": t2 - t1,
        "fit_s": t3 - t2,
        "total_s": t3 - t1,
        "client_peak_rss_mb": _peak_rss_mb(),
        "worker_peak_rss_mb": sampler.peak,
        **_estimates(res),
    }


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench-out/dask_scale.json"))
    ap.add_argument("--in-memory", dest="child_mem", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--on-dask", dest="child_dask", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_mem is not None:
        print(json.dumps(in_memory(a.child_mem)))
        return
    if a.child_dask is not None:
        print(json.dumps(on_dask(a.child_dask, a.n)))
        return

    import tiers
    from tiers.simulation.partitioned import write_partitioned

    folder = a.data or Path(f"bench-out/seed-{a.districts}")
    report: dict[str, Any] = {"districts": a.districts, "rows": a.districts * 1600}
    if not any(folder.glob("part-*.parquet")):
        t0 = time.perf_counter()
        files = write_partitioned(tiers.seed_design(districts=a.districts), folder, 1)
        report["simulate_s"] = time.perf_counter() - t0
        report["files"] = len(files)
        print(f"wrote {len(files)} files in {report['simulate_s']:.1f} s to {folder}")
    mem = _child(["--in-memory", str(folder)])
    report["in_memory"] = mem
    print(
        f"in memory: read {mem['read_s']:.1f} s, fit {mem['fit_s']:.1f} s, "
        f"peak {mem['peak_rss_mb']:.0f} MB"
    )
    report["dask"] = []
    for n in [int(w) for w in a.workers.split(",")]:
        run = _child(["--on-dask", str(folder), "--n", str(n)])
        run.update(_diff(run, mem))
        report["dask"].append(run)
        print(
            f"dask, {n} worker(s): cluster {run['cluster_start_s']:.1f} s, read+reduce "
            f"{run['read_reduce_s']:.1f} s, fit {run['fit_s']:.1f} s, client peak "
            f"{run['client_peak_rss_mb']:.0f} MB, workers peak "
            f"{', '.join(f'{m:.0f}' for m in run['worker_peak_rss_mb'])} MB; vs in memory: "
            f"criterion {run['criterion_rel']:.1e}, estimates {run['estimates_max_rel']:.1e}"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
