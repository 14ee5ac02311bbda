"""Benchmark: batched CERTIFY against its floor and against a one-image-at-a-time loop.

Run from the repository root (single thread, as on the shared CPU)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_smoothing.py

Three timings for the same ``images`` MNIST test images and ``n0 + n`` noise samples per image,
each the best of ``repeats`` interleaved runs (the machine is shared, so minima are the stable
statistic; by default the clock is the CPU time of this process, which the other jobs on a
shared machine disturb far less than wall time):

* the *floor*: drawing the noisy samples x + ζ and the bare forward passes (plus argmax) of the
  base network, in chunks, at the best chunk size -- the work any CERTIFY must do;
  also the forward passes alone, with the noise drawn once and reused (a lower floor);
* ``SmoothedClassifier.certified_radius`` (the default sampler, which draws ζ itself, and the
  exact push-forward sampler of ``pushforward=True``);
* the reference implementation's pattern: one image at a time, ``n0`` then ``n`` samples in
  batches of 400, predictions moved to numpy and counted there.

Prints the ratios certify/floor (target ≤ 1.15) and certify/loop (target ≤ 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from statsmodels.stats.proportion import proportion_confint

import degradation_lib as dl
from degradation_lib.smoothing import SmoothedClassifier


CLOCK = time.perf_counter


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


@torch.no_grad()
def floor(model, x, sigma, per_image, chunk, gen, reuse_noise=False):
    """Noise + forward passes of all x.shape[0] * per_image samples, chunk rows at a time."""
    flat = x.reshape(x.shape[0], -1)
    total = x.shape[0] * per_image
    fixed = torch.randn((chunk, flat.shape[1]), generator=gen) if reuse_noise else None
    for start in range(0, total, chunk):
        m = min(chunk, total - start)
        if reuse_noise:
            noisy = fixed[:m]
        else:   # the least work: one broadcast clean row per chunk (exact when chunks stay within an image)
            noisy = torch.randn((m, flat.shape[1]), generator=gen).mul_(sigma).add_(flat[start // per_image])
        model(noisy.view(m, *x.shape[1:])).argmax(1)


@torch.no_grad()
def reference_loop(model, x, sigma, n0, n, alpha, gen, batch=400):
    """The one-image-at-a-time pattern of the published implementation (counts in numpy)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        counts = []
        for num in (n0, n):
            c = np.zeros(10, dtype=int)
            remaining = num
            while remaining > 0:
                b = min(batch, remaining)
                remaining -= b
                rep = xi.repeat(b, 1, 1, 1)
                noise = torch.randn(rep.shape, generator=gen) * sigma
                pred = model(rep + noise).argmax(1)
                c += np.bincount(pred.numpy(), minlength=10)
            counts.append(c)
        top = counts[0].argmax()
        p_low = proportion_confint(counts[1][top], n, alpha=2 * alpha, method="beta")[0]
        out.append((top, p_low))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mnist_smooth_0.25")
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks", type=int, nargs="+", default=[1_000, 4_000, 10_000, 25_000])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: CPU seconds of this process (stable on a shared machine; use with 1 thread)")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    smoothed = dl.load_model(args.model, "cpu")
    model, sigma = smoothed.model, smoothed.sigma
    x = dl.load_mnist("test")[0][: args.images]
    per = args.n0 + args.n
    gen = torch.Generator().manual_seed(0)
    print(f"{args.model}: {args.images} images x ({args.n0} + {args.n}) samples = {args.images * per:,} "
          f"forward passes, {torch.get_num_threads()} thread(s), best of {args.repeats}, {args.clock} time")

    floors = {c: best_of(lambda: floor(model, x, sigma, per, c, gen), args.repeats) for c in args.chunks}
    best_chunk = min(floors, key=floors.get)
    fwd_only = best_of(lambda: floor(model, x, sigma, per, best_chunk, gen, reuse_noise=True), args.repeats)
    for c, t in floors.items():
        print(f"  floor (noise + forward), chunk {c:>6}: {t:.3f} s")
    print(f"  forward passes only (noise reused), chunk {best_chunk}: {fwd_only:.3f} s")

    def certify(pf, chunk):
        clf = SmoothedClassifier(model, 10, sigma, n0=args.n0, n=args.n, batch_size=chunk,
                                 generator=torch.Generator().manual_seed(1), pushforward=pf)
        return lambda: clf.certified_radius(x)

    ours = {c: best_of(certify(False, c), args.repeats) for c in args.chunks}
    ours_chunk = min(ours, key=ours.get)
    for c, t in ours.items():
        print(f"  SmoothedClassifier.certified_radius, batch_size {c:>6}: {t:.3f} s")
    pushed = best_of(certify(True, ours_chunk), args.repeats)
    print(f"  ... with pushforward=True, batch_size {ours_chunk}: {pushed:.3f} s")
    loop = best_of(lambda: reference_loop(model, x, sigma, args.n0, args.n, 0.001, gen), args.repeats)
    print(f"  one image at a time, batch 400 (reference pattern): {loop:.3f} s")

    t = ours[ours_chunk]
    print(f"RATIO certify / floor (noise + forward, best chunk {best_chunk}) = {t / floors[best_chunk]:.3f}  (target <= 1.15)")
    print(f"RATIO certify / forward passes only = {t / fwd_only:.3f}")
    print(f"RATIO certify / one-image loop (batch 400) = {t / loop:.3f}  (target <= 1)")
    print(f"RATIO certify with pushforward / floor = {pushed / floors[best_chunk]:.3f}; / loop = {pushed / loop:.3f}")


if __name__ == "__main__":
    main()
