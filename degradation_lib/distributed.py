"""Experiments that leave one process: per-shard tasks on a Dask cluster, or a Slurm array.

An experiment over a data set is split into shards of consecutive points; each shard is one task
``task(index, **kwargs) -> PointResults`` (pure: the same index gives the same results wherever it
runs), and the shards' results are merged with :func:`degradation_lib.results.merge`, which
refuses overlaps and mismatched metadata. Three ways to run the same shards:

* in-process (``scheduler=None``), one shard after the other;
* ``scheduler="local"``: a Dask ``LocalCluster`` on this machine (``workers`` processes, one
  thread each), or ``scheduler="tcp://HOST:8786"``: an existing Dask cluster (``dask scheduler``
  plus ``dask worker`` processes, each with this repository importable);
* a batch system: ``--shard i/N`` runs shard i of N and saves it; ``merge`` joins the files.

Because the shards (their boundaries and each shard's computation) are identical in the three
ways, the merged results are identical point for point (``tests/test_distributed.py``).

Command line (one experiment ships with it: certification and the default Algorithm 3.1 attack of
a committed model on MNIST test points; ``python -m degradation_lib.distributed --help``)::

    python -m degradation_lib.distributed run --model mnist_0.3 --eps 0.3 --points 0:10000 \\
        --shards 20 --scheduler local --out runs/alg31_mnist_0.3.npz
    python -m degradation_lib.distributed run ... --shards 20 --shard 7/20 --out runs/part   # one shard
    python -m degradation_lib.distributed merge runs/part-*.npz --out runs/alg31_mnist_0.3.npz
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .results import PointResults, merge

LOCAL_WORKERS = 2


def shard_slices(num_points: int, num_shards: int) -> list[slice]:
    """``num_shards`` consecutive, nearly equal slices covering ``range(num_points)``."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"num_points must be an integer >= 1, got {num_points!r}")
    if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) or not 1 <= num_shards <= num_points:
        raise ValueError(f"num_shards must be an integer in [1, num_points={num_points}], got {num_shards!r}")
    edges = np.linspace(0, num_points, num_shards + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)`` with 0 ≤ i < N (a Slurm array task: ``--shard $SLURM_ARRAY_TASK_ID/N``)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"shard must be 'i/N' with 0 <= i < N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def connect(scheduler: str, workers: int = LOCAL_WORKERS):
    """A ``distributed.Client``: ``"local"`` starts a ``LocalCluster`` (``workers`` processes, one
    thread each); ``"tcp://HOST:PORT"`` connects to a running scheduler."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster)
    if isinstance(scheduler, str) and re.fullmatch(r"(tcp|tls|inproc|ws|wss)://\S+", scheduler):
        return Client(scheduler)
    raise ValueError(f"scheduler must be None, 'local' or an address 'tcp://HOST:PORT', got {scheduler!r}")


def run_shards(task: Callable[..., PointResults], index, num_shards: int, scheduler: str | None = None,
               client=None, workers: int = LOCAL_WORKERS, **kwargs) -> PointResults:
    """Run ``task(index[shard], **kwargs)`` for every shard and merge the results.

    Args:
        task: an importable top-level function (workers import it by name) returning a
            :class:`PointResults` with the shard's ``index`` column.
        index: the data-set positions ``[M]`` of the points.
        num_shards: shards (tasks), 1 ≤ num_shards ≤ M.
        scheduler: ``None`` (in-process), ``"local"`` or ``"tcp://HOST:PORT"`` (see :func:`connect`).
        client: an existing ``distributed.Client`` (overrides ``scheduler``; left open).
        kwargs: passed to every task (the model name, ε, ...).

    Returns the merged :class:`PointResults`, sorted by ``index``.
    """
    index = np.asarray(index)
    if index.ndim != 1:
        raise ValueError(f"index must be one-dimensional, got shape {index.shape}")
    parts = [index[s] for s in shard_slices(len(index), num_shards)]
    if client is None and scheduler is None:
        return merge([task(p, **kwargs) for p in parts])
    own = client is None
    client = connect(scheduler, workers) if own else client
    try:
        futures = client.map(task, parts, pure=False, **kwargs)
        return merge(client.gather(futures))
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


# -- the experiment that ships with the command line ------------------------------------------
@functools.lru_cache(maxsize=4)
def _model_and_data(model: str, device: str):
    """The certifier (its Lipschitz constants computed once) and the MNIST test set, once per process."""
    from .data import load_mnist
    from .registry import load_model

    certifier = load_model(model, device)
    if hasattr(certifier, "lipschitz_constants"):
        certifier.lipschitz_constants()
    return certifier, load_mnist("test")


def certify_and_attack(index, model: str, eps: float, device: str = "cpu", attack_steps: int = 50,
                       batch_size: int = 500) -> PointResults:
    """Certification and Algorithm 3.1 (the default attack of :func:`degradation_lib.degradation_attack`)
    at ``eps`` on the MNIST test points ``index`` with the committed model ``model``.

    Deterministic per shard (the attack's random start comes from a generator seeded 0 for each
    batch). Columns as :func:`degradation_lib.attacks.evaluate_degradation` (attack name ``alg31``).
    """
    import torch

    from .attacks import default_attack, degradation_attack, evaluate_degradation, rejection_pgd

    certifier, (x, y) = _model_and_data(model, str(device))
    idx = torch.as_tensor(np.asarray(index), dtype=torch.int64)
    attack = default_attack(certifier, eps)
    if callable(getattr(certifier, "rejection_loss", None)):
        attack = rejection_pgd(certifier, eps, steps=attack_steps)

    def alg31(c, xb, e):
        return degradation_attack(c, xb, e, attack)

    dev = next(certifier.model.parameters()).device
    return evaluate_degradation(certifier, x[idx].to(dev), y[idx].to(dev), eps, {"alg31": alg31},
                                batch_size=batch_size, index=idx.numpy(),
                                meta=dict(model=model, attack_steps=attack_steps, data="mnist test"))


def _points(text: str) -> np.ndarray:
    m = re.fullmatch(r"(\d+):(\d+)", text)
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"points must be 'START:STOP' with START < STOP, got {text!r}")
    return np.arange(int(m.group(1)), int(m.group(2)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="certification + Algorithm 3.1 on MNIST test points, sharded")
    r.add_argument("--model", required=True)
    r.add_argument("--eps", type=float, required=True)
    r.add_argument("--points", default="0:10000", help="START:STOP test indices")
    r.add_argument("--shards", type=int, default=1)
    r.add_argument("--shard", default=None, help="i/N: run only shard i of N (a Slurm array task)")
    r.add_argument("--scheduler", default=None, help="local | tcp://HOST:8786 (default: in-process)")
    r.add_argument("--workers", type=int, default=LOCAL_WORKERS, help="workers of --scheduler local")
    r.add_argument("--attack-steps", type=int, default=50)
    r.add_argument("--device", default="cpu")
    r.add_argument("--out", required=True, help=".npz (with --shard: a prefix, '-i-of-N.npz' is appended)")
    m = sub.add_parser("merge", help="merge shard files into one")
    m.add_argument("files", nargs="+")
    m.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "merge":
        res = merge([PointResults.load(f) for f in a.files])
        print(f"merged {len(a.files)} files, {len(res)} points -> {res.save(a.out)}")
        return
    index = _points(a.points)
    kw = dict(model=a.model, eps=a.eps, device=a.device, attack_steps=a.attack_steps)
    if a.shard is not None:
        i, n = parse_shard(a.shard)
        part = index[shard_slices(len(index), n)[i]]
        res = certify_and_attack(part, **kw)
        res.meta["shard"] = f"{i}/{n}"
        out = res.save(f"{a.out}-{i}-of-{n}.npz")
    else:
        out = run_shards(certify_and_attack, index, a.shards, a.scheduler, workers=a.workers, **kw).save(a.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
