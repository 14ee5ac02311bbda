"""The M-membership-oracle defense (degradation_lib.oracle, Section 4.2; ours).

Answers derived on paper, on the 2-D example of Figure 1 (notebook 01): f(x) = W if x₁ < 0.5,
G otherwise (LinearCertifier, exact ℓ2 radius |x₁ − 0.5|); M = B((0.25, 0.5), 0.15) ∪
B((0.80, 0.5), 0.10), an exact oracle (BallUnionOracle, s(x) = min_k ‖x − c_k‖ − r_k ≤ 0).

* ε = 0.1, x' = (0.48, 0.5): r(x') = 0.02 ≤ ε, the plain defense rejects. The valid inputs
  within 0.1 of x' are the points of the left disc with x₁ ≥ 0.38 (all labelled W = f(x')); the
  right disc is at distance ≥ 0.70 − 0.48 = 0.22 > ε. So x' is *not* adversarial: no witness
  exists, the accept policy answers W, the reject policy falls back to ⊥.
* A classifier with its boundary moved to x₁ = 0.45 and x_adv = (0.47, 0.5), labelled G: the
  valid input (0.40, 0.5) of the left disc, labelled W, is 0.07 < ε away, so x_adv is an
  adversarial example; both policies must reject it, with a witness in the ball, in M and
  labelled W.

Threshold calibration: for scores ~ N(0, 1) the false-alarm rate of τ is exactly 1 − Φ(τ); the
conformal quantile of n scores has 1 − Φ(τ) ~ Beta(n + 1 − k, k) with k = ⌈(n + 1)(1 − α)⌉, mean
≈ α and standard deviation ≈ √(α(1 − α)/n). The committed MNIST oracle's false-alarm rate on its
held-out training split (images it never saw, exchangeable with the calibration split) must be
consistent with the stated α: α inside the 99 % Clopper–Pearson interval of the measured rate.
"""

import math

import pytest
import torch
from scipy.stats import norm as normal

import degradation_lib as dl
from degradation_lib import ABSTAIN, LinearCertifier, predict_with_defense
from degradation_lib.oracle import (BallUnionOracle, ManifoldDefense, adaptive_attack, calibrate_threshold,
                                    load_oracle, oracle_metadata, oracle_splits, search_witness)

torch.set_num_threads(1)
DISCS = ([[0.25, 0.5], [0.80, 0.5]], [0.15, 0.10])
EPS = 0.1


def figure1(boundary=0.5):
    W = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([boundary, -boundary], dtype=torch.float64)
    return LinearCertifier(W, b, norm=2)


@pytest.mark.parametrize("policy", ["accept", "reject"])
def test_figure1_input_is_not_adversarial(policy):
    f = figure1()
    oracle = BallUnionOracle(*DISCS)
    defense = ManifoldDefense(f, oracle, policy=policy, steps=50, restarts=4)
    xp = torch.tensor([[0.48, 0.5]], dtype=torch.float64)
    assert predict_with_defense(f, xp, EPS).item() == ABSTAIN  # the plain defense rejects x'
    res = defense.defend(xp, EPS)
    assert not res.certified.item() and res.searched.item()
    assert not res.found.item()  # no valid input within ε has label G
    expected = 0 if policy == "accept" else ABSTAIN
    assert res.labels.item() == expected
    assert predict_with_defense(defense, xp, EPS).item() == expected
    # a certified valid input is answered by both policies without search
    x = torch.tensor([[0.30, 0.5]], dtype=torch.float64)
    res = defense.defend(x, EPS)
    assert res.certified.item() and not res.searched.item() and res.labels.item() == 0
    assert res.model_forward.item() == 1 and res.oracle_forward.item() == 0


@pytest.mark.parametrize("policy", ["accept", "reject"])
def test_constructed_adversarial_example_is_rejected_with_witness(policy):
    f = figure1(boundary=0.45)
    oracle = BallUnionOracle(*DISCS)
    defense = ManifoldDefense(f, oracle, policy=policy)
    x_adv = torch.tensor([[0.47, 0.5]], dtype=torch.float64)
    assert f.predict(x_adv).item() == 1
    res = defense.defend(x_adv, EPS)
    assert res.found.item() and res.labels.item() == ABSTAIN
    w = res.witness
    assert torch.linalg.vector_norm(w - x_adv).item() <= EPS + 1e-12
    assert oracle.score(w).item() <= 0
    assert f.predict(w).item() == 0


def test_search_witnesses_are_in_ball_valid_and_differently_labelled():
    """Soundness of the search on 400 random inputs, two norms, random ε (2-D, exact oracle)."""
    g = torch.Generator().manual_seed(1)
    oracle = BallUnionOracle(*DISCS)
    total = 0
    for boundary in (0.45, 0.5, 0.55):
        f = figure1(boundary)
        for norm in (2.0, math.inf):
            xp = torch.rand(400, 2, generator=g, dtype=torch.float64)
            eps = 0.1 + 0.15 * torch.rand(1, generator=g).item()
            res = search_witness(f.model, oracle, xp, eps, norm, steps=20, restarts=2, generator=g)
            total += int(res.found.sum())
            w, hit = res.witness[res.found], xp[res.found]
            assert (torch.linalg.vector_norm(w - hit, ord=norm, dim=1) <= eps * (1 + 1e-9)).all()
            assert ((w >= 0) & (w <= 1)).all()
            assert (oracle.score(w) <= oracle.threshold).all()
            assert (f.predict(w) != f.predict(hit)).all()
            assert (res.witness_label[res.found] == f.predict(w)).all()
            assert (res.witness[~res.found] == xp[~res.found]).all()
            assert (res.witness_label[~res.found] == ABSTAIN).all()
            # the budget is respected: at most restarts × (steps + 1) forward passes
            assert (res.model_forward <= 2 * 21).all() and (res.backward <= 2 * 20).all()
    assert total > 50  # witnesses were found (and checked) in every setting taken together


def test_policy_accept_only_adds_answers():
    """accept ⊇ plain (same answers where the plain defense answers), reject == plain."""
    g = torch.Generator().manual_seed(2)
    f = figure1(0.5)
    oracle = BallUnionOracle(*DISCS)
    xp = torch.rand(300, 2, generator=g, dtype=torch.float64)
    plain = f.certify(xp, EPS)
    acc = ManifoldDefense(f, oracle, "accept", steps=20).certify(xp, EPS)
    rej = ManifoldDefense(f, oracle, "reject", steps=20).certify(xp, EPS)
    assert torch.equal(rej, plain)
    answered = plain != ABSTAIN
    assert torch.equal(acc[answered], plain[answered])
    assert (acc[~answered] != ABSTAIN).any()
    assert ((acc == ABSTAIN) | (acc == f.predict(xp))).all()


def test_calibrate_threshold_gaussian():
    g = torch.Generator().manual_seed(3)
    for alpha, n in ((0.05, 2000), (0.01, 5000)):
        tau = calibrate_threshold(torch.randn(n, generator=g, dtype=torch.float64), alpha)
        true_rate = 1 - normal.cdf(tau)
        assert abs(true_rate - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / n)
    # the rank rule on a known set: scores 1..99, α = 0.1 -> the ⌈100·0.9⌉ = 90th smallest
    assert calibrate_threshold(torch.arange(1.0, 100.0), 0.1) == 90.0


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan")])
def test_calibrate_threshold_rejects_bad_alpha(bad):
    with pytest.raises(ValueError, match="false_alarm"):
        calibrate_threshold(torch.randn(100), bad)


def test_calibrate_threshold_needs_enough_scores():
    with pytest.raises(ValueError, match="calibration"):
        calibrate_threshold(torch.randn(50), 0.01)


def test_bad_arguments():
    f, oracle = figure1(), BallUnionOracle(*DISCS)
    with pytest.raises(ValueError, match="policy"):
        ManifoldDefense(f, oracle, policy="maybe")
    with pytest.raises(ValueError, match="steps"):
        ManifoldDefense(f, oracle, steps=0)
    with pytest.raises(ValueError, match="oracle"):
        ManifoldDefense(f, object())
    with pytest.raises(ValueError, match="eps"):
        search_witness(f.model, oracle, torch.rand(3, 2, dtype=torch.float64), -1.0, 2.0)
    with pytest.raises(ValueError, match="radii"):
        BallUnionOracle([[0.0, 0.0]], [0.0])
    with pytest.raises(ValueError, match="unknown oracle"):
        oracle_metadata("nope")


def test_splits_are_disjoint():
    tr, cal, hold = oracle_splits(0)
    allidx = torch.cat([tr, cal, hold])
    assert len(allidx) == 60000 and len(torch.unique(allidx)) == 60000
    assert len(cal) == 5000 and len(hold) == 5000


def test_committed_oracle_false_alarm_on_holdout():
    """α = the stated rate lies in the 99 % Clopper–Pearson interval of the held-out rate."""
    meta = oracle_metadata("mnist_ae")
    oracle = load_oracle("mnist_ae")
    x, _ = dl.load_mnist("train")
    _, _, hold = oracle_splits(meta["training"]["seed"])
    with torch.no_grad():
        s = torch.cat([oracle.score(x[hold[i:i + 1000]]) for i in range(0, len(hold), 1000)])
    r = dl.rate(s > oracle.threshold, alpha=0.01)
    assert r.lo <= meta["false_alarm_target"] <= r.hi, str(r)
    assert r.k == meta["metrics"]["false_alarm_holdout"]["k"]


def test_committed_oracle_rejects_noise_and_defends_gloro():
    oracle = load_oracle("mnist_ae")
    g = torch.Generator().manual_seed(4)
    noise = torch.rand(200, 1, 28, 28, generator=g)
    assert not oracle.accepts(noise).any()  # uniform noise is never a digit
    cert = dl.load_model("mnist_0.3")
    x, y = dl.load_mnist("test")
    x = x[:40]
    defense = ManifoldDefense(cert, oracle, "accept", steps=10, restarts=1)
    plain = cert.certify(x, 0.3)
    res = defense.defend(x, 0.3)
    assert torch.equal(res.labels[plain != ABSTAIN], plain[plain != ABSTAIN])
    assert torch.equal(res.searched, plain == ABSTAIN)
    # Algorithm 3.1 runs unchanged against the defense (the rejection_loss hook is passed through)
    xp = dl.degradation_attack(defense, x[:8], 0.3)
    assert (torch.linalg.vector_norm((xp - x[:8]).flatten(1), dim=1) <= 0.3 + 1e-5).all()
    # the adaptive attack stays in the ball; "through" means the defense answers a wrong label
    x_adv, through = adaptive_attack(defense, x[:8], 0.3, steps=5, targets=1)
    assert (torch.linalg.vector_norm((x_adv - x[:8]).flatten(1), dim=1) <= 0.3 + 1e-5).all()
    ans = defense.certify(x_adv, 0.3)
    assert torch.equal(through, (ans != ABSTAIN) & (ans != cert.predict(x[:8])))


def test_search_is_complete_on_the_2d_problem():
    """Against the exact answer (M sampled on a 0.0025 grid): every x' that has a witness within
    ε gets one from the search, and none that has none within ε + 0.005 (grid slack)."""
    g = torch.Generator().manual_seed(5)
    oracle = BallUnionOracle(*DISCS)
    grid1 = torch.linspace(0, 1, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(grid1, grid1)
    M = grid[oracle.score(grid) <= 0]
    eps, checked = 0.12, 0
    for boundary in (0.45, 0.62):
        f = figure1(boundary)
        xp = torch.rand(600, 2, generator=g, dtype=torch.float64)
        other = f.predict(M)[None] != f.predict(xp)[:, None]
        d = torch.cdist(xp, M)
        exists = ((d <= eps) & other).any(1)
        exists_loose = ((d <= eps + 0.005) & other).any(1)
        res = search_witness(f.model, oracle, xp, eps, 2.0, steps=50, restarts=2, generator=g)
        assert (res.found[exists]).all()
        assert not (res.found & ~exists_loose).any()
        checked += int(exists.sum())
    assert checked >= 10  # x' with a witness were drawn (14 with this seed)


def test_run_stored_names_merges_and_resumes(tmp_path):
    from degradation_lib.oracle import run_stored

    settings = dict(steps=1, restarts=1, attack_steps=1, adaptive_steps=1, adaptive_targets=1, log=lambda s: None)
    res = run_stored("mnist_0.3", 3, 0.3, shard_size=2, out_dir=tmp_path, **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist_0.3_n3.npz"]  # shards merged and removed
    assert list(res["index"]) == [0, 1, 2] and res.meta["model"] == "mnist_0.3"
    # a present shard is read, not recomputed: plant one with a marker value and resume
    first = dl.PointResults({k: v[:2] for k, v in res.columns.items()}, dict(res.meta, shard=0))
    first.columns["radius"][:] = -7.0
    first.save(tmp_path / "mnist_0.3_n3.shard0.npz")
    again = run_stored("mnist_0.3", 3, 0.3, shard_size=2, out_dir=tmp_path, **settings)
    assert (again["radius"][:2] == -7.0).all() and again["radius"][2] == res["radius"][2]
