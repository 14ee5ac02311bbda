"""Full soundness check of the GloRo certificates (issue 13) on all 10,000 MNIST test images.

    .venv/bin/python tests/benchmarks/check_gloro_soundness.py [--device auto] [--models ...]

For every committed GloRo model: exact layer norms (ARPACK ``svds`` on the float64 operator, as in
``tests/test_soundness.py``), the norms the certifier uses (must be ≥ exact and ≤ 1.001 × exact),
and the certified radius of the float32 pipeline on ``--device`` against a float64 reference
(float64 forward on the CPU, exact constants) on every test image: it must never exceed it.
``certify`` must equal ``radius > ε`` at ε and 2ε. Prints one json line per model and exits
non-zero on any violation. ``tests/test_soundness.py`` runs the same check on a subset (the
float64 forward of 10,000 images costs ~30 CPU-s per 4C3F net).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degradation_lib import ABSTAIN, load_mnist, load_model, model_metadata  # noqa: E402
from degradation_lib.certifier import resolve_device  # noqa: E402
from test_soundness import GLORO_MODELS, exact_norm_arpack, reference_radius  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="device of the float32 pipeline (auto: CUDA if present)")
    parser.add_argument("--models", nargs="*", default=GLORO_MODELS, help="committed GloRo models")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x, _ = load_mnist("test")
    failures = 0
    for name in args.models:
        t0 = time.time()
        cert = load_model(name, device=device)
        exact = [exact_norm_arpack(layer) for layer in load_model(name).model.body]
        used = [float(v) for v in cert.model.converge()]
        ratios = [a / b for a, b in zip(used, exact)]
        labels, radius = zip(*[cert.certified_radius(x[i:i + 1000].to(device)) for i in range(0, len(x), 1000)])
        labels, radius = torch.cat(labels).cpu(), torch.cat(radius).cpu()
        ref_labels, ref_radius = reference_radius(name, x, exact)
        above = int((radius > ref_radius).sum())
        certified = radius > 0
        label_mismatch = int((labels[certified] != ref_labels[certified]).sum())
        eps = model_metadata(name)["eps"]
        agree = all(torch.equal(cert.certify(x[:2000].to(device), e).cpu(),
                                torch.where(radius[:2000] > e, labels[:2000], torch.full_like(labels[:2000], ABSTAIN)))
                    for e in (eps, 2 * eps))
        slack = (ref_radius - radius)[certified]
        ok = above == 0 and label_mismatch == 0 and agree and all(1 <= r <= 1.001 for r in ratios)
        failures += not ok
        print(json.dumps(dict(model=name, device=str(device), ok=ok, n=len(x), radii_above_reference=above,
                              label_mismatch_certified=label_mismatch, certify_agrees=agree,
                              norm_used_over_exact=[f"{r:.10f}" for r in ratios],
                              L_sub_used=math.prod(used), L_sub_exact=math.prod(exact),
                              radius_slack_max=float(slack.max()), radius_slack_median=float(slack.median()),
                              seconds=round(time.time() - t0, 1))), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
