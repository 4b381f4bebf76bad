"""Hinton et al.'s omitted class: a student distilled on a transfer set without one class.

In section 3 of Hinton et al. (2015) the student never sees a 3 during distillation, yet
after the bias of class 3 is raised it recognises most 3s of the test set: the teacher's
soft targets on the other digits carry what a 3 looks like. A student trained without a
class almost never predicts it, so the bias decides how often it does.

The shift is chosen here without the test set and without any label of the omitted
class: it is the smallest one that makes the student predict the class on ``share`` of
a pool of unlabelled images (by default the run's training images before the class was
left out, and the class's share of a balanced CIFAR-10, one tenth). Adding ``delta`` to
the logit of class ``c`` makes ``c`` the prediction exactly where ``delta`` exceeds the
margin ``max_{j != c} z_j - z_c``, so the shift is the ``share`` quantile of the margins.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdbook.data import TensorLoader
from kdbook.train import predict_logits


def margins(logits: Tensor, cls: int) -> Tensor:
    """For each row, how far the logit of ``cls`` lies below the largest other logit."""
    others = logits.clone()
    others[:, cls] = -torch.inf
    return others.max(1).values - logits[:, cls]


def bias_shift(logits: Tensor, cls: int, share: float) -> float:
    """The shift of class ``cls``'s logit after which ``cls`` is the prediction on a ``share``
    of the rows of ``logits`` (the ``share`` quantile of :func:`margins`)."""
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1), got {share!r}")
    return float(torch.quantile(margins(logits, cls).double(), share))


def with_bias(logits: Tensor, cls: int, delta: float) -> Tensor:
    """``logits`` with ``delta`` added to the column of class ``cls`` (a copy)."""
    shifted = logits.clone()
    shifted[:, cls] += delta
    return shifted


def omitted_class_report(pool_logits: Tensor, test_logits: Tensor, test_labels: Tensor, cls: int,
                         share: float) -> dict:
    """Test accuracy on class ``cls`` (and overall) before and after its bias is raised to
    the shift chosen on ``pool_logits`` (unlabelled images)."""
    delta = bias_shift(pool_logits, cls, share)
    is_cls = test_labels == cls
    before, after = test_logits.argmax(1), with_bias(test_logits, cls, delta).argmax(1)
    return {
        "class": cls,
        "share": share,
        "bias_shift": delta,
        "pool_predicted_before": float((pool_logits.argmax(1) == cls).float().mean()),
        "class_test_acc_before": float((before[is_cls] == cls).float().mean()),
        "class_test_acc_after": float((after[is_cls] == cls).float().mean()),
        "test_acc_before": float((before == test_labels).float().mean()),
        "test_acc_after": float((after == test_labels).float().mean()),
    }


def omitted_class_metrics(student: nn.Module, data, cls: int, device, share: float | None = None) -> dict:
    """:func:`omitted_class_report` for a trained run: the pool is ``data.bias_images`` (a
    :class:`kdbook.runs.RunData` of a run with ``omit_class``), the test set
    ``data.test_images``; ``share`` defaults to one class's share of balanced classes."""
    if data.bias_images is None:
        raise ValueError("data.bias_images is None: omitted_class_metrics needs the data of a run with omit_class")
    logits = [predict_logits(student, TensorLoader(images, torch.zeros(len(images), dtype=torch.int64), 1000,
                                                   device=device))
              for images in (data.bias_images, data.test_images)]
    share = 1 / logits[1].shape[1] if share is None else share
    return omitted_class_report(logits[0], logits[1], data.test_labels.cpu(), cls, share)
