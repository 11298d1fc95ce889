"""The parallel bootstrap and study on 1 and on 2 workers (issue #17: 2 must beat 1).

One command::

    .venv/bin/python benchmarks/bench_parallel.py [--districts 50] [--n-boot 400] [--replicates 200]

On the seed model at ``--districts`` districts (50: 80,000 rows): ``LmmResult.bootstrap`` with
``--n-boot`` replicates and ``run_study`` with ``--replicates`` replicates, each timed on 1 worker
and on 2, alternately (1, 2, 1, 2) so that a change in the machine's load shows in both. Prints
the medians, the ratio and the load average before and after; the BLAS configuration of the
parent is printed and written with the times to ``bench-out/parallel.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as nested_bench  # noqa: E402  (benchmarks/run.py: the BLAS configuration)

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--districts", type=int, default=50)
    p.add_argument("--n-boot", type=int, default=400)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2, help="alternations of 1 and 2 workers")
    p.add_argument("--out", type=Path, default=Path("bench-out/parallel.json"))
    args = p.parse_args(argv)

    import tiers
    from tiers.study.runner import run_study

    design = tiers.seed_design(districts=args.districts)
    data = tiers.simulate(design, seed=1)
    fit = tiers.fit(FORMULA, data)
    out = {"loadavg_start": os.getloadavg(), "blas": nested_bench.blas_config(), "times": {}}
    times: dict[str, dict[int, list[float]]] = {
        "bootstrap": {1: [], 2: []},
        "study": {1: [], 2: []},
    }

    def study(workers: int) -> None:
        with tempfile.TemporaryDirectory() as folder:
            run_study(
                design,
                {"nested": FORMULA},
                sizes=[args.districts],
                replicates=args.replicates,
                seed=1,
                workers=workers,
                out=folder,
                progress=False,
            )

    for _ in range(args.rounds):
        for workers in (1, 2):
            t0 = time.perf_counter()
            fit.bootstrap(n_boot=args.n_boot, seed=1, workers=workers, progress=False)
            times["bootstrap"][workers].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            study(workers)
            times["study"][workers].append(time.perf_counter() - t0)
            print(
                f"  {workers} worker(s): bootstrap {times['bootstrap'][workers][-1]:.1f} s, "
                f"study {times['study'][workers][-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    out["times"] = times
    out["loadavg_end"] = os.getloadavg()
    for what, by in times.items():
        one, two = statistics.median(by[1]), statistics.median(by[2])
        print(f"{what:10s} 1 worker {one:7.1f} s   2 workers {two:7.1f} s   1/2 = {one / two:.2f}")
    print(f"load average {out['loadavg_start']} -> {out['loadavg_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
