"""Foundation: data loaders, the certifier interface, Algorithm 2.1, the exact certifier,
per-point results and the model registry."""

import itertools
import math
import pickle

import numpy as np
import pytest
import torch

import degradation_lib as dl
from degradation_lib import ABSTAIN, LinearCertifier, predict_with_defense
from degradation_lib.data import safe_unpickle
from degradation_lib.results import PointResults, merge

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ----------------------------------------------------------------------------- data
def test_mnist_test_split_is_the_official_one():
    x, y = dl.load_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    # every pixel is k/255 for an integer k: the uint8 bytes were recovered exactly
    k = x * 255
    assert torch.equal(k, k.round())


def test_mnist_train_split_has_60000_images():
    x, y = dl.load_mnist("train")
    assert x.shape == (60_000, 1, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="split"):
        dl.load_mnist("validation")


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        safe_unpickle(pickle.dumps(Evil()))
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = safe_unpickle(pickle.dumps({"a": arr}))
    assert np.array_equal(out["a"], arr)


def test_cifar10_missing_folder_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        dl.load_cifar10("test", root=tmp_path)


def test_cifar10_without_root_or_variable(monkeypatch):
    monkeypatch.delenv(dl.data.CIFAR10_ENV, raising=False)
    with pytest.raises(ValueError, match="root"):
        dl.load_cifar10("test")


def test_cifar10_reads_the_official_format(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(7, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=7)]
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"testing batch 1 of 1"}, fh, protocol=2)
    monkeypatch.setenv(dl.data.CIFAR10_ENV, str(tmp_path))
    x, y = dl.load_cifar10("test")
    assert x.shape == (7, 3, 32, 32) and y.tolist() == labels
    assert torch.equal((x * 255).round().to(torch.uint8).reshape(7, -1), torch.from_numpy(data))
    with pytest.raises(ValueError, match="split"):
        dl.load_cifar10("valid", root=tmp_path)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf"), "a", None])
def test_bad_eps_rejected(eps):
    with pytest.raises(ValueError, match="eps"):
        dl.check_eps(eps)


def test_check_input_rejects_bad_inputs():
    with pytest.raises(ValueError, match="x"):
        dl.check_input(torch.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        dl.check_input(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="dimensions"):
        dl.check_input(torch.zeros(3), ndim=2)
    with pytest.raises(ValueError, match="shape"):
        dl.check_input(torch.zeros(2, 3), shape=(4,))
    with pytest.raises(ValueError, match="norm"):
        dl.check_norm(3)


# ----------------------------------------------------------------------------- exact certifier
def _random_linear(rng, d, c, norm):
    w = torch.from_numpy(rng.normal(size=(c, d)))
    b = torch.from_numpy(rng.normal(size=c) * 0.3)
    return LinearCertifier(w, b, norm=norm)


def _vertices(x, eps, norm):
    """Vertices of the ℓ1 or ℓ∞ ball around x (a linear function attains its min at one)."""
    d = x.numel()
    if norm == math.inf:
        signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=x.dtype)
    else:
        signs = torch.cat([torch.eye(d, dtype=x.dtype), -torch.eye(d, dtype=x.dtype)])
    return x + eps * signs


def _sphere(x, eps, m=20_000):
    theta = torch.linspace(0, 2 * math.pi, m, dtype=x.dtype)
    return x + eps * torch.stack([theta.cos(), theta.sin()], dim=1)


@pytest.mark.parametrize("norm", [1.0, 2.0, math.inf])
def test_exact_certifier_agrees_with_brute_force(norm):
    """Definition 2 decided by brute force on random 2-D and 3-D linear classifiers."""
    rng = np.random.default_rng(int(norm if norm != math.inf else 7))
    checked = {True: 0, False: 0}
    for trial in range(300):
        d = 2 if norm == 2.0 else int(rng.integers(2, 4))
        cert = _random_linear(rng, d, int(rng.integers(2, 5)), norm)
        cert.unit_range = False   # Definition 2 quantifies over all of R^d
        x = torch.from_numpy(rng.uniform(0, 1, size=(1, d)))
        eps = float(rng.uniform(0.01, 0.6))
        j, r = cert.certified_radius(x)
        if abs(r.item() - eps) < 1e-3:   # too close to the boundary for a sampled check
            continue
        pts = _sphere(x[0], eps) if norm == 2.0 else _vertices(x[0], eps, norm)
        robust = bool((cert.predict(pts) == j).all())
        certified = bool(cert.certify(x, eps).item() != ABSTAIN)
        assert robust == certified, (trial, r.item(), eps)
        checked[robust] += 1
    assert checked[True] > 20 and checked[False] > 20  # both outcomes exercised


def test_exact_radius_is_the_distance_to_the_boundary():
    """Stepping just past r(x) along the worst direction changes the label; just short does not."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        cert = _random_linear(rng, 4, 3, 2.0)
        cert.unit_range = False
        x = torch.from_numpy(rng.uniform(0, 1, size=(1, 4)))
        j, r = cert.certified_radius(x)
        _, margin, gnorm = cert.margins(x)
        i = (margin / gnorm).argmin(dim=1).item()
        w = cert.model.weight
        direction = (w[i] - w[j.item()]) / torch.linalg.vector_norm(w[i] - w[j.item()])
        assert cert.predict(x + (r.item() * (1 - 1e-9)) * direction).item() == j.item()
        assert cert.predict(x + (r.item() * (1 + 1e-6)) * direction).item() != j.item()


def test_exact_certifier_ties_and_identical_rows():
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    cert = LinearCertifier(w, norm=2)
    x = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    labels, r = cert.certified_radius(x)
    assert r.item() == 0.0                      # classes 0 and 1 are tied everywhere
    assert cert.certify(x, 1e-6).item() == ABSTAIN
    cert = LinearCertifier(w, torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64), norm=2)
    labels, r = cert.certified_radius(x)       # class 1 never wins: only class 2 matters
    assert labels.item() == 0
    assert r.item() == pytest.approx((0.9 + 0.1 - 0.1) / math.sqrt(2))


def test_exact_certifier_validates():
    with pytest.raises(ValueError, match="weight"):
        LinearCertifier(torch.zeros(1, 3))
    cert = LinearCertifier(torch.eye(3))
    with pytest.raises(ValueError, match="per-example shape"):
        cert.certify(torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cert.certify(torch.full((2, 3), 2.0), 0.1)


# ----------------------------------------------------------------------------- Algorithm 2.1
def test_predict_with_defense_is_certify():
    rng = np.random.default_rng(5)
    cert = _random_linear(rng, 3, 4, math.inf)
    x = torch.from_numpy(rng.uniform(0, 1, size=(500, 3)))
    out = predict_with_defense(cert, x, 0.05)
    labels, r = cert.certified_radius(x)
    assert torch.equal(out, torch.where(r > 0.05, labels, torch.full_like(labels, ABSTAIN)))
    assert (out == ABSTAIN).any() and (out != ABSTAIN).any()
    # where it answers, it answers f(x')
    assert torch.equal(out[out != ABSTAIN], cert.predict(x)[out != ABSTAIN])
    with pytest.raises(ValueError, match="eps"):
        predict_with_defense(cert, x, -1)
    with pytest.raises(ValueError, match="certifier"):
        predict_with_defense(lambda z: z, x, 0.1)


def test_abstain_is_minus_one():
    assert dl.ABSTAIN == -1


# ----------------------------------------------------------------------------- results and registry
def test_point_results_roundtrip_and_merge(tmp_path):
    meta = {"model": "m", "eps": 0.3}
    a = PointResults({"index": np.array([2, 0]), "radius": np.array([0.5, 0.1])}, dict(meta, shard=0))
    b = PointResults({"index": torch.tensor([1, 3]), "radius": torch.tensor([0.2, 0.0], dtype=torch.float64)}, dict(meta, shard=1))
    a2 = PointResults.load(a.save(tmp_path / "a.npz"))
    assert a2.meta == dict(meta, shard=0) and np.array_equal(a2["radius"], a["radius"])
    m = merge([a2, b])
    assert m["index"].tolist() == [0, 1, 2, 3]
    assert m["radius"].tolist() == [0.1, 0.2, 0.5, 0.0]
    assert m.meta == meta
    with pytest.raises(ValueError, match="duplicate"):
        merge([a, a])
    with pytest.raises(ValueError, match="different runs"):
        merge([a, PointResults({"index": [9], "radius": [1.0]}, {"model": "other"})])
    with pytest.raises(ValueError, match="index"):
        PointResults({"radius": [1.0]})


def test_load_model_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="known models"):
        dl.load_model("no-such-model")
