"""Checkers for the exercises of the chapter "Hinton's formulation" (book/formulation.ipynb).

``check_kd_loss_mean`` checks exercise ``ex-formulation-reduction``: the distillation loss
with the soft term's KL reduced by ``'mean'`` (divided by ``B * n``) instead of
``'batchmean'`` (divided by ``B``). Each case isolates one part of the loss, and known
wrong answers are recognised so that the feedback can name the mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.exercises import check_function

EXERCISE = "ex-formulation-reduction"


def _log_softmax(logits, T):
    return F.log_softmax(logits / T, dim=1)


def _hard(student_logits, labels):
    return F.cross_entropy(student_logits, labels)


def _kl_sum(teacher_logits, student_logits, T):
    """KL(p_t^T || p_s^T) summed over classes and over the batch."""
    log_pt, log_ps = _log_softmax(teacher_logits, T), _log_softmax(student_logits, T)
    return (log_pt.exp() * (log_pt - log_ps)).sum()


def reference_kd_loss_mean(student_logits, teacher_logits, labels, T, alpha):
    """alpha * CE + (1 - alpha) * T^2 * KL(p_t^T || p_s^T) / (B n): the 'mean' reduction."""
    B, n = student_logits.shape
    soft = _kl_sum(teacher_logits, student_logits, T) / (B * n)
    return alpha * _hard(student_logits, labels) + (1 - alpha) * T**2 * soft


def _loss(hard, soft, T, alpha):
    return alpha * hard + (1 - alpha) * T**2 * soft


# Known wrong answers: (what the answer did, a function that does it). The descriptions
# complete the sentence "Your result is what you get when ...".
MISTAKES = [
    ("the soft term uses reduction='batchmean' (that is the correct loss; this exercise asks "
     "for the buggy 'mean', which divides by B * n)",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels), _kl_sum(teacher_logits, student_logits, T) / len(labels), T, alpha)),
    ("the soft term uses reduction='sum' (no division at all)",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels), _kl_sum(teacher_logits, student_logits, T), T, alpha)),
    ("the soft term is divided by n only, not by B * n",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels),
         _kl_sum(teacher_logits, student_logits, T) / student_logits.shape[1], T, alpha)),
    ("the soft term is not multiplied by T**2",
     lambda student_logits, teacher_logits, labels, T, alpha:
         alpha * _hard(student_logits, labels)
         + (1 - alpha) * _kl_sum(teacher_logits, student_logits, T) / student_logits.numel()),
    ("alpha weights the soft term instead of the hard term",
     lambda student_logits, teacher_logits, labels, T, alpha: reference_kd_loss_mean(
         student_logits, teacher_logits, labels, T, 1 - alpha)),
    ("the KL divergence is reversed: KL(p_s^T || p_t^T) instead of KL(p_t^T || p_s^T)",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels),
         _kl_sum(student_logits, teacher_logits, T) / student_logits.numel(), T, alpha)),
    ("the hard term uses the temperature too (cross-entropy of softmax(z_s / T))",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits / T, labels),
         _kl_sum(teacher_logits, student_logits, T) / student_logits.numel(), T, alpha)),
    ("the teacher's logits are not divided by T",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels),
         (_log_softmax(teacher_logits, 1).exp()
          * (_log_softmax(teacher_logits, 1) - _log_softmax(student_logits, T))).sum()
         / student_logits.numel(), T, alpha)),
    ("the student's logits are not divided by T in the soft term",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels),
         (_log_softmax(teacher_logits, T).exp()
          * (_log_softmax(teacher_logits, T) - _log_softmax(student_logits, 1))).sum()
         / student_logits.numel(), T, alpha)),
    ("F.kl_div gets the student's probabilities, not their logarithms, as its first argument",
     lambda student_logits, teacher_logits, labels, T, alpha: _loss(
         _hard(student_logits, labels),
         F.kl_div(F.softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="sum")
         / student_logits.numel(), T, alpha)),
]


def _batch(B, n, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    z_s = 3 * torch.randn(B, n, generator=generator, dtype=dtype)
    z_t = 3 * torch.randn(B, n, generator=generator, dtype=dtype)
    y = torch.randint(0, n, (B,), generator=generator)
    return dict(student_logits=z_s, teacher_logits=z_t, labels=y)


def cases():
    """The checker's cases, ``(name, hint, arguments)``, each isolating one part of the loss."""
    return [
        ("hard term only: alpha = 1",
         "With alpha = 1 only the hard term is left: the cross-entropy of the student's "
         "logits at T = 1 (no temperature) with the labels, averaged over the batch.",
         dict(**_batch(4, 10, 0), T=3.0, alpha=1.0)),
        ("soft term only, at T = 1: alpha = 0",
         "With alpha = 0 and T = 1 only the soft term is left: "
         "F.kl_div(F.log_softmax(student_logits, 1), F.softmax(teacher_logits, 1), "
         "reduction='mean'), the KL from the teacher's distribution to the student's "
         "summed over everything and divided by B * n.",
         dict(**_batch(4, 10, 1), T=1.0, alpha=0.0)),
        ("soft term only, at T = 4: alpha = 0",
         "Both softmaxes of the soft term take the logits divided by T, and the soft "
         "term is multiplied by T**2.",
         dict(**_batch(4, 10, 2), T=4.0, alpha=0.0)),
        ("both terms: alpha = 0.2, T = 2",
         "alpha weights the hard term: alpha * hard + (1 - alpha) * T**2 * soft.",
         dict(**_batch(4, 10, 3), T=2.0, alpha=0.2)),
        ("other sizes and dtype: B = 3, n = 5, float32",
         "Take B and n from the inputs' shapes (do not assume 10 classes), and return a "
         "0-dimensional tensor.",
         dict(**_batch(3, 5, 4, torch.float32), T=2.0, alpha=0.5)),
    ]


def check_kd_loss_mean(kd_loss_mean) -> str:
    """Checks ``kd_loss_mean(student_logits, teacher_logits, labels, T, alpha)`` of
    exercise ``ex-formulation-reduction``; raises :class:`kdbook.exercises.ExerciseFailure`
    with specific feedback on the first case it gets wrong."""
    names, hints, arguments = zip(*cases())
    return check_function(EXERCISE, kd_loss_mean, reference_kd_loss_mean, arguments,
                          hints=hints, names=names, mistakes=MISTAKES, rtol=1e-5, atol=1e-7)
