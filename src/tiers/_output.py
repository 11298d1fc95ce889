"""Output files that are whole or absent: a bad path refused up front, every write atomic.

`check_output` is called before the work (the fit, the simulation, the study) so that a path that
cannot be written (a folder given as a file, a path under a file, a read-only folder) is refused
in words instead of after minutes of work. `atomic_path` hands out a temporary name in the target's
own folder and renames it into place only when the write finished: a full disk, a kill or Ctrl-C
leaves the old file (or none), never a 0-byte or truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from tiers.errors import OutputError

__all__ = ["atomic_path", "check_output", "write_text"]


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only folder or file system)"
    return exc.strerror or str(exc)


def check_output(path: str | os.PathLike[str], option: str, *, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    Parameters
    ----------
    path : path
        The file (or, with ``folder=True``, the folder) to be written. A file's folder must
        exist; an output folder is created with its parents.
    option : str
        How the user gave it (``--json``, ``-o``, ``out``), named in the message.
    folder : bool
        The path is a folder to write files into (created if missing).

    Raises
    ------
    OutputError
        The path is an existing folder (for a file) or file (for a folder), lies under a file, a
        file's folder does not exist, or the nearest existing folder is not writable.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option} {path}: is a file, not a folder; give a folder")
    elif path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name inside it")
    elif path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path}: the file exists and is read-only")
    probe = path.parent  # a file's folder, or the folder a new output folder is made in
    if probe.exists() and not probe.is_dir():
        raise OutputError(
            f"{option} {path}: {probe} is a file, so nothing can be written under it; "
            "give a path in a folder"
        )
    if not probe.exists():
        # an output folder is created with its parents (``--out out --plots out/plots`` is one
        # run's layout); a file's folder must exist
        above = probe
        while not above.exists():
            above = above.parent
        if not above.is_dir():
            raise OutputError(
                f"{option} {path}: {above} is a file, so nothing can be written under it; "
                "give a path in a folder"
            )
        if not folder:
            raise OutputError(
                f"{option} {path}: the folder {probe} does not exist; create it first (a mistyped "
                "folder would otherwise be created silently)"
            )
        probe = above
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: the folder {probe} is not writable")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _sweep(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` whose process is gone.

    A SIGKILL (or a power cut) between creating the temporary file and renaming it leaves it
    behind; its name carries the writer's PID, so the next write of the same file clears it
    without touching a concurrent writer's.
    """
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for old in path.parent.iterdir():
            name = old.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[len(prefix) : -len(".tmp")].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    old.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], option: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The folder is created if missing. On any exception (a full disk, Ctrl-C) the temporary file is
    removed and ``path`` is left as it was; an ``OSError`` becomes an `OutputError` naming the file
    and the reason.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep(path)
        yield tmp
        with open(tmp, "rb") as fh:  # the bytes are on disk before the name points at them
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"could not write {option} {path}: {_reason(exc)}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str, option: str = "output") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_path`)."""
    with atomic_path(path, option) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
