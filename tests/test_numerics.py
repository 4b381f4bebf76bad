"""The book's float64 identity checks (kdbook.numerics), run on many logit vectors.

A chapter checks an identity on the logits of one teacher, on one machine. Another CPU
gives logits that differ in their last bits (and rounds exp and log differently), so a
tolerance tuned to what passed here can fail on a reader's machine. These tests run the
same check functions the chapters call on thousands of seeded random logit rows of a
trained teacher's scale, and on the chapter's teacher logits nudged by a few ulps and by
1e-12 relative, at the chapters' temperatures: a tolerance that is too tight for some
logits fails here, in CI. The tolerances themselves are checked against exact
arithmetic (mpmath), so a bound that is too loose to mean anything, or too tight to
hold, fails too.
"""

from __future__ import annotations

import mpmath
import pytest
import torch

from kdbook import numerics, theory
from kdbook.data import TensorLoader, stratified_subset
from kdbook.teacher import available_teacher

F64 = torch.float64
N_CLASSES = 10
ENTROPY_TEMPERATURES = [0.25, 0.5, 1.0, 4.0, 20.0, 200.0]  # chapter "Temperature"
LOW_TEMPERATURES = torch.logspace(-2, 1, 31, dtype=F64).tolist()
ENTROPY_GRID = torch.logspace(-1, 2.5, 80, dtype=F64).tolist()
GRADIENT_TEMPERATURES = [0.5, 1.0, 2.0, 4.0, 10.0, 50.0, 100.0]  # "Gradients", "Formulation"


def teacher_scale_rows(count: int, seed: int) -> torch.Tensor:
    """``count`` logit rows over 10 classes with the statistics of the book's teacher on
    CIFAR-10 test images: spread (max - min) between about 10 and 40, one class usually
    well ahead, a mean that is not 0. Seeded."""
    g = torch.Generator().manual_seed(seed)
    spread = 10 + 30 * torch.rand(count, 1, generator=g, dtype=F64)
    rows = spread / 4 * torch.randn(count, N_CLASSES, generator=g, dtype=F64)
    winner = torch.randint(0, N_CLASSES, (count,), generator=g)
    lead = spread[:, 0] / 2 * torch.rand(count, generator=g, dtype=F64)
    rows[torch.arange(count), winner] += lead
    return rows + 2 * torch.randn(count, 1, generator=g, dtype=F64)


@pytest.fixture(scope="module")
def teacher_logits(cifar) -> torch.Tensor:
    """The logits the chapter "Temperature" checks: the book's teacher (or its stand-in)
    on the fixed class-balanced 100 test images, in float64 (as that chapter loads them)."""
    teacher, _ = available_teacher(cifar, "cpu")
    test_idx = stratified_subset(cifar.test_labels, per_class=10, seed=0)
    loader = TensorLoader(cifar.test_images, cifar.test_labels, 100, indices=test_idx)
    with torch.no_grad():
        return teacher(next(iter(loader)).images).double()


def nudged(logits: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Copies of ``logits`` as another CPU might produce them: every entry moved by up to
    4 ulps, and by a relative 1e-12."""
    g = torch.Generator().manual_seed(seed)
    ulps = torch.randint(-4, 5, logits.shape, generator=g).to(F64)
    by_ulps = logits + ulps * torch.finfo(F64).eps * logits.abs()
    relative = logits * (1 + 1e-12 * torch.randn(logits.shape, generator=g, dtype=F64))
    return [by_ulps, relative]


# ----------------------------------------------------------------------------- the bounds


def exact_entropy_derivative(z: torch.Tensor, T: float) -> float:
    """Var_{p^T}(z) / T^3 for the float64 logits ``z`` in 80-digit arithmetic."""
    with mpmath.workdps(80):
        zs = [mpmath.mpf(float(v)) for v in z]
        top, T = max(zs), mpmath.mpf(T)
        w = [mpmath.exp((v - top) / T) for v in zs]
        total = mpmath.fsum(w)
        mean = mpmath.fsum(wi * v for wi, v in zip(w, zs)) / total
        return float(mpmath.fsum(wi * (v - mean) ** 2 for wi, v in zip(w, zs)) / total / T**3)


def exact_entropy(z: torch.Tensor, T: float) -> float:
    with mpmath.workdps(80):
        zs = [mpmath.mpf(float(v)) for v in z]
        top, T = max(zs), mpmath.mpf(T)
        d = [(v - top) / T for v in zs]
        log_total = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in d))
        return float(-mpmath.fsum(mpmath.exp(x - log_total) * (x - log_total) for x in d))


def test_error_bounds_hold_against_exact_arithmetic():
    """Each computation is within its own bound of the exact value (80 digits), and the
    bound is not vacuous: on these rows it is at most a few hundred times the error."""
    rows = teacher_scale_rows(40, seed=1)
    for T in ENTROPY_TEMPERATURES:
        exact = torch.tensor([exact_entropy_derivative(z, T) for z in rows], dtype=F64)
        autograd = numerics.autograd_temperature_derivative(numerics.entropy_from_log_softmax, rows, T)
        closed = numerics.variance_over_t_cubed(rows, T)
        auto_bound = numerics.autograd_entropy_derivative_error(rows, T)
        closed_bound = numerics.closed_form_entropy_derivative_error(rows, T)
        assert ((autograd - exact).abs() <= auto_bound).all(), T
        assert ((closed - exact).abs() <= closed_bound).all(), T
        assert (closed_bound <= 1e-10 * exact).all(), T  # the closed form stays accurate
        H = numerics.entropy_from_log_softmax(rows, T)
        H_exact = torch.tensor([exact_entropy(z, T) for z in rows], dtype=F64)
        assert ((H - H_exact).abs() <= numerics.entropy_error_bound(rows, T)).all(), T


def test_sum_rounding_bound_holds_for_cancelling_sums():
    g = torch.Generator().manual_seed(0)
    terms = torch.randn(200, 50, generator=g, dtype=F64) * torch.logspace(0, 8, 50, dtype=F64)
    terms = torch.cat([terms, -terms[:, :25] * (1 + 1e-9)], dim=1)  # large cancellation
    exact = torch.tensor([float(mpmath.fsum(map(float, row))) for row in terms], dtype=F64)
    in_float32 = terms.float().sum(dim=1).double()
    assert ((in_float32 - exact).abs() <= numerics.sum_rounding_bound(terms.float()).double()
            + (terms - terms.float().double()).abs().sum(1)).all()
    assert ((terms.sum(dim=1) - exact).abs() <= numerics.sum_rounding_bound(terms)).all()


def test_helpers_reject_bad_input():
    with pytest.raises(TypeError, match="dtype"):
        numerics.unit_roundoff(torch.int64)
    with pytest.raises(ValueError, match="k must be"):
        numerics.gamma(-1)
    with pytest.raises(ValueError, match="too many"):
        numerics.gamma(2**53)
    with pytest.raises(TypeError, match="terms"):
        numerics.sum_rounding_bound([1.0, 2.0])
    with pytest.raises(ValueError, match="T must be"):
        numerics.log_softmax_error_bound(torch.zeros(3, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="logits must have shape"):
        numerics.softmax_error_bound(torch.zeros(2, 2, 2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="increasing"):
        numerics.check_entropy_increasing(torch.zeros(3, dtype=F64), [2.0, 1.0])
    with pytest.raises(ValueError, match="exactly one"):
        numerics.soft_gradient_tolerance(torch.zeros(1, 3, dtype=F64), 1.0)


# ------------------------------------------------------- chapter "Temperature": dH/dT


def test_entropy_derivative_check_on_random_teacher_scale_rows():
    numerics.check_entropy_derivative(teacher_scale_rows(500, seed=2), ENTROPY_TEMPERATURES)


def test_entropy_derivative_check_on_nudged_teacher_logits(teacher_logits):
    for seed in range(3):
        for logits in [teacher_logits, *nudged(teacher_logits, seed)]:
            numerics.check_entropy_derivative(logits, ENTROPY_TEMPERATURES)


def test_a_tolerance_relative_to_the_result_fails_on_these_rows(teacher_logits):
    """The chapter's former check, ``allclose(autograd, closed, rtol=1e-7, atol=1e-15)``
    row by row, fails on some of the rows above: they are hard enough to catch a
    tolerance that is not derived from the rounding of the terms."""
    def failures(rows):
        count = 0
        for T in ENTROPY_TEMPERATURES:
            autograd = numerics.autograd_temperature_derivative(numerics.entropy_from_log_softmax, rows, T)
            closed = numerics.variance_over_t_cubed(rows, T)
            count += int((~torch.isclose(autograd, closed, rtol=1e-7, atol=1e-15)).sum())
        return count

    assert failures(teacher_scale_rows(500, seed=2)) > 0
    assert sum(failures(x) for x in nudged(teacher_logits, 0)) + failures(teacher_logits) > 0


def test_entropy_derivative_check_catches_a_wrong_formula():
    """Var/T^2 instead of Var/T^3: off by a factor T, far beyond the tolerance."""
    with pytest.raises(AssertionError, match="rounding bound"):
        numerics.check_entropy_derivative(
            teacher_scale_rows(20, seed=3), [4.0],
            derivative=lambda z, T: numerics.variance_over_t_cubed(z, T) * T,
        )


def test_the_library_closed_form_is_the_chapters(teacher_logits):
    for T in ENTROPY_TEMPERATURES:
        for rows in [teacher_logits, teacher_scale_rows(200, seed=4)]:
            both = 2 * numerics.closed_form_entropy_derivative_error(rows, T)
            library = theory.entropy_temperature_derivative(rows, T)
            assert ((numerics.variance_over_t_cubed(rows, T) - library).abs() <= both).all()


def test_the_check_is_sharp_where_float64_can_be():
    """At moderate temperatures the tolerance is below a millionth of the derivative for
    every row: there the check tells a right formula from a nearly right one."""
    summaries = numerics.check_entropy_derivative(teacher_scale_rows(300, seed=5), [4.0, 20.0, 200.0])
    assert all(s.sharp == 1.0 for s in summaries)


# ---------------------------------------- chapter "Temperature": limits and monotonicity


def test_low_temperature_bounds_on_random_and_nudged_rows(teacher_logits):
    numerics.check_low_temperature_bounds(teacher_scale_rows(1000, seed=6), LOW_TEMPERATURES)
    for logits in nudged(teacher_logits, 1):
        numerics.check_low_temperature_bounds(logits, LOW_TEMPERATURES)


def test_low_temperature_bounds_with_ties():
    tied = torch.tensor([[2.0, 2.0, 2.0, 1.0, -1.0], [5.0, 5.0, -3.0, -3.0, 0.0]], dtype=F64)
    summaries = numerics.check_low_temperature_bounds(tied, LOW_TEMPERATURES)
    # at T = 0.01 the theorem allows about e^{-1/0.01}: what is left is rounding,
    # about u |z| / T ~ 1e-13, far below the deviations at larger T
    assert summaries[0].deviation <= summaries[0].allowed < 1e-10


def test_low_temperature_check_catches_a_wrong_softmax(monkeypatch):
    """A log-softmax at the wrong temperature (T / 1.01) breaks (temp-low-rate)."""
    right = torch.log_softmax
    monkeypatch.setattr(torch, "log_softmax", lambda x, dim: right(1.01 * x, dim=dim))
    with pytest.raises(AssertionError, match="log k|log n|slowly"):
        numerics.check_low_temperature_bounds(teacher_scale_rows(50, seed=7), LOW_TEMPERATURES)


def test_entropy_increases_on_random_and_nudged_rows(teacher_logits):
    numerics.check_entropy_increasing(teacher_scale_rows(200, seed=8), ENTROPY_GRID)
    for logits in nudged(teacher_logits, 2):
        numerics.check_entropy_increasing(logits, ENTROPY_GRID)


def test_entropy_increasing_check_catches_a_decrease(monkeypatch):
    right = numerics.entropy_from_log_softmax
    monkeypatch.setattr(numerics, "entropy_from_log_softmax", lambda z, T: -right(z, T))
    with pytest.raises(AssertionError, match="decreases"):
        numerics.check_entropy_increasing(teacher_scale_rows(5, seed=9), ENTROPY_GRID)


# ------------------------------------ chapters "Hinton's formulation" and "Gradients"


@pytest.mark.parametrize("n", [2, 10, 100, 1000])
def test_soft_gradient_check_on_random_rows(n):
    """As in the chapter "Gradients" (n = 2 ... 1000), with logits of the teacher's scale
    for n = 10 and of the chapters' scale (3 randn) otherwise."""
    for seed in range(3 if n <= N_CLASSES else 1):
        g = torch.Generator().manual_seed(seed)
        if n == N_CLASSES:
            student, teacher = teacher_scale_rows(64, seed=10 + seed), teacher_scale_rows(64, seed=20 + seed)
        else:
            student, teacher = (3 * torch.randn(16, n, generator=g, dtype=F64) for _ in range(2))
        for T in GRADIENT_TEMPERATURES:
            for scale in (False, True):
                numerics.check_soft_gradient(student, T, teacher_logits=teacher, scale_by_t2=scale)
                numerics.check_soft_gradient(student, T, teacher_probs=torch.softmax(teacher / T, 1),
                                             scale_by_t2=scale)


def test_soft_gradient_check_on_nudged_teacher_logits(teacher_logits):
    student = teacher_scale_rows(len(teacher_logits), seed=30)
    for teacher in [teacher_logits, *nudged(teacher_logits, 3)]:
        for T in GRADIENT_TEMPERATURES:
            numerics.check_soft_gradient(student, T, teacher_logits=teacher)
            numerics.check_soft_gradient(teacher, T, teacher_logits=student, scale_by_t2=True)


def test_distillation_gradient_check(teacher_logits):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, N_CLASSES, (len(teacher_logits),), generator=g)
    for student in [teacher_scale_rows(len(teacher_logits), seed=40), *nudged(teacher_logits, 4)]:
        for T in (0.5, 4.0, 100.0):
            for alpha in (0.0, 0.3, 1.0):
                numerics.check_distillation_gradient(student, teacher_logits, labels, T, alpha)


def test_soft_gradient_check_catches_the_reduction_bug(monkeypatch):
    """A soft term averaged over B n instead of B ('mean' for 'batchmean') fails."""
    from kdbook import losses

    right = losses.soft_distillation_loss
    monkeypatch.setattr(losses, "soft_distillation_loss",
                        lambda *a, **k: right(*a, **k) / N_CLASSES)
    with pytest.raises(AssertionError, match="rounding bound"):
        numerics.check_soft_gradient(teacher_scale_rows(8, seed=50), 4.0,
                                     teacher_logits=teacher_scale_rows(8, seed=51))
