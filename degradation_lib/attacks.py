"""Attacks: the projection step of Algorithm 3.1 (PGD, Algorithm 3.1 and ε-PGD follow here).

All attacks take and return batched inputs ``[N, ...]`` in [0, 1].
"""

from __future__ import annotations

import math

import torch

from .certifier import check_eps, check_norm


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: float) -> torch.Tensor:
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

    Returns:
        ``[N, ...]`` with ‖x' − x‖_p ≤ ε (up to float rounding) and values in [0, 1].
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    delta = x_adv - x
    if norm == 2.0:
        flat = delta.flatten(1)
        length = torch.linalg.vector_norm(flat, ord=2, dim=1, keepdim=True)
        scale = torch.where(length > eps, eps / length.clamp_min(torch.finfo(delta.dtype).tiny),
                            torch.ones_like(length))
        delta = (flat * scale).view_as(delta)
    elif norm == math.inf:
        delta = delta.clamp(-eps, eps)
    else:
        raise ValueError(f"norm must be 2 or float('inf') for project, got {norm!r}")
    return (x + delta).clamp(0.0, 1.0)


__all__ = ["project"]
