"""The sequential ε-check (degradation_lib.sequential) against closed forms.

Fixture (as in test_smoothing.py): a binary linear base classifier f(x) = [w·x + b > 0]. Under
ζ ~ N(0, σ² I), w·(x + ζ) + b ~ N(m, σ²‖w‖²), so p_A = Φ(r/σ) with r = |m|/‖w‖ the distance of x to
the hyperplane, which is also g's exact radius. "Certified at ε" is a wrong answer exactly when
r ≤ ε, and the worst case for the guarantee is r = ε, i.e. p_A = p* = Φ(ε/σ).

Closed forms used:
* all n_k votes for ĉ_A: the one-sided Clopper–Pearson lower bound is α_k^{1/n_k}, so an input
  with p_A ≈ 1 stops at the first look with σΦ⁻¹(α_k^{1/n_k}) > ε;
* Clopper–Pearson lower bound > p* ⇔ P[Binomial(n, p*) ≥ C] < α (the bound's definition),
  which scipy's binomial tail gives independently of statsmodels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from degradation_lib import ABSTAIN
from degradation_lib.sequential import (CERTIFIED, REFUSED, alpha_spending, decide_look, look_schedule,
                                        sequential_certify, sequential_decisions)
from degradation_lib.smoothing import SmoothedClassifier

SIGMA, EPS = 0.1, 0.05
W = torch.tensor([1.0, -2.0], dtype=torch.float64)
X0 = torch.tensor([0.5, 0.5], dtype=torch.float64)           # on the hyperplane w·x + b = 0


def linear_model() -> nn.Module:
    m = nn.Linear(2, 2, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.stack([torch.zeros_like(W), W]))
        m.bias.copy_(torch.tensor([0.0, -float(W @ X0)], dtype=torch.float64))
    return nn.Sequential(m)


def point_at(radius: float) -> torch.Tensor:
    """A point of [0,1]² at signed distance ``radius`` (|radius| ≤ 0.5) from the hyperplane (class 1 side)."""
    return X0 + radius * W / W.norm()


def smoothed(n=2048, n0=20, alpha=0.05, seed=0, **kw) -> SmoothedClassifier:
    return SmoothedClassifier(linear_model(), 2, SIGMA, n0=n0, n=n, alpha=alpha, batch_size=200_000,
                              generator=torch.Generator().manual_seed(seed), **kw)


def test_wrong_answer_rate_within_alpha_at_the_worst_case():
    """p_A = Φ(ε/σ) exactly: every "certified" answer is wrong; its rate must stay within α."""
    T, alpha = 2000, 0.05
    clf = smoothed(alpha=alpha)
    x = point_at(EPS).expand(T, 2).contiguous()
    assert norm.cdf(EPS / SIGMA) == pytest.approx(0.6915, abs=1e-4)
    d = sequential_certify(clf, x, EPS)
    wrong = int((d["decision"] == CERTIFIED).sum())
    # one-sided: the count of wrong answers is at most Binomial(T, α) stochastically
    assert wrong <= binom.ppf(1 - 1e-4, T, alpha), (wrong, T * alpha)
    lo, _ = proportion_confint(wrong, T, alpha=0.002, method="beta")
    assert lo <= alpha

    # the same check has power: spending α at *every* look (no split) exceeds α clearly here
    looks = look_schedule(clf.n, 32)
    counts = clf.sample_counts(x, list(np.diff(np.concatenate([[0], looks]))))[:, :, 1]   # class-1 votes
    prefix = counts.cumsum(0).T.numpy()
    naive = np.zeros(T, dtype=bool)
    for k, m in enumerate(looks):
        naive |= decide_look(prefix[:, k], int(m), alpha, None, SIGMA, EPS) == CERTIFIED
    lo_naive, _ = proportion_confint(int(naive.sum()), T, alpha=0.002, method="beta")
    assert lo_naive > alpha
    # and the test replayed on the same stream stays within α
    replay = sequential_decisions(prefix, looks, SIGMA, EPS, alpha)
    assert int((replay["decision"] == CERTIFIED).sum()) <= binom.ppf(1 - 1e-4, T, alpha)


def test_budget_and_stopping_looks():
    clf = smoothed(n=5000, n0=30)
    x = torch.stack([point_at(r) for r in np.linspace(-0.5, 0.5, 41)])
    d = sequential_certify(clf, x, EPS)
    looks = look_schedule(5000, 32)
    assert looks[-1] == 5000 and np.all(np.diff(looks) > 0)
    assert torch.all(d["samples"] <= 30 + 5000)
    assert set(d["n_used"].tolist()) <= set(looks.tolist())
    assert torch.equal(d["samples"], d["n_used"] + 30)
    assert torch.all((d["n_A"] >= 0) & (d["n_A"] <= d["n_used"]))
    # label is the guess where certified, ⊥ elsewhere
    cert = d["decision"] == CERTIFIED
    assert torch.equal(d["label"][cert], d["guess"][cert]) and torch.all(d["label"][~cert] == ABSTAIN)


def test_p_A_near_one_stops_at_the_closed_form_look():
    alpha, n = 0.001, 100_000
    clf = smoothed(n=n, n0=10, alpha=alpha)
    x = point_at(0.5).expand(5, 2).contiguous()              # p_A = Φ(5) ≈ 1 - 3e-7: all votes class 1
    looks = look_schedule(n, 16)                              # 16, 32, ..., 65536, 100000
    K = len(looks)
    a_k = 0.5 * alpha / (K - 1)                               # the split of α before the last look
    expected = next(m for m in looks if SIGMA * norm.ppf(a_k ** (1.0 / m)) > EPS)
    d = sequential_certify(clf, x, EPS, first_look=16)
    assert torch.all(d["decision"] == CERTIFIED) and torch.all(d["label"] == 1)
    assert torch.all(d["n_used"] == expected)
    # by hand: α_k = 0.0005/13 = 3.85e-5; σΦ⁻¹(α_k^(1/16)) = 0.1·Φ⁻¹(0.53) < 0.05 < 0.1·Φ⁻¹(α_k^(1/32)) = 0.055
    assert expected == 32


def test_p_A_far_below_threshold_is_refused_early():
    clf = smoothed(n=100_000, alpha=0.001)
    x = point_at(0.0).expand(50, 2).contiguous()             # p_A = 1/2 < p* = 0.69
    d = sequential_certify(clf, x, EPS)
    assert torch.all(d["decision"] == REFUSED)
    assert d["n_used"].double().mean() < 1_000


def test_single_look_is_fixed_n_certify():
    """K = 1: certified ⇔ P[Binomial(n, p*) ≥ C] < α, for every count C."""
    n, alpha = 400, 0.01
    assert look_schedule(n, first_look=n).tolist() == [n]
    C = np.arange(n + 1)
    d = sequential_decisions(C[:, None], [n], SIGMA, EPS, alpha)
    p_star = norm.cdf(EPS / SIGMA)
    expected = binom.sf(C - 1, n, p_star) < alpha
    assert np.array_equal(d["decision"] == CERTIFIED, expected)
    assert expected.sum() > 0 and (~expected).sum() > 0


def test_alpha_spending_sums_to_alpha():
    a = alpha_spending(0.001, 13, 0.5)
    assert a.sum() == pytest.approx(0.001, rel=1e-12) and a[-1] == pytest.approx(0.0005)
    assert np.allclose(a[:-1], 0.0005 / 12)
    assert alpha_spending(0.05, 1).tolist() == [0.05]


def test_smoothed_classifier_sequential_option():
    clf = smoothed(n=20_000, alpha=0.001, sequential=True)
    x = torch.stack([point_at(0.5), point_at(0.0), point_at(-0.5)])
    labels = clf.certify(x, EPS)
    assert labels.tolist() == [1, ABSTAIN, 0]
    lab, radius = clf.certified_radius(x)           # the radius API stays fixed-n CERTIFY
    assert lab[0] == 1 and radius[0] > EPS
    assert not smoothed().sequential


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "eps"), (dict(eps=0.05, alpha=1.0), "alpha"), (dict(eps=0.05, beta=0.0), "beta"),
    (dict(eps=0.05, first_look=0), "first_look"), (dict(eps=0.05, growth=1.0), "growth"),
    (dict(eps=0.05, final_share=1.0), "final_share")])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sequential_certify(smoothed(n=100), point_at(0.2)[None], **kwargs)


def test_per_input_generators_make_each_answer_independent_of_the_batch():
    x = torch.stack([point_at(r) for r in (0.5, 0.01, 0.02, -0.3)])
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    clf = smoothed(n=4096)
    clf.generator = gens([1, 2, 3, 4])
    both = sequential_certify(clf, x, EPS)
    clf.generator = gens([2, 3])
    alone = sequential_certify(clf, x[1:3], EPS)
    for k in ("decision", "n_A", "n_used", "guess"):
        assert torch.equal(both[k][1:3], alone[k]), k
    clf.generator = gens([1])
    with pytest.raises(ValueError, match="generator"):
        sequential_certify(clf, x, EPS)
