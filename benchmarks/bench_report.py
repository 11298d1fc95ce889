"""Benchmark the figures and the HTML report of one fit (issue #14) on the seed model.

One command::

    .venv/bin/python benchmarks/bench_report.py [--districts 50] [--json PATH]

It simulates ``tiers.simulate(tiers.seed_design(districts=50), seed=1)`` (80,000 rows), fits
``perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)`` by REML, then times (wall
clock, one run each) every figure of `tiers.plot` and the whole report, ``res.report(path)``,
which draws them all again, embeds them and adds the tables. The profile zeta traces (one bounded
optimisation per point, about 20 points per variance parameter) dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import tiers
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import tiers
from run import blas_config, machine_line  # benchmarks/run.py: BLAS and load record

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--districts", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    data = tiers.simulate(tiers.seed_design(districts=args.districts), seed=1)
    print(f"seed design, {args.districts} districts: {len(data):,} rows")
    print(machine_line(), flush=True)
    res = tiers.fit(FORMULA, data)
    figures: dict[str, float] = {}
    for kind in tiers.plot.KINDS:
        start = time.perf_counter()
        tiers.plot.figure_of(res, kind)
        figures[kind] = round(time.perf_counter() - start, 3)
        print(f"{kind:<20} {figures[kind]:>8.2f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = res.report(Path(tmp) / "report.html")
        figures["report"] = round(time.perf_counter() - start, 3)
        figures["report_mib"] = round(path.stat().st_size / 2**20, 2)
    print(f"{'report':<20} {figures['report']:>8.2f} s, {figures['report_mib']} MiB")
    print(machine_line(), flush=True)
    if args.json is not None:
        record = {"districts": args.districts, "rows": len(data), "seconds": figures,
                  "blas": blas_config(), "load_average_end": os.getloadavg()}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
