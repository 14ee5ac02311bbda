"""Tests of the certificate-aware attack (issue 15): the declared rejection score of every
certifier, :func:`certificate_attack`, and the sound ℓ2 bounds of :mod:`degradation_lib.bounds_l2`.

Independent answers: for an exact linear certifier the degradable points are exactly those with
radius ≤ 2ε (moving ε towards the nearest boundary lowers the radius by ε; Lemma 6 and Section
3.3.2), so an exact attack must reject exactly that set; for a linear base classifier with a hard
vote, σ·Φ⁻¹(p_A) is the distance to the hyperplane (Cohen et al.); bounds are checked against
random points and PGD in the ball, and the dual of the ball ∩ box problem against a primal
feasible point.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from degradation_lib import ABSTAIN, Certifier, GloroCertifier, GloroNet, LinearCertifier, LinfCertifier, SmoothedClassifier
from degradation_lib.attacks import SCHEDULES, _ApgdState, _apgd_checkpoints, certificate_attack, implements_rejection_score
from degradation_lib.run_certattack import attack_budget
from degradation_lib.bounds_l2 import GloroBounds, ball_box_min, pattern_lipschitz_witness

torch.set_num_threads(1)

SMALL_ARCH = dict(input_shape=(1, 8, 8), layers=[("conv", 4, 3, 2, 1), ("conv", 6, 3, 1, 1), ("dense", 12)])


def lp(t, norm):
    return torch.linalg.vector_norm(t.flatten(1), ord=norm, dim=1)


def gloro_small(seed=0) -> GloroCertifier:
    net = GloroNet(SMALL_ARCH, num_classes=4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return GloroCertifier(net.eval())


def linf_small(seed=0, method="kw_ibp") -> LinfCertifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    net.requires_grad_(False)
    return LinfCertifier(net, method=method, input_shape=(1, 8, 8))


def linear_problem(num_classes, d=12, n=300, norm=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(num_classes, d, generator=g, dtype=torch.float64)
    b = -W.sum(1) / 2 + 0.1 * torch.randn(num_classes, generator=g, dtype=torch.float64)
    x = 0.35 + 0.3 * torch.rand(n, d, generator=g, dtype=torch.float64)
    return LinearCertifier(W, b, norm=norm), x


class Scoreless(Certifier):
    norm = 2.0

    def __init__(self):
        self.model = nn.Linear(3, 2)

    def certified_radius(self, x):
        return self.predict(x), torch.zeros(x.shape[0])

    def predict(self, x):
        return self.model(x).argmax(1)


# ----------------------------------------------------------------------------- the interface
def test_interface_is_declared_on_every_certifier():
    lin, _ = linear_problem(3)
    smooth = SmoothedClassifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), 3, sigma=0.5, n=100)
    cases = [(lin, 3, True, True), (gloro_small(), 4, True, True), (linf_small(), 3, False, True),
             (linf_small(method="ibp"), 3, True, True), (smooth, 3, True, False)]
    for cert, classes, monotone, exact in cases:
        assert implements_rejection_score(cert)
        assert cert.num_classes == classes
        assert cert.monotone is monotone and cert.score_is_exact is exact
    plain = Scoreless()
    assert not implements_rejection_score(plain)
    with pytest.raises(NotImplementedError):
        plain.rejection_score(torch.rand(2, 3), 0.1)
    with pytest.raises(NotImplementedError):
        plain.num_classes
    with pytest.raises(ValueError, match="does not implement rejection_score"):
        certificate_attack(plain, torch.rand(2, 3), 0.1)


def _certifiers():
    lins = [linear_problem(4, norm=p, seed=3)[0] for p in (1.0, 2.0, math.inf)]
    return [("gloro", gloro_small(), (1, 8, 8)), ("linf", linf_small(), (1, 8, 8))] + \
        [(f"linear_{c.norm}", c, (12,)) for c in lins]


@pytest.mark.parametrize("name,cert,shape", _certifiers(), ids=lambda v: v if isinstance(v, str) else "")
def test_score_sign_decides_certify(name, cert, shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, *shape, generator=g, dtype=torch.float64 if name.startswith("linear") else torch.float32)
    pred = cert.predict(x)
    _, r = cert.certified_radius(x)
    q = float(r.median())
    assert q > 0
    signs = set()
    for eps in (q / 2, q, 2 * q):
        s = cert.rejection_score(x, eps)
        out = cert.certify(x, eps)
        assert torch.equal(s < 0, out == pred), (name, eps)
        per = cert.rejection_score(x, eps, pred, per_class=True)
        assert torch.allclose(per.max(dim=1).values, s, atol=1e-6)
        assert torch.isinf(per.gather(1, pred[:, None])).all()
        # a label the check does not return never gets a negative score
        other = (pred + 1) % cert.num_classes
        assert (cert.rejection_score(x, eps, other) >= 0).all()
        signs |= set((s < 0).tolist())
    assert signs == {True, False}
    xg = x.clone().requires_grad_(True)
    cert.rejection_score(xg, q, pred).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labels"):
        cert.rejection_score(x, 0.05, pred[:-1])
    with pytest.raises(ValueError, match="labels"):
        cert.rejection_score(x, 0.05, torch.full_like(pred, cert.num_classes))
    with pytest.raises(ValueError, match="eps"):
        cert.rejection_score(x, -0.1, pred)


def test_gloro_rejection_loss_is_the_score_under_its_old_name():
    cert = gloro_small()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    lab = cert.predict(x)
    assert torch.equal(cert.rejection_loss(x, lab, 0.1), cert.rejection_score(x, 0.1, lab))


def test_smoothing_surrogate_is_the_distance_for_a_hard_linear_vote():
    """Base f(x) = sign(w·x + b) (logits scaled by 1e4, so softmax = vote): p_A = Φ(m/(σ‖w‖)),
    hence ε − σΦ⁻¹(p_A) = ε − (distance to the hyperplane)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, generator=g)
    lin = nn.Linear(6, 2)
    with torch.no_grad():
        lin.weight.copy_(1e4 * torch.stack([w, -w]) / 2)
        lin.bias.copy_(torch.tensor([0.0, 0.0]))
    sigma, eps, m = 0.3, 0.2, 8000
    smooth = SmoothedClassifier(nn.Sequential(nn.Flatten(), lin), 2, sigma=sigma, n=100)
    x = 0.5 + 0.15 * torch.randn(40, 6, generator=g)
    x = x.clamp(0, 1)
    dist = (x @ w).abs() / w.norm()
    keep = (dist > 0.05 * sigma) & (dist < 1.5 * sigma)
    x, dist = x[keep], dist[keep]
    s = smooth.rejection_score(x, eps, samples=m, generator=torch.Generator().manual_seed(4))
    p = torch.distributions.Normal(0, 1).cdf(dist / sigma)
    dens = torch.exp(torch.distributions.Normal(0, 1).log_prob(dist / sigma))
    tol = 4 * sigma * torch.sqrt(p * (1 - p) / m) / dens + 1e-3       # 4 MC standard errors (delta method)
    assert keep.sum() > 15
    assert ((s - (eps - dist)).abs() <= tol).all()


# ----------------------------------------------------------------------------- the attack
def _exact_eps(r, quantile=0.6):
    r = r.sort().values
    k = int(quantile * (len(r) - 1))
    two_eps = float(r[k] + r[k + 1]) / 2
    assert two_eps <= 0.3
    return two_eps / 2


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("norm", [2.0, math.inf])
def test_attack_is_exact_on_an_exact_linear_certifier(norm, schedule):
    """Degradable ⇔ certified at ε and r(x) ≤ 2ε: the attack must reject exactly those points."""
    cert, x = linear_problem(4, norm=norm, seed=5)
    labels, r = cert.certified_radius(x)
    eps = _exact_eps(r)
    xp, info = certificate_attack(cert, x, eps, generator=torch.Generator().manual_seed(0), return_info=True,
                                  schedule=schedule)
    assert (lp(xp - x, norm) <= eps * (1 + 1e-9)).all() and xp.min() >= 0 and xp.max() <= 1
    certified = r > eps
    away = (r - 2 * eps).abs() > 1e-3 * eps
    m = certified & away
    rejected = cert.certify(xp, eps) == ABSTAIN
    assert m.sum() > 50 and 0.2 < (r[m] <= 2 * eps).float().mean() < 0.8
    assert torch.equal(rejected[m], (r <= 2 * eps)[m])
    assert torch.equal(cert.predict(xp)[certified], labels[certified])       # never a label flip
    # early exit: points rejected at x and points certified at 2ε (monotone) cost nothing
    assert (info["evaluations"][(~certified) | (r > 2 * eps)] == 0).all()
    assert torch.equal(xp[~certified], x[~certified])


def _points_and_eps(cert, n: int, seed: int):
    """``n`` uniform 1×8×8 inputs (seeded), their certified labels and radii, and ε = median radius / 1.5
    (so that some points are certified at ε and some of those are not at 2ε)."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    labels, r = cert.certified_radius(x)
    return x, labels, r, float(r.median()) / 1.5


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_attack_on_gloro_never_flips_and_never_beats_the_2eps_check(schedule):
    cert = gloro_small(1)
    x, labels, r, eps = _points_and_eps(cert, 80, seed=6)
    xp, info = certificate_attack(cert, x, eps, generator=torch.Generator().manual_seed(0), steps=60,
                                  skip_certified_2eps=False, return_info=True, schedule=schedule)
    assert info["evaluations"].max() <= attack_budget(dict(restarts=2, targets=3, steps=60))
    certified = r > eps
    assert (lp(xp - x, 2.0) <= eps * (1 + 1e-6)).all() and xp.min() >= 0 and xp.max() <= 1
    assert torch.equal(cert.predict(xp)[certified], labels[certified])
    rejected = cert.certify(xp, eps) == ABSTAIN
    assert not (rejected & (r > 2 * eps * (1 + 1e-5))).any()                  # Lemma 8
    assert (rejected & certified).sum() > 0
    # the reported score is the score at x' (it decides the check)
    s = cert.rejection_score(xp, eps, labels)
    assert torch.allclose(s.double(), info["score"], atol=1e-4)
    # same generator seed, same points
    again = certificate_attack(cert, x, eps, generator=torch.Generator().manual_seed(0), steps=60,
                               skip_certified_2eps=False, schedule=schedule)
    assert torch.equal(again, xp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_attack_on_the_smoothing_surrogate_moves_straight_to_the_hyperplane(schedule):
    """Hard linear vote (base f(x) = sign(w·x), logits scaled by 1e4): the surrogate grows as x' nears
    the hyperplane, so its maximiser over the ε-ball (the box never binds here) moves x by exactly ε
    along ∓w. Both step rules must find it through the Monte-Carlo noise of the score."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, generator=g)
    lin = nn.Linear(6, 2)
    with torch.no_grad():
        lin.weight.copy_(1e4 * torch.stack([w, -w]) / 2)
        lin.bias.zero_()
    eps = 0.1
    smooth = SmoothedClassifier(nn.Sequential(nn.Flatten(), lin), 2, sigma=0.3, n=100)
    x = (0.5 + 0.1 * torch.randn(60, 6, generator=g)).clamp(0.2, 0.8)     # ε-ball inside [0, 1]^6
    dist = (x @ w).abs() / w.norm()
    x, dist = x[dist > 1.5 * eps], dist[dist > 1.5 * eps]
    xp = certificate_attack(smooth, x, eps, steps=30, restarts=1, targets=0, score_kwargs=dict(samples=2000),
                            labels=((x @ w) < 0).long(), generator=torch.Generator().manual_seed(5),
                            schedule=schedule)
    moved = dist - (xp @ w).abs() / w.norm()
    assert len(x) > 30
    assert (lp(xp - x, 2.0) <= eps * (1 + 1e-6)).all()
    assert (moved >= 0.99 * eps).all()


def test_attack_on_the_linf_certifier_uses_its_bound():
    cert = linf_small(2)
    x, labels, r, eps = _points_and_eps(cert, 40, seed=7)
    ok = cert.certify(x, eps) == labels
    xp, info = certificate_attack(cert, x, eps, steps=30, restarts=1, targets=1,
                                  generator=torch.Generator().manual_seed(0), return_info=True)
    assert (lp(xp - x, math.inf) <= eps * (1 + 1e-6)).all() and xp.min() >= 0 and xp.max() <= 1
    assert torch.equal(cert.predict(xp)[ok], labels[ok])
    rejected = cert.certify(xp, eps) == ABSTAIN
    assert torch.equal(rejected, info["score"] >= 0)
    assert ok.sum() > 5 and (rejected & ok).sum() > 0


@pytest.mark.parametrize("kwargs", [dict(restarts=0), dict(steps=0), dict(targets=-1),
                                    dict(rel_step=0.1, final_rel_step=0.2), dict(skip=torch.zeros(3, dtype=torch.bool)),
                                    dict(schedule="adam")])
def test_attack_bad_arguments_raise(kwargs):
    cert, x = linear_problem(3, n=5)
    with pytest.raises(ValueError):
        certificate_attack(cert, x, 0.1, **kwargs)


def test_apgd_checkpoints_are_the_papers():
    """Croce & Hein (2020), Section 3.2: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03,
    0.06); for 100 steps the checkpoints are 0, 22, 41, 57, 70, 80, 87, 93, 99 (by hand)."""
    assert _apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert _apgd_checkpoints(1000)[:4] == [0, 220, 410, 570]


def test_apgd_halves_the_step_on_a_plateau_and_returns_to_the_best():
    """A constant score never improves: at the first checkpoint every point halves η and restarts
    from the run's best iterate (its first one); on a strictly increasing score η stays 2ε."""
    x0 = torch.full((3, 1, 2, 2), 0.5, dtype=torch.float64)
    for increasing in (False, True):
        state = _ApgdState(x0.clone(), 0.1, 10)                 # checkpoints 0, 3, 5, 6, 7, ...; the first at k = 3
        z = x0.clone()
        grad = torch.ones_like(z)
        for k in range(4):
            val = torch.full((3,), float(k) if increasing else 1.0, dtype=torch.float64)
            z = state.step(k, x0, z, val, grad, 2.0)
            assert (torch.linalg.vector_norm((z - x0).flatten(1), dim=1) <= 0.1 + 1e-12).all()
        if increasing:
            assert torch.equal(state.eta, torch.full((3,), 0.2, dtype=torch.float64))
        else:
            assert torch.equal(state.eta, torch.full((3,), 0.1, dtype=torch.float64))
            assert torch.equal(state.prev, x0)                      # returned to the best iterate x0


# ----------------------------------------------------------------------------- sound bounds
def test_ball_box_min_is_a_lower_bound_with_a_small_duality_gap():
    g = torch.Generator().manual_seed(8)
    lam = torch.randn(200, 10, generator=g, dtype=torch.float64)
    x = torch.rand(200, 10, generator=g, dtype=torch.float64)
    x[:, :4] = 0.0                                         # pixels at 0 can only grow
    eps = 0.6
    low = ball_box_min(lam, x, eps, iters=40)
    # primal feasible points δ(τ) = clamp(−Λ/τ, −x, 1 − x) with ‖δ‖ ≤ ε give upper bounds:
    # bisection on τ ∈ [1e-6, 1e6] keeping the feasible end, 200 steps (the KKT point)
    lo_t = torch.full((200,), 1e-6, dtype=torch.float64)
    hi_t = torch.full((200,), 1e6, dtype=torch.float64)
    for _ in range(200):
        mid = (lo_t * hi_t).sqrt()
        d = (-lam / mid[:, None]).clamp(-x, 1 - x)
        feasible = torch.linalg.vector_norm(d, dim=1) <= eps
        hi_t, lo_t = torch.where(feasible, mid, hi_t), torch.where(feasible, lo_t, mid)
    upper = (lam * (-lam / hi_t[:, None]).clamp(-x, 1 - x)).sum(1)
    # random feasible points never go below the bound
    d = torch.randn(200, 3000, 10, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=2, keepdim=True) * eps * torch.rand(200, 3000, 1, generator=g, dtype=torch.float64)
    xp = (x[:, None] + d).clamp(0, 1)
    sampled = ((xp - x[:, None]) * lam[:, None]).sum(2).min(dim=1).values
    assert (low <= upper + 1e-12).all() and (low <= sampled + 1e-12).all()
    assert (upper - low).max() < 1e-6 * lam.norm(dim=1).max()
    # ball only (box inactive) and box only (ball inactive) are exact
    mid = torch.full_like(x, 0.5)
    assert torch.allclose(ball_box_min(lam, mid, 0.01), -0.01 * lam.norm(dim=1))
    assert torch.allclose(ball_box_min(lam, x, 100.0), torch.minimum(-lam * x, lam * (1 - x)).sum(1))


@pytest.mark.parametrize("intermediate", ["crown", "interval"])
def test_gloro_bounds_are_sound_against_pgd_and_the_attack(intermediate):
    cert = gloro_small(2)
    x, labels, r, eps = _points_and_eps(cert, 24, seed=9)
    B = GloroBounds(cert, intermediate=intermediate)
    lb = B.margin_lower_bounds(x, eps, labels)
    net = cert.model.double()
    try:
        worst = torch.full_like(lb, math.inf)
        for i in range(cert.num_classes):
            z = x.double().clone()
            for _ in range(60):                                  # PGD minimising y_l − y_i
                z.requires_grad_(True)
                y = net(z)
                m = y.gather(1, labels[:, None])[:, 0] - y[:, i]
                grad, = torch.autograd.grad(m.sum(), z)
                with torch.no_grad():
                    z = z - 0.05 * eps * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    dz = z - x.double()
                    z = (x.double() + dz * (eps / dz.flatten(1).norm(dim=1).clamp_min(eps)).view(-1, 1, 1, 1)).clamp(0, 1)
                    y = net(z)
                    m = y.gather(1, labels[:, None])[:, 0] - y[:, i]
                    worst[:, i] = torch.where(labels == i, worst[:, i], torch.minimum(worst[:, i], m))
    finally:
        cert.model.float()
    assert (lb <= worst + 1e-9).all()
    proof, slack = B.unattackable(x, eps, labels)
    # never looser than GloRo's own 2ε check (the hybrid keeps the Lipschitz cut)
    assert (proof | ~(r > 2 * eps * (1 + 1e-4))).all()
    xp = certificate_attack(cert, x, eps, steps=60, skip_certified_2eps=False,
                            generator=torch.Generator().manual_seed(0))
    rejected = cert.certify(xp, eps) == ABSTAIN
    assert not (rejected & proof).any()


TINY_ARCH = dict(input_shape=(1, 3, 3), layers=[("conv", 2, 2, 1, 0), ("dense", 4)])  # 4 + 2 MinMax pairs


def _brute_force_pattern_lipschitz(net: GloroNet) -> torch.Tensor:
    """max over all 2^6 MinMax orders P of ‖J_Pᵀ(e_j − e_i)‖₂, each J_P built column by column."""
    import itertools
    conv, dense, head = (m.weight.detach().double() for m in (net.body[0], net.body[1], net.head))
    eye = torch.eye(9, dtype=torch.float64).view(9, 1, 3, 3)
    best = torch.zeros(3, 3, dtype=torch.float64)
    for bits in itertools.product([False, True], repeat=6):
        s1 = torch.tensor(bits[:4]).view(1, 1, 2, 2)
        s2 = torch.tensor(bits[4:]).view(1, 2)
        z = torch.nn.functional.conv2d(eye, conv, stride=1, padding=0)          # [9, 2, 2, 2]
        z = torch.cat([torch.where(s1, z[:, 1:], z[:, :1]), torch.where(s1, z[:, :1], z[:, 1:])], 1)
        z = z.flatten(1) @ dense.T                                               # [9, 4]
        z = torch.cat([torch.where(s2, z[:, 2:], z[:, :2]), torch.where(s2, z[:, :2], z[:, 2:])], 1)
        J = (z @ head.T).T                                                       # [3 classes, 9 inputs]
        for i in range(3):
            for j in range(3):
                best[i, j] = torch.maximum(best[i, j], (J[j] - J[i]).norm())
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pattern_witness_is_realised_and_finds_the_worst_pattern_on_a_tiny_net(seed):
    """ω is a lower bound of the pattern-agnostic constant L* (brute force over all 64 orders),
    reaches it here, and never exceeds GloRo's proven K."""
    net = GloroNet(TINY_ARCH, num_classes=3, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    cert = GloroCertifier(net.eval())
    omega = pattern_lipschitz_witness(cert, restarts=64, generator=torch.Generator().manual_seed(seed))
    L_star = _brute_force_pattern_lipschitz(net)
    assert omega.shape == (3, 3) and torch.equal(omega, omega.T) and (omega.diagonal() == 0).all()
    assert (omega <= L_star * (1 + 1e-12)).all()
    assert torch.allclose(omega, L_star, rtol=1e-9, atol=0)
    assert (L_star <= cert.K * (1 + 1e-12)).all()


def test_pattern_witness_rejects_bad_arguments():
    cert = gloro_small(0)
    with pytest.raises(ValueError, match="iters"):
        pattern_lipschitz_witness(cert, iters=0)
    with pytest.raises(ValueError, match="restarts"):
        pattern_lipschitz_witness(cert, restarts=1.5)
    with pytest.raises(TypeError, match="GloroCertifier"):
        pattern_lipschitz_witness(linf_small(0))


def test_smoothing_bound_is_never_more_generous_than_the_infinite_sample_limit():
    """Φ⁻¹(p_A) drops by at most ε/σ on the ball: in the limit exactly R > 2ε is safe; the
    finite-sample statement must prove a subset of that, growing with the radius."""
    from degradation_lib.bounds_l2 import smoothing_unattackable
    sigma, eps = 0.5, 0.5
    r = torch.linspace(0.0, 3.8 * sigma, 200, dtype=torch.float64)
    proof, failure = smoothing_unattackable(r, sigma, eps, 100_000, 0.001)
    assert not proof[r <= 2 * eps].any()
    assert proof[r >= 2 * eps + 0.05].all()                  # the sampling slack is small at n = 1e5
    assert (proof.int().diff() >= 0).all()                   # monotone in the radius
    assert (failure[proof] < 0.003).all()
    # σ = 0.25: CERTIFY's radius is capped at ≈ 3.81σ < 2ε, so nothing can be proven
    assert not smoothing_unattackable(torch.tensor([0.95]), 0.25, 0.5, 100_000, 0.001)[0].any()


def test_certattack_experiment_is_reproducible_per_point():
    """Registered in the store: shards merged equal the unsharded run, point for point."""
    import numpy as np
    from degradation_lib import experiments as E
    from degradation_lib.results import merge

    idx = np.array([0, 7, 8, 11, 13, 21])                   # mnist_0.3: both signs of the 2ε check
    kw = dict(indices=idx, block_size=3, steps=4, restarts=2, targets=1, bound=True)
    full = E.run_shard("certattack", "mnist_0.3", **kw)
    parts = merge([E.run_shard("certattack", "mnist_0.3", i, 2, **kw) for i in range(2)])
    for k in full.columns:
        assert np.array_equal(full[k], parts[k], equal_nan=True), k
    R = full["certified"] & (full["cert_label"] == full["label"])
    assert not (full["rejected_cert"] & full["unattackable"]).any()
    assert ((full["label_cert"] == -1) | (full["label_cert"] == full["label"]))[R].all()
    assert (full["dist_cert"] <= 0.3 * (1 + 1e-6)).all()
