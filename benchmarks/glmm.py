"""Benchmark the GLMM (Laplace) against lme4's glmer: nested and crossed binary outcomes.

    python benchmarks/glmm.py [--cases 80k 800k crossed] [--big] [--repeats 3] [--no-r]
                              [--glmer-cache bench-out/glmer_cache.json]

* ``80k``, ``800k``: the seed design's grouping (`tiers.seed_design`: 1,600 rows per district;
  50 and 500 districts, four nested levels) with a binary outcome from a latent logistic model
  (intercept -0.5, ``tutoring`` 0.5, level SDs 0.3, 0.4, 0.5, 0.6 on the logit scale), fitted as
  ``pass ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)``;
* ``crossed``: a binary outcome on InstEval's crossed shape (73,421 rows, 2,972 students ``s``
  crossed with 1,128 lecturers ``d``, 14 departments), ``pass ~ 1 + (1 | s) + (1 | d) +
  (1 | dept)``;
* ``--big`` adds ``8M``: 5,000 districts, 8,000,000 rows (tiers only; the target is under a
  minute).

tiers fits by Laplace (``tiers.fit(..., family="binomial")``); when Rscript and lme4 are present,
``benchmarks/glmer_fit.R`` fits the same model with glmer on the same CSV in the same run (under
``nice``), and the deviances (-2 log L) are compared. Wall and CPU seconds are both reported (on a
loaded machine the CPU seconds compare fairly: both are single-threaded); the table gives the
median over ``--repeats`` fits, the number of deviance evaluations and PIRLS iterations on all
rows (and on the subsamples a large nested fit starts from), the BLAS and the load average.
glmer at 800,000 rows takes many minutes: ``--glmer-cache FILE`` keeps its results keyed by a
hash of the data, so a rerun on the same data reuses them (said in the table).
Results go to ``bench-out/glmm.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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


CASES = {
    "80k": ("nested", 50),
    "800k": ("nested", 500),
    "crossed": ("crossed", 0),
    "8M": ("nested", 5000),
}


def _blas() -> str:
    """The BLAS numpy uses (name and version), for the table."""
    try:
        from threadpoolctl import threadpool_info

        libs = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()]
        return ", ".join(sorted(set(libs))) or "unknown"
    except Exception:  # threadpoolctl absent or failing: not worth stopping the benchmark
        return "unknown"


def _counted_fit(formula: str, data) -> tuple[object, float, float, dict]:
    """Fit once; wall and CPU seconds, and per problem size (all rows, then the subsamples a
    large nested fit starts from) the deviance evaluations and PIRLS iterations."""
    from tiers.engine import pirls

    counts: dict[int, list[int]] = {}
    orig = pirls.Glmm.modes

    def modes(self, theta, beta, *, warm=True):
        m = orig(self, theta, beta, warm=warm)
        c = counts.setdefault(self.n, [0, 0])
        c[0] += 1
        c[1] += m.iterations
        return m

    pirls.Glmm.modes = modes
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        res = tiers.fit(formula, data, family="binomial")
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        pirls.Glmm.modes = orig
    by_rows = {
        n: {"evaluations": c[0], "pirls_iterations": c[1]}
        for n, c in sorted(counts.items(), reverse=True)
    }
    return res, wall, cpu, by_rows


def _glmer(data, formula: str, cache: Path | None) -> dict | None:
    """glmer on the same rows (cached by a hash of the CSV when asked); None without R."""
    if not shutil.which("Rscript"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "data.csv"
        data.to_csv(csv, index=False)
        key = hashlib.sha256(csv.read_bytes() + formula.encode()).hexdigest()[:16]
        store = json.loads(cache.read_text()) if cache and cache.exists() else {}
        if key in store:
            return {**store[key], "cached": True}
        script = Path(__file__).with_name("glmer_fit.R")
        proc = subprocess.run(
            ["nice", "-n", "5", "Rscript", str(script), str(csv), formula],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    out = json.loads(proc.stdout)
    if cache:
        store[key] = out
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(store, indent=2))
    return {**out, "cached": False}


def run_case(name: str, repeats: int, use_r: bool, cache: Path | None) -> dict:
    """One case: tiers ``repeats`` times, glmer once."""
    kind, districts = CASES[name]
    formula = FORMULA if kind == "nested" else CROSSED_FORMULA
    data = binary_seed(districts) if kind == "nested" else binary_crossed()
    walls, cpus = [], []
    res, by_rows = None, {}
    for _ in range(repeats):
        res, wall, cpu, by_rows = _counted_fit(formula, data)
        walls.append(wall)
        cpus.append(cpu)
    out: dict = {
        "case": name,
        "rows": len(data),
        "formula": formula,
        "tiers_wall_median": float(np.median(walls)),
        "tiers_cpu_median": float(np.median(cpus)),
        "tiers_wall": walls,
        "tiers_cpu": cpus,
        "evaluations": by_rows[len(data)]["evaluations"],
        "pirls_iterations": by_rows[len(data)]["pirls_iterations"],
        "subsample_evaluations": {n: c for n, c in by_rows.items() if n != len(data)},
        "tiers_deviance": res.deviance,
        "tiers_theta": res.fit.theta.tolist(),
        "tiers_beta": res.fit.beta.tolist(),
        "tiers_converged": res.converged,
    }
    if use_r and name != "8M":
        glmer = _glmer(data, formula, cache)
        if glmer is not None and "error" not in glmer:
            out["glmer"] = glmer
            out["speedup_wall"] = glmer["seconds"] / out["tiers_wall_median"]
            out["speedup_cpu"] = glmer["cpu_seconds"] / out["tiers_cpu_median"]
            # positive: tiers' deviance is higher (worse) than glmer's
            out["deviance_rel_diff"] = (res.deviance - glmer["minus2logLik"]) / abs(
                glmer["minus2logLik"]
            )
        elif glmer is not None:
            out["glmer_error"] = glmer["error"]
    return out


def main() -> None:
    """Run the cases and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=("80k", "800k", "crossed"), default=None)
    ap.add_argument("--big", action="store_true", help="also 8,000,000 rows nested (tiers only)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--glmer-cache", type=Path, default=None)
    args = ap.parse_args()
    cases = list(args.cases or ("80k", "800k", "crossed")) + (["8M"] if args.big else [])
    results = []
    for name in cases:
        # the 800k and 8M fits take long: one repeat for 8M
        repeats = 1 if name == "8M" else args.repeats
        out = run_case(name, repeats, not args.no_r, args.glmer_cache)
        results.append(out)
        g = out.get("glmer", {})
        print(
            f"{name:>8}: rows {out['rows']:,}  tiers wall {out['tiers_wall_median']:.2f} s "
            f"CPU {out['tiers_cpu_median']:.2f} s  evals {out['evaluations']} "
            f"PIRLS {out['pirls_iterations']}"
            + "".join(
                f" (+{c['evaluations']} on {n:,} rows)"
                for n, c in out["subsample_evaluations"].items()
            )
            + (
                f"  | glmer wall {g['seconds']:.1f} s CPU {g['cpu_seconds']:.1f} s"
                f"{' (cached)' if g.get('cached') else ''}  speedup wall "
                f"{out['speedup_wall']:.1f}x CPU {out['speedup_cpu']:.1f}x  deviance rel diff "
                f"{out['deviance_rel_diff']:+.2e}"
                if g
                else ""
            ),
            flush=True,
        )
        if "glmer_error" in out:
            print(out["glmer_error"], file=sys.stderr)
    meta = {
        "blas": _blas(),
        "load_average": os.getloadavg(),
        "lme4": next((r["glmer"].get("lme4") for r in results if "glmer" in r), None),
        "R": next((r["glmer"].get("R") for r in results if "glmer" in r), None),
    }
    print(f"BLAS: {meta['blas']}; load average {meta['load_average']}; lme4 {meta['lme4']}")
    Path("bench-out").mkdir(exist_ok=True)
    Path("bench-out/glmm.json").write_text(json.dumps({"meta": meta, "cases": results}, indent=2))


if __name__ == "__main__":
    main()
