"""How a worker pool starts its processes (the study's batches, the parametric bootstrap).

Forking a process that runs other threads copies locks those threads may hold (a progress bar's
refresh thread, a notebook's, a Dask client's): a worker can then hang on its first allocation or
print. `worker_context` forks only where that cannot happen, and otherwise uses a fork server.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Sequence
from multiprocessing.context import BaseContext

from tiers._signals import blocked_sigint
from tiers._threads import single_thread_children


def worker_context(preload: Sequence[str]) -> BaseContext:
    """How a worker pool starts its processes: a copy of this one where that is safe, else clean.

    - Linux, this process running no other Python thread: fork. A worker is a copy of this
      process, started in milliseconds, with tiers imported and whatever this process prepared.
      No other thread can hold a lock the copy inherits (OpenBLAS's own threads are shut down
      for the fork by OpenBLAS's fork handler). The caller must start the processes before
      starting threads of its own (a progress bar).
    - Linux with other threads (a notebook, a threaded application): a fork server that imports
      ``preload`` once (about 0.8 CPU-s for tiers) and forks each worker from that clean
      interpreter, not from this process. It is started here, so that its imports overlap the
      caller's own work, and serves later pools of this process (one already running is reused
      as it is). It starts with SIGINT blocked, for its whole life, so that Ctrl-C neither
      interrupts its imports nor reaches a worker before the worker's initializer ignores it
      (`tiers._signals.ignore_sigint`), and with one BLAS thread per process
      (`tiers._threads.single_thread_children`: its numpy loads the BLAS).
    - Elsewhere: spawn; each worker imports tiers.
    """
    if sys.platform != "linux":
        return multiprocessing.get_context("spawn")
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver, resource_tracker

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))  # read when the server starts
    # The resource tracker first: starting it unblocks SIGINT in this thread (bpo-33613).
    resource_tracker.ensure_running()
    with blocked_sigint(), single_thread_children():
        forkserver.ensure_running()
    return ctx
