"""The losses beyond Hinton's: decoupled KD, logit standardization and CTKD's learned
temperature, against float64 references written from the formulas, closed-form
gradients, input checks and float32 stability at extreme logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_losses import random_case as losses_random_case  # tests/ is on sys.path under pytest
import torch.nn.functional as F
from torch import nn

from kdbook.learned_temperature import (
    CTKD_RAMP_FRACTION,
    LearnedTemperature,
    curriculum_lambda,
    learned_temperature_loss,
    reverse_gradient,
)
from kdbook.losses import (
    decoupled_kl_terms,
    dkd_loss,
    dkd_loss_parts,
    soft_distillation_loss,
    standardize_logits,
    standardized_distillation_loss,
)

U32 = 2.0**-24  # unit roundoff of float32

# -----------------------------------------------------------------------------
# float64 references in numpy, with probabilities (not log-space), from the formulas.


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_dkd_terms(zs, zt, y, T):
    """Per sample: TCKD = KL(b_t || b_s), NCKD = KL(q_t || q_s), p_t,y; b = (p_y, 1 - p_y)
    and q = the probabilities of the other classes renormalised, all from probabilities."""
    zs, zt, y = np.asarray(zs, np.float64), np.asarray(zt, np.float64), np.asarray(y)
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    rows = np.arange(len(y))
    other = np.ones_like(ps, dtype=bool)
    other[rows, y] = False
    bs = np.stack([ps[rows, y], 1 - ps[rows, y]], 1)
    bt = np.stack([pt[rows, y], 1 - pt[rows, y]], 1)
    qs = ps[other].reshape(len(y), -1) / bs[:, 1:]
    qt = pt[other].reshape(len(y), -1) / bt[:, 1:]
    tckd = (bt * np.log(bt / bs)).sum(1)
    nckd = (qt * np.log(qt / qs)).sum(1)
    return tckd, nckd, pt[rows, y]


def ref_dkd(zs, zt, y, T, alpha, beta) -> float:
    tckd, nckd, _ = ref_dkd_terms(zs, zt, y, T)
    return T**2 * (alpha * tckd.mean() + beta * nckd.mean())


def ref_kl_per_sample(zs, zt, T):
    ps, pt = np_softmax(np.asarray(zs, np.float64) / T), np_softmax(np.asarray(zt, np.float64) / T)
    return (pt * np.log(pt / ps)).sum(1)


def ref_standardize(z, eps=1e-7):
    z = np.asarray(z, np.float64)
    return (z - z.mean(1, keepdims=True)) / (z.std(1, ddof=1, keepdims=True) + eps)


def ref_lskd(zs, zt, T, eps=1e-7) -> float:
    ps, pt = np_softmax(ref_standardize(zs, eps) / T), np_softmax(ref_standardize(zt, eps) / T)
    return T**2 * float((pt * np.log(pt / ps)).sum(1).mean())


def random_case(seed: int, n: int = 7, c: int = 6, scale: float = 3.0, dtype=torch.float64):
    """test_losses.random_case with six classes by default."""
    return losses_random_case(seed, n=n, c=c, scale=scale, dtype=dtype)


TEMPERATURES = [0.5, 1.0, 2.0, 4.0, 10.0]
WEIGHTS = [(1.0, 0.0), (0.0, 1.0), (1.0, 8.0), (0.5, 2.0)]

# -----------------------------------------------------------------------------
# DKD: values.


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("alpha, beta", WEIGHTS)
def test_dkd_matches_float64_reference(T, alpha, beta):
    zs, zt, y = random_case(seed=int(10 * T + 3 * beta))
    expected = ref_dkd(zs.numpy(), zt.numpy(), y.numpy(), T, alpha, beta)
    got = dkd_loss(zs, zt, y, T, alpha, beta)
    assert got.dtype == torch.float64 and got.dim() == 0
    # float64 throughout; the reference forms 1 - p_y (cancellation when p_y ~ 1): 1e-9 relative.
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    parts = dkd_loss_parts(zs, zt, y, T, alpha, beta)
    tckd, nckd, _ = ref_dkd_terms(zs.numpy(), zt.numpy(), y.numpy(), T)
    assert parts["tckd"].item() == pytest.approx(T**2 * tckd.mean(), rel=1e-9, abs=1e-12)
    assert parts["nckd"].item() == pytest.approx(T**2 * nckd.mean(), rel=1e-9, abs=1e-12)


def mdistiller_style_dkd(zs, zt, y, T, alpha, beta):
    """DKD the way mdistiller writes it: 1 - p through sums of masked probabilities, and
    the target class pushed out of the NCKD softmax by subtracting 1000 (float64 here)."""
    gt = F.one_hot(y, zs.shape[1]).to(zs.dtype)
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum() / len(y) * T**2
    log_qs = F.log_softmax(zs / T - 1000.0 * gt, 1)
    qt = F.softmax(zt / T - 1000.0 * gt, 1)
    nckd = torch.special.xlogy(qt, qt).sum() / len(y) * T**2 - (qt * log_qs).sum() / len(y) * T**2
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_agrees_with_mdistillers_formulation(T):
    zs, zt, y = random_case(seed=5, n=16, c=10)
    expected = mdistiller_style_dkd(zs, zt, y, T, 1.0, 8.0)
    assert dkd_loss(zs, zt, y, T, 1.0, 8.0).item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize("T", TEMPERATURES)
def test_kl_decomposes_into_tckd_and_weighted_nckd(T):
    """KL(p_t || p_s) = TCKD + (1 - p_t,y) NCKD, sample by sample (float64)."""
    zs, zt, y = random_case(seed=17, n=9, c=7)
    terms = decoupled_kl_terms(zs, zt, y, T)
    kl = F.kl_div(F.log_softmax(zs / T, 1), F.log_softmax(zt / T, 1), reduction="none", log_target=True).sum(1)
    rebuilt = terms["tckd"] + (1 - terms["teacher_target_prob"]) * terms["nckd"]
    # each side is a sum of C terms of size <= max |log p|, rounded at 2^-53 each: 1e-12 covers it.
    torch.testing.assert_close(rebuilt, kl, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kl.numpy(), ref_kl_per_sample(zs.numpy(), zt.numpy(), T), rtol=1e-9, atol=1e-12)


def test_dkd_with_equal_weights_is_not_kd_but_weights_nckd_more():
    """alpha = beta = 1 replaces KD's factor (1 - p_t,y) <= 1 on NCKD by 1: DKD >= KD."""
    zs, zt, y = random_case(seed=3)
    kd = soft_distillation_loss(zs, zt, 4.0)
    assert dkd_loss(zs, zt, y, 4.0, 1.0, 1.0).item() >= kd.item()
    terms = decoupled_kl_terms(zs, zt, y, 4.0)
    gap = 16 * (terms["teacher_target_prob"] * terms["nckd"]).mean()
    assert (dkd_loss(zs, zt, y, 4.0, 1.0, 1.0) - kd).item() == pytest.approx(gap.item(), rel=1e-9)


def test_dkd_is_zero_when_student_equals_teacher_and_has_two_classes():
    zs, _, y = random_case(seed=8)
    assert dkd_loss(zs, zs.clone(), y, 2.0, 1.0, 8.0).item() == pytest.approx(0.0, abs=1e-12)
    # With two classes there is one non-target class: NCKD is 0, DKD is alpha * TCKD = alpha * KL.
    zs2, zt2, y2 = random_case(seed=9, c=2)
    parts = dkd_loss_parts(zs2, zt2, y2, 3.0, 1.0, 5.0)
    assert parts["nckd"].item() == pytest.approx(0.0, abs=1e-15)
    assert parts["loss"].item() == pytest.approx(soft_distillation_loss(zs2, zt2, 3.0).item(), rel=1e-10)


# -----------------------------------------------------------------------------
# DKD: gradients against their closed forms.


@pytest.mark.parametrize("T", TEMPERATURES)
def test_tckd_gradient_closed_form(T):
    """d(T^2 TCKD)/dz_s = T (b_s,t - b_t,t) (e_y - q_s), q_s the student's non-target
    distribution (0 at the label); averaged over the batch."""
    zs, zt, y = random_case(seed=23, n=5)
    zs.requires_grad_(True)
    (grad,) = torch.autograd.grad(dkd_loss(zs, zt, y, T, 1.0, 0.0), zs)
    ps, pt = F.softmax(zs.detach() / T, 1), F.softmax(zt / T, 1)
    onehot = F.one_hot(y, zs.shape[1]).double()
    bs, bt = (ps * onehot).sum(1, keepdim=True), (pt * onehot).sum(1, keepdim=True)
    qs = ps * (1 - onehot) / (1 - bs)
    expected = T * (bs - bt) * (onehot - qs) / len(y)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("T", TEMPERATURES)
def test_nckd_gradient_closed_form(T):
    """d(T^2 NCKD)/dz_s = T (q_s - q_t) off the label and 0 at it; averaged over the batch."""
    zs, zt, y = random_case(seed=29, n=5)
    zs.requires_grad_(True)
    (grad,) = torch.autograd.grad(dkd_loss(zs, zt, y, T, 0.0, 1.0), zs)
    onehot = F.one_hot(y, zs.shape[1]).double()
    ps, pt = F.softmax(zs.detach() / T, 1), F.softmax(zt / T, 1)
    qs = ps * (1 - onehot) / (ps * (1 - onehot)).sum(1, keepdim=True)
    qt = pt * (1 - onehot) / (pt * (1 - onehot)).sum(1, keepdim=True)
    torch.testing.assert_close(grad, T * (qs - qt) / len(y), rtol=1e-9, atol=1e-12)


def test_dkd_gradcheck():
    zs, zt, y = random_case(seed=31, n=3, c=5)
    zs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: dkd_loss(z, zt, y, 2.0, 1.0, 3.0), (zs,))


# -----------------------------------------------------------------------------
# Logit standardization.


def test_standardize_matches_reference_and_is_a_z_score():
    zs, _, _ = random_case(seed=41, n=6, c=10)
    out = standardize_logits(zs)
    np.testing.assert_allclose(out.numpy(), ref_standardize(zs.numpy()), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    # sample std of the output: sigma / (sigma + eps) = 1 - eps / sigma to first order
    sigma = zs.std(1)
    torch.testing.assert_close(out.std(1), sigma / (sigma + 1e-7), rtol=1e-12, atol=0)


def test_standardize_ignores_shift_and_positive_scale():
    zs, _, _ = random_case(seed=43, n=4, c=8)
    moved = 7.5 * zs + torch.arange(4, dtype=torch.float64)[:, None] * 100
    # (a z + b - mean) / (a sigma + eps) differs from (z - mean) / (sigma + eps) only through eps:
    # relative difference eps (1/sigma - 1/(a sigma)) <= 1e-7 / min sigma.
    bound = 1e-7 / float(zs.std(1).min()) + 1e-12
    torch.testing.assert_close(standardize_logits(moved), standardize_logits(zs), rtol=bound, atol=bound)


def test_standardize_jacobian_closed_form():
    """d[(z - m)/(s + eps)]/dz = (I - 11^T/C)/(s + eps) - c c^T / ((C - 1) s (s + eps)^2)."""
    z = torch.randn(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2
    eps = 1e-3  # large enough that the eps terms matter in the check
    jac = torch.autograd.functional.jacobian(lambda v: standardize_logits(v, eps), z)[0, :, 0, :]
    c = (z - z.mean())[0]
    s = c.square().sum().sqrt() / math.sqrt(5)
    expected = (torch.eye(6, dtype=torch.float64) - 1 / 6) / (s + eps) - torch.outer(c, c) / (5 * s * (s + eps) ** 2)
    torch.testing.assert_close(jac, expected, rtol=1e-10, atol=1e-12)


def test_standardize_constant_logits_give_zeros_and_finite_gradient():
    z = torch.full((3, 5), 2.5, requires_grad=True)
    out = standardize_logits(z)
    assert torch.equal(out, torch.zeros(3, 5))
    out.pow(2).sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("T", TEMPERATURES)
def test_lskd_matches_reference_and_ignores_student_scale(T):
    zs, zt, _ = random_case(seed=47)
    expected = ref_lskd(zs.numpy(), zt.numpy(), T)
    assert standardized_distillation_loss(zs, zt, T).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # A student whose logits are a shifted, scaled copy of the teacher's gets ~0 loss: the point
    # of standardization (KD would penalise the scale). Only eps keeps it from exactly 0.
    copy = 0.2 * zt + 3.0
    assert standardized_distillation_loss(copy, zt, T).item() == pytest.approx(0.0, abs=1e-10)
    assert soft_distillation_loss(copy, zt, T).item() > 1e-3


def test_lskd_gradient_closed_form():
    """d/dz_s of T^2 KL(p_t || softmax(std(z_s)/T)) = J_std^T T (p_s - p_t), J_std the z-score Jacobian."""
    T = 2.0
    zs, zt, _ = random_case(seed=53, n=1, c=5)
    zs.requires_grad_(True)
    (grad,) = torch.autograd.grad(standardized_distillation_loss(zs, zt, T), zs)
    jac = torch.autograd.functional.jacobian(lambda v: standardize_logits(v), zs.detach())[0, :, 0, :]
    ps = F.softmax(standardize_logits(zs.detach()) / T, 1)[0]
    pt = F.softmax(standardize_logits(zt) / T, 1)[0]
    torch.testing.assert_close(grad[0], jac.T @ (T * (ps - pt)), rtol=1e-10, atol=1e-12)


# -----------------------------------------------------------------------------
# Input checks: each names the argument.


def _good():
    zs, zt, y = random_case(seed=71, n=4, c=5, dtype=torch.float32)
    return {"student_logits": zs, "teacher_logits": zt, "labels": y, "temperature": 4.0, "alpha": 1.0, "beta": 8.0}


DKD_BAD_INPUTS = [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": -2.0}, ValueError, "temperature"),
    ({"temperature": math.inf}, ValueError, "temperature"),
    ({"temperature": math.nan}, ValueError, "temperature"),
    ({"temperature": "4"}, TypeError, "temperature"),
    ({"alpha": -0.5}, ValueError, "alpha"),
    ({"alpha": math.inf}, ValueError, "alpha"),
    ({"alpha": math.nan}, ValueError, "alpha"),
    ({"alpha": True}, TypeError, "alpha"),
    ({"beta": -1.0}, ValueError, "beta"),
    ({"beta": math.inf}, ValueError, "beta"),
    ({"beta": "8"}, TypeError, "beta"),
    ({"teacher_logits": torch.randn(3, 5)}, ValueError, "teacher_logits"),
    ({"teacher_logits": torch.randn(4, 6)}, ValueError, "teacher_logits"),
    ({"teacher_logits": torch.ones(4, 5, dtype=torch.int64)}, TypeError, "teacher_logits"),
    ({"student_logits": torch.randn(4)}, ValueError, "student_logits"),
    ({"student_logits": np.zeros((4, 5), np.float32)}, TypeError, "student_logits"),
    ({"labels": torch.tensor([0, 1, 5, 2])}, ValueError, "labels"),
    ({"labels": torch.tensor([0, 1, -1, 2])}, ValueError, "labels"),
    ({"labels": torch.tensor([0, 1, 2, 3], dtype=torch.int32)}, TypeError, "labels"),
    ({"labels": torch.tensor([0, 1, 2])}, ValueError, "labels"),
]


@pytest.mark.parametrize("changes, exc, name", DKD_BAD_INPUTS,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(DKD_BAD_INPUTS)])
def test_dkd_bad_inputs_name_the_argument(changes, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        dkd_loss(**{**_good(), **changes})


def test_dkd_good_inputs_do_not_raise():
    assert torch.isfinite(dkd_loss(**_good()))


@pytest.mark.parametrize("call, exc, name", [
    (lambda: standardize_logits([1.0, 2.0]), TypeError, "logits"),
    (lambda: standardize_logits(torch.ones(3, dtype=torch.int64)), TypeError, "logits"),
    (lambda: standardize_logits(torch.ones(3, 1)), ValueError, "logits"),
    (lambda: standardize_logits(torch.ones(3, 2), eps=0.0), ValueError, "eps"),
    (lambda: standardize_logits(torch.ones(3, 2), eps="1e-7"), TypeError, "eps"),
    (lambda: standardized_distillation_loss(torch.ones(3, 4), torch.ones(2, 4)), ValueError, "teacher_logits"),
    (lambda: standardized_distillation_loss(torch.ones(3, 4), torch.ones(3, 4), 0.0), ValueError, "temperature"),
])
def test_standardization_bad_inputs_name_the_argument(call, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call()


# -----------------------------------------------------------------------------
# float32 at extreme logits (|z| up to 1e4, T down to 0.05).

EXTREME_T = [0.05, 0.1, 1.0, 4.0, 100.0]


def _extreme_cases():
    g = torch.Generator().manual_seed(0)
    n, c = 8, 10
    y = torch.randint(0, c, (n,), generator=g)
    adv_s, adv_t = torch.full((n, c), -1e4), torch.full((n, c), -1e4)
    adv_s[:, 0], adv_t[:, 1] = 1e4, 1e4  # each puts all mass where the other puts none
    confident_s = torch.full((n, c), -1e4)
    confident_s[torch.arange(n), y] = 1e4  # student sure of the label: p_s,y = 1 in float32
    sign = torch.where(torch.rand(n, c, generator=g) < 0.5, -1e4, 1e4)
    return {
        "random": ((torch.rand(n, c, generator=g) * 2 - 1) * 1e4, (torch.rand(n, c, generator=g) * 2 - 1) * 1e4, y),
        "adversarial": (adv_s, adv_t, torch.full((n,), 2)),
        "signs": (sign, -sign, y),
        "confident-student": (confident_s, (torch.rand(n, c, generator=g) * 2 - 1) * 1e4, y),
        "uniform-student": (torch.zeros(n, c), adv_t, y),
    }


EXTREME = _extreme_cases()


def _kl_and_size(log_p, log_q):
    """Per row: KL(p || q) (0 log 0 = 0), and sum_i p_i (|log p_i| + |log q_i|), the size of
    the log-probabilities whose differences the KL sums (what its rounding errors scale with)."""
    p = log_p.exp()
    present = log_p > -math.inf
    kl = torch.where(present, p * (log_p - log_q), 0).sum(1)
    size = torch.where(present, p * (log_p.abs() + log_q.abs()), 0).sum(1)
    return kl, size


def ref64_dkd(zs, zt, y, T, alpha, beta):
    """float64 DKD in log space (probabilities underflow here even in float64), teacher not
    detached; returns (loss, size of the log-probabilities it compares, times the same weights)."""
    ls, lt = zs / T - torch.logsumexp(zs / T, 1, keepdim=True), zt / T - torch.logsumexp(zt / T, 1, keepdim=True)
    other = ~F.one_hot(y, zs.shape[1]).bool()

    def binary(lp):
        return torch.stack([lp[~other], torch.logsumexp(lp.masked_fill(~other, -math.inf), 1)], 1)

    tckd, t_size = _kl_and_size(binary(lt), binary(ls))
    qs = torch.log_softmax(zs[other].view(len(y), -1) / T, 1)
    qt = torch.log_softmax(zt[other].view(len(y), -1) / T, 1)
    nckd, n_size = _kl_and_size(qt, qs)
    loss = T**2 * (alpha * tckd.mean() + beta * nckd.mean())
    return loss, T**2 * (alpha * t_size.mean() + beta * n_size.mean()).item()


def ref64_lskd(zs, zt, T):
    def z(v):
        c = v - v.mean(1, keepdim=True)
        # clamp: constant rows (std 0) get a finite gradient, used only for the tolerance
        return c / (c.square().sum(1, keepdim=True).div(v.shape[1] - 1).clamp_min(1e-300).sqrt() + 1e-7)

    kl, size = _kl_and_size(torch.log_softmax(z(zt) / T, 1), torch.log_softmax(z(zs) / T, 1))
    return T**2 * kl.mean(), T**2 * size.mean().item()


def float32_tolerance(ref, zs, zt) -> float:
    """Bound on the effect of float32 rounding on a loss of (z_s, z_t), from float64.

    Each logit enters through z/T and a few more roundings (subtracting the row maximum,
    exp and log inside logsumexp, the difference of log-probabilities): 4 roundings on
    each of the two sides, doubled for the accumulation over classes and the batch, make
    16 roundings of u = 2^-24 each. (1) Perturbing every input by 16 u times its row's
    largest |z| changes the loss by at most 16 u sum_i |dL/dz_i| max_j |z_j| (first order,
    float64 gradient). (2) The log-probabilities themselves carry relative errors 16 u, and
    the KL sums p (log p - log q): 16 u T^2 sum p (|log p| + |log q|) (``size`` from ``ref``)."""
    zs64 = zs.double().requires_grad_(True)
    zt64 = zt.double().requires_grad_(True)
    loss, size = ref(zs64, zt64)
    gs, gt = torch.autograd.grad(loss, (zs64, zt64), allow_unused=True)
    total = size
    for g, z in ((gs, zs64), (gt, zt64)):
        if g is not None:
            total += float((g.abs() * z.detach().abs().amax(1, keepdim=True)).sum())
    return 16 * U32 * total + 1e-30


@pytest.mark.parametrize("T", EXTREME_T)
@pytest.mark.parametrize("case", list(EXTREME))
def test_dkd_float32_extreme_logits(T, case):
    zs, zt, y = (t.clone() for t in EXTREME[case])
    zs.requires_grad_(True)
    loss = dkd_loss(zs, zt, y, T, 1.0, 8.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    def ref(a, b):
        return ref64_dkd(a, b, y, T, 1.0, 8.0)
    expected = ref(zs.detach().double(), zt.double())[0].item()
    assert math.isfinite(expected)
    assert abs(loss.item() - expected) <= float32_tolerance(ref, zs.detach(), zt)
    loss.backward()
    assert torch.isfinite(zs.grad).all()
    # Closed forms: |d TCKD| <= T |b_s - b_t| |e_y - q_s| <= 2T per row, |d NCKD| <= 2T per row (L1).
    assert zs.grad.abs().sum(1).max().item() <= (1.0 + 8.0) * 2 * T / len(y) * (1 + 1e-5)


@pytest.mark.parametrize("T", EXTREME_T)
@pytest.mark.parametrize("case", list(EXTREME))
def test_lskd_float32_extreme_logits(T, case):
    zs, zt, _ = (t.clone() for t in EXTREME[case])
    zs.requires_grad_(True)
    loss = standardized_distillation_loss(zs, zt, T)
    assert torch.isfinite(loss)
    def ref(a, b):
        return ref64_lskd(a, b, T)
    expected = ref(zs.detach().double(), zt.double())[0].item()
    assert abs(loss.item() - expected) <= float32_tolerance(ref, zs.detach(), zt)
    loss.backward()
    assert torch.isfinite(zs.grad).all()


# -----------------------------------------------------------------------------
# The teacher never receives gradients.


@pytest.mark.parametrize("which", ["dkd", "lskd"])
def test_new_losses_leave_the_teacher_alone(which):
    torch.manual_seed(0)
    teacher, student = nn.Linear(8, 5), nn.Linear(8, 5)
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    zs, zt = student(x), teacher(x)
    loss = dkd_loss(zs, zt, y, 4.0, 1.0, 8.0) if which == "dkd" else standardized_distillation_loss(zs, zt, 2.0)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())


# -----------------------------------------------------------------------------
# CTKD: gradient reversal, curriculum, learned temperature.


@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_is_identity_forward_and_reverses_backward(scale):
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64)
    y = reverse_gradient(x, scale)
    assert torch.equal(y, x)
    (grad,) = torch.autograd.grad((w * y).sum(), x)
    torch.testing.assert_close(grad, -scale * w, rtol=0, atol=0)


def test_gradient_reversal_inside_a_composition():
    """d/dx f(GRL(x)) = -lambda f'(x): here f = sin, checked against the analytic derivative."""
    x = torch.linspace(-2, 2, 7, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(torch.sin(reverse_gradient(x, 0.7)).sum(), x)
    torch.testing.assert_close(grad, -0.7 * torch.cos(x.detach()), rtol=1e-15, atol=1e-15)


def ctkd_cosine_decay(epoch: int, loops: int = 10, max_value: float = 0.0, min_value: float = -1.0) -> float:
    """CTKD's CosineDecay.get_value (their code, train_student.py), as they configure it."""
    i = min(max(epoch, 0), loops)
    return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


def test_curriculum_matches_ctkd_schedule_at_epoch_boundaries():
    # CTKD multiplies the gradient by its (negative) decay value; ours reverses by -lambda.
    for epoch in range(0, 30):
        ours = curriculum_lambda(epoch / 240, lambda_max=1.0, lambda_min=0.0, ramp_fraction=10 / 240)
        assert ours == pytest.approx(-ctkd_cosine_decay(epoch), abs=1e-15)
    assert CTKD_RAMP_FRACTION == pytest.approx(10 / 240)


def test_curriculum_values():
    assert curriculum_lambda(0.0, 1.0, 0.0, 0.2) == 0.0
    assert curriculum_lambda(0.1, 1.0, 0.0, 0.2) == pytest.approx(0.5)
    assert curriculum_lambda(0.2, 1.0, 0.0, 0.2) == pytest.approx(1.0)
    assert curriculum_lambda(0.9, 2.0, 0.5, 0.2) == 2.0
    assert curriculum_lambda(0.3, 2.0, 0.0, 0.0) == 2.0  # no ramp
    values = [curriculum_lambda(p / 100, 1.0, 0.0, 0.5) for p in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="ramp_fraction"):
        curriculum_lambda(0.1, 1.0, 0.0, 1.5)


def test_learned_temperature_starts_at_initial_and_stays_in_range():
    module = LearnedTemperature(total_steps=10, initial=4.0, t_min=1.0, t_max=21.0)
    assert module.temperature().item() == pytest.approx(4.0, rel=1e-6)
    for raw in (-1e4, -50.0, 0.0, 50.0, 1e4):
        with torch.no_grad():
            module.raw.fill_(raw)
        T = module()
        assert torch.isfinite(T) and 1.0 <= T.item() <= 21.0


def test_learned_temperature_counts_steps_only_in_training_and_saves_them():
    module = LearnedTemperature(total_steps=4, initial=4.0, ramp_fraction=1.0)
    lambdas = []
    for _ in range(3):
        lambdas.append(module.current_lambda())
        module()
    assert int(module.steps_done) == 3
    assert lambdas == [curriculum_lambda(s / 4, 1.0, 0.0, 1.0) for s in range(3)]
    module.eval()
    module()
    assert int(module.steps_done) == 3
    restored = LearnedTemperature(total_steps=4, initial=9.0, ramp_fraction=1.0)
    restored.load_state_dict(module.state_dict())
    assert int(restored.steps_done) == 3 and restored.temperature().item() == pytest.approx(4.0, rel=1e-6)


def test_temperature_gradient_is_reversed_and_scaled_by_lambda():
    """With the reversal at full strength, raw's gradient is minus that of the plain loss:
    gradient descent on it *raises* the distillation loss (the adversarial game)."""
    zs, zt, _ = random_case(seed=61, dtype=torch.float32)
    module = LearnedTemperature(total_steps=10, initial=4.0, ramp_fraction=0.0, lambda_max=0.6)
    learned_temperature_loss(zs, zt, module()).backward()
    reversed_grad = module.raw.grad.clone()
    raw = module.raw.detach().clone().requires_grad_(True)
    plain_T = module.t_min + (module.t_max - module.t_min) * torch.sigmoid(raw)
    (plain_grad,) = torch.autograd.grad(learned_temperature_loss(zs, zt, plain_T), raw)
    torch.testing.assert_close(reversed_grad, -0.6 * plain_grad)
    assert plain_grad.item() != 0


def test_learned_temperature_loss_matches_fixed_temperature_and_its_derivative():
    zs, zt, _ = random_case(seed=67)
    T = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert learned_temperature_loss(zs, zt, T).item() == pytest.approx(
        soft_distillation_loss(zs, zt, 3.0).item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda t: learned_temperature_loss(zs, zt, t), (T,))


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(total_steps=0), ValueError, "total_steps"),
    (dict(total_steps=5, initial=0.5), ValueError, "t_min"),
    (dict(total_steps=5, initial=30.0), ValueError, "t_max"),
    (dict(total_steps=5, t_min=0.0, initial=2.0), ValueError, "t_min"),
    (dict(total_steps=5, initial=math.nan), ValueError, "initial"),
    (dict(total_steps=5, lambda_max=-1.0), ValueError, "lambda_max"),
    (dict(total_steps=5, ramp_fraction=2.0), ValueError, "ramp_fraction"),
])
def test_learned_temperature_checks_its_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        LearnedTemperature(**kwargs)
