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

Spectral norms are computed by power iteration with persistent iterates (buffers saved in the
``state_dict``): a few iterations per training step, and iteration to convergence before
certifying. Power iteration approaches ‖A‖₂ from below; run to convergence (relative change
< ``tol``) it matches the SVD to the tolerance (checked in ``tests/test_gloro.py``).
The converged constants are cached by :class:`GloroCertifier` and recomputed when any weight
changes (tracked by each parameter's in-place version counter and storage).
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

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
        """Power iteration to convergence, in float64; returns ‖A‖₂ and keeps the iterate.

        Iterates on float64 copies of the weights (float32 stalls at ~1e-6 relative) until σ
        changes by less than ``tol`` (relative) over ``check_every`` steps. Power iteration
        approaches ‖A‖₂ from below; with close top singular values the last digits converge slowly,
        so the criterion is over many steps. Subclasses may compute ‖A‖₂ exactly instead.
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
        """Exact ‖W‖₂ from the SVD (float64); the iterate is set to the top right singular vector."""
        _, svals, vh = torch.linalg.svd(self.weight.double(), full_matrices=False)
        self.u.copy_(vh[0].to(self.u.dtype))
        self._sigma_converged = svals[0].item()
        return self._sigma_converged


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

    EXACT_MAX_INPUTS = 1024
    """Layers whose input has at most this many entries get ‖A‖₂ exactly (Gram matrix, eigh)."""

    POWER_ITERATION_MARGIN = 1e-4
    """Relative margin added to a power-iteration estimate (which approaches ‖A‖₂ from below and,
    for nearly repeated top singular values, converges slowly: residuals up to ~2e-5 were seen)."""

    @torch.no_grad()
    def converge(self, tol: float = 1e-9, max_steps: int = 1000, check_every: int = 100) -> float:
        """‖A‖₂: exact from the Gram matrix AᵀA (float64) when the input has at most
        :attr:`EXACT_MAX_INPUTS` entries, else float64 power iteration times
        (1 + :attr:`POWER_ITERATION_MARGIN`)."""
        n = self.u.numel()
        if n > self.EXACT_MAX_INPUTS:
            sigma = super().converge(tol=tol, max_steps=max_steps, check_every=check_every)
            self._sigma_converged = sigma * (1 + self.POWER_ITERATION_MARGIN)
            return self._sigma_converged
        w = self.weight.double()
        basis = torch.eye(n, dtype=torch.float64, device=w.device).reshape(n, *self.input_shape)
        rows = torch.cat([self._op_with(w, basis[i:i + 512]).flatten(1) for i in range(0, n, 512)])
        evals, evecs = torch.linalg.eigh(rows @ rows.T)  # AᵀA in the input basis
        self.u.copy_(evecs[:, -1].reshape(self.u.shape).to(self.u.dtype))
        self._sigma_converged = evals[-1].clamp_min(0).sqrt().item()
        return self._sigma_converged

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

    def converge(self, tol: float = 1e-9, max_steps: int = 1000) -> list[float]:
        """Spectral norms to convergence (float64): conv layers by power iteration, dense by SVD."""
        return [layer.converge(tol=tol, max_steps=max_steps) for layer in self.body]

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


class GloroCertifier(Certifier):
    """The GloRo (ε, ℓ2) certifier of a :class:`GloroNet` (implements :class:`Certifier`).

    Args:
        model: the network.
        tol: relative tolerance of the power iteration run before certifying.
        unit_range: require inputs in [0, 1].

    The Lipschitz constants (L_sub and K) are computed by power iteration to convergence on
    first use and cached; the cache is invalidated when any weight changes.
    """

    norm = 2.0

    def __init__(self, model: GloroNet, tol: float = 1e-9, unit_range: bool = True):
        if not isinstance(model, GloroNet):
            raise ValueError(f"model must be a GloroNet, got {type(model).__name__}")
        self.model = model
        self.tol = float(tol)
        self.unit_range = unit_range
        self._cache_key = None
        self._L_sub = None
        self._K = None

    # -- Lipschitz constants -----------------------------------------------------------------
    @torch.no_grad()
    def lipschitz_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_sub, K)``: converged Lipschitz bound of the body and K ``[C, C]`` (cached)."""
        key = self.model.weights_key()
        if key != self._cache_key:
            norms = self.model.converge(tol=self.tol)
            w = self.model.head.weight
            L_sub = torch.tensor(math.prod(norms), dtype=torch.float64)
            K = L_sub * torch.cdist(w.double()[None], w.double()[None])[0]
            self._K = K.to(device=w.device, dtype=w.dtype)
            self._L_sub = L_sub.to(dtype=w.dtype)
            self._cache_key = self.model.weights_key()  # converge() does not touch parameters
        return self._L_sub, self._K

    @property
    def K(self) -> torch.Tensor:
        """K_ij = L_sub·‖w_j − w_i‖₂ ``[C, C]``."""
        return self.lipschitz_constants()[1]

    @property
    def lipschitz_constant(self) -> float:
        """L_sub, the ℓ2 Lipschitz bound of the network below the output layer."""
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
        """Class logits ``[N, C]``; with ``eps`` the ⊥ logit is appended (``[N, C+1]``)."""
        x = self._check(x)
        y = self._logits(x)
        if eps is None:
            return y
        return gloro_logits(y, self.K, check_eps(eps))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = argmax of the class logits, int64 ``[N]`` (never ``ABSTAIN``)."""
        return self._logits(self._check(x)).argmax(dim=1)

    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, radius)``: argmax and r(x) = min_{i≠j} (y_j − y_i)/K_ij (ℓ2, ≥ 0).

        f is (ε, ℓ2)-locally robust at x for every ε < r(x) (given converged spectral norms).
        """
        x = self._check(x)
        K = self.K
        return certified_radius_from_logits(self._logits(x), K)

    def certify(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """GloRo's check: f(x) where y_j > y_⊥ = max_{i≠j}(y_i + ε·K_ij), ``ABSTAIN`` elsewhere.

        Agrees with ``certified_radius(x)[1] > eps`` (up to float rounding at the boundary).
        """
        eps = check_eps(eps)
        x = self._check(x)
        K = self.K
        aug = gloro_logits(self._logits(x), K, eps)
        j = aug[:, :-1].argmax(dim=1)
        ok = aug.gather(1, j[:, None]).squeeze(1) > aug[:, -1]
        return torch.where(ok, j, torch.full_like(j, ABSTAIN))

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

        s(x) = max_{i≠l} (y_i + ε·K_li) − y_l with l = ``labels`` (K constant, converged): the ⊥
        logit built around l minus l's logit. s(x) < 0 exactly when ``certify(x, eps)`` returns
        l (then l is also the top class); s(x) ≥ 0 when it abstains or predicts another class.

        Args:
            x: inputs ``[N, C, H, W]`` in [0, 1] (gradients flow through).
            eps: ε > 0.
            labels: int64 ``[N]`` class indices (default: the argmax at ``x``).
            per_class: return ``[N, C]`` with entry i the target score y_i + ε·K_li − y_l
                (−inf at i = l); its maximum over i is s(x).

        Returns ``[N]`` (or ``[N, C]``) in the model's dtype, on the model's device.
        """
        eps = check_eps(eps)
        x = self._check(x)
        y = self.model(self._to_model(x))
        if labels is None:
            labels = y.detach().argmax(dim=1)
        labels = self._check_labels(labels, x.shape[0], y.device)
        own = y.gather(1, labels[:, None])
        if per_class:
            return (y + eps * self.K[labels] - own).masked_fill(_top_mask(labels, y.shape[1]), -math.inf)
        return _bottom_logit(y, self.K, eps, labels) - own[:, 0]

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

    ``meta`` needs ``arch`` and optionally ``num_classes``, ``input_shape`` and ``tol``; the
    (possibly float16) ``state_dict`` is loaded into a float32 model on ``device``.
    """
    model = GloroNet(meta["arch"], num_classes=int(meta.get("num_classes", 10)),
                     input_shape=tuple(meta["input_shape"]) if meta.get("input_shape") else None)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    model.to(device).eval()
    cert = GloroCertifier(model, tol=float(meta.get("power_iteration_tol", 1e-9)))
    return cert


__all__ = ["minmax", "MinMax", "LipschitzLinear", "LipschitzConv2d", "PowerIterationMixin", "GloroNet",
           "ARCHITECTURES", "gloro_logits", "gloro_loss", "certified_radius_from_logits",
           "GloroCertifier", "load_checkpoint"]
