"""One training loop for cross-entropy, label smoothing and distillation.

- ``TrainConfig``: every setting of a run in one small dataclass (printed with results).
- ``fit``: trains a model with a :class:`~kdbook.data.TensorLoader`, evaluates after each
  epoch, writes a checkpoint after every epoch and resumes from it, bit-for-bit on CPU.
- The teacher, for KD, is either run on every batch (:class:`OnlineTeacher`, in the run's
  precision: under autocast when ``amp``) or looked up from stored outputs by sample index
  and flip (:class:`CachedTeacher`, computed once in float32).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from numbers import Real
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdbook import settings
from kdbook.data import Batch, TensorLoader
from kdbook.files import atomic_write
from kdbook.learned_temperature import (CTKD_RAMP_FRACTION, LearnedTemperature, check_temperature_range,
                                       learned_temperature_loss)
from kdbook.losses import (check_alpha, check_temperature, check_weight, distillation_loss_parts, dkd_loss_parts,
                           hard_label_loss, standardized_distillation_loss)
from kdbook.models import evaluating, freeze

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "constant")
METHODS = ("ce", "kd", "dkd", "lskd", "ctkd")
DISTILLATION_METHODS = ("kd", "dkd", "lskd", "ctkd")  # the methods that need a teacher
BEYOND_HINTON_SETTINGS = ("dkd_alpha", "dkd_beta", "lskd_weight", "ctkd_t_min", "ctkd_t_max",
                          "ctkd_lambda_max", "ctkd_ramp_fraction")


@dataclass
class TrainConfig:
    """Settings of one training run. A distillation method needs a teacher passed to :func:`fit`.

    Every distillation method's loss is ``alpha * CE + (1 - alpha) * soft``: ``alpha``
    weights the hard (ground-truth) term, as in Hinton's KD, and the methods differ in
    the soft term only (chapter "Beyond Hinton"):

    - ``kd``:   ``T^2 KL(p_t^T || p_s^T)`` (Hinton et al., 2015);
    - ``dkd``:  ``T^2 (dkd_alpha TCKD + dkd_beta NCKD)`` (Zhao et al., 2022). With alpha = 0.5
      the loss is exactly half of the paper's ``CE + dkd_alpha TCKD + dkd_beta NCKD`` (CE
      weight 1): the same ratios, the overall scale of the book's KD runs. mdistiller's
      warm-up of the DKD term (linear over its first 20 of 240 epochs) is left out: our
      one-cycle schedule already ramps the learning rate up over the first 15% of steps
      (2.25 of 15 epochs, more than 20/240 of training), so the first steps are small anyway,
      and the loss stays a function of the batch alone;
    - ``lskd``: ``lskd_weight T^2 KL`` between the softmaxes of the *standardized* logits at
      base temperature T (Sun et al., 2024; they use T = 2, weight 9, CE weight 0.1 on
      CIFAR-100). We keep their T and weight and the book's alpha, so only the soft term
      differs from the KD run; the weight 9 is about the square of a typical logit standard
      deviation, which standardization divides out of the gradient;
    - ``ctkd``: the KD soft term with a temperature learned adversarially
      (:class:`~kdbook.learned_temperature.LearnedTemperature`, Li et al., 2023), starting
      at ``temperature`` and kept in [ctkd_t_min, ctkd_t_max]; the gradient reversal grows
      from 0 to ``ctkd_lambda_max`` along a half cosine over the first ``ctkd_ramp_fraction``
      of the optimiser steps.
    """

    method: str = "ce"  # "ce": cross-entropy (label smoothing if label_smoothing > 0); else a DISTILLATION_METHODS
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD only
    nesterov: bool = True  # SGD only
    weight_decay: float = 5e-4  # L2 coefficient (coupled, as in torch.optim.SGD/Adam)
    schedule: str = "onecycle"  # onecycle: linear warm-up for warmup_fraction of steps, then linear decay to 0
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.0  # epsilon of the hard term's targets (1 - eps) y + eps / n
    temperature: float = 4.0  # distillation only (lskd: base T of the standardized logits; ctkd: initial T)
    alpha: float = 0.5  # distillation only: weight of the hard (ground-truth) term
    amp: bool = False  # mixed precision: dtype from the device (settings.autocast_dtype), float16 with loss scaling
    channels_last: bool = False  # NHWC memory layout (faster convolutions with amp on CPU and GPU)
    seed: int = 0
    # Added for chapter "Beyond Hinton" (registered in ADDED_SETTINGS below).
    dkd_alpha: float = 1.0  # dkd: weight of TCKD (mdistiller's CIFAR-100 value)
    dkd_beta: float = 8.0  # dkd: weight of NCKD (mdistiller's CIFAR-100 value)
    lskd_weight: float = 9.0  # lskd: weight of the standardized soft term (Sun et al.'s CIFAR-100 value)
    ctkd_t_min: float = 1.0  # ctkd: the learned T stays in [ctkd_t_min, ctkd_t_max] (CTKD: 1 + 20 sigmoid)
    ctkd_t_max: float = 21.0
    ctkd_lambda_max: float = 1.0  # ctkd: final strength of the gradient reversal
    ctkd_ramp_fraction: float = CTKD_RAMP_FRACTION  # ctkd: fraction of steps over which lambda rises

    def __post_init__(self):
        for name in ("lr", "momentum", "weight_decay", "warmup_fraction", "label_smoothing",
                     "temperature", "alpha", *BEYOND_HINTON_SETTINGS):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
            # One number, one configuration: T=4 and T=4.0 must give the same run key.
            setattr(self, name, float(value))
        choices = {"method": METHODS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction!r}")
        check_temperature(self.temperature)
        check_alpha(self.alpha)
        for name in ("dkd_alpha", "dkd_beta", "lskd_weight", "ctkd_lambda_max"):
            check_weight(getattr(self, name), name)
        check_temperature_range(self.temperature if self.method == "ctkd" else (self.ctkd_t_min + self.ctkd_t_max) / 2,
                                self.ctkd_t_min, self.ctkd_t_max)
        if not 0 <= self.ctkd_ramp_fraction <= 1:
            raise ValueError(f"ctkd_ramp_fraction must lie in [0, 1], got {self.ctkd_ramp_fraction!r}")

    def describe(self) -> str:
        if self.method == "kd":
            what = f"KD (T={self.temperature:g}, alpha={self.alpha:g})"
        elif self.method == "dkd":
            what = f"DKD (T={self.temperature:g}, alpha={self.alpha:g}, beta={self.dkd_beta:g})"
        elif self.method == "lskd":
            what = f"LS-KD (T={self.temperature:g}, weight {self.lskd_weight:g}, alpha={self.alpha:g})"
        elif self.method == "ctkd":
            what = (f"CTKD (T from {self.temperature:g} in [{self.ctkd_t_min:g}, {self.ctkd_t_max:g}], "
                    f"alpha={self.alpha:g})")
        else:
            what = f"CE (label smoothing {self.label_smoothing:g})" if self.label_smoothing else "CE"
        return f"{what}, {self.optimizer} lr={self.lr:g}, {self.schedule}, {self.epochs} epochs, seed {self.seed}"


# TrainConfig settings added after the book's teachers and runs were stored, with their
# defaults: a configuration that leaves them at the default keeps the key it had before
# they existed (run keys in kdbook.runs, teacher keys in kdbook.teacher). A new
# TrainConfig setting goes here, by name (its default is TrainConfig's); tests/test_experiments.py
# checks every stored key. So far: chapter "Beyond Hinton" (DKD, logit-standardized KD, CTKD).
ADDED_SETTINGS: dict = {name: getattr(TrainConfig, name) for name in BEYOND_HINTON_SETTINGS}


def key_fields(config: TrainConfig) -> dict:
    """The settings of ``config`` as they enter a key: ``asdict`` without the added
    settings that still have their defaults."""
    fields = asdict(config)
    for name, default in ADDED_SETTINGS.items():
        if fields.get(name) == default:
            fields.pop(name)
    return fields


# -----------------------------------------------------------------------------
# Teachers.


class OnlineTeacher:
    """Runs a frozen teacher on each batch (the usual tutorial loop).

    The teacher is put in eval mode, its parameters stop requiring gradients, and it
    runs under ``torch.no_grad``: it never receives gradients and its BatchNorm
    statistics never move. It computes in float32 on NHWC images whatever the run's
    autocast, as the cached outputs are computed (:func:`kdbook.soft_labels.compute_teacher_logits`),
    so that an online and a cached teacher differ only in the view they see."""

    def __init__(self, model: nn.Module):
        self.model = freeze(model)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        self.model.eval()  # in case someone called .train() on it in between
        # (Also the faster choice on CPUs where autocast is bfloat16: the book's teacher took
        # 2.8 times longer per image in bfloat16 than in float32 on one thread of an AVX512 CPU.)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.model(images.contiguous(memory_format=torch.channels_last)).float()

    def __call__(self, batch: Batch) -> Tensor:
        return self.logits(batch.images)


class CachedTeacher:
    """Teacher logits computed once and looked up by sample index (and flip).

    ``logits``: (N, C) for one view per image or (N, 2, C) for (original, mirrored),
    indexed by the positions the loader reports in ``batch.indices``. Random crops are
    not cached: the looked-up logits belong to the uncropped image (or its mirror)."""

    def __init__(self, logits: Tensor, description: str = "cached teacher outputs"):
        if logits.dim() not in (2, 3) or (logits.dim() == 3 and logits.shape[1] != 2):
            raise ValueError(f"logits must be (N, C) or (N, 2, C), got {tuple(logits.shape)}")
        self.logits = logits.float()
        self.description = description

    def to(self, device) -> "CachedTeacher":
        self.logits = self.logits.to(device)
        return self

    def rows(self, positions: Tensor) -> "CachedTeacher":
        """The table of a subset: row k is this table's row ``positions[k]``."""
        return CachedTeacher(self.logits[positions.to(self.logits.device)], self.description)

    def check_covers(self, loader: TensorLoader) -> None:
        """Raises unless every sample the loader yields has a row here."""
        largest = int(loader.indices.max())
        if largest >= len(self.logits):
            raise ValueError(
                f"the loader yields sample index {largest} but the cached teacher has "
                f"{len(self.logits)} rows: cache logits for the full array the loader indexes "
                "(batch.indices are positions in it, not in the subset)"
            )

    def __call__(self, batch: Batch) -> Tensor:
        if self.logits.dim() == 2:
            return self.logits[batch.indices]
        return self.logits[batch.indices, batch.flipped.long()]


def as_teacher(teacher) -> OnlineTeacher | CachedTeacher | None:
    if teacher is None or isinstance(teacher, (OnlineTeacher, CachedTeacher)):
        return teacher
    if isinstance(teacher, nn.Module):
        return OnlineTeacher(teacher)
    raise TypeError(
        f"teacher must be an nn.Module, OnlineTeacher, CachedTeacher or None, got {type(teacher).__name__}"
    )


# -----------------------------------------------------------------------------
# One step, one epoch.


def autocast(device: torch.device, enabled: bool):
    """Autocast in the device's dtype (:func:`kdbook.settings.autocast_dtype`), or nothing
    (not enabled, or a device whose mixed precision is float32)."""
    dtype = settings.autocast_dtype(device) if enabled else torch.float32
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, config: TrainConfig) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast (a disabled scaler, which changes nothing, otherwise):
    the loss is multiplied by a large factor before backward so that small float16
    gradients do not underflow to 0, and the gradients are divided by it before the step."""
    float16 = config.amp and settings.autocast_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=float16)


UNLABELLED = -1  # label of a training sample whose class is not given (KD only)


def batch_losses(logits: Tensor, labels: Tensor, config: TrainConfig, teacher_logits: Tensor | None,
                 learned_temperature: LearnedTemperature | None = None) -> dict[str, Tensor]:
    """The loss of one batch and its parts, for the configured method.

    With distillation, samples labelled :data:`UNLABELLED` contribute to the soft term
    only (DKD, whose soft term needs the label, refuses them); the hard term averages
    over the labelled samples of the batch. ``ctkd`` needs ``learned_temperature``
    (called once: one training step of its curriculum)."""
    logits = logits.float()
    if config.method == "ce":
        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        return {"loss": loss, "hard": loss}
    if config.method == "kd":
        return distillation_loss_parts(logits, teacher_logits, labels, config.temperature, config.alpha,
                                       label_smoothing=config.label_smoothing, ignore_index=UNLABELLED)
    return _beyond_hinton_losses(logits, labels, config, teacher_logits, learned_temperature)


def _beyond_hinton_losses(logits, labels, config, teacher_logits, learned_temperature) -> dict[str, Tensor]:
    """``alpha * CE + (1 - alpha) * soft`` with the soft term of DKD, LS-KD or CTKD."""
    parts: dict[str, Tensor] = {}
    if config.method == "dkd":
        if bool((labels == UNLABELLED).any()):
            raise ValueError("method='dkd' needs the label of every sample (its soft term splits off the "
                             "target class); train_on_unlabelled is not available with DKD")
        dkd = dkd_loss_parts(logits, teacher_logits, labels, config.temperature, config.dkd_alpha, config.dkd_beta)
        soft, parts = dkd["loss"], {"tckd": dkd["tckd"], "nckd": dkd["nckd"]}
    elif config.method == "lskd":
        soft = config.lskd_weight * standardized_distillation_loss(logits, teacher_logits, config.temperature)
    elif config.method == "ctkd":
        if learned_temperature is None:
            raise ValueError("method='ctkd' needs learned_temperature (a LearnedTemperature module)")
        T = learned_temperature()
        soft = learned_temperature_loss(logits, teacher_logits, T)
        parts = {"temperature": T.detach()}
    else:
        raise ValueError(f"method must be one of {DISTILLATION_METHODS}, got {config.method!r}")
    hard = hard_label_loss(logits, labels, config.label_smoothing, ignore_index=UNLABELLED)
    return {"loss": config.alpha * hard + (1 - config.alpha) * soft, "hard": hard, "soft": soft, **parts}


def make_learned_temperature(config: TrainConfig, steps_per_epoch: int) -> LearnedTemperature | None:
    """CTKD's temperature module for a ``ctkd`` run (None for the other methods)."""
    if config.method != "ctkd":
        return None
    return LearnedTemperature(steps_per_epoch * config.epochs, initial=config.temperature, t_min=config.ctkd_t_min,
                              t_max=config.ctkd_t_max, lambda_max=config.ctkd_lambda_max,
                              ramp_fraction=config.ctkd_ramp_fraction)


def train_epoch(model, loader, optimizer, scheduler, config, teacher=None, progress=True, desc="train",
                scaler: torch.amp.GradScaler | None = None,
                learned_temperature: LearnedTemperature | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns sample-weighted mean losses and the training
    accuracy on the labelled samples (augmented, measured while training).
    ``learned_temperature``: CTKD's module (its parameter must be in ``optimizer``)."""
    model.train()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    seen = seen_labelled = correct = 0
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        with autocast(device, config.amp):
            # An online teacher computes in float32 (OnlineTeacher); a cached table is a lookup.
            teacher_logits = teacher(batch) if teacher is not None else None
            logits = model(batch.images.contiguous(memory_format=layout))
        parts = batch_losses(logits, batch.labels, config, teacher_logits, learned_temperature)
        if not torch.isfinite(parts["loss"]):
            raise FloatingPointError(f"loss became {parts['loss'].item()} ({config.describe()})")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(parts["loss"]).backward()
            scaler.step(optimizer)  # skipped when a gradient overflowed; the scale then shrinks
            scaler.update()
        else:
            parts["loss"].backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = len(batch.labels)
        seen += n
        labelled = batch.labels != UNLABELLED
        seen_labelled += int(labelled.sum())
        correct += int(((logits.argmax(1) == batch.labels) & labelled).sum())
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
    return {**{k: v / seen for k, v in totals.items()}, "train_acc": correct / max(seen_labelled, 1)}


@torch.no_grad()
def predict_logits(model: nn.Module, loader: TensorLoader, tta: bool = False, amp: bool = False) -> Tensor:
    """Logits for every sample of an unshuffled loader, in loader order (float32, on CPU).

    ``tta=True`` averages the logits of each image and its mirror image."""
    if loader.shuffle or loader.augment:
        raise ValueError("predict_logits needs a loader with shuffle=False and augment=False")
    device = next(model.parameters()).device
    out = []
    with evaluating(model):
        for batch in loader:
            with autocast(device, amp):
                logits = model(batch.images).float()
                if tta:
                    logits = (logits + model(batch.images.flip(3)).float()) / 2
            out.append(logits.cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, loader: TensorLoader, tta: bool = False, amp: bool = False) -> dict[str, float]:
    """``acc`` (accuracy) and ``loss`` (mean cross-entropy) over an unshuffled loader: the
    vocabulary of every result (``train_acc``, ``test_acc``, ``val_acc``)."""
    logits = predict_logits(model, loader, tta=tta, amp=amp)
    labels = loader.labels.cpu()
    return {
        "acc": float((logits.argmax(1) == labels).float().mean()),
        "loss": float(F.cross_entropy(logits, labels)),
    }


# -----------------------------------------------------------------------------
# Optimiser, schedule, seeding.


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` of ``total``."""
    progress = step / max(total, 1)
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    warm = config.warmup_fraction
    if warm and progress < warm:
        return progress / warm
    return max(0.0, (1 - progress) / (1 - warm))


def make_scheduler(optimizer, steps_per_epoch: int, config: TrainConfig):
    total = steps_per_epoch * config.epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, config))


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices); model initialisation depends on it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -----------------------------------------------------------------------------
# Checkpoints and the loop.


@dataclass
class History:
    """Per-epoch records of a run: losses, accuracies, learning rate, seconds."""

    epochs: list[dict] = field(default_factory=list)

    def column(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]


def fit(
    model: nn.Module,
    train_loader: TensorLoader,
    config: TrainConfig,
    *,
    eval_loader: TensorLoader | None = None,
    teacher=None,
    checkpoint: str | os.PathLike | None = None,
    stop_after: int | None = None,
    eval_every: int = 1,
    progress: bool = True,
) -> History:
    """Trains ``model`` for ``config.epochs`` epochs; returns its :class:`History`.

    With ``checkpoint``, state is saved there after every epoch and a run that finds
    a checkpoint of the same configuration continues from it: on CPU the final
    weights equal those of an unbroken run. ``stop_after=k`` trains at most k epochs
    in this call (a long run spread over several sessions). ``eval_every=k`` evaluates
    on ``eval_loader`` after every k-th epoch and the last one (runs of hundreds of
    tiny epochs would otherwise spend most of their time on evaluation)."""
    if not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
    teacher = as_teacher(teacher)
    distilling = config.method in DISTILLATION_METHODS
    if distilling != (teacher is not None):
        raise ValueError(f"method={config.method!r} {'needs' if distilling else 'takes no'} teacher")
    if isinstance(teacher, CachedTeacher):
        teacher.check_covers(train_loader)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    # CTKD's temperature is trained by the student's optimiser (same schedule), as in CTKD.
    learned = make_learned_temperature(config, len(train_loader))
    if learned is not None:
        learned.to(next(model.parameters()).device)
    optimizer = make_optimizer(model if learned is None else nn.ModuleList([model, learned]), config)
    scheduler = make_scheduler(optimizer, len(train_loader), config)
    device = next(model.parameters()).device
    scaler = grad_scaler(device, config)
    history, start = History(), 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        start, history = _resume(path, model, optimizer, scheduler, config, scaler, learned)
    end = config.epochs if stop_after is None else min(config.epochs, start + stop_after)
    bar = tqdm(range(start, end), desc=config.describe(), disable=not progress,
               initial=start, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        record = train_epoch(model, train_loader, optimizer, scheduler, config, teacher, progress, scaler=scaler,
                             learned_temperature=learned)
        if eval_loader is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
            record["test_acc"] = evaluate(model, eval_loader, amp=config.amp)["acc"]
        # Where each epoch ran: a run resumed on another machine (or in another precision) says so.
        record.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
                      device=settings.describe_device(device), autocast=settings.autocast_name(device, config.amp))
        history.epochs.append(record)
        bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "train_acc", "test_acc") if k in record})
        if path is not None:  # saved atomically: an interrupted save never replaces a good checkpoint
            with atomic_write(path) as handle:
                torch.save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch + 1,
                                history=history.epochs, config=asdict(config),
                                learned_temperature=learned.state_dict() if learned is not None else None), handle)
    return history


def _resume(path: Path, model, optimizer, scheduler, config: TrainConfig,
            scaler: torch.amp.GradScaler | None = None,
            learned: LearnedTemperature | None = None) -> tuple[int, History]:
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=False)
    # A checkpoint written before a setting existed had that setting at its default.
    stored = {**_config_defaults(), **state["config"]}
    if stored != asdict(config):
        changed = sorted(k for k in stored if stored[k] != asdict(config).get(k))
        raise ValueError(
            f"checkpoint {path} belongs to a different configuration (differs in {changed}); "
            "delete it or use another checkpoint path"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if learned is not None:
        learned.load_state_dict(state["learned_temperature"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        # The loss scale it had reached (a checkpoint from a bfloat16 or float32 run has none:
        # the scaler then starts from its initial scale).
        scaler.load_state_dict(state["scaler"])
    return state["epoch"], History(state["history"])


def _config_defaults() -> dict:
    return {f.name: f.default for f in dataclass_fields(TrainConfig)}
