"""Benchmark the inference of issue #5 on the four-level seed model at 50 districts (80,000 rows).

One command::

    .venv/bin/python benchmarks/bench_inference.py [--districts 50] [--n-boot 1000] [--workers N]

It simulates ``tiers.simulate(tiers.seed_design(districts=50), seed=1)``, fits
``perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)`` by REML, then times (wall
clock, one run each):

* ``confint("bootstrap", n_boot=1000, seed=1)``: parametric bootstrap, replicates in parallel on
  the available cores (target: under 60 s on a 2-core machine);
* ``confint("profile")``: profile intervals of the 4 SDs, sigma and the 2 fixed effects on the REML
  criterion (target: under 10 s); and ``confint("profile-ml")`` (lme4's: an ML refit, then ML
  profiles);
* ``variance_shares(method="profile")`` and ``ranef(cond_var=True)`` for information;

and prints the figures and the intervals. ``--json PATH`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_info

try:
    import tiers
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import tiers

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


def _timed(label: str, fn, figures: dict) -> object:
    start = time.perf_counter()
    out = fn()
    figures[label] = round(time.perf_counter() - start, 3)
    print(f"{label:<34} {figures[label]:>8.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--districts", type=int, default=50)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None, help="default: the available cores")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"tiers {tiers.__version__}, Python {platform.python_version()}, {cores} cores")
    data = tiers.simulate(tiers.seed_design(districts=args.districts), seed=1)
    print(f"seed design, {args.districts} districts: {len(data):,} rows")
    figures: dict[str, float] = {}
    res = _timed("fit (REML)", lambda: tiers.fit(FORMULA, data), figures)
    boot = _timed(
        f"bootstrap, {args.n_boot} replicates",
        lambda: res.confint("bootstrap", n_boot=args.n_boot, seed=1, workers=args.workers),
        figures,
    )
    prof = _timed("profile intervals (REML)", lambda: res.confint("profile"), figures)
    prof_ml = _timed("profile intervals (ML, lme4's)", lambda: res.confint("profile-ml"), figures)
    shares = _timed(
        "variance shares, profile", lambda: res.variance_shares(method="profile"), figures
    )
    _timed("ranef with conditional SDs", lambda: res.ranef(cond_var=True), figures)
    wald = res.confint("wald")
    print()
    table = wald[["name", "estimate"]].copy()
    table["wald"] = [f"[{a:.4f}, {b:.4f}]" for a, b in zip(wald.lower, wald.upper, strict=True)]
    for label, ci in (("profile", prof), ("bootstrap", boot)):
        table[label] = [f"[{a:.4f}, {b:.4f}]" for a, b in zip(ci.lower, ci.upper, strict=True)]
    print(table.to_string(index=False))
    print()
    for note in boot.attrs["notes"]:
        print(f"bootstrap: {note}")
    print(shares[["level", "share", "share_lower", "share_upper"]].to_string(index=False))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "districts": args.districts,
            "rows": len(data),
            "cores": cores,
            "n_boot": args.n_boot,
            "blas": [
                {k: i.get(k) for k in ("internal_api", "version", "num_threads", "prefix")}
                for i in threadpool_info()
            ],
            "seconds": figures,
            "bootstrap_failed": boot.attrs["n_failed"],
            "intervals": {
                "wald": wald.to_dict("records"),
                "profile": prof.to_dict("records"),
                "profile_ml": prof_ml.to_dict("records"),
                "bootstrap": boot.to_dict("records"),
            },
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
