"""Benchmark ``xtreg, fe`` (`tiers.panel.fixed_effects`) against pyfixest's ``feols``.

One command:

```sh
.venv/bin/python benchmarks/xtreg.py [--sizes 80000,800000,8000000] [--repeats 5]
```

The data (seeded): N rows in panels of 10 rows on average (ids drawn uniformly), three
regressors, one of them correlated with the panel effect, and a normal error. For each size, in
a fresh subprocess (its memory is that size's alone):

1. **warm**: the data in memory, ``fixed_effects(data, "y", ["x1", "x2", "x3"], "id")`` and
   pyfixest's ``feols("y ~ x1 + x2 + x3 | id", data, vcov="iid")`` each timed ``--repeats``
   times after one untimed call (pyfixest compiles its numba kernels on the first), then the
   same with cluster-robust errors by id (``vce="cluster"``; pyfixest ``{"CRV1": "id"}``);
2. **one-shot**: a fresh ``python`` process per engine that reads the same Parquet file with
   pandas, imports the engine and fits once; its wall time from start to exit, as a user's
   script pays it.

pyfixest is not a tiers dependency: its columns are filled when it is importable and the table
says so when it is not. The two engines' slopes are compared (they solve the same least-squares
problem). The BLAS configuration and the load average are recorded in the JSON
(``bench-out/xtreg.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as nested_bench  # noqa: E402  (benchmarks/run.py: memory, BLAS and subprocess helpers)

SEED = 20261204
X = ["x1", "x2", "x3"]
DEFAULT_OUT = Path("bench-out/xtreg.json")
ONESHOT = {
    "tiers": (
        "import sys, pandas as pd; d = pd.read_parquet(sys.argv[1]); "
        "from tiers.panel import fixed_effects; "
        "r = fixed_effects(d, 'y', ['x1', 'x2', 'x3'], 'id'); print(r.coef['estimate'].iloc[0])"
    ),
    "pyfixest": (
        "import sys, warnings, pandas as pd; warnings.simplefilter('ignore'); "
        "d = pd.read_parquet(sys.argv[1]); import pyfixest as pf; "
        "r = pf.feols('y ~ x1 + x2 + x3 | id', d, vcov='iid'); print(r.coef().iloc[0])"
    ),
}


def simulate(rows: int, seed: int = SEED) -> pd.DataFrame:
    """Panel data: ``rows`` rows, ``rows // 10`` ids, x1 correlated with the id effect."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(rows // 10, 2), rows)
    effect = rng.normal(size=max(rows // 10, 2))[ids]
    x1 = rng.normal(size=rows) + 0.5 * effect
    x2 = rng.normal(size=rows)
    x3 = rng.uniform(size=rows)
    y = 1.0 + 0.8 * x1 - 0.3 * x2 + 0.5 * x3 + effect + rng.normal(size=rows)
    return pd.DataFrame({"id": ids, "x1": x1, "x2": x2, "x3": x3, "y": y})


def _pyfixest() -> Any:
    try:
        import pyfixest
    except ImportError:
        return None
    return pyfixest


def _time(fn: Any, repeats: int) -> tuple[list[float], Any]:
    out = fn()  # untimed: pyfixest compiles its kernels on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def worker(rows: int, repeats: int, result_path: str, with_pyfixest: bool = True) -> int:
    """Time both engines warm on one size (tiers alone without pyfixest); write a JSON result."""
    import warnings

    from tiers.panel import fixed_effects

    data = simulate(rows)
    pf = _pyfixest() if with_pyfixest else None
    res: dict[str, Any] = {"rows": rows, "ids": int(data["id"].nunique())}
    res["blas"] = nested_bench.blas_config()
    for vce, pf_vcov in (("conventional", "iid"), ("cluster", {"CRV1": "id"})):
        times, fit = _time(lambda v=vce: fixed_effects(data, "y", X, "id", vce=v), repeats)
        entry: dict[str, Any] = {
            "tiers_s": statistics.median(times),
            "tiers_times": times,
            "tiers_b": fit.coef["estimate"].iloc[:3].tolist(),
            "tiers_se": fit.coef["std_error"].iloc[:3].tolist(),
        }
        if pf is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pyfixest's note on singleton ids
                times, pfit = _time(
                    lambda v=pf_vcov: pf.feols("y ~ x1 + x2 + x3 | id", data, vcov=v), repeats
                )
            entry |= {
                "pyfixest_s": statistics.median(times),
                "pyfixest_times": times,
                "pyfixest_b": pfit.coef().tolist(),
                "pyfixest_se": pfit.se().tolist(),
            }
            entry["max_rel_diff_b"] = float(
                np.max(np.abs(np.subtract(entry["tiers_b"], entry["pyfixest_b"])))
                / np.max(np.abs(entry["pyfixest_b"]))
            )
        res[vce] = entry
        print(f"  {rows:,} rows, {vce}: done", file=sys.stderr, flush=True)
    res["peak_rss_mib"] = nested_bench.peak_rss_mib()
    Path(result_path).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def one_shot(engine: str, parquet: str, repeats: int) -> float | None:
    """Median wall time of a fresh process that reads the data, imports ``engine`` and fits."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", ONESHOT[engine], parquet],
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"  one-shot {engine} failed: {done.stderr[-500:]}", file=sys.stderr)
            return None
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="80000,800000,8000000", help="comma-separated row counts")
    p.add_argument("--repeats", type=int, default=5, help="timed warm fits per engine and size")
    p.add_argument("--oneshot-repeats", type=int, default=3, help="one-shot processes per engine")
    p.add_argument(
        "--pyfixest-max-rows",
        type=int,
        default=None,
        help="run pyfixest only up to this many rows (at 8,000,000 rows its peak memory is "
        "about 9.4 GB here, against tiers' 1.1 GB)",
    )
    p.add_argument("--no-pyfixest", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.rows, args.repeats, args.result, not args.no_pyfixest)

    have_pf = _pyfixest() is not None
    if not have_pf:
        print("pyfixest is not importable: tiers alone (pip install pyfixest to compare)")
    out: dict[str, Any] = {"pyfixest": have_pf, "loadavg_start": os.getloadavg(), "sizes": []}
    if have_pf:
        out["pyfixest_version"] = str(_pyfixest().__version__)
    rows_table = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (int(s) for s in args.sizes.split(",")):
            result = os.path.join(tmp, f"xtreg-{rows}.json")
            cmd = [sys.executable, __file__, "--worker", "--rows", str(rows)]
            cmd += ["--repeats", str(args.repeats), "--result", result]
            use_pf = have_pf and (args.pyfixest_max_rows is None or rows <= args.pyfixest_max_rows)
            if not use_pf:
                cmd.append("--no-pyfixest")
            subprocess.run(cmd, env=_env(), check=True)
            res = json.loads(Path(result).read_text(encoding="utf-8"))
            parquet = os.path.join(tmp, f"xtreg-{rows}.parquet")
            simulate(rows).to_parquet(parquet)
            res["oneshot"] = {
                e: one_shot(e, parquet, args.oneshot_repeats)
                for e in ("tiers", "pyfixest")
                if e == "tiers" or use_pf
            }
            os.remove(parquet)
            out["sizes"].append(res)
            for vce in ("conventional", "cluster"):
                r = res[vce]
                rows_table.append(
                    (f"{rows:,}", vce, _fmt(r["tiers_s"]), _fmt(r.get("pyfixest_s")))
                    + (
                        (_fmt(res["oneshot"].get("tiers")), _fmt(res["oneshot"].get("pyfixest")))
                        if vce == "conventional"
                        else ("", "")
                    )
                )
    out["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    head = ("rows", "vce", "tiers s", "pyfixest s", "one-shot tiers s", "one-shot pyfixest s")
    widths = [max(len(h), *(len(r[i]) for r in rows_table)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows_table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(f"load average {out['loadavg_start']} -> {out['loadavg_end']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
