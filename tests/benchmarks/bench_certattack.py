"""Benchmark: one step of certificate_attack vs one forward + backward pass of the batch.

    .venv/bin/python tests/benchmarks/bench_certattack.py [--model mnist_1.58] [--n 200] [--steps 20] [--device auto]

Takes the first ``--n`` MNIST test images the model certifies at ε but not at 2ε (those the attack
works on), and times, alternating, ``--repeats`` times each:

* ``fb_model``: the network's forward + backward (sum of the logits, gradient to the input only) on the batch;
* ``fb_score``: ``rejection_score`` forward + backward on the batch (what one step must compute);
* ``certify``: the sound check ``certify`` on the batch (on a GPU: float64 convolutions as
  batched GEMMs, :func:`degradation_lib.gloro.conv2d_gemm`);
* ``attack``: ``certificate_attack`` with one run (``restarts=1, targets=0``) of ``--steps`` steps
  and no early exit (``exit_margin=inf``), so every step processes the whole batch; per step =
  time / (steps + 1) (the extra evaluation is the final score).

Prints the medians and the ratios per step / fb_model and per step / fb_score (target ≤ 1.3), and
the evaluations spent with early exit on (the default), relative to steps × batch.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from degradation_lib import certificate_attack, load_mnist, load_model, model_metadata, resolve_device
from degradation_lib.run_certattack import attack_budget


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist_1.58")
    ap.add_argument("--eps", type=float, default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto" (CUDA when present)')
    ap.add_argument("--out", default="", help="also write the numbers to this json file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    cert = load_model(args.model, device=dev)
    meta = model_metadata(args.model)
    eps = args.eps if args.eps is not None else float(meta.get("eps", 0.1))
    x_all, _ = load_mnist("test")
    xs = x_all[:3000].to(dev)
    lab = cert.predict(xs)
    ok = (cert.certify(xs, eps) == lab) & (cert.certify(xs, 2 * eps) != lab)
    x, labels = xs[ok][: args.n], lab[ok][: args.n]
    model = cert.model

    def fb_model():   # to the input only, as the attack's steps (no weight gradients), as run_bench.py
        z = x.clone().requires_grad_(True)
        torch.autograd.grad(model(z).sum(), z)

    def fb_score():
        z = x.clone().requires_grad_(True)
        torch.autograd.grad(cert.rejection_score(z, eps, labels).sum(), z)

    def certify():
        cert.certify(x, eps)

    def attack():
        certificate_attack(cert, x, eps, restarts=1, targets=0, steps=args.steps, labels=labels,
                           exit_margin=math.inf, skip_certified_2eps=False,
                           generator=torch.Generator().manual_seed(0))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    times = {"fb_model": [], "fb_score": [], "certify": [], "attack": []}
    fb_model(), fb_score(), certify()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("fb_model", fb_model), ("fb_score", fb_score), ("certify", certify), ("attack", attack)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_step = med["attack"] / (args.steps + 1)
    _, info = certificate_attack(cert, x, eps, labels=labels, return_info=True, skip_certified_2eps=False,
                                 generator=torch.Generator().manual_seed(0))
    print(f"model={args.model} eps={eps} batch={x.shape[0]} steps={args.steps} threads={args.threads} device={dev}")
    print({k: round(v, 4) for k, v in med.items()})
    print(f"per step {per_step:.4f} s: {per_step / med['fb_model']:.2f}x fb_model, "
          f"{per_step / med['fb_score']:.2f}x fb_score")
    max_evals = x.shape[0] * attack_budget()               # the defaults: restarts 2, targets 3, steps 100
    print(f"default attack: {int(info['evaluations'].sum())} score evaluations for {x.shape[0]} points "
          f"(no early exit: up to {max_evals})")
    if args.out:
        import json
        from pathlib import Path
        Path(args.out).write_text(json.dumps(dict(
            model=args.model, eps=eps, batch=int(x.shape[0]), steps=args.steps, threads=args.threads, device=str(dev),
            repeats=args.repeats, medians_s=med, per_step_s=per_step,
            per_step_over_fb_model=per_step / med["fb_model"], per_step_over_fb_score=per_step / med["fb_score"],
            evaluations_default=int(info["evaluations"].sum()), evaluations_max=max_evals,
            command=" ".join(["python tests/benchmarks/bench_certattack.py", *__import__("sys").argv[1:]])), indent=1))


if __name__ == "__main__":
    main()
