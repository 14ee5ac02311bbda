"""The shared checkpoint writer produces exactly what the registry's loaders read.

For one committed model of each family (GloRo, randomized smoothing, ℓ∞), the committed pair is
read, written again with `write_checkpoint` into a temporary folder, and read back: the json must
be the same object (plus `name`), the weights bit-identical, and the family's builder must give a
certifier whose network computes the same logits on MNIST test images as that of `load_model` on
the committed files. Then a one-epoch ℓ∞ training run on 200 images installs a model through `--name`, and the
registry's builder loads it (CPU; the run takes a few seconds).
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import degradation_lib as dl
from degradation_lib.checkpoint_writer import write_checkpoint
from degradation_lib.registry import CHECKPOINT_DIR, LOADERS


def _builder(kind: str):
    module, func = LOADERS[kind].split(":")
    return getattr(importlib.import_module(module), func)


@pytest.mark.parametrize("name", ["mnist_0.3", "mnist_smooth_0.25", "mnist_linf_0.1"])
def test_rewritten_checkpoint_loads_like_the_committed_one(tmp_path, name):
    meta = json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())
    state = torch.load(CHECKPOINT_DIR / f"{name}.pt", weights_only=True)
    pt, js = write_checkpoint(name, state, meta, tmp_path)
    assert (pt, js) == (tmp_path / f"{name}.pt", tmp_path / f"{name}.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([pt.name, js.name])  # no temporaries left
    meta2 = json.loads(js.read_text())
    assert meta2 == dict(meta, name=name)
    assert js.read_text().endswith("}\n")
    state2 = torch.load(pt, weights_only=True)
    assert state2.keys() == state.keys()
    assert all(torch.equal(state2[k], state[k]) and state2[k].dtype == state[k].dtype for k in state)

    rebuilt = _builder(meta2["kind"])(meta2, state2, torch.device("cpu"))
    committed = dl.load_model(name, "cpu")
    x, _ = dl.load_mnist("test")
    with torch.no_grad():  # the networks (for smoothing, the base classifier) compute the same logits
        assert torch.equal(rebuilt.model(x[:64]), committed.model(x[:64]))


def test_writer_rejects_bad_input(tmp_path):
    state = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="name"):
        write_checkpoint("../escape", state, {"kind": "linf"}, tmp_path)
    with pytest.raises(ValueError, match="kind"):
        write_checkpoint("m", state, {"kind": "nope"}, tmp_path)
    with pytest.raises(ValueError, match="state_dict"):
        write_checkpoint("m", {"w": [0.0]}, {"kind": "linf"}, tmp_path)
    with pytest.raises(ValueError, match="JSON"):
        write_checkpoint("m", state, {"kind": "linf", "bad": object()}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_train_linf_installs_a_loadable_model(tmp_path):
    from degradation_lib.train_linf import main

    main(["--out", str(tmp_path / "run"), "--epochs", "1", "--warmup", "0", "--ramp", "1", "--train-limit", "200",
          "--test-limit", "100", "--name", "tiny_linf", "--out-dir", str(tmp_path / "ckpt"), "--device", "cpu"])
    meta = json.loads((tmp_path / "ckpt" / "tiny_linf.json").read_text())
    assert meta["kind"] == "linf" and meta["name"] == "tiny_linf" and meta["arch"] == "kw_small"
    assert meta["training"]["device"] == "cpu" and len(meta["training"]["per_epoch"]) == 1
    assert meta["metrics"]["n"] == 100 and 0.0 <= meta["metrics"]["clean_accuracy"] <= 1.0
    state = torch.load(tmp_path / "ckpt" / "tiny_linf.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in state.values())
    cert = _builder("linf")(meta, state, torch.device("cpu"))
    x, y = dl.load_mnist("test")
    labels = cert.predict(x[:100])
    assert (labels == y[:100]).float().mean().item() == pytest.approx(meta["metrics"]["clean_accuracy"], abs=1e-9)
