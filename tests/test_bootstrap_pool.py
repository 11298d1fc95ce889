"""The parametric bootstrap's worker pool: never a fork of a process running other threads.

A fork copies every lock of the parent, including those held by its other threads at that
instant (rich's refresh thread behind a progress bar, a notebook's or a Dask client's threads);
a worker that then takes such a lock waits forever.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

import tiers

#: Run in a fresh interpreter (other tests leave threads behind) whose stderr claims to be a
#: terminal, so the progress bar is rich's, with its refresh thread; prints the number of
#: threads alive at each fork and the bootstrap's theta.
_FORK_COUNTS = """
import io, os, sys, threading
class Terminal(io.TextIOWrapper):
    def isatty(self):
        return True
sys.stderr = Terminal(open(os.devnull, "wb"))
counts = []
os.register_at_fork(before=lambda: counts.append(threading.active_count()))
import tiers
data = tiers.simulate(tiers.seed_design(districts=3), seed=1)
res = tiers.fit("perform ~ tutoring + (1 | school_id)", data)
boot = res.bootstrap(16, seed=3, workers=2, progress=True)
print(counts)
"""


def test_workers_are_forked_before_the_progress_bar_starts_its_thread() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _FORK_COUNTS], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    counts = eval(out.stdout.strip().splitlines()[-1])  # a printed list of ints
    # two workers forked, each while this process ran one thread (before: two, the bar's)
    assert counts == [1, 1]


def test_a_thread_alive_sends_the_workers_to_a_fork_server(monkeypatch) -> None:
    import tiers.inference.bootstrap as bootstrap

    data = tiers.simulate(tiers.seed_design(districts=3), seed=1)
    res = tiers.fit("perform ~ tutoring + (1 | school_id)", data)
    methods: list[str] = []
    real = bootstrap.worker_context

    def recorded(preload):
        ctx = real(preload)
        methods.append(ctx.get_start_method())
        return ctx

    monkeypatch.setattr(bootstrap, "worker_context", recorded)
    one = res.bootstrap(12, seed=4, workers=1, progress=False)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        two = res.bootstrap(12, seed=5, workers=2, progress=False)
        again = tiers.fit(res.formula, data).bootstrap(12, seed=4, workers=2, progress=False)
    finally:
        stop.set()
        other.join()
    assert methods == ["forkserver", "forkserver"]
    assert two.n_failed == 0 and again.n_failed == 0
    # the job pickled to the fork server's workers gives the same replicates as in-process
    np.testing.assert_array_equal(one.models[0].theta, again.models[0].theta)
    np.testing.assert_array_equal(one.models[0].beta, again.models[0].beta)
