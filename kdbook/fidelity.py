"""How closely a student matches its teacher (Stanton et al., 2021, "Does knowledge
distillation really work?"): fidelity, as distinct from accuracy.

- ``agreement``: the share of images on which the student's top class is the teacher's;
- ``kl``: the average predictive KL divergence KL(p_t || p_s) at T = 1, in nats;
- ``errors_copied``: of the images the teacher gets wrong, the share on which the
  student predicts the teacher's (wrong) class.

All three are computed from logits, in float64 (log_softmax, never log of a softmax).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdbook.losses import check_logits


def fidelity(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Agreement, mean KL(p_t || p_s) and the share of the teacher's errors the student copies."""
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have the same shape, "
                         f"got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must have shape ({student_logits.shape[0]},), got {tuple(labels.shape)}")
    log_ps = torch.log_softmax(student_logits.double(), dim=1)
    log_pt = torch.log_softmax(teacher_logits.double(), dim=1)
    student_pred, teacher_pred = log_ps.argmax(1), log_pt.argmax(1)
    teacher_wrong = teacher_pred != labels
    copied = (student_pred == teacher_pred)[teacher_wrong]
    return {
        "agreement": float((student_pred == teacher_pred).double().mean()),
        "kl": float((log_pt.exp() * (log_pt - log_ps)).sum(1).mean()),
        "errors_copied": float(copied.double().mean()) if len(copied) else float("nan"),
        "teacher_errors": int(teacher_wrong.sum()),
    }
