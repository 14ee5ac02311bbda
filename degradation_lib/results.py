"""Per-point results that can be saved, loaded and merged (for sharded runs), with a manifest.

A :class:`PointResults` holds equal-length per-point arrays keyed by column name -- always an
``index`` column (the position of the point in its dataset) -- plus

* ``meta``: a JSON-serialisable dict that *identifies the run* (experiment, model, ε, attack
  settings, seed, ...). Shards of one run share it (apart from a ``shard`` entry);
* ``manifest``: a JSON-serialisable dict that records *how* it was computed (exact command, model
  weights' sha256, library/torch versions, device, threads, wall time, date, host); see
  :func:`make_manifest`. Shards have different manifests (different hosts, times).

Shards computed on different machines over disjoint index ranges are combined with
:func:`merge`, which refuses overlapping indices and mismatched metadata, so no work is silently
lost or double counted; the merged manifest keeps the fields all shards agree on and lists the
others per shard (``"shards"``), with the summed wall time.

Files are compressed ``.npz`` archives (``np.savez_compressed``; zip members carry CRC-32
checksums). :meth:`PointResults.load` raises :class:`ResultsFileError` (a ``ValueError``) naming
the file when it is truncated, corrupt or not a results file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class ResultsFileError(ValueError):
    """A results file that cannot be read: truncated, corrupt, or missing its metadata."""


@dataclass
class PointResults:
    """Columns of per-point values (numpy ``[N]`` each), run metadata and a provenance manifest."""

    columns: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

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
        if not isinstance(self.meta, dict) or not isinstance(self.manifest, dict):
            raise ValueError("meta and manifest must be dicts")
        self.columns = cols

    def __len__(self) -> int:
        return len(self.columns["index"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def select(self, index) -> "PointResults":
        """The rows whose ``index`` is in ``index`` (in the order of ``index``); ``ValueError`` for a
        missing one."""
        index = np.asarray(index)
        pos = {int(v): i for i, v in enumerate(self.columns["index"])}
        missing = [int(v) for v in index if int(v) not in pos]
        if missing:
            raise ValueError(f"index values not in these results: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        rows = np.array([pos[int(v)] for v in index], dtype=np.int64)
        return PointResults({k: v[rows] for k, v in self.columns.items()}, dict(self.meta), dict(self.manifest))

    def save(self, path, compressed: bool = True) -> Path:
        """Write ``path`` (``.npz``, compressed by default); meta and manifest are stored as JSON
        inside the archive. The file is written to a temporary name and renamed, so a killed run
        never leaves a half-written file under ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        writer = np.savez_compressed if compressed else np.savez
        writer(tmp, __meta__=np.array(json.dumps(self.meta)), __manifest__=np.array(json.dumps(self.manifest)),
               **self.columns)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "PointResults":
        """Read a file written by :meth:`save` (also the older files without a manifest).

        Raises ``FileNotFoundError`` for a missing file and :class:`ResultsFileError` naming the
        file when it is truncated, corrupt (CRC mismatch) or lacks the metadata entry.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "__meta__" not in data.files:
                    raise ResultsFileError(f"{path} is not a results file (no '__meta__' entry)")
                meta = json.loads(str(data["__meta__"]))
                manifest = json.loads(str(data["__manifest__"])) if "__manifest__" in data.files else {}
                cols = {k: data[k] for k in data.files if k not in ("__meta__", "__manifest__")}
        except ResultsFileError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError,
                RuntimeError) as e:
            raise ResultsFileError(f"cannot read results file {path}: it is truncated or corrupt "
                                   f"({type(e).__name__}: {e})") from e
        try:
            return cls(cols, meta, manifest)
        except ValueError as e:
            raise ResultsFileError(f"results file {path} is inconsistent: {e}") from e


def _merge_manifests(manifests: list[dict]) -> dict:
    if len(manifests) == 1:
        return dict(manifests[0])
    keys = sorted(set().union(*manifests))
    common, differing = {}, []
    for k in keys:
        values = [json.dumps(m.get(k), sort_keys=True) for m in manifests]
        if len(set(values)) == 1:
            common[k] = manifests[0].get(k)
        else:
            differing.append(k)
    out = dict(common)
    out["shards"] = [{k: m.get(k) for k in differing} for m in manifests]
    walls = [m.get("wall_time_s") for m in manifests]
    if all(isinstance(w, (int, float)) for w in walls):
        out["wall_time_s"] = float(sum(walls))          # total compute time over all shards
        out["wall_time_s_max_shard"] = float(max(walls))
    return out


def merge(parts: list[PointResults]) -> PointResults:
    """Concatenate shards, sorted by ``index``.

    Raises ``ValueError`` when shards overlap, have different columns or different metadata
    (apart from a ``shard`` entry); empty shards only need the same metadata. The manifests are combined: fields equal in every shard are
    kept, the others are listed per shard under ``"shards"``; ``wall_time_s`` becomes the sum.
    """
    if not parts:
        raise ValueError("nothing to merge")
    strip = lambda m: {k: v for k, v in m.items() if k != "shard"}
    manifest = _merge_manifests([p.manifest for p in parts])
    for p in parts[1:]:
        if strip(p.meta) != strip(parts[0].meta):
            raise ValueError(f"shards come from different runs: {strip(parts[0].meta)} vs {strip(p.meta)}")
    nonempty = [p for p in parts if len(p)] or parts[:1]     # an empty shard may lack columns
    parts = nonempty
    names = set(parts[0].columns)
    for p in parts[1:]:
        if set(p.columns) != names:
            raise ValueError(f"shards have different columns: {sorted(names)} vs {sorted(p.columns)}")
        if strip(p.meta) != strip(parts[0].meta):
            raise ValueError(f"shards come from different runs: {strip(parts[0].meta)} vs {strip(p.meta)}")
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")
    cols = {k: np.concatenate([p[k] for p in parts])[order] for k in names}
    return PointResults(cols, strip(parts[0].meta), manifest)  # duplicate indices raise in __post_init__


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str | None:
    """The commit of the library's checkout (with ``+dirty`` for local changes), or None."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def make_manifest(*, params: dict, model: str | None = None, weights_path=None, device=None, seed=None,
                  wall_time_s: float | None = None, command: str | None = None, **extra) -> dict:
    """The provenance record stored with every experiment run.

    Fields: ``command`` (default: this process's command line), ``params``, ``model``,
    ``weights_sha256`` (of ``weights_path``), ``library_version``, ``git_commit``,
    ``torch_version``, ``numpy_version``, ``python_version``, ``device`` (and its name for
    CUDA), ``threads`` (``torch.get_num_threads()``), ``seed``, ``wall_time_s``, ``date`` (UTC,
    ISO 8601), ``host``, plus ``extra``.
    """
    from . import __version__

    device = torch.device(device) if device is not None else None
    m = dict(
        command=command if command is not None else " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        params=params,
        model=model,
        weights_sha256=file_sha256(weights_path) if weights_path is not None else None,
        library_version=__version__,
        git_commit=_git_commit(),
        torch_version=torch.__version__,
        numpy_version=np.__version__,
        python_version=platform.python_version(),
        device=str(device) if device is not None else None,
        device_name=(torch.cuda.get_device_name(device) if device is not None and device.type == "cuda"
                     else platform.processor() or platform.machine()),
        threads=torch.get_num_threads(),
        seed=seed,
        wall_time_s=wall_time_s,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        host=platform.node(),
    )
    m.update(extra)
    json.dumps(m)  # must be JSON-serialisable
    return m


def run_commands(manifest: dict) -> list[str]:
    """The command(s) that computed a run, from its manifest: one for an unsharded run, one per
    shard (in the order merged) for a merged one. Raises ``ValueError`` when the manifest records none."""
    if isinstance(manifest.get("command"), str):
        return [manifest["command"]]
    shards = [s.get("command") for s in manifest.get("shards", [])]
    if shards and all(isinstance(c, str) for c in shards):
        return shards
    raise ValueError("manifest records no command (neither 'command' nor one per entry of 'shards')")


__all__ = ["PointResults", "merge", "ResultsFileError", "make_manifest", "file_sha256", "run_commands"]
