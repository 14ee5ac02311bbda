"""The paper authors' released artefacts, shipped with the library (MIT licence).

Copied from the authors' public repository (``ravimangal/degradation-attacks``); the licence and
the authors' copyright notice are in ``degradation_lib/published/LICENSE`` and every file is
described in ``degradation_lib/published/README.md``. They are *data*: the ground truth our
reproduction is checked against, and the inputs of the CIFAR-10 and ImageNet panels of Figures 2–3.

* :func:`gloro_radii` -- per-point certified ℓ2 radii of the authors' GloRo nets (Figure 2);
* :func:`rs_log` -- Cohen et al.'s CERTIFY logs for randomized smoothing (Figure 3);
* :func:`authors_model_archive` -- the authors' two MNIST ε = 0.3 GloRo models (Keras HDF5 inside
  a gzip tar).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
"""Folder holding the copied artefacts (``data/``, ``models/``, ``LICENSE``, ``README.md``)."""

GLORO_RADII = ("mnist_0.3_N", "mnist_0.3_Y", "mnist_1.58_N", "mnist_1.58_Y", "cifar10_0.14_N", "cifar10_0.14_Y")
"""Names of the published GloRo radius files: ``_N`` trained at ε, ``_Y`` trained at 2ε."""

RS_LOGS = {
    "cifar10": {0.12: "resnet110/noise_0.12/test/sigma_0.12", 0.25: "resnet110/noise_0.25/test/sigma_0.25",
                0.5: "resnet110/noise_0.50/test/sigma_0.50", 1.0: "resnet110/noise_1.00/test/sigma_1.00"},
    "imagenet": {0.25: "resnet50/noise_0.25/test/sigma_0.25", 0.5: "resnet50/noise_0.50/test/sigma_0.50",
                 1.0: "resnet50/noise_1.00/test/sigma_1.00"},
}
"""Cohen et al.'s published CERTIFY logs (test split) by dataset and noise level σ."""


def _parse_time(s: str) -> float:
    """Seconds from ``"15.4"`` or ``"H:MM:SS.ffffff"``."""
    if ":" in s:
        h, m, sec = s.split(":")
        return 3600 * int(h) + 60 * int(m) + float(sec)
    return float(s)


def _read_table(path: Path, delimiter: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"published file missing: {path}")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def gloro_radii(name: str) -> dict[str, np.ndarray]:
    """Per-point results of the authors' GloRo net ``name`` (one of :data:`GLORO_RADII`).

    Returns a dict of numpy ``[10000]`` arrays: ``index`` (row order of the authors' pipeline,
    *not* the standard test order; see the README), ``label``, ``predict`` (int64), ``radius``
    (float64, certified ℓ2 radius) and ``correct`` (bool).
    """
    if name not in GLORO_RADII:
        raise ValueError(f"unknown published GloRo run {name!r}; known: {', '.join(GLORO_RADII)}")
    dataset = "cifar10" if name.startswith("cifar10") else "mnist"
    rows = _read_table(PUBLISHED_DIR / "data" / "gloro" / dataset / name, ",")
    return {
        "index": np.array([int(r["index"]) for r in rows], dtype=np.int64),
        "label": np.array([int(r["label"]) for r in rows], dtype=np.int64),
        "predict": np.array([int(r["predict"]) for r in rows], dtype=np.int64),
        "radius": np.array([float(r["radius"]) for r in rows], dtype=np.float64),
        "correct": np.array([r["correct"] == "True" for r in rows], dtype=bool),
    }


def rs_log(dataset: str, sigma: float) -> dict[str, np.ndarray]:
    """Cohen et al.'s CERTIFY log for ``dataset`` ("cifar10" or "imagenet") at noise level ``sigma``.

    Returns numpy arrays: ``idx`` (test-set index), ``label``, ``predict`` (-1 = ABSTAIN),
    ``radius`` (ℓ2, 0 when abstaining), ``correct`` (bool), ``time`` (seconds per image on the
    original GPU). n0 = 100, n = 100,000, α = 0.001.
    """
    if dataset not in RS_LOGS:
        raise ValueError(f"dataset must be one of {sorted(RS_LOGS)}, got {dataset!r}")
    sigmas = RS_LOGS[dataset]
    match = [s for s in sigmas if abs(s - float(sigma)) < 1e-9]
    if not match:
        raise ValueError(f"sigma must be one of {sorted(sigmas)} for {dataset}, got {sigma!r}")
    rows = _read_table(PUBLISHED_DIR / "data" / "rs" / dataset / sigmas[match[0]], "\t")
    return {
        "idx": np.array([int(r["idx"]) for r in rows], dtype=np.int64),
        "label": np.array([int(r["label"]) for r in rows], dtype=np.int64),
        "predict": np.array([int(r["predict"]) for r in rows], dtype=np.int64),
        "radius": np.array([float(r["radius"]) for r in rows], dtype=np.float64),
        "correct": np.array([r["correct"] == "1" for r in rows], dtype=bool),
        "time": np.array([_parse_time(r["time"]) for r in rows], dtype=np.float64),
    }


def authors_model_archive(name: str) -> Path:
    """Path of the authors' ``mnist_0.3_N`` / ``mnist_0.3_Y`` ``.gloronet`` archive (gzip tar)."""
    names = ("mnist_0.3_N", "mnist_0.3_Y")
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    return PUBLISHED_DIR / "models" / "gloro" / "mnist" / f"{name}.gloronet"


__all__ = ["PUBLISHED_DIR", "GLORO_RADII", "RS_LOGS", "gloro_radii", "rs_log", "authors_model_archive"]
