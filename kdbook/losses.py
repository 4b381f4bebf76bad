"""The distillation losses of Hinton, Vinyals and Dean (2015), with input checks.

Notation (chapter "Hinton's formulation"): student logits ``z_s``, teacher logits
``z_t``, temperature ``T``, soft targets ``p^T = softmax(z / T)``.

    L_KD   = alpha * CE(y, softmax(z_s)) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)
    L_soft = T^2 * KL(p_t^T || p_s^T)                (the soft term alone)

Both are averaged over the batch ("batchmean": the KL summed over classes, then
averaged over samples; PyTorch's ``reduction='mean'`` would also divide by the
number of classes).

Beyond Hinton (chapter "Beyond Hinton"): decoupled KD (:func:`dkd_loss`, Zhao et al.
2022) and logit-standardized KD (:func:`standardize_logits`,
:func:`standardized_distillation_loss`, Sun et al. 2024); see the section below.

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


def check_logit_pair(student_logits, teacher_logits) -> None:
    """Both logit tensors checked (:func:`check_logits`), with the same batch size and classes."""
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    check_same_shape(student_logits, teacher_logits, "teacher_logits")


def check_labels(labels, num_classes: int, batch_size: int, ignore_index: int | None = None) -> Tensor:
    """``labels`` if they are int64 class indices in [0, num_classes), one per sample
    (``ignore_index`` also allowed, where given); a clear error otherwise."""
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
    given = labels if ignore_index is None else labels[labels != ignore_index]
    if len(given) and (given.min() < 0 or given.max() >= num_classes):
        allowed = "" if ignore_index is None else f" or ignore_index={ignore_index}"
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}){allowed}, "
            f"got values in [{int(given.min())}, {int(given.max())}]"
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
    ignore_index: int | None = None,
) -> dict[str, Tensor]:
    """The KD loss and its two terms: ``{"loss", "hard", "soft"}`` (``soft`` includes T^2).

    ``label_smoothing`` (epsilon) smooths the hard term's targets; 0 is Hinton's loss.
    Samples labelled ``ignore_index`` (torch's convention; the book's unlabelled images)
    enter the soft term only (see :func:`hard_label_loss`)."""
    a = check_alpha(alpha)
    check_logits(student_logits, "student_logits")
    hard = hard_label_loss(student_logits, labels, label_smoothing, ignore_index)
    soft = soft_distillation_loss(
        student_logits, teacher_logits, temperature, teacher_probs=teacher_probs
    )
    return {"loss": a * hard + (1 - a) * soft, "hard": hard, "soft": soft}


def hard_label_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0,
                    ignore_index: int | None = None) -> Tensor:
    """Cross-entropy with the labels (targets smoothed by ``label_smoothing``), averaged
    over the samples whose label is not ``ignore_index``; 0 when every label is ignored
    (torch's ``cross_entropy`` would give NaN, and a batch of unlabelled images has no
    hard term)."""
    eps = _check_epsilon(label_smoothing)
    check_labels(labels, logits.shape[1], logits.shape[0], ignore_index)
    if ignore_index is not None:
        keep = labels != ignore_index
        if not bool(keep.any()):
            return logits.new_zeros(())
        if not bool(keep.all()):
            logits, labels = logits[keep], labels[keep]
    return F.cross_entropy(logits, labels, label_smoothing=eps)


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


# -----------------------------------------------------------------------------
# Beyond Hinton: decoupled KD (Zhao et al., 2022) and logit standardization
# (Sun et al., 2024). Chapter "Beyond Hinton".
#
# DKD splits each distribution at temperature T into the binary (target, non-target)
# probabilities b = (p_y, 1 - p_y) and the distribution q over the non-target classes
# (q_j = p_j / (1 - p_y), j != y). Then, per sample,
#
#     KL(p_t || p_s) = KL(b_t || b_s) + (1 - p_t,y) * KL(q_t || q_s)
#                    =      TCKD      + (1 - p_t,y) *      NCKD
#
# and DKD reweights the two terms: alpha * TCKD + beta * NCKD (each times T^2).


def check_weight(value, name: str) -> float:
    """A loss weight: a finite real number >= 0 (DKD's alpha and beta, LS-KD's weight)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):  # also rejects nan
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _non_target(values: Tensor, labels: Tensor) -> Tensor:
    """The (N, C - 1) entries of ``values`` off each sample's label, in class order.

    Gathering them (rather than subtracting a large constant at the label, as
    mdistiller does) leaves the label out exactly: no -inf, no 0 * inf in the KL."""
    keep = torch.ones_like(values, dtype=torch.bool).scatter_(1, labels[:, None], False)
    return values[keep].view(values.shape[0], values.shape[1] - 1)


def _binary_log_probs(logits: Tensor, labels: Tensor, T: float) -> Tensor:
    """(N, 2) log of (p_y, 1 - p_y) at temperature T, computed without 1 - p.

    log p_y = z_y/T - logsumexp(z/T); log(1 - p_y) = logsumexp_{j != y}(z_j/T) - logsumexp(z/T):
    both finite for finite logits, and 1 - p_y is never formed (no cancellation when p_y ~ 1)."""
    scaled = logits / T
    log_norm = torch.logsumexp(scaled, dim=1)
    target = scaled.gather(1, labels[:, None]).squeeze(1)
    others = torch.logsumexp(_non_target(scaled, labels), dim=1)
    return torch.stack([target - log_norm, others - log_norm], dim=1)


def decoupled_kl_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float
) -> dict[str, Tensor]:
    """Per-sample ``{"tckd", "nckd", "teacher_target_prob"}`` at temperature T (no T^2).

    ``tckd`` = KL(b_t || b_s), ``nckd`` = KL(q_t || q_s), ``teacher_target_prob`` = p_t,y,
    so that KL(p_t || p_s) = tckd + (1 - teacher_target_prob) * nckd for every sample.
    The teacher side is detached."""
    T = check_temperature(temperature)
    check_logit_pair(student_logits, teacher_logits)
    check_labels(labels, student_logits.shape[1], student_logits.shape[0])
    teacher_logits = teacher_logits.detach()
    log_bs = _binary_log_probs(student_logits, labels, T)
    log_bt = _binary_log_probs(teacher_logits, labels, T)
    tckd = F.kl_div(log_bs, log_bt, reduction="none", log_target=True).sum(1)
    log_qs = F.log_softmax(_non_target(student_logits, labels) / T, dim=1)
    log_qt = F.log_softmax(_non_target(teacher_logits, labels) / T, dim=1)
    nckd = F.kl_div(log_qs, log_qt, reduction="none", log_target=True).sum(1)
    return {"tckd": tckd, "nckd": nckd, "teacher_target_prob": log_bt[:, 0].exp()}


def dkd_loss_parts(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
    temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0,
) -> dict[str, Tensor]:
    """DKD and its terms, batch-averaged and each times T^2: ``{"loss", "tckd", "nckd"}``.

    ``loss = alpha * tckd + beta * nckd``; no cross-entropy term (add it outside)."""
    a, b = check_weight(alpha, "alpha"), check_weight(beta, "beta")
    T = check_temperature(temperature)
    terms = decoupled_kl_terms(student_logits, teacher_logits, labels, T)
    tckd, nckd = terms["tckd"].mean() * T**2, terms["nckd"].mean() * T**2
    return {"loss": a * tckd + b * nckd, "tckd": tckd, "nckd": nckd}


def dkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
    temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0,
) -> Tensor:
    """Decoupled KD (Zhao et al., 2022): ``T^2 * (alpha * TCKD + beta * NCKD)``, batch-averaged.

    As mdistiller's ``dkd_loss`` (KL summed over classes, averaged over the batch), without
    its warm-up factor and without a cross-entropy term. Defaults: mdistiller's CIFAR-100
    settings (T = 4, alpha = 1, beta = 8)."""
    return dkd_loss_parts(student_logits, teacher_logits, labels, temperature, alpha, beta)["loss"]


# Logit standardization (Sun et al., 2024): each sample's logits become a z-score.
# Their code (``normalize`` in mdistiller/distillers/KD.py of logit-standardization-KD)
# divides by ``logit.std(dim=-1)``, torch's default *sample* standard deviation
# (Bessel's correction, divisor C - 1), plus 1e-7. We do the same, so a reader can
# compare numbers with theirs; the divisor only rescales every standardized logit by
# sqrt((C - 1) / C), which the base temperature absorbs.
STANDARDIZE_EPS = 1e-7


def standardize_logits(logits: Tensor, eps: float = STANDARDIZE_EPS) -> Tensor:
    """``(z - mean(z)) / (std(z) + eps)`` over the last (class) dimension, per sample.

    ``std`` is the sample standard deviation (divisor C - 1), as in Sun et al.'s code.
    Constant logits (std 0) map to zeros, with a finite gradient (std's subgradient 0)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must have a floating dtype, got {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits need at least 2 classes in the last dimension, got shape {tuple(logits.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"eps must be a real number > 0, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    centred = logits - logits.mean(dim=-1, keepdim=True)
    var = centred.square().sum(dim=-1, keepdim=True) / (logits.shape[-1] - 1)
    # sqrt has an infinite derivative at 0: take the std of constant logits as exactly 0
    # with gradient 0 (the double-where keeps nan out of the backward pass).
    positive = var > 0
    std = torch.where(positive, torch.sqrt(torch.where(positive, var, torch.ones_like(var))), torch.zeros_like(var))
    return centred / (std + eps)


def standardized_distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0, eps: float = STANDARDIZE_EPS
) -> Tensor:
    """Logit-standardized soft term: ``T^2 * KL(softmax(std(z_t)/T) || softmax(std(z_s)/T))``.

    ``std`` is :func:`standardize_logits`; batch-averaged; the teacher is detached.
    Sun et al. use base temperature T = 2 and weight this term by 9 on CIFAR-100."""
    check_logit_pair(student_logits, teacher_logits)
    return soft_distillation_loss(
        standardize_logits(student_logits, eps), standardize_logits(teacher_logits.detach(), eps), temperature
    )
