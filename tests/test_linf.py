"""Tests of the ℓ∞ bound propagation and certifier (degradation_lib.linf, Appendix C).

Answers derived on paper (the two-neuron network of notebook 06), exactness on linear networks
against the Jacobian, soundness against dense sampling, agreement with the independent
implementation of Wong & Kolter (convex_adversarial 0.4.4), and certificates against a strong
ℓ∞ PGD. All in float64 and seeded.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from degradation_lib import ABSTAIN
from degradation_lib.linf import (BOUND_METHODS, LinfCertifier, compute_bounds, input_box, interval_bounds,
                                  margin_spec, sequential_layers)



@pytest.fixture(autouse=True)
def _float64():
    """Every test here computes in float64 on one thread (tiny networks: more threads only
    contend); the default dtype and thread count are restored afterwards."""
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(old)
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------

def two_neuron_net() -> nn.Sequential:
    """z1 = x1 + x2 − 1, z2 = x1 − x2; logits y0 = relu(z1) + relu(z2), y1 = 0.8."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        net[0].bias.copy_(torch.tensor([-1.0, 0.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([0.0, 0.8]))
    return net


def random_nets(seed: int):
    """Several random networks: dense, conv with stride/padding/dilation/groups, two affine
    layers before the first ReLU. Returns a list of (net, input shape)."""
    g = torch.Generator().manual_seed(seed)
    nets = [
        (nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 4)), (1, 2, 3)),
        (nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=0), nn.ReLU(), nn.Conv2d(3, 4, 2, stride=1, padding=1),
                       nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.ReLU(), nn.Linear(6, 3)), (1, 9, 9)),
        (nn.Sequential(nn.Conv2d(2, 4, 3, stride=1, padding=2, dilation=2), nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2),
                       nn.ReLU(), nn.Flatten(), nn.Sequential(nn.Linear(4 * 4 * 4, 10), nn.ReLU()), nn.Linear(10, 5)), (2, 7, 7)),
    ]
    for net, _ in nets:
        for p in net.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(max(p[0].numel(), 1))))
    return nets


def sign_pgd_margin(net, x, labels, eps, steps=100, restarts=3, seed=0):
    """A local multi-target ℓ∞ sign-PGD within B_∞(x, eps) ∩ [0,1]: for each target class t ≠ y
    it maximises y_t − y_y. Returns bool [N]: some iterate changed the label."""
    g = torch.Generator().manual_seed(seed)
    flipped = torch.zeros(x.shape[0], dtype=torch.bool)
    eps_ = eps.reshape(-1, *([1] * (x.dim() - 1)))
    K = net(x[:1]).shape[1]
    for t in range(K):
        for r in range(restarts):
            z = (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps_ * (r > 0)).clamp(0, 1)
            for _ in range(steps):
                z = z.detach().requires_grad_(True)
                out = net(z)
                flipped |= (out.argmax(1) != labels).detach()
                obj = out[:, t] - out.gather(1, labels[:, None])[:, 0]
                grad, = torch.autograd.grad(obj.sum(), z)
                z = torch.min(torch.max(z + 0.05 * eps_ * grad.sign(), x - eps_), x + eps_).clamp(0, 1)
            flipped |= (net(z).argmax(1) != labels).detach()
    return flipped


# --------------------------------------------------------------------------------------------
# hand-computed two-neuron example (notebook 06)
# --------------------------------------------------------------------------------------------

def test_two_neuron_bounds_by_hand():
    """x = (0.5, 0.5), ε = 0.25: z1, z2 ∈ [−½, ½], both unstable, slope s = ½, intercept ¼.

    IBP: y0 ∈ [0, 1]. KW: ½z1 + ½z2 ≤ y0 ≤ ½z1 + ½z2 + ½ with ½(z1+z2) = x1 − ½ ∈ [−¼, ¼], so
    y0 ∈ [−¼, ¾]. Margin y1 − y0 (label 1): IBP [−0.2, 0.8], KW [0.05, 1.05], KW∩IBP [0.05, 0.8].
    The exact range of the margin is [0.3, 0.8].
    """
    net = two_neuron_net()
    x = torch.tensor([[0.5, 0.5]])
    lo, hi = input_box(x, 0.25)
    l, u = compute_bounds(net, lo, hi, method="ibp")
    torch.testing.assert_close(l, torch.tensor([[0.0, 0.8]]))
    torch.testing.assert_close(u, torch.tensor([[1.0, 0.8]]))
    l, u = compute_bounds(net, lo, hi, method="kw")
    torch.testing.assert_close(l, torch.tensor([[-0.25, 0.8]]))
    torch.testing.assert_close(u, torch.tensor([[0.75, 0.8]]))
    C = margin_spec(torch.tensor([1]), 2)
    torch.testing.assert_close(C, torch.tensor([[[-1.0, 1.0]]]))
    expected = {"ibp": (-0.2, 0.8), "kw": (0.05, 1.05), "kw_ibp": (0.05, 0.8)}
    for method, (el, eu) in expected.items():
        l, u = compute_bounds(net, lo, hi, C, method=method)
        torch.testing.assert_close(l, torch.tensor([[el]]), msg=method)
        torch.testing.assert_close(u, torch.tensor([[eu]]), msg=method)
    # the exact range, by a fine grid over the box
    grid = torch.linspace(0.25, 0.75, 201)
    X = torch.cartesian_prod(grid, grid)
    m = net(X) @ torch.tensor([-1.0, 1.0])
    assert abs(m.min().item() - 0.3) < 1e-12 and abs(m.max().item() - 0.8) < 1e-12


def test_two_neuron_radii_by_hand():
    """For ε ≤ ½ around (½, ½): max y0 is 4ε (IBP), 3ε (KW), 2ε (exact), so the margin 0.8 − max y0
    certifies up to ε = 0.2 (IBP), 4/15 (KW and KW∩IBP); the exact radius is 0.4."""
    net = two_neuron_net()
    x = torch.tensor([[0.5, 0.5]])
    tol = 1e-4
    for method, r_true in [("ibp", 0.2), ("kw", 4 / 15), ("kw_ibp", 4 / 15)]:
        cert = LinfCertifier(net, method=method, tol=tol)
        labels, r = cert.certified_radius(x)
        assert labels.item() == 1
        assert r_true - tol <= r.item() <= r_true, (method, r.item())
        assert cert.certify(x, r_true * 0.999).item() == 1
        assert cert.certify(x, r_true * 1.001).item() == ABSTAIN


def test_pure_kw_can_be_looser_than_ibp():
    """relu(x), x ∈ [−1, 1]: IBP gives [0, 1]; KW's lower line ½x gives −½ -- hence KW ∩ IBP."""
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        for lin in (net[0], net[2]):
            lin.weight.fill_(1.0)
            lin.bias.fill_(0.0)
    lo, hi = torch.tensor([[-1.0]]), torch.tensor([[1.0]])
    assert compute_bounds(net, lo, hi, method="ibp")[0].item() == 0.0
    assert compute_bounds(net, lo, hi, method="kw")[0].item() == -0.5
    assert compute_bounds(net, lo, hi, method="kw_ibp")[0].item() == 0.0
    assert compute_bounds(net, lo, hi, method="kw")[1].item() == 1.0


# --------------------------------------------------------------------------------------------
# exactness and soundness
# --------------------------------------------------------------------------------------------

def test_linear_networks_exact_against_jacobian():
    """Without ReLUs the KW bound is the exact range of an affine map: ±|J|·r around J·c + f(0).
    Checks the transposed convolutions (stride, padding, dilation, groups, odd sizes)."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=0), nn.Conv2d(4, 6, 3, stride=1, padding=2, dilation=2, groups=2),
                        nn.Conv2d(6, 3, 2, stride=3, padding=1), nn.Flatten(), nn.Linear(3 * 2 * 2, 5))
    for p in net.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.rand(3, 2, 11, 11, generator=g)
    lo, hi = input_box(x, 0.07, clip=False)
    J = torch.autograd.functional.jacobian(lambda z: net(z[None])[0], x[0]).reshape(5, -1)
    f0 = net(torch.zeros(1, 2, 11, 11))[0]
    c, r = ((hi + lo) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    exp_lo = c @ J.T - r @ J.abs().T + f0
    exp_hi = c @ J.T + r @ J.abs().T + f0
    for method in ("kw", "kw_ibp"):
        l, u = compute_bounds(net, lo, hi, method=method)
        torch.testing.assert_close(l, exp_lo, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(u, exp_hi, rtol=1e-10, atol=1e-10)
    l_ibp, u_ibp = compute_bounds(net, lo, hi, method="ibp")   # IBP is sound but looser here
    assert (l_ibp <= exp_lo + 1e-10).all() and (u_ibp >= exp_hi - 1e-10).all()
    assert (l_ibp < exp_lo - 1e-6).any()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("clip", [True, False])
def test_sampled_outputs_stay_inside_bounds(seed, clip):
    """10,000 points per network (uniform in the box, plus box vertices) never leave the bounds,
    for every method, with and without a specification matrix."""
    g = torch.Generator().manual_seed(100 + seed)
    for net, shape in random_nets(seed):
        N = 4
        x = torch.rand(N, *shape, generator=g)
        eps = torch.tensor([0.02, 0.05, 0.1, 0.3])
        lo, hi = input_box(x, eps, clip=clip)
        K = net(x[:1]).shape[1]
        labels = torch.randint(0, K, (N,), generator=g)
        C = margin_spec(labels, K)
        bounds = {m: (compute_bounds(net, lo, hi, None, m), compute_bounds(net, lo, hi, C, m)) for m in BOUND_METHODS}
        for _ in range(5):
            u = torch.rand(N, 2000, *shape, generator=g)
            u[:, :500] = u[:, :500].round()          # vertices of the box
            pts = lo[:, None] + (hi - lo)[:, None] * u
            with torch.no_grad():
                out = net(pts.reshape(-1, *shape)).reshape(N, 2000, K)
            spec = torch.einsum("nsk,npk->nps", C, out)
            for m, ((l, h), (cl, ch)) in bounds.items():
                assert (out >= l[:, None] - 1e-9).all() and (out <= h[:, None] + 1e-9).all(), m
                assert (spec >= cl[:, None] - 1e-9).all() and (spec <= ch[:, None] + 1e-9).all(), m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kw_ibp_never_looser_than_ibp_and_tighter_somewhere(seed):
    g = torch.Generator().manual_seed(200 + seed)
    tighter = 0
    for net, shape in random_nets(seed):
        x = torch.rand(6, *shape, generator=g)
        lo, hi = input_box(x, 0.05)
        K = net(x[:1]).shape[1]
        C = margin_spec(net(x).argmax(1), K)
        il, iu = compute_bounds(net, lo, hi, C, "ibp")
        kl, ku = compute_bounds(net, lo, hi, C, "kw_ibp")
        assert (kl >= il).all() and (ku <= iu).all()
        assert (kl <= ku).all()
        tighter += int((kl > il + 1e-6).sum())
    assert tighter > 0


# --------------------------------------------------------------------------------------------
# agreement with convex_adversarial (Wong & Kolter's implementation)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bounded_input", [False, True])
def test_agrees_with_convex_adversarial(bounded_input):
    """DualNetwork(net, X, ε)(c) is Wong & Kolter's lower bound of c·f over the box (with
    ``bounded_input=True`` the box ∩ [0, 1], our ``clip=True``). convex_adversarial's transposed
    convolutions assume exact inverse shapes, so the conv geometry here is one it supports."""
    from convex_adversarial import DualNetwork

    g = torch.Generator().manual_seed(7)
    nets = [
        nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)),
        nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 4, stride=2, padding=1),
                      nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 12), nn.ReLU(), nn.Linear(12, 5)),
        nn.Sequential(nn.Conv2d(1, 3, 3, stride=1, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 8),
                      nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)),
    ]
    for net in nets:
        for p in net.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p[0].numel(), 1)))
        x = torch.rand(5, 1, 4, 4, generator=g)
        if isinstance(net[0], nn.Conv2d) and net[0].stride == (2, 2):
            x = torch.rand(5, 1, 8, 8, generator=g)
        K = net(x[:1]).shape[1]
        C = margin_spec(net(x).argmax(1), K)
        for eps in (0.01, 0.05, 0.2):
            with torch.no_grad():
                ref = DualNetwork(net, x, eps, bounded_input=bounded_input)(C)
            lo, hi = input_box(x, eps, clip=bounded_input)
            ours, _ = compute_bounds(net, lo, hi, C, "kw")
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
            assert (ours - ref).abs().max() < 1e-10   # in fact equal up to rounding


# --------------------------------------------------------------------------------------------
# the certifier
# --------------------------------------------------------------------------------------------

def test_certified_points_not_flipped_by_pgd():
    """At its certified radius r, no point is flipped by a multi-target ℓ∞ sign-PGD within
    B_∞(x, r) ∩ [0, 1]; the same attack does flip points at 10 r (it is not vacuous)."""
    g = torch.Generator().manual_seed(11)
    certified = flipped_far = 0
    for net, shape in random_nets(5):
        x = torch.rand(16, *shape, generator=g)
        cert = LinfCertifier(net, tol=1e-4)
        labels, r = cert.certified_radius(x)
        ok = r > 0
        certified += int(ok.sum())
        assert not sign_pgd_margin(net, x[ok], labels[ok], r[ok]).any()
        far = sign_pgd_margin(net, x[ok], labels[ok], 10 * r[ok], steps=50, restarts=1)
        flipped_far += int(far.sum())
    assert certified >= 30 and flipped_far > 0


def test_radius_is_verified_and_consistent_with_certify():
    g = torch.Generator().manual_seed(12)
    for net, shape in random_nets(6):
        x = torch.rand(10, *shape, generator=g)
        cert = LinfCertifier(net, tol=1e-3, batch_size=3)
        labels, r = cert.certified_radius(x)
        torch.testing.assert_close(labels, net(x).argmax(1))
        pos = r > 0
        # the returned radius is an ε at which every margin's lower bound is positive
        lb = cert.margin_lower_bounds(x[pos], r[pos], labels[pos])
        assert (lb > 0).all()
        # certify at ε agrees with the bisection away from its tolerance
        eps = 0.02
        c = cert.certify(x, eps)
        assert ((c == labels) | (c == ABSTAIN)).all()
        assert (c[r > eps] == labels[r > eps]).all()
        assert (c[r + cert.tol < eps] == ABSTAIN).all()
        # batching does not change the result
        r2 = LinfCertifier(net, tol=1e-3, batch_size=64).certified_radius(x)[1]
        torch.testing.assert_close(r, r2)


def test_bad_inputs_raise_clear_errors():
    net = two_neuron_net()
    cert = LinfCertifier(net)
    x = torch.tensor([[0.5, 0.5]])
    for eps in (-0.1, math.nan, math.inf, "a"):
        with pytest.raises(ValueError, match="eps"):
            cert.certify(x, eps)
    with pytest.raises(ValueError, match="eps"):
        input_box(x, -1.0)
    with pytest.raises(ValueError, match=r"unsupported layer 1 \(Tanh\)"):
        sequential_layers(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        LinfCertifier(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="method"):
        compute_bounds(net, x, x, method="crown")
    with pytest.raises(ValueError, match="x"):
        cert.certify(torch.tensor([[1.5, 0.5]]), 0.1)
    with pytest.raises(ValueError, match="lower"):
        compute_bounds(net, x + 0.1, x)
    # ε = 0 is allowed: the bound is the exact margin
    assert cert.certify(x, 0.0).item() == 1


def test_interval_bounds_are_differentiable():
    net = two_neuron_net()
    x = torch.tensor([[0.5, 0.5]])
    lo, hi = input_box(x, 0.25)
    lb, _ = interval_bounds(net, lo, hi, margin_spec(torch.tensor([1]), 2))
    lb.sum().backward()
    # d(lb)/d(b2) = (−1, 1): the margin's lower bound moves with the bias of class 1
    torch.testing.assert_close(net[2].bias.grad, torch.tensor([-1.0, 1.0]))


def test_committed_model_loads_and_certifies():
    """The committed model: loaded through the registry, certified on the first 100 test images.
    KW ∩ IBP radii are never below the IBP radii (an IBP-verified ε is KW ∩ IBP-verified)."""
    from degradation_lib import load_mnist, load_model

    cert = load_model("mnist_linf_0.1")
    assert isinstance(cert, LinfCertifier) and cert.norm == math.inf and cert.method == "kw_ibp"
    x, y = load_mnist("test")
    x, y = x[:100], y[:100]
    assert (cert.predict(x) == y).float().mean() >= 0.95
    c = cert.certify(x, 0.1)
    assert ((c == y) | (c == ABSTAIN)).float().mean() >= 0.99   # a certified point is (almost always) correct
    assert (c == y).float().mean() >= 0.9
    _, r_ibp = LinfCertifier(cert.model, method="ibp").certified_radius(x[:20])
    _, r = cert.certified_radius(x[:20])
    assert (r >= r_ibp).all()
