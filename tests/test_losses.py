"""kdbook.losses against float64 references written from the formulas, closed-form
gradients, input checks, numerical stability and teacher isolation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbook.losses import (
    ResponseDistillationLoss,
    SoftLabelDistillationLoss,
    distillation_loss,
    distillation_loss_parts,
    hard_label_loss,
    label_smoothing_targets,
    soft_distillation_loss,
    soft_targets,
)

# -----------------------------------------------------------------------------
# References in numpy float64, written from the formulas of the module docstring.


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def ref_soft(zs, zt, T, scale_by_t2=True) -> float:
    """T^2 * mean over the batch of sum_i p_t log(p_t / p_s), at temperature T."""
    zs, zt = np.asarray(zs, np.float64), np.asarray(zt, np.float64)
    log_pt, log_ps = np_log_softmax(zt / T), np_log_softmax(zs / T)
    kl = float(np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1)))
    return T**2 * kl if scale_by_t2 else kl


def ref_ce(zs, y) -> float:
    zs = np.asarray(zs, np.float64)
    return float(-np.mean(np_log_softmax(zs)[np.arange(len(y)), np.asarray(y)]))


def ref_kd(zs, zt, y, T, alpha) -> float:
    return alpha * ref_ce(zs, y) + (1 - alpha) * ref_soft(zs, zt, T)


def random_case(seed: int, n: int = 7, c: int = 5, scale: float = 3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    zt = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return zs, zt, y


TEMPERATURES = [0.5, 1.0, 2.0, 4.0, 10.0]
ALPHAS = [0.0, 0.3, 0.5, 1.0]


# -----------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_distillation_loss_matches_float64_reference(T, alpha):
    zs, zt, y = random_case(seed=int(T * 10 + alpha * 100))
    expected = ref_kd(zs.numpy(), zt.numpy(), y.numpy(), T, alpha)
    got = distillation_loss(zs, zt, y, T, alpha)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    module = ResponseDistillationLoss(temperature=T, alpha=alpha)
    assert module(zs, zt, y).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("T", TEMPERATURES)
def test_distillation_loss_float32_close_to_reference(T):
    zs, zt, y = random_case(seed=3, n=16, c=10, dtype=torch.float32)
    expected = ref_kd(zs.double().numpy(), zt.double().numpy(), y.numpy(), T, 0.3)
    got = distillation_loss(zs, zt, y, T, 0.3)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("T", TEMPERATURES)
def test_loss_parts_are_the_two_terms(T):
    zs, zt, y = random_case(seed=11)
    parts = distillation_loss_parts(zs, zt, y, T, 0.25)
    assert parts["hard"].item() == pytest.approx(ref_ce(zs.numpy(), y.numpy()), rel=1e-10)
    assert parts["soft"].item() == pytest.approx(ref_soft(zs.numpy(), zt.numpy(), T), rel=1e-10, abs=1e-12)
    assert parts["loss"].item() == pytest.approx(0.25 * parts["hard"].item() + 0.75 * parts["soft"].item(), rel=1e-12)


def test_batchmean_not_classmean():
    """The KL is summed over classes and averaged over samples: independent of the
    number of classes padding (a 'mean' reduction would divide by C)."""
    zs, zt, _ = random_case(seed=5, n=4, c=3)
    base = soft_distillation_loss(zs, zt, 2.0)
    # Append two classes that both models give -inf-like (negligible) probability.
    pad = torch.full((4, 2), -1e3, dtype=torch.float64)
    padded = soft_distillation_loss(torch.cat([zs, pad], 1), torch.cat([zt, pad], 1), 2.0)
    assert padded.item() == pytest.approx(base.item(), rel=1e-9)


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("scale_by_t2", [True, False])
def test_soft_label_loss_is_the_soft_term(T, scale_by_t2):
    zs, zt, _ = random_case(seed=21)
    expected = ref_soft(zs.numpy(), zt.numpy(), T, scale_by_t2)
    module = SoftLabelDistillationLoss(temperature=T, scale_by_t2=scale_by_t2)
    assert module(zs, zt).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert soft_distillation_loss(zs, zt, T, scale_by_t2=scale_by_t2).item() == pytest.approx(
        expected, rel=1e-10, abs=1e-12)


def test_soft_term_is_zero_when_student_equals_teacher():
    zs, _, _ = random_case(seed=8)
    assert soft_distillation_loss(zs, zs.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-12)
    # ...and also when the logits differ by a per-sample constant (softmax is shift invariant).
    shifted = zs + torch.arange(len(zs), dtype=zs.dtype)[:, None] * 7
    assert soft_distillation_loss(zs, shifted, 3.0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("T", TEMPERATURES)
def test_teacher_probs_equal_teacher_logits(T):
    zs, zt, y = random_case(seed=31)
    probs = soft_targets(zt, T)
    assert torch.allclose(probs.sum(1), torch.ones(len(zt), dtype=zt.dtype))
    by_logits = distillation_loss(zs, zt, y, T, 0.4)
    by_probs = distillation_loss(zs, None, y, T, 0.4, teacher_probs=probs)
    assert by_probs.item() == pytest.approx(by_logits.item(), rel=1e-10)
    soft_logits = SoftLabelDistillationLoss(T)(zs, zt)
    soft_probs = SoftLabelDistillationLoss(T)(zs, teacher_probs=probs)
    assert soft_probs.item() == pytest.approx(soft_logits.item(), rel=1e-10, abs=1e-12)
    module = ResponseDistillationLoss(T, 0.4)
    assert module(zs, None, y, teacher_probs=probs).item() == pytest.approx(by_logits.item(), rel=1e-10)


def test_soft_targets_is_tempered_softmax():
    zs, _, _ = random_case(seed=2)
    for T in TEMPERATURES:
        expected = np.exp(np_log_softmax(zs.numpy() / T))
        np.testing.assert_allclose(soft_targets(zs, T).numpy(), expected, rtol=1e-12)
    # Higher temperature flattens: the largest probability never grows with T.
    maxima = [soft_targets(zs, T).max(1).values for T in TEMPERATURES]
    for lower, higher in itertools.pairwise(maxima):
        assert (higher <= lower + 1e-12).all()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
def test_label_smoothing_equals_ce_with_smoothed_targets(eps):
    zs, zt, y = random_case(seed=41)
    c = zs.shape[1]
    q = label_smoothing_targets(y, c, eps).double()
    assert torch.allclose(q.sum(1), torch.ones(len(y), dtype=torch.float64))
    assert torch.allclose(q[torch.arange(len(y)), y], torch.full((len(y),), 1 - eps + eps / c, dtype=torch.float64))
    expected_hard = float(-(q * F.log_softmax(zs, dim=1)).sum(1).mean())
    parts = distillation_loss_parts(zs, zt, y, 2.0, 0.6, label_smoothing=eps)
    assert parts["hard"].item() == pytest.approx(expected_hard, rel=1e-6)
    assert parts["soft"].item() == pytest.approx(ref_soft(zs.numpy(), zt.numpy(), 2.0), rel=1e-10)
    loss = distillation_loss(zs, zt, y, 2.0, 0.6, label_smoothing=eps)
    assert loss.item() == pytest.approx(0.6 * expected_hard + 0.4 * parts["soft"].item(), rel=1e-6)


def test_label_smoothing_targets_values():
    q = label_smoothing_targets(torch.tensor([2, 0]), 4, 0.2)
    expected = torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]])
    assert torch.allclose(q, expected)
    with pytest.raises(ValueError, match="num_classes"):
        label_smoothing_targets(torch.tensor([0]), 1, 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothing_targets(torch.tensor([0]), 3, 1.5)
    with pytest.raises(ValueError, match="labels"):
        label_smoothing_targets(torch.tensor([3]), 3, 0.1)


# -----------------------------------------------------------------------------
# Gradients against their closed forms.


@pytest.mark.parametrize("T", TEMPERATURES)
def test_soft_term_gradient_closed_form(T):
    zs, zt, _ = random_case(seed=51, n=1)
    zs.requires_grad_(True)
    ps, pt = F.softmax(zs.detach() / T, 1), F.softmax(zt / T, 1)

    (grad,) = torch.autograd.grad(soft_distillation_loss(zs, zt, T, scale_by_t2=False), zs)
    torch.testing.assert_close(grad, (ps - pt) / T, rtol=1e-10, atol=1e-12)

    (grad_t2,) = torch.autograd.grad(soft_distillation_loss(zs, zt, T), zs)
    torch.testing.assert_close(grad_t2, T * (ps - pt), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_full_loss_gradient_closed_form(T, alpha):
    zs, zt, y = random_case(seed=61, n=6, c=4)
    zs.requires_grad_(True)
    (grad,) = torch.autograd.grad(distillation_loss(zs, zt, y, T, alpha), zs)
    p = F.softmax(zs.detach(), 1)
    onehot = F.one_hot(y, 4).double()
    ps, pt = F.softmax(zs.detach() / T, 1), F.softmax(zt / T, 1)
    expected = (alpha * (p - onehot) + (1 - alpha) * T * (ps - pt)) / len(y)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)

    # Same gradient when the teacher comes as probabilities.
    zs2 = zs.detach().clone().requires_grad_(True)
    (grad_p,) = torch.autograd.grad(distillation_loss(zs2, None, y, T, alpha, teacher_probs=pt), zs2)
    torch.testing.assert_close(grad_p, expected, rtol=1e-9, atol=1e-12)


# -----------------------------------------------------------------------------
# Input checks: each error names the argument.


def _good():
    zs, zt, y = random_case(seed=71, n=4, c=5, dtype=torch.float32)
    return {"student_logits": zs, "teacher_logits": zt, "labels": y, "temperature": 4.0, "alpha": 0.5}


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


BAD_INPUTS = [
    # (changes to the good arguments, exception type, argument named in the message)
    ({"temperature": 0}, ValueError, "temperature"),
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": -1.0}, ValueError, "temperature"),
    ({"temperature": math.inf}, ValueError, "temperature"),
    ({"temperature": math.nan}, ValueError, "temperature"),
    ({"temperature": "4"}, TypeError, "temperature"),
    ({"temperature": True}, TypeError, "temperature"),
    ({"temperature": torch.tensor(4.0)}, TypeError, "temperature"),
    ({"alpha": -0.1}, ValueError, "alpha"),
    ({"alpha": 1.1}, ValueError, "alpha"),
    ({"alpha": math.nan}, ValueError, "alpha"),
    ({"alpha": math.inf}, ValueError, "alpha"),
    ({"alpha": True}, TypeError, "alpha"),
    ({"alpha": "0.5"}, TypeError, "alpha"),
    ({"teacher_logits": torch.randn(3, 5)}, ValueError, "teacher_logits"),  # batch mismatch
    ({"teacher_logits": torch.randn(5, 5)}, ValueError, "teacher_logits"),  # batch mismatch
    ({"teacher_logits": torch.randn(4, 6)}, ValueError, "teacher_logits"),  # class mismatch
    ({"teacher_logits": torch.randn(4)}, ValueError, "teacher_logits"),  # 1-D
    ({"teacher_logits": torch.randn(4, 5, 1)}, ValueError, "teacher_logits"),  # 3-D
    ({"teacher_logits": torch.ones(4, 5, dtype=torch.int64)}, TypeError, "teacher_logits"),
    ({"teacher_logits": np.zeros((4, 5), np.float32)}, TypeError, "teacher_logits"),
    ({"labels": torch.tensor([0, 1, -1, 2])}, ValueError, "labels"),
    ({"labels": torch.tensor([0, 1, 5, 2])}, ValueError, "labels"),  # == C
    ({"labels": torch.tensor([0.0, 1.0, 2.0, 3.0])}, TypeError, "labels"),
    ({"labels": torch.tensor([0, 1, 2, 3], dtype=torch.int32)}, TypeError, "labels"),
    ({"labels": torch.tensor([0, 1, 2, 3], dtype=torch.uint8)}, TypeError, "labels"),
    ({"labels": torch.tensor([[0], [1], [2], [3]])}, ValueError, "labels"),
    ({"labels": torch.tensor([0, 1, 2])}, ValueError, "labels"),
    ({"labels": torch.tensor(0)}, ValueError, "labels"),
    ({"labels": [0, 1, 2, 3]}, TypeError, "labels"),
    ({"student_logits": torch.randn(4)}, ValueError, "student_logits"),  # 1-D
    ({"student_logits": torch.randn(4, 5, 2)}, ValueError, "student_logits"),  # 3-D
    # one class (fixed values: a random sign would change the test id from one process to another)
    ({"student_logits": torch.tensor([[0.5], [-1.0], [2.0], [0.0]]), "teacher_logits": torch.tensor([[1.0], [-0.5], [0.0], [3.0]]),
      "labels": torch.zeros(4, dtype=torch.int64)}, ValueError, "student_logits"),
    ({"student_logits": torch.ones(4, 5, dtype=torch.int64)}, TypeError, "student_logits"),
    ({"student_logits": [[0.0] * 5] * 4}, TypeError, "student_logits"),
    ({"student_logits": np.zeros((4, 5), np.float32)}, TypeError, "student_logits"),
    ({"teacher_logits": None}, ValueError, "teacher_probs"),  # neither
    ({"teacher_probs": torch.full((4, 5), 0.2)}, ValueError, "teacher_logits"),  # both
    ({"teacher_logits": None, "teacher_probs": _probs([[1.2, -0.2, 0, 0, 0]] * 4)}, ValueError, "teacher_probs"),
    ({"teacher_logits": None, "teacher_probs": _probs([[0.5, 0.1, 0, 0, 0]] * 4)}, ValueError, "teacher_probs"),
    ({"teacher_logits": None, "teacher_probs": _probs([[2.0, 0, 0, 0, 0]] * 4)}, ValueError, "teacher_probs"),
    ({"teacher_logits": None, "teacher_probs": _probs([[math.nan, 1, 0, 0, 0]] * 4)}, ValueError, "teacher_probs"),
    ({"teacher_logits": None, "teacher_probs": _probs([[0.2] * 5] * 3)}, ValueError, "teacher_probs"),
    ({"teacher_logits": None, "teacher_probs": torch.ones(4, 5, dtype=torch.int64)}, TypeError, "teacher_probs"),
    ({"label_smoothing": -0.1}, ValueError, "label_smoothing"),
    ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
    ({"label_smoothing": True}, TypeError, "label_smoothing"),
]


def _describe(value) -> str:
    """A stable test id for an argument value (no random numbers in ids: pytest-xdist
    workers must collect the same ids)."""
    if isinstance(value, torch.Tensor):
        kind = "probs" if value.is_floating_point() and value.dim() == 2 and bool((value >= 0).all()) else "tensor"
        return f"{kind}{list(value.shape)}{str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, np.ndarray):
        return f"ndarray{list(value.shape)}"
    if isinstance(value, list):
        return "list"
    return repr(value)


def _case_id(case):
    changes, exc, name = case
    return f"{name}-{exc.__name__}-" + ",".join(f"{k}={_describe(v)}" for k, v in changes.items())


@pytest.mark.parametrize("changes, exc, name", BAD_INPUTS, ids=[_case_id(c) for c in BAD_INPUTS])
def test_bad_inputs_raise_and_name_the_argument(changes, exc, name):
    kwargs = {**_good(), **changes}
    with pytest.raises(exc, match=rf"\b{name}\b"):
        distillation_loss(**kwargs)


SOFT_BAD_INPUTS = [c for c in BAD_INPUTS if not ({"labels", "alpha", "label_smoothing"} & set(c[0]))]


@pytest.mark.parametrize("changes, exc, name", SOFT_BAD_INPUTS, ids=[_case_id(c) for c in SOFT_BAD_INPUTS])
def test_soft_loss_bad_inputs_raise_and_name_the_argument(changes, exc, name):
    kwargs = {**_good(), **changes}
    del kwargs["labels"], kwargs["alpha"]
    with pytest.raises(exc, match=rf"\b{name}\b"):
        soft_distillation_loss(**kwargs)


def test_good_inputs_do_not_raise():
    """The baseline of the table above is valid (so each row tests its one change)."""
    assert torch.isfinite(distillation_loss(**_good()))
    probs = {**_good(), "teacher_logits": None, "teacher_probs": torch.full((4, 5), 0.2)}
    assert torch.isfinite(distillation_loss(**probs))


@pytest.mark.parametrize("kwargs, exc, name", [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": True}, TypeError, "temperature"),
    ({"alpha": 2.0}, ValueError, "alpha"),
    ({"alpha": False}, TypeError, "alpha"),
])
def test_module_constructors_check_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ResponseDistillationLoss(**kwargs)
    if "temperature" in kwargs:
        with pytest.raises(exc, match=name):
            SoftLabelDistillationLoss(**kwargs)
        with pytest.raises(exc, match=name):
            soft_targets(torch.randn(2, 3), kwargs["temperature"])


def test_response_loss_requires_labels():
    zs, zt, _ = random_case(seed=1)
    with pytest.raises(ValueError, match="labels"):
        ResponseDistillationLoss()(zs, zt)


# -----------------------------------------------------------------------------
# Numerical stability with extreme logits.

EXTREME_T = [0.05, 0.1, 1.0, 4.0, 100.0]


def _extreme_cases():
    g = torch.Generator().manual_seed(0)
    n, c = 8, 10
    rand_s = (torch.rand(n, c, generator=g) * 2 - 1) * 1e4
    rand_t = (torch.rand(n, c, generator=g) * 2 - 1) * 1e4
    y = torch.randint(0, c, (n,), generator=g)
    # Adversarial: the teacher's argmax is the student's least likely class and vice versa,
    # and the label is neither.
    adv_s = torch.full((n, c), -1e4)
    adv_t = torch.full((n, c), -1e4)
    adv_s[:, 0], adv_t[:, 1] = 1e4, 1e4
    adv_y = torch.full((n,), 2)
    # One-hot-like teacher against a uniform student and a student confident on the label.
    sign_s = torch.where(torch.rand(n, c, generator=g) < 0.5, -1e4, 1e4)
    return {
        "random": (rand_s, rand_t, y),
        "adversarial": (adv_s, adv_t, adv_y),
        "signs": (sign_s, -sign_s, y),
        "uniform-student": (torch.zeros(n, c), adv_t, adv_y),
    }


EXTREME = _extreme_cases()


@pytest.mark.parametrize("T", EXTREME_T)
@pytest.mark.parametrize("case", list(EXTREME))
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_extreme_logits_finite_loss_and_gradient(T, case, alpha):
    zs, zt, y = (t.clone() for t in EXTREME[case])
    assert zs.dtype == torch.float32
    zs.requires_grad_(True)
    loss = distillation_loss(zs, zt, y, T, alpha)
    assert torch.isfinite(loss)
    expected = ref_kd(zs.detach().double().numpy(), zt.double().numpy(), y.numpy(), T, alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-3 * max(1.0, T**2))
    loss.backward()
    assert torch.isfinite(zs.grad).all()
    # Closed form: each entry is a combination of probability differences in [-1, 1].
    bound = (alpha + (1 - alpha) * T) / len(y)
    assert zs.grad.abs().max().item() <= bound * (1 + 1e-5)


@pytest.mark.parametrize("T", EXTREME_T)
@pytest.mark.parametrize("case", list(EXTREME))
def test_extreme_logits_with_teacher_probs_containing_zeros(T, case):
    zs, zt, y = (t.clone() for t in EXTREME[case])
    onehot = F.one_hot(zt.argmax(1), zt.shape[1]).float()  # exact zeros
    underflowed = soft_targets(zt, T)  # exact zeros by underflow for small T
    for probs in (onehot, underflowed):
        student = zs.clone().requires_grad_(True)
        loss = distillation_loss(student, None, y, T, 0.5, teacher_probs=probs)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(student.grad).all()
        soft = soft_distillation_loss(zs, None, T, teacher_probs=probs)
        assert torch.isfinite(soft) and soft.item() >= -1e-3  # KL >= 0
    assert (onehot == 0).any()


# -----------------------------------------------------------------------------
# The teacher never receives gradients.


def _models():
    torch.manual_seed(0)
    teacher, student = nn.Linear(8, 5), nn.Linear(8, 5)
    assert all(p.requires_grad for p in teacher.parameters())
    return teacher, student, torch.randn(6, 8), torch.randint(0, 5, (6,))


@pytest.mark.parametrize("how", ["function", "response", "soft", "probs"])
def test_teacher_receives_no_gradient(how):
    teacher, student, x, y = _models()
    zs, zt = student(x), teacher(x)
    assert zt.requires_grad  # the teacher's output is part of a graph...
    if how == "function":
        loss = distillation_loss(zs, zt, y, 4.0, 0.5)
    elif how == "response":
        loss = ResponseDistillationLoss(4.0, 0.5)(zs, zt, y)
    elif how == "soft":
        loss = SoftLabelDistillationLoss(4.0)(zs, zt)
    else:
        loss = distillation_loss(zs, None, y, 4.0, 0.5, teacher_probs=F.softmax(zt / 4.0, dim=1))
    loss.backward()
    # ...yet the loss does not backpropagate into it.
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())


# -----------------------------------------------------------------------------
# ignore_index: samples without a label enter the soft term only.


def test_hard_label_loss_averages_over_the_labelled_samples_only():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, -1, 2, -1, 3, 1])
    keep = labels != -1
    for eps in (0.0, 0.1):
        expected = F.cross_entropy(logits[keep], labels[keep], label_smoothing=eps)
        assert torch.equal(hard_label_loss(logits, labels, eps, ignore_index=-1), expected)
    assert hard_label_loss(logits, torch.full((6,), -1), ignore_index=-1).item() == 0.0  # no labels: no hard term
    with pytest.raises(ValueError, match=r"or ignore_index=-1"):
        hard_label_loss(logits, torch.tensor([0, -2, 2, -1, 3, 1]), ignore_index=-1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        hard_label_loss(logits, labels)  # -1 is not a class unless it is the ignore_index


def test_distillation_loss_with_ignore_index_is_the_mix_of_both_terms():
    gen = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 10, generator=gen), torch.randn(5, 10, generator=gen)
    labels = torch.tensor([1, -1, 7, 7, -1])
    parts = distillation_loss_parts(student, teacher, labels, 4.0, 0.3, ignore_index=-1)
    keep = labels != -1
    assert torch.equal(parts["hard"], F.cross_entropy(student[keep], labels[keep]))
    assert torch.equal(parts["soft"], soft_distillation_loss(student, teacher, 4.0))  # every sample
    assert torch.equal(parts["loss"], 0.3 * parts["hard"] + 0.7 * parts["soft"])
