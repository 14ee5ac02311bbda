"""Measurement: the sequential ε-check vs fixed-n CERTIFY on the MNIST smoothed models (paired).

    OMP_NUM_THREADS=1 nohup nice -n 5 .venv/bin/python tests/benchmarks/bench_sequential.py record &
    .venv/bin/python tests/benchmarks/bench_sequential.py summary      # -> benchmarks/results/sequential-mnist.json

``record``: for every ``--skip``-th MNIST test image and each (model, ε) of the paper's setting
(σ = 0.25 and 0.5 at ε = σ; σ = 1.0 at ε = 0.5), draws CERTIFY's n0 selection samples (storing
the guess ĉ_A and its votes) and then one stream of estimation samples with the library's
sampler (``SmoothedClassifier.sample_counts``, one sample set per segment between the looks 16,
32, ..., 65,536, 100,000), storing the prefix counts C_k of ĉ_A at those looks. A stream stops
growing once fixed-n CERTIFY's answer on it is settled (see :func:`record`): the points near the
threshold get all n = 100,000 samples, the others a few thousand at most. The fixed-n answer is
CERTIFY on the whole stream (exact where the stream is complete, inferred with error below
≈ 2·10⁻⁹ per point elsewhere); the sequential answer is the test replayed on the prefixes of the
*same* stream (:func:`degradation_lib.sequential.sequential_decisions`), which is distributed
exactly as a live run, so the two are compared on the same noise (a paired comparison:
disagreements come from the procedures, not from independent Monte-Carlo noise). The summary
checks that the replay never reads past a stream's recorded end. Resumable: per-model ``.npz``
files in ``runs/sequential/`` grow chunk by chunk.

``live``: ``sequential_certify`` itself (fresh noise) on the first ``--live-images`` test images,
for the distribution of samples per input and the wall time against fixed-n CERTIFY.

``summary``: replays the test at the default schedule, writes the JSON of results.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

import degradation_lib as dl
from degradation_lib.sequential import CERTIFIED, DEFAULTS, look_schedule, sequential_certify, sequential_decisions
from degradation_lib.smoothing import p_A_lower, radius_from_p_A_lower

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "sequential"
OUT = ROOT / "benchmarks" / "results" / "sequential-mnist.json"
SETTINGS = [("mnist_smooth_0.25", 0.25), ("mnist_smooth_0.5", 0.5), ("mnist_smooth_1.0", 0.5)]
FINE_LOOKS = look_schedule(100_000, 16, 2)        # 16, 32, ..., 65536, 100000


def record(args):
    """One stream per point, cut short where its outcome is settled: a point's stream stops growing once fixed-n CERTIFY's answer on it
    is settled -- its (1 − 10⁻⁹) Clopper–Pearson interval lies entirely on one side of the band
    t ± 6 SE(t) at n, where t = c*/n is fixed-n CERTIFY's threshold count at (n, α). Prefix counts
    beyond the stop are stored as −1; the fixed-n answer of a truncated stream is "inferred" (it
    differs from the full-stream answer with probability below ≈ 2·10⁻⁹ per point, union of the
    interval failing and a 6-SE binomial deviation), of a full stream exact."""
    from scipy.stats import norm as normal
    torch.set_num_threads(args.threads)
    x_all, y_all = dl.load_mnist("test")
    index = np.arange(0, len(x_all), args.skip)[: args.images]
    RUNS.mkdir(parents=True, exist_ok=True)
    models = {name: dl.load_model(name, "cpu") for name, _ in SETTINGS}
    eps_of = dict(SETTINGS)
    K = len(FINE_LOOKS)
    while True:
        progressed = False
        for name, clf in models.items():
            path = RUNS / f"{name}.npz"
            done = dict(np.load(path)) if path.exists() else None
            start = 0 if done is None else len(done["index"])
            if start >= len(index):
                continue
            progressed = True
            sigma, n, alpha, eps = clf.sigma, clf.n, clf.alpha, eps_of[name]
            counts_all = np.arange(n + 1)
            c_star = int(np.argmax(radius_from_p_A_lower(p_A_lower(counts_all, n, alpha), sigma) > eps))
            t = c_star / n
            se = np.sqrt(t * (1 - t) / n)
            lo_band, hi_band = t - 6 * se, t + 6 * se
            chunk = index[start:start + args.chunk]
            clf.generator = torch.Generator().manual_seed(args.seed * 1_000_003 + start)
            t0 = time.perf_counter()
            sel = clf.sample_counts(x_all[chunk], [clf.n0])[0]
            guess = sel.argmax(1)
            M = len(chunk)
            prefix = np.full((M, K), -1, dtype=np.int64)
            c = np.zeros(M, dtype=np.int64)
            open_ = np.arange(M)
            prev = 0
            for k, m in enumerate(FINE_LOOKS):
                if open_.size == 0:
                    break
                votes = clf.sample_counts(x_all[chunk][open_], [int(m) - prev])[0]
                c[open_] += votes.gather(1, guess[open_][:, None])[:, 0].numpy()
                prefix[open_, k] = c[open_]
                prev = int(m)
                lower = p_A_lower(c[open_], int(m), 1e-9)
                upper = 1.0 - p_A_lower(int(m) - c[open_], int(m), 1e-9)
                open_ = open_[~((lower > hi_band) | (upper < lo_band))]
            last_k = (prefix >= 0).sum(axis=1) - 1                      # the last look drawn
            full = last_k == K - 1
            fixed = np.where(full, prefix[:, -1] >= c_star,
                             prefix[np.arange(M), last_k] / FINE_LOOKS[last_k] > t)
            seconds = time.perf_counter() - t0 + (0.0 if done is None else float(done["seconds"]))
            new = dict(index=chunk, label=y_all[chunk].numpy(), guess=guess.numpy(), prefix=prefix,
                       selection_count=sel.gather(1, guess[:, None])[:, 0].numpy(), fixed_certified=fixed.astype(np.int8), fixed_exact=full.astype(np.int8))
            if done is not None:
                new = {k: np.concatenate([done[k], new[k]]) for k in new}
            new["seconds"] = np.array(seconds)
            np.savez(path, **new)
            print(f"{name}: {len(new['index'])}/{len(index)} images, {seconds:.0f} s, "
                  f"{int(new['fixed_exact'].sum())} full streams", flush=True)
        if not progressed:
            break


def live(args):
    torch.set_num_threads(args.threads)
    x_all, _ = dl.load_mnist("test")
    x = x_all[: args.live_images]
    out = {}
    for name, eps in SETTINGS:
        clf = dl.load_model(name, "cpu")
        clf.generator = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        d = sequential_certify(clf, x, eps)
        t_seq = time.perf_counter() - t0
        out[name] = dict(eps=eps, images=len(x), seconds=t_seq, samples=d["samples"].numpy().tolist(),
                         certified=int((d["decision"] == CERTIFIED).sum()))
        print(f"{name} eps={eps}: {len(x)} images in {t_seq:.1f} s, mean samples {d['samples'].double().mean():.0f}",
              flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "live.json").write_text(json.dumps(out))


def summary(args):
    result = dict(description="sequential eps-check vs fixed-n CERTIFY (n0=100, n=100000, alpha=0.001) on the "
                              "MNIST smoothed models, paired on the same sample stream",
                  command="tests/benchmarks/bench_sequential.py record/live/summary",
                  settings={k: v for k, v in DEFAULTS.items()},
                  torch=torch.__version__, machine=platform.machine(), threads=args.threads, models={})
    live_path = RUNS / "live.json"
    live_data = json.loads(live_path.read_text()) if live_path.exists() else {}
    for name, eps in SETTINGS:
        path = RUNS / f"{name}.npz"
        if not path.exists():
            continue
        d = dict(np.load(path))
        clf = dl.load_model(name, "cpu")
        sigma, n0, n, alpha = clf.sigma, clf.n0, clf.n, clf.alpha
        looks = look_schedule(n, DEFAULTS["first_look"], DEFAULTS["growth"])      # the default schedule
        cols = [int(np.flatnonzero(FINE_LOOKS == m)[0]) for m in looks]
        prefix = d["prefix"][:, cols]
        seq = sequential_decisions(np.maximum(prefix, 0), looks, sigma, eps, alpha, n0=n0,
                                   num_classes=clf.num_classes, selection_counts=d["selection_count"])
        # the replay must never have read past a stream's recorded end
        stop = np.searchsorted(looks, seq["n_used"])                   # index of the stopping look
        read_missing = int(sum((prefix[i, :stop[i] + 1] < 0).any() for i in np.flatnonzero(seq["n_used"] > 0)))
        fixed_cert = d["fixed_certified"].astype(bool)
        seq_cert = seq["decision"] == CERTIFIED
        samples = seq["n_used"] + n0
        agree = fixed_cert == seq_cert
        correct = d["guess"] == d["label"]
        entry = dict(eps=eps, sigma=sigma, n0=n0, n=n, alpha=alpha, images=int(len(samples)),
                     test_indices=f"every {int(d['index'][1] - d['index'][0]) if len(samples) > 1 else 1}th test image from 0",
                     looks=looks.tolist(),
                     fixed_samples_per_input=n0 + n,
                     mean_samples=float(samples.mean()), median_samples=float(np.median(samples)),
                     quantiles_samples={q: float(np.quantile(samples, q)) for q in (0.5, 0.9, 0.95, 0.99)},
                     max_samples=int(samples.max()),
                     fraction_look0=float((seq["n_used"] == 0).mean()),
                     fraction_full_budget=float((seq["n_used"] == n).mean()),
                     savings=float((n0 + n) / samples.mean()),
                     agreement=float(agree.mean()), disagreements=int((~agree).sum()),
                     fixed_only=int((fixed_cert & ~seq_cert).sum()), sequential_only=int((seq_cert & ~fixed_cert).sum()),
                     fixed_exact=int(d["fixed_exact"].sum()), replay_read_past_record=read_missing,
                     certified_accuracy_fixed=float((fixed_cert & correct).mean()),
                     certified_accuracy_sequential=float((seq_cert & correct).mean()),
                     samples=samples.tolist(), fixed_certified=fixed_cert.astype(int).tolist(),
                     record_seconds=float(d["seconds"]))
        if name in live_data:
            L = live_data[name]
            s = np.asarray(L["samples"])
            entry["live"] = dict(images=L["images"], seconds=L["seconds"], mean_samples=float(s.mean()),
                                 savings=float((n0 + n) / s.mean()), certified=L["certified"],
                                 samples=L["samples"])
        result["models"][f"{name}@{eps}"] = entry
        print(f"{name} eps={eps}: {entry['images']} images, mean samples {entry['mean_samples']:.0f} "
              f"({entry['savings']:.0f}x fewer), agreement {entry['agreement']:.4f} ({entry['disagreements']} differ, "
              f"fixed-n answer exact on {entry['fixed_exact']} full streams, inferred elsewhere; "
              f"replay read past a record: {read_missing})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    # lists of numbers on one line each (the per-image lists have 10,000 entries)
    text = re.sub(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]",
                  lambda m: "[" + ",".join(m.group(1).split(",")).replace(" ", "").replace("\n", "") + "]", text)
    OUT.write_text(text)
    print(f"wrote {OUT}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["record", "live", "summary"])
    p.add_argument("--images", type=int, default=200, help="test images (record)")
    p.add_argument("--skip", type=int, default=50, help="every skip-th test image (record)")
    p.add_argument("--chunk", type=int, default=10, help="images per checkpoint (record)")
    p.add_argument("--live-images", type=int, default=1000, help="test images of the live run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    dict(record=record, live=live, summary=summary)[args.step](args)


if __name__ == "__main__":
    main()
