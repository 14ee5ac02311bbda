"""Rates of Section 3.3 with Clopper–Pearson intervals, and the upper bound of Section 3.3.2.

Notation (Section 3.3): for a test set with labels y,

* ``test_R``: points that are correct *and* certified at ε (the VRA numerator);
* ``test_A ⊆ test_R``: points of test_R where a degradation input x' (‖x' − x‖ ≤ ε) is rejected;
* false-positive rate = |test_A| / |test_R|; utility reduction = |test_A| / |test|;
* upper bound (Section 3.3.2, tight for monotone certifiers, Appendix A):
  1 − P[r > 2ε] / P[r > ε] over correct points, r the certified radius (a point is certified at
  ε exactly when r > ε, the library's convention; :func:`upper_bound_curve` also takes the
  paper's r ≥ ε). One pass of radii gives the bound and the VRA on a whole grid of ε.

Every rate is a :class:`Rate`: a count k out of n with an exact two-sided Clopper–Pearson
interval at confidence 1 − α.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta

from .certifier import ABSTAIN


def clopper_pearson(k, n, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided (1 − α) Clopper–Pearson interval for k successes out of n.

    Vectorised over array-like ``k`` and ``n``. Where n = 0 the interval is [0, 1]. The ends are
    Beta quantiles: lo = B⁻¹(α/2; k, n − k + 1) (0 at k = 0) and hi = the upper α/2 quantile of
    Beta(k + 1, n − k) (1 at k = n), taken with ``beta.isf`` so that a tiny α is not lost in
    1 − α/2 (checked at k ∈ {0, 1, n − 1, n}, n up to 10⁶, in ``tests/test_soundness.py``).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n")
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.isf(alpha / 2, k + 1, n - k), 1.0)  # isf(α/2), not ppf(1 − α/2): exact for tiny α
    lo = np.where(n > 0, np.nan_to_num(lo, nan=0.0), 0.0)
    hi = np.where(n > 0, np.nan_to_num(hi, nan=1.0), 1.0)
    return lo, hi


@dataclass(frozen=True)
class Rate:
    """k out of n, with its (1 − alpha) Clopper–Pearson interval [lo, hi]."""

    k: int
    n: int
    alpha: float = 0.05

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        lo, hi = clopper_pearson(self.k, self.n, self.alpha)
        return float(lo), float(hi)

    @property
    def lo(self) -> float:
        return self.interval[0]

    @property
    def hi(self) -> float:
        return self.interval[1]

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.value:.1%} [{lo:.1%}, {hi:.1%}] ({self.k}/{self.n})"


def rate(mask, of=None, alpha: float = 0.05) -> Rate:
    """The :class:`Rate` of boolean ``mask`` among the entries where ``of`` is true (all if None)."""
    mask = torch.as_tensor(mask, dtype=torch.bool)
    of = torch.ones_like(mask) if of is None else torch.as_tensor(of, dtype=torch.bool)
    if mask.shape != of.shape:
        raise ValueError(f"mask and of must have the same shape, got {tuple(mask.shape)} and {tuple(of.shape)}")
    return Rate(int((mask & of).sum()), int(of.sum()), alpha)


def test_R(y: torch.Tensor, certified_labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[N]``: correct and certified at ε (``certified_labels`` from ``certify(x, ε)``)."""
    return (certified_labels == y) & (certified_labels != ABSTAIN)


def test_A(y: torch.Tensor, certified_labels: torch.Tensor, attacked_labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[N]``: in test_R and rejected at the attack point (``certify(x', ε) == ABSTAIN``)."""
    return test_R(y, certified_labels) & (attacked_labels == ABSTAIN)


@dataclass(frozen=True)
class DegradationReport:
    """The rates of Tables 1-2: VRA, false-positive rate, utility reduction (and VRA at 2ε)."""

    vra: Rate
    false_positive_rate: Rate
    utility_reduction: Rate
    vra_2eps: Rate | None = None
    flipped: Rate | None = None   # test_R points whose attacked label is another class (must be 0)

    def as_dict(self) -> dict:
        out = {}
        for name in ("vra", "false_positive_rate", "utility_reduction", "vra_2eps", "flipped"):
            r = getattr(self, name)
            if r is not None:
                out[name] = dict(k=r.k, n=r.n, value=r.value, lo=r.lo, hi=r.hi)
        return out


def degradation_report(y, certified_labels, attacked_labels, certified_labels_2eps=None,
                       alpha: float = 0.05) -> DegradationReport:
    """Rates of Section 3.3.1 from per-point labels (all int64 ``[N]``, ``ABSTAIN`` = ⊥).

    Args:
        y: true labels.
        certified_labels: ``certify(x, ε)`` at the clean points.
        attacked_labels: ``certify(x', ε)`` at the degradation inputs x'.
        certified_labels_2eps: optional ``certify(x, 2ε)``, for the VRA at 2ε.
    """
    y, c, a = (torch.as_tensor(t) for t in (y, certified_labels, attacked_labels))
    R = test_R(y, c)
    A = test_A(y, c, a)
    flipped = R & (a != ABSTAIN) & (a != y)
    ones = torch.ones_like(R)
    return DegradationReport(
        vra=rate(R, ones, alpha),
        false_positive_rate=rate(A, R, alpha),
        utility_reduction=rate(A, ones, alpha),
        vra_2eps=None if certified_labels_2eps is None else rate(test_R(y, torch.as_tensor(certified_labels_2eps)), ones, alpha),
        flipped=rate(flipped, R, alpha),
    )


def upper_bound_curve(radius, correct, eps_grid, strict: bool = True, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """The false-positive-rate upper bound and the VRA over a grid of radii, from one pass of radii.

    Section 3.3.2 (Figures 2-3, Table 5): with r(x) the certified radius (ℓ2 for GloRo and
    randomized smoothing, ℓ∞ for the Wong-Kolter certifier; the norm is the certifier's, this
    function only compares numbers), the share of correct points certified at ε but not at 2ε,

        upper bound(ε) = 1 − #{correct, r ⋗ 2ε} / #{correct, r ⋗ ε},

    bounds the false-positive rate of *any* degradation attack of radius ε, and equals the best
    attack's rate for a monotone certifier (Appendix A). ``⋗`` is ``>`` when ``strict`` (the
    library's convention: certified at ε exactly when r > ε) and ``≥`` otherwise (the convention of
    the paper's formula, of the authors' released GloRo radii and of Cohen et al.'s ``analyze.py``).
    The two differ only at points whose radius equals ε or 2ε exactly.

    The radii are sorted once and every grid point is a binary search, so the cost is
    O((N + E) log N): one certification pass gives the whole curve, no re-certification per ε.

    Args:
        radius: float ``[N]`` certified radii (0 where the certifier abstains), no NaN.
        correct: bool ``[N]``: the certifier's label equals the true label.
        eps_grid: scalar or ``[E]`` radii ε, each positive and finite.
        strict: ``True`` for r > ε, ``False`` for r ≥ ε.
        alpha: the Clopper-Pearson intervals have confidence 1 − alpha, in (0, 1).

    Returns:
        dict of numpy ``[E]`` arrays: ``eps``; ``upper_bound`` (NaN where nothing is certified at ε)
        with its Clopper-Pearson ``lo``/``hi``; the counts ``n_eps`` = |test_R| (correct, certified
        at ε), ``n_2eps`` (correct, certified at 2ε), ``n_lost`` = ``n_eps − n_2eps``; ``vra`` =
        ``n_eps / N`` with ``vra_lo``/``vra_hi``, ``vra_2eps`` = ``n_2eps / N``; and ``n`` = N.

    Raises:
        ValueError: radius and correct of different lengths, a NaN radius, an ε that is not
            positive and finite, alpha outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    r = np.asarray(torch.as_tensor(radius).detach().cpu(), dtype=np.float64).ravel()
    ok = np.asarray(torch.as_tensor(correct).detach().cpu(), dtype=bool).ravel()
    if r.shape != ok.shape:
        raise ValueError(f"radius and correct must have the same length, got {r.size} and {ok.size}")
    if np.isnan(r).any():
        raise ValueError("radius must not contain NaN (use 0 where the certifier abstains)")
    eps_arr = np.atleast_1d(np.asarray(eps_grid, dtype=np.float64)).ravel()
    if eps_arr.size == 0 or np.any(~np.isfinite(eps_arr)) or np.any(eps_arr <= 0):
        raise ValueError("eps_grid must be a non-empty set of positive, finite radii")
    rc = np.sort(r[ok])
    side = "right" if strict else "left"   # #{r > t} = N − #{r ≤ t}; #{r ≥ t} = N − #{r < t}
    above = lambda t: rc.size - np.searchsorted(rc, t, side=side)
    n_eps = above(eps_arr)
    n_2eps = above(2 * eps_arr)
    n_lost = n_eps - n_2eps
    with np.errstate(invalid="ignore", divide="ignore"):
        ub = np.where(n_eps > 0, n_lost / np.maximum(n_eps, 1), np.nan)
    lo, hi = clopper_pearson(n_lost, n_eps, alpha)
    n_total = r.size
    vra_lo, vra_hi = clopper_pearson(n_eps, np.full_like(n_eps, n_total), alpha)
    return dict(eps=eps_arr, upper_bound=ub, lo=lo, hi=hi, n_eps=n_eps, n_2eps=n_2eps, n_lost=n_lost,
                vra=n_eps / max(n_total, 1), vra_lo=vra_lo, vra_hi=vra_hi,
                vra_2eps=n_2eps / max(n_total, 1), n=np.full_like(n_eps, n_total))


def upper_bound(radius, correct, eps, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Upper bound 1 − P[r > 2ε]/P[r > ε] over a grid of ε: :func:`upper_bound_curve` with
    ``strict=True`` (the library's convention, certified at ε exactly when r > ε).

    Args:
        radius: float ``[N]`` certified radii (0 where not certified).
        correct: bool ``[N]``, the certifier's label equals the true label.
        eps: scalar or ``[E]`` grid of ε.

    Returns:
        The dict of :func:`upper_bound_curve` (``eps``, ``upper_bound``, ``lo``, ``hi``, ``n_eps``,
        ``n_2eps``, ``n_lost``, ``vra``, ``vra_lo``, ``vra_hi``, ``vra_2eps``, ``n``).
    """
    return upper_bound_curve(radius, correct, eps, strict=True, alpha=alpha)


def bounds_from_results(columns, alpha: float = 0.05) -> dict:
    """Lower and upper bounds on the false-positive rate from one stored per-point run (Section 3.3).

    ``columns`` maps names to ``[N]`` arrays, as a results-store run (:class:`PointResults`) does:
    ``label`` (true label), ``cert_label`` (the certifier's label at x, ``ABSTAIN`` = ⊥),
    ``certified`` and ``certified_2eps`` (bool: certified at ε, resp. 2ε), and per attack ``a``
    a column ``rejected_a`` (bool: the defense rejects the attack input x'). With
    test_R = correct and certified at ε:

    * ``vra``, ``vra_2eps``: |test_R| / N and |correct and certified at 2ε| / N;
    * ``upper_bound``: the correct points certified at ε but not at 2ε, out of |test_R|
      (Section 3.3.2, on exactly these points);
    * ``fpr``: per attack, |test_R ∩ rejected| / |test_R| (the lower bound of Section 3.3.1), and
      ``fpr["best"]``: a point counts when any attack degrades it;
    * ``beyond_bound``: per attack, how many points certified at 2ε were still degraded (0 for a
      monotone, deterministic certifier; Appendix A).

    Every rate is a :class:`Rate` with its (1 − alpha) Clopper-Pearson interval.

    Raises:
        ValueError: a required column is missing or columns differ in length.
    """
    need = ("label", "cert_label", "certified", "certified_2eps")
    names = list(columns.columns) if hasattr(columns, "columns") else list(columns)
    missing = [k for k in need if k not in names]
    if missing:
        raise ValueError(f"columns is missing {missing}; it needs {list(need)} and rejected_<attack> columns")
    arr = {k: np.asarray(columns[k]) for k in names if k in need or k.startswith("rejected_")}
    lengths = {len(v) for v in arr.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns must have equal lengths, got {sorted(lengths)}")
    correct = arr["cert_label"] == arr["label"]
    R = torch.as_tensor(correct & arr["certified"].astype(bool))
    safe = torch.as_tensor(correct & arr["certified_2eps"].astype(bool))
    ones = torch.ones_like(R)
    attacks = sorted(k[len("rejected_"):] for k in arr if k.startswith("rejected_"))
    fpr, beyond = {}, {}
    best = torch.zeros_like(R)
    for a in attacks:
        rej = torch.as_tensor(arr[f"rejected_{a}"].astype(bool))
        best |= rej
        fpr[a] = rate(rej, R, alpha)
        beyond[a] = int((rej & R & safe).sum())
    if attacks:
        fpr["best"] = rate(best, R, alpha)
        beyond["best"] = int((best & R & safe).sum())
    return dict(n=int(R.numel()), vra=rate(R, ones, alpha), vra_2eps=rate(safe, ones, alpha),
                upper_bound=rate(R & ~safe, R, alpha), fpr=fpr, beyond_bound=beyond)


__all__ = ["clopper_pearson", "Rate", "rate", "test_R", "test_A", "DegradationReport",
           "degradation_report", "upper_bound", "upper_bound_curve", "bounds_from_results"]

# These are metric names from the paper, not tests: keep pytest from collecting them.
test_R.__test__ = False
test_A.__test__ = False
