"""The store-recomputation test: the stored runs can never silently disagree with the code.

For every stored run (``degradation_lib.available_results()``), a seeded random sample of its
points is recomputed with the current library (same experiment, model, parameters and seed;
every random draw of a point depends only on (seed, index), so a subset recomputes exactly the
points of the full run) and compared with :func:`degradation_lib.experiments.compare`:

* the same prediction, certifier label, certification at ε and 2ε, defended label, attacked
  prediction and rejection decision for every attack, and the same CERTIFY vote counts;
* radii within 1e-4 + 1e-4·|r| (the sampled points are recomputed in a batch of a different
  size, whose float kernels may differ in the last bits); distances within 1e-4.

Sample sizes: 50 points per GloRo/ℓ∞ run, 20 for an ℓ∞ radius search, 2 per smoothing run
(CERTIFY at n = 100,000 costs ~3 s per image and core); a certificate-attack run with a larger
budget per point than the defaults (`run_certattack.attack_budget`: restarts × (1 + targets) × (steps + 1) = 808) recomputes
proportionally fewer points, at least 3. The stored model weights must be the
ones the run used (sha256 in its manifest).
"""

import numpy as np
import pytest

import degradation_lib as dl
from degradation_lib import experiments as E
from degradation_lib.results import file_sha256
from degradation_lib.run_certattack import attack_budget

SAMPLE = {"gloro": 50, "linf": 50, "smoothing": 2}
SAMPLE_LINF_RADII = 20
TOL = dict(radius_atol=1e-4, radius_rtol=1e-4, dist_atol=1e-4)


def _sample_size(res) -> int:
    kind = res.meta["params"]["kind"]
    if kind == "linf" and res.meta["experiment"] == "radii":
        return SAMPLE_LINF_RADII
    k = SAMPLE[kind]
    p = res.meta["params"]
    if res.meta["experiment"] == "certattack" and kind != "smoothing":
        # a stronger attack costs more per point: keep the recomputation's cost about constant
        k = max(3, min(k, k * attack_budget() // attack_budget(p)))
    return k


@pytest.mark.parametrize("name", dl.available_results())
def test_stored_run_recomputes(name):
    res = dl.load_results(name)
    meta, manifest = res.meta, res.manifest
    assert len(res) == meta["num_points"], "a stored run must be complete (all its points merged)"
    assert np.array_equal(res["index"], np.sort(E.parse_indices(meta["indices"])))
    weights = dl.registry.CHECKPOINT_DIR / f"{meta['model']}.pt"
    assert manifest["weights_sha256"] == file_sha256(weights), \
        f"{name} was computed with other weights than the committed {weights.name}"
    rng = np.random.default_rng(20_240_611)
    k = min(_sample_size(res), len(res))
    idx = np.sort(rng.choice(res["index"], size=k, replace=False))
    fresh = E.recompute(res, idx, device="cpu")
    assert E.compare(res, fresh, **TOL) == []
