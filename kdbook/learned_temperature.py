"""A temperature learned adversarially, after CTKD (Li et al., 2023). Chapter "Beyond Hinton".

CTKD trains one global temperature together with the student, but in the opposite
direction: the student *minimises* the distillation loss while the temperature
*maximises* it, through a gradient-reversal layer (Ganin and Lempitsky, 2015)
between the temperature's parameter and the loss. The reversal's strength lambda
follows a curriculum: it rises from 0 to its maximum along a half cosine, so the
task gets harder only once the student has learned something.

Conventions, checked against the authors' code (github.com/zhengli97/CTKD):

- ``T = t_min + (t_max - t_min) * sigmoid(GRL(raw))`` (their ``t_start + t_end *
  sigmoid(...)`` with t_start = 1, t_end = 20: T in (1, 21)); T never leaves the range
  and the gradient never vanishes at a clamp.
- Their lambda is ``(1 - cos(pi * e / 10)) / 2`` at epoch e = 1..10 of 240 and 1 after
  (``CosineDecay`` with max 0, min -1, 10 loops, applied as ``lambda * grad`` with that
  negative lambda). Our runs are 15 epochs long, so the ramp is expressed as a fraction
  of the optimiser steps: the first 10/240 = 1/24 of training, per step, not per epoch.
- Their raw parameter starts at 1 (T = 1 + 20 sigmoid(1) = 15.6); ours starts where
  ``initial`` says (the book uses Hinton's T = 4, so CTKD starts from the KD cell and
  only learning T differs).
- The parameter is optimised by the student's optimiser (same learning rate schedule,
  momentum and weight decay), as in their ``trainable_list``.
- The soft term is ``T^2 * KL(p_t^T || p_s^T)`` with the learned T on both sides, the
  gradient reaching T through both softmaxes and the T^2 factor.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbook.losses import check_logit_pair

CTKD_RAMP_FRACTION = 10 / 240  # CTKD ramps lambda over 10 of its 240 epochs


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged, but gradients flowing back through it are multiplied by ``-scale``."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite real number, got {scale!r}")
    return GradientReversal.apply(x, float(scale))


def curriculum_lambda(progress: float, lambda_max: float = 1.0, lambda_min: float = 0.0,
                      ramp_fraction: float = CTKD_RAMP_FRACTION) -> float:
    """CTKD's cosine curriculum: lambda_min at progress 0, lambda_max from ``ramp_fraction`` on.

    ``progress`` is the fraction of training done (optimiser steps / total steps)."""
    if not 0 <= ramp_fraction <= 1:
        raise ValueError(f"ramp_fraction must lie in [0, 1], got {ramp_fraction!r}")
    x = 1.0 if ramp_fraction == 0 else min(max(progress / ramp_fraction, 0.0), 1.0)
    return lambda_min + (lambda_max - lambda_min) * (1 - math.cos(math.pi * x)) / 2


class LearnedTemperature(nn.Module):
    """One global temperature in ``[t_min, t_max]``, trained through a gradient reversal.

    ``module()`` returns T (a 0-dim tensor) for the current training step, with the
    curriculum's lambda for that step; in training mode each call also counts one step
    (like BatchNorm's ``num_batches_tracked``): call it once per optimiser step. The step
    count is a buffer, so it is saved and restored with ``state_dict`` (checkpoints)."""

    def __init__(self, total_steps: int, initial: float = 4.0, t_min: float = 1.0, t_max: float = 21.0,
                 lambda_max: float = 1.0, ramp_fraction: float = CTKD_RAMP_FRACTION):
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        check_temperature_range(initial, t_min, t_max)
        if not (math.isfinite(lambda_max) and lambda_max >= 0):
            raise ValueError(f"lambda_max must be finite and >= 0, got {lambda_max!r}")
        self.total_steps, self.t_min, self.t_max = total_steps, float(t_min), float(t_max)
        self.lambda_max, self.ramp_fraction = float(lambda_max), float(ramp_fraction)
        curriculum_lambda(0.0, self.lambda_max, 0.0, self.ramp_fraction)  # checks ramp_fraction
        share = (initial - t_min) / (t_max - t_min)
        self.raw = nn.Parameter(torch.tensor(math.log(share / (1 - share))))  # sigmoid(raw) = share
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        return curriculum_lambda(int(self.steps_done) / self.total_steps, self.lambda_max, 0.0, self.ramp_fraction)

    def temperature(self) -> Tensor:
        """T now, without the reversal (for reading it off; no step is counted)."""
        return self.t_min + (self.t_max - self.t_min) * torch.sigmoid(self.raw)

    def forward(self) -> Tensor:
        raw = reverse_gradient(self.raw, self.current_lambda())
        if self.training:
            self.steps_done += 1
        return self.t_min + (self.t_max - self.t_min) * torch.sigmoid(raw)

    def extra_repr(self) -> str:
        return (f"T in [{self.t_min:g}, {self.t_max:g}], lambda_max={self.lambda_max:g}, "
                f"ramp over {self.ramp_fraction:.4g} of {self.total_steps} steps")


def check_temperature_range(initial, t_min, t_max) -> None:
    for name, value in (("initial", initial), ("t_min", t_min), ("t_max", t_max)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if not 0 < t_min < initial < t_max:
        raise ValueError(f"need 0 < t_min < initial < t_max, got t_min={t_min!r}, initial={initial!r}, t_max={t_max!r}")


def learned_temperature_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor) -> Tensor:
    """``T^2 * KL(p_t^T || p_s^T)``, batch-averaged, with T a 0-dim tensor that may carry gradient.

    The teacher's logits are detached; its soft targets still depend on T, so T's gradient
    comes through both softmaxes (as in CTKD's ``DistillKL``)."""
    check_logit_pair(student_logits, teacher_logits)
    if not isinstance(temperature, Tensor) or temperature.dim() != 0:
        raise TypeError(f"temperature must be a 0-dim tensor, got {temperature!r}")
    if not bool(torch.isfinite(temperature)) or not bool(temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {float(temperature)!r}")
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * temperature**2
