"""Algorithm 3.2 of the paper: the smoothed projected gradient descent attack (SPGD).

A smoothed classifier g has no explicit representation, so off-the-shelf white-box attacks do
not apply to it. SPGD attacks it implicitly: at every step it draws n Gaussian samples
ζ_1, ..., ζ_n ~ N(0, σ² I) and ascends the loss of the base network *averaged over the samples*,

    x' ← Project(x, x' + η · ∇_{x'} L( (1/n) Σ_i f(x' + ζ_i), y ), ε, ℓ2).

Two averagings are offered:

* ``average="logits"``: L is the cross-entropy of the averaged logits (what the paper's authors
  did);
* ``average="softmax"``: L = −log of the averaged softmax probability of y, a Monte Carlo
  estimate of −log P[f(x' + ζ) = y] under soft votes (SmoothAdv, Salman et al. 2019).

Steps are ℓ2-normalised (x' moves by η along ∇/‖∇‖₂; a zero gradient gives a zero step, never a
NaN) and each iterate is projected onto the ℓ2 ball of the attack radius and onto [0, 1] with
:func:`degradation_lib.attacks.project`, which is well defined at a zero perturbation.

:class:`SPGD` objects follow the library's ATTACK CONTRACT, ``attack(certifier, x, radius) ->
x_adv`` (batched, ‖x_adv − x‖₂ ≤ radius, x_adv ∈ [0, 1], model mode untouched), so Algorithm
3.1 is ``degradation_attack(certifier, x, eps, attack=SPGD(...))``: SPGD at 2ε, then projection
onto the ε-ball.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from functools import partial

from .attacks import degradation_attack, eval_mode, project
from .certifier import Certifier, check_eps, check_input

AVERAGES = ("logits", "softmax")


class SPGD:
    """SmoothedPgdAttack(f, L, x, ε, ℓ2, η, N, n, σ) of Algorithm 3.2, as an attack callable.

    Args:
        steps: N, the number of gradient steps (paper: 50).
        samples: n, Gaussian samples per step and input (paper: 100).
        step_size: η as an ℓ2 length; ``None`` uses 2·radius/steps (the paper's 2·(2ε)/50 for
            an attack at 2ε).
        average: ``"logits"`` (the authors') or ``"softmax"`` (SmoothAdv).
        sigma: noise level; ``None`` takes ``certifier.sigma``.
        batch_size: noisy rows per forward/backward pass (inputs are processed in groups of
            ``batch_size // samples``).
        generator: ``torch.Generator`` for the noise (``None``: torch's global generator), or a
            sequence of one generator per input of the next call: input i's noise then comes
            from ``generator[i]`` alone, so its attack does not depend on the batch it is in.

    Call: ``attack(certifier, x, radius, y=None)`` with ``x`` ``[N, ...]`` in [0, 1]. The loss is
    taken at ``y`` when given (the true labels), else at the label the noise-averaged base
    network gives the clean x (for points of test_R this is the certified, correct label).
    Returns ``x_adv`` ``[N, ...]`` with ‖x_adv − x‖₂ ≤ radius and values in [0, 1].
    """

    def __init__(self, steps: int = 50, samples: int = 100, step_size: float | None = None,
                 average: str = "logits", sigma: float | None = None, batch_size: int = 10_000,
                 generator: torch.Generator | None = None):
        for name, v in (("steps", steps), ("samples", samples), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
        self.steps, self.samples, self.batch_size = steps, samples, batch_size
        self.step_size = None if step_size is None else check_eps(step_size, "step_size")
        self.sigma = None if sigma is None else check_eps(sigma, "sigma")
        self.average = average
        self.generator = generator

    def __repr__(self) -> str:
        return (f"SPGD(steps={self.steps}, samples={self.samples}, step_size={self.step_size}, "
                f"average={self.average!r}, sigma={self.sigma})")

    def _noise(self, shape, like, gens=None):
        if gens is not None:                  # one generator per input (row of the first axis)
            return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=like.dtype)
                                .to(like.device) for g in gens])
        g = self.generator
        if g is None or g.device == like.device:
            return torch.randn(shape, generator=g, device=like.device, dtype=like.dtype)
        return torch.randn(shape, generator=g, device=g.device, dtype=like.dtype).to(like.device)

    def _averaged(self, model, x, sigma, gens=None):
        """Noise-averaged logits or log of averaged softmax, ``[B, C]`` (differentiable in x)."""
        B, m = x.shape[0], self.samples
        noisy = x.unsqueeze(1) + sigma * self._noise((B, m) + tuple(x.shape[1:]), x, gens)
        out = model(noisy.reshape((B * m,) + tuple(x.shape[1:]))).view(B, m, -1)
        if self.average == "logits":
            return out.mean(dim=1)                                          # averaged logits
        return torch.logsumexp(F.log_softmax(out, dim=2), dim=1) - math.log(m)   # log mean softmax

    def _loss(self, scores, y):
        # cross-entropy of the averaged logits, or NLL of the averaged probabilities
        return F.cross_entropy(scores, y, reduction="sum") if self.average == "logits" \
            else F.nll_loss(scores, y, reduction="sum")

    def __call__(self, certifier: Certifier, x: torch.Tensor, radius: float,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        radius = check_eps(radius, "radius")
        x = check_input(x)
        sigma = self.sigma if self.sigma is not None else getattr(certifier, "sigma", None)
        if sigma is None:
            raise ValueError("sigma must be given when the certifier has no 'sigma' attribute")
        eta = self.step_size if self.step_size is not None else 2.0 * radius / self.steps
        model = certifier.model
        group = max(1, self.batch_size // self.samples)
        gens = None
        if isinstance(self.generator, (list, tuple)):
            gens = list(self.generator)
            if len(gens) != x.shape[0] or not all(isinstance(g, torch.Generator) for g in gens):
                raise ValueError(f"generator: a sequence needs one torch.Generator per input ({x.shape[0]}), "
                                 f"got {len(gens)} items")
        out = []
        with eval_mode(model):                 # every submodule's own mode is restored on exit
            for i in range(0, x.shape[0], group):
                xb = x[i:i + group]
                gb = None if gens is None else gens[i:i + group]
                with torch.no_grad():
                    yb = self._averaged(model, xb, sigma, gb).argmax(dim=1) if y is None else y[i:i + group].to(x.device)
                out.append(self._attack_group(model, xb, yb, radius, eta, sigma, gb))
        return torch.cat(out) if out else x.clone()

    def _attack_group(self, model, x, y, radius, eta, sigma, gens=None):
        x_adv = x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = self._loss(self._averaged(model, x_adv, sigma, gens), y)
                (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                flat = grad.flatten(1)
                length = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
                step = torch.where(length > 0, flat / length.clamp_min(torch.finfo(flat.dtype).tiny),
                                   torch.zeros_like(flat))
                x_adv = project(x, x_adv.detach() + eta * step.view_as(x), radius, 2.0)
        return x_adv.detach()


def spgd_degradation_attack(certifier: Certifier, x: torch.Tensor, eps: float, attack: SPGD | None = None,
                            y: torch.Tensor | None = None) -> torch.Tensor:
    """Algorithm 3.1 with SPGD: x'' = SPGD(certifier, x, 2ε), then x' = Project(x, x'', ε, ℓ2).

    :func:`degradation_lib.attacks.degradation_attack` with ``attack=SPGD(...)`` (default
    settings: the paper's), passing the optional true labels ``y`` to SPGD. Returns ``[N, ...]`` with ‖x' − x‖₂ ≤ ε and x' ∈ [0, 1].
    """
    attack = SPGD() if attack is None else attack
    return degradation_attack(certifier, x, eps, attack=attack if y is None else partial(attack, y=y))


__all__ = ["SPGD", "spgd_degradation_attack"]
