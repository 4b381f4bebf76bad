"""Checkers for the exercises of the chapter "Gradients" (book/gradients.ipynb).

``check_soft_gradient`` checks exercise ``ex-gradients-soft-gradient``: a function
``soft_gradient(student_logits, teacher_logits, T, scale_by_t2)`` that returns, in
closed form, the gradient with respect to ``student_logits`` of
``kdbook.soft_distillation_loss(student_logits, teacher_logits, T, scale_by_t2=...)``.
The reference is autograd itself, in float64, on the library's loss. Each case
isolates one part of the formula, and known wrong answers are recognised so that the
feedback can name the mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.exercises import check_function
from kdbook.losses import soft_distillation_loss

EXERCISE = "ex-gradients-soft-gradient"


def reference_soft_gradient(student_logits, teacher_logits, T, scale_by_t2):
    """Autograd's gradient of the library's soft loss (batch mean) w.r.t. the student logits."""
    leaf = student_logits.detach().clone().requires_grad_(True)
    loss = soft_distillation_loss(leaf, teacher_logits.detach(), T, scale_by_t2=scale_by_t2)
    (grad,) = torch.autograd.grad(loss, leaf)
    return grad


def _difference(student_logits, teacher_logits, T, dim=1):
    return F.softmax(student_logits / T, dim=dim) - F.softmax(teacher_logits / T, dim=dim)


def _closed_form(student_logits, teacher_logits, T, scale_by_t2):
    factor = T if scale_by_t2 else 1 / T
    return factor * _difference(student_logits, teacher_logits, T) / student_logits.shape[0]


# Known wrong answers: (what the answer did, a function that does it). The descriptions
# complete the sentence "Your result is what you get when ...".
MISTAKES = [
    ("the sign is flipped: (p_t^T - p_s^T) instead of (p_s^T - p_t^T)",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         -_closed_form(student_logits, teacher_logits, T, scale_by_t2)),
    ("the batch mean is missing: no division by the batch size B",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         _closed_form(student_logits, teacher_logits, T, scale_by_t2) * student_logits.shape[0]),
    ("the result is divided by B * n (the 'mean' reduction) instead of B",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         _closed_form(student_logits, teacher_logits, T, scale_by_t2) / student_logits.shape[1]),
    ("the factor 1/T from the chain rule through z / T is missing",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         _closed_form(student_logits, teacher_logits, T, scale_by_t2) * T),
    ("the factor T**2 is ignored even though scale_by_t2 is true",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         _closed_form(student_logits, teacher_logits, T, False)),
    ("the factor T**2 is applied even though scale_by_t2 is false",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         _closed_form(student_logits, teacher_logits, T, True)),
    (("the gradient is multiplied by T**2 without the 1/T of the chain rule, "
     "T**2 (p_s - p_t) / B"),
     lambda student_logits, teacher_logits, T, scale_by_t2:
         (T**2 if scale_by_t2 else 1.0) * _difference(student_logits, teacher_logits, T)
         / student_logits.shape[0]),
    ("the softmax is taken over the batch (dim=0) instead of the classes (dim=1)",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         (T if scale_by_t2 else 1 / T) * _difference(student_logits, teacher_logits, T, dim=0)
         / student_logits.shape[0]),
    ("the temperature is left out of the softmaxes (softmax(z) instead of softmax(z / T))",
     lambda student_logits, teacher_logits, T, scale_by_t2:
         (T if scale_by_t2 else 1 / T) * _difference(student_logits, teacher_logits, 1.0)
         / student_logits.shape[0]),
]


def _logits(B, n, seed, scale=3.0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    z_s = scale * torch.randn(B, n, generator=generator, dtype=dtype)
    z_t = scale * torch.randn(B, n, generator=generator, dtype=dtype)
    return {"student_logits": z_s, "teacher_logits": z_t}


def cases():
    """The checker's cases, ``(name, hint, arguments)``, each isolating one part of the formula."""
    return [
        ("one example, T = 1, no T**2",
         ("For one example at T = 1 the gradient of KL(p_t || p_s) with respect to the "
         "student's logits is softmax(student) - softmax(teacher): prediction minus target."),
         dict(**_logits(1, 3, 0), T=1.0, scale_by_t2=False)),
        ("one example, T = 4, no T**2",
         ("Both softmaxes take the logits divided by T, and the chain rule through z / T "
         "contributes a factor 1/T: (p_s^T - p_t^T) / T."),
         dict(**_logits(1, 3, 1), T=4.0, scale_by_t2=False)),
        ("one example, T = 4, with T**2",
         ("With scale_by_t2=True the loss is multiplied by T**2, so the gradient "
         "(p_s^T - p_t^T) / T becomes T (p_s^T - p_t^T)."),
         dict(**_logits(1, 3, 2), T=4.0, scale_by_t2=True)),
        ("a batch of 5, T = 2, with T**2",
         ("The loss is the batch mean ('batchmean'): every example's gradient is divided "
         "by the batch size B, not by B * n."),
         dict(**_logits(5, 4, 3), T=2.0, scale_by_t2=True)),
        ("10 classes, float32, large logits at T = 0.5",
         ("Take B and n from the shape, take the softmax over the classes (dim=1), and "
         "use torch's softmax (it is stable for large logits). Return a tensor of the "
         "same shape and dtype as student_logits."),
         dict(**_logits(6, 10, 4, scale=30.0, dtype=torch.float32), T=0.5, scale_by_t2=False)),
    ]


def check_soft_gradient(soft_gradient) -> str:
    """Checks ``soft_gradient(student_logits, teacher_logits, T, scale_by_t2)`` of exercise
    ``ex-gradients-soft-gradient``; raises :class:`kdbook.exercises.ExerciseFailure` with
    specific feedback on the first case it gets wrong."""
    names, hints, arguments = zip(*cases())
    return check_function(EXERCISE, soft_gradient, reference_soft_gradient, arguments,
                          hints=hints, names=names, mistakes=MISTAKES, rtol=1e-5, atol=1e-8)
