"""upper_bound_curve: the upper bound and VRA of Section 3.3.2 over a radius grid, both radius
conventions (r > ε and r ≥ ε), checked against hand-worked examples, a brute-force count, and
the paper's values from the authors' released radii."""

import math

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from degradation_lib import published
from degradation_lib.metrics import upper_bound, upper_bound_curve
from degradation_lib.paper import UPPER_BOUNDS_GLORO, UPPER_BOUNDS_SMOOTHING_CIFAR10


def test_conventions_by_hand():
    """Eight points, ε = 0.5 (so 2ε = 1.0), worked out on paper.

    radius   0.5  1.0  1.2  0.7  0.0  0.6  1.0  2.0
    correct   T    T    T    F    T    T    T    T
    r > 0.5 among correct: 1.0 1.2 0.6 1.0 2.0  → 5;  r > 1.0: 1.2 2.0 → 2;  bound 1 − 2/5 = 0.6
    r ≥ 0.5 among correct: adds 0.5              → 6;  r ≥ 1.0: 1.0 1.2 1.0 2.0 → 4; bound 1 − 4/6 = 1/3
    """
    radius = [0.5, 1.0, 1.2, 0.7, 0.0, 0.6, 1.0, 2.0]
    correct = [True, True, True, False, True, True, True, True]
    s = upper_bound_curve(radius, correct, 0.5, strict=True)
    assert (s["n_eps"][0], s["n_2eps"][0], s["n_lost"][0]) == (5, 2, 3)
    assert s["upper_bound"][0] == pytest.approx(0.6, abs=1e-15)
    assert s["vra"][0] == 5 / 8 and s["vra_2eps"][0] == 2 / 8 and s["n"][0] == 8
    w = upper_bound_curve(radius, correct, 0.5, strict=False)
    assert (w["n_eps"][0], w["n_2eps"][0], w["n_lost"][0]) == (6, 4, 2)
    assert w["upper_bound"][0] == pytest.approx(1 / 3, abs=1e-15)
    assert w["vra"][0] == 6 / 8 and w["vra_2eps"][0] == 4 / 8
    # upper_bound is the strict curve
    assert upper_bound(radius, correct, 0.5)["upper_bound"][0] == s["upper_bound"][0]


def brute(radius, correct, eps, strict):
    cmp = (lambda a, b: a > b) if strict else (lambda a, b: a >= b)
    n_eps = sum(1 for r, c in zip(radius, correct) if c and cmp(r, eps))
    n_2eps = sum(1 for r, c in zip(radius, correct) if c and cmp(r, 2 * eps))
    return n_eps, n_2eps


@pytest.mark.parametrize("strict", [True, False])
def test_against_brute_force_with_ties(strict):
    rng = np.random.default_rng(1)
    n = 400
    radius = np.where(rng.random(n) < 0.2, 0.0, rng.exponential(0.5, n))
    radius[:60] = np.round(radius[:60], 1)            # many radii exactly on the grid (r = ε, r = 2ε)
    correct = rng.random(n) < 0.85
    grid = np.concatenate([np.round(np.arange(0.1, 2.01, 0.1), 10), np.linspace(0.03, 2.9, 37)])
    out = upper_bound_curve(torch.tensor(radius), torch.tensor(correct), grid, strict=strict)
    for i, eps in enumerate(grid):
        n_eps, n_2eps = brute(radius, correct, eps, strict)
        assert (out["n_eps"][i], out["n_2eps"][i]) == (n_eps, n_2eps), eps
        if n_eps:
            assert out["upper_bound"][i] == pytest.approx(1 - n_2eps / n_eps, abs=1e-15)
            ref = proportion_confint(n_eps - n_2eps, n_eps, alpha=0.05, method="beta")
            assert (out["lo"][i], out["hi"][i]) == pytest.approx(ref, abs=1e-12)
        else:
            assert math.isnan(out["upper_bound"][i])
        ref_vra = proportion_confint(n_eps, n, alpha=0.05, method="beta")
        assert (out["vra_lo"][i], out["vra_hi"][i]) == pytest.approx(ref_vra, abs=1e-12)


def test_conventions_differ_exactly_by_the_ties():
    rng = np.random.default_rng(2)
    radius = np.round(rng.uniform(0, 2, 1000), 2)
    correct = rng.random(1000) < 0.9
    grid = np.round(np.arange(0.05, 1.0, 0.05), 10)
    s = upper_bound_curve(radius, correct, grid, strict=True)
    w = upper_bound_curve(radius, correct, grid, strict=False)
    for i, eps in enumerate(grid):
        assert w["n_eps"][i] - s["n_eps"][i] == np.sum(correct & (radius == eps))
        assert w["n_2eps"][i] - s["n_2eps"][i] == np.sum(correct & (radius == 2 * eps))
    # without ties (continuous radii) the two conventions agree everywhere
    r = rng.uniform(0, 2, 1000)
    a = upper_bound_curve(r, correct, grid, strict=True)
    b = upper_bound_curve(r, correct, grid, strict=False)
    np.testing.assert_array_equal(a["n_eps"], b["n_eps"])


def test_curve_rises_to_one_and_vra_falls():
    """Once 2ε exceeds the largest radius nothing survives at 2ε: the bound is exactly 1 while some
    point is still certified at ε; the VRA never increases with ε."""
    rng = np.random.default_rng(3)
    radius = rng.gamma(2.0, 0.3, 2000)
    correct = rng.random(2000) < 0.95
    r_max = radius[correct].max()
    grid = np.linspace(0.01, r_max * 0.999, 300)
    out = upper_bound_curve(radius, correct, grid)
    tail = grid > r_max / 2
    assert tail.any() and np.all(out["upper_bound"][tail] == 1.0)
    assert np.all(np.diff(out["vra"]) <= 0) and np.all(np.diff(out["vra_2eps"]) <= 0)
    assert np.all(out["vra_2eps"] <= out["vra"])
    # scaling all radii and the grid by the same factor changes nothing (the bound is scale-free)
    scaled = upper_bound_curve(radius * 3.7, correct, grid * 3.7)
    np.testing.assert_array_equal(scaled["n_eps"], out["n_eps"])
    np.testing.assert_array_equal(scaled["n_2eps"], out["n_2eps"])


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        upper_bound_curve([0.1, 0.2], [True], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        upper_bound_curve([0.1, math.nan], [True, True], 0.1)
    for eps in (0.0, -1.0, math.inf, [0.1, math.nan], []):
        with pytest.raises(ValueError, match="eps_grid"):
            upper_bound_curve([0.1, 0.2], [True, True], eps)
    for alpha in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="alpha"):
            upper_bound_curve([0.1, 0.2], [True, True], 0.1, alpha=alpha)


def test_published_radii_give_the_papers_upper_bounds():
    """The paper's Figure 2 / Section 4.1 points and its smoothing points (CIFAR-10, ε = 0.25),
    recomputed from the authors' released radii with the paper's r ≥ ε, to three decimals."""
    eps_of = {"mnist_0.3": 0.3, "mnist_1.58": 1.58, "cifar10_0.141": 36 / 255}
    file_of = {"mnist_0.3": "mnist_0.3", "mnist_1.58": "mnist_1.58", "cifar10_0.141": "cifar10_0.14"}
    for model, (ub_n, ub_y) in UPPER_BOUNDS_GLORO.items():
        for suffix, want in (("_N", ub_n), ("_Y", ub_y)):
            d = published.gloro_radii(file_of[model] + suffix)
            got = upper_bound_curve(d["radius"], d["correct"], eps_of[model], strict=False)["upper_bound"][0]
            assert round(float(got), 3) == want, (model, suffix, got)
    for sigma, want in UPPER_BOUNDS_SMOOTHING_CIFAR10.items():
        d = published.rs_log("cifar10", sigma)
        got = upper_bound_curve(d["radius"], d["correct"], 0.25, strict=False)["upper_bound"][0]
        assert round(float(got), 3) == want, (sigma, got)


def test_bounds_from_results_by_hand():
    """Six points worked out on paper (⊥ = ABSTAIN = −1).

    idx             0  1  2  3  4  5
    label           0  1  2  3  4  5
    cert_label      0  1  2  9  4  ⊥
    certified       T  T  T  T  F  F     test_R (correct & certified): 0 1 2 → 3
    certified_2eps  T  F  F  T  F  F     safe among test_R: 0 → upper bound 2/3
    rejected_a      F  T  F  T  T  F     in test_R: 1 → FPR(a) = 1/3
    rejected_b      T  F  T  F  F  F     in test_R: 0 2 → FPR(b) = 2/3, 0 is certified at 2ε: beyond 1
    best (a or b)                        in test_R: 0 1 2 → 3/3
    """
    from degradation_lib import ABSTAIN
    from degradation_lib.metrics import bounds_from_results
    cols = dict(label=np.arange(6), cert_label=np.array([0, 1, 2, 9, 4, ABSTAIN]),
                certified=np.array([1, 1, 1, 1, 0, 0], bool), certified_2eps=np.array([1, 0, 0, 1, 0, 0], bool),
                rejected_a=np.array([0, 1, 0, 1, 1, 0], bool), rejected_b=np.array([1, 0, 1, 0, 0, 0], bool))
    out = bounds_from_results(cols)
    assert out["n"] == 6
    assert (out["vra"].k, out["vra"].n) == (3, 6) and (out["vra_2eps"].k, out["vra_2eps"].n) == (1, 6)
    assert (out["upper_bound"].k, out["upper_bound"].n) == (2, 3)
    assert {a: (r.k, r.n) for a, r in out["fpr"].items()} == {"a": (1, 3), "b": (2, 3), "best": (3, 3)}
    assert out["beyond_bound"] == {"a": 0, "b": 1, "best": 1}
    with pytest.raises(ValueError, match="missing"):
        bounds_from_results({k: v for k, v in cols.items() if k != "certified_2eps"})
    with pytest.raises(ValueError, match="equal lengths"):
        bounds_from_results(dict(cols, rejected_a=np.zeros(5, bool)))
