"""Companion library of *Response-Based Knowledge Distillation: an executable textbook*.

The chapters import from here what they do not teach; what a chapter teaches it
writes out in the notebook first and then compares with the tested version here.

Modules, in the order data flows through them:

- :mod:`kdbook.settings`   profiles (quick/full), device, where results and caches live
- :mod:`kdbook.losses`     the distillation losses (Hinton's, DKD, logit-standardized), soft targets, label smoothing
- :mod:`kdbook.learned_temperature`  CTKD's adversarially learned temperature (gradient reversal, curriculum)
- :mod:`kdbook.theory`     sympy objects and identities the chapters derive
- :mod:`kdbook.numerics`   float64 rounding-error bounds: the tolerances of the numeric checks
- :mod:`kdbook.synthetic`  Gaussian mixtures with known Bayes probabilities (the statistical view)
- :mod:`kdbook.calibration`  expected calibration error, reliability bins, temperature scaling
- :mod:`kdbook.data`       CIFAR-10 (torchvision or an offline ImageFolder copy), tensor loader
- :mod:`kdbook.models`     teacher and student CNNs
- :mod:`kdbook.train`      one training loop for CE, label smoothing and KD; checkpoints
- :mod:`kdbook.analysis`   ``analyze_dark_knowledge``: entropies and top-k of soft targets
- :mod:`kdbook.fidelity`   how closely a student matches its teacher (agreement, KL, copied errors)
- :mod:`kdbook.unseen_class`  the bias of a class left out of the transfer set (Hinton et al., section 3)
- :mod:`kdbook.runs`       named, seeded runs, cached by configuration (the experiment engine)
- :mod:`kdbook.experiments`  the chapters' sweeps; ``python -m kdbook.experiments CHAPTER``
- :mod:`kdbook.findings`   every empirical verdict, with its t interval, from the stored results
- :mod:`kdbook.timings`    CPU (measured) and GPU (estimated or measured) time per chapter

What the chapters use most is importable from ``kdbook`` itself (``from kdbook import
load_cifar10, StudentCNN, fit, TrainConfig``), in the spirit of d2l's single import.
"""

__version__ = "0.1.0"

from kdbook.analysis import analyze_dark_knowledge  # noqa: F401  (re-exported)
from kdbook.data import TensorLoader, load_cifar10  # noqa: F401  (re-exported)

from kdbook.losses import (  # noqa: F401  (re-exported: the public API)
    ResponseDistillationLoss,
    SoftLabelDistillationLoss,
    distillation_loss,
    dkd_loss,
    soft_distillation_loss,
    soft_targets,
    standardize_logits,
    standardized_distillation_loss,
)
from kdbook.models import StudentCNN, TeacherNet  # noqa: F401  (re-exported)
from kdbook.train import TrainConfig, evaluate, fit  # noqa: F401  (re-exported)
