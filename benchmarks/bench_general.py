"""Benchmark the general (crossed / random-slope) engines against lme4.

One command::

    python benchmarks/bench_general.py [--cases insteval,slope] [--repeats 3] [--r-repeats 1] [--no-r]

Cases:

* ``insteval``: a simulated design the size of lme4's ``InstEval`` (73,421 ratings; 2,972 students
  crossed with 1,128 instructors and a 14-level department; each student rates ~25 lectures, mostly
  in a home department; instructors belong to one department, a few lectures are given in
  another; ``service`` 0/1; ratings 1-5), fitted as ``y ~ service + (1 | s) + (1 | d) + (1 | dept)``.
* ``slope``: the nested seed design at 800,000 rows (``seed_design(districts=500)``, seed 1) with a
  real random slope of ``tutoring`` per school (SD 1), fitted as
  ``perform ~ tutoring + (1 | dist_id) + (1 + tutoring | dist_id:school_id)
  + (1 | dist_id:school_id:teach_id) + (1 | dist_id:school_id:teach_id:student_id)``.

For each case a fresh Python subprocess simulates the data (seeded), times ``tiers.fit`` (median of
``--repeats``) and records the peak RSS. It checks that the public staged API (``tiers.prepare ->
deviance_function -> optimize_theta -> assemble``) gives the same theta
(``staged_max_abs_theta_diff``) and times single evaluations of the fit's engine at the optimum
(``eval_ms``, ``eval_grad_ms``). Then the
subprocess writes the data to a CSV and, when ``Rscript`` and lme4 are available,
``benchmarks/lmer_general.R`` fits the same formula with ``lmer`` (REML). Everything goes to
``bench-out/general.json`` and a table is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as nested_bench  # noqa: E402  (benchmarks/run.py: memory and subprocess helpers)

R_SCRIPT = HERE / "lmer_general.R"
DEFAULT_OUT = HERE.parent / "bench-out" / "general.json"
SEED = 1

CASES: dict[str, dict[str, str]] = {
    "insteval": {"formula": "y ~ service + (1 | s) + (1 | d) + (1 | dept)"},
    "slope": {
        "formula": "perform ~ tutoring + (1 | dist_id) + (1 + tutoring | dist_id:school_id)"
        " + (1 | dist_id:school_id:teach_id) + (1 | dist_id:school_id:teach_id:student_id)"
    },
}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def simulate_insteval(seed: int = SEED, rows: int = 73_421) -> pd.DataFrame:
    """Ratings shaped like lme4's ``InstEval``: students crossed with instructors and departments.

    Each student has a home department and rates a negative-binomial number of lectures (mean
    ~25, at least one), three in four of them by instructors of the home department (chosen in
    proportion to the instructor's popularity, so some lectures are large). A lecture's department
    is its instructor's, except 8% given in another department. ``service`` is 1 for lectures
    outside the student's home department (with 10% noise). Ratings are the rounded latent score,
    clipped to 1-5; the SDs follow lme4's fit to the real data (students 0.32, instructors 0.52,
    departments 0.11, residual 1.18).
    """
    rng = np.random.default_rng(seed)
    n_s, n_d, n_dept = 2972, 1128, 14
    dept_w = rng.dirichlet(np.full(n_dept, 3.0))
    d_dept = rng.choice(n_dept, n_d, p=dept_w)
    d_pop = rng.gamma(1.5, 1.0, n_d)
    s_dept = rng.choice(n_dept, n_s, p=dept_w)
    mean = rows / n_s
    counts = 1 + rng.negative_binomial(2, 2 / (2 + mean - 1), n_s)
    counts = np.maximum(1, np.round(counts * rows / counts.sum())).astype(np.int64)
    while counts.sum() != rows:
        i = rng.integers(n_s)
        counts[i] = max(1, counts[i] + (1 if counts.sum() < rows else -1))
    s = np.repeat(np.arange(n_s), counts)
    home = rng.random(rows) < 0.75
    d = rng.choice(n_d, rows, p=d_pop / d_pop.sum())
    for k in range(n_dept):
        mine = np.flatnonzero(d_dept == k)
        sel = np.flatnonzero(home & (s_dept[s] == k))
        d[sel] = mine[rng.choice(mine.size, sel.size, p=d_pop[mine] / d_pop[mine].sum())]
    dept = d_dept[d].copy()
    other = rng.random(rows) < 0.08
    dept[other] = rng.choice(n_dept, int(other.sum()), p=dept_w)
    service = (dept != s_dept[s]).astype(np.float64)
    flip = rng.random(rows) < 0.1
    service[flip] = 1.0 - service[flip]
    latent = (
        3.2
        - 0.07 * service
        + rng.normal(0, 0.32, n_s)[s]
        + rng.normal(0, 0.52, n_d)[d]
        + rng.normal(0, 0.11, n_dept)[dept]
        + rng.normal(0, 1.18, rows)
    )
    y = np.clip(np.round(latent), 1, 5)
    perm = rng.permutation(rows)
    return pd.DataFrame(
        {
            "y": y[perm],
            "service": service[perm],
            "s": s[perm] + 1,
            "d": d[perm] + 1,
            "dept": dept[perm] + 1,
        }
    )


def simulate_slope(districts: int = 500, seed: int = SEED) -> pd.DataFrame:
    """The seed design with a random ``tutoring`` slope per school (SD 1) added to ``perform``."""
    import tiers

    data = tiers.simulate(tiers.seed_design(districts=districts), seed=seed)
    school = pd.factorize(pd.MultiIndex.from_frame(data[["dist_id", "school_id"]]))[0]
    slope = np.random.default_rng(seed + 1000).normal(0.0, 1.0, school.max() + 1)
    data["perform"] = data["perform"] + slope[school] * data["tutoring"]
    return data


def simulate(case: str) -> pd.DataFrame:
    """The seeded data of one case."""
    return simulate_insteval() if case == "insteval" else simulate_slope()


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


def staged_fit(formula: str, data: pd.DataFrame) -> Any:
    """The fit through the public staged API (what ``tiers.fit`` runs), stage by stage."""
    import tiers

    design = tiers.prepare(formula, data)
    devfun = tiers.deviance_function(design, reml=True)
    opt = tiers.optimize_theta(devfun)
    return tiers.assemble(design, opt, engine=devfun)


def time_evaluations(
    problem: Any, theta: np.ndarray, repeats: int = 15, *, distinct: bool = False
) -> dict[str, float]:
    """Median wall time of one evaluation (and one with the gradient) at ``theta``, in ms.

    With ``distinct`` each repeat is at its own point ``theta (1 + 1e-6 k)``, so an engine that
    keeps its last point's results (or products that depend on part of theta) cannot serve it
    from them, as it cannot the optimiser's new points.
    """
    from tiers._threads import single_thread_blas

    out: dict[str, float] = {}
    calls = 0

    def point() -> np.ndarray:
        nonlocal calls
        calls += 1
        return theta * (1.0 + 1e-6 * calls) if distinct else theta

    with single_thread_blas():
        t0 = time.perf_counter()
        problem.evaluate(point())
        reps = repeats if time.perf_counter() - t0 < 0.5 else 2
        for key, grad in (("eval_ms", False), ("eval_grad_ms", True)):
            if grad and not problem.has_gradient:
                continue
            times = []
            for _ in range(reps):
                x = point()
                t0 = time.perf_counter()
                problem.evaluate(x, gradient=grad)
                times.append(time.perf_counter() - t0)
            out[key] = 1e3 * statistics.median(times)
            out[key + "_min"] = 1e3 * min(times)
    return out


def result_fields(result: Any) -> dict[str, Any]:
    """What the comparison needs from a ``tiers.fit`` result, theta named the lme4 way."""
    from tiers.design.covariance import CovStructure

    out = nested_bench._extract_fit(result)
    names = [
        f"{t.group}.{p}"
        for t in result.terms
        for p in CovStructure(t.covariance, t.q).param_names(t.znames)
    ]
    out["theta"] = dict(zip(names, (float(v) for v in result.theta), strict=True))
    out["engine"] = result.engine
    out["n_evaluations"] = result.opt.n_evaluations
    return out


def worker(case: str, repeats: int, csv_path: str | None, result_path: str) -> int:
    """Simulate one case, time its fit, write JSON (runs in its own subprocess)."""
    import tiers

    res: dict[str, Any] = {"case": case, "formula": CASES[case]["formula"], "repeats": repeats}

    def dump() -> None:
        Path(result_path).write_text(json.dumps(nested_bench._to_jsonable(res), indent=1))

    formula = CASES[case]["formula"]
    t0 = time.perf_counter()
    data = simulate(case)
    res["simulate_s"] = time.perf_counter() - t0
    res["rows"] = len(data)
    gc.collect()
    res["rss_before_fit_mib"] = nested_bench.current_rss_mib()
    times: list[float] = []
    fitted: Any = None
    res["path"] = "tiers.fit"
    try:
        for i in range(repeats):
            fitted = None
            t0 = time.perf_counter()
            fitted = tiers.fit(formula, data)
            times.append(time.perf_counter() - t0)
            print(f"  {case} fit {i + 1}/{repeats}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
    except Exception:
        res["error"] = traceback.format_exc()
    res["peak_rss_mib"] = nested_bench.peak_rss_mib()
    res["blas"] = nested_bench.blas_config()
    res["times_s"] = times
    if times:
        res["median_s"] = statistics.median(times)
    if fitted is not None:
        res.update(result_fields(fitted))
        staged = staged_fit(formula, data)  # the staged API must give the same fit
        res["staged_max_abs_theta_diff"] = float(np.max(np.abs(staged.theta - fitted.theta)))
        res.update(time_evaluations(fitted.devfun, np.asarray(fitted.theta)))
    fitted = None
    if csv_path:
        data.to_csv(csv_path, index=False)
        res["csv_path"] = csv_path
    dump()
    return 0


def run_worker(case: str, repeats: int, csv_path: str | None, workdir: str) -> dict[str, Any]:
    """One case in a fresh subprocess (so its peak RSS is its own)."""
    result_path = str(Path(workdir) / f"tiers-{case}.json")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--case",
        case,
        "--repeats",
        str(repeats),
        "--result",
        result_path,
    ]
    if csv_path:
        cmd += ["--csv", csv_path]
    rc, _, tail = nested_bench._run_streaming(cmd, "  ", None, env=nested_bench._worker_env())
    if Path(result_path).exists():
        return json.loads(Path(result_path).read_text())
    return {"case": case, "error": f"worker exited with {rc}: " + "\n".join(tail[-15:])}


def run_lme4(csv_path: str, formula: str, repeats: int) -> dict[str, Any]:
    """``lmer`` on the CSV through ``lmer_general.R``."""
    import shutil

    rscript = shutil.which("Rscript") or "Rscript"
    rc, stdout, tail = nested_bench._run_streaming(
        [rscript, "--vanilla", str(R_SCRIPT), csv_path, formula, str(repeats)], "  [R] ", None
    )
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if rc != 0 or not lines:
        return {"error": f"Rscript exited with {rc}: " + "\n".join(tail[-15:])}
    return json.loads(lines[-1])


def compare(t: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """Speed ratio, REML criterion and theta agreement (matched by lme4's names)."""
    out: dict[str, Any] = {}
    if t.get("median_s") and r.get("median_s"):
        out["ratio_lme4_over_tiers"] = r["median_s"] / t["median_s"]
    if t.get("reml_criterion") is not None and r.get("reml_criterion") is not None:
        out["reml_diff_tiers_minus_lme4"] = t["reml_criterion"] - r["reml_criterion"]
    tt, rt = t.get("theta") or {}, r.get("theta") or {}
    if isinstance(tt, dict):
        both = [k for k in tt if k in rt]
        if both:
            out["max_abs_theta_diff"] = max(abs(tt[k] - rt[k]) for k in both)
            out["theta_matched"] = len(both)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="insteval,slope", help="comma-separated: insteval, slope")
    p.add_argument("--repeats", type=int, default=3, help="timed tiers fits per case")
    p.add_argument("--r-repeats", type=int, default=1, help="timed lme4 fits per case")
    p.add_argument("--no-r", action="store_true", help="skip lme4")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--csv", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.case, args.repeats, args.csv, args.result)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    use_r, r_detail = (False, "--no-r") if args.no_r else nested_bench.r_available()
    payload: dict[str, Any] = {"r": r_detail, "results": []}
    status = 0
    with tempfile.TemporaryDirectory(prefix="tiers-bench-") as tmp:
        for case in cases:
            csv = str(Path(tmp) / f"{case}.csv") if use_r else None
            t = run_worker(case, args.repeats, csv, tmp)
            entry: dict[str, Any] = {"case": case, "tiers": t}
            if t.get("error") or not t.get("times_s"):
                status = 1
            if use_r and t.get("csv_path"):
                entry["lme4"] = run_lme4(t["csv_path"], CASES[case]["formula"], args.r_repeats)
                entry["comparison"] = compare(t, entry["lme4"])
            payload["results"].append(entry)
            nested_bench.write_json(args.out, payload)
    for entry in payload["results"]:
        t, r, c = entry["tiers"], entry.get("lme4") or {}, entry.get("comparison") or {}
        print(
            f"{entry['case']:>9}: rows {t.get('rows', 0):,}  path {t.get('path')}  "
            f"tiers {t.get('median_s', float('nan')):.3f} s ({t.get('n_evaluations', '-')} evals, "
            f"eval {t.get('eval_ms', float('nan')):.1f} ms, with gradient "
            f"{t.get('eval_grad_ms', float('nan')):.1f} ms)  peak {t.get('peak_rss_mib', 0):,.0f} MiB  "
            f"lme4 {r.get('median_s', float('nan')):.2f} s ({r.get('feval', '-')} evals)  "
            f"ratio {c.get('ratio_lme4_over_tiers', float('nan')):.1f}  "
            f"REML diff {c.get('reml_diff_tiers_minus_lme4', float('nan')):.2e}  "
            f"max|dtheta| {c.get('max_abs_theta_diff', float('nan')):.1e}"
        )
        if t.get("error"):
            print("  tiers error:", t["error"].strip().splitlines()[-1], file=sys.stderr)
        if r.get("error"):
            print("  lme4 error:", r["error"].strip().splitlines()[-1], file=sys.stderr)
    print(f"written to {args.out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
