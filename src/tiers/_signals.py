"""Ctrl-C around worker pools: deferred in the parent, kept out of starting children.

An interrupt raised inside `concurrent.futures` internals leaves them broken (a forked worker
never registered, a future's lock held: hangs at exit); one that reaches a spawned worker while it
imports prints a traceback per worker. The parent therefore records Ctrl-C and acts on it between
waits (`HeldInterrupt`), and blocks it in the thread that starts workers (`blocked_sigint`), so
that they start with it blocked until their initializer ignores it (`ignore_sigint`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class HeldInterrupt:
    """Defer Ctrl-C to the end of a block (main thread only; elsewhere Python ignores signals).

    The block polls ``caught`` to stop early; the interrupt is raised when it exits.

    Masking the signal would not do: the BLAS threads started before it would still take it
    for the process. The handler is inherited by workers forked meanwhile until `_init`.
    """

    def __init__(self) -> None:
        self.caught = False
        self.previous: Any = None

    def _hold(self, signum: int, frame: Any) -> None:
        self.caught = True

    def __enter__(self) -> HeldInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.caught:
            raise KeyboardInterrupt


@contextlib.contextmanager
def blocked_sigint() -> Iterator[None]:
    """Block SIGINT in this thread for the block: processes started meanwhile inherit the mask.

    The parent still sees Ctrl-C (another of its threads takes it; see `HeldInterrupt`).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def ignore_sigint() -> None:
    """A worker's initializer: Ctrl-C reaches the whole process group; the parent alone acts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
