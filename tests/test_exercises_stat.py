"""The checker of the chapter "Why distillation helps" (kdbook.exercises.why_distillation_helps):
right answers pass, each known mistake is caught and named, placeholders pass through."""

from __future__ import annotations

import re

import pytest
import torch

from kdbook.exercises import ExerciseFailure, Unsolved, placeholder
from kdbook.exercises import why_distillation_helps as ex


def ece_from_scratch(probs, labels, n_bins=15):
    """A right answer written the way the exercise suggests (ceil for right-closed bins)."""
    probs = probs.double()
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    index = (torch.ceil(confidence * n_bins) - 1).clamp(0, n_bins - 1).long()
    total = 0.0
    for b in range(n_bins):
        members = index == b
        if members.any():
            total += members.double().mean() * (correct[members].mean() - confidence[members].mean()).abs()
    return total


def test_right_answers_pass():
    assert ex.check_expected_calibration_error(ece_from_scratch) == "ex-stat-ece: all 6 checks passed"
    assert ex.check_expected_calibration_error(ex.reference_expected_calibration_error).endswith("passed")


def test_reference_values_by_hand():
    cases = {name: args for name, _, args in ex.cases()}
    assert ex.reference_expected_calibration_error(**cases["one bin: confidence 0.9, accuracy 1/2"]) == \
        pytest.approx(0.4, abs=1e-15)
    # 3/4 |1/3 - 0.9| + 1/4 |1 - 0.6|
    assert ex.reference_expected_calibration_error(**cases["two groups of different size: weights n_b / N"]) == \
        pytest.approx(0.75 * (0.9 - 1 / 3) + 0.25 * 0.4, abs=1e-15)


@pytest.mark.parametrize("description, wrong", ex.MISTAKES,
                         ids=[re.sub(r"\W+", "-", d[:40]).strip("-") for d, _ in ex.MISTAKES])
def test_each_known_mistake_is_caught_and_named(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        ex.check_expected_calibration_error(wrong)
    message = str(failure.value)
    assert f"Your result is what you get when {description}." in message
    assert "Hint:" in message and "expected" in message


def test_nan_from_empty_bins_is_reported():
    def zero_over_zero(probs, labels, n_bins=15):  # empty bins give 0/0 = nan
        confidence, predicted = probs.double().max(dim=1)
        index = (torch.ceil(confidence * n_bins) - 1).clamp(0, n_bins - 1).long()
        counts = torch.bincount(index, minlength=n_bins).double()
        conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence) / counts
        acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, (predicted == labels).double()) / counts
        return (counts / len(labels) * (acc - conf).abs()).sum()

    with pytest.raises(ExerciseFailure, match=r"case 2 of 6 .*got nan"):
        ex.check_expected_calibration_error(zero_over_zero)


def test_placeholder_passes_through_and_wrong_names_are_explained():
    with pytest.raises(Unsolved):
        ex.check_expected_calibration_error(lambda probs, labels, n_bins=15: placeholder("ex-stat-ece"))
    with pytest.raises(ExerciseFailure, match="parameter names"):
        ex.check_expected_calibration_error(lambda p, y, bins=15: 0.0)
