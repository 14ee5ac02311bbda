"""A sequential ε-check for randomized smoothing: "is the certified radius > ε?" with few samples.

Algorithm 2.1 (PredictWithDefense) and every degradation experiment of Section 4 only ask
whether the smoothed classifier g is certified at one radius ε, never for the radius itself.
Fixed-n CERTIFY (Cohen et al., 2019; :class:`~degradation_lib.smoothing.SmoothedClassifier`)
spends n = 100,000 samples on every input to answer it; most MNIST inputs have p_A ≈ 1 and are
certified after a few dozen samples, and those far below the threshold are refused as quickly.
This module is ours (not in the paper): a group-sequential test with the same guarantee.

The test (for one input x, settings σ, n0, n, α of the smoothed classifier, C classes, ε > 0)
-------------------------------------------------------------------------------------------
Let p* = Φ(ε/σ): "radius > ε" is σΦ⁻¹(p̲) > ε, i.e. a lower bound p̲ > p*. α is split as
α = α_0 + α_1 + ... + α_K (:func:`alpha_spending`): α_0 = ``selection_share``·α for look 0,
α_K = ``final_share``·(α − α_0) for the last look, the rest evenly over looks 1..K−1.

0. Selection, as in CERTIFY: n0 noisy samples pick the guess ĉ_A (the most frequent class),
   with N_c votes for class c. *Look 0* certifies at once when the (1 − α_0/C) lower bound of
   N_ĉ out of n0 exceeds p* -- the selection samples are reused, paid for by the factor 1/C.
1. Looks at cumulative estimation sample sizes n_1 < n_2 < ... < n_K = n (by default
   ``first_look`` doubling: 32, 64, ..., 65,536, then n; :func:`look_schedule`). At look k,
   C_k = #{i ≤ n_k : f(x + ζ_i) = ĉ_A} over fresh samples (shared with the earlier looks).
2. Certify at look k when the one-sided (1 − α_k) Clopper–Pearson lower bound p̲_k of C_k out of
   n_k exceeds p* (:func:`~degradation_lib.smoothing.p_A_lower`, the same bound and the same
   "radius > ε" comparison as CERTIFY).
3. Refuse at look k < K (futility; ⊥ is always safe) when the (1 − β/K) upper bound p̄_k (β/(K − 1)
   without look 0: β is split over the looks before the last) gives
   σΦ⁻¹(p̄_k) ≤ ε, or when fixed-n CERTIFY on the same stream is unlikely to certify:
   P[Binomial(n − n_k, p̄_k) ≥ c* − C_k] < γ, c* the least count that certifies at n with α
   (stochastic curtailment; it includes the sure case C_k + n − n_k < c*). Look 0 refuses only
   by the first rule, on N_ĉ out of n0.
4. At the last look certify by the bound (⇔ C_K ≥ c_K, the least count that certifies there);
   answer ĉ_A if certified, ⊥ otherwise. At most n0 + n samples are drawn per input.

With K = 1 (``first_look >= n``) and ``selection_share = 0`` this is CERTIFY's "radius > ε".

Guarantee (the same as CERTIFY's at ε)
--------------------------------------
Let p_c = P_ζ[f(x + ζ) = c]. A "certified" answer ĉ is wrong only if σΦ⁻¹(p_ĉ) ≤ ε, i.e.
p_ĉ ≤ p* (if p_ĉ > p* > 1/2 then g(x) = ĉ and g's exact radius σΦ⁻¹(p_ĉ) exceeds ε, Cohen et
al., Theorem 1). **Claim:** for every x, P[certified ∧ p_ĉ ≤ p*] ≤ α.

*Proof.* A wrong "certified" needs one of these events:
(E0) look 0 certifies with p_ĉ ≤ p*. Then for the class c = ĉ: p_c ≤ p* and the (1 − α_0/C)
lower bound of N_c out of n0 exceeds p_c. For each *fixed* class c, N_c ~ Binomial(n0, p_c)
(whichever class the selection picks), so by the validity of the Clopper–Pearson bound this has
probability ≤ α_0/C; the union over the C classes gives P[E0] ≤ α_0.
(Ek) look k ∈ {1..K} certifies by its bound with p̲_k > p* ≥ p_ĉ. Condition on the selection
samples: ĉ and p = p_ĉ are fixed, the estimation samples independent of them, C_k ~
Binomial(n_k, p), so P[p̲_k > p | selection] ≤ α_k.
Refusals and stopping only remove "certified" outcomes. By the union bound over the events
(no independence between the nested counts C_1 ≤ C_2 ≤ ... is needed)

    P[certified ∧ p_ĉ ≤ p*] ≤ α_0 + E[Σ_{k≥1} α_k] = α.  ∎

Agreement with fixed-n CERTIFY (on the same stream: its n0 selection samples and its n
estimation samples are those of this test) is not part of the guarantee; the rules above bound
how often the two differ. (i) An early refusal where fixed-n certifies (count ≥ c* at n): the
first refusal rule errs only if p̄_k < p_ĉ (probability ≤ β/K per look, or p_ĉ ≤ p* where fixed-n
certifies with probability ≤ α); the second, on the event p̄_k ≥ p_ĉ, only if the rest of the
stream reaches c* − C_k, which given the first n_k samples has probability < γ; the first
refusals at the different looks are disjoint events, so P[early refusal ∧ fixed-n certifies] ≤
β + γ + α. (ii) Early certification where fixed-n refuses: only for p_ĉ near p*. (iii) At the
last look, counts in [c*, c_K) (fixed-n at level α, this test at α_K < α). All three concern only
inputs with p_A close to the threshold; the benchmark measures the agreement.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import binom, norm

from .certifier import ABSTAIN, check_eps
from .smoothing import SmoothedClassifier, _check_alpha, _check_count, _check_level, p_A_lower

UNDECIDED, CERTIFIED, REFUSED = 0, 1, -1
"""Decision codes of :func:`decide_look` and :func:`sequential_certify` (``decision`` entry)."""

DEFAULTS = dict(beta=0.1, gamma=0.1, first_look=32, growth=2.0, final_share=0.5, selection_share=0.25)
"""Default settings of the test (chosen on the MNIST replay of ``tests/benchmarks/bench_sequential.py``)."""


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


def alpha_spending(alpha: float, num_looks: int, final_share: float = 0.5,
                   selection_share: float = 0.0) -> np.ndarray:
    """Levels ``[α_0, α_1, ..., α_K]`` (float64, ``[K + 1]``) of look 0 and the K looks, summing to α.

    α_0 = ``selection_share``·α (0 disables look 0); of the rest, α_K = ``final_share``·(α − α_0)
    at the last look and (1 − ``final_share``)·(α − α_0)/(K − 1) at each other look; a single
    look gets all of α − α_0.
    """
    alpha = _check_alpha(alpha)
    K = _check_count(num_looks, "num_looks")
    share = _check_level(final_share, "final_share")
    sel = 0.0 if selection_share == 0 else _check_level(selection_share, "selection_share")
    a0 = sel * alpha
    rest = alpha - a0
    if K == 1:
        return np.array([a0, rest])
    levels = np.full(K + 1, (1.0 - share) * rest / (K - 1))
    levels[0], levels[-1] = a0, share * rest
    return levels


def p_A_upper(n_A, n: int, beta: float) -> np.ndarray:
    """One-sided (1 − β) Clopper–Pearson upper bound on p_A: 1 − p_A_lower(n − n_A, n, β) (1 where n_A = n)."""
    n_A = np.asarray(n_A, dtype=np.int64)
    return 1.0 - p_A_lower(n - n_A, n, beta)


def threshold_count(n: int, alpha: float, p_star: float) -> int:
    """The least count c with p_A_lower(c, n, α) > p* (n + 1 if none): "radius > ε" at (n, α) ⇔ count ≥ c."""
    lo, hi = 0, n + 1                      # p_A_lower is increasing in the count: bisection
    while lo < hi:
        mid = (lo + hi) // 2
        if p_A_lower(mid, n, alpha) > p_star:
            hi = mid
        else:
            lo = mid + 1
    return lo


class _Plan:
    """The constants of one test: looks, levels, p* and the threshold counts."""

    def __init__(self, n0, n, num_classes, sigma, eps, alpha, beta, gamma, first_look, growth, final_share,
                 selection_share, looks=None):
        self.n0, self.n, self.C = n0, n, num_classes
        self.looks = look_schedule(n, first_look, growth) if looks is None else np.asarray(looks, dtype=np.int64)
        K = self.K = len(self.looks)
        self.alphas = alpha_spending(alpha, K, final_share, selection_share)
        self.beta_k = _check_level(beta, "beta") / (K if selection_share else max(K - 1, 1))
        self.gamma = 0.0 if gamma == 0 else _check_level(gamma, "gamma")
        self.p_star = float(norm.cdf(eps / sigma))
        self.c_fixed = threshold_count(n, alpha, self.p_star)                     # fixed-n CERTIFY's c*

    def look0(self, n_sel) -> np.ndarray:
        """Decisions of look 0 from the guess's votes ``n_sel`` among the n0 selection samples."""
        n_sel = np.asarray(n_sel, dtype=np.int64)
        out = np.zeros(n_sel.shape, dtype=np.int8)
        if self.alphas[0] == 0 or n_sel.size == 0:
            return out
        cert = p_A_lower(n_sel, self.n0, self.alphas[0] / self.C) > self.p_star
        out[cert] = CERTIFIED
        out[~cert & (p_A_upper(n_sel, self.n0, self.beta_k) <= self.p_star)] = REFUSED
        return out

    def look(self, k: int, counts) -> np.ndarray:
        """Decisions at look k (0-based among the K looks) from the counts C_k ``[M]``."""
        counts = np.asarray(counts, dtype=np.int64)
        m = int(self.looks[k])
        out = np.zeros(counts.shape, dtype=np.int8)
        if counts.size == 0:
            return out
        cert = p_A_lower(counts, m, float(self.alphas[k + 1])) > self.p_star
        out[cert] = CERTIFIED
        if k == self.K - 1:
            out[~cert] = REFUSED
            return out
        upper = p_A_upper(counts, m, self.beta_k)
        refuse = upper <= self.p_star
        if self.gamma > 0:              # P[Bin(n − n_k, p̄_k) ≥ c* − C_k] < γ
            refuse |= binom.sf(self.c_fixed - counts - 1, self.n - m, upper) < self.gamma
        out[~cert & refuse] = REFUSED
        return out


def decide_look(n_A, n_k: int, alpha_k: float, beta_k: float | None, sigma: float, eps: float) -> np.ndarray:
    """The bound-only decision of one look for counts ``n_A`` (int ``[M]``) of ĉ_A among ``n_k`` samples.

    Returns int8 ``[M]``: ``CERTIFIED`` where σΦ⁻¹(p̲) > ε (p̲ the (1 − α_k) lower bound),
    ``REFUSED`` where σΦ⁻¹(p̄) ≤ ε (p̄ the (1 − β_k) upper bound; never when ``beta_k`` is None),
    ``UNDECIDED`` elsewhere. (The test adds curtailment to this; see the module docstring.)
    """
    n_A = np.asarray(n_A, dtype=np.int64)
    out = np.zeros(n_A.shape, dtype=np.int8)
    if n_A.size == 0:
        return out
    p_star = norm.cdf(eps / sigma)
    cert = p_A_lower(n_A, n_k, alpha_k) > p_star
    out[cert] = CERTIFIED
    if beta_k is not None:
        out[~cert & (p_A_upper(n_A, n_k, beta_k) <= p_star)] = REFUSED
    return out


def sequential_decisions(counts_at_looks, looks, sigma: float, eps: float, alpha: float, *, n0: int = 100,
                         num_classes: int = 10, selection_counts=None, beta: float = DEFAULTS["beta"],
                         gamma: float = DEFAULTS["gamma"], final_share: float = DEFAULTS["final_share"],
                         selection_share: float | None = None) -> dict[str, np.ndarray]:
    """Run the sequential test on given prefix counts (for replay on a recorded sample stream).

    Args:
        counts_at_looks: int ``[M, K]``, C_k of each of M inputs at the looks ``looks`` (``[K]``,
            cumulative, increasing, the last one the budget n). Entries after an input's stop may
            be anything (they are never read).
        sigma, eps, alpha, beta, gamma, final_share: as in :func:`sequential_certify`.
        n0, num_classes, selection_counts: the selection: votes ``[M]`` of the guess among the
            n0 selection samples, for look 0 (None: no look 0).
        selection_share: share of α for look 0 (default ``DEFAULTS`` with selection counts, else 0).

    Returns ``decision`` (int8 ``[M]``, ``CERTIFIED`` or ``REFUSED``) and ``n_used`` (int64 ``[M]``,
    estimation samples drawn, i.e. the look at which each input stopped; 0 at look 0).
    """
    C = np.asarray(counts_at_looks, dtype=np.int64)
    looks = np.asarray(looks, dtype=np.int64)
    if C.ndim != 2 or C.shape[1] != len(looks):
        raise ValueError(f"counts_at_looks must be [M, {len(looks)}], got shape {C.shape}")
    if selection_share is None:
        selection_share = DEFAULTS["selection_share"] if selection_counts is not None else 0.0
    if selection_share and selection_counts is None:
        raise ValueError("selection_share > 0 needs selection_counts")
    plan = _Plan(n0, int(looks[-1]), num_classes, sigma, eps, alpha, beta, gamma, None, 2.0, final_share,
                 selection_share, looks=looks)
    decision = np.zeros(C.shape[0], dtype=np.int8)
    n_used = np.zeros(C.shape[0], dtype=np.int64)
    if selection_share:
        decision[:] = plan.look0(selection_counts)
    for k in range(plan.K):
        open_ = np.flatnonzero(decision == UNDECIDED)
        if open_.size == 0:
            break
        decision[open_] = plan.look(k, C[open_, k])
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
                       beta: float = DEFAULTS["beta"], gamma: float = DEFAULTS["gamma"],
                       first_look: int = DEFAULTS["first_look"], growth: float = DEFAULTS["growth"],
                       final_share: float = DEFAULTS["final_share"],
                       selection_share: float = DEFAULTS["selection_share"]) -> dict[str, torch.Tensor]:
    """The sequential ε-check of the smoothed classifier for N inputs at once (this module's test).

    Args:
        smoothed: the :class:`SmoothedClassifier` (its σ, n0, n, batch size and generator are used;
            the budget per input is its n0 + n samples). With one generator per input, each
            input's answer depends only on its own generator (not on the other inputs).
        x: inputs ``[N, ...]`` in [0, 1]; the sampling runs on ``x.device``.
        eps: the ℓ2 radius ε > 0 to certify ("radius > ε", as CERTIFY).
        alpha: total failure probability α ∈ (0, 1); default the classifier's α.
        beta: the upper bounds' total level (β/K per early look), in (0, 1). Agreement with fixed-n
            CERTIFY only, not soundness.
        gamma: the stochastic-curtailment level γ ∈ [0, 1) (0: off). Agreement only.
        first_look, growth: the look schedule (:func:`look_schedule`).
        final_share: share of α − α_0 spent at the last look, in (0, 1).
        selection_share: share α_0/α of look 0 on the selection samples, in [0, 1) (0: off).

    Returns a dict of ``[N]`` tensors on ``x.device``: ``label`` (ĉ_A where certified, else
    ``ABSTAIN``), ``decision`` (int8, ``CERTIFIED``/``REFUSED``), ``guess`` (ĉ_A), ``n_sel`` (votes
    for ĉ_A among the n0 selection samples), ``n_A`` (votes for ĉ_A among the estimation samples
    drawn), ``n_used`` (estimation samples drawn, 0 when look 0 decided) and ``samples``
    (n0 + n_used, ≤ n0 + n).

    Guarantee: for every input, P[label ≠ ⊥ and (g(x) ≠ label or g is not robust at radius ε)]
    ≤ α over the noise (proof in the module docstring), as for CERTIFY followed by "radius > ε".
    """
    x = smoothed._check(x)
    eps = check_eps(eps)
    alpha = smoothed.alpha if alpha is None else _check_alpha(alpha)
    if not (isinstance(selection_share, (int, float)) and 0.0 <= selection_share < 1.0):
        raise ValueError(f"selection_share must be a number in [0, 1), got {selection_share!r}")
    if not (isinstance(gamma, (int, float)) and 0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must be a number in [0, 1), got {gamma!r}")
    plan = _Plan(smoothed.n0, smoothed.n, smoothed.num_classes, smoothed.sigma, eps, alpha, beta, gamma,
                 first_look, growth, final_share, selection_share)
    N = x.shape[0]
    if isinstance(smoothed.generator, (list, tuple)) and len(smoothed.generator) != N:
        raise ValueError(f"generator: a sequence needs one torch.Generator per input ({N}), "
                         f"got {len(smoothed.generator)}")
    sel = _sample_subset(smoothed, x, np.arange(N), smoothed.n0)
    guess = sel.argmax(dim=1)
    n_sel = sel.gather(1, guess[:, None])[:, 0].cpu().numpy()
    guess_np = guess.cpu().numpy()
    n_A = np.zeros(N, dtype=np.int64)
    n_used = np.zeros(N, dtype=np.int64)
    decision = plan.look0(n_sel)
    previous = 0
    for k in range(plan.K):
        open_ = np.flatnonzero(decision == UNDECIDED)
        if open_.size == 0:
            break
        idx = torch.as_tensor(open_, device=x.device)
        counts = _sample_subset(smoothed, x, open_, int(plan.looks[k]) - previous)
        n_A[open_] += counts.gather(1, guess.index_select(0, idx)[:, None])[:, 0].cpu().numpy()
        n_used[open_] = plan.looks[k]
        decision[open_] = plan.look(k, n_A[open_])
        previous = int(plan.looks[k])
    dev = x.device
    label = np.where(decision == CERTIFIED, guess_np, ABSTAIN)
    return dict(label=torch.as_tensor(label, dtype=torch.int64, device=dev),
                decision=torch.as_tensor(decision, device=dev), guess=guess,
                n_sel=torch.as_tensor(n_sel, device=dev),
                n_A=torch.as_tensor(n_A, device=dev), n_used=torch.as_tensor(n_used, device=dev),
                samples=torch.as_tensor(n_used + smoothed.n0, device=dev))


__all__ = ["sequential_certify", "sequential_decisions", "decide_look", "look_schedule", "alpha_spending",
           "p_A_upper", "threshold_count", "DEFAULTS", "UNDECIDED", "CERTIFIED", "REFUSED"]
