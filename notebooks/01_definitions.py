# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# (01-definitions)=
# # Definitions and the certified run-time defense
#
# Section 2 and Section 3.1 of the paper {cite}`degradation2022`: adversarial examples are defined
# relative to *valid* inputs, the points of the data manifold $M$; a certified run-time defense
# (Algorithm 2.1) answers only where the classifier is locally robust. This page states the
# definitions, implements the defense for any certifier of the library, and reproduces Figure 1 of
# the paper with an *exact* robustness check: an input $x'$ that is not adversarial is still
# rejected.

# %% tags=["parameters"]
eps: float = 0.1  # attack bound ε (ℓ2, input units of the 2-D example)
x_first: float = 0.38  # first coordinate of the valid input x (the boundary is at 0.5)
grid_size: int = 401  # points per axis when sampling the manifold M and the decision regions
seed: int = 0  # random seed (the example is deterministic; kept for uniformity)
device: str = "auto"  # "auto" picks CUDA when present (this page runs on the CPU either way)

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Circle
from myst_nb import glue

import degradation_lib as dl
from degradation_lib import ABSTAIN, LinearCertifier, predict_with_defense

torch.manual_seed(seed)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Adversarial examples and local robustness
#
# A classifier $f \in \mathbb{R}^d \to L$ maps inputs to a finite set of labels. The inputs come
# from a distribution whose support is $M \subseteq \mathbb{R}^d$; its points are the *valid*
# inputs.
#
# ```{prf:definition} 1 (Targeted adversarial example)
# :label: def-adversarial
# :nonumber:
# Given a classifier $f \in \mathbb{R}^d \to L$ and an input $x \in \mathbb{R}^d$, the input
# $x' := x + r$ is an adversarial example with respect to a target label $l \in L$, the $\ell_p$
# metric and a constant $\epsilon$ if the solution $r$ of
#
# $$\min \|r\|_p \quad \text{subject to} \quad f(x + r) = l \ \text{ and } \ x + r \in [0, 1]^d$$
#
# satisfies $\|r\|_p \le \epsilon$. An *untargeted* adversarial example replaces $f(x+r) = l$ by
# $f(x + r) \ne f(x)$. In either case $x$ must be valid, $x \in M$ {cite}`szegedy2014intriguing,carlini2017towards`.
# ```
#
# ```{prf:definition} 2 (Local robustness)
# :label: def-local-robustness
# :nonumber:
# A classifier $f \in \mathbb{R}^d \to L$ is $(\epsilon, \ell_p)$-locally robust at
# $x \in \mathbb{R}^d$ if
# $\forall x' \in \mathbb{R}^d.\ \|x - x'\|_p \le \epsilon \Longrightarrow f(x) = f(x')$.
# ```
#
# ```{prf:observation} 3
# :label: obs-protected
# :nonumber:
# A classifier is protected from all adversarial examples if it is locally robust at all points
# in $M$.
# ```
#
# ## The certified run-time defense
#
# A certified defense does not know $M$. It checks local robustness at whatever input it is given
# and refuses to answer, returning $\bot$, where the check fails.
#
# ```{prf:algorithm} 2.1 (PredictWithDefense)
# :label: alg-predict-with-defense
# :nonumber:
# **Inputs** a model $f \in \mathbb{R}^d \to L$, an input $x' \in \mathbb{R}^d$, an attack bound
# $\epsilon$, a distance metric $\ell_p$ \
# **Output** a prediction $l \in L \cup \{\bot\}$
#
# 1. **if** $f$ is $(\epsilon, \ell_p)$-locally robust at $x'$ **then return** $f(x')$
# 2. **else return** $\bot$
# ```
#
# In the library every defense is a `Certifier` with a `certify(x, eps)` method, and
# `predict_with_defense(certifier, x, eps)` is {prf:ref}`Algorithm 2.1 <alg-predict-with-defense>` for any of them;
# $\bot$ is `ABSTAIN` $= -1$. A certifier also reports a *certified radius* $r(x)$: $f$ is
# certified at $\epsilon$ exactly when $r(x) > \epsilon$.
#
# ## An exact check
#
# For a linear classifier $f(x) = \arg\max_i (Wx + b)_i$ the check can be decided exactly: the
# region where $f$ predicts $j$ is a polytope, and the $\ell_p$ distance to its boundary is
#
# $$r(x) = \min_{i \ne j} \frac{y_j - y_i}{\|w_j - w_i\|_q}, \qquad \tfrac1p + \tfrac1q = 1 .$$
#
# `LinearCertifier` implements it. The example of the paper's Figure 1 is binary, in the plane:
# label W left of the line $x_1 = 0.5$ and label G right of it.

# %%
W = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])  # rows: class W (0), class G (1)
b = torch.tensor([0.5, -0.5])
f = LinearCertifier(W, b, norm=2)
LABELS = {0: "W", 1: "G", ABSTAIN: "⊥"}

# The valid inputs M: two discs, one on each side of the boundary, with a gap between them.
M_DISCS = [((0.25, 0.5), 0.15), ((0.80, 0.5), 0.10)]


def in_M(points: torch.Tensor) -> torch.Tensor:
    """Membership in M for points [N, 2]."""
    inside = torch.zeros(len(points), dtype=torch.bool)
    for center, radius in M_DISCS:
        inside |= torch.linalg.vector_norm(points - torch.tensor(center), dim=1) <= radius
    return inside


x = torch.tensor([[x_first, 0.5]])
assert bool(in_M(x)), "x must be a valid input (inside M)"
label_x, r_x = f.certified_radius(x)
assert r_x.item() > eps, "x must be certified at ε for the example to make sense"

# %% [markdown]
# The valid input $x$ lies in $M$, and $f$ is certified robust at $x$: its distance to the
# boundary is $r(x) =$ {glue:text}`r_x:.3f` $> \epsilon =$ {glue:text}`eps:.2f`. The adversary may
# move $x$ by at most $\epsilon$. It cannot change the label -- the check at $x$ guarantees it --
# but it can move towards the boundary, to $x' = x + \epsilon\, e_1$, where the check fails.

# %%
x_prime = x + torch.tensor([[eps, 0.0]])
label_xp, r_xp = f.certified_radius(x_prime)
answer_x = predict_with_defense(f, x, eps).item()
answer_xp = predict_with_defense(f, x_prime, eps).item()

# Is x' adversarial?  Only if some *valid* input within ε of x' has another label than f(x').
# Sample M on a fine grid and look at the valid inputs in the ε-ball around x'.
g = torch.linspace(0, 1, grid_size)
grid = torch.cartesian_prod(g, g)
valid = grid[in_M(grid)]
near = valid[torch.linalg.vector_norm(valid - x_prime, dim=1) <= eps]
near_labels = f.predict(near)
not_adversarial = bool((near_labels == f.predict(x_prime)).all())

assert answer_x == 0 and label_xp.item() == 0
assert answer_xp == ABSTAIN, "the exact check must reject x'"
assert len(near) > 0 and not_adversarial, "every valid input near x' shares its label"

# %% tags=["remove-input"]
glue("eps", eps, display=False)
glue("r_x", r_x.item(), display=False)
glue("r_xp", r_xp.item(), display=False)
glue("dist_xxp", torch.linalg.vector_norm(x_prime - x).item(), display=False)
glue("n_near", len(near), display=False)
pd.DataFrame(
    {"f(input)": [LABELS[label_x.item()], LABELS[label_xp.item()]],
     "certified radius r": [f"{r_x.item():.3f}", f"{r_xp.item():.3f}"],
     "PredictWithDefense (Algorithm 2.1)": [LABELS[answer_x], LABELS[answer_xp]],
     "valid inputs within ε": ["", f"{len(near)}, all labelled {LABELS[int(near_labels[0])]}"]},
    index=pd.Index(["x", "x'"], name="input"))

# %% [markdown]
# At $x'$, at distance {glue:text}`dist_xxp:.2f` from $x$, the classifier still answers W, but the
# exact certified radius has shrunk to $r(x') =$ {glue:text}`r_xp:.3f` $< \epsilon$, so the
# defense returns $\bot$. Yet $x'$ is not an adversarial example: all {glue:text}`n_near:d`
# sampled valid inputs within $\epsilon$ of $x'$ carry the label W, the label $f$ gives $x'$. The
# points that would make the check fail lie in the gray region, outside $M$. This is
# {numref}`book figure %s <fig-figure-1>`, the paper's Figure 1.

# %% mystnb={"figure": {"caption": "The paper's Figure 1, computed. White: the valid inputs M; gray: points outside M. The line is the decision boundary between W (left) and G (right). The certified input x is moved by \u03b5 to x', where the exact check fails (its \u03b5-ball crosses the boundary) although every valid input in that ball is labelled W.", "name": "fig-figure-1"}, "image": {"alt": "Unit square, gray outside two white discs (the valid inputs M); a vertical decision line at x1 = 0.5; the certified point x in the left disc and x' moved right by epsilon, with dashed epsilon circles, the one around x' crossing the line."}}
fig, ax = plt.subplots(figsize=(5.5, 5.5))
ax.set_facecolor("0.75")
for center, radius in M_DISCS:
    ax.add_patch(Circle(center, radius, facecolor="white", edgecolor="0.4", zorder=1))
ax.axvline(0.5, color="black", lw=1.5, zorder=2)
ax.text(0.12, 0.9, "f = W", fontsize=12)
ax.text(0.78, 0.9, "f = G", fontsize=12)
ax.text(0.05, 0.05, "gray: not in M", fontsize=9)
for point, name, colour in [(x[0], "x", "tab:blue"), (x_prime[0], "x'", "tab:red")]:
    ax.add_patch(Circle(point.tolist(), eps, fill=False, ls="--", color=colour, lw=1.5, zorder=3))
    ax.plot(*point.tolist(), "o", color=colour, zorder=4)
    ax.annotate(name, point.tolist(), textcoords="offset points", xytext=(-6, 14), color=colour, fontsize=12)
ax.annotate("", x_prime[0].tolist(), x[0].tolist(), arrowprops=dict(arrowstyle="->", color="black"), zorder=4)
ax.set_xlim(0, 1)
ax.set_ylim(0, 1)
ax.set_aspect("equal")
ax.set_xlabel("input coordinate $x_1$")
ax.set_ylabel("input coordinate $x_2$")
ax.set_title(f"An exact check rejects a non-adversarial x' (ε = {eps})")
plt.show()

# %% [markdown]
# ## How often? The whole manifold at once
#
# The same argument applies to every valid input. For this linear $f$ the certified radius drops by
# exactly the distance moved towards the boundary, so the worst $x'$ within $\epsilon$ of a valid
# $x$ is rejected exactly when $\epsilon < r(x) \le 2\epsilon$. The fraction of certified valid
# inputs that the adversary can get rejected is therefore the *upper bound* of the paper's
# Section 3.3.2, $1 - P[r > 2\epsilon] / P[r > \epsilon]$, and here the attack reaches it. We
# check both on the sampled manifold, attacking every certified valid input by moving it towards
# the boundary (then projecting onto the ε-ball with the library's `project`).

# %%
labels_M, r_M = f.certified_radius(valid)
truth = labels_M  # f is the labelling of M in this example: every valid input is correct
bound = dl.upper_bound(r_M, labels_M == truth, eps)

certified = f.certify(valid, eps) != ABSTAIN
toward_boundary = torch.where(labels_M[:, None] == 0, torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]]))
x_attack = dl.project(valid, valid + 2 * eps * toward_boundary, eps, norm=2)
rejected = f.certify(x_attack, eps) == ABSTAIN
flipped = (f.predict(x_attack) != labels_M) & certified
report = dl.degradation_report(truth, f.certify(valid, eps), f.certify(x_attack, eps))

assert not flipped.any(), "no certified point can change label within ε"
assert abs(report.false_positive_rate.value - bound["upper_bound"][0]) < 1e-12

# %% tags=["remove-input"]
glue("fpr_M", report.false_positive_rate.value, display=False)
glue("ub_M", float(bound["upper_bound"][0]), display=False)
glue("n_M", int(certified.sum()), display=False)

# %% [markdown]
# Of the {glue:text}`n_M:d` sampled valid inputs certified at $\epsilon$, the attack gets
# {glue:text}`fpr_M:.1%` rejected, equal to the upper bound {glue:text}`ub_M:.1%`, and none
# changes its label. None of these rejected inputs is adversarial, since the gap between the two
# discs contains no valid input. The later pages measure the same two quantities -- the rate an
# attack achieves (a lower bound) and $1 - P[r > 2\epsilon]/P[r > \epsilon]$ (an upper bound) --
# on real certified networks, where they no longer coincide.
