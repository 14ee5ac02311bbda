"""Convert the paper authors' Keras GloRo nets into our :class:`~degradation_lib.gloro.GloroNet`.

The authors released two trained MNIST ε = 0.3 GloRo nets (``mnist_0.3_N``, trained at ε, and
``mnist_0.3_Y``, trained at 2ε; see ``degradation_lib/published/README.md``, MIT licence in
``degradation_lib/published/LICENSE``). Each is a gzip tar (``.gloronet``) holding a Keras 2.4 HDF5
model ``f.h5`` and a ``config.json`` with the certification radius. This module reads the HDF5
with ``h5py`` (no TensorFlow) and builds a GloroNet that computes *the same function* as the Keras
model, so that our certifier (Section 2, GloRo) and our attacks (Section 3, Table 1) run on the
paper's exact models.

Layout conventions of the Keras model, and what the converter does about each:

* **Inputs** are NHWC images in [0, 1] (the authors' pipeline divides the uint8 pixels by 255,
  like :func:`degradation_lib.load_mnist`); ours are NCHW.
* **Conv2D kernels** are stored ``(kH, kW, C_in, C_out)``; ``torch`` wants ``(C_out, C_in, kH, kW)``.
  Both compute a cross-correlation (no kernel flip), so the kernel is only transposed.
* **'same' padding** in TensorFlow pads ``P = max((⌈H/s⌉ − 1)·s + k − H, 0)`` in total,
  ``⌊P/2⌋`` before and ``P − ⌊P/2⌋`` after: asymmetric when P is odd. Our layers pad
  symmetrically, so the converter computes P for each conv and accepts it only when it is even
  (it is 2 for both 4×4 stride-2 convs of 2C2F on 28×28 and 14×14 inputs: padding 1 each side);
  otherwise it raises ``ValueError``. 'valid' is padding 0.
* **MinMax** of the reference ``gloro`` library flattens its input (channels last), groups
  *consecutive* entries in pairs (channels 2m and 2m + 1 at the same pixel, or units 2m, 2m + 1
  of a dense layer) and writes the pair's min at 2m and its max at 2m + 1. Our :func:`minmax`
  pairs channel k with k + C/2 and writes the minima in the first half, the maxima in the second.
  With the channel permutation π = (0, 2, 4, …, C − 2, 1, 3, …, C − 1) — our channel c is their
  channel π(c) — our pair (c, c + C/2) is their pair (2c, 2c + 1), and our outputs (min at c, max
  at c + C/2) are their outputs (min at 2c, max at 2c + 1) in the same permuted order. So the
  converter permutes the *output* channels (rows) of every layer followed by MinMax by π and the
  *input* channels of the next layer by the same π; the logits are unchanged.
* **Flatten** works on NHWC activations: their flat index of (h, w, c) is (h·W + w)·C + c; ours
  (NCHW) is c·H·W + h·W + w. The first dense kernel's rows are permuted accordingly (together
  with the channel permutation π of the layer before).
* **Dense kernels** are stored ``(in, out)``; ``torch`` wants ``(out, in)``.

Permutations of channels and units leave every spectral norm unchanged, so the converted net has
the same Lipschitz bound L_sub as the original; our certifier computes it with exact (dense,
small conv) or converged (large conv) spectral norms, while the authors' radii were computed with
power iteration still converging (see :func:`compare_with_published`).

Command (writes ``degradation_lib/checkpoints/NAME.{pt,json}`` for both models, measuring clean
accuracy and VRA at ε and 2ε on the 10,000 MNIST test images)::

    python -m degradation_lib.convert --all
"""

from __future__ import annotations

import argparse
import io
import json
import math
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from .gloro import GloroCertifier, GloroNet

AUTHORS_MODELS: dict[str, dict] = {
    "mnist_0.3_authors": dict(
        published="mnist_0.3_N", eps=0.3, train_eps=0.3, eval_eps=[0.3, 0.6],
        description="the paper authors' MNIST 2C2F GloRo net trained at ε = 0.3 (their mnist_0.3_N; "
                    "TRADES λ 0.1, 500 epochs)"),
    "mnist_0.3_2eps_authors": dict(
        published="mnist_0.3_Y", eps=0.6, train_eps=0.6, eval_eps=[0.3, 0.6],
        description="the paper authors' MNIST 2C2F GloRo net trained at 2ε = 0.6 (their mnist_0.3_Y, "
                    "the 'super-robust' defense of Section 4.1; TRADES λ 2.0, 500 epochs)"),
}
"""Our names of the converted models → the published archive and the radius the model certifies
(``eps``, as in ``mnist_0.3.json`` / ``mnist_0.3_2eps.json``), and the radii its metrics use."""

ATTRIBUTION = {
    "authors": "the authors of 'Degradation Attacks on Certifiably Robust Neural Networks'",
    "copyright": "Copyright (c) 2022 Ravi Mangal (MIT licence notice in the licence file)",
    "repository": "https://github.com/ravimangal/degradation-attacks",
    "licence": "MIT",
    "licence_file": "degradation_lib/published/LICENSE",
}
"""Who made the converted models and under what licence (copied into each checkpoint json)."""


# ---------------------------------------------------------------------------------------------
# Reading the Keras HDF5 file
# ---------------------------------------------------------------------------------------------


def read_keras_h5(source) -> list[dict]:
    """The layers of a Keras 2.x functional/sequential HDF5 model, in order, with their weights.

    Args:
        source: path of an ``.h5`` file, or an open binary file object (``h5py`` reads both).

    Returns:
        a list of ``{"class_name", "name", "config", "weights"}``; ``weights`` maps ``"kernel"``,
        ``"bias"`` to float64 numpy arrays in Keras layout (empty for weightless layers).

    Raises:
        ValueError: the file has no ``model_config`` (not a whole-model Keras file).
    """
    import h5py

    with h5py.File(source, "r") as f:
        if "model_config" not in f.attrs:
            raise ValueError("source must be a Keras whole-model HDF5 file (attribute 'model_config' missing)")
        cfg = f.attrs["model_config"]
        cfg = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
        group = f["model_weights"] if "model_weights" in f else f
        layers = []
        for spec in cfg["config"]["layers"]:
            name = spec["config"]["name"]
            weights = {}
            if name in group:
                def visit(path, obj, weights=weights):
                    if hasattr(obj, "shape"):
                        key = path.rsplit("/", 1)[-1].split(":")[0]
                        weights[key] = np.asarray(obj[()], dtype=np.float64)
                group[name].visititems(visit)
            layers.append(dict(class_name=spec["class_name"], name=name, config=spec["config"], weights=weights))
    return layers


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding ``(before, after)`` of one spatial dimension.

    Output size ⌈size/stride⌉; total padding P = max((out − 1)·stride + kernel − size, 0), of
    which ⌊P/2⌋ goes before and the rest after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def minmax_permutation(channels: int) -> np.ndarray:
    """π with our channel c = their channel π(c): ``[0, 2, …, C−2, 1, 3, …, C−1]`` (C even).

    Maps the reference gloro MinMax (consecutive pairs, min then max) onto our :func:`minmax`
    (channel k paired with k + C/2, minima first).
    """
    if channels % 2:
        raise ValueError(f"channels must be even for MinMax, got {channels}")
    return np.concatenate([np.arange(0, channels, 2), np.arange(1, channels, 2)])


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


def _parse_layers(layers: list[dict]) -> tuple[tuple[int, int, int], list[dict]]:
    """Input shape (C, H, W) and the weight layers, each with ``act`` (followed by MinMax)."""
    if not layers or layers[0]["class_name"] != "InputLayer":
        raise ValueError("the Keras model must start with an InputLayer")
    shape = layers[0]["config"]["batch_input_shape"][1:]
    if len(shape) != 3:
        raise ValueError(f"input must be an image (H, W, C), got batch_input_shape {shape}")
    h, w, c = (int(s) for s in shape)
    ops: list[dict] = []
    flattened = False
    for layer in layers[1:]:
        kind, cfg = layer["class_name"], layer["config"]
        if kind in ("Conv2D", "Dense"):
            if cfg.get("activation", "linear") != "linear":
                raise ValueError(f"layer {layer['name']}: activation {cfg['activation']!r} is not supported "
                                 "(only 'linear' followed by MinMax)")
            if not cfg.get("use_bias", True):
                raise ValueError(f"layer {layer['name']}: layers without bias are not supported")
            if kind == "Conv2D":
                if flattened:
                    raise ValueError(f"layer {layer['name']}: Conv2D after Flatten")
                if cfg.get("data_format", "channels_last") != "channels_last":
                    raise ValueError(f"layer {layer['name']}: only data_format 'channels_last' is supported")
                if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("groups", 1) != 1:
                    raise ValueError(f"layer {layer['name']}: dilated or grouped convolutions are not supported")
            else:
                if not flattened and ops and ops[-1]["kind"] == "conv":
                    raise ValueError(f"layer {layer['name']}: Dense on an image without Flatten")
            ops.append(dict(kind="conv" if kind == "Conv2D" else "dense", layer=layer, act=False))
        elif kind == "MinMax":
            if not ops or ops[-1]["act"]:
                raise ValueError(f"layer {layer['name']}: MinMax must follow a Conv2D or Dense layer")
            if cfg.get("absolute_value", False):
                raise ValueError(f"layer {layer['name']}: MinMax(absolute_value=True) is not supported")
            ops[-1]["act"] = True
        elif kind == "Flatten":
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise ValueError(f"layer {layer['name']}: only data_format 'channels_last' is supported")
            flattened = True
        else:
            raise ValueError(f"layer {layer['name']}: unsupported layer class {kind!r} "
                             "(supported: InputLayer, Conv2D, MinMax, Flatten, Dense)")
    if len(ops) < 2 or ops[-1]["kind"] != "dense" or ops[-1]["act"]:
        raise ValueError("the model must end with a Dense output layer without activation")
    if not all(op["act"] for op in ops[:-1]):
        raise ValueError("every layer below the output must be followed by MinMax (a GloRo net)")
    return (c, h, w), ops


def gloro_net_from_keras(layers: list[dict]) -> GloroNet:
    """A float32 :class:`GloroNet` computing the same logits as the Keras GloRo model ``layers``.

    Args:
        layers: the output of :func:`read_keras_h5`: InputLayer, then Conv2D ('same' or 'valid',
            channels last, linear, with bias) and Dense layers, each below the output followed by
            MinMax, a Flatten between the last conv and the first dense layer, and a Dense output.

    The input of the result is NCHW ``[N, C, H, W]`` (the Keras model's is NHWC); its logits
    ``[N, num_classes]`` equal the Keras model's up to float rounding. Raises ``ValueError`` on
    any layer or padding it cannot represent exactly (e.g. odd total 'same' padding).
    """
    input_shape, ops = _parse_layers(layers)
    c, h, w = input_shape
    spec, tensors = [], []
    perm_in = np.arange(c)  # our channel (or unit) i = their channel perm_in[i]
    hw = (h, w)
    image = True
    for op in ops:
        cfg, wts = op["layer"]["config"], op["layer"]["weights"]
        kernel, bias = wts["kernel"], wts["bias"]
        if op["kind"] == "conv":
            kh, kw, cin, cout = kernel.shape
            if cin != len(perm_in):
                raise ValueError(f"layer {op['layer']['name']}: kernel expects {cin} input channels, got {len(perm_in)}")
            if kh != kw or len(set(cfg["strides"])) != 1:
                raise ValueError(f"layer {op['layer']['name']}: only square kernels and equal strides are supported")
            s = int(cfg["strides"][0])
            if cfg["padding"] == "valid":
                pad = 0
            elif cfg["padding"] == "same":
                pads = {tf_same_padding(n, kh, s) for n in hw}
                if len(pads) != 1 or len({p for pair in pads for p in pair}) != 1:
                    raise ValueError(f"layer {op['layer']['name']}: TensorFlow 'same' padding {sorted(pads)} on "
                                     f"{hw} is asymmetric; GloroNet pads symmetrically")
                pad = next(iter(pads))[0]
            else:
                raise ValueError(f"layer {op['layer']['name']}: padding {cfg['padding']!r} is not supported")
            perm_out = minmax_permutation(cout) if op["act"] else np.arange(cout)
            weight = kernel.transpose(3, 2, 0, 1)[perm_out][:, perm_in]  # (out, in, kh, kw)
            spec.append(("conv", cout, kh, s, pad))
            hw = tuple((n + 2 * pad - kh) // s + 1 for n in hw)
            perm_in = perm_out
        else:
            din, dout = kernel.shape
            if image:
                # our flat index c·H·W + h·W + w  ↔  their (h·W + w)·C + π(c)
                C, (H, W) = len(perm_in), hw
                if din != C * H * W:
                    raise ValueError(f"layer {op['layer']['name']}: kernel expects {din} inputs, got {C * H * W}")
                ch, hh, ww = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
                rows = ((hh * W + ww) * C + perm_in[ch]).reshape(-1)
                image = False
            else:
                if din != len(perm_in):
                    raise ValueError(f"layer {op['layer']['name']}: kernel expects {din} inputs, got {len(perm_in)}")
                rows = perm_in
            perm_out = minmax_permutation(dout) if op["act"] else np.arange(dout)
            weight = kernel[rows][:, perm_out].T  # (out, in)
            if op is not ops[-1]:
                spec.append(("dense", dout))
            perm_in = perm_out
        tensors.append((weight, bias[perm_out]))
    net = GloroNet(dict(input_shape=input_shape, layers=spec), num_classes=int(ops[-1]["layer"]["weights"]["kernel"].shape[1]))
    with torch.no_grad():
        for layer, (weight, bias) in zip([*net.body, net.head], tensors):
            if tuple(layer.weight.shape) != weight.shape:
                raise ValueError(f"converted weight {weight.shape} does not fit layer {tuple(layer.weight.shape)}")
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    return net


def read_gloronet(path) -> tuple[list[dict], dict]:
    """``(layers, config)`` from a ``.gloronet`` archive (gzip tar with ``*/f.h5``, ``*/config.json``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must be an existing .gloronet archive, got {str(path)!r}")
    layers = config = None
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith("f.h5"):
                layers = read_keras_h5(io.BytesIO(tar.extractfile(member).read()))
            elif member.name.endswith("config.json"):
                config = json.loads(tar.extractfile(member).read())
    if layers is None or config is None:
        raise ValueError(f"{path}: archive must hold f.h5 and config.json")
    return layers, config


def convert_authors_model(published: str) -> tuple[GloroNet, dict]:
    """The authors' ``mnist_0.3_N`` / ``mnist_0.3_Y`` as a float32 2C2F :class:`GloroNet`, and its
    ``config.json`` (``epsilon``: the radius it was trained to certify)."""
    from .published import authors_model_archive

    layers, config = read_gloronet(authors_model_archive(published))
    net = gloro_net_from_keras(layers)
    # The converted spec is exactly our named architecture; name it so load_model rebuilds it.
    from .gloro import ARCHITECTURES
    ref = GloroNet("2C2F")
    if [tuple(p.shape) for p in net.state_dict().values()] != [tuple(p.shape) for p in ref.state_dict().values()]:
        raise ValueError(f"{published}: converted net is not a 2C2F ({ARCHITECTURES['2C2F']})")
    ref.load_state_dict(net.state_dict())
    return ref.eval(), config


# ---------------------------------------------------------------------------------------------
# Checking against the authors' published radii
# ---------------------------------------------------------------------------------------------


AUTHORS_BATCH_SIZE = 128
"""Batch size of the authors' radius script (``printRadius.py``, default ``batch_size=128``): one
Lipschitz estimate per batch of published rows."""


def _rank_match(label, predict, radius, pub_label, pub_predict, pub_radius) -> np.ndarray:
    n = len(label)
    match = np.full(n, -1, dtype=np.int64)
    for key in set(zip(label.tolist(), predict.tolist())) | set(zip(pub_label.tolist(), pub_predict.tolist())):
        ours = np.flatnonzero((label == key[0]) & (predict == key[1]))
        theirs = np.flatnonzero((pub_label == key[0]) & (pub_predict == key[1]))
        if len(ours) != len(theirs):
            raise ValueError(f"confusion matrices differ at (label, prediction) = {key}: "
                             f"{len(ours)} ours vs {len(theirs)} published")
        match[ours[np.argsort(radius[ours], kind="stable")]] = theirs[np.argsort(pub_radius[theirs], kind="stable")]
    return match


def match_published_rows(label: np.ndarray, predict: np.ndarray, radius: np.ndarray,
                         pub_label: np.ndarray, pub_predict: np.ndarray, pub_radius: np.ndarray,
                         batch_size: int | None = AUTHORS_BATCH_SIZE, max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Match the authors' published rows (not in test order) to our test points.

    Why it works: both nets compute the same logits, so for every point the radius is
    r = margin / (L · ‖w_j − w_i‖) with the same margin and head rows; only the Lipschitz bound L
    differs. The authors' L was an estimate refreshed by power iteration on every batch of their
    script (``batch_size`` rows), so r_pub / r_ours = L_ours / L_b is one constant c_b per batch b.

    1. Within each (label, prediction) group, the k-th smallest of our radii is matched with the
       k-th smallest (batch-corrected) published radius: the rank matching.
    2. c_b is re-estimated as the median of r_pub / r_ours over the matched rows of batch b, the
       published radii are divided by it, and step 1 is repeated until the matching is stable.

    With ``batch_size=None`` only step 1 runs (one constant for all rows). Requires equal group
    sizes, i.e. equal confusion matrices.

    Returns:
        ``(m, c)``: int64 ``[N]``, our point ``i`` is matched with published row ``m[i]``; float64
        ``[num_batches]``, the per-batch ratio c_b = L_ours / L_b (``[1]`` without batches).

    Raises:
        ValueError: the confusion matrices (label × prediction counts) differ, or the lengths do.
    """
    n = len(label)
    if not (len(predict) == len(radius) == len(pub_label) == len(pub_predict) == len(pub_radius) == n):
        raise ValueError(f"all arrays must have the same length {n}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    batch = np.arange(n) // batch_size if batch_size else np.zeros(n, dtype=np.int64)
    adjusted = pub_radius.astype(np.float64)
    match = None
    for _ in range(max_iter if batch_size else 1):
        new = _rank_match(label, predict, radius, pub_label, pub_predict, adjusted)
        ratio = np.full(n, np.nan)
        ok = radius[np.argsort(new)] > 0  # ours matched with each published row
        inv = np.argsort(new)
        ratio[ok] = pub_radius[ok] / radius[inv][ok]
        c = np.array([np.nanmedian(ratio[batch == b]) if np.isfinite(ratio[batch == b]).any() else 1.0
                      for b in range(batch.max() + 1)])
        if match is not None and (new == match).all():
            break
        match = new
        adjusted = pub_radius / c[batch]
    return match, c


def confusion_matrix(label: np.ndarray, predict: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Counts ``[num_classes, num_classes]``: row = label, column = prediction."""
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(out, (label, predict), 1)
    return out


@torch.no_grad()
def compare_with_published(certifier: GloroCertifier, published: str, eps_list=(0.3, 0.6),
                           x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                           batch: int = 2000) -> dict:
    """Our certifier on the 10,000 MNIST test images versus the authors' published per-point radii.

    Args:
        certifier: a :class:`GloroCertifier` of the converted model.
        published: the published run (``"mnist_0.3_N"`` or ``"mnist_0.3_Y"``).
        eps_list: radii ε at which VRA (correct and r > ε) is compared.
        x, y: the MNIST test set (loaded when omitted).

    Returns a dict (plain Python numbers and lists):

    * ``confusion_equal``: label × prediction counts agree exactly; ``confusion_ours``,
      ``confusion_published`` ``[10, 10]``.
    * after :func:`match_published_rows` (only when the confusion matrices agree):
      ``radius_rel_diff_median``/``_p99``/``_max``: |r_ours − r_pub| / r_pub over rows with
      r_pub > 0; ``L_ratio_first``/``_last``/``_min``/``_max``: the per-batch ratio c_b =
      L_ours / L_b of the Lipschitz bounds (r_pub = c_b · r_ours); ``batch_residual_median``/
      ``_p99``/``_max`` and ``batch_residual_over_1e-4``: |r_pub / (c_b · r_ours) − 1|, which is
      float32 rounding when the conversion and the matching are exact.
    * per ε: ``vra@ε`` (ours), ``vra_published@ε``, ``vra_count_diff@ε`` (ours − published, in
      points), ``flips@ε`` (matched points certified by one side only) and ``borderline@ε``:
      correct published points with r_pub between ε·min(1, c) and ε·max(1, c) over the batch
      ratios c — the only points a Lipschitz-constant difference can move across ε;
      ``upper_bound@ε`` and ``upper_bound_published@ε``: 1 − P[r > 2ε]/P[r > ε] over correct
      points (Section 4.1), ours and from the published radii.

    The few points with a residual above 1e-4 have tiny radii (≈1e-3 or less): their margin is a
    difference of two nearly equal float32 logits, so its relative rounding error is large.
    """
    from .data import load_mnist
    from .metrics import upper_bound
    from .published import gloro_radii

    if x is None or y is None:
        x, y = load_mnist("test")
    labels, radii = [], []
    for i in range(0, len(x), batch):
        lab, rad = certifier.certified_radius(x[i:i + batch])
        labels.append(lab.cpu())
        radii.append(rad.cpu())
    predict = torch.cat(labels).numpy()
    radius = torch.cat(radii).double().numpy()
    label = y.cpu().numpy()
    pub = gloro_radii(published)
    cm_ours = confusion_matrix(label, predict)
    cm_pub = confusion_matrix(pub["label"], pub["predict"])
    out = dict(n=int(len(label)), confusion_equal=bool((cm_ours == cm_pub).all()),
               confusion_ours=cm_ours.tolist(), confusion_published=cm_pub.tolist(),
               L_sub=float(certifier.lipschitz_constant))
    correct, pub_correct = label == predict, pub["label"] == pub["predict"]
    c_lo, c_hi = 0.99, 1.01  # used only when no matching exists
    if out["confusion_equal"]:
        m, c = match_published_rows(label, predict, radius, pub["label"], pub["predict"], pub["radius"])
        r_pub = pub["radius"][m]
        ok = r_pub > 0
        rel = np.abs(radius[ok] - r_pub[ok]) / r_pub[ok]
        c_row = c[m // AUTHORS_BATCH_SIZE]
        ok2 = ok & (radius > 0)
        resid = np.abs(r_pub[ok2] / (c_row[ok2] * radius[ok2]) - 1)
        out.update(radius_rel_diff_median=float(np.median(rel)), radius_rel_diff_p99=float(np.quantile(rel, 0.99)),
                   radius_rel_diff_max=float(rel.max()),
                   L_ratio_first=float(c[0]), L_ratio_last=float(c[-1]), L_ratio_min=float(c.min()),
                   L_ratio_max=float(c.max()),
                   batch_residual_median=float(np.median(resid)), batch_residual_p99=float(np.quantile(resid, 0.99)),
                   batch_residual_max=float(resid.max()), **{"batch_residual_over_1e-4": int((resid > 1e-4).sum())},
                   matched_rows=m.tolist(), L_ratio_per_batch=c.tolist())
        c_lo, c_hi = min(1.0, float(c.min())) * (1 - 1e-5), max(1.0, float(c.max())) * (1 + 1e-5)
    for e in eps_list:
        vo = int((correct & (radius > e)).sum())
        vp = int((pub_correct & (pub["radius"] > e)).sum())
        out[f"vra@{e}"] = vo / len(label)
        out[f"vra_published@{e}"] = vp / len(label)
        out[f"vra_count_diff@{e}"] = vo - vp
        out[f"borderline@{e}"] = int((pub_correct & (pub["radius"] >= c_lo * e) & (pub["radius"] <= c_hi * e)).sum())
        if out["confusion_equal"]:
            out[f"flips@{e}"] = int(((radius > e) != (r_pub > e))[correct].sum())
        # Section 4.1's upper bound on the false-positive rate, 1 − P[r > 2ε]/P[r > ε] (correct points)
        ours_ub = upper_bound(radius, correct, e)["upper_bound"][0]
        pub_ub = upper_bound(pub["radius"], pub_correct, e)["upper_bound"][0]
        out[f"upper_bound@{e}"], out[f"upper_bound_published@{e}"] = float(ours_ub), float(pub_ub)
    return out


# ---------------------------------------------------------------------------------------------
# Writing the checkpoints
# ---------------------------------------------------------------------------------------------


def write_checkpoint(name: str, out_dir=None, threads: int = 1) -> dict:
    """Convert the authors' model for our ``name`` (a key of :data:`AUTHORS_MODELS`), write
    ``NAME.pt`` (float32 ``state_dict``) and ``NAME.json`` (schema of ``mnist_0.3.json`` with
    attribution, the conversion command and metrics measured on the 10,000 test images, plus the
    comparison with the authors' published radii), and return the json dict."""
    from .data import load_mnist
    from .gloro import load_checkpoint
    from .published import authors_model_archive
    from .registry import CHECKPOINT_DIR
    from .train_gloro import evaluate

    if name not in AUTHORS_MODELS:
        raise ValueError(f"name must be one of {sorted(AUTHORS_MODELS)}, got {name!r}")
    torch.set_num_threads(int(threads))
    info = AUTHORS_MODELS[name]
    out_dir = Path(out_dir) if out_dir is not None else CHECKPOINT_DIR
    t0 = time.time()
    net, config = convert_authors_model(info["published"])
    if not math.isclose(config["epsilon"], info["train_eps"], rel_tol=1e-6):
        raise ValueError(f"{info['published']}: config epsilon {config['epsilon']} != expected {info['train_eps']}")
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    torch.save(state, out_dir / f"{name}.pt")
    meta = {
        "kind": "gloro", "arch": "2C2F", "num_classes": 10, "input_shape": [1, 28, 28], "norm": 2.0,
        "eps": info["eps"], "dataset": "MNIST", "power_iteration_tol": 1e-9, "stored_dtype": "float32",
        "name": name,
        "description": info["description"],
        "attribution": dict(ATTRIBUTION, source_file=f"models/gloro/mnist/{info['published']}.gloronet",
                            shipped_copy=str(authors_model_archive(info["published"]).relative_to(out_dir.parent.parent))
                            if out_dir == CHECKPOINT_DIR else None,
                            note="weights converted from the authors' Keras HDF5 (channel permutations only; "
                                 "the function is unchanged); not retrained"),
        "training": {
            "command": "python -m degradation_lib.convert --all",
            "converted_from": info["published"],
            "config_json": config,
            "arch": "2C2F",
            "eps": info["eps"],
            "train_eps": info["train_eps"],
            "eval_eps": info["eval_eps"],
            "recipe": "the authors' (degradation-attacks README): 500 epochs, batch 128, Adam 1e-3 decayed to 1e-6, "
                      + ("TRADES λ 0.1" if info["published"].endswith("_N") else "TRADES λ 2.0, trained at 2ε"),
            "torch": torch.__version__,
        },
    }
    meta["training"]["convert_s"] = time.time() - t0
    cert = load_checkpoint(meta, torch.load(out_dir / f"{name}.pt", weights_only=True), torch.device("cpu"))
    x, y = load_mnist("test")
    t1 = time.time()
    L_sub = cert.lipschitz_constant
    metrics = evaluate(cert, x, y, info["eval_eps"])
    metrics["L_sub"] = L_sub
    metrics["eval_s"] = time.time() - t1
    meta["metrics"] = metrics
    cmp = compare_with_published(cert, info["published"], eps_list=info["eval_eps"], x=x, y=y)
    for key in ("matched_rows", "confusion_ours", "L_ratio_per_batch"):
        cmp.pop(key, None)
    meta["published_comparison"] = cmp
    meta["notes"] = (f"Converted from the authors' released Keras model {info['published']} "
                     f"(MIT licence, degradation_lib/published/LICENSE) with degradation_lib.convert; metrics "
                     "measured with our certifier (exact spectral norms for dense and small-input conv layers) "
                     "on the 10,000 MNIST test images. published_comparison: against the authors' per-point radii "
                     "(degradation_lib.published.gloro_radii), rows matched to test images by "
                     "degradation_lib.convert.match_published_rows (rank of radius within each (label, prediction) "
                     "group, corrected by one Lipschitz ratio per batch of 128 published rows).")
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models to convert, from {sorted(AUTHORS_MODELS)}")
    parser.add_argument("--all", action="store_true", help="convert every model of AUTHORS_MODELS")
    parser.add_argument("--out-dir", default=None, help="where NAME.pt/json go (default: the checkpoints folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    names = sorted(AUTHORS_MODELS) if args.all else args.names
    if not names:
        parser.error("give model names or --all")
    out = []
    for name in names:
        meta = write_checkpoint(name, out_dir=args.out_dir, threads=args.threads)
        print(name, json.dumps(meta["metrics"]), json.dumps({k: v for k, v in meta["published_comparison"].items()
                                                             if not k.startswith("confusion")}), flush=True)
        out.append(meta)
    return out


if __name__ == "__main__":
    main()


__all__ = ["AUTHORS_MODELS", "ATTRIBUTION", "read_keras_h5", "read_gloronet", "tf_same_padding", "minmax_permutation",
           "gloro_net_from_keras", "convert_authors_model", "match_published_rows", "confusion_matrix",
           "compare_with_published", "write_checkpoint", "AUTHORS_BATCH_SIZE"]
