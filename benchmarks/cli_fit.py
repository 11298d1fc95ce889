"""Wall time of the whole ``tiers fit`` command: start, imports, CSV read, fit, printed summary.

One command::

    python benchmarks/cli_fit.py [--csv PATH] [--districts 50] [--runs 7] [--keep-pyc-setting]

Without ``--csv`` the seed design with ``--districts`` districts (50: 80,000 rows) is simulated
(seed 1) and written to a temporary CSV, outside every timing. Then

1. ``tiers fit "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)" CSV`` runs
   ``--runs`` times, each in a fresh process (the ``tiers`` console script beside this Python,
   else ``python -m tiers``), after one untimed run that also writes the bytecode caches: the
   median and minimum wall time (around the process) and CPU time (user + system of the process,
   BLAS and Arrow threads included);
2. one more run under ``python -X importtime``: the import time by package (numpy, pyarrow,
   pandas, scipy, typer, tiers, the rest), and where each library is first imported (the scipy
   subpackages; whether scipy.stats and formulaic stayed out);
3. one fresh process times the stages in turn: ``import tiers.cli.main``, reading the CSV, the
   fit and the summary (wall and CPU each).

``PYTHONDONTWRITEBYTECODE`` is removed from the commands' environment unless
``--keep-pyc-setting``: an installed tiers has compiled bytecode, while with the variable set
every tiers module is compiled from source on every run (0.08-0.1 s more here). The machine's load
average (before and after) and the BLAS configuration are recorded with the figures; everything goes
to ``bench-out/cli_fit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as nested_bench  # noqa: E402  (benchmarks/run.py: the formula and the worker environment)

DEFAULT_OUT = HERE.parent / "bench-out" / "cli_fit.json"

#: Libraries whose import time is reported (cumulative, where the command first imports them).
LIBRARIES = (
    "numpy",
    "pyarrow",
    "pyarrow.csv",
    "pandas",
    "scipy.linalg",
    "scipy.special",
    "scipy.sparse",
    "scipy.optimize",
    "scipy.stats",
    "typer",
    "formulaic",
)

#: The stages of the command, timed in one fresh process (the command's own calls, in order).
STAGES = """
import json, sys, time
from pathlib import Path
marks = [(time.perf_counter(), time.process_time())]
import importlib
importlib.import_module("tiers.cli.main")
marks.append((time.perf_counter(), time.process_time()))
from tiers.cli.common import read_frame
frame = read_frame(Path(sys.argv[2]))
marks.append((time.perf_counter(), time.process_time()))
from tiers.api import fit
result = fit(sys.argv[1], frame)
marks.append((time.perf_counter(), time.process_time()))
text = result.summary("stata")
marks.append((time.perf_counter(), time.process_time()))
names = ("import", "read", "fit", "summary")
print(json.dumps({n: {"wall_s": b[0] - a[0], "cpu_s": b[1] - a[1]}
                  for n, a, b in zip(names, marks, marks[1:])}))
"""


def command(formula: str, csv: Path) -> list[str]:
    """The ``tiers fit`` command line: the console script beside this Python, else ``-m``."""
    script = Path(sys.executable).with_name("tiers")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "tiers"]
    return [*head, "fit", formula, str(csv)]


def environment(keep_pyc_setting: bool) -> dict[str, str]:
    """The commands' environment (see the module docstring for the bytecode setting)."""
    env = nested_bench._worker_env()
    if not keep_pyc_setting:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one run of ``cmd``, and its standard output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"tiers fit failed (exit {done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


#: Packages whose modules' own import times are summed (the rest is "other": the standard library
#: and smaller dependencies such as click and dateutil).
PACKAGES = ("numpy", "pyarrow", "pandas", "scipy", "typer", "tiers")


def import_times(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Import seconds from one run under ``-X importtime``.

    ``first_import``: the cumulative time of each of `LIBRARIES` where the command first imports
    it (None: never imported); a library imported inside another is counted in both.
    ``by_package``: the modules' own times summed by top-level package (additive: they sum to
    ``total``).
    """
    head = [sys.executable, "-X", "importtime", "-m", "tiers"] + cmd[cmd.index("fit") :]
    done = subprocess.run(head, env=env, capture_output=True, text=True, check=True)
    first: dict[str, float] = {}
    by_package = dict.fromkeys((*PACKAGES, "other"), 0.0)
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)$", line)
        if m is None:
            continue
        own, total, name = int(m.group(1)) / 1e6, int(m.group(2)) / 1e6, m.group(3)
        if name in LIBRARIES:
            first[name] = total
        top = name.split(".")[0]
        by_package[top if top in PACKAGES else "other"] += own
    return {
        "first_import": {name: first.get(name) for name in LIBRARIES},
        "by_package": by_package,
        "total": sum(by_package.values()),
    }


def stages(formula: str, csv: Path, env: dict[str, str]) -> dict[str, Any]:
    """Wall and CPU seconds of the command's stages in one fresh process.

    The script runs under the command's name, so that tiers imports as the command does (only
    what the fit uses; a Python session also imports scipy.optimize with tiers).
    """
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "tiers"
        script.write_text(STAGES)
        done = subprocess.run(
            [sys.executable, str(script), formula, str(csv)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, help="data file (default: simulate the seed design)")
    parser.add_argument("--districts", type=int, default=50, help="districts when simulating")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of the command")
    parser.add_argument("--formula", default=nested_bench.FORMULA)
    parser.add_argument(
        "--keep-pyc-setting",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE if set (default: removed for the commands)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    env = environment(args.keep_pyc_setting)
    # the BLAS record (machine_line, blas_config) reads this process: load the libraries the
    # command loads (numpy's and scipy's OpenBLAS), with the same thread settings
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401

    print(nested_bench.machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        csv = args.csv
        if csv is None:
            import tiers

            csv = Path(tmp) / f"seed_{args.districts}.csv"
            tiers.simulate(tiers.seed_design(districts=args.districts), seed=1).to_csv(
                csv, index=False
            )
        cmd = command(args.formula, csv)
        load_before = os.getloadavg()
        _, _, first = timed_run(cmd, env)  # untimed: caches, bytecode
        runs = [timed_run(cmd, env)[:2] for _ in range(args.runs)]
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        report = {
            "command": cmd,
            "rows": sum(1 for _ in csv.open()) - 1,
            "runs": args.runs,
            "bytecode_written": "PYTHONDONTWRITEBYTECODE" not in env,
            "load_average_before": load_before,
            "wall_s": {"median": statistics.median(walls), "min": min(walls), "all": walls},
            "cpu_s": {"median": statistics.median(cpus), "min": min(cpus), "all": cpus},
            "imports_s": import_times(cmd, env),
            "stages_s": stages(args.formula, csv, env),
            "load_average_after": os.getloadavg(),
            "blas": nested_bench.blas_config(),
            "summary_tail": first.strip().splitlines()[-1],
        }
    print(f"tiers fit on {report['rows']:,} rows, {args.runs} runs")
    print(f"  wall median {report['wall_s']['median']:.3f} s (min {min(walls):.3f})")
    print(f"  CPU  median {report['cpu_s']['median']:.3f} s (min {min(cpus):.3f})")
    imports = report["imports_s"]
    print(f"  imports under -X importtime (which inflates them): {imports['total']:.3f} s")
    print("    by package (own modules' times, additive):")
    for name, seconds in imports["by_package"].items():
        print(f"      {name:16s} {seconds:.3f} s")
    print("    where first imported (cumulative; nested libraries count in both; - never):")
    for name, seconds in imports["first_import"].items():
        print(f"      {name:16s} {'-' if seconds is None else f'{seconds:.3f} s'}")
    print("  stages (wall / CPU):")
    for name, t in report["stages_s"].items():
        print(f"    {name:8s} {t['wall_s']:.3f} / {t['cpu_s']:.3f} s")
    print(nested_bench.machine_line())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
