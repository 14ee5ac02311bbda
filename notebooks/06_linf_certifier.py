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
# (06-linf-certifier)=
# # The ℓ∞ certifier of Appendix C: bound propagation
#
# Appendix C of the paper {cite}`degradation2022` shows that degradation attacks are not specific
# to ℓ2 defenses: it runs Algorithm 3.1 under ℓ∞ against the convex-outer-polytope defense of
# Wong and Kolter {cite}`wong2018provable,wong2018scaling` on MNIST at ε = 0.1. The library the
# paper used is no longer maintained, so this page builds the certifier from scratch
# (`degradation_lib.linf`): interval bounds, the Wong–Kolter linear relaxation, computed by hand
# on a two-neuron network first; then it certifies an ℓ∞-robust MNIST model trained here, shows
# its certified radii, and attacks it with Algorithm 3.1.

# %% tags=["parameters"]
eps: float = 0.1  # ℓ∞ radius ε of the defense (MNIST pixels in [0, 1]), as in Appendix C
model_name: str = "mnist_linf_0.1"  # committed ℓ∞ model (degradation_lib/checkpoints)
n_test: int = 200  # number of MNIST test images (the first n_test; 10000 = the whole test set)
n_kw: int = 20  # images certified with the pure KW bound too (it bounds every neuron: slow)
radius_method: str = "kw_ibp"  # bound of the certified-radius search: "kw_ibp" (tightest) or "ibp" (fast, sound lower bound)
attack_steps: int = 50  # sign-PGD steps of the attack at 2ε (the paper: 50)
tol: float = 0.001  # bisection tolerance of the certified radius
batch_size: int = 250  # images per bound computation (memory knob)
seed: int = 0  # seed of the attack's random start
device: str = "auto"  # "auto" picks CUDA when present

# %%
import functools
import math

import numpy as np
import pandas as pd
import torch
import matplotlib.pyplot as plt
from myst_nb import glue

import degradation_lib as dl
from degradation_lib import ABSTAIN, degradation_report, load_mnist, load_model, model_metadata, upper_bound
from degradation_lib.attacks import degradation_attack, pgd
from degradation_lib.linf import LinfCertifier, compute_bounds, input_box, margin_spec
from degradation_lib.paper import APPENDIX_C_KW

torch.manual_seed(seed)
dev = dl.resolve_device(device)

# %% [markdown]
# ## Bounds over an ℓ∞ box
#
# Definition 2 asks whether $f(x') = f(x)$ for every $x'$ with $\|x' - x\|_\infty \le \epsilon$.
# For a network with logits $y$ and predicted class $j$ it suffices that every margin
# $y_j - y_i$ ($i \ne j$) stays positive on the box. Bound propagation computes *lower bounds*
# of these margins; the certificate holds when they are all positive. Like the attacks of the
# library (which clip to $[0, 1]$), we bound the margins over the box intersected with the input
# domain, $B_\infty(x, \epsilon) \cap [0, 1]^d$: the certificate is Definition 2 restricted to
# the valid pixel range.
#
# ```{prf:definition} (Gowal et al., 2018; Wong and Kolter, 2018): Interval bounds and the Wong–Kolter relaxation
# :label: def-kw-relaxation
# :nonumber:
# Let $l \le z \le u$ bound a pre-activation. *Interval bound propagation* (IBP)
# {cite}`gowal2018effectiveness` bounds $\mathrm{relu}(z)$ by $[\mathrm{relu}(l), \mathrm{relu}(u)]$
# and an affine layer $Wz + b$ by centre $Wc + b$ and radius $|W|r$ of the box $(c, r)$.
# The *Wong–Kolter relaxation* {cite}`wong2018provable` replaces an unstable ReLU ($l < 0 < u$) by
# the two lines with the same slope $s = u/(u - l)$:
#
# $$ s\,z \;\le\; \mathrm{relu}(z) \;\le\; s\,(z - l), $$
#
# (stable neurons are exact: slope 1 if $l \ge 0$, 0 if $u \le 0$). Substituting these lines
# backwards from the output to the input turns any linear function of the output into
# $\Lambda x + \nu$, whose minimum over the box is closed form. Its value equals the objective of
# Wong and Kolter's dual network; the intermediate bounds $l, u$ are computed the same way,
# layer by layer.
# ```
#
# ```{prf:lemma} (Wong and Kolter, 2018): Soundness of the relaxation
# :label: lem-kw-sound
# :nonumber:
# For $l < 0 < u$ and $s = u/(u-l)$: $s z \le \mathrm{relu}(z) \le s (z - l)$ for all
# $z \in [l, u]$, and the upper line meets the ReLU at both ends, $z = l$ and $z = u$.
# ```
#
# *Proof.* For $z \le 0$: $sz \le 0 = \mathrm{relu}(z)$; for $z \ge 0$: $sz \le z$ as $s \le 1$.
# The upper line is the chord through $(l, 0)$ and $(u, u)$ of the convex function relu, hence
# above it on $[l, u]$. ∎

# %%
z = torch.linspace(-3.0, 2.0, 100001, dtype=torch.float64)
for lo_, hi_ in [(-3.0, 2.0), (-0.5, 0.5), (-1.0, 1e-3)]:
    zz = z.clamp(lo_, hi_)
    s = hi_ / (hi_ - lo_)
    assert (s * zz <= zz.relu() + 1e-15).all() and (zz.relu() <= s * (zz - lo_) + 1e-15).all()
    assert abs(s * (lo_ - lo_)) < 1e-15 and abs(s * (hi_ - lo_) - hi_) < 1e-12

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The Wong\u2013Kolter relaxation of an unstable ReLU with bounds l = \u22121, u = 2: the lower line s\u00b7z and the upper line s\u00b7(z \u2212 l) share the slope s = u/(u \u2212 l) = 2/3. Interval bounds keep only the box [0, 2] for the output.", "name": "fig-kw-relaxation"}, "image": {"alt": "The ReLU on [-1, 2] with the Wong-Kolter relaxation: a shaded band between the lower line s z and the upper line s (z - l), and the interval box [0, 2]."}}
l_, u_ = -1.0, 2.0
s_ = u_ / (u_ - l_)
zs = np.linspace(l_, u_, 200)
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.fill_between(zs, s_ * zs, s_ * (zs - l_), color="tab:blue", alpha=0.15, label="relaxation")
ax.plot(zs, np.maximum(zs, 0), "k", lw=2, label="relu(z)")
ax.plot(zs, s_ * zs, "tab:blue", ls="--", label="lower line s·z")
ax.plot(zs, s_ * (zs - l_), "tab:blue", label="upper line s·(z − l)")
ax.axhspan(0, u_, color="tab:orange", alpha=0.08, label="interval bound [0, u]")
ax.set_xlabel("pre-activation z")
ax.set_ylabel("post-activation relu(z)")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### A two-neuron network by hand
#
# Take inputs $x \in [0,1]^2$, hidden pre-activations $z_1 = x_1 + x_2 - 1$ and $z_2 = x_1 - x_2$,
# and two logits $y_0 = \mathrm{relu}(z_1) + \mathrm{relu}(z_2)$, $y_1 = 0.8$. At $x = (½, ½)$ the
# network predicts class 1; we bound the margin $m = y_1 - y_0$ over the box $\epsilon = ¼$ around
# it, $[¼, ¾]^2$.
#
# * Both $z_1$ and $z_2$ range over $[-½, ½]$: both neurons are unstable, with slope
#   $s = ½$ and intercept $-s\,l = ¼$.
# * **IBP.** $\mathrm{relu}(z_k) \in [0, ½]$, so $y_0 \in [0, 1]$ and $m \in [-0.2, 0.8]$:
#   the interval certificate fails.
# * **Wong–Kolter.** $y_0 \le ½ z_1 + ¼ + ½ z_2 + ¼ = x_1$, whose maximum on the box is $¾$; so
#   $m \ge 0.8 - ¾ = 0.05 > 0$: certified. The upper line of each neuron is loose on its own,
#   but together they cancel $x_2$, which intervals cannot see.
# * The lower bound of $y_0$ goes the other way: $y_0 \ge ½ z_1 + ½ z_2 = x_1 - ½ \ge -¼$, worse
#   than the interval bound 0. Neither bound dominates, so the library's tightest bound
#   (`"kw_ibp"`) intersects the two at every layer; it is never looser than IBP.
# * The exact range of $m$ is $[0.3, 0.8]$ (at $x_1 = ¾$, $y_0 = 2\epsilon$ for every $x_2$).
#
# The same reasoning for any $\epsilon \le ½$ gives $\max y_0 = 4\epsilon$ (IBP), $3\epsilon$
# (KW) and $2\epsilon$ (exact), so the certified radii are $0.2$, $4/15 \approx 0.267$ and
# $0.4$. The library reproduces these numbers:

# %%
net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2)).double()
with torch.no_grad():
    net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64))
    net[0].bias.copy_(torch.tensor([-1.0, 0.0], dtype=torch.float64))
    net[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
    net[2].bias.copy_(torch.tensor([0.0, 0.8], dtype=torch.float64))
x_toy = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
C_toy = margin_spec(torch.tensor([1]), 2, dtype=torch.float64)
lo_toy, hi_toy = input_box(x_toy, 0.25)
toy = {}
for method in ("ibp", "kw", "kw_ibp"):
    lb, ub = compute_bounds(net, lo_toy, hi_toy, C_toy, method)
    toy[method] = (lb.item(), ub.item())
    r = LinfCertifier(net, method=method, tol=1e-6).certified_radius(x_toy)[1].item()
    toy[method + "_radius"] = r
hand = {"ibp": (-0.2, 0.8), "kw": (0.05, 1.05), "kw_ibp": (0.05, 0.8)}
for method, (l_h, u_h) in hand.items():
    assert abs(toy[method][0] - l_h) < 1e-12 and abs(toy[method][1] - u_h) < 1e-12
assert 0.2 - 1e-6 <= toy["ibp_radius"] <= 0.2 and 4 / 15 - 1e-6 <= toy["kw_ibp_radius"] <= 4 / 15

# %% tags=["remove-input"]
for method in ("ibp", "kw", "kw_ibp"):
    glue(f"toy_{method}_lb", toy[method][0], display=False)
    glue(f"toy_{method}_ub", toy[method][1], display=False)
    glue(f"toy_{method}_radius", toy[method + "_radius"], display=False)
pd.DataFrame({"margin bound at ε = ¼": [f"[{toy[m][0]:.4f}, {toy[m][1]:.4f}]" for m in hand],
              "by hand": [f"[{hand[m][0]}, {hand[m][1]}]" for m in hand],
              "certified radius (bisection)": [f"{toy[m + '_radius']:.4f}" for m in hand]},
             index=pd.Index(["IBP", "KW", "KW ∩ IBP"], name="bound"))

# %% [markdown]
# Margin bounds at $\epsilon = ¼$: IBP $[${glue:text}`toy_ibp_lb:.2f`, {glue:text}`toy_ibp_ub:.2f`$]$,
# KW $[${glue:text}`toy_kw_lb:.2f`, {glue:text}`toy_kw_ub:.2f`$]$, intersected
# $[${glue:text}`toy_kw_ibp_lb:.2f`, {glue:text}`toy_kw_ibp_ub:.2f`$]$; certified radii by
# bisection {glue:text}`toy_ibp_radius:.4f` (IBP) and {glue:text}`toy_kw_ibp_radius:.4f` (KW ∩ IBP),
# as computed by hand. The tests (`tests/test_linf.py`) also check the bounds against dense
# sampling on random convolutional networks and against Wong and Kolter's own implementation
# (`convex_adversarial` 0.4.4) to $10^{-4}$.
#
# Rounding cannot make a certificate claim too much: the certifier computes the bounds in float64
# on the stored (float32) weights, rounds the input box outward and widens every step by an
# a-priori bound on its rounding error (Higham's bound on each inner product; relaxation lines
# valid for the slopes actually computed), so its certificates hold for the network in exact
# arithmetic at every real point of the box. `tests/test_soundness.py` checks the bounds against
# outputs computed in exact integer arithmetic at box corners and sampled points; the derivation
# is in the docstring of `degradation_lib.linf` ("Floating-point rounding").
#
# The certified radius is found by bisection on $\epsilon$, batched over images: it is the
# largest $\epsilon$ at which the check succeeded (a sound lower bound, within `tol` of the
# boundary the bisection found). The KW bound with the fixed slopes $u/(u-l)$ is not guaranteed
# to be monotone in $\epsilon$, so the direct check `certify(x, ε)` used by Algorithm 2.1 can
# differ from "radius > ε" near the boundary; we count such points below.
#
# ## The ℓ∞-robust MNIST model
#
# The model is the small convolutional network of Wong and Kolter (two 4×4 stride-2 convolutions
# with 16 and 32 channels, a 100-unit dense layer). The paper's authors trained it with the KW
# robust loss; on this project's 2-core CPU we train it with interval bound propagation
# {cite}`gowal2018effectiveness` instead, whose loss costs about two forward passes rather than
# one backward pass per hidden neuron: the worst-case logits over the training box are mixed
# with the clean cross-entropy, and the training radius and the mixing weight are ramped up
# over the first epochs. The recipe is stored with the weights:

# %%
meta = model_metadata(model_name)
certifier = load_model(model_name, device=dev)
certifier.tol = tol
certifier.batch_size = batch_size

# %% tags=["remove-input"]
glue("train_eps", meta["training"]["eps_train"], display=False)
glue("train_epochs", meta["training"]["epochs"], display=False)
pd.DataFrame({"value": [str(meta["training"][k]) for k in ("command", "epochs", "eps_train", "loss", "wall_time_s")
                        if k in meta["training"]]},
             index=pd.Index([k for k in ("command", "epochs", "eps_train", "loss", "wall_time_s") if k in meta["training"]],
                            name="training record"))

# %% [markdown]
# It was trained at $\epsilon_{\text{train}} =$ {glue:text}`train_eps:.2f` for
# {glue:text}`train_epochs:d` epochs. We certify the first `n_test` test images at $\epsilon$
# with three bounds: IBP, KW alone, and their intersection (the default of the certifier).

# %%
x_all, y_all = load_mnist("test")
x_test, y_test = x_all[:n_test].to(dev), y_all[:n_test].to(dev)
pred = certifier.predict(x_test)
clean = (pred == y_test)
certified = certifier.certify(x_test, eps)   # KW ∩ IBP, the certifier's default
c_ibp = LinfCertifier(certifier.model, method="ibp", batch_size=batch_size).certify(x_test, eps)
c_kw = LinfCertifier(certifier.model, method="kw", batch_size=batch_size).certify(x_test[:n_kw], eps)
vra_by_method = {"ibp": dl.rate(c_ibp == y_test), "kw_ibp": dl.rate(certified == y_test),
                 "kw": dl.rate(c_kw == y_test[:n_kw]), "kw_ibp_first": dl.rate(certified[:n_kw] == y_test[:n_kw])}
assert ((c_ibp == y_test) <= (certified == y_test)).all()   # never looser than IBP

# %% tags=["remove-input"]
glue("n_kw", n_kw, display=False)
glue("vra_kw_ibp_first", vra_by_method["kw_ibp_first"].value, display=False)
glue("n_test", n_test, display=False)
glue("clean_acc", clean.float().mean().item(), display=False)
glue("vra_ibp", vra_by_method["ibp"].value, display=False)
glue("vra_kw", vra_by_method["kw"].value, display=False)
glue("vra_kw_ibp", vra_by_method["kw_ibp"].value, display=False)
glue("paper_vra", APPENDIX_C_KW["vra"], display=False)
glue("eps", eps, display=False)
glue("eps2", 2 * eps, display=False)
pd.DataFrame({"VRA at ε [95 % CI] (images)": [str(r) for r in vra_by_method.values()]},
             index=pd.Index(["IBP", "KW ∩ IBP", f"KW (first {n_kw} images)", f"KW ∩ IBP (first {n_kw} images)"],
                            name="bound"))

# %% [markdown]
# On the first {glue:text}`n_test:d` test images the clean accuracy is
# {glue:text}`clean_acc:.1%`; the verified-robust accuracy (correct and certified) at
# $\epsilon =$ {glue:text}`eps:.2f` is {glue:text}`vra_ibp:.1%` with IBP,
# {glue:text}`vra_kw_ibp:.1%` with their intersection; on the first {glue:text}`n_kw:d` images
# (the pure KW bound computes a backward pass for every hidden neuron, which is slow) KW alone
# certifies {glue:text}`vra_kw:.1%` against {glue:text}`vra_kw_ibp_first:.1%` for the intersection. The paper lists {glue:text}`paper_vra:.1%` for its KW-trained model. (An
# IBP-trained network is tuned for interval bounds, which is why the KW bound alone can be worse
# here than IBP, the reverse of what happens on the random networks of the tests.)
#
# ## Certified radii
#
# The upper bound of Section 3.3.2 needs the certified radius of every correctly classified
# point: the share of points certified at $\epsilon$ but not at $2\epsilon$ bounds the
# false-positive rate of *any* degradation attack from above. The radii below come from the
# {glue:text}`radius_method` bound (parameter `radius_method`; an IBP radius is a sound lower
# bound of the KW ∩ IBP one, and on this IBP-trained model the two differ little).

# %%
radius_certifier = LinfCertifier(certifier.model, method=radius_method, tol=tol, batch_size=batch_size)
labels_r, radius = radius_certifier.certified_radius(x_test)
radius = radius.cpu()
correct_r = (labels_r == y_test).cpu()
ub = upper_bound(radius, correct_r, eps)
mismatch = int(((certified != ABSTAIN).cpu() != (radius > eps)).sum())

# %% tags=["remove-input"]
glue("radius_method", {"kw_ibp": "KW ∩ IBP", "ibp": "IBP", "kw": "KW"}[radius_method], display=False)
glue("ub", float(ub["upper_bound"][0]), display=False)
glue("ub_lo", float(ub["lo"][0]), display=False)
glue("ub_hi", float(ub["hi"][0]), display=False)
glue("vra_2eps", float(ub["vra_2eps"][0]), display=False)
glue("paper_ub", APPENDIX_C_KW["upper_bound"], display=False)
glue("mismatch", mismatch, display=False)
glue("median_radius", float(radius[correct_r].median()), display=False)

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Certified \u2113\u221e radii (bisection on \u03b5) of the correctly classified test images. The dashed lines mark \u03b5 and 2\u03b5: points between them are certified at \u03b5 but not at 2\u03b5, the room the degradation attack has.", "name": "fig-linf-radii"}, "image": {"alt": "Histogram of certified l-infinity radii of the correct test images, with dashed lines at epsilon and 2 epsilon."}}
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.hist(radius[correct_r].numpy(), bins=np.linspace(0, max(2.5 * eps, float(radius.max()) + 1e-3), 50),
        color="tab:blue", alpha=0.8)
for v, name in [(eps, "ε"), (2 * eps, "2ε")]:
    ax.axvline(v, color="k", ls="--", lw=1)
    ax.text(v, ax.get_ylim()[1] * 0.92, f" {name}", fontsize=9)
ax.set_xlabel("certified ℓ∞ radius (pixel units, [0, 1] scale)")
ax.set_ylabel("number of test images")
fig.tight_layout()
plt.show()

# %% [markdown]
# The median certified radius of the correct points is {glue:text}`median_radius:.3f`; only
# {glue:text}`vra_2eps:.1%` of the images are certified at $2\epsilon$, so the upper bound on the
# false-positive rate is {glue:text}`ub:.1%` (95 % Clopper–Pearson interval
# {glue:text}`ub_lo:.1%`–{glue:text}`ub_hi:.1%`); the paper reports {glue:text}`paper_ub:.0%`.
# The direct check at $\epsilon$ and "radius > ε" disagree on {glue:text}`mismatch:d` points.
#
# ## Algorithm 3.1 under ℓ∞
#
# The degradation attack runs an ordinary ℓ∞ attack at radius $2\epsilon$ -- here, as in the
# paper, sign-PGD with 50 steps on the cross-entropy of the true label -- then clips the result to
# the $\epsilon$-box and to $[0, 1]$ (`degradation_attack`). The attack never changes the label of
# a certified point (its output stays in the certified box); it succeeds when the defense
# rejects the new input.

# %%
gen = torch.Generator().manual_seed(seed)
attack = functools.partial(pgd, labels=y_test, steps=attack_steps, generator=gen)
x_adv = degradation_attack(certifier, x_test, eps, attack=attack)
assert (x_adv - x_test).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
attacked = certifier.certify(x_adv, eps)
report = degradation_report(y_test.cpu(), certified.cpu(), attacked.cpu())
assert report.flipped.k == 0

# %% tags=["remove-input"]
for name in ("vra", "false_positive_rate", "utility_reduction"):
    r = getattr(report, name)
    glue(name, r.value, display=False)
    glue(name + "_lo", r.lo, display=False)
    glue(name + "_hi", r.hi, display=False)
glue("paper_success", APPENDIX_C_KW["attack_success"], display=False)
glue("attack_steps", attack_steps, display=False)

# %% [markdown]
# Of the test images that are correct and certified at $\epsilon$ (VRA {glue:text}`vra:.1%`),
# the attack makes the defense reject {glue:text}`false_positive_rate:.1%` (95 % interval
# {glue:text}`false_positive_rate_lo:.1%`–{glue:text}`false_positive_rate_hi:.1%`): the
# false-positive rate. The utility reduction, the share of all test images lost to the attack,
# is {glue:text}`utility_reduction:.1%` ({glue:text}`utility_reduction_lo:.1%`–{glue:text}`utility_reduction_hi:.1%`).
# The paper's attack succeeds on {glue:text}`paper_success:.0%` of the certified points of its
# KW model, against an upper bound of {glue:text}`paper_ub:.0%`; ours is bounded by
# {glue:text}`ub:.1%`. As for the ℓ2 defenses, a model certified at $\epsilon$ but hardly ever
# at $2\epsilon$ leaves almost every certified point open to a degradation attack; training at
# $2\epsilon$ (Section 4.1) is the remedy the paper proposes.
#
# Against the paper's Table 4 (lower bounds: what Algorithm 3.1 achieves against KW) and Table 5
# (upper bounds: what any attack could achieve):
#
# | | VRA at ε | attack success (FPR) | upper bound |
# |---|---|---|---|
# | paper, KW model (Appendix C) | {glue:text}`paper_vra:.1%` | ≈{glue:text}`paper_success:.0%` | {glue:text}`paper_ub:.0%` |
# | this page (first {glue:text}`n_test:d` test images) | {glue:text}`vra:.1%` | {glue:text}`false_positive_rate:.1%` | {glue:text}`ub:.1%` |
