"""The ``certattack`` experiment of notebook 11 (issue 15), run through the results store.

    python -m degradation_lib.experiments run certattack --model mnist_1.58 --num-images 500
    python -m degradation_lib.experiments run certattack --model mnist_linf_0.1 --num-images 300 \
        --param eps=0.1 --param restarts=1 --param targets=1
    python -m degradation_lib.experiments run certattack --model mnist_smooth_0.5 --num-images 20 \
        --param eps=0.5 --param steps=50 --param restarts=1
    python -m degradation_lib.experiments run certattack --model mnist_0.3 --tag apgd --num-images 2000 \
        --param schedule=apgd --param restarts=2 --param targets=9 --param baselines=False --param bound=False

:func:`certattack_compute` computes one block of points (registered as ``EXPERIMENTS["certattack"]``
in :mod:`degradation_lib.experiments`, which stores the merged run as
``degradation_lib/results/certattack-<model>.npz``); :func:`summarize` turns a stored run into
one row of the page's table.
"""

from __future__ import annotations

import numpy as np
import torch

from .attacks import certificate_attack, project
from .certifier import ABSTAIN


def attack_budget(p: dict | None = None) -> int:
    """Score evaluations per point of the certificate attack without early exit:
    restarts × (1 + targets) × (steps + 1), for the run parameters ``p`` (the keys ``restarts``,
    ``targets``, ``steps``; default: the ``certattack`` experiment's defaults, 808)."""
    if p is None:
        from .experiments import get_experiment
        p = get_experiment("certattack").defaults
    return int(p["restarts"]) * (1 + int(p["targets"])) * (int(p["steps"]) + 1)


def certattack_compute(c, x, y, index, p, seed) -> dict:
    """The ``certattack`` experiment's columns for one block of points (store conventions).

    Clean columns as every experiment (``label``, ``pred``, ``cert_label``, ``radius``,
    ``certified``, ``certified_2eps``); the attacks run only on ``test_R`` (correct and certified
    at ε), other points keep x' = x. Per attack ``a`` in ``cert`` (:func:`certificate_attack`, step rule
    ``p["schedule"]``) and,
    with ``baselines``, ``alg31`` (Algorithm 3.1: PGD at 2ε then projection; ℓ∞: sign-PGD on the
    true label, as Table 4) and ``eps_pgd`` (Appendix B.1): the store's ``rejected_<a>``,
    ``label_<a>``, ``pred_<a>``, ``dist_<a>``, ``radius_<a>``, ``outside_<a>``. Also
    ``score_clean``/``score_cert`` (rejection score at x and at the certificate attack's x'; NaN
    where not attacked), ``evaluations`` (score evaluations spent), ``skipped`` (monotone
    certifier, certified at 2ε: not attacked), ``unattackable`` and ``slack`` (GloRo:
    :class:`~degradation_lib.bounds_l2.GloroBounds` with interval intermediate bounds; smoothing:
    :func:`~degradation_lib.bounds_l2.smoothing_unattackable`; the ℓ∞ certifier: none).
    """
    from .attacks import pgd as _pgd
    from .experiments import _attacked_columns, _clean_columns, _gloro_attack, _smoothing_details, point_generators

    eps, kind = p["eps"], p["kind"]
    y = y.to(x.device)
    if kind == "smoothing":
        d = _smoothing_details(c, x, index, seed, "certify")
        r = d["radius"].double()
        cols = dict(label=y.cpu().numpy(), pred=d["guess"].cpu().numpy(), cert_label=d["label"].cpu().numpy(),
                    radius=r.cpu().numpy(), certified=(r > eps).cpu().numpy(), certified_2eps=(r > 2 * eps).cpu().numpy())
    else:
        cols = _clean_columns(c, x, y, eps, radius=(kind == "gloro"))
    lab = torch.as_tensor(cols["cert_label"], device=x.device)
    certified = torch.as_tensor(cols["certified"], device=x.device)
    R = certified & (lab == y)
    skipped = R & torch.as_tensor(cols["certified_2eps"], device=x.device) if (c.monotone and c.score_is_exact) \
        else torch.zeros_like(R)
    N = x.shape[0]
    idx = R.nonzero(as_tuple=True)[0]
    ridx = np.asarray(index)[idx.cpu().numpy()]
    attacks = ("alg31", "eps_pgd", "cert") if p["baselines"] and kind != "smoothing" else ("cert",)
    score_clean, score_cert = np.full(N, np.nan), np.full(N, np.nan)
    evaluations = np.zeros(N, dtype=np.int64)
    for a in attacks:
        xp = x.clone()
        run = idx[~skipped[idx]] if a != "cert" else idx
        if run.numel():
            gens = point_generators(seed, np.asarray(index)[run.cpu().numpy()], f"start/{a}")
            if a == "cert":
                # the ℓ∞ score differentiates through the KW bound: its graph is large, so the
                # attack runs on slices of 25 points (per-point generators: same result)
                step = 25 if kind == "linf" else run.numel()
                outs = []
                for s0 in range(0, run.numel(), step):
                    sl = run[s0:s0 + step]
                    o, info = certificate_attack(c, x[sl], eps, restarts=p["restarts"], steps=p["steps"],
                                                 targets=p["targets"], labels=y[sl], skip=skipped[sl],
                                                 schedule=p.get("schedule", "cosine"),
                                                 generator=gens[s0:s0 + step], return_info=True)
                    outs.append(o)
                    score_clean[sl.cpu().numpy()] = info["score_clean"].cpu().numpy()
                    score_cert[sl.cpu().numpy()] = info["score"].cpu().numpy()
                    evaluations[sl.cpu().numpy()] = info["evaluations"].cpu().numpy()
                out = torch.cat(outs)
            elif kind == "gloro":
                out, _ = _gloro_attack(a, c, x[run], eps, gens, dict(steps=50, rel_step=0.025))
            else:                                   # ℓ∞: sign-PGD on the true label (Table 4)
                radius = 2 * eps if a == "alg31" else eps
                out = _pgd(c, x[run], radius, labels=y[run], steps=50, rel_step=0.025, generator=gens)
                if a == "alg31":
                    out = project(x[run], out, eps, c.norm)
            xp[run] = out.to(x.dtype)
        if kind == "smoothing":
            da = _smoothing_details(c, xp, index, seed, f"certify/{a}")
            ra = da["radius"].double()
            defended = torch.where(ra > eps, da["label"], torch.full_like(da["label"], ABSTAIN))
            cols.update({f"rejected_{a}": (defended == ABSTAIN).cpu().numpy(),
                         f"label_{a}": defended.cpu().numpy(), f"pred_{a}": da["guess"].cpu().numpy(),
                         f"dist_{a}": torch.linalg.vector_norm((xp - x).double().flatten(1), dim=1).cpu().numpy(),
                         f"radius_{a}": ra.cpu().numpy(), f"outside_{a}": np.zeros(N)})
        else:
            cols.update(_attacked_columns(c, x, xp, eps, a, radius=(kind == "gloro")))
    unattackable = np.zeros(N, dtype=bool)
    slack = np.full(N, np.nan)
    cand = idx[~skipped[idx]]
    if cand.numel() and kind == "gloro" and p["bound"]:
        from .bounds_l2 import GloroBounds
        proof, sl = GloroBounds(c, intermediate="interval").unattackable(x[cand], eps, y[cand])
        unattackable[cand.cpu().numpy()] = proof.cpu().numpy()
        slack[cand.cpu().numpy()] = sl.cpu().numpy()
    if cand.numel() and kind == "smoothing":
        from .bounds_l2 import smoothing_unattackable
        proof, _ = smoothing_unattackable(torch.as_tensor(cols["radius"])[cand.cpu()], c.sigma, eps, c.n, c.alpha, c.n0)
        unattackable[cand.cpu().numpy()] = proof.numpy()
    cols.update(score_clean=score_clean, score_cert=score_cert, evaluations=evaluations,
                skipped=skipped.cpu().numpy(), unattackable=unattackable, slack=slack)
    return cols


def summarize(name: str, results_dir=None) -> dict:
    """One row of notebook 11's table from the stored run ``certattack-<name>``.

    Counts over ``test_R`` (correct and certified at ε): ``upper_bound`` (the paper's: points
    not certified at 2ε), per attack its successes (the check rejects x') and their share of the
    upper bound, ``proof`` (points of the upper bound a sound bound proves unattackable), the
    tighter bound (upper bound − proof) and the certificate attack's share of it,
    ``cert_outside_ub`` (successes on points certified at 2ε: possible only for a non-monotone
    check), ``cert_in_proof`` (successes on proven points: must be 0) and ``flipped`` (attack
    points whose check returns another class: 0 for a sound certifier).
    """
    from .experiments import load_results

    res = load_results(f"certattack-{name}", results_dir)
    label = res["label"]
    R = res["certified"].astype(bool) & (res["cert_label"] == label)
    ub = R & ~res["certified_2eps"].astype(bool)
    proof = res["unattackable"].astype(bool) & ub
    row = dict(model=name, kind=res.meta["params"]["kind"], eps=float(res.meta["params"]["eps"]),
               images=len(res), test_R=int(R.sum()), upper_bound=int(ub.sum()))
    flipped = 0
    for a in ("alg31", "eps_pgd", "cert"):
        if f"rejected_{a}" not in res.columns:
            row[a], row[f"{a}_share"], row[f"{a}_outside_ub"] = None, float("nan"), 0
            continue
        hit = R & res[f"rejected_{a}"].astype(bool)
        row[a] = int(hit.sum())
        row[f"{a}_share"] = int((hit & ub).sum()) / int(ub.sum()) if ub.any() else float("nan")
        row[f"{a}_outside_ub"] = int((hit & ~ub).sum())
        flipped += int((R & (res[f"label_{a}"] != ABSTAIN) & (res[f"label_{a}"] != label)).sum())
    row["proof"] = int(proof.sum())
    row["tight_bound"] = int(ub.sum() - proof.sum())
    hit = R & res["rejected_cert"].astype(bool)
    row["cert_share_tight"] = int((hit & ub & ~proof).sum()) / row["tight_bound"] if row["tight_bound"] else float("nan")
    row["cert_in_proof"] = int((hit & proof).sum())
    row["flipped"] = flipped
    return row


