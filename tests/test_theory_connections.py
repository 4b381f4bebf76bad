"""The helpers and checkers of the chapters "Label smoothing and distillation", "Dark
knowledge and information" and the claim audit: ``kdbook.theory``'s label-smoothing and
information-theory helpers, and the checkers in ``kdbook.exercises.label_smoothing`` and
``kdbook.exercises.dark_knowledge`` (right answers pass; wrong ones get specific
feedback)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as F

import kdbook
from kdbook import theory as th
from kdbook.exercises import ExerciseFailure, Unsolved, placeholder
from kdbook.exercises import dark_knowledge as dk_ex
from kdbook.exercises import label_smoothing as ls_ex

R = sp.Rational
T = sp.Symbol("T", positive=True)


# ---------------------------------------------------------------- centred_logit_penalty

def test_centred_logit_penalty_value_and_shift_invariance():
    assert th.centred_logit_penalty([R(1), R(2), R(3)]) == R(1, 3)  # (1 + 0 + 1) / 6
    z = th.logit_symbols("z", 3)
    c = sp.Symbol("c", real=True)
    shifted = th.centred_logit_penalty([zi + c for zi in z])
    assert sp.simplify(shifted - th.centred_logit_penalty(z)) == 0


def test_centred_logit_penalty_is_the_high_temperature_limit():
    """T^2 KL(u || softmax(z / T)) -> (1/2n) sum (z - mean)^2, for n = 3 symbolic logits."""
    z = th.logit_symbols("z", 3)
    w = sp.Symbol("w", positive=True)
    u = [R(1, 3)] * 3
    scaled = sp.expand_log(th.kl_divergence(u, th.softmax(z, 1 / w)) / w**2, force=True)
    assert sp.simplify(sp.series(scaled, w, 0, 1).removeO() - th.centred_logit_penalty(z)) == 0


def test_centred_logit_penalty_needs_two_logits():
    with pytest.raises(ValueError, match="at least 2"):
        th.centred_logit_penalty([sp.Integer(1)])


def test_label_smoothing_identity_at_t1_with_the_shared_definitions():
    """alpha CE(e_y, q) + (1 - alpha) KL(u || q) = CE(alpha e_y + (1 - alpha) u, q) - (1 - alpha) log n;
    with epsilon = 1 - alpha + 1/10 instead, the difference is not zero."""
    alpha = sp.Symbol("alpha", real=True)
    z = th.logit_symbols("z", 3)
    q, u, e = th.softmax(z), [R(1, 3)] * 3, [1, 0, 0]
    kd = alpha * th.cross_entropy(e, q) + (1 - alpha) * th.kl_divergence(u, q)
    for eps, holds in ((1 - alpha, True), (1 - alpha + R(1, 10), False)):
        target = [(1 - eps) * ei + eps * ui for ei, ui in zip(e, u)]
        ls = th.cross_entropy(target, q) - (1 - alpha) * sp.log(3)
        assert th.is_zero(kd - ls) is holds


# ---------------------------------------------------------------- mutual information

def test_mutual_information_of_independent_and_copied_variables():
    independent = [[R(3, 25), R(7, 25)], [R(6, 25), R(9, 25)]]  # not a product: check
    assert th.mutual_information([[R(1, 4), R(1, 4)], [R(1, 4), R(1, 4)]]) == 0
    product = [[R(2, 5) * R(3, 10), R(2, 5) * R(7, 10)], [R(3, 5) * R(3, 10), R(3, 5) * R(7, 10)]]
    assert sp.simplify(th.mutual_information(product)) == 0
    assert float(th.mutual_information(independent)) > 0
    copy = [[R(1, 3), 0, 0], [0, R(1, 3), 0], [0, 0, R(1, 3)]]  # zeros: 0 log 0 = 0
    assert sp.simplify(th.mutual_information(copy) - sp.log(3)) == 0


def test_mutual_information_matches_a_numpy_computation_with_floats():
    rng = np.random.default_rng(0)
    joint = rng.random((3, 4))
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    expected = float((joint * np.log(joint / (pa * pb))).sum())
    assert float(th.mutual_information(joint.tolist())) == pytest.approx(expected, rel=1e-12)
    assert float(th.mutual_information(joint.T.tolist())) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("joint, message", [
    ([R(1, 2), R(1, 2)], "2-dimensional"),
    ([[R(1, 2), R(-1, 4)], [R(1, 4), R(1, 2)]], ">= 0"),
    ([[R(1, 2), R(1, 4)], [R(1, 4), R(1, 4)]], "sum to 1"),
    ([[0.5, 0.2], [0.2, 0.2]], "sum to 1"),
    ([[sp.Symbol("p"), 0], [0, 0]], "real numbers"),
])
def test_mutual_information_rejects_what_is_not_a_distribution(joint, message):
    with pytest.raises(ValueError, match=message):
        th.mutual_information(joint)


def _chain_joint(student_sees):
    p_x = [R(1, 4)] * 4
    teacher = [[R(3, 4), R(1, 4)]] * 2 + [[R(1, 4), R(3, 4)]] * 2
    student = [[1, 0]] * 2 + [[0, 1]] * 2 if student_sees == "x" else [[R(9, 10), R(1, 10)],
                                                                          [R(1, 10), R(9, 10)]]
    return th.prediction_joint(p_x, teacher, student, student_sees)


def test_prediction_joint_is_a_distribution_with_the_right_marginals():
    joint = _chain_joint("x")
    assert sp.Add(*np.array(joint, dtype=object).flat) == 1
    assert th.marginal(joint, (0,)) == [R(1, 4)] * 4
    assert th.marginal(joint, (0, 1))[0] == [R(3, 16), R(1, 16)]
    assert th.marginal(joint, (2, 0)) == np.array(th.marginal(joint, (0, 2)), dtype=object).T.tolist()


def test_conditional_mutual_information_detects_the_markov_chain():
    assert th.conditional_mutual_information(_chain_joint("teacher")) == 0
    assert float(th.conditional_mutual_information(_chain_joint("x"))) == pytest.approx(
        float(-R(3, 4) * sp.log(R(3, 4)) - R(1, 4) * sp.log(R(1, 4))))


@pytest.mark.parametrize("student_sees", ["x", "teacher"])
def test_chain_rule_of_mutual_information(student_sees):
    """I(X; Y_t, Y_s) = I(X; Y_t) + I(X; Y_s | Y_t), the identity behind the DPI."""
    joint = _chain_joint(student_sees)
    x_and_pair = [[joint[x][t][s] for t in range(2) for s in range(2)] for x in range(4)]
    lhs = th.mutual_information(x_and_pair)
    rhs = th.mutual_information(th.marginal(joint, (0, 1))) + th.conditional_mutual_information(joint)
    assert float(lhs) == pytest.approx(float(rhs), abs=1e-14)


def test_dpi_holds_for_the_chain_and_fails_without_it():
    def informations(joint):
        return (float(th.mutual_information(th.marginal(joint, (0, 1)))),
                float(th.mutual_information(th.marginal(joint, (0, 2)))))

    i_t, i_s = informations(_chain_joint("teacher"))
    assert i_s < i_t
    i_t, i_s = informations(_chain_joint("x"))
    assert i_s > i_t


def test_prediction_joint_and_marginal_reject_bad_arguments():
    with pytest.raises(ValueError, match="student_sees"):
        th.prediction_joint([1], [[1]], [[1]], "y")
    with pytest.raises(ValueError, match="one row per input"):
        th.prediction_joint([R(1, 2)] * 2, [[1, 0]], [[1, 0]] * 2)
    with pytest.raises(ValueError, match="student needs 2 rows"):
        th.prediction_joint([R(1, 2)] * 2, [[1, 0]] * 2, [[1, 0]] * 3, "teacher")
    with pytest.raises(ValueError, match="distinct axes"):
        th.marginal([[R(1, 2), R(1, 2)]], (0, 0))
    with pytest.raises(ValueError, match="distinct axes"):
        th.marginal([[R(1, 2), R(1, 2)]], (2,))


# ---------------------------------------------------------------- label-smoothing checker

def teacher_smoothed_targets(labels, teacher_logits, alpha):
    onehot = F.one_hot(labels, teacher_logits.shape[1]).to(teacher_logits.dtype)
    return alpha * onehot + (1 - alpha) * F.softmax(teacher_logits, dim=1)


def test_label_smoothing_checker_passes_right_answers():
    expected = "ex-ls-teacher-targets: all 5 checks passed"
    assert ls_ex.check_teacher_smoothed_targets(teacher_smoothed_targets) == expected
    assert ls_ex.check_teacher_smoothed_targets(ls_ex.reference_teacher_smoothed_targets) == expected


def test_label_smoothing_reference_satisfies_the_chapter_identity():
    """CE(target, q) - (1 - alpha) H(p_t) is the library's KD loss at T = 1, and an all-equal
    teacher gives label smoothing's targets."""
    for _, _, case in ls_ex.cases():
        labels, z_t, alpha = case["labels"], case["teacher_logits"].double(), case["alpha"]
        z_s = torch.randn(z_t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        target = ls_ex.reference_teacher_smoothed_targets(labels, z_t, alpha)
        ce = -(target * F.log_softmax(z_s, 1)).sum(1).mean()
        entropy = torch.special.entr(F.softmax(z_t, 1)).sum(1).mean()
        kd = kdbook.distillation_loss(z_s, z_t, labels, temperature=1.0, alpha=alpha)
        assert torch.allclose(ce - (1 - alpha) * entropy, kd, rtol=1e-10)
    flat = torch.zeros(3, 5, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2])
    smoothed = kdbook.losses.label_smoothing_targets(labels, 5, 0.3).double()
    assert torch.allclose(ls_ex.reference_teacher_smoothed_targets(labels, flat, 0.7), smoothed)


@pytest.mark.parametrize("description, wrong", ls_ex.MISTAKES,
                         ids=[re.sub(r"\W+", "-", d[:40]).strip("-") for d, _ in ls_ex.MISTAKES])
def test_label_smoothing_checker_names_each_mistake(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        ls_ex.check_teacher_smoothed_targets(wrong)
    message = str(failure.value)
    assert message.startswith("ex-ls-teacher-targets: case ")
    assert "input labels=tensor(" in message  # which input
    assert "expected tensor" in message and ", got tensor" in message
    assert "\nHint: " in message
    assert f"Your result is what you get when {description}." in message


def test_label_smoothing_checker_gives_the_case_hint_for_other_mistakes():
    def exp_without_max_subtraction(labels, teacher_logits, alpha):
        weights = teacher_logits.exp()  # overflows to inf for logits of size 100 in float32
        onehot = F.one_hot(labels, teacher_logits.shape[1]).to(teacher_logits.dtype)
        return alpha * onehot + (1 - alpha) * weights / weights.sum(1, keepdim=True)

    with pytest.raises(ExerciseFailure, match=r"case 5 of 5 \(large logits.*\nHint: Use F.softmax"):
        ls_ex.check_teacher_smoothed_targets(exp_without_max_subtraction)

    def ten_classes(labels, teacher_logits, alpha):
        onehot = F.one_hot(labels, 10).to(teacher_logits.dtype)
        return alpha * onehot + (1 - alpha) * F.softmax(teacher_logits, dim=1)

    with pytest.raises(ExerciseFailure, match=r"case 1 of 5 .*your function raised RuntimeError"):
        ls_ex.check_teacher_smoothed_targets(ten_classes)


def test_label_smoothing_checker_lets_the_placeholder_through():
    def teacher_smoothed_targets(labels, teacher_logits, alpha):
        placeholder("ex-ls-teacher-targets")

    with pytest.raises(Unsolved, match="ex-ls-teacher-targets"):
        ls_ex.check_teacher_smoothed_targets(teacher_smoothed_targets)


# ---------------------------------------------------------------- mutual-information checker

def mutual_information(joint):
    p_a, p_b = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    return (torch.special.xlogy(joint, joint) - torch.special.xlogy(joint, p_a * p_b)).sum()


def test_mutual_information_checker_passes_right_answers():
    expected = "ex-dark-mutual-information: all 5 checks passed"
    assert dk_ex.check_mutual_information(mutual_information) == expected
    assert dk_ex.check_mutual_information(dk_ex.reference_mutual_information) == expected

    def with_numpy(joint):  # returns a Python float computed in numpy: also accepted
        p = joint.numpy()
        pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
        mask = p > 0
        return float((p[mask] * np.log(p[mask] / (pa * pb)[mask])).sum())

    assert dk_ex.check_mutual_information(with_numpy) == expected


def test_mutual_information_reference_agrees_with_the_theory_module():
    for _, _, case in dk_ex.cases():
        joint = case["joint"]
        assert dk_ex.reference_mutual_information(joint) == pytest.approx(
            float(th.mutual_information(joint.tolist())), abs=1e-12)


@pytest.mark.parametrize("description, wrong", dk_ex.MISTAKES,
                         ids=[re.sub(r"\W+", "-", d[:40]).strip("-") for d, _ in dk_ex.MISTAKES])
def test_mutual_information_checker_names_each_mistake(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        dk_ex.check_mutual_information(wrong)
    message = str(failure.value)
    assert message.startswith("ex-dark-mutual-information: case ")
    assert "input joint=tensor(" in message
    assert re.search(r"expected -?[\d.e+-]+, got -?[\d.e+-]+", message)
    assert "\nHint: " in message
    assert f"Your result is what you get when {description}." in message


def test_mutual_information_checker_explains_nan_from_zeros():
    def no_zero_handling(joint):
        p_a, p_b = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
        return (joint * (joint / (p_a * p_b)).log()).sum()  # 0 * log 0 = nan

    with pytest.raises(ExerciseFailure, match=r"case 2 of 5 \(a table with zeros.*got nan\nHint: Entries with"):
        dk_ex.check_mutual_information(no_zero_handling)


def test_mutual_information_checker_lets_the_placeholder_through():
    def mutual_information(joint):
        placeholder("ex-dark-mutual-information")

    with pytest.raises(Unsolved, match="ex-dark-mutual-information"):
        dk_ex.check_mutual_information(mutual_information)


def test_checker_cases_are_valid_distributions():
    for _, _, case in dk_ex.cases():
        joint = case["joint"]
        assert (joint >= 0).all() and math.isclose(float(joint.sum()), 1.0, abs_tol=1e-12)
