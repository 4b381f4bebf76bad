"""The checkers of chapter "Beyond Hinton" (kdbook.exercises.beyond): right answers pass,
each known mistake is named, a numerically naive answer is caught on the extreme case, and
each bug of the KD step is reported with what it did."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from kdbook.exercises import ExerciseFailure, Unsolved, beyond, placeholder
from kdbook.losses import decoupled_kl_terms


# ---------------------------------------------------------------- TCKD and NCKD

def stable_answer(student_logits, teacher_logits, labels, T):
    """An independent, stable solution: log-probabilities only, the target removed by a mask."""
    def split(z):
        z = z / T
        keep = ~F.one_hot(labels, z.shape[1]).bool()
        others = z[keep].view(z.shape[0], -1)
        log_all = torch.logsumexp(z, 1)
        target = z.gather(1, labels[:, None]).squeeze(1)
        log_b = torch.stack([target - log_all, torch.logsumexp(others, 1) - log_all], 1)
        return log_b, F.log_softmax(others, 1)

    (b_s, q_s), (b_t, q_t) = split(student_logits), split(teacher_logits)
    kl = lambda log_s, log_t: (log_t.exp() * (log_t - log_s)).sum(1).mean()  # noqa: E731
    return torch.stack([kl(b_s, b_t), kl(q_s, q_t)]) * T**2


def naive_answer(student_logits, teacher_logits, labels, T):
    """Right formula, computed from probabilities: 1 - p_y rounds to 0 for a very confident teacher."""
    def split(p):
        p_y = p.gather(1, labels[:, None]).squeeze(1)
        keep = ~F.one_hot(labels, p.shape[1]).bool()
        return torch.stack([p_y, 1 - p_y], 1), p[keep].view(p.shape[0], -1) / (1 - p_y)[:, None]

    (b_s, q_s), (b_t, q_t) = split(F.softmax(student_logits / T, 1)), split(F.softmax(teacher_logits / T, 1))
    kl = lambda s, t: (t * (t.log() - s.log())).sum(1).mean()  # noqa: E731
    return torch.stack([kl(b_s, b_t), kl(q_s, q_t)]) * T**2


def test_a_correct_answer_and_the_reference_pass():
    assert "all 4 checks passed" in beyond.check_tckd_and_nckd(stable_answer)
    assert "passed" in beyond.check_tckd_and_nckd(beyond.reference_tckd_and_nckd)


def test_reference_is_the_decomposition_of_kd():
    """TCKD + (1 - p_t,y) NCKD = KL(p_t || p_s), sample by sample, on the checker's own cases
    (float64; tolerance: a few ulps of the O(1) terms, see beyond.RTOL)."""
    for _, _, case in beyond.terms_cases():
        T = case["T"]
        terms = decoupled_kl_terms(case["student_logits"], case["teacher_logits"], case["labels"], T)
        kl = F.kl_div(F.log_softmax(case["student_logits"] / T, 1), F.log_softmax(case["teacher_logits"] / T, 1),
                      reduction="none", log_target=True).sum(1)
        torch.testing.assert_close(terms["tckd"] + (1 - terms["teacher_target_prob"]) * terms["nckd"], kl,
                                   rtol=beyond.RTOL, atol=beyond.ATOL)


@pytest.mark.parametrize("description, wrong", beyond.TERMS_MISTAKES, ids=[m[0][:40] for m in beyond.TERMS_MISTAKES])
def test_every_known_mistake_is_caught_and_named(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        beyond.check_tckd_and_nckd(wrong)
    assert f"Your result is what you get when {description}." in str(failure.value)


def test_the_naive_formula_fails_on_the_confident_teacher_only():
    cases = beyond.terms_cases()
    for _, _, case in cases[:-1]:  # where 1 - p_t,y is representable, it is right
        torch.testing.assert_close(naive_answer(**case), beyond.reference_tckd_and_nckd(**case),
                                   rtol=1e-9, atol=1e-12)
    with pytest.raises(ExerciseFailure, match=r"(?s)case 4 of 4.*got tensor\(\[nan.*Hint: 1 - p_y rounds to 0"):
        beyond.check_tckd_and_nckd(naive_answer)


def test_cases_are_what_their_names_say():
    cases = beyond.terms_cases()
    assert all(c["student_logits"].dtype == torch.float64 for _, _, c in cases)
    last = cases[-1][2]
    p_t = F.softmax(last["teacher_logits"] / last["T"], 1).gather(1, last["labels"][:, None])
    assert bool((1 - p_t == 0).all())  # 1 - p_t,y underflows: the case the hint is about


def test_wrong_signature_and_placeholder():
    with pytest.raises(ExerciseFailure, match="cannot be called"):
        beyond.check_tckd_and_nckd(lambda s, t, y, temperature: s)
    with pytest.raises(Unsolved):
        beyond.check_tckd_and_nckd(lambda student_logits, teacher_logits, labels, T: placeholder("x"))


# ---------------------------------------------------------------- the KD step

def _step(student, teacher, images, labels, optimizer, T, alpha, *, eval_mode=True, no_grad=True,
          reduction="batchmean", zero_grad=True, t2=True):
    """A KD step with switchable bugs."""
    if eval_mode:
        teacher.eval()
    with torch.set_grad_enabled(not no_grad):
        teacher_logits = teacher(images)
    student_logits = student(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reduction='mean'
        soft = F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1), reduction=reduction)
    loss = alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * (T**2 if t2 else 1) * soft
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _with(**bugs):
    return lambda student, teacher, images, labels, optimizer, T=4.0, alpha=0.5: _step(
        student, teacher, images, labels, optimizer, T, alpha, **bugs)


def test_a_correct_step_passes():
    assert "all 3 cases" in beyond.check_distill_step(_with())
    assert "passed" in beyond.check_distill_step(beyond.reference_distill_step)


@pytest.mark.parametrize("bugs, message", [
    (dict(eval_mode=False), "BatchNorm statistics changed.*teacher.eval"),
    (dict(no_grad=False), "gradients reached the teacher.*torch.no_grad"),
    (dict(reduction="mean"), "expected .* got .*reduction='mean'"),
    (dict(t2=False), "T\\*\\*2 is missing"),
    (dict(zero_grad=False), "step 2 of 2: the student's .*zero_grad"),
])
def test_each_bug_is_reported_with_what_it_did(bugs, message):
    with pytest.raises(ExerciseFailure, match=f"(?s){message}"):
        beyond.check_distill_step(_with(**bugs))


def test_alpha_on_the_soft_term_is_named():
    def swapped(student, teacher, images, labels, optimizer, T=4.0, alpha=0.5):
        return beyond.reference_distill_step(student, teacher, images, labels, optimizer, T, 1 - alpha)
    with pytest.raises(ExerciseFailure, match="alpha weights the soft term"):
        beyond.check_distill_step(swapped)


def test_a_step_that_raises_or_is_unsolved():
    def broken(student, teacher, images, labels, optimizer, T=4.0, alpha=0.5):
        raise RuntimeError("boom")
    with pytest.raises(ExerciseFailure, match="raised RuntimeError: boom"):
        beyond.check_distill_step(broken)
    with pytest.raises(Unsolved):
        beyond.check_distill_step(lambda *a, **k: placeholder("ex-beyond-kd-bug"))
    with pytest.raises(ExerciseFailure, match="expected a function"):
        beyond.check_distill_step(None)
