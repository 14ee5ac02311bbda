"""Command-line runs of notebook 11: Algorithm 3.1, ε-PGD and the certificate attack per model.

    python -m degradation_lib.run_certattack --model mnist_1.58 --num-images 10000 \
        --baseline-images 1000 --out results/certattack

For each model (its ε from the model's json, or ``--eps``) and the first ``--num-images`` MNIST
test images (``--every k``: every k-th image instead), in chunks of ``--chunk`` images that are
saved as they finish (a rerun resumes), records per point:

* ``label`` (true), ``cert_label``, ``radius`` (certified radius at x; GloRo exactly,
  smoothing by CERTIFY, NaN for the ℓ∞ certifier), ``certified`` and
  ``certified_2eps`` (``certify(x, ε)``, ``certify(x, 2ε)``; for smoothing from the radius);
* for the attacks run on the point (only on points certified at ε with their true label, the
  paper's test_R; others hold −2 = "not attacked"): ``alg31`` and ``eps_pgd`` (the check's
  answer at the attack point; the paper's attacks, only on the first ``--baseline-images``),
  ``cert`` (the certificate attack), ``score_clean`` and ``score_cert`` (the rejection score at x
  and at the certificate attack's x'), ``evaluations`` (score evaluations spent);
* ``unattackable`` (GloRo: the sound ℓ2 bound proves that no point of the ball is rejected; 0
  elsewhere) and ``slack`` (its minimum margin, NaN where not computed).

Monotone certifiers with exact scores skip points certified at 2ε in every attack (no attack can
succeed there, Definition 4 and Section 3.3.2); their columns hold the label (not rejected).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from .attacks import certificate_attack, degradation_attack, eps_pgd, pgd
from .certifier import ABSTAIN
from .data import load_mnist
from .registry import load_model, model_metadata
from .results import PointResults, merge

NOT_ATTACKED = -2


def model_eps(name: str) -> float:
    meta = model_metadata(name)
    if "eps" in meta:
        return float(meta["eps"])
    if meta.get("kind") == "linf":
        return 0.1
    if meta.get("kind") == "smoothing":
        return 0.5
    raise ValueError(f"no ε known for {name}; pass --eps")


def run_chunk(certifier, kind, x, y, eps, *, baseline: bool, seed: int, steps: int, restarts: int,
              targets, bound: bool) -> dict:
    """All columns for one chunk of images (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    N = x.shape[0]
    if kind == "smoothing":
        labels, radius = certifier.certified_radius(x)
        radius = radius.double()
        certified = torch.where(radius > eps, labels, torch.full_like(labels, ABSTAIN))
        certified_2 = torch.where(radius > 2 * eps, labels, torch.full_like(labels, ABSTAIN))
    elif kind == "linf":   # the radius would need a bisection of the costly bound: not recorded
        labels = certifier.predict(x)
        radius = torch.full((N,), math.nan, dtype=torch.float64)
        certified = certifier.certify(x, eps)
        certified_2 = certifier.certify(x, 2 * eps)
    else:
        labels, radius = certifier.certified_radius(x)
        radius = radius.double()
        certified = certifier.certify(x, eps)
        certified_2 = certifier.certify(x, 2 * eps)
    test_R = (certified == y) & (certified != ABSTAIN)
    cols = {k: np.full(N, NOT_ATTACKED, dtype=np.int64) for k in ("alg31", "eps_pgd", "cert")}
    score_clean = np.full(N, np.nan)
    score_cert = np.full(N, np.nan)
    evaluations = np.zeros(N, dtype=np.int64)
    unattackable = np.zeros(N, dtype=bool)
    slack = np.full(N, np.nan)
    idx = test_R.nonzero(as_tuple=True)[0]
    timing = {}
    if idx.numel():
        xr, lr = x[idx], certified[idx]
        monotone_exact = certifier.monotone and certifier.score_is_exact
        skip = (certified_2[idx] == lr) if monotone_exact else torch.zeros_like(lr, dtype=torch.bool)
        run = (~skip).nonzero(as_tuple=True)[0]
        if baseline:
            for name in ("alg31", "eps_pgd"):
                out = lr.clone()
                if run.numel():
                    t0 = time.perf_counter()
                    if kind == "smoothing":
                        from .spgd import SPGD
                        atk = SPGD(steps=50, samples=100, generator=gen)
                        xp = degradation_attack(certifier, xr[run], eps, attack=functools.partial(atk, y=lr[run])) \
                            if name == "alg31" else atk(certifier, xr[run], eps, y=lr[run])
                    elif name == "alg31":
                        xp = degradation_attack(certifier, xr[run], eps,
                                                attack=functools.partial(pgd, steps=50, rel_step=0.025, generator=gen))
                    else:
                        xp = eps_pgd(certifier, xr[run], eps, steps=50, rel_step=0.025, generator=gen)
                    out[run] = certifier.certify(xp, eps)
                    timing[name] = time.perf_counter() - t0
                cols[name][idx.numpy()] = out.numpy()
        t0 = time.perf_counter()
        kwargs = dict(restarts=restarts, steps=steps, generator=gen, labels=lr, skip=skip, return_info=True)
        if targets is not None:
            kwargs["targets"] = targets
        xp, info = certificate_attack(certifier, xr, eps, **kwargs)
        out = certifier.certify(xp, eps)
        timing["cert"] = time.perf_counter() - t0
        cols["cert"][idx.numpy()] = out.cpu().numpy()
        score_clean[idx.numpy()] = info["score_clean"].cpu().numpy()
        score_cert[idx.numpy()] = info["score"].cpu().numpy()
        evaluations[idx.numpy()] = info["evaluations"].cpu().numpy()
        if bound and kind == "gloro":
            from .bounds_l2 import GloroBounds
            cand = (~skip).nonzero(as_tuple=True)[0]
            if cand.numel():
                t0 = time.perf_counter()
                proof, sl = GloroBounds(certifier, intermediate="interval").unattackable(xr[cand], eps, lr[cand])
                unattackable[idx[cand].numpy()] = proof.cpu().numpy()
                slack[idx[cand].numpy()] = sl.cpu().numpy()
                timing["bound"] = time.perf_counter() - t0
    return dict(columns=dict(label=y.numpy(), cert_label=labels.cpu().numpy(), radius=radius.cpu().numpy(),
                             certified=certified.cpu().numpy(), certified_2eps=certified_2.cpu().numpy(),
                             score_clean=score_clean, score_cert=score_cert, evaluations=evaluations,
                             unattackable=unattackable, slack=slack, **cols),
                timing=timing)


def summarize(name: str, results_dir) -> dict:
    """One row of notebook 11's table from the stored run ``results_dir/name.npz``.

    Counts over ``test_R`` (correct and certified at ε): ``upper_bound`` (the paper's, points
    not certified at 2ε), per attack its successes (check rejects x') and share of the upper
    bound on the images it ran on (Algorithm 3.1 and ε-PGD: the baseline images), ``proof`` (points
    of the upper bound that the sound bound proves unattackable: GloRo's ℓ2 bound, or for smoothing
    :func:`~degradation_lib.bounds_l2.smoothing_unattackable` with β = 10⁻³), the tighter bound
    (upper bound − proof), the certificate attack's share of it, and ``flipped`` (attack points
    whose check returns another class: 0 for a sound certifier).
    """
    from pathlib import Path

    res = PointResults.load(Path(results_dir) / f"{name}.npz")
    meta = model_metadata(name)
    eps = float(res.meta["eps"])
    label, cert, cert2 = res["label"], res["certified"], res["certified_2eps"]
    R = (cert == label) & (cert != ABSTAIN)
    ub = R & (cert2 != label)
    base = res["baseline"].astype(bool)
    proof = res["unattackable"].astype(bool) & ub
    if meta["kind"] == "smoothing":
        from .bounds_l2 import smoothing_unattackable
        c = meta["certifier"]
        p, _ = smoothing_unattackable(res["radius"], float(c["sigma"]), eps, int(c.get("n", 100_000)),
                                      float(c.get("alpha", 0.001)), int(c.get("n0", 100)))
        proof = p.numpy() & ub
    row = dict(model=name, kind=meta["kind"], eps=eps, images=len(res), test_R=int(R.sum()),
               upper_bound=int(ub.sum()), baseline_images=int(base.sum()),
               upper_bound_baseline=int((ub & base).sum()))
    flipped = 0
    for a in ("alg31", "eps_pgd", "cert"):
        ran = base if a != "cert" else np.ones_like(base)
        hit = R & ran & (res[a] == ABSTAIN)
        row[a] = int(hit.sum()) if ran.any() else None
        denom = int((ub & ran).sum())
        row[f"{a}_share"] = (int(hit.sum()) / denom) if (ran.any() and denom) else float("nan")
        flipped += int((R & ran & (res[a] != ABSTAIN) & (res[a] != NOT_ATTACKED) & (res[a] != label)).sum())
        row[f"{a}_outside_ub"] = int((hit & ~ub).sum()) if ran.any() else 0
    row["proof"] = int(proof.sum())
    row["tight_bound"] = int(ub.sum() - proof.sum())
    row["cert_share_tight"] = row["cert"] / row["tight_bound"] if row["tight_bound"] else float("nan")
    row["cert_in_proof"] = int((R & (res["cert"] == ABSTAIN) & proof).sum())
    row["flipped"] = flipped
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--eps", type=float, default=None)
    ap.add_argument("--num-images", type=int, default=10000)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--baseline-images", type=int, default=1000, help="run Alg. 3.1 and ε-PGD on the first this many")
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--targets", type=int, default=None)
    ap.add_argument("--no-bound", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip Alg. 3.1 and ε-PGD")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/certattack")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge-only", action="store_true", help="merge the shards already computed and stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = model_metadata(args.model)
    kind = meta["kind"]
    eps = args.eps if args.eps is not None else model_eps(args.model)
    certifier = load_model(args.model, device="cpu")
    if kind == "smoothing":
        certifier.generator = torch.Generator().manual_seed(args.seed)
    x_all, y_all = load_mnist("test")
    index = torch.arange(0, args.every * args.num_images, args.every)[: args.num_images]
    out = Path(args.out)
    shard_dir = out / f"{args.model}_shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    run_meta = dict(model=args.model, eps=eps, steps=args.steps, restarts=args.restarts, targets=args.targets,
                    seed=args.seed, every=args.every, baseline_images=args.baseline_images, kind=kind)
    parts = []
    for start in range(0, len(index), args.chunk):
        path = shard_dir / f"{start:05d}.npz"
        if path.exists():
            parts.append(PointResults.load(path))
            continue
        if args.merge_only:
            break
        sel = index[start:start + args.chunk]
        t0 = time.perf_counter()
        res = run_chunk(certifier, kind, x_all[sel], y_all[sel], eps, baseline=start < args.baseline_images and not args.no_baseline,
                        seed=args.seed + start, steps=args.steps, restarts=args.restarts, targets=args.targets,
                        bound=not args.no_bound)
        wall = time.perf_counter() - t0
        cols = dict(index=sel.numpy(), **res["columns"])
        cols["baseline"] = np.full(len(sel), start < args.baseline_images and not args.no_baseline)
        pr = PointResults(cols, dict(run_meta, shard=start))
        pr.save(path)
        parts.append(pr)
        print(json.dumps(dict(start=start, n=len(sel), wall_s=round(wall, 1),
                              timing={k: round(v, 1) for k, v in res["timing"].items()})), flush=True)
    merged = merge(parts)
    merged.save(out / f"{args.model}.npz")
    print(f"wrote {out / (args.model + '.npz')} ({len(merged)} points)", flush=True)


if __name__ == "__main__":
    main()
