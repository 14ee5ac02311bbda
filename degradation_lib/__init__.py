"""degradation_lib: the library behind the executable edition of
"Degradation Attacks on Certifiably Robust Neural Networks".

Public API (re-exported here):

* :data:`ABSTAIN`, :class:`Certifier`, :func:`predict_with_defense` (Algorithm 2.1);
* :func:`load_model` for the committed trained models, :func:`available_models`;
* :func:`load_mnist`, :func:`load_cifar10`;
* :class:`LinearCertifier`, the exact certifier for linear classifiers;
* :func:`project` (Algorithm 3.1's projection) and the attacks, :func:`certificate_attack`;
* metrics with Clopper–Pearson intervals, per-point results that merge across shards;
* the named experiments (:mod:`degradation_lib.experiments`) and their stored runs:
  :func:`available_results`, :func:`load_results`, :func:`run_shard`;
* :func:`gloro_net_from_keras`, :func:`convert_authors_model`: the paper authors' Keras GloRo nets
  as our GloroNets (``degradation_lib.convert``);
* the M-membership-oracle defense of Section 4.2 (:class:`ManifoldDefense`, ours;
  ``degradation_lib.oracle``, imported lazily).
"""

from .certifier import ABSTAIN, Certifier, check_eps, check_input, check_norm, predict_with_defense, resolve_device
from .data import load_cifar10, load_mnist
from .exact import LinearCertifier
from .gloro import (ARCHITECTURES, GloroCertifier, GloroNet, LipschitzConv2d, LipschitzLinear, MinMax,
                    certified_radius_from_logits, gloro_logits, gloro_loss, minmax)
from .attacks import (authors_gloro_attack, certificate_attack, default_attack, degradation_attack, eps_pgd,
                      evaluate_degradation, foolbox_attack, multitarget_pgd, pgd, pgd_ascent, project, rejection_pgd,
                      rescale_to_radius)
from .smoothing import SmoothedClassifier
from .spgd import SPGD, spgd_degradation_attack
from .linf import LinfCertifier, compute_bounds, input_box, interval_bounds, margin_spec, mnist_small_net
from .metrics import Rate, bounds_from_results, clopper_pearson, degradation_report, rate, upper_bound, upper_bound_curve
from .registry import available_models, load_model, model_metadata
from .results import PointResults, ResultsFileError, merge
from . import published

_LAZY = {"convert_authors_model": "convert", "gloro_net_from_keras": "convert", "read_keras_h5": "convert"}
_LAZY.update(dict.fromkeys(["AutoencoderOracle", "BallUnionOracle", "ManifoldDefense", "MembershipOracle",
                            "adaptive_attack", "calibrate_threshold", "load_oracle", "search_witness"], "oracle"))


def __getattr__(name):  # lazy: `python -m degradation_lib.convert` (or .oracle) must not find it imported already
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"


# The experiment runner is imported lazily, so that ``python -m degradation_lib.experiments``
# does not import its own module twice.
def available_results(results_dir=None) -> list[str]:
    """Names of the stored runs (see :func:`degradation_lib.experiments.available_results`)."""
    from .experiments import available_results as _f
    return _f(results_dir)


def load_results(name: str, results_dir=None) -> PointResults:
    """A stored run with its manifest; ``ValueError`` listing the stored names for an unknown one
    (see :func:`degradation_lib.experiments.load_results`)."""
    from .experiments import load_results as _f
    return _f(name, results_dir)


def run_shard(name: str, model: str, shard_i: int = 0, num_shards: int = 1, **kwargs) -> PointResults:
    """One shard of a named experiment (see :func:`degradation_lib.experiments.run_shard`)."""
    from .experiments import run_shard as _f
    return _f(name, model, shard_i, num_shards, **kwargs)
