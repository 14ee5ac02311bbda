"""Benchmark: certifying the 10,000 MNIST test images with a GloRo net vs a plain forward pass.

    .venv/bin/python tests/benchmarks/bench_gloro.py [--model mnist_0.3] [--repeats 5] [--threads 1]

The Lipschitz constants are computed (power iteration to convergence) once, before timing, and
cached; the timed certify() call is the full public path (input validation, forward pass, ⊥ logit).
Each side is timed ``repeats`` times, alternating, and the medians are compared. Target: ratio ≤ 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from degradation_lib import load_mnist, load_model, model_metadata


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_0.3", help="committed GloRo model")
    parser.add_argument("--repeats", type=int, default=5, help="timings per side (median is used)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = load_mnist("test")
    eps = model_metadata(args.model)["eps"]
    cert = load_model(args.model)
    t0 = time.perf_counter()
    cert.lipschitz_constants()
    t_lip = time.perf_counter() - t0
    cert.certify(x[:256], eps)  # warm-up (constants are cached from here on)
    with torch.no_grad():
        cert.model(x[:256])
    t_fwd, t_cert = [], []
    for _ in range(args.repeats):
        with torch.no_grad():
            t0 = time.perf_counter()
            cert.model(x)
            t_fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cert.certify(x, eps)
        t_cert.append(time.perf_counter() - t0)
    f, c = statistics.median(t_fwd), statistics.median(t_cert)
    print(f"model {args.model} (eps={eps}), {len(x)} images, {args.threads} thread(s)")
    print(f"power iteration to convergence (once, cached): {t_lip:.3f} s")
    print(f"forward pass: median {f:.3f} s   certify: median {c:.3f} s")
    print(f"ratio certify / forward = {c / f:.3f}  (target <= 1.5)")
    return c / f


if __name__ == "__main__":
    main()
