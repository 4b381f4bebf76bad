"""The source text's ``DistillationTrainer``, kept for its API and fixed where it was wrong.

Differences from the source text, each for a reason the first chapter explains:

- the epoch loss is averaged per *sample*, not per batch (a short last batch would
  otherwise count as much as a full one);
- the teacher is re-put in eval mode on every call and runs under ``no_grad`` (the
  source froze it once; a later ``.train()`` on the teacher would have moved its
  BatchNorm statistics);
- inputs are moved to the student's device; loaders may yield ``(inputs, labels)``
  pairs or :class:`~kdbook.data.Batch` tuples.

For real experiments use :func:`kdbook.train.fit` (schedules, checkpoints, cached teachers).
"""

from __future__ import annotations

import torch
from torch import nn

from kdbook.losses import ResponseDistillationLoss
from kdbook.models import evaluating
from kdbook.train import OnlineTeacher


class DistillationTrainer:
    """Trains ``student`` with Hinton's loss against a frozen ``teacher``, using Adam."""

    def __init__(self, teacher: nn.Module, student: nn.Module, temperature: float = 4.0,
                 alpha: float = 0.5, lr: float = 1e-4):
        self.teacher = OnlineTeacher(teacher)
        self.student = student
        self.criterion = ResponseDistillationLoss(temperature, alpha)
        self.optimizer = torch.optim.Adam(student.parameters(), lr=lr)

    def _to_device(self, batch):
        device = next(self.student.parameters()).device
        inputs, labels = batch[0], batch[1]
        return inputs.to(device), labels.to(device)

    def train_epoch(self, loader) -> float:
        """One pass over ``loader``; returns the mean loss per sample."""
        self.student.train()
        total, seen = 0.0, 0
        for batch in loader:
            inputs, labels = self._to_device(batch)
            loss = self.criterion(self.student(inputs), self.teacher.logits(inputs), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
        return total / seen

    @torch.no_grad()
    def evaluate(self, loader) -> float:
        """Top-1 accuracy of the student on ``loader`` (a fraction in [0, 1])."""
        correct = seen = 0
        with evaluating(self.student):
            for batch in loader:
                inputs, labels = self._to_device(batch)
                correct += int((self.student(inputs).argmax(1) == labels).sum())
                seen += len(labels)
        return correct / seen
