"""Experiments as Dask tasks (degradation_lib.distributed): the results store's shards run on a
two-worker LocalCluster, merged, equal the in-process run point for point (bitwise), and the
store's CLI takes ``--scheduler``. The experiment is cheap: Algorithm 3.1 of Table 1 with 3 PGD
steps on 16 MNIST test points of the committed GloRo model mnist_0.3, in blocks of 4 points."""

from __future__ import annotations

import numpy as np
import pytest

from degradation_lib.distributed import connect, run_experiment
from degradation_lib.experiments import run_shard
from degradation_lib.results import PointResults

RUN = dict(indices=np.arange(100, 116), seed=0, device="cpu", block_size=4, steps=3)


def same(a: PointResults, b: PointResults):
    assert set(a.columns) == set(b.columns)
    for k in a.columns:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    strip = lambda m: {k: v for k, v in m.items() if k != "shard"}
    assert strip(a.meta) == strip(b.meta)


@pytest.fixture(scope="module")
def in_process():
    return run_shard("table1", "mnist_0.3", 0, 1, **RUN)


def test_in_process_tasks_equal_one_run(in_process):
    assert np.array_equal(in_process["index"], RUN["indices"])
    assert 0 < in_process["certified"].sum() < len(RUN["indices"]) + 1        # sanity: some points certified
    same(run_experiment("table1", "mnist_0.3", 3, **RUN), in_process)       # 3 tasks over 4 blocks


def test_local_cluster_equals_in_process(in_process):
    pytest.importorskip("distributed")
    same(run_experiment("table1", "mnist_0.3", 4, scheduler="local", workers=2, **RUN), in_process)


def test_bad_scheduler_raises():
    with pytest.raises(ValueError, match="scheduler"):
        connect("nowhere")
    with pytest.raises(ValueError, match="workers"):
        connect("local", workers=0)
    with pytest.raises(ValueError, match="num_tasks"):
        run_experiment("table1", "mnist_0.3", 0, **RUN)
