"""Checkers for the exercises of the chapter "Beyond Hinton" (book/beyond_hinton.ipynb).

``check_tckd_and_nckd`` checks exercise ``ex-beyond-tckd-nckd``: a function
``tckd_and_nckd(student_logits, teacher_logits, labels, T)`` that returns
``torch.stack([TCKD, NCKD])``, each batch-averaged and multiplied by ``T**2``, the two
terms of decoupled KD (Zhao et al., 2022). The reference is the library's
:func:`kdbook.losses.dkd_loss_parts`. The cases include a teacher so confident that
``1 - p_t,y`` is below float64's resolution near 1, where computing ``1 - p`` gives 0.

``check_distill_step`` checks exercise ``ex-beyond-kd-bug``: a corrected
``distill_step(student, teacher, images, labels, optimizer, T, alpha)`` that takes one
optimiser step of Hinton's KD (``alpha`` weights the hard term) and returns the loss as a
float. It runs the answer on small float64 networks (the teacher has BatchNorm and starts
in training mode, as a freshly built or loaded module does) for two consecutive steps, and
checks, in this order: the teacher's weights and BatchNorm statistics are unchanged, no
gradient reached the teacher, the returned losses and the student's weights after each
step are the reference's.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from kdbook.exercises import ExerciseFailure, Unsolved, check_function, compare, diagnose
from kdbook.losses import decoupled_kl_terms, dkd_loss_parts

TERMS_EXERCISE = "ex-beyond-tckd-nckd"
STEP_EXERCISE = "ex-beyond-kd-bug"

# Every case is float64 with losses of order 0.01..10. A correct answer computed in
# another order differs from the reference by a few units of float64 rounding (1e-16)
# times the number of classes and the depth of the computation (softmax, log, sums: a
# few tens of operations), i.e. below 1e-13 relative: rtol = 1e-7 leaves six orders of
# margin and still separates every known mistake (they differ by O(1) factors).
RTOL, ATOL = 1e-7, 1e-10


# -----------------------------------------------------------------------------
# TCKD and NCKD.


def reference_tckd_and_nckd(student_logits, teacher_logits, labels, T):
    """``torch.stack([TCKD, NCKD])`` from :func:`kdbook.losses.dkd_loss_parts` (batch mean, times T**2)."""
    parts = dkd_loss_parts(student_logits, teacher_logits, labels, T, alpha=1.0, beta=1.0)
    return torch.stack([parts["tckd"], parts["nckd"]])


def _terms(student_logits, teacher_logits, labels, T):
    return decoupled_kl_terms(student_logits, teacher_logits, labels, T)


def _nckd_weighted_by(which: str):
    """NCKD multiplied, sample by sample, by 1 - p_y of the teacher or the student."""
    def wrong(student_logits, teacher_logits, labels, T):
        t = _terms(student_logits, teacher_logits, labels, T)
        logits = teacher_logits if which == "teacher" else student_logits
        p_y = F.softmax(logits / T, dim=1).gather(1, labels[:, None]).squeeze(1)
        return torch.stack([t["tckd"].mean(), ((1 - p_y) * t["nckd"]).mean()]) * T**2
    return wrong


def _without_t2(student_logits, teacher_logits, labels, T):
    return reference_tckd_and_nckd(student_logits, teacher_logits, labels, T) / T**2


def _batch_sum(student_logits, teacher_logits, labels, T):
    return reference_tckd_and_nckd(student_logits, teacher_logits, labels, T) * student_logits.shape[0]


def _reversed(student_logits, teacher_logits, labels, T):
    t = decoupled_kl_terms(teacher_logits, student_logits, labels, T)  # KL(student || teacher)
    return torch.stack([t["tckd"].mean(), t["nckd"].mean()]) * T**2


def _target_masked_not_removed(student_logits, teacher_logits, labels, T):
    """NCKD over all n classes with the target's logit set to 0 (kept in the softmax)."""
    t = _terms(student_logits, teacher_logits, labels, T)
    zero = torch.zeros_like(labels, dtype=student_logits.dtype)[:, None]
    log_qs = F.log_softmax(student_logits.scatter(1, labels[:, None], zero) / T, dim=1)
    log_qt = F.log_softmax(teacher_logits.scatter(1, labels[:, None], zero) / T, dim=1)
    nckd = F.kl_div(log_qs, log_qt, reduction="none", log_target=True).sum(1)
    return torch.stack([t["tckd"].mean(), nckd.mean()]) * T**2


def _binary_at_t1(student_logits, teacher_logits, labels, T):
    """TCKD from the binary probabilities at T = 1 (the temperature left out of b)."""
    at_1 = _terms(student_logits, teacher_logits, labels, 1.0)
    at_t = _terms(student_logits, teacher_logits, labels, T)
    return torch.stack([at_1["tckd"].mean(), at_t["nckd"].mean()]) * T**2


# Known wrong answers: (what the answer did, a function that does it). The descriptions
# complete the sentence "Your result is what you get when ...".
TERMS_MISTAKES = [
    ("NCKD is multiplied by 1 - p_t,y: that product is KD's coupled term, not NCKD itself",
     _nckd_weighted_by("teacher")),
    ("NCKD is multiplied by 1 - p_s,y (the student's non-target mass; and NCKD itself has no weight)",
     _nckd_weighted_by("student")),
    ("the factor T**2 is missing", _without_t2),
    ("the terms are summed over the batch instead of averaged", _batch_sum),
    ("both KL divergences are reversed: KL(student || teacher) instead of KL(teacher || student)", _reversed),
    ("the target class is masked (its logit set to 0) but kept in the non-target softmax, "
     "instead of being removed", _target_masked_not_removed),
    ("the binary distributions b are computed at T = 1 instead of at temperature T", _binary_at_t1),
]


def _case(B, n, T, seed, teacher_margin=0.0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    z_s = scale * torch.randn(B, n, generator=g, dtype=torch.float64)
    z_t = scale * torch.randn(B, n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, n, (B,), generator=g)
    z_t = z_t.scatter_add(1, labels[:, None], torch.full((B, 1), teacher_margin, dtype=torch.float64))
    return dict(student_logits=z_s, teacher_logits=z_t, labels=labels, T=T)


def terms_cases():
    """The checker's cases, ``(name, hint, arguments)``."""
    return [
        ("one sample, 3 classes, T = 1",
         ("TCKD = KL(b_t || b_s) with b = (p_y, 1 - p_y); NCKD = KL(q_t || q_s) where q is the "
          "softmax of the non-target logits (the target class removed, not zeroed)."),
         _case(1, 3, 1.0, 0)),
        ("a batch of 4, 5 classes, T = 4",
         "Both terms are averaged over the batch and multiplied by T**2; the softmaxes take z / T.",
         _case(4, 5, 4.0, 1)),
        ("a batch of 6, 10 classes, T = 2, a confident teacher (target logit + 6)",
         ("NCKD is the KL of the non-target distributions on its own: its weight 1 - p_t,y belongs "
          "to KD's decomposition, and DKD replaces it by beta."),
         _case(6, 10, 2.0, 2, teacher_margin=6.0)),
        ("a batch of 3, 10 classes, T = 1, a teacher with target logit + 60 (1 - p_t,y ~ 1e-26)",
         ("1 - p_y rounds to 0 in floating point when p_y is this close to 1, so p_j / (1 - p_y) "
          "is 0/0. Compute log(1 - p_y) as logsumexp of the non-target logits / T minus logsumexp "
          "of all logits / T, and q as the softmax of the non-target logits / T."),
         _case(3, 10, 1.0, 3, teacher_margin=60.0)),
    ]


def check_tckd_and_nckd(tckd_and_nckd) -> str:
    """Checks ``tckd_and_nckd(student_logits, teacher_logits, labels, T)`` of exercise
    ``ex-beyond-tckd-nckd``; raises :class:`kdbook.exercises.ExerciseFailure` with specific
    feedback on the first case it gets wrong."""
    names, hints, arguments = zip(*terms_cases())
    return check_function(TERMS_EXERCISE, tckd_and_nckd, reference_tckd_and_nckd, arguments,
                          hints=hints, names=names, mistakes=TERMS_MISTAKES, rtol=RTOL, atol=ATOL)


# -----------------------------------------------------------------------------
# The bug hunt: one step of a KD training loop.


def reference_distill_step(student, teacher, images, labels, optimizer, T=4.0, alpha=0.5):
    """One step of Hinton's KD: ``alpha * CE + (1 - alpha) * T**2 * KL(p_t^T || p_s^T)`` (batch mean)."""
    teacher.eval()  # BatchNorm uses its running statistics and does not update them
    with torch.no_grad():  # no graph through the teacher: no gradient can reach it
        teacher_logits = teacher(images)
    student_logits = student(images)
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                    reduction="batchmean", log_target=True)
    loss = alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * T**2 * soft
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _loss_variant(student, teacher, images, labels, T, alpha, *, reduction="batchmean", t2=True,
                  alpha_on_soft=False):
    """The loss a step computes before its update, with one convention changed."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about reduction='mean', the point here
        teacher_logits = teacher(images)
        student_logits = student(images)
        soft = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                        reduction=reduction, log_target=True) * (T**2 if t2 else 1.0)
        hard = F.cross_entropy(student_logits, labels)
        a = 1 - alpha if alpha_on_soft else alpha
        return float(a * hard + (1 - a) * soft)


STEP_MISTAKES = [
    ("the KL term uses reduction='mean', which divides by batch size x number of classes "
     "(use 'batchmean')", dict(reduction="mean")),
    ("the factor T**2 is missing from the soft term", dict(t2=False)),
    ("alpha weights the soft term instead of the hard one (this book: alpha * CE + (1 - alpha) * soft)",
     dict(alpha_on_soft=True)),
]


def _models(seed: int, n_in: int = 12, n_classes: int = 5):
    """A small float64 teacher with BatchNorm (in training mode, as built) and a student."""
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(n_in, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, n_classes)).double()
    with torch.no_grad():  # as if trained: running statistics away from their initial 0 and 1
        teacher[1].running_mean.uniform_(-1, 1)
        teacher[1].running_var.uniform_(0.5, 2.0)
    student = nn.Sequential(nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_classes)).double()
    return teacher, student


def _step_inputs(seed: int, batch: int, n_in: int = 12, n_classes: int = 5):
    g = torch.Generator().manual_seed(1000 + seed)
    images = 2 * torch.randn(2, batch, n_in, generator=g, dtype=torch.float64)
    labels = torch.randint(0, n_classes, (2, batch), generator=g)
    return images, labels


def _optimizer(student):
    return torch.optim.SGD(student.parameters(), lr=0.5, momentum=0.9)


STEP_CASES = [dict(T=4.0, alpha=0.5, batch=8, seed=0), dict(T=2.0, alpha=0.1, batch=5, seed=1),
              dict(T=1.0, alpha=0.9, batch=6, seed=2)]


def _teacher_state(teacher) -> dict:
    return {k: v.clone() for k, v in teacher.state_dict().items()}


def check_distill_step(distill_step) -> str:
    """Checks ``distill_step(student, teacher, images, labels, optimizer, T, alpha)`` of
    exercise ``ex-beyond-kd-bug``; raises :class:`kdbook.exercises.ExerciseFailure` naming
    what is wrong on the first case and step that fails."""
    if not callable(distill_step):
        raise ExerciseFailure(f"{STEP_EXERCISE}: expected a function, got {type(distill_step).__name__}")
    for i, case in enumerate(STEP_CASES):
        T, alpha = case["T"], case["alpha"]
        teacher, student = _models(case["seed"])
        ref_teacher, ref_student = copy.deepcopy(teacher), copy.deepcopy(student)
        optimizer, ref_optimizer = _optimizer(student), _optimizer(ref_student)
        images, labels = _step_inputs(case["seed"], case["batch"])
        before = _teacher_state(teacher)
        for step in range(2):  # two steps: a missing zero_grad shows on the second
            where = f"case {i + 1} of {len(STEP_CASES)} (T={T:g}, alpha={alpha:g}), step {step + 1} of 2"
            x, y = images[step], labels[step]
            # Up to here the answer's student equals the reference's (or a check has failed).
            wrong_losses = [(text, _loss_variant(ref_student, _eval_copy(ref_teacher), x, y, T, alpha, **changes))
                            for text, changes in STEP_MISTAKES]
            expected_loss = reference_distill_step(ref_student, ref_teacher, x, y, ref_optimizer, T=T, alpha=alpha)
            try:
                got = distill_step(student, teacher, x.clone(), y.clone(), optimizer, T=T, alpha=alpha)
            except Unsolved:
                raise
            except Exception as err:
                raise ExerciseFailure(f"{STEP_EXERCISE}: {where}: your function raised "
                                      f"{type(err).__name__}: {err}") from err
            _check_teacher(teacher, before, where)
            _check_loss(got, expected_loss, wrong_losses, where)
            _check_student(student, ref_student, where)
    return f"{STEP_EXERCISE}: all {len(STEP_CASES)} cases (2 steps each) passed"


def _eval_copy(teacher):
    """A copy of the teacher in eval mode (its outputs as a correct step sees them)."""
    return copy.deepcopy(teacher).eval()


def _check_teacher(teacher, before: dict, where: str) -> None:
    after = teacher.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    stats = [k for k in moved if "running" in k or "num_batches" in k]
    if stats:
        raise ExerciseFailure(
            f"{STEP_EXERCISE}: {where}: the teacher's BatchNorm statistics changed ({', '.join(stats)})."
            "\nThe teacher ran in training mode: BatchNorm then normalises with the batch's statistics "
            "and updates its running ones. Call teacher.eval() before using it.")
    if moved:
        raise ExerciseFailure(f"{STEP_EXERCISE}: {where}: the teacher's weights changed ({', '.join(moved)}): "
                              "only the student may be updated.")
    reached = [name for name, p in teacher.named_parameters() if p.grad is not None]
    if reached:
        raise ExerciseFailure(
            f"{STEP_EXERCISE}: {where}: gradients reached the teacher (.grad is set on {', '.join(reached)})."
            "\nThe teacher's logits must be a constant target: compute them under torch.no_grad() "
            "(or .detach() them).")


def _check_loss(got, expected: float, wrong: list, where: str) -> None:
    case = f"{where}: the returned loss"
    try:
        compare(STEP_EXERCISE, case, got, expected, rtol=RTOL, atol=ATOL,
                hint="Return loss.item(), the loss of this step computed before the update.")
    except ExerciseFailure as failure:
        mistakes = [(text, (lambda value: lambda **_: value)(value)) for text, value in wrong]
        mistake = diagnose(got, expected, {}, mistakes, RTOL, ATOL)
        if mistake:
            raise ExerciseFailure(f"{failure}\nYour result is what you get when {mistake}.") from None
        raise


def _check_student(student, ref_student, where: str) -> None:
    for (name, p), q in zip(student.named_parameters(), ref_student.parameters()):
        compare(STEP_EXERCISE, f"{where}: the student's {name} after the step", p.detach(), q.detach(),
                rtol=RTOL, atol=ATOL,
                hint=("Take exactly one optimiser step per call, on this batch's gradient: "
                      "optimizer.zero_grad(), loss.backward(), optimizer.step()."))
