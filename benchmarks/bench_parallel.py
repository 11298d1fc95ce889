"""The parallel bootstrap and study on 1 and on 2 workers (issue #17: 2 must beat 1).

One command::

    .venv/bin/python benchmarks/bench_parallel.py [--districts 50] [--n-boot 1000] [--replicates 100]

On the seed model at ``--districts`` districts (50: 80,000 rows): ``LmmResult.bootstrap`` with
``--n-boot`` replicates and ``run_study`` with ``--replicates`` replicates, on 1 worker and on 2,
each run in a fresh process (as a command runs: a fork server, when used, is started by the run
it serves) and timed from the call to its return; the bootstrap and the study on 2 workers also
with another thread alive in the process (as in a notebook), where their workers fork from a fork
server that imports tiers, instead of from the process itself. The runs alternate within each of
``--rounds`` rounds (default 3, medians reported) so that a change in the machine's load shows
in all of them.

Per run: wall seconds and CPU seconds of every process involved (the caller, its workers, and a
fork server with the workers it forked). The machine is shared: before each round two processes
spin for the same work as one, and ``free cores`` = 2 x (one's time) / (two's time) is the most
2 workers could gain at that moment (2 on an idle machine, 1 when a core is taken). Prints the
medians, the 1/2 ratio and the load average; writes them with the BLAS configuration of the
parent to ``bench-out/parallel.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as nested_bench  # noqa: E402  (benchmarks/run.py: the BLAS configuration)

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
#: (what, workers, with another thread alive)
RUNS = (
    ("bootstrap", 1, False),
    ("bootstrap", 2, False),
    ("bootstrap", 2, True),
    ("study", 1, False),
    ("study", 2, False),
    ("study", 2, True),
)


def _ticks(pid: int, children: bool) -> float:
    """CPU seconds of ``pid`` (with its reaped children's when ``children``), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = [int(v) for v in fields[11:15]]  # utime stime cutime cstime
    return sum(used if children else used[:2]) / os.sysconf("SC_CLK_TCK")


def _cpu_self() -> float:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_run(what: str, workers: int, thread: bool, args: argparse.Namespace) -> dict:
    """In a fresh process: prepare (untimed), then time one bootstrap or study."""
    import tempfile
    import threading

    import tiers
    from tiers.study.runner import run_study

    design = tiers.seed_design(districts=args.districts)
    stop = threading.Event()
    if thread:  # a notebook's kernel runs threads of its own
        threading.Thread(target=stop.wait, daemon=True).start()
    with tempfile.TemporaryDirectory() as folder:
        if what == "bootstrap":
            fit = tiers.fit(FORMULA, tiers.simulate(design, seed=1))
        cpu0, t0 = _cpu_self(), time.perf_counter()
        if what == "bootstrap":
            fit.bootstrap(n_boot=args.n_boot, seed=1, workers=workers, progress=False)
        else:
            run_study(design, {"nested": FORMULA}, sizes=[args.districts],
                      replicates=args.replicates, seed=1, workers=workers, out=folder)  # fmt: skip
        wall = time.perf_counter() - t0
    from multiprocessing import forkserver

    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    served = 0.0
    if server is not None:  # started by this run: its imports and the workers it forked count
        time.sleep(0.2)  # let it reap its last workers
        served = _ticks(server, children=True)
    stop.set()
    return {"wall": wall, "cpu": _cpu_self() - cpu0 + served, "forkserver": server is not None}


def _spin(n: int) -> float:
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i
    return time.perf_counter() - t


def free_cores(n: int = 3_000_000) -> float:
    """2 x (time of one spinning process) / (time of two spinning at once): cores to be had now."""
    one = _spin(n)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        two = pool.map(_spin, [n, n])
    return 2 * one / max(two)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--districts", type=int, default=50)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--replicates", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="alternations of every run")
    p.add_argument("--out", type=Path, default=Path("bench-out/parallel.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: what,workers,thread
    args = p.parse_args(argv)
    if args.one:
        what, workers, thread = args.one.split(",")
        print(json.dumps(one_run(what, int(workers), thread == "1", args)))
        return 0

    import numpy  # noqa: F401  (loads the BLAS that blas_config reports)
    import scipy.linalg  # noqa: F401

    out: dict = {"loadavg_start": os.getloadavg(), "blas": nested_bench.blas_config()}
    key = {r: f"{r[0]} {r[1]} worker{'s' if r[1] > 1 else ''}{' (thread alive)' if r[2] else ''}"
           for r in RUNS}  # fmt: skip
    runs: dict[str, list[dict]] = {k: [] for k in key.values()}
    cores: list[float] = []
    base = [sys.executable, __file__, "--districts", str(args.districts), "--n-boot",
            str(args.n_boot), "--replicates", str(args.replicates)]  # fmt: skip
    for _ in range(args.rounds):
        cores.append(free_cores())
        print(f"  free cores {cores[-1]:.2f}, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for r in RUNS:
            cmd = [*base, "--one", f"{r[0]},{r[1]},{int(r[2])}"]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs[key[r]].append(json.loads(done.stdout.strip().splitlines()[-1]))
            last = runs[key[r]][-1]
            print(f"  {key[r]:34s} {last['wall']:6.2f} s wall {last['cpu']:6.2f} s CPU",
                  file=sys.stderr, flush=True)  # fmt: skip
    out |= {"runs": runs, "free_cores": cores, "loadavg_end": os.getloadavg()}
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "cpu")}
           for k, v in runs.items()}  # fmt: skip
    out["medians"] = med
    print(f"free cores (median of {args.rounds}) {statistics.median(cores):.2f}")
    for k, m in med.items():
        one = med[f"{k.split()[0]} 1 worker"]
        print(f"{k:34s} {m['wall']:6.2f} s wall {m['cpu']:6.2f} s CPU   "
              f"1 worker / this = {one['wall'] / m['wall']:.2f} (wall), "
              f"{one['cpu'] / m['cpu']:.2f} (CPU)")  # fmt: skip
    print(f"load average {out['loadavg_start']} -> {out['loadavg_end']}")
    print(f"BLAS: {json.dumps(out['blas'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
