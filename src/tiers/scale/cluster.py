"""The Dask cluster a command-line fit runs on: an existing scheduler, or a local one for the run.

On a Slurm or Kubernetes cluster, start the scheduler and workers with dask-jobqueue or
dask-kubernetes and pass the scheduler's address, for example::

    python -c "from dask_jobqueue import SLURMCluster; c = SLURMCluster(cores=8, memory='32GB');
               c.scale(jobs=10); print(c.scheduler_address); input()"
    tiers fit "y ~ x + (1 | state/district/school)" 'data/*.parquet' --dask --scheduler tcp://HOST:8786

(``dask-kubernetes``: ``KubeCluster(name="tiers", n_workers=10)`` and its
``scheduler_address``.) Without an address, a `distributed.LocalCluster` of one single-threaded
worker process per core is started and closed when the fit is done.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tiers.errors import DataError
from tiers.scale.files import require_dask

#: Seconds to wait for a scheduler before saying it cannot be reached.
CONNECT_SECONDS = 5.0


def local_workers() -> int:
    """Worker processes of a local cluster: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    connect_seconds: float = CONNECT_SECONDS,
) -> Iterator[Any]:
    """A `distributed.Client` for the duration of the block; a local cluster is closed after.

    Parameters
    ----------
    scheduler : str, optional
        The address of a running scheduler (``tcp://host:8786``). Default: a local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: the cores available). Not with
        ``scheduler`` (the cluster's owner sizes it).
    connect_seconds : float
        How long to wait for the scheduler.

    Raises
    ------
    DataError
        The scheduler cannot be reached in time, or ``workers`` given with ``scheduler``.
    """
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise DataError(f"--workers must be a positive number of processes; got {workers!r}")
    if scheduler is not None and workers is not None:
        raise DataError(
            "--workers sizes the local cluster tiers starts; with --scheduler the cluster is "
            "sized by whoever started it (scale it there)"
        )
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_seconds)
        except (OSError, TimeoutError) as exc:
            raise DataError(
                f"cannot reach the Dask scheduler at {scheduler!r} within {connect_seconds:g} s "
                f"({type(exc).__name__}); check the address (tcp://HOST:PORT, printed by the "
                "scheduler when it starts) and that this machine can reach it"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers if workers is not None else local_workers()
    # ":0": the scheduler's HTTP server (metrics, health) on a free port. With None it still
    # takes 8787 and warns when another cluster holds it.
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
