"""degradation_lib: the library behind the executable edition of
"Degradation Attacks on Certifiably Robust Neural Networks".

Public API (re-exported here):

* :data:`ABSTAIN`, :class:`Certifier`, :func:`predict_with_defense` (Algorithm 2.1);
* :func:`load_model` for the committed trained models, :func:`available_models`;
* :func:`load_mnist`, :func:`load_cifar10`;
* :class:`LinearCertifier`, the exact certifier for linear classifiers;
* :func:`project` (Algorithm 3.1's projection) and the attacks, :func:`certificate_attack`;
* metrics with Clopper–Pearson intervals, per-point results that merge across shards.
"""

from .certifier import ABSTAIN, Certifier, check_eps, check_input, check_norm, predict_with_defense, resolve_device
from .data import load_cifar10, load_mnist
from .exact import LinearCertifier
from .gloro import (ARCHITECTURES, GloroCertifier, GloroNet, LipschitzConv2d, LipschitzLinear, MinMax,
                    certified_radius_from_logits, gloro_logits, gloro_loss, minmax)
from .attacks import (certificate_attack, default_attack, degradation_attack, eps_pgd, evaluate_degradation, foolbox_attack,
                      multitarget_pgd, pgd, pgd_ascent, project, rejection_pgd)
from .smoothing import SmoothedClassifier
from .spgd import SPGD, spgd_degradation_attack
from .linf import LinfCertifier, compute_bounds, input_box, interval_bounds, margin_spec, mnist_small_net
from .metrics import Rate, clopper_pearson, degradation_report, rate, upper_bound
from .registry import available_models, load_model, model_metadata
from .results import PointResults, merge
from . import published

__version__ = "0.1.0"
