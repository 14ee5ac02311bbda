"""A sequential ε-check for randomized smoothing: "is the certified radius > ε?" with few samples.

Algorithm 2.1 (PredictWithDefense) and every degradation experiment of Section 4 only ask
whether the smoothed classifier g is certified at one radius ε, never for the radius itself.
Fixed-n CERTIFY (Cohen et al., 2019; :class:`~degradation_lib.smoothing.SmoothedClassifier`)
spends n = 100,000 samples on every input to answer it; most MNIST inputs have p_A ≈ 1 and are
certified after a few dozen samples, and those far below the threshold are refused as quickly.
This module is ours (not in the paper): a group-sequential test with the same guarantee.

The test (for one input x, settings σ, n0, n, α of the smoothed classifier, ε > 0)
----------------------------------------------------------------------------------
1. Selection, as in CERTIFY: n0 noisy samples pick the guess ĉ_A (the most frequent class).
2. Looks at cumulative estimation sample sizes n_1 < n_2 < ... < n_K = n (by default
   ``first_look`` doubling: 32, 64, ..., 65,536, then n; :func:`look_schedule`). At look k,
   C_k = #{i ≤ n_k : f(x + ζ_i) = ĉ_A} over fresh samples (shared with the earlier looks).
3. Certify at look k when σ·Φ⁻¹(p̲_k) > ε, where p̲_k is the one-sided (1 − α_k) Clopper–Pearson
   lower bound of C_k out of n_k (:func:`~degradation_lib.smoothing.p_A_lower`, the same bound
   and the same "radius > ε" comparison as CERTIFY). The α_k spend α: α_K = ``final_share``·α at
   the last look and (1 − ``final_share``)·α/(K − 1) at each earlier look
   (:func:`alpha_spending`), so Σ_k α_k = α.
4. Stop and refuse ("the radius cannot exceed ε within the budget") at look k < K when
   σ·Φ⁻¹(p̄_k) ≤ ε, where p̄_k is the one-sided (1 − β_k) Clopper–Pearson *upper* bound,
   β_k = β/(K − 1). At the last look every undecided input is refused.
5. Answer ĉ_A if certified, ⊥ otherwise. At most n0 + n samples are drawn per input.

With K = 1 (``first_look >= n``) this is CERTIFY's decision "radius > ε" exactly.

Guarantee (the same as CERTIFY's at ε)
--------------------------------------
Let p = P_ζ[f(x + ζ) = ĉ_A] for the selected ĉ_A. A "certified" answer is wrong only if
σΦ⁻¹(p) ≤ ε, i.e. p ≤ p* := Φ(ε/σ) (if p > p* > 1/2 then g(x) = ĉ_A and g's exact radius
σΦ⁻¹(p) exceeds ε, Cohen et al., Theorem 1). **Claim:** for every x, P[certified ∧ p ≤ p*] ≤ α.

*Proof.* Condition on the selection samples; ĉ_A and p are then fixed, and the estimation samples
are independent of them. If p > p* there is nothing to show. Let p ≤ p*. The test certifies only
if for some look k, σΦ⁻¹(p̲_k) > ε, i.e. p̲_k > p* ≥ p. For each fixed k, C_k ~ Binomial(n_k, p),
and the Clopper–Pearson bound is valid: P[p̲_k > p] ≤ α_k. The refusal rule and stopping can only
remove "certified" events, so by the union bound over the looks (which needs no independence
between the nested counts C_1 ≤ C_2 ≤ ...)

    P[certified | selection] ≤ Σ_k P[p̲_k > p] ≤ Σ_k α_k = α.

Taking the expectation over the selection gives the claim. ∎

The refusal rule costs no soundness (⊥ is always safe); it decides only how often the test
disagrees with fixed-n CERTIFY: an input with p > p* is refused early with probability at most
Σ_{k<K} β_k = β (the same union bound on the upper bounds). Spending most of α at the last look
(``final_share`` = 1/2) keeps the test's decision at n close to CERTIFY's (level α/2 instead of α:
about 0.2 standard errors of p̂ at n).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .certifier import ABSTAIN, check_eps
from .smoothing import SmoothedClassifier, _check_alpha, _check_count, _check_level, p_A_lower, radius_from_p_A_lower

UNDECIDED, CERTIFIED, REFUSED = 0, 1, -1
"""Decision codes of :func:`decide_look` and :func:`sequential_certify` (``decision`` entry)."""


def look_schedule(n: int, first_look: int = 32, growth: float = 2.0) -> np.ndarray:
    """Cumulative estimation sample sizes n_1 < ... < n_K = n of the looks, int64 ``[K]``.

    ``first_look`` · growth^j while below n, then n itself. ``first_look >= n`` gives the single
    look ``[n]`` (fixed-n CERTIFY).
    """
    n = _check_count(n, "n")
    first_look = _check_count(first_look, "first_look")
    try:
        growth = float(growth)
    except (TypeError, ValueError):
        raise ValueError(f"growth must be a number > 1, got {growth!r}") from None
    if not growth > 1.0 or not math.isfinite(growth):
        raise ValueError(f"growth must be a finite number > 1, got {growth!r}")
    looks, m = [], float(first_look)
    while m < n:
        if not looks or int(m) > looks[-1]:
            looks.append(int(m))
        m *= growth
    looks.append(n)
    return np.asarray(looks, dtype=np.int64)


def alpha_spending(alpha: float, num_looks: int, final_share: float = 0.5) -> np.ndarray:
    """Levels α_k ``[K]`` of the looks, summing to α (float64).

    α_K = ``final_share``·α at the last look, (1 − ``final_share``)·α/(K − 1) at each other look;
    a single look gets α.
    """
    alpha = _check_alpha(alpha)
    K = _check_count(num_looks, "num_looks")
    share = _check_level(final_share, "final_share")
    if K == 1:
        return np.array([alpha])
    levels = np.full(K, (1.0 - share) * alpha / (K - 1))
    levels[-1] = share * alpha
    return levels


def p_A_upper(n_A, n: int, beta: float) -> np.ndarray:
    """One-sided (1 − β) Clopper–Pearson upper bound on p_A: 1 − p_A_lower(n − n_A, n, β) (1 where n_A = n)."""
    n_A = np.asarray(n_A, dtype=np.int64)
    return 1.0 - p_A_lower(n - n_A, n, beta)


def decide_look(n_A, n_k: int, alpha_k: float, beta_k: float | None, sigma: float, eps: float) -> np.ndarray:
    """The decision of one look for counts ``n_A`` (int ``[M]``) of ĉ_A among ``n_k`` samples.

    Returns int8 ``[M]``: ``CERTIFIED`` where σΦ⁻¹(p̲) > ε (p̲ the (1 − α_k) lower bound),
    ``REFUSED`` where σΦ⁻¹(p̄) ≤ ε (p̄ the (1 − β_k) upper bound; never when ``beta_k`` is None,
    the last look), ``UNDECIDED`` elsewhere.
    """
    n_A = np.asarray(n_A, dtype=np.int64)
    out = np.zeros(n_A.shape, dtype=np.int8)
    if n_A.size == 0:
        return out
    cert = radius_from_p_A_lower(p_A_lower(n_A, n_k, alpha_k), sigma) > eps
    out[cert] = CERTIFIED
    if beta_k is not None:
        upper = p_A_upper(n_A, n_k, beta_k)
        # radius_from_p_A_lower maps p̄ to σΦ⁻¹(p̄) (0 below 1/2): "σΦ⁻¹(p̄) ≤ ε"
        out[~cert & (radius_from_p_A_lower(upper, sigma) <= eps)] = REFUSED
    return out


def sequential_decisions(counts_at_looks, looks, sigma: float, eps: float, alpha: float,
                         beta: float | None = None, final_share: float = 0.5) -> dict[str, np.ndarray]:
    """Run the sequential test on given prefix counts (for replay on a recorded sample stream).

    Args:
        counts_at_looks: int ``[M, K]``, C_k of each of M inputs at the looks ``looks`` (``[K]``,
            cumulative, increasing, the last one the budget n).
        sigma, eps, alpha, beta, final_share: as in :func:`sequential_certify`.

    Returns ``decision`` (int8 ``[M]``, ``CERTIFIED`` or ``REFUSED``) and ``n_used`` (int64 ``[M]``,
    estimation samples drawn, i.e. the look at which each input stopped).
    """
    C = np.asarray(counts_at_looks, dtype=np.int64)
    looks = np.asarray(looks, dtype=np.int64)
    if C.ndim != 2 or C.shape[1] != len(looks):
        raise ValueError(f"counts_at_looks must be [M, {len(looks)}], got shape {C.shape}")
    K = len(looks)
    alphas = alpha_spending(alpha, K, final_share)
    beta = alpha if beta is None else _check_level(beta, "beta")
    decision = np.zeros(C.shape[0], dtype=np.int8)
    n_used = np.zeros(C.shape[0], dtype=np.int64)
    for k in range(K):
        open_ = np.flatnonzero(decision == UNDECIDED)
        if open_.size == 0:
            break
        d = decide_look(C[open_, k], int(looks[k]), alphas[k], beta / (K - 1) if k < K - 1 else None, sigma, eps)
        if k == K - 1:
            d[d == UNDECIDED] = REFUSED
        decision[open_] = d
        n_used[open_] = looks[k]
    return dict(decision=decision, n_used=n_used)


def _sample_subset(smoothed: SmoothedClassifier, x: torch.Tensor, rows: np.ndarray, size: int) -> torch.Tensor:
    """Votes ``[len(rows), C]`` of ``size`` fresh samples for the inputs ``x[rows]``; with one generator
    per input (a sequence, see :class:`SmoothedClassifier`), each row keeps its own generator."""
    idx = torch.as_tensor(rows, device=x.device)
    gens = smoothed.generator
    if not isinstance(gens, (list, tuple)):
        return smoothed.sample_counts(x.index_select(0, idx), (size,))[0]
    smoothed.generator = [gens[i] for i in rows]
    try:
        return smoothed.sample_counts(x.index_select(0, idx), (size,))[0]
    finally:
        smoothed.generator = gens


@torch.no_grad()
def sequential_certify(smoothed: SmoothedClassifier, x: torch.Tensor, eps: float, *, alpha: float | None = None,
                       beta: float | None = None, first_look: int = 32, growth: float = 2.0,
                       final_share: float = 0.5) -> dict[str, torch.Tensor]:
    """The sequential ε-check of the smoothed classifier for N inputs at once (this module's test).

    Args:
        smoothed: the :class:`SmoothedClassifier` (its σ, n0, n, batch size and generator are used;
            the budget per input is its n0 + n samples). With one generator per input, each
            input's answer depends only on its own generator (not on the other inputs).
        x: inputs ``[N, ...]`` in [0, 1]; the sampling runs on ``x.device``.
        eps: the ℓ2 radius ε > 0 to certify ("radius > ε", as CERTIFY).
        alpha: total failure probability α ∈ (0, 1); default the classifier's α.
        beta: total probability β of refusing an input whose p_A exceeds Φ(ε/σ) before the last
            look (agreement with fixed-n CERTIFY, not soundness); default α.
        first_look, growth: the look schedule (:func:`look_schedule`).
        final_share: share of α spent at the last look, in (0, 1).

    Returns a dict of ``[N]`` tensors on ``x.device``: ``label`` (ĉ_A where certified, else
    ``ABSTAIN``), ``decision`` (int8, ``CERTIFIED``/``REFUSED``), ``guess`` (ĉ_A), ``n_A`` (votes for
    ĉ_A among the estimation samples drawn), ``n_used`` (estimation samples drawn) and
    ``samples`` (n0 + n_used, ≤ n0 + n).

    Guarantee: for every input, P[label ≠ ⊥ and (g(x) ≠ label or g is not robust at radius ε)]
    ≤ α over the noise (proof in the module docstring), as for CERTIFY followed by "radius > ε".
    """
    x = smoothed._check(x)
    eps = check_eps(eps)
    alpha = smoothed.alpha if alpha is None else _check_alpha(alpha)
    beta = alpha if beta is None else _check_level(beta, "beta")
    looks = look_schedule(smoothed.n, first_look, growth)
    K = len(looks)
    alphas = alpha_spending(alpha, K, final_share)
    N = x.shape[0]
    if isinstance(smoothed.generator, (list, tuple)) and len(smoothed.generator) != N:
        raise ValueError(f"generator: a sequence needs one torch.Generator per input ({N}), "
                         f"got {len(smoothed.generator)}")
    guess = _sample_subset(smoothed, x, np.arange(N), smoothed.n0).argmax(dim=1)
    guess_np = guess.cpu().numpy()
    n_A = np.zeros(N, dtype=np.int64)
    n_used = np.zeros(N, dtype=np.int64)
    decision = np.zeros(N, dtype=np.int8)
    previous = 0
    for k in range(K):
        open_ = np.flatnonzero(decision == UNDECIDED)
        if open_.size == 0:
            break
        idx = torch.as_tensor(open_, device=x.device)
        counts = _sample_subset(smoothed, x, open_, int(looks[k]) - previous)
        n_A[open_] += counts.gather(1, guess.index_select(0, idx)[:, None])[:, 0].cpu().numpy()
        n_used[open_] = looks[k]
        d = decide_look(n_A[open_], int(looks[k]), alphas[k], beta / (K - 1) if k < K - 1 else None,
                        smoothed.sigma, eps)
        if k == K - 1:
            d[d == UNDECIDED] = REFUSED
        decision[open_] = d
        previous = int(looks[k])
    dev = x.device
    label = np.where(decision == CERTIFIED, guess_np, ABSTAIN)
    return dict(label=torch.as_tensor(label, dtype=torch.int64, device=dev),
                decision=torch.as_tensor(decision, device=dev), guess=guess,
                n_A=torch.as_tensor(n_A, device=dev), n_used=torch.as_tensor(n_used, device=dev),
                samples=torch.as_tensor(n_used + smoothed.n0, device=dev))


__all__ = ["sequential_certify", "sequential_decisions", "decide_look", "look_schedule", "alpha_spending",
           "p_A_upper", "UNDECIDED", "CERTIFIED", "REFUSED"]
