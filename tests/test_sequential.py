"""The sequential ε-check (degradation_lib.sequential) against closed forms.

Fixture (as in test_smoothing.py): a binary linear base classifier f(x) = [w·x + b > 0]. Under
ζ ~ N(0, σ² I), w·(x + ζ) + b ~ N(m, σ²‖w‖²), so p_A = Φ(r/σ) with r = |m|/‖w‖ the distance of x to
the hyperplane, which is also g's exact radius. "Certified at ε" is a wrong answer exactly when
r ≤ ε, and the worst case for the guarantee is r = ε, i.e. p_A = p* = Φ(ε/σ).

Closed forms used:
* all n_k votes for ĉ_A: the one-sided Clopper–Pearson lower bound is α_k^{1/n_k}, so an input
  with p_A ≈ 1 stops at the first look with σΦ⁻¹(α_k^{1/n_k}) > ε;
* Clopper–Pearson lower bound > p* ⇔ P[Binomial(n, p*) ≥ C] < α (the bound's definition),
  which scipy's binomial tail gives independently of statsmodels;
* look 0 on the n0 selection samples, all votes for ĉ_A: the bound is (α_0/C)^{1/n0}.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from degradation_lib import ABSTAIN
from degradation_lib.sequential import (CERTIFIED, REFUSED, UNDECIDED, alpha_spending, decide_look, look_schedule,
                                        sequential_certify, sequential_decisions, threshold_count)
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
    assert set(d["n_used"].tolist()) <= {0} | set(looks.tolist())           # 0: decided at look 0
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
    a = alpha_spending(alpha, K, 0.5, 0.25)
    # look 0 on n0 = 10 selection votes: (α_0/C)^(1/10) = (1.25e-4)^0.1 = 0.41 < 1/2, no certificate
    assert a[0] == pytest.approx(0.25 * alpha) and (a[0] / 2) ** (1 / 10) < 0.5
    a_k = a[1]                                                # 0.5·0.75·α/13 before the last look
    expected = next(m for m in looks if SIGMA * norm.ppf(a_k ** (1.0 / m)) > EPS)
    d = sequential_certify(clf, x, EPS, first_look=16)
    assert torch.all(d["decision"] == CERTIFIED) and torch.all(d["label"] == 1)
    assert torch.all(d["n_used"] == expected)
    # by hand: α_k = 0.000375/13 = 2.88e-5; σΦ⁻¹(α_k^(1/16)) = 0.1·Φ⁻¹(0.52) < 0.05 < 0.1·Φ⁻¹(α_k^(1/32)) = 0.059
    assert expected == 32


def test_look_0_reuses_the_selection_samples_at_the_closed_form_level():
    """n0 = 100 selection votes all for class 1: (α_0/C)^(1/100) = (1.25e-4)^0.01 = 0.914, and
    σΦ⁻¹(0.914) = 0.137 > ε: certified by look 0, with no estimation sample drawn."""
    alpha = 0.001
    assert SIGMA * norm.ppf((0.25 * alpha / 2) ** (1 / 100)) > EPS
    clf = smoothed(n=100_000, n0=100, alpha=alpha)
    d = sequential_certify(clf, point_at(0.5).expand(5, 2).contiguous(), EPS)
    assert torch.all(d["decision"] == CERTIFIED) and torch.all(d["n_used"] == 0) and torch.all(d["samples"] == 100)
    assert torch.all(d["n_sel"] == 100)
    # without look 0 the same inputs need estimation samples
    d0 = sequential_certify(clf, point_at(0.5).expand(5, 2).contiguous(), EPS, selection_share=0.0)
    assert torch.all(d0["decision"] == CERTIFIED) and torch.all(d0["n_used"] > 0)


def test_look_0_wrong_answer_rate_within_alpha():
    """Look 0 alone carries almost all of α (selection_share 0.9) at the worst case p_A = p*:
    the union over the C classes keeps the wrong-answer rate within α although ĉ_A is chosen on
    the very samples the bound uses."""
    T, alpha = 4000, 0.05
    clf = smoothed(n=64, n0=12, alpha=alpha, seed=3)
    x = point_at(EPS).expand(T, 2).contiguous()
    d = sequential_certify(clf, x, EPS, selection_share=0.9, first_look=64)
    wrong = int((d["decision"] == CERTIFIED).sum())
    assert wrong <= binom.ppf(1 - 1e-4, T, alpha), (wrong, T * alpha)
    # by hand: for the class with p = p*, a look-0 certificate needs N ≥ c0, the least count whose
    # (1 − α_0/C) lower bound exceeds p*; its probability is within α_0/C (one term of the union)
    p_star = norm.cdf(EPS / SIGMA)
    c0 = threshold_count(12, 0.9 * alpha / 2, p_star)
    assert binom.sf(c0 - 1, 12, p_star) <= 0.9 * alpha / 2


def test_stochastic_curtailment_refuses_only_where_fixed_n_cannot_certify():
    """γ rule at a look before the last: refuse iff P[Bin(n − n_k, p̄_k) ≥ c* − C_k] < γ, with c*
    fixed-n CERTIFY's threshold count; in particular always when even n − n_k further votes
    cannot reach c* (the sure case), never when C_k ≥ c*."""
    n, alpha, gamma, beta = 4096, 0.001, 0.1, 0.1
    looks = np.array([2048, n])
    p_star = norm.cdf(EPS / SIGMA)
    c_star = threshold_count(n, alpha, p_star)
    counts = np.arange(0, 2049)
    d = sequential_decisions(np.stack([counts, counts], 1), looks, SIGMA, EPS, alpha, gamma=gamma, beta=beta)
    early = d["n_used"] == 2048
    upper = 1 - np.array([proportion_confint(2048 - c, 2048, alpha=2 * beta, method="beta")[0] for c in counts])
    lower = np.array([proportion_confint(c, 2048, alpha=2 * 0.0005, method="beta")[0] for c in counts])  # α_1 = α/2
    refuse = (upper <= p_star) | (binom.sf(c_star - counts - 1, n - 2048, upper) < gamma)
    cert = lower > p_star
    assert np.array_equal(early & (d["decision"] == REFUSED), refuse & ~cert)
    assert np.all(early[counts + (n - 2048) < c_star]) and not np.any((d["decision"] == REFUSED)[counts >= c_star] & early[counts >= c_star])


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
    assert a.sum() == pytest.approx(0.001, rel=1e-12) and a[-1] == pytest.approx(0.0005) and a[0] == 0
    assert np.allclose(a[1:-1], 0.0005 / 12)
    a = alpha_spending(0.001, 13, 0.5, 0.25)
    assert a.sum() == pytest.approx(0.001, rel=1e-12) and a[0] == pytest.approx(0.00025)
    assert a[-1] == pytest.approx(0.000375) and np.allclose(a[1:-1], 0.000375 / 12)
    assert alpha_spending(0.05, 1).tolist() == [0.0, 0.05]


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
    (dict(eps=0.05, final_share=1.0), "final_share"), (dict(eps=0.05, gamma=1.0), "gamma"),
    (dict(eps=0.05, selection_share=1.0), "selection_share")])
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
    for k in ("decision", "n_A", "n_used", "guess", "n_sel"):
        assert torch.equal(both[k][1:3], alone[k]), k
    clf.generator = gens([1])
    with pytest.raises(ValueError, match="generator"):
        sequential_certify(clf, x, EPS)
