"""ℓ∞ bound propagation and the ℓ∞ certifier of Appendix C (Wong & Kolter's convex outer polytope).

Appendix C of the paper attacks the ℓ∞ defense of Wong & Kolter (2018): a network is certified
at x for radius ε when a *lower bound* of every margin y_j − y_i (j the predicted class, i ≠ j)
over the ε-box around x is positive. This module computes such bounds for sequential networks
built from ``Linear``, ``Conv2d`` (any stride, padding, dilation, groups), ``ReLU`` and
``Flatten`` (nested ``nn.Sequential`` is flattened).

Bounds
------
* **IBP** (interval bound propagation): boxes pushed through each layer,
  ``W x + b`` ↦ centre ``W c + b``, radius ``|W| r``; ReLU is monotone.
* **KW** (the Wong–Kolter dual bound): every ReLU with pre-activation bounds l < 0 < u is
  relaxed to the two lines ``s·x ≤ relu(x) ≤ s·(x − l)`` with the *same* slope ``s = u/(u − l)``
  (stable neurons are exact: slope 1 or 0). The linear objective ``c·f(x)`` is substituted back
  through the network (backward linear bounds, "CROWN-style"), giving
  ``Λ·x + ν`` with ``Λ`` exact and ``ν`` collecting the relaxations' intercepts, then minimised
  over the input box in closed form. Intermediate bounds (the l, u of every ReLU) are computed
  the same way, layer by layer. This equals the objective of Wong & Kolter's dual network
  (``convex_adversarial.DualNetwork`` without random projections), which the tests check.
* **KW ∩ IBP** (``"kw_ibp"``, the default and our tightest bound): at every ReLU the bounds are
  the intersection of the IBP bounds (propagated from the tightened bounds below) and the KW
  bounds; the KW bound is computed only for neurons that the intervals leave unstable (a stable
  neuron's relaxation is exact whatever its bounds). The final bound is the larger of the IBP
  and KW bounds, so it is never looser than IBP -- pure KW can be: for ``relu(x)``,
  ``x ∈ [−1, 1]``, IBP gives the lower bound 0 but KW gives ``s·l = −1/2``.

Input domain
------------
With ``clip=True`` (the default everywhere) the ε-box is intersected with [0, 1]^d, the input
domain of Definition 1: a certificate then says that no input in ``B_∞(x, ε) ∩ [0, 1]^d`` changes
the label (Definition 2 restricted to the input domain). This matches the attacks, whose outputs
are clipped to [0, 1] (:func:`degradation_lib.attacks.project`). ``clip=False`` bounds the
whole box.

Floating-point rounding
-----------------------
The bounds are computed in the dtype of the model and the inputs (float32 for the committed
``mnist_linf_0.1``), with round-to-nearest and *no* outward rounding: they are bounds of the
network in exact arithmetic only up to the rounding of the bound computation itself, of
relative size ~k·u per layer (u = 2⁻²⁴ in float32, k the fan-in), i.e. ~1e-5 of the magnitudes
|W|·(|c| + r) involved. A margin certified by less than that is not proven: on a random
three-layer linear network in float32 (the setting of the corner test below) the KW lower bound
lies above the exact minimum over the box in about half of the margins, by up to 2.5e-5 relative. For a certificate
whose rounding is negligible (u = 2⁻⁵³, ~1e-13), bound a float64 copy of the model
(``LinfCertifier(copy.deepcopy(model).double())`` or ``compute_bounds`` on float64 tensors).
``tests/test_soundness.py`` checks float32 bounds against float64 evaluations at sampled points
and at the corners of the box, including the minimising corner of linear networks, where the
interval bound is attained exactly.

Specification
-------------
A specification matrix ``C`` ``[N, S, K]`` asks for bounds on ``C f(x)`` instead of ``f(x)``;
:func:`margin_spec` builds the rows ``e_j − e_i`` (i ≠ j) of the margins y_j − y_i. ``C`` is
folded into the last linear layer before any bound is computed, which is exact and tighter
than bounding the logits first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .certifier import ABSTAIN, Certifier, check_input

BOUND_METHODS = ("ibp", "kw", "kw_ibp")
"""Names accepted by :func:`compute_bounds` and :class:`LinfCertifier`."""

SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of a sequential ``model`` in order (nested ``nn.Sequential`` flattened).

    Raises ``ValueError`` naming the first layer that is not ``Linear``, ``Conv2d``, ``ReLU``
    or ``Flatten`` (e.g. ``"unsupported layer 3 (Tanh)"``), a ``Flatten`` that does not keep the
    batch dimension, or a model with no layer.
    """
    if isinstance(model, SUPPORTED_LAYERS):
        return [model]
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential of Linear, Conv2d, ReLU and Flatten layers, "
                         f"got unsupported layer {type(model).__name__}")
    layers: list[nn.Module] = []
    for child in model:
        if isinstance(child, nn.Sequential):
            layers.extend(sequential_layers(child))
        elif isinstance(child, SUPPORTED_LAYERS):
            layers.append(child)
        else:
            raise ValueError(f"unsupported layer {len(layers)} ({type(child).__name__}): bound propagation "
                             "supports Linear, Conv2d, ReLU and Flatten only")
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Flatten) and (layer.start_dim != 1 or layer.end_dim != -1):
            raise ValueError(f"unsupported layer {i} (Flatten with start_dim={layer.start_dim}, "
                             f"end_dim={layer.end_dim}): only Flatten(1, -1) is supported")
    if not layers:
        raise ValueError("model has no layers")
    return layers


def _fold_spec(layers: list[nn.Module], C: torch.Tensor | None):
    """Split off the last linear layer and fold ``C`` into it.

    Returns ``(body, W, b)``: the layers before the last ``Linear`` and the per-example weight
    ``[N, S, in]`` and bias ``[N, S]`` of ``C·(W x + b)``. Requires the model to end with a
    ``Linear`` layer when ``C`` is given.
    """
    last = layers[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(f"a specification matrix C needs a model ending with a Linear layer, got "
                         f"{type(last).__name__}")
    W, b = last.weight, last.bias
    if b is None:
        b = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
    if C.shape[-1] != W.shape[0]:
        raise ValueError(f"C must have shape [N, S, {W.shape[0]}], got {tuple(C.shape)}")
    C = C.to(W.dtype)
    return layers[:-1], C @ W, C @ b


def _affine_ibp(layer: nn.Module, lo: torch.Tensor, hi: torch.Tensor):
    """Interval image of ``[lo, hi]`` under an affine layer (exact for one layer)."""
    if isinstance(layer, nn.Flatten):
        return lo.flatten(1), hi.flatten(1)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    if isinstance(layer, nn.Linear):
        c = F.linear(c, layer.weight, layer.bias)
        r = F.linear(r, layer.weight.abs())
    else:  # Conv2d
        c = layer(c)
        r = F.conv2d(r, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return c - r, c + r


def _spec_ibp(W: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Interval image of ``[lo, hi]`` ``[N, in]`` under per-example ``W [N, S, in]``, ``b [N, S]``."""
    c, r = (hi + lo) / 2, (hi - lo) / 2
    c = torch.einsum("nsi,ni->ns", W, c) + b
    r = torch.einsum("nsi,ni->ns", W.abs(), r)
    return c - r, c + r


# --------------------------------------------------------------------------------------------
# Input boxes and specifications
# --------------------------------------------------------------------------------------------

def _check_radius(eps, x: torch.Tensor) -> torch.Tensor:
    """ε as a tensor broadcastable to ``x`` (scalar, or one per example); ε ≥ 0 and finite."""
    if isinstance(eps, torch.Tensor):
        e = eps.detach().to(device=x.device, dtype=x.dtype)
    else:
        try:
            e = torch.tensor(float(eps), device=x.device, dtype=x.dtype)
        except (TypeError, ValueError):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}") from None
    if e.dim() > 1 or (e.dim() == 1 and e.shape[0] != x.shape[0]):
        raise ValueError(f"eps must be a scalar or have shape [N] = [{x.shape[0]}], got {tuple(e.shape)}")
    if e.numel() and (not torch.isfinite(e).all() or (e < 0).any()):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return e


def input_box(x: torch.Tensor, eps, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The ℓ∞ box ``[x − ε, x + ε]``, intersected with [0, 1] when ``clip``.

    Args:
        x: ``[N, ...]`` inputs.
        eps: ε ≥ 0, a scalar or one per example ``[N]``.

    Returns ``(lower, upper)``, each shaped like ``x``. Raises ``ValueError`` for a negative or
    non-finite ε.
    """
    e = _check_radius(eps, x)
    if e.dim() == 1:
        e = e.reshape(-1, *([1] * (x.dim() - 1)))
    lo, hi = x - e, x + e
    if clip:
        lo, hi = lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0)
    return lo, hi


def margin_spec(labels: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Specification rows ``e_j − e_i`` for the margins ``y_j − y_i``, i ≠ j = ``labels[n]``.

    Returns ``[N, K − 1, K]`` (``dtype`` defaults to torch's default dtype); row k of example n
    is for the k-th class i ≠ j in increasing order.
    """
    labels = torch.as_tensor(labels)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    n, K = labels.shape[0], num_classes
    eye = torch.eye(K, dtype=dtype, device=labels.device)
    C = eye[labels][:, None, :] - eye[None, :, :]                       # [N, K, K]
    keep = ~F.one_hot(labels, K).bool()                                 # [N, K]
    return C[keep].reshape(n, K - 1, K)


# --------------------------------------------------------------------------------------------
# Interval bound propagation
# --------------------------------------------------------------------------------------------

def interval_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor,
                    C: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP bounds of ``f(x)`` (or ``C f(x)``) for every x with ``lower ≤ x ≤ upper``.

    Differentiable (used as the training loss of :mod:`degradation_lib.train_linf`).

    Args:
        model: sequential network (see :func:`sequential_layers`).
        lower, upper: ``[N, ...]`` input box.
        C: optional ``[N, S, K]`` specification matrix (folded into the last linear layer).

    Returns ``(lb, ub)`` of shape ``[N, K]`` (or ``[N, S]``).
    """
    layers = sequential_layers(model)
    W = b = None
    if C is not None:
        layers, W, b = _fold_spec(layers, C)
    lo, hi = lower, upper
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
        else:
            lo, hi = _affine_ibp(layer, lo, hi)
    if C is not None:
        lo, hi = _spec_ibp(W, b, lo.flatten(1), hi.flatten(1))
    return lo, hi


# --------------------------------------------------------------------------------------------
# Backward linear bounds with the KW relaxation
# --------------------------------------------------------------------------------------------

@dataclass
class _Relax:
    """KW relaxation of one ReLU: slope s (lower and upper line) and upper intercept t = −s·l."""

    slope: torch.Tensor      # [N, *shape]
    intercept: torch.Tensor  # [N, *shape], ≥ 0, nonzero only for unstable neurons


def _relaxation(lo: torch.Tensor, hi: torch.Tensor) -> _Relax:
    unstable = (lo < 0) & (hi > 0)
    denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
    slope = torch.where(unstable, hi / denom, (lo >= 0).to(lo.dtype))
    intercept = torch.where(unstable, -slope * lo, torch.zeros_like(lo))
    return _Relax(slope, intercept)


def _shapes(layers: list[nn.Module], in_shape: tuple, device, dtype) -> list[tuple]:
    """Per-example input shape of every layer, and the output shape at the end."""
    shapes = [tuple(in_shape)]
    z = torch.zeros((1, *in_shape), device=device, dtype=dtype)
    with torch.no_grad():
        for layer in layers:
            z = layer(z)
            shapes.append(tuple(z.shape[1:]))
    return shapes


def _backward(layers, shapes, relax, A, bias_lo, bias_hi, rows, x_lo, x_hi):
    """Substitute ``A·z_k`` (``z_k`` the output of ``layers[:k]``) back to the input.

    Args:
        layers: the layers ``0 .. k−1``.
        shapes: their per-example input shapes (``shapes[i]`` is the input of layer i).
        relax: ``relax[i]`` the relaxation of ReLU layer i (``None`` for other layers).
        A: ``[M, S, *out_shape]`` coefficients; row m belongs to example ``rows[m]``.
        bias_lo, bias_hi: ``[M, S]`` constants accumulated so far.
        x_lo, x_hi: ``[N, *in_shape]`` input box.

    Returns ``(lb, ub)`` ``[M, S]``: bounds of ``A·z_k + bias`` over the relaxed network.
    """
    M, S = A.shape[:2]
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, nn.ReLU):
            r = relax[i]
            t = r.intercept[rows].unsqueeze(1)                               # [M, 1, *shape]
            dims = tuple(range(2, A.dim()))
            bias_lo = bias_lo + (A.clamp(max=0) * t).sum(dim=dims)
            bias_hi = bias_hi + (A.clamp(min=0) * t).sum(dim=dims)
            A = A * r.slope[rows].unsqueeze(1)
        elif isinstance(layer, nn.Flatten):
            A = A.reshape(M, S, *shapes[i])
        elif isinstance(layer, nn.Linear):
            if layer.bias is not None:
                bb = A @ layer.bias
                bias_lo, bias_hi = bias_lo + bb, bias_hi + bb
            A = A @ layer.weight
        else:  # Conv2d
            out_shape = A.shape[2:]
            if layer.bias is not None:
                bb = torch.einsum("mschw,c->ms", A, layer.bias)
                bias_lo, bias_hi = bias_lo + bb, bias_hi + bb
            in_shape = shapes[i]
            k = layer.weight.shape[2:]
            out_pad = []
            for d in range(2):
                natural = ((out_shape[1 + d] - 1) * layer.stride[d] - 2 * layer.padding[d]
                           + layer.dilation[d] * (k[d] - 1) + 1)
                out_pad.append(in_shape[1 + d] - natural)
            A = F.conv_transpose2d(A.reshape(M * S, *out_shape), layer.weight, None, layer.stride,
                                   layer.padding, tuple(out_pad), layer.groups, layer.dilation)
            A = A.reshape(M, S, *in_shape)
    A = A.flatten(2)                                                         # [M, S, d]
    c = ((x_hi + x_lo) / 2).flatten(1)[rows]                                 # [M, d]
    rad = ((x_hi - x_lo) / 2).flatten(1)[rows]
    centre = torch.einsum("msd,md->ms", A, c)
    spread = torch.einsum("msd,md->ms", A.abs(), rad)
    return centre - spread + bias_lo, centre + spread + bias_hi


def _neuron_bounds_backward(layers, shapes, relax, k, x_lo, x_hi, select, chunk):
    """KW bounds of the selected neurons of ``z_k`` (the input of ReLU layer k).

    ``select`` is a bool ``[N, n_k]`` mask; returns ``(lb, ub)`` ``[N, n_k]`` (±inf where not
    selected). Rows are processed ``chunk`` (example, neuron) pairs at a time.
    """
    N = x_lo.shape[0]
    shape = shapes[k]
    n_k = math.prod(shape)
    dtype, device = x_lo.dtype, x_lo.device
    lb = torch.full((N, n_k), -math.inf, dtype=dtype, device=device)
    ub = torch.full((N, n_k), math.inf, dtype=dtype, device=device)
    ex, neuron = select.nonzero(as_tuple=True)
    for start in range(0, ex.numel(), chunk):
        e, j = ex[start:start + chunk], neuron[start:start + chunk]
        A = F.one_hot(j, n_k).to(dtype).reshape(e.numel(), 1, *shape)
        zeros = torch.zeros(e.numel(), 1, dtype=dtype, device=device)
        l, u = _backward(layers[:k], shapes, relax, A, zeros, zeros, e, x_lo, x_hi)
        lb[e, j], ub[e, j] = l[:, 0], u[:, 0]
    return lb, ub


def compute_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor,
                   C: torch.Tensor | None = None, method: str = "kw_ibp",
                   chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound bounds of ``f(x)`` (or ``C f(x)``) over the box ``lower ≤ x ≤ upper``.

    Args:
        model: sequential network of ``Linear``, ``Conv2d``, ``ReLU``, ``Flatten``.
        lower, upper: ``[N, ...]`` input box (see :func:`input_box`).
        C: optional ``[N, S, K]`` specification matrix, e.g. :func:`margin_spec`.
        method: ``"ibp"``, ``"kw"`` (Wong–Kolter dual bound, every intermediate bound by the
            dual) or ``"kw_ibp"`` (both intersected; never looser than IBP). See the module
            docstring.
        chunk: how many (example, neuron) rows one backward pass for an intermediate bound
            takes at a time (memory knob; results do not depend on it).

    Returns ``(lb, ub)`` ``[N, K]`` (``[N, S]`` with C) with ``lb ≤ C f(x) ≤ ub`` for every x in
    the box. Gradients flow through ``"ibp"`` only if the caller enables them; the other
    methods are meant for evaluation under ``torch.no_grad()``.
    """
    if method not in BOUND_METHODS:
        raise ValueError(f"method must be one of {BOUND_METHODS}, got {method!r}")
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must have the same shape, got {tuple(lower.shape)} and {tuple(upper.shape)}")
    if (lower > upper).any():
        raise ValueError("lower must be <= upper elementwise")
    if method == "ibp":
        return interval_bounds(model, lower, upper, C)
    layers = sequential_layers(model)
    N = lower.shape[0]
    if C is None:
        last = layers[-1]
        K = last.out_features if isinstance(last, nn.Linear) else None
        if K is None:
            raise ValueError(f"method {method!r} needs a model ending with a Linear layer, got {type(last).__name__}")
        C = torch.eye(K, dtype=lower.dtype, device=lower.device).expand(N, K, K)
    body, Wc, bc = _fold_spec(layers, C)
    shapes = _shapes(body, tuple(lower.shape[1:]), lower.device, lower.dtype)
    use_ibp = method == "kw_ibp"
    relax: list[_Relax | None] = [None] * len(body)
    lo, hi = lower, upper                      # IBP box of the current layer's input
    seen_relu = False
    affine_since_relu = 0
    for i, layer in enumerate(body):
        if isinstance(layer, nn.ReLU):
            shape = shapes[i]
            if not seen_relu and affine_since_relu <= 1:
                # one affine layer on a box: the interval bounds are exact
                l, u = lo, hi
            else:
                select = torch.ones(N, math.prod(shape), dtype=torch.bool, device=lower.device)
                if use_ibp:
                    select = ((lo < 0) & (hi > 0)).flatten(1)
                kl, ku = _neuron_bounds_backward(body, shapes, relax, i, lower, upper, select, chunk)
                kl, ku = kl.reshape(N, *shape), ku.reshape(N, *shape)
                l, u = (torch.maximum(lo, kl), torch.minimum(hi, ku)) if use_ibp else (kl, ku)
                if not use_ibp:  # not selected never happens here; keep the exact stable cases
                    pass
            relax[i] = _relaxation(l, u)
            lo, hi = l.clamp_min(0), u.clamp_min(0)
            seen_relu = True
            affine_since_relu = 0
        else:
            if not isinstance(layer, nn.Flatten):
                affine_since_relu += 1
            lo, hi = _affine_ibp(layer, lo, hi)
    S = Wc.shape[1]
    A = Wc.reshape(N, S, *shapes[-1])
    rows = torch.arange(N, device=lower.device)
    lb, ub = _backward(body, shapes, relax, A, bc.clone(), bc.clone(), rows, lower, upper)
    if use_ibp:
        il, iu = _spec_ibp(Wc, bc, lo.flatten(1), hi.flatten(1))
        lb, ub = torch.maximum(lb, il), torch.minimum(ub, iu)
    return lb, ub


# --------------------------------------------------------------------------------------------
# The certifier
# --------------------------------------------------------------------------------------------

class LinfCertifier(Certifier):
    """ℓ∞ certifier by bound propagation (Appendix C; Wong & Kolter 2018).

    ``certify(x, ε)`` returns f(x) where the lower bound of every margin ``y_j − y_i`` (j = f(x),
    i ≠ j) over ``B_∞(x, ε) ∩ [0, 1]^d`` (or the whole box with ``clip=False``) is > 0, and
    ``ABSTAIN`` elsewhere. ``certified_radius(x)`` bisects on ε, batched, and returns the largest
    ε it verified (a sound lower bound of the radius that ``certify`` would find; 0 when none),
    within ``tol`` of the boundary of the verified region found by the bisection.

    Because the KW bound with fixed slopes ``u/(u − l)`` need not be monotone in ε, ``certify``
    (the direct check) and ``radius > ε`` can differ near the boundary: ``certify`` is the
    check of Algorithm 2.1, the radius is what the upper bound of Section 3.3.2 uses.

    Args:
        model: sequential network returning logits ``[N, K]``.
        method: ``"kw_ibp"`` (default, tightest), ``"kw"`` or ``"ibp"``.
        clip: intersect the ε-box with [0, 1]^d (default True; see the module docstring).
        tol: bisection tolerance on ε (the radius is within ``tol`` of the bisection's
            boundary).
        max_radius: upper end of the bisection (ε ≥ 1 covers all of [0, 1]^d with clip).
        batch_size: examples per bound computation (memory knob).
        input_shape: per-example input shape, checked at the boundary (None: not checked).
    """

    norm = math.inf

    def __init__(self, model: nn.Module, method: str = "kw_ibp", clip: bool = True, tol: float = 1e-3,
                 max_radius: float = 0.5, batch_size: int = 256, input_shape: tuple | None = None):
        sequential_layers(model)  # validates the layers
        if method not in BOUND_METHODS:
            raise ValueError(f"method must be one of {BOUND_METHODS}, got {method!r}")
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a positive finite number, got {tol!r}")
        if not (math.isfinite(max_radius) and max_radius > tol):
            raise ValueError(f"max_radius must be finite and > tol, got {max_radius!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.model = model
        self.method = method
        self.clip = clip
        self.tol = float(tol)
        self.max_radius = float(max_radius)
        self.batch_size = int(batch_size)
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def _num_classes(self) -> int:
        last = sequential_layers(self.model)[-1]
        if not isinstance(last, nn.Linear):
            raise ValueError(f"the model must end with a Linear layer (the logits), got {type(last).__name__}")
        return last.out_features

    def _dtype_device(self):
        p = next(self.model.parameters())
        return p.dtype, p.device

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, shape=self.input_shape, unit_range=self.clip)
        dtype, device = self._dtype_device()
        return x.to(device=device, dtype=dtype)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = argmax of the logits, int64 ``[N]``."""
        x = self._check(x)
        return torch.cat([self.model(x[s:s + self.batch_size]).argmax(1)
                          for s in range(0, x.shape[0], self.batch_size)]) if x.shape[0] else \
            torch.zeros(0, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def margin_lower_bounds(self, x: torch.Tensor, eps, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Lower bounds of ``y_j − y_i`` over the ε-box, ``[N, K − 1]`` (i ≠ j in increasing order).

        ``labels`` j defaults to f(x); ``eps`` is a scalar or one per example ``[N]``.
        """
        x = self._check(x)
        if labels is None:
            labels = self.predict(x)
        eps_t = _check_radius(eps, x)
        out = []
        for s in range(0, x.shape[0], self.batch_size):
            xs = x[s:s + self.batch_size]
            es = eps_t[s:s + self.batch_size] if eps_t.dim() > 0 else eps_t
            lo, hi = input_box(xs, es, self.clip)
            K = self._num_classes()
            C = margin_spec(labels[s:s + self.batch_size].to(x.device), K, dtype=x.dtype)
            lb, _ = compute_bounds(self.model, lo, hi, C, self.method)
            out.append(lb)
        if not out:
            return torch.zeros(0, 0, dtype=x.dtype, device=x.device)
        return torch.cat(out)

    per_class_scores = True

    @property
    def monotone(self) -> bool:
        """Interval bounds are inclusion-monotone, so the ``"ibp"`` check is monotonic
        (Definition 4); the KW relaxation's slopes u/(u − l) change with the box, so ``"kw"`` and
        ``"kw_ibp"`` carry no such guarantee."""
        return self.method == "ibp"

    @property
    def num_classes(self) -> int:
        return self._num_classes()

    def rejection_score(self, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None,
                        per_class: bool = False, method: str | None = None) -> torch.Tensor:
        """Minus the certified lower bound of the worst margin over the ε-box, differentiable in ``x``.

        s(x) = −min_{i≠l} LB_i(x, ε), LB_i the lower bound of y_l − y_i over
        ``B_∞(x, ε) ∩ [0, 1]^d`` computed by ``method`` (default: the certifier's). IBP and the
        KW relaxation are built from differentiable operations (the ReLU slopes u/(u − l) are
        functions of x too), so the gradient is that of the bound itself. s(x) < 0 exactly when
        ``certify(x, eps)`` returns l (with the certifier's method); s(x) ≥ 0 otherwise.

        Args:
            x: inputs ``[N, ...]`` in [0, 1].
            eps: ε > 0 (the box half-width).
            labels: int64 ``[N]`` (default: f(x)).
            per_class: return ``[N, K]`` with entry i = −LB_i (−inf at i = l).
            method: ``"ibp"``, ``"kw"`` or ``"kw_ibp"`` (a cheaper surrogate for ``"ibp"``:
                IBP's bound is never tighter than KW ∩ IBP, so −LB_IBP ≥ the exact score).

        Cost: one bound computation with gradient (KW ∩ IBP ≈ 100× a forward-backward pass of
        the network on MNIST, IBP ≈ 2.5×).
        """
        from .certifier import check_eps
        check_eps(eps)
        method = self.method if method is None else method
        if method not in BOUND_METHODS:
            raise ValueError(f"method must be one of {BOUND_METHODS}, got {method!r}")
        x = self._check(x)
        if labels is None:
            labels = self.predict(x)
        labels = self._check_labels(labels, x.shape[0], x.device)
        K = self._num_classes()
        out = []
        for s in range(0, x.shape[0], self.batch_size):
            lo, hi = input_box(x[s:s + self.batch_size], eps, self.clip)
            C = margin_spec(labels[s:s + self.batch_size], K, dtype=x.dtype)
            lb, _ = compute_bounds(self.model, lo, hi, C, method)
            out.append(lb)
        lb = torch.cat(out) if out else torch.zeros(0, K - 1, dtype=x.dtype, device=x.device)
        if not per_class:
            return -lb.min(dim=1).values
        full = torch.full((x.shape[0], K), -math.inf, dtype=lb.dtype, device=lb.device)
        keep = ~F.one_hot(labels, K).bool()
        return full.masked_scatter(keep, -lb)

    def certify(self, x: torch.Tensor, eps) -> torch.Tensor:
        """f(x) where every margin's lower bound over the ε-box is > 0, ``ABSTAIN`` elsewhere.

        ``eps`` ≥ 0 finite (ValueError otherwise); int64 ``[N]``.
        """
        x = self._check(x)
        _check_radius(eps, x)
        labels = self.predict(x)
        ok = (self.margin_lower_bounds(x, eps, labels) > 0).all(dim=1)
        return torch.where(ok, labels, torch.full_like(labels, ABSTAIN))

    def _verified(self, x, eps, labels, method) -> torch.Tensor:
        """bool ``[N]``: every margin's lower bound over the ε-box (``eps`` ``[N]``) is > 0."""
        saved, self.method = self.method, method
        try:
            return (self.margin_lower_bounds(x, eps, labels) > 0).all(1)
        finally:
            self.method = saved

    def _bisect(self, x, labels, method, lo, hi):
        """Shrink brackets (lo verified or 0, hi failed) to width ≤ tol; returns (lo, hi)."""
        active = (hi - lo) > self.tol
        while active.any():
            idx = active.nonzero(as_tuple=True)[0]
            mid = (lo[idx] + hi[idx]) / 2
            ok = self._verified(x[idx], mid, labels[idx], method)
            lo[idx] = torch.where(ok, mid, lo[idx])
            hi[idx] = torch.where(ok, hi[idx], mid)
            active = (hi - lo) > self.tol
        return lo, hi

    @torch.no_grad()
    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels f(x) and the largest ε verified by a batched search on ``[0, max_radius]``.

        Returns ``(labels, radius)`` ``[N]``: ``radius`` is an ε at which the check of
        :meth:`certify` succeeded (0 if none), so the network is robust on
        ``B_∞(x, radius) ∩ [0, 1]^d``, and the search found a failing ε at most ``tol`` above it
        (or ``radius = max_radius``).

        * ``"ibp"`` and ``"kw"``: bisection on [0, max_radius] (max_radius tested first).
        * ``"kw_ibp"``: the IBP radius first (cheap; an ε verified by IBP is verified by
          KW ∩ IBP, whose bounds are never looser), then steps ``tol, 2·tol, 4·tol, …`` above
          it with the tighter bound until one fails, then bisection. This keeps the costly
          bound near the boundary, where few neurons are unstable.
        """
        x = self._check(x)
        labels = self.predict(x)
        N = x.shape[0]
        dtype, device = x.dtype, x.device
        lo = torch.zeros(N, dtype=dtype, device=device)
        hi = torch.full((N,), self.max_radius, dtype=dtype, device=device)
        if N == 0:
            return labels, lo
        first = "ibp" if self.method == "kw_ibp" else self.method
        top = self._verified(x, hi, labels, first)
        lo = torch.where(top, hi, lo)
        lo, hi = self._bisect(x, labels, first, lo, hi)
        if self.method != "kw_ibp":
            return labels, lo
        step = torch.full((N,), self.tol, dtype=dtype, device=device)
        growing = lo < self.max_radius
        hi = torch.full((N,), self.max_radius, dtype=dtype, device=device)
        while growing.any():
            idx = growing.nonzero(as_tuple=True)[0]
            cand = torch.clamp(lo[idx] + step[idx], max=self.max_radius)
            ok = self._verified(x[idx], cand, labels[idx], "kw_ibp")
            lo[idx] = torch.where(ok, cand, lo[idx])
            hi[idx] = torch.where(ok, hi[idx], cand)
            step[idx] = step[idx] * 2
            growing[idx] = ok & (cand < self.max_radius)
        lo, hi = self._bisect(x, labels, "kw_ibp", lo, hi)
        return labels, lo


# --------------------------------------------------------------------------------------------
# Models and checkpoints
# --------------------------------------------------------------------------------------------

def mnist_small_net() -> nn.Sequential:
    """The small convolutional MNIST network of Wong & Kolter (2018).

    Conv(1→16, 4×4, stride 2, pad 1) → ReLU → Conv(16→32, 4×4, stride 2, pad 1) → ReLU →
    Flatten → Linear(1568→100) → ReLU → Linear(100→10).
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )


ARCHITECTURES = {"kw_small": mnist_small_net}


def load_checkpoint(meta: dict, state_dict: dict, device) -> LinfCertifier:
    """Build the :class:`LinfCertifier` of a committed ``"linf"`` checkpoint.

    ``meta`` needs ``"arch"`` (a key of :data:`ARCHITECTURES`) and may set ``"certifier"``
    (keyword arguments of :class:`LinfCertifier`, e.g. ``method``, ``clip``, ``tol``).
    """
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[arch]()
    model.load_state_dict(state_dict)
    model.to(device).eval()
    model.requires_grad_(False)
    kwargs = dict(meta.get("certifier", {}))
    if "input_shape" in kwargs:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    return LinfCertifier(model, **kwargs)


__all__ = ["BOUND_METHODS", "sequential_layers", "input_box", "margin_spec", "interval_bounds",
           "compute_bounds", "LinfCertifier", "mnist_small_net", "load_checkpoint", "ARCHITECTURES"]
