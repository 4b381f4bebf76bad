"""Checkers for the exercises of the chapter "Label smoothing and distillation"
(book/label_smoothing.ipynb).

``check_teacher_smoothed_targets`` checks exercise ``ex-ls-teacher-targets``: the target
``alpha * e_y + (1 - alpha) * softmax(teacher_logits)`` whose cross-entropy with the
student is the distillation loss at T = 1 up to a constant. Each case isolates one part
of the answer, and known wrong answers are recognised so that the feedback can name the
mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.exercises import check_function

EXERCISE = "ex-ls-teacher-targets"


def _onehot(labels, teacher_logits):
    return F.one_hot(labels, teacher_logits.shape[1]).to(teacher_logits.dtype)


def reference_teacher_smoothed_targets(labels, teacher_logits, alpha):
    """``alpha * onehot(labels) + (1 - alpha) * softmax(teacher_logits, dim=1)``."""
    return alpha * _onehot(labels, teacher_logits) + (1 - alpha) * F.softmax(teacher_logits, dim=1)


# Known wrong answers: (what the answer did, a function that does it). The descriptions
# complete the sentence "Your result is what you get when ...".
MISTAKES = [
    ("alpha weights the teacher instead of the label",
     lambda labels, teacher_logits, alpha: reference_teacher_smoothed_targets(
         labels, teacher_logits, 1 - alpha)),
    ("the softmax is taken along dim=0 (over the batch) instead of dim=1 (over the classes)",
     lambda labels, teacher_logits, alpha: alpha * _onehot(labels, teacher_logits)
     + (1 - alpha) * F.softmax(teacher_logits, dim=0)),
    ("the teacher's logits are used as they are, without a softmax",
     lambda labels, teacher_logits, alpha: alpha * _onehot(labels, teacher_logits)
     + (1 - alpha) * teacher_logits),
    ("the uniform distribution 1/n is used instead of the teacher (that is label smoothing)",
     lambda labels, teacher_logits, alpha: alpha * _onehot(labels, teacher_logits)
     + (1 - alpha) / teacher_logits.shape[1]),
    ("the label enters as its class index times alpha, not as a one-hot vector",
     lambda labels, teacher_logits, alpha: alpha * labels[:, None].to(teacher_logits.dtype)
     + (1 - alpha) * F.softmax(teacher_logits, dim=1)),
    ("the teacher's logits are divided by a temperature (this exercise is at T = 1)",
     lambda labels, teacher_logits, alpha: alpha * _onehot(labels, teacher_logits)
     + (1 - alpha) * F.softmax(teacher_logits / 4, dim=1)),
]


def _batch(B, n, seed, dtype=torch.float64, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    teacher_logits = scale * torch.randn(B, n, generator=generator, dtype=dtype)
    labels = torch.randint(0, n, (B,), generator=generator)
    return dict(labels=labels, teacher_logits=teacher_logits)


def cases():
    """The checker's cases, ``(name, hint, arguments)``, each isolating one part of the answer."""
    return [
        ("label only: alpha = 1",
         "With alpha = 1 the target is the one-hot label: F.one_hot(labels, n), "
         "in the teacher logits' dtype.",
         dict(**_batch(3, 4, 0), alpha=1.0)),
        ("teacher only: alpha = 0",
         "With alpha = 0 the target is the teacher's distribution at T = 1: "
         "F.softmax(teacher_logits, dim=1), each row summing to 1 over the classes.",
         dict(**_batch(5, 4, 1), alpha=0.0)),
        ("all-equal teacher logits: label smoothing",
         "A teacher whose logits are all equal gives the uniform distribution, so the "
         "target must be label smoothing's (1 - eps) e_y + eps / n with eps = 1 - alpha.",
         dict(labels=torch.tensor([0, 2, 1]), teacher_logits=torch.zeros(3, 3, dtype=torch.float64),
              alpha=0.7)),
        ("both: alpha = 0.3",
         "alpha weights the label and 1 - alpha the teacher: "
         "alpha * onehot + (1 - alpha) * softmax(teacher_logits, dim=1).",
         dict(**_batch(4, 6, 2), alpha=0.3)),
        ("large logits, n = 10, float32",
         "Use F.softmax (it subtracts the largest logit): exp of a logit of size 100 "
         "overflows in float32. Take n from the logits' shape and keep their dtype.",
         dict(**_batch(2, 10, 3, torch.float32, scale=100.0), alpha=0.5)),
    ]


def check_teacher_smoothed_targets(teacher_smoothed_targets) -> str:
    """Checks ``teacher_smoothed_targets(labels, teacher_logits, alpha)`` of exercise
    ``ex-ls-teacher-targets``; raises :class:`kdbook.exercises.ExerciseFailure` with
    specific feedback on the first case it gets wrong."""
    names, hints, arguments = zip(*cases())
    return check_function(EXERCISE, teacher_smoothed_targets, reference_teacher_smoothed_targets,
                          arguments, hints=hints, names=names, mistakes=MISTAKES,
                          rtol=1e-5, atol=1e-7)
