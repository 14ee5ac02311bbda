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
What is certified. The reference is the network in *exact real arithmetic* on its stored
weights (float32 values, exactly representable in float64). :class:`LinfCertifier` certifies x at
ε when, for the label j it predicts, a lower bound of every margin ``y_j − y_i`` of that exact
network over every *real* input of ``B_∞(x, ε) ∩ [0, 1]^d`` is > 0. The bounds are computed by
``compute_bounds(..., sound=True)`` (Appendix C's KW ∩ IBP bound, in float64, with every
rounding error bounded a priori), so no rounding can make a certificate claim more:

1. *Input box.* ``x`` is converted to float64 (exact for float32 and float64 inputs; nothing is
   rounded to the model's dtype) and ``x ∓ ε`` is rounded outward by one ulp
   (``input_box(..., outward=True)``): round to nearest errs by ≤ half an ulp, so the computed
   box contains the exact one. Clipping to [0, 1] is exact.
2. *Inner products.* A float64 inner product of length k (any summation order, FMA or not)
   satisfies ``|fl(Σ a_i b_i) − Σ a_i b_i| ≤ γ_k Σ|a_i b_i| + k·η`` (Higham 2002, eq. 3.5;
   γ_k = k·u/(1 − k·u), u = 2⁻⁵³, η = 2⁻¹⁰⁷⁴ covers underflow). Every matrix product, convolution
   and transposed convolution here is a set of such inner products (on CUDA the computation runs
   with cuDNN disabled, whose FFT/Winograd algorithms have no such bound; float64 is not affected
   by TF32). The code uses G(k) = 2(k + 4)u ≥ 1.5·γ_k, whose slack covers the rounding of
   computing the error terms themselves; k is bounded per layer by
   max(#inputs, #outputs, #weights) + 1.
3. *IBP step* (``_affine_ibp``). The box is re-centred on c = fl((l + u)/2) with radius
   r = ↑max(u − c, c − l) (↑, ↓: the next float up/down, which bounds one rounded operation), so
   [l, u] ⊆ [c − r, c + r]; then ``W x + b`` over it lies in
   ``[↓(↓(ỹ − ρ̃) − E), ↑(↑(ỹ + ρ̃) + E)]`` with ỹ = fl(W c + b), ρ̃ = fl(|W| r) and
   E = G(k)·(|W|(|c| + r) + |b|) + 2kη ≥ |ỹ − (W c + b)| + |ρ̃ − |W| r|. ReLU (a clamp) is exact.
4. *KW relaxation.* For computed bounds l < 0 < u the computed slope s̃ = fl(u/fl(u − l)) lies in
   [0, 1] (fl(u − l) ≥ u), so the lower line s̃·z ≤ relu(z) holds for every z; the upper line uses
   the smallest intercept valid for s̃, t̃ = ↑max(−s̃·l, (1 − s̃)·u) (relu(z) − s̃·z is convex, so
   its maximum on [l, u] is at an end). The relaxation is thus valid for the numbers actually
   used, not only for the exact u/(u − l).
5. *Backward pass* (``_backward``). Whatever coefficients Ã_i it computes, it keeps the invariant
   ``Ã_i·h_i + β_lo − e ≤ c·f ≤ Ã_i·h_i + β_hi + e`` for every layer input h_i of every x in the
   box: a step through an affine layer replaces Ã·(W h + b) by fl(Ã W)·h + fl(Ã·b), an error of at
   most γ_k·|Ã|·(|W| H + |b|) + kη·(ΣH + 1) ≤ G(k)·‖Ã‖₁·max(|W| H + |b|) + … where H ≥ |h_i| is
   the (sound) interval box of that layer's input; a ReLU step (fl(Ã ⊙ s̃), fl(Σ Ã⁻ t̃)) errs by at
   most G(n)·‖Ã‖₁·max(s̃ Z + t̃) + …, Z ≥ |z| from the neuron bounds; each addition to β adds
   ≤ 2u(|β_lo| + |β_hi|). The evaluation over the input box adds G(d + 1)·|Ã|·(|c| + r); the sum
   e (scaled by 1 + 2⁻³⁰ for its own additions) is subtracted and every final operation rounded
   outward. Folding the specification C into the last layer adds G(K + 1)·|C|(|W| H + |b|).
   Intermediate neuron bounds are computed the same way, so every l, u, H, Z above is sound.

The widening this costs is ~1e-12 to 1e-8 of the magnitudes involved (on a random linear network
with N(0, 1) weights, margins O(100), the sound KW bound is ~2e-8 below the exact minimum, which
the former float32 bound *exceeded* by up to 2.5e-5 relative). On ``mnist_linf_0.1`` (first 200
test images, ε = 0.1) the sound margin bounds lie 1.7e-10 to 1.3e-8 below the same bounds computed
in float64 without widening (KW ∩ IBP; IBP: 1.6e-10 to 2.6e-9), and they differ from the former
float32 bounds by at most 5.7e-5 (the float32 rounding that is gone) on all 10,000, far below the smallest |margin bound| at ε = 0.1 (1.15e-3): no certificate on the 10,000
test images changed (VRA 0.9394 KW ∩ IBP, 0.9385 IBP, before and after). Cost on the shared
2-core CPU, one thread (``tests/benchmarks/check_linf_soundness.py``): the KW ∩ IBP margin bounds
of 1,000 test images take 14.1 s against 7.0 s for the former float32 ones (2.0×; float64
transposed convolutions, 256-row chunks); IBP alone 7.9 s against 0.9 s on 10,000 images.

What is *not* certified. Predictions ``f(x)`` (:meth:`LinfCertifier.predict`) are the model's own
forward pass in its dtype (float32). A certificate proves that the exact network's label is j on
the whole box, hence also at x. The float32 forward pass at a point x' of the box differs from the
exact logits by its own rounding error, which the certificate does not bound. A priori (the
recursion e_{l+1} = |W_l| e_l + γ_k^{(32)}·(|W_l| H_l + |b_l|) with u = 2⁻²⁴, k the fan-in + 1,
H_l the interval magnitudes over the whole box, for kernels that form plain inner products)
it is ≤ 0.16 per logit and ≤ 0.30 on a margin for every box of the 10,000 test images at
ε = 0.1 (median 0.15 on the margins). That is a worst case over the box; measured at the
10,000 test images themselves, the float32 logits differ from a float64 forward pass by at most
6.3e-6 (median 3.5e-7). 9,357 of the 9,394 certified points have a certified margin bound above it:
there the float32 network, too, provably predicts j on the whole box; at the other 37 only the
exact network is certified. ``compute_bounds`` and ``interval_bounds`` with ``sound=False`` (their
default, used for training) compute in the inputs' dtype with round to nearest, without these
guarantees.

Specification
-------------
A specification matrix ``C`` ``[N, S, K]`` asks for bounds on ``C f(x)`` instead of ``f(x)``;
:func:`margin_spec` builds the rows ``e_j − e_i`` (i ≠ j) of the margins y_j − y_i. ``C`` is
folded into the last linear layer before any bound is computed, which is exact in real
arithmetic (its rounding is bounded with ``sound=True``) and tighter than bounding the logits
first.
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


# --------------------------------------------------------------------------------------------
# Rounding (sound=True): float64 with a-priori error bounds and outward rounding
# --------------------------------------------------------------------------------------------

SOUND_DTYPE = torch.float64
"""The dtype of sound bounds (:func:`compute_bounds` with ``sound=True``, :class:`LinfCertifier`)."""

_U = 2.0 ** -53      # unit roundoff u of float64, round to nearest
_ETA = 2.0 ** -1074  # smallest positive (subnormal) float64
_MAX_LEN = 2 ** 30   # longest inner product the constants below are valid for
_SLACK = 1.0 + 2.0 ** -30  # covers the rounding of ≤ 10⁷ additions of nonnegative error terms


def _gam(k: int) -> float:
    """G(k) = 2·(k + 4)·u, a float64 constant ≥ γ_k·(1 + 10⁻⁶) for k ≤ 2³⁰ (γ_k = k·u/(1 − k·u)).

    Every error term G(k)·Σ|a||b| below is itself computed in float64 by inner products of length
    ≤ 2³⁰ and one product; their rounding lowers it by a factor ≥ (1 − γ_{2³⁰})² (1 − u) >
    1 − 10⁻⁶, which the slack of G over γ_k (a factor ≥ 3/2 for k·u ≤ 2⁻²³) absorbs.
    """
    if k > _MAX_LEN:
        raise ValueError(f"an inner product of length {k} is too long for the rounding bound (max {_MAX_LEN})")
    return 2.0 * (k + 4) * _U


def _down(v: torch.Tensor) -> torch.Tensor:
    """The float64 just below ``v`` (≤ the exact value of the one rounded operation that gave ``v``).

    Round to nearest errs by at most half an ulp, so the neighbour toward −∞ of ``fl(a ∘ b)`` is
    ≤ ``a ∘ b``. Gradients pass unchanged (the step is a detached constant; ``v + (v⁻ − v)`` is
    exactly ``v⁻`` because neighbouring floats differ by an exact ulp). Infinite entries stay."""
    d = v.detach()
    step = torch.nextafter(d, torch.full_like(d, -math.inf)) - d
    step = torch.where(torch.isfinite(d), step, torch.zeros_like(d))
    return v + step if v.requires_grad else d + step


def _up(v: torch.Tensor) -> torch.Tensor:
    """The float64 just above ``v`` (≥ the exact value of the one rounded operation that gave ``v``)."""
    d = v.detach()
    step = torch.nextafter(d, torch.full_like(d, math.inf)) - d
    step = torch.where(torch.isfinite(d), step, torch.zeros_like(d))
    return v + step if v.requires_grad else d + step


def _inner_length(layer: nn.Module, in_shape: tuple, out_shape: tuple) -> int:
    """An upper bound on the length of every inner product a layer's forward, backward
    (transposed) and bias products form, plus one for the bias: max(#in, #out, #weights) + 1."""
    return max(math.prod(in_shape), math.prod(out_shape), layer.weight.numel()) + 1


def _params(layers: list[nn.Module], dtype) -> list:
    """``(W, b)`` of every affine layer in ``dtype`` (a differentiable cast; exact from float32 or
    float16 to float64), ``None`` for the others; a missing bias is ``None``."""
    out = []
    for layer in layers:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            b = None if layer.bias is None else layer.bias.to(dtype)
            out.append((layer.weight.to(dtype), b))
        else:
            out.append(None)
    return out


def _apply(layer: nn.Module, p, v: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """``W v + b`` of an affine layer with the parameters ``p`` (``|W| v + |b|`` with ``absolute``)."""
    W, b = p
    if absolute:
        W, b = W.abs(), (None if b is None else b.abs())
    if isinstance(layer, nn.Linear):
        return F.linear(v, W, b)
    return F.conv2d(v, W, b, layer.stride, layer.padding, layer.dilation, layer.groups)


class _ieee:
    """Context: on CUDA, convolutions without cuDNN (whose FFT/Winograd algorithms have no
    componentwise error bound; the native kernels form plain inner products). No-op on CPU,
    where float64 convolutions are im2col + GEMM."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        if self.cuda:
            self._flags = torch.backends.cudnn.flags(enabled=False)
            self._flags.__enter__()

    def __exit__(self, *exc):
        if self.cuda:
            self._flags.__exit__(*exc)


# --------------------------------------------------------------------------------------------
# Specification and interval steps
# --------------------------------------------------------------------------------------------

def _fold_spec(layers: list[nn.Module], C: torch.Tensor | None, dtype=None):
    """Split off the last linear layer and fold ``C`` into it.

    Returns ``(body, W, b, last)``: the layers before the last ``Linear``, the per-example weight
    ``[N, S, in]`` and bias ``[N, S]`` of ``C·(W x + b)`` (computed in ``dtype``, default the
    layer's), and the last layer's ``(W, b)`` in that dtype. Requires the model to end with a
    ``Linear`` layer.
    """
    last = layers[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(f"a specification matrix C needs a model ending with a Linear layer, got "
                         f"{type(last).__name__}")
    dtype = last.weight.dtype if dtype is None else dtype
    W = last.weight.to(dtype)
    b = last.bias
    b = torch.zeros(W.shape[0], dtype=dtype, device=W.device) if b is None else b.to(dtype)
    if C.shape[-1] != W.shape[0]:
        raise ValueError(f"C must have shape [N, S, {W.shape[0]}], got {tuple(C.shape)}")
    C = C.to(dtype)
    return layers[:-1], C @ W, C @ b, (W, b)


def _fold_error(C: torch.Tensor, Wb, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``[N, S]`` bound on ``|(C W − fl(C W))·h| + |C b − fl(C b)|`` for h in ``[lo, hi]``
    (``[N, in]``): G(K + 1)·|C|·(|W| H + |b|), H = max(|lo|, |hi|), plus underflow."""
    W, b = Wb
    with torch.no_grad():
        H = torch.maximum(lo.detach().abs(), hi.detach().abs())
        V = F.linear(H, W.detach().abs(), b.detach().abs())                  # [N, K]
        K = W.shape[0]
        err = _gam(K + 1) * torch.einsum("nsk,nk->ns", C.detach().to(W.dtype).abs(), V)
        tiny = 4 * (K + 1) * _ETA * (H.sum(1) + 1)
        return err + tiny[:, None]


def _affine_ibp(layer: nn.Module, lo: torch.Tensor, hi: torch.Tensor, p=None, sound: bool = False):
    """Interval image of ``[lo, hi]`` under an affine layer (exact for one layer in real arithmetic).

    With ``sound`` (``p`` the layer's parameters in the dtype of ``lo``) the interval encloses the
    exact image: the box is re-centred on c = fl((lo + hi)/2) with a radius r rounded up so that
    [lo, hi] ⊆ [c − r, c + r]; y = fl(W c + b) and ρ = fl(|W| r) err by at most
    G(k)·(|W|(|c| + r) + |b|) + k·η together; the bounds are y ∓ ρ ∓ that error, rounded outward.
    Returns ``(lo, hi, V)`` with ``V`` ≥ |W|·max(|lo|, |hi|) + |b| (detached; used by the KW error
    terms) when ``sound``, else ``(lo, hi)``.
    """
    if isinstance(layer, nn.Flatten):
        return (lo.flatten(1), hi.flatten(1)) + ((None,) if sound else ())
    if not sound:
        c, r = (hi + lo) / 2, (hi - lo) / 2
        if isinstance(layer, nn.Linear):
            c = F.linear(c, layer.weight, layer.bias)
            r = F.linear(r, layer.weight.abs())
        else:  # Conv2d
            c = layer(c)
            r = F.conv2d(r, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation, layer.groups)
        return c - r, c + r
    c = (hi + lo) / 2
    r = _up(torch.maximum(hi - c, c - lo))
    y = _apply(layer, p, c)
    rho = _apply(layer, (p[0], None), r, absolute=True)
    with torch.no_grad():
        V = _apply(layer, (p[0].detach(), None if p[1] is None else p[1].detach()),
                   c.detach().abs() + r.detach(), absolute=True)
        k = _inner_length(layer, lo.shape[1:], y.shape[1:])
        E = _gam(k) * V + 2 * k * _ETA
    return _down(_down(y - rho) - E), _up(_up(y + rho) + E), V


def _spec_ibp(W: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, fold_err=None):
    """Interval image of ``[lo, hi]`` ``[N, in]`` under per-example ``W [N, S, in]``, ``b [N, S]``.

    ``fold_err`` (sound mode) is the ``[N, S]`` error of the folded ``W, b`` (:func:`_fold_error`);
    the result then encloses the exact image, rounding of this step included."""
    if fold_err is None:
        c, r = (hi + lo) / 2, (hi - lo) / 2
        c = torch.einsum("nsi,ni->ns", W, c) + b
        r = torch.einsum("nsi,ni->ns", W.abs(), r)
        return c - r, c + r
    c = (hi + lo) / 2
    r = _up(torch.maximum(hi - c, c - lo))
    y = torch.einsum("nsi,ni->ns", W, c) + b
    rho = torch.einsum("nsi,ni->ns", W.abs(), r)
    with torch.no_grad():
        m = torch.einsum("nsi,ni->ns", W.detach().abs(), c.detach().abs() + r.detach()) + b.detach().abs()
        k = W.shape[-1] + 1
        E = _SLACK * (_gam(k) * m + 2 * k * _ETA + fold_err)
    return _down(_down(y - rho) - E), _up(_up(y + rho) + E)


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


def input_box(x: torch.Tensor, eps, clip: bool = True, outward: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ℓ∞ box ``[x − ε, x + ε]``, intersected with [0, 1] when ``clip``.

    Args:
        x: ``[N, ...]`` inputs.
        eps: ε ≥ 0, a scalar or one per example ``[N]`` (converted to the dtype of ``x``).
        outward: round ``x ∓ ε`` outward (one ulp), so that the box contains the exact one; used
            by the sound bounds (on float64 ``x``).

    Returns ``(lower, upper)``, each shaped like ``x``. Raises ``ValueError`` for a negative or
    non-finite ε.
    """
    e = _check_radius(eps, x)
    if e.dim() == 1:
        e = e.reshape(-1, *([1] * (x.dim() - 1)))
    lo, hi = x - e, x + e
    if outward:
        lo, hi = _down(lo), _up(hi)
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

def _check_box(lower: torch.Tensor, upper: torch.Tensor):
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must have the same shape, got {tuple(lower.shape)} and {tuple(upper.shape)}")
    if (lower > upper).any():
        raise ValueError("lower must be <= upper elementwise")


def interval_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor,
                    C: torch.Tensor | None = None, sound: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP bounds of ``f(x)`` (or ``C f(x)``) for every x with ``lower ≤ x ≤ upper``.

    Differentiable (used as the training loss of :mod:`degradation_lib.train_linf`).

    Args:
        model: sequential network (see :func:`sequential_layers`).
        lower, upper: ``[N, ...]`` input box.
        C: optional ``[N, S, K]`` specification matrix (folded into the last linear layer).
        sound: compute in float64 with every rounding error bounded, so that the bounds enclose
            the exact-arithmetic outputs (see "Floating-point rounding" in the module docstring);
            the result is then float64. Default: the dtype of the model, round to nearest.

    Returns ``(lb, ub)`` of shape ``[N, K]`` (or ``[N, S]``).
    """
    layers = sequential_layers(model)
    if sound:
        _check_box(lower, upper)
        return _sound_bounds(layers, lower, upper, C, "ibp", 0)
    W = b = None
    if C is not None:
        layers, W, b, _ = _fold_spec(layers, C)
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
    """KW relaxation of one ReLU on [l, u]: s·z ≤ relu(z) ≤ s·z + t (slope s ∈ [0, 1], intercept t)."""

    slope: torch.Tensor      # [N, *shape]
    intercept: torch.Tensor  # [N, *shape], ≥ 0, nonzero only for unstable neurons


def _relaxation(lo: torch.Tensor, hi: torch.Tensor, sound: bool = False) -> _Relax:
    """s = u/(u − l) and t = −s·l for an unstable neuron (l < 0 < u); s = 1 (l ≥ 0) or 0 (u ≤ 0)
    and t = 0 for a stable one. With ``sound`` the computed s̃ (∈ [0, 1], as fl(u − l) ≥ u) keeps
    the lower line s̃·z ≤ relu(z) (true for any slope in [0, 1]) and the intercept is the smallest
    valid for it, max(−s̃·l, (1 − s̃)·u) (relu(z) − s̃·z is convex, so its maximum on [l, u] is at
    an end), rounded up."""
    unstable = (lo < 0) & (hi > 0)
    denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
    slope = torch.where(unstable, hi / denom, (lo >= 0).to(lo.dtype))
    if sound:
        t = torch.maximum(_up(slope * (-lo)), _up(_up(1 - slope) * hi))
        intercept = torch.where(unstable, t, torch.zeros_like(lo))
    else:
        intercept = torch.where(unstable, -slope * lo, torch.zeros_like(lo))
    return _Relax(slope, intercept)


def _shapes(layers: list[nn.Module], in_shape: tuple, device) -> list[tuple]:
    """Per-example input shape of every layer, and the output shape at the end."""
    shapes = [tuple(in_shape)]
    params = [p for layer in layers for p in layer.parameters()]
    dtype = params[0].dtype if params else torch.get_default_dtype()
    z = torch.zeros((1, *in_shape), device=device, dtype=dtype)
    with torch.no_grad():
        for layer in layers:
            z = layer(z)
            shapes.append(tuple(z.shape[1:]))
    return shapes


@dataclass
class _Net:
    """The body of the network as the backward pass needs it.

    ``params[i]``: ``(W, b)`` of affine layer i in the compute dtype. In sound mode
    ``mag[i]`` ``[N]`` is the largest entry of the magnitudes that the step through layer i
    multiplies by its coefficients (|W_i|·H_i + |b_i| for an affine layer, H_i ≥ |input of
    layer i|; s̃·Z + t̃ for a ReLU, Z ≥ |its input|), ``length[i]`` the inner-product length of
    :func:`_inner_length` (the number of neurons for a ReLU), and ``tiny[i]`` ``[N]`` the
    step's underflow term."""

    layers: list
    shapes: list
    params: list
    relax: list
    sound: bool = False
    mag: list | None = None
    length: list | None = None
    tiny: list | None = None


def _backward(net: _Net, k: int, A, bias_lo, bias_hi, rows, x_lo, x_hi, err=None):
    """Substitute ``A·z_k`` (``z_k`` the output of ``layers[:k]``) back to the input.

    Args:
        net: the body (:class:`_Net`); layers ``0 .. k−1`` are used.
        A: ``[M, S, *out_shape]`` coefficients; row m belongs to example ``rows[m]``.
        bias_lo, bias_hi: ``[M, S]`` constants accumulated so far.
        x_lo, x_hi: ``[N, *in_shape]`` input box.
        err: sound mode only, ``[M, S]`` error carried in (e.g. of the folded specification).

    Returns ``(lb, ub)`` ``[M, S]``: bounds of ``A·z_k + bias`` over the relaxed network.

    Sound mode (every relaxation valid for the computed slopes and intercepts): the invariant
    ``Ã_i·h_i + β_lo − e ≤ objective ≤ Ã_i·h_i + β_hi + e`` holds for the computed coefficients
    Ã_i of every layer input h_i, where each step adds to e the rounding of its products:
    ``fl(A W) − A W`` and ``fl(A·b) − A·b`` are ≤ γ_k |A||W| and γ_k |A||b| entrywise, so their
    effect on the objective is ≤ γ_k·|A|·(|W| H + |b|) ≤ γ_k·‖A‖₁·max(|W| H + |b|) (H ≥ |h|;
    similarly for the ReLU's ``fl(A ⊙ s̃)`` and ``fl(Σ A⁻ t̃)`` with s̃·Z + t̃); the bias sums add
    ≤ 2u·(|β_lo| + |β_hi|); the final
    evaluation over the (outward) box adds G(d + 1)·|Ã|·(|c| + r) and is rounded outward.
    """
    layers, shapes, relax, sound = net.layers, net.shapes, net.relax, net.sound
    M, S = A.shape[:2]
    if sound and err is None:
        err = torch.zeros(M, S, dtype=A.dtype, device=A.device)
    for i in range(k - 1, -1, -1):
        layer = layers[i]
        if sound and not isinstance(layer, nn.Flatten):
            with torch.no_grad():   # Σ_j |A_j| V_j ≤ ‖A‖₁ · max_j V_j (one pass over A)
                step = torch.linalg.vector_norm(A.detach().flatten(2), 1, dim=-1) * net.mag[i][rows].unsqueeze(1)
                err = err + _gam(net.length[i]) * step + net.tiny[i][rows].unsqueeze(1)
        if isinstance(layer, nn.ReLU):
            r = relax[i]
            t = r.intercept[rows].unsqueeze(1)                               # [M, 1, *shape]
            dims = tuple(range(2, A.dim()))
            bias_lo = bias_lo + (A.clamp(max=0) * t).sum(dim=dims)
            bias_hi = bias_hi + (A.clamp(min=0) * t).sum(dim=dims)
            A = A * r.slope[rows].unsqueeze(1)
        elif isinstance(layer, nn.Flatten):
            A = A.reshape(M, S, *shapes[i])
            continue
        elif isinstance(layer, nn.Linear):
            W, b = net.params[i]
            if b is not None:
                bb = A @ b
                bias_lo, bias_hi = bias_lo + bb, bias_hi + bb
            A = A @ W
        else:  # Conv2d
            W, b = net.params[i]
            out_shape = A.shape[2:]
            if b is not None:
                bb = torch.einsum("mschw,c->ms", A, b)
                bias_lo, bias_hi = bias_lo + bb, bias_hi + bb
            in_shape = shapes[i]
            kk = W.shape[2:]
            out_pad = []
            for d in range(2):
                natural = ((out_shape[1 + d] - 1) * layer.stride[d] - 2 * layer.padding[d]
                           + layer.dilation[d] * (kk[d] - 1) + 1)
                out_pad.append(in_shape[1 + d] - natural)
            A = F.conv_transpose2d(A.reshape(M * S, *out_shape), W, None, layer.stride,
                                   layer.padding, tuple(out_pad), layer.groups, layer.dilation)
            A = A.reshape(M, S, *in_shape)
        if sound:
            with torch.no_grad():
                err = err + 2 * _U * (bias_lo.detach().abs() + bias_hi.detach().abs())
    A = A.flatten(2)                                                         # [M, S, d]
    lo_, hi_ = x_lo.flatten(1)[rows], x_hi.flatten(1)[rows]
    c = (hi_ + lo_) / 2                                                      # [M, d]
    rad = (hi_ - lo_) / 2 if not sound else _up(torch.maximum(hi_ - c, c - lo_))
    centre = torch.einsum("msd,md->ms", A, c)
    spread = torch.einsum("msd,md->ms", A.abs(), rad)
    if not sound:
        return centre - spread + bias_lo, centre + spread + bias_hi
    with torch.no_grad():
        d = A.shape[-1]
        m = torch.einsum("msd,md->ms", A.detach().abs(), c.detach().abs() + rad.detach())
        err = _SLACK * (err + _gam(d + 1) * m + 4 * (d + 1) * _ETA * (1 + (c.detach().abs() + rad.detach()).sum(1))[:, None])
    lb = _down(_down(_down(centre - spread) + bias_lo) - err)
    ub = _up(_up(_up(centre + spread) + bias_hi) + err)
    return lb, ub


def _neuron_bounds_backward(net: _Net, k, x_lo, x_hi, select, chunk):
    """KW bounds of the selected neurons of ``z_k`` (the input of ReLU layer k).

    ``select`` is a bool ``[N, n_k]`` mask; returns ``(lb, ub)`` ``[N, n_k]`` (±inf where not
    selected). Rows are processed ``chunk`` (example, neuron) pairs at a time.
    """
    N = x_lo.shape[0]
    shape = net.shapes[k]
    n_k = math.prod(shape)
    dtype, device = x_lo.dtype, x_lo.device
    lb = torch.full((N, n_k), -math.inf, dtype=dtype, device=device)
    ub = torch.full((N, n_k), math.inf, dtype=dtype, device=device)
    ex, neuron = select.nonzero(as_tuple=True)
    for start in range(0, ex.numel(), chunk):
        e, j = ex[start:start + chunk], neuron[start:start + chunk]
        A = F.one_hot(j, n_k).to(dtype).reshape(e.numel(), 1, *shape)
        zeros = torch.zeros(e.numel(), 1, dtype=dtype, device=device)
        l, u = _backward(net, k, A, zeros, zeros, e, x_lo, x_hi)
        lb[e, j], ub[e, j] = l[:, 0], u[:, 0]
    return lb, ub


def compute_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor,
                   C: torch.Tensor | None = None, method: str = "kw_ibp",
                   chunk: int | None = None, sound: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of ``f(x)`` (or ``C f(x)``) over the box ``lower ≤ x ≤ upper``.

    Args:
        model: sequential network of ``Linear``, ``Conv2d``, ``ReLU``, ``Flatten``.
        lower, upper: ``[N, ...]`` input box (see :func:`input_box`).
        C: optional ``[N, S, K]`` specification matrix, e.g. :func:`margin_spec`.
        method: ``"ibp"``, ``"kw"`` (Wong–Kolter dual bound, every intermediate bound by the
            dual) or ``"kw_ibp"`` (both intersected; never looser than IBP). See the module
            docstring.
        chunk: how many (example, neuron) rows one backward pass for an intermediate bound
            takes at a time (memory and speed knob; results do not depend on it). Default: 2048,
            or 256 with ``sound`` (float64 rows are twice as large; on the CPU, blocks under
            glibc's 32 MB mmap threshold are reused instead of page-faulted in on every
            operation, which made 2048 ~2.5× slower on the committed model).
        sound: compute in float64 and bound every rounding error (module docstring,
            "Floating-point rounding"): then ``lb ≤ C f(x) ≤ ub`` holds for f in *exact*
            arithmetic on the stored weights, for every real x in the box; the result is
            float64. This is what :class:`LinfCertifier` uses. Default (False): the dtype of the
            inputs, round to nearest, bounds of the exact network only up to that rounding.

    Returns ``(lb, ub)`` ``[N, K]`` (``[N, S]`` with C) with ``lb ≤ C f(x) ≤ ub`` for every x in
    the box. Gradients flow through all methods if the caller enables them (the rounding-error
    terms of ``sound`` are detached constants).
    """
    if method not in BOUND_METHODS:
        raise ValueError(f"method must be one of {BOUND_METHODS}, got {method!r}")
    _check_box(lower, upper)
    if chunk is None:
        chunk = 256 if sound else 2048
    if sound:
        return _sound_bounds(sequential_layers(model), lower, upper, C, method, chunk)
    if method == "ibp":
        return interval_bounds(model, lower, upper, C)
    layers = sequential_layers(model)
    N = lower.shape[0]
    C = _identity_spec(layers, C, N, lower)
    body, Wc, bc, _ = _fold_spec(layers, C)
    shapes = _shapes(body, tuple(lower.shape[1:]), lower.device)
    net = _Net(body, shapes, _params(body, lower.dtype), [None] * len(body))
    lo, hi = _kw_forward(net, lower, upper, method, chunk)
    S = Wc.shape[1]
    A = Wc.reshape(N, S, *shapes[-1])
    rows = torch.arange(N, device=lower.device)
    lb, ub = _backward(net, len(body), A, bc.clone(), bc.clone(), rows, lower, upper)
    if method == "kw_ibp":
        il, iu = _spec_ibp(Wc, bc, lo.flatten(1), hi.flatten(1))
        lb, ub = torch.maximum(lb, il), torch.minimum(ub, iu)
    return lb, ub


def _identity_spec(layers, C, N, like):
    if C is not None:
        return C
    last = layers[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(f"bounds need a model ending with a Linear layer, got {type(last).__name__}")
    K = last.out_features
    return torch.eye(K, dtype=like.dtype, device=like.device).expand(N, K, K)


def _kw_forward(net: _Net, lower, upper, method, chunk):
    """Fill ``net.relax`` (and, in sound mode, the error magnitudes) layer by layer; returns the
    interval box of the body's output. ``method`` ``"ibp"`` skips the KW intermediate bounds."""
    body, shapes, sound = net.layers, net.shapes, net.sound
    N = lower.shape[0]
    use_ibp = method == "kw_ibp"
    lo, hi = lower, upper                      # interval box of the current layer's input
    seen_relu = False
    affine_since_relu = 0
    for i, layer in enumerate(body):
        if isinstance(layer, nn.ReLU):
            shape = shapes[i]
            if method == "ibp" or (not seen_relu and affine_since_relu <= 1):
                # IBP, or one affine layer on a box: the interval bounds are exact
                l, u = lo, hi
            else:
                select = torch.ones(N, math.prod(shape), dtype=torch.bool, device=lower.device)
                if use_ibp:
                    select = ((lo < 0) & (hi > 0)).flatten(1)
                kl, ku = _neuron_bounds_backward(net, i, lower, upper, select, chunk)
                kl, ku = kl.reshape(N, *shape), ku.reshape(N, *shape)
                l, u = (torch.maximum(lo, kl), torch.minimum(hi, ku)) if use_ibp else (kl, ku)
            if method != "ibp":
                net.relax[i] = _relaxation(l, u, sound)
                if sound:
                    with torch.no_grad():
                        r = net.relax[i]
                        Z = torch.maximum(l.detach().abs(), u.detach().abs())
                        net.mag[i] = (r.slope.detach() * Z + r.intercept.detach()).flatten(1).amax(1)
                        net.length[i] = math.prod(shape) + 1
                        net.tiny[i] = 4 * net.length[i] * _ETA * (Z.flatten(1).sum(1) + 1)
            lo, hi = l.clamp_min(0), u.clamp_min(0)
            seen_relu = True
            affine_since_relu = 0
        elif isinstance(layer, nn.Flatten):
            lo, hi = lo.flatten(1), hi.flatten(1)
        else:
            affine_since_relu += 1
            if not sound:
                lo, hi = _affine_ibp(layer, lo, hi)
                continue
            H = torch.maximum(lo.detach().abs(), hi.detach().abs())
            lo, hi, V = _affine_ibp(layer, lo, hi, net.params[i], sound=True)
            with torch.no_grad():
                net.mag[i] = V.flatten(1).amax(1)  # ≥ |W| H + |b| (|c| + r ≥ H), max per example
                net.length[i] = _inner_length(layer, shapes[i], shapes[i + 1])
                net.tiny[i] = 4 * net.length[i] * _ETA * (H.flatten(1).sum(1) + 1)
    return lo, hi


def _sound_bounds(layers, lower, upper, C, method, chunk):
    """:func:`compute_bounds` with ``sound=True`` (float64; see the module docstring)."""
    dtype = SOUND_DTYPE
    lower, upper = lower.to(dtype), upper.to(dtype)
    N = lower.shape[0]
    C = _identity_spec(layers, C, N, lower).to(dtype)
    with _ieee(lower.device):
        body, Wc, bc, last = _fold_spec(layers, C, dtype)
        shapes = _shapes(body, tuple(lower.shape[1:]), lower.device)
        n = len(body)
        net = _Net(body, shapes, _params(body, dtype), [None] * n, True, [None] * n, [0] * n, [None] * n)
        lo, hi = _kw_forward(net, lower, upper, method, chunk)
        lo, hi = lo.flatten(1), hi.flatten(1)
        fold_err = _fold_error(C, last, lo, hi)
        il, iu = _spec_ibp(Wc, bc, lo, hi, fold_err)
        if method == "ibp":
            return il, iu
        S = Wc.shape[1]
        A = Wc.reshape(N, S, *shapes[-1])
        rows = torch.arange(N, device=lower.device)
        lb, ub = _backward(net, n, A, bc.clone(), bc.clone(), rows, lower, upper, err=fold_err.clone())
        if method == "kw_ibp":
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

    The bounds are the sound ones (``compute_bounds(..., sound=True)``, float64): a certificate
    holds for the network in exact arithmetic on every real point of the box, whatever the
    rounding (module docstring, "Floating-point rounding"); bounds, scores and radii are float64.
    The predicted label is the model's own forward pass in its dtype.

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

    def _check(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x`` validated, on the model's device, in ``dtype`` (default: the model's)."""
        x = check_input(x, shape=self.input_shape, unit_range=self.clip)
        model_dtype, device = self._dtype_device()
        return x.to(device=device, dtype=model_dtype if dtype is None else dtype)

    def _lower_bounds(self, x64: torch.Tensor, eps, labels: torch.Tensor, method: str) -> torch.Tensor:
        """Sound lower bounds ``[N, K − 1]`` (float64) of the margins over the outward-rounded box
        around the float64 inputs ``x64``, in batches; differentiable if ``x64`` requires grad."""
        eps_t = _check_radius(eps, x64)
        K = self._num_classes()
        out = []
        for s in range(0, x64.shape[0], self.batch_size):
            es = eps_t[s:s + self.batch_size] if eps_t.dim() > 0 else eps_t
            lo, hi = input_box(x64[s:s + self.batch_size], es, self.clip, outward=True)
            C = margin_spec(labels[s:s + self.batch_size].to(x64.device), K, dtype=x64.dtype)
            lb, _ = compute_bounds(self.model, lo, hi, C, method, sound=True)
            out.append(lb)
        if not out:
            return torch.zeros(0, K - 1, dtype=x64.dtype, device=x64.device)
        return torch.cat(out)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = argmax of the logits, int64 ``[N]``."""
        x = self._check(x)
        return torch.cat([self.model(x[s:s + self.batch_size]).argmax(1)
                          for s in range(0, x.shape[0], self.batch_size)]) if x.shape[0] else \
            torch.zeros(0, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def margin_lower_bounds(self, x: torch.Tensor, eps, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Sound lower bounds of ``y_j − y_i`` over the ε-box, float64 ``[N, K − 1]`` (i ≠ j in
        increasing order).

        ``labels`` j defaults to f(x); ``eps`` is a scalar or one per example ``[N]``. The box is
        built around ``x`` in float64 (no rounding of ``x`` to the model's dtype) and rounded
        outward; the bounds hold for the network in exact arithmetic (module docstring).
        """
        if labels is None:
            labels = self.predict(x)
        x64 = self._check(x, SOUND_DTYPE)
        return self._lower_bounds(x64, eps, labels, self.method)

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
        ``certify(x, eps)`` returns l (with the certifier's method); s(x) ≥ 0 otherwise: the
        score is computed by the same sound float64 bound as the check (same batches, same
        operations), its rounding-error terms being detached constants (gradients are those of
        the bound without them; they lower it by ≤ 1.3e-8 on ``mnist_linf_0.1``). float64 ``[N]``.

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
        x = self._check(x, SOUND_DTYPE)        # as in certify: no rounding to the model's dtype
        if labels is None:
            labels = self.predict(x)
        labels = self._check_labels(labels, x.shape[0], x.device)
        K = self._num_classes()
        lb = self._lower_bounds(x, eps, labels, method)
        if not per_class:
            return -lb.min(dim=1).values
        full = torch.full((x.shape[0], K), -math.inf, dtype=lb.dtype, device=lb.device)
        keep = ~F.one_hot(labels, K).bool()
        return full.masked_scatter(keep, -lb)

    @torch.no_grad()
    def certify(self, x: torch.Tensor, eps) -> torch.Tensor:
        """f(x) where every margin's lower bound over the ε-box is > 0, ``ABSTAIN`` elsewhere.

        ``eps`` ≥ 0 finite (ValueError otherwise); int64 ``[N]``.
        """
        x = self._check(x, SOUND_DTYPE)
        _check_radius(eps, x)
        labels = self.predict(x)
        ok = (self._lower_bounds(x, eps, labels, self.method) > 0).all(dim=1)
        return torch.where(ok, labels, torch.full_like(labels, ABSTAIN))

    def _verified(self, x, eps, labels, method) -> torch.Tensor:
        """bool ``[N]``: every margin's lower bound over the ε-box (``eps`` ``[N]``) is > 0."""
        return (self._lower_bounds(x, eps, labels, method) > 0).all(1)

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

        Returns ``(labels, radius)`` ``[N]`` (radius float64, exactly the ε that was checked):
        ``radius`` is an ε at which the check of
        :meth:`certify` succeeded (0 if none), so the network is robust on
        ``B_∞(x, radius) ∩ [0, 1]^d``, and the search found a failing ε at most ``tol`` above it
        (or ``radius = max_radius``).

        * ``"ibp"`` and ``"kw"``: bisection on [0, max_radius] (max_radius tested first).
        * ``"kw_ibp"``: the IBP radius first (cheap; an ε verified by IBP is verified by
          KW ∩ IBP, whose bounds are never looser), then steps ``tol, 2·tol, 4·tol, …`` above
          it with the tighter bound until one fails, then bisection. This keeps the costly
          bound near the boundary, where few neurons are unstable.
        """
        x = self._check(x, SOUND_DTYPE)
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
