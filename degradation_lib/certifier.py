"""The certifier interface shared by every defense, and Algorithm 2.1 (PredictWithDefense).

Section 2 of the paper: a certified run-time defense returns f(x') only when f is
(ε, ℓp)-locally robust at x' (Definition 2), and ⊥ otherwise. Every certifier in this
library -- the exact linear certifier (:mod:`degradation_lib.exact`), GloRo nets, randomized
smoothing and ℓ∞ bound propagation -- implements :class:`Certifier`.

Conventions used throughout the library
---------------------------------------
* ``ABSTAIN == -1`` is the label ⊥.
* A point is certified at ε exactly when its certified radius is *strictly* larger than ε,
  ``certify(x, eps) == label`` ⇔ ``radius > eps``. A radius of 0 means "not certified".
* Inputs are batched tensors ``[N, ...]`` with values in [0, 1]; the device follows the input.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

ABSTAIN: int = -1
"""The label ⊥ returned when the (ε, ℓp)-local-robustness check fails."""

NORMS = (1.0, 2.0, math.inf)


def check_norm(norm) -> float:
    """Return ``norm`` as a float in {1, 2, inf}; raise ``ValueError`` otherwise."""
    try:
        p = float(norm)
    except (TypeError, ValueError):
        raise ValueError(f"norm must be 1, 2 or float('inf'), got {norm!r}") from None
    if p not in NORMS:
        raise ValueError(f"norm must be 1, 2 or float('inf'), got {norm!r}")
    return p


def check_eps(eps, name: str = "eps") -> float:
    """Return ``eps`` as a float; raise ``ValueError`` unless it is finite and > 0."""
    if isinstance(eps, torch.Tensor):
        if eps.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(eps.shape)}")
        eps = eps.item()
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {eps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {eps!r}")
    return value


def check_input(x, ndim: int | None = None, shape: tuple | None = None, name: str = "x",
                unit_range: bool = True) -> torch.Tensor:
    """Validate a batch of inputs at a public boundary.

    Args:
        x: tensor ``[N, ...]``.
        ndim: required number of dimensions (batch included), or None.
        shape: required per-example shape ``x.shape[1:]``, or None.
        unit_range: require every value in [0, 1] (the input domain of Definition 1).

    Raises ``ValueError`` naming ``name`` for a non-tensor, a wrong shape, NaN/inf values or
    values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions [N, ...], got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have per-example shape {tuple(shape)}, got {tuple(x.shape[1:])}")
    if x.numel():
        # one pass over x: min and max propagate NaN, and any ±inf entry is the min or the max
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if unit_range and (lo < 0 or hi > 1):
            raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return x


class Certifier(abc.ABC):
    """A classifier f together with an (ε, ℓp)-local-robustness check (Section 2).

    Public attributes:
        model: the underlying network, an ``nn.Module`` mapping ``[N, ...]`` inputs to class
            logits ``[N, C]``.
        norm: ``2.0`` or ``float("inf")`` (``1.0`` for the exact linear certifier).

    Subclasses implement :meth:`certified_radius` and :meth:`predict`; they may override
    :meth:`certify` with a cheaper test (GloRo's ⊥ logit), which must agree with
    ``radius > eps``. Method settings (σ, n, α, ...) are fixed at construction.
    """

    model: nn.Module
    norm: float

    input_shape: tuple | None = None
    """Per-example input shape ``x.shape[1:]`` the certifier accepts (None: not fixed)."""

    monotone: bool = False
    """Whether the check is monotonic (Definition 4, Appendix A): ``cert(x, ε)`` and
    ‖x − x'‖_p < ε imply ``cert(x', ε − ‖x − x'‖_p)``. For such a check, a point certified at 2ε
    cannot be degraded at ε (Section 3.3.2): attacks may skip it. True for exact and
    Lipschitz-based checks (Lemmas 6 and 8); randomized smoothing only in the infinite-sample
    limit (and with high probability in practice)."""

    score_is_exact: bool = True
    """Whether the sign of :meth:`rejection_score` decides :meth:`certify` exactly (False for a
    surrogate, e.g. randomized smoothing, where CERTIFY's Monte Carlo test decides)."""

    per_class_scores: bool = False
    """Whether :meth:`rejection_score` accepts ``per_class=True`` (one score per competing class,
    whose maximum is the score): attacks then aim at each runner-up class in turn."""

    @property
    def num_classes(self) -> int:
        """C, the number of classes (labels ``0 .. C − 1``). Subclasses override this property or
        assign it in ``__init__``."""
        value = self.__dict__.get("_num_classes")
        if value is None:
            raise NotImplementedError(f"{type(self).__name__} does not declare num_classes")
        return value

    @num_classes.setter
    def num_classes(self, value: int) -> None:
        self.__dict__["_num_classes"] = int(value)

    def rejection_score(self, x: torch.Tensor, eps: float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A per-point score of the check's rejection at ε, differentiable in ``x``.

        Args:
            x: inputs ``[N, ...]`` in [0, 1] (gradients flow through).
            eps: ε > 0.
            labels: int64 ``[N]``, the labels the check should return (default: the
                certifier's prediction at ``x``; pass the label of the clean input when
                attacking).

        Returns:
            ``[N]`` scores: ``< 0`` exactly where ``certify(x, eps)`` returns ``labels``, ``≥ 0``
            where it does not (abstains or returns another label). Surrogates
            (``score_is_exact = False``) only approximate this. Certificate-aware attacks
            (:func:`degradation_lib.certificate_attack`) ascend it (Section 3: a degradation
            attack wants the check to reject, not the label to change).

        Subclasses implement it; the base class raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement rejection_score")

    def _check_labels(self, labels, n: int, device) -> torch.Tensor:
        """Validate ``labels`` (int64 ``[n]`` in ``[0, num_classes)``) and move them to ``device``."""
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (n,):
            raise ValueError(f"labels must be an int64 tensor of shape ({n},), got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
        if n and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got values in "
                             f"[{labels.min().item()}, {labels.max().item()}]")
        return labels.to(device)

    @abc.abstractmethod
    def certified_radius(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and certified radii.

        Args:
            x: inputs ``[N, ...]`` in [0, 1].

        Returns:
            ``(labels, radius)``: int64 ``[N]`` predicted labels (``ABSTAIN`` where the method
            abstains) and float ``[N]`` radii in the certifier's norm, 0 where not certified.
            f is (r, ℓp)-locally robust at x for every r < radius.
        """

    @abc.abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The undefended prediction f(x): int64 ``[N]`` (``ABSTAIN`` allowed for smoothing)."""

    def certify(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The (ε, ℓp)-local-robustness check of Algorithm 2.1.

        Returns int64 ``[N]``: f(x) where f is certified (ε, ℓp)-locally robust at x (its
        certified radius exceeds ε), ``ABSTAIN`` elsewhere.
        """
        eps = check_eps(eps)
        labels, radius = self.certified_radius(x)
        return torch.where(radius > eps, labels, torch.full_like(labels, ABSTAIN))

    def to(self, device) -> "Certifier":
        """Move the underlying model to ``device``; returns ``self``."""
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(norm={self.norm})"


def predict_with_defense(certifier: Certifier, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Algorithm 2.1, PredictWithDefense(f, x', ε, ℓp).

    Returns f(x') where f is (ε, ℓp)-locally robust at x' according to ``certifier`` (whose
    ``norm`` is the ℓp), ⊥ (``ABSTAIN``) otherwise. int64 ``[N]`` for ``x`` of shape ``[N, ...]``.
    """
    if not isinstance(certifier, Certifier):
        raise ValueError(f"certifier must implement degradation_lib.Certifier, got {type(certifier).__name__}")
    return certifier.certify(x, check_eps(eps))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
