"""One writer for the committed models: ``NAME.pt`` + ``NAME.json`` in the registry's layout.

The three training commands (``train_gloro``, ``train_smoothing``, ``train_linf``) end with
:func:`write_checkpoint`, so that every committed model is written the same way and read back by
:func:`degradation_lib.registry.load_model`:

* ``NAME.pt`` -- the network's ``state_dict``, every tensor detached, moved to the CPU and made
  contiguous (a model trained on CUDA loads anywhere, with ``weights_only=True``);
* ``NAME.json`` -- the metadata, one JSON object written with ``indent=1`` and a final newline.
  ``"kind"`` names the certifier family (a key of :data:`degradation_lib.registry.LOADERS`); the
  family's builder reads its own keys (``arch``, ``certifier``, ``eps`` ...), and ``"training"``
  and ``"metrics"`` record the recipe and what was measured.

Both files are written to temporary names first and renamed, so a crash leaves either the old
pair or the new one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .registry import CHECKPOINT_DIR, LOADERS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def write_checkpoint(name: str, state_dict: dict, meta: dict, out_dir: str | Path = CHECKPOINT_DIR) -> tuple[Path, Path]:
    """Write ``out_dir/NAME.pt`` (``state_dict`` on the CPU) and ``out_dir/NAME.json`` (``meta``).

    ``meta`` must be a JSON-serialisable dict whose ``"kind"`` is a registered certifier family;
    ``meta["name"]`` is set to ``name``. Returns the two paths. Raises ``ValueError`` naming the
    argument for a bad name (letters, digits, ``_ . -``; no path separators), an unknown kind, a
    non-tensor entry in ``state_dict`` or metadata that JSON cannot encode.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be letters, digits, '_', '.', '-' (no path separators), got {name!r}")
    if not isinstance(meta, dict) or meta.get("kind") not in LOADERS:
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise ValueError(f"meta['kind'] must be one of {sorted(LOADERS)}, got {kind!r}")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"state_dict must map names to tensors; not tensors: {bad[:5]}")
    meta = dict(meta, name=name)
    try:
        text = json.dumps(meta, indent=1) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable: {exc}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pt, js = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    cpu_state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    torch.save(cpu_state, pt.with_suffix(".pt.tmp"))
    js.with_suffix(".json.tmp").write_text(text, encoding="utf-8")
    os.replace(pt.with_suffix(".pt.tmp"), pt)
    os.replace(js.with_suffix(".json.tmp"), js)
    return pt, js


def device_option(parser, default: str = "auto") -> None:
    """Add the training commands' ``--device auto|cpu|cuda`` option to an argparse parser."""
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"],
                        help="where to train: 'auto' picks CUDA when present (default: %(default)s)")


__all__ = ["write_checkpoint", "device_option"]
