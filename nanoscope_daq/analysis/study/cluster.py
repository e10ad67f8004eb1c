"""The dask cluster a study runs on: an existing one (``--scheduler``), or a LocalCluster on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

GPU_RESOURCE = "GPU"
"""The worker resource that marks a GPU (``dask worker --resources GPU=1``)."""


@contextmanager
def study_client(scheduler: str | None, workers: int | None, host: str, allowed_failures: int) -> Iterator:
    """A ``distributed.Client`` of ``scheduler``, or of a LocalCluster of ``workers`` single-threaded processes
    (default: one per CPU) listening on ``host``; the LocalCluster is closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ConnectionError(f"no dask scheduler answers at {scheduler} ({exc}); start one (dask scheduler) or "
                                  "leave out --scheduler for a LocalCluster") from None
        with client:
            yield client
        return
    count = workers or os.cpu_count() or 1
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host=host,
                               dashboard_address=f"{host}:0")
    with cluster, Client(cluster) as client:
        yield client


def declares_gpu(client) -> bool:
    """Whether any worker of the cluster declares the GPU resource."""
    workers = client.scheduler_info()["workers"].values()
    return any(worker.get("resources", {}).get(GPU_RESOURCE, 0) > 0 for worker in workers)


def smallest_worker_memory(client) -> int | None:
    """The smallest memory limit (bytes) among the cluster's workers; None when no worker states one."""
    limits = [worker.get("memory_limit") for worker in client.scheduler_info()["workers"].values()]
    return min((limit for limit in limits if limit), default=None)
