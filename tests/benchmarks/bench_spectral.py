"""Benchmark: the two routes of the sound spectral-norm bound (issue 13), tightness and time.

    .venv/bin/python tests/benchmarks/bench_spectral.py [--threads 1] [--skip-exact]

1. A CIFAR-10 6C2F layer stack (``GloroNet("6C2F")``, 32 × 32 × 3 input) with random weights
   (N(0, 1/fan_in)): per layer the route the certifier takes by default (explicit for Gram side
   n ≤ ``spectral.MAX_EXPLICIT_GRAM``, circulant above), its bound and time; the circulant bound
   of every layer; the exact ‖A‖₂ (ARPACK on the float64 operator, as in tests/test_soundness.py)
   and the ratios bound / exact. Totals: ``net.converge()`` with the default threshold and with
   the circulant route forced everywhere (``max_gram_size=0``).
2. The committed MNIST GloRo nets: circulant bound / exact per conv layer.
3. Random small layers (tests/test_soundness.py's geometries): circulant bound / full SVD.

Prints one json line per item.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degradation_lib import load_model  # noqa: E402
from degradation_lib.gloro import GloroNet, LipschitzConv2d  # noqa: E402
from degradation_lib.spectral import conv2d_circulant_bound, conv2d_route, conv2d_spectral_bound  # noqa: E402
from test_soundness import CIRCULANT_GEOMETRIES, GLORO_MODELS, exact_norm_arpack, explicit_conv  # noqa: E402


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--skip-exact", action="store_true", help="no ARPACK reference on the 6C2F stack")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    net = GloroNet("6C2F", num_classes=10, seed=0).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in net.body:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64)
                               / np.sqrt(layer.weight[0].numel()))
    for l, layer in enumerate(net.body):
        row = dict(item="6C2F", layer=l, kind=type(layer).__name__)
        if isinstance(layer, LipschitzConv2d):
            geo = (layer.weight, layer.input_shape, layer.stride[0], layer.padding[0])
            out_n = int(np.prod(layer.output_shape()))
            row.update(input_shape=layer.input_shape, stride=layer.stride[0], gram_side=min(int(np.prod(layer.input_shape)), out_n),
                       route=conv2d_route(layer.weight.shape, *geo[1:]))
            default, t_default = timed(lambda: conv2d_spectral_bound(*geo))
            circ, t_circ = timed(lambda: conv2d_circulant_bound(*geo))
            row.update(bound_default=default.bound, seconds_default=round(t_default, 3),
                       bound_circulant=circ.bound, seconds_circulant=round(t_circ, 3))
        else:
            b, t = timed(lambda: layer.converge())
            row.update(route="explicit", bound_default=b, seconds_default=round(t, 3))
        if not args.skip_exact:
            exact, t_exact = timed(lambda: exact_norm_arpack(layer))
            row.update(exact=exact, seconds_exact=round(t_exact, 2),
                       default_over_exact=row["bound_default"] / exact)
            if "bound_circulant" in row:
                row["circulant_over_exact"] = row["bound_circulant"] / exact
        print(json.dumps(row), flush=True)
    for limit in (None, 0):
        _, t = timed(lambda: net.converge(max_gram_size=limit))
        print(json.dumps(dict(item="6C2F net.converge()", max_gram_size=limit, routes=[l.bound_method for l in net.body],
                              seconds=round(t, 2))), flush=True)

    for name in GLORO_MODELS:
        body = load_model(name).model.body
        ratios = []
        for layer in body:
            if isinstance(layer, LipschitzConv2d):
                b = conv2d_circulant_bound(layer.weight, layer.input_shape, layer.stride[0], layer.padding[0]).bound
                ratios.append(round(b / exact_norm_arpack(layer), 6))
        print(json.dumps(dict(item="committed", model=name, circulant_over_exact=ratios)), flush=True)

    ratios = []
    for c_in, c_out, k, s, p, h, w in CIRCULANT_GEOMETRIES:
        gen = torch.Generator().manual_seed(c_in * 100 + k)
        weight = torch.randn(c_out, c_in, k, k, generator=gen, dtype=torch.float64)
        exact = np.linalg.svd(explicit_conv(weight, (c_in, h, w), s, p), compute_uv=False)[0]
        ratios.append(round(conv2d_circulant_bound(weight, (c_in, h, w), s, p).bound / exact, 6))
    print(json.dumps(dict(item="small random layers", geometries=CIRCULANT_GEOMETRIES, circulant_over_full_svd=ratios,
                          min=min(ratios), max=max(ratios))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
