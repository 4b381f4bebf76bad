"""kdbook.analysis.analyze_dark_knowledge."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from kdbook.analysis import analyze_dark_knowledge, entropy


def _linear_teacher(scale: float = 1.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def _inputs(n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_shapes_and_values():
    teacher = _linear_teacher(scale=3.0)
    x, y = _inputs()
    dk = analyze_dark_knowledge(teacher, x, y, temperature=4.0, k=3)
    assert dk.temperature == 4.0
    for probs in (dk.probs_t1, dk.probs_T):
        assert probs.shape == (16, 10)
        torch.testing.assert_close(probs.sum(1), torch.ones(16))
    for e in (dk.entropy_t1, dk.entropy_T, dk.label_prob_t1, dk.label_prob_T):
        assert e.shape == (16,)
    assert dk.topk_t1.values.shape == dk.topk_T.indices.shape == (16, 3)
    with torch.no_grad():
        logits = teacher(x)
    torch.testing.assert_close(dk.probs_t1, logits.softmax(1))
    torch.testing.assert_close(dk.probs_T, (logits / 4).softmax(1))
    # Entropy in nats, checked against -sum p log p where no probability is 0.
    torch.testing.assert_close(dk.entropy_t1, -(dk.probs_t1 * dk.probs_t1.log()).sum(1))
    # The label probabilities are the entries at the labels.
    torch.testing.assert_close(dk.label_prob_t1, dk.probs_t1[torch.arange(16), y])
    torch.testing.assert_close(dk.label_prob_T, dk.probs_T[torch.arange(16), y])
    # Top-k: sorted, and the largest entries.
    assert (dk.topk_T.values[:, :-1] >= dk.topk_T.values[:, 1:]).all()
    torch.testing.assert_close(dk.topk_t1.values[:, 0], dk.probs_t1.max(1).values)


def test_huge_logits_give_no_nan():
    teacher = _linear_teacher(scale=1e4)
    x, y = _inputs()
    dk = analyze_dark_knowledge(teacher, x, y, temperature=4.0)
    assert (dk.probs_t1 == 0).any()  # underflow: exactly the case where p log p is nan
    for e in (dk.entropy_t1, dk.entropy_T):
        assert torch.isfinite(e).all()
        assert (e >= 0).all() and (e <= math.log(10) + 1e-5).all()
    assert torch.equal(entropy(torch.tensor([[1.0, 0.0, 0.0]])), torch.tensor([0.0]))


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 1e4])
def test_entropy_grows_with_temperature(scale):
    """dH/dT = Var_p(z) / T^3 >= 0: a higher temperature never lowers the entropy."""
    teacher = _linear_teacher(scale=scale)
    x, y = _inputs(n=64)
    dk = analyze_dark_knowledge(teacher, x, y, temperature=4.0)
    assert (dk.entropy_T >= dk.entropy_t1 - 1e-5).all()
    if scale <= 10:
        assert (dk.entropy_T > dk.entropy_t1).all()  # strictly, for non-constant logits
    # ...and for a ladder of temperatures.
    entropies = [analyze_dark_knowledge(teacher, x, y, temperature=t).entropy_T for t in (0.5, 1, 2, 4, 8)]
    for lower, higher in itertools.pairwise(entropies):
        assert (higher >= lower - 1e-5).all()


@pytest.mark.parametrize("k", [0, -1, 11])
def test_bad_k_raises(k):
    x, y = _inputs()
    with pytest.raises(ValueError, match=r"\bk\b"):
        analyze_dark_knowledge(_linear_teacher(), x, y, k=k)


def test_bad_arguments_raise():
    x, y = _inputs()
    with pytest.raises(ValueError, match="labels"):
        analyze_dark_knowledge(_linear_teacher(), x, y[:-1])
    with pytest.raises(ValueError, match="temperature"):
        analyze_dark_knowledge(_linear_teacher(), x, y, temperature=0.0)


@pytest.mark.parametrize("training", [True, False])
def test_teacher_mode_is_restored_and_run_in_eval(training):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 10))
    teacher.train(training)
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = _inputs()
    analyze_dark_knowledge(teacher, x, y)
    assert teacher.training is training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, buffers[key]), key  # BatchNorm statistics did not move
