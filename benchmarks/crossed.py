"""Benchmark the crossed engine at ratings scale, against lme4 where it can finish.

One command::

    python benchmarks/crossed.py [--cases insteval,movielens,uniform] [--r-cases insteval] [--no-r]
                                 [--repeats 3]

Cases (`crossed_designs` holds the seeded generators):

* ``insteval``: lme4's real ``InstEval`` (73,421 ratings), exported to ``bench-out/insteval.csv``
  by ``Rscript`` on first use, ``y ~ service + (1 | s) + (1 | d) + (1 | dept:service)``;
* ``movielens``: MovieLens-1M-sized simulation (1,000,209 ratings, 6,040 users x 3,706 items,
  skewed counts), ``y ~ 1 + (1 | user) + (1 | item)``;
* ``uniform``: 1,000,000 rows on uniform pairs of two 50,000-level factors,
  ``y ~ 1 + (1 | a) + (1 | b)`` (expected: refused, with the predicted size, within seconds; then
  fitted by `tiers.fit_moments`, timed, with its estimates against the simulated SDs 0.5 and 0.3).

Each case runs ``--repeats`` times (default 3), each in a fresh subprocess (its peak RSS is its
own), through the staged API, so the set-up (``prepare`` + ``deviance_function``), the
optimisation (evaluations and their count) and the read-off (``assemble``) are timed separately,
in wall and in CPU seconds (``cpu_s``: the work itself, steadier than the wall clock on a shared
machine); single evaluations at the optimum are timed too. The table shows medians over the runs (the
ratio to lme4 uses the median total) and every run's figures with the 1-minute load average
before and after it. The BLAS libraries and their thread counts are recorded with every run. lme4 (through
``benchmarks/lmer_general.R``) runs on the ``--r-cases`` when ``Rscript`` is on PATH. Results go
to ``bench-out/crossed.json`` and a table is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_general  # noqa: E402  (lme4 runner, evaluation timing)
import crossed_designs  # noqa: E402
import run as nested_bench  # noqa: E402  (memory and subprocess helpers)

OUT_DIR = HERE.parent / "bench-out"
DEFAULT_OUT = OUT_DIR / "crossed.json"
INSTEVAL_CSV = OUT_DIR / "insteval.csv"

CASES: dict[str, str] = {
    "insteval": "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)",
    "movielens": "y ~ 1 + (1 | user) + (1 | item)",
    "uniform": "y ~ 1 + (1 | a) + (1 | b)",
}


def export_insteval() -> Path:
    """``lme4::InstEval`` as a CSV under bench-out/ (once), by Rscript."""
    if not INSTEVAL_CSV.exists():
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        code = (
            'data(InstEval, package = "lme4"); '
            f'write.csv(InstEval, "{INSTEVAL_CSV}", row.names = FALSE)'
        )
        subprocess.run(["Rscript", "--vanilla", "-e", code], check=True, capture_output=True)
    return INSTEVAL_CSV


def load(case: str) -> pd.DataFrame:
    """The seeded (or real) data of one case."""
    if case == "insteval":
        ids = {k: str for k in ("s", "d", "dept", "service", "studage", "lectage")}
        return pd.read_csv(export_insteval(), dtype=ids)
    if case == "movielens":
        return crossed_designs.ratings(seed=1)
    return crossed_designs.uniform(seed=1)


def worker(case: str, result_path: str, csv_path: str | None) -> int:
    """Fit one case stage by stage; write JSON (runs in its own subprocess)."""
    import tiers

    res: dict[str, Any] = {"case": case, "formula": CASES[case]}
    t0 = time.perf_counter()
    data = load(case)
    res["load_s"] = time.perf_counter() - t0
    res["rows"] = len(data)
    if csv_path:
        data.to_csv(csv_path, index=False)
    gc.collect()
    res["rss_before_fit_mib"] = nested_bench.current_rss_mib()
    try:
        # wall and CPU seconds per stage (CPU: the work itself, whatever else shares the cores)
        c0, t0 = time.process_time(), time.perf_counter()
        design = tiers.prepare(CASES[case], data)
        c1, t1 = time.process_time(), time.perf_counter()
        devfun = tiers.deviance_function(design, reml=True)
        c2, t2 = time.process_time(), time.perf_counter()
        res["prepare_s"], res["setup_s"] = t1 - t0, t2 - t1
        rss_after_setup = nested_bench.current_rss_mib()
        c2b, t2b = time.process_time(), time.perf_counter()
        opt = tiers.optimize_theta(devfun)
        c3, t3 = time.process_time(), time.perf_counter()
        fitted = tiers.assemble(design, opt, engine=devfun)
        c4, t4 = time.process_time(), time.perf_counter()
        res["rss_after_setup_mib"] = rss_after_setup
        res.update(optimize_s=t3 - t2b, assemble_s=t4 - t3, total_s=t4 - t2b + t2 - t0)
        res["cpu_s"] = {
            "prepare": c1 - c0,
            "setup": c2 - c1,
            "optimize": c3 - c2b,
            "assemble": c4 - c3,
            "total": c4 - c2b + c2 - c0,
        }
        res["n_evaluations"] = opt.n_evaluations
        res["seconds_per_evaluation"] = (t3 - t2b) / max(opt.n_evaluations, 1)
        res["reml_criterion"] = float(fitted.deviance)
        res.update(bench_general.result_fields(fitted))
        res["peak_rss_mib"] = nested_bench.peak_rss_mib()
        theta = np.asarray(fitted.theta)
        res.update(bench_general.time_evaluations(devfun, theta, repeats=3, distinct=True))
    except tiers.TiersError as exc:
        res["refused_after_s"] = time.perf_counter() - t0
        res["refusal"] = str(exc)
        t0 = time.perf_counter()
        moments = tiers.fit_moments(CASES[case], data)
        res["moments"] = {
            "seconds": time.perf_counter() - t0,
            "sweeps": moments.sweeps,
            "sd": dict(
                zip(["a", "b", "residual"], np.sqrt(moments.variances).tolist(), strict=True)
            ),
            "fixef": moments.fixef.to_dict(),
            "std_errors": moments.std_errors.to_dict(),
        }
    except Exception:
        res["error"] = traceback.format_exc()
    res["peak_rss_mib"] = nested_bench.peak_rss_mib()
    res["blas"] = nested_bench.blas_config()
    Path(result_path).write_text(json.dumps(nested_bench._to_jsonable(res), indent=1))
    return 0


def run_worker(case: str, workdir: str, csv_path: str | None, run: int = 0) -> dict[str, Any]:
    result_path = str(Path(workdir) / f"tiers-{case}-{run}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--result", result_path]
    if csv_path:
        cmd += ["--csv", csv_path]
    load = os.getloadavg()[0]
    rc, _, tail = nested_bench._run_streaming(cmd, "  ", None, env=nested_bench._worker_env())
    if Path(result_path).exists():
        out: dict[str, Any] = json.loads(Path(result_path).read_text())
        out["load_average_1min"] = [load, os.getloadavg()[0]]
        return out
    return {"case": case, "error": f"worker exited with {rc}: " + "\n".join(tail[-15:])}


#: Per-run figures kept for every repeat (the median run's full record is the case's ``tiers``).
RUN_FIELDS = (
    "prepare_s",
    "setup_s",
    "optimize_s",
    "assemble_s",
    "total_s",
    "n_evaluations",
    "seconds_per_evaluation",
    "peak_rss_mib",
    "reml_criterion",
    "eval_ms",
    "eval_grad_ms",
    "load_average_1min",
    "cpu_s",
)


def run_repeats(case: str, workdir: str, csv_path: str | None, repeats: int) -> dict[str, Any]:
    """``repeats`` fresh worker processes; the run with the median total, and every run's figures.

    The CSV for lme4 is written by the first run only.
    """
    runs = [
        run_worker(case, workdir, csv_path if k == 0 else None, k) for k in range(max(repeats, 1))
    ]
    timed = [r for r in runs if r.get("total_s") is not None]
    if not timed:
        return runs[0]
    timed.sort(key=lambda r: r["total_s"])
    med = dict(timed[(len(timed) - 1) // 2])
    med["median_s"] = float(np.median([r["total_s"] for r in timed]))
    for key in ("prepare_s", "setup_s", "optimize_s", "seconds_per_evaluation", "peak_rss_mib"):
        med[f"median_{key}"] = float(np.median([r[key] for r in timed]))
    cpu = [r["cpu_s"] for r in timed if r.get("cpu_s")]
    if cpu:
        med["median_cpu_s"] = {k: float(np.median([c[k] for c in cpu])) for k in cpu[0]}
    med["runs"] = [{k: r.get(k) for k in RUN_FIELDS} for r in runs]
    return med


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _setup(t: dict[str, Any]) -> float | None:
    """Median prepare + set-up (engine construction) seconds."""
    if t.get("median_prepare_s") is None:
        return None
    return float(t["median_prepare_s"] + t["median_setup_s"])


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'case':10} {'rows':>9} {'setup s':>8} {'evals':>5} {'s/eval':>7} {'total s':>8} "
        f"{'peak MiB':>9} {'lme4 s':>8} {'ratio':>6} {'REML diff':>10}  (tiers: medians of runs)"
    )
    print(head)
    for r in results:
        t = r["tiers"]
        lme4 = r.get("lme4") or {}
        cmp_ = r.get("comparison") or {}
        print(
            f"{r['case']:10} {_f(t.get('rows'), ',d'):>9} "
            f"{_f(_setup(t), '.2f'):>8} "
            f"{_f(t.get('n_evaluations'), 'd'):>5} "
            f"{_f(t.get('median_seconds_per_evaluation'), '.3f'):>7} "
            f"{_f(t.get('median_s'), '.2f'):>8} {_f(t.get('median_peak_rss_mib'), ',.0f'):>9} "
            f"{_f(lme4.get('median_s'), '.2f'):>8} {_f(cmp_.get('ratio_lme4_over_tiers'), '.1f'):>6} "
            f"{_f(cmp_.get('reml_diff_tiers_minus_lme4'), '.2e'):>10}"
        )
        for k, run in enumerate(t.get("runs") or []):
            print(
                f"  run {k + 1}: total {_f(run.get('total_s'), '.2f')} s = prepare "
                f"{_f(run.get('prepare_s'), '.2f')} + setup {_f(run.get('setup_s'), '.2f')} + "
                f"optimise {_f(run.get('optimize_s'), '.2f')} ({run.get('n_evaluations')} evaluations"
                f" x {_f(run.get('seconds_per_evaluation'), '.3f')} s) + assemble "
                f"{_f(run.get('assemble_s'), '.2f')}; one evaluation "
                f"{_f(run.get('eval_ms'), '.1f')} ms, with gradient "
                f"{_f(run.get('eval_grad_ms'), '.1f')} ms; peak "
                f"{_f(run.get('peak_rss_mib'), ',.0f')} MiB; load {run.get('load_average_1min')}"
            )
            cpu = run.get("cpu_s")
            if cpu:
                print("         CPU seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
        if t.get("refusal"):
            print(f"  refused after {t['refused_after_s']:.1f} s: {t['refusal']}")
        if t.get("moments"):
            m = t["moments"]
            print(f"  fit_moments: {m['seconds']:.1f} s ({m['sweeps']} sweeps), SDs {m['sd']}")
        if t.get("error"):
            print("  error: " + t["error"].strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="insteval,movielens,uniform")
    p.add_argument("--r-cases", default="insteval", help="cases also fitted by lme4")
    p.add_argument("--no-r", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="fresh tiers processes per case")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--csv", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.result, args.csv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    use_r = not args.no_r and shutil.which("Rscript") is not None
    r_cases = set(args.r_cases.split(",")) if use_r else set()
    payload: dict[str, Any] = {
        "benchmark": "crossed random effects at ratings scale, REML",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="tiers-crossed-") as workdir:
        for case in cases:
            print(f"{case}: tiers", file=sys.stderr, flush=True)
            csv_path = str(Path(workdir) / f"{case}.csv") if case in r_cases else None
            entry: dict[str, Any] = {
                "case": case,
                "tiers": run_repeats(case, workdir, csv_path, args.repeats),
            }
            if csv_path and Path(csv_path).exists():
                print(f"{case}: lme4", file=sys.stderr, flush=True)
                entry["lme4"] = bench_general.run_lme4(csv_path, CASES[case], 1)
                entry["comparison"] = bench_general.compare(entry["tiers"], entry["lme4"])
            payload["results"].append(entry)
    payload["machine"]["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(nested_bench._to_jsonable(payload), indent=1))
    print_table(payload["results"])
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
