"""Named experiments of the paper, a sharded runner, and the results store the book reads.

An *experiment* is a library call that runs over a set of test indices of a committed model
(:func:`degradation_lib.load_model`) and returns per-point :class:`~degradation_lib.results.PointResults`:

* always ``index``, ``label`` (true), ``pred`` (f(x); for smoothing CERTIFY's guess ĉ_A),
  ``cert_label`` (the certifier's label, ``ABSTAIN`` = −1 where it abstains), ``radius``
  (certified radius, float64; NaN where the experiment does not compute it), ``certified`` and
  ``certified_2eps`` (bool: certified at ε, resp. 2ε, i.e. radius > ε -- the library's
  convention);
* per attack ``<a>``: ``rejected_<a>`` (bool: ``certify(x', ε)`` is ⊥ at the attack point x'),
  ``dist_<a>`` (‖x' − x‖_p), ``label_<a>`` (``certify(x', ε)``: the defended answer),
  ``pred_<a>`` (f(x')), ``radius_<a>`` (certified radius at x', NaN where not computed) and
  ``outside_<a>`` (how far x' leaves [0, 1]: max over coordinates, 0 inside).

The registry :data:`EXPERIMENTS` (``python -m degradation_lib.experiments list``):

=========  ===========================================================================  =========
name       what                                                                          certifier
=========  ===========================================================================  =========
table1     Algorithm 3.1 (Table 1): L2 PGD at 2ε (CE against the own prediction, 50      gloro
           steps, relative step 0.025, random start), two projections: ``alg31`` (ours,
           into the ε-ball ∩ [0, 1]) and ``alg31_authors`` (the authors' script: foolbox
           bounds (−2ε, 1 + 2ε), last iterate, rescaled to length exactly ε, no clip)
table3     ε-PGD (Appendix B.1, Table 3): the same PGD at ε, no projection: ``eps_pgd``    gloro
rejection  Algorithm 3.1 with the library's rejection-PGD (ascends GloRo's ⊥ margin at   gloro
           the projected point): ``alg31_rejection`` -- not in the paper
table2     SPGD (Algorithm 3.2, Table 2): 50 steps × 100 samples, averaged logits, CE on   smoothing
           the true label, at 2ε then projected; CERTIFY n = 100,000, n0 = 100,
           α = 0.001 at x and x': ``spgd``
table4     Algorithm 3.1 under ℓ∞ (Appendix C, Table 4): sign-PGD at 2ε (CE on the true    linf
           label, 50 steps, step 0.025·2ε, random start), clipped to the ε-box ∩ [0, 1]:
           ``alg31``; radius not computed (``certified``/``certified_2eps`` from the
           certifier's check at ε and 2ε)
radii      certified radius only (Figures 2-3): every certifier                          any
certattack the certificate attack (notebook 11, ours) with Alg. 3.1 and ε-PGD, and the  any
           sound unattackability bounds (:mod:`degradation_lib.run_certattack`)
=========  ===========================================================================  =========

Reproducible per point
----------------------
Every random draw of a point -- the PGD random start, SPGD's noise, CERTIFY's noise -- comes
from a CPU ``torch.Generator`` seeded from ``(seed, index, stream)`` (:func:`point_generator`;
one stream per purpose and attack), never from a generator shared by a batch. The attacks and
:class:`~degradation_lib.SmoothedClassifier` accept one generator per example for this. Hence a
point's result does not depend on which shard or batch it is in, and a smoothing run is
reproduced exactly (the same votes, the same p̲_A and radius) from its seed and the CERTIFY
chunk size ``batch_size`` stored in its parameters. Points are processed in fixed blocks of the
run's index list (``block_size``), and a shard is a contiguous range of whole blocks, so shards
merged give the unsharded result bit for bit.

The store
---------
Merged runs live in ``degradation_lib/results/`` (inside the package, so an installed library
finds them), one compressed ``.npz`` per run named ``<experiment>-<model>[-<tag>].npz``, with the
run's parameters in ``meta`` and its provenance in ``manifest`` (command, model weights' sha256,
versions, device, threads, seed, wall time, date, host). Shards and checkpoints of unfinished
runs go to ``degradation_lib/results/partial/`` (not committed). :func:`available_results`,
:func:`load_results` and :func:`find_stored` read the store.

Command line::

    python -m degradation_lib.experiments list
    python -m degradation_lib.experiments run table1 --model mnist_1.58 [--shard 2/8]
        [--num-images N | --indices 0:10000:20 | --indices 3,5,8] [--seed S] [--device auto]
        [--eps E] [--param steps=50 ...] [--tag T] [--threads T] [--block-size B]
    python -m degradation_lib.experiments merge table1-mnist_1.58
    python -m degradation_lib.experiments show table1-mnist_1.58

``--shard i/n`` is 0-based (``0/8`` … ``7/8``); a shard writes
``results/partial/<name>/shard_i_of_n.npz`` and ``merge`` combines all n of them into the store.
A run without ``--shard`` writes the store file directly. A killed run resumes from its
checkpoint (whole blocks). Shards are made of whole blocks (the experiment's block size, or
``--block-size``, which is part of the run's identity): more shards than blocks leave some
empty, and ``run_shard`` warns. The unit of work for a scheduler is :func:`run_shard`, pure given
its arguments.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import shlex
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .attacks import authors_gloro_attack, degradation_attack, eps_pgd, pgd, rejection_pgd
from .certifier import ABSTAIN, Certifier, check_eps, resolve_device
from .registry import CHECKPOINT_DIR, load_model, model_metadata
from .results import PointResults, ResultsFileError, file_sha256, make_manifest, merge

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""The store: merged runs ``<experiment>-<model>[-<tag>].npz``."""

PARTIAL_DIR = RESULTS_DIR / "partial"
"""Shards and checkpoints of runs in progress (not committed)."""

NUM_TEST = 10_000
"""MNIST test images."""


# --------------------------------------------------------------------------------------------
# per-point randomness
# --------------------------------------------------------------------------------------------

def stream_id(purpose: str) -> int:
    """A stable integer for a random stream's name (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(purpose.encode())


def point_generator(seed: int, index: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from (seed, index, stream) via numpy's ``SeedSequence``.

    Distinct triples give statistically independent streams; the same triple always gives the
    same stream, on any machine.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index!r}")
    state = np.random.SeedSequence([int(seed), int(index), stream_id(stream)]).generate_state(2, np.uint32)
    value = (int(state[0]) << 31) ^ int(state[1])          # < 2**63
    return torch.Generator(device="cpu").manual_seed(value)


def point_generators(seed: int, index, stream: str) -> list[torch.Generator]:
    """:func:`point_generator` for every entry of ``index``."""
    return [point_generator(seed, int(i), stream) for i in np.asarray(index).reshape(-1)]


# --------------------------------------------------------------------------------------------
# experiment definitions
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Experiment:
    """A named experiment: which certifiers it applies to, its parameters and its block function.

    ``compute(certifier, x, y, index, params, seed) -> dict[str, array [B]]`` computes the
    columns of one block of points (``index``: their dataset positions); it must draw all
    randomness from :func:`point_generator`.
    """

    name: str
    description: str
    kinds: tuple[str, ...]
    attacks: tuple[str, ...]
    defaults: dict
    compute: Callable
    block_size: dict = field(default_factory=lambda: {"gloro": 500, "linf": 250, "smoothing": 5})
    every_20th: tuple[str, ...] = ("smoothing",)
    default_num_images: dict = field(default_factory=lambda: {"smoothing": 100})


def _norm_dist(x, xp, norm) -> np.ndarray:
    return torch.linalg.vector_norm((xp.double() - x.double()).flatten(1), ord=norm, dim=1).cpu().numpy()


def _outside(xp) -> np.ndarray:
    flat = xp.double().flatten(1)
    return torch.maximum((-flat).amax(1), (flat - 1).amax(1)).clamp_min(0).cpu().numpy()


def _clean_columns(c: Certifier, x, y, eps, radius=True) -> dict:
    if radius:
        labels, r = c.certified_radius(x)
        r = r.double()
        certified, certified_2 = r > eps, r > 2 * eps
        pred = c.predict(x)
    else:                                       # the certifier's direct check at ε and 2ε
        pred = c.predict(x)
        labels = c.certify(x, eps)
        certified = labels != ABSTAIN
        certified_2 = c.certify(x, 2 * eps) != ABSTAIN
        r = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
    return dict(label=y.cpu().numpy(), pred=pred.cpu().numpy(), cert_label=labels.cpu().numpy(),
                radius=r.cpu().numpy(), certified=certified.cpu().numpy(), certified_2eps=certified_2.cpu().numpy())


def _attacked_columns(c: Certifier, x, xp, eps, name, radius=True) -> dict:
    if radius:
        lab, r = c.certified_radius(xp)
        r = r.double()
        defended = torch.where(r > eps, lab, torch.full_like(lab, ABSTAIN))
        r = r.cpu().numpy()
    else:
        defended = c.certify(xp, eps)
        r = np.full(x.shape[0], np.nan)
    return {f"rejected_{name}": (defended == ABSTAIN).cpu().numpy(),
            f"dist_{name}": _norm_dist(x, xp, c.norm),
            f"label_{name}": defended.cpu().numpy(),
            f"pred_{name}": c.predict(xp).cpu().numpy(),
            f"radius_{name}": r,
            f"outside_{name}": _outside(xp)}


def _gloro_attack(name: str, c, x, eps, gens, p):
    if name == "alg31":
        attack = functools.partial(pgd, steps=p["steps"], rel_step=p["rel_step"], random_start=True, generator=gens)
        return degradation_attack(c, x, eps, attack=attack), c
    if name == "alg31_authors":
        free = copy.copy(c)                      # shares the model and the converged constants
        free.unit_range = False                  # the authors' x' may leave [0, 1]
        return authors_gloro_attack(c, x, eps, steps=p["steps"], rel_step=p["rel_step"], generator=gens), free
    if name == "eps_pgd":
        return eps_pgd(c, x, eps, steps=p["steps"], rel_step=p["rel_step"], random_start=True, generator=gens), c
    if name == "alg31_rejection":
        attack = rejection_pgd(c, eps, steps=p["steps"], rel_step=p["rel_step"], random_start=True, generator=gens)
        return degradation_attack(c, x, eps, attack=attack), c
    raise ValueError(f"unknown GloRo attack {name!r}")


def _gloro_compute(attacks):
    def compute(c, x, y, index, p, seed):
        eps = p["eps"]
        cols = _clean_columns(c, x, y, eps)
        for a in attacks:
            xp, cc = _gloro_attack(a, c, x, eps, point_generators(seed, index, f"start/{a}"), p)
            cols.update(_attacked_columns(cc, x, xp, eps, a))
        return cols
    return compute


def _smoothing_details(c, x, index, seed, stream):
    c.generator = point_generators(seed, index, stream)
    try:
        return c.certify_details(x)
    finally:
        c.generator = None


def _table2_compute(c, x, y, index, p, seed):
    from .spgd import SPGD, spgd_degradation_attack

    eps = p["eps"]
    d = _smoothing_details(c, x, index, seed, "certify")
    r = d["radius"].double()
    cols = dict(label=y.cpu().numpy(), pred=d["guess"].cpu().numpy(), cert_label=d["label"].cpu().numpy(),
                radius=r.cpu().numpy(), certified=(r > eps).cpu().numpy(), certified_2eps=(r > 2 * eps).cpu().numpy(),
                n_A=d["n_A"].cpu().numpy())
    spgd = SPGD(steps=p["spgd_steps"], samples=p["spgd_samples"], average=p["spgd_average"],
                generator=point_generators(seed, index, "spgd"))
    xp = spgd_degradation_attack(c, x, eps, attack=spgd, y=y.to(x.device) if p["spgd_true_label"] else None)
    da = _smoothing_details(c, xp, index, seed, "certify/spgd")
    ra = da["radius"].double()
    defended = torch.where(ra > eps, da["label"], torch.full_like(da["label"], ABSTAIN))
    cols.update({"rejected_spgd": (defended == ABSTAIN).cpu().numpy(), "dist_spgd": _norm_dist(x, xp, 2.0),
                 "label_spgd": defended.cpu().numpy(), "pred_spgd": da["guess"].cpu().numpy(),
                 "radius_spgd": ra.cpu().numpy(), "outside_spgd": _outside(xp), "n_A_spgd": da["n_A"].cpu().numpy()})
    return cols


def _table4_compute(c, x, y, index, p, seed):
    eps = p["eps"]
    cols = _clean_columns(c, x, y, eps, radius=False)
    attack = functools.partial(pgd, labels=y.to(x.device), steps=p["steps"], rel_step=p["rel_step"],
                               random_start=True, generator=point_generators(seed, index, "start/alg31"))
    xp = degradation_attack(c, x, eps, attack=attack)
    cols.update(_attacked_columns(c, x, xp, eps, "alg31", radius=False))
    return cols


def _radii_compute(c, x, y, index, p, seed):
    kind = p["kind"]
    if kind == "smoothing":
        d = _smoothing_details(c, x, index, seed, "certify")
        labels, r, pred = d["label"], d["radius"], d["guess"]
        extra = {"n_A": d["n_A"].cpu().numpy()}
    else:
        if kind == "linf" and p.get("radius_method"):
            c.method = p["radius_method"]
        labels, r = c.certified_radius(x)
        pred, extra = c.predict(x), {}
    return dict(label=y.cpu().numpy(), pred=pred.cpu().numpy(), cert_label=labels.cpu().numpy(),
                radius=r.double().cpu().numpy(), **extra)


_PGD = dict(eps=None, steps=50, rel_step=0.025)
_SMOOTH = dict(eps=0.5, n0=100, n=100_000, alpha=0.001, batch_size=2_000)

EXPERIMENTS: dict[str, Experiment] = {
    "table1": Experiment("table1", "Algorithm 3.1 vs GloRo (Table 1): L2 PGD at 2ε, our projection (alg31) and "
                         "the authors' unclipped rescale (alg31_authors)", ("gloro",), ("alg31", "alg31_authors"),
                         dict(_PGD), _gloro_compute(("alg31", "alg31_authors"))),
    "table3": Experiment("table3", "ε-PGD vs GloRo (Appendix B.1, Table 3): L2 PGD at ε", ("gloro",), ("eps_pgd",),
                         dict(_PGD), _gloro_compute(("eps_pgd",))),
    "rejection": Experiment("rejection", "Algorithm 3.1 with rejection-PGD (the library's default attack on "
                            "GloRo; not in the paper)", ("gloro",), ("alg31_rejection",), dict(_PGD),
                            _gloro_compute(("alg31_rejection",))),
    "table2": Experiment("table2", "SPGD vs randomized smoothing (Table 2): SPGD at 2ε then projection, "
                         "CERTIFY at x and x'", ("smoothing",), ("spgd",),
                         dict(_SMOOTH, spgd_steps=50, spgd_samples=100, spgd_average="logits", spgd_true_label=True),
                         _table2_compute),
    "table4": Experiment("table4", "Algorithm 3.1 vs the l_inf certifier (Appendix C, Table 4): sign-PGD at 2ε "
                         "on the true label, clipped", ("linf",), ("alg31",), dict(eps=0.1, steps=50, rel_step=0.025),
                         _table4_compute),
    "radii": Experiment("radii", "certified radius per point (Figures 2-3)", ("gloro", "smoothing", "linf"), (),
                        dict(eps=None, n0=100, n=100_000, alpha=0.001, batch_size=2_000, radius_method=None),
                        _radii_compute, default_num_images={"smoothing": 500}),
    "certattack": Experiment("certattack", "the certificate attack (ascends the certifier's rejection score over the "
                             "ε-ball; not in the paper) with Algorithm 3.1 and ε-PGD on the same points, and the "
                             "sound unattackability bounds (notebook 11)", ("gloro", "linf", "smoothing"),
                             ("cert", "alg31", "eps_pgd"),
                             dict(eps=None, steps=100, restarts=2, targets=3, schedule="cosine", baselines=True,
                                  bound=True, n0=100, n=100_000, alpha=0.001, batch_size=2_000),
                             lambda *a: _certattack_compute(*a)),
}
"""The registry of named experiments."""


def _certattack_compute(c, x, y, index, p, seed):
    from .run_certattack import certattack_compute
    return certattack_compute(c, x, y, index, p, seed)


def get_experiment(name: str) -> Experiment:
    """The :class:`Experiment` called ``name``; ``ValueError`` listing the known names."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _model_kind(model: str) -> str:
    return model_metadata(model)["kind"]


def resolve_params(name: str, model: str, **params) -> dict:
    """The experiment's full parameter dict for ``model``: defaults, overridden by ``params``.

    ``eps`` defaults to the model's own ε (its json) for GloRo. Smoothing-only or
    linf-only settings are dropped for other certifiers. ``ValueError`` for unknown parameters.
    """
    exp = get_experiment(name)
    kind = _model_kind(model)
    if kind not in exp.kinds:
        raise ValueError(f"experiment {name!r} runs on {'/'.join(exp.kinds)} models; {model!r} is a {kind!r} model")
    unknown = set(params) - set(exp.defaults)
    if unknown:
        raise ValueError(f"unknown parameters for {name!r}: {sorted(unknown)}; accepted: {sorted(exp.defaults)}")
    p = dict(exp.defaults)
    p.update({k: v for k, v in params.items() if v is not None})
    if name == "radii":
        keep = {"smoothing": ("n0", "n", "alpha", "batch_size"), "linf": ("radius_method",), "gloro": ()}[kind]
        p = {k: v for k, v in p.items() if k in keep or k == "eps"}
        if kind == "linf" and p.get("radius_method") is None:
            p["radius_method"] = model_metadata(model).get("certifier", {}).get("method", "kw_ibp")
    if p.get("eps") is None:
        meta_eps = model_metadata(model).get("eps")
        if meta_eps is None and name != "radii":
            raise ValueError(f"eps: model {model!r} has no 'eps' in its json; pass eps explicitly")
        p["eps"] = None if meta_eps is None else float(meta_eps)
    if p.get("eps") is not None:
        p["eps"] = check_eps(p["eps"])
    p["kind"] = kind
    json.dumps(p)
    return p


def default_indices(name: str, model: str, num_images: int | None = None) -> np.ndarray:
    """The experiment's test indices: all 10,000 (first ``num_images``) for GloRo and ℓ∞; every
    20th test image (as Cohen et al.) for smoothing, 100 by default (500 for ``radii``)."""
    exp = get_experiment(name)
    kind = _model_kind(model)
    if num_images is not None and (isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer))
                                   or not 1 <= num_images <= NUM_TEST):
        raise ValueError(f"num_images must be an integer in [1, {NUM_TEST}], got {num_images!r}")
    if kind in exp.every_20th:
        idx = np.arange(0, NUM_TEST, 20)
        n = exp.default_num_images.get(kind, len(idx)) if num_images is None else num_images
        if n > len(idx):
            raise ValueError(f"num_images: at most {len(idx)} (every 20th test image) for {kind}, got {n}")
        return idx[:n]
    idx = np.arange(NUM_TEST)
    return idx if num_images is None else idx[:num_images]


def _check_indices(indices) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("indices must not be empty")
    if idx.min() < 0 or idx.max() >= NUM_TEST:
        raise ValueError(f"indices must lie in [0, {NUM_TEST - 1}], got [{idx.min()}, {idx.max()}]")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("indices must not repeat")
    return idx


def _indices_spec(idx: np.ndarray) -> str:
    if len(idx) > 1 and np.all(np.diff(idx) == idx[1] - idx[0]) and idx[1] > idx[0]:
        return f"{idx[0]}:{idx[-1] + 1}:{idx[1] - idx[0]}"
    if len(idx) == 1:
        return f"{idx[0]}:{idx[0] + 1}:1"
    return ",".join(str(int(i)) for i in idx)


def parse_indices(spec: str) -> np.ndarray:
    """``"a:b:s"`` (a Python range) or ``"i,j,k"`` → indices."""
    spec = spec.strip()
    try:
        if ":" in spec:
            parts = [int(v) for v in spec.split(":")]
            return np.arange(*parts)
        return np.array([int(v) for v in spec.split(",") if v.strip()], dtype=np.int64)
    except ValueError:
        raise ValueError(f"indices must be 'start:stop[:step]' or a comma list of integers, got {spec!r}") from None


def blocks_of(indices: np.ndarray, block_size: int) -> list[np.ndarray]:
    """The run's index list cut into consecutive blocks of ``block_size`` (the last may be shorter)."""
    return [indices[i:i + block_size] for i in range(0, len(indices), block_size)]


def shard_blocks(num_blocks: int, shard_i: int, num_shards: int) -> range:
    """Block numbers of shard ``shard_i`` (0-based) of ``num_shards``: a contiguous range."""
    for v, nm in ((shard_i, "shard_i"), (num_shards, "num_shards")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{nm} must be an integer, got {v!r}")
    if num_shards < 1 or not 0 <= shard_i < num_shards:
        raise ValueError(f"need 0 <= shard_i < num_shards, got shard_i={shard_i}, num_shards={num_shards}")
    bounds = np.linspace(0, num_blocks, num_shards + 1).round().astype(int)
    return range(bounds[shard_i], bounds[shard_i + 1])


def run_meta(name: str, model: str, indices: np.ndarray, seed: int, params: dict) -> dict:
    """The identity of a run (equal for all its shards): what :func:`merge` and resuming check."""
    exp = get_experiment(name)
    return dict(experiment=name, model=model, eps=params.get("eps"), params=params, seed=int(seed),
                indices=_indices_spec(indices), num_points=int(len(indices)),
                block_size=int(exp.block_size[params["kind"]]), attacks=list(exp.attacks),
                norm=str(load_norm(model)))


def load_norm(model: str) -> float:
    kind = _model_kind(model)
    return math.inf if kind == "linf" else 2.0


def _canonical_command(name, model, shard_i, num_shards, indices, seed, device, params, exp, block_size=None) -> str:
    args = ["python", "-m", "degradation_lib.experiments", "run", name, "--model", model,
            "--shard", f"{shard_i}/{num_shards}", "--indices", _indices_spec(indices), "--seed", str(seed),
            "--device", str(device)]
    if block_size is not None and block_size != exp.block_size[params["kind"]]:
        args += ["--block-size", str(block_size)]
    for k, v in params.items():
        if k != "kind" and v != exp.defaults.get(k):
            args += ["--param", f"{k}={v}"]
    return " ".join(shlex.quote(a) for a in args)


def run_shard(name: str, model: str, shard_i: int = 0, num_shards: int = 1, *, indices=None,
              num_images: int | None = None, seed: int = 0, device: str | torch.device = "auto",
              checkpoint=None, progress: bool = False, command: str | None = None, block_size: int | None = None,
              **params) -> PointResults:
    """Run shard ``shard_i`` (0-based) of ``num_shards`` of experiment ``name`` on ``model``.

    The run's index list (``indices``, else :func:`default_indices` with ``num_images``) is cut
    into blocks of the experiment's ``block_size``; this shard computes a contiguous range of
    whole blocks. Pure given its arguments: every random draw depends only on (seed, index)
    (:func:`point_generator`), so ``merge([run_shard(..., i, n) for i in range(n)])`` equals
    ``run_shard(..., 0, 1)`` point for point.

    Args:
        name: an experiment of :data:`EXPERIMENTS`.
        model: a committed model (:func:`degradation_lib.available_models`).
        shard_i, num_shards: which shard (``0 <= shard_i < num_shards``).
        indices: MNIST test indices (default: :func:`default_indices`).
        num_images: first this many default indices.
        seed: integer ≥ 0.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        checkpoint: path of a checkpoint file; finished blocks are saved there after each block
            and reused when the file holds the same run (a killed run resumes).
        progress: show a tqdm progress bar.
        command: recorded in the manifest (default: the equivalent CLI command).
        block_size: points per block (default: the experiment's, per certifier kind); part of
            the run's identity (``meta``), so all shards of a run must use the same.
        params: experiment parameters (see ``EXPERIMENTS[name].defaults``), e.g. ``steps=50``.

    Returns:
        :class:`PointResults` of the shard's points, with ``meta`` (:func:`run_meta` plus
        ``shard``) and a manifest (:func:`degradation_lib.results.make_manifest`).
    """
    exp = get_experiment(name)
    p = resolve_params(name, model, **params)
    if indices is not None and num_images is not None:
        raise ValueError("give indices or num_images, not both")
    idx = _check_indices(default_indices(name, model, num_images) if indices is None else indices)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    meta = run_meta(name, model, idx, seed, p)
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        meta["block_size"] = int(block_size)
    meta["shard"] = f"{shard_i}/{num_shards}"
    blocks = blocks_of(idx, meta["block_size"])
    mine = [blocks[b] for b in shard_blocks(len(blocks), shard_i, num_shards)]
    if num_shards > len(blocks):
        warnings.warn(f"{num_shards} shards of a run of {len(blocks)} block(s) of at most {meta['block_size']} "
                      f"points: {num_shards - len(blocks)} shard(s) are empty and shard {shard_i} has "
                      f"{sum(len(b) for b in mine)} points; a smaller block_size (--block-size) splits it evenly",
                      stacklevel=2)
    dev = resolve_device(device)

    done: dict[int, dict] = {}
    prior_wall = 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        try:
            old = PointResults.load(checkpoint)
        except ResultsFileError:
            old = None
        # reuse only the same run on the same weights (a checkpoint left by a killed run on a model
        # that was retrained since would otherwise be merged silently into the new run)
        weights = CHECKPOINT_DIR / f"{model}.pt"
        if (old is not None and old.meta == meta and weights.is_file()
                and old.manifest.get("weights_sha256") == file_sha256(weights)):
            prior_wall = float(old.manifest.get("wall_time_s") or 0.0)
            pos = {int(v): i for i, v in enumerate(old["index"])}
            for b, blk in enumerate(mine):
                if all(int(v) in pos for v in blk):
                    rows = [pos[int(v)] for v in blk]
                    done[b] = {k: v[rows] for k, v in old.columns.items()}

    from .data import load_mnist

    t0 = time.perf_counter()
    certifier = None
    x_all, y_all = load_mnist("test")
    parts = []
    cmd = command or _canonical_command(name, model, shard_i, num_shards, idx, seed, device, p, exp, meta["block_size"])

    def snapshot(wall):
        cols = {k: np.concatenate([pt[k] for pt in parts]) for k in parts[0]} if parts else {}
        manifest = make_manifest(params=p, model=model, weights_path=CHECKPOINT_DIR / f"{model}.pt", device=dev,
                                 seed=seed, wall_time_s=round(wall, 3), command=cmd,
                                 invoked=" ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
                                 num_points=int(sum(len(b) for b in mine)))
        if not cols:
            cols = {"index": np.zeros(0, dtype=np.int64)}
        return PointResults(cols, dict(meta), manifest)

    from tqdm import tqdm

    bar = tqdm(total=int(sum(len(b) for b in mine)), desc=f"{name} {model} shard {shard_i}/{num_shards}",
               disable=not progress, unit="pt")
    for b, blk in enumerate(mine):
        if b in done:
            parts.append(done[b])
            bar.update(len(blk))
            continue
        if certifier is None:
            certifier = load_model(model, device=dev)
            if p["kind"] == "gloro":
                certifier.K                                  # converge the power iteration once
            if p["kind"] == "smoothing":                     # CERTIFY's settings are run parameters
                from .smoothing import SmoothedClassifier
                certifier = SmoothedClassifier(certifier.model, certifier.num_classes, certifier.sigma,
                                               n0=p["n0"], n=p["n"], alpha=p["alpha"], batch_size=p["batch_size"],
                                               pushforward=certifier.pushforward)
        x = x_all[torch.as_tensor(blk)].to(dev)
        y = y_all[torch.as_tensor(blk)].to(dev)
        cols = exp.compute(certifier, x, y, blk, p, seed)
        cols = {"index": np.asarray(blk, dtype=np.int64), **{k: np.asarray(v) for k, v in cols.items()}}
        parts.append(cols)
        bar.update(len(blk))
        if checkpoint is not None:
            snapshot(prior_wall + time.perf_counter() - t0).save(checkpoint)
    bar.close()
    return snapshot(prior_wall + time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------

def result_name(experiment: str, model: str, tag: str | None = None) -> str:
    """The store name of a run: ``<experiment>-<model>[-<tag>]``."""
    get_experiment(experiment)
    return f"{experiment}-{model}" + (f"-{tag}" if tag else "")


def available_results(results_dir=None) -> list[str]:
    """Names of the stored (merged) runs, e.g. ``["table1-mnist_1.58", ...]``."""
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return sorted(p.stem for p in d.glob("*.npz"))


def load_results(name: str, results_dir=None) -> PointResults:
    """The stored run ``name`` (merged :class:`PointResults` with ``meta`` and ``manifest``).

    Raises ``ValueError`` listing the stored names for an unknown name, and
    :class:`~degradation_lib.results.ResultsFileError` naming the file for a corrupt one.
    """
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    known = available_results(d)
    if name not in known:
        raise ValueError(f"no stored results named {name!r}; stored: {', '.join(known) or '(none)'}")
    return PointResults.load(d / f"{name}.npz")


def find_stored(experiment: str, model: str, indices=None, seed: int = 0, tag: str | None = None,
                results_dir=None, **params) -> PointResults | None:
    """The stored run of ``experiment`` on ``model`` restricted to ``indices``, if it matches.

    Matches when the store holds ``result_name(experiment, model, tag)`` with the same seed
    and parameters (:func:`resolve_params`) and every requested index; returns those rows (all
    stored rows when ``indices`` is None), else None. Per-point seeding makes a subset of a
    stored run equal to a fresh run on that subset.
    """
    name = result_name(experiment, model, tag)
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    if name not in available_results(d):
        return None
    res = load_results(name, d)
    if res.meta.get("seed") != seed or res.meta.get("params") != resolve_params(experiment, model, **params):
        return None
    if indices is None:
        return res
    idx = np.asarray(indices).reshape(-1)
    if not np.isin(idx, res["index"]).all():
        return None
    return res.select(idx)


def recompute(stored: PointResults, indices, device: str | torch.device = "cpu") -> PointResults:
    """Recompute the points ``indices`` of a stored run with the current code (same seed, params)."""
    m = stored.meta
    params = {k: v for k, v in m["params"].items() if k != "kind"}
    return run_shard(m["experiment"], m["model"], 0, 1, indices=np.asarray(indices), seed=int(m["seed"]),
                     device=device, **params)


def compare(stored: PointResults, fresh: PointResults, radius_atol: float = 1e-4, radius_rtol: float = 1e-4,
            dist_atol: float = 1e-4) -> list[str]:
    """Differences between a stored run and a recomputation of (some of) its points.

    Integer and boolean columns (labels, predictions, certification and rejection decisions,
    vote counts) must be equal; ``radius*`` and other float columns (e.g. scores) within
    ``radius_atol + radius_rtol·|r|`` (NaN = NaN); ``dist_*``/``outside_*`` within ``dist_atol``. Returns human-readable
    mismatches (empty when they agree).
    """
    s = stored.select(fresh["index"])
    out = []
    if set(s.columns) != set(fresh.columns):
        out.append(f"columns differ: {sorted(set(s.columns) ^ set(fresh.columns))}")
    for k in sorted(set(s.columns) & set(fresh.columns)):
        a, b = s[k], fresh[k]
        if k.startswith("radius"):
            bad = ~(np.isclose(a, b, rtol=radius_rtol, atol=radius_atol) | (np.isnan(a) & np.isnan(b)))
        elif k.startswith(("dist_", "outside_")):
            bad = ~np.isclose(a, b, rtol=0, atol=dist_atol)
        elif np.issubdtype(np.asarray(a).dtype, np.floating):   # other float columns (scores, slack)
            bad = ~(np.isclose(a, b, rtol=radius_rtol, atol=radius_atol) | (np.isnan(a) & np.isnan(b)))
        else:
            bad = a != b
        if bad.any():
            where = fresh["index"][bad]
            out.append(f"{k}: {int(bad.sum())} of {len(bad)} points differ (indices {where[:10].tolist()}; "
                       f"stored {a[bad][:5].tolist()} vs fresh {b[bad][:5].tolist()})")
    return out


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def _parse_value(text: str, default):
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float) or default is None:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _shard_files(name: str) -> list[Path]:
    return sorted((PARTIAL_DIR / name).glob("shard_*_of_*.npz"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m degradation_lib.experiments",
                                     description="Run, merge and list the book's experiments (see the module docstring).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="experiments and stored results")
    r = sub.add_parser("run", help="run an experiment (or one shard of it)")
    r.add_argument("experiment")
    r.add_argument("--model", required=True)
    r.add_argument("--shard", default=None, help="i/n, 0-based: shard i of n (default: the whole run)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--num-images", type=int, default=None)
    g.add_argument("--indices", default=None, help="'start:stop[:step]' or 'i,j,k'")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto")
    r.add_argument("--eps", type=float, default=None)
    r.add_argument("--param", action="append", default=[], help="key=value experiment parameter (repeatable)")
    r.add_argument("--tag", default=None, help="suffix of the store name")
    r.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    r.add_argument("--block-size", type=int, default=None,
                   help="points per block (the unit of sharding and checkpoints; default: the experiment's)")
    r.add_argument("--scheduler", default=None,
                   help="run the shards as Dask tasks: 'local' (a LocalCluster) or tcp://HOST:8786 (degradation_lib.distributed)")
    r.add_argument("--tasks", type=int, default=None, help="shard tasks with --scheduler (default: 4 per worker)")
    r.add_argument("--workers", type=int, default=2, help="LocalCluster processes (1 thread each) with --scheduler local")
    m = sub.add_parser("merge", help="merge the shards of a run into the store")
    m.add_argument("name")
    s = sub.add_parser("show", help="summary and manifest of a stored run")
    s.add_argument("name")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for e in EXPERIMENTS.values():
            print(f"{e.name:10} [{'/'.join(e.kinds)}] {e.description}")
        print("stored:", ", ".join(available_results()) or "(none)")
        return 0
    if args.cmd == "show":
        res = load_results(args.name)
        print(json.dumps(dict(meta=res.meta, manifest=res.manifest, num_points=len(res), columns=sorted(res.columns)),
                         indent=1))
        return 0
    if args.cmd == "merge":
        files = _shard_files(args.name)
        if not files:
            raise SystemExit(f"no shards of {args.name!r} in {PARTIAL_DIR / args.name}")
        parts = [PointResults.load(f) for f in files]
        ns = {p.meta["shard"].split("/")[1] for p in parts}
        if len(ns) != 1:
            raise SystemExit(f"shards of different splits: {sorted(p.meta['shard'] for p in parts)}")
        n = int(ns.pop())
        have = sorted(int(p.meta["shard"].split("/")[0]) for p in parts)
        if have != list(range(n)):
            raise SystemExit(f"missing shards of {n}: have {have}")
        merged = merge(parts)
        if len(merged) != merged.meta["num_points"]:
            raise SystemExit(f"merged {len(merged)} points, the run has {merged.meta['num_points']}")
        path = merged.save(RESULTS_DIR / f"{args.name}.npz")
        print(f"merged {len(parts)} shards, {len(merged)} points -> {path}")
        return 0

    # run
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = get_experiment(args.experiment)
    params = {}
    for kv in args.param:
        if "=" not in kv:
            raise SystemExit(f"--param needs key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        if k not in exp.defaults:
            raise SystemExit(f"unknown parameter {k!r} for {exp.name}; accepted: {sorted(exp.defaults)}")
        params[k] = _parse_value(v, exp.defaults[k])
    if args.eps is not None:
        params["eps"] = args.eps
    shard_i, num_shards = 0, 1
    if args.shard:
        try:
            shard_i, num_shards = (int(v) for v in args.shard.split("/"))
        except ValueError:
            raise SystemExit(f"--shard must be i/n, got {args.shard!r}") from None
    indices = parse_indices(args.indices) if args.indices else None
    name = result_name(args.experiment, args.model, args.tag)
    if args.scheduler:                                    # Dask: all shards as tasks, merged into the store
        if args.shard:
            raise SystemExit("--shard and --scheduler exclude each other (the scheduler runs all shards)")
        if args.block_size is not None:
            raise SystemExit("--block-size is not supported with --scheduler (it splits the run into --tasks itself)")
        from .distributed import run_experiment
        res = run_experiment(args.experiment, args.model, args.tasks or 4 * args.workers, args.scheduler,
                             workers=args.workers, indices=indices, num_images=args.num_images, seed=args.seed,
                             device=args.device, **params)
        path = res.save(RESULTS_DIR / f"{name}.npz")
        print(f"{len(res)} points, {res.manifest.get('wall_time_s', float('nan')):.1f} s in tasks -> {path}")
        return 0
    tag = f"shard_{shard_i}_of_{num_shards}"
    ckpt = PARTIAL_DIR / name / f"{tag}.checkpoint.npz"
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "degradation_lib.experiments"] + sys.argv[1:]) \
        if argv is None else None
    res = run_shard(args.experiment, args.model, shard_i, num_shards, indices=indices, num_images=args.num_images,
                    seed=args.seed, device=args.device, checkpoint=ckpt, progress=True, command=command,
                    block_size=args.block_size, **params)
    if args.shard:
        path = res.save(PARTIAL_DIR / name / f"{tag}.npz")
    else:
        res.meta.pop("shard", None)
        path = res.save(RESULTS_DIR / f"{name}.npz")
    ckpt.unlink(missing_ok=True)
    print(f"{len(res)} points in {res.manifest['wall_time_s']:.1f} s -> {path}")
    return 0


__all__ = ["EXPERIMENTS", "Experiment", "RESULTS_DIR", "PARTIAL_DIR", "point_generator", "point_generators",
           "run_shard", "resolve_params", "default_indices", "available_results", "load_results", "find_stored",
           "recompute", "compare", "result_name", "get_experiment", "shard_blocks", "blocks_of", "parse_indices"]

if __name__ == "__main__":
    sys.exit(main())
