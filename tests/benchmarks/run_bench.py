"""``make bench``: every performance ratio of the library, measured in one run, written to one JSON.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/run_bench.py [--device auto] [--threads 1]
        [--execute-notebooks] [--out benchmarks/results/bench-<device>-<date>.json]

Every figure is a ratio of two timings taken in this process, interleaved (A, B, A, B, ...), on
one device, with the torch version and thread count recorded. On the CPU with one thread the
clock is the CPU time of this process (``time.process_time``: other jobs on a shared machine
disturb it far less than wall time); otherwise wall time with CUDA synchronisation. Each side
reports the best (minimum) and the median of its repeats; ratios use the minima.

Entries (the targets are those of issue 17):

* ``gloro_certify``: GloRo certification (``certify(x, ε)``, the full public path) of the 10,000
  MNIST test images vs a bare forward pass of the same images (target ≤ 1.5).
* ``smoothing_certify``: batched CERTIFY (``SmoothedClassifier.certified_radius``) vs the bare
  noise + forward passes of the same number of samples (target ≤ 1.15), and vs the published
  one-image-at-a-time CERTIFY (Cohen et al.'s ``Smooth.certify`` pattern re-implemented here:
  batches of 400 copies of one image, predictions moved to numpy and counted one by one in a
  Python loop; also with ``np.bincount`` counting, a kinder variant).
* ``upper_bound_curve``: the upper bound of Section 3.3 over 100 radii vs at one radius, both from
  one certification pass (target ≤ 1.05); also vs two ``certify`` passes per radius.
* ``pgd_step``: one step of Algorithm 3.1's default attack on a GloRo net (PGD ascending the
  rejection score through the projection) vs one forward + backward pass of the bare network
  (target ≤ 1.3): the marginal cost of a step, (t(2S steps) − t(S steps))/S, and the cost
  amortized over S steps with the fixed costs, for all points and with early exit (only the
  points certified at x are attacked; the others are already rejected).
* ``linf_certify``: the ℓ∞ certifier (IBP and KW∩IBP, ``certify(x, 0.1)``) vs a forward pass, per
  image.
* ``notebooks``: wall time per notebook: papermill's recorded duration of the committed
  ``.ipynb`` (when and where it was last executed), or with ``--execute-notebooks`` executed here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

import degradation_lib as dl
from degradation_lib.attacks import rejection_pgd
from degradation_lib.linf import LinfCertifier
from degradation_lib.smoothing import SmoothedClassifier

ROOT = Path(__file__).resolve().parents[2]


class Timer:
    """Interleaved timings of named callables on one device."""

    def __init__(self, device: torch.device, cpu_clock: bool):
        self.device, self.cpu_clock = device, cpu_clock
        self.clock = time.process_time if cpu_clock else time.perf_counter

    def once(self, fn) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = self.clock()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock() - t0

    def compare(self, fns: dict, repeats: int, warmup: bool = True) -> dict:
        if warmup:
            for fn in fns.values():
                fn()
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                times[k].append(self.once(fn))
        return {k: dict(best_s=min(v), median_s=statistics.median(v), repeats=len(v)) for k, v in times.items()}


def ratio(timings: dict, num: str, den: str, target: float | None = None, scale: float = 1.0) -> dict:
    r = timings[num]["best_s"] * scale / timings[den]["best_s"]
    out = dict(numerator=num, denominator=den, ratio=r)
    if target is not None:
        out.update(target=target, met=bool(r <= target))
    return out


# -- GloRo ------------------------------------------------------------------------------------
def bench_gloro(T: Timer, x, models, repeats):
    out = {}
    for name in models:
        cert = dl.load_model(name, T.device)
        eps = dl.model_metadata(name)["eps"]
        cert.lipschitz_constants()                     # power iteration once, cached
        xs = x.to(T.device)

        def forward():
            with torch.no_grad():
                cert.model(xs)

        tm = T.compare(dict(forward=forward, certify=lambda: cert.certify(xs, eps)), repeats)
        out[name] = dict(images=len(xs), eps=eps, timings=tm, **ratio(tm, "certify", "forward", 1.5))
        print(f"gloro {name}: certify/forward = {out[name]['ratio']:.3f}", flush=True)
    return out


# -- randomized smoothing ---------------------------------------------------------------------
@torch.no_grad()
def noise_and_forward(model, x, sigma, per_image, chunk, gen):
    """The floor: noisy samples x + ζ and bare forward passes (+ argmax), ``chunk`` rows at a time."""
    flat = x.reshape(x.shape[0], -1)
    total = x.shape[0] * per_image
    start = 0
    while start < total:
        m = min(chunk, per_image - start % per_image)                  # chunks stay within an image
        noisy = torch.randn((m, flat.shape[1]), generator=gen, device=x.device).mul_(sigma).add_(flat[start // per_image])
        model(noisy.view(m, *x.shape[1:])).argmax(1)
        start += m


@torch.no_grad()
def cohen_certify(model, x, sigma, n0, n, alpha, num_classes, gen, batch=400, python_count=True):
    """The published CERTIFY, one image at a time (Cohen et al. 2019, ``code/core.py`` pattern).

    For each image: ``_sample_noise`` with n0 then n samples, in batches of ``batch`` copies of the
    image plus σ·N(0, I) noise, predictions moved to numpy and counted one by one (or with
    ``np.bincount`` when ``python_count`` is False); the Clopper-Pearson bound by statsmodels.
    """
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        counts = []
        for num in (n0, n):
            c = np.zeros(num_classes, dtype=int)
            for _ in range(math.ceil(num / batch)):
                b = min(batch, num)
                num -= b
                rep = xi.repeat((b, 1, 1, 1))
                noise = torch.randn(rep.shape, generator=gen, device=x.device) * sigma
                pred = model(rep + noise).argmax(1).cpu().numpy()
                if python_count:
                    for idx in pred:
                        c[idx] += 1
                else:
                    c += np.bincount(pred, minlength=num_classes)
            counts.append(c)
        top = int(counts[0].argmax())
        p_low = proportion_confint(counts[1][top], n, alpha=2 * alpha, method="beta")[0]
        out.append((top, sigma * norm.ppf(p_low)) if p_low >= 0.5 else (dl.ABSTAIN, 0.0))
    return out


def bench_smoothing(T: Timer, x, model_name, images, n, n0, chunks, repeats, loop_images):
    smoothed = dl.load_model(model_name, T.device)
    model, sigma = smoothed.model, smoothed.sigma
    xs = x[:images].to(T.device)
    per = n0 + n
    gen_dev = T.device if T.device.type == "cuda" else "cpu"
    gen = torch.Generator(gen_dev).manual_seed(0)
    fns = {}
    for c in chunks:
        fns[f"floor_chunk{c}"] = (lambda c=c: noise_and_forward(model, xs, sigma, per, c, gen))
        clf = SmoothedClassifier(model, 10, sigma, n0=n0, n=n, batch_size=c,
                                 generator=torch.Generator(gen_dev).manual_seed(1))
        fns[f"certify_chunk{c}"] = (lambda clf=clf: clf.certified_radius(xs))
    tm = T.compare(fns, repeats)
    best_floor = min((k for k in tm if k.startswith("floor")), key=lambda k: tm[k]["best_s"])
    best_cert = min((k for k in tm if k.startswith("certify")), key=lambda k: tm[k]["best_s"])
    chunk = int(best_cert.removeprefix("certify_chunk"))
    clf_pf = SmoothedClassifier(model, 10, sigma, n0=n0, n=n, batch_size=chunk, pushforward=True,
                                generator=torch.Generator(gen_dev).manual_seed(2))
    xl = xs[:loop_images]
    clf_l = SmoothedClassifier(model, 10, sigma, n0=n0, n=n, batch_size=chunk,
                               generator=torch.Generator(gen_dev).manual_seed(3))
    tm2 = T.compare(dict(
        certify_pushforward=lambda: clf_pf.certified_radius(xs),
        certify_loop_images=lambda: clf_l.certified_radius(xl),
        cohen_python_count=lambda: cohen_certify(model, xl, sigma, n0, n, 0.001, 10, gen),
        cohen_bincount=lambda: cohen_certify(model, xl, sigma, n0, n, 0.001, 10, gen, python_count=False),
    ), max(1, repeats - 1), warmup=False)
    tm.update(tm2)
    out = dict(model=model_name, images=images, n0=n0, n=n, samples=images * per, best_floor=best_floor,
               best_certify=best_cert, loop_images=loop_images, timings=tm,
               certify_vs_floor=ratio(tm, best_cert, best_floor, 1.15),
               pushforward_vs_floor=ratio(tm, "certify_pushforward", best_floor),
               cohen_vs_certify=ratio(tm, "cohen_python_count", "certify_loop_images"),
               cohen_bincount_vs_certify=ratio(tm, "cohen_bincount", "certify_loop_images"),
               cohen_vs_pushforward=ratio(tm, "cohen_python_count", "certify_pushforward",
                                          scale=images / loop_images))
    print(f"smoothing: certify/floor = {out['certify_vs_floor']['ratio']:.3f}; Cohen loop / certify = "
          f"{out['cohen_vs_certify']['ratio']:.1f}x (bincount {out['cohen_bincount_vs_certify']['ratio']:.1f}x); "
          f"Cohen / pushforward = {out['cohen_vs_pushforward']['ratio']:.1f}x", flush=True)
    return out


# -- the upper bound curve --------------------------------------------------------------------
def bench_upper_bound(T: Timer, x, y, model_name, repeats):
    cert = dl.load_model(model_name, T.device)
    cert.lipschitz_constants()
    eps = dl.model_metadata(model_name)["eps"]
    xs, yc = x.to(T.device), y.numpy()
    grid = np.linspace(0.01, 2 * eps, 100)

    def curve(radii):
        labels, radius = cert.certified_radius(xs)
        return dl.upper_bound(radius.cpu(), labels.cpu().numpy() == yc, radii)

    def two_certify():
        cert.certify(xs, eps)
        cert.certify(xs, 2 * eps)

    tm = T.compare({"curve_100_radii": lambda: curve(grid), "one_radius": lambda: curve([eps]),
                    "two_certify_passes": two_certify}, repeats)
    out = dict(model=model_name, images=len(xs), radii=len(grid), timings=tm,
               **ratio(tm, "curve_100_radii", "one_radius", 1.05),
               curve_vs_100x_two_certify=ratio(tm, "curve_100_radii", "two_certify_passes", scale=1 / 100))
    print(f"upper bound: 100 radii / 1 radius = {out['ratio']:.3f}", flush=True)
    return out


# -- one step of Algorithm 3.1 ----------------------------------------------------------------
def bench_pgd_step(T: Timer, x, model_name, images, steps, repeats):
    cert = dl.load_model(model_name, T.device)
    cert.lipschitz_constants()
    eps = dl.model_metadata(model_name)["eps"]
    xs = x[:images].to(T.device)
    certified = cert.certify(xs, eps) != dl.ABSTAIN
    xc = xs[certified]
    labels = cert.predict(xs)
    gen = lambda: torch.Generator(xs.device).manual_seed(0)
    attack = rejection_pgd(cert, eps, steps=steps, generator=gen())
    attack2 = rejection_pgd(cert, eps, steps=2 * steps, generator=gen())

    def fwd_bwd():
        z = xs.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(cert.model(z), labels, reduction="sum")
        torch.autograd.grad(loss, z)

    def score_fwd_bwd():           # what a step must compute: the rejection score's forward + backward
        z = xs.detach().clone().requires_grad_(True)
        torch.autograd.grad(cert.rejection_score(z, eps, labels).sum(), z)

    tm = T.compare(dict(attack_all=lambda: dl.degradation_attack(cert, xs, eps, attack),
                        attack_all_2x_steps=lambda: dl.degradation_attack(cert, xs, eps, attack2),
                        attack_certified_only=lambda: dl.degradation_attack(cert, xc, eps, attack),
                        forward_backward=fwd_bwd, score_forward_backward=score_fwd_bwd), repeats)
    # the marginal cost of one step: (t(2S steps) - t(S steps)) / S, free of the fixed costs
    # (the model's own prediction at x, the random start, the last evaluation, the projection)
    tm["one_step_marginal"] = {k: (tm["attack_all_2x_steps"][k] - tm["attack_all"][k]) / steps
                               for k in ("best_s", "median_s")}
    out = dict(model=model_name, images=images, certified=int(certified.sum()), steps=steps, eps=eps, timings=tm,
               per_step=ratio(tm, "one_step_marginal", "forward_backward", 1.3),
               # the floor of the ratio above: GloRo's rejection score alone (its differentiable forward
               # plus the float64 forward of the rounding bound) vs the bare network's forward + backward
               score_over_forward_backward=ratio(tm, "score_forward_backward", "forward_backward"),
               per_step_over_score=ratio(tm, "one_step_marginal", "score_forward_backward"),
               per_step_amortized=ratio(tm, "attack_all", "forward_backward", scale=1 / steps),
               per_step_amortized_early_exit=ratio(tm, "attack_certified_only", "forward_backward", scale=1 / steps))
    print(f"pgd step: score f+b / bare f+b {out['score_over_forward_backward']['ratio']:.3f}, "
          f"step / score f+b {out['per_step_over_score']['ratio']:.3f}", flush=True)
    print(f"pgd step: marginal {out['per_step']['ratio']:.3f}, amortized over {steps} steps "
          f"{out['per_step_amortized']['ratio']:.3f} (early exit {out['per_step_amortized_early_exit']['ratio']:.3f})",
          flush=True)
    return out


# -- the l_inf certifier ----------------------------------------------------------------------
def bench_linf(T: Timer, x, images, repeats):
    kw = dl.load_model("mnist_linf_0.1", T.device)
    ibp = LinfCertifier(kw.model, method="ibp", clip=kw.clip, batch_size=kw.batch_size, input_shape=kw.input_shape)
    xs = x[:images].to(T.device)

    def forward():
        with torch.no_grad():
            kw.model(xs)

    tm = T.compare(dict(forward=forward, ibp=lambda: ibp.certify(xs, 0.1), kw_ibp=lambda: kw.certify(xs, 0.1)), repeats)
    out = dict(model="mnist_linf_0.1", images=images, eps=0.1, timings=tm,
               ibp_vs_forward=ratio(tm, "ibp", "forward"), kw_ibp_vs_forward=ratio(tm, "kw_ibp", "forward"),
               per_image_s={k: v["best_s"] / images for k, v in tm.items()})
    print(f"linf: ibp/forward = {out['ibp_vs_forward']['ratio']:.1f}, kw_ibp/forward = "
          f"{out['kw_ibp_vs_forward']['ratio']:.1f}", flush=True)
    return out


# -- notebooks --------------------------------------------------------------------------------
def bench_notebooks(execute: bool):
    out = {}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if execute:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "papermill", "--log-level", "WARNING", "--cwd",
                                str(nb.parent), str(nb), str(Path(tmp) / nb.name)], check=True)
                out[nb.stem] = dict(wall_s=time.perf_counter() - t0, source="executed by this run (papermill)")
        else:
            meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
            out[nb.stem] = dict(wall_s=meta.get("duration"), executed_at=meta.get("end_time"),
                                source="papermill duration recorded in the committed .ipynb")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help='"auto" (CUDA when present), "cpu", "cuda", ...')
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoothing-images", type=int, default=10)
    p.add_argument("--smoothing-n", type=int, default=20_000)
    p.add_argument("--smoothing-chunks", type=int, nargs="+", default=[2_000, 10_000])
    p.add_argument("--loop-images", type=int, default=2, help="images of the one-image-at-a-time comparison")
    p.add_argument("--pgd-images", type=int, default=1000)
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--linf-images", type=int, default=200)
    p.add_argument("--only", nargs="+", default=None,
                   choices=["gloro", "smoothing", "upper_bound", "pgd", "linf", "notebooks"])
    p.add_argument("--execute-notebooks", action="store_true", help="execute every notebook (minutes)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = dl.resolve_device(args.device)
    cpu_clock = device.type == "cpu" and args.threads == 1
    T = Timer(device, cpu_clock)
    x, y = dl.load_mnist("test")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        device=str(device), device_name=gpu or platform.processor() or platform.machine(),
        torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        clock="process CPU time" if cpu_clock else "wall time", command=" ".join(sys.argv),
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None, results={})
    todo = args.only or ["gloro", "smoothing", "upper_bound", "pgd", "linf", "notebooks"]
    t_start = time.perf_counter()
    R = result["results"]
    if "gloro" in todo:
        R["gloro_certify"] = bench_gloro(T, x, ["mnist_0.3", "mnist_1.58"], args.repeats)
    if "smoothing" in todo:
        R["smoothing_certify"] = bench_smoothing(T, x, "mnist_smooth_0.25", args.smoothing_images, args.smoothing_n,
                                                 100, args.smoothing_chunks, args.repeats, args.loop_images)
    if "upper_bound" in todo:
        R["upper_bound_curve"] = bench_upper_bound(T, x, y, "mnist_0.3", args.repeats)
    if "pgd" in todo:
        R["pgd_step"] = bench_pgd_step(T, x, "mnist_0.3", args.pgd_images, args.pgd_steps, args.repeats)
        # the same on the 4C3F net of Table 1's ε = 1.58 row (a larger network: the attack's own
        # elementwise work over the batch weighs less against the forward + backward pass)
        R["pgd_step_4c3f"] = bench_pgd_step(T, x, "mnist_1.58", max(1, args.pgd_images // 5), args.pgd_steps,
                                            args.repeats)
    if "linf" in todo:
        R["linf_certify"] = bench_linf(T, x, args.linf_images, args.repeats)
    if "notebooks" in todo:
        R["notebooks"] = bench_notebooks(args.execute_notebooks)
    result["bench_wall_s"] = time.perf_counter() - t_start
    result["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    tag = "cpu" if device.type == "cpu" else gpu.replace(" ", "_") if gpu else device.type
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"bench-{tag}-{result['date'][:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} ({result['bench_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
