"""Tests of the GloRo module: spectral norms, the Lipschitz bound, the certifier, training.

Checks against answers derived independently: the SVD of the explicit matrix of each linear
layer, isometries (constant 1), the definition of a Lipschitz constant on random pairs and
through input gradients, a PGD attack that never flips a certified point inside its radius,
and the reference numbers stored with the committed models.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from degradation_lib import ABSTAIN, load_mnist, load_model
from degradation_lib.gloro import (GloroCertifier, GloroNet, LipschitzConv2d, LipschitzLinear, PowerIterationMixin,
                                   certified_radius_from_logits, gloro_logits, gloro_loss, minmax)
from degradation_lib.registry import CHECKPOINT_DIR

torch.set_num_threads(1)

SMALL_ARCH = dict(input_shape=(1, 12, 12),
                  layers=[("conv", 4, 4, 2, 1), ("conv", 6, 3, 1, 1), ("dense", 8)])


def explicit_matrix(layer) -> torch.Tensor:
    """The matrix of the linear map u ↦ A u, column by column from the standard basis."""
    n = layer.u.numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *layer.u.shape[1:]) if layer.u.dim() > 1 \
        else torch.eye(n, dtype=torch.float64)
    return layer.op(basis).reshape(n, -1).T


def small_net(seed=0, scale_heads=1.0) -> GloroNet:
    torch.manual_seed(seed)
    net = GloroNet(SMALL_ARCH, num_classes=5, seed=seed).double()
    with torch.no_grad():  # move away from the orthogonal init so that the constants are not trivial
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
        net.head.weight.mul_(scale_heads)
    return net


# -------------------------------------------------------------------------------------------
# Spectral norms
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (10, 10), (1, 6)])
def test_power_iteration_dense_matches_svd(shape):
    torch.manual_seed(1)
    layer = LipschitzLinear(shape[1], shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(*shape, dtype=torch.float64))
    exact = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
    assert layer.converge(tol=1e-12, max_steps=100000) == pytest.approx(exact, rel=1e-6)
    assert layer.spectral_norm().item() <= exact * (1 + 1e-12)  # power iteration: from below


@pytest.mark.parametrize("c_in,c_out,k,s,p,h,w", [
    (2, 3, 4, 2, 1, 8, 8),    # 'same' stride 2, stride divides
    (2, 3, 4, 2, 1, 7, 9),    # odd sizes: output padding needed in the transpose
    (3, 2, 3, 1, 1, 6, 5),    # 'same' stride 1
    (1, 4, 5, 3, 2, 10, 11),  # stride 3
    (2, 2, 3, 2, 0, 7, 7),    # no padding
])
def test_power_iteration_conv_matches_svd(c_in, c_out, k, s, p, h, w):
    torch.manual_seed(2)
    layer = LipschitzConv2d(c_in, c_out, k, s, p, input_shape=(c_in, h, w)).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight))
    # Aᵀ is the adjoint of A: <A u, v> = <u, Aᵀ v>
    u = torch.randn_like(layer.u)
    v = torch.randn(1, *layer.output_shape(), dtype=torch.float64)
    assert (layer.op(u) * v).sum().item() == pytest.approx((u * layer.op_t(v)).sum().item(), rel=1e-10, abs=1e-10)
    A = explicit_matrix(layer)
    assert A.shape == (c_out * layer.output_hw[0] * layer.output_hw[1], c_in * h * w)
    exact = torch.linalg.matrix_norm(A, ord=2).item()
    # power iteration (conv2d / conv_transpose2d), run to convergence
    sigma = PowerIterationMixin.converge(layer, tol=1e-13, max_steps=100000, check_every=100)
    assert sigma == pytest.approx(exact, rel=1e-6) and sigma <= exact * (1 + 1e-12)
    # the norm used for certificates is a proven upper bound, tight to ~1e-9 (tests/test_soundness.py)
    assert exact <= layer.converge() <= exact * (1 + 1e-7)


def test_orthonormal_layers_have_constant_one():
    torch.manual_seed(3)
    q = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0]
    dense = LipschitzLinear(16, 16).double()
    # strided isometry: a 2x2/stride-2 conv whose 4C x 4C kernel matrix is orthogonal
    conv = LipschitzConv2d(4, 16, 2, 2, 0, input_shape=(4, 6, 6)).double()
    conv1x1 = LipschitzConv2d(16, 16, 1, 1, 0, input_shape=(16, 5, 5)).double()
    with torch.no_grad():
        dense.weight.copy_(q)
        conv.weight.copy_(q.reshape(16, 4, 2, 2))
        conv1x1.weight.copy_(q.reshape(16, 16, 1, 1))
    for layer in (dense, conv, conv1x1):
        assert layer.converge(tol=1e-12) == pytest.approx(1.0, abs=1e-9)
        assert torch.linalg.matrix_norm(explicit_matrix(layer), ord=2).item() == pytest.approx(1.0, abs=1e-12)
    # a whole network of isometries: L_sub = 1 and K_ij = ||w_i - w_j||
    net = GloroNet(dict(input_shape=(4, 6, 6), layers=[("conv", 16, 2, 2, 0), ("dense", 144)]),
                   num_classes=3).double()
    q2 = torch.linalg.qr(torch.randn(144, 144, dtype=torch.float64))[0]
    with torch.no_grad():
        net.body[0].weight.copy_(q.reshape(16, 4, 2, 2))
        net.body[1].weight.copy_(q2)
    cert = GloroCertifier(net, tol=1e-12)
    assert cert.lipschitz_constant == pytest.approx(1.0, abs=1e-9)
    w = net.head.weight.detach()
    assert torch.allclose(cert.K, torch.cdist(w, w), atol=1e-9)


def test_minmax_is_a_sorted_pair_and_1_lipschitz():
    torch.manual_seed(4)
    x = torch.randn(8, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    a, b = x.detach().chunk(2, dim=1)
    assert torch.equal(minmax(x.detach()), torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1))
    assert torch.autograd.gradcheck(minmax, (x,))
    z = torch.randn_like(x)
    lhs = torch.linalg.vector_norm((minmax(x.detach()) - minmax(z)).flatten(1), dim=1)
    rhs = torch.linalg.vector_norm((x.detach() - z).flatten(1), dim=1)
    assert (lhs <= rhs * (1 + 1e-12)).all()
    with pytest.raises(ValueError):
        minmax(torch.zeros(2, 3))


def test_minmax_keeps_channels_last_and_agrees_with_contiguous():
    torch.manual_seed(5)
    x = torch.randn(4, 8, 5, 5)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x.requires_grad_(True)
    y, yc = minmax(x), minmax(xc)
    assert yc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, yc)
    g = torch.randn_like(y)
    gx, = torch.autograd.grad(y, x, g)
    gxc, = torch.autograd.grad(yc, xc, g.contiguous(memory_format=torch.channels_last))
    assert torch.equal(gx, gxc)
    # the gradient routes each output's gradient back to the input it came from
    a, b = x.detach().chunk(2, dim=1)
    g_lo, g_hi = g.chunk(2, dim=1)
    swap = a > b
    assert torch.equal(gx, torch.cat([torch.where(swap, g_hi, g_lo), torch.where(swap, g_lo, g_hi)], dim=1))
    # second derivatives (create_graph=True) go through the differentiable path
    xd = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(minmax, (xd,))


# -------------------------------------------------------------------------------------------
# The Lipschitz bound is sound
# -------------------------------------------------------------------------------------------

def test_margin_bound_on_random_pairs():
    net = small_net(5)
    cert = GloroCertifier(net, tol=1e-12)
    K = cert.K
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3000, 1, 12, 12, generator=gen, dtype=torch.float64)
    # near and far partners
    scale = torch.rand(3000, 1, 1, 1, generator=gen, dtype=torch.float64) ** 3
    x2 = (x + scale * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    with torch.no_grad():
        y, y2 = net(x), net(x2)
    dist = torch.linalg.vector_norm((x - x2).flatten(1), dim=1)
    diff_margins = (y[:, :, None] - y[:, None, :]) - (y2[:, :, None] - y2[:, None, :])   # [N, C, C]
    assert (diff_margins.abs() <= K[None] * dist[:, None, None] * (1 + 1e-9) + 1e-12).all()
    # the bound is not vacuous: some pairs use a decent share of it
    ratio = diff_margins.abs() / (K[None] * dist[:, None, None]).clamp_min(1e-300)
    assert ratio.max() > 0.05


def test_margin_gradient_norm_below_K():
    """‖∇_x (y_j − y_i)‖₂ ≤ K_ij at random points and at points pushed to large gradients."""
    net = small_net(6, scale_heads=3.0)
    K = GloroCertifier(net, tol=1e-12).K
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(200, 1, 12, 12, generator=gen, dtype=torch.float64)
    worst = 0.0
    for i, j in [(0, 1), (2, 4), (3, 0)]:
        z = x.clone().requires_grad_(True)
        for _ in range(30):  # gradient ascent on the gradient norm (a local worst case)
            g = torch.autograd.grad((net(z)[:, j] - net(z)[:, i]).sum(), z, create_graph=True)[0]
            gnorm = torch.linalg.vector_norm(g.flatten(1), dim=1)
            assert (gnorm <= K[i, j] * (1 + 1e-9)).all()
            worst = max(worst, (gnorm / K[i, j]).max().item())
            step = torch.autograd.grad(gnorm.sum(), z)[0]
            z = (z + 0.05 * step / torch.linalg.vector_norm(step.flatten(1), dim=1).clamp_min(1e-12)[:, None, None, None]).detach().requires_grad_(True)
    assert worst > 0.1


# -------------------------------------------------------------------------------------------
# Certifier
# -------------------------------------------------------------------------------------------

def test_bottom_logit_and_radius_by_hand():
    K = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.0, 4.0], [1.0, 4.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[3.0, 1.0, 0.5]], dtype=torch.float64)
    # j = 0: y_bot = max(1 + 0.2*2, 0.5 + 0.2*1) = 1.4; radius = min(2/2, 2.5/1) = 1
    assert gloro_logits(y, K, 0.2)[0, -1].item() == pytest.approx(1.4)
    j, r = certified_radius_from_logits(y, K)
    assert j.item() == 0 and r.item() == pytest.approx(1.0)


def test_ties_are_never_certified():
    K = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    y = torch.tensor([[2.0, 2.0, -5.0], [0.0, 0.0, 0.0], [1.0, -3.0, 1.0]])
    aug = gloro_logits(y, K, 1e-6)
    j = y.argmax(dim=1)
    assert (aug[:, -1] >= aug.gather(1, j[:, None]).squeeze(1)).all()  # by value masking would fail row 0
    assert (certified_radius_from_logits(y, K)[1] == 0).all()
    # through the certifier: two identical output rows and biases give tied logits everywhere
    net = small_net(7)
    with torch.no_grad():
        net.head.weight[3].copy_(net.head.weight[1])
        net.head.bias[3] = net.head.bias[1]
        net.head.bias[1] += 100.0  # class 1 is the top class ...
        net.head.bias[3] += 100.0  # ... tied with class 3
    cert = GloroCertifier(net)
    x = torch.rand(50, 1, 12, 12, dtype=torch.float64)
    labels, radius = cert.certified_radius(x)
    assert (labels == 1).all() and (radius == 0).all()
    assert (cert.certify(x, 1e-9) == ABSTAIN).all()


def test_certify_agrees_with_radius():
    net = small_net(8)
    cert = GloroCertifier(net, tol=1e-12)
    x = torch.rand(2000, 1, 12, 12, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    labels, radius = cert.certified_radius(x)
    assert (labels == cert.predict(x)).all()
    for eps in [float(radius.quantile(q)) * 1.0001 + 1e-9 for q in (0.1, 0.3, 0.5, 0.7, 0.9)]:
        out = cert.certify(x, eps)
        near = (radius - eps).abs() <= 1e-9 * eps
        expected = torch.where(radius > eps, labels, torch.full_like(labels, ABSTAIN))
        assert (out[~near] == expected[~near]).all()
        assert 0 < (out != ABSTAIN).sum() < len(x)


def test_rejection_loss_sign_matches_certify():
    """s(x) < 0 exactly where certify(x, ε) returns the label; s(x) > 0 otherwise."""
    net = small_net(12)
    cert = GloroCertifier(net, tol=1e-12)
    x = torch.rand(2000, 1, 12, 12, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    labels, radius = cert.certified_radius(x)
    eps = float(radius.median()) * 1.0001 + 1e-9
    out = cert.certify(x, eps)
    s = cert.rejection_loss(x, labels, eps)
    near = s.abs() <= 1e-9
    assert ((s < 0) == (out == labels))[~near].all()
    assert 0 < (s < 0).sum() < len(x)
    # another class as label: never certified for it, the score is ≥ 0
    other = (labels + 1) % 5
    assert (cert.rejection_loss(x, other, eps) >= 0).all()
    # differentiable in x, constants K not trained through
    xg = x[:16].clone().requires_grad_(True)
    cert.rejection_loss(xg, labels[:16], eps).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert not cert.K.requires_grad
    with pytest.raises(ValueError):
        cert.rejection_loss(x[:3], labels[:2], eps)
    with pytest.raises(ValueError):
        cert.rejection_loss(x[:3], labels[:3].float(), eps)
    with pytest.raises(ValueError):
        cert.rejection_loss(x[:3], labels[:3], -1.0)


@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf"), "a"])
def test_bad_eps_raises(eps):
    cert = GloroCertifier(small_net(9))
    with pytest.raises(ValueError):
        cert.certify(torch.rand(2, 1, 12, 12, dtype=torch.float64), eps)


@pytest.mark.parametrize("x", [torch.rand(2, 12, 12), torch.rand(2, 1, 13, 12), torch.rand(2, 2, 12, 12),
                               torch.rand(2, 1, 12, 12) + 1.0, -torch.rand(2, 1, 12, 12) - 0.01,
                               torch.full((2, 1, 12, 12), float("nan")), torch.zeros(2, 1, 12, 12, dtype=torch.int64)])
def test_bad_input_raises(x):
    cert = GloroCertifier(small_net(9))
    for call in (cert.predict, cert.certified_radius, lambda z: cert.certify(z, 0.1)):
        with pytest.raises(ValueError):
            call(x)


def test_cache_invalidated_when_weights_change():
    net = small_net(10)
    cert = GloroCertifier(net, tol=1e-10)
    K1 = cert.K
    assert cert.K is K1  # cached
    with torch.no_grad():
        net.head.weight.mul_(2.0)
    K2 = cert.K
    assert torch.allclose(K2, 2 * K1, rtol=1e-8)
    with torch.no_grad():
        net.body[0].weight.mul_(3.0)
    assert torch.allclose(cert.K, 3 * K2, rtol=1e-6)
    # an optimizer step also invalidates the cache
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.rand(4, 1, 12, 12, dtype=torch.float64)).sum().backward()
    opt.step()
    K3 = cert.K
    exact = math.prod(torch.linalg.matrix_norm(explicit_matrix(l), ord=2).item() for l in net.body)
    w = net.head.weight.detach()
    assert torch.allclose(K3, exact * torch.cdist(w, w), rtol=1e-6)


# -------------------------------------------------------------------------------------------
# Training loss and training loop
# -------------------------------------------------------------------------------------------

def test_loss_is_ce_plus_lambda_kl():
    torch.manual_seed(11)
    y = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    A = torch.rand(5, 5, dtype=torch.float64)
    K = (A + A.T) * (1 - torch.eye(5, dtype=torch.float64))
    labels = torch.randint(0, 5, (16,))
    loss = gloro_loss(y, K, labels, 0.3, 1.5)
    aug = gloro_logits(y, K, 0.3)
    q_bot = F.softmax(aug, dim=1)[:, -1]
    expected = F.cross_entropy(y, labels) + 1.5 * (-torch.log1p(-q_bot)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    loss.backward()
    assert torch.isfinite(y.grad).all()
    # gradients through K are finite (no NaN from the zero diagonal)
    net = small_net(11)
    x = torch.rand(8, 1, 12, 12, dtype=torch.float64)
    gloro_loss(net(x), net.K_matrix(), torch.randint(0, 5, (8,)), 0.5, 1.0).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("layout", [[], ["--channels-last"]], ids=["contiguous", "channels_last"])
def test_training_is_deterministic_and_resumes(tmp_path, layout):
    """Two epochs straight equal one epoch, an interruption, and a resume -- bit for bit."""
    from degradation_lib.train_gloro import main
    common = ["--config", "mnist_0.3", "--epochs", "2", "--train-limit", "512", "--test-limit", "200",
              "--seed", "3", "--progress-interval", "1000"] + layout
    a = main(common + ["--runs-dir", str(tmp_path / "a"), "--out-dir", str(tmp_path / "oa")])
    assert main(common + ["--runs-dir", str(tmp_path / "b"), "--out-dir", str(tmp_path / "ob"),
                          "--stop-after", "1"]) is None
    assert not (tmp_path / "ob" / "mnist_0.3.pt").exists()
    b = main(common + ["--runs-dir", str(tmp_path / "b"), "--out-dir", str(tmp_path / "ob")])
    state_a = torch.load(tmp_path / "oa" / "mnist_0.3.pt", weights_only=True)
    state_b = torch.load(tmp_path / "ob" / "mnist_0.3.pt", weights_only=True)
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    drop = lambda m: {k: v for k, v in m.items() if k != "eval_s"}
    assert drop(a["metrics"]) == drop(b["metrics"])
    assert [e["loss"] for e in a["training"]["log"]] == [e["loss"] for e in b["training"]["log"]]
    meta = json.loads((tmp_path / "oa" / "mnist_0.3.json").read_text())
    assert meta["kind"] == "gloro" and meta["arch"] == "2C2F" and meta["metrics"]["n"] == 200
    assert meta["training"]["channels_last"] == bool(layout)
    assert all(v.is_contiguous() for v in state_a.values())  # stored in the default layout
    # a checkpoint written in one layout is not resumed in the other
    flipped = [a for a in common if a != "--channels-last"] + ([] if layout else ["--channels-last"])
    with pytest.raises(SystemExit):
        main(flipped + ["--runs-dir", str(tmp_path / "b"), "--out-dir", str(tmp_path / "oc")])


def test_schedules_by_hand():
    """ε and lr schedules against values worked out by hand; bad schedule names raise."""
    from degradation_lib.train_gloro import eps_at, lr_at
    T = 1001
    ref = dict(train_eps=1.74, eps_start_fraction=0.01, ramp_fraction=0.0, lr=1e-3, lr_end=5e-6,
               eps_schedule="log", lr_schedule="exp")
    # reference 'logarithmic': log((e^1.74 - e^0.0174) t + e^0.0174); at t = 1/4:
    # e^1.74 = 5.69734, e^0.0174 = 1.01755, so log(4.67979 / 4 + 1.01755) = log(2.18750) = 0.78276
    assert eps_at(0, T, ref) == pytest.approx(0.0174, rel=1e-12)
    assert eps_at(250, T, ref) == pytest.approx(0.78276, abs=2e-5)
    assert eps_at(T - 1, T, ref) == pytest.approx(1.74, rel=1e-12)
    eps = [eps_at(s, T, ref) for s in range(T)]
    diffs = [b - a for a, b in zip(eps, eps[1:])]
    assert all(d > 0 for d in diffs) and all(b <= a + 1e-12 for a, b in zip(diffs, diffs[1:]))  # rising, concave
    # exponential lr decay from the first step: geometric mean half-way
    assert lr_at(0, 1000, ref) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(500, 1000, ref) == pytest.approx(math.sqrt(1e-3 * 5e-6), rel=1e-9)
    assert lr_at(1000, 1000, ref) == pytest.approx(5e-6, rel=1e-9)
    geo = dict(ref, eps_schedule="geometric", lr_schedule="after_ramp", ramp_fraction=0.3)
    ramp = round(0.3 * T)
    assert eps_at(0, T, geo) == pytest.approx(0.0174) and eps_at(ramp, T, geo) == 1.74
    assert eps_at(ramp // 2, T, geo) == pytest.approx(1.74 * 0.01 ** (1 - (ramp // 2) / ramp))
    assert lr_at(ramp - 1, T, geo) == 1e-3 and lr_at(ramp + 1, T, geo) < 1e-3
    for bad in (dict(ref, eps_schedule="linear"), dict(ref, lr_schedule="cosine")):
        with pytest.raises(ValueError):
            eps_at(3, T, bad), lr_at(3, T, bad)


def test_merge_stages_keeps_both_recipes():
    from degradation_lib.train_gloro import merge_stages
    s1 = dict(name="a", metrics={"vra@1": 0.5}, training=dict(epochs_completed=3, wall_time_s=10.0, schedule="S1",
                                                               command="c1", log=[1, 2, 3]))
    s2 = dict(name="a_stage2", metrics={"vra@1": 0.6}, training=dict(epochs_completed=2, wall_time_s=5.5,
                                                                      schedule="S2", command="c2", log=[4, 5]))
    m = merge_stages(s1, s2, "a")
    assert m["name"] == "a" and m["metrics"] == {"vra@1": 0.6}
    t = m["training"]
    assert t["total_epochs"] == 5 and t["total_wall_time_s"] == 15.5 and t["command"] == "c2"
    assert t["stages"][0]["command"] == "c1" and t["stages"][0]["metrics_after_stage"] == {"vra@1": 0.5}
    assert "S1" in t["schedule"] and "S2" in t["schedule"]
    assert s2["name"] == "a_stage2" and "stages" not in s2["training"]  # inputs untouched
    # a third stage on top of a merged model keeps the totals running
    s3 = dict(name="x", metrics={}, training=dict(epochs_completed=1, wall_time_s=1.0, schedule="S3", command="c3"))
    assert merge_stages(m, s3, "a")["training"]["total_epochs"] == 6


def test_refresh_iterates_leaves_converged_iterates(tmp_path):
    """With refresh_iterates the checkpointed iterates give the converged L_sub; the iterates the
    training saw (L_sub_iterates) are a lower bound of it."""
    import copy
    from degradation_lib.train_gloro import main
    meta = main(["--config", "mnist_1.58", "--epochs", "1", "--train-limit", "256", "--test-limit", "100",
                 "--seed", "1", "--progress-interval", "1000", "--runs-dir", str(tmp_path / "r"),
                 "--out-dir", str(tmp_path / "o")])
    assert meta["training"]["refresh_iterates"] == 1 and "converged after every epoch" in meta["training"]["schedule"]
    state = torch.load(tmp_path / "r" / "mnist_1.58" / "last.pt", weights_only=True)
    net = GloroNet("4C3F", num_classes=10)
    net.load_state_dict(state["model"])
    with torch.no_grad():
        stored = net.lipschitz_sub().item()
    converged = math.prod(copy.deepcopy(net).converge())
    assert stored == pytest.approx(converged, rel=1e-3)
    entry = meta["training"]["log"][-1]
    assert entry["L_sub_iterates"] <= converged * (1 + 1e-5)


# -------------------------------------------------------------------------------------------
# Committed models
# -------------------------------------------------------------------------------------------

MODELS = ["mnist_0.3", "mnist_0.3_2eps", "mnist_1.58", "mnist_1.58_2eps"]


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test")


@pytest.mark.parametrize("name", MODELS)
def test_committed_model_matches_its_json(name, mnist_test):
    cert = load_model(name)
    assert isinstance(cert, GloroCertifier)
    meta = json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())
    x, y = mnist_test
    labels = torch.cat([cert.predict(x[i:i + 2000]) for i in range(0, len(x), 2000)])
    certified = torch.cat([cert.certify(x[i:i + 2000], meta["eps"]) for i in range(0, len(x), 2000)])
    assert (labels == y).float().mean().item() == pytest.approx(meta["metrics"]["clean_accuracy"], abs=1e-6)
    assert (certified == y).float().mean().item() == pytest.approx(meta["metrics"][f"vra@{meta['eps']}"], abs=1e-6)


def l2_pgd(model, x, label, radius, steps=100, restarts=2, gen=None):
    """Strong untargeted ℓ2 PGD on the margin loss inside per-example radii, clipped to [0, 1]."""
    best = x.clone()
    r = radius.view(-1, 1, 1, 1)
    flipped = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        d = torch.randn(x.shape, generator=gen)
        d = d / torch.linalg.vector_norm(d.flatten(1), dim=1).view(-1, 1, 1, 1) * r * torch.rand(len(x), 1, 1, 1, generator=gen)
        z = (x + d).clamp(0, 1)
        for t in range(steps):
            z.requires_grad_(True)
            out = model(z)
            other = out.masked_fill(F.one_hot(label, out.shape[1]).bool(), -math.inf).max(dim=1).values
            loss = (other - out.gather(1, label[:, None]).squeeze(1)).sum()
            g = torch.autograd.grad(loss, z)[0]
            with torch.no_grad():
                g = g / torch.linalg.vector_norm(g.flatten(1), dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                z = z + 2.5 * r / steps * g
                delta = z - x
                n = torch.linalg.vector_norm(delta.flatten(1), dim=1).view(-1, 1, 1, 1)
                z = (x + delta * torch.clamp(r / n.clamp_min(1e-12), max=1.0)).clamp(0, 1)
                now = model(z).argmax(dim=1) != label
                best[now & ~flipped] = z[now & ~flipped]
                flipped |= now
    return best, flipped


def test_pgd_never_flips_a_certified_point_within_its_radius(mnist_test):
    cert = load_model("mnist_0.3")
    x, _ = mnist_test
    x = x[:120]
    labels, radius = cert.certified_radius(x)
    ok = radius > 0
    x, labels, radius = x[ok], labels[ok], radius[ok]
    gen = torch.Generator().manual_seed(12)
    model = cert.model
    z, flipped = l2_pgd(model, x, labels, radius * 0.999, gen=gen)
    assert torch.linalg.vector_norm((z - x).flatten(1), dim=1).le(radius * 0.999 + 1e-5).all()
    assert not flipped.any()
    assert (cert.predict(z) == labels).all()
    # the attack is strong: with a few times the radius it flips many of the same points
    _, flipped_big = l2_pgd(model, x, labels, radius * 4.0, steps=50, restarts=1, gen=gen)
    assert flipped_big.float().mean() > 0.5


@pytest.mark.parametrize("name", ["mnist_0.3", "mnist_1.58"])
def test_score_forward_shares_the_convolutions_bit_for_bit(name):
    """The rejection score's one-pass forward (CPU) equals the model's forward bit for bit (logits
    and gradients); its error terms, read from the float32 dense activations instead of the sound
    check's float64 dense pass, equal the check's where the score uses them: every per-class score
    built from them equals, bit for bit, the one built from :meth:`_forward_with_error`'s terms,
    on test images and on images moved up to 2ε away."""
    from degradation_lib import model_metadata, spectral
    from degradation_lib.gloro import _top_mask
    cert = load_model(name)
    eps = model_metadata(name)["eps"]
    x_all, _ = load_mnist("test")
    x = x_all[:64].clone().requires_grad_(True)
    y, (y64, e, hn) = cert._score_forward(x)
    g, = torch.autograd.grad(y.square().sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    y_ref = cert.model(x2)
    g_ref, = torch.autograd.grad(y_ref.square().sum(), x2)
    y64_ref, e_ref, hn_ref = cert._forward_with_error(x2.detach())
    for a, b in ((y, y_ref), (g, g_ref)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    # the convolutions' terms are shared; the dense ones differ by float32 vs float64 activations
    assert torch.allclose(e, e_ref, rtol=1e-12, atol=0) and torch.allclose(hn, hn_ref, rtol=1e-6, atol=0)
    assert torch.allclose(y64, y64_ref, rtol=0, atol=1e-4)

    def score_from_check(z, labels):   # the score with the sound check's own float64 error terms
        yz = cert.model(z)
        err = cert._margin_error(*cert._forward_with_error(z), labels).to(yz.dtype)
        K = cert.K.to(yz.dtype) / (1 - 4 * spectral.U64)
        own = yz.gather(1, labels[:, None])
        return (yz + eps * K[labels] + err - own).masked_fill(_top_mask(labels, yz.shape[1]), -math.inf)

    gen = torch.Generator().manual_seed(5)
    z = x_all[:1000]
    d = torch.randn(z.shape, generator=gen)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 2 * eps * torch.rand(z.shape[0], 1, 1, 1, generator=gen)
    for pts in (z, (z + d).clamp(0, 1)):
        with torch.no_grad():
            labels = cert.predict(pts)
            assert torch.equal(cert.rejection_score(pts, eps, labels, per_class=True), score_from_check(pts, labels))
    # a float64 forward asks for the separate passes (the convolutions differ in dtype)
    cert64 = GloroCertifier(cert.model, forward_dtype=torch.float64)
    y, (y64, e, hn) = cert64._score_forward(x.detach())
    assert torch.equal(y64, cert64._forward_with_error(x.detach())[0]) and y.dtype == torch.float32
