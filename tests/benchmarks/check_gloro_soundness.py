"""Full soundness check of the GloRo certificates (issue 13) on all 10,000 MNIST test images.

    .venv/bin/python tests/benchmarks/check_gloro_soundness.py [--device auto] [--models ...]
        [--forward-dtypes auto float32] [--n 10000] [--no-hostile]

For every committed GloRo model: exact layer norms (ARPACK ``svds`` on the float64 operator, as in
``tests/test_soundness.py``), the norms the certifier uses (must be ≥ exact and ≤ 1.001 × exact;
the route of each layer, explicit or circulant, is printed), and the certified radius on
``--device`` against a float64 reference (float64 forward on the CPU, exact constants) on every
test image: it must never exceed it. ``certify`` must equal ``radius > ε`` at ε and 2ε.

Each model is certified once per ``--forward-dtypes`` entry: ``auto`` is the default path (the
model's float32 on the CPU; **float64 on CUDA**, with the float64 unit inflated 2¹⁰×), ``float32``
forces float32 convolutions (on CUDA: IEEE float32, TF32 off, cuDNN off). Unless ``--no-hostile``,
TF32 is first switched on globally the way users do (``torch.set_float32_matmul_precision("high")``,
``cudnn.allow_tf32 = True``, ``cudnn.benchmark = True``), so the check shows that certification
overrides it. Printed per model and dtype: the dtype the convolutions ran in, the float32 settings
read *inside* the certification context (``fp32_state``: cuBLAS TF32, matmul precision, cuDNN
enabled, per-backend fp32_precision), the global settings before and after (must be unchanged),
the radius slack. One json line each; exits non-zero on any violation.
``tests/test_soundness.py`` runs the same check on a subset (the float64 forward of 10,000 images
costs ~30 CPU-s per 4C3F net) and the CUDA branch on the CPU.
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

from degradation_lib import ABSTAIN, gloro, load_mnist, load_model, model_metadata, spectral  # noqa: E402
from degradation_lib.certifier import resolve_device  # noqa: E402
from test_soundness import GLORO_MODELS, exact_norm_arpack, reference_radius  # noqa: E402

DTYPES = {"auto": None, "float32": torch.float32, "float64": torch.float64}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="device of the certifying pipeline (auto: CUDA if present)")
    parser.add_argument("--models", nargs="*", default=GLORO_MODELS, help="committed GloRo models")
    parser.add_argument("--forward-dtypes", nargs="*", default=["auto", "float32"], choices=sorted(DTYPES),
                        help="forward_dtype of each certification (auto: float32 on the CPU, float64 on CUDA)")
    parser.add_argument("--n", type=int, default=10000, help="number of test images (first n)")
    parser.add_argument("--no-hostile", action="store_true", help="leave TF32 / cuDNN benchmark as they are")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if not args.no_hostile:
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    env = dict(torch=torch.__version__, cuda=torch.version.cuda,
               gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               device=str(device), global_fp32_state=gloro.fp32_state(device))
    print(json.dumps(env), flush=True)

    seen_states = []
    real_check = gloro._check_ieee

    def recording_check(dev):  # called inside the certification context, after the settings
        real_check(dev)
        seen_states.append(gloro.fp32_state(dev))

    gloro._check_ieee = recording_check
    x = load_mnist("test")[0][:args.n]
    failures = 0
    for name in args.models:
        exact = [exact_norm_arpack(layer) for layer in load_model(name).model.body]
        ref_labels, ref_radius = reference_radius(name, x, exact)
        eps = model_metadata(name)["eps"]
        for dtype_name in args.forward_dtypes:
            t0 = time.time()
            cert = load_model(name, device=device)
            cert.forward_dtype = DTYPES[dtype_name]
            p = next(cert.model.parameters())
            conv_dtype = gloro.certification_forward_dtype(p.dtype, p.device, cert.forward_dtype)
            used = [float(v) for v in cert.model.converge()]
            methods = [spectral.conv2d_route(layer.weight.shape, layer.input_shape, layer.stride[0], layer.padding[0])
                       if isinstance(layer, gloro.LipschitzConv2d) else "explicit" for layer in cert.model.body]
            ratios = [a / b for a, b in zip(used, exact)]
            global_before = gloro.fp32_state(device)
            seen_states.clear()
            labels, radius = zip(*[cert.certified_radius(x[i:i + 1000].to(device)) for i in range(0, len(x), 1000)])
            labels, radius = torch.cat(labels).cpu(), torch.cat(radius).cpu()
            inside = seen_states[0] if seen_states else None
            consistent = all(s == inside for s in seen_states)
            global_after = gloro.fp32_state(device)
            above = int((radius > ref_radius).sum())
            certified = radius > 0
            label_mismatch = int((labels[certified] != ref_labels[certified]).sum())
            m = min(len(x), 2000)
            agree = all(torch.equal(cert.certify(x[:m].to(device), e).cpu(),
                                    torch.where(radius[:m] > e, labels[:m], torch.full_like(labels[:m], ABSTAIN)))
                        for e in (eps, 2 * eps))
            slack = (ref_radius - radius)[certified]
            ieee_inside = (inside is not None and inside["cublas_tf32"] is False and inside["matmul_precision"] == "highest"
                           and (device.type != "cuda" or not inside["cudnn_enabled"]))
            ok = (above == 0 and label_mismatch == 0 and agree and all(1 <= r <= 1.001 for r in ratios)
                  and ieee_inside and consistent and global_before == global_after)
            failures += not ok
            print(json.dumps(dict(model=name, device=str(device), forward_dtype=dtype_name, conv_dtype=str(conv_dtype),
                                  rounding_unit=gloro.rounding_unit(conv_dtype, p.device), ok=ok, n=len(x),
                                  radii_above_reference=above, label_mismatch_certified=label_mismatch,
                                  certify_agrees=agree, fp32_state_inside=inside, fp32_state_global=global_after,
                                  global_restored=global_before == global_after,
                                  norm_used_over_exact=[f"{r:.10f}" for r in ratios], norm_routes=methods, norms_from_json_cache=cert.model.sound_norms_cache is not None,
                                  L_sub_used=math.prod(used), L_sub_exact=math.prod(exact),
                                  certified_fraction=float(certified.float().mean()),
                                  radius_slack_max=float(slack.max()) if len(slack) else None,
                                  radius_slack_median=float(slack.median()) if len(slack) else None,
                                  seconds=round(time.time() - t0, 1))), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
