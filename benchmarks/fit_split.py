"""Where the time of one seed fit goes: model frame, grouping factors, engine set-up, optimizer, result.

One command (no R needed)::

    python benchmarks/fit_split.py [--districts 50] [--repeats 41] [--warm 5]

The data is ``tiers.simulate(tiers.seed_design(districts=D), seed=1)`` (1,600 rows a district:
50 -> 80,000 rows) and the model ``benchmarks/run.py``'s. Each repeat runs the fit's stages one
after the other, each timed alone in CPU time (``time.process_time``: the machine is shared, and
wall time counts the other processes' turns):

* ``frame``: `tiers.data.frame.build_frame` (columns, missing rows, y and X);
* ``factors``: `tiers.design.grouping.build_factors` on that frame (codes, nesting);
* ``design``: `tiers.design.design.build_design` less the two above (the diagnostics, the engine's
  choice), the formula's parsing included;
* ``engine``: `tiers.engine.registry.build_engine` (sufficient statistics, the start);
* ``optimizer``: `tiers.optimize.minimize.optimize_theta` (with its evaluations);
* ``result``: `tiers.fitting.assemble` (read-off, checks, LR test, the result object);

then one whole ``tiers.fit`` call, timed in CPU and wall time. Prints the median and the lower
quartile of each over ``--repeats`` (after ``--warm`` untimed fits), the evaluations, the BLAS
libraries and the load average (``run.machine_line``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from run import machine_line  # benchmarks/run.py: BLAS and load record

import tiers
from tiers._threads import single_thread_blas
from tiers.data.frame import build_frame
from tiers.design.design import build_design
from tiers.design.grouping import build_factors
from tiers.engine.registry import build_engine
from tiers.fitting import assemble
from tiers.formula.parse import parse
from tiers.optimize.minimize import optimize_theta

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
STAGES = ("frame", "factors", "design", "engine", "optimizer", "result")


def split(data: Any, repeats: int, warm: int) -> tuple[dict[str, list[float]], int]:
    """CPU seconds of each stage and of whole fits, per repeat; and the fit's evaluations."""
    times: dict[str, list[float]] = {k: [] for k in (*STAGES, "fit cpu", "fit wall")}
    evaluations = 0
    clock = time.process_time
    for i in range(warm + repeats):
        t = []
        with single_thread_blas():
            f = parse(FORMULA)
            t.append(clock())
            frame = build_frame(f, data)
            t.append(clock())
            build_factors(f, frame.data)
            t.append(clock())
            design = build_design(FORMULA, data)
            t.append(clock())
            engine = build_engine(design, reml=True)
            t.append(clock())
            opt = optimize_theta(engine)
            t.append(clock())
            assemble(design, engine, opt)
            t.append(clock())
        w0 = time.perf_counter()
        tiers.fit(FORMULA, data)
        t.append(clock())
        wall = time.perf_counter() - w0
        spent = dict(
            zip(STAGES, [b - a for a, b in zip(t[:-2], t[1:-1], strict=True)], strict=True)
        )
        spent["design"] -= spent["frame"] + spent["factors"]  # build_design runs both inside
        spent["fit cpu"], spent["fit wall"] = t[-1] - t[-2], wall
        evaluations = opt.n_evaluations
        if i >= warm:
            for k, v in spent.items():
                times[k].append(v)
    return times, evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--districts", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args()
    data = tiers.simulate(tiers.seed_design(districts=args.districts), seed=1)
    times, evaluations = split(data, args.repeats, args.warm)
    print(f"seed design, {len(data):,} rows, {args.repeats} repeats (median / lower quartile, ms)")
    for name, v in times.items():
        v = sorted(v)
        q1 = v[len(v) // 4]
        print(f"  {name:10s} {statistics.median(v) * 1e3:8.2f} {q1 * 1e3:8.2f}")
    stages = sum(statistics.median(times[k]) for k in STAGES)
    print(f"  {'stages':10s} {stages * 1e3:8.2f}   ({evaluations} evaluations)")
    print(machine_line())


if __name__ == "__main__":
    main()
