"""Tests of the converter of the authors' Keras GloRo nets (``degradation_lib.convert``).

Independent checks:

* hand-computed logits of tiny synthetic Keras HDF5 files written here with h5py, one per layout
  convention (kernel layout (kH, kW, in, out), consecutive-pair MinMax, NHWC flatten, TensorFlow
  'same' padding of a strided conv);
* a direct numpy implementation of the Keras model's forward pass (NHWC loops, TensorFlow's
  padding rule, the reference gloro MinMax) on random weights;
* the row matching recovers a known permutation of synthetic radii;
* the committed conversions of the authors' two MNIST 0.3 models against the authors' own
  published per-point radii: identical confusion matrices, VRA equal up to the points whose radius
  lies within the Lipschitz constants' ratio of ε, and per-point radii whose ratio to ours is one
  constant per batch of the authors' script (float32 rounding otherwise).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from degradation_lib import load_mnist, load_model, model_metadata
from degradation_lib.convert import (AUTHORS_MODELS, compare_with_published, convert_authors_model,
                                     gloro_net_from_keras, match_published_rows, minmax_permutation, read_keras_h5,
                                     tf_same_padding)
from degradation_lib.gloro import minmax
from degradation_lib.registry import CHECKPOINT_DIR

h5py = pytest.importorskip("h5py")
torch.set_num_threads(1)


# -------------------------------------------------------------------------------------------
# Writing synthetic Keras HDF5 files
# -------------------------------------------------------------------------------------------

def write_keras_h5(path, input_hwc, layers):
    """A Keras-2.4-style whole-model HDF5: ``layers`` = [(class_name, config, {"kernel", "bias"})]."""
    specs = [dict(class_name="InputLayer", name="input_1",
                  config=dict(name="input_1", batch_input_shape=[None, *input_hwc], dtype="float32"))]
    names = ["input_1"]
    for i, (kind, cfg, _) in enumerate(layers):
        name = f"{kind.lower()}_{i}"
        names.append(name)
        specs.append(dict(class_name=kind, name=name, config=dict(cfg, name=name)))
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(dict(class_name="Functional", config=dict(name="m", layers=specs)))
        f.attrs["keras_version"] = "2.4.0"
        g = f.create_group("model_weights")
        for name, (_, _, weights) in zip(names[1:], layers):
            lg = g.create_group(name).create_group(name)
            for key, value in weights.items():
                lg.create_dataset(f"{key}:0", data=np.asarray(value, dtype=np.float32))
    return path


def conv(filters, k, s, padding, kernel, bias):
    return ("Conv2D", dict(filters=filters, kernel_size=[k, k], strides=[s, s], padding=padding,
                           data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="linear",
                           use_bias=True), dict(kernel=kernel, bias=bias))


def dense(units, kernel, bias):
    return ("Dense", dict(units=units, activation="linear", use_bias=True), dict(kernel=kernel, bias=bias))


MINMAX = ("MinMax", dict(absolute_value=False), {})
FLATTEN = ("Flatten", dict(data_format="channels_last"), {})


def run(net, x_hwc):
    """Our converted net on one NHWC image given as a nested list (H, W, C)."""
    x = torch.tensor(x_hwc, dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        return net(x)[0].double()


# -------------------------------------------------------------------------------------------
# Hand-computed examples
# -------------------------------------------------------------------------------------------

def test_tf_same_padding_hand_values():
    # P = max((ceil(n/s) - 1)·s + k - n, 0), floor(P/2) before
    assert tf_same_padding(28, 4, 2) == (1, 1)   # out 14: 13·2 + 4 - 28 = 2
    assert tf_same_padding(14, 4, 2) == (1, 1)   # out 7: 6·2 + 4 - 14 = 2
    assert tf_same_padding(28, 3, 1) == (1, 1)
    assert tf_same_padding(5, 4, 2) == (1, 2)    # out 3: 2·2 + 4 - 5 = 3 (asymmetric)
    assert tf_same_padding(7, 2, 2) == (0, 1)    # out 4: 3·2 + 2 - 7 = 1
    assert tf_same_padding(4, 1, 1) == (0, 0)


def test_minmax_permutation_maps_reference_pairing_onto_ours():
    """Reference MinMax: flatten NHWC, consecutive pairs → (min, max). Ours on π-permuted channels."""
    g = np.random.default_rng(0)
    x = g.normal(size=(3, 5, 4, 6))  # NHWC
    pairs = x.reshape(-1, 2)
    ref = np.stack([pairs.min(1), pairs.max(1)], 1).reshape(x.shape)
    pi = minmax_permutation(6)
    assert pi.tolist() == [0, 2, 4, 1, 3, 5]
    ours = minmax(torch.from_numpy(x.transpose(0, 3, 1, 2)[:, pi].copy())).numpy()  # NCHW, our channel c = their π(c)
    np.testing.assert_array_equal(ours, ref.transpose(0, 3, 1, 2)[:, pi])
    with pytest.raises(ValueError, match="channels"):
        minmax_permutation(5)


def test_hand_computed_kernel_layout_minmax_pairs_and_nhwc_flatten(tmp_path):
    """3×3 image, 2×2 'valid' conv with two one-hot kernels, MinMax, Flatten, Dense, MinMax, Dense.

    x = [[.1 .2 .3] [.4 .5 .6] [.7 .8 .9]]; kernel[0,1,0,0] = 1 → channel 0 at (h, w) is x[h, w+1];
    kernel[1,0,0,1] = 2, bias (0, −1) → channel 1 is 2·x[h+1, w] − 1. Per pixel (0,0) (0,1) (1,0)
    (1,1): ch0 = .2 .3 .5 .6, ch1 = −.2 0 .4 .6; MinMax (min, max) per pixel: (−.2, .2) (0, .3)
    (.4, .5) (.6, .6); NHWC flatten: [−.2 .2 0 .3 .4 .5 .6 .6]. Dense: u0 = f[1] + 10·f[4] = 4.2,
    u1 = f[3] = 0.3; MinMax: (0.3, 4.2); output: (m0, m1, m0 − m1 + 1) = (0.3, 4.2, −2.9).
    """
    k1 = np.zeros((2, 2, 1, 2))
    k1[0, 1, 0, 0] = 1
    k1[1, 0, 0, 1] = 2
    k2 = np.zeros((8, 2))
    k2[1, 0], k2[4, 0], k2[3, 1] = 1, 10, 1
    k3 = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
    path = write_keras_h5(tmp_path / "f.h5", (3, 3, 1), [
        conv(2, 2, 1, "valid", k1, [0.0, -1.0]), MINMAX, FLATTEN,
        dense(2, k2, [0.0, 0.0]), MINMAX, dense(3, k3, [0.0, 0.0, 1.0])])
    net = gloro_net_from_keras(read_keras_h5(path))
    x = [[[0.1], [0.2], [0.3]], [[0.4], [0.5], [0.6]], [[0.7], [0.8], [0.9]]]
    np.testing.assert_allclose(run(net, x).numpy(), [0.3, 4.2, -2.9], atol=1e-6)


def test_hand_computed_minmax_pairs_consecutive_channels_and_units(tmp_path):
    """1×1 image x = 1; 1×1 conv, 4 filters, kernel (1, −1, 0, 0), bias (0, 0, 3, −3): channels
    (1, −1, 3, −3). The reference MinMax pairs (0, 1) and (2, 3): (−1, 1, −3, 3) (pairing 0 with
    2 and 1 with 3 would give (1, −3, 3, −1)). Dense 4 = identity + bias (0, −5, 0, 5):
    (−1, −4, −3, 8); MinMax: (−4, −1, −3, 8); output diag(1, 10, 100, 1000): (−4, −10, −300, 8000).
    """
    k1 = np.array([1.0, -1.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    path = write_keras_h5(tmp_path / "f.h5", (1, 1, 1), [
        conv(4, 1, 1, "valid", k1, [0.0, 0.0, 3.0, -3.0]), MINMAX, FLATTEN,
        dense(4, np.eye(4), [0.0, -5.0, 0.0, 5.0]), MINMAX, dense(4, np.diag([1.0, 10.0, 100.0, 1000.0]), np.zeros(4))])
    net = gloro_net_from_keras(read_keras_h5(path))
    np.testing.assert_allclose(run(net, [[[1.0]]]).numpy(), [-4.0, -10.0, -300.0, 8000.0], atol=1e-4)


def test_hand_computed_same_padding_of_strided_conv(tmp_path):
    """4×4 image of ones·(1 + h·4 + w), 4×4 conv stride 2 'same': P = 2, one zero row/column each side.

    Filter 0 all ones: its output at (0, 0) sums the window rows/cols −1..2, i.e. x[0:3, 0:3]
    = 1+2+3+5+6+7+9+10+11 = 54 (with padding (0, 2) it would be the whole 4×4, 136); filter 1
    is zero with bias 1000 (always the max). MinMax keeps (54, 1000) at (0, 0); the dense layer
    reads flat index 0 (pixel (0,0), channel 0): the logit is 54. At (1, 1) the window is rows/cols
    1..4: x[1:4, 1:4] = 6+7+8+10+11+12+14+15+16 = 99, flat index (1·2 + 1)·2 = 6.
    """
    k1 = np.zeros((4, 4, 1, 2))
    k1[..., 0, 0] = 1
    k2 = np.zeros((8, 2))
    k2[0, 0], k2[6, 1] = 1, 1
    path = write_keras_h5(tmp_path / "f.h5", (4, 4, 1), [
        conv(2, 4, 2, "same", k1, [0.0, 1000.0]), MINMAX, FLATTEN, dense(2, k2, [0.0, 0.0])])
    net = gloro_net_from_keras(read_keras_h5(path))
    x = [[[1.0 + 4 * h + w] for w in range(4)] for h in range(4)]
    np.testing.assert_allclose(run(net, x).numpy(), [54.0, 99.0], atol=1e-4)


# -------------------------------------------------------------------------------------------
# An independent numpy forward pass on random weights
# -------------------------------------------------------------------------------------------

def keras_forward_numpy(layers, x):
    """The Keras model's forward pass written directly: NHWC, TF 'same' padding, reference MinMax."""
    for layer in layers[1:]:
        kind, cfg, w = layer["class_name"], layer["config"], layer["weights"]
        if kind == "Conv2D":
            kernel, s = w["kernel"], cfg["strides"][0]
            k = kernel.shape[0]
            n, h, wd, _ = x.shape
            if cfg["padding"] == "same":
                ph, pw = -(-h // s), -(-wd // s)
                th, tw = max((ph - 1) * s + k - h, 0), max((pw - 1) * s + k - wd, 0)
                x = np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))
            oh, ow = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
            out = np.zeros((n, oh, ow, kernel.shape[3]))
            for i in range(oh):
                for j in range(ow):
                    patch = x[:, i * s:i * s + k, j * s:j * s + k, :]
                    out[:, i, j, :] = np.einsum("nabc,abcd->nd", patch, kernel)
            x = out + w["bias"]
        elif kind == "MinMax":
            pairs = x.reshape(x.shape[0], -1, 2)
            x = np.stack([pairs.min(-1), pairs.max(-1)], -1).reshape(x.shape)
        elif kind == "Flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "Dense":
            x = x @ w["kernel"] + w["bias"]
    return x


def test_random_2c2f_like_net_matches_numpy_keras_forward(tmp_path):
    g = np.random.default_rng(1)
    path = write_keras_h5(tmp_path / "f.h5", (8, 8, 1), [
        conv(4, 4, 2, "same", g.normal(size=(4, 4, 1, 4)), g.normal(size=4)), MINMAX,
        conv(6, 4, 2, "same", g.normal(size=(4, 4, 4, 6)), g.normal(size=6)), MINMAX, FLATTEN,
        dense(6, g.normal(size=(24, 6)), g.normal(size=6)), MINMAX,
        dense(3, g.normal(size=(6, 3)), g.normal(size=3))])
    layers = read_keras_h5(path)
    net = gloro_net_from_keras(layers)
    assert [tuple(p.shape) for p in net.parameters()] == [(4, 1, 4, 4), (4,), (6, 4, 4, 4), (6,), (6, 24), (6,), (3, 6), (3,)]
    x = g.uniform(size=(5, 8, 8, 1))
    expected = keras_forward_numpy(layers, x)
    with torch.no_grad():
        got = net.double()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # weights were stored as float32
    # The permutations change no spectral norm: ‖A‖₂ of each converted conv = σ_max of the Keras
    # conv's explicit matrix (columns: the numpy forward pass on the NHWC standard basis, no bias).
    for ours, theirs, hwc in ((net.body[0], layers[1], (8, 8, 1)), (net.body[1], layers[3], (4, 4, 4))):
        d = int(np.prod(hwc))
        zero_bias = dict(theirs, weights=dict(theirs["weights"], bias=np.zeros_like(theirs["weights"]["bias"])))
        cols = keras_forward_numpy([None, zero_bias], np.eye(d).reshape(d, *hwc)).reshape(d, -1)
        assert ours.converge() == pytest.approx(np.linalg.svd(cols, compute_uv=False)[0], rel=1e-7)


def test_unsupported_models_raise(tmp_path):
    g = np.random.default_rng(2)
    asym = write_keras_h5(tmp_path / "a.h5", (5, 5, 1), [
        conv(2, 4, 2, "same", g.normal(size=(4, 4, 1, 2)), np.zeros(2)), MINMAX, FLATTEN,
        dense(2, g.normal(size=(18, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="asymmetric"):
        gloro_net_from_keras(read_keras_h5(asym))
    relu = write_keras_h5(tmp_path / "r.h5", (4, 4, 1), [
        ("Conv2D", dict(filters=2, kernel_size=[2, 2], strides=[2, 2], padding="valid", activation="relu",
                        use_bias=True), dict(kernel=g.normal(size=(2, 2, 1, 2)), bias=np.zeros(2))),
        MINMAX, FLATTEN, dense(2, g.normal(size=(8, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="activation"):
        gloro_net_from_keras(read_keras_h5(relu))
    no_act = write_keras_h5(tmp_path / "n.h5", (4, 4, 1), [
        conv(2, 2, 2, "valid", g.normal(size=(2, 2, 1, 2)), np.zeros(2)), FLATTEN,
        dense(2, g.normal(size=(8, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="MinMax"):
        gloro_net_from_keras(read_keras_h5(no_act))
    bad = tmp_path / "x.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(ValueError, match="model_config"):
        read_keras_h5(bad)


# -------------------------------------------------------------------------------------------
# Row matching
# -------------------------------------------------------------------------------------------

def test_matching_recovers_a_known_permutation_with_per_batch_lipschitz_ratios():
    """Published rows = our points shuffled, radii scaled by one constant per batch of 128 rows
    (1.005 → 1.00005, the authors' converging power iteration) and rounded to float32."""
    g = np.random.default_rng(3)
    n = 2000
    label = g.integers(0, 10, n)
    predict = np.where(g.uniform(size=n) < 0.95, label, g.integers(0, 10, n))
    radius = g.gamma(4.0, 0.2, n)
    perm = g.permutation(n)  # published row p holds our point perm[p]
    batches = np.arange(n) // 128
    c = 1 + 0.005 * np.exp(-np.arange(batches.max() + 1) / 3.0)
    pub_radius = (radius[perm] * c[batches]).astype(np.float32).astype(np.float64)
    m, c_est = match_published_rows(label, predict, radius, label[perm], predict[perm], pub_radius)
    truth = np.empty(n, dtype=np.int64)
    truth[perm] = np.arange(n)
    assert (m == truth).all()
    np.testing.assert_allclose(c_est, c, rtol=1e-6)
    m0, _ = match_published_rows(label, predict, radius, label[perm], predict[perm], pub_radius, batch_size=None)
    assert (m0 != truth).sum() > 100  # plain rank matching is not enough: the per-batch correction matters
    with pytest.raises(ValueError, match="confusion"):
        match_published_rows(label, predict, radius, label[perm], (predict[perm] + 1) % 10, pub_radius)


# -------------------------------------------------------------------------------------------
# The authors' models: committed conversions against the authors' published radii
# -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test")


@pytest.mark.parametrize("name", sorted(AUTHORS_MODELS))
def test_committed_conversion_agrees_with_published_radii(name, mnist_test):
    info = AUTHORS_MODELS[name]
    meta = model_metadata(name)
    assert meta["attribution"]["licence"] == "MIT"
    assert (CHECKPOINT_DIR.parent / "published" / "LICENSE").is_file()
    assert meta["eps"] == info["eps"] and meta["training"]["converted_from"] == info["published"]
    cert = load_model(name)
    fresh, config = convert_authors_model(info["published"])
    for key, value in fresh.state_dict().items():  # the committed weights are the conversion's
        torch.testing.assert_close(cert.model.state_dict()[key], value, rtol=0, atol=0)
    assert config["epsilon"] == pytest.approx(info["train_eps"])

    x, y = mnist_test
    out = compare_with_published(cert, info["published"], eps_list=(0.3, 0.6), x=x, y=y)
    assert out["confusion_equal"], "label × prediction counts must agree exactly"
    assert sorted(out["matched_rows"]) == list(range(10000))
    # r_pub = c_b · r_ours with one c_b = L_ours / L_b per batch: residual is float32 rounding
    assert out["batch_residual_median"] < 1e-6 and out["batch_residual_p99"] < 1e-5
    assert out["batch_residual_over_1e-4"] <= 2
    # the authors' power iteration approaches ‖·‖₂ from below; our L_sub is a proven upper bound,
    # so c_b = L_ours / L_b ≥ 1 (up to the float32 rounding of their estimate)
    assert 1 - 1e-5 < out["L_ratio_min"] and out["L_ratio_max"] < 1.01
    assert out["radius_rel_diff_median"] < 1e-3 and out["radius_rel_diff_p99"] < 1e-2
    assert out["sound_label_differs"] == 0
    # the sound certificate's rounding bound lowers radii by ≤ 1.7e-3 here (measured max 1.64e-3 and 1.68e-3 with the
    # Collatz–Wielandt bound on ‖|A|‖₂; 2.0e-3 and 2.05e-3 with the Schur test before it)
    assert 0 <= out["rounding_abs_median"] <= out["rounding_abs_max"] < 5e-3
    for e in (0.3, 0.6):
        # nominal radii: VRA differs from the published only at points within the Lipschitz ratio of ε
        assert out[f"flips_lipschitz@{e}"] <= out[f"borderline@{e}"]
        assert abs(round((out[f"vra_nominal@{e}"] - out[f"vra_published@{e}"]) * 10000)) <= out[f"flips_lipschitz@{e}"]
        # sound radii only lose points, exactly those certified nominally but not soundly
        assert round((out[f"vra_nominal@{e}"] - out[f"vra@{e}"]) * 10000) == out[f"flips_rounding@{e}"]
        # what the json records is what load_model certifies
        assert meta["metrics"][f"vra_radius@{e}"] == pytest.approx(out[f"vra@{e}"], abs=1e-6)
    # Section 4.1's upper bound 1 − A/B (A = #r > 2ε, B = #r > ε): |Δ(A/B)| ≤ (ΔA + ΔB) / min B
    b = min(out["vra@0.3"], out["vra_published@0.3"]) * 10000
    moved = sum(out[f"flips_lipschitz@{e}"] + out[f"flips_rounding@{e}"] for e in (0.3, 0.6))
    assert abs(out["upper_bound@0.3"] - out["upper_bound_published@0.3"]) <= moved / b + 1e-12
    assert meta["metrics"]["clean_accuracy"] == pytest.approx(np.trace(out["confusion_ours"]) / 10000, abs=1e-6)
