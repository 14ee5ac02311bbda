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
# (09-radius-doubling)=
# # Radius doubling: training and validating at 2ε (Section 4.1)
#
# Section 4.1 of the paper {cite}`degradation2022` proposes the first defense against
# degradation attacks: train (and validate) a certifiably robust model at *twice* the radius the
# adversary is allowed. A point certified at $2\epsilon$ stays certifiable at $\epsilon$ everywhere
# in its $\epsilon$-ball, so it cannot be degraded; the price is accuracy, since a model robust at
# $2\epsilon$ is harder to train. The paper evaluates the defense with the upper bounds of
# Figure 2 ({ref}`08-upper-bounds`). This page sets the models trained at $\epsilon$ and at
# $2\epsilon$ side by side at the adversary's $\epsilon$ -- VRA at $\epsilon$ and at $2\epsilon$,
# the lower bound (the best degradation attacks found) and the upper bound on the false-positive
# rate, all with 95 % intervals -- for our GloRo nets {cite}`leino2021globally`, the authors' own
# models and the authors' published radii, then does the same for the noise level $\sigma$ of
# randomized smoothing {cite}`cohen2019certified`.

# %% tags=["parameters"]
alpha: float = 0.05  # the intervals are (1 − alpha) Clopper–Pearson
seed: int = 0  # seed of the stored attack runs this page reads (the results store keys runs by seed)
device: str = "auto"  # unused: every number is read from stored or published per-point results

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

import degradation_lib as dl
from degradation_lib import bounds_from_results, published, upper_bound_curve
from degradation_lib.paper import TABLE1_GLORO, UPPER_BOUNDS_GLORO, UPPER_BOUNDS_SMOOTHING_CIFAR10

# %% [markdown]
# ## The pairs
#
# Each setting of the paper has a model trained at $\epsilon$ and one trained at $2\epsilon$, both
# evaluated at the adversary's $\epsilon$. Three sources:
#
# * **our models** (`load_model`): certified radii from the results store's `radii` runs on the
#   10,000 MNIST test images; lower bounds from its attack runs (Algorithm 3.1 with both
#   projections, $\epsilon$-PGD and the library's rejection attack; see {ref}`07-lower-bounds`),
#   run at the adversary's $\epsilon$ for both models of a pair;
# * **the authors' models**: their two MNIST $\epsilon = 0.3$ GloRo nets, converted to this library;
# * **the authors' radii**: the per-point radii they published (no attack runs exist for those).

# %%
SETTINGS = {"mnist_0.3": 0.3, "mnist_1.58": 1.58, "cifar10_0.141": 36 / 255}
PAIRS = [  # (setting, source, model trained at ε, model trained at 2ε)
    ("mnist_0.3", "our models", "mnist_0.3", "mnist_0.3_2eps"),
    ("mnist_0.3", "authors' models", "mnist_0.3_authors", "mnist_0.3_2eps_authors"),
    ("mnist_0.3", "authors' radii", "mnist_0.3_N", "mnist_0.3_Y"),
    ("mnist_1.58", "our models", "mnist_1.58", "mnist_1.58_2eps"),
    ("mnist_1.58", "authors' radii", "mnist_1.58_N", "mnist_1.58_Y"),
    ("cifar10_0.141", "authors' radii", "cifar10_0.14_N", "cifar10_0.14_Y"),
]
stored = set(dl.available_results())
ATTACK_RUNS = ("table1", "table3", "rejection")


def stored_run(experiment: str, model: str, eps: float):
    """The stored attack run of ``experiment`` on ``model`` at the adversary's ``eps`` and this page's
    seed (the store names a run at a non-default ε with the tag ``eps<ε>``), or None."""
    for name in (f"{experiment}-{model}", f"{experiment}-{model}-eps{eps:g}"):
        if name in stored:
            res = dl.load_results(name)
            if res.meta.get("seed") == seed and res.meta.get("eps") is not None and np.isclose(res.meta["eps"], eps):
                return res
    return None


def row_for(setting: str, source: str, model: str, trained: str) -> dict | None:
    """VRA, upper bound and lower bounds of one model at the setting's ε, or None when nothing is stored."""
    eps = SETTINGS[setting]
    if source == "authors' radii":
        d = published.gloro_radii(model)
        radius, correct, strict, points = d["radius"], d["correct"], False, len(d["radius"])
    else:
        if f"radii-{model}" not in stored:
            return None
        res = dl.load_results(f"radii-{model}")   # the radius does not depend on ε: one run serves all ε
        radius, correct, strict, points = res["radius"], res["cert_label"] == res["label"], True, len(res)
    cv = upper_bound_curve(radius, correct, eps, strict=strict, alpha=alpha)
    row = dict(setting=setting, ε=eps, source=source, model=model, trained=trained, points=points,
               vra=dl.Rate(int(cv["n_eps"][0]), points, alpha), vra_2eps=dl.Rate(int(cv["n_2eps"][0]), points, alpha),
               upper_bound=dl.Rate(int(cv["n_lost"][0]), int(cv["n_eps"][0]), alpha), alg31=None, best=None,
               attack_points=0)
    if source != "authors' radii":
        runs = [r for r in (stored_run(e, model, eps) for e in ATTACK_RUNS) if r is not None]
        if runs:
            index = runs[0]["index"]
            for r in runs[1:]:
                index = np.intersect1d(index, r["index"])
            cols = {}
            for r in runs:
                sel = r.select(index)
                for k in ("label", "cert_label", "certified", "certified_2eps"):
                    cols.setdefault(k, sel[k])
                cols.update({k: sel[k] for k in sel.columns if k.startswith("rejected_")})
            b = bounds_from_results(cols, alpha)
            row.update(alg31=b["fpr"].get("alg31"), best=b["fpr"].get("best"), attack_points=len(index),
                       attacks=", ".join(a for a in b["fpr"] if a != "best"))
            assert b["beyond_bound"].get("best", 0) == 0   # GloRo is monotone: nothing certified at 2ε is degraded
    return row


rows, missing = [], []
for setting, source, m_eps, m_2eps in PAIRS:
    for model, trained in ((m_eps, "ε"), (m_2eps, "2ε")):
        r = row_for(setting, source, model, trained)
        (rows.append(r) if r is not None else missing.append(model))
glue("missing_models", ", ".join(missing) if missing else "none", display=False)

# %% tags=["remove-input"]
def fmt(rate, digits=1):
    return "—" if rate is None else f"{rate.value:.{digits}%} [{rate.lo:.{digits}%}, {rate.hi:.{digits}%}]"


table = pd.DataFrame([{"setting": r["setting"], "source": r["source"], "trained at": r["trained"], "model": r["model"],
                       "VRA at ε": fmt(r["vra"]), "VRA at 2ε": fmt(r["vra_2eps"]),
                       "FPR, Algorithm 3.1": fmt(r["alg31"]), "FPR, best attack": fmt(r["best"]),
                       "FPR upper bound": fmt(r["upper_bound"]),
                       "attacked points": r["attack_points"] or "—"} for r in rows])
display(table.set_index(["setting", "source", "trained at"]))

# %% [markdown]
# Models the store holds no runs for yet: {glue:text}`missing_models`. The intervals are exact
# 95 % Clopper–Pearson intervals: for the VRAs over the test points, for the false-positive rates
# over test_R (the correct points certified at $\epsilon$).

# %% tags=["remove-input"]
sentences = []
by = {(r["setting"], r["source"], r["trained"]): r for r in rows}
for setting, source, m_eps, m_2eps in PAIRS:
    a, b = by.get((setting, source, "ε")), by.get((setting, source, "2ε"))
    if a is None or b is None:
        continue
    s = (f"{setting}, {source}: training at 2ε moves the upper bound at ε = {SETTINGS[setting]:.3g} from "
         f"{a['upper_bound'].value:.3f} to {b['upper_bound'].value:.3f}, the VRA at ε from {a['vra'].value:.1%} to "
         f"{b['vra'].value:.1%} and the VRA at 2ε from {a['vra_2eps'].value:.1%} to {b['vra_2eps'].value:.1%}")
    if a["best"] is not None and b["best"] is not None:
        s += (f"; the best attack's false-positive rate goes from {a['best'].value:.1%} to {b['best'].value:.1%}"
              f" ({'intervals overlap' if a['best'].lo <= b['best'].hi and b['best'].lo <= a['best'].hi else 'intervals disjoint'})")
    sentences.append("- " + s + ".")
glue("pair_sentences", "\n".join(sentences), display=False)
display(Markdown("\n".join(sentences)))

# %% tags=["hide-input"]
BUDGET_KEYS = ("arch", "batch_size", "lr", "lr_end", "ramp_fraction", "eps_start_fraction", "power_steps",
               "eps_schedule", "lr_schedule", "refresh_iterates")


def training_budget(model: str) -> tuple:
    """The training budget and schedule of one of our models, stage by stage, from its json: epochs
    and the keys above (not ε, nor TRADES λ, which the recipes set per ε)."""
    t = dl.model_metadata(model)["training"]
    stages = [*t.get("stages", []), t]
    return tuple((s.get("epochs_completed", s.get("epochs")),) + tuple(s.get(k) for k in BUDGET_KEYS) for s in stages)


EQUAL_BUDGET = {(setting, source): training_budget(a) == training_budget(b)   # the authors' pairs: 500 epochs each
                for setting, source, a, b in PAIRS if source == "our models"}
better, worse = [], []
for setting, source, m_eps, m_2eps in PAIRS:
    a, b = by.get((setting, source, "ε")), by.get((setting, source, "2ε"))
    if a is None or b is None:
        continue
    ok = b["upper_bound"].value < a["upper_bound"].value and b["vra_2eps"].value > a["vra_2eps"].value
    (better if ok else worse).append(f"{setting} ({source})")
    if EQUAL_BUDGET.get((setting, source), True):   # the authors' pairs: 500 epochs each
        assert ok, (setting, source)
glue("pairs_better", ", ".join(better) if better else "none", display=False)
glue("pairs_worse", ", ".join(worse) if worse else "none", display=False)
glue("pairs_equal_budget", ", ".join(f"{setting} ({source})" for setting, source, _, _ in PAIRS
                                     if EQUAL_BUDGET.get((setting, source), True)), display=False)

# %% [markdown]
# The model trained at $2\epsilon$ has both the lower upper bound and the higher VRA at $2\epsilon$
# for: {glue:text}`pairs_better`; not for: {glue:text}`pairs_worse`. Where the twins were trained
# with equal budgets ({glue:text}`pairs_equal_budget`; see below) the cell above asserts
# it: far fewer correct points sit in the band $\epsilon < r \le 2\epsilon$ that a degradation
# attack can exploit. Whether the defense costs VRA at $\epsilon$ depends on the pair (the sentences
# above); the paper reports no significant loss of VRA for its models.

# %% [markdown]
# ### Equal training budgets
#
# A fair comparison trains both models of a pair with the same recipe and budget. The recipes and
# wall-clock times below are read from the models' json files (the authors' models: 500 epochs
# each, as their README states).

# %% tags=["remove-input"]
def budget(model: str) -> dict:
    t = dl.model_metadata(model).get("training", {})
    epochs = t.get("total_epochs", t.get("epochs_completed", t.get("epochs")))
    wall = t.get("total_wall_time_s", t.get("wall_time_s"))
    return {"model": model, "epochs": epochs if epochs is not None else "—",
            "batch": t.get("batch_size", "—"), "TRADES λ": t.get("lam", "—"),
            "ε_train": t.get("train_eps", "—"), "minutes (2-core CPU)": "—" if wall is None else f"{wall / 60:.0f}",
            "schedule": t.get("schedule", t.get("source", "—"))}


ours_models = [m for _, src, a, b in PAIRS if src == "our models" for m in (a, b)]
display(pd.DataFrame([budget(m) for m in ours_models]).set_index("model"))
t158 = dl.model_metadata("mnist_1.58")["training"]
min_per_epoch = t158.get("total_wall_time_s", t158["wall_time_s"]) / 60 / budget("mnist_1.58")["epochs"]
glue("min_per_epoch", min_per_epoch, display=False)

# %% tags=["remove-input"]
def budget_sentence(setting: str, a: str, b: str) -> str:
    ea, eb = budget(a)["epochs"], budget(b)["epochs"]
    if EQUAL_BUDGET[(setting, "our models")]:
        la, lb = budget(a)["TRADES λ"], budget(b)["TRADES λ"]
        differ = "only ε differs" if la == lb else f"only ε and TRADES λ differ: {la} and {lb}"
        return (f"The {setting} pair has equal budgets: `{a}` and `{b}` were both trained for {ea} epochs "
                f"with the same schedules, stage by stage ({differ}).")
    return (f"The {setting} pair does not have equal budgets: `{a}` had {ea} epochs, `{b}` {eb} with "
            "another recipe, so the comparison of these two favours one of them; the authors' radii "
            "for the same setting (500 epochs each) make the fair comparison.")


budget_text = " ".join(budget_sentence(setting, a, b) for setting, source, a, b in PAIRS if source == "our models")
glue("budget_sentences", budget_text, display=False)
display(Markdown(budget_text))

# %% [markdown]
# The table and the sentences above are read from the models' json files; the assertion of the
# defense (lower upper bound and higher VRA at $2\epsilon$ for the model trained at $2\epsilon$)
# is made for every pair whose budgets are equal. One of our 4C3F epochs takes
# {glue:text}`min_per_epoch:.1f` minutes of this 2-core CPU.

# %% [markdown]
# ## Randomized smoothing: the noise level $\sigma$
#
# For a smoothed classifier the knob is the noise level $\sigma$: a larger $\sigma$ certifies
# larger radii (the cap grows like $\sigma$), so fewer points lie in the band
# $\epsilon < r \le 2\epsilon$, at the price of accuracy. The paper shows it with Cohen et al.'s
# CIFAR-10 models at $\epsilon = 0.25$ (Figure 3); our MNIST models at $\epsilon = 0.5$ (the radius
# of the book's Table 2 runs) add lower bounds from SPGD (Algorithm 3.2).

# %%
SIGMAS = (0.25, 0.5, 1.0)
smooth_rows = []
for sigma in SIGMAS:
    d = published.rs_log("cifar10", sigma)
    cv = upper_bound_curve(d["radius"], d["correct"], 0.25, strict=False, alpha=alpha)
    smooth_rows.append(dict(dataset="CIFAR-10 (Cohen et al.'s log)", σ=sigma, ε=0.25, points=len(d["radius"]),
                            vra=dl.Rate(int(cv["n_eps"][0]), len(d["radius"]), alpha),
                            vra_2eps=dl.Rate(int(cv["n_2eps"][0]), len(d["radius"]), alpha),
                            upper_bound=dl.Rate(int(cv["n_lost"][0]), int(cv["n_eps"][0]), alpha), spgd=None,
                            spgd_source="—"))
    assert round(smooth_rows[-1]["upper_bound"].value, 3) == UPPER_BOUNDS_SMOOTHING_CIFAR10[sigma]
for sigma in SIGMAS:
    model = f"mnist_smooth_{sigma}"
    if f"radii-{model}" not in stored:
        continue
    res = dl.load_results(f"radii-{model}")
    eps = 0.5
    cv = upper_bound_curve(res["radius"], res["cert_label"] == res["label"], eps, strict=True, alpha=alpha)
    row = dict(dataset="MNIST (our model)", σ=sigma, ε=eps, points=len(res),
               vra=dl.Rate(int(cv["n_eps"][0]), len(res), alpha), vra_2eps=dl.Rate(int(cv["n_2eps"][0]), len(res), alpha),
               upper_bound=dl.Rate(int(cv["n_lost"][0]), int(cv["n_eps"][0]), alpha), spgd=None, spgd_source="—")
    run = stored_run("table2", model, eps)
    if run is not None:
        b = bounds_from_results(run, alpha)
        row.update(spgd=b["fpr"]["spgd"], spgd_source=f"store: table2-{model} ({len(run)} points)")
    else:   # the notebook-03 run recorded in the model's json (n = 100,000, the authors' SPGD settings)
        j = dl.model_metadata(model)["metrics"].get("spgd_degradation")
        if j is not None and np.isclose(j["eps"], eps):
            f = j["by_averaging"]["logits"]["false_positive_rate"]
            row.update(spgd=dl.Rate(f["k"], f["n"], alpha), spgd_source=f"model json ({j['num_images']} points, notebook 03)")
    smooth_rows.append(row)

# %% tags=["remove-input"]
display(pd.DataFrame([{"": r["dataset"], "σ": r["σ"], "ε": r["ε"], "points": r["points"], "VRA at ε": fmt(r["vra"]),
                       "VRA at 2ε": fmt(r["vra_2eps"]), "FPR, SPGD": fmt(r["spgd"]),
                       "FPR upper bound": fmt(r["upper_bound"]), "SPGD run": r["spgd_source"]}
                      for r in smooth_rows]).set_index(["", "σ"]))
c10 = [r for r in smooth_rows if r["dataset"].startswith("CIFAR")]
glue("c10_ub_lo_sigma", c10[-1]["upper_bound"].value, display=False)
glue("c10_ub_hi_sigma", c10[0]["upper_bound"].value, display=False)
glue("c10_vra_lo_sigma", c10[0]["vra"].value, display=False)
glue("c10_vra_hi_sigma", c10[-1]["vra"].value, display=False)

# %% [markdown]
# On CIFAR-10, going from $\sigma = 0.25$ to $\sigma = 1.0$ lowers the upper bound at
# $\epsilon = 0.25$ from {glue:text}`c10_ub_hi_sigma:.3f` to {glue:text}`c10_ub_lo_sigma:.3f`, and
# the VRA from {glue:text}`c10_vra_lo_sigma:.1%` to {glue:text}`c10_vra_hi_sigma:.1%`: the same
# trade-off as radius doubling, with $\sigma$ as the knob.
#
# ## The trade-off, all models
#
# Each model is a point: its VRA at the adversary's $\epsilon$ against its false-positive rate --
# the upper bound (filled) and, where attack runs exist, the best attack found (open, joined to
# its upper bound). Arrows go from the model trained at $\epsilon$ to its twin trained at
# $2\epsilon$; for smoothing they go from $\sigma = 0.25$ up to $\sigma = 1.0$. Up and to the left
# is better.

# %% mystnb={"figure": {"caption": "VRA at the adversary's \u03b5 against the false-positive rate of degradation attacks, for every model of this page: filled markers, the upper bound (Section 3.3.2); open markers, the best attack found (lower bound). Arrows: from the model trained at \u03b5 to the one trained at 2\u03b5 (GloRo), from \u03c3 = 0.25 to \u03c3 = 1.0 (smoothing). Error bars: 95 % Clopper\u2013Pearson intervals.", "name": "fig-radius-doubling-tradeoff"}}
STYLE = {("mnist_0.3", "our models"): ("tab:blue", "o"), ("mnist_0.3", "authors' models"): ("tab:cyan", "D"),
         ("mnist_0.3", "authors' radii"): ("navy", "s"), ("mnist_1.58", "our models"): ("tab:red", "o"),
         ("mnist_1.58", "authors' radii"): ("darkred", "s"), ("cifar10_0.141", "authors' radii"): ("tab:green", "s")}
fig, ax = plt.subplots(figsize=(8, 5.5))


def point(r, color, marker, label=None):
    ub, v = r["upper_bound"], r["vra"]
    ax.errorbar([ub.value], [v.value], xerr=[[ub.value - ub.lo], [ub.hi - ub.value]],
                yerr=[[v.value - v.lo], [v.hi - v.value]], fmt=marker, color=color, ms=7, label=label, capsize=2)
    lower = r.get("best") if r.get("best") is not None else r.get("spgd")
    if lower is not None:
        ax.plot([lower.value, ub.value], [v.value, v.value], ":", color=color, lw=1)
        ax.plot([lower.value], [v.value], marker, mfc="none", color=color, ms=7)


for (setting, source), (color, marker) in STYLE.items():
    a, b = by.get((setting, source, "ε")), by.get((setting, source, "2ε"))
    if a is None or b is None:
        continue
    point(a, color, marker, f"{setting}, {source}")
    point(b, color, marker)
    ax.annotate("", xy=(b["upper_bound"].value, b["vra"].value), xytext=(a["upper_bound"].value, a["vra"].value),
                arrowprops=dict(arrowstyle="->", color=color, lw=1.2))
for dataset, color, marker in (("CIFAR-10 (Cohen et al.'s log)", "tab:olive", "^"), ("MNIST (our model)", "tab:purple", "v")):
    rs = [r for r in smooth_rows if r["dataset"] == dataset]
    for i, r in enumerate(rs):
        point(r, color, marker, f"smoothing, {dataset}, ε = {r['ε']}" if i == 0 else None)
        ax.annotate(f"σ={r['σ']}", (r["upper_bound"].value, r["vra"].value), textcoords="offset points",
                    xytext=(5, -10), fontsize=7, color=color)
    for r0, r1 in zip(rs, rs[1:]):
        ax.annotate("", xy=(r1["upper_bound"].value, r1["vra"].value), xytext=(r0["upper_bound"].value, r0["vra"].value),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1, ls="--"))
ax.set_xlabel("false-positive rate of degradation attacks at ε (fraction of test_R)")
ax.set_ylabel("VRA at ε (fraction of test points)")
ax.set_xlim(-0.02, 1.02)
ax.set_ylim(0, 1.0)
ax.legend(fontsize=7, loc="lower left")
fig.tight_layout()
plt.show()
