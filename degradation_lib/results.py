"""Per-point results that can be saved, loaded and merged (for sharded runs).

A :class:`PointResults` holds equal-length per-point arrays keyed by column name -- always an
``index`` column (the position of the point in its dataset) -- plus a JSON-serialisable ``meta``
dict (model, ε, seed, ...). Shards computed on different machines over disjoint index ranges are
combined with :func:`merge`, which refuses overlapping indices and mismatched metadata, so no
work is silently lost or double counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class PointResults:
    """Columns of per-point values (numpy ``[N]`` each) and run metadata."""

    columns: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        cols = {}
        for k, v in self.columns.items():
            a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            if a.ndim != 1:
                raise ValueError(f"column {k!r} must be one-dimensional, got shape {a.shape}")
            cols[k] = a
        if "index" not in cols:
            raise ValueError("PointResults needs an 'index' column")
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns have different lengths: {lengths}")
        if len(np.unique(cols["index"])) != len(cols["index"]):
            raise ValueError("duplicate values in the 'index' column")
        self.columns = cols

    def __len__(self) -> int:
        return len(self.columns["index"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def save(self, path) -> Path:
        """Write ``path`` (``.npz``; the metadata is stored alongside as JSON inside the archive)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, __meta__=np.array(json.dumps(self.meta)), **self.columns)
        return path

    @classmethod
    def load(cls, path) -> "PointResults":
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            cols = {k: data[k] for k in data.files if k != "__meta__"}
        return cls(cols, meta)


def merge(parts: list[PointResults]) -> PointResults:
    """Concatenate shards, sorted by ``index``.

    Raises ``ValueError`` when shards overlap, have different columns or different metadata
    (apart from a ``shard`` entry).
    """
    if not parts:
        raise ValueError("nothing to merge")
    names = set(parts[0].columns)
    strip = lambda m: {k: v for k, v in m.items() if k != "shard"}
    for p in parts[1:]:
        if set(p.columns) != names:
            raise ValueError(f"shards have different columns: {sorted(names)} vs {sorted(p.columns)}")
        if strip(p.meta) != strip(parts[0].meta):
            raise ValueError(f"shards come from different runs: {strip(parts[0].meta)} vs {strip(p.meta)}")
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")
    cols = {k: np.concatenate([p[k] for p in parts])[order] for k in names}
    return PointResults(cols, strip(parts[0].meta))  # duplicate indices raise in __post_init__


__all__ = ["PointResults", "merge"]
