"""The helpers of the chapter "Gradients": kdbook.theory (branch selection after
differentiating sums, sums as symbols, the high-temperature objective) and the checker
of the exercise ex-gradients-soft-gradient, with right and deliberately wrong answers."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

import kdbook
from kdbook import theory as th
from kdbook.exercises import ExerciseFailure, Unsolved, placeholder
from kdbook.exercises import gradients as ex

T = sp.Symbol("T", positive=True)
u = sp.Symbol("u", positive=True)
n = sp.Symbol("n", integer=True, positive=True)
i, j, k = sp.symbols("i j k", integer=True)
z = sp.IndexedBase("z", real=True)
q = sp.IndexedBase("q", positive=True)
IN_RANGE_I = (i >= 1) & (i <= n)
Z = sp.Sum(sp.exp(z[k] / T), (k, 1, n))
SOFT = sp.Sum(q[j] * (sp.log(q[j]) - (z[j] / T - sp.log(Z))), (j, 1, n))
Q_SUMS_TO_ONE = {th.sums_as_symbols(sp.Sum(q[j], (j, 1, n))): 1}


def _agrees(expr, claimed):
    return sp.simplify(th.sums_as_symbols(expr - claimed).subs(Q_SUMS_TO_ONE)) == 0


# -----------------------------------------------------------------------------
# select_branch and the general-n gradient identity


def test_select_branch_picks_the_in_range_branch():
    raw = sp.diff(sp.Sum(z[k] ** 2, (k, 1, n)), z[i]).doit()
    assert isinstance(raw, sp.Piecewise)
    assert th.select_branch(raw, IN_RANGE_I) == 2 * z[i]


def test_select_branch_without_matching_condition_raises():
    raw = sp.diff(sp.Sum(z[k] ** 2, (k, 1, n)), z[i]).doit()
    with pytest.raises(ValueError, match="no branch"):
        th.select_branch(raw, (i >= 2))
    assert th.select_branch(z[i] + 1, IN_RANGE_I) == z[i] + 1  # no Piecewise: unchanged


def test_soft_gradient_identity_for_every_n():
    """dKL(q || softmax(z/T))/dz_i = (p_i - q_i)/T, n symbolic; wrong versions fail."""
    gradient = th.select_branch(sp.diff(SOFT, z[i]).doit(), IN_RANGE_I)
    p_i = sp.exp(z[i] / T) / Z
    assert _agrees(gradient, (p_i - q[i]) / T)
    assert not _agrees(gradient, p_i - q[i])  # missing 1/T
    assert not _agrees(gradient, (q[i] - p_i) / T)  # wrong sign


def test_hessian_identity_for_every_n():
    j2 = sp.Symbol("j2", integer=True)
    p = lambda idx: sp.exp(z[idx] / T) / Z
    hessian = th.select_branch(sp.diff((p(i) - q[i]) / T, z[j2]).doit(),
                               IN_RANGE_I, (j2 >= 1) & (j2 <= n))
    assert _agrees(hessian, (sp.KroneckerDelta(i, j2) * p(i) - p(i) * p(j2)) / T**2)
    assert not _agrees(hessian, (sp.KroneckerDelta(i, j2) * p(i) - p(i) * p(j2)) / T)


def test_kl_high_temperature_limit_for_every_n():
    a, b = sp.IndexedBase("a", real=True), sp.IndexedBase("b", real=True)
    Zs, Zt = sp.Sum(sp.exp(u * a[k]), (k, 1, n)), sp.Sum(sp.exp(u * b[k]), (k, 1, n))
    kl = sp.log(Zs) - sp.log(Zt) - u * sp.Sum((a[k] - b[k]) * sp.exp(u * b[k]), (k, 1, n)) / Zt
    d_k = a[k] - b[k] - sp.Sum(a[k] - b[k], (k, 1, n)) / n
    series = th.sum_series(kl, u, 2)
    right = th.sums_as_symbols(u**2 * sp.Sum(d_k**2, (k, 1, n)) / (2 * n))
    assert sp.simplify(series - sp.expand(right)) == 0
    wrong = th.sums_as_symbols(u**2 * sp.Sum(d_k**2, (k, 1, n)) / 2)  # Hinton's 1/2, no 1/n
    assert sp.simplify(series - sp.expand(wrong)) != 0


# -----------------------------------------------------------------------------
# logit_matching_objective


def test_logit_matching_objective_values():
    zs = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    zt = torch.tensor([[1.0, 2.0, 3.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    # row 0: identical -> 0; row 1: d = (-1, 1, 0), sum d^2 = 2, /(2*3) = 1/3; batch mean 1/6
    assert th.logit_matching_objective(zs, zt).item() == pytest.approx(1 / 6)
    assert th.logit_matching_objective(zs + 5.0, zs).item() == pytest.approx(0.0, abs=1e-12)


def test_logit_matching_objective_is_the_limit_of_the_scaled_soft_loss():
    generator = torch.Generator().manual_seed(0)
    zs = 2 * torch.randn(4, 10, generator=generator, dtype=torch.float64)
    zt = 2 * torch.randn(4, 10, generator=generator, dtype=torch.float64)
    limit = th.logit_matching_objective(zs, zt).item()
    # T (T^2 KL - limit) tends to the correction term of the chapter's (grad-high-t)
    centred = lambda x: x - x.mean(1, keepdim=True)
    d, c_t = centred(zs) - centred(zt), centred(zt)
    correction = ((c_t * d**2).sum(1) / 20 + (d**3).sum(1) / 60).mean().item()
    scaled_gaps = [T_ * (kdbook.soft_distillation_loss(zs, zt, T_).item() - limit) for T_ in (100, 10000)]
    assert abs(scaled_gaps[1] - correction) < 1e-2 * (1 + abs(correction))
    assert abs(scaled_gaps[1] - correction) < abs(scaled_gaps[0] - correction)
    # its gradient is the limit of T (p_s - p_t) / B
    zs_leaf = zs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(th.logit_matching_objective(zs_leaf, zt), zs_leaf)
    assert torch.allclose(grad, (centred(zs) - centred(zt)) / (10 * 4), rtol=1e-12)
    T_big = 1e4
    scaled = T_big * (F.softmax(zs / T_big, 1) - F.softmax(zt / T_big, 1)) / 4
    assert (scaled - grad).abs().max() < 1e-3 * grad.abs().max()  # O(1/T) apart


def test_logit_matching_objective_shape_checks():
    with pytest.raises(ValueError, match="shape"):
        th.logit_matching_objective(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape"):
        th.logit_matching_objective(torch.zeros(3), torch.zeros(3))


# -----------------------------------------------------------------------------
# The checker of ex-gradients-soft-gradient


def _solution(student_logits, teacher_logits, T, scale_by_t2):
    B = student_logits.shape[0]
    difference = F.softmax(student_logits / T, dim=1) - F.softmax(teacher_logits / T, dim=1)
    return (T if scale_by_t2 else 1 / T) * difference / B


def _autograd_solution(student_logits, teacher_logits, T, scale_by_t2):
    leaf = student_logits.clone().requires_grad_(True)
    loss = kdbook.soft_distillation_loss(leaf, teacher_logits, T, scale_by_t2=scale_by_t2)
    return torch.autograd.grad(loss, leaf)[0]


@pytest.mark.parametrize("solution", [_solution, _autograd_solution, ex._closed_form])
def test_checker_accepts_right_answers(solution):
    assert "all 5 checks passed" in ex.check_soft_gradient(solution)


@pytest.mark.parametrize("description, wrong", ex.MISTAKES)
def test_checker_rejects_known_mistakes(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        ex.check_soft_gradient(wrong)
    message = str(failure.value)
    assert "expected" in message and "got" in message and "Hint:" in message
    assert "input student_logits=" in message
    assert "Your result is what you get when" in message


def test_checker_names_the_specific_mistake():
    sign_flipped = lambda **kw: -_solution(**kw)

    def flipped(student_logits, teacher_logits, T, scale_by_t2):
        return sign_flipped(student_logits=student_logits, teacher_logits=teacher_logits,
                            T=T, scale_by_t2=scale_by_t2)

    with pytest.raises(ExerciseFailure, match="the sign is flipped"):
        ex.check_soft_gradient(flipped)

    def no_batch_mean(student_logits, teacher_logits, T, scale_by_t2):
        return _solution(student_logits, teacher_logits, T, scale_by_t2) * student_logits.shape[0]

    with pytest.raises(ExerciseFailure, match="(?s)case 4 of 5.*batch mean is missing"):
        ex.check_soft_gradient(no_batch_mean)


def test_checker_other_failures():
    with pytest.raises(ExerciseFailure, match="expected a torch.Tensor"):
        ex.check_soft_gradient(lambda student_logits, teacher_logits, T, scale_by_t2: 0.0)
    with pytest.raises(ExerciseFailure, match="expected shape"):
        ex.check_soft_gradient(
            lambda student_logits, teacher_logits, T, scale_by_t2: _solution(
                student_logits, teacher_logits, T, scale_by_t2).sum(0))
    with pytest.raises(ExerciseFailure, match="parameter names"):
        ex.check_soft_gradient(lambda zs, zt, T, scale: zs)
    with pytest.raises(Unsolved):
        ex.check_soft_gradient(
            lambda student_logits, teacher_logits, T, scale_by_t2: placeholder("ex-gradients-soft-gradient"))
