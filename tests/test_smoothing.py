"""Randomized smoothing (CERTIFY, PREDICT) and SPGD (Algorithm 3.2) against closed forms.

The fixture is a binary linear base classifier f(x) = [w·x + b > 0] (logits (0, w·x + b)).
Under noise ζ ~ N(0, σ² I), w·(x + ζ) + b ~ N(m, σ²‖w‖²) with margin m = w·x + b, so the smoothed
classifier is g(x) = f(x), its top-class probability is p_A = Φ(|m| / (σ‖w‖)) and its exact
robustness radius is σ Φ⁻¹(p_A) = |m| / ‖w‖ (the distance to the hyperplane).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

from degradation_lib import ABSTAIN, project
from scipy.stats import chi2_contingency

from degradation_lib.smoothing import SmoothedClassifier, noise_factor, p_A_lower, radius_from_p_A_lower
from degradation_lib.spgd import SPGD, spgd_degradation_attack

D = 6
SIGMA = 0.5


def linear_model(w, b) -> nn.Module:
    w = torch.as_tensor(w, dtype=torch.float64)
    m = nn.Linear(len(w), 2, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        m.bias.copy_(torch.tensor([0.0, float(b)], dtype=torch.float64))
    return nn.Sequential(m)


def fixture(margin_radius: float):
    """w, b and a point x in [0,1]^D whose distance to the hyperplane is ``margin_radius`` (class 1)."""
    w = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0, 0.25], dtype=torch.float64)
    x = torch.full((D,), 0.5, dtype=torch.float64)
    b = margin_radius * w.norm().item() - float(w @ x)
    return w, b, x


def true_radius(w, b, x):
    return abs(float(w @ x) + b) / w.norm().item()


# --- closed forms of the confidence bound -----------------------------------------------------
def test_p_A_lower_closed_forms():
    # all n votes: the one-sided Clopper-Pearson bound solves p^n = alpha
    for n, a in [(10, 0.001), (100, 0.05), (100_000, 0.001)]:
        assert p_A_lower([n], n, a)[0] == pytest.approx(a ** (1 / n), rel=1e-12)
    assert p_A_lower([0], 50, 0.01)[0] == 0.0
    # general k: P[Binom(n, p_low) >= k] = alpha
    k, n, a = 37, 50, 0.05
    p = p_A_lower([k], n, a)[0]
    assert binom.sf(k - 1, n, p) == pytest.approx(a, rel=1e-8)
    # the largest certifiable radius at n=1e5, alpha=0.001 is about 3.81 sigma (REFERENCE.md)
    r = radius_from_p_A_lower(p_A_lower([100_000], 100_000, 0.001), 1.0)[0]
    assert r == pytest.approx(norm.ppf(0.001 ** 1e-5), rel=1e-9)
    assert round(r, 2) == 3.81
    assert radius_from_p_A_lower([0.3, 0.5], 1.0).tolist() == [0.0, 0.0]


# --- CERTIFY over many independent trials -----------------------------------------------------
def _limit(trials, alpha, tail=1e-6):
    """Largest failure count compatible with a failure probability <= alpha (one-sided 1e-6 test)."""
    return int(binom.isf(tail, trials, alpha))


@pytest.mark.parametrize("pushforward", [False, True])
@pytest.mark.parametrize("margin_radius", [0.4, 0.9])
def test_certify_sound_on_linear_classifier(margin_radius, pushforward):
    alpha, n0, n, trials = 0.1, 10, 40, 4000
    w, b, x = fixture(margin_radius)
    R = true_radius(w, b, x)
    p_A = norm.cdf(R / SIGMA)
    g = torch.Generator().manual_seed(123)
    clf = SmoothedClassifier(linear_model(w, b), 2, SIGMA, n0=n0, n=n, alpha=alpha, batch_size=7_777, generator=g,
                             pushforward=pushforward)
    # one batch of `trials` copies of x: every row gets its own independent noise
    d = clf.certify_details(x.expand(trials, D).clone())
    n_A = d["n_A"].numpy()
    # the sampler: n_A ~ Binom(n, p_A) whenever the guess is right (which it almost always is)
    right = d["guess"].numpy() == 1
    assert right.mean() > 0.95
    se = math.sqrt(n * p_A * (1 - p_A) / right.sum())
    assert abs(n_A[right].mean() - n * p_A) < 5 * se
    # soundness: a non-abstaining answer is wrong or over-claims the radius with probability <= alpha
    answered = d["label"].numpy() != ABSTAIN
    bad = answered & ((d["label"].numpy() != 1) | (d["radius"].numpy() > R))
    assert bad.sum() <= _limit(trials, alpha)
    # the radius is sigma * Phi^-1(p_A_lower), p_A_lower the Clopper-Pearson bound of n_A
    np.testing.assert_allclose(d["p_A_lower"].numpy(), p_A_lower(n_A, n, alpha))
    np.testing.assert_allclose(d["radius"].numpy()[answered],
                               SIGMA * norm.ppf(d["p_A_lower"].numpy()[answered]))
    assert (d["radius"].numpy()[~answered] == 0).all()
    # power: the same number of trials detects an unsound bound (the point estimate n_A/n)
    naive = radius_from_p_A_lower(n_A / n, SIGMA) > R
    assert naive.sum() > 3 * _limit(trials, alpha)


def test_certify_and_certified_radius_agree():
    w, b, x = fixture(0.7)
    xs = x.expand(50, D).clone()
    mk = lambda: SmoothedClassifier(linear_model(w, b), 2, SIGMA, n0=20, n=500, alpha=0.05,
                                    generator=torch.Generator().manual_seed(5))
    labels, radius = mk().certified_radius(xs)
    for eps in (0.1, 0.5, 0.7):
        expected = torch.where(radius > eps, labels, torch.full_like(labels, ABSTAIN))
        assert torch.equal(mk().certify(xs, eps), expected)


def test_predict_right_when_not_abstaining():
    alpha, n, trials = 0.1, 60, 4000
    w, b, x = fixture(0.15)                      # p_A = Phi(0.3) ~ 0.62: PREDICT often abstains
    clf = SmoothedClassifier(linear_model(w, b), 2, SIGMA, n=n, alpha=alpha, generator=torch.Generator().manual_seed(9))
    pred = clf.predict(x.expand(trials, D).clone()).numpy()
    assert ((pred != ABSTAIN) & (pred != 1)).sum() <= _limit(trials, alpha)
    assert 0 < (pred == ABSTAIN).sum() < trials  # a real test: both outcomes occur
    assert set(np.unique(pred)) <= {ABSTAIN, 0, 1}
    # on a wrongly-signed copy (class 0 is g(x)) the answer flips
    clf0 = SmoothedClassifier(linear_model(-w, -b), 2, SIGMA, n=n, alpha=alpha, generator=torch.Generator().manual_seed(9))
    pred0 = clf0.predict(x.expand(trials, D).clone()).numpy()
    assert ((pred0 != ABSTAIN) & (pred0 != 0)).sum() <= _limit(trials, alpha)


def test_certify_abstains_with_n_10_at_alpha_0001():
    # p_A_lower <= 0.001**(1/10) = 0.50119: at most radius sigma*Phi^-1(0.50119) ~ 0.003 sigma
    w, b, x = fixture(3.0)                       # p_A = Phi(6) ~ 1: every vote goes to class 1
    clf = SmoothedClassifier(linear_model(w, b), 2, SIGMA, n0=100, n=10, alpha=0.001,
                             generator=torch.Generator().manual_seed(0))
    d = clf.certify_details(x.expand(200, D).clone())
    assert (d["n_A"] == 10).all()
    assert d["radius"].max().item() == pytest.approx(SIGMA * norm.ppf(0.001 ** 0.1), rel=1e-9)
    assert d["radius"].max().item() < 0.002
    assert (clf.certify(x.expand(200, D).clone(), 0.01) == ABSTAIN).all()
    # with fewer than 10 votes for the top class, CERTIFY abstains outright
    clf9 = SmoothedClassifier(linear_model(w, b), 2, SIGMA, n0=100, n=9, alpha=0.001,
                              generator=torch.Generator().manual_seed(0))
    labels, radius = clf9.certified_radius(x.expand(200, D).clone())
    assert (labels == ABSTAIN).all() and (radius == 0).all()
    w2, b2, x2 = fixture(0.2)                    # p_A ~ 0.66: some of the 10 votes are lost
    clf2 = SmoothedClassifier(linear_model(w2, b2), 2, SIGMA, n0=100, n=10, alpha=0.001,
                              generator=torch.Generator().manual_seed(0))
    d2 = clf2.certify_details(x2.expand(200, D).clone())
    assert ((d2["label"] == ABSTAIN) == (d2["n_A"] < 10)).all()
    assert (d2["label"] == ABSTAIN).float().mean() > 0.9


def test_noise_factor_reproduces_covariance():
    torch.manual_seed(0)
    for shape in [(5, 12), (12, 5)]:                 # full rank and rank-deficient W W^T
        w = torch.randn(shape, dtype=torch.float64)
        L = noise_factor(w)
        torch.testing.assert_close(L @ L.T, w @ w.T, rtol=0, atol=1e-10)


def test_pushforward_has_the_same_vote_distribution():
    # an MLP whose first layer is linear: sampling W(x+ζ)+b directly must give the same votes
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[3].bias.copy_(torch.tensor([0.0, 0.3, -0.2]))
    x = torch.rand(3, 1, 4, 4)
    n = 30_000
    direct = SmoothedClassifier(net, 3, 0.8, generator=torch.Generator().manual_seed(0)).sample_counts(x, (n,))[0]
    pushed = SmoothedClassifier(net, 3, 0.8, generator=torch.Generator().manual_seed(1),
                                pushforward=True).sample_counts(x, (n,))[0]
    wrong = SmoothedClassifier(net, 3, 0.8 * 1.15, generator=torch.Generator().manual_seed(2),
                               pushforward=True).sample_counts(x, (n,))[0]
    for i in range(3):
        assert chi2_contingency(torch.stack([direct[i], pushed[i]]).numpy())[1] > 1e-4
    # power: a 15% error in the noise scale is detected at the same sample size
    assert min(chi2_contingency(torch.stack([direct[i], wrong[i]]).numpy())[1] for i in range(3)) < 1e-6
    with pytest.raises(ValueError, match="pushforward"):
        SmoothedClassifier(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), 2, 0.5, pushforward=True)


def test_seeded_runs_reproduce_exactly():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(7, 1, 4, 4)
    run = lambda seed: SmoothedClassifier(base, 3, 0.3, n0=30, n=700, alpha=0.01, batch_size=512,
                                          generator=torch.Generator().manual_seed(seed))
    a, b, c = run(1).certify_details(x), run(1).certify_details(x), run(2).certify_details(x)
    for k in a:
        assert torch.equal(a[k], b[k])
    p1 = SmoothedClassifier(base, 3, 0.3, n0=30, n=700, pushforward=True, generator=torch.Generator().manual_seed(1))
    p2 = SmoothedClassifier(base, 3, 0.3, n0=30, n=700, pushforward=True, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(u, v) for u, v in zip(p1.certify_details(x).values(), p2.certify_details(x).values()))
    assert not torch.equal(a["n_A"], c["n_A"])
    assert torch.equal(run(1).predict(x), run(1).predict(x))
    # counts: each sample set sums to its size, per input
    counts = run(3).sample_counts(x, (30, 700))
    assert counts.shape == (2, 7, 3)
    assert (counts.sum(2) == torch.tensor([[30], [700]])).all()


def test_counts_match_per_image_loop():
    """Batched counting (chunks spanning several inputs) equals counting each input on its own."""
    torch.manual_seed(1)
    base = nn.Sequential(nn.Flatten(), nn.Linear(9, 3))
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64)
    base = base.double()
    sizes = (13, 101)
    batched = SmoothedClassifier(base, 3, 0.4, batch_size=37, generator=torch.Generator().manual_seed(4))
    counts = batched.sample_counts(x, sizes)
    # replay the same noise stream: rows are image-major, n0 samples then n samples per image
    g = torch.Generator().manual_seed(4)
    total = x.shape[0] * sum(sizes)
    noise = torch.cat([torch.randn((min(37, total - s), 9), generator=g, dtype=torch.float64)
                       for s in range(0, total, 37)])
    noise = noise.view(5, sum(sizes), 9)
    for i in range(5):
        pred = base((x[i].reshape(1, 9) + 0.4 * noise[i])).argmax(1)
        assert torch.equal(counts[0, i], torch.bincount(pred[:13], minlength=3))
        assert torch.equal(counts[1, i], torch.bincount(pred[13:], minlength=3))


@pytest.mark.parametrize("kwargs, name", [
    (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(sigma=float("nan")), "sigma"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(alpha=1.5), "alpha"),
    (dict(n0=0), "n0"), (dict(n=0), "n"), (dict(n=2.5), "n"), (dict(batch_size=0), "batch_size"),
    (dict(num_classes=1), "num_classes"),
])
def test_bad_settings_raise(kwargs, name):
    args = dict(num_classes=2, sigma=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        SmoothedClassifier(nn.Linear(4, 2), **args)


def test_bad_inputs_raise():
    clf = SmoothedClassifier(nn.Linear(4, 2), 2, 0.5, n0=5, n=20)
    x = torch.rand(3, 4)
    for eps in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            clf.certify(x, eps)
    bad = x.clone()
    bad[1, 2] = float("nan")
    for fn in (clf.certified_radius, clf.predict, lambda z: clf.certify(z, 0.1)):
        with pytest.raises(ValueError, match="x"):
            fn(bad)
    with pytest.raises(ValueError, match="radius"):
        SPGD(steps=2, samples=2)(clf, x, 0.0)
    with pytest.raises(ValueError, match="average"):
        SPGD(average="median")
    with pytest.raises(ValueError, match="x"):
        SPGD(steps=2, samples=2)(clf, bad, 0.5)


# --- SPGD ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("average", ["logits", "softmax"])
def test_spgd_moves_against_w_on_linear_classifier(average):
    # For a linear f every per-sample gradient of the loss at label 1 is a negative multiple of w,
    # so the normalised steps go straight along -w/||w|| until the ball's boundary.
    w, b, x = fixture(0.6)
    clf = SmoothedClassifier(linear_model(w, b), 2, SIGMA, n0=10, n=100)
    xs = x.expand(3, D).clone()
    attack = SPGD(steps=20, samples=16, average=average, generator=torch.Generator().manual_seed(0))
    r = 0.3
    x_adv = attack(clf, xs, r)
    expected = xs - r * w / w.norm()
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-10)
    # Algorithm 3.1: attack at 2 eps then project to eps moves the point eps closer to the boundary
    eps = 0.25
    x1 = spgd_degradation_attack(clf, xs, eps, attack=attack, y=torch.ones(3, dtype=torch.long))
    assert torch.allclose(torch.linalg.vector_norm(x1 - xs, dim=1), torch.full((3,), eps, dtype=torch.float64))
    np.testing.assert_allclose([true_radius(w, b, xi) for xi in x1], 0.6 - eps, rtol=1e-9)


def test_spgd_degradation_gets_linear_point_rejected():
    # true radius 0.6 in (eps, 2 eps) for eps = 0.4: the attacked point has radius 0.2 < eps
    w, b, x = fixture(0.6)
    xs = x.expand(4, D).clone()
    mk = lambda: SmoothedClassifier(linear_model(w, b), 2, 0.25, n0=100, n=20_000, alpha=0.001,
                                    generator=torch.Generator().manual_seed(2))
    eps = 0.4
    assert (mk().certify(xs, eps) == 1).all()
    x_adv = project(xs, SPGD(steps=30, samples=32)(mk(), xs, 2 * eps), eps, 2.0)
    assert (mk().certify(x_adv, eps) == ABSTAIN).all()


def test_spgd_contract_zero_gradient_and_mode():
    # a constant network has zero gradient: no NaN, x_adv = x; the model's mode is untouched
    const = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        const[1].weight.zero_()
    clf = SmoothedClassifier(const, 3, 0.5)
    x = torch.rand(4, 1, 4, 4)
    for train in (True, False):
        const.train(train)
        x_adv = SPGD(steps=3, samples=5)(clf, x, 0.5)
        assert const.training is train
        assert torch.equal(x_adv, x)
    # a real network: the ball and the box hold, gradients of the weights are not touched
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3))
    clf = SmoothedClassifier(net, 3, 0.5)
    x = torch.rand(6, 1, 4, 4)
    for avg in ("logits", "softmax"):
        x_adv = SPGD(steps=10, samples=8, average=avg, batch_size=16)(clf, x, 0.8)
        assert x_adv.shape == x.shape
        assert (torch.linalg.vector_norm((x_adv - x).flatten(1), dim=1) <= 0.8 + 1e-5).all()
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert not torch.equal(x_adv, x)
    assert all(p.grad is None for p in net.parameters())
