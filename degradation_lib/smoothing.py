"""Randomized smoothing (Cohen et al., 2019): the stochastic certified defense of Section 4.

Given a base classifier f (any network mapping inputs to logits), the *smoothed* classifier is

    g(x) = argmax_c  P_{ζ ~ N(0, σ² I)} [ f(x + ζ) = c ].

If the top class c_A has probability p_A ≥ p̲_A > 1/2, then g is constant on the ℓ2 ball of
radius R = σ·Φ⁻¹(p̲_A) around x (Cohen et al., Theorem 1). g has no closed form, so both its
prediction and its radius are estimated by Monte Carlo:

* CERTIFY(f, σ, x, n0, n, α): n0 noisy samples select a guess ĉ_A, n fresh samples count
  n_A = #{f(x + ζ_i) = ĉ_A}; p̲_A is the one-sided (1 − α) Clopper–Pearson lower bound on p_A.
  Abstain (⊥) when p̲_A < 1/2, else return ĉ_A with radius σ·Φ⁻¹(p̲_A). With probability at
  least 1 − α over the noise, a returned (ĉ_A, R) is correct: g(x) = ĉ_A and g is robust on the
  ball of radius R.
* PREDICT(f, σ, x, n, α): the two most frequent classes among n samples; abstain unless a
  two-sided binomial test rejects "both are equally likely" at level α. With probability at least
  1 − α a returned label equals g(x).

This module implements both *batched over many inputs at once*: all n0 + n samples of all inputs
form one flat stream of rows that is cut into chunks of ``batch_size`` rows (a chunk may span
several inputs), the noise of each chunk is drawn from one explicit ``torch.Generator``, and the
votes are accumulated with a single ``bincount`` per chunk -- no Python loop over samples or
inputs. The certified check at ε is ``radius > ε`` (the library's convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn
import torch.nn.functional as F

from .certifier import ABSTAIN, Certifier, check_eps, check_input

DEFAULT_BATCH_SIZE = 2_000
"""Noisy samples per forward pass: the fastest on the 2-core CPU of ``tests/benchmarks/bench_smoothing.py``
(use more on a GPU)."""


def _check_level(value, name: str) -> float:
    """``value`` as a float in the open interval (0, 1); ``ValueError`` naming ``name`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return v


def _check_alpha(alpha) -> float:
    return _check_level(alpha, "alpha")


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def p_A_lower(n_A, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 − α) Clopper–Pearson lower confidence bound on p_A from n_A successes of n.

    p̲_A = B⁻¹(α; n_A, n − n_A + 1), the α-quantile of a Beta(n_A, n − n_A + 1) distribution
    (``scipy.stats.beta.ppf``), and 0 where n_A = 0: the p at which P[Bin(n, p) ≥ n_A] = α
    (Cohen et al., CERTIFY; the lower end of the two-sided (1 − 2α) interval). Vectorised over
    ``n_A``. Computed with scipy directly rather than statsmodels' ``proportion_confint``, whose
    edge cases (count 0, tiny α, large n: statsmodels issues 9549, 9141) need care;
    ``tests/test_soundness.py`` checks both ends (n_A ∈ {0, 1, n − 1, n}, n up to 10⁶, α down to
    10⁻⁶) against ``beta.ppf`` and against the defining equation in 50-digit arithmetic.

    Raises ``ValueError`` unless 0 ≤ n_A ≤ n (integers), n ≥ 1 and 0 < α < 1.
    """
    n = _check_count(n, "n")
    alpha = _check_alpha(alpha)
    n_A = np.asarray(n_A)
    if n_A.size and (not np.all(np.equal(np.mod(n_A, 1), 0)) or n_A.min() < 0 or n_A.max() > n):
        raise ValueError(f"n_A must be integers in [0, n={n}], got values in [{n_A.min()}, {n_A.max()}]")
    n_A = n_A.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = beta.ppf(alpha, np.maximum(n_A, 1.0), n - n_A + 1)
    return np.where(n_A > 0, lower, 0.0).astype(np.float64)


def radius_from_p_A_lower(p_lower, sigma: float) -> np.ndarray:
    """Certified ℓ2 radius σ·Φ⁻¹(p̲_A) where p̲_A ≥ 1/2, else 0 (Cohen et al., Theorem 1)."""
    p_lower = np.asarray(p_lower, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sigma * norm.ppf(p_lower)
    return np.where(p_lower >= 0.5, np.maximum(r, 0.0), 0.0)


class SmoothedClassifier(Certifier):
    """The Gaussian-smoothed classifier g of a base network f, with CERTIFY and PREDICT.

    Args:
        base_model: ``nn.Module`` mapping ``[B, ...]`` inputs to ``[B, num_classes]`` logits
            (kept as :attr:`model`; its train/eval mode is left as found -- load models in eval).
        num_classes: number of classes C ≥ 2.
        sigma: noise level σ > 0 in input units (inputs in [0, 1]).
        n0: selection samples of CERTIFY (≥ 1).
        n: estimation samples of CERTIFY and samples of PREDICT (≥ 1).
        alpha: failure probability α ∈ (0, 1) of each answer.
        batch_size: noisy samples per forward pass.
        generator: ``torch.Generator`` all noise is drawn from (on the device of the inputs, or
            on the CPU, then moved); ``None`` draws from torch's global generator. Two
            classifiers whose generators start from the same seed give identical answers.
            May also be a sequence of N generators, one per input of the next call: input i's
            noise then comes from ``generator[i]`` alone (inputs are sampled one at a time), so
            its answer does not depend on the batch it is in -- how the experiment runner
            (:mod:`degradation_lib.experiments`) makes sharded smoothing runs reproducible
            point by point from (seed, index).
        pushforward: for a base network that starts with a linear layer (``nn.Sequential`` of
            an optional ``nn.Flatten`` then ``nn.Linear`` W, b), sample that layer's output
            directly: W(x + ζ) + b ~ N(Wx + b, σ² W Wᵀ), drawn as Wx + b + σ·L ξ with
            L Lᵀ = W Wᵀ and ξ ~ N(0, I_k), k = W's output width. The votes have exactly the
            distribution of the default path (so CERTIFY's guarantee is unchanged), at the cost
            of k instead of d normals and one k×k instead of one k×d product per sample --
            about 2-3× faster for a 784-256-128 MLP. Off by default: the default path works
            for any network and draws the input noise itself.
        sequential: make :meth:`certify` (the ε-check of Algorithm 2.1) the sequential test of
            :func:`degradation_lib.sequential.sequential_certify`: the same guarantee (a wrong
            "certified" answer with probability ≤ α), at most n0 + n samples per input, stopping
            as soon as "radius > ε" or "not within the budget" is clear. :meth:`certified_radius`
            and :meth:`certify_details` stay fixed-n CERTIFY. Off by default.

    ``norm`` is 2: the radius is an ℓ2 radius. The guarantees are probabilistic: each answer is
    wrong with probability at most α over the noise (Section 4 of the paper notes this is usually
    ignored when VRA is reported, as we do too).
    """

    norm = 2.0

    def __init__(self, base_model: nn.Module, num_classes: int, sigma: float, n0: int = 100,
                 n: int = 100_000, alpha: float = 0.001, batch_size: int = DEFAULT_BATCH_SIZE,
                 generator: torch.Generator | None = None, pushforward: bool = False, sequential: bool = False):
        if not isinstance(base_model, nn.Module):
            raise ValueError(f"base_model must be a torch.nn.Module, got {type(base_model).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if generator is not None and not isinstance(generator, torch.Generator) and not (
                isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator)):
            raise ValueError(f"generator must be a torch.Generator, a sequence of them (one per input) or None, "
                             f"got {type(generator).__name__}")
        self.model = base_model
        self.num_classes = int(num_classes)
        self.sigma = check_eps(sigma, "sigma")
        self.n0 = _check_count(n0, "n0")
        self.n = _check_count(n, "n")
        self.alpha = _check_alpha(alpha)
        self.batch_size = _check_count(batch_size, "batch_size")
        self.generator = generator
        self.pushforward = bool(pushforward)
        self.sequential = bool(sequential)
        if self.pushforward:
            split_linear_first_layer(base_model)     # raises ValueError when not applicable

    def __repr__(self) -> str:
        return (f"SmoothedClassifier(sigma={self.sigma}, n0={self.n0}, n={self.n}, alpha={self.alpha}, "
                f"batch_size={self.batch_size})")

    # -- the certificate-aware attack's surrogate -------------------------------------------
    monotone = True          # in the infinite-sample limit (Appendix A); w.h.p. in practice
    score_is_exact = False   # CERTIFY's Monte Carlo test decides; the score is a surrogate

    SCORE_SAMPLES = 128
    """Noise samples per input of :meth:`rejection_score` (SmoothAdv used 1–128 per step)."""

    def rejection_score(self, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None,
                        samples: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """A differentiable surrogate of CERTIFY's rejection at ε (SmoothAdv style).

        s(x) = ε − σ·Φ⁻¹(p̂_l(x)) = ε + σ·Φ⁻¹(1 − p̂_l(x)), p̂_l the softmax probability of class
        l averaged over
        ``samples`` noisy copies x + ζ, ζ ~ N(0, σ² I) (the softmax replaces the vote of the base
        classifier, which has no gradient; Salman et al. 2019). s(x) ≥ 0 means the smoothed
        radius estimated from p̂ is at most ε. The decision itself is CERTIFY with the
        certifier's n (100,000 in the paper) and α: its radius σ·Φ⁻¹(p̲_A) uses a lower
        confidence bound on the *vote* probability, so ``certify`` may reject where s < 0 and
        certify where s ≥ 0 (``score_is_exact = False``).

        Args:
            x: inputs ``[N, ...]`` in [0, 1].
            eps: ε > 0.
            labels: int64 ``[N]`` (default: the argmax of p̂ at x).
            samples: noise samples per input (default :attr:`SCORE_SAMPLES`).
            generator: ``torch.Generator`` of the noise (default: the certifier's), or a list of
                one per example.

        Returns ``[N]`` (``x``'s dtype and device); 1 − p̂_l is computed in float64 from the other
        classes' log-probabilities, so the gradient survives p̂_l ≈ 1.
        """
        eps = check_eps(eps)
        x = self._check(x)
        m = self.SCORE_SAMPLES if samples is None else _check_count(samples, "samples")
        if isinstance(generator, (list, tuple)):
            if len(generator) != x.shape[0] or not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(f"generator: a sequence needs one torch.Generator per example ({x.shape[0]})")
            noise = torch.stack([torch.randn((m, *x.shape[1:]), generator=g, device=g.device, dtype=x.dtype)
                                 for g in generator], dim=1).to(x.device)
        else:
            if generator is not None and not isinstance(generator, torch.Generator):
                raise ValueError(f"generator must be a torch.Generator, a list of them or None, got {type(generator).__name__}")
            g = self.generator if generator is None else generator
            if isinstance(g, (list, tuple)):
                raise ValueError("the certifier's generator is a list: pass generator= explicitly")
            if g is None or g.device == x.device:
                noise = torch.randn((m, *x.shape), generator=g, device=x.device, dtype=x.dtype)
            else:
                noise = torch.randn((m, *x.shape), generator=g, device=g.device, dtype=x.dtype).to(x.device)
        noisy = (x.unsqueeze(0) + self.sigma * noise).reshape(m * x.shape[0], *x.shape[1:])
        logits = self.model(noisy).reshape(m, x.shape[0], -1)
        if labels is None:
            labels = torch.softmax(logits.detach(), dim=2).mean(dim=0).argmax(dim=1)
        labels = self._check_labels(labels, x.shape[0], logits.device)
        # 1 − p̂_l from the other classes' log-probabilities (no cancellation when p̂_l ≈ 1, where
        # a clamped p̂_l would have no gradient), in float64
        logp = torch.log_softmax(logits.double(), dim=2)
        own = F.one_hot(labels, logp.shape[2]).bool()[None]
        q = logp.masked_fill(own, -math.inf).logsumexp(dim=2).exp().mean(dim=0)      # 1 − p̂_l
        q = q.clamp(1e-300, 1 - 1e-12)
        return (eps + self.sigma * torch.special.ndtri(q)).to(x.dtype)

    # -- sampling ---------------------------------------------------------------------------
    def _noise(self, shape, like: torch.Tensor) -> torch.Tensor:
        g = self.generator
        if g is None or g.device == like.device:
            z = torch.randn(shape, generator=g, device=like.device, dtype=like.dtype)
        else:
            z = torch.randn(shape, generator=g, device=g.device, dtype=like.dtype).to(like.device)
        return z

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """Votes of the base classifier under noise, for several independent sample sets.

        For every input x_k and every entry s of ``sizes``, draws s fresh samples
        f(x_k + ζ), ζ ~ N(0, σ² I), and counts the predicted classes.

        Args:
            x: inputs ``[N, ...]`` (validated by the caller).
            sizes: sample-set sizes, e.g. ``(n0, n)`` for CERTIFY.

        Returns:
            int64 ``[len(sizes), N, C]`` counts (each row of the last axis sums to its size).
        """
        sizes = [int(s) for s in sizes]
        gens = self.generator
        if isinstance(gens, (list, tuple)):               # one generator per input: one input at a time
            if len(gens) != x.shape[0]:
                raise ValueError(f"generator: a sequence needs one torch.Generator per input ({x.shape[0]}), "
                                 f"got {len(gens)}")
            parts = []
            try:
                for i, g in enumerate(gens):
                    self.generator = g
                    parts.append(self.sample_counts(x[i:i + 1], sizes))
            finally:
                self.generator = gens
            return torch.cat(parts, dim=1) if parts else torch.zeros(len(sizes), 0, self.num_classes,
                                                                     dtype=torch.int64, device=x.device)
        N, C, S = x.shape[0], self.num_classes, len(sizes)
        per = sum(sizes)                                  # samples per input
        total = N * per
        bounds = torch.tensor(np.cumsum(sizes)[:-1], device=x.device)
        counts = torch.zeros(S * N * C, dtype=torch.int64, device=x.device)
        if self.pushforward:
            first, rest = split_linear_first_layer(self.model)
            center = first(x.reshape(N, -1).to(first.weight.dtype))          # Wx + b, [N, k]
            factor = self.sigma * noise_factor(first.weight)                   # σ L, [k, k]
            shape = ()
        else:
            center, rest, shape = x.reshape(N, -1), self.model, tuple(x.shape[1:])
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            rows = torch.arange(start, stop, device=x.device)
            image = torch.div(rows, per, rounding_mode="floor")
            which = torch.bucketize(rows - image * per, bounds, right=True)   # sample set of each row
            # the clean rows under the noise: one broadcast row when the chunk is within one input
            base = center[start // per] if start // per == (stop - 1) // per else center.index_select(0, image)
            noise = self._noise((rows.numel(), center.shape[1]), center)
            if self.pushforward:
                noisy = torch.addmm(base, noise, factor.T)
            else:
                noisy = noise.mul_(self.sigma).add_(base).view(rows.numel(), *shape)
            pred = rest(noisy).argmax(dim=1)
            counts += torch.bincount((which * N + image) * C + pred, minlength=S * N * C)
        return counts.view(S, N, C)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x)
        if x.dim() < 2:
            raise ValueError(f"x must be a batch [N, ...], got shape {tuple(x.shape)}")
        return x

    # -- CERTIFY and PREDICT ----------------------------------------------------------------
    def certify_details(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """CERTIFY with its intermediate quantities, for N inputs at once.

        Returns a dict of ``[N]`` tensors on ``x.device``: ``label`` (ĉ_A, or ``ABSTAIN``),
        ``radius`` (float64, 0 where abstaining), ``guess`` (ĉ_A before the test), ``n_A``
        (estimation votes for ĉ_A out of ``n``) and ``p_A_lower`` (float64).
        """
        x = self._check(x)
        counts = self.sample_counts(x, (self.n0, self.n))
        guess = counts[0].argmax(dim=1)
        n_A = counts[1].gather(1, guess[:, None])[:, 0]
        p_low = p_A_lower(n_A.cpu().numpy(), self.n, self.alpha)
        radius = radius_from_p_A_lower(p_low, self.sigma)
        keep = torch.as_tensor(p_low >= 0.5, device=x.device)
        return dict(label=torch.where(keep, guess, torch.full_like(guess, ABSTAIN)),
                    radius=torch.as_tensor(radius, dtype=torch.float64, device=x.device),
                    guess=guess, n_A=n_A,
                    p_A_lower=torch.as_tensor(p_low, dtype=torch.float64, device=x.device))

    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY (Cohen et al., 2019) for a batch.

        Args:
            x: inputs ``[N, ...]`` in [0, 1].

        Returns:
            ``(labels, radius)``: int64 ``[N]`` (``ABSTAIN`` where p̲_A < 1/2) and float64 ``[N]``
            ℓ2 radii σ·Φ⁻¹(p̲_A) (0 where abstaining). Each non-abstaining answer is correct with
            probability ≥ 1 − α: g(x) = label and g is constant on the open ℓ2 ball of that radius.
        """
        d = self.certify_details(x)
        return d["label"], d["radius"]

    def certify(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The ε-check of Algorithm 2.1: ĉ_A where certified at ε, ``ABSTAIN`` elsewhere, int64 ``[N]``.

        Fixed-n CERTIFY then "radius > ε" by default; the sequential test
        (:func:`degradation_lib.sequential.sequential_certify`, same guarantee) when the classifier
        was built with ``sequential=True``.
        """
        if not self.sequential:
            return super().certify(x, eps)
        from .sequential import sequential_certify        # sequential imports this module
        return sequential_certify(self, x, eps)["label"]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """PREDICT (Cohen et al., 2019): g(x) from ``n`` samples per input, int64 ``[N]``.

        ``ABSTAIN`` unless the two-sided binomial test (scipy ``binomtest``) of the top two counts
        rejects p = 1/2 at level α; a returned label differs from g(x) with probability ≤ α.
        """
        x = self._check(x)
        counts = self.sample_counts(x, (self.n,))[0]
        top2 = counts.topk(2, dim=1)
        n_A, n_B = top2.values[:, 0].cpu().numpy(), top2.values[:, 1].cpu().numpy()
        # binomtest is not vectorised: one scalar test per distinct (n_A, n_B) pair
        pairs, inverse = np.unique(np.stack([n_A, n_B], axis=1), axis=0, return_inverse=True)
        pvalue = np.array([binomtest(int(a), int(a + b), 0.5).pvalue for a, b in pairs])[inverse.reshape(-1)]
        keep = torch.as_tensor(pvalue <= self.alpha, device=x.device)
        label = top2.indices[:, 0]
        return torch.where(keep, label, torch.full_like(label, ABSTAIN))


# -- exact sampling through a linear first layer ---------------------------------------------------
def split_linear_first_layer(model: nn.Module) -> tuple[nn.Linear, nn.Module]:
    """``(first, rest)`` with ``model(z) == rest(first(z.flatten(1)))`` for an ``nn.Sequential``
    made of an optional ``nn.Flatten`` then an ``nn.Linear``; ``ValueError`` for other networks."""
    layers = list(model) if isinstance(model, nn.Sequential) else []
    if layers and isinstance(layers[0], nn.Flatten):
        layers = layers[1:]
    if not layers or not isinstance(layers[0], nn.Linear):
        raise ValueError("pushforward needs base_model = nn.Sequential([nn.Flatten(),] nn.Linear, ...), "
                         f"got {type(model).__name__}")
    return layers[0], nn.Sequential(*layers[1:])


def noise_factor(weight: torch.Tensor) -> torch.Tensor:
    """A matrix L ``[k, k]`` with L Lᵀ = W Wᵀ for W ``[k, d]`` (so Wζ ~ L ξ for standard normals).

    Computed in float64 from the eigendecomposition W Wᵀ = V Λ Vᵀ as L = V Λ^{1/2} (defined even
    when W Wᵀ is singular), returned in W's dtype and device.
    """
    w = weight.detach().to(torch.float64)
    lam, v = torch.linalg.eigh(w @ w.T)
    return (v * lam.clamp_min(0).sqrt()).to(weight.dtype)


# -- the base networks of the committed models --------------------------------------------------
def make_base_model(arch: dict) -> nn.Module:
    """The base classifier described by ``arch`` (the ``"arch"`` entry of a model's json).

    ``{"type": "mlp", "input_shape": [1, 28, 28], "hidden": [256, 128], "num_classes": 10}``:
    Flatten → (Linear → ReLU) per hidden width → Linear to the class logits.
    """
    if arch.get("type") != "mlp":
        raise ValueError(f"unknown base architecture {arch.get('type')!r}; known: 'mlp'")
    d = int(np.prod(arch["input_shape"]))
    layers: list[nn.Module] = [nn.Flatten()]
    for h in arch["hidden"]:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        d = int(h)
    layers.append(nn.Linear(d, int(arch["num_classes"])))
    return nn.Sequential(*layers)


def load_checkpoint(meta: dict, state_dict: dict, device: torch.device) -> SmoothedClassifier:
    """Registry builder (``kind == "smoothing"``): the smoothed classifier of a committed model.

    ``meta["arch"]`` describes the base network (:func:`make_base_model`), ``meta["certifier"]``
    holds σ, n0, n, α (and optionally batch_size). The generator is unset (global RNG):
    construct your own :class:`SmoothedClassifier` or set ``.generator`` for reproducible runs.
    """
    model = make_base_model(meta["arch"])
    model.load_state_dict(state_dict)
    model.to(device).eval()
    cfg = meta["certifier"]
    return SmoothedClassifier(model, int(meta["arch"]["num_classes"]), sigma=float(cfg["sigma"]),
                              n0=int(cfg.get("n0", 100)), n=int(cfg.get("n", 100_000)),
                              alpha=float(cfg.get("alpha", 0.001)),
                              batch_size=int(cfg.get("batch_size", DEFAULT_BATCH_SIZE)),
                              pushforward=bool(cfg.get("pushforward", False)))


__all__ = ["SmoothedClassifier", "p_A_lower", "noise_factor", "split_linear_first_layer", "radius_from_p_A_lower", "make_base_model", "load_checkpoint",
           "DEFAULT_BATCH_SIZE"]
