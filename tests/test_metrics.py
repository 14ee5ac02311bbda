"""Metrics: Clopper–Pearson intervals, rates, test_R / test_A, the degradation report and the
upper bound 1 − P[r > 2ε]/P[r > ε], each against an independent computation."""

import math

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

import degradation_lib as dl
from degradation_lib import ABSTAIN
from degradation_lib.metrics import DegradationReport, Rate, clopper_pearson, degradation_report, rate, test_A, \
    test_R, upper_bound


# ----------------------------------------------------------------------------- Clopper–Pearson
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.001])
def test_clopper_pearson_matches_statsmodels(alpha):
    for n in (1, 2, 7, 50, 303, 10_000):
        ks = sorted({0, 1, n // 3, n // 2, n - 1, n})
        lo, hi = clopper_pearson(ks, [n] * len(ks), alpha)
        for k, l, h in zip(ks, lo, hi):
            ref_lo, ref_hi = proportion_confint(k, n, alpha=alpha, method="beta")
            assert l == pytest.approx(ref_lo, abs=1e-12), (k, n)
            assert h == pytest.approx(ref_hi, abs=1e-12), (k, n)


def test_clopper_pearson_closed_forms():
    # k = 0: upper end 1 − (α/2)^(1/n); k = n: lower end (α/2)^(1/n)
    for n in (1, 5, 40):
        lo, hi = clopper_pearson(0, n, 0.05)
        assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-12)
        lo, hi = clopper_pearson(n, n, 0.05)
        assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / n), rel=1e-12)
    lo, hi = clopper_pearson(0, 0)
    assert (lo, hi) == (0.0, 1.0)
    # the interval contains k/n and narrows as n grows at a fixed proportion
    widths = [np.subtract(*clopper_pearson(n // 4, n)[::-1]) for n in (40, 400, 4000)]
    assert widths[0] > widths[1] > widths[2]


def test_clopper_pearson_bad_input():
    for alpha in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            clopper_pearson(1, 2, alpha)
    with pytest.raises(ValueError, match="k"):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError, match="k"):
        clopper_pearson(-1, 2)


def test_rate_and_its_interval():
    r = Rate(6, 100)
    assert r.value == 0.06 and float(r) == 0.06
    ref = proportion_confint(6, 100, alpha=0.05, method="beta")
    assert r.interval == pytest.approx(ref, abs=1e-12)
    assert (r.lo, r.hi) == r.interval
    assert str(r).startswith("6.0% [") and "(6/100)" in str(r)
    assert math.isnan(Rate(0, 0).value)
    mask = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    of = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    assert (rate(mask).k, rate(mask).n) == (3, 6)
    assert (rate(mask, of).k, rate(mask, of).n) == (2, 4)
    with pytest.raises(ValueError, match="shape"):
        rate(mask, of[:3])


# ----------------------------------------------------------------------------- test_R, test_A, report
def hand_example():
    """Ten points worked out by hand.

    idx        0  1  2  3  4  5  6  7  8  9
    y          0  1  2  3  0  1  2  3  0  1
    cert(x,ε)  0  1  2  ⊥  1  1  ⊥  3  0  1     correct & certified: 0 1 2 5 7 8 9 → |test_R| = 7
    cert(x',ε) ⊥  1  ⊥  ⊥  ⊥  ⊥  2  3  0  ⊥     rejected among test_R: 0 2 5 9  → |test_A| = 4
    cert(x,2ε) 0  ⊥  2  ⊥  ⊥  ⊥  ⊥  3  0  ⊥     correct at 2ε: 0 2 7 8 → VRA(2ε) = 4/10
    """
    A = ABSTAIN
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    c = torch.tensor([0, 1, 2, A, 1, 1, A, 3, 0, 1])
    a = torch.tensor([A, 1, A, A, A, A, 2, 3, 0, A])
    c2 = torch.tensor([0, A, 2, A, A, A, A, 3, 0, A])
    return y, c, a, c2


def test_test_R_and_test_A_by_hand():
    y, c, a, _ = hand_example()
    assert test_R(y, c).nonzero().flatten().tolist() == [0, 1, 2, 5, 7, 8, 9]
    assert test_A(y, c, a).nonzero().flatten().tolist() == [0, 2, 5, 9]
    assert not (test_A(y, c, a) & ~test_R(y, c)).any()          # test_A ⊆ test_R


def test_degradation_report_by_hand():
    y, c, a, c2 = hand_example()
    rep = degradation_report(y, c, a, c2)
    assert isinstance(rep, DegradationReport)
    assert (rep.vra.k, rep.vra.n) == (7, 10)
    assert (rep.false_positive_rate.k, rep.false_positive_rate.n) == (4, 7)
    assert (rep.utility_reduction.k, rep.utility_reduction.n) == (4, 10)
    assert (rep.vra_2eps.k, rep.vra_2eps.n) == (4, 10)
    assert (rep.flipped.k, rep.flipped.n) == (0, 7)
    # utility reduction = VRA − VRA under attack
    vra_attacked = float(((a == y) & (a != ABSTAIN) & test_R(y, c)).sum()) / 10
    assert rep.utility_reduction.value == pytest.approx(rep.vra.value - vra_attacked)
    # every rate carries the Clopper–Pearson interval of its counts
    d = rep.as_dict()
    ref = proportion_confint(4, 7, alpha=0.05, method="beta")
    assert (d["false_positive_rate"]["lo"], d["false_positive_rate"]["hi"]) == pytest.approx(ref, abs=1e-12)
    assert set(d) == {"vra", "false_positive_rate", "utility_reduction", "vra_2eps", "flipped"}
    assert degradation_report(y, c, a).vra_2eps is None
    # a label flip at a certified point is counted separately (it would be a soundness bug)
    a_flip = a.clone()
    a_flip[1] = 3
    assert degradation_report(y, c, a_flip).flipped.k == 1
    assert degradation_report(y, c, a, alpha=0.01).vra.alpha == 0.01


# ----------------------------------------------------------------------------- upper bound
def brute_force_upper_bound(radius, correct, eps):
    """The definition, one ε at a time, with Python loops."""
    n_eps = sum(1 for r, ok in zip(radius, correct) if ok and r > eps)
    n_2eps = sum(1 for r, ok in zip(radius, correct) if ok and r > 2 * eps)
    return (1 - n_2eps / n_eps) if n_eps else math.nan, n_eps, n_eps - n_2eps, n_2eps


def test_upper_bound_against_brute_force():
    rng = np.random.default_rng(0)
    n = 500
    radius = np.where(rng.random(n) < 0.2, 0.0, rng.exponential(0.5, n))
    radius[:20] = np.round(radius[:20], 1)          # ties with grid values: r = ε and r = 2ε exactly
    correct = rng.random(n) < 0.9
    grid = np.concatenate([np.linspace(0.05, 3.0, 60), [0.1, 0.2, 0.4, 100.0]])
    out = upper_bound(torch.tensor(radius), torch.tensor(correct), grid)
    for i, eps in enumerate(grid):
        ub, n_eps, n_lost, n_2eps = brute_force_upper_bound(radius, correct, eps)
        assert out["n_eps"][i] == n_eps and out["n_lost"][i] == n_lost
        if n_eps:
            assert out["upper_bound"][i] == pytest.approx(ub, abs=1e-15)
        else:
            assert math.isnan(out["upper_bound"][i]) and (out["lo"][i], out["hi"][i]) == (0.0, 1.0)
        assert out["vra"][i] == pytest.approx(n_eps / n) and out["vra_2eps"][i] == pytest.approx(n_2eps / n)
        ref = proportion_confint(n_lost, n_eps, alpha=0.05, method="beta") if n_eps else (0.0, 1.0)
        assert (out["lo"][i], out["hi"][i]) == pytest.approx(ref, abs=1e-12)
    # a scalar ε gives the same as its entry of the grid
    one = upper_bound(radius, correct, 0.4)
    assert one["upper_bound"].shape == (1,)
    assert one["upper_bound"][0] == out["upper_bound"][list(grid).index(0.4)]


def test_upper_bound_strict_convention_by_hand():
    # certified at ε ⇔ r > ε: with ε = 0.5, radii 0.5 (not certified), 1.0 (certified, not at 2ε),
    # 1.2 (certified at both), 0.7 but wrong label (ignored)
    out = upper_bound([0.5, 1.0, 1.2, 0.7], [True, True, True, False], 0.5)
    assert out["n_eps"][0] == 2 and out["n_lost"][0] == 1 and out["upper_bound"][0] == 0.5


def test_upper_bound_bad_input():
    with pytest.raises(ValueError, match="same length"):
        upper_bound([0.1, 0.2], [True], 0.1)
    for eps in (0.0, -1.0, math.inf, [0.1, math.nan]):
        with pytest.raises(ValueError, match="eps"):
            upper_bound([0.1, 0.2], [True, True], eps)


def test_attack_on_an_exact_certifier_meets_the_upper_bound_on_a_grid():
    """Appendix A: for an exact (monotone) certifier the bound is tight. On a linear classifier in
    1-D the exact degradation (move x by ε towards the boundary) reaches it for every ε."""
    cert = dl.LinearCertifier(torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
                              torch.tensor([-0.5, 0.5], dtype=torch.float64), norm=2.0)  # boundary x = 0.5
    x = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)[:, None]
    labels, r = cert.certified_radius(x)
    grid = np.array([0.0313, 0.0717, 0.1009, 0.1531, 0.2047])   # no radius at ε or 2ε exactly
    ub = upper_bound(r, torch.ones_like(labels, dtype=torch.bool), grid)
    for i, eps in enumerate(grid):
        toward = torch.where(labels == 0, 1.0, -1.0).to(x.dtype)[:, None]   # class 0 lives at x > 0.5
        xp = (x - toward * eps).clamp(0, 1)
        rep = degradation_report(labels, cert.certify(x, eps), cert.certify(xp, eps))
        assert rep.false_positive_rate.k == ub["n_lost"][i]
        assert rep.false_positive_rate.n == ub["n_eps"][i]
