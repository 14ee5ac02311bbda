"""Attacks: PGD, Algorithm 3.1 (the degradation attack), ε-PGD (Appendix B.1) and an adapter
for off-the-shelf attacks.

The attack contract
-------------------
Every attack here is (or builds) a callable ``attack(certifier, x, radius) -> x_adv`` with

* ``x``: a batch ``[N, ...]`` with values in [0, 1];
* ``x_adv``: same shape, ‖x_adv − x‖_p ≤ radius in ``certifier.norm`` (up to float rounding)
  and values in [0, 1];
* the model's train/eval mode (of every submodule) left as it was found.

Extra settings (steps, step size, loss, generator, ...) are keyword arguments; bind them with
:func:`functools.partial` to get a contract-shaped callable, e.g.
``functools.partial(pgd, steps=100, loss="margin")``.

Randomness (the random start) comes from an explicit ``torch.Generator``; when none is given a
fresh generator seeded with 0 is used, so results never depend on global RNG state.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable

import torch
from torch import nn

from .certifier import ABSTAIN, Certifier, check_eps, check_input, check_norm

Attack = Callable[[Certifier, torch.Tensor, float], torch.Tensor]
"""The attack contract: ``attack(certifier, x, radius) -> x_adv``."""


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: float,
            bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Project(x, x'', ε, ℓp) of Algorithm 3.1, followed by clipping to [0, 1].

    * ℓ2: δ = x'' − x is rescaled to length min(‖δ‖₂, ε) per example (δ = 0 stays 0: no
      division by zero), then clipped to [0, 1] -- clipping moves each coordinate towards x,
      so ‖x' − x‖₂ ≤ ε still holds;
    * ℓ∞: each coordinate of δ is clipped to [−ε, ε], then to [0, 1].

    Args:
        x: clean inputs ``[N, ...]`` in [0, 1].
        x_adv: points to project, same shape.
        eps: radius ε > 0.
        norm: 2 or ``float("inf")``.
        bounds: the input box ``(lo, hi)`` to clip to (default [0, 1], the domain of
            Definition 1; the paper's authors gave foolbox (−2ε, 1 + 2ε) for GloRo, see
            :func:`authors_gloro_attack`). It must contain ``x``.

    Returns:
        ``[N, ...]`` with ‖x' − x‖_p ≤ ε (up to float rounding) and values in ``bounds``.
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    lo, hi = _check_bounds(bounds)
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    if norm not in (2.0, math.inf):
        raise ValueError(f"norm must be 2 or float('inf') for project, got {norm!r}")
    return _project(x, x_adv, eps, norm, lo, hi)


def _project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: float, lo: float, hi: float) -> torch.Tensor:
    """:func:`project` without the argument checks, for the inner loops of the attacks, whose
    arguments were validated once at entry (ε a positive float, norm 2 or inf, lo < hi)."""
    delta = x_adv - x
    if norm == 2.0:
        flat = delta.flatten(1)
        length = torch.linalg.vector_norm(flat, ord=2, dim=1, keepdim=True)
        scale = torch.where(length > eps, eps / length.clamp_min(torch.finfo(delta.dtype).tiny),
                            torch.ones_like(length))
        delta = (flat * scale).view_as(delta)
    else:
        delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(lo, hi)


def _check_bounds(bounds) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers with lo < hi, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be a pair (lo, hi) of finite numbers with lo < hi, got {bounds!r}")
    return lo, hi


def rescale_to_radius(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """The paper's authors' projection for ℓ2: δ = x'' − x rescaled to length *exactly* ε, no clipping.

    x' = x + ε·δ/‖δ‖₂ per example (a zero δ stays 0, where the authors' code divides by zero and
    returns NaN). Unlike :func:`project` it also moves points *inside* the ball out to its
    sphere and does not clip to [0, 1]: x' may leave the domain of Definition 1. Used by
    :func:`authors_gloro_attack` to run Table 1 as the authors ran it.

    Args:
        x, x_adv: ``[N, ...]``, same shape.
        eps: ε > 0.

    Returns:
        ``[N, ...]`` with ‖x' − x‖₂ = ε (up to float rounding) wherever x_adv ≠ x.
    """
    eps = check_eps(eps)
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    flat = (x_adv - x).flatten(1)
    length = torch.linalg.vector_norm(flat, ord=2, dim=1, keepdim=True)
    scale = torch.where(length > 0, eps / length.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(length))
    return x + (flat * scale).view_as(x)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put every submodule of ``model`` in eval mode; restore each one's own mode on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _model_and_norm(certifier, norm) -> tuple[nn.Module, float]:
    if isinstance(certifier, Certifier):
        model = certifier.model
        norm = certifier.norm if norm is None else norm
    elif isinstance(certifier, nn.Module):
        model = certifier
        if norm is None:
            raise ValueError("norm must be given when attacking a bare nn.Module (a Certifier carries its own)")
    else:
        raise ValueError(f"certifier must be a degradation_lib.Certifier or an nn.Module, got {type(certifier).__name__}")
    norm = check_norm(norm)
    if norm not in (2.0, math.inf):
        raise ValueError(f"norm must be 2 or float('inf') for these attacks, got {norm!r}")
    return model, norm


def _forward(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``model(z)`` with ``z`` cast to the dtype of the model's parameters (if it has any)."""
    p = next(model.parameters(), None)
    if p is not None and p.is_floating_point() and p.dtype != z.dtype:
        z = z.to(p.dtype)
    return model(z)


def own_prediction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """argmax of the logits ``model(x)``: the label PGD attacks by default (int64 ``[N]``)."""
    with torch.no_grad(), eval_mode(model):
        return _forward(model, x).argmax(dim=1)


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ``[N]``."""
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example margin loss ``max_{i≠y} z_i − z_y`` ``[N]`` (> 0 exactly where y is not the top class)."""
    z_y = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), -math.inf)
    return others.max(dim=1).values - z_y


LOSSES: dict[str, Callable] = {"ce": cross_entropy_loss, "margin": margin_loss}


def _draw(shape, gens, dtype, kind: str) -> torch.Tensor:
    """``torch.rand``/``torch.randn`` of ``shape`` ``[N, ...]``: from one generator, or row i from
    ``gens[i]`` when ``gens`` is a sequence (per-example randomness, independent of batching)."""
    fn = torch.rand if kind == "rand" else torch.randn
    if isinstance(gens, torch.Generator):
        return fn(shape, generator=gens, device=gens.device, dtype=dtype)
    rows = [fn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in gens]
    return torch.stack([r.cpu() for r in rows]) if rows else torch.zeros(shape, dtype=dtype)


def _random_start(x: torch.Tensor, radius: float, norm: float, generator, bounds=(0.0, 1.0)) -> torch.Tensor:
    """A uniform point of the ``radius``-ball around each example (then clipped to ``bounds``).

    ``generator``: a ``torch.Generator`` or a sequence of N of them (example i draws from the
    i-th only)."""
    lo, hi = _check_bounds(bounds)
    if norm == math.inf:
        u = _draw(x.shape, generator, x.dtype, "rand").to(x.device)
        return (x + (2 * u - 1) * radius).clamp(lo, hi)
    d = x[0].numel()
    g = _draw(x.shape, generator, x.dtype, "randn").to(x.device)
    g = g.flatten(1)
    g = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    r = _draw((x.shape[0], 1), generator, x.dtype, "rand").to(x.device)
    delta = (g * radius * r.pow(1.0 / d)).view_as(x)
    return project(x, x + delta, radius, norm, bounds=(lo, hi))


def _generator(generator, x: torch.Tensor):
    """Validate ``generator``: None (a fresh generator seeded 0), a ``torch.Generator``, or a
    sequence of one ``torch.Generator`` per example of ``x``."""
    if generator is None:
        return torch.Generator(device="cpu").manual_seed(0)
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != x.shape[0]:
            raise ValueError(f"generator: a sequence needs one torch.Generator per example ({x.shape[0]}), "
                             f"got {len(generator)}")
        return list(generator)
    raise ValueError(f"generator must be a torch.Generator, a sequence of them (one per example) or None, "
                     f"got {type(generator).__name__}")


def _unit_step(grad: torch.Tensor, norm: float) -> torch.Tensor:
    """The direction of one gradient step, shared by every attack here and by
    :func:`degradation_lib.oracle.search_witness`: NaN/±inf entries of ``grad`` are zeroed, then
    ℓ2: the gradient scaled to unit ℓ2 length per example (a zero gradient stays 0: no move, never
    NaN); ℓ∞: its sign. ``norm`` is 2 or inf (validated by the caller)."""
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if norm == math.inf:
        return grad.sign()
    flat = grad.flatten(1)
    length = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    # a row of length 0 (possibly by underflow) divides by +inf to 0: one full-size pass, no mask
    denom = torch.where(length > 0, length.clamp_min(torch.finfo(flat.dtype).tiny), math.inf)
    return (flat / denom).view_as(grad)


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def pgd_ascent(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, radius: float,
               norm: float, *, steps: int = 50, step_size: float | None = None, rel_step: float = 0.025,
               random_start: bool = True, generator: torch.Generator | None = None,
               keep_best: bool = True, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Projected gradient *ascent* of a per-example objective over the ℓp ball ∩ [0, 1].

    The engine behind :func:`pgd`; use it directly for objectives that are not a loss of the
    logits (e.g. a certifier's rejection score, or a model averaged over noise samples).

    Each step moves by ``step_size`` along the ℓ2-normalised gradient (ℓ2) or the gradient's
    sign (ℓ∞) -- a zero gradient means no move, never NaN -- then applies :func:`project`
    (ball of ``radius`` around ``x`` and the box [0, 1]).

    Args:
        objective: maps a batch ``[N, ...]`` to a differentiable ``[N]`` score to maximise.
        x: clean inputs ``[N, ...]`` in [0, 1].
        radius: ball radius > 0.
        norm: 2 or inf.
        steps: number of gradient steps, ≥ 1.
        step_size: absolute step; default ``rel_step * radius``.
        rel_step: step relative to the radius (0.025 with 50 steps, as the paper's authors ran
            foolbox's L2PGD).
        random_start: start from a uniform point of the ball (drawn from ``generator``)
            instead of ``x``.
        generator: ``torch.Generator`` for the random start (default: a fresh one seeded 0),
            or a sequence of N generators, one per example: example i's start then depends on
            ``generator[i]`` only, not on the batch it is in (what sharded runs need).
        keep_best: return, per example, the iterate with the highest objective seen (including
            the last); otherwise the last iterate (as foolbox's PGD).
        bounds: the input box (default [0, 1]); the paper's authors' GloRo runs used
            (−radius, 1 + radius) = (−2ε, 1 + 2ε) for an attack at radius 2ε.

    Returns:
        ``x_adv`` ``[N, ...]`` (detached), ‖x_adv − x‖_p ≤ radius, values in ``bounds``.
    """
    x = check_input(x)
    radius = check_eps(radius, "radius")
    norm = check_norm(norm)
    if norm not in (2.0, math.inf):
        raise ValueError(f"norm must be 2 or float('inf') for PGD, got {norm!r}")
    steps = _check_steps(steps)
    if step_size is None:
        rel_step = check_eps(rel_step, "rel_step")
        step_size = rel_step * radius
    step_size = check_eps(step_size, "step_size")
    x = x.detach()
    if x.shape[0] == 0:
        return x.clone()
    bounds = _check_bounds(bounds)
    z = _random_start(x, radius, norm, _generator(generator, x), bounds) if random_start else x.clone()
    best = z.clone()
    best_val = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)

    def evaluate(z):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            val = objective(z)
            if val.shape != (x.shape[0],):
                raise ValueError(f"objective must return one value per example, shape [{x.shape[0]}], "
                                 f"got {tuple(val.shape)}")
            grad, = torch.autograd.grad(val.sum(), z, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(z)
        return val.detach().to(torch.float64), grad.detach()

    for _ in range(steps):
        val, grad = evaluate(z)
        if keep_best:
            better = val > best_val
            best[better] = z[better]
            best_val = torch.where(better, val, best_val)
        z = _project(x, z + step_size * _unit_step(grad, norm), radius, norm, *bounds)
    if not keep_best:
        return z.detach()
    with torch.no_grad():
        val = objective(z).detach().to(torch.float64)
    better = val > best_val
    best[better] = z[better]
    return best.detach()


def pgd(certifier, x: torch.Tensor, radius: float, *, labels: torch.Tensor | None = None,
        targeted: bool = False, loss: str | Callable = "ce", norm: float | None = None,
        steps: int = 50, step_size: float | None = None, rel_step: float = 0.025,
        random_start: bool = True, generator: torch.Generator | None = None,
        keep_best: bool = True, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018) under ℓ2 or ℓ∞; fits the attack contract.

    Untargeted: maximise ``loss(logits, labels)`` (move away from ``labels``); targeted:
    minimise ``loss(logits, labels)`` with ``labels`` the targets.

    Args:
        certifier: a :class:`Certifier` (its ``model`` and ``norm`` are used) or a bare
            ``nn.Module`` returning logits (then ``norm`` is required).
        x: inputs ``[N, ...]`` in [0, 1].
        radius: ℓp radius > 0.
        labels: int64 ``[N]``; default: the model's own prediction at ``x`` (as the paper's
            authors attacked GloRo nets: degradation needs no true label).
        targeted: see above (``labels`` are then required).
        loss: ``"ce"`` (cross-entropy), ``"margin"`` (max_{i≠y} z_i − z_y) or a callable
            ``loss(logits [N, C], labels [N]) -> [N]``.
        norm: overrides ``certifier.norm`` (2 or inf).
        steps, step_size, rel_step, random_start, generator, keep_best, bounds: see
            :func:`pgd_ascent` (``generator`` may be one generator per example).

    Returns:
        ``x_adv`` ``[N, ...]``, ‖x_adv − x‖_p ≤ radius, values in ``bounds``; the model's train/eval
        mode is left as found (the attack itself runs the model in eval mode).
    """
    model, norm = _model_and_norm(certifier, norm)
    x = check_input(x)
    radius = check_eps(radius, "radius")
    _check_steps(steps)
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable, got {loss!r}")
        loss_fn = LOSSES[loss]
    elif callable(loss):
        loss_fn = loss
    else:
        raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable, got {loss!r}")
    if labels is None:
        if targeted:
            raise ValueError("targeted=True needs labels (the target classes)")
        labels = own_prediction(model, x)
    labels = torch.as_tensor(labels, device=x.device)
    if labels.shape != (x.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape [{x.shape[0]}], got {tuple(labels.shape)}")
    labels = labels.long()
    sign = -1.0 if targeted else 1.0

    def objective(z):
        return sign * loss_fn(_forward(model, z), labels)

    with eval_mode(model):
        return pgd_ascent(objective, x, radius, norm, steps=steps, step_size=step_size, rel_step=rel_step,
                          random_start=random_start, generator=generator, keep_best=keep_best, bounds=bounds)


def multitarget_pgd(certifier, x: torch.Tensor, radius: float, *, labels: torch.Tensor | None = None,
                    norm: float | None = None, **pgd_kwargs) -> torch.Tensor:
    """The strongest of C − 1 targeted attacks: for each class t ≠ y, maximise z_t − z_y.

    Per example, returns the candidate with the largest final ``max_t (z_t − z_y)``. On a linear
    classifier each objective is linear, so (away from the box [0, 1] and with enough steps)
    each run reaches the exact maximiser and the result is an exact attack: it changes the
    label whenever some point of the ball has another label. Costs C − 1 PGD runs.

    Args: as :func:`pgd` (``labels``: the class to move away from, default the own prediction);
    ``pgd_kwargs`` go to :func:`pgd_ascent`.
    """
    model, norm = _model_and_norm(certifier, norm)
    x = check_input(x)
    radius = check_eps(radius, "radius")
    if labels is None:
        labels = own_prediction(model, x)
    labels = torch.as_tensor(labels, device=x.device).long()
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape [{x.shape[0]}], got {tuple(labels.shape)}")
    with eval_mode(model):
        with torch.no_grad():
            num_classes = _forward(model, x[:1]).shape[1]
        best = x.detach().clone()
        best_val = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for t in range(num_classes):
            target = torch.full_like(labels, t)
            active = labels != t

            def objective(z, target=target):
                logits = _forward(model, z)
                return logits.gather(1, target[:, None])[:, 0] - logits.gather(1, labels[:, None])[:, 0]

            cand = pgd_ascent(objective, x, radius, norm, **pgd_kwargs)
            with torch.no_grad():
                val = objective(cand).to(torch.float64)
            better = active & (val > best_val)
            best[better] = cand[better]
            best_val = torch.where(better, val, best_val)
    return best


# --------------------------------------------------------------------------------------------
# degradation attacks
# --------------------------------------------------------------------------------------------

def implements_rejection_score(certifier) -> bool:
    """Whether ``certifier`` is a :class:`Certifier` whose class implements
    :meth:`Certifier.rejection_score` (the base class only declares it)."""
    return isinstance(certifier, Certifier) and type(certifier).rejection_score is not Certifier.rejection_score


def rejection_pgd(certifier: Certifier, eps: float, rejection_loss: Callable | None = None,
                  **pgd_kwargs) -> Attack:
    """An attack (contract-shaped) that aims directly at the certifier's rejection at ε.

    The rejection score is ``rejection_loss(x, labels, eps) -> [N]``, a differentiable score that
    is > 0 where ``certify(x, eps)`` does not return ``labels`` (for a Lipschitz-margin
    certifier such as GloRo: y_⊥ − y_label). It defaults to the certifier's declared
    :meth:`Certifier.rejection_score` (``rejection_score(x, eps, labels)``). Called with radius 2ε
    inside Algorithm 3.1, the attack ascends the score *at the projected point*
    ``project(x, z, ε)``, so the point Algorithm 3.1 returns is the one the attack optimised.
    ``labels`` are the model's own prediction at x; ``pgd_kwargs`` go to :func:`pgd_ascent`.
    For the attack that works on the ε-ball directly, with restarts, targets and early exit,
    see :func:`certificate_attack`.
    """
    if rejection_loss is None:
        if not implements_rejection_score(certifier):
            raise ValueError(f"{type(certifier).__name__} does not implement rejection_score; "
                             "pass rejection_loss(x, labels, eps) explicitly")
        rejection_loss = lambda z, labels, e: certifier.rejection_score(z, e, labels)
    elif not callable(rejection_loss):
        raise ValueError(f"rejection_loss must be callable as rejection_loss(x, labels, eps), got {rejection_loss!r}")
    eps = check_eps(eps)

    def attack(certifier_, x, radius):
        model, norm = _model_and_norm(certifier_, None)
        x = check_input(x)
        labels = own_prediction(model, x)
        inner = min(eps, check_eps(radius, "radius"))
        with eval_mode(model):
            def objective(z):     # the score at the ε-projection (arguments checked once, not every step)
                return rejection_loss(_project(x, z, inner, norm, 0.0, 1.0), labels, eps)
            return pgd_ascent(objective, x, radius, norm, **pgd_kwargs)

    return attack


def default_attack(certifier: Certifier, eps: float) -> Attack:
    """The attack :func:`degradation_attack` runs when none is given.

    * If the certifier implements an exact :meth:`Certifier.rejection_score` for a monotonic
      check (GloRo, the exact linear certifier): :func:`rejection_pgd`, which targets the
      rejection itself;
    * otherwise the paper's choice: untargeted ℓp PGD with cross-entropy against the model's own
      prediction (50 steps, relative step 0.025, random start from a generator seeded 0).
    """
    if implements_rejection_score(certifier) and certifier.score_is_exact and certifier.monotone:
        return rejection_pgd(certifier, eps)
    return pgd


def _subset(generator, idx: torch.Tensor):
    """The generators of the examples ``idx`` when ``generator`` is one per example."""
    if isinstance(generator, list):
        return [generator[i] for i in idx.tolist()]
    return generator


SCHEDULES = ("cosine", "apgd")
"""Step rules of :func:`certificate_attack`."""


def _apgd_checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints w_j = ⌈p_j·steps⌉ with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), up to 1 (Croce & Hein 2020, Section 3.2)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 9)) for q in p})     # round: 0.57·100 is 57.000…01 in floats


class _ApgdState:
    """Per-point state of one APGD run of :func:`certificate_attack`, for the points still
    standing: step size η, previous iterate and score, the run's best iterate (with its score and
    gradient), and the counters of the current checkpoint interval."""

    _FIELDS = ("eta", "prev", "prev_val", "best", "best_val", "best_grad", "success", "eta_mark", "best_mark")

    def __init__(self, z: torch.Tensor, eps: float, steps: int):
        n = z.shape[0]
        self.eps = eps
        self.checkpoints = _apgd_checkpoints(steps)
        self.eta = torch.full((n,), 2 * eps, dtype=torch.float64, device=z.device)
        self.prev = z.clone()
        self.prev_val = torch.full((n,), -math.inf, dtype=torch.float64, device=z.device)
        self.best = z.clone()
        self.best_val = torch.full((n,), -math.inf, dtype=torch.float64, device=z.device)
        self.best_grad = torch.zeros_like(z)
        self.success = torch.zeros(n, dtype=torch.int64, device=z.device)
        self.eta_mark, self.best_mark = self.eta.clone(), self.best_val.clone()

    def keep(self, keep: torch.Tensor):
        """Drop the points that left the batch (``keep`` bool ``[n]``)."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[keep])

    def step(self, k: int, x0: torch.Tensor, z: torch.Tensor, val: torch.Tensor, grad: torch.Tensor,
             norm: float) -> torch.Tensor:
        """Iterate k + 1 from iterate k (``z``, its score ``val`` float64 and gradient ``grad``),
        projected on ``B_p(x0, ε) ∩ [0, 1]^d``."""
        up = val > self.best_val
        self.best[up], self.best_val[up], self.best_grad[up] = z[up], val[up], grad[up]
        if k > 0:
            self.success += (val > self.prev_val).to(torch.int64)
        if k > 0 and k in self.checkpoints:
            span = k - self.checkpoints[self.checkpoints.index(k) - 1]
            halve = (self.success < 0.75 * span) | ((self.eta == self.eta_mark) & (self.best_val == self.best_mark))
            self.eta[halve] /= 2
            z, grad = z.clone(), grad.clone()
            z[halve], grad[halve] = self.best[halve], self.best_grad[halve]
            self.prev[halve] = z[halve]                   # no momentum out of a return to the best
            self.success.zero_()
            self.eta_mark, self.best_mark = self.eta.clone(), self.best_val.clone()
        eta = self.eta.to(z.dtype).view((-1,) + (1,) * (z.dim() - 1))
        towards = _project(x0, z + eta * _unit_step(grad, norm), self.eps, norm, 0.0, 1.0)
        alpha = 1.0 if k == 0 else 0.75
        new = _project(x0, z + alpha * (towards - z) + (1 - alpha) * (z - self.prev), self.eps, norm, 0.0, 1.0)
        self.prev, self.prev_val = z, val
        return new


def certificate_attack(certifier: Certifier, x: torch.Tensor, eps: float, *, restarts: int = 2,
                       steps: int = 100, generator: torch.Generator | None = None,
                       labels: torch.Tensor | None = None, targets: int | None = 3,
                       rel_step: float = 0.25, final_rel_step: float = 0.01,
                       skip: torch.Tensor | None = None, skip_certified_2eps: bool = True,
                       exit_margin: float | None = None, score_kwargs: dict | None = None,
                       schedule: str = "cosine", return_info: bool = False):
    """A degradation attack on the certificate itself: ascend ``certifier.rejection_score`` over
    the ε-ball (Section 3's goal, without Algorithm 3.1's detour through 2ε).

    For every point, projected gradient ascent of the rejection score s(x') (> 0 where
    ``certify(x', ε)`` rejects the label of x) over ``B_p(x, ε) ∩ [0, 1]^d``, p =
    ``certifier.norm``: ℓ2 steps along the normalised gradient, ℓ∞ sign steps in the ε-box; the
    step size follows a cosine schedule from ``rel_step·ε`` to ``final_rel_step·ε`` within each
    run. Runs, per restart (the first from x, the others from uniform random points of the
    ball): one on s itself and, where the certifier has ``per_class_scores``, one per runner-up
    class i (the ``targets`` classes with the largest per-class score at x), on the per-class
    score of i (for GloRo y_i + ε·K_li − y_l; for the ℓ∞ certifier −LB_i). ``schedule="apgd"``
    replaces the cosine schedule by an independent optimiser, the step rule of APGD (Croce & Hein,
    ICML 2020): momentum 0.75 and a per-point step size that starts at 2ε and is halved, with a
    return to the run's best iterate, at APGD's checkpoints (after 22 %, 41 %, 57 %, ... of the
    steps) where fewer than 75 % of the steps since the last checkpoint increased the score or
    neither the step size nor the run's best score changed. Early exit: a point
    whose score reaches ``exit_margin`` is frozen at that iterate and no longer evaluated (the
    batch shrinks), so every later step costs only the points still standing.

    Because x' stays in the ε-ball, the attack can never change the label of a point that is
    certified at ε (by a sound certifier): it can only make the defense reject it.

    Args:
        certifier: any :class:`Certifier` implementing :meth:`Certifier.rejection_score`.
        x: valid inputs ``[N, ...]`` in [0, 1].
        eps: ε > 0 (in ``certifier.norm``).
        restarts: ≥ 1 rounds of runs (the first starts from x).
        steps: ≥ 1 gradient steps per run.
        generator: ``torch.Generator`` of the random starts (and of the noise of surrogate
            scores, passed as ``generator=``), or a list of one per example (example i draws
            only from the i-th, so its result does not depend on the batch); default a fresh
            one seeded 0.
        labels: int64 ``[N]``, the labels the check should lose (default ``certifier.predict(x)``).
        targets: number of runner-up classes attacked one by one (None: all C − 1; 0: none).
        rel_step, final_rel_step: first and last step size relative to ε (0 < final ≤ first).
        skip: bool ``[N]``, points not to attack (e.g. proven unattackable), returned as x.
        skip_certified_2eps: for a monotonic certifier with an exact score (Definition 4),
            do not attack points certified at 2ε: no x' in their ε-ball can be rejected
            (Section 3.3.2). One score evaluation at 2ε.
        exit_margin: a point stops once its score is ≥ this; default 0 for exact scores (the
            check rejects from 0 on, plus a 1e-5 guard) and +inf (no early exit, last iterate returned) for
            surrogates, whose sign does not decide the check. (1e-5 keeps float rounding between
            the batched score and ``certify`` from stopping a point on the boundary.)
        score_kwargs: extra keyword arguments of ``rejection_score`` (e.g. ``samples``).
        schedule: ``"cosine"`` (steps ``rel_step·ε`` → ``final_rel_step·ε``) or ``"apgd"`` (the APGD
            step rule above; ``rel_step`` and ``final_rel_step`` are then unused). Same budget:
            ``steps`` + 1 score evaluations per run.
        return_info: also return a dict of ``[N]`` tensors: ``score`` (the score at x'),
            ``score_clean`` (at x), ``evaluations`` (score evaluations spent on the point),
            ``skipped``.

    Returns:
        ``x'`` ``[N, ...]`` (detached), ‖x' − x‖_p ≤ ε (float tolerance), values in [0, 1]: per
        point, the first iterate that reached ``exit_margin``, else the iterate with the highest
        score (for exact scores) or the last iterate (surrogates). The model's train/eval mode
        is left as found.
    """
    if not isinstance(certifier, Certifier):
        raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
    if not implements_rejection_score(certifier):
        raise ValueError(f"{type(certifier).__name__} does not implement rejection_score")
    eps = check_eps(eps)
    x = check_input(x).detach()
    norm = check_norm(certifier.norm)
    if norm not in (2.0, math.inf):
        raise ValueError(f"certificate_attack supports norm 2 or inf, got {norm!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    steps = _check_steps(steps)
    if targets is not None and (isinstance(targets, bool) or not isinstance(targets, int) or targets < 0):
        raise ValueError(f"targets must be None or an integer >= 0, got {targets!r}")
    rel_step = check_eps(rel_step, "rel_step")
    final_rel_step = check_eps(final_rel_step, "final_rel_step")
    if final_rel_step > rel_step:
        raise ValueError(f"final_rel_step must be <= rel_step, got {final_rel_step!r} > {rel_step!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    exact = bool(certifier.score_is_exact)
    if exit_margin is None:
        exit_margin = 1e-5 if exact else math.inf
    exit_margin = float(exit_margin)
    gen = _generator(generator, x)
    kwargs = dict(score_kwargs or {})
    if not exact:
        kwargs.setdefault("generator", gen)
    N = x.shape[0]
    if skip is not None:
        skip = torch.as_tensor(skip, device=x.device)
        if skip.shape != (N,) or skip.dtype != torch.bool:
            raise ValueError(f"skip must be a bool tensor of shape ({N},), got {skip.dtype} {tuple(skip.shape)}")
    else:
        skip = torch.zeros(N, dtype=torch.bool, device=x.device)
    if labels is None:
        labels = certifier.predict(x)
    labels = certifier._check_labels(torch.as_tensor(labels), N, x.device)
    use_targets = bool(certifier.per_class_scores) and targets != 0

    def score(z, idx, per_class=False):
        extra = dict(kwargs, per_class=True) if per_class else dict(kwargs)
        if "generator" in extra:
            extra["generator"] = _subset(extra["generator"], idx)
        out = certifier.rejection_score(z, eps, labels[idx], **extra)
        return out.to(device=x.device)

    model = certifier.model
    info_eval = torch.zeros(N, dtype=torch.int64, device=x.device)
    with eval_mode(model):
        all_idx = torch.arange(N, device=x.device)
        with torch.no_grad():
            if use_targets:
                per0 = score(x, all_idx, per_class=True).to(torch.float64) if N else torch.zeros(0, 1)
                s0 = per0.max(dim=1).values
            else:
                s0 = score(x, all_idx).to(torch.float64) if N else torch.zeros(0, dtype=torch.float64)
            skipped = skip.clone()
            if skip_certified_2eps and certifier.monotone and exact and N:
                s2 = certifier.rejection_score(x, 2 * eps, labels, **kwargs).to(device=x.device)
                skipped |= s2 < 0
        best = x.clone()
        best_val = s0.clone()
        done = skipped | (s0 >= exit_margin)
        # run list: (restart, target) with target None = the score itself
        runs = []
        if use_targets:
            C = per0.shape[1]
            k = C - 1 if targets is None else min(targets, C - 1)
            order = per0.argsort(dim=1, descending=True)[:, :k]          # runner-ups by score at x
        else:
            k = 0
        for r in range(restarts):
            runs.append((r, None))
            runs.extend((r, t) for t in range(k))
        for r, t in runs:
            idx = (~done).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                break
            x0 = x[idx]
            z = x0.clone() if r == 0 else _random_start(x0, eps, norm, _subset(gen, idx))
            target = None if t is None else order[idx, t]
            apgd = _ApgdState(z, eps, steps) if schedule == "apgd" else None
            for step in range(steps):
                if idx.numel() == 0:
                    break
                size = eps * (final_rel_step + (rel_step - final_rel_step) * 0.5 * (1 + math.cos(math.pi * step / steps)))
                zz = z.detach().requires_grad_(True)
                with torch.enable_grad():
                    if use_targets:
                        per = score(zz, idx, per_class=True)
                        val = per.max(dim=1).values
                        obj = val if target is None else per.gather(1, target[:, None])[:, 0]
                    else:
                        val = obj = score(zz, idx)
                    grad, = torch.autograd.grad(obj.sum(), zz, allow_unused=True)
                if grad is None:
                    grad = torch.zeros_like(zz)
                val = val.detach().to(torch.float64)
                info_eval[idx] += 1
                if exact:
                    better = val > best_val[idx]
                    upd = idx[better]
                    best[upd] = z[better]
                    best_val[upd] = val[better]
                else:
                    best[idx] = z
                    best_val[idx] = val
                hit = val >= exit_margin
                if hit.any():
                    done[idx[hit]] = True
                    keep = ~hit
                    idx, z, x0, grad, val = idx[keep], z[keep], x0[keep], grad[keep], val[keep]
                    target = None if target is None else target[keep]
                    if apgd is not None:
                        apgd.keep(keep)
                if apgd is None:
                    z = _project(x0, z + size * _unit_step(grad, norm), eps, norm, 0.0, 1.0)
                else:
                    z = apgd.step(step, x0, z, val, grad, norm)
            if idx.numel():
                with torch.no_grad():
                    if use_targets:
                        val = score(z, idx, per_class=True).max(dim=1).values.to(torch.float64)
                    else:
                        val = score(z, idx).to(torch.float64)
                info_eval[idx] += 1
                better = (val > best_val[idx]) if exact else torch.ones_like(val, dtype=torch.bool)
                best[idx[better]] = z[better]
                best_val[idx[better]] = val[better]
                done[idx[val >= exit_margin]] = True
    best = best.detach()
    if return_info:
        return best, dict(score=best_val, score_clean=s0, evaluations=info_eval, skipped=skipped)
    return best


def degradation_attack(certifier: Certifier, x: torch.Tensor, eps: float, attack: Attack | None = None) -> torch.Tensor:
    """Algorithm 3.1, DegradationAttack(f, x, ε, ℓp), with ℓp = ``certifier.norm``.

    ``x'' = attack(certifier, x, 2ε)``, then ``x' = project(x, x'', ε, ℓp)``. The attack succeeds
    at a point certified at ε when ``certifier.certify(x', ε) == ABSTAIN``; it can never change
    that point's label (x' is in the certified ε-ball), only make the defense reject it.

    Args:
        certifier: the defended model (its ``norm`` is the threat model).
        x: valid inputs ``[N, ...]`` in [0, 1].
        eps: ε > 0.
        attack: any callable under the attack contract (``attack(certifier, x, radius)``),
            e.g. :func:`pgd`, ``functools.partial(pgd, steps=200)``, :func:`multitarget_pgd` or
            :func:`foolbox_attack` (L2PGD); default :func:`default_attack`.

    Returns:
        ``x'`` ``[N, ...]`` with ‖x' − x‖_p ≤ ε (float tolerance) and values in [0, 1].
    """
    if not isinstance(certifier, Certifier):
        raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
    eps = check_eps(eps)
    x = check_input(x)
    norm = check_norm(certifier.norm)
    if norm not in (2.0, math.inf):
        raise ValueError(f"degradation_attack supports norm 2 or inf, got {norm!r}")
    if attack is None:
        attack = default_attack(certifier, eps)
    elif not callable(attack):
        raise ValueError(f"attack must be callable as attack(certifier, x, radius), got {type(attack).__name__}")
    x2 = attack(certifier, x, 2 * eps)
    if not isinstance(x2, torch.Tensor) or x2.shape != x.shape:
        raise ValueError(f"attack must return a tensor of shape {tuple(x.shape)}, got "
                         f"{getattr(x2, 'shape', type(x2).__name__)}")
    return project(x, x2.detach().to(x.dtype), eps, norm)


def eps_pgd(certifier: Certifier, x: torch.Tensor, eps: float, **pgd_kwargs) -> torch.Tensor:
    """ε-PGD (Appendix B.1): PGD with an ε bound instead of 2ε, returned without projection.

    ``pgd(certifier, x, ε, **pgd_kwargs)``: by default untargeted cross-entropy against the
    model's own prediction. Returns ``x'`` with ‖x' − x‖_p ≤ ε, values in [0, 1].
    """
    if not isinstance(certifier, Certifier):
        raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
    return pgd(certifier, x, check_eps(eps), **pgd_kwargs)


def authors_gloro_attack(certifier: Certifier, x: torch.Tensor, eps: float, *, steps: int = 50,
                         rel_step: float = 0.025, random_start: bool = True,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 3.1 against a GloRo net *as the paper's authors ran it* (Table 1 "as run").

    Their script ran foolbox's L2PGD (50 steps, relative step 0.025, random start, cross-entropy
    against the model's own prediction, last iterate) at radius 2ε with input bounds
    (−2ε, 1 + 2ε), then rescaled every perturbation to length exactly ε without clipping
    (:func:`rescale_to_radius`). Re-implemented here on :func:`pgd` (same update, projection
    and start distribution as foolbox's; our random start comes from ``generator``, which may be
    one generator per example) -- so the result may leave [0, 1], which Definition 1 forbids.
    Certify such points with a certifier that accepts them (``GloroCertifier(...,
    unit_range=False)``). Compare :func:`degradation_attack` with :func:`pgd`, which keeps
    every iterate in [0, 1] and projects into the ε-ball ∩ [0, 1].

    Args:
        certifier: an ℓ2 :class:`Certifier` (GloRo in the paper).
        x: clean inputs ``[N, ...]`` in [0, 1].
        eps: ε > 0 (the attack runs at 2ε).
        steps, rel_step, random_start, generator: as :func:`pgd_ascent`.

    Returns:
        ``x'`` ``[N, ...]`` with ‖x' − x‖₂ = ε where the attack moved (values may lie in
        (−2ε, 1 + 2ε) and beyond [0, 1]).
    """
    if not isinstance(certifier, Certifier):
        raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
    if check_norm(certifier.norm) != 2.0:
        raise ValueError(f"authors_gloro_attack is an l2 attack; the certifier's norm is {certifier.norm!r}")
    eps = check_eps(eps)
    x = check_input(x)
    x2 = pgd(certifier, x, 2 * eps, steps=steps, rel_step=rel_step, random_start=random_start,
             generator=generator, keep_best=False, bounds=(-2 * eps, 1 + 2 * eps))
    return rescale_to_radius(x, x2, eps)


def evaluate_degradation(certifier: Certifier, x: torch.Tensor, y: torch.Tensor, eps: float,
                         attacks: dict[str, Callable], batch_size: int = 500, index=None,
                         return_inputs: bool = False, meta: dict | None = None):
    """Run degradation attacks over a data set, batch by batch, and record per-point results.

    Args:
        certifier: the defended model.
        x, y: inputs ``[N, ...]`` in [0, 1] and true labels ``[N]``.
        eps: ε > 0.
        attacks: name → ``run(certifier, x_batch, eps) -> x'`` (e.g.
            ``lambda c, xb, e: degradation_attack(c, xb, e)`` or ``eps_pgd``).
        batch_size: examples per batch.
        index: dataset positions of the rows (default ``0..N-1``), stored as the ``index`` column.
        return_inputs: also return the attack points ``{name: [N, ...]}`` (on the CPU).
        meta: extra metadata for the :class:`PointResults`.

    Returns:
        :class:`~degradation_lib.results.PointResults` with columns ``index``, ``label`` (true),
        ``pred`` (f(x)), ``cert_label`` and ``radius`` (from ``certified_radius(x)``: one
        certification pass), ``certified`` and ``certified_2eps`` (the label where the radius
        exceeds ε, resp. 2ε, ``ABSTAIN`` elsewhere: the library's convention for
        ``certify``) and, per attack, ``<name>`` (``certify(x', ε)``), ``<name>_pred``
        (f(x')) and ``<name>_dist`` (‖x' − x‖_p); with ``return_inputs``, a pair
        ``(results, inputs)``. Feed the columns to :func:`degradation_lib.degradation_report`.
    """
    from .results import PointResults

    if not isinstance(certifier, Certifier):
        raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
    eps = check_eps(eps)
    x = check_input(x)
    y = torch.as_tensor(y)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not attacks or not all(callable(a) for a in attacks.values()):
        raise ValueError("attacks must be a non-empty dict of callables run(certifier, x, eps)")
    reserved = {"index", "label", "pred", "cert_label", "radius", "certified", "certified_2eps"}
    if reserved & set(attacks):
        raise ValueError(f"attack names must not be one of {sorted(reserved)}")
    index = torch.arange(x.shape[0]) if index is None else torch.as_tensor(index)
    cols: dict[str, list] = {k: [] for k in ("label", "pred", "cert_label", "radius", "certified", "certified_2eps")}
    for name in attacks:
        cols.update({name: [], f"{name}_pred": [], f"{name}_dist": []})
    inputs = {name: [] for name in attacks}
    norm = certifier.norm
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        labels, radius = certifier.certified_radius(xb)
        cols["label"].append(y[start:start + batch_size].cpu())
        cols["pred"].append(certifier.predict(xb).cpu())
        labels, radius = labels.detach().cpu(), radius.detach().cpu().double()
        abstain = torch.full_like(labels, ABSTAIN)
        cols["cert_label"].append(labels)
        cols["radius"].append(radius)
        cols["certified"].append(torch.where(radius > eps, labels, abstain))
        cols["certified_2eps"].append(torch.where(radius > 2 * eps, labels, abstain))
        for name, run in attacks.items():
            xp = run(certifier, xb, eps)
            cols[name].append(certifier.certify(xp, eps).cpu())
            cols[f"{name}_pred"].append(certifier.predict(xp).cpu())
            cols[f"{name}_dist"].append(torch.linalg.vector_norm((xp - xb).flatten(1).double(), ord=norm,
                                                                 dim=1).cpu())
            if return_inputs:
                inputs[name].append(xp.detach().cpu())
    columns = {"index": index.cpu().numpy()}
    columns.update({k: torch.cat(v).numpy() for k, v in cols.items()})
    results = PointResults(columns, dict(eps=eps, norm=str(norm), **(meta or {})))
    if return_inputs:
        return results, {k: torch.cat(v) for k, v in inputs.items()}
    return results


# --------------------------------------------------------------------------------------------
# off-the-shelf attacks
# --------------------------------------------------------------------------------------------

def foolbox_attack(fb_attack, generator: torch.Generator | None = None) -> Attack:
    """Wrap a foolbox 3 attack (e.g. ``foolbox.attacks.L2PGD()``) into the attack contract.

    The wrapped attack is run untargeted against the model's own prediction with
    ``epsilons=radius`` and bounds (0, 1), in eval mode; its clipped output is projected once
    more (float tolerance). Foolbox draws its random start from torch's global RNG: the
    adapter seeds it from ``generator`` (default seeded 0) inside ``torch.random.fork_rng``,
    so the global RNG state is left untouched and runs are reproducible.
    """
    import foolbox as fb  # optional dependency, pinned in requirements.txt

    if not isinstance(fb_attack, fb.attacks.base.Attack):
        raise ValueError(f"fb_attack must be a foolbox attack instance, got {type(fb_attack).__name__}")
    gen = torch.Generator(device="cpu").manual_seed(0) if generator is None else generator

    def attack(certifier, x, radius):
        model, norm = _model_and_norm(certifier, None)
        x = check_input(x)
        radius = check_eps(radius, "radius")
        labels = own_prediction(model, x)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        devices = [x.device] if x.device.type == "cuda" else []
        with eval_mode(model), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
            _, clipped, _ = fb_attack(fmodel, x, labels, epsilons=radius)
        return project(x, clipped.detach(), radius, norm)

    return attack


__all__ = ["Attack", "project", "rescale_to_radius", "authors_gloro_attack", "pgd", "pgd_ascent", "multitarget_pgd", "rejection_pgd", "default_attack",
           "certificate_attack", "implements_rejection_score",           "degradation_attack", "eps_pgd", "evaluate_degradation", "foolbox_attack", "cross_entropy_loss", "margin_loss",
           "own_prediction", "eval_mode"]
