"""The exercise checkers: right answers pass; wrong ones get specific feedback (which
input, expected vs got, a hint, and the mistake when it is a known one), never just
"wrong"."""

from __future__ import annotations

import importlib
import pkgutil
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

import kdbook.exercises
from kdbook.exercises import (
    ExerciseFailure,
    Unsolved,
    check_function,
    compare,
    describe,
    diagnose,
    formulation,
    placeholder,
)

# ---------------------------------------------------------------- the machinery

def test_every_checker_module_imports():
    names = [m.name for m in pkgutil.iter_modules(kdbook.exercises.__path__)]
    assert "formulation" in names
    for name in names:
        importlib.import_module(f"kdbook.exercises.{name}")


def test_placeholder_raises_unsolved_naming_the_exercise():
    with pytest.raises(Unsolved, match="ex-demo.*not solved yet"):
        placeholder("ex-demo")
    assert issubclass(Unsolved, NotImplementedError)


def test_describe():
    assert describe(torch.tensor([1.0, 2.5])) == "tensor([1, 2.5], dtype=torch.float32)"
    assert describe(torch.tensor([1, 2])) == "tensor([1, 2], dtype=torch.int64)"
    assert describe(torch.zeros(4, 10)) == "tensor of shape (4, 10), dtype torch.float32"
    assert describe(0.5) == "0.5"


def test_compare_numbers_and_tensors():
    compare("ex", "case", 1.0 + 1e-9, 1.0)
    compare("ex", "case", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ExerciseFailure, match=r"ex: case: expected 1, got 2\nHint: h"):
        compare("ex", "case", 2.0, 1.0, hint="h")
    with pytest.raises(ExerciseFailure, match="expected a number, got list"):
        compare("ex", "case", [1.0], 1.0)
    with pytest.raises(ExerciseFailure, match="expected a torch.Tensor, got float"):
        compare("ex", "case", 1.0, torch.tensor(1.0))
    with pytest.raises(ExerciseFailure, match=r"expected shape \(2,\), got \(3,\)"):
        compare("ex", "case", torch.zeros(3), torch.zeros(2))
    with pytest.raises(ExerciseFailure, match="largest difference at flat index 1"):
        compare("ex", "case", torch.tensor([1.0, 5.0]), torch.tensor([1.0, 2.0]))


def _square(x):
    return x * x


def test_check_function_reports_case_expected_got_hint_and_known_mistake():
    cases = [dict(x=torch.tensor([1.0, 2.0])), dict(x=torch.tensor([-3.0]))]
    assert check_function("ex-sq", _square, _square, cases) == "ex-sq: all 2 checks passed"
    with pytest.raises(ExerciseFailure) as failure:
        check_function("ex-sq", lambda x: x.abs() * x, _square, cases,
                       hints=["", "negative inputs"], names=["positive", "negative"],
                       mistakes=[("you multiplied by |x|", lambda x: x.abs() * x)])
    message = str(failure.value)
    assert "case 2 of 2 (negative)" in message
    assert "x=tensor([-3], dtype=torch.float32)" in message
    assert "expected tensor([9], dtype=torch.float32), got tensor([-9], dtype=torch.float32)" in message
    assert "Hint: negative inputs" in message
    assert "Your result is what you get when you multiplied by |x|." in message


def test_check_function_explains_a_function_that_raises():
    def broken(x):
        return x / undefined_name  # noqa: F821

    with pytest.raises(ExerciseFailure, match=r"input x=.*your function raised NameError: name 'undefined_name'"):
        check_function("ex-sq", broken, _square, [dict(x=torch.tensor([1.0]))], hints=["h"])


def test_check_function_explains_wrong_parameter_names_and_non_functions():
    with pytest.raises(ExerciseFailure, match=r"cannot be called as .*\(x=\.\.\.\).*parameter names"):
        check_function("ex-sq", lambda y: y * y, _square, [dict(x=torch.tensor([1.0]))])
    with pytest.raises(ExerciseFailure, match="expected a function, got int"):
        check_function("ex-sq", 3, _square, [dict(x=torch.tensor([1.0]))])


def test_check_function_lets_unsolved_through():
    with pytest.raises(Unsolved):
        check_function("ex-sq", lambda x: placeholder("ex-sq"), _square, [dict(x=torch.tensor([1.0]))])


def test_in_place_changes_do_not_reach_the_reference():
    def squares_in_place(x):
        return x.mul_(x)

    cases = [dict(x=torch.tensor([1.0, 3.0]))]
    assert check_function("ex-sq", squares_in_place, _square, cases).endswith("passed")
    assert cases[0]["x"].tolist() == [1.0, 3.0]


def test_diagnose_ignores_mistakes_that_equal_the_right_answer_or_fail():
    case = dict(x=torch.tensor([3.0]))
    mistakes = [("same as right", _square), ("raises", lambda x: 1 / 0), ("doubles", lambda x: 2 * x)]
    assert diagnose(torch.tensor([9.0]), _square(**case), case, mistakes) == ""
    assert diagnose(torch.tensor([6.0]), _square(**case), case, mistakes) == "doubles"
    assert diagnose(torch.tensor([7.0]), _square(**case), case, mistakes) == ""


# ---------------------------------------------------------------- ex-formulation-reduction

def kd_loss_mean(student_logits, teacher_logits, labels, T, alpha):
    """A right answer, written the way the exercise asks."""
    hard = F.cross_entropy(student_logits, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        soft = F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1),
                        reduction="mean")
    return alpha * hard + (1 - alpha) * T**2 * soft


def test_right_answers_pass():
    assert formulation.check_kd_loss_mean(kd_loss_mean) == "ex-formulation-reduction: all 5 checks passed"
    assert formulation.check_kd_loss_mean(formulation.reference_kd_loss_mean).endswith("passed")


def test_the_reference_is_the_library_loss_with_the_soft_term_divided_by_n():
    for _, _, case in formulation.cases():
        n = case["student_logits"].shape[1]
        alpha, T = case["alpha"], case["T"]
        hard = F.cross_entropy(case["student_logits"], case["labels"])
        library = kdbook.distillation_loss(case["student_logits"], case["teacher_logits"], case["labels"],
                                           temperature=T, alpha=0.0)  # (T^2 KL, batch mean)
        expected = alpha * hard + (1 - alpha) * library / n
        assert torch.allclose(formulation.reference_kd_loss_mean(**case), expected, rtol=1e-5)


@pytest.mark.parametrize("description, wrong", formulation.MISTAKES,
                         ids=[re.sub(r"\W+", "-", d[:40]).strip("-") for d, _ in formulation.MISTAKES])
def test_each_mistake_fails_with_specific_feedback(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        formulation.check_kd_loss_mean(wrong)
    message = str(failure.value)
    assert message.startswith("ex-formulation-reduction: case ")
    assert "input student_logits=tensor of shape" in message  # which input
    assert re.search(r"expected tensor\(-?[\d.e+-]+, dtype=torch\.float\d+\), got tensor\(", message)
    assert "\nHint: " in message
    assert f"Your result is what you get when {description}." in message


def test_each_case_tests_something_the_others_do_not():
    """Every case is the first to fail for at least one known mistake."""
    first_failures = set()
    for _, wrong in formulation.MISTAKES:
        with pytest.raises(ExerciseFailure) as failure:
            formulation.check_kd_loss_mean(wrong)
        first_failures.add(re.match(r".*?case (\d) of", str(failure.value)).group(1))
    assert first_failures >= {"1", "2", "3"}


def test_other_wrong_answers_get_the_case_hint():
    def returns_per_example(student_logits, teacher_logits, labels, T, alpha):
        return F.cross_entropy(student_logits, labels, reduction="none")

    with pytest.raises(ExerciseFailure, match=r"case 1 of 5 .*expected shape \(\), got \(4,\)\nHint: With alpha = 1"):
        formulation.check_kd_loss_mean(returns_per_example)

    def returns_a_float(student_logits, teacher_logits, labels, T, alpha):
        return float(kd_loss_mean(student_logits, teacher_logits, labels, T, alpha))

    with pytest.raises(ExerciseFailure, match="expected a torch.Tensor, got float"):
        formulation.check_kd_loss_mean(returns_a_float)

    def hardcodes_ten_classes(student_logits, teacher_logits, labels, T, alpha):
        B = student_logits.shape[0]
        log_ps, p_t = F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1)
        soft = (p_t * (p_t.log() - log_ps)).sum() / (B * 10)
        return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * T**2 * soft

    with pytest.raises(ExerciseFailure, match=r"case 5 of 5 \(other sizes.*\nHint: Take B and n from the inputs"):
        formulation.check_kd_loss_mean(hardcodes_ten_classes)


def test_a_function_that_raises_gets_a_clear_message():
    def raises(student_logits, teacher_logits, labels, T, alpha):
        return student_logits @ teacher_logits  # (4, 10) @ (4, 10): a shape error

    with pytest.raises(ExerciseFailure) as failure:
        formulation.check_kd_loss_mean(raises)
    message = str(failure.value)
    assert "case 1 of 5" in message and "your function raised RuntimeError" in message
    assert "Hint: " in message


def test_wrong_parameter_names_are_explained():
    def kd(zs, zt, y, T, alpha):
        return kd_loss_mean(zs, zt, y, T, alpha)

    with pytest.raises(ExerciseFailure, match="use the parameter names the exercise gives"):
        formulation.check_kd_loss_mean(kd)


def test_placeholder_stub_raises_unsolved():
    def kd_loss_mean(student_logits, teacher_logits, labels, T, alpha):
        kdbook.exercises.placeholder("ex-formulation-reduction")

    with pytest.raises(Unsolved, match="ex-formulation-reduction"):
        formulation.check_kd_loss_mean(kd_loss_mean)
