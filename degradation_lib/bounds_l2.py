"""Sound ℓ2-ball bounds for GloRo nets, and which points no degradation attack can reach.

The paper's upper bound (Section 3.3.2) counts every point certified at ε but not at 2ε. For a
GloRo net a point x is degraded at ε when some x' in ``B_2(x, ε) ∩ [0, 1]^d`` is rejected, i.e.

    min_{x'} min_{i≠l} [ y_l(x') − y_i(x') − ε·K_li ] ≤ 0                  (l the label of x).

The 2ε check bounds the inner margin with the global constant K_li (y_l − y_i ≥ its value at x
minus ε·K_li on the ball), which over-estimates the local slope. This module computes a *sound
lower bound* LB_i of ``min_{x'} y_l(x') − y_i(x')`` over the ball by linear bound propagation
(a CROWN-style backward pass, Zhang et al. 2018) through the MinMax network, cut at every layer
by the Lipschitz bound of the part below (see "Hybrid" below): if
``LB_i − ε·K_li > 0`` for every i ≠ l, no point of the ball is rejected -- no attack can degrade
x, whatever it does. K is the certifier's constant (not recomputed).

MinMax as ReLU
--------------
For a pair (a, b) of pre-activations with difference d = a − b,
``min(a, b) = a − relu(d)`` and ``max(a, b) = b + relu(d)``: a MinMax layer is linear in (a, b)
plus ReLUs of the differences. Each ReLU with bounds l < 0 < u on d is relaxed by the lines
``λ·d ≤ relu(d) ≤ u/(u − l)·(d − l)`` (λ ∈ {0, 1}, the one with the smaller area, as in CROWN);
stable neurons are exact. Bounds on d at every layer (the "intermediate bounds") come either
from the same backward pass per neuron (``intermediate="crown"``, tight, costs one backward pass
per neuron) or from interval arithmetic (``"interval"``, cheap); both are intersected with the
per-neuron Lipschitz bound |d(x') − d(x)| ≤ ε·‖row‖₂·∏_{m<l} ‖A_m‖₂ (the product of the
spectral norms of the layers below, the certifier's own L_sub factors).

Hybrid with the Lipschitz bound
-------------------------------
With many unstable pairs (MNIST's blank background makes a − b ≈ 0 for many first-layer pairs)
the relaxation's intercepts add up, and a pure backward pass can be looser than GloRo's own
Lipschitz bound. After substituting the layers above H_m (the input of layer m) the bound reads
``Λ_m·H_m(x') + ν_m``, and H_m is Lipschitz with the product of the spectral norms below it, so
``Λ_m·H_m(x) + ν_m − ε·‖Λ_m‖₂·∏_{l<m} ‖A_l‖₂`` is also sound; ‖Λ_m‖₂ is usually far below the
worst case ‖A‖₂·‖Λ_{m+1}‖₂ that the global constant assumes. The bound returned is the best of
these cuts over m (m = L: GloRo's own bound; m = 0: the full backward pass).

The ball ∩ box
--------------
A linear function Λ·x' + ν is minimised over ``{x' : ‖x' − x‖₂ ≤ ε, 0 ≤ x' ≤ 1}`` through the
Lagrangian dual: for every τ > 0,
``g(τ) = Σ_k min_{δ_k ∈ [−x_k, 1 − x_k]} (Λ_k δ_k + τ δ_k²/2) − τ ε²/2 ≤ min Λ·δ``
(weak duality; the inner minimum is at δ_k = clamp(−Λ_k/τ, −x_k, 1 − x_k)), so any τ gives a
sound bound. τ is searched by bisection on ‖δ(τ)‖ = ε and the best value kept, together with the
box-only bound (τ → 0). MNIST images have many pixels at 0 that can only grow, so the box
matters.

How far a global constant can go
--------------------------------
:func:`pattern_lipschitz_witness` answers the other way round: it finds an order of every MinMax
pair for which the (then linear) network's class difference has gradient norm ω_ij, a lower bound
of every Lipschitz bound that holds whatever the orders (GloRo's K included). A point whose margins
do not clear ε·(K + ω) stays undecided by every such constant (page 11 counts them).

All computations run in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .certifier import check_eps, check_input
from .gloro import GloroCertifier, LipschitzConv2d, LipschitzLinear

INTERMEDIATE = ("crown", "interval")


# --------------------------------------------------------------------------------------------
# minimising a linear function over the ℓ2 ball ∩ [0, 1]^d
# --------------------------------------------------------------------------------------------

def ball_box_min(lam: torch.Tensor, x: torch.Tensor, eps: float, iters: int = 16) -> torch.Tensor:
    """A sound lower bound of ``min {Λ·δ : ‖δ‖₂ ≤ ε, 0 ≤ x + δ ≤ 1}`` per row.

    Args:
        lam: ``[M, d]`` coefficients Λ.
        x: ``[M, d]`` centres in [0, 1].
        eps: ε > 0.
        iters: bisection steps on log τ in [log(‖Λ‖/ε) − 16, log(‖Λ‖/ε)] (the root of
            ‖δ(τ)‖ = ε is at most ‖Λ‖/ε, where the unclipped step has length ε); 0: only the
            ball-only and box-only values.

    Returns ``[M]``: the largest dual value g(τ) found (each is a lower bound), and never below
    the ball-only value −ε‖Λ‖₂ nor the box-only value.
    """
    lo_d, hi_d = -x, 1 - x
    norm = torch.linalg.vector_norm(lam, dim=1)
    box = torch.minimum(lam * lo_d, lam * hi_d).sum(dim=1)
    best = torch.maximum(-eps * norm, box)
    live = norm > 0
    if not live.any():
        return best
    tau_hi = torch.log(norm.clamp_min(1e-300) / eps)     # ‖δ(τ)‖ decreases in τ; ≤ ε from here on
    tau_lo = tau_hi - 16.0
    for _ in range(iters):
        mid = (tau_lo + tau_hi) / 2
        tau = mid.exp()[:, None]
        delta = (-lam / tau).clamp(lo_d, hi_d)
        g = (lam * delta + tau * delta.square() / 2).sum(dim=1) - tau[:, 0] * eps * eps / 2
        best = torch.where(live, torch.maximum(best, g), best)
        too_long = torch.linalg.vector_norm(delta, dim=1) > eps
        tau_lo = torch.where(too_long, mid, tau_lo)
        tau_hi = torch.where(too_long, tau_hi, mid)
    return best


# --------------------------------------------------------------------------------------------
# the network as a list of affine maps and MinMax layers
# --------------------------------------------------------------------------------------------

class _Affine:
    """One Lipschitz layer (or the head) in float64, with its input and output shapes."""

    def __init__(self, layer: nn.Module, in_shape: tuple):
        self.weight = layer.weight.detach().double()
        self.bias = layer.bias.detach().double()
        self.in_shape = tuple(in_shape)
        if isinstance(layer, nn.Conv2d):
            self.conv = dict(stride=layer.stride, padding=layer.padding)
            with torch.no_grad():
                out = F.conv2d(torch.zeros(1, *in_shape, dtype=torch.float64), self.weight, None, **self.conv)
            self.out_shape = tuple(out.shape[1:])
            k = self.weight.shape[2:]
            self.out_pad = tuple(in_shape[1 + d] - ((self.out_shape[1 + d] - 1) * layer.stride[d]
                                                    - 2 * layer.padding[d] + k[d]) for d in range(2))
        else:
            self.conv = None
            self.out_shape = (self.weight.shape[0],)

    def to(self, device):
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return F.conv2d(h, self.weight, self.bias, **self.conv)
        return F.linear(h.flatten(1), self.weight, self.bias)

    def linear(self, h: torch.Tensor) -> torch.Tensor:
        """``A·h``, the layer without its bias."""
        if self.conv is not None:
            return F.conv2d(h, self.weight, None, **self.conv)
        return F.linear(h.flatten(1), self.weight)

    def interval(self, lo: torch.Tensor, hi: torch.Tensor):
        c, r = (hi + lo) / 2, (hi - lo) / 2
        if self.conv is not None:
            return (F.conv2d(c, self.weight, self.bias, **self.conv) - F.conv2d(r, self.weight.abs(), None, **self.conv),
                    F.conv2d(c, self.weight, self.bias, **self.conv) + F.conv2d(r, self.weight.abs(), None, **self.conv))
        c, r = F.linear(c.flatten(1), self.weight, self.bias), F.linear(r.flatten(1), self.weight.abs())
        return c - r, c + r

    def back(self, lam: torch.Tensor):
        """``(Aᵀ Λ, Λ·b)`` for coefficients Λ ``[M, S, *out_shape]`` on the layer's output."""
        M, S = lam.shape[:2]
        dims = tuple(range(2, lam.dim()))
        if self.conv is not None:
            bb = torch.einsum("mschw,c->ms", lam, self.bias)
            prev = F.conv_transpose2d(lam.reshape(M * S, *self.out_shape), self.weight, None,
                                      output_padding=self.out_pad, **self.conv)
            return prev.reshape(M, S, *self.in_shape), bb
        bb = lam @ self.bias
        return (lam @ self.weight).reshape(M, S, *self.in_shape), bb

    def diff_row_norms(self) -> torch.Tensor:
        """ℓ2 norms of the rows of d = a − b (per output neuron of the first half), an upper
        bound for conv rows near the border (fewer taps). Shape ``out_shape`` halved on dim 0."""
        half = self.weight.shape[0] // 2
        wd = self.weight[:half] - self.weight[half:]
        n = torch.linalg.vector_norm(wd.flatten(1), dim=1)
        if self.conv is not None:
            return n[:, None, None].expand(half, *self.out_shape[1:])
        return n


def _split(t: torch.Tensor, dim: int):
    return t.chunk(2, dim=dim)


class GloroBounds:
    """Linear bound propagation over ℓ2 balls for a :class:`~degradation_lib.GloroCertifier`.

    Args:
        certifier: the GloRo certifier (its network and its K, L_sub factors are used).
        intermediate: ``"crown"`` (tight, one backward pass per MinMax pair per layer) or
            ``"interval"`` (interval arithmetic); both intersected with per-neuron Lipschitz
            bounds. See the module docstring.
        chunk: rows per backward pass of the intermediate bounds (memory knob).
        iters, intermediate_iters: dual search steps of :func:`ball_box_min` for the final and
            the intermediate bounds (every value is sound; more steps are tighter).
    """

    def __init__(self, certifier: GloroCertifier, intermediate: str = "crown", chunk: int = 2048,
                 iters: int = 16, intermediate_iters: int = 6):
        if not isinstance(certifier, GloroCertifier):
            raise ValueError(f"certifier must be a GloroCertifier, got {type(certifier).__name__}")
        if intermediate not in INTERMEDIATE:
            raise ValueError(f"intermediate must be one of {INTERMEDIATE}, got {intermediate!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.certifier = certifier
        self.intermediate = intermediate
        self.chunk = chunk
        self.iters, self.intermediate_iters = int(iters), int(intermediate_iters)
        model = certifier.model
        _, K = certifier.lipschitz_constants()
        self.K = K.detach().double()
        self.layer_norms = [float(layer.converged_norm()) for layer in model.body]
        device = next(model.parameters()).device
        shape = tuple(model.input_shape)
        self.layers: list[_Affine] = []
        for layer in model.body:
            a = _Affine(layer, shape).to(device)
            self.layers.append(a)
            shape = a.out_shape
        self.head = _Affine(model.head, shape).to(device)
        self.device = device

    # -- relaxations -------------------------------------------------------------------------
    @staticmethod
    def _relax(l: torch.Tensor, u: torch.Tensor):
        """Slopes and intercept of relu(d) for d ∈ [l, u]: lower slope, upper slope, upper intercept."""
        unstable = (l < 0) & (u > 0)
        denom = torch.where(unstable, u - l, torch.ones_like(u))
        s_up = torch.where(unstable, u / denom, (l >= 0).to(l.dtype))
        t_up = torch.where(unstable, -s_up * l, torch.zeros_like(l))
        s_lo = torch.where(unstable, (u > -l).to(l.dtype), (l >= 0).to(l.dtype))
        return s_lo, s_up, t_up

    def _backward(self, lam: torch.Tensor, bias: torch.Tensor, k: int, relax, rows, x, eps, iters):
        """Lower bound of ``Λ·z_k + bias`` (z_k the pre-activation of layer k, or the logits for
        k = len(layers) with Λ on the head's input handled by the caller) over the ball ∩ box.

        ``lam`` ``[M, S, *shape of z_k]``; ``relax[m]`` the relaxation of layer m's MinMax;
        ``rows`` ``[M]`` the example of each row; ``x`` ``[N, ...]`` the centres.
        """
        M, S = lam.shape[:2]
        best = self._lipschitz_cut(lam, bias, k, rows, eps)
        for m in range(k - 1, -1, -1):
            layer = self.layers[m]
            # lam is on h_m = MinMax(z_m): [min = a − r, max = b + r], r = relu(a − b)
            lam_lo, lam_hi = _split(lam, 2)
            mu = lam_hi - lam_lo
            s_lo, s_up, t_up = (t[rows].unsqueeze(1) for t in relax[m])
            coef_d = mu.clamp(min=0) * s_lo + mu.clamp(max=0) * s_up
            dims = tuple(range(2, mu.dim()))
            bias = bias + (mu.clamp(max=0) * t_up).sum(dim=dims)
            lam_z = torch.cat([lam_lo + coef_d, lam_hi - coef_d], dim=2)
            lam, bb = layer.back(lam_z)
            bias = bias + bb
            if m > 0:
                best = torch.maximum(best, self._lipschitz_cut(lam, bias, m, rows, eps))
        lam = lam.reshape(M * S, -1)
        xc = x.flatten(1)[rows].repeat_interleave(S, dim=0)
        exact = ball_box_min(lam, xc, eps, iters).reshape(M, S) + bias + (lam * xc).sum(1).reshape(M, S)
        return torch.maximum(best, exact)

    def _lipschitz_cut(self, lam, bias, m, rows, eps):
        """``bias + Λ·H_m(x) − ε·‖Λ‖₂·Lip(H_m)``: a sound bound of ``Λ·H_m(x') + bias`` over the
        ball, H_m the input of layer m (``H_0 = x``), whose Lipschitz constant is the product
        of the spectral norms of layers 0 .. m − 1."""
        M, S = lam.shape[:2]
        centre = self._centres[m].flatten(1)[rows]                               # [M, n]
        flat = lam.reshape(M, S, -1)
        return (bias + torch.einsum("msn,mn->ms", flat, centre)
                - eps * self._lip_prefix[m] * torch.linalg.vector_norm(flat, dim=2))

    # -- public -------------------------------------------------------------------------------
    @torch.no_grad()
    def margin_lower_bounds(self, x: torch.Tensor, eps: float, labels: torch.Tensor) -> torch.Tensor:
        """Sound lower bounds of ``y_l(x') − y_i(x')`` over ``B_2(x, ε) ∩ [0, 1]^d``.

        Args:
            x: centres ``[N, C, H, W]`` in [0, 1].
            eps: ε > 0.
            labels: int64 ``[N]`` (l).

        Returns float64 ``[N, C]`` (+inf at i = l).
        """
        eps = check_eps(eps)
        x = check_input(x, ndim=4, shape=self.certifier.model.input_shape).to(self.device, torch.float64)
        N = x.shape[0]
        labels = self.certifier._check_labels(labels, N, self.device)
        relax = []
        box_lo, box_hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        h_lo, h_hi = box_lo, box_hi
        h = x
        lip_below = 1.0
        self._centres, self._lip_prefix = [x], [1.0]
        for k, layer in enumerate(self.layers):
            z = layer.forward(h)                       # pre-activation at the centre
            a, b = _split(z, 1)
            d0 = a - b
            lip = eps * lip_below * layer.diff_row_norms()[None]
            l, u = d0 - lip, d0 + lip                  # Lipschitz bound of d
            # interval bound of d from the interval of the layer's input
            zl, zu = layer.interval(h_lo, h_hi)
            al, bl = _split(zl, 1)
            au, bu = _split(zu, 1)
            l, u = torch.maximum(l, al - bu), torch.minimum(u, au - bl)
            if k == 0:
                cl, cu = self._first_layer_bounds(x, eps)
                l, u = torch.maximum(l, cl), torch.minimum(u, cu)
            elif self.intermediate == "crown":
                cl, cu = self._neuron_bounds(k, relax, x, eps, (l < 0) & (u > 0))
                l, u = torch.maximum(l, cl), torch.minimum(u, cu)
            relax.append(self._relax(l, u))
            # interval of h_k = MinMax(z_k), using the tighter bounds of d
            r_lo, r_hi = l.clamp_min(0), u.clamp_min(0)
            mn_lo = torch.maximum(torch.minimum(al, bl), al - r_hi)
            mn_hi = torch.minimum(torch.minimum(au, bu), au - r_lo)
            mx_lo = torch.maximum(torch.maximum(al, bl), bl + r_lo)
            mx_hi = torch.minimum(torch.maximum(au, bu), bu + r_hi)
            h_lo, h_hi = torch.cat([mn_lo, mx_lo], 1), torch.cat([mn_hi, mx_hi], 1)
            h = F_minmax(z)
            lip_below *= self.layer_norms[k]
            self._centres.append(h)
            self._lip_prefix.append(lip_below)
        # final spec: rows e_l − e_i through the head
        C = self.head.weight.shape[0]
        eye = torch.eye(C, dtype=torch.float64, device=self.device)
        spec = eye[labels][:, None, :] - eye[None, :, :]                    # [N, C, C]
        lam = spec @ self.head.weight                                        # [N, C, D]
        bias = spec @ self.head.bias                                         # [N, C]
        lam = lam.reshape(N, C, *self.head.in_shape)
        rows = torch.arange(N, device=self.device)
        lb = self._backward(lam, bias, len(self.layers), relax, rows, x, eps, self.iters)
        # never looser than the Lipschitz bound of the margin itself
        y = self.head.forward(h)
        own = y.gather(1, labels[:, None])
        lip_margin = own - y - eps * self.K[labels]
        lb = torch.maximum(lb, lip_margin)
        return lb.masked_fill(F.one_hot(labels, C).bool(), math.inf)

    def _first_layer_bounds(self, x, eps):
        """Exact-up-to-the-dual bounds of d_0 = a − b, a linear function of x: each row only
        touches its receptive field (conv: the unfolded patch; padded entries are fixed 0)."""
        layer = self.layers[0]
        half = layer.weight.shape[0] // 2
        wd = layer.weight[:half] - layer.weight[half:]
        bd = layer.bias[:half] - layer.bias[half:]
        N = x.shape[0]
        if layer.conv is None:
            d0 = F.linear(x.flatten(1), wd, bd)                                     # [N, half]
            lam = wd[None].expand(N, -1, -1).reshape(N * half, -1)
            xc = x.flatten(1).repeat_interleave(half, dim=0)
            m = ball_box_min(lam, xc, eps, self.intermediate_iters).reshape(N, half)
            mx = -ball_box_min(-lam, xc, eps, self.intermediate_iters).reshape(N, half)
            return d0 + m, d0 + mx
        k = wd.shape[2:]
        unfold = dict(kernel_size=k, stride=layer.conv["stride"], padding=layer.conv["padding"])
        patches = F.unfold(x, **unfold)                                             # [N, kk, L]
        real = F.unfold(torch.ones_like(x[:1]), **unfold)[0] > 0                    # [kk, L]
        L = patches.shape[2]
        wflat = wd.flatten(1)                                                       # [half, kk]
        d0 = torch.einsum("hk,nkl->nhl", wflat, patches) + bd[None, :, None]
        lam = wflat[None, :, None, :].expand(N, half, L, -1)                        # [N, half, L, kk]
        xc = patches.permute(0, 2, 1)[:, None].expand(N, half, L, -1)
        # padded entries: no freedom (box [0, 0] around 0), encoded as centre 0 with zero weight
        lam = lam * real.T[None, None].to(lam.dtype)
        kk = lam.shape[-1]
        lam, xc = lam.reshape(-1, kk), xc.reshape(-1, kk)
        m = ball_box_min(lam, xc, eps, self.intermediate_iters).reshape(N, half, L)
        mx = -ball_box_min(-lam, xc, eps, self.intermediate_iters).reshape(N, half, L)
        shape = (N, half, *layer.out_shape[1:])
        return (d0 + m).reshape(shape), (d0 + mx).reshape(shape)

    def _neuron_bounds(self, k, relax, x, eps, select):
        """CROWN bounds ``(l, u)`` of d_k = a − b for the selected pairs (±inf elsewhere)."""
        N = x.shape[0]
        layer = self.layers[k]
        half_shape = (layer.out_shape[0] // 2, *layer.out_shape[1:])
        n = math.prod(half_shape)
        sel = select.reshape(N, n)
        l = torch.full((N, n), -math.inf, dtype=torch.float64, device=self.device)
        u = torch.full((N, n), math.inf, dtype=torch.float64, device=self.device)
        ex, neuron = sel.nonzero(as_tuple=True)
        for s in range(0, ex.numel(), self.chunk):
            e, j = ex[s:s + self.chunk], neuron[s:s + self.chunk]
            one = F.one_hot(j, n).to(torch.float64).reshape(-1, 1, *half_shape)
            lam_z = torch.cat([one, -one], dim=2)                          # coefficient of a − b
            lam_z = torch.cat([lam_z, -lam_z], dim=1)                      # rows: +d and −d
            lam, bb = layer.back(lam_z)
            lb = self._backward(lam, bb, k, relax, e, x, eps, self.intermediate_iters)
            l[e, j], u[e, j] = lb[:, 0], -lb[:, 1]
        return l.reshape(N, *half_shape), u.reshape(N, *half_shape)

    @torch.no_grad()
    def unattackable(self, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None,
                     margin: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """Points where no ``x' ∈ B_2(x, ε) ∩ [0, 1]^d`` is rejected by the GloRo check at ε.

        Returns ``(proof, slack)``: bool ``[N]`` (True where
        ``min_{i≠l} LB_i − ε·K_li − 4δ_li > margin``, δ_li the sound check's rounding bound on the
        margin at x: the check subtracts δ from a computed margin that may itself be δ below
        the exact one, and δ is doubled for its growth on the ball -- an allowance, not a proof,
        for the rounding part) and float64 ``[N]`` slack = that minimum. ``labels`` default to
        the certifier's prediction.
        """
        eps = check_eps(eps)
        if labels is None:
            labels = self.certifier.predict(x)
        labels = labels.to(self.device)
        lb = self.margin_lower_bounds(x, eps, labels)
        # the sound check lowers the *computed* margin by its rounding bound δ (and the computed
        # margin may itself sit δ below the exact one): allow 2δ, with δ taken at x and doubled
        # for its growth on the ball (δ grows with the activations' norms, which move by at most
        # ε·L_sub; this allowance is an estimate, not a proof, of the rounding part)
        xc = check_input(x, ndim=4, shape=self.certifier.model.input_shape)
        y64, e, hn = self.certifier._forward_with_error(xc)
        delta = self.certifier._margin_error(y64, e, hn, labels.to(y64.device)).to(lb.device)
        allowance = 4 * delta.masked_fill(F.one_hot(labels, lb.shape[1]).bool(), 0)
        slack = (lb - eps * self.K[labels] - allowance).min(dim=1).values
        return slack > margin, slack


def smoothing_unattackable(radius, sigma: float, eps: float, n: int, alpha: float, n0: int = 100,
                           beta: float = 1e-3):
    """Points of a smoothed classifier that no x' in the ε-ball can make CERTIFY reject, w.h.p.

    Infinite-sample statement (Cohen et al. 2019; Salman et al. 2019, Lemma 1): x ↦ Φ⁻¹(p_A(x))
    is 1/σ-Lipschitz, so Φ⁻¹(p_A(x')) ≥ Φ⁻¹(p_A(x)) − ‖x' − x‖₂/σ: the smoothed radius drops by at
    most ε on the ε-ball (tight for a linear base classifier). Hence in the limit, exactly the
    points with true radius R(x) > 2ε are unattackable; the paper's upper bound uses CERTIFY's
    R̲(x) ≤ R(x) instead (capped at σ·Φ⁻¹(α^{1/n}) ≈ 3.81σ for n = 100,000, α = 0.001).

    Finite samples, from CERTIFY's answer at x (``radius`` = σ·Φ⁻¹(p̲_A(x)), p_A(x) ≥ p̲_A(x)
    with probability ≥ 1 − α): every x' in the ball has p_A(x') ≥ q = Φ(Φ⁻¹(p̲_A(x)) − ε/σ).
    CERTIFY at x' draws n fresh votes: with probability ≥ 1 − β, n_A' ≥ k = the β-quantile of
    Bin(n, q), and it certifies at ε when its bound p̲(k) gives σ·Φ⁻¹(p̲(k)) > ε -- provided its
    n0 selection votes pick c_A, which fails with probability ≤ P[Bin(n0, q) ≤ n0/2].

    Args:
        radius: ``[N]`` CERTIFY radii at x (0 where it abstained).
        sigma, eps, n, alpha, n0: the smoothed classifier's σ, ε, CERTIFY's n, α, n0.
        beta: allowed probability that CERTIFY's votes at x' fall below the β-quantile.

    Returns ``(proof, failure)``: bool ``[N]`` (CERTIFY certifies every x' of the ball at ε with
    probability ≥ 1 − ``failure``) and float ``[N]`` failure = α + β + P[Bin(n0, q) ≤ n0/2].
    """
    import numpy as np
    from scipy.stats import binom, norm as normal
    from .smoothing import p_A_lower

    r = np.asarray(torch.as_tensor(radius).detach().cpu().double().numpy())
    sigma, eps = check_eps(sigma, "sigma"), check_eps(eps)
    certified = r > 0
    p_low = np.where(certified, normal.cdf(r / sigma), 0.5)
    q = normal.cdf(normal.ppf(p_low) - eps / sigma)
    k = binom.ppf(beta, n, q).astype(np.int64)
    p_after = p_A_lower(k, n, alpha)
    with np.errstate(divide="ignore"):
        r_after = sigma * normal.ppf(p_after)
    proof = certified & (p_after > 0.5) & (r_after > eps)
    failure = alpha + beta + binom.cdf(n0 // 2, n0, q)
    return torch.as_tensor(proof), torch.as_tensor(failure)


def pattern_lipschitz_witness(certifier: GloroCertifier, *, iters: int = 30, restarts: int = 16,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """ω ``[C, C]``: how far any *pattern-agnostic* Lipschitz bound of y_j − y_i must stay from 0.

    Fix the order of every MinMax pair (a "pattern" P: each pair is passed through or swapped).
    The network is then linear, x ↦ J_P·x + c_P, and its class difference y_j − y_i has the
    gradient ``J_Pᵀ(e_j − e_i)``. Every bound that holds whatever the pattern -- GloRo's
    K_ij = ∏_l ‖A_l‖₂ · ‖w_j − w_i‖₂ (Section 2 of the paper), or an SDP bound that treats MinMax
    through the slope of |a − b| in [−1, 1] -- is at least ``L*_ij = max_P ‖J_Pᵀ(e_j − e_i)‖₂``.
    This function returns a *witness* ``ω_ij = ‖J_Pᵀ(e_j − e_i)‖₂`` of one pattern P, found by
    alternating exact maximisation of the bilinear form ``(e_j − e_i)ᵀ J_P u`` over unit u and over
    one layer's pattern at a time (each pair takes the order that increases the form, given u and
    the other layers, in one top-down sweep; u then becomes the normalised gradient), from
    ``restarts`` random starts (u and the pattern). No step decreases the form, so ω is realised
    by a pattern and

        ω_ij ≤ L*_ij ≤ any pattern-agnostic bound, K_ij included.

    Consequence (used on page 11): such a bound L can prove a point x with label l unattackable at
    ε (``y_l − y_i − ε·L_li > ε·K_li`` at x for every i) only if ``y_l − y_i > ε·(K_li + ω_li)``:
    points below that stay undecided by every bound of this kind, however it is computed.

    Args:
        certifier: a :class:`~degradation_lib.gloro.GloroCertifier` (its net's weights, no biases).
        iters: most alternating rounds (one forward pass, one top-down sweep over the layers'
            patterns, one update of u; stops early when no pair changes); ≥ 1.
        restarts: random starts (u and pattern) per class pair; ≥ 1.
        generator: a CPU ``torch.Generator`` for the random starts (reproducible witness, the same on
            every device up to rounding).

    Returns:
        ω ``[C, C]`` float64 on the CPU (computed on the net's device), symmetric, zero diagonal.
        Float64 rounding is ~1e-13 relative; ω is a lower bound of L*, not an upper bound.
    """
    if not isinstance(certifier, GloroCertifier):
        raise TypeError(f"certifier must be a GloroCertifier, got {type(certifier).__name__}")
    for name, v in (("iters", iters), ("restarts", restarts)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    net = certifier.model
    layers, shape = [], tuple(net.input_shape)
    for layer in net.body:
        layers.append(_Affine(layer, shape))        # float64 copies, on the net's device
        shape = layers[-1].out_shape
    head = net.head.weight.detach().double()
    device, C = head.device, head.shape[0]
    pairs = [(i, j) for i in range(C) for j in range(i + 1, C)]
    v = torch.zeros(len(pairs) * restarts, C, dtype=torch.float64)
    for k, (i, j) in enumerate(pairs):
        v[k * restarts:(k + 1) * restarts, j], v[k * restarts:(k + 1) * restarts, i] = 1.0, -1.0
    v, B = v.to(device), len(v)

    def order(z, swap):
        lo, hi = _split(z, 1)
        return torch.cat([torch.where(swap, hi, lo), torch.where(swap, lo, hi)], dim=1)

    # random starts drawn on the CPU (the generator's device), so the witness is the same on any device
    u = torch.randn(B, *net.input_shape, dtype=torch.float64, generator=generator)
    u = (u / torch.linalg.vector_norm(u.flatten(1), dim=1).view(-1, *[1] * len(net.input_shape))).to(device)
    swaps = [(torch.rand(B, a.out_shape[0] // 2, *a.out_shape[1:], dtype=torch.float64, generator=generator)
              < 0.5).to(device) for a in layers]
    best = torch.zeros(B, dtype=torch.float64, device=device)
    g_top = (v @ head).view(B, *layers[-1].out_shape)     # ∂ form / ∂ (output of the last MinMax)
    for _ in range(iters):
        # forward with the current patterns: the pre-activations z_m = A_m h_m
        pre, h = [], u
        for a, sw in zip(layers, swaps):
            pre.append(a.linear(h))
            h = order(pre[-1], sw)
        # top-down sweep: with u and the layers above fixed, the form is linear in each pair's order
        # (value entering MinMax m from below, gradient leaving it from above); take the larger one
        g, changed = g_top, False
        for m in reversed(range(len(layers))):
            fa, fb = _split(pre[m], 1)
            ga, gb = _split(g, 1)
            new = ga * fb + gb * fa > ga * fa + gb * fb
            changed |= bool((new != swaps[m]).any())
            swaps[m] = new
            g = layers[m].back(order(g, new).unsqueeze(1))[0][:, 0]   # Aₘᵀ Pₘ g (a pair swap is its own transpose)
        # the best u for these patterns: the normalised gradient J_Pᵀ(e_j − e_i), of norm ‖J_Pᵀ(e_j − e_i)‖
        n = torch.linalg.vector_norm(g.flatten(1), dim=1)
        best = torch.maximum(best, n)
        u = g / n.clamp_min(1e-300).view(-1, *[1] * len(net.input_shape))
        if not changed:
            break
    omega = best.view(len(pairs), restarts).amax(1).cpu()
    out = torch.zeros(C, C, dtype=torch.float64)
    for k, (i, j) in enumerate(pairs):
        out[i, j] = out[j, i] = omega[k]
    return out


def F_minmax(z: torch.Tensor) -> torch.Tensor:
    """MinMax along dimension 1 (float64 reference; no custom autograd)."""
    a, b = z.chunk(2, dim=1)
    return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)


__all__ = ["GloroBounds", "ball_box_min", "smoothing_unattackable", "INTERMEDIATE", "pattern_lipschitz_witness"]
