"""Globally-robust (GloRo) nets in PyTorch: Lipschitz certification for the ℓ2 norm.

GloRo nets (Leino, Wang and Fredrikson, ICML 2021) are the paper's main deterministic defense
(Sections 2 and 5, Table 1). For logits y = W h(x) + b, where h is the network below the output
layer and ``W`` has rows w_i,

* every activation is :class:`MinMax` (1-Lipschitz), so h is Lipschitz in ℓ2 with constant at
  most L_sub = ∏_l ‖A_l‖₂, the product of the spectral norms of the linear layers below the
  output (dense or strided, padded convolutions);
* the margin y_j − y_i is then Lipschitz with constant K_ij = L_sub · ‖w_j − w_i‖₂;
* the ⊥ logit is y_⊥ = max_{i≠j} (y_i + ε·K_ij) with j the top class, and the prediction is
  certified at ε exactly when y_j > y_⊥; equivalently when the certified radius
  r(x) = min_{i≠j} (y_j − y_i)/K_ij exceeds ε.

The top class j is masked *by index*, never by value, so a class tied with the top one is kept:
a tie has margin 0, radius 0 and is never certified (the TensorFlow reference masks by value
and can certify ties).

Spectral norms have two uses and two methods:

* **training** uses power iteration with persistent iterates (buffers saved in the
  ``state_dict``), a few iterations per step: fast, differentiable, and an *estimate* from below;
* **certification** uses proven upper bounds (:meth:`LipschitzConv2d.converge`,
  :meth:`LipschitzLinear.converge`, :mod:`degradation_lib.spectral`): the explicit float64
  operator, its Gram matrix on the smaller side, and a Cholesky test that proves
  λ_max ≤ μ with every rounding error accounted for. The bound exceeds ‖A‖₂ by ~1e-9 relative.
  Convolutions too large for an explicit Gram matrix (side > ``spectral.MAX_EXPLICIT_GRAM`` =
  8192, e.g. CIFAR-10 feature maps) get the circulant bound of
  :func:`degradation_lib.spectral.conv2d_circulant_bound` instead (proven; ≤ 1.1e-2 above on random CIFAR-10 layers).
  An estimate is not enough: with nearly equal top singular values power iteration stalls below
  ‖A‖₂ (by 4e-4 relative on a committed 4C3F layer), and an L_sub that is too small certifies
  points that are not robust (issue 13).

:class:`GloroCertifier` caches the bounds and recomputes them when any weight changes (each
parameter's in-place version counter and storage); :meth:`GloroNet.converge` also reuses bounds
stored with a checkpoint (json key ``"sound_norms"``) when the SHA-256 of the weights matches.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
import torch.nn.functional as F

from . import spectral
from .certifier import ABSTAIN, Certifier, check_eps, check_input

# ---------------------------------------------------------------------------------------------
# Activation
# ---------------------------------------------------------------------------------------------


def minmax(x: torch.Tensor) -> torch.Tensor:
    """MinMax (GroupSort with groups of 2) along dimension 1.

    Channel k is paired with channel k + C/2; the output holds the pairwise minima in the first
    half and the maxima in the second. A permutation of each sorted pair, so it is 1-Lipschitz in
    ℓ2 and gradient-norm preserving. ``x``: ``[N, C, ...]`` with C even.
    """
    if x.shape[1] % 2:
        raise ValueError(f"minmax needs an even number of channels, got {x.shape[1]}")
    return _MinMaxFn.apply(x)


def _route(swap: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """``cat([where(swap, b, a), where(swap, a, b)], dim=1)`` with ``a, b = whole.chunk(2, 1)``:
    MinMax's output from its input, or its input gradient from the output gradient.

    Written into one tensor that keeps ``whole``'s memory format (channels_last too): half the
    time of ``torch.cat``, which copies and may change the layout. ``out=`` is not differentiable,
    so where autograd records (double backward, ``create_graph=True``) the plain expression is used.
    """
    a, b = whole.chunk(2, dim=1)
    if torch.is_grad_enabled() and whole.requires_grad:
        return torch.cat([torch.where(swap, b, a), torch.where(swap, a, b)], dim=1)
    out = torch.empty_like(whole)
    lo, hi = out.chunk(2, dim=1)
    torch.where(swap, b, a, out=lo)
    torch.where(swap, a, b, out=hi)
    return out


class _MinMaxFn(torch.autograd.Function):
    """MinMax with a cheap backward: one comparison mask routes the gradients.

    (``torch.minimum``/``torch.maximum`` backward costs several comparisons and masked fills
    per call, a third of a training step on a CPU.)
    """

    @staticmethod
    def forward(ctx, x):
        a, b = x.chunk(2, dim=1)
        swap = a > b
        ctx.save_for_backward(swap)
        return _route(swap, x)

    @staticmethod
    def backward(ctx, grad):
        (swap,) = ctx.saved_tensors
        return _route(swap, grad)


class MinMax(nn.Module):
    """Module form of :func:`minmax`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minmax(x)


# ---------------------------------------------------------------------------------------------
# Linear layers with power iteration
# ---------------------------------------------------------------------------------------------


def _normalize(u: torch.Tensor) -> torch.Tensor:
    return u / torch.linalg.vector_norm(u).clamp_min(torch.finfo(u.dtype).tiny)


class PowerIterationMixin:
    """Spectral norm ‖A‖₂ of a linear map A by power iteration on AᵀA.

    The iterate ``u`` (a unit vector in the input space of A) is a buffer, so it persists across
    calls and checkpoints. Subclasses define :meth:`op` (A u) and :meth:`op_t` (Aᵀ v).
    """

    u: torch.Tensor

    def op(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def op_t(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        """``steps`` iterations u ← AᵀA u / ‖AᵀA u‖ on the persistent iterate (no gradient)."""
        u = self.u
        for _ in range(int(steps)):
            u = _normalize(self.op_t(self.op(u)))
        self.u.copy_(u)

    def spectral_norm(self) -> torch.Tensor:
        """σ = ‖A u‖₂ for the current unit iterate u: a lower bound on ‖A‖₂ that converges to it.

        Differentiable with respect to the weights (u is treated as a constant), as in training.
        """
        return torch.linalg.vector_norm(self.op(self.u.detach()))

    @torch.no_grad()
    def converge(self, tol: float = 1e-9, max_steps: int = 1000, check_every: int = 100) -> float:
        """Power iteration to convergence, in float64; returns the *estimate* of ‖A‖₂, keeps the iterate.

        Iterates on float64 copies of the weights (float32 stalls at ~1e-6 relative) until σ
        changes by less than ``tol`` (relative) over ``check_every`` steps. Power iteration
        approaches ‖A‖₂ from below and, with nearly equal top singular values, stalls below it:
        this is an estimate, never a bound. :class:`LipschitzLinear` and :class:`LipschitzConv2d`
        override ``converge`` with a proven upper bound (:mod:`degradation_lib.spectral`);
        ``PowerIterationMixin.converge(layer)`` still runs this estimate.
        """
        w = self.weight
        u = self.u.double()
        op = lambda z: self._op_with(w.double(), z)
        op_t = lambda z: self._op_t_with(w.double(), z)
        prev = torch.linalg.vector_norm(op(u)).item()
        done = 0
        while done < max_steps:
            for _ in range(check_every):
                u = _normalize(op_t(op(u)))
            done += check_every
            cur = torch.linalg.vector_norm(op(u)).item()
            if abs(cur - prev) <= tol * max(abs(cur), 1e-300):
                break
            prev = cur
        self.u.copy_(u.to(self.u.dtype))
        self._sigma_converged = cur
        return cur

    def converged_norm(self) -> float:
        """‖A‖₂ from the last :meth:`converge` (float64 value)."""
        return self._sigma_converged


def _set_iterate(u: torch.Tensor, vector) -> None:
    """Copy a unit vector (numpy, float64) into the iterate buffer ``u`` (its shape, dtype, device)."""
    u.copy_(torch.as_tensor(vector, dtype=torch.float64).reshape(u.shape).to(device=u.device, dtype=u.dtype))


class LipschitzLinear(nn.Linear, PowerIterationMixin):
    """``nn.Linear`` with a persistent power-iteration iterate ``u`` ``[in_features]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, generator=None):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("u", _normalize(torch.randn(in_features, generator=generator)))

    def op(self, u):
        return F.linear(u, self.weight)

    def op_t(self, v):
        return F.linear(v, self.weight.t())

    @staticmethod
    def _op_with(w, u):
        return F.linear(u, w)

    @staticmethod
    def _op_t_with(w, v):
        return F.linear(v, w.t())

    @torch.no_grad()
    def converge(self, tol: float = 1e-9, max_steps: int = 1000, check_every: int = 100) -> float:
        """A proven upper bound on ‖W‖₂ (float64, within ~1e-9 relative of it), computed on the CPU.

        See :func:`degradation_lib.spectral.spectral_norm_upper`. The iterate ``u`` is set to the
        top right singular vector. ``tol``, ``max_steps`` and ``check_every`` are not used (kept
        for the signature of :meth:`PowerIterationMixin.converge`).
        """
        res = spectral.dense_spectral_bound(self.weight, v0=self.u.detach().cpu().double().numpy())
        _set_iterate(self.u, res.right_vector)
        self._sigma_converged = res.bound
        self.bound_method = res.method
        return res.bound


class LipschitzConv2d(nn.Conv2d, PowerIterationMixin):
    """``nn.Conv2d`` (any stride, zero padding) with a persistent iterate ``u`` ``[1, C, H, W]``.

    A u is ``conv2d`` without bias; Aᵀ v is ``conv_transpose2d`` with the output padding that
    restores the input size H × W (needed when the stride does not divide H + 2p − k).

    Args:
        input_shape: ``(C_in, H, W)`` of the layer's input (the operator depends on it).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, input_shape: tuple[int, int, int] | None = None, generator=None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        if input_shape is None or input_shape[0] != in_channels:
            raise ValueError(f"input_shape must be (C_in={in_channels}, H, W), got {input_shape}")
        self.input_shape = tuple(int(s) for s in input_shape)
        _, h, w = self.input_shape
        k, s, p = kernel_size, stride, padding
        self.output_hw = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        self.output_padding_t = tuple(n - ((m - 1) * s - 2 * p + k) for n, m in zip((h, w), self.output_hw))
        self.register_buffer("u", _normalize(torch.randn(1, *self.input_shape, generator=generator)))

    def op(self, u):
        return F.conv2d(u, self.weight, None, self.stride, self.padding)

    def op_t(self, v):
        return F.conv_transpose2d(v, self.weight, None, self.stride, self.padding,
                                  output_padding=self.output_padding_t)

    def _op_with(self, w, u):
        return F.conv2d(u, w, None, self.stride, self.padding)

    @torch.no_grad()
    def converge(self, tol: float = 1e-9, max_steps: int = 1000, check_every: int = 100,
                 max_gram_size: int | None = None) -> float:
        """A proven upper bound on ‖A‖₂ (float64), computed on the CPU.

        :func:`degradation_lib.spectral.conv2d_spectral_bound`: while the side n of the
        operator's Gram matrix is ≤ ``max_gram_size`` (default
        :data:`degradation_lib.spectral.MAX_EXPLICIT_GRAM` = 8192; every MNIST layer), A is built
        explicitly, its Gram matrix on the smaller side is formed in float64 and a Cholesky test
        proves the bound, rounding included (within ~1e-8 relative of ‖A‖₂); the iterate ``u``
        warm-starts the eigen-solver and is set to the top right singular vector. Larger layers
        (CIFAR-10 feature maps) get the circulant bound (≤ 1.1e-2 relative above, measured; ``u`` is
        left as it is). The route taken is recorded in ``bound_method``. ``tol``, ``max_steps``
        and ``check_every`` are not used (kept for the signature of
        :meth:`PowerIterationMixin.converge`, which runs the power-iteration estimate).
        """
        res = spectral.conv2d_spectral_bound(self.weight, self.input_shape, self.stride[0], self.padding[0],
                                             v0=self.u.detach().cpu().double().numpy(), max_gram_size=max_gram_size)
        if res.right_vector is not None:
            _set_iterate(self.u, res.right_vector)
        self._sigma_converged = res.bound
        self.bound_method = res.method
        return res.bound

    def _op_t_with(self, w, v):
        return F.conv_transpose2d(v, w, None, self.stride, self.padding, output_padding=self.output_padding_t)

    def output_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, *self.output_hw)


# ---------------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------------

# ("conv", out_channels, kernel, stride, padding) or ("dense", units). Padding reproduces
# TensorFlow's 'same' for these sizes: k=3,s=1 -> 1; k=4,s=2 on an even size -> 1 each side.
ARCHITECTURES: dict[str, dict] = {
    "2C2F": dict(input_shape=(1, 28, 28),
                 layers=[("conv", 16, 4, 2, 1), ("conv", 32, 4, 2, 1), ("dense", 100)]),
    "4C3F": dict(input_shape=(1, 28, 28),
                 layers=[("conv", 32, 3, 1, 1), ("conv", 32, 4, 2, 1), ("conv", 64, 3, 1, 1),
                         ("conv", 64, 4, 2, 1), ("dense", 512), ("dense", 512)]),
    "6C2F": dict(input_shape=(3, 32, 32),
                 layers=[("conv", 32, 3, 1, 1), ("conv", 32, 3, 1, 1), ("conv", 32, 4, 2, 1),
                         ("conv", 64, 3, 1, 1), ("conv", 64, 3, 1, 1), ("conv", 64, 4, 2, 1),
                         ("dense", 512)]),
}
"""GloRo architectures of Leino et al. (2021), each followed by a dense output layer."""


class GloroNet(nn.Module):
    """A GloRo network: Lipschitz layers with MinMax activations and a dense output layer.

    Args:
        arch: ``"2C2F"``, ``"4C3F"``, ``"6C2F"`` (see :data:`ARCHITECTURES`) or a dict with
            ``input_shape`` and ``layers`` in the same format.
        num_classes: C, the number of class logits.
        input_shape: overrides the architecture's ``(C, H, W)``.
        seed: seeds the orthogonal initialisation and the initial iterates.

    ``forward(x)`` returns the class logits ``[N, C]`` (no ⊥ logit; see :func:`gloro_logits`).
    """

    def __init__(self, arch: str | dict = "2C2F", num_classes: int = 10,
                 input_shape: tuple[int, int, int] | None = None, seed: int = 0):
        super().__init__()
        if isinstance(arch, str):
            if arch not in ARCHITECTURES:
                raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)} or a dict, got {arch!r}")
            spec = ARCHITECTURES[arch]
        else:
            spec = dict(arch)
        self.arch = arch if isinstance(arch, str) else "custom"
        self.input_shape = tuple(input_shape or spec["input_shape"])
        gen = torch.Generator().manual_seed(int(seed))
        layers = []
        shape: tuple = self.input_shape
        for item in spec["layers"]:
            if item[0] == "conv":
                _, c_out, k, s, p = item
                layer = LipschitzConv2d(shape[0], c_out, k, s, p, input_shape=shape, generator=gen)
                shape = layer.output_shape()
            elif item[0] == "dense":
                d_in = int(math.prod(shape))
                layer = LipschitzLinear(d_in, item[1], generator=gen)
                shape = (item[1],)
            else:
                raise ValueError(f"unknown layer spec {item!r}")
            layers.append(layer)
        self.body = nn.ModuleList(layers)
        self.head = nn.Linear(int(math.prod(shape)), num_classes)
        self.activation = MinMax()
        self.num_classes = num_classes
        with torch.no_grad():
            for layer in [*self.body, self.head]:
                w = layer.weight
                flat = torch.empty(w.shape[0], int(math.prod(w.shape[1:])))
                nn.init.orthogonal_(flat, generator=gen)
                w.copy_(flat.view_as(w))
                layer.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h(x): the penultimate representation ``[N, d]``, Lipschitz with constant L_sub."""
        for layer in self.body:
            if isinstance(layer, nn.Linear) and x.dim() > 2:
                x = x.flatten(1)
            x = self.activation(layer(x))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def power_iteration(self, steps: int = 1) -> None:
        """``steps`` power iterations on every layer below the output (no gradient)."""
        for layer in self.body:
            layer.power_iteration(steps)

    @torch.no_grad()
    def refresh_iterates(self, tol: float = 1e-9, max_steps: int = 1000) -> list[float]:
        """Power iteration to convergence (float64) on every layer's iterate; returns the *estimates*.

        For training (fast, keeps the iterates near the top singular vectors); estimates from
        below, never used for certificates (those use :meth:`converge`).
        """
        return [PowerIterationMixin.converge(layer, tol=tol, max_steps=max_steps) for layer in self.body]

    sound_norms_cache: dict | None = None
    """Proven norm bounds stored with a checkpoint: ``{"weights_sha256", "norms", ...}`` (see
    :meth:`converge`); set by :func:`load_checkpoint` from the json's ``"sound_norms"``."""

    def converge(self, tol: float = 1e-9, max_steps: int = 1000, max_gram_size: int | None = None) -> list[float]:
        """Proven upper bounds on ‖A_l‖₂ for every layer below the output (float64), in order.

        Each is :meth:`LipschitzConv2d.converge` (with ``max_gram_size``, the size above which a
        convolution gets the circulant bound) / :meth:`LipschitzLinear.converge` (seconds for a
        4C3F net on a CPU), unless :attr:`sound_norms_cache` holds bounds for weights with the
        same :meth:`weights_sha256`, which are then returned (and the iterates left as they are).
        ``tol`` and ``max_steps`` are not used (kept for callers of the former power iteration).
        """
        cache = self.sound_norms_cache
        if cache and cache.get("weights_sha256") == self.weights_sha256() and len(cache["norms"]) == len(self.body):
            norms = [float(v) for v in cache["norms"]]
            for layer, v in zip(self.body, norms):
                layer._sigma_converged = v
            return norms
        return [layer.converge(max_gram_size=max_gram_size) if isinstance(layer, LipschitzConv2d) else layer.converge()
                for layer in self.body]

    def sound_norms_record(self) -> dict:
        """A json-able record of proven norm bounds of the current weights, for the checkpoint json.

        ``{"weights_sha256": ..., "norms": [...], "method": ..., "seconds": ...}`` (plus
        ``"layer_methods"`` when some layer used the circulant bound); passing it to
        :attr:`sound_norms_cache` makes :meth:`converge` skip the computation for these weights.
        """
        import time
        t0 = time.perf_counter()
        norms = [layer.converge() for layer in self.body]
        record = {"weights_sha256": self.weights_sha256(), "norms": norms,
                  "method": "degradation_lib.spectral.spectral_norm_upper (explicit float64 operator, "
                            "Gram on the smaller side, Cholesky test with rounding bounds)",
                  "seconds": round(time.perf_counter() - t0, 2)}
        methods = [layer.bound_method for layer in self.body]
        if any(m != "explicit" for m in methods):   # e.g. CIFAR-10 layers above spectral.MAX_EXPLICIT_GRAM
            record["layer_methods"] = methods
        return record

    def weights_sha256(self) -> str:
        """SHA-256 of the body's weights (as float64, CPU) and layer geometry: the key of the norm cache.

        The weights' values, not their dtype or device, determine the operators, so a model moved
        to CUDA or loaded from float16 hashes the same as long as the values are equal.
        """
        import hashlib
        h = hashlib.sha256()
        for layer in self.body:
            geometry = (type(layer).__name__, tuple(layer.weight.shape),
                        getattr(layer, "input_shape", None), getattr(layer, "stride", None),
                        getattr(layer, "padding", None))
            h.update(repr(geometry).encode())
            h.update(layer.weight.detach().cpu().double().contiguous().numpy().tobytes())
        return h.hexdigest()

    def lipschitz_sub(self) -> torch.Tensor:
        """L_sub = ∏_l σ_l with the current iterates (differentiable in the weights)."""
        out = None
        for layer in self.body:
            s = layer.spectral_norm()
            out = s if out is None else out * s
        return out

    def K_matrix(self, L_sub: torch.Tensor | None = None) -> torch.Tensor:
        """K ``[C, C]`` with K_ij = L_sub · ‖w_i − w_j‖₂ (diagonal 0), differentiable."""
        if L_sub is None:
            L_sub = self.lipschitz_sub()
        w = self.head.weight
        sq = (w[:, None, :] - w[None, :, :]).pow(2).sum(-1)
        eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        return L_sub * (sq + eye).sqrt() * (1 - eye)  # +eye: no NaN gradient on the diagonal

    def weights_key(self) -> tuple:
        """Changes whenever a parameter is modified in place, replaced, or moved."""
        return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in self.parameters())


def _top_mask(j: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(j, num_classes).bool()


def _bottom_logit(y: torch.Tensor, K: torch.Tensor, eps: float, j: torch.Tensor) -> torch.Tensor:
    """y_⊥ = max_{i≠j} (y_i + ε·K_ij) ``[N]`` around the classes ``j`` ``[N]`` (masked by index)."""
    return (y + eps * K[j]).masked_fill(_top_mask(j, y.shape[1]), -math.inf).max(dim=1).values


def gloro_logits(y: torch.Tensor, K: torch.Tensor, eps: float) -> torch.Tensor:
    """Class logits with the ⊥ logit appended: ``[N, C+1]``.

    y_⊥ = max_{i≠j} (y_i + ε·K_ij), j = argmax y (the lowest index among ties). The top class is
    masked by index, so a class tied with j is kept and y_⊥ ≥ y_j: ties are never certified.
    Differentiable in ``y`` and ``K`` (used by the training loss).
    """
    j = y.argmax(dim=1)
    return torch.cat([y, _bottom_logit(y, K, eps, j)[:, None]], dim=1)


def certified_radius_from_logits(y: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(j, r)``: top class j (index) and r = min_{i≠j} (y_j − y_i)/K_ij, clamped at 0.

    A class with K_ij = 0 (identical output row) never overtakes j when y_j > y_i (ratio +inf)
    and is tied everywhere otherwise (radius 0).
    """
    j = y.argmax(dim=1)
    top = _top_mask(j, y.shape[1])
    margin = y.gather(1, j[:, None]) - y
    Kj = K[j]
    ratio = torch.where(Kj > 0, margin / Kj.clamp_min(torch.finfo(y.dtype).tiny),
                        torch.where(margin > 0, torch.full_like(margin, math.inf), torch.zeros_like(margin)))
    radius = ratio.masked_fill(top, math.inf).min(dim=1).values.clamp_min(0)
    return j, radius


def gloro_loss(y: torch.Tensor, K: torch.Tensor, labels: torch.Tensor, eps: float, lam: float) -> torch.Tensor:
    """TRADES-style GloRo loss.

    CE(y, label) + λ · KL(p ‖ q), with p = softmax(y) padded with 0 for ⊥ and q = softmax of the
    logits with ⊥ appended. Because q restricted to the classes is p·(1 − q_⊥), the KL term
    equals −log(1 − q_⊥): it pushes y_⊥ below the class logits (certification at ε).
    """
    aug = gloro_logits(y, K, eps)
    ce = F.cross_entropy(y, labels)
    logp = F.log_softmax(y, dim=1)
    logq = F.log_softmax(aug, dim=1)[:, :-1]
    kl = (logp.exp() * (logp - logq)).sum(dim=1).mean()
    return ce + lam * kl


# ---------------------------------------------------------------------------------------------
# The certifier
# ---------------------------------------------------------------------------------------------


DEVICE_ROUNDING_SLACK = 2.0 ** 10
"""Factor on the float64 unit roundoff in the rounding bound of a certifying forward pass that
runs on an accelerator (any device but the CPU); see :class:`GloroCertifier`, "Accelerators"."""


def _device_type(device) -> str:
    """``torch.device(device).type``; the one place the certifier asks which device it is on (tests
    substitute it to run the CUDA branch on a CPU)."""
    return torch.device(device).type


def certification_forward_dtype(model_dtype: torch.dtype, device, forward_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype of the convolutions in the certifying forward pass.

    ``forward_dtype`` if given; otherwise the model's dtype on the CPU and ``torch.float64`` on
    any other device (CUDA: see :class:`GloroCertifier`, "Accelerators").
    """
    if forward_dtype is not None:
        return forward_dtype
    return model_dtype if _device_type(device) == "cpu" else torch.float64


GEMM_CHUNK_BYTES = 2 ** 28
"""At most this many bytes of unfolded input per matrix product of :func:`conv2d_gemm`."""


def conv2d_gemm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding) -> torch.Tensor:
    """``F.conv2d(h, weight, bias, stride, padding)`` (zero padding, no dilation or groups) as an
    unfold (im2col, exact copies) and one batched matrix product per chunk of images.

    Every output entry is one inner product of length C_in·k_h·k_w plus the bias, summed in
    some order by the GEMM: the γ_k error bound of :class:`GloroCertifier` holds as for a
    direct convolution. The certifier uses it off the CPU, where cuDNN is off and PyTorch's own
    convolution (``slow_conv2d``) loops over the images of the batch, one im2col and one GEMM
    each.

    Args:
        h: ``[N, C_in, H, W]``; weight: ``[C_out, C_in, k_h, k_w]``; bias: ``[C_out]`` or None
            (same dtype and device as ``h``).
        stride, padding: ints or pairs, as for ``F.conv2d``.

    Returns ``[N, C_out, H_out, W_out]``.
    """
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    n, _, height, width = h.shape
    c_out, c_in, kh, kw = weight.shape
    oh = (height + 2 * padding[0] - kh) // stride[0] + 1
    ow = (width + 2 * padding[1] - kw) // stride[1] + 1
    wmat = weight.reshape(c_out, c_in * kh * kw)
    per_image = c_in * kh * kw * oh * ow * h.element_size()
    chunk = max(1, GEMM_CHUNK_BYTES // max(per_image, 1))
    out = []
    for s in range(0, n, chunk):
        cols = F.unfold(h[s:s + chunk], (kh, kw), padding=padding, stride=stride)   # [n', C_in·kh·kw, L]
        z = torch.matmul(wmat, cols)                                                  # [n', C_out, L]
        if bias is not None:
            z = z + bias[:, None]
        out.append(z.reshape(-1, c_out, oh, ow))
    return torch.cat(out) if len(out) > 1 else out[0]


def _certifying_conv(h: torch.Tensor, layer: nn.Conv2d, dtype: torch.dtype, device) -> torch.Tensor:
    """A convolution of the certifying forward pass in ``dtype``: ``F.conv2d`` on the CPU,
    :func:`conv2d_gemm` on any other device."""
    w = layer.weight.to(dtype)
    b = None if layer.bias is None else layer.bias.to(dtype)
    if _device_type(device) == "cpu":
        return F.conv2d(h, w, b, layer.stride, layer.padding)
    return conv2d_gemm(h, w, b, layer.stride, layer.padding)


def _gamma_on(k: int, dtype: torch.dtype, device) -> float:
    """γ_k = k·u/(1 − k·u) for the unit roundoff u of ``dtype`` on ``device`` (:func:`rounding_unit`)."""
    ku = k * rounding_unit(dtype, device)
    return ku / (1 - ku)


def _norm_up(t: torch.Tensor, device) -> torch.Tensor:
    """‖t‖₂ per row (float64), rounded up: a float norm of n terms has relative error ≤ γ_{n+2}."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1).double() * (1 + _gamma_on(t[0].numel() + 2, t.dtype, device))


def _error_step(e: torch.Tensor, c: dict, h: torch.Tensor, device) -> torch.Tensor:
    """One layer of the forward-error recursion of :class:`GloroCertifier`: the bound ``e`` [N] on
    the error of the layer's input grows to σ·e + γ_k·(α·‖h‖ + β) (constants ``c`` of the layer)."""
    return c["sigma"] * e + _gamma_on(c["k"], h.dtype, device) * (c["alpha"] * _norm_up(h, device) + c["beta"])


ABS_NORM_STEPS = 100
"""Power-iteration steps of :func:`abs_operator_norm_upper` (the bound is proven after any number)."""


@torch.no_grad()
def abs_operator_norm_upper(mv, rmv, v0: torch.Tensor, k_row: int, k_col: int, steps: int = ABS_NORM_STEPS) -> float:
    """A proven upper bound on ‖|A|‖₂ for an entrywise non-negative operator |A| (float64, CPU).

    Collatz–Wielandt: M = |A|ᵀ|A| is symmetric and non-negative, so for every v > 0 (entrywise)
    ρ(M) = ‖|A|‖₂² ≤ max_i (Mv)_i / v_i (ρ(M) ≤ ‖D⁻¹MD‖_∞ with D = diag(v)). v is the power
    iterate of M after ``steps`` steps from ``v0`` > 0, which tends to M's Perron vector, where
    the bound is attained. Rounding: |A|v and |A|ᵀ(|A|v) are sums of at most ``k_row`` resp.
    ``k_col`` non-negative products, so the computed û ≥ (1 − γ_{k_row})(1 − γ_{k_col})·Mv
    entrywise, and one more division by v_i costs a factor (1 − u); the bound is divided by
    these factors, and its own ≤ 5 roundings (≤ 2.5u after the square root) are covered by a
    factor 1 + 8u. Returns ``inf`` when an entry of v vanished (the bound needs v > 0).

    Args:
        mv, rmv: v ↦ |A|v and z ↦ |A|ᵀz on float64 tensors (batch dimension 1).
        v0: the positive start ``[1, ...]`` (float64), e.g. all ones.
        k_row, k_col: the number of terms of one entry of |A|v and of |A|ᵀz.
    """
    v = v0 / v0.norm()
    for _ in range(steps):
        u = rmv(mv(v))
        v = u / u.norm()
    if not bool((v > 0).all()):
        return math.inf
    q = (rmv(mv(v)) / v).max().item()
    rho = q / ((1 - spectral.U64) * (1 - spectral.gamma(k_row)) * (1 - spectral.gamma(k_col)))
    # the three lines above and the square root add ≤ 5 roundings (relative 5u before the root)
    return math.sqrt(rho) * (1 + 8 * spectral.U64)


def rounding_unit(dtype: torch.dtype, device) -> float:
    """The unit roundoff the forward-error bound uses for ``dtype`` on ``device``: u = eps/2, times
    :data:`DEVICE_ROUNDING_SLACK` for float64 off the CPU."""
    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float64 and _device_type(device) != "cpu":
        u *= DEVICE_ROUNDING_SLACK
    return u


_FP32_BACKENDS = ("cuda.matmul", "cudnn.conv", "mkldnn.matmul", "mkldnn.conv")


def _backend(name: str):
    obj = torch.backends
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def fp32_state(device) -> dict:
    """The settings that decide how float32 matmuls and convolutions are computed on ``device``.

    ``{"matmul_precision", "cublas_tf32", "cudnn_enabled", "<backend>": fp32_precision, ...}``;
    ``cublas_tf32`` is ``"inconsistent"`` where PyTorch refuses to say (legacy and new TF32 APIs
    mixed: cuBLAS calls would then raise).
    """
    state = {}
    try:
        state["matmul_precision"] = torch.get_float32_matmul_precision()
    except RuntimeError:
        state["matmul_precision"] = "inconsistent"
    try:
        state["cublas_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:
        state["cublas_tf32"] = "inconsistent"
    state["cudnn_enabled"] = bool(torch.backends.cudnn.enabled)
    for name in _FP32_BACKENDS:
        b = _backend(name)
        state[name] = getattr(b, "fp32_precision", None)
    return state


def _check_ieee(device) -> None:
    """Raise ``RuntimeError`` unless float32 matmuls and convolutions on ``device`` are IEEE:
    cuBLAS without TF32, ``"highest"`` matmul precision, oneDNN in ``"ieee"`` mode, and on CUDA
    cuDNN disabled."""
    st = fp32_state(device)
    bad = []
    if st["matmul_precision"] != "highest":
        bad.append(f"float32 matmul precision {st['matmul_precision']!r}")
    if st["cublas_tf32"] is not False:
        bad.append(f"cuBLAS TF32 {st['cublas_tf32']!r}")
    for name in ("mkldnn.matmul", "mkldnn.conv"):
        if st[name] not in (None, "ieee"):
            bad.append(f"{name} precision {st[name]!r}")
    if _device_type(device) == "cuda" and st["cudnn_enabled"]:
        bad.append("cuDNN enabled")
    if bad:
        raise RuntimeError("the certifying forward pass needs IEEE float32 arithmetic, but: " + "; ".join(bad))


@contextlib.contextmanager
def _ieee_fp32(device: torch.device):
    """Full IEEE float32 for matmuls and convolutions inside the block (no TF32 or bf16 shortcuts);
    on CUDA also without cuDNN, whose Winograd/FFT algorithms have no entrywise error bound.

    Both PyTorch APIs are set, consistently: the legacy ``torch.set_float32_matmul_precision``
    ("highest") and the per-backend ``fp32_precision`` ("ieee"). Setting only the new one after a
    caller's ``set_float32_matmul_precision("high")`` leaves PyTorch in a mixed state in which
    every cuBLAS float32 call raises. The settings in force are checked on entry
    (:func:`_check_ieee`), and all global settings are restored on exit.
    """
    try:
        saved_precision = torch.get_float32_matmul_precision()
    except RuntimeError:
        saved_precision = None
    backends = [_backend(name) for name in _FP32_BACKENDS]
    saved = [getattr(b, "fp32_precision", None) for b in backends]
    saved_cudnn = torch.backends.cudnn.enabled
    try:
        torch.set_float32_matmul_precision("highest")
        for b, v in zip(backends, saved):
            if v is not None:
                b.fp32_precision = "ieee"
        if _device_type(device) == "cuda":
            torch.backends.cudnn.enabled = False
        _check_ieee(device)
        yield
    finally:
        torch.backends.cudnn.enabled = saved_cudnn
        if saved_precision is not None:
            torch.set_float32_matmul_precision(saved_precision)
        for b, v in zip(backends, saved):
            if v is not None:
                b.fp32_precision = v


class GloroCertifier(Certifier):
    """The GloRo (ε, ℓ2) certifier of a :class:`GloroNet` (implements :class:`Certifier`).

    Args:
        model: the network (float32 or float64 weights).
        tol: kept for compatibility (the former power-iteration tolerance); not used.
        unit_range: require inputs in [0, 1].
        forward_dtype: dtype of the convolutions in the certifying forward pass; None (default)
            uses the model's on the CPU and float64 on any other device (see "Accelerators"
            below, :func:`certification_forward_dtype`). ``torch.float64`` makes the rounding
            term negligible (radii tighter by up to ~1e-2 on the 4C3F nets) at ~3.5× the cost of
            a float32 pass on a CPU.

    Soundness (issue 13). The certified radius is a lower bound on the true one of the network
    evaluated in exact arithmetic, on either device:

    * **Constants.** Each ‖A_l‖₂ is a proven upper bound (:meth:`GloroNet.converge`); L_sub and
      K_ij = L_sub·‖w_j − w_i‖₂ are formed in float64 and rounded upward. They are computed on
      first use and cached; the cache is invalidated when any weight changes.
    * **Rounding of the forward pass.** The logits ỹ come from the network's convolutions in
      float32 (or float64) and its dense layers in float64, with IEEE arithmetic forced (no TF32; on CUDA without cuDNN, whose Winograd/FFT algorithms
      have no such bound). A floating-point inner product of length k (bias included) has error
      ≤ γ_k·|A||h| entrywise (γ_k = k·u/(1 − k·u), u the unit roundoff; Higham eq. 3.5), so a
      layer adds at most ρ_l = γ_{k_l}(‖|A_l|‖₂‖h̃_{l−1}‖₂ + ‖b_l‖₂) in ℓ2, MinMax is exact and
      1-Lipschitz, and the body's output error obeys e_l ≤ ‖A_l‖₂·e_{l−1} + ρ_l (‖|A_l|‖₂ is
      bounded by the smaller of the Schur test √(‖|A_l|‖₁‖|A_l|‖_∞) and a Collatz–Wielandt
      bound at the Perron vector of |A_l|ᵀ|A_l|, :func:`abs_operator_norm_upper`). For the head, |(ỹ_j − ỹ_i) − (y_j − y_i)| ≤
      ‖w_j − w_i‖₂·e_L + γ_{d+1}(‖w_j‖₂‖h̃‖₂ + |b_j| + ‖w_i‖₂‖h̃‖₂ + |b_i|). The margins are
      computed in float64 and lowered by this bound before dividing by K (float64).
      Costs one forward pass plus one norm per layer; see :meth:`certified_radius`.
    * **Input.** An input in another dtype than the model's is rounded to it; the distance is
      subtracted from the radius.
    * **Accelerators (CUDA).** The bound above assumes every product and sum of the forward pass
      is one IEEE operation in the forward dtype (any order, fused multiply-adds included). On
      CUDA, PyTorch may instead use TF32 for float32 matmuls and convolutions (10-bit mantissa:
      errors ~1e3 × float32's) and cuDNN may pick FFT or Winograd convolutions, whose error is
      not bounded by γ_k|A||h|. Hence, on any device but the CPU:

      1. the convolutions run in **float64** by default (:func:`certification_forward_dtype`);
         no TF32 exists for float64, and the dense layers and head are float64 anyway;
      2. the convolutions are computed as im2col and one batched cuBLAS GEMM per chunk of images
         (:func:`conv2d_gemm`: a sum of products, any order; PyTorch's own CUDA convolution
         without cuDNN, ``slow_conv2d``, does the same one image at a time);
         inside the forward pass (:func:`_ieee_fp32`) cuDNN is disabled, cuBLAS TF32
         is off through both PyTorch APIs, and the settings actually in force are read back and
         checked before the pass (:func:`_check_ieee`; a mixed legacy/new TF32 state raises);
      3. the float64 unit roundoff in the bound is inflated by :data:`DEVICE_ROUNDING_SLACK` =
         2¹⁰ (u = 2⁻⁴³; :func:`rounding_unit`).

      With 1 and 2 the bound holds as proven for the CPU (it needs only IEEE float64 operations
      in some order). 3 is a safety margin, not part of the proof: should a future PyTorch or
      driver ignore the flags and use an FFT or Winograd float64 convolution, its normwise error
      (≲ c·log₂(n)·u·‖A‖·‖h‖ with c ≈ 10 for FFT, Higham §24.1; small multiples of the direct
      error for Winograd tiles ≤ 6, Barabasz et al. 2020) is below the per-layer term
      γ_k(α‖h‖ + ‖b‖) ≥ k·2¹⁰·u·‖A‖₂·‖h‖ (α ≥ ‖|A|‖₂ ≥ ‖A‖₂, k ≥ 10 here) by a factor ≳ 50.
      Its cost on the radius is ≤ 1e-7 absolute (median 4e-8 relative) on the committed MNIST
      nets, against 1e-3 for the float32 rounding bound. An explicit ``forward_dtype=torch.float32``
      on CUDA is honoured and relies on 2 alone (float32 IEEE, checked as above).
      Consequence: on CUDA the default radii are *tighter* than the CPU's float32 ones (the
      float32 rounding term, ≤ 1.4e-3 on mnist_0.3, is gone), so metrics measured on CUDA can
      exceed the stored CPU ones, e.g. VRA of mnist_1.58 at ε = 1.58: 0.5830 (CPU, float32)
      vs 0.5863 (float64 forward); mnist_0.3 at 0.3: 0.9374 vs 0.9376. Pass
      ``forward_dtype=torch.float32`` to reproduce the CPU's numbers up to rounding.
      ``tests/benchmarks/check_gloro_soundness.py --device cuda`` checks both dtypes on a GPU
      against the CPU float64 reference, also with TF32 and cuDNN benchmark switched on globally.
    """

    norm = 2.0

    def __init__(self, model: GloroNet, tol: float = 1e-9, unit_range: bool = True,
                 forward_dtype: torch.dtype | None = None):
        if not isinstance(model, GloroNet):
            raise ValueError(f"model must be a GloroNet, got {type(model).__name__}")
        if forward_dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"forward_dtype must be None, torch.float32 or torch.float64, got {forward_dtype!r}")
        self.forward_dtype = forward_dtype
        self.model = model
        self.tol = float(tol)
        self.unit_range = unit_range
        self._cache_key = None
        self._L_sub = None
        self._K = None
        self._rounding = None
        self._dense64: dict = {}

    # -- Lipschitz constants -----------------------------------------------------------------
    @torch.no_grad()
    def lipschitz_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_sub, K)``: proven upper bounds, float64, on the model's device (cached).

        L_sub ≥ ∏_l ‖A_l‖₂ (scalar tensor) and K ``[C, C]`` with K_ij ≥ L_sub·‖w_j − w_i‖₂; both
        rounded upward from the proven per-layer bounds of :meth:`GloroNet.converge`.
        """
        key = self.model.weights_key()
        if key != self._cache_key:
            norms = self.model.converge()
            w = self.model.head.weight.detach().double()
            n_layers, d = len(norms), w.shape[1]
            L_sub = math.prod(norms) * (1 + spectral.gamma(n_layers + 2))
            D = (w[:, None, :] - w[None, :, :]).pow(2).sum(-1).sqrt() * (1 + spectral.gamma(2 * d + 8))
            self._L_sub = torch.tensor(L_sub, dtype=torch.float64, device=w.device)
            self._K = (L_sub * D) * (1 + 4 * spectral.U64)
            self._rounding = self._rounding_constants(norms)
            self._dense64 = self._float64_dense_weights()
            self._cache_key = self.model.weights_key()  # converge() does not touch parameters
        return self._L_sub, self._K

    @torch.no_grad()
    def _float64_dense_weights(self) -> dict:
        """``{id(layer): (weight, bias)}`` in float64 on the model's device for the dense layers of
        the body and the head, which the certifying forward pass runs in float64: cast once per
        weight version (with the constants) instead of at every call (≈ 1 ms a call on a 4C3F)."""
        out = {}
        for layer in [*self.model.body, self.model.head]:
            if isinstance(layer, nn.Linear):
                out[id(layer)] = (layer.weight.detach().double(),
                                  None if layer.bias is None else layer.bias.detach().double())
        return out

    def _linear64(self, layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        """``layer`` applied to the float64 ``h`` with the cached float64 weights (bit for bit
        ``F.linear(h, layer.weight.double(), layer.bias.double())``)."""
        w, b = self._dense64[id(layer)]
        return F.linear(h, w, b)

    @torch.no_grad()
    def _rounding_constants(self, norms: list[float]) -> dict:
        """Per-layer constants of the forward-error bound (see the class docstring), float64.

        α_l ≥ ‖|A_l|‖₂ is the smaller of the Schur test √(‖|A_l|‖₁‖|A_l|‖_∞) and the
        Collatz–Wielandt bound of :func:`abs_operator_norm_upper`.
        """
        layers = []
        for layer, sigma in zip(self.model.body, norms):
            w = layer.weight.detach().double().cpu()
            b = layer.bias.detach().double().cpu() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
            wa = w.abs()
            if isinstance(layer, LipschitzConv2d):
                ones_in = torch.ones(1, *layer.input_shape, dtype=torch.float64)
                rows = F.conv2d(ones_in, wa, None, layer.stride, layer.padding)               # |A| 1
                ones_out = torch.ones(1, *layer.output_shape(), dtype=torch.float64)
                cols = layer._op_t_with(wa, ones_out)                                          # |A|ᵀ 1
                k = w[0].numel() + 1
                beta = b.norm() * math.sqrt(layer.output_hw[0] * layer.output_hw[1])
                cw = abs_operator_norm_upper(lambda v: F.conv2d(v, wa, None, layer.stride, layer.padding),
                                             lambda z: layer._op_t_with(wa, z), ones_in,
                                             k_row=w[0].numel(), k_col=w.shape[0] * w[0, 0].numel())
            else:
                rows, cols = wa.sum(1), wa.sum(0)
                k = w.shape[1] + 1
                beta = b.norm()
                cw = abs_operator_norm_upper(lambda v: v @ wa.T, lambda z: z @ wa,
                                             torch.ones(1, w.shape[1], dtype=torch.float64),
                                             k_row=w.shape[1], k_col=w.shape[0])
            schur = math.sqrt(rows.max().item() * cols.max().item())
            alpha = min(schur, cw)
            layers.append(dict(sigma=float(sigma), alpha=alpha * (1 + 1e-10), k=k, beta=beta.item() * (1 + 1e-10)))
        head = self.model.head
        w, b = head.weight.detach().double(), head.bias.detach().double()
        return dict(layers=layers, k_head=w.shape[1] + 1, w_norm=w.norm(dim=1) * (1 + 1e-10),
                    b_abs=b.abs())

    @property
    def K(self) -> torch.Tensor:
        """K_ij ≥ L_sub·‖w_j − w_i‖₂ ``[C, C]`` (float64, proven upper bound)."""
        return self.lipschitz_constants()[1]

    @property
    def lipschitz_constant(self) -> float:
        """L_sub, a proven upper bound on the ℓ2 Lipschitz constant of the network below the output."""
        return float(self.lipschitz_constants()[0])

    # -- interface ---------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> torch.Tensor:
        return check_input(x, ndim=4, shape=self.model.input_shape, unit_range=self.unit_range)

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        return x.to(device=p.device, dtype=p.dtype)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self._to_model(x))

    def logits(self, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """Class logits ``[N, C]``; with ``eps`` the ⊥ logit is appended (``[N, C+1]``).

        The ⊥ logit uses K in the logits' dtype (for attacks and plots); certificates come from
        :meth:`certify` / :meth:`certified_radius`, which bound the rounding.
        """
        x = self._check(x)
        y = self._logits(x)
        if eps is None:
            return y
        return gloro_logits(y, self.K.to(y.dtype), check_eps(eps))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = argmax of the class logits, int64 ``[N]`` (never ``ABSTAIN``)."""
        return self._logits(self._check(x)).argmax(dim=1)

    @torch.no_grad()
    def _forward_with_error(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, e, h_norm)``: logits ``[N, C]`` (float64), a bound ``[N]`` (float64) on the ℓ2 error
        of the computed penultimate features, and their norm ``[N]`` (float64, rounded up).

        Convolutions run in the model's dtype, dense layers and the head in float64 (a small
        share of the cost; it removes their rounding, the largest term of the bound in float32).
        """
        self.lipschitz_constants()
        model, consts = self.model, self._rounding
        p = next(model.parameters())
        if p.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the model must be float32 or float64 to certify, got {p.dtype}")
        cdt = certification_forward_dtype(p.dtype, p.device, self.forward_dtype)
        h = x.to(device=p.device, dtype=cdt)
        e = torch.zeros(h.shape[0], dtype=torch.float64, device=p.device)

        with _ieee_fp32(p.device):
            for layer, c in zip(model.body, consts["layers"]):
                if isinstance(layer, nn.Linear):  # dense layers in float64: cheap, and their rounding vanishes
                    h = h.flatten(1).double()
                    z = self._linear64(layer, h)
                else:
                    z = _certifying_conv(h, layer, cdt, p.device)
                e = _error_step(e, c, h, p.device)
                h = model.activation(z)
            h = h.flatten(1).double()
            y = self._linear64(model.head, h)
        return y, e * (1 + spectral.gamma(4 * len(consts["layers"]) + 8)), _norm_up(h, p.device)

    def _score_forward(self, x: torch.Tensor):
        """``(y, (y64, e, h_norm))``: the differentiable logits ``self.model(x)`` and the inputs of
        :meth:`_margin_error` for the rejection score, from one pass through the network.

        Where the certifying convolutions run in the model's own dtype on the CPU (the default
        there), the model's forward and :meth:`_forward_with_error` compute the same float32
        convolutions, so their outputs are shared and the error recursion reads the (detached)
        activations of the differentiable pass. The sound check then runs the dense layers and
        the head a second time in float64; the score does not: its error terms read the float32
        dense activations instead (``y64`` is ``y`` in float64, ``h_norm`` the float32 features'
        norm). Those enter the margin bound only through terms of order γ_k(float64)·‖h‖ ≈ 1e-13·‖h‖,
        so every per-class score built from them equals, bit for bit, the one built from the sound
        check's own terms: 0 differences in 300,000 per-class scores per committed GloRo model
        (the 10,000 test images, clean and moved up to ε and 2ε; tests/test_gloro.py checks 2,000
        per architecture). Only the i = l entries of the bound, which the score masks, can differ
        in their last bit. The saving is the float64 dense pass (≈ 10 % of a forward + backward of
        a 4C3F net). Elsewhere (CUDA, or ``forward_dtype`` ≠ the model's
        dtype) the two passes stay separate and the terms are the sound check's own.
        """
        model = self.model
        p = next(model.parameters())
        if p.device.type != "cpu" or certification_forward_dtype(p.dtype, p.device, self.forward_dtype) != p.dtype:
            return model(self._to_model(x)), self._forward_with_error(x)
        self.lipschitz_constants()
        consts = self._rounding

        h = self._to_model(x)
        e = torch.zeros(h.shape[0], dtype=torch.float64, device=p.device)
        with _ieee_fp32(p.device):
            for layer, c in zip(model.body, consts["layers"]):
                if isinstance(layer, nn.Linear) and h.dim() > 2:
                    h = h.flatten(1)
                with torch.no_grad():
                    hd = h.detach()
                    e = _error_step(e, c, hd.double() if isinstance(layer, nn.Linear) else hd, p.device)
                h = model.activation(layer(h))
            y = model.head(h.flatten(1))
            with torch.no_grad():
                hn = _norm_up(h.detach().flatten(1).double(), p.device)
                y64 = y.detach().double()
        return y, (y64, e * (1 + spectral.gamma(4 * len(consts["layers"]) + 8)), hn)

    @torch.no_grad()
    def _margin_error(self, y: torch.Tensor, e: torch.Tensor, hn: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` float64 bound on the rounding error of the computed margins y_j − y_i
        (from :meth:`_forward_with_error`'s ``y, e, h_norm``), around the classes ``j`` ``[N]``."""
        L_sub, K = self.lipschitz_constants()
        c = self._rounding
        ku = c["k_head"] * rounding_unit(torch.float64, y.device)
        gam_head = ku / (1 - ku)                           # γ_{d+1} (float64, the device's unit)
        D = (K / L_sub).to(y.device)                       # ≥ ‖w_j − w_i‖₂ (K and L_sub rounded up alike)
        D = D * (1 + 4 * spectral.U64) ** 2
        rho = gam_head * (c["w_norm"].to(y.device)[None, :] * hn[:, None] + c["b_abs"].to(y.device)[None, :])
        yj = y.gather(1, j[:, None])
        return D[j] * e[:, None] + rho + rho.gather(1, j[:, None]) + 2 * rounding_unit(torch.float64, y.device) * (yj.abs() + y.abs())

    @torch.no_grad()
    def _sound_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L_sub, K = self.lipschitz_constants()
        y, e, hn = self._forward_with_error(x)            # y: float64 logits
        p = next(self.model.parameters())
        j = y.argmax(dim=1)
        top = _top_mask(j, y.shape[1])
        yj = y.gather(1, j[:, None])
        err = self._margin_error(y, e, hn, j)
        margin = (yj - y) - err                            # ≤ the exact-arithmetic margin y_j − y_i
        Kj = K.to(y.device)[j]
        ratio = torch.where(Kj > 0, margin / Kj.clamp_min(torch.finfo(torch.float64).tiny),
                            torch.where(margin > 0, torch.full_like(margin, math.inf), torch.zeros_like(margin)))
        radius = ratio.masked_fill(top, math.inf).min(dim=1).values * (1 - 4 * spectral.U64)
        cdt = certification_forward_dtype(p.dtype, p.device, self.forward_dtype)
        if x.dtype != cdt:  # the certificate is about the rounded input; move it back to x
            shift = torch.linalg.vector_norm((x.double() - x.to(cdt).double()).flatten(1), dim=1)
            radius = radius - shift.to(radius.device) * (1 + 1e-12)
        radius = radius.clamp_min(0)
        # returned in the model's dtype (as the logits were), rounded toward 0 so it stays a bound
        out = radius.to(p.dtype)
        out = torch.where(out.double() > radius, torch.nextafter(out, torch.zeros_like(out)), out)
        return j, out

    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, radius)``: argmax ``[N]`` and a sound r(x) ≤ min_{i≠j} (y_j − y_i)/K_ij ``[N]``.

        ℓ2, ≥ 0, in the model's dtype (computed in float64, rounded toward 0). f is (ε, ℓ2)-locally robust at x for every ε < r(x), for the network
        in exact arithmetic: the constants are proven upper bounds and the margins are lowered by
        a proven bound on the forward pass's rounding error (class docstring).
        """
        return self._sound_radius(self._check(x))

    def certify(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """GloRo's check at ε: f(x) where the sound radius exceeds ε, ``ABSTAIN`` elsewhere ``[N]``.

        Equivalent to y_j > y_⊥ = max_{i≠j}(y_i + ε·K_ij) with margins lowered by the rounding
        bound, and defined through :meth:`certified_radius`, so the two always agree.
        """
        eps = check_eps(eps)
        j, radius = self._sound_radius(self._check(x))
        return torch.where(radius > eps, j, torch.full_like(j, ABSTAIN))

    monotone = True          # Lipschitz-based (Lemma 8)
    per_class_scores = True

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def input_shape(self) -> tuple:
        return self.model.input_shape

    def rejection_score(self, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None,
                        per_class: bool = False) -> torch.Tensor:
        """GloRo's rejection score at ε, differentiable in ``x`` (the ⊥ margin).

        s(x) = max_{i≠l} (y_i + ε·K_li + δ_li) − y_l with l = ``labels`` (K constant): the ⊥
        logit built around l minus l's logit, with δ_li (constant, no gradient) the proven bound
        on the rounding error of the margin that the sound check subtracts (class docstring).
        s(x) < 0 exactly when ``certify(x, eps)`` returns l (then l is also the top class), up to
        the float32 rounding of this differentiable forward pass (≈ 1e-6 in the logits);
        s(x) ≥ 0 when it abstains or predicts another class.

        Args:
            x: inputs ``[N, C, H, W]`` in [0, 1] (gradients flow through).
            eps: ε > 0.
            labels: int64 ``[N]`` class indices (default: the argmax at ``x``).
            per_class: return ``[N, C]`` with entry i the target score y_i + ε·K_li + δ_li − y_l
                (−inf at i = l); its maximum over i is s(x).

        Returns ``[N]`` (or ``[N, C]``) in the model's dtype, on the model's device.
        """
        eps = check_eps(eps)
        x = self._check(x)
        y, (y64, e, hn) = self._score_forward(x)
        if labels is None:
            labels = y.detach().argmax(dim=1)
        labels = self._check_labels(labels, x.shape[0], y.device)
        own = y.gather(1, labels[:, None])
        # the sound check lowers each margin by a rounding bound and the radius by (1 − 4u):
        # the same constants here keep the sign of s equal to the check's answer
        err = self._margin_error(y64, e, hn, labels.to(y64.device)).to(device=y.device, dtype=y.dtype)
        K = self.K.to(device=y.device, dtype=y.dtype) / (1 - 4 * spectral.U64)
        per = (y + eps * K[labels] + err - own).masked_fill(_top_mask(labels, y.shape[1]), -math.inf)
        return per if per_class else per.max(dim=1).values

    def rejection_loss(self, x: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        """Former name of :meth:`rejection_score` (argument order ``x, labels, eps``); kept for
        existing callers. ``labels`` are required here."""
        eps = check_eps(eps)
        x = self._check(x)
        if labels.shape != (x.shape[0],) or labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64 of shape ({x.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        return self.rejection_score(x, eps, labels)

    def to(self, device) -> "GloroCertifier":
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return f"GloroCertifier(arch={self.model.arch}, norm=2.0)"


def load_checkpoint(meta: dict, state_dict: dict, device) -> GloroCertifier:
    """Registry builder: a :class:`GloroCertifier` from a committed checkpoint.

    ``meta`` needs ``arch`` and optionally ``num_classes``, ``input_shape``, ``power_iteration_tol``
    and ``sound_norms`` (proven norm bounds keyed by the weights' SHA-256, see
    :meth:`GloroNet.sound_norms_record`); the (possibly float16) ``state_dict`` is loaded into a
    float32 model on ``device``.
    """
    model = GloroNet(meta["arch"], num_classes=int(meta.get("num_classes", 10)),
                     input_shape=tuple(meta["input_shape"]) if meta.get("input_shape") else None)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    model.to(device).eval()
    if meta.get("sound_norms"):
        model.sound_norms_cache = dict(meta["sound_norms"])  # used only if the weights' SHA-256 matches
    cert = GloroCertifier(model, tol=float(meta.get("power_iteration_tol", 1e-9)))
    return cert


__all__ = ["minmax", "MinMax", "LipschitzLinear", "LipschitzConv2d", "PowerIterationMixin", "GloroNet",
           "ARCHITECTURES", "gloro_logits", "gloro_loss", "certified_radius_from_logits",
           "GloroCertifier", "load_checkpoint"]
