"""kdbook.trainer.DistillationTrainer: the source text's API, with its fixes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdbook.losses import distillation_loss
from kdbook.models import StudentCNN, TeacherNet
from kdbook.train import seed_everything
from kdbook.trainer import DistillationTrainer


def _models():
    seed_everything(1)
    teacher = TeacherNet(widths=(8, 16, 16), stem=8)
    seed_everything(0)
    student = StudentCNN(width=4, depth=1)
    return teacher, student


def _pairs(loader):
    """The loader's batches as plain (inputs, labels) tuples, as a DataLoader would give."""
    return [(b.images, b.labels) for b in loader]


def test_train_epoch_on_tuples_and_on_batches(tiny_loaders):
    teacher, student = _models()
    trainer = DistillationTrainer(teacher, student, temperature=4.0, alpha=0.5, lr=1e-3)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    tiny_loaders.train.set_epoch(0)
    loss = trainer.train_epoch(_pairs(tiny_loaders.train))
    assert isinstance(loss, float) and math.isfinite(loss) and loss > 0
    assert any(not torch.equal(student.state_dict()[k], v) for k, v in before.items())
    loss2 = trainer.train_epoch(tiny_loaders.train)  # Batch namedtuples work too
    assert isinstance(loss2, float) and math.isfinite(loss2)
    assert student.training


def test_evaluate_is_a_fraction_and_matches_manual_count(tiny_loaders):
    teacher, student = _models()
    trainer = DistillationTrainer(teacher, student)
    student.train()
    for loader in (tiny_loaders.test, _pairs(tiny_loaders.test)):
        acc = trainer.evaluate(loader)
        assert 0.0 <= acc <= 1.0
        assert student.training  # mode restored
    student.eval()
    with torch.no_grad():
        correct = sum(int((student(b.images).argmax(1) == b.labels).sum()) for b in tiny_loaders.test)
    assert acc == pytest.approx(correct / len(tiny_loaders.test.labels))


def test_train_epoch_loss_is_averaged_per_sample():
    """A short last batch counts by its number of samples, not as a whole batch.
    (lr=0 keeps the student fixed, so the expected value can be computed afterwards.)"""
    torch.manual_seed(0)
    teacher, student = nn.Linear(6, 4), nn.Linear(6, 4)
    batches = [(torch.randn(5, 6), torch.randint(0, 4, (5,))), (torch.randn(1, 6) * 10, torch.tensor([3]))]
    trainer = DistillationTrainer(teacher, student, temperature=2.0, alpha=0.3, lr=0.0)
    got = trainer.train_epoch(batches)
    with torch.no_grad():
        losses = [float(distillation_loss(student(x), teacher(x), y, 2.0, 0.3)) for x, y in batches]
    per_sample = (losses[0] * 5 + losses[1] * 1) / 6
    per_batch = sum(losses) / 2
    assert got == pytest.approx(per_sample, rel=1e-5)
    assert abs(per_sample - per_batch) > 1e-3  # the two averages really differ here


def test_trainer_checks_its_arguments():
    teacher, student = _models()
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(teacher, student, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationTrainer(teacher, student, alpha=1.5)
