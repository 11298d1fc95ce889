"""Benchmark tiers against lme4 on the four-level nested "seed" design.

One command::

    python benchmarks/run.py [--sizes 50,500] [--repeats 5] [--r-repeats 3] [--no-r] [--big]

For each size (number of districts of ``tiers.seed_design``; 1,600 rows per district,
so 50 -> 80,000 rows, 500 -> 800,000 rows, 5000 -> 8,000,000 rows) it

1. starts a fresh Python subprocess that simulates the data with
   ``tiers.simulate(tiers.seed_design(districts=D), seed=1)``, records the
   resident set size (RSS), then times ``tiers.fit(FORMULA, data)`` ``--repeats`` times and
   records the peak RSS of the subprocess; afterwards (outside the timing and the memory
   figures) it writes the data to a temporary CSV for R;
2. when ``Rscript`` is on PATH and lme4 loads (and ``--no-r`` is not given), runs
   ``benchmarks/lmer_fit.R CSV R_REPEATS``, which fits the same model with ``lme4::lmer`` and
   prints timing, memory and estimates as JSON;
3. compares the two fits (REML criterion, theta matched by grouping level, SDs), prints a table
   (rich when importable, else plain text) and writes everything to ``bench-out/nested.json``.

See ``benchmarks/README.md`` for the meaning of each column.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
"""The model fitted by both engines (REML)."""

LEVELS: tuple[str, ...] = ("dist_id", "school_id", "teach_id", "student_id")
"""Grouping variables, outermost first: the order of ``tiers`` ``.theta``."""

LEVEL_LABELS: tuple[str, ...] = ("dist", "school", "teach", "student")
"""Short names of the levels, used as keys in the JSON output."""

ROWS_PER_DISTRICT = 5 * 8 * 20 * 2
"""Rows per district in the seed design: 5 schools x 8 teachers x 20 students x 2 semesters."""

SEED = 1
DEFAULT_SIZES = (50, 500)
BIG_SIZE = 5000

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
R_SCRIPT = HERE / "lmer_fit.R"
DEFAULT_OUT = REPO_ROOT / "bench-out" / "nested.json"

MIB = 1024.0 * 1024.0


# --------------------------------------------------------------------------------------------
# memory helpers (used by the worker subprocess)
# --------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Returns
    -------
    float
        ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` converted to MiB (the field is in KiB on
        Linux and in bytes on macOS).
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return maxrss / MIB
    return maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS, where the kernel allows it.

    Writing ``5`` to ``/proc/self/clear_refs`` (Linux 4.0+) resets ``VmHWM``, which
    ``ru_maxrss`` reads: the peak measured afterwards is the fit's alone, not the simulation's
    (simulating 8,000,000 rows peaks ~180 MiB above the data it leaves).

    Returns
    -------
    bool
        Whether the peak was reset.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def current_rss_mib() -> float | None:
    """Current resident set size of this process, in MiB.

    Returns
    -------
    float or None
        RSS read from ``/proc/self/statm``; ``None`` where ``/proc`` does not exist.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def blas_config() -> dict[str, Any]:
    """The BLAS libraries loaded in this process, their versions and thread counts, and the
    thread variables set (recorded with every benchmark: threading changes timings up to 6x)."""
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "version", "num_threads", "threading_layer", "prefix")
    return {
        "libraries": [{k: info.get(k) for k in keys} for info in threadpool_info()],
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        },
    }


def machine_line() -> str:
    """One printed line with the BLAS libraries, their threads and the load average, for
    benchmarks whose figures are read from the terminal (threading and load move timings 2-6x)."""
    libs = ", ".join(
        f"{lib['internal_api']} {lib['version']} ({lib['threading_layer']}, "
        f"{lib['num_threads']} threads)"
        for lib in blas_config()["libraries"]
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"BLAS: {libs or 'none loaded'}; load average {load}"


# --------------------------------------------------------------------------------------------
# worker: one fresh subprocess per size
# --------------------------------------------------------------------------------------------


def _to_jsonable(value: Any) -> Any:
    """Convert numpy / pandas containers and scalars into plain JSON-serialisable Python.

    Parameters
    ----------
    value
        A scalar, sequence, mapping, numpy array or pandas Series.

    Returns
    -------
    Any
        Nested lists / dicts / floats / ints / strings; NaN and infinities become ``None``.
    """
    if hasattr(value, "to_dict") and hasattr(value, "index"):  # pandas Series
        return {str(k): _to_jsonable(v) for k, v in value.to_dict().items()}
    if hasattr(value, "tolist"):  # numpy array or numpy scalar
        return _to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


def _is_missing(value: Any) -> bool:
    """True for ``None`` and float NaN (pandas' missing value in an object column)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _extract_fit(result: Any) -> dict[str, Any]:
    """Pull the compared quantities out of a ``tiers.fit`` result.

    Parameters
    ----------
    result
        The object returned by ``tiers.fit``: it has ``.reml_criterion``, ``.theta`` (outermost
        level first), ``.varcorr`` (DataFrame with columns group, term, sd) and ``.fixef``.

    Returns
    -------
    dict
        ``reml_criterion``, ``theta``, ``varcorr`` (dict of lists) and ``fixef``; an attribute
        that is missing or cannot be read is reported under ``extract_errors``. Where the result
        has no ``.reml_criterion`` but is a REML fit (``.reml`` true), its ``.deviance``
        (-2 REML log-likelihood) is used; ``reml_criterion_source`` says which.
    """
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        if hasattr(result, "reml_criterion"):
            out["reml_criterion"] = float(result.reml_criterion)
            out["reml_criterion_source"] = "reml_criterion"
        elif getattr(result, "reml", None) is True and hasattr(result, "deviance"):
            # -2 log-likelihood of a REML fit is its REML criterion
            out["reml_criterion"] = float(result.deviance)
            out["reml_criterion_source"] = "deviance (REML fit)"
        else:
            errors["reml_criterion"] = "result has neither .reml_criterion nor a REML .deviance"
    except Exception as exc:  # report, never abort the benchmark
        errors["reml_criterion"] = repr(exc)
    try:
        out["theta"] = [float(t) for t in result.theta]
    except Exception as exc:
        errors["theta"] = repr(exc)
    try:
        vc = result.varcorr
        out["varcorr"] = {
            "group": [str(g) for g in vc["group"]],
            "term": ["" if _is_missing(t) else str(t) for t in vc["term"]],
            "sd": [float(s) for s in vc["sd"]],
        }
    except Exception as exc:
        errors["varcorr"] = repr(exc)
    try:
        out["fixef"] = _to_jsonable(result.fixef)
    except Exception as exc:
        errors["fixef"] = repr(exc)
    if errors:
        out["extract_errors"] = errors
    return out


def worker(districts: int, repeats: int, csv_path: str | None, result_path: str) -> int:
    """Simulate one size, time ``tiers.fit`` on it and write a JSON result.

    Runs in its own subprocess, so that ``ru_maxrss`` is the peak of this size alone.

    Parameters
    ----------
    districts
        Number of districts of the seed design.
    repeats
        How many times the fit is timed.
    csv_path
        Where to write the simulated data for R (after all measurements), or ``None``.
    result_path
        Where to write the JSON result.

    Returns
    -------
    int
        Process exit code: 0, also when the fit itself failed (the error is in the JSON).
    """
    res: dict[str, Any] = {"districts": districts, "repeats": repeats}

    def dump() -> None:
        Path(result_path).write_text(json.dumps(_to_jsonable(res), indent=1), encoding="utf-8")

    res["rss_start_mib"] = current_rss_mib()
    try:
        import tiers

        # the module, even where tiers/__init__ re-exports a function named ``simulate``
        tsim = importlib.import_module("tiers.simulation.data")

        res["tiers_version"] = str(getattr(tiers, "__version__", "unknown"))
        res["blas"] = blas_config()
        res["tiers_file"] = str(getattr(tiers, "__file__", ""))
        t0 = time.perf_counter()
        data = tsim.simulate(tiers.seed_design(districts=districts), seed=SEED)
        res["simulate_s"] = time.perf_counter() - t0
        res["rows"] = len(data)
        res["n_levels"] = {
            v: int(data[v].nunique()) for v in LEVELS if v in getattr(data, "columns", ())
        }
    except Exception:
        res["error"] = "simulate: " + traceback.format_exc()
        dump()
        return 0

    gc.collect()
    res["rss_before_fit_mib"] = current_rss_mib()
    res["peak_rss_before_fit_mib"] = peak_rss_mib()
    res["peak_reset"] = reset_peak_rss()
    times: list[float] = []
    cpu: list[float] = []  # CPU seconds of each fit: less sensitive than wall time to the load
    fit_result: Any = None
    res["loadavg"] = os.getloadavg()
    try:
        for i in range(repeats):
            fit_result = None  # do not keep the previous fit alive during the next one
            t0, c0 = time.perf_counter(), time.process_time()
            fit_result = tiers.fit(FORMULA, data)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            print(f"  tiers fit {i + 1}/{repeats}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
    except Exception:
        res["error"] = "fit: " + traceback.format_exc()
    # the fits' own peak when it could be reset, else the process's since it started
    res["peak_rss_fit_mib"] = peak_rss_mib()
    res["peak_rss_mib"] = max(res["peak_rss_fit_mib"], res["peak_rss_before_fit_mib"])
    res["rss_after_fit_mib"] = current_rss_mib()
    res["times_s"] = times
    res["cpu_s"] = cpu
    if times:
        res["median_s"] = statistics.median(times)
        res["min_s"] = min(times)
    if len(times) > 1:
        # the first fit of a fresh process (imports done, data in memory) against the next ones
        res["first_s"] = times[0]
        res["warm_median_s"] = statistics.median(times[1:])
        res["first_over_warm"] = times[0] / res["warm_median_s"]
        res["first_over_warm_cpu"] = cpu[0] / statistics.median(cpu[1:])
    if fit_result is not None:
        res.update(_extract_fit(fit_result))
    fit_result = None

    if csv_path:
        try:
            t0 = time.perf_counter()
            data.to_csv(csv_path, index=False)
            res["csv_write_s"] = time.perf_counter() - t0
            res["csv_path"] = csv_path
        except Exception:
            res["csv_error"] = traceback.format_exc()
    dump()
    return 0


# --------------------------------------------------------------------------------------------
# subprocess plumbing
# --------------------------------------------------------------------------------------------


def _run_streaming(
    cmd: Sequence[str], prefix: str, timeout: float | None, env: dict[str, str] | None = None
) -> tuple[int | None, str, list[str]]:
    """Run a command, echoing its stderr live (prefixed) and capturing its stdout.

    Parameters
    ----------
    cmd
        The command line.
    prefix
        Printed before each echoed stderr line.
    timeout
        Seconds before the process is killed, or ``None`` for no limit.
    env
        Environment for the child, or ``None`` to inherit.

    Returns
    -------
    tuple
        ``(returncode, stdout, last_stderr_lines)``; ``returncode`` is ``None`` on timeout.
    """
    proc = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    tail: deque[str] = deque(maxlen=40)
    chunks: list[str] = []

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            print(f"{prefix}{line.rstrip()}", file=sys.stderr, flush=True)

    def collect_stdout() -> None:
        assert proc.stdout is not None
        chunks.append(proc.stdout.read())

    threads = [
        threading.Thread(target=pump_stderr, daemon=True),
        threading.Thread(target=collect_stdout, daemon=True),
    ]
    for th in threads:
        th.start()
    rc: int | None
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    for th in threads:
        th.join(timeout=10)
    stdout = "".join(chunks)
    return rc, stdout or "", list(tail)


def _worker_env() -> dict[str, str]:
    """Environment for the tiers worker: the repo's ``src`` is added when tiers isn't installed.

    Returns
    -------
    dict
        A copy of ``os.environ``; when ``import tiers`` would fail in this interpreter and
        ``src/tiers`` exists beside ``benchmarks/``, ``src`` is appended to ``PYTHONPATH``, so
        the command works from a checkout before ``pip install -e .``. Without
        ``PYTHONDONTWRITEBYTECODE``: an installed tiers has its bytecode compiled, while with the
        variable set every fresh process compiles the modules it imports on first use again
        (about 10 ms of InstEval's 0.3 s fit: the crossed engine's modules).
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    src = REPO_ROOT / "src"
    if importlib.util.find_spec("tiers") is None and (src / "tiers").is_dir():
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([*parts, str(src)])
    return env


def run_tiers_size(
    districts: int, repeats: int, csv_path: str | None, workdir: str, timeout: float | None
) -> dict[str, Any]:
    """Run the tiers worker for one size in a fresh Python subprocess.

    Parameters
    ----------
    districts
        Number of districts.
    repeats
        Timed fits.
    csv_path
        Where the worker should write the CSV for R, or ``None``.
    workdir
        Temporary directory for the worker's JSON result.
    timeout
        Seconds before the worker is killed, or ``None``.

    Returns
    -------
    dict
        The worker's JSON result, or a dict with ``error`` when it crashed or timed out.
    """
    result_path = os.path.join(workdir, f"tiers-{districts}.json")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--districts",
        str(districts),
        "--repeats",
        str(repeats),
        "--result",
        result_path,
    ]
    if csv_path:
        cmd += ["--csv", csv_path]
    rc, _, tail = _run_streaming(cmd, "  ", timeout, env=_worker_env())
    if os.path.exists(result_path):
        res = json.loads(Path(result_path).read_text(encoding="utf-8"))
    else:
        res = {"districts": districts}
    if rc is None:
        res.setdefault("error", f"tiers worker killed after --timeout {timeout} s")
    elif rc != 0:
        # e.g. killed by the OOM killer (-9) before it could write its result
        res.setdefault("error", f"tiers worker exited with {rc}: " + "\n".join(tail[-15:]))
    return res


def r_available() -> tuple[bool, str]:
    """Tell whether ``Rscript`` is on PATH and lme4 loads.

    Returns
    -------
    tuple
        ``(ok, detail)``: the lme4 version string when ok, else the reason.
    """
    rscript = shutil.which("Rscript")
    if rscript is None:
        return False, "Rscript not on PATH"
    expr = (
        "suppressPackageStartupMessages(library(lme4)); "
        'cat(as.character(packageVersion("lme4")), '
        "paste(R.version$major, R.version$minor, sep = '.'), "
        'requireNamespace("data.table", quietly = TRUE))'
    )
    try:
        proc = subprocess.run(
            [rscript, "-e", expr], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Rscript failed: {exc!r}"
    if proc.returncode != 0:
        return False, "lme4 does not load: " + proc.stderr.strip()[-500:]
    parts = proc.stdout.split()
    if len(parts) == 3:
        return True, f"lme4 {parts[0]} on R {parts[1]} (data.table: {parts[2]})"
    return True, proc.stdout.strip()


def run_lme4_size(csv_path: str, repeats: int, timeout: float | None) -> dict[str, Any]:
    """Run ``benchmarks/lmer_fit.R`` on one CSV.

    Parameters
    ----------
    csv_path
        The simulated data.
    repeats
        Timed ``lmer`` fits.
    timeout
        Seconds before Rscript is killed, or ``None``.

    Returns
    -------
    dict
        The script's JSON, or a dict with ``error``.
    """
    rscript = shutil.which("Rscript") or "Rscript"
    rc, stdout, tail = _run_streaming(
        [rscript, "--vanilla", str(R_SCRIPT), csv_path, str(repeats)], "  [R] ", timeout
    )
    if rc is None:
        return {"error": f"Rscript killed after --timeout {timeout} s"}
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if rc != 0 or not lines:
        return {"error": f"Rscript exited with {rc}: " + "\n".join(tail[-15:])}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"error": f"unreadable JSON from lmer_fit.R: {exc}", "stdout": stdout[-2000:]}


# --------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------


def level_of_group(name: str) -> int | None:
    """Map a grouping-factor name to its level index (0 = dist ... 3 = student).

    lme4 names the nested terms ``student_id:(teach_id:(school_id:dist_id))`` or
    ``student_id:teach_id:school_id:dist_id`` depending on its version; tiers may name them
    ``dist_id:school_id``, ``dist_id/school_id`` or just ``school_id``. In every one of these the
    level is the innermost (deepest) id variable named, which for lme4 is the first one.

    Parameters
    ----------
    name
        A group name, possibly with a ``.(Intercept)`` suffix (lme4's theta names).

    Returns
    -------
    int or None
        Index into :data:`LEVELS`, or ``None`` when no id variable is named (e.g. Residual).
    """
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", name)
    depths = [LEVELS.index(t) for t in tokens if t in LEVELS]
    return max(depths) if depths else None


def _is_residual(name: str) -> bool:
    return name.strip().lower() in {"residual", "residuals", "resid", "sigma", "observation"}


def sds_by_level(varcorr: dict[str, list[Any]] | None) -> dict[str, float]:
    """Random-effect SDs of the intercepts keyed by level label, plus ``residual``.

    Parameters
    ----------
    varcorr
        Dict with lists ``group``, ``term``, ``sd`` (from either engine).

    Returns
    -------
    dict
        ``{"dist": sd, "school": sd, "teach": sd, "student": sd, "residual": sd}`` for the
        entries found.
    """
    out: dict[str, float] = {}
    if not varcorr:
        return out
    for group, sd in zip(varcorr.get("group", []), varcorr.get("sd", []), strict=False):
        if sd is None:
            continue
        if _is_residual(str(group)):
            out["residual"] = float(sd)
            continue
        k = level_of_group(str(group))
        if k is not None:
            out.setdefault(LEVEL_LABELS[k], float(sd))
    return out


def compare(tiers_res: dict[str, Any], lme4_res: dict[str, Any]) -> dict[str, Any]:
    """Compare the tiers and lme4 fits of one size.

    Parameters
    ----------
    tiers_res
        The tiers worker's result.
    lme4_res
        The R script's result.

    Returns
    -------
    dict
        ``ratio_lme4_over_tiers``, ``reml_rel_diff``, ``theta_by_level`` (both engines),
        ``max_abs_theta_diff``, ``sd_by_level`` and ``max_rel_sd_diff``, each present only when
        both sides provide what it needs.
    """
    out: dict[str, Any] = {}
    t_med, r_med = tiers_res.get("median_s"), lme4_res.get("median_s")
    if t_med and r_med:
        out["ratio_lme4_over_tiers"] = r_med / t_med
    t_crit, r_crit = tiers_res.get("reml_criterion"), lme4_res.get("reml_criterion")
    if t_crit is not None and r_crit is not None:
        out["reml_abs_diff"] = abs(t_crit - r_crit)
        out["reml_rel_diff"] = abs(t_crit - r_crit) / max(abs(r_crit), 1e-300)

    t_theta = tiers_res.get("theta")
    r_theta = lme4_res.get("theta")
    if t_theta is not None and r_theta:
        r_by_level: dict[str, float] = {}
        for name, value in r_theta.items():
            k = level_of_group(name)
            if k is not None and value is not None:
                r_by_level[LEVEL_LABELS[k]] = float(value)
        t_by_level = {LEVEL_LABELS[k]: float(v) for k, v in enumerate(t_theta[: len(LEVEL_LABELS)])}
        both = [lab for lab in LEVEL_LABELS if lab in t_by_level and lab in r_by_level]
        out["theta_by_level"] = {
            lab: {"tiers": t_by_level.get(lab), "lme4": r_by_level.get(lab)} for lab in LEVEL_LABELS
        }
        if len(t_theta) != len(LEVEL_LABELS) or len(both) != len(LEVEL_LABELS):
            out["theta_warning"] = f"tiers theta has {len(t_theta)} entries, matched levels: {both}"
        if both:
            out["max_abs_theta_diff"] = max(abs(t_by_level[x] - r_by_level[x]) for x in both)

    t_sd = sds_by_level(tiers_res.get("varcorr"))
    r_sd = sds_by_level(lme4_res.get("varcorr"))
    if t_sd and r_sd:
        labels = [*LEVEL_LABELS, "residual"]
        out["sd_by_level"] = {
            lab: {"tiers": t_sd.get(lab), "lme4": r_sd.get(lab)} for lab in labels
        }
        rel = [
            abs(t_sd[x] - r_sd[x]) / max(abs(r_sd[x]), 1e-12)
            for x in labels
            if x in t_sd and x in r_sd
        ]
        if rel:
            out["max_rel_sd_diff"] = max(rel)
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

COLUMNS: tuple[str, ...] = (
    "size",
    "rows",
    "tiers s",
    "tiers peak MiB",
    "tiers fit +MiB",
    "lme4 s",
    "lme4 peak MiB",
    "lme4/tiers",
    "REML rel diff",
    "max |dtheta|",
)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Format one table row per size.

    Parameters
    ----------
    results
        The per-size entries of the JSON output.

    Returns
    -------
    list of list of str
        Cells in the order of :data:`COLUMNS`.
    """
    rows = []
    for entry in results:
        t = entry.get("tiers", {})
        r = entry.get("lme4") or {}
        c = entry.get("comparison", {})
        fit_inc = None
        peak = t.get("peak_rss_fit_mib", t.get("peak_rss_mib"))
        if t.get("times_s") and peak is not None and t.get("rss_before_fit_mib") is not None:
            fit_inc = max(0.0, peak - t["rss_before_fit_mib"])
        t_med = t.get("median_s") if "median_s" in t else ("error" if t.get("error") else None)
        if r.get("skipped"):
            r_med: Any = "skipped"
        elif r.get("error"):
            r_med = "error"
        else:
            r_med = r.get("median_s")
        rows.append(
            [
                str(entry["districts"]),
                f"{entry.get('rows', entry['districts'] * ROWS_PER_DISTRICT):,}",
                _fmt(t_med, ".3f"),
                _fmt(t.get("peak_rss_mib"), ",.0f"),
                _fmt(fit_inc, ",.0f"),
                _fmt(r_med, ".3f"),
                _fmt(r.get("peak_rss_mib"), ",.0f"),
                _fmt(c.get("ratio_lme4_over_tiers"), ".1f"),
                _fmt(c.get("reml_rel_diff"), ".2e"),
                _fmt(c.get("max_abs_theta_diff"), ".2e"),
            ]
        )
    return rows


def print_table(results: list[dict[str, Any]], title: str) -> None:
    """Print the summary table, with rich when it is importable.

    Parameters
    ----------
    results
        The per-size entries of the JSON output.
    title
        Table title.
    """
    rows = table_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(COLUMNS)]
        print(title)
        print("  ".join(h.rjust(w) for h, w in zip(COLUMNS, widths, strict=True)))
        for r in rows:
            print("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))
    else:
        table = Table(title=title)
        console = Console() if sys.stdout.isatty() else Console(width=200)
        for h in COLUMNS:
            table.add_column(h, justify="right")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    for entry in results:
        for engine in ("tiers", "lme4"):
            err = (entry.get(engine) or {}).get("error")
            if err:
                last = err.strip().splitlines()[-1] if err.strip() else err
                print(f"  size {entry['districts']}: {engine} error: {last}", file=sys.stderr)
        warn = entry.get("comparison", {}).get("theta_warning")
        if warn:
            print(f"  size {entry['districts']}: {warn}", file=sys.stderr)
        msgs = (entry.get("lme4") or {}).get("warnings") or []
        for m in msgs:
            print(f"  size {entry['districts']}: lme4 warning: {m}", file=sys.stderr)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the results atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination, e.g. ``bench-out/nested.json``; its folder is created.
    payload
        Everything to write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_to_jsonable(payload), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    """Parse ``--sizes`` (comma-separated district counts).

    Parameters
    ----------
    text
        E.g. ``"50,500"``.

    Returns
    -------
    list of int
        The positive district counts, in the given order.
    """
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be integers, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes must be positive integers, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns
    -------
    argparse.ArgumentParser
        The parser for both the user-facing command and the internal ``--worker`` mode.
    """
    p = argparse.ArgumentParser(
        description="Benchmark tiers.fit against lme4::lmer on the nested seed design.",
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated numbers of districts (1,600 rows each); default 50,500",
    )
    p.add_argument(
        "--big", action="store_true", help=f"also run {BIG_SIZE} districts (8,000,000 rows)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed tiers fits per size (default 5)")
    p.add_argument("--r-repeats", type=int, default=3, help="timed lme4 fits per size (default 3)")
    p.add_argument("--no-r", action="store_true", help="skip lme4 even if R is available")
    p.add_argument(
        "--r-max-rows",
        type=int,
        default=None,
        help="skip lme4 for sizes with more rows than this (default: no limit)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before a tiers or R subprocess is killed (default: none)",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (default bench-out/nested.json)"
    )
    # internal: the per-size subprocess
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--districts", type=int, help=argparse.SUPPRESS)
    p.add_argument("--csv", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


#: Sizes up to this many rows also time the whole command on their CSV.
CLI_MAX_ROWS = 100_000


def time_cli(csv_path: str, repeats: int) -> dict[str, Any]:
    """Wall and CPU time of ``tiers fit FORMULA CSV`` in a fresh process, from start to exit."""
    times, cpu = [], []
    for _ in range(max(repeats, 1)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tiers", "fit", FORMULA, csv_path],
            env=_worker_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode != 0:
            return {"error": done.stderr[-2000:]}
    return {
        "times_s": times,
        "cpu_s": cpu,
        "median_s": statistics.median(times),
        "cpu_median_s": statistics.median(cpu),
    }


def _fit_mib(t: dict[str, Any]) -> str:
    peak = t.get("peak_rss_fit_mib", t.get("peak_rss_mib"))
    before = t.get("rss_before_fit_mib")
    return "?" if peak is None or before is None else f"{peak - before:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark.

    Parameters
    ----------
    argv
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: 0 when every requested tiers fit ran, 1 otherwise.
    """
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args.districts, args.repeats, args.csv, args.result)
    if args.repeats < 1 or args.r_repeats < 1:
        print("--repeats and --r-repeats must be >= 1", file=sys.stderr)
        return 2

    sizes = list(dict.fromkeys([*args.sizes, *([BIG_SIZE] if args.big else [])]))
    if args.no_r:
        use_r, r_detail = False, "disabled by --no-r"
    else:
        use_r, r_detail = r_available()
    print(f"lme4: {r_detail}", file=sys.stderr)

    payload: dict[str, Any] = {
        "benchmark": "nested four-level random intercepts, REML",
        "formula": FORMULA,
        "design": "tiers.seed_design(districts=D)",
        "seed": SEED,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "thread_env": {
                k: os.environ[k]
                for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ
            },
        },
        "settings": {
            "sizes": sizes,
            "repeats": args.repeats,
            "r_repeats": args.r_repeats,
            "r_max_rows": args.r_max_rows,
            "timeout_s": args.timeout,
        },
        "r": {"used": use_r, "detail": r_detail},
        "results": [],
    }

    all_ok = True
    with tempfile.TemporaryDirectory(prefix="tiers-bench-") as workdir:
        for districts in sizes:
            rows = districts * ROWS_PER_DISTRICT
            want_r = use_r and (args.r_max_rows is None or rows <= args.r_max_rows)
            print(f"size {districts} districts ({rows:,} rows): tiers ...", file=sys.stderr)
            want_cli = rows <= CLI_MAX_ROWS
            csv_path = (
                os.path.join(workdir, f"seed-{districts}.csv") if want_r or want_cli else None
            )
            t_res = run_tiers_size(districts, args.repeats, csv_path, workdir, args.timeout)
            if want_cli and csv_path and os.path.exists(csv_path):
                print(f"size {districts}: tiers fit FORMULA CSV ...", file=sys.stderr)
                t_res["cli"] = time_cli(csv_path, args.repeats)
            entry: dict[str, Any] = {
                "districts": districts,
                "rows": t_res.get("rows", rows),
                "tiers": t_res,
            }
            if t_res.get("error") or "median_s" not in t_res:
                all_ok = False
            if not use_r:
                entry["lme4"] = None
            elif not want_r:
                entry["lme4"] = {"skipped": f"rows {rows:,} > --r-max-rows {args.r_max_rows:,}"}
                if csv_path and os.path.exists(csv_path):
                    os.remove(csv_path)
            elif not (csv_path and os.path.exists(csv_path)):
                entry["lme4"] = {"error": "no CSV (simulation failed)"}
            else:
                print(f"size {districts}: lme4 ...", file=sys.stderr)
                entry["lme4"] = run_lme4_size(csv_path, args.r_repeats, args.timeout)
                os.remove(csv_path)
            entry["comparison"] = compare(t_res, entry["lme4"] or {})
            payload["results"].append(entry)
            write_json(args.out, payload)  # after every size, so a long run keeps partial data

    payload["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(args.out, payload)
    print_table(payload["results"], title=f"tiers vs lme4: {FORMULA}")
    for entry in payload["results"]:
        t = entry["tiers"]
        if "first_over_warm" in t:
            print(
                f"{entry['rows']:,} rows: first fit of the process {t['first_s']:.3f} s, later "
                f"fits {t['warm_median_s']:.3f} s (x{t['first_over_warm']:.2f}; CPU "
                f"x{t['first_over_warm_cpu']:.2f}); fit +{_fit_mib(t)} MiB over the data"
            )
        if t.get("cli"):
            c = t["cli"]
            print(
                f"{entry['rows']:,} rows: 'tiers fit FORMULA CSV' {c['median_s']:.3f} s wall, "
                f"{c['cpu_median_s']:.3f} s CPU (median of {len(c['times_s'])}, start to exit)"
            )
    print(f"load average at the end: {os.getloadavg()}")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
