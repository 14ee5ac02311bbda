"""The M-membership-oracle defense of Section 4.2 (ours: the paper proposes it, leaves it as future work).

Section 4.2: an input x' is an adversarial example *iff* some valid input x ∈ M with
‖x − x'‖_p ≤ ε is labelled differently from x'. A certified run-time defense (Algorithm 2.1)
rejects x' whenever f is not locally robust at x' -- also where no valid input nearby has another
label, which is what a degradation attack exploits. The fix: given an oracle for membership in M,

1. accept x' (answer f(x')) when the certificate holds at x' (no point of the ε-ball has another
   label, valid or not);
2. otherwise search, within a budget (``steps`` × ``restarts`` gradient steps), for a *witness*
   x ∈ B_p(x', ε) ∩ [0, 1]^d that the oracle accepts and with f(x) ≠ f(x'). Found → reject: x' is
   a genuine adversarial example and the witness proves it (as far as the oracle is right);
3. not found → ``policy="reject"`` falls back to the local-robustness answer (the paper's
   wording: sound, the same rejections as the plain defense, but every rejection with a witness
   is now known to be an adversarial example) or ``policy="accept"`` answers f(x') (the
   *budgeted* defense: an adversarial example that hides its witnesses from the search gets
   through -- no longer a proof).

This module provides

* :class:`MembershipOracle`, the interface: a differentiable score s(x) ``[N]`` and a threshold τ,
  x ∈ M is declared where s(x) ≤ τ; :func:`calibrate_threshold` sets τ on held-out valid inputs
  to a stated false-alarm rate;
* :class:`BallUnionOracle`: an exact oracle for M a union of ℓ2 balls (the 2-D example of
  Figure 1);
* :class:`AutoencoderOracle`: the MNIST oracle, the ℓ2 reconstruction error of a small
  convolutional *denoising* autoencoder, s(x) = ‖x − D(E(x))‖₂, trained on this CPU in minutes
  (:func:`train_autoencoder`, ``python -m degradation_lib.oracle``) and committed in
  ``checkpoints/oracles/`` (:func:`load_oracle`);
* :func:`search_witness`, the budgeted search, and :class:`ManifoldDefense`, the defended
  predictor, a :class:`~degradation_lib.certifier.Certifier` usable wherever one is
  (:func:`~degradation_lib.certifier.predict_with_defense`, the attacks).

Why a denoising autoencoder's reconstruction error. It is (a) cheap: a few minutes of training
on one CPU thread and two small convolutions per forward pass; (b) differentiable, which the
budgeted search and an adaptive attacker both need; (c) measured in the same ℓ2 units as ε:
the score changes by at most ‖δ‖₂ (1 + Lip(D∘E)) under a perturbation δ, and since the
denoising training makes D∘E contract noise back towards the digits, a perturbation off the
digit manifold raises the score by about its own length -- so the threshold τ reads as a
*thickness* of the accepted set around M, directly comparable with ε. Its known weakness (an
autoencoder can reconstruct simple non-digits well) is measured on the oracle's report, and the
adaptive attack on the book's page 12 is free to exploit it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .certifier import ABSTAIN, Certifier, check_eps, check_input, check_norm, resolve_device
from .attacks import eval_mode, project

ORACLE_DIR = Path(__file__).resolve().parent / "checkpoints" / "oracles"
"""Committed oracles: ``NAME.pt`` (state_dict) and ``NAME.json`` (recipe, threshold, metrics)."""

POLICIES = ("reject", "accept")


# --------------------------------------------------------------------------------------------
# threshold calibration
# --------------------------------------------------------------------------------------------

def calibrate_threshold(scores, false_alarm: float) -> float:
    """The threshold τ with a false-alarm rate of at most ``false_alarm`` on fresh valid inputs.

    τ is the ⌈(n + 1)(1 − α)⌉-th smallest of the n calibration scores (α = ``false_alarm``), the
    split-conformal quantile: for a fresh valid input exchangeable with the calibration set,
    P[s(x) > τ] ≤ α, and ≥ α − 1/(n + 1) when the scores have no ties.

    Args:
        scores: ``[n]`` oracle scores of held-out *valid* inputs (not used for training).
        false_alarm: α ∈ (0, 1), with ⌈(n + 1)(1 − α)⌉ ≤ n (i.e. n ≥ 1/α − 1).

    Returns:
        τ as a float; the oracle accepts x where s(x) ≤ τ.
    """
    s = np.sort(np.asarray(torch.as_tensor(scores).detach().cpu().double().numpy(), dtype=np.float64).ravel())
    if not (isinstance(false_alarm, (int, float)) and 0 < false_alarm < 1):
        raise ValueError(f"false_alarm must be in (0, 1), got {false_alarm!r}")
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError("scores must be a non-empty array of finite values")
    k = math.ceil((s.size + 1) * (1 - false_alarm))
    if k > s.size:
        raise ValueError(f"false_alarm={false_alarm} needs at least {math.ceil(1 / false_alarm - 1)} calibration "
                         f"scores, got {s.size}")
    return float(s[k - 1])


# --------------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------------

class MembershipOracle(nn.Module):
    """An M-membership oracle: a score s(x) ``[N]`` (low = valid) and a threshold τ.

    ``accepts(x)`` is s(x) ≤ τ. Subclasses implement :meth:`score`, differentiable in x (the
    budgeted search and adaptive attacks ascend/descend it). The device follows the module's
    parameters; inputs are moved there.
    """

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = float(threshold)

    def score(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    @torch.no_grad()
    def accepts(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean ``[N]``: s(x) ≤ τ (x is declared a member of M)."""
        with eval_mode(self):
            return (self.score(x) <= self.threshold).to(x.device)

    @torch.no_grad()
    def calibrate(self, x_valid: torch.Tensor, false_alarm: float, batch_size: int = 1000) -> float:
        """Set τ by :func:`calibrate_threshold` on held-out valid inputs ``[n, ...]``; returns τ."""
        with eval_mode(self):
            s = torch.cat([self.score(x_valid[i:i + batch_size]).cpu() for i in range(0, len(x_valid), batch_size)])
        self.threshold = calibrate_threshold(s, false_alarm)
        return self.threshold


class BallUnionOracle(MembershipOracle):
    """The exact oracle for M = ⋃_k B₂(c_k, r_k): s(x) = min_k (‖x − c_k‖₂ − r_k), τ = 0.

    Args:
        centers: ``[K, d]`` ball centres; radii: ``[K]`` positive radii. Inputs are ``[N, d]``.
    """

    def __init__(self, centers, radii):
        super().__init__(threshold=0.0)
        centers = torch.as_tensor(centers, dtype=torch.float64)
        radii = torch.as_tensor(radii, dtype=torch.float64)
        if centers.dim() != 2 or radii.shape != (centers.shape[0],):
            raise ValueError(f"centers must be [K, d] and radii [K], got {tuple(centers.shape)} and {tuple(radii.shape)}")
        if not (radii > 0).all():
            raise ValueError("radii must be positive")
        self.register_buffer("centers", centers)
        self.register_buffer("radii", radii)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.centers)
        return (torch.cdist(x, self.centers) - self.radii).min(dim=1).values


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder for ``[N, 1, 28, 28]`` images (latent dimension ``latent``).

    E: conv 1→32 (3×3, stride 2) → ReLU → conv 32→64 (3×3, stride 2) → ReLU → linear → z;
    D: linear → ReLU → transposed conv 64→32 → ReLU → transposed conv 32→1 → sigmoid.
    """

    def __init__(self, latent: int = 16):
        super().__init__()
        self.latent = int(latent)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, self.latent))
        self.decoder = nn.Sequential(
            nn.Linear(self.latent, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AutoencoderOracle(MembershipOracle):
    """MNIST membership by reconstruction: s(x) = ‖x − D(E(x))‖₂ per image, accepted where s ≤ τ.

    Args:
        autoencoder: a :class:`ConvAutoencoder` (its device and dtype are used).
        threshold: τ (ℓ2, input units), from :meth:`calibrate` or the committed checkpoint.
    """

    def __init__(self, autoencoder: ConvAutoencoder, threshold: float = math.inf):
        super().__init__(threshold)
        if not isinstance(autoencoder, ConvAutoencoder):
            raise ValueError(f"autoencoder must be a ConvAutoencoder, got {type(autoencoder).__name__}")
        self.autoencoder = autoencoder

    def score(self, x: torch.Tensor) -> torch.Tensor:
        p = next(self.autoencoder.parameters())
        x = x.to(device=p.device, dtype=p.dtype)
        return torch.linalg.vector_norm((x - self.autoencoder(x)).flatten(1), dim=1)


def load_oracle(name: str = "mnist_ae", device: str | torch.device = "cpu") -> AutoencoderOracle:
    """The committed oracle ``name`` (``checkpoints/oracles/NAME.{pt,json}``), calibrated, on ``device``."""
    meta = oracle_metadata(name)
    device = resolve_device(device)
    ae = ConvAutoencoder(latent=int(meta["latent"]))
    state = torch.load(ORACLE_DIR / f"{name}.pt", map_location=device, weights_only=True)
    ae.load_state_dict({k: v.float() for k, v in state.items()})
    oracle = AutoencoderOracle(ae, threshold=float(meta["threshold"])).to(device)
    oracle.eval()
    return oracle


def oracle_metadata(name: str = "mnist_ae") -> dict:
    """The ``NAME.json`` of a committed oracle: recipe, threshold, calibration and measured rates."""
    known = sorted(p.stem for p in ORACLE_DIR.glob("*.json") if p.with_suffix(".pt").is_file())
    if name not in known:
        raise ValueError(f"unknown oracle {name!r}; known oracles: {', '.join(known) or '(none yet)'}")
    return json.loads((ORACLE_DIR / f"{name}.json").read_text())


# --------------------------------------------------------------------------------------------
# inputs outside M, generated offline
# --------------------------------------------------------------------------------------------

def non_digit_inputs(digits: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Images ``[N, 1, 28, 28]`` in [0, 1] that are not MNIST digits, one batch per kind.

    Generated from ``digits`` (``[N, 1, 28, 28]``, used for their number and pixel statistics)
    and ``generator`` (default seeded 0):

    * ``"uniform noise"``: i.i.d. U(0, 1) pixels;
    * ``"gaussian noise"``: clip(N(m, s²)) with m, s the digits' pixel mean and standard deviation;
    * ``"shuffled digits"``: each digit's pixels randomly permuted (same histogram, no shape);
    * ``"inverted digits"``: 1 − x;
    * ``"strokes"``: three random straight strokes (anti-aliased, ≈ 2 px wide);
    * ``"rectangles"``: one random axis-aligned rectangle outline (2 px).
    """
    digits = check_input(digits, ndim=4, shape=(1, 28, 28), name="digits")
    g = torch.Generator().manual_seed(0) if generator is None else generator
    n = digits.shape[0]
    d = digits.cpu()
    out = {"uniform noise": torch.rand(n, 1, 28, 28, generator=g)}
    out["gaussian noise"] = (d.mean() + d.std() * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1)
    perm = torch.argsort(torch.rand(n, 784, generator=g), dim=1)
    out["shuffled digits"] = d.flatten(1).gather(1, perm).view(n, 1, 28, 28)
    out["inverted digits"] = 1 - d
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    pix = torch.stack([xx, yy], -1).view(1, 1, 784, 2)
    a = 4 + 20 * torch.rand(n, 3, 1, 2, generator=g)
    b = 4 + 20 * torch.rand(n, 3, 1, 2, generator=g)
    ab = b - a
    t = (((pix - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0, 1)
    dist = torch.linalg.vector_norm(pix - (a + t[..., None] * ab), dim=-1)  # [n, 3, 784]
    out["strokes"] = (1.5 - dist).clamp(0, 1).amax(1).view(n, 1, 28, 28)
    lo = 3 + 10 * torch.rand(n, 2, generator=g)
    hi = lo + 6 + 8 * torch.rand(n, 2, generator=g)
    inside_outer = ((xx >= lo[:, 0, None, None]) & (xx <= hi[:, 0, None, None])
                    & (yy >= lo[:, 1, None, None]) & (yy <= hi[:, 1, None, None]))
    inside_inner = ((xx >= lo[:, 0, None, None] + 2) & (xx <= hi[:, 0, None, None] - 2)
                    & (yy >= lo[:, 1, None, None] + 2) & (yy <= hi[:, 1, None, None] - 2))
    out["rectangles"] = (inside_outer & ~inside_inner).float().view(n, 1, 28, 28)
    return {k: v.to(digits.device) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# the budgeted search and the defended predictor
# --------------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    """What :func:`search_witness` found, per example.

    Attributes:
        found: bool ``[N]``: a witness was found.
        witness: ``[N, ...]``: the witness where ``found`` (x ∈ B_p(x', ε) ∩ [0, 1]^d, accepted
            by the oracle, f(x) ≠ ``labels``), x' itself elsewhere.
        witness_label: int64 ``[N]``: f(witness) where found, ``ABSTAIN`` elsewhere.
        model_forward, oracle_forward, backward: number of forward passes of the classifier and
            of the oracle, and of backward passes (through both), per example, float64 ``[N]``.
    """

    found: torch.Tensor
    witness: torch.Tensor
    witness_label: torch.Tensor
    model_forward: torch.Tensor
    oracle_forward: torch.Tensor
    backward: torch.Tensor


def _margin_away(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{i ≠ l} z_i − z_l ``[N]``: > 0 exactly where the top class is not l (ties count as 0)."""
    z_l = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), -math.inf)
    return others.max(dim=1).values - z_l


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def search_witness(model: nn.Module, oracle: MembershipOracle, x_prime: torch.Tensor, eps: float, norm: float,
                   labels: torch.Tensor | None = None, *, steps: int = 50, restarts: int = 2,
                   rel_step: float = 0.05, penalty: float = 1.0, margin: float = 0.05,
                   generator: torch.Generator | None = None) -> SearchResult:
    """Budgeted search for a valid, differently-labelled input near x' (Section 4.2's check).

    For each x' it looks for a witness x with

        ‖x − x'‖_p ≤ ε,  x ∈ [0, 1]^d,  oracle.accepts(x)  and  f(x) ≠ l  (l = ``labels``, f(x')),

    by projected gradient descent on the hinge loss L(x) = relu(κ − m_l(x)) + λ·relu(s(x) − τ + κ),
    m_l(x) = max_{i≠l} z_i(x) − z_l(x) the margin away from l, s the oracle's score, τ its
    threshold, κ = ``margin`` and λ = ``penalty``: L = 0 exactly where both conditions hold with
    slack κ. Restart 0 starts at x' itself, the others at uniform points of the ball (drawn from
    ``generator``); every iterate is checked (the exact conditions, without slack) and the first
    one that satisfies all four is returned. Examples stop being searched once found. Steps are
    ``rel_step·ε`` along the ℓ2-normalised gradient (ℓ2) or its sign (ℓ∞), then
    :func:`~degradation_lib.attacks.project` (ball and box).

    Guarantee: a returned witness satisfies the four conditions as evaluated by ``model`` and
    ``oracle`` (the ball up to float rounding of the projection); "not found" proves nothing.

    Args:
        model: classifier ``[N, ...] -> [N, C]`` logits (its train/eval mode is left as found).
        oracle: the :class:`MembershipOracle`.
        x_prime: inputs x' ``[N, ...]`` in [0, 1].
        eps: ε > 0; norm: 2 or inf (the certifier's norm).
        labels: int64 ``[N]``, the label to differ from (default f(x')).
        steps: gradient steps per restart (≥ 1); restarts: number of restarts (≥ 1). The budget
            is ``steps × restarts`` gradient steps per input.
        rel_step: step length relative to ε (> 0); penalty: λ > 0; margin: κ ≥ 0.
        generator: ``torch.Generator`` for the random restarts (default: a fresh one seeded 0).

    Returns:
        :class:`SearchResult`.
    """
    from .attacks import _forward, _random_start, _unit_step

    x_prime = check_input(x_prime)
    eps = check_eps(eps)
    norm = check_norm(norm)
    if norm not in (2.0, math.inf):
        raise ValueError(f"norm must be 2 or float('inf') for the witness search, got {norm!r}")
    steps = _check_int(steps, "steps", 1)
    restarts = _check_int(restarts, "restarts", 1)
    rel_step = check_eps(rel_step, "rel_step")
    penalty = check_eps(penalty, "penalty")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if not isinstance(oracle, MembershipOracle):
        raise ValueError(f"oracle must be a MembershipOracle, got {type(oracle).__name__}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    elif not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    n, dev = x_prime.shape[0], x_prime.device
    x_prime = x_prime.detach()
    with eval_mode(model), eval_mode(oracle):
        if labels is None:
            with torch.no_grad():
                labels = _forward(model, x_prime).argmax(1)
        labels = torch.as_tensor(labels, device=dev).long()
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        witness = x_prime.clone()
        witness_label = torch.full((n,), ABSTAIN, dtype=torch.int64, device=dev)
        f_model = torch.zeros(n, dtype=torch.float64, device=dev)
        f_oracle = torch.zeros_like(f_model)
        f_back = torch.zeros_like(f_model)
        tau = oracle.threshold
        step_size = rel_step * eps
        for restart in range(restarts):
            if found.all():
                break
            start = x_prime if restart == 0 else _random_start(x_prime, eps, norm, generator)
            idx = (~found).nonzero()[:, 0]
            z = start[idx].clone()
            for step in range(steps + 1):  # steps gradient steps, then a check of the last iterate
                z = z.detach().requires_grad_(step < steps)
                with torch.set_grad_enabled(step < steps):
                    logits = _forward(model, z)
                    s = oracle.score(z).to(logits.dtype)
                    m = _margin_away(logits, labels[idx])
                f_model[idx] += 1
                f_oracle[idx] += 1
                ok = (m.detach() > 0) & (s.detach() <= tau)
                if ok.any():
                    hit = idx[ok]
                    found[hit] = True
                    witness[hit] = z.detach()[ok].to(witness.dtype)
                    witness_label[hit] = logits.detach()[ok].argmax(1)
                keep = ~ok
                if step == steps or not keep.any():
                    break
                loss = torch.relu(margin - m) + penalty * torch.relu(s - tau + margin)
                grad, = torch.autograd.grad(loss[keep].sum(), z)
                f_back[idx] += 1
                idx, z, grad = idx[keep], z.detach()[keep], grad[keep]
                unit = _unit_step(grad, norm)           # the attacks' step direction (one helper)
                z = project(x_prime[idx], z - step_size * unit.to(z.dtype), eps, norm)
    return SearchResult(found, witness, witness_label, f_model, f_oracle, f_back)


@dataclass
class DefenseResult:
    """The defended predictor's answer and its evidence, per example (see :meth:`ManifoldDefense.defend`).

    Attributes:
        labels: int64 ``[N]``: the answer, f(x') or ``ABSTAIN``.
        certified: bool ``[N]``: the certificate held at x' (accepted without search).
        searched: bool ``[N]``: the budgeted search ran (certificate failed, f(x') ≠ ⊥).
        found: bool ``[N]``: a witness was found (x' is an adversarial example: rejected).
        witness: ``[N, ...]``: the witness where found, x' elsewhere.
        model_forward, oracle_forward, backward: passes per example (float64 ``[N]``), the
            certificate's own forward pass included in ``model_forward`` and counted once (a
            logit-based check such as GloRo's gets f(x') from the same logits; the code asks the
            certifier for ``predict`` separately, for certifiers where it does not).
    """

    labels: torch.Tensor
    certified: torch.Tensor
    searched: torch.Tensor
    found: torch.Tensor
    witness: torch.Tensor
    model_forward: torch.Tensor
    oracle_forward: torch.Tensor
    backward: torch.Tensor


class ManifoldDefense(Certifier):
    """PredictWithDefense with an M-membership oracle (Section 4.2; ours), a :class:`Certifier`.

    ``certify(x', ε)``: f(x') where the wrapped certificate holds at x'; elsewhere the budgeted
    :func:`search_witness` looks for a valid input within ε of x' with another label; found → ⊥
    (a proven adversarial example, up to the oracle); not found → ⊥ under ``policy="reject"``
    (the paper's fall-back to the local-robustness check: sound, the plain defense's answers) or
    f(x') under ``policy="accept"`` (the budgeted defense: no longer a proof).

    Args:
        certifier: the wrapped :class:`Certifier` (its ``model``, ``norm`` and check are used).
        oracle: the :class:`MembershipOracle` (moved to the model's device).
        policy: ``"reject"`` or ``"accept"``.
        steps, restarts, rel_step, penalty, margin: the search budget and settings
            (:func:`search_witness`); the budget is ``steps × restarts`` gradient steps.
        seed: the search's random restarts are drawn from ``torch.Generator().manual_seed(seed)``
            afresh at every call, so answers are deterministic (an adversary who knows the seed
            can replay the search: the adaptive attack assumes so).

    ``certified_radius`` and ``predict`` are the wrapped certifier's (the certificate); the
    ``rejection_loss`` hook, where the wrapped certifier has one, is passed through so the
    library's attacks run unchanged against the defense.
    """

    def __init__(self, certifier: Certifier, oracle: MembershipOracle, policy: str = "accept", *,
                 steps: int = 50, restarts: int = 2, rel_step: float = 0.05, penalty: float = 1.0,
                 margin: float = 0.05, seed: int = 0):
        if not isinstance(certifier, Certifier):
            raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
        if not isinstance(oracle, MembershipOracle):
            raise ValueError(f"oracle must be a MembershipOracle, got {type(oracle).__name__}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.certifier = certifier
        self.model = certifier.model
        self.norm = certifier.norm
        self.oracle = oracle
        self.policy = policy
        self.steps = _check_int(steps, "steps", 1)
        self.restarts = _check_int(restarts, "restarts", 1)
        self.rel_step = check_eps(rel_step, "rel_step")
        self.penalty = check_eps(penalty, "penalty")
        self.margin = float(margin)
        self.seed = int(seed)
        p = next(self.model.parameters(), None)
        if p is not None:
            self.oracle.to(p.device)
        if callable(getattr(certifier, "rejection_loss", None)):
            self.rejection_loss = certifier.rejection_loss

    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The wrapped certifier's ``(labels, radius)`` (the certificate; the search adds no radius)."""
        return self.certifier.certified_radius(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The undefended prediction f(x) of the wrapped certifier."""
        return self.certifier.predict(x)

    def defend(self, x: torch.Tensor, eps: float) -> DefenseResult:
        """The defended answer at ε with its evidence (witnesses and pass counts): see the class."""
        eps = check_eps(eps)
        x = check_input(x)
        n = x.shape[0]
        cert = self.certifier.certify(x, eps)
        pred = self.certifier.predict(x).to(cert.device)
        certified = cert != ABSTAIN
        searched = ~certified & (pred != ABSTAIN)
        labels = cert.clone()
        found = torch.zeros(n, dtype=torch.bool, device=cert.device)
        witness = x.detach().clone()
        f_model = torch.ones(n, dtype=torch.float64)
        f_oracle = torch.zeros(n, dtype=torch.float64)
        back = torch.zeros(n, dtype=torch.float64)
        idx = searched.nonzero()[:, 0]
        if idx.numel():
            xi = idx.to(x.device)
            res = search_witness(self.model, self.oracle, x[xi], eps, self.norm, pred[idx].to(x.device),
                                 steps=self.steps, restarts=self.restarts, rel_step=self.rel_step,
                                 penalty=self.penalty, margin=self.margin,
                                 generator=torch.Generator().manual_seed(self.seed))
            found[idx] = res.found.to(found.device)
            witness[xi] = res.witness.to(witness.dtype)
            f_model[idx.cpu()] += res.model_forward.cpu()
            f_oracle[idx.cpu()] += res.oracle_forward.cpu()
            back[idx.cpu()] += res.backward.cpu()
            if self.policy == "accept":
                take = idx[~res.found.to(idx.device)]
                labels[take] = pred[take]
        return DefenseResult(labels, certified, searched, found, witness, f_model, f_oracle, back)

    def certify(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The defended answer: int64 ``[N]``, f(x') or ``ABSTAIN`` (see the class docstring)."""
        return self.defend(x, eps).labels

    def to(self, device) -> "ManifoldDefense":
        self.certifier.to(device)
        self.oracle.to(device)
        return self

    def __repr__(self) -> str:
        return (f"ManifoldDefense({self.certifier!r}, policy={self.policy!r}, "
                f"budget={self.steps}x{self.restarts})")


# --------------------------------------------------------------------------------------------
# an adaptive attack
# --------------------------------------------------------------------------------------------

def adaptive_attack(defense: ManifoldDefense, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None, *,
                    steps: int = 100, rel_step: float = 0.025, targets: int = 2, oracle_weight: float = 1.0,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An adversary who knows the oracle and the search (its code, budget and seed): ours.

    Goal: x' with ‖x' − x‖_p ≤ ε, f(x') ≠ y (``labels``, default f(x)) and ``defense`` answering
    f(x') (not ⊥). The certificate can never hold at such an x' (x itself is in B(x', ε) with
    another label), so x' must get past the search: every valid differently-labelled point of
    its ε-ball -- x among them -- must stay hidden from it. The attack builds candidates by PGD
    (:func:`~degradation_lib.attacks.pgd_ascent`, ``steps`` steps of ``rel_step·ε``, random
    start from ``generator``), replays the defense on each (deterministic: the attacker knows
    the seed) and keeps, per example, the first candidate that gets through:

    1. *deep*: maximise the margin max_{i≠y} z_i − z_y without limit (a confidently wrong x'
       puts the search's margin term far from its goal);
    2. *on-manifold*: maximise min(margin, 1) − w·s(x'), w = ``oracle_weight`` (a wrong x' that
       the oracle accepts: the search's oracle term no longer pulls it back towards x);
    3. *targeted*: for each of the ``targets`` classes t ≠ y with the highest logits at x,
       maximise z_t − max_{i≠t} z_i.

    Returns:
        ``(x_adv, through)``: ``[N, ...]`` (the first candidate that got through, else the deep
        one) and bool ``[N]``: the defense answers a label other than y at x_adv.
    """
    from .attacks import _forward, pgd_ascent

    if not isinstance(defense, ManifoldDefense):
        raise ValueError(f"defense must be a ManifoldDefense, got {type(defense).__name__}")
    x = check_input(x).detach()
    eps = check_eps(eps)
    steps = _check_int(steps, "steps", 1)
    targets = _check_int(targets, "targets", 0)
    model, oracle, norm = defense.model, defense.oracle, defense.norm
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    with eval_mode(model), eval_mode(oracle):
        with torch.no_grad():
            logits0 = _forward(model, x)
        if labels is None:
            labels = logits0.argmax(1)
        labels = torch.as_tensor(labels, device=x.device).long()
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape [{x.shape[0]}], got {tuple(labels.shape)}")
        others = logits0.masked_fill(nn.functional.one_hot(labels, logits0.shape[1]).bool(), -math.inf)
        ranked = others.argsort(dim=1, descending=True)[:, :min(targets, logits0.shape[1] - 1)]

        # each objective: (z [n, ...], rows [n]) -> [n], rows index the batch
        objectives = [
            lambda z, rows: _margin_away(_forward(model, z), labels[rows]),
            lambda z, rows: (_margin_away(_forward(model, z), labels[rows]).clamp(max=1.0)
                             - oracle_weight * oracle.score(z).to(z.dtype)),
        ]
        for k in range(ranked.shape[1]):
            objectives.append(lambda z, rows, k=k: -_margin_away(_forward(model, z), ranked[rows, k]))
        x_adv = None
        through = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for objective in objectives:
            rows = (~through).nonzero()[:, 0]
            if rows.numel() == 0:
                break
            cand = pgd_ascent(lambda z, rows=rows: objective(z, rows), x[rows], eps, norm,
                              steps=steps, rel_step=rel_step, generator=generator)
            if x_adv is None:
                x_adv = cand.clone()
            answer = defense.certify(cand, eps)
            ok = (answer != ABSTAIN) & (answer != labels[rows])
            x_adv[rows[ok]] = cand[ok]
            through[rows[ok]] = True
    return x_adv, through


# --------------------------------------------------------------------------------------------
# the experiment of the book's page 12
# --------------------------------------------------------------------------------------------

def evaluate_oracle_defense(certifier: Certifier, oracle: MembershipOracle, x: torch.Tensor, y: torch.Tensor,
                            eps: float, *, steps: int = 50, restarts: int = 2, attack_steps: int = 50,
                            attack_rel_step: float = 0.025, adaptive_steps: int = 100, adaptive_targets: int = 2,
                            adaptive: bool = True, seed: int = 0, batch_size: int = 100, index=None, meta: dict | None = None, log=None):
    """Plain certified defense vs :class:`ManifoldDefense` on the same points, per point (ours).

    For each test point x (label y) and ε:

    * **clean**: the plain answer ``certified`` = certify(x, ε) and the defense's ``clean_def``;
    * **degradation** (Algorithm 3.1): ``alg31`` with the paper's inner attack (untargeted PGD,
      cross-entropy, at 2ε) and ``alg31_rejection`` with the library's strongest, PGD on the
      certifier's rejection score (:func:`~degradation_lib.attacks.rejection_pgd`); for each:
      plain answer ``<a>`` and defense answer ``<a>_def`` at x';
    * **adversarial**: ``adv``, an ε-PGD (margin loss against y) at every point; the defense's
      answer ``adv_def`` (a real adversarial example where ``adv_pred ≠ y = pred``);
    * **adaptive**: :func:`adaptive_attack` at the correct, uncertified points (``adapt_ran``);
      ``adapt_through``: the defense answered a wrong label; ``adapt`` and ``adapt_def``: the
      plain and the defense's answers at its output (``ABSTAIN`` where it did not run);

    and, for every defense answer, ``*_found`` (a witness was found), ``*_fw``/``*_ofw``/``*_bw``
    (classifier forward, oracle forward and backward passes) and ``*_score`` (the oracle's score
    at the input). The defense runs with ``policy="accept"``; the reject policy's answers equal
    the plain ones (columns ``<a>``), its witnesses are the same ``*_found``.

    Args:
        certifier, oracle: the defended model and the membership oracle.
        x, y: inputs ``[N, ...]`` in [0, 1] and labels ``[N]``.
        eps: ε > 0.
        steps, restarts: the search budget; attack_steps, attack_rel_step: the PGD of the
            degradation and ε-attacks; adaptive_steps, adaptive_targets: :func:`adaptive_attack`
            (not run when ``adaptive`` is False: its columns are then absent).
        seed: seeds the attacks' generator and the defense's search.
        batch_size: points per batch; index: dataset positions (default 0..N-1); meta: extra
            metadata; log: optional callable for progress lines.

    Returns:
        :class:`~degradation_lib.results.PointResults`.
    """
    import functools

    from .attacks import degradation_attack, pgd, rejection_pgd
    from .results import PointResults

    eps = check_eps(eps)
    x = check_input(x)
    y = torch.as_tensor(y)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
    batch_size = _check_int(batch_size, "batch_size", 1)
    defense = ManifoldDefense(certifier, oracle, "accept", steps=steps, restarts=restarts, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    inner = {
        "alg31": functools.partial(pgd, steps=attack_steps, rel_step=attack_rel_step, generator=gen),
        "alg31_rejection": rejection_pgd(certifier, eps, steps=attack_steps, rel_step=attack_rel_step, generator=gen),
    }
    cols: dict[str, list] = {}

    def put(name, value):
        cols.setdefault(name, []).append(torch.as_tensor(value).detach().cpu())

    def defended(prefix, xp):
        res = defense.defend(xp, eps)
        put(f"{prefix}_def", res.labels)
        put(f"{prefix}_found", res.found)
        put(f"{prefix}_fw", res.model_forward)
        put(f"{prefix}_ofw", res.oracle_forward)
        put(f"{prefix}_bw", res.backward)
        with torch.no_grad():
            put(f"{prefix}_score", oracle.score(xp).double())
        return res

    norm = certifier.norm
    for start in range(0, x.shape[0], batch_size):
        t0 = time.perf_counter()
        xb, yb = x[start:start + batch_size], y[start:start + batch_size].to(x.device)
        labels, radius = certifier.certified_radius(xb)
        pred = certifier.predict(xb)
        put("label", yb)
        put("pred", pred)
        put("radius", radius.double())
        put("certified", certifier.certify(xb, eps))
        defended("clean", xb)
        for name, attack in inner.items():
            xp = degradation_attack(certifier, xb, eps, attack=attack)
            put(name, certifier.certify(xp, eps))
            put(f"{name}_pred", certifier.predict(xp))
            put(f"{name}_dist", torch.linalg.vector_norm((xp - xb).flatten(1).double(), ord=norm, dim=1))
            defended(name, xp)
        xa = pgd(certifier, xb, eps, labels=yb, loss="margin", steps=attack_steps, rel_step=attack_rel_step,
                 generator=gen)
        put("adv", certifier.certify(xa, eps))
        put("adv_pred", certifier.predict(xa))
        defended("adv", xa)
        if log is not None:
            log(f"points {start}-{start + xb.shape[0]}: non-adaptive part {time.perf_counter() - t0:.0f} s")
        if not adaptive:
            continue
        ran = (pred == yb) & (certifier.certify(xb, eps) == ABSTAIN)
        through = torch.zeros_like(ran)
        adapt_pred = torch.full_like(pred, ABSTAIN)
        adapt_def = torch.full_like(pred, ABSTAIN)
        adapt_plain = torch.full_like(pred, ABSTAIN)
        rows = ran.nonzero()[:, 0]
        if rows.numel():
            xad, thr = adaptive_attack(defense, xb[rows], eps, yb[rows], steps=adaptive_steps,
                                       targets=adaptive_targets, generator=gen)
            through[rows] = thr
            adapt_pred[rows] = certifier.predict(xad)
            adapt_def[rows] = defense.certify(xad, eps)
            adapt_plain[rows] = certifier.certify(xad, eps)
        put("adapt_ran", ran)
        put("adapt", adapt_plain)
        put("adapt_through", through)
        put("adapt_pred", adapt_pred)
        put("adapt_def", adapt_def)
        if log is not None:
            log(f"points {start}-{start + xb.shape[0]}: with the adaptive attack {time.perf_counter() - t0:.0f} s")
    index = torch.arange(x.shape[0]) if index is None else torch.as_tensor(index)
    columns = {"index": index.cpu().numpy()}
    columns.update({k: torch.cat(v).numpy() for k, v in cols.items()})
    info = dict(eps=eps, norm=str(norm), steps=steps, restarts=restarts, attack_steps=attack_steps,
                attack_rel_step=attack_rel_step, adaptive_steps=adaptive_steps if adaptive else 0,
                adaptive_targets=adaptive_targets if adaptive else 0, seed=seed, oracle_threshold=oracle.threshold, policy="accept")
    info.update(meta or {})
    return PointResults(columns, info)


RESULTS_DIR = Path(__file__).resolve().parent / "results" / "oracle"
"""Where the page's stored per-point runs live (committed): ``MODEL_nN.npz``, with a provenance
manifest (:func:`~degradation_lib.results.make_manifest`). A subfolder of the results store, so
that the store's registry (``available_results``, whose runs are recomputed point by point by
``tests/test_store.py``) does not list these runs: their attacks draw from one generator per
batch, not per point."""


def run_stored(model: str, num_points: int, eps: float, *, oracle: str = "mnist_ae", shard_size: int = 50,
               false_alarm: float | None = None, out_dir: str | Path | None = None,
               device: str | torch.device = "cpu", log=print, **settings):
    """:func:`evaluate_oracle_defense` on the first ``num_points`` MNIST test images, in resumable shards.

    Each shard of ``shard_size`` points is saved as ``MODEL_nN.shardK.npz`` in ``out_dir``
    (default :data:`RESULTS_DIR`) and skipped when present; at the end the shards are merged
    into ``MODEL_nN.npz`` (:func:`~degradation_lib.results.merge`) and removed. With
    ``false_alarm`` the oracle's threshold is recalibrated on its calibration split at that rate
    (:func:`oracle_splits`, :func:`calibrate_threshold`) and the files are named
    ``MODEL_nN_faALPHA``. ``settings`` go to :func:`evaluate_oracle_defense`. Returns the merged
    results.
    """
    from .data import load_mnist
    from .registry import CHECKPOINT_DIR, load_model
    from .results import PointResults, file_sha256, make_manifest, merge

    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    num_points = _check_int(num_points, "num_points", 1)
    shard_size = _check_int(shard_size, "shard_size", 1)
    device = resolve_device(device)
    cert = load_model(model, device)
    orc = load_oracle(oracle, device)
    x, y = load_mnist("test")
    stem = out_dir / f"{model}_n{num_points}"
    if false_alarm is not None:
        _, cal, _ = oracle_splits(int(oracle_metadata(oracle)["training"]["seed"]))
        orc.calibrate(load_mnist("train")[0][cal].to(device), false_alarm)
        stem = out_dir / f"{model}_n{num_points}_fa{false_alarm:g}"
    parts = []
    for k, start in enumerate(range(0, num_points, shard_size)):
        path = stem.with_name(f"{stem.name}.shard{k}.npz")
        if path.is_file():
            parts.append(PointResults.load(path))
            continue
        t0 = time.perf_counter()
        stop = min(start + shard_size, num_points)
        res = evaluate_oracle_defense(cert, orc, x[start:stop].to(device), y[start:stop].to(device), eps,
                                      index=torch.arange(start, stop), log=log,
                                      meta=dict(model=model, oracle=oracle, shard=k,
                                                false_alarm=false_alarm if false_alarm is not None
                                                else oracle_metadata(oracle)["false_alarm_target"]),
                                      **settings)
        res.manifest = make_manifest(
            params=dict(settings, eps=eps, num_points=num_points, shard_size=shard_size, false_alarm=false_alarm,
                        threshold=orc.threshold),
            model=model, weights_path=CHECKPOINT_DIR / f"{model}.pt", device=device, seed=settings.get("seed"),
            wall_time_s=round(time.perf_counter() - t0, 1), oracle=oracle,
            oracle_sha256=file_sha256(ORACLE_DIR / f"{oracle}.pt"))
        res.save(path)
        parts.append(res)
        log(f"{model}: shard {k} (points {start}-{stop}) in {time.perf_counter() - t0:.0f} s")
    merged = merge(parts)
    merged.save(out_dir / f"{stem.name}.npz")  # not with_suffix: the stem has dots (mnist_0.3)
    for k in range(len(parts)):
        stem.with_name(f"{stem.name}.shard{k}.npz").unlink(missing_ok=True)
    return merged


# --------------------------------------------------------------------------------------------
# training (python -m degradation_lib.oracle)
# --------------------------------------------------------------------------------------------

def oracle_splits(seed: int = 0, n_calibration: int = 5000, n_holdout: int = 5000):
    """Disjoint index sets of the 60,000 MNIST training images: (train, calibration, holdout).

    A permutation drawn from ``torch.Generator().manual_seed(seed)``; the autoencoder trains on
    the first 60,000 − n_calibration − n_holdout, τ is calibrated on the next ``n_calibration``
    and the last ``n_holdout`` are kept to check the false-alarm rate on unseen training images.
    """
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(seed))
    n_train = 60000 - n_calibration - n_holdout
    return perm[:n_train], perm[n_train:n_train + n_calibration], perm[n_train + n_calibration:]


def train_autoencoder(latent: int = 16, epochs: int = 8, batch_size: int = 128, lr: float = 1e-3,
                      noise_sigma: float = 0.3, seed: int = 0, false_alarm: float = 0.01,
                      threads: int = 1, out: str | Path | None = None, log=print) -> tuple[AutoencoderOracle, dict]:
    """Train the denoising autoencoder, calibrate τ, measure its rates; optionally save it.

    Recipe: Adam(lr), cosine decay to 0 over ``epochs``; each batch x is corrupted to
    clip(x + σ·n, 0, 1) with n ~ N(0, I) and half the batch additionally with a random box of
    uniform noise, and the loss is ‖D(E(x̃)) − x‖²₂ (denoising: D∘E learns to map points near M
    onto M). τ is the conformal quantile (:func:`calibrate_threshold`) at ``false_alarm`` of the
    scores of the calibration split (:func:`oracle_splits`).

    Returns ``(oracle, meta)``; with ``out`` (a path stem) writes ``out.pt`` (float32 state) and
    ``out.json``.
    """
    from .data import load_mnist
    from .metrics import rate

    torch.set_num_threads(int(threads))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all, _ = load_mnist("train")
    tr, cal, hold = oracle_splits(seed)
    x_tr = x_all[tr]
    ae = ConvAutoencoder(latent)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x_tr) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    history, start = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        ae.train()
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(x_tr), batch_size):
            xb = x_tr[order[i:i + batch_size]]
            noisy = xb + noise_sigma * torch.randn(xb.shape, generator=gen)
            half = xb.shape[0] // 2  # a random 8-14 px box of uniform noise on half of the batch
            for k in range(half):
                h, w = (int(v) for v in torch.randint(8, 15, (2,), generator=gen))
                r, c = (int(v) for v in torch.randint(0, 28 - 14, (2,), generator=gen))
                noisy[k, 0, r:r + h, c:c + w] = torch.rand(h, w, generator=gen)
            loss = (ae(noisy.clamp(0, 1)) - xb).pow(2).flatten(1).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * xb.shape[0]
        history.append(dict(epoch=epoch, loss=total / len(x_tr), epoch_s=time.perf_counter() - t0))
        log(f"epoch {epoch}: loss {history[-1]['loss']:.4f} ({history[-1]['epoch_s']:.0f} s)")
    ae.eval()
    oracle = AutoencoderOracle(ae)
    tau = oracle.calibrate(x_all[cal], false_alarm)
    x_test, _ = load_mnist("test")
    with torch.no_grad():
        s_hold = torch.cat([oracle.score(x_all[hold][i:i + 1000]) for i in range(0, len(hold), 1000)])
        s_test = torch.cat([oracle.score(x_test[i:i + 1000]) for i in range(0, len(x_test), 1000)])
    fa_hold, fa_test = rate(s_hold > tau), rate(s_test > tau)
    meta = dict(
        kind="autoencoder_oracle", name=Path(out).name if out else None, dataset="MNIST", latent=latent,
        score="l2 reconstruction error ||x - D(E(x))||_2", threshold=tau, false_alarm_target=false_alarm,
        calibration=dict(split="oracle_splits(seed)[1]", n=len(cal),
                         rule="ceil((n+1)(1-alpha))-th smallest calibration score (split conformal)"),
        training=dict(command=f"python -m degradation_lib.oracle --latent {latent} --epochs {epochs} --seed {seed} "
                              f"--threads {threads}",
                      latent=latent, epochs=epochs, batch_size=batch_size, lr=lr, noise_sigma=noise_sigma,
                      seed=seed, threads=threads, n_train=len(tr), schedule="Adam, cosine lr decay to 0",
                      corruption="clip(x + sigma*N(0,I), 0, 1); half of each batch also a random 8-14 px box of U(0,1)",
                      wall_time_s=round(time.perf_counter() - start, 1), torch=torch.__version__, log=history),
        metrics=dict(
            false_alarm_holdout=dict(k=fa_hold.k, n=fa_hold.n, value=fa_hold.value, lo=fa_hold.lo, hi=fa_hold.hi),
            false_alarm_test=dict(k=fa_test.k, n=fa_test.n, value=fa_test.value, lo=fa_test.lo, hi=fa_test.hi),
            score_test_median=float(s_test.median()), score_test_q99=float(s_test.quantile(0.99))))
    log(f"tau = {tau:.4f}; false alarm holdout {fa_hold}, test {fa_test}")
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ae.state_dict(), out.with_suffix(".pt"))
        out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return oracle, meta


def _main(argv=None):
    p = argparse.ArgumentParser(description="Train and calibrate the MNIST membership oracle (denoising AE).")
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--noise-sigma", type=float, default=0.3)
    p.add_argument("--false-alarm", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ORACLE_DIR / "mnist_ae"))
    p.add_argument("--evaluate", metavar="MODEL", help="instead of training: run the page-12 experiment on MODEL")
    p.add_argument("--eps", type=float, help="with --evaluate: ε")
    p.add_argument("--num-points", type=int, default=200, help="with --evaluate: first N test images")
    p.add_argument("--adaptive-steps", type=int, default=100, help="with --evaluate")
    p.add_argument("--adaptive-targets", type=int, default=2, help="with --evaluate")
    p.add_argument("--no-adaptive", action="store_true", help="with --evaluate: skip the adaptive attack")
    p.add_argument("--recalibrate", type=float, help="with --evaluate: recalibrate tau at this false-alarm rate")
    a = p.parse_args(argv)
    if a.evaluate:
        torch.set_num_threads(a.threads)
        run_stored(a.evaluate, a.num_points, a.eps, seed=a.seed, adaptive_steps=a.adaptive_steps,
                   adaptive_targets=a.adaptive_targets, adaptive=not a.no_adaptive, false_alarm=a.recalibrate)
        return
    train_autoencoder(latent=a.latent, epochs=a.epochs, noise_sigma=a.noise_sigma, seed=a.seed,
                      false_alarm=a.false_alarm, threads=a.threads, out=a.out)


if __name__ == "__main__":
    _main()
