"""degradation_lib: the library behind the executable edition of
"Degradation Attacks on Certifiably Robust Neural Networks".

Public API (re-exported here):

* :data:`ABSTAIN`, :class:`Certifier`, :func:`predict_with_defense` (Algorithm 2.1);
* :func:`load_model` for the committed trained models, :func:`available_models`;
* :func:`load_mnist`, :func:`load_cifar10`;
* :class:`LinearCertifier`, the exact certifier for linear classifiers;
* :func:`project` (Algorithm 3.1's projection) and the attacks;
* metrics with Clopper–Pearson intervals, per-point results that merge across shards;
* :func:`gloro_net_from_keras`, :func:`convert_authors_model`: the paper authors' Keras GloRo nets
  as our GloroNets (``degradation_lib.convert``).
"""

from .certifier import ABSTAIN, Certifier, check_eps, check_input, check_norm, predict_with_defense, resolve_device
from .data import load_cifar10, load_mnist
from .exact import LinearCertifier
from .gloro import (ARCHITECTURES, GloroCertifier, GloroNet, LipschitzConv2d, LipschitzLinear, MinMax,
                    certified_radius_from_logits, gloro_logits, gloro_loss, minmax)
from .attacks import (default_attack, degradation_attack, eps_pgd, evaluate_degradation, foolbox_attack,
                      multitarget_pgd, pgd, pgd_ascent, project, rejection_pgd)
from .smoothing import SmoothedClassifier
from .spgd import SPGD, spgd_degradation_attack
from .linf import LinfCertifier, compute_bounds, input_box, interval_bounds, margin_spec, mnist_small_net
from .metrics import Rate, bounds_from_results, clopper_pearson, degradation_report, rate, upper_bound, upper_bound_curve
from .registry import available_models, load_model, model_metadata
from .results import PointResults, merge
from . import published

_LAZY = {"convert_authors_model": "convert", "gloro_net_from_keras": "convert", "read_keras_h5": "convert"}


def __getattr__(name):  # lazy: `python -m degradation_lib.convert` must not find it imported already
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"
