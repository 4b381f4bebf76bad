"""The distillation losses of Hinton, Vinyals and Dean (2015), with input checks.

Notation (chapter "Hinton's formulation"): student logits ``z_s``, teacher logits
``z_t``, temperature ``T``, soft targets ``p^T = softmax(z / T)``.

    L_KD   = alpha * CE(y, softmax(z_s)) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)
    L_soft = T^2 * KL(p_t^T || p_s^T)                (the soft term alone)

Both are averaged over the batch ("batchmean": the KL summed over classes, then
averaged over samples; PyTorch's ``reduction='mean'`` would also divide by the
number of classes).

Numerics: everything is computed from ``log_softmax`` so that logits of size 1e4
at T = 0.05 (ratios of 2e5) stay finite: no ``log(0)`` and no ``0 * inf``.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# -----------------------------------------------------------------------------
# Input checks: each names the argument and what is allowed.


def check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise TypeError(
            f"temperature must be a real number (int or float), got {type(temperature).__name__}"
        )
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return float(temperature)


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"alpha must be a real number in [0, 1], got {type(alpha).__name__}")
    if not (0.0 <= alpha <= 1.0):  # also rejects nan
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    return float(alpha)


def check_logits(logits, name: str) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {logits.dtype}")
    if logits.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (batch, classes), got shape {tuple(logits.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes, got shape {tuple(logits.shape)}")
    return logits


def check_same_shape(student_logits: Tensor, other: Tensor, name: str) -> None:
    if other.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"{name} has batch size {other.shape[0]} but student_logits has "
            f"{student_logits.shape[0]}; they must match (no broadcasting)"
        )
    if other.shape[1] != student_logits.shape[1]:
        raise ValueError(
            f"{name} has {other.shape[1]} classes but student_logits has "
            f"{student_logits.shape[1]}; they must match"
        )


def check_labels(labels, num_classes: int, batch_size: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(
            f"labels must have dtype torch.int64 (class indices), got {labels.dtype}; "
            "convert explicitly with labels.long() if that is what you mean"
        )
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(
            f"labels must have shape ({batch_size},) to match the logits, got {tuple(labels.shape)}"
        )
    if batch_size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def check_probabilities(probs, name: str, atol: float = 1e-3) -> Tensor:
    check_logits(probs, name)  # same type/shape rules
    if (probs < 0).any() or not torch.isfinite(probs).all():
        raise ValueError(f"{name} must be finite and non-negative (probabilities)")
    row_sums = probs.sum(dim=1)
    if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=atol, rtol=0):
        worst = float((row_sums - 1).abs().max())
        raise ValueError(
            f"{name} rows must sum to 1 (within {atol}); worst row is off by {worst:.3g}. "
            "Pass logits as teacher_logits instead if these are not probabilities"
        )
    return probs


def _check_epsilon(epsilon, name: str = "label_smoothing") -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(epsilon).__name__}")
    if not (0.0 <= epsilon <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {epsilon!r}")
    return float(epsilon)


# -----------------------------------------------------------------------------
# Soft targets and the soft term.


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` along the class dimension: the soft targets at temperature T."""
    check_logits(logits, "logits")
    return F.softmax(logits / check_temperature(temperature), dim=1)


def _teacher_log_probs(
    student_logits: Tensor, teacher_logits: Tensor | None, teacher_probs: Tensor | None, T: float
) -> tuple[Tensor | None, Tensor | None]:
    """Returns (log p_t^T, None) from logits or (None, p_t^T) from given probabilities.

    The teacher side is detached: the teacher never receives gradients."""
    if (teacher_logits is None) == (teacher_probs is None):
        raise ValueError("give exactly one of teacher_logits or teacher_probs")
    if teacher_logits is not None:
        check_logits(teacher_logits, "teacher_logits")
        check_same_shape(student_logits, teacher_logits, "teacher_logits")
        return F.log_softmax(teacher_logits.detach() / T, dim=1), None
    check_probabilities(teacher_probs, "teacher_probs")
    check_same_shape(student_logits, teacher_probs, "teacher_probs")
    return None, teacher_probs.detach()


def soft_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None = None,
    temperature: float = 4.0,
    *,
    teacher_probs: Tensor | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """``T^2 * KL(p_t^T || p_s^T)`` averaged over the batch (``scale_by_t2=False`` drops T^2).

    The teacher enters either as logits (``teacher_logits``) or as soft targets
    already computed at this temperature (``teacher_probs``, e.g. cached soft labels).
    """
    T = check_temperature(temperature)
    check_logits(student_logits, "student_logits")
    log_pt, pt = _teacher_log_probs(student_logits, teacher_logits, teacher_probs, T)
    log_ps = F.log_softmax(student_logits / T, dim=1)
    if log_pt is not None:
        kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    else:
        # xlogy(p, p) is 0 where p = 0: no log(0) for cached targets with exact zeros.
        kl = (torch.special.xlogy(pt, pt) - pt * log_ps).sum() / student_logits.shape[0]
    return kl * T**2 if scale_by_t2 else kl


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
    *,
    teacher_probs: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """``alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)``, batch-averaged."""
    return distillation_loss_parts(
        student_logits, teacher_logits, labels, temperature, alpha,
        teacher_probs=teacher_probs, label_smoothing=label_smoothing,
    )["loss"]


def distillation_loss_parts(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
    *,
    teacher_probs: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """The KD loss and its two terms: ``{"loss", "hard", "soft"}`` (``soft`` includes T^2).

    ``label_smoothing`` (epsilon) smooths the hard term's targets; 0 is Hinton's loss."""
    a = check_alpha(alpha)
    eps = _check_epsilon(label_smoothing)
    check_logits(student_logits, "student_logits")
    check_labels(labels, student_logits.shape[1], student_logits.shape[0])
    hard = F.cross_entropy(student_logits, labels, label_smoothing=eps)
    soft = soft_distillation_loss(
        student_logits, teacher_logits, temperature, teacher_probs=teacher_probs
    )
    return {"loss": a * hard + (1 - a) * soft, "hard": hard, "soft": soft}


# -----------------------------------------------------------------------------
# Label smoothing (the chapter on label smoothing relates it to KD).


def label_smoothing_targets(labels: Tensor, num_classes: int, epsilon: float) -> Tensor:
    """``(1 - eps) * onehot(y) + eps / n``: the smoothed targets of Szegedy et al. (2016)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    eps = _check_epsilon(epsilon, "epsilon")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}")
    check_labels(labels, num_classes, labels.shape[0])
    onehot = F.one_hot(labels, num_classes).to(torch.get_default_dtype())
    return (1 - eps) * onehot + eps / num_classes


# -----------------------------------------------------------------------------
# nn.Module wrappers with the source text's names.


class ResponseDistillationLoss(nn.Module):
    """Hinton's KD loss: ``alpha * CE + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)``.

    ``loss(student_logits, teacher_logits, labels)``, or with cached soft targets
    ``loss(student_logits, None, labels, teacher_probs=p_t)``.
    ``alpha`` weights the *hard* (ground-truth) term, as in the source text.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.alpha = check_alpha(alpha)

    def forward(self, student_logits, teacher_logits=None, labels=None, *, teacher_probs=None):
        if labels is None:
            raise ValueError("labels are required: ResponseDistillationLoss has a hard (CE) term")
        return distillation_loss(
            student_logits, teacher_logits, labels, self.temperature, self.alpha,
            teacher_probs=teacher_probs,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


class SoftLabelDistillationLoss(nn.Module):
    """The soft term alone: ``T^2 * KL(p_t^T || p_s^T)`` (no ground truth)."""

    def __init__(self, temperature: float = 4.0, scale_by_t2: bool = True):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.scale_by_t2 = bool(scale_by_t2)

    def forward(self, student_logits, teacher_logits=None, *, teacher_probs=None):
        return soft_distillation_loss(
            student_logits, teacher_logits, self.temperature,
            teacher_probs=teacher_probs, scale_by_t2=self.scale_by_t2,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, scale_by_t2={self.scale_by_t2}"
