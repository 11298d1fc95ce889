"""Memory available to this process, checked before allocating a large data set."""

from __future__ import annotations

import os

from tiers.errors import DesignError


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, work needing more than the memory available (`DesignError`)."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DesignError(
            f"{what} needs about {nbytes / 2**30:.1f} GiB of memory, but only "
            f"{free / 2**30:.1f} GiB is available; use fewer units (or rows, or workers), "
            "or free memory"
        )
