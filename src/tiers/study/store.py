"""A study folder on disk: one writer at a time, every batch whole or absent, loading that tells.

Layout of ``out/``:

``study.json``
    What the study is (design, level, seed, estimators); written atomically.
``study.lock``
    Present while a run holds the folder: ``{"pid": ..., "host": ...}``, created with
    ``O_CREAT | O_EXCL`` so two runs cannot both take it. A lock left by a dead process on this
    host is taken over (with a note); a live one refuses the second run.
``parts/*.csv``
    One file per finished batch of replicates, written under a temporary name and renamed: a kill or
    a full disk midway leaves no part, so a batch is stored whole or not at all.
``replicates.csv``
    Every stored row (the columns of `REPLICATE_COLUMNS`). At the end of a run, interrupted or
    not, the parts are merged into it (written atomically) and removed; a folder written by an
    older tiers, whose replicates.csv was appended line by line, loads as is.

Loading is tolerant and truthful: a line that does not parse (cut mid-write, a stray header, a
wrong number of fields) is skipped and counted, a fit with fewer rows than its ``n_param`` is
dropped (and refitted once: the merge rewrites the file without it), and a row stored twice is kept
once; each of these is said in a note. Unreadable lines are kept in ``replicates-unreadable.txt``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiers._output import atomic_path, check_output, write_text
from tiers.errors import OutputError, StudyError

REPLICATE_COLUMNS: tuple[str, ...] = (
    "size", "replicate", "estimator", "parameter", "estimate", "se", "lower", "upper",
    "singular", "converged", "seconds", "warnings", "error", "n_param", "status",
)  # fmt: skip
KEY = ["size", "replicate", "estimator", "parameter"]
_DTYPES = {"size": "int64", "replicate": "int64", "n_param": "int64", "singular": bool,
           "converged": bool, **dict.fromkeys(["estimate", "se", "lower", "upper", "seconds"], float)}  # fmt: skip
STALE_EMPTY_LOCK_SECONDS = 10.0  # a lock file still empty after this was left by a killed run


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Rows -> the replicate table, with fixed dtypes (so an empty table concatenates cleanly)."""
    return pd.DataFrame(rows, columns=list(REPLICATE_COLUMNS)).astype(_DTYPES)


def _to_csv(table: pd.DataFrame, path: Path) -> None:
    """One line per row (line breaks in the texts become spaces), so loading can go line by line."""
    out = table[list(REPLICATE_COLUMNS)].copy()
    for col in ("warnings", "error"):
        out[col] = out[col].astype(str).str.replace(r"[\r\n]+", " ", regex=True)
    out.to_csv(path, index=False)


# ------------------------------------------------------------------------------------ lock --


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class StudyLock:
    """``folder/study.lock``: held by one run at a time (module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "study.lock"
        self.note: str | None = None
        self._mine = {"pid": os.getpid(), "host": socket.gethostname()}

    def _holder(self) -> dict[str, Any] | None:
        """The lock's content; None if it cannot be read (gone, or empty and recent)."""
        try:
            text = self.path.read_text(encoding="utf-8")
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return None
        try:
            holder = json.loads(text)
            return {"pid": int(holder["pid"]), "host": str(holder["host"])}
        except (ValueError, KeyError, TypeError):
            return {"pid": -1, "host": "?", "empty": age > STALE_EMPTY_LOCK_SECONDS}

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; `StudyError` if a live run holds it."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    time.sleep(0.05)
                    continue
                stale = holder.get("empty", False) or (
                    holder["host"] == self._mine["host"] and not _alive(holder["pid"])
                )
                if not stale:
                    where = "" if holder["host"] == self._mine["host"] else f" on {holder['host']}"
                    raise StudyError(
                        f"{self.path.parent} is in use by another tiers study run (process "
                        f"{holder['pid']}{where}); wait for it to finish or use another output "
                        f"folder. If no run is active, remove {self.path}"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                self.note = (
                    f"took over the lock of an earlier run that did not finish (process "
                    f"{holder['pid']} on {holder['host']} is gone)"
                )
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self._mine))
            return
        raise StudyError(f"could not take the lock {self.path}; remove it if no run is active")

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        holder = self._holder()
        if holder is not None and holder["pid"] == self._mine["pid"]:
            with contextlib.suppress(OSError):
                self.path.unlink()


# ----------------------------------------------------------------------------- reading --


@dataclass
class Loaded:
    """The stored rows and what loading them found."""

    table: pd.DataFrame
    parts: list[Path] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    n_cut: int = 0
    n_duplicate: int = 0

    @property
    def notes(self) -> tuple[str, ...]:
        """What was skipped and why, in words."""
        out = []
        if self.bad_lines:
            n = len(self.bad_lines)
            out.append(
                f"{n:,} unreadable line{'s' if n != 1 else ''} in the stored replicates skipped "
                "(cut mid-write or malformed; kept in replicates-unreadable.txt)"
            )
        if self.n_cut:
            out.append(
                f"{self.n_cut:,} fit{'s' if self.n_cut != 1 else ''} stored incompletely (fewer "
                "rows than parameters) left out, to be refitted"
            )
        if self.n_duplicate:
            out.append(
                f"{self.n_duplicate:,} duplicate row{'s' if self.n_duplicate != 1 else ''} (the "
                "same size, replicate, estimator and parameter stored twice) kept once"
            )
        return tuple(out)


def _parse(path: Path) -> tuple[pd.DataFrame, list[str], int, int]:
    """One stored file -> (complete fits, unreadable lines, cut fits, duplicate rows)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:  # a part merged and removed by a run since it was listed
        return frame([]), [], 0, 0
    except OSError as exc:
        raise StudyError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = text.splitlines(keepends=True)
    bad: list[str] = []
    if lines and not lines[-1].endswith(("\n", "\r")):
        bad.append(lines.pop())  # the last line was cut mid-write
    header = list(REPLICATE_COLUMNS)
    rows = []
    for line in lines:
        try:
            rec = next(csv.reader(io.StringIO(line)), [])
        except csv.Error:
            rec = None
        if rec == header or (rec is not None and not any(f.strip() for f in rec)):
            continue  # a header (the first, or a stray one) or a blank line: not a row
        if rec is None or len(rec) != len(header):
            bad.append(line)
            continue
        rows.append((line, rec))
    if not rows:
        return frame([]), bad, 0, 0
    df = pd.DataFrame([r for _, r in rows], columns=header)
    ok = df["status"].isin(["ok", "failed"]) & df["estimator"].ne("") & df["parameter"].ne("")
    for col in ("size", "replicate", "n_param"):
        num = pd.to_numeric(df[col], errors="coerce")
        ok &= num.notna() & (num == np.floor(num))
        df[col] = num.fillna(-1).astype("int64")
    for col in ("estimate", "se", "lower", "upper", "seconds"):
        num = pd.to_numeric(df[col], errors="coerce")
        ok &= num.notna() | df[col].eq("")
        df[col] = num.astype(float)
    for col in ("singular", "converged"):
        ok &= df[col].isin(["True", "False"])
        df[col] = df[col].eq("True")
    bad += [line for (line, _), good in zip(rows, ok, strict=True) if not good]
    df = df[ok.to_numpy()]
    n_dup = int(df.duplicated(KEY).sum())
    df = df.drop_duplicates(KEY)
    n = df.groupby(KEY[:3])["parameter"].transform("size")
    complete = (n == df["n_param"]).to_numpy()
    n_cut = int(df[~complete].groupby(KEY[:3]).ngroups)
    return df[complete].astype(_DTYPES).reset_index(drop=True), bad, n_cut, n_dup


def load_rows(folder: Path) -> Loaded:
    """Every stored row of the study in ``folder``: replicates.csv and any unmerged parts.

    The parts are read first: one that a running merge removes meanwhile is in replicates.csv
    by then (the merge replaces the file before removing the parts).
    """
    parts = sorted((folder / "parts").glob("*.csv")) if (folder / "parts").is_dir() else []
    tables, loaded = [], Loaded(frame([]), parts)
    for path in [*parts, folder / "replicates.csv"]:
        if not path.exists():
            continue
        df, bad, n_cut, n_dup = _parse(path)
        tables.append(df)
        loaded.bad_lines += bad
        loaded.n_cut += n_cut
        loaded.n_duplicate += n_dup
    if tables:
        table = pd.concat([frame([]), *tables], ignore_index=True)
        dup = table.duplicated(KEY)
        loaded.n_duplicate += int(dup.sum())
        loaded.table = table[~dup.to_numpy()].reset_index(drop=True)
    return loaded


def read_meta(folder: Path) -> dict[str, Any]:
    """``folder/study.json``; `StudyError` if it is missing, truncated or not a study's."""
    info = folder / "study.json"
    try:
        meta = json.loads(info.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not {"design", "level", "seed", "estimators"} <= set(meta):
            raise ValueError("it lacks design, level, seed or estimators")
    except (OSError, ValueError) as exc:
        raise StudyError(
            f"{folder} is not a readable study folder: study.json is missing, truncated or "
            f"corrupt ({exc}); restore it, or remove the folder to start afresh"
        ) from None
    return meta


# ----------------------------------------------------------------------------- writing --


class Store:
    """The study folder of one run: locked on open, released by `close` (module docstring)."""

    def __init__(self, folder: Path, meta: dict[str, Any], specs: dict[str, str]) -> None:
        self.folder = check_output(folder, "out", folder=True)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the study folder {folder}: {exc}") from exc
        self.lock = StudyLock(folder)
        self.lock.acquire()
        self.written: list[Path] = []
        try:
            for tmp in [*folder.glob(".*.tmp"), *folder.glob("parts/.*.tmp")]:
                tmp.unlink()  # left by a run killed mid-write; we hold the lock
            if (folder / "study.json").exists():
                old = read_meta(folder)
                for key, value in meta.items():
                    if old.get(key) != value:
                        raise StudyError(
                            f"{folder} holds a study with another {key} ({old.get(key)!r}); use "
                            "another output folder, or remove it to start afresh"
                        )
                clash = [n for n, s in specs.items() if old["estimators"].get(n, s) != s]
                if clash:
                    raise StudyError(
                        f"{folder}: estimator(s) {clash} are defined differently there"
                    )
                specs = {**old["estimators"], **specs}
            doc = json.dumps({**meta, "estimators": specs}, indent=2) + "\n"
            write_text(folder / "study.json", doc, "study file")
            self.loaded = load_rows(folder)
        except BaseException:
            self.lock.release()
            raise

    @property
    def notes(self) -> tuple[str, ...]:
        """The lock's and the loading's notes."""
        return ((self.lock.note,) if self.lock.note else ()) + self.loaded.notes

    def append(self, rows: list[tuple]) -> None:
        """Store one batch as a part file, whole or not at all."""
        path = self.folder / "parts" / f"{uuid.uuid4().hex}.csv"
        with atomic_path(path, "study batch") as tmp:
            _to_csv(frame(rows), tmp)
        self.written.append(path)

    def close(self, table: pd.DataFrame | None) -> None:
        """Merge the parts into replicates.csv (when anything changed) and release the lock.

        ``table`` is every row to keep, or None to merge what is on disk: after an error or
        Ctrl-C, when a failure to merge is not raised (the parts stay and load next time).
        """
        try:
            self._merge(table)
        except (OSError, StudyError):
            if table is not None:
                raise
        finally:
            self.lock.release()

    def _merge(self, table: pd.DataFrame | None) -> None:
        found = self.loaded.bad_lines or self.loaded.n_cut or self.loaded.n_duplicate
        if self.written or self.loaded.parts or found:
            if table is None:
                table = load_rows(self.folder).table
            if self.loaded.bad_lines:
                keep = self.folder / "replicates-unreadable.txt"
                old = keep.read_text(encoding="utf-8") if keep.exists() else ""
                write_text(keep, old + "".join(self.loaded.bad_lines), "unreadable rows")
            with atomic_path(self.folder / "replicates.csv", "replicates file") as tmp:
                _to_csv(table, tmp)
            for part in [*self.loaded.parts, *self.written]:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
            with contextlib.suppress(OSError):
                (self.folder / "parts").rmdir()
