"""The results store and the experiment runner: sharding, per-point seeding, manifests, corrupt
files, unknown names, checkpoint resume, and the authors' unclipped projection."""

import datetime
import hashlib
import json
import math

import numpy as np
import pytest
import torch

import degradation_lib as dl
from degradation_lib import experiments as E
from degradation_lib.attacks import authors_gloro_attack, pgd, rescale_to_radius
from degradation_lib.results import PointResults, ResultsFileError, merge

IDX = np.arange(0, 24 * 7, 7)          # 24 test points, spread over the test set


@pytest.fixture(scope="module")
def table1_full():
    torch.manual_seed(123)             # global RNG state must not matter
    return E.run_shard("table1", "mnist_0.3", indices=IDX, block_size=5, steps=10)


def test_more_shards_than_blocks_warn_and_block_size_splits_evenly():
    """A run of 2 points has one block of the default size: 4 shards leave 3 empty, with a warning
    naming the way out; block_size=1 gives each of 2 shards one point, silently, and the shard's
    recorded command carries --block-size so it reproduces."""
    import warnings
    idx = np.array([0, 1])
    with pytest.warns(UserWarning, match=r"3 shard\(s\) are empty.*--block-size"):
        empty = E.run_shard("table1", "mnist_0.3", 3, 4, indices=idx, steps=2)
    assert len(empty) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts = [E.run_shard("table1", "mnist_0.3", i, 2, indices=idx, block_size=1, steps=2) for i in range(2)]
    assert [list(p["index"]) for p in parts] == [[0], [1]]
    assert all("--block-size 1" in p.manifest["command"] for p in parts)


def test_shards_merged_equal_unsharded(table1_full):
    torch.manual_seed(999)
    parts = [E.run_shard("table1", "mnist_0.3", i, 3, indices=IDX, block_size=5, steps=10) for i in range(3)]
    assert sorted(len(p) for p in parts) == [5, 9, 10]          # 5 blocks of ≤ 5 points over 3 shards
    merged = merge(parts)
    full = table1_full
    assert set(merged.columns) == set(full.columns)
    for k in full.columns:
        assert np.array_equal(merged[k], full[k], equal_nan=True), k
    assert {k: v for k, v in merged.meta.items()} == {k: v for k, v in full.meta.items() if k != "shard"}
    # the merged manifest sums the shards' wall times and lists what differs per shard
    assert merged.manifest["wall_time_s"] == pytest.approx(sum(p.manifest["wall_time_s"] for p in parts))
    assert len(merged.manifest["shards"]) == 3


def test_columns_and_semantics(table1_full):
    r = table1_full
    for a in ("alg31", "alg31_authors"):
        for c in ("rejected", "dist", "label", "pred", "radius", "outside"):
            assert f"{c}_{a}" in r
        assert np.array_equal(r[f"rejected_{a}"], r[f"label_{a}"] == dl.ABSTAIN)
        # certified points keep their label under every attack (x' is in the certified ball)
        cert = r["certified"]
        assert np.all(r[f"pred_{a}"][cert] == r["pred"][cert])
    assert np.all(r["dist_alg31"] <= 0.3 + 1e-5)
    assert r["outside_alg31"].max() == 0                            # ours stays in [0, 1]
    moved = r["dist_alg31_authors"] > 0
    assert np.allclose(r["dist_alg31_authors"][moved], 0.3, atol=1e-5)   # the authors': exactly ε
    assert np.array_equal(r["certified"], r["radius"] > 0.3)


def test_subset_recompute_matches(table1_full):
    sub = E.run_shard("table1", "mnist_0.3", indices=IDX[[20, 3, 11]], steps=10)
    assert E.compare(table1_full, sub) == []
    # compare does notice a changed decision
    bad = PointResults(dict(sub.columns), sub.meta)
    bad.columns["rejected_alg31"] = ~bad.columns["rejected_alg31"]
    assert any(m.startswith("rejected_alg31") for m in E.compare(table1_full, bad))


def test_smoothing_shards_and_subsets_are_reproducible():
    kw = dict(indices=np.array([0, 20, 40, 60]), n=300, n0=20, spgd_steps=3, spgd_samples=8, block_size=3)
    full = E.run_shard("table2", "mnist_smooth_0.5", **kw)
    merged = merge([E.run_shard("table2", "mnist_smooth_0.5", i, 2, **kw) for i in range(2)])
    for k in full.columns:
        assert np.array_equal(merged[k], full[k], equal_nan=True), k
    one = E.run_shard("table2", "mnist_smooth_0.5", indices=np.array([40]), n=300, n0=20, spgd_steps=3, spgd_samples=8)
    assert E.compare(full, one) == []
    assert full["n_A"].max() <= 300
    other_seed = E.run_shard("table2", "mnist_smooth_0.5", seed=1, **kw)
    assert not np.array_equal(other_seed["n_A_spgd"], full["n_A_spgd"])   # the seed does matter


def test_per_example_generators_make_pgd_batch_independent():
    c = dl.load_model("mnist_0.3")
    x, _ = dl.load_mnist()
    xb = x[:6]
    gens = lambda idx: E.point_generators(0, idx, "start/test")
    a = pgd(c, xb, 0.6, steps=3, generator=gens(range(6)))
    b = pgd(c, xb[[4, 1]], 0.6, steps=3, generator=gens([4, 1]))
    # the same random start; gradients of differently sized batches may differ in the last bits
    # (oneDNN picks kernels by shape), hence blocks of fixed composition for exact sharding
    assert torch.allclose(a[[4, 1]], b, atol=1e-5)
    assert not torch.allclose(a[4], a[1])
    with pytest.raises(ValueError, match="generator"):
        pgd(c, xb, 0.6, steps=3, generator=gens(range(5)))


def test_point_generator_is_deterministic_and_distinct():
    draw = lambda *a: torch.randn(4, generator=E.point_generator(*a))
    assert torch.equal(draw(0, 5, "s"), draw(0, 5, "s"))
    assert not torch.equal(draw(0, 5, "s"), draw(0, 6, "s"))
    assert not torch.equal(draw(0, 5, "s"), draw(1, 5, "s"))
    assert not torch.equal(draw(0, 5, "s"), draw(0, 5, "t"))
    with pytest.raises(ValueError, match="seed"):
        E.point_generator(-1, 0, "s")


def test_manifest_contents(table1_full, tmp_path):
    m = table1_full.manifest
    sha = hashlib.sha256((dl.registry.CHECKPOINT_DIR / "mnist_0.3.pt").read_bytes()).hexdigest()
    assert m["weights_sha256"] == sha
    assert m["model"] == "mnist_0.3" and m["seed"] == 0
    assert m["torch_version"] == torch.__version__ and m["library_version"] == dl.__version__
    assert m["threads"] == torch.get_num_threads() and m["device"] == str(dl.resolve_device("auto"))
    assert m["wall_time_s"] > 0 and m["host"]
    assert datetime.datetime.fromisoformat(m["date"]).tzinfo is not None
    assert m["params"] == table1_full.meta["params"] and m["params"]["steps"] == 10
    assert m["command"].startswith("python -m degradation_lib.experiments run table1 --model mnist_0.3")
    assert "--param steps=10" in m["command"]
    loaded = PointResults.load(table1_full.save(tmp_path / "r.npz"))
    assert loaded.manifest == json.loads(json.dumps(m)) and loaded.meta == table1_full.meta


def test_run_commands_of_plain_and_merged_runs():
    """``run_commands``: the command of an unsharded run, one per shard after a merge, an error
    when the manifest has none; every stored run records its commands."""
    from degradation_lib.results import run_commands
    meta = {"experiment": "x"}
    a = PointResults({"index": np.arange(0, 3)}, dict(meta, shard="0/2"), {"command": "run --shard 0/2", "host": "a"})
    b = PointResults({"index": np.arange(3, 5)}, dict(meta, shard="1/2"), {"command": "run --shard 1/2", "host": "b"})
    assert run_commands(a.manifest) == ["run --shard 0/2"]
    merged = merge([b, a])
    assert "command" not in merged.manifest
    assert sorted(run_commands(merged.manifest)) == ["run --shard 0/2", "run --shard 1/2"]
    with pytest.raises(ValueError, match="command"):
        run_commands({"host": "h"})
    for name in dl.available_results():
        cmds = run_commands(dl.load_results(name).manifest)
        assert cmds and all(c.startswith("python -m degradation_lib.experiments run ") for c in cmds), name


def test_saved_files_are_compressed(tmp_path):
    r = PointResults({"index": np.arange(10_000), "flag": np.zeros(10_000, bool)}, {"a": 1})
    compressed = r.save(tmp_path / "c.npz").stat().st_size
    plain = r.save(tmp_path / "p.npz", compressed=False).stat().st_size
    assert compressed < plain / 5


def test_corrupt_and_truncated_files_raise_naming_the_file(tmp_path):
    r = PointResults({"index": np.arange(2000), "radius": np.linspace(0, 1, 2000)}, {"model": "m"}, {"host": "h"})
    path = r.save(tmp_path / "good.npz")
    data = path.read_bytes()
    trunc = tmp_path / "truncated.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultsFileError, match="truncated.npz"):
        PointResults.load(trunc)
    corrupt = tmp_path / "corrupt.npz"
    mid = len(data) // 2
    corrupt.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])
    with pytest.raises(ResultsFileError, match="corrupt.npz"):
        PointResults.load(corrupt)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(ResultsFileError, match="other.npz"):
        PointResults.load(other)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        PointResults.load(tmp_path / "missing.npz")
    assert isinstance(ResultsFileError("x"), ValueError)
    # old files without a manifest still load
    old = tmp_path / "old.npz"
    np.savez(old, __meta__=np.array(json.dumps({"m": 1})), index=np.arange(3))
    assert PointResults.load(old).manifest == {}


def test_unknown_names_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no stored results named 'nope'.*stored:"):
        dl.load_results("nope")
    r = PointResults({"index": np.arange(3)}, {})
    r.save(tmp_path / "table1-x.npz")
    assert E.available_results(tmp_path) == ["table1-x"]
    with pytest.raises(ValueError, match="table1-x"):
        E.load_results("table9-x", tmp_path)
    with pytest.raises(ValueError, match="known experiments: table1"):
        E.get_experiment("table9")
    with pytest.raises(ValueError, match="smoothing"):
        E.resolve_params("table2", "mnist_0.3")
    with pytest.raises(ValueError, match="unknown parameters"):
        E.resolve_params("table1", "mnist_0.3", stepz=3)
    with pytest.raises(ValueError, match="shard_i"):
        E.shard_blocks(5, 3, 3)
    with pytest.raises(ValueError, match="num_images"):
        E.default_indices("table1", "mnist_0.3", 0)
    with pytest.raises(ValueError, match="indices"):
        E.run_shard("table1", "mnist_0.3", indices=[1, 1])
    with pytest.raises(ValueError, match="eps"):
        E.resolve_params("table1", "mnist_0.3", eps=-1.0)


def test_default_indices():
    assert np.array_equal(E.default_indices("table2", "mnist_smooth_0.5"), np.arange(0, 2000, 20))
    assert len(E.default_indices("radii", "mnist_smooth_0.5")) == 500
    assert np.array_equal(E.default_indices("table1", "mnist_0.3", 7), np.arange(7))
    assert np.array_equal(E.parse_indices("0:100:20"), [0, 20, 40, 60, 80])
    assert np.array_equal(E.parse_indices("3,5"), [3, 5])


def test_checkpoint_resume_reuses_finished_blocks(tmp_path, monkeypatch, table1_full):
    ckpt = tmp_path / "ckpt.npz"
    full = E.run_shard("table1", "mnist_0.3", indices=IDX, block_size=5, steps=10, checkpoint=ckpt)
    # keep the first two blocks only, as a killed run would have left them
    part = PointResults.load(ckpt)
    keep = np.isin(part["index"], IDX[:10])
    PointResults({k: v[keep] for k, v in part.columns.items()}, part.meta, part.manifest).save(ckpt)
    calls = []
    original = E.EXPERIMENTS["table1"].compute

    def counting(c, x, y, index, p, seed):
        calls.append(len(index))
        return original(c, x, y, index, p, seed)

    monkeypatch.setitem(E.EXPERIMENTS, "table1", E.Experiment(**{**E.EXPERIMENTS["table1"].__dict__, "compute": counting}))
    resumed = E.run_shard("table1", "mnist_0.3", indices=IDX, block_size=5, steps=10, checkpoint=ckpt)
    assert calls == [5, 5, 4]                       # blocks 3-5 only
    for k in full.columns:
        assert np.array_equal(resumed[k], full[k], equal_nan=True), k
    # a checkpoint of a different run is ignored
    calls.clear()
    E.run_shard("table1", "mnist_0.3", indices=IDX[:5], block_size=5, steps=11, checkpoint=ckpt)
    assert calls == [5]
    # the same run's checkpoint computed on other weights (a model retrained since) is ignored too
    E.run_shard("table1", "mnist_0.3", indices=IDX[:5], block_size=5, steps=10, checkpoint=ckpt)
    part = PointResults.load(ckpt)
    PointResults(part.columns, part.meta, {**part.manifest, "weights_sha256": "0" * 64}).save(ckpt)
    calls.clear()
    E.run_shard("table1", "mnist_0.3", indices=IDX[:5], block_size=5, steps=10, checkpoint=ckpt)
    assert calls == [5]


def test_rescale_to_radius_and_authors_attack():
    x = torch.rand(3, 1, 28, 28)
    xa = x.clone()
    xa[0] += 0.01
    xa[2] -= 0.5
    out = rescale_to_radius(x, xa, 0.3)
    d = (out - x).flatten(1).norm(dim=1)
    assert torch.allclose(d[[0, 2]], torch.tensor([0.3, 0.3]), atol=1e-5) and d[1] == 0   # zero δ: no NaN
    assert torch.isfinite(out).all()
    c = dl.load_model("mnist_0.3")
    xt, _ = dl.load_mnist()
    xp = authors_gloro_attack(c, xt[:8], 0.3, steps=5, generator=E.point_generators(0, range(8), "s"))
    dist = (xp - xt[:8]).flatten(1).norm(dim=1)
    assert torch.allclose(dist, torch.full((8,), 0.3), atol=1e-5)
    assert xp.min() < 0 or xp.max() > 1             # MNIST has saturated pixels: x' leaves [0, 1]
    with pytest.raises(ValueError, match="bounds"):
        pgd(c, xt[:2], 0.6, bounds=(1.0, 0.0))


def test_find_stored_matches_parameters_seed_and_points(tmp_path, table1_full):
    res = PointResults(dict(table1_full.columns), {k: v for k, v in table1_full.meta.items() if k != "shard"},
                       table1_full.manifest)
    res.save(tmp_path / "table1-mnist_0.3.npz")
    got = E.find_stored("table1", "mnist_0.3", indices=IDX[[4, 2]], results_dir=tmp_path, steps=10)
    assert got is not None and np.array_equal(got["index"], IDX[[4, 2]])
    assert np.array_equal(got["rejected_alg31"], table1_full["rejected_alg31"][[4, 2]])
    assert E.find_stored("table1", "mnist_0.3", results_dir=tmp_path, steps=10) is not None
    assert E.find_stored("table1", "mnist_0.3", results_dir=tmp_path, steps=50) is None       # other params
    assert E.find_stored("table1", "mnist_0.3", results_dir=tmp_path, steps=10, seed=1) is None
    assert E.find_stored("table1", "mnist_0.3", indices=[1], results_dir=tmp_path, steps=10) is None  # not stored
    assert E.find_stored("table3", "mnist_0.3", results_dir=tmp_path, steps=10) is None
