"""Committed, trained models: ``load_model(name)`` returns a ready certifier.

Each model is two files in ``degradation_lib/checkpoints/``:

* ``NAME.pt``: the network's ``state_dict`` (``torch.save``; loaded with ``weights_only=True``);
* ``NAME.json``: metadata -- ``"kind"`` (which certifier family builds it), the architecture and
  certifier settings the family needs, the training recipe and the metrics measured after
  training.

A family registers its builder in :data:`LOADERS` as ``"module:function"``; the function takes
``(meta: dict, state_dict: dict, device: torch.device)`` and returns a :class:`Certifier`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from .certifier import Certifier, resolve_device

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

LOADERS: dict[str, str] = {
    "gloro": "degradation_lib.gloro:load_checkpoint",
    "smoothing": "degradation_lib.smoothing:load_checkpoint",
    "linf": "degradation_lib.linf:load_checkpoint",
}


def available_models() -> list[str]:
    """Names of the committed models (those with both ``.json`` and ``.pt``)."""
    return sorted(p.stem for p in CHECKPOINT_DIR.glob("*.json") if p.with_suffix(".pt").is_file())


def model_metadata(name: str) -> dict:
    """The ``NAME.json`` metadata of a committed model (recipe, settings, measured metrics)."""
    known = available_models()
    if name not in known:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(known) or '(none yet)'}")
    return json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())


def load_model(name: str, device: str | torch.device = "cpu") -> Certifier:
    """A ready certifier for the committed model ``name`` on ``device`` ("auto" picks CUDA).

    Raises ``ValueError`` listing the known names when ``name`` is unknown.
    """
    meta = model_metadata(name)
    kind = meta.get("kind")
    if kind not in LOADERS:
        raise ValueError(f"model {name!r} has unknown kind {kind!r}; known kinds: {sorted(LOADERS)}")
    module_name, func_name = LOADERS[kind].split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    device = resolve_device(device)
    state = torch.load(CHECKPOINT_DIR / f"{name}.pt", map_location=device, weights_only=True)
    certifier = builder(meta, state, device)
    certifier.model.eval()
    return certifier


__all__ = ["load_model", "available_models", "model_metadata", "CHECKPOINT_DIR", "LOADERS"]
