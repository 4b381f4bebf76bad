"""Calibration of a classifier: reliability bins, the expected calibration error and
temperature scaling (chapter "Why distillation helps: the statistical view",
book/why_distillation_helps.ipynb).

A classifier is **calibrated** when, among the inputs to which it gives confidence
``c`` (its largest probability), a fraction ``c`` is classified correctly. The
reliability bins group the predictions by confidence into ``n_bins`` equal-width bins
``((b - 1)/M, b/M]`` (right-closed, as in Guo et al. 2017, so confidence 1 falls in the
last bin); the expected calibration error is the bins' average gap between accuracy
and mean confidence, weighted by the fraction of predictions in each bin:

    ECE = sum_b (n_b / N) |acc_b - conf_b| .

Temperature scaling (Guo et al. 2017) divides the logits by the one number ``T`` that
minimises the negative log-likelihood on held-out data; it changes no prediction
(the argmax of ``z / T`` is that of ``z``), only the confidences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

N_BINS = 15  # the number of bins of Guo et al. (2017), used throughout the book


@dataclass(frozen=True)
class ReliabilityBins:
    """Per bin: its edges, how many predictions fall in it, their mean confidence and
    their accuracy (``nan`` for an empty bin)."""

    edges: Tensor  # (n_bins + 1,)
    counts: Tensor  # (n_bins,) int64
    confidence: Tensor  # (n_bins,)
    accuracy: Tensor  # (n_bins,)

    @property
    def ece(self) -> float:
        weights = self.counts.double() / self.counts.sum()
        gaps = (self.accuracy - self.confidence).abs().nan_to_num(0.0)  # empty bins weigh 0
        return float((weights * gaps).sum())


def _check(probs: Tensor, labels: Tensor, n_bins: int) -> None:
    if not isinstance(probs, Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        raise TypeError("probs must be a floating-point tensor of shape (N, classes)")
    if not isinstance(labels, Tensor) or labels.shape != probs.shape[:1] or labels.is_floating_point():
        raise TypeError(f"labels must be an integer tensor of shape ({probs.shape[0]},)")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    if len(labels) == 0:
        raise ValueError("probs and labels hold no predictions")


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = N_BINS) -> ReliabilityBins:
    """The reliability bins of the predictions ``probs`` (N, classes) against ``labels`` (N,)."""
    _check(probs, labels, n_bins)
    probs = probs.double()
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) puts c in bin b when edges[b] < c <= edges[b + 1]
    index = torch.bucketize(confidence, edges[1:-1], right=False)
    counts = torch.bincount(index, minlength=n_bins)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence)
    sum_correct = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct)
    nonempty = counts > 0
    nan = torch.full((n_bins,), math.nan, dtype=torch.float64)
    mean_conf = torch.where(nonempty, sum_conf / counts.clamp(min=1), nan)
    accuracy = torch.where(nonempty, sum_correct / counts.clamp(min=1), nan)
    return ReliabilityBins(edges, counts, mean_conf, accuracy)


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = N_BINS) -> float:
    """``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width confidence bins."""
    return reliability_bins(probs, labels, n_bins).ece


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)``."""
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: Tensor, labels: Tensor, low: float = 1e-2, high: float = 1e2) -> float:
    """The temperature ``T`` in ``[low, high]`` minimising the mean negative log-likelihood
    of ``softmax(logits / T)`` on ``(logits, labels)``.

    With ``beta = 1 / T`` the NLL is ``mean_i [logsumexp(beta z_i) - beta z_{i, y_i}]``,
    convex in ``beta``, with derivative ``mean_i [E_{softmax(beta z_i)} z - z_{i, y_i}]``,
    non-decreasing in ``beta``. Bisection on the sign of that derivative finds the
    minimiser to float64 precision, with no step size or starting point to choose."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor of shape (N, classes)")
    _check(logits, labels, 1)
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low!r}, high={high!r}")
    z = logits.double()
    z_label = z.gather(1, labels[:, None]).squeeze(1)

    def slope(beta: float) -> float:
        return float(((F.softmax(beta * z, dim=1) * z).sum(1) - z_label).mean())

    lo, hi = 1 / high, 1 / low  # the bracket in beta
    if slope(lo) > 0:
        raise ValueError(f"the best temperature is above high={high}: the logits carry no signal about the labels")
    if slope(hi) <= 0:  # 0 too: the softmax has saturated on every example
        raise ValueError(f"the best temperature is below low={low}: the logits separate the labels perfectly")
    for _ in range(200):  # each halving gains one bit; 200 is well past float64's 52
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 1 / ((lo + hi) / 2)
