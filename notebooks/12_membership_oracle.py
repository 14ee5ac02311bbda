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
# (12-membership-oracle)=
# # The $M$-membership-oracle defense, built and measured
#
# Section 4.2 of the paper {cite}`degradation2022` proposes, and leaves as future work, a defense
# that knows the data manifold $M$: reject $x'$ only when some *valid* input within $\epsilon$ of
# $x'$ has another label -- then $x'$ is an adversarial example, and the valid input is the
# witness -- instead of whenever local robustness fails at $x'$. This page (ours, beyond the
# paper) builds it for MNIST with a learned membership oracle and a budgeted search, and measures
# on the GloRo nets of the earlier pages what it buys against degradation attacks and what it
# costs: clean rejections, real adversarial examples let through, forward passes, and an
# adversary who knows the defense.

# %% tags=["parameters"]
models: list = ["mnist_0.3", "mnist_1.58"]  # committed GloRo models (names for load_model)
num_points: int = 200  # first MNIST test images per model in the stored run
oracle_name: str = "mnist_ae"  # committed membership oracle (load_oracle)
steps: int = 50  # gradient steps per restart of the defense's witness search
restarts: int = 2  # restarts of the search (budget: steps × restarts gradient steps)
attack_steps: int = 50  # PGD steps of the degradation and ε-attacks (the paper's authors: 50)
adaptive_steps: int = 50  # PGD steps per candidate of the adaptive attack
adaptive_targets: int = 1  # targeted candidates of the adaptive attack (classes ranked by logit)
num_ood: int = 1000  # generated non-digit images per kind for the oracle's detection rates
num_witnesses: int = 4  # degradation inputs with a witness shown in the witness figure
sensitivity_false_alarms: list = [0.05, 0.25]  # stricter oracle thresholds tried on the larger-ε model
num_sensitivity: int = 50  # test points per stricter threshold (stored runs, no adaptive attack)
recompute: bool = False  # recompute the per-point run instead of reading the stored one (slow)
seed: int = 0  # seed of the attacks, the search's restarts and the generated non-digits
device: str = "auto"  # "auto" picks CUDA when present

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from myst_nb import glue

import degradation_lib as dl
from degradation_lib import ABSTAIN, LinearCertifier, predict_with_defense
from degradation_lib.oracle import (BallUnionOracle, ManifoldDefense, RESULTS_DIR, load_oracle, non_digit_inputs,
                                    oracle_metadata, oracle_splits, run_stored)
from degradation_lib.paper import TABLE1_GLORO

torch.manual_seed(seed)
dev = dl.resolve_device(device)

# %% [markdown]
# ## The defense
#
# An input $x'$ is an adversarial example if and only if some $x \in M$ with
# $\|x - x'\|_p \le \epsilon$ has $f(x) \ne f(x')$ ({prf:ref}`def-adversarial`). The certified
# defense ({prf:ref}`alg-predict-with-defense`) checks a stronger condition, that *no* point of
# the ball has another label, valid or not; that gap is what degradation attacks use. Given a
# membership oracle, Section 4.2's fix reads, with our budgeted search:
#
# ```{prf:algorithm} (this book): PredictWithOracle, after Section 4.2
# :label: alg-predict-with-oracle
# :nonumber:
# **Inputs** a model $f$, an input $x'$, a bound $\epsilon$, a metric $\ell_p$, a membership
# oracle $O$ (a score $s$ and a threshold $\tau$: $x \in M$ is declared where $s(x) \le \tau$), a
# search budget, a policy (reject or accept) \
# **Output** a prediction $l \in L \cup \{\bot\}$
#
# 1. **if** $f$ is $(\epsilon, \ell_p)$-locally robust at $x'$ **then return** $f(x')$
# 2. search $B_p(x', \epsilon) \cap [0, 1]^d$, within the budget, for a *witness* $x$ with
#    $s(x) \le \tau$ and $f(x) \ne f(x')$
# 3. **if** a witness is found **then return** $\bot$ ($x'$ is an adversarial example)
# 4. **if** the policy is *reject* **then return** $\bot$ **else return** $f(x')$
# ```
#
# The *reject* policy is the paper's wording ("fall back to checking local robustness"): it
# answers exactly as the plain defense, so it is as sound, and it gains only an explanation --
# a rejection with a witness is a proven adversarial example (as far as the oracle is right).
# The *accept* policy is the one that can lower the false-positive rate; it is no longer a proof:
# an adversarial example whose valid, differently-labelled neighbours the search misses gets
# through. In the library, `ManifoldDefense(certifier, oracle, policy)` is a `Certifier`, so
# `predict_with_defense` and the attacks take it unchanged. The search
# (`search_witness`) is projected gradient descent on
# $\mathrm{relu}(\kappa - m(x)) + \lambda\,\mathrm{relu}(s(x) - \tau + \kappa)$, $m$ the margin
# away from $f(x')$, restarted from $x'$ and from random points of the ball; every iterate is
# checked exactly.
#
# ### The 2-D example of Figure 1
#
# With the exact oracle of the two discs of {ref}`01-definitions` (an oracle that is never
# wrong), the defense answers the input $x'$ of Figure 1 -- the plain defense rejects it -- and
# still rejects an adversarial example, with a witness, once the boundary is moved into the gap
# between the discs.

# %%
eps_2d = 0.1
oracle_2d = BallUnionOracle([[0.25, 0.5], [0.80, 0.5]], [0.15, 0.10])  # M of Figure 1
W2 = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
rows_2d = []
for boundary, point in ((0.5, [0.48, 0.5]), (0.45, [0.47, 0.5])):
    f2 = LinearCertifier(W2, torch.tensor([boundary, -boundary], dtype=torch.float64), norm=2)
    xp2 = torch.tensor([point], dtype=torch.float64)
    res2 = ManifoldDefense(f2, oracle_2d, "accept").defend(xp2, eps_2d)
    name = {0: "W", 1: "G", ABSTAIN: "⊥"}
    rows_2d.append({"boundary x₁": boundary, "x'": tuple(point), "f(x')": name[f2.predict(xp2).item()],
                    "plain defense": name[predict_with_defense(f2, xp2, eps_2d).item()],
                    "witness": tuple(np.round(res2.witness[0].tolist(), 3)) if res2.found.item() else "none found",
                    "oracle defense (accept)": name[res2.labels.item()],
                    "oracle defense (reject)": name[ManifoldDefense(f2, oracle_2d, "reject").certify(xp2, eps_2d).item()]})
table_2d = pd.DataFrame(rows_2d)
assert rows_2d[0]["oracle defense (accept)"] == "W" and rows_2d[1]["oracle defense (accept)"] == "⊥"
table_2d

# %% [markdown]
# ## A membership oracle for MNIST
#
# We take the $\ell_2$ reconstruction error of a small convolutional *denoising* autoencoder,
# $s(x) = \|x - D(E(x))\|_2$: it trains on one CPU thread in minutes, it is differentiable (the
# search and an adaptive attacker both need gradients), and it is measured in the units of
# $\epsilon$ -- trained to map corrupted digits back onto clean ones, $D \circ E$ removes most of a
# perturbation that leaves $M$, so the score grows by about the perturbation's length and
# $\tau$ reads as the *thickness* of the accepted set around the digits. The threshold is the
# split-conformal quantile of the scores of {glue:text}`n_cal` held-out training images at a
# false-alarm rate of {glue:text}`fa_target:.0%` (`calibrate_threshold`):
# $\tau =$ {glue:text}`tau:.2f`. The recipe and the measured rates are committed with the weights
# (`degradation_lib/checkpoints/oracles/`{glue:text}`oracle_file`).

# %%
oracle = load_oracle(oracle_name, dev)
ometa = oracle_metadata(oracle_name)
x_test, y_test = dl.load_mnist("test")
with torch.no_grad():
    s_test = torch.cat([oracle.score(x_test[i:i + 1000].to(dev)).cpu() for i in range(0, len(x_test), 1000)])
fa_test = dl.rate(s_test > oracle.threshold)
gen = torch.Generator().manual_seed(seed)
pool = x_test[torch.randperm(len(x_test), generator=gen)[:num_ood]]
ood = non_digit_inputs(pool, gen)
with torch.no_grad():
    s_ood = {k: oracle.score(v.to(dev)).cpu() for k, v in ood.items()}
detect = {k: dl.rate(v > oracle.threshold) for k, v in s_ood.items()}
assert fa_test.k == ometa["metrics"]["false_alarm_test"]["k"]  # the json records the same measurement

# %% tags=["remove-input"]
pct = lambda r: f"{r.value:.1%} [{r.lo:.1%}, {r.hi:.1%}]"
hold = ometa["metrics"]["false_alarm_holdout"]
oracle_rows = [{"inputs": "held-out training digits (false alarm)", "n": hold["n"],
                "flagged as not in M": f"{hold['value']:.1%} [{hold['lo']:.1%}, {hold['hi']:.1%}]"},
               {"inputs": "MNIST test digits (false alarm)", "n": fa_test.n, "flagged as not in M": pct(fa_test)}]
oracle_rows += [{"inputs": k, "n": r.n, "flagged as not in M": pct(r)} for k, r in detect.items()]
glue("oracle_table", pd.DataFrame(oracle_rows).set_index("inputs"), display=False)
glue("n_cal", ometa["calibration"]["n"], display=False)
glue("fa_target", ometa["false_alarm_target"], display=False)
glue("tau", oracle.threshold, display=False)
glue("oracle_file", f"{oracle_name}.json", display=False)
glue("fa_test", fa_test.value, display=False)
glue("fa_test_lo", fa_test.lo, display=False)
glue("fa_test_hi", fa_test.hi, display=False)
glue("train_min", ometa["training"]["wall_time_s"] / 60, display=False)
glue("epochs_ae", ometa["training"]["epochs"], display=False)
glue("latent", ometa["latent"], display=False)
weakest = min(detect, key=lambda k: detect[k].value)
glue("weakest_kind", weakest, display=False)
glue("weakest_rate", detect[weakest].value, display=False)
glue("score_median", float(s_test.median()), display=False)
glue("two_eps_big", 2 * max(TABLE1_GLORO[name]["eps"] for name in models), display=False)
glue("slack", math.sqrt(max(oracle.threshold ** 2 - float(s_test.median()) ** 2, 0.0)), display=False)

# %% [markdown]
# ```{glue:figure} oracle_table
# :name: tab-oracle-rates
#
# The oracle's rates with 95 % Clopper–Pearson intervals: false alarms on digits it never saw,
# detections on {glue:text}`n_ood` generated non-digits of each kind (`non_digit_inputs`).
# ```
#
# The autoencoder (latent dimension {glue:text}`latent`, {glue:text}`epochs_ae` epochs,
# {glue:text}`train_min:.0f` minutes on one shared CPU thread) flags
# {glue:text}`fa_test:.1%` of the MNIST test digits (95 % interval {glue:text}`fa_test_lo:.1%` to
# {glue:text}`fa_test_hi:.1%`), consistent with the calibrated rate. The median test digit
# scores {glue:text}`score_median:.2f`, so the accepted set reaches well beyond the digits: a
# perturbation the autoencoder does not reproduce can be about
# $\sqrt{\tau^2 - s(x)^2} \approx$ {glue:text}`slack:.1f` long before a typical digit is
# flagged (compare $2\epsilon =$ {glue:text}`two_eps_big:.2f` for the largest ε below). Its weakest kind of
# non-digit is "{glue:text}`weakest_kind`", detected at {glue:text}`weakest_rate:.1%`. An
# autoencoder reconstructs simple shapes well; this oracle is imprecise, as Section 4.2 warns
# OOD detectors are, and the measurements below carry that imprecision.

# %% tags=["remove-input"]
glue("n_ood", num_ood, display=False)

# %% [markdown]
# ## The experiment
#
# On the first {glue:text}`num_points` MNIST test images and for both GloRo models,
# `evaluate_oracle_defense` records per point: the plain certified answer and the oracle
# defense's answer on the clean image; both answers on the degradation inputs of Algorithm 3.1
# with the paper's inner attack (PGD on cross-entropy at $2\epsilon$) and with the library's
# strongest one (PGD on GloRo's rejection score, see {ref}`05-degradation-attack`); both answers
# on an $\epsilon$-PGD adversarial example against the true label; the adaptive attack described
# below; and the forward and backward passes each answer cost. The search budget is
# {glue:text}`steps` steps × {glue:text}`restarts` restarts. The run is stored
# (`degradation_lib/results/oracle/`, with a manifest of how it was computed) and read here;
# `-p recompute True` recomputes it ({glue:text}`run_minutes:.0f` minutes of compute on one
# thread of the shared 2-core CPU for both models, as recorded in the manifests).

# %%
eps_of = {name: TABLE1_GLORO[name]["eps"] for name in models}
settings = dict(steps=steps, restarts=restarts, attack_steps=attack_steps, adaptive_steps=adaptive_steps,
                adaptive_targets=adaptive_targets, seed=seed)
results = {}
for name in models:
    path = RESULTS_DIR / f"{name}_n{num_points}.npz"
    if recompute or not path.is_file():
        results[name] = run_stored(name, num_points, eps_of[name], oracle=oracle_name, device=dev, **settings)
    else:
        results[name] = dl.PointResults.load(path)
    meta = results[name].meta
    assert all(meta[k] == v for k, v in settings.items()) and meta["oracle"] == oracle_name, meta
    assert abs(meta["oracle_threshold"] - oracle.threshold) < 1e-9

# %% tags=["remove-input"]
glue("num_points", num_points, display=False)
glue("run_minutes", sum(r.manifest.get("wall_time_s") or float("nan") for r in results.values()) / 60, display=False)
glue("steps", steps, display=False)
glue("restarts", restarts, display=False)

# %% [markdown]
# ### Rates, side by side
#
# For each model: the plain certified defense, the oracle defense with the *reject* policy (same
# answers as the plain one; the share of its rejections that carry a witness in brackets of the
# last column) and with the *accept* policy. Degradation false-positive rates are over $test_R$,
# the correct and certified points (as on {ref}`05-degradation-attack`); adversarial examples are
# the $\epsilon$-PGD points whose label the attack changed (the point was correct and not
# certified); the adaptive attack runs at every correct, uncertified point. Brackets: exact 95 %
# Clopper–Pearson intervals.

# %%
def rates(res):
    """The page's rates for one model's stored run: {(row, defense): Rate}."""
    y, pred, cert = res["label"], res["pred"], res["certified"]
    R = (cert == y) & (cert != ABSTAIN)
    out = {}
    out[("clean rejection", "plain")] = dl.rate(cert == ABSTAIN)
    out[("clean rejection", "accept")] = dl.rate(res["clean_def"] == ABSTAIN)
    out[("clean: answered wrong", "plain")] = dl.rate((cert != ABSTAIN) & (cert != y))
    out[("clean: answered wrong", "accept")] = dl.rate((res["clean_def"] != ABSTAIN) & (res["clean_def"] != y))
    for a in ("alg31", "alg31_rejection"):
        out[(f"FPR {a}", "plain")] = dl.rate(res[a] == ABSTAIN, R)
        out[(f"FPR {a}", "accept")] = dl.rate(res[f"{a}_def"] == ABSTAIN, R)
        out[(f"FPR {a}", "witness")] = dl.rate(res[f"{a}_found"], R & (res[a] == ABSTAIN))
    adv = (pred == y) & (res["adv_pred"] != y)
    out[("adversarial examples rejected", "plain")] = dl.rate(res["adv"] == ABSTAIN, adv)
    out[("adversarial examples rejected", "accept")] = dl.rate(res["adv_def"] == ABSTAIN, adv)
    out[("adversarial examples rejected", "witness")] = dl.rate(res["adv_found"], adv)
    ran = res["adapt_ran"].astype(bool)
    out[("attack gets through: ε-PGD", "plain")] = dl.rate((res["adv"] != ABSTAIN) & (res["adv"] != y), ran)
    out[("attack gets through: ε-PGD", "accept")] = dl.rate((res["adv_def"] != ABSTAIN) & (res["adv_def"] != y), ran)
    out[("attack gets through: adaptive", "plain")] = dl.rate((res["adapt"] != ABSTAIN) & (res["adapt"] != y), ran)
    out[("attack gets through: adaptive", "accept")] = dl.rate(res["adapt_through"], ran)
    return out


all_rates = {name: rates(res) for name, res in results.items()}


def cost(res, prefix):
    """Mean passes per input: classifier forward, oracle forward, backward."""
    return res[f"{prefix}_fw"].mean(), res[f"{prefix}_ofw"].mean(), res[f"{prefix}_bw"].mean()


# %% tags=["remove-input"]
ROW_NAMES = {
    "clean rejection": "clean images rejected",
    "clean: answered wrong": "clean images answered with a wrong label",
    "FPR alg31": "degradation FPR, Algorithm 3.1 (paper's PGD)",
    "FPR alg31_rejection": "degradation FPR, Algorithm 3.1 (rejection loss, strongest)",
    "adversarial examples rejected": "ε-PGD adversarial examples rejected",
    "attack gets through: ε-PGD": "ε-PGD gets through (correct, uncertified points)",
    "attack gets through: adaptive": "adaptive attack gets through (same points)",
}
table_rows = []
for name, rs in all_rates.items():
    for key, label in ROW_NAMES.items():
        plain, acc, wit = rs.get((key, "plain")), rs.get((key, "accept")), rs.get((key, "witness"))
        table_rows.append({"model": f"{name} (ε = {eps_of[name]})", "measure": label,
                           "plain / oracle, reject policy": pct(plain),
                           "oracle, accept policy": pct(acc),
                           "with a witness": pct(wit) if wit is not None else ""})
    for prefix, label in (("clean", "clean images"), ("alg31_rejection", "degradation inputs (strongest)")):
        fw, ofw, bw = cost(results[name], prefix)
        table_rows.append({"model": f"{name} (ε = {eps_of[name]})", "measure": f"passes per input, {label}",
                           "plain / oracle, reject policy": "1 forward (plain)",
                           "oracle, accept policy": f"{fw:.1f} fwd + {ofw:.1f} oracle fwd + {bw:.1f} bwd",
                           "with a witness": ""})
main_table = pd.DataFrame(table_rows).set_index(["model", "measure"])
glue("main_table", main_table, display=False)

# %% [markdown]
# ```{glue:figure} main_table
# :name: tab-oracle-defense
#
# The plain certified defense against the oracle defense on the same points. "With a witness":
# the share of the plain defense's rejections for which the search found a valid,
# differently-labelled input within ε (those are proven adversarial examples, up to the oracle).
# Passes: per input, averaged over all inputs of the kind (the certificate's forward pass
# included; a backward pass costs about two forward passes).
# ```

# %% tags=["remove-input"]
big = models[-1]
rb = all_rates[big]
fpr_plain, fpr_acc = rb[("FPR alg31_rejection", "plain")], rb[("FPR alg31_rejection", "accept")]
ratio = fpr_plain.value / fpr_acc.value if fpr_acc.k else math.inf
adv_acc = rb[("adversarial examples rejected", "accept")]
clean_plain, clean_acc = rb[("clean rejection", "plain")], rb[("clean rejection", "accept")]
adapt = rb[("attack gets through: adaptive", "accept")]
glue("big", big, display=False)
glue("big_eps", eps_of[big], display=False)
glue("fpr_plain_big", fpr_plain.value, display=False)
glue("fpr_acc_big", fpr_acc.value, display=False)
glue("fpr_acc_big_hi", fpr_acc.hi, display=False)
glue("fpr_ratio", ratio, display=False)
glue("fpr_ratio_lo", fpr_plain.lo / fpr_acc.hi if fpr_acc.hi > 0 else math.inf, display=False)
glue("adv_rej_big", adv_acc.value, display=False)
glue("adv_rej_big_lo", adv_acc.lo, display=False)
glue("adv_rej_big_n", adv_acc.n, display=False)
glue("clean_plain_big", clean_plain.value, display=False)
glue("clean_acc_big", clean_acc.value, display=False)
glue("adapt_big", adapt.value, display=False)
glue("adapt_big_lo", adapt.lo, display=False)
glue("adapt_big_hi", adapt.hi, display=False)
glue("adapt_big_n", adapt.n, display=False)
glue("target_fpr", "met" if ratio >= 10 else f"missed, by a factor {10 / ratio:.1f}", display=False)
glue("target_adv", "met" if adv_acc.value >= 0.95 else f"missed by {0.95 - adv_acc.value:.1%}", display=False)
small = models[0]
rs0 = all_rates[small]
glue("small", small, display=False)
glue("fpr_plain_small", rs0[("FPR alg31_rejection", "plain")].value, display=False)
glue("fpr_acc_small", rs0[("FPR alg31_rejection", "accept")].value, display=False)
glue("adv_rej_small", rs0[("adversarial examples rejected", "accept")].value, display=False)
glue("adapt_small", rs0[("attack gets through: adaptive", "accept")].value, display=False)
glue("wrong_acc_big", rb[("clean: answered wrong", "accept")].value, display=False)
glue("wrong_plain_big", rb[("clean: answered wrong", "plain")].value, display=False)

# %% [markdown]
# ### Against the targets
#
# * **Degradation.** On {glue:text}`big` ($\epsilon =$ {glue:text}`big_eps`), the strongest
#   degradation attack makes the plain defense reject {glue:text}`fpr_plain_big:.1%` of $test_R$;
#   the accept policy rejects {glue:text}`fpr_acc_big:.1%` (upper 95 % bound
#   {glue:text}`fpr_acc_big_hi:.1%`), a {glue:text}`fpr_ratio:.1f`-fold reduction (target
#   ≥ 10: {glue:text}`target_fpr`; the end of the page says why). On {glue:text}`small` the
#   rate goes from {glue:text}`fpr_plain_small:.1%` to {glue:text}`fpr_acc_small:.1%`.
# * **Adversarial examples.** The accept policy still rejects {glue:text}`adv_rej_big:.1%` of
#   the {glue:text}`adv_rej_big_n` ε-PGD adversarial examples on {glue:text}`big` (target ≥ 95 %:
#   {glue:text}`target_adv`), {glue:text}`adv_rej_small:.1%` on {glue:text}`small`. The plain
#   defense rejects all of them, necessarily: x itself is in the ball around an adversarial
#   example with another label, so the certificate cannot hold there.
# * **Clean rejections** cannot rise under either policy -- the accept policy answers wherever
#   the plain defense does, and more -- and fall on {glue:text}`big` from
#   {glue:text}`clean_plain_big:.1%` to {glue:text}`clean_acc_big:.1%`. The price is in the
#   answers it adds: clean images answered with a wrong label go from
#   {glue:text}`wrong_plain_big:.1%` to {glue:text}`wrong_acc_big:.1%`.
# * **The adaptive attack** gets through at {glue:text}`adapt_big:.1%` of the correct,
#   uncertified points of {glue:text}`big` (95 % interval {glue:text}`adapt_big_lo:.1%` to
#   {glue:text}`adapt_big_hi:.1%`, {glue:text}`adapt_big_n` points), {glue:text}`adapt_small:.1%`
#   on {glue:text}`small`; against the plain defense it never does.
#
# The adaptive adversary knows the oracle, the search's code, budget and seed (the search is
# deterministic, so the adversary can replay it). For each point it builds candidates by PGD in
# the ε-ball -- a *deep* one (the wrong-class margin maximised without limit), an *on-manifold*
# one (margin capped at 1 minus the oracle score, so the wrong input looks like a digit) and
# targeted ones towards the runner-up classes -- replays the defense on each and submits the
# first that it answers with a wrong label (`adaptive_attack`).

# %% [markdown]
# ### Where the oracle's scores fall
#
# The search can only clear a degradation input when no input the oracle accepts, within
# $\epsilon$ of it, has another label. The scores below show how far the attack inputs sit from
# the accepted set.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The oracle's score s(x) = \u2016x \u2212 D(E(x))\u2016\u2082 of clean test images, of the degradation inputs of Algorithm 3.1 (rejection loss) and of the \u03b5-PGD attack inputs (at every point, whether or not the label flipped), per model; dashed: the threshold \u03c4 (inputs to its right are declared outside M).", "name": "fig-oracle-scores"}}
fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.4), squeeze=False)
for ax, name in zip(axes[0], models):
    res = results[name]
    bins = np.linspace(0, max(float(np.max(res["adv_score"])), oracle.threshold) * 1.1, 40)
    for col, label in (("clean_score", "clean test images"), ("alg31_rejection_score", "degradation inputs"),
                       ("adv_score", "ε-PGD attack inputs")):
        ax.hist(res[col], bins=bins, histtype="step", linewidth=1.5, label=label)
    ax.axvline(oracle.threshold, color="k", linestyle="--", label="threshold τ")
    ax.set_xlabel("oracle score s(x) (ℓ2 reconstruction error)")
    ax.set_ylabel("number of test points")
    ax.set_title(f"{name} (ε = {eps_of[name]})")
axes[0][0].legend(fontsize=8)
fig.tight_layout()

# %% tags=["remove-input"]
flag_rows = []
for name, res in results.items():
    y_ = res["label"]
    R_ = (res["certified"] == y_) & (res["certified"] != ABSTAIN)
    adv_ = (res["pred"] == y_) & (res["adv_pred"] != y_)
    tau_ = res.meta["oracle_threshold"]
    flag_rows.append({"model": f"{name} (ε = {eps_of[name]})",
                      "clean test images": pct(dl.rate(res["clean_score"] > tau_)),
                      "degradation inputs, Alg. 3.1 (paper's PGD)": pct(dl.rate(res["alg31_score"] > tau_, R_)),
                      "degradation inputs, Alg. 3.1 (strongest)": pct(dl.rate(res["alg31_rejection_score"] > tau_, R_)),
                      "ε-PGD adversarial examples": pct(dl.rate(res["adv_score"] > tau_, adv_))})
glue("flag_table", pd.DataFrame(flag_rows).set_index("model"), display=False)
glue("flag_deg_big", dl.rate(results[big]["alg31_rejection_score"] > oracle.threshold,
                             (results[big]["certified"] == results[big]["label"])).value, display=False)

# %% [markdown]
# ```{glue:figure} flag_table
# :name: tab-oracle-flags
#
# Share of inputs the oracle declares outside $M$ ($s > \tau$): degradation inputs over the
# attacked points of $test_R$, adversarial examples over the points whose label ε-PGD changed
# (95 % Clopper–Pearson intervals).
# ```
#
# The oracle hardly tells a degradation input from a digit (on {glue:text}`big` it flags
# {glue:text}`flag_deg_big:.1%` of them): an ℓ2 perturbation of length at most $\epsilon$ moves
# the score by little compared with $\tau$. That is as it should be -- a degradation input *is*
# a near-copy of a valid digit -- but it means the search's question is decided by the
# differently-labelled inputs the oracle accepts *near* it.

# %% [markdown]
# ### What the search finds
#
# Why the accept policy still rejects degradation inputs on {glue:text}`big`: below, a few test
# points of $test_R$ whose degradation input it rejects because the search found a witness,
# a differently-labelled input within $\epsilon$ that the oracle accepts. Recomputed for illustration on the first such points of the stored run
# (the attack's random start differs from the batched run, so the inputs are close to, not
# identical with, the stored ones).

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Degradation inputs that the oracle defense still rejects on the larger-\u03b5 model. Left: a certified test image x (label, oracle score s); middle: the degradation input x\u2032 of Algorithm 3.1 (rejection loss), which the plain defense rejects although f(x\u2032) = f(x); right: the witness the search found within \u03b5 of x\u2032, which the oracle accepts (s \u2264 \u03c4) and the model labels differently.", "name": "fig-oracle-witnesses"}}
res = results[big]
cert_big = dl.load_model(big, dev)
R_big = (res["certified"] == res["label"]) & (res["certified"] != ABSTAIN)
pick = res["index"][R_big & (res["alg31_rejection"] == ABSTAIN) & res["alg31_rejection_found"]][:num_witnesses]
if len(pick):
    xs = x_test[torch.as_tensor(pick)].to(dev)
    g_w = torch.Generator().manual_seed(seed)
    attack_w = dl.rejection_pgd(cert_big, eps_of[big], steps=attack_steps, generator=g_w)
    xps = dl.degradation_attack(cert_big, xs, eps_of[big], attack=attack_w)
    defense_big = ManifoldDefense(cert_big, oracle, "accept", steps=steps, restarts=restarts, seed=seed)
    dres = defense_big.defend(xps, eps_of[big])
    with torch.no_grad():
        s_x, s_xp, s_w = oracle.score(xs), oracle.score(xps), oracle.score(dres.witness)
    f_x, f_xp, f_w = cert_big.predict(xs), cert_big.predict(xps), cert_big.predict(dres.witness)
    fig, axes = plt.subplots(len(pick), 3, figsize=(6, 2.1 * len(pick)), squeeze=False)
    for i in range(len(pick)):
        panels = [(xs[i], f"x: f = {f_x[i].item()}, s = {s_x[i].item():.2f}"),
                  (xps[i], f"x′: f = {f_xp[i].item()}, plain: ⊥"),
                  (dres.witness[i], (f"witness: f = {f_w[i].item()}, s = {s_w[i].item():.2f}\n"
                                     f"‖w − x′‖₂ = {torch.linalg.vector_norm(dres.witness[i] - xps[i]).item():.2f}")
                   if dres.found[i] else "no witness this time")]
        for ax, (img, title) in zip(axes[i], panels):
            ax.imshow(img[0].cpu(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()

# %% [markdown]
# ### A stricter oracle
#
# The oracle's threshold is the knob: calibrated to flag more digits, it accepts a thinner set
# around $M$, and -- if the oracle's tolerance were what lets the search find witnesses -- fewer
# differently-labelled inputs would remain for it near a degradation input. On the first {glue:text}`num_sensitivity` test points of
# {glue:text}`big`, the same run (without the adaptive attack) with $\tau$ recalibrated on the
# same calibration images at higher false-alarm rates; the first row is the stored run at the
# committed threshold, restricted to the same points.

# %%
sens = {ometa["false_alarm_target"]: results[big]}
for fa in sensitivity_false_alarms:
    path = RESULTS_DIR / f"{big}_n{num_sensitivity}_fa{fa:g}.npz"
    if recompute or not path.is_file():
        sens[fa] = run_stored(big, num_sensitivity, eps_of[big], oracle=oracle_name, false_alarm=fa, device=dev,
                              adaptive=False, **{k: v for k, v in settings.items() if not k.startswith("adaptive")})
    else:
        sens[fa] = dl.PointResults.load(path)

# %% tags=["remove-input"]
sens_rows = []
for fa, res in sens.items():
    keep = res["index"] < num_sensitivity
    sub = dl.PointResults({k: v[keep] for k, v in res.columns.items()}, res.meta)
    tau_fa = sub.meta["oracle_threshold"]
    y_, cert_ = sub["label"], sub["certified"]
    R_ = (cert_ == y_) & (cert_ != ABSTAIN)
    adv_ = (sub["pred"] == y_) & (sub["adv_pred"] != y_)
    sens_rows.append({"false-alarm rate α": f"{fa:.0%}", "threshold τ": f"{tau_fa:.2f}",
                      "test digits flagged": pct(dl.rate(s_test > tau_fa)),
                      "FPR plain (strongest)": pct(dl.rate(sub["alg31_rejection"] == ABSTAIN, R_)),
                      "FPR accept (strongest)": pct(dl.rate(sub["alg31_rejection_def"] == ABSTAIN, R_)),
                      "ε-PGD adv. examples rejected (accept)": pct(dl.rate(sub["adv_def"] == ABSTAIN, adv_)),
                      "clean rejected (accept)": pct(dl.rate(sub["clean_def"] == ABSTAIN))})
glue("sens_table", pd.DataFrame(sens_rows).set_index("false-alarm rate α"), display=False)
glue("sens_summary", "; ".join(f"{r['FPR accept (strongest)']} at α = {r['false-alarm rate α']} "
                               f"(digits flagged: {r['test digits flagged']})" for r in sens_rows), display=False)
glue("num_sensitivity", num_sensitivity, display=False)

# %% [markdown]
# ```{glue:figure} sens_table
# :name: tab-oracle-threshold
#
# The oracle defense (accept policy) on {glue:text}`big` with thresholds calibrated at higher
# false-alarm rates, on the first {glue:text}`num_sensitivity` test points (95 % Clopper–Pearson
# intervals). "Test digits flagged": the oracle's false alarms on the 10,000 MNIST test images.
# ```
#
# The accept policy's false-positive rate under the strongest attack, by threshold:
# {glue:text}`sens_summary`.

# %% [markdown]
# ## What this shows
#
# On {glue:text}`small` the oracle defense does what Section 4.2 promises: the strongest
# degradation attack's false-positive rate goes from {glue:text}`fpr_plain_small:.1%` to
# {glue:text}`fpr_acc_small:.1%`, {glue:text}`adv_rej_small:.0%` of the real adversarial examples
# are rejected with a witness, and the adaptive attack gets through at
# {glue:text}`adapt_small:.1%` of the points it tries. On
# {glue:text}`big` it removes only part of the false positives, and the reason is not the
# oracle's tolerance -- tightening the threshold until it flags a quarter of the real digits
# barely moves the rate -- but what the search finds: within $\epsilon =$ {glue:text}`big_eps`
# of most successful degradation inputs there is an input that the autoencoder reconstructs as
# well as a test digit and that the model labels differently, often a near-copy of the clean
# digit itself (the figure above). By the definition the defense implements, such a witness makes
# $x'$ an adversarial example, so *under this oracle's $M$* these rejections are not false
# positives at all: the model is simply not robust at valid-looking inputs within $2\epsilon$ of
# the certified point. Section 3.3 counts them as false positives because it judges $x'$
# against the one valid input $x$ it came from; the 10× target made the same assumption, that
# no other valid input with another label lies within $\epsilon$ of $x'$. Telling the two readings apart needs an oracle that draws $M$ far more tightly
# than a reconstruction error -- one that would call the witnesses above invalid, or the model's
# label for them wrong.
#
# Two caveats hold throughout. The accept policy is only as good as its search: a witness
# missed within the budget is an adversarial example accepted. The adaptive attack, which replays
# the search, got through at {glue:text}`adapt_big:.1%` of the points of {glue:text}`big` (upper
# 95 % bound {glue:text}`adapt_big_hi:.1%`): $x$ itself and many near-copies of it stay within
# reach of the search from any $x'$ in its ball, but a stronger adversary -- one that optimises
# through the search, or spends more candidates -- may do better; a low measured rate is not a
# proof. And the oracle is a learned model: an adversary could attack it too (we generated
# non-digits it accepts, e.g. "{glue:text}`weakest_kind`"). With the *reject* policy none of this
# matters: it is the plain defense, with witnesses for the rejections it can explain.
