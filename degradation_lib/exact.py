"""An exact certifier: multiclass linear classifiers, where Definition 2 can be decided exactly.

For f(x) = argmax_i (W x + b)_i with predicted class j, the region where f predicts j is the
polytope {x : (w_j − w_i)·x + b_j − b_i ≥ 0 for all i ≠ j}. The ℓp distance from x to the
hyperplane of constraint i is m_i / ‖w_j − w_i‖_q with margin m_i = y_j − y_i and q the dual
norm (1/p + 1/q = 1), and the distance to the complement of the polytope is the smallest of
these. Hence the *exact* certified radius

    r(x) = min_{i ≠ j} (y_j − y_i) / ‖w_j − w_i‖_q,

and f is (ε, ℓp)-locally robust at x (Definition 2) exactly when ε < r(x), up to the
measure-zero boundary where ties are broken. Used by notebook 01 (Figure 1) and by the
monotonicity checks of notebook 02 (Lemma 6: an exact check is monotone).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .certifier import ABSTAIN, Certifier, check_input, check_norm


def dual_norm(p: float) -> float:
    """q with 1/p + 1/q = 1 for p ∈ {1, 2, ∞}."""
    p = check_norm(p)
    return {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]


class LinearCertifier(Certifier):
    """Exact (ε, ℓp) certifier for the linear classifier f(x) = argmax(W x + b).

    Args:
        weight: ``[C, d]`` matrix W (C ≥ 2 classes).
        bias: ``[C]`` vector b (zeros when None).
        norm: p ∈ {1, 2, ∞}, the norm of the threat model.
        unit_range: require inputs in [0, 1] (Definition 1's domain). Radii are distances in
            all of R^d, as in Definition 2.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, norm: float = 2.0,
                 unit_range: bool = True):
        weight = torch.as_tensor(weight)
        if weight.dim() != 2 or weight.shape[0] < 2:
            raise ValueError(f"weight must have shape [C, d] with C >= 2, got {tuple(weight.shape)}")
        if not weight.is_floating_point():
            weight = weight.to(torch.get_default_dtype())
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
        bias = torch.as_tensor(bias, dtype=weight.dtype)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
        self.norm = check_norm(norm)
        self.unit_range = unit_range
        self.model = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            self.model.weight.copy_(weight)
            self.model.bias.copy_(bias)
        self.model.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        return self.model.out_features

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        return check_input(x, ndim=2, shape=(self.model.in_features,), unit_range=self.unit_range)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = argmax_i (W x + b)_i, int64 ``[N]`` (lowest index among ties)."""
        x = self._check(x)
        return self.model(x.to(self.model.weight.dtype)).argmax(dim=1)

    def margins(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labels j ``[N]``, margins y_j − y_i ``[N, C]`` and dual norms ‖w_j − w_i‖_q ``[N, C]``.

        The entries i = j hold margin +inf and norm 1, so that a minimum of margin/norm skips them.
        """
        x = self._check(x).to(self.model.weight.dtype)
        y = self.model(x)
        j = y.argmax(dim=1)
        margin = y.gather(1, j[:, None]) - y                           # [N, C]
        diff = self.model.weight[j][:, None, :] - self.model.weight[None, :, :]   # [N, C, d]
        gnorm = torch.linalg.vector_norm(diff, ord=dual_norm(self.norm), dim=2)  # [N, C]
        top = torch.nn.functional.one_hot(j, self.num_classes).bool()
        margin = margin.masked_fill(top, math.inf)
        gnorm = gnorm.masked_fill(top, 1.0)
        return j, margin, gnorm

    monotone = True          # exact (Lemma 6)
    per_class_scores = True

    @property
    def input_shape(self) -> tuple:
        return (self.model.in_features,)

    def rejection_score(self, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None,
                        per_class: bool = False) -> torch.Tensor:
        """s(x) = max_{i≠l} (ε·‖w_l − w_i‖_q − (y_l − y_i)), differentiable (linear) in ``x``.

        s(x) < 0 exactly when every margin exceeds ε times its dual norm, i.e. when r(x) > ε
        and l = f(x): exactly where ``certify(x, eps)`` returns l. ``labels`` default to f(x);
        ``per_class`` returns ``[N, C]`` (−inf at i = l).
        """
        from .certifier import check_eps
        eps = check_eps(eps)
        x = self._check(x).to(self.model.weight.dtype)
        y = self.model(x)
        if labels is None:
            labels = y.detach().argmax(dim=1)
        labels = self._check_labels(labels, x.shape[0], y.device)
        W = self.model.weight
        gnorm = torch.linalg.vector_norm(W[labels][:, None, :] - W[None, :, :], ord=dual_norm(self.norm), dim=2)
        per = (eps * gnorm - (y.gather(1, labels[:, None]) - y)).masked_fill(
            torch.nn.functional.one_hot(labels, self.num_classes).bool(), -math.inf)
        return per if per_class else per.max(dim=1).values

    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact radius r(x) = min_{i≠j} (y_j − y_i)/‖w_j − w_i‖_q, in the dtype of W.

        Returns ``(labels, radius)`` ``[N]``; the label is never ``ABSTAIN`` (an exact method
        does not abstain); the radius is 0 at ties and +inf when no other class can ever win.
        """
        j, margin, gnorm = self.margins(x)
        # A class whose weight row equals w_j differs by a constant: it never wins if the margin
        # is positive (ratio +inf) and is tied everywhere otherwise (radius 0).
        ratio = torch.where(gnorm > 0, margin / gnorm,
                            torch.where(margin > 0, torch.full_like(margin, math.inf), torch.zeros_like(margin)))
        top = torch.nn.functional.one_hot(j, self.num_classes).bool()
        radius = ratio.masked_fill(top, math.inf).min(dim=1).values.clamp_min(0)
        return j, radius


__all__ = ["LinearCertifier", "dual_norm", "ABSTAIN"]
