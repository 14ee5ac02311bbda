"""Sharded experiments (degradation_lib.distributed): a two-worker Dask LocalCluster, the
Slurm-array path (--shard i/N then merge) and the in-process run over the same shards give the
same results, point for point (bitwise). The experiment is cheap: certification + Algorithm 3.1
(3 PGD steps) on 16 MNIST test points with the committed GloRo model mnist_0.3.

(The same points in *other* batches may differ in the last bits of float arithmetic, so the
comparison keeps the shards fixed: only where they run changes.)"""

from __future__ import annotations

import numpy as np
import pytest

from degradation_lib.distributed import certify_and_attack, main, parse_shard, run_shards, shard_slices
from degradation_lib.results import PointResults

KW = dict(model="mnist_0.3", eps=0.3, attack_steps=3)
INDEX = np.arange(100, 116)


def same(a: PointResults, b: PointResults):
    assert set(a.columns) == set(b.columns)
    for k in a.columns:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert {k: v for k, v in a.meta.items() if k != "shard"} == {k: v for k, v in b.meta.items() if k != "shard"}


@pytest.fixture(scope="module")
def in_process():
    return run_shards(certify_and_attack, INDEX, 2, **KW)


def test_shards_cover_the_points():
    s = shard_slices(10, 3)
    assert [(x.start, x.stop) for x in s] == [(0, 3), (3, 7), (7, 10)]
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "a/2", "1-2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="num_shards"):
        shard_slices(3, 4)
    with pytest.raises(ValueError, match="scheduler"):
        run_shards(certify_and_attack, INDEX, 2, scheduler="nowhere", **KW)


def test_in_process_covers_the_points(in_process):
    assert np.array_equal(in_process["index"], INDEX)
    assert 0 < (in_process["certified"] >= 0).sum() <= len(INDEX)      # some points certified, as a sanity check
    # each shard is the experiment on its own points
    half = certify_and_attack(INDEX[:8], **KW)
    for k in half.columns:
        np.testing.assert_array_equal(in_process[k][:8], half[k], err_msg=k)


def test_local_cluster_equals_in_process(in_process):
    distributed = pytest.importorskip("distributed")
    same(run_shards(certify_and_attack, INDEX, 2, scheduler="local", workers=2, **KW), in_process)


def test_slurm_array_then_merge_equals_in_process(in_process, tmp_path):
    prefix = tmp_path / "part"
    for i in range(2):
        main(["run", "--model", "mnist_0.3", "--eps", "0.3", "--points", "100:116", "--attack-steps", "3",
              "--shard", f"{i}/2", "--out", str(prefix)])
    main(["merge", *sorted(str(p) for p in tmp_path.glob("part-*.npz")), "--out", str(tmp_path / "all.npz")])
    same(PointResults.load(tmp_path / "all.npz"), in_process)
