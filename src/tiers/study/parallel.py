"""A study's batches on several processes, this one among them.

With ``workers`` > 1 this process fits batches itself and ``workers - 1`` processes join in,
started as `worker_context` says: forked from this process where it runs no other thread
(they start in milliseconds, tiers imported and the first size's layout built),
else forked from a server that imports tiers while this process works (about 0.8 CPU-s, once
per process). A spawned worker per core, as before, paid that import in every worker, before
its first batch: 2 workers were slower than 1 up to about 150 replicates.

A process started by the fork server blocks the thread that starts it until the server has
imported tiers, so there the first batches are submitted from a helper thread. The pool is fed
only what its processes hold (one running and one queued batch each); every other batch stays
here for whoever is free first, so a slow start or a loaded core shifts the work instead of
leaving a process idle at the end.

Ctrl-C is held (`tiers._signals.HeldInterrupt`) and acted on between batches: the queued ones
are dropped, the running ones finish and are passed on like the others.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager
from typing import Any

from tiers._signals import HeldInterrupt, blocked_sigint, ignore_sigint
from tiers._workers import worker_context

#: What a study's workers import before their first batch (a fork server imports it once).
WORKER_MODULES = ("tiers.study.replicate", "tiers.panel.estimators", "tiers.api.glmm")


def run_tasks(
    tasks: Sequence[tuple],
    workers: int,
    run: Callable[[tuple], Any],
    finish: Callable[[tuple, Any], None],
    during: AbstractContextManager[Any] | None = None,
) -> None:
    """``finish(task, run(task))`` for every task, in the order they end, on ``workers`` processes.

    ``run`` must be a module-level function the workers can import; ``finish`` runs here.
    ``during`` (a progress bar) is entered once the workers are started. An exception from
    ``run`` or ``finish`` ends the pool (queued tasks dropped) and is raised.
    """
    during = contextlib.nullcontext() if during is None else during
    queue = deque(tasks)
    if workers == 1 or len(queue) <= 1:
        with during:
            while queue:
                t = queue.popleft()
                finish(t, run(t))
        return
    procs = min(workers - 1, len(queue) - 1)
    window = 2 * procs  # batches in the pool at once: one running and one queued per process
    ctx = worker_context(WORKER_MODULES)
    pool = ProcessPoolExecutor(procs, ctx, initializer=ignore_sigint)
    pending: dict[Future, tuple] = {}
    first = [queue.popleft() for _ in range(min(window, len(queue) - 1))]
    failed: list[BaseException] = []

    def start() -> None:
        try:
            with blocked_sigint():  # the processes start with Ctrl-C blocked (`ignore_sigint`)
                for t in first:
                    pending[pool.submit(run, t)] = t
        except BaseException as exc:  # raised by the loop below
            failed.append(exc)

    starter = threading.Thread(target=start, name="tiers-study-pool-start", daemon=True)
    try:
        with HeldInterrupt() as held:
            if ctx.get_start_method() == "fork":
                start()  # now, while this process has no other thread
            else:
                starter.start()
            with during:
                _loop(pool, queue, pending, window, starter, failed, held, run, finish)
    finally:
        if starter.ident is not None:
            starter.join()
        pool.shutdown(wait=True, cancel_futures=True)


def _loop(pool: ProcessPoolExecutor, queue: deque, pending: dict[Future, tuple], window: int,
          starter: threading.Thread, failed: list[BaseException], held: HeldInterrupt,
          run: Callable[[tuple], Any], finish: Callable[[tuple, Any], None]) -> None:  # fmt: skip
    """Feed the pool, fit here what it does not hold, pass on what ends (`run_tasks`)."""
    while (queue or pending or starter.is_alive()) and not held.caught:
        if not starter.is_alive():
            if failed:
                raise failed[0]
            while queue and len(pending) < window:
                t = queue.popleft()
                pending[pool.submit(run, t)] = t
        if queue:  # this process's share
            t = queue.popleft()
            finish(t, run(t))
            done = [f for f in pending if f.done()] if not starter.is_alive() else []
        elif starter.is_alive():
            starter.join(0.25)
            continue
        else:
            done = list(wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)[0])
        for fut in done:
            finish(pending.pop(fut), fut.result())
    if held.caught:  # the running batches end and are kept; the queued ones are dropped
        if starter.ident is not None:
            starter.join()
        pool.shutdown(wait=True, cancel_futures=True)
        for fut, t in pending.items():
            if not fut.cancelled() and fut.exception() is None:
                finish(t, fut.result())
