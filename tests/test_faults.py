"""Faults: two runs on one study folder, kills, cut and corrupt files, full disks, bad paths, Ctrl-C.

A full disk is simulated by a fault-injecting writer (the write raises ``OSError(ENOSPC)`` after
writing part of the file); kills and Ctrl-C by signals to a subprocess. Designs are tiny.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiers
import tiers._output
import tiers.simulation.memory as sim_memory
import tiers.study.store as store_mod
from tiers.cli.main import app
from tiers.data.io import write_data
from tiers.errors import DesignError, OutputError, StudyError
from tiers.inference.bootstrap import BootstrapInterrupted, bootstrap
from tiers.simulation.data import Covariate, Level, NestedDesign, simulate
from tiers.study.runner import load_study, run_study

EST = {"fe": "fe", "nested": "y x || a: || b: || c:"}
ROOT = Path(__file__).resolve().parents[1]


def tiny() -> NestedDesign:
    """a > b > c, 108 rows at 3 units of a."""
    return NestedDesign(
        levels=(Level("a", 3, 1.5), Level("b", 3, 1.0), Level("c", 4, 0.8)),
        obs_per_unit=3,
        residual_sd=1.0,
        covariates=(Covariate("x", "bernoulli", coef=0.5, p=0.4),),
        response="y",
    )


def numbers(result) -> np.ndarray:
    return result.replicates[["estimate", "se", "lower", "upper"]].to_numpy(float)


def study(out: Path | None, replicates: int = 4, **kw):
    return run_study(
        tiny(), EST, sizes=[3], replicates=replicates, seed=3, workers=1, out=out, **kw
    )


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def disk_full_after(nbytes: int):
    """A writer that writes ``nbytes`` of the text, then fails as a full disk does."""

    def write(path, text):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text[:nbytes])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------- item 1: one run at a time --


def _pid_of_finished_process() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_lock_refuses_a_second_run_naming_the_folder_and_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname()}
        (tmp_path / "study.lock").write_text(json.dumps(lock))
        with pytest.raises(StudyError, match=rf"{tmp_path}.*in use.*process {holder.pid}"):
            study(tmp_path)
        assert not (tmp_path / "replicates.csv").exists()
        assert (tmp_path / "study.lock").exists()  # the other run's lock is left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    dead = _pid_of_finished_process()
    lock = {"pid": dead, "host": socket.gethostname()}
    (tmp_path / "study.lock").write_text(json.dumps(lock))
    res = study(tmp_path, replicates=2)
    assert res.n_new == 2 * len(EST)
    assert any("took over the lock" in n and str(dead) in n for n in res.notes)
    assert not (tmp_path / "study.lock").exists()


def test_a_run_killed_midway_is_resumed_exactly_and_a_concurrent_run_is_refused(tmp_path):
    """A second run during the first is refused; a SIGKILLed run's stale lock is taken over."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_faults import study
        from pathlib import Path
        study(Path({str(tmp_path)!r}), replicates=400, batch_size=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((tmp_path / "parts").glob("*.csv")):
            time.sleep(0.1)
        assert (tmp_path / "study.lock").exists(), "the first run never started storing"
        with pytest.raises(StudyError, match=f"in use.*process {proc.pid}"):
            study(tmp_path, replicates=2)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    assert (tmp_path / "study.lock").exists()  # a hard kill leaves it behind
    resumed = study(tmp_path, replicates=6)
    assert resumed.n_new < 6 * len(EST)  # the killed run's batches were kept
    assert any("took over the lock" in n for n in resumed.notes)
    fresh = study(None, replicates=6)
    assert np.array_equal(numbers(resumed), numbers(fresh), equal_nan=True)
    loaded = load_study(tmp_path)
    # the folder also keeps what the killed run stored beyond replicate 5 (how far it got
    # depends on the machine's speed): each replicate once, the first six equal to a fresh run
    stored = loaded.replicates
    assert loaded.notes == ()
    assert not stored.duplicated(["size", "replicate", "estimator", "parameter"]).any()
    first = stored[stored["replicate"] < 6].reset_index(drop=True)
    assert len(first) == len(fresh.replicates)
    cols = ["estimate", "se", "lower", "upper"]
    assert np.array_equal(first[cols].to_numpy(float), numbers(fresh), equal_nan=True)


def test_duplicate_rows_are_kept_once_counted_and_not_refitted(tmp_path):
    first = study(tmp_path, replicates=3)
    path = tmp_path / "replicates.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + lines))  # a second copy, stray header included
    loaded = load_study(tmp_path)
    assert len(loaded.replicates) == len(first.replicates)
    assert any(f"{len(lines) - 1} duplicate rows" in n for n in loaded.notes)
    again = study(tmp_path, replicates=3)
    assert again.n_new == 0
    assert np.array_equal(numbers(again), numbers(first), equal_nan=True)
    assert load_study(tmp_path).notes == ()  # the merge wrote each row once


# ------------------------------------------------------- item 2: batches whole, loading truthful --


def test_a_fit_cut_midway_is_refitted_once_not_forever(tmp_path):
    study(tmp_path, replicates=3)
    path = tmp_path / "replicates.csv"
    lines = path.read_text().splitlines(keepends=True)
    nested = [ln for ln in lines if ",nested," in ln and ln.startswith("3,1,")]
    kept = [ln for ln in lines if ln not in nested]
    path.write_text("".join(kept + nested[:2]))  # two of the fit's rows: a cut append
    loaded = load_study(tmp_path)
    assert any("1 fit stored incompletely" in n for n in loaded.notes)
    assert (3, 1, "nested") not in set(zip(*(loaded.replicates[c] for c in ("size", "replicate", "estimator")), strict=True))  # fmt: skip
    assert study(tmp_path, replicates=3).n_new == 1
    assert study(tmp_path, replicates=3).n_new == 0


def test_a_stray_header_or_garbage_line_loses_nothing_else(tmp_path):
    first = study(tmp_path, replicates=3)
    path = tmp_path / "replicates.csv"
    lines = path.read_text().splitlines(keepends=True)
    mid = len(lines) // 2
    path.write_text("".join(lines[:mid] + [lines[0], "garbage,\x00,line\n"] + lines[mid:]))
    loaded = load_study(tmp_path)
    assert len(loaded.replicates) == len(first.replicates)
    assert loaded.notes == ("1 unreadable line in the stored replicates skipped (cut mid-write "
                            "or malformed; kept in replicates-unreadable.txt)",)  # fmt: skip
    again = study(tmp_path, replicates=3)
    assert again.n_new == 0 and len(again.notes) == 1
    assert "garbage" in (tmp_path / "replicates-unreadable.txt").read_text()
    assert load_study(tmp_path).notes == ()


def test_a_full_disk_mid_batch_leaves_no_partial_batch(tmp_path, monkeypatch):
    real = store_mod._to_csv
    calls = []

    def flaky(table, path):
        calls.append(path)
        if len(calls) == 3:  # the third batch: half written, then the disk is full
            text = table.to_csv(index=False)
            disk_full_after(len(text) // 2)(path, text)
        real(table, path)

    monkeypatch.setattr(store_mod, "_to_csv", flaky)
    with pytest.raises(OutputError, match="no space left on the device"):
        study(tmp_path, replicates=5, batch_size=1)
    assert leftovers(tmp_path) == [] and not (tmp_path / "study.lock").exists()
    kept = load_study(tmp_path)
    assert kept.notes == () and kept.replicates["replicate"].nunique() == 2
    monkeypatch.setattr(store_mod, "_to_csv", real)
    resumed = study(tmp_path, replicates=5)
    assert resumed.n_new == 3 * len(EST)
    assert np.array_equal(numbers(resumed), numbers(study(None, replicates=5)), equal_nan=True)


def test_a_study_folder_of_the_current_format_still_loads_and_resumes(tmp_path):
    """replicates.csv appended line by line (no parts folder) is read as it is."""
    first = study(tmp_path, replicates=2)
    assert not (tmp_path / "parts").exists() and (tmp_path / "replicates.csv").exists()
    assert study(tmp_path, replicates=3).n_new == len(EST)
    assert len(load_study(tmp_path).replicates) == len(first.replicates) * 3 // 2


# ------------------------------------------------------------- item 3: every output atomic --


def test_write_data_on_a_full_disk_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "data.csv"
    target.write_text("old\n")
    frame = simulate(tiny(), 1)
    real = pd.DataFrame.to_csv

    def flaky(self, path=None, **kw):
        disk_full_after(100)(path, real(self, None, **kw))

    monkeypatch.setattr(pd.DataFrame, "to_csv", flaky)
    with pytest.raises(OutputError, match=rf"{target}.*no space left"):
        write_data(frame, target)
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []


def test_cli_json_on_a_full_disk_exits_2_without_a_partial_file(tmp_path, monkeypatch):
    data = tmp_path / "d.csv"
    simulate(tiny(), 1).to_csv(data, index=False)
    real = Path.write_text

    def flaky(self, text, *args, **kw):
        if self.name.endswith(".tmp"):
            disk_full_after(10)(self, text)
        return real(self, text, *args, **kw)

    monkeypatch.setattr(Path, "write_text", flaky)
    out = tmp_path / "fit.json"
    res = cli("fit", "y ~ x + (1 | a)", data, "--json", out)
    assert res.exit_code == 2 and "no space left on the device" in res.output
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["directory", "under a file", "read-only"])
@pytest.mark.parametrize("command", ["fit", "lrtest", "xtreg", "ranef", "predict", "simulate"])
def test_a_bad_output_path_is_refused_before_the_work(tmp_path, monkeypatch, kind, command):
    data = tmp_path / "d.csv"
    simulate(tiny(), 1).to_csv(data, index=False)
    (tmp_path / "afile").write_text("x")
    target = {"directory": tmp_path, "under a file": tmp_path / "afile" / "out.csv",
              "read-only": tmp_path / "ro" / "out.csv"}[kind]  # fmt: skip
    if kind == "read-only":
        (tmp_path / "ro").mkdir()
        real = os.access  # as root chmod does not stop writes, so the check is what is tested
        monkeypatch.setattr(os, "access", lambda p, m: Path(p).name != "ro" and real(p, m))
    args = {
        "fit": ["fit", "y ~ x + (1 | a)", data, "--json", target],
        "lrtest": ["lrtest", "y ~ 1 + (1 | a)", "y ~ x + (1 | a)", data, "--ml", "--json", target],
        "xtreg": ["xtreg", "y", "x", data, "--id", "a", "--fe", "--json", target],
        "ranef": ["ranef", "y ~ x + (1 | a)", data, "-o", target],
        "predict": ["predict", "y ~ x + (1 | a)", data, "-o", target],
        "simulate": ["simulate", "-o", target, "--districts", "3"],
    }[command]
    res = cli(*args)
    assert res.exit_code == 2, res.output
    expected = {"directory": "is a folder", "under a file": "is a file",
                "read-only": "not writable"}[kind]  # fmt: skip
    assert "error: " in res.output and expected in res.output and str(target) in res.output
    assert "Fixed effects" not in res.output and "wrote" not in res.output  # nothing was run


@pytest.mark.parametrize("option", ["--out", "--plots"])
def test_cli_study_refuses_a_file_as_its_folder_before_the_run(tmp_path, option):
    design = tmp_path / "design.json"
    design.write_text(json.dumps(tiny().to_dict()))
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = afile if option == "--out" else tmp_path / "o"
    args = ["study", "--design", design, "--sizes", "3", "--replicates", "1", "--workers", "1",
            "--out", out, "--no-progress", "--estimator", "fe=fe"]  # fmt: skip
    res = cli(*args, *(["--plots", afile] if option == "--plots" else []))
    assert res.exit_code == 2 and f"{option} {afile}: is a file" in res.output
    assert not (tmp_path / "o").exists()


def test_explore_refuses_a_file_as_its_out_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = cli("explore", "--out", tmp_path / "afile")
    assert res.exit_code == 2 and "--out" in res.output and "is a file" in res.output
    assert "Step 1" not in res.output


def test_a_temporary_file_left_by_a_sigkill_is_cleared_by_the_next_write(tmp_path):
    """SIGKILL cannot be caught: the next write of the same file removes the dead writer's file."""
    target = tmp_path / "fit.json"
    script = textwrap.dedent(
        f"""
        import sys, time
        from tiers._output import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half")
            print(tmp, flush=True)
            time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        left = Path(proc.stdout.readline().strip())
        proc.kill()
        proc.wait(timeout=10)
    assert left.exists() and leftovers(tmp_path) == [left] and not target.exists()
    live = tmp_path / f".fit.json.{os.getppid()}-abcdef01.tmp"  # a live writer's is kept
    live.write_text("in progress")
    tiers._output.write_text(target, "{}")
    assert target.read_text() == "{}"
    assert leftovers(tmp_path) == [live]


# --------------------------------------------------------------------- item 12: Ctrl-C --


def _small_fit() -> tiers.LmmResult:
    d = tiny()
    return tiers.fit("y ~ x + (1 | a) + (1 | a:b)", simulate(d.with_units("a", 12), 1))


@pytest.mark.parametrize("thread", [False, True], ids=["alone", "thread-alive"])
def test_ctrl_c_stops_a_bootstrap_promptly_and_keeps_what_finished(monkeypatch, thread):
    from tiers.inference.progress import ProgressBar

    res = _small_fit()
    # Ctrl-C once the first batch is in, from this thread: a timer's thread would send the pool
    # to the fork server, whose start under load could outlast a fixed delay
    sent: list[float] = []
    advance = ProgressBar.advance

    def advance_then_interrupt(self, n):
        advance(self, n)
        if not sent:
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ProgressBar, "advance", advance_then_interrupt)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    if thread:  # as in a notebook: the workers come from the fork server
        other.start()
    try:
        with pytest.raises(BootstrapInterrupted) as info:
            bootstrap(res, n_boot=200_000, seed=1, workers=2, progress=False)
    finally:
        stop.set()
    assert time.monotonic() - sent[0] < 10  # not after the 200,000 queued replicates
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt) and exc.requested == 200_000
    assert exc.partial is not None and 0 < exc.partial.n_boot == exc.finished < 200_000
    assert f"{exc.finished:,} of 200,000 bootstrap replicates finished" in str(exc)
    assert any("interrupted: only" in n for n in exc.partial.notes)
    assert np.isfinite(exc.partial.models[0].theta[exc.partial.ok]).all()


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def test_ctrl_c_in_tiers_fit_ci_bootstrap_exits_at_once_saying_what_finished(tmp_path):
    data = tmp_path / "d.csv"
    simulate(tiny().with_units("a", 12), 1).to_csv(data, index=False)
    cmd = [sys.executable, "-m", "tiers.cli", "fit", "y ~ x + (1 | a) + (1 | a:b)", str(data),
           "--ci", "bootstrap", "--n-boot", "200000", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _children(proc.pid):
            time.sleep(0.1)  # the bootstrap's workers have started
        assert _children(proc.pid), "the bootstrap never started"
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        sent = time.monotonic()
        _, err = proc.communicate(timeout=20)
        assert time.monotonic() - sent < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "of 200,000 bootstrap replicates finished" in err and "no intervals" in err
    assert "Traceback" not in err


def _interrupt_as_workers_start(cmd: list, delay: float) -> tuple[int, str, bool]:
    """Run ``cmd`` in its own process group; Ctrl-C it ``delay`` s after its first worker starts.

    Returns the exit code, stderr, and whether a process of the group is left 0.5 s after exit.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _children(proc.pid):
            time.sleep(0.002)
        assert _children(proc.pid), "the workers never started"
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        time.sleep(0.5)
        try:
            os.killpg(proc.pid, 0)
            left = True
        except ProcessLookupError:
            left = False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err, left


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_ctrl_c_as_the_workers_start_leaves_no_worker_and_no_traceback(tmp_path, delay):
    """Ctrl-C while the pool is starting: no worker outlives the command, nothing at exit."""
    data = tmp_path / "d.csv"
    simulate(tiny().with_units("a", 12), 1).to_csv(data, index=False)
    cmd = [sys.executable, "-m", "tiers.cli", "fit", "y ~ x + (1 | a) + (1 | a:b)", str(data),
           "--ci", "bootstrap", "--n-boot", "200000", "--no-progress"]  # fmt: skip
    code, err, left = _interrupt_as_workers_start(cmd, delay)
    assert code == 130 and not left
    assert "Traceback" not in err and "Bad file descriptor" not in err


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_ctrl_c_as_a_study_starts_its_workers_prints_no_worker_traceback(tmp_path, delay):
    """Spawned workers start with Ctrl-C blocked: none dies mid-import with a traceback.

    (A spawn pool's resource tracker can linger as a zombie where PID 1 reaps slowly, so the
    group is not required to be empty here.)
    """
    cmd = [sys.executable, "-m", "tiers.cli", "study", "--out", str(tmp_path / "s"),
           "--sizes", "2,3", "--replicates", "400", "--workers", "2", "--no-progress"]  # fmt: skip
    code, err, _ = _interrupt_as_workers_start(cmd, delay)
    assert code == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "finished replicates are kept" in err


# ---------------------------------------------------------- item 16: files and arguments --


@pytest.mark.parametrize("command", ["study", "simulate", "plan"])
def test_a_missing_design_file_names_the_option(tmp_path, command):
    args = {"study": ["study", "--out", tmp_path / "o"], "simulate": ["simulate", "-o",
            tmp_path / "x.csv"], "plan": ["plan"]}[command]  # fmt: skip
    res = cli(*args, "--design", tmp_path / "nope.json")
    assert res.exit_code == 2 and "--design" in res.output and "nope.json" in res.output
    assert "No such file" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("command", ["simulate", "study", "fit"])
def test_a_negative_seed_names_the_option(tmp_path, command):
    data = tmp_path / "d.csv"
    simulate(tiny(), 1).to_csv(data, index=False)
    args = {"simulate": ["simulate", "-o", tmp_path / "x.csv"],
            "study": ["study", "--out", tmp_path / "o", "--sizes", "3"],
            "fit": ["fit", "y ~ x + (1 | a)", data, "--ci", "bootstrap"]}[command]  # fmt: skip
    res = cli(*args, "--seed", "-1")
    assert res.exit_code == 2 and "--seed must be an integer >= 0, got -1" in res.output
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "o").exists()


def test_study_plots_without_matplotlib_is_refused_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    res = cli("study", "--out", tmp_path / "o", "--sizes", "3", "--replicates", "1",
              "--no-progress", "--plots", tmp_path / "p")  # fmt: skip
    assert res.exit_code == 2 and "--plots needs matplotlib" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["truncated", "not json", "not a study"])
def test_a_corrupt_study_json_is_a_clear_error(tmp_path, damage):
    study(tmp_path, replicates=1)
    info = tmp_path / "study.json"
    text = info.read_text()
    info.write_text({"truncated": text[: len(text) // 2], "not json": "\x00\x01",
                     "not a study": "[1, 2]"}[damage])  # fmt: skip
    with pytest.raises(StudyError, match="study.json is missing, truncated or corrupt"):
        load_study(tmp_path)
    with pytest.raises(StudyError, match="study.json is missing, truncated or corrupt"):
        study(tmp_path, replicates=1)
    res = cli("study", "--out", tmp_path, "--sizes", "3", "--replicates", "1", "--no-progress")
    assert res.exit_code == 2 and "truncated or corrupt" in res.output
    assert not (tmp_path / "study.lock").exists()


def test_more_rows_than_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(sim_memory, "available_memory", lambda: 1000)  # 1 kB free
    with pytest.raises(DesignError, match=r"needs about .* GiB of memory, but only 0\.0 GiB"):
        simulate(tiny().with_units("a", 100), 1)
    with pytest.raises(DesignError, match="memory"):
        run_study(tiny(), EST, sizes=[100], replicates=1, max_rows=10**9, workers=1,
                  out=tmp_path / "o")  # fmt: skip
    assert not (tmp_path / "o").exists()
    res = cli("simulate", "-o", tmp_path / "x.csv", "--districts", "100")
    assert res.exit_code == 2 and "GiB of memory" in res.output


def test_study_plots_on_a_full_disk_leave_no_partial_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    real, calls = Figure.savefig, []

    def flaky(self, fname, *args, **kw):
        calls.append(fname)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, fname, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", flaky)
    plots = tmp_path / "p"
    res = cli("study", "--out", tmp_path / "o", "--sizes", "3", "--replicates", "1",
              "--workers", "1", "--no-progress", "--estimator", "fe=fe", "--plots", plots)  # fmt: skip
    assert res.exit_code == 2 and "No space left on device" in res.output
    assert list(plots.iterdir()) == []  # no partial figure, no temporary folder


def test_a_missing_folder_of_an_output_file_is_refused_before_the_work(tmp_path) -> None:
    """A mistyped folder in --json or -o is an error up front, not created silently."""
    from typer.testing import CliRunner

    from tiers.cli.main import app

    from .conftest import REFERENCE

    runner = CliRunner()
    data = str(REFERENCE / "dyestuff.csv")
    missing = tmp_path / "no-such-folder"
    for args in (
        ["fit", "Yield ~ 1 + (1 | Batch)", data, "--json", str(missing / "fit.json")],
        ["simulate", "--preset", "seed", "--districts", "2", "-o", str(missing / "d.csv")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "does not exist; create it first" in result.stderr
        assert not missing.exists()


def test_study_result_plot_from_python_is_atomic_too(tmp_path, monkeypatch):
    """StudyResult.plot itself draws into a temporary folder: no partial figure from Python."""
    from matplotlib.figure import Figure

    study = tiers.run_study(tiny(), {"fe": "fe"}, sizes=[3], replicates=1, seed=1, workers=1)
    real, calls = Figure.savefig, []

    def flaky(self, fname, *args, **kw):
        calls.append(fname)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, fname, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", flaky)
    with pytest.raises(tiers.TiersError, match="No space left on device"):
        study.plot(tmp_path / "figs")
    assert list((tmp_path / "figs").iterdir()) == []
    monkeypatch.setattr(Figure, "savefig", real)
    assert all(p.exists() for p in study.plot(tmp_path / "figs"))
