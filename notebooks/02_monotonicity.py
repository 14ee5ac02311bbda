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
# (02-monotonicity)=
# # Monotonicity of local robustness certifiers
#
# Appendix A of the paper {cite}`degradation2022` (and its footnote 4): the upper bound on the
# false positive rate, $1 - P[r \ge 2\epsilon]/P[r \ge \epsilon]$, counts a point as attackable
# when its check at $2\epsilon$ fails. That is justified for *monotonic* certifiers, whose
# certificate at $x$ carries over, shrunk by the distance moved, to every nearby $x'$. This page
# states the definition and the two lemmas of Appendix A -- exact certifiers and Lipschitz-based
# certifiers such as GloRo nets {cite}`leino2021globally` are monotonic -- checks each
# numerically in float64 over thousands of pairs $(x, x')$, and constructs a sound check that is
# *not* monotonic, for which the implication fails.

# %% tags=["parameters"]
n_pairs: int = 4000  # pairs (x, x') per check
dim: int = 20  # input dimension of the random linear classifiers (Lemma 6)
num_classes: int = 5  # classes of the random linear classifiers
model_name: str = "mnist_0.3"  # committed GloRo net for Lemma 8 (see notebook 04)
eps_grid_step: float = 0.1  # grid of the constructed non-monotone check
seed: int = 0  # random seed
device: str = "auto"  # "auto" picks CUDA when present

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

import degradation_lib as dl
from degradation_lib import LinearCertifier, gloro_logits, load_mnist, load_model

torch.manual_seed(seed)
dev = dl.resolve_device(device)
gen = torch.Generator().manual_seed(seed)
DT = torch.float64

# %% [markdown]
# ## Definition
#
# A certification method is a predicate $\mathsf{cert}(x, \epsilon)$: "the classifier $F$ is
# certified $(\epsilon, \ell_p)$-locally robust at $x$". In the library it is
# `certifier.certify(x, eps) != ABSTAIN`, which holds exactly when the certified radius $r(x)$
# exceeds $\epsilon$.
#
# ```{prf:definition} 4 (Monotonicity of local robustness certifiers)
# :label: def-monotonic
# :nonumber:
# A certification method $\mathsf{cert} : \mathbb{R}^d \times \mathbb{R}^+ \to \mathit{bool}$ is
# *monotonic* if
#
# $$\forall x, x' \in \mathbb{R}^d, \epsilon > 0 .\ \ \mathsf{cert}(x, \epsilon) \wedge
# \|x - x'\|_p = \delta < \epsilon \implies \mathsf{cert}(x', \epsilon - \delta).$$
# ```
#
# ```{prf:definition} 5 (Exact local robustness certifier)
# :label: def-exact
# :nonumber:
# A certification method is *exact* if
# $\mathsf{cert}(x, \epsilon) \iff \forall x' \in \mathbb{R}^d.\ \|x - x'\|_p \le \epsilon
# \Longrightarrow F(x) = F(x')$: certification is equivalent to local robustness.
# ```
#
# ## Exact certifiers
#
# ```{prf:lemma} 6 (Exact certifiers are monotonic)
# :label: lem-exact-monotonic
# :nonumber:
# Every exact certification method is monotonic ({prf:ref}`Definition 4 <def-monotonic>`).
# ```
#
# ```{prf:proof}
# Suppose $\mathsf{cert}(x, \epsilon)$ and $\|x - x'\|_p = \delta < \epsilon$. For any $x''$ with
# $\|x' - x''\|_p \le \epsilon - \delta$ the triangle inequality gives
# $\|x - x''\|_p \le \delta + (\epsilon - \delta) = \epsilon$, so $F(x'') = F(x) = F(x')$: $F$ is
# $(\epsilon - \delta)$-locally robust at $x'$, and since the method is exact,
# $\mathsf{cert}(x', \epsilon - \delta)$.
# ```
#
# The exact certifier of the library is `LinearCertifier`: for $F(x) = \arg\max_i (Wx + b)_i$ its
# radius is the $\ell_p$ distance to the decision boundary. We draw random linear classifiers and,
# for each norm $p \in \{1, 2, \infty\}$, {glue:text}`n_pairs:d` pairs: $x$ uniform in
# $[0, 1]^d$, $\epsilon$ a random fraction of $r(x)$ (so that $\mathsf{cert}(x, \epsilon)$ holds),
# $\delta$ a random fraction of $\epsilon$, and $x' = x + \delta u$ with $\|u\|_p = 1$. Half of
# the directions $u$ are random; the other half are the *worst case*, straight towards the nearest
# decision boundary, where $r(x') = r(x) - \delta$ and the implication is tight.

# %%
def unit_in_norm(v: torch.Tensor, p: float) -> torch.Tensor:
    """Rows of v scaled to unit ℓp norm."""
    return v / torch.linalg.vector_norm(v, ord=p, dim=1, keepdim=True)


def worst_direction(cert: LinearCertifier, x: torch.Tensor, p: float) -> torch.Tensor:
    """Unit ℓp direction that decreases the margin to the nearest boundary fastest."""
    j, margin, gnorm = cert.margins(x)
    i = (margin / gnorm).argmin(dim=1)
    g = cert.model.weight[j] - cert.model.weight[i]  # gradient of the margin y_j - y_i
    if p == 2.0:
        u = -g
    elif p == float("inf"):
        u = -torch.sign(g)
    else:  # p == 1: all the budget on the largest coordinate of the gradient
        k = g.abs().argmax(dim=1)
        u = torch.zeros_like(g)
        u[torch.arange(len(g)), k] = -torch.sign(g[torch.arange(len(g)), k])
    return unit_in_norm(u, p)


def lemma6_check(p: float) -> dict:
    W = torch.randn(num_classes, dim, generator=gen, dtype=DT)
    b = torch.randn(num_classes, generator=gen, dtype=DT)
    cert = LinearCertifier(W, b, norm=p, unit_range=False)  # Definition 4 ranges over all of R^d
    x = torch.rand(n_pairs, dim, generator=gen, dtype=DT)
    _, r = cert.certified_radius(x)
    eps = r * torch.rand(n_pairs, generator=gen, dtype=DT)
    delta = eps * torch.rand(n_pairs, generator=gen, dtype=DT)
    u = unit_in_norm(torch.randn(n_pairs, dim, generator=gen, dtype=DT), p)
    half = torch.arange(n_pairs) % 2 == 0
    u[half] = worst_direction(cert, x[half], p)
    x2 = x + delta[:, None] * u
    delta = torch.linalg.vector_norm(x2 - x, ord=p, dim=1)  # the distance actually realised
    premise = (r > eps) & (delta < eps)
    _, r2 = cert.certified_radius(x2)
    conclusion = r2 > eps - delta  # cert(x', ε − δ)
    tight = (r2 - (r - delta)).abs() <= 1e-9 * r
    return dict(norm=p, pairs=n_pairs, premise=int(premise.sum()), violations=int((premise & ~conclusion).sum()),
                tight=int((premise & half & tight).sum()), slack_min=float((r2 - (eps - delta))[premise].min()))


rows6 = [lemma6_check(p) for p in (1.0, 2.0, float("inf"))]
assert all(row["violations"] == 0 for row in rows6)
assert all(row["tight"] > 0 for row in rows6 if row["norm"] == 2.0)

# %% tags=["remove-input"]
glue("n_pairs", n_pairs, display=False)
glue("lemma6_checked", sum(row["premise"] for row in rows6), display=False)
glue("lemma6_violations", sum(row["violations"] for row in rows6), display=False)
pd.DataFrame(
    {"pairs drawn": [r["pairs"] for r in rows6],
     "pairs with cert(x, ε) and δ < ε": [r["premise"] for r in rows6],
     "violations of Lemma 6": [r["violations"] for r in rows6],
     "worst-case pairs with r(x') = r(x) − δ": [r["tight"] for r in rows6],
     "min r(x') − (ε − δ)": [f"{r['slack_min']:.2e}" for r in rows6]},
    index=pd.Index([f"ℓ{r['norm']:g}" for r in rows6], name="norm"))

# %% [markdown]
# Over the {glue:text}`lemma6_checked:d` pairs where the premise holds, in the three norms, the
# conclusion $\mathsf{cert}(x', \epsilon - \delta)$ fails {glue:text}`lemma6_violations:d` times
# (the cell above asserts zero violations, and at least one tight worst-case pair in $\ell_2$;
# the table gives the counts per norm).
# In $\ell_2$, moving towards the nearest boundary shrinks the exact radius by exactly $\delta$:
# the lemma cannot be strengthened.
#
# ## Lipschitz-based certifiers
#
# ```{prf:definition} 7 (Lipschitz-based local robustness certifier)
# :label: def-lipschitz-based
# :nonumber:
# Given upper bounds $K_{ij}(x, \epsilon)$ on the Lipschitz constant of the margin $f_j - f_i$
# over the ball $B(x, \epsilon)$, a Lipschitz-based method certifies $x$, with $F(x) = j$, exactly
# when $\max_{i \ne j} \{ f_i(x) + \epsilon K_{ij}(x, \epsilon)\} \le f_j(x)$. A global
# Lipschitz constant is such a bound.
# ```
#
# A GloRo net is Lipschitz-based with the global constants $K_{ij} = L_\text{sub}\,\|w_j - w_i\|_2$
# and its ⊥ logit is the left-hand side. (The library certifies with a *strict* inequality,
# $y_j > y_\bot$, so that ties are never certified; the proof below is unchanged.)
#
# ```{prf:lemma} 8 (Lipschitz-based certifiers are monotonic)
# :label: lem-lipschitz-monotonic
# :nonumber:
# Every Lipschitz-based certification method ({prf:ref}`Definition 7 <def-lipschitz-based>`) is monotonic.
# ```
#
# ```{prf:proof}
# Let $\mathsf{cert}(x, \epsilon)$ with $F(x) = j$, and $\|x - x'\|_p = \delta < \epsilon$. By the
# triangle inequality $B(x', \epsilon - \delta) \subseteq B(x, \epsilon)$, so
# $K_{ij}(x, \epsilon) \ge K_{ij}(x', \epsilon - \delta)$. Since $x' \in B(x, \epsilon)$ and $x$
# is certified, $F(x') = j$, and for every $i \ne j$
#
# $$f_j(x') - f_i(x') \ge f_j(x) - f_i(x) - \delta K_{ij}(x, \epsilon)
# \ge (\epsilon - \delta) K_{ij}(x, \epsilon) \ge (\epsilon - \delta) K_{ij}(x', \epsilon - \delta),$$
#
# which is $\mathsf{cert}(x', \epsilon - \delta)$.
# ```
#
# We check it on the committed GloRo net `model_name` (the 2C2F model trained at ε = 0.3), in float64, with
# MNIST test images as $x$. For each image, $\epsilon$ is a random fraction of its certified
# radius and $\delta$ a random fraction of $\epsilon$; $x'$ moves by $\delta$ either in a random
# direction or along the gradient that shrinks the margin to the runner-up class fastest (the
# direction an attack would take). Both checks run through the ⊥ logit, with a per-pair
# $\epsilon$: `gloro_logits(y, K, eps)`.

# %%
gloro = load_model(model_name, device=dev)
net = gloro.model.double()
K = gloro.K  # recomputed (cache invalidated) for the float64 weights
x_all, _ = load_mnist("test")
x = x_all[:n_pairs].to(dev, DT)
labels, r = gloro.certified_radius(x)
keep = r > 0
x, labels, r = x[keep], labels[keep], r[keep]
n = len(x)
eps = r * torch.rand(n, generator=gen, dtype=DT).to(dev)
delta = eps * torch.rand(n, generator=gen, dtype=DT).to(dev)

# direction: random for odd indices, down the gradient of the margin to the runner-up for even
z = x.clone().requires_grad_(True)
y = net(z)
runner_up = y.detach().scatter(1, labels[:, None], -torch.inf).argmax(dim=1)
grad = torch.autograd.grad((y.gather(1, labels[:, None]) - y.gather(1, runner_up[:, None])).sum(), z)[0]
u = torch.randn(x.shape, generator=gen, dtype=DT).to(dev)
even = torch.arange(n, device=dev) % 2 == 0
u[even] = -grad[even]
u = u / torch.linalg.vector_norm(u.flatten(1), dim=1).view(-1, 1, 1, 1)
x2 = (x + delta.view(-1, 1, 1, 1) * u).clamp(0, 1)  # stay in the input domain
delta = torch.linalg.vector_norm((x2 - x).flatten(1), dim=1)  # distance actually realised

with torch.no_grad():
    aug = gloro_logits(net(x), K, eps[:, None])
    aug2 = gloro_logits(net(x2), K, (eps - delta)[:, None])
cert_x = aug.gather(1, labels[:, None]).squeeze(1) > aug[:, -1]
j2 = aug2[:, :-1].argmax(dim=1)
cert_x2 = aug2.gather(1, j2[:, None]).squeeze(1) > aug2[:, -1]
premise = cert_x & (delta < eps)
violations8 = int((premise & ~cert_x2).sum())
same_label = bool((j2[premise] == labels[premise]).all())
_, r2 = gloro.certified_radius(x2)
assert premise.sum() > 0.9 * n and violations8 == 0 and same_label

# %% tags=["remove-input"]
glue("lemma8_checked", int(premise.sum()), display=False)
glue("lemma8_violations", violations8, display=False)
glue("lemma8_min_slack", float((r2 - (r - delta))[premise].min()), display=False)

# %% [markdown]
# Over {glue:text}`lemma8_checked:d` pairs, {glue:text}`lemma8_violations:d` violations. The
# radius at $x'$ never falls below $r(x) - \delta$ (smallest gap {glue:text}`lemma8_min_slack:.2e`),
# which is the content of the lemma: the radius of a Lipschitz-based certifier is itself a
# 1-Lipschitz function of the input. The figure shows it for every pair.

# %% mystnb={"figure": {"caption": "GloRo net: certified radius at x' against the radius at x minus the distance moved. Every point lies on or above the diagonal, so a certificate at \u03b5 for x carries over to x' at \u03b5 \u2212 \u03b4 (Lemma 8). Gradient moves (orange) come closest to the diagonal.", "name": "fig-lemma8"}, "image": {"alt": "Scatter plot of r(x') against r(x) minus delta for random and gradient moves; every point lies on or above the diagonal line."}}
fig, ax = plt.subplots(figsize=(5.5, 4.5))
lhs = (r - delta).cpu().numpy()
rhs = r2.cpu().numpy()
ev = even.cpu().numpy()
ax.scatter(lhs[~ev], rhs[~ev], s=3, alpha=0.4, label="random direction")
ax.scatter(lhs[ev], rhs[ev], s=3, alpha=0.4, label="gradient direction")
top = float(max(lhs.max(), rhs.max()))
ax.plot([0, top], [0, top], color="black", lw=1, label="r(x') = r(x) − δ")
ax.set_xlabel("r(x) − δ  (ℓ2, input units)")
ax.set_ylabel("r(x')  (ℓ2, input units)")
ax.legend(markerscale=4)
plt.show()

# %% [markdown]
# ## A sound check that is not monotonic
#
# Monotonicity is not implied by soundness. Take the exact linear certifier but let it store
# certificates only on a grid of radii: $\mathsf{cert}_\text{grid}(x, \epsilon) \iff r(x) >
# \lceil \epsilon / h \rceil h$ with grid step $h =$ {glue:text}`grid_step`. It is sound (it
# certifies only where the exact check does at a larger radius), yet moving $x$ by $\delta$ can
# round $\epsilon - \delta$ *up* to the same grid value as $\epsilon$, while the radius shrinks by
# $\delta$. We run the same pairs as for {prf:ref}`Lemma 6 <lem-exact-monotonic>` in $\ell_2$, now choosing
# $\epsilon$ so that $\mathsf{cert}_\text{grid}(x, \epsilon)$ holds.

# %%
def cert_grid(radius: torch.Tensor, eps: torch.Tensor, h: float) -> torch.Tensor:
    return radius > torch.ceil(eps / h) * h


W = torch.randn(num_classes, dim, generator=gen, dtype=DT)
lin = LinearCertifier(W, torch.randn(num_classes, generator=gen, dtype=DT), norm=2, unit_range=False)
x = torch.rand(n_pairs, dim, generator=gen, dtype=DT)
_, r = lin.certified_radius(x)
eps = r * torch.rand(n_pairs, generator=gen, dtype=DT)
delta = eps * torch.rand(n_pairs, generator=gen, dtype=DT)
x2 = x + delta[:, None] * worst_direction(lin, x, 2.0)
delta = torch.linalg.vector_norm(x2 - x, dim=1)
_, r2 = lin.certified_radius(x2)
premise_g = cert_grid(r, eps, eps_grid_step) & (delta < eps)
violations_g = int((premise_g & ~cert_grid(r2, eps - delta, eps_grid_step)).sum())
sound = bool((r[cert_grid(r, eps, eps_grid_step)] > eps[cert_grid(r, eps, eps_grid_step)]).all())
assert sound and violations_g > 0

# %% tags=["remove-input"]
glue("grid_step", eps_grid_step, display=False)
glue("grid_premise", int(premise_g.sum()), display=False)
glue("grid_violations", violations_g, display=False)
glue("grid_violation_rate", violations_g / max(1, int(premise_g.sum())), display=False)

# %% [markdown]
# Of {glue:text}`grid_premise:d` pairs where the premise holds, the grid check fails the conclusion
# on {glue:text}`grid_violations:d` ({glue:text}`grid_violation_rate:.1%`): for such a certifier,
# failing the check at $2\epsilon$ no longer identifies the points an adversary can get rejected,
# and the upper bound of Section 3.3.2 need not hold. The certifiers of this book -- the exact
# linear check, GloRo nets, and (in the infinite-sample limit, which is exact) randomized
# smoothing -- are monotonic.
