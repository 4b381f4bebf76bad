import math

import pytest
import torch

from kdbook.fidelity import fidelity


def test_a_copy_of_the_teacher_has_perfect_fidelity():
    z = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 5
    labels = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(1))
    f = fidelity(z.clone(), z, labels)
    assert f["agreement"] == 1.0 and f["errors_copied"] == 1.0
    assert f["kl"] == 0.0  # the same float64 numbers: exactly zero


def test_counts_by_hand():
    # teacher: right on rows 0 and 1, wrong on rows 2 and 3 (predicts 1 where label 0)
    teacher = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 5.0, 0]])
    student = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 0, 0])
    f = fidelity(student, teacher, labels)
    assert f["agreement"] == pytest.approx(2 / 4)
    assert f["teacher_errors"] == 2 and f["errors_copied"] == pytest.approx(1 / 2)
    # KL of one row by the formula, in float64
    pt = torch.softmax(teacher[1].double(), 0)
    ps = torch.softmax(student[1].double(), 0)
    row = float((pt * (pt / ps).log()).sum())
    assert f["kl"] * 4 == pytest.approx(2 * row, rel=1e-12)  # rows 1 and 3 differ, same KL


def test_no_teacher_errors_gives_nan_not_a_division_error():
    z = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    assert math.isnan(fidelity(z, z, torch.tensor([0, 1]))["errors_copied"])


def test_shapes_are_checked_by_name():
    with pytest.raises(ValueError, match="same shape"):
        fidelity(torch.zeros(3, 10), torch.zeros(3, 9), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have shape"):
        fidelity(torch.zeros(3, 10), torch.zeros(3, 10), torch.zeros(4, dtype=torch.long))
