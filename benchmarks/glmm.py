"""Benchmark the GLMM (Laplace) against lme4's glmer on a binary outcome of the seed design.

    python benchmarks/glmm.py [--districts 50] [--no-r]

The seed design's grouping (`tiers.seed_design`: 1,600 rows per district, 50 districts = 80,000
rows, four nested levels) with a binary outcome drawn from a latent logistic model: intercept
-0.5, ``tutoring`` 0.5, level SDs 0.3, 0.4, 0.5, 0.6 on the logit scale. tiers fits
``pass ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)`` by Laplace; when Rscript and
lme4 are present, ``benchmarks/glmer_fit.R`` fits the same model with glmer in the same run, and
the deviances (-2 log L) are compared. Wall and CPU seconds are both reported (on a loaded machine
the CPU seconds compare fairly). ``--case crossed`` fits a binary outcome on InstEval's crossed
shape instead (tiers only). Results go to ``bench-out/glmm_<case>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tiers

FORMULA = "pass ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
SDS = (0.3, 0.4, 0.5, 0.6)
#: InstEval's shape: 73,421 ratings, 2,972 students x 1,128 instructors, 14 departments.
CROSSED_FORMULA = "pass ~ 1 + (1 | s) + (1 | d) + (1 | dept)"


def binary_seed(districts: int, seed: int = 1):
    """The seed design's rows with a binary outcome ``pass`` from a latent logistic model."""
    data = tiers.simulate(tiers.seed_design(districts=districts), seed=seed)
    rng = np.random.default_rng(seed + 1)
    eta = -0.5 + 0.5 * data["tutoring"].to_numpy(float)
    prefix = []
    for col, sd in zip(("dist_id", "school_id", "teach_id", "student_id"), SDS, strict=True):
        prefix.append(col)
        codes = data.groupby(prefix, sort=False).ngroup().to_numpy()
        eta = eta + rng.normal(0.0, sd, codes.max() + 1)[codes]
    data["pass"] = (rng.uniform(size=len(data)) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return data[["pass", "tutoring", "dist_id", "school_id", "teach_id", "student_id"]]


def binary_crossed(seed: int = 1):
    """A binary outcome on InstEval's crossed shape (SDs 0.5, 0.4, 0.2 on the logit scale)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, ns, nd, ndept = 73421, 2972, 1128, 14
    s, d = rng.integers(0, ns, n), rng.integers(0, nd, n)
    dept = d % ndept
    eta = -0.2 + rng.normal(0, 0.5, ns)[s] + rng.normal(0, 0.4, nd)[d]
    eta = eta + rng.normal(0, 0.2, ndept)[dept]
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pd.DataFrame(
        {"pass": y, "s": s.astype(str), "d": d.astype(str), "dept": dept.astype(str)}
    )


def main() -> None:
    """Run the benchmark and print a small table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--districts", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument(
        "--case", choices=("nested", "crossed"), default="nested",
        help="nested: the seed design; crossed: InstEval's shape (tiers only: glmer takes long)",
    )  # fmt: skip
    args = ap.parse_args()
    formula = FORMULA if args.case == "nested" else CROSSED_FORMULA
    data = binary_seed(args.districts) if args.case == "nested" else binary_crossed()
    if args.case == "crossed":
        args.no_r = True
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        res = tiers.fit(formula, data, family="binomial")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    out = {
        "case": args.case,
        "rows": len(data),
        "tiers_seconds_median": float(np.median(times)),
        "tiers_seconds": times,
        "tiers_cpu_seconds_median": float(np.median(cpu)),
        "tiers_deviance": res.deviance,
        "tiers_theta": res.fit.theta.tolist(),
        "tiers_beta": res.fit.beta.tolist(),
        "tiers_converged": res.converged,
    }
    if not args.no_r and shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "binary_seed.csv"
            data.to_csv(csv, index=False)
            script = Path(__file__).with_name("glmer_fit.R")
            proc = subprocess.run(
                ["Rscript", str(script), str(csv)], capture_output=True, text=True, check=False
            )
        if proc.returncode == 0:
            glmer = json.loads(proc.stdout)
            out["glmer"] = glmer
            out["speedup"] = glmer["seconds"] / out["tiers_seconds_median"]
            # on a shared machine the CPU times are the fairer comparison (both single-threaded)
            out["speedup_cpu"] = glmer["cpu_seconds"] / out["tiers_cpu_seconds_median"]
            out["deviance_minus_glmer"] = res.deviance - glmer["minus2logLik"]
        else:
            out["glmer_error"] = proc.stderr[-2000:]
    Path("bench-out").mkdir(exist_ok=True)
    Path(f"bench-out/glmm_{args.case}.json").write_text(json.dumps(out, indent=2))
    for key, value in out.items():
        if key != "glmer_error":
            print(f"{key:>24}: {value}")
    if "glmer_error" in out:
        print(out["glmer_error"], file=sys.stderr)


if __name__ == "__main__":
    main()
