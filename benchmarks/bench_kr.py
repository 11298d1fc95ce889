"""Benchmark Kenward-Roger's adjusted covariance and df (``coef_table(ddf="kenward-roger")``).

One command::

    .venv/bin/python benchmarks/bench_kr.py [--cases trial,trial3,crossed,seed,rside]
                                            [--rows 800000] [--districts 5]
                                            [--rside-districts 10] [--no-r] [--json PATH]

Cases (simulated with a fixed seed; the fit is timed apart from KR):

* ``trial``: an education trial, ``y ~ treat + (1 | school)``, schools of 400 students
  (``--rows`` rows, default 800,000: 2,000 schools); KR is done per school;
* ``trial3``: the same with classes of 25 inside schools, ``(1 | school/class)``: blocks of 17
  random effects;
* ``crossed``: 300 raters crossed with 40 items, every rater on every item (12,000 rows),
  ``y ~ x + (1 | rater) + (1 | item)``: one block of 340 random effects;
* ``seed``: the four-level seed design at ``--districts`` (1,600 rows each; a district is one
  block of 846 random effects, the costly case);
* ``rside``: the seed design followed over ten semesters with AR(1) residuals within each
  student (`benchmarks/rside.py`'s simulation), ``--rside-districts`` districts of 8,000 rows
  (default 10: 80,000 rows); KR's residual parameters (variance, phi) with their ``R_ij``.

With R and pbkrtest present (and no ``--no-r``), ``pbkrtest::vcovAdj`` is timed against tiers on
the first 60 raters of the ``crossed`` case (2,400 rows): pbkrtest forms dense n x n matrices
(at 12,000 rows, over 1 GB each), so the larger cases are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import tiers
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import tiers
from run import blas_config, machine_line  # benchmarks/run.py: BLAS and load record

from tiers.inference.kenward_roger import KenwardRoger
from tiers.inference.satterthwaite import coef_table

R_SCRIPT = """
suppressPackageStartupMessages({library(lme4); library(pbkrtest)})
d <- read.csv(commandArgs(TRUE)[1])
d$rater <- factor(d$rater); d$item <- factor(d$item)
fit <- lmer(y ~ x + (1 | rater) + (1 | item), data = d, REML = TRUE)
t0 <- proc.time()[["elapsed"]]
va <- vcovAdj(fit)
cat(proc.time()[["elapsed"]] - t0, sqrt(diag(as.matrix(va))), "\\n")
"""


def _trial(rows: int, rng: np.random.Generator, classes: bool) -> tuple[str, pd.DataFrame]:
    school = np.repeat(np.arange(rows // 400), 400)
    cls = school * 16 + np.tile(np.repeat(np.arange(16), 25), rows // 400)
    treat = (school % 2).astype(float)
    y = 0.2 * treat + rng.normal(0, 0.4, school.max() + 1)[school]
    y = y + rng.normal(0, 0.3, cls.max() + 1)[cls] + rng.normal(size=school.size)
    data = pd.DataFrame({"y": y, "treat": treat, "school": school, "class": cls % 16})
    formula = "y ~ treat + (1 | school/class)" if classes else "y ~ treat + (1 | school)"
    return formula, data


def _crossed(rng: np.random.Generator) -> tuple[str, pd.DataFrame]:
    rater, item = np.meshgrid(np.arange(300), np.arange(40), indexing="ij")
    rater, item = rater.ravel(), item.ravel()
    x = rng.normal(size=rater.size)
    y = 0.5 * x + rng.normal(0, 0.5, 300)[rater] + rng.normal(0, 0.8, 40)[item]
    y = y + rng.normal(size=rater.size)
    return "y ~ x + (1 | rater) + (1 | item)", pd.DataFrame(
        {"y": y, "x": x, "rater": rater, "item": item}
    )


def _time_case(
    name: str, formula: str, data: pd.DataFrame, figures: dict, residuals: object = None
) -> None:
    start = time.perf_counter()
    res = tiers.fit(formula, data, residuals=residuals)  # type: ignore[arg-type]
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    kr = KenwardRoger.from_result(res)
    table = coef_table(res, kr)
    kr_s = time.perf_counter() - start
    figures[name] = {
        "rows": len(data),
        "formula": formula,
        "fit_s": round(fit_s, 3),
        "kr_s": round(kr_s, 3),
        "largest_block": kr.largest_block,
        "df": [round(float(v), 4) for v in table["df"]],
        "se_kr": [float(v) for v in table["std_error"]],
    }
    print(
        f"{name:<8} {len(data):>9,} rows  fit {fit_s:7.2f} s  KR {kr_s:7.2f} s  "
        f"(largest block {kr.largest_block})  "
        f"df {', '.join(f'{v:.2f}' for v in table['df'])}  "
        f"SE {', '.join(f'{v:.6g}' for v in table['std_error'])}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="trial,trial3,crossed,seed,rside")
    ap.add_argument("--rows", type=int, default=800_000)
    ap.add_argument("--districts", type=int, default=5)
    ap.add_argument("--rside-districts", type=int, default=10)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"tiers {tiers.__version__}, Python {platform.python_version()}")
    print(machine_line(), flush=True)
    machine = {"blas": blas_config(), "load_average_start": os.getloadavg()}
    rng = np.random.default_rng(1)
    figures: dict[str, dict] = {}
    cases = args.cases.split(",")
    for name in cases:
        if name == "rside":
            from rside import FORMULA, simulate

            data = simulate(args.rside_districts)
            _time_case(name, FORMULA, data, figures, tiers.AR1("semester"))
            continue
        if name in ("trial", "trial3"):
            formula, data = _trial(args.rows, rng, classes=name == "trial3")
        elif name == "crossed":
            formula, data = _crossed(rng)
        elif name == "seed":
            data = tiers.simulate(tiers.seed_design(districts=args.districts), seed=1)
            formula = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
        else:
            raise SystemExit(f"unknown case {name!r}; valid: trial, trial3, crossed, seed, rside")
        _time_case(name, formula, data, figures)
        if name == "crossed" and not args.no_r and shutil.which("Rscript"):
            data = data[data["rater"] < 60]
            name = "crossed_2400"
            _time_case(name, formula, data, figures)
            with tempfile.TemporaryDirectory() as tmp:
                csv, script = Path(tmp) / "d.csv", Path(tmp) / "kr.R"
                data.to_csv(csv, index=False)
                script.write_text(R_SCRIPT)
                out = subprocess.run(
                    ["Rscript", str(script), str(csv)], capture_output=True, text=True, timeout=600
                )
            if out.returncode == 0:
                seconds, *se = (float(v) for v in out.stdout.split())
                figures[name]["pbkrtest_vcovAdj_s"] = seconds
                figures[name]["pbkrtest_se"] = se
                print(f"{'':<8} pbkrtest vcovAdj {seconds:.2f} s, SE {se}", flush=True)
            else:
                print(f"pbkrtest failed: {out.stderr.strip()[-300:]}", flush=True)
    machine["load_average_end"] = os.getloadavg()
    print(machine_line(), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine} | figures, indent=2))


if __name__ == "__main__":
    main()
