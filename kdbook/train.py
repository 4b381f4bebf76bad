"""One training loop for cross-entropy, label smoothing and distillation.

- ``TrainConfig``: every setting of a run in one small dataclass (printed with results).
- ``fit``: trains a model with a :class:`~kdbook.data.TensorLoader`, evaluates after each
  epoch, writes a checkpoint after every epoch and resumes from it, bit-for-bit on CPU.
- The teacher, for KD, is either run on every batch (:class:`OnlineTeacher`) or looked up
  from stored outputs by sample index and flip (:class:`CachedTeacher`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from numbers import Real
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdbook.data import Batch, TensorLoader
from kdbook.files import atomic_write
from kdbook.losses import check_alpha, check_temperature, distillation_loss_parts, soft_distillation_loss

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "constant")
METHODS = ("ce", "kd")


@dataclass
class TrainConfig:
    """Settings of one training run. ``method='kd'`` needs a teacher passed to :func:`fit`."""

    method: str = "ce"  # "ce": cross-entropy (label smoothing if label_smoothing > 0); "kd": distillation
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD only
    nesterov: bool = True  # SGD only
    weight_decay: float = 5e-4  # L2 coefficient (coupled, as in torch.optim.SGD/Adam)
    schedule: str = "onecycle"  # onecycle: linear warm-up for warmup_fraction of steps, then linear decay to 0
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.0  # epsilon of the hard term's targets (1 - eps) y + eps / n
    temperature: float = 4.0  # KD only
    alpha: float = 0.5  # KD only: weight of the hard (ground-truth) term
    amp: bool = False  # bfloat16 autocast (CUDA or CPU)
    channels_last: bool = False  # NHWC memory layout (faster convolutions with amp on CPU and GPU)
    seed: int = 0

    def __post_init__(self):
        for name in ("lr", "momentum", "weight_decay", "warmup_fraction", "label_smoothing",
                     "temperature", "alpha"):
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

    def describe(self) -> str:
        if self.method == "kd":
            what = f"KD (T={self.temperature:g}, alpha={self.alpha:g})"
        else:
            what = f"CE (label smoothing {self.label_smoothing:g})" if self.label_smoothing else "CE"
        return f"{what}, {self.optimizer} lr={self.lr:g}, {self.schedule}, {self.epochs} epochs, seed {self.seed}"


# -----------------------------------------------------------------------------
# Teachers.


class OnlineTeacher:
    """Runs a frozen teacher on each batch (the usual tutorial loop).

    The teacher is put in eval mode, its parameters stop requiring gradients, and it
    runs under ``torch.no_grad``: it never receives gradients and its BatchNorm
    statistics never move."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        self.model.eval()  # in case someone called .train() on it in between
        return self.model(images).float()

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
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


UNLABELLED = -1  # label of a training sample whose class is not given (KD only)


def batch_losses(logits: Tensor, labels: Tensor, config: TrainConfig, teacher_logits: Tensor | None) -> dict[str, Tensor]:
    """The loss of one batch and its parts, for the configured method.

    With KD, samples labelled :data:`UNLABELLED` contribute to the soft term only;
    the hard term averages over the labelled samples of the batch."""
    logits = logits.float()
    if config.method == "ce":
        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        return {"loss": loss, "hard": loss}
    labelled = labels != UNLABELLED
    if bool(labelled.all()):
        return distillation_loss_parts(logits, teacher_logits, labels, config.temperature, config.alpha,
                                       label_smoothing=config.label_smoothing)
    soft = soft_distillation_loss(logits, teacher_logits, config.temperature)
    if bool(labelled.any()):
        hard = F.cross_entropy(logits[labelled], labels[labelled], label_smoothing=config.label_smoothing)
    else:
        hard = torch.zeros((), device=logits.device)
    return {"loss": config.alpha * hard + (1 - config.alpha) * soft, "hard": hard, "soft": soft}


def train_epoch(model, loader, optimizer, scheduler, config, teacher=None, progress=True, desc="train") -> dict[str, float]:
    """One pass over ``loader``; returns sample-weighted mean losses and the training
    accuracy on the labelled samples (augmented, measured while training)."""
    model.train()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    seen = seen_labelled = correct = 0
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        teacher_logits = teacher(batch) if teacher is not None else None
        with autocast(device, config.amp):
            logits = model(batch.images.contiguous(memory_format=layout))
        parts = batch_losses(logits, batch.labels, config, teacher_logits)
        if not torch.isfinite(parts["loss"]):
            raise FloatingPointError(f"loss became {parts['loss'].item()} ({config.describe()})")
        optimizer.zero_grad(set_to_none=True)
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
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in loader:
        with autocast(device, amp):
            logits = model(batch.images).float()
            if tta:
                logits = (logits + model(batch.images.flip(3)).float()) / 2
        out.append(logits.cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate(model: nn.Module, loader: TensorLoader, tta: bool = False, amp: bool = False) -> dict[str, float]:
    """Accuracy and mean cross-entropy over an unshuffled loader."""
    logits = predict_logits(model, loader, tta=tta, amp=amp)
    labels = loader.labels.cpu()
    return {
        "accuracy": float((logits.argmax(1) == labels).float().mean()),
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


def save_checkpoint(path: Path, **state) -> None:
    """Saves atomically: an interrupted save never replaces a good checkpoint."""
    with atomic_write(path) as handle:
        torch.save(state, handle)


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
    if (config.method == "kd") != (teacher is not None):
        raise ValueError(f"method={config.method!r} {'needs' if config.method == 'kd' else 'takes no'} teacher")
    if isinstance(teacher, CachedTeacher):
        teacher.check_covers(train_loader)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, len(train_loader), config)
    history, start = History(), 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        start, history = _resume(path, model, optimizer, scheduler, config)
    end = config.epochs if stop_after is None else min(config.epochs, start + stop_after)
    bar = tqdm(range(start, end), desc=config.describe(), disable=not progress,
               initial=start, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        record = train_epoch(model, train_loader, optimizer, scheduler, config, teacher, progress)
        if eval_loader is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
            record["test_acc"] = evaluate(model, eval_loader, amp=config.amp)["accuracy"]
        record.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
        history.epochs.append(record)
        bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "train_acc", "test_acc") if k in record})
        if path is not None:
            save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), epoch=epoch + 1,
                            history=history.epochs, config=asdict(config))
    return history


def _resume(path: Path, model, optimizer, scheduler, config: TrainConfig) -> tuple[int, History]:
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=False)
    if state["config"] != asdict(config):
        changed = sorted(k for k in state["config"] if state["config"][k] != asdict(config).get(k))
        raise ValueError(
            f"checkpoint {path} belongs to a different configuration (differs in {changed}); "
            "delete it or use another checkpoint path"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], History(state["history"])
