"""Soundness of the ℓ∞ certificates under rounding (issue 13) on all 10,000 MNIST test images.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/check_linf_soundness.py [--eps 0.1] [--n 10000]

For ``mnist_linf_0.1``: the sound margin lower bounds the certifier uses (``compute_bounds(...,
sound=True)``: float64, every rounding error bounded; KW ∩ IBP and IBP) against the former
float32 bounds (``sound=False`` on the float32 model, round to nearest, no widening) at ε on the
first ``--n`` test images: VRA of each, how many per-point decisions differ, the largest
difference of the margin bounds and the smallest |margin bound| (a decision can only change where
that is below the difference). Also the wall time of both on the first ``--n-time`` images (the
cost ratio of the sound bounds). Prints one json line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from degradation_lib import load_mnist, load_model  # noqa: E402
from degradation_lib.linf import compute_bounds, input_box, margin_spec  # noqa: E402


def margin_bounds(model, x, labels, eps, method, sound, batch):
    out = []
    for s in range(0, x.shape[0], batch):
        xs = x[s:s + batch]
        xs = xs.double() if sound else xs
        lo, hi = input_box(xs, eps, True, outward=sound)
        C = margin_spec(labels[s:s + batch], 10, dtype=xs.dtype)
        with torch.no_grad():
            out.append(compute_bounds(model, lo, hi, C, method, sound=sound)[0].double())
    return torch.cat(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=float, default=0.1, help="ℓ∞ radius ε")
    parser.add_argument("--n", type=int, default=10000, help="test images compared")
    parser.add_argument("--n-time", type=int, default=1000, help="test images timed (sound vs former)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cert = load_model("mnist_linf_0.1")
    x, y = load_mnist("test")
    x, y = x[:args.n], y[:args.n]
    pred = cert.predict(x)
    out = {"model": "mnist_linf_0.1", "eps": args.eps, "n": args.n, "clean": float((pred == y).double().mean())}
    for method in ("kw_ibp", "ibp"):
        lb = {}
        for sound in (True, False):
            t = time.perf_counter()
            lb[sound] = margin_bounds(cert.model, x, pred, args.eps, method, sound, cert.batch_size).min(1).values
            out[f"{method}_{'sound' if sound else 'float32'}_s"] = round(time.perf_counter() - t, 1)
            out[f"{method}_vra_{'sound' if sound else 'float32'}"] = float(((lb[sound] > 0) & (pred == y)).double().mean())
        out[f"{method}_decisions_changed"] = int(((lb[True] > 0) != (lb[False] > 0)).sum())
        out[f"{method}_max_abs_diff"] = float((lb[True] - lb[False]).abs().max())
        out[f"{method}_min_abs_bound"] = float(lb[True].abs().min())
    xt = x[:args.n_time]
    for sound in (False, True, False, True):
        t = time.perf_counter()
        margin_bounds(cert.model, xt, pred[:args.n_time], args.eps, "kw_ibp", sound, cert.batch_size)
        out.setdefault(f"time_{args.n_time}_{'sound' if sound else 'float32'}_s", []).append(round(time.perf_counter() - t, 1))
    a, b = (min(out[f"time_{args.n_time}_{k}_s"]) for k in ("sound", "float32"))
    out["cost_ratio_sound_over_float32"] = round(a / b, 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
