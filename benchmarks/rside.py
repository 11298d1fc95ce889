"""Benchmark AR(1) residuals on the seed design followed over ten waves, against nlme.

One command::

    python benchmarks/rside.py [--districts 100] [--repeats 3] [--r-districts 2] [--no-r]

The seed design (districts > 5 schools > 8 teachers > 20 students) with ten semesters per student
instead of two: 800 students and 8,000 rows per district, so 100 districts give 800,000 rows. The residuals follow an AR(1) with phi = 0.5 within
each student (SD 6), ``tutoring`` is Bernoulli(0.2) with effect 2, the level SDs are 2, 3, 4, 5.

It times ``tiers.fit(FORMULA, data, residuals=tiers.AR1("semester"))`` (REML) ``--repeats``
times in this process (median reported), then, when ``Rscript`` and nlme are available, fits the
same model with ``nlme::lme(..., correlation = corAR1(form = ~ semester | ...))`` on a smaller
copy (``--r-districts``; nlme is far slower) and fits that copy with tiers too, comparing the
log-likelihoods and phi. Results go to ``bench-out/rside.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from run import blas_config, machine_line  # benchmarks/run.py: BLAS and load record

import tiers

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
WAVES = 10
PHI = 0.5
R_SCRIPT = """
suppressMessages({library(nlme); library(jsonlite)})
args <- commandArgs(TRUE)
d <- read.csv(args[1])
t0 <- proc.time()[["elapsed"]]
fit <- lme(perform ~ tutoring, random = ~ 1 | dist_id/school_id/teach_id/student_id, data = d,
           correlation = corAR1(form = ~ semester | dist_id/school_id/teach_id/student_id),
           method = "REML")
el <- proc.time()[["elapsed"]] - t0
phi <- coef(fit$modelStruct$corStruct, unconstrained = FALSE)[[1]]
cat(toJSON(list(seconds = el, logLik = as.numeric(logLik(fit)), phi = phi,
                sigma = fit$sigma), auto_unbox = TRUE, digits = NA))
"""


def simulate(districts: int, seed: int = 1) -> pd.DataFrame:
    """The seed design with ``WAVES`` semesters per student and AR(1) residuals."""
    rng = np.random.default_rng(seed)
    sizes = (districts, 5, 8, 20)
    sds = (2.0, 3.0, 4.0, 5.0)
    n_students = int(np.prod(sizes))
    n = n_students * WAVES
    student = np.repeat(np.arange(n_students), WAVES)
    ids = {}
    per = n_students
    perform = np.zeros(n)
    for name, k, sd in zip(
        ("dist_id", "school_id", "teach_id", "student_id"), sizes, sds, strict=True
    ):
        per //= k
        code = student // per if name != "student_id" else student
        ids[name] = code + 1
        perform += rng.normal(0.0, sd, code.max() + 1)[code]
    e = np.empty((n_students, WAVES))
    e[:, 0] = rng.normal(0.0, 6.0, n_students)
    for t in range(1, WAVES):
        e[:, t] = PHI * e[:, t - 1] + rng.normal(0.0, 6.0 * np.sqrt(1 - PHI**2), n_students)
    tutoring = (rng.random(n) < 0.2).astype(np.float64)
    perform += 2.0 * tutoring + e.reshape(-1)
    return pd.DataFrame(
        {**ids, "semester": np.tile(np.arange(1, WAVES + 1), n_students), "tutoring": tutoring,
         "perform": perform}
    )  # fmt: skip


def time_tiers(data: pd.DataFrame, repeats: int) -> tuple[list[float], Any]:
    """Wall times of ``repeats`` fits, and the last fit."""
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = tiers.fit(FORMULA, data, residuals=tiers.AR1("semester"))
        times.append(time.perf_counter() - t0)
    return times, res


def run_nlme(data: pd.DataFrame) -> dict[str, Any] | None:
    """nlme's fit of the same model, or None when R or nlme is missing."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "d.csv", Path(tmp) / "fit.R"
        data.to_csv(csv, index=False)
        script.write_text(R_SCRIPT, encoding="utf-8")
        proc = subprocess.run(
            ["Rscript", str(script), str(csv)], capture_output=True, text=True, timeout=3600
        )
    if proc.returncode != 0:
        print(f"nlme failed: {proc.stderr.strip()[-500:]}")
        return None
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    """Run the benchmark and write bench-out/rside.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--districts", type=int, default=100, help="100 -> 800,000 rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--r-districts", type=int, default=2, help="size of nlme's copy")
    ap.add_argument("--no-r", action="store_true", help="skip nlme")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    data = simulate(args.districts)
    times, res = time_tiers(data, args.repeats)
    phi = float(res.residual_inference.estimate[0])
    report: dict[str, Any] = {
        "rows": len(data),
        "tiers_seconds": times,
        "tiers_median_seconds": statistics.median(times),
        "tiers_phi": phi,
        "tiers_loglik": res.loglik,
        "tiers_converged": res.converged,
        "evaluations": res.opt.n_evaluations,
        "blas": blas_config(),
        "load_average_after_tiers": os.getloadavg(),
    }
    print(
        f"tiers: {len(data):,} rows, median {statistics.median(times):.2f} s over {len(times)} "
        f"fits ({res.opt.n_evaluations} evaluations), phi {phi:.4f} (true {PHI}), "
        f"converged {res.converged}"
    )
    if not args.no_r:
        small = simulate(args.r_districts, seed=2)
        t0 = time.perf_counter()
        small_res = tiers.fit(FORMULA, small, residuals=tiers.AR1("semester"))
        t_small = time.perf_counter() - t0
        nl = run_nlme(small)
        report["comparison"] = {"rows": len(small), "tiers_seconds": t_small, "nlme": nl}
        if nl is not None:
            report["comparison"] |= {
                "loglik_difference": small_res.loglik - nl["logLik"],
                "phi_tiers": float(small_res.residual_inference.estimate[0]),
            }
            print(
                f"nlme vs tiers at {len(small):,} rows: nlme {nl['seconds']:.2f} s, tiers "
                f"{t_small:.2f} s; logLik difference (tiers - nlme) "
                f"{small_res.loglik - nl['logLik']:.2e}, phi {nl['phi']:.5f} vs "
                f"{report['comparison']['phi_tiers']:.5f}"
            )
    print(machine_line(), flush=True)
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / "rside.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
