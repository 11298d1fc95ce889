"""Parametric bootstrap: simulate responses from a fitted model, refit, keep the estimates.

A replicate draws ``y* = X beta_hat + sum_t Z_t b_t* + sigma_hat e`` with ``b_t* ~ N(0, sigma_hat^2
T_t T_t')`` independently per group of each term (``T_t`` the term's relative factor at
``theta_hat``) and ``e ~ N(0, I)``, or with a residual structure ``e_g = L_g z_g`` per residual
group, ``L_g`` the Cholesky factor of its block ``R_g`` at ``rho_hat`` (AR(1), exchangeable, ...;
`tiers.design.residual_params`) and ``z_g ~ N(0, I)``, then refits with `tiers.fitting.fit_design` on the same
`Design` (only the response changes, so grouping and diagnostics are not redone) and
the same criterion (REML or ML) as the original fit.

Replicates run in batches across processes (`concurrent.futures.ProcessPoolExecutor`), each worker
with single-threaded BLAS; replicate ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``, so the
results do not depend on the number of workers or the batching. Replicates whose fit is not
certified as converged, or that raise, are counted and reported (`BootstrapResult.n_failed`,
`notes`); intervals use the others.

Ctrl-C stops the bootstrap at once: the queued batches are cancelled, the workers terminated (they
ignore SIGINT themselves, so the parent alone decides), and `BootstrapInterrupted`, a
`KeyboardInterrupt`, is raised saying how many replicates finished and carrying them as a
`BootstrapResult` (``partial``), so that the interrupt still stops the program but nothing finished
is hidden.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tiers._signals import HeldInterrupt, blocked_sigint, ignore_sigint
from tiers._threads import single_thread_blas, single_thread_children
from tiers._workers import worker_context
from tiers.design.design import Design
from tiers.fitting import fit_design
from tiers.inference.progress import ProgressBar
from tiers.optimize.minimize import optimize_theta
from tiers.results.result import FitResult

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Simulator:
    """Draws responses from a fitted model (see the module docstring)."""

    prep: Design
    mean: FloatArray
    theta: FloatArray
    sigma: float
    #: Per residual size class, the Cholesky factors of its patterns' blocks (P, T, T); empty
    #: without a residual structure.
    factors: tuple[FloatArray, ...] = ()

    @classmethod
    def from_result(cls, res: FitResult) -> Simulator:
        """The simulator of a fitted model."""
        mean = res.X @ np.asarray(res.beta)
        theta = np.asarray(res.theta, dtype=np.float64)
        lay = res.design.residuals
        factors: tuple[FloatArray, ...] = ()
        if lay is not None:
            rho = theta[theta.size - lay.params.n_rho :]
            factors = tuple(
                np.asarray(
                    np.linalg.cholesky(lay.params.blocks(rho, c.times, c.strata, c.occasion)),
                    dtype=np.float64,
                )
                for c in lay.classes
            )
        return cls(res.design, mean, theta, float(res.sigma), factors)

    def draw(self, rng: np.random.Generator) -> FloatArray:
        """One simulated response vector."""
        y = self.mean.copy()
        at = 0
        for t in self.prep.terms:
            n = t.cov.n_theta
            T = t.cov.factor(self.theta[at : at + n])
            at += n
            if not np.any(T):
                continue
            b = (rng.standard_normal((t.nlevels, t.q)) * self.sigma) @ T.T
            if t.q == 1:
                y += t.Z[:, 0] * b[t.codes, 0]
            else:
                y += np.einsum("ij,ij->i", t.Z, b[t.codes])
        e = self.sigma * rng.standard_normal(y.size)
        lay = self.prep.residuals
        if lay is not None:
            for c, L in zip(lay.classes, self.factors, strict=True):
                if L.shape[0] == 1:  # one pattern (a balanced panel): one matrix product
                    e[c.rows] = e[c.rows] @ L[0].T
                else:
                    e[c.rows] = np.einsum("gab,gb->ga", L[c.pattern], e[c.rows], optimize=True)
        rw = self.prep.weights
        if rw is not None and rw.spec.kind == "precision":
            e /= np.sqrt(rw.rows)  # residual variance sigma^2 / w
        return y + e


@dataclass(frozen=True)
class _Job:
    simulator: Simulator
    models: tuple[Design, ...]
    starts: tuple[FloatArray, ...]
    reml: bool
    entropy: int


def _guard(r: FitResult, start: FloatArray) -> tuple[Any, ...]:
    """A replicate's estimates, refitted from ``start`` (the original fit's theta) when needed.

    The refit runs when the fit from lme4's start ended on the boundary or at a point worse than
    ``start``, and the better of the two is kept: from lme4's start the optimizer can stop on a
    boundary point of a correlated term that is not the minimum. Returns (theta, sigma, beta,
    criterion, converged, restarted).
    """
    engine = r.devfun
    out = (np.asarray(r.theta), r.sigma, np.asarray(r.beta), r.criterion, r.converged, False)
    if start.size != r.theta.size:
        return out
    tol = 1e-8 * max(1.0, abs(r.criterion))
    worse = engine.deviance(start) < r.criterion - tol
    if not (worse or r.is_singular):
        return out
    opt = optimize_theta(engine, start)
    if opt.deviance >= r.criterion - tol:
        return out
    sol = engine.solve(opt.theta)
    return (opt.theta, sol.sigma, sol.beta, sol.deviance, opt.converged, True)


@dataclass(frozen=True)
class Replicates:
    """The estimates of one model over the replicates (rows), as fitted to the simulated data."""

    theta: FloatArray
    sigma: FloatArray
    beta: FloatArray
    criterion: FloatArray
    converged: NDArray[np.bool_]


@dataclass(frozen=True)
class BootstrapResult:
    """Replicate estimates of each refitted model, with what failed.

    ``models[k]`` holds the estimates of the k-th model refitted to every replicate; ``failed``
    marks replicates where some fit raised; ``ok`` those whose fits all converged. ``entropy`` with
    the replicate index reproduces any replicate.
    """

    n_boot: int
    entropy: int
    models: tuple[Replicates, ...]
    failed: NDArray[np.bool_]
    errors: tuple[str, ...]
    seconds: float
    workers: int
    n_restarted: int = 0
    requested: int = 0  # replicates asked for, when interrupted before all of them finished

    @property
    def ok(self) -> NDArray[np.bool_]:
        """Replicates whose fits all converged."""
        conv = np.logical_and.reduce([m.converged for m in self.models])
        return conv & ~self.failed

    @property
    def n_failed(self) -> int:
        """Replicates left out: a fit that raised or was not certified as converged."""
        return int(self.n_boot - self.ok.sum())

    @property
    def notes(self) -> tuple[str, ...]:
        """What was left out and why, in words."""
        raised = int(self.failed.sum())
        unconv = self.n_failed - raised
        out = [
            f"parametric bootstrap: {self.n_boot:,} replicates simulated from the fitted model "
            f"and refitted ({self.workers} worker{'s' if self.workers != 1 else ''}, "
            f"{self.seconds:.1f} s)"
        ]
        if self.requested > self.n_boot:
            out.append(
                f"interrupted: only {self.n_boot:,} of the {self.requested:,} replicates asked "
                "for finished; these are they"
            )
        if self.n_restarted:
            out.append(
                f"{self.n_restarted:,} replicate fits ended on the boundary and found a lower "
                "criterion when restarted from the original estimates (kept)"
            )
        if self.n_failed:
            parts = []
            if unconv:
                parts.append(f"{unconv:,} did not converge")
            if raised:
                parts.append(f"{raised:,} failed with an error ({self.errors[0]})")
            out.append(
                f"{self.n_failed:,} of {self.n_boot:,} replicates left out: {' and '.join(parts)}; "
                f"the intervals use the other {self.n_boot - self.n_failed:,}"
            )
        return tuple(out)


class BootstrapInterrupted(KeyboardInterrupt):
    """Ctrl-C during a bootstrap; ``partial`` holds the finished replicates (None if none)."""

    def __init__(self, partial: BootstrapResult | None, requested: int, seconds: float) -> None:
        self.partial = partial
        self.finished = 0 if partial is None else partial.n_boot
        self.requested = requested
        super().__init__(
            f"{self.finished:,} of {requested:,} bootstrap replicates finished in {seconds:.1f} s"
        )


# ------------------------------------------------------------------------------ the workers --

_JOB: _Job | None = None

#: What a fork server imports once before forking the bootstrap's workers.
WORKER_MODULES = ("tiers.inference.bootstrap",)


def _init(job: _Job) -> None:
    global _JOB
    _JOB = job
    ignore_sigint()  # Ctrl-C reaches the whole process group; the parent alone handles it


def _run(indices: list[int], job: _Job | None = None) -> tuple[list[int], list[Any]]:
    """Fit the replicates ``indices``; returns per replicate a tuple per model, or an error."""
    job = job or _JOB
    assert job is not None
    out: list[Any] = []
    with single_thread_blas():
        for i in indices:
            rng = np.random.default_rng(np.random.SeedSequence(job.entropy, spawn_key=(i,)))
            y = job.simulator.draw(rng)
            try:
                fits = []
                for prep, start in zip(job.models, job.starts, strict=True):
                    r = fit_design(prep, y=y, reml=job.reml, warn=False)
                    fits.append(_guard(r, start))
                out.append(fits)
            except Exception as exc:  # a replicate that raises is counted, never hides the rest
                out.append(f"{type(exc).__name__}: {exc}")
    return indices, out


def default_workers() -> int:
    """CPU cores available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run(
    simulator: Simulator,
    models: tuple[Design, ...],
    *,
    reml: bool,
    n_boot: int,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    label: str = "bootstrap",
    starts: tuple[FloatArray, ...] | None = None,
) -> BootstrapResult:
    """Simulate ``n_boot`` responses and refit each of ``models`` to every one.

    Parameters
    ----------
    workers : int, optional
        Processes; default the available cores (1 runs in this process).
    progress : bool, optional
        Show a rich progress bar when stderr is a terminal, and with ``True`` plain progress
        lines when it is not (a log: see `ProgressBar`); default the bar in a terminal only.
    starts : tuple of arrays, optional
        Per model, a theta to restart a replicate's fit from when the fit ends at a worse point.
    """
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    n_boot = int(n_boot)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    workers = min(workers, n_boot)
    entropy = int(np.random.SeedSequence(seed).entropy)  # type: ignore[arg-type]
    if starts is None:
        starts = tuple(np.zeros(0) for _ in models)
    job = _Job(simulator, tuple(models), tuple(starts), reml, entropy)
    start = time.perf_counter()
    results: list[Any] = [None] * n_boot
    # About 32 batches per worker, at most 16 replicates each: a batch's dispatch (~1 ms) is
    # under 1% of a replicate's fit even for small models, and the workers end within about a
    # batch of each other (at 8 per worker, 63 replicates each at 1,000: one worker could be
    # left alone for the last ~0.4 s of a 6 s run)
    size = max(1, min(16, math.ceil(n_boot / (workers * 32))))
    batches = [list(range(i, min(i + size, n_boot))) for i in range(0, n_boot, size)]
    bar = ProgressBar(progress, n_boot, label)
    try:
        if workers == 1:
            with bar:
                for batch in batches:
                    idx, out = _run(batch, job)
                    for i, r in zip(idx, out, strict=True):
                        results[i] = r
                    bar.advance(len(idx))
        else:
            _pool(job, batches, workers, results, bar)
    except KeyboardInterrupt:
        seconds = time.perf_counter() - start
        done = [r for r in results if r is not None]
        partial = None
        if done:
            partial = _collect(done, len(models), len(done), entropy, seconds, workers)
            partial = dataclasses.replace(partial, requested=n_boot)
        raise BootstrapInterrupted(partial, n_boot, seconds) from None
    return _collect(results, len(models), n_boot, entropy, time.perf_counter() - start, workers)


def _pool(
    job: _Job, batches: list[list[int]], workers: int, results: list[Any], bar: ProgressBar
) -> None:
    """Run the batches in worker processes; on Ctrl-C or an error drop the rest at once.

    The workers are started before the progress bar, whose refresh thread a fork would copy
    mid-lock. A fork shares the job without pickling and works from scripts without a
    ``__main__`` guard; from a fork server or spawned (other threads alive, or not Linux) the
    job is pickled to each worker once.
    """
    ctx = worker_context(WORKER_MODULES)
    with warnings.catch_warnings():
        # Python >= 3.12 warns on fork when BLAS threads exist; the workers only run
        # single-threaded numpy code after the fork, which is safe
        warnings.filterwarnings("ignore", ".*use of fork", DeprecationWarning)
        others = {p.pid for p in multiprocessing.active_children() if p.pid is not None}
        ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(job,))
        try:
            # Ctrl-C is held for the pool's whole life and acted on between waits: raised
            # inside the executor's start-up it left a forked worker unregistered (blocked
            # forever on the task queue's lock), and inside a wait it left futures' locks held
            # (the executor's thread then hung the interpreter's exit)
            with HeldInterrupt() as held:
                # spawned workers (not Linux) start with one BLAS thread each; forked ones set it
                # in `_run`
                with single_thread_children(), blocked_sigint():
                    pending = {ex.submit(_run, batch) for batch in batches}
                with bar:
                    while pending and not held.caught:
                        done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                        for fut in done:
                            idx, out = fut.result()
                            for i, r in zip(idx, out, strict=True):
                                results[i] = r
                            bar.advance(len(idx))
        except BaseException:
            _stop(ex, others)
            raise
        ex.shutdown(wait=True)


def _stop(ex: ProcessPoolExecutor, others: set[int]) -> None:
    """Drop the queued batches and end the workers now (Ctrl-C or an error).

    Not ``shutdown(wait=True)``: that would wait for every queued batch (minutes). Every child
    process started with the pool (not the ``others`` alive before it) is terminated, not only
    those the executor lists: a worker killed while holding the
    task queue's lock would leave a sibling blocked on it forever. The executor's manager thread
    is then let finish, so that nothing of the pool is left for the interpreter's exit (where
    Python 3.11 can write to its closed wake-up pipe: ``OSError: Bad file descriptor``).
    """
    procs = {p.pid: p for p in (getattr(ex, "_processes", None) or {}).values()}
    manager = getattr(ex, "_executor_manager_thread", None)
    ex.shutdown(wait=False, cancel_futures=True)
    for p in multiprocessing.active_children():
        if p.pid not in others:
            procs.setdefault(p.pid, p)
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    if manager is not None:
        manager.join(timeout=5)


def _collect(
    results: list[Any], n_models: int, n_boot: int, entropy: int, seconds: float, workers: int
) -> BootstrapResult:
    failed = np.array([isinstance(r, str) for r in results], dtype=bool)
    errors = tuple(r for r in results if isinstance(r, str))
    good = next(r for r in results if not isinstance(r, str)) if not failed.all() else None
    models = []
    restarted = np.zeros(n_boot, dtype=bool)
    for k in range(n_models):
        if good is None:
            empty = np.full((n_boot, 0), np.nan)
            models.append(
                Replicates(
                    empty,
                    np.full(n_boot, np.nan),
                    empty,
                    np.full(n_boot, np.nan),
                    np.zeros(n_boot, dtype=bool),
                )
            )
            continue
        nt, p = good[k][0].size, good[k][2].size
        theta = np.full((n_boot, nt), np.nan)
        beta = np.full((n_boot, p), np.nan)
        sigma = np.full(n_boot, np.nan)
        crit = np.full(n_boot, np.nan)
        conv = np.zeros(n_boot, dtype=bool)
        for i, r in enumerate(results):
            if isinstance(r, str):
                continue
            th, s, b, c, ok, again = r[k]
            theta[i], sigma[i], beta[i], crit[i], conv[i] = th, s, b, c, ok
            restarted[i] |= again
        models.append(Replicates(theta, sigma, beta, crit, conv))
    return BootstrapResult(
        n_boot, entropy, tuple(models), failed, errors, seconds, workers, int(restarted.sum())
    )


def bootstrap(
    res: FitResult,
    *,
    n_boot: int = 1000,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> BootstrapResult:
    """Parametric bootstrap of a fitted model (reproducible from ``seed``)."""
    return run(
        Simulator.from_result(res),
        (res.design,),
        reml=res.reml,
        starts=(np.asarray(res.theta),),
        n_boot=n_boot,
        seed=seed,
        workers=workers,
        progress=progress,
    )


def percentile(values: FloatArray, ok: NDArray[np.bool_], level: float) -> tuple[float, float]:
    """Percentile interval of the ``ok`` replicates (NaN when fewer than 10)."""
    v = values[ok]
    v = v[np.isfinite(v)]
    if v.size < 10:
        return (np.nan, np.nan)
    lo, hi = np.quantile(v, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)
