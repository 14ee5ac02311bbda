"""Experiments that leave one process: the results store's shards as tasks on a Dask cluster.

:func:`degradation_lib.experiments.run_shard` is the unit of work of an experiment: shard i of n
is a contiguous range of whole blocks of the run's points, and every random draw depends only on
(seed, index), so the shards merged (:func:`degradation_lib.results.merge`) give the unsharded run
bit for bit. This module runs the n shards as n tasks:

* ``scheduler=None``: in-process, one after the other;
* ``scheduler="local"``: on a Dask ``LocalCluster`` started on this machine (``workers``
  processes, one thread each);
* ``scheduler="tcp://HOST:8786"``: on an existing Dask cluster (``dask scheduler`` on HOST and
  ``dask worker tcp://HOST:8786 --nthreads 1`` on each machine, with this library importable);

and merges the results into one :class:`~degradation_lib.results.PointResults` -- the same store
entry, point for point, as the in-process run (``tests/test_distributed.py``). Without Dask, a
batch system runs the same shards as an array (``--shard i/n``, then ``merge``; see the README).

Command line: ``python -m degradation_lib.experiments run EXPERIMENT --model M --scheduler local
--tasks 8`` (the store's CLI; ``--scheduler`` and ``--tasks`` are handled here).
"""

from __future__ import annotations

import functools
import re

from .results import PointResults, merge

LOCAL_WORKERS = 2


def connect(scheduler: str, workers: int = LOCAL_WORKERS):
    """A ``distributed.Client``: ``"local"`` starts a ``LocalCluster`` of ``workers`` processes with one
    thread each; ``"tcp://HOST:PORT"`` (or ``tls://``) connects to a running scheduler."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if scheduler == "local":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster)
    if isinstance(scheduler, str) and re.fullmatch(r"(tcp|tls)://\S+", scheduler):
        from distributed import Client

        return Client(scheduler)
    raise ValueError(f"scheduler must be None, 'local' or an address 'tcp://HOST:PORT', got {scheduler!r}")


def _shard_task(shard_i: int, name: str, model: str, num_shards: int, kwargs: dict) -> PointResults:
    from .experiments import run_shard

    return run_shard(name, model, shard_i, num_shards, **kwargs)


def run_experiment(name: str, model: str, num_tasks: int, scheduler: str | None = None, *, client=None,
                   workers: int = LOCAL_WORKERS, **run_kwargs) -> PointResults:
    """Experiment ``name`` on ``model`` as ``num_tasks`` shard tasks, merged.

    Args:
        name, model: as :func:`degradation_lib.experiments.run_shard`.
        num_tasks: shards (one task each), ≥ 1; more tasks than blocks leaves some empty.
        scheduler: ``None`` (in-process), ``"local"`` or ``"tcp://HOST:PORT"`` (:func:`connect`).
        client: an existing ``distributed.Client`` (overrides ``scheduler``; left open).
        workers: processes of ``scheduler="local"``.
        run_kwargs: passed to every ``run_shard`` call (``indices``, ``seed``, ``device``,
            ``block_size``, experiment parameters such as ``eps`` or ``steps``).

    Returns:
        the merged :class:`PointResults` (``meta`` without ``shard``; the manifests combined, its
        ``wall_time_s`` the sum over the tasks), equal point for point to ``run_shard(name, model,
        0, 1, **run_kwargs)``.
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if client is None and scheduler is None:
        parts = [_shard_task(i, name, model, num_tasks, run_kwargs) for i in range(num_tasks)]
        return merge(parts)
    own = client is None
    client = connect(scheduler, workers) if own else client
    try:
        task = functools.partial(_shard_task, name=name, model=model, num_shards=num_tasks, kwargs=run_kwargs)
        futures = client.map(task, list(range(num_tasks)), pure=False)
        return merge(client.gather(futures))
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


__all__ = ["run_experiment", "connect", "LOCAL_WORKERS"]
