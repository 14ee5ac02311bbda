"""The paper's published numbers, in one place, for paper-versus-ours tables.

Fractions in [0, 1] (not percent). Sources: Table 1 and Appendix C of the paper, the claims its
text makes about Tables 2 and 3 (whose numbers this project's copy lacks), the upper bounds
computed from the authors' released per-point radii, and the certifiers' own papers
(GloRo: Leino et al. 2021; randomized smoothing: Cohen et al. 2019). See ``shared/REFERENCE.md``.
"""

TABLE1_GLORO = {
    # name: dict(eps, arch, baseline VRA, false positive rate, utility reduction)
    "mnist_0.3": dict(dataset="MNIST", eps=0.3, arch="2C2F", vra=0.950, fpr=0.060, utility_reduction=0.057),
    "mnist_1.58": dict(dataset="MNIST", eps=1.58, arch="4C3F", vra=0.618, fpr=0.561, utility_reduction=0.347),
    "cifar10_0.141": dict(dataset="CIFAR-10", eps=0.141, arch="6C2F", vra=0.600, fpr=0.114, utility_reduction=0.066),
}
"""Table 1: Algorithm 3.1 against GloRo nets trained and evaluated at ε."""

GLORO_PUBLISHED_VRA = {"mnist_0.3": 0.957, "mnist_1.58": 0.628, "cifar10_0.141": 0.600}
"""VRA reported by Leino et al. (2021) for the same configurations."""

UPPER_BOUNDS_GLORO = {
    # model: (trained at ε, trained at 2ε): 1 − P[r ≥ 2ε]/P[r ≥ ε]
    "mnist_0.3": (0.295, 0.061),
    "mnist_1.58": (0.997, 0.843),
    "cifar10_0.141": (0.286, 0.151),
}
"""Upper bounds on the false-positive rate from the authors' released per-point radii."""

UPPER_BOUNDS_SMOOTHING_CIFAR10 = {0.25: 0.287, 0.5: 0.242, 1.0: 0.133}
"""Upper bounds at ε = 0.25 for the smoothed CIFAR-10 models, by noise level σ."""

APPENDIX_C_KW = dict(dataset="MNIST", eps=0.1, norm="linf", vra=0.989, attack_success=0.92, upper_bound=1.0)
"""Appendix C: Algorithm 3.1 against the Wong-Kolter ℓ∞ certified model."""

ATTACK_SHARE_OF_UPPER_BOUND = (0.25, 0.5)
"""The paper: its attacks recover between 1/4 and 1/2 of the upper bound."""

COHEN_CIFAR10_CERTIFIED_ACCURACY = {
    # σ: {radius: certified accuracy} (Cohen et al. 2019, CIFAR-10 ResNet-110)
    0.25: {0.25: 0.60, 0.5: 0.43},
    0.5: {0.25: 0.55, 0.5: 0.41},
    1.0: {0.25: 0.39, 0.5: 0.34},
}

# ---- Tables 2 and 3 -------------------------------------------------------------------------------
# The copy of the paper in this project (``shared/paper/degradation_attacks_paper.txt``, extracted
# from the PDF) keeps the captions of Tables 2 and 3 but lost their bodies, and neither REFERENCE.md
# nor the authors' released artefacts repeat them. What the text says about them is recorded here,
# quoted, so that pages can check our numbers against the claims instead of against typed-in values.

TABLE2_CLAIMS = dict(
    datasets=("CIFAR-10", "ImageNet"),
    points=100,
    fpr_falls_with_sigma=True,
    cifar10_fpr_at_least=0.5,
    quotes=(
        "results are obtained on a sample of 100 arbitrary test points, as Randomized Smoothing is "
        "costly to evaluate",
        "false positive rates at 50% or more on MNIST (GloRo Net) and CIFAR-10 (Randomized Smoothing)",
        "models trained with a larger noise parameter σ are less affected by false positives; however, "
        "this comes at the cost of a notable decrease in baseline utility",
    ),
)
"""Table 2 (SPGD against randomized smoothing, Section 3.3.1): the claims of the text; its numbers
are not in this project's copy of the paper. ``cifar10_fpr_at_least`` is the text's "50% or more"
for CIFAR-10 (at least one σ)."""

TABLE3_CLAIMS = dict(
    similar_to_table1=True,
    quotes=("The efficacy of an ϵ-PGD attack is similar to Algorithm 3.1 (presented in Table 1).",),
)
"""Table 3 (ε-PGD against GloRo nets, Appendix B.1): the claim of the text; its numbers are not in
this project's copy of the paper."""
