"""Benchmark weighted fits and the cost of robust standard errors.

One command::

    python benchmarks/weights.py [--rows 1000000] [--repeats 3]

The data: a simulated three-level design (schools, 20 classes per school, 100 students per
class; ``rows / 2000`` schools), ``y = 1 + 0.5 x + u_school (SD 0.5) + u_class (SD 0.3) + e``,
seed 1, a precision weight per row drawn uniform on [0.5, 2] (every class's weight total is then
different, the nested engine's hardest case), and sampling weights per level (the row's weight,
the first row's weight of its class and of its school). The model is
``y ~ x + (1 | school/cls)``. Timed (median of ``--repeats``, wall seconds of ``tiers.fit``):

* ``unweighted``: REML, no weights (the baseline);
* ``precision``: REML with ``weights="w"`` (lme4's precision weights; target: under 5 s at 1M rows);
* ``ml``: ML, no weights; ``robust``: the same with ``vce="robust"`` (the sandwich of every
  parameter clustered on schools): ``robust / ml`` is the cost of robust SEs;
* ``sampling``: pseudo-ML with weights at all three levels (robust SEs included).

Prints a table and writes ``bench-out/weights.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from run import blas_config, machine_line  # benchmarks/run.py: BLAS and load record

import tiers

FORMULA = "y ~ x + (1 | school/cls)"


def simulate(rows: int, seed: int = 1) -> pd.DataFrame:
    """The benchmark's three-level data with precision and sampling weights."""
    rng = np.random.default_rng(seed)
    classes, students = 20, 100
    schools = max(rows // (classes * students), 2)
    school = np.repeat(np.arange(schools), classes * students)
    cls = np.repeat(np.arange(schools * classes), students)
    x = rng.normal(size=school.size)
    y = (
        1.0
        + 0.5 * x
        + 0.5 * rng.normal(size=schools)[school]
        + 0.3 * rng.normal(size=schools * classes)[cls]
        + rng.normal(size=school.size)
    )
    w = rng.uniform(0.5, 2.0, size=school.size)
    df = pd.DataFrame({"y": y, "x": x, "school": school, "cls": cls % classes, "w": w})
    df["w_class"] = df.groupby(["school", "cls"])["w"].transform("first")
    df["w_school"] = df.groupby("school")["w"].transform("first")
    return df


def time_fit(data: pd.DataFrame, repeats: int, **kwargs: Any) -> tuple[float, Any]:
    """Median wall seconds of ``tiers.fit`` and the last result."""
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = tiers.fit(FORMULA, data, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = simulate(args.rows)
    sampling = {"student": "w", "cls:school": "w_class", "school": "w_school"}
    runs = {
        "unweighted": {},
        "precision": {"weights": "w"},
        "ml": {"reml": False},
        "robust": {"vce": "robust"},
        "sampling": {"weights": sampling},
    }
    out: dict[str, Any] = {"rows": len(data), "formula": FORMULA, "repeats": args.repeats}
    print(f"{len(data):,} rows, {FORMULA}, median of {args.repeats}")
    print(machine_line(), flush=True)
    for name, kwargs in runs.items():
        seconds, res = time_fit(data, args.repeats, **kwargs)
        out[name] = {"seconds": seconds, "engine": res.engine, "se": list(res.std_errors)}
        print(f"{name:>11}: {seconds:7.2f} s  ({res.engine} engine)")
    out["robust_over_ml"] = out["robust"]["seconds"] / out["ml"]["seconds"]
    print(f"robust SEs cost {out['robust_over_ml']:.2f} x the ML fit")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["machine"] = platform.platform()
    out["blas"] = blas_config()
    out["load_average_end"] = os.getloadavg()
    print(machine_line(), flush=True)
    path = Path("bench-out")
    path.mkdir(exist_ok=True)
    (path / "weights.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
