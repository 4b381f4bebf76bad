"""kdbook.unseen_class: the bias of a class the student never saw, chosen without the test set."""

from __future__ import annotations

import pytest
import torch

from kdbook.unseen_class import bias_shift, margins, omitted_class_report, with_bias


def test_margins_are_the_gap_to_the_largest_other_logit():
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, -1.0, 5.0]])
    assert torch.equal(margins(logits, 0), torch.tensor([2.0, 3.0]))
    assert torch.equal(margins(logits, 1), torch.tensor([-2.0, 6.0]))


@pytest.mark.parametrize("share", [0.05, 0.1, 0.5])
def test_the_shift_makes_the_class_the_prediction_on_the_share_asked_for(share):
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(10_000, 10, generator=gen)
    logits[:, 3] -= 8  # a class the student almost never predicts
    assert (logits.argmax(1) == 3).float().mean() < 0.01
    delta = bias_shift(logits, 3, share)
    predicted = (with_bias(logits, 3, delta).argmax(1) == 3).float().mean().item()
    assert abs(predicted - share) <= 2 / len(logits)  # a quantile between two rows, at most
    assert torch.equal(with_bias(logits, 3, 0.0), logits)  # a copy, not changed in place


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5])
def test_share_outside_the_open_unit_interval_is_refused(share):
    with pytest.raises(ValueError, match="share must lie in"):
        bias_shift(torch.randn(5, 3), 0, share)


def test_report_counts_the_class_before_and_after_on_the_test_set():
    # Pool: class 2 is the top class on no row; its margin is 1 on half the rows, 3 on the rest.
    pool = torch.tensor([[2.0, 0.0, 1.0]] * 5 + [[4.0, 0.0, 1.0]] * 5)
    test = torch.tensor([[2.0, 0.0, 0.5], [2.0, 0.0, -5.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([2, 2, 1])
    report = omitted_class_report(pool, test, labels, cls=2, share=0.5)
    assert report["bias_shift"] == pytest.approx(2.0)  # the median margin: between 1 and 3
    assert report["pool_predicted_before"] == 0.0
    assert report["class_test_acc_before"] == 0.0
    assert report["class_test_acc_after"] == 0.5  # 0.5 + 2 > 2 on the first row only
    assert report["test_acc_before"] == pytest.approx(1 / 3)
    assert report["test_acc_after"] == pytest.approx(2 / 3)
