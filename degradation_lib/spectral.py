"""Proven upper bounds on spectral norms ‖A‖₂ of dense and convolutional layers, in float64.

A GloRo certificate (Section 2 and 5 of the paper; Leino et al. 2021) is only as sound as the
Lipschitz constant L_sub = ∏_l ‖A_l‖₂ it uses: an *estimate* of a spectral norm that is slightly
low (power iteration stalls below ‖A‖₂ when the top singular values are nearly equal) certifies
points that are not robust. This module computes, for a layer's linear map A (float32 or float64
weights), a float ``bound`` with

    ‖A‖₂ ≤ bound ≤ ‖A‖₂ · (1 + ~1e-8)        (the second inequality in practice, not a guarantee;
                                              ~1e-2 instead of 1e-8 for large convolutions, step 6)

where the first inequality is a theorem about the floating-point computation below, not an
estimate.

Method
------
1. **Explicit operator.** A is built as a scipy sparse matrix whose entries are copies of the
   weights (a convolution with stride s and zero padding p has A[(o_y, o_x, c_o), (i_y, i_x, c_i)]
   = w[c_o, c_i, i_y − s·o_y + p, i_x − s·o_x + p]); no arithmetic, so A is exact. Rows and
   columns are ordered position-major, channel-minor, which makes the Gram matrix banded.
2. **Gram on the smaller side.** G̃ = fl(A Aᵀ) or fl(Aᵀ A), n × n with n = min(rows, cols)
   (sparse product, float64). Each entry is a floating-point inner product of length at most
   N = max(rows, cols), so (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
   eq. 3.5, any summation order) |G̃ − G| ≤ γ_N |A||A|ᵀ entrywise, with γ_k = k·u/(1 − k·u) and
   u = 2⁻⁵³. Hence ‖G̃ − G‖₂ ≤ γ_N ‖|A|‖₂² ≤ γ_N ‖A‖_F² =: c₃.
   Only the upper triangle of G̃ is used below (the sparse product need not be bitwise symmetric).
3. **Estimate.** λ̂ ≈ λ_max(G̃) from LAPACK ``eigh`` (n ≤ 1600) or ARPACK ``eigsh`` (a few
   Lanczos vectors, so nearly repeated top eigenvalues are resolved). λ̂ is *not* trusted.
4. **Verification by Cholesky** (Rump's test of positive definiteness). With μ = λ̂·(1 + δ),
   M̃ = fl(μI − G̃) (only the diagonal is rounded: |M̃ − (μI − G̃)| ≤ u·|μ − g̃_ii| on the
   diagonal, so ‖M̃ − (μI − G̃)‖₂ ≤ c₂ := u·(μ + max_i g̃_ii)·(1 + u)). If the floating-point
   Cholesky factorisation of M̃ (LAPACK ``potrf``, or ``pbtrf`` on the band) runs to completion,
   then R̂ᵀR̂ = M̃ + ΔM with |ΔM| ≤ γ_{n+1}|R̂ᵀ||R̂| (Higham, Theorem 10.3; it holds for the
   blocked and banded variants, which evaluate the same inner products in another order with
   conventional level-3 BLAS). Since diag(|R̂ᵀ||R̂|) = diag(R̂ᵀR̂) ≥ 0 and
   (R̂ᵀR̂)_ii ≤ m̃_ii/(1 − γ_{n+1}), ‖ΔM‖₂ ≤ γ_{n+1}‖R̂‖_F² ≤ γ_{n+1}/(1 − γ_{n+1})·tr(M̃) ≤ c₁ :=
   γ_{n+1}/(1 − γ_{n+1})·n·(μ + max_i g̃_ii)·(1 + u). M̃ + ΔM is positive semi-definite, so
   λ_min(M̃) ≥ −c₁ and λ_max(G̃) ≤ μ + c₁ + c₂. If the factorisation fails, δ grows ×16 and the
   test is repeated (δ starts at 2⁻³⁰ ≈ 9.3e-10).
5. **Weyl.** λ_max(G) ≤ λ_max(G̃) + ‖G̃ − G‖₂, so ‖A‖₂² = λ_max(G) ≤ U := μ + c₁ + c₂ + c₃, and
   ``bound`` = fl(√fl(U))·(1 + 4u) rounded upward (each of the few floating-point operations that
   form U and its square root has relative error ≤ u on non-negative numbers; the factors
   (1 + 4u) absorb them).

6. **Large convolutions.** Where the Gram side n exceeds :data:`MAX_EXPLICIT_GRAM` (8192; a
   CIFAR-10 32 × 32 × 32 feature map has n = 32768), :func:`conv2d_spectral_bound` switches to
   :func:`conv2d_circulant_bound`: the convolution is a restriction of a circular convolution
   (strided ones after a polyphase split, :func:`conv2d_polyphase`), whose norm is the largest
   spectral norm of its C_out × C' Fourier symbols (Sedghi et al. 2019); each symbol is bounded by
   the same Cholesky test, and the rounding of the symbols themselves is bounded too (proof in
   :func:`conv2d_circulant_bound`). Proven ≥ ‖A‖₂; it exceeds it by a boundary effect that
   vanishes as the input grows (≤ 0.75 % on the committed MNIST layers, ≤ 1.1 % on random
   CIFAR-10 6C2F layers, up to 15 % on tiny 6 × 5 inputs), and costs about a second per layer at
   most (tests/benchmarks/bench_spectral.py).

The rounding terms are tiny (c₁ ≲ n²u·μ ≈ 4e-9·μ for n = 6272), so ``bound`` exceeds ‖A‖₂ by
about δ/2 on the explicit route. Assumptions: IEEE float64 with round-to-nearest, no underflow, LAPACK Cholesky with
conventional (non-Strassen) BLAS; the computation runs on the CPU whatever the model's device.

Cost (2-core CPU): an MNIST 4C3F net (largest Gram 6272 × 6272, half-bandwidth ≤ 991) takes
seconds; the banded factorisation is what makes this cheap (n·b² instead of n³/3 flops). A
32 × 32 × 32-channel CIFAR convolution (n = 32768, b = 2143) would need ~0.6 GB for the band and
~2 GB for the sparse Gram matrix: it takes the circulant route (~1 s). A random-weight CIFAR-10
6C2F stack takes ~14 s in all (explicit for n ≤ 8192, circulant above), 1.7 s with the circulant
route forced everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

U64 = 2.0 ** -53
"""Unit roundoff of IEEE float64 (round to nearest)."""


def gamma(k: int) -> float:
    """γ_k = k·u/(1 − k·u) for float64 (Higham's constant for k rounded operations)."""
    ku = k * U64
    if ku >= 0.5:
        raise ValueError(f"k = {k} is too large for the rounding bound (need k·u < 1/2)")
    return ku / (1.0 - ku)


def _up(x: float, factor_ulps: int = 4) -> float:
    """x·(1 + factor_ulps·u), which exceeds x by more than the rounding of a few operations."""
    return x * (1.0 + factor_ulps * U64)


# ---------------------------------------------------------------------------------------------
# Explicit operators
# ---------------------------------------------------------------------------------------------


def _conv_geometry(weight, input_shape, stride, padding):
    """Validated geometry of a zero-padded 2-D convolution: ``(w, (C_out, C_in, k_h, k_w), (H, W),
    (s, p), (H_out, W_out))`` with ``w`` the float64 weights. ``ValueError`` for a weight that is
    not 4-D, an ``input_shape`` other than ``(C_in, H, W)``, stride < 1, padding < 0, or a kernel
    larger than the padded input."""
    w = _as_float64(weight)
    if w.ndim != 4:
        raise ValueError(f"weight must be [C_out, C_in, k_h, k_w], got shape {w.shape}")
    c_out, c_in, kh, kw = w.shape
    if len(input_shape) != 3 or int(input_shape[0]) != c_in:
        raise ValueError(f"input_shape must be (C_in={c_in}, H, W), got {input_shape}")
    if int(stride) < 1 or int(padding) < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    _, h, wd = (int(v) for v in input_shape)
    s, p = int(stride), int(padding)
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"the kernel {kh}x{kw} is larger than the padded input {h + 2 * p}x{wd + 2 * p}")
    return w, (c_out, c_in, kh, kw), (h, wd), (s, p), (ho, wo)


def conv2d_matrix(weight, input_shape: tuple[int, int, int], stride: int, padding: int) -> scipy.sparse.csr_matrix:
    """The exact float64 matrix of u ↦ ``conv2d(u, weight, stride=stride, padding=padding)``.

    Args:
        weight: ``[C_out, C_in, k_h, k_w]`` (torch tensor or array; converted to float64 exactly).
        input_shape: ``(C_in, H, W)``.
        stride, padding: integers (zero padding, same on every side).

    Returns:
        CSR matrix ``[H_out·W_out·C_out, H·W·C_in]``; rows ordered (o_y, o_x, c_out), columns
        (i_y, i_x, c_in) (position-major, so that Gram matrices are banded). Its entries are the
        weights themselves (no arithmetic), so it is the operator exactly.
    """
    w, (c_out, c_in, kh, kw), (h, wd), (s, p), (ho, wo) = _conv_geometry(weight, input_shape, stride, padding)
    oy = np.arange(ho)[:, None, None, None, None, None]
    ox = np.arange(wo)[None, :, None, None, None, None]
    co = np.arange(c_out)[None, None, :, None, None, None]
    ci = np.arange(c_in)[None, None, None, :, None, None]
    ky = np.arange(kh)[None, None, None, None, :, None]
    kx = np.arange(kw)[None, None, None, None, None, :]
    iy, ix = oy * s - p + ky, ox * s - p + kx
    shape = (ho, wo, c_out, c_in, kh, kw)
    valid = np.broadcast_to((iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd), shape)
    rows = np.broadcast_to((oy * wo + ox) * c_out + co, shape)[valid]
    cols = np.broadcast_to((iy * wd + ix) * c_in + ci, shape)[valid]
    vals = np.broadcast_to(w[None, None], shape)[valid]
    return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(ho * wo * c_out, h * wd * c_in))


def conv2d_input_order(input_shape: tuple[int, int, int]) -> np.ndarray:
    """Permutation ``perm`` with ``x.reshape(-1)[perm]`` = x in :func:`conv2d_matrix`'s column order."""
    c, h, w = (int(s) for s in input_shape)
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _as_float64(weight) -> np.ndarray:
    if hasattr(weight, "detach"):
        weight = weight.detach().cpu().double().numpy()
    return np.asarray(weight, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# The bound
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralBound:
    """Result of :func:`spectral_norm_upper`.

    Attributes:
        bound: proven upper bound on ‖A‖₂ (float64).
        estimate: √λ̂, the eigen-solver's estimate of ‖A‖₂ (not a bound).
        right_vector: unit estimate of the top right singular vector (A's column order), or
            None (``method="circulant"``, which never forms A).
        gram_size: n, the side of the Gram matrix used (per frequency for ``"circulant"``).
        bandwidth: its half-bandwidth b (the factorisation is banded when (b + 1)·2 < n); for
            ``"circulant"`` the number of frequencies F.
        delta: the relative shift δ at which the Cholesky test passed.
        method: ``"explicit"`` (:func:`spectral_norm_upper`) or ``"circulant"``
            (:func:`conv2d_circulant_bound`).
    """

    bound: float
    estimate: float
    right_vector: np.ndarray | None
    gram_size: int
    bandwidth: int
    delta: float
    method: str = "explicit"


def _top_eigen(G, v0: np.ndarray | None) -> tuple[float, np.ndarray]:
    """λ̂ ≈ λ_max(G) and its eigenvector (an estimate; the bound never relies on its accuracy)."""
    n = G.shape[0]
    if n <= 1600:
        vals, vecs = np.linalg.eigh(G.toarray() if scipy.sparse.issparse(G) else G)
        return float(vals[-1]), vecs[:, -1]
    if v0 is None or not np.all(np.isfinite(v0)) or not np.any(v0):
        v0 = np.ones(n) + np.linspace(0.0, 1.0, n)
    vals, vecs = scipy.sparse.linalg.eigsh(G, k=3, which="LA", tol=1e-11, ncv=min(n - 1, 24), v0=v0,
                                           maxiter=20 * n)
    i = int(np.argmax(vals))
    return float(vals[i]), vecs[:, i]


def _cholesky_passes(upper: scipy.sparse.coo_matrix, diag: np.ndarray, mu: float, bandwidth: int) -> bool:
    """Whether LAPACK's Cholesky of M̃ = fl(μI − G̃) (upper triangle ``upper``, strict) completes."""
    n = diag.shape[0]
    if 2 * (bandwidth + 1) < n:  # banded storage: ab[b + i − j, j] = M[i, j] for i ≤ j
        ab = np.zeros((bandwidth + 1, n))
        ab[bandwidth + upper.row - upper.col, upper.col] = -upper.data
        ab[bandwidth] = mu - diag
        try:
            scipy.linalg.cholesky_banded(ab, overwrite_ab=True, lower=False, check_finite=False)
        except np.linalg.LinAlgError:
            return False
        return True
    M = np.zeros((n, n))
    M[upper.row, upper.col] = -upper.data
    M[np.arange(n), np.arange(n)] = mu - diag
    try:
        scipy.linalg.cholesky(M, lower=False, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return False
    return True


def spectral_norm_upper(A, v0: np.ndarray | None = None, max_tries: int = 40) -> SpectralBound:
    """A proven upper bound on ‖A‖₂ for an explicit matrix ``A`` (float64), see the module docstring.

    Args:
        A: ``[m, n]`` scipy sparse matrix or dense array (e.g. from :func:`conv2d_matrix`).
        v0: optional start vector ``[n]`` for the eigen-solver (e.g. a persisted power-iteration
            iterate): only speeds up the estimate, never changes what is proven.
        max_tries: at most this many Cholesky tests (δ grows ×16 after each failure).

    Returns:
        :class:`SpectralBound` with ``bound`` ≥ ‖A‖₂ (a theorem, given IEEE float64 arithmetic).
    """
    if scipy.sparse.issparse(A):
        A = scipy.sparse.csr_matrix(A, dtype=np.float64)
        entries = A.data
    else:
        A = np.asarray(A, dtype=np.float64)
        entries = A.ravel()
    if A.ndim != 2:
        raise ValueError(f"A must be a matrix, got shape {A.shape}")
    m, n_in = A.shape
    if not np.all(np.isfinite(entries)):
        raise ValueError("A must have finite entries")
    if not np.any(entries):
        v = np.zeros(n_in)
        v[0] = 1.0
        return SpectralBound(0.0, 0.0, v, min(m, n_in), 0, 0.0)
    output_side = m <= n_in
    G = A @ A.T if output_side else A.T @ A   # sparse product, or conventional BLAS gemm
    if scipy.sparse.issparse(G):
        G = G.tocsr()
        upper = scipy.sparse.triu(G, k=1).tocoo()
    else:
        upper = scipy.sparse.coo_matrix(np.triu(G, k=1))
    diag = np.array(G.diagonal(), dtype=np.float64)
    n = G.shape[0]
    bandwidth = int((upper.col - upper.row).max()) if upper.nnz else 0
    if v0 is not None:
        v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
        if v0.shape != (n_in,):
            raise ValueError(f"v0 must have {n_in} entries, got {v0.shape}")
        if output_side:
            v0 = A @ v0
    lam_hat, vec = _top_eigen(G, v0)
    if output_side:  # right singular vector from the left one
        vec = A.T @ vec
    vec = vec / max(np.linalg.norm(vec), np.finfo(np.float64).tiny)
    lam_hat = max(lam_hat, 0.0)
    diag_max = float(diag.max())
    fro2 = _up(float(np.sum(entries * entries)) * (1.0 + gamma(entries.size + 2)))   # ≥ ‖A‖_F²
    c3 = _up(gamma(max(m, n_in)) * fro2)
    delta = 2.0 ** -30
    floor = diag_max * 2.0 ** -40  # a positive shift even when λ̂ underestimates badly or is 0
    for _ in range(int(max_tries)):
        mu = max(lam_hat * (1.0 + delta), lam_hat + floor)
        if _cholesky_passes(upper, diag, mu, bandwidth):
            g1 = gamma(n + 1)
            scale = _up(mu + diag_max)
            c1 = _up(g1 / (1.0 - g1) * n * scale)
            c2 = _up(U64 * scale)
            U = _up(mu + c1 + c2 + c3)
            return SpectralBound(_up(math.sqrt(U)), math.sqrt(lam_hat), vec, n, bandwidth, delta)
        delta *= 16.0
        floor *= 16.0
    raise RuntimeError(f"Cholesky test failed {max_tries} times (δ = {delta:.3g}); A has non-finite or huge entries?")


def dense_spectral_bound(weight, v0=None) -> SpectralBound:
    """:func:`spectral_norm_upper` of a dense layer's ``weight`` ``[out, in]`` (y = W x), dense BLAS."""
    w = _as_float64(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be [out_features, in_features], got shape {w.shape}")
    return spectral_norm_upper(w, v0=v0)


def conv2d_route(weight_shape, input_shape, stride: int, padding: int, max_gram_size: int | None = None) -> str:
    """``"explicit"`` or ``"circulant"``: the route :func:`conv2d_spectral_bound` takes for a
    convolution with ``weight_shape`` ``[C_out, C_in, k_h, k_w]`` on ``input_shape`` ``(C_in, H, W)``:
    circulant when n = min(H_out·W_out·C_out, C_in·H·W) > ``max_gram_size`` (default
    :data:`MAX_EXPLICIT_GRAM`)."""
    limit = MAX_EXPLICIT_GRAM if max_gram_size is None else int(max_gram_size)
    if len(weight_shape) != 4 or len(input_shape) != 3:
        raise ValueError(f"need a [C_out, C_in, k_h, k_w] weight and a (C_in, H, W) input, got {weight_shape}, {input_shape}")
    c_out, _, kh, kw = (int(v) for v in weight_shape)
    c_in, h, wd = (int(v) for v in input_shape)
    s, p = int(stride), int(padding)
    if s < 1 or p < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    rows = max((h + 2 * p - kh) // s + 1, 0) * max((wd + 2 * p - kw) // s + 1, 0) * c_out
    return "circulant" if min(rows, c_in * h * wd) > limit else "explicit"


def conv2d_spectral_bound(weight, input_shape, stride: int, padding: int, v0=None,
                          max_gram_size: int | None = None) -> SpectralBound:
    """A proven upper bound on ‖A‖₂ of a zero-padded, strided ``conv2d`` on inputs of ``input_shape``.

    The route depends on n = min(rows, cols) of the operator (the side of its Gram matrix):

    * n ≤ ``max_gram_size`` (default :data:`MAX_EXPLICIT_GRAM` = 8192): :func:`spectral_norm_upper`
      of the explicit operator (within ~1e-8 relative of ‖A‖₂);
    * otherwise :func:`conv2d_circulant_bound` (the circular convolution's norm; within a few
      1e-2 relative, no explicit operator, seconds at most).

    ``v0`` (optional start vector) and ``right_vector`` are in the layer's own (C, H, W) order,
    flattened; the circulant route ignores ``v0`` and returns ``right_vector=None``.
    """
    w = _as_float64(weight)
    if conv2d_route(w.shape, input_shape, stride, padding, max_gram_size) == "circulant":
        return conv2d_circulant_bound(w, input_shape, stride, padding)
    perm = conv2d_input_order(input_shape)
    if v0 is not None:
        v0 = _as_float64(v0).reshape(-1)[perm]
    res = spectral_norm_upper(conv2d_matrix(w, input_shape, stride, padding), v0=v0)
    v = np.empty_like(res.right_vector)
    v[perm] = res.right_vector
    return SpectralBound(res.bound, res.estimate, v, res.gram_size, res.bandwidth, res.delta)


# ---------------------------------------------------------------------------------------------
# Fallback for large convolutions: the circulant (Fourier) bound
# ---------------------------------------------------------------------------------------------

MAX_EXPLICIT_GRAM = 8192
"""Largest Gram side n = min(rows, cols) of a convolution's operator for which
:func:`conv2d_spectral_bound` uses the explicit route (:func:`spectral_norm_upper`); larger
convolutions use :func:`conv2d_circulant_bound`. At n = 8192 the explicit route needs ≲ 0.1 GB
for the band and tens of CPU-seconds (eigsh plus the banded Cholesky); at n = 32768 (a
32 × 32 × 32 CIFAR-10 feature map) ~0.6 GB and minutes. Every committed MNIST layer
(n ≤ 6272) stays on the explicit route."""

TRIG_ABS_ERROR = 2.0 ** -45
"""Assumed bound on the absolute error of the computed cos(θ̃), sin(θ̃) for the rounded angle θ̃
of a Fourier phase (≈ 256 u): the angle's own rounding contributes ≤ 19u and libm's cos and sin
err by ≤ 1 ulp ≤ 2u on [0, 2π) (glibc's documented maximum; numpy's SIMD versions ≤ 4 ulp)."""


def conv2d_polyphase(weight, input_shape: tuple[int, int, int], stride: int, padding: int):
    """The stride-1 correlation that a strided, zero-padded ``conv2d`` is a restriction of.

    Writing the padded input index t = s·a + r (phase r ∈ [0, s)) and the kernel index
    κ = s·m + r, a stride-s convolution with a k_h × k_w kernel on C_in channels is a stride-1
    correlation y[o] = Σ_m w'[:, :, m] x'[o + m] on the s²·C_in "phase channels"
    x'[(c, r_y, r_x), a] = x_pad[c, s·a_y + r_y, s·a_x + r_x], with the kernel
    w'[c_o, (c, r_y, r_x), m] = w[c_o, c, s·m_y + r_y, s·m_x + r_x] (0 where the index ≥ k) of size
    ⌈k_h/s⌉ × ⌈k_w/s⌉. The outputs read a ∈ [0, N_y) × [0, N_x) with N = H_out − 1 + ⌈k/s⌉.

    Returns:
        ``(w', (N_y, N_x))`` with ``w'`` ``[C_out, C_in·s², ⌈k_h/s⌉, ⌈k_w/s⌉]`` float64 (a copy
        of the weights and zeros: exact) and the torus size N.
    """
    w, (c_out, c_in, kh, kw), (h, wd), (s, p), (ho, wo) = _conv_geometry(weight, input_shape, stride, padding)
    my, mx = -(-kh // s), -(-kw // s)
    wp = np.zeros((c_out, c_in, s, s, my, mx))
    for ry in range(s):
        for rx in range(s):
            sub = w[:, :, ry::s, rx::s]
            wp[:, :, ry, rx, :sub.shape[2], :sub.shape[3]] = sub
    return wp.reshape(c_out, c_in * s * s, my, mx), (ho - 1 + my, wo - 1 + mx)


def _fourier_symbols(wp: np.ndarray, torus: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Re and Im of K̃(ω) = Σ_m w'_m e^{2πi⟨m, ω⟩/N} for all ω on the torus: ``[F, C_out, C']`` each.

    The phase ⟨m, ω⟩/N is reduced modulo 1 in integers (exact), so the angle has 3 roundings.
    """
    c_out, c_ph, my, mx = wp.shape
    ny, nx = torus
    m_y = np.repeat(np.arange(my), mx)[:, None]
    m_x = np.tile(np.arange(mx), my)[:, None]
    w_y = np.repeat(np.arange(ny), nx)[None, :]
    w_x = np.tile(np.arange(nx), ny)[None, :]
    q = ((m_y * w_y) % ny * nx + (m_x * w_x) % nx * ny) % (ny * nx)          # exact integers
    theta = (q / float(ny * nx)) * (2.0 * math.pi)
    W2 = wp.reshape(c_out * c_ph, my * mx)
    re = (W2 @ np.cos(theta)).reshape(c_out, c_ph, -1).transpose(2, 0, 1)
    im = (W2 @ np.sin(theta)).reshape(c_out, c_ph, -1).transpose(2, 0, 1)
    return re, im


def conv2d_circulant_bound(weight, input_shape, stride: int, padding: int, max_tries: int = 40) -> SpectralBound:
    """A proven upper bound on ‖A‖₂ of a zero-padded, strided ``conv2d`` without its explicit matrix.

    Sedghi, Gupta and Long (ICLR 2019): a circular convolution on an N_y × N_x torus is block-
    diagonalised by the unitary DFT, so its norm is max_ω ‖K̂(ω)‖₂ over the N_y·N_x frequencies,
    with K̂(ω) = Σ_m w'_m e^{2πi⟨m, ω⟩/N} ``[C_out, C']``. Here w' and N are those of
    :func:`conv2d_polyphase`.

    **Theorem.** ‖A‖₂ ≤ max_ω ‖K̂(ω)‖₂ ≤ ``bound``.

    *Proof.* (i) A = P C J: J copies each input pixel that some output reads, x[c, i] with padded
    index t = i + p = s·a + r, to the phase channel (c, r) at torus position a (distinct (a, r)
    for distinct t, and a < N, so J is a coordinate injection, ‖J‖ ≤ 1; pixels that no output
    reads are columns of zeros of A and are dropped); C is the circular correlation
    (Cx')[o] = Σ_m w'_m x'[(o + m) mod N] on the torus; P keeps the outputs o < H_out (‖P‖ ≤ 1).
    For o < H_out and m < ⌈k/s⌉, o + m < N: no index wraps, and where x' is not a read pixel
    (padding, or beyond the input) either it is 0 or w'_m is 0, so (CJx)[o] = (Ax)[o]. Hence
    ‖A‖₂ ≤ ‖C‖₂ = max_ω ‖K̂(ω)‖₂. A stride-1 convolution is the case s = 1, N = H + 2p.
    (ii) Rounding of the symbol. The angle 2π·q/(N_y N_x), q an exact integer, has absolute error
    ≤ 3.01u·2π < 19u; with libm's error, each computed cos/sin has absolute error ≤ ε_t =
    :data:`TRIG_ABS_ERROR` (an assumption with 10× margin, see there). Each entry of Re K̃ and Im K̃
    is a float dot product of length M = ⌈k_h/s⌉⌈k_w/s⌉, so (Higham eq. 3.5)
    |K̃ − K̂| ≤ √2·ε_e·S entrywise with ε_e = ε_t + γ_M(1 + ε_t), S_{ij} = Σ_m |w'_{ij,m}|, and
    ‖K̃(ω) − K̂(ω)‖₂ ≤ ‖K̃ − K̂‖_F ≤ η := √2·ε_e·√M·‖w‖_F (Cauchy–Schwarz: ‖S‖_F² ≤ M‖w‖_F²).
    (iii) Each ‖K̃(ω)‖₂ = ‖R(ω)‖₂ for the real matrix R = [[Re K̃, −Im K̃], [Im K̃, Re K̃]] (unitarily
    similar to diag(K̃, conj K̃); formed without arithmetic). The Gram matrices G(ω) of the R(ω)
    on their smaller side (n × n) are bounded together by the Cholesky test of
    :func:`spectral_norm_upper` with one shift μ = max_ω λ̂(ω)·(1 + δ): if LAPACK's Cholesky of
    every fl(μI − G̃(ω)) completes, then, with the constants c₁, c₂ of the module docstring (same
    n, max_i g̃_ii over all ω) and c₃ = γ_L·max_ω ‖R(ω)‖_F² (L the inner length), every
    ‖R(ω)‖₂² ≤ U = μ + c₁ + c₂ + c₃. So ‖A‖₂ ≤ √U + η, evaluated with upward slack. ∎

    Tightness: the bound is the norm of the circular convolution, i.e. of the symbol on a grid;
    it exceeds ‖A‖₂ by a boundary effect that vanishes as H, W → ∞ (the zero-padded operator's norm
    tends to sup_θ ‖K̂(θ)‖₂ from below, while the grid maximum approaches it from below too, and
    is ≥ ‖A‖₂ at every size): measured ≤ 1.1e-2 relative on random CIFAR-10 6C2F layers
    (32 × 32 × 3 input), ≤ 7.5e-3 on the committed MNIST layers, up to 0.15 on tiny (6 × 5)
    inputs (tests/benchmarks/bench_spectral.py). For a fixed input size it does not converge to
    ‖A‖₂ (its value is the circular convolution's norm, which Gram iteration on the symbols
    would also converge to from above); where the explicit route's ~1e-8 is needed, raise
    ``max_gram_size`` of :func:`conv2d_spectral_bound`. Cost: F = N_y·N_x small eigenvalue problems
    and Cholesky factorisations, 0.5–1.5 s for a 32 × 32 × 32 → 32 convolution on one loaded
    core (its explicit Gram matrix would have side 32768).

    Returns:
        :class:`SpectralBound` with ``method="circulant"``, ``gram_size`` = n (per frequency),
        ``bandwidth`` = F (number of frequencies), ``right_vector`` None.
    """
    wp, torus = conv2d_polyphase(weight, input_shape, stride, padding)
    if not np.all(np.isfinite(wp)):
        raise ValueError("weight must have finite entries")
    c_out, c_ph, my, mx = wp.shape
    M = my * mx
    fro2 = _up(float(np.sum(wp * wp)) * (1.0 + gamma(wp.size + 2)))          # ≥ ‖w‖_F² (no underflow)
    if not np.any(wp):
        return SpectralBound(0.0, 0.0, None, 2 * min(c_out, c_ph), torus[0] * torus[1], 0.0, "circulant")
    eps_e = _up(TRIG_ABS_ERROR + gamma(M) * (1.0 + TRIG_ABS_ERROR))
    eta = _up(math.sqrt(2.0) * eps_e * math.sqrt(M) * _up(math.sqrt(fro2)), 8)
    re, im = _fourier_symbols(wp, torus)
    R = np.block([[re, -im], [im, re]])                                       # [F, 2 C_out, 2 C']
    del re, im
    output_side = R.shape[1] <= R.shape[2]
    G = R @ R.transpose(0, 2, 1) if output_side else R.transpose(0, 2, 1) @ R
    n, L = G.shape[1], max(R.shape[1], R.shape[2])
    rfro2 = _up(float(np.max(np.sum(R * R, axis=(1, 2)))) * (1.0 + gamma(R.shape[1] * R.shape[2] + 2)))
    del R
    iu = np.triu_indices(n, 1)
    G[:, iu[1], iu[0]] = G[:, iu[0], iu[1]]                                   # the upper triangle, mirrored
    diag = np.diagonal(G, axis1=1, axis2=2).copy()
    lam_hat = max(float(np.max(np.linalg.eigvalsh(G))), 0.0)
    diag_max = float(diag.max())
    c3 = _up(gamma(L) * rfro2)
    delta = 2.0 ** -30
    floor = diag_max * 2.0 ** -40
    G *= -1.0                                                                 # −G̃ (exact)
    eye = np.arange(n)
    for _ in range(int(max_tries)):
        mu = max(lam_hat * (1.0 + delta), lam_hat + floor)
        M_ = G.copy()
        M_[:, eye, eye] = mu - diag                                           # fl(μ − g̃_ii)
        try:
            np.linalg.cholesky(M_)
        except np.linalg.LinAlgError:
            delta *= 16.0
            floor *= 16.0
            continue
        g1 = gamma(n + 1)
        scale = _up(mu + diag_max)
        c1 = _up(g1 / (1.0 - g1) * n * scale)
        c2 = _up(U64 * scale)
        U = _up(mu + c1 + c2 + c3)
        bound = _up(_up(math.sqrt(U)) + eta)
        return SpectralBound(bound, math.sqrt(lam_hat), None, n, torus[0] * torus[1], delta, "circulant")
    raise RuntimeError(f"Cholesky test failed {max_tries} times (δ = {delta:.3g}); non-finite or huge weights?")


__all__ = ["gamma", "U64", "conv2d_matrix", "conv2d_input_order", "spectral_norm_upper", "SpectralBound",
           "dense_spectral_bound", "conv2d_spectral_bound", "conv2d_route", "conv2d_polyphase", "conv2d_circulant_bound",
           "MAX_EXPLICIT_GRAM", "TRIG_ABS_ERROR"]
