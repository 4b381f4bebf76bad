"""Rounding-error bounds for the book's float64 checks, and the checks that use them.

A numeric check compares two float computations of one quantity: autograd against a
closed form, a library function against the version a chapter writes out. How far apart
they may be is a property of the two computations, not of the data: each rounds, and on
another CPU (other last bits in a network's logits, another ``exp``) they round
differently. So every tolerance here is a bound on that rounding, computed from the
sizes of the terms each computation actually adds, subtracts and multiplies, never a
constant that happened to pass on one machine.

The model is the standard one (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., 2002, sections 2.2 and 4.2): every ``+ - * /`` returns the exact result times
``(1 + d)`` with ``|d| <= u``, the unit roundoff (``2**-53`` in float64), and a sum of
``n`` terms in any order is off by at most ``gamma(n - 1) * sum |terms|``, where
``gamma(k) = k u / (1 - k u)``. ``exp`` and ``log`` are assumed accurate to
``ELEMENTARY_ULPS`` units in the last place. The bounds are first order: products of two
rounding errors (relative size ``u**2``) are dropped.

The checks (``check_*``) are the ones the chapters run; ``tests/test_numerics.py`` runs
them on thousands of random logit rows of a trained teacher's scale and on the
teacher's own logits nudged by a few ulps, so that a tolerance too tight for some
logits fails in the test suite and not on a reader's machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from kdbook import losses

# glibc's exp and log, and SLEEF's 1-ulp versions that PyTorch vectorises with, are
# accurate to 1 ulp; 2 leaves room for any other libm (and 1 ulp is up to 2u relative).
ELEMENTARY_ULPS = 2


def unit_roundoff(dtype: torch.dtype = torch.float64) -> float:
    """``u``: the largest relative error of rounding a real number to ``dtype``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return torch.finfo(dtype).eps / 2


def gamma(k: int, dtype: torch.dtype = torch.float64) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``: the relative error of ``k`` roundings."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    ku = k * unit_roundoff(dtype)
    if ku >= 1:
        raise ValueError(f"k = {k} roundings is too many for {dtype}: k u >= 1")
    return ku / (1 - ku)


def sum_rounding_bound(terms: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Largest error of summing exact ``terms`` along ``dim``, in any order.

    ``gamma(n - 1) * sum |terms|``: each term passes through at most ``n - 1`` additions.
    It is relative to the sum of the *absolute* terms, not to the sum: when terms
    cancel, the bound is much larger than the result, and so may the error be."""
    _check_float(terms, "terms")
    n = terms.shape[dim] if terms.dim() else 1
    return gamma(max(n - 1, 0), terms.dtype) * terms.abs().sum(dim=dim)


def _check_float(x, name: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(x).__name__}")


def _check_logits(logits, T):
    _check_float(logits, "logits")
    if logits.dim() not in (1, 2):
        raise ValueError(f"logits must have shape (n,) or (batch, n), got {tuple(logits.shape)}")
    T_value = T.item() if isinstance(T, torch.Tensor) and T.numel() == 1 else T
    if isinstance(T_value, torch.Tensor) or isinstance(T_value, bool) or not (
        isinstance(T_value, (int, float)) and math.isfinite(T_value) and T_value > 0
    ):
        raise ValueError(f"T must be a positive finite number, got {T!r}")
    return float(T_value)


def _rounding(logits, T) -> tuple[float, float, float, float]:
    """``(T, u, k, g_n)`` for ``logits``: the checked temperature, the unit roundoff, the
    error of one ``exp`` or ``log`` (``2 ELEMENTARY_ULPS u``) and ``gamma(n - 1)``."""
    T = _check_logits(logits, T)
    u = unit_roundoff(logits.dtype)
    return T, u, 2 * ELEMENTARY_ULPS * u, gamma(logits.shape[-1] - 1, logits.dtype)


# -----------------------------------------------------------------------------
# Softmax and log-softmax. PyTorch computes both as the book does (chapter
# "Hinton's formulation"): s = z / T, d_i = s_i - max(s), r = sum_j exp(d_j), then
# log p_i = d_i - log r and p_i = exp(d_i) / r. (Checked: it never forms max + log r.)


def log_softmax_error_bound(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Bound on ``|log_softmax(logits / T) - log p|`` entry by entry, in the logits' dtype.

    - ``s_i = z_i / T`` is off by ``u |s_i|``; ``d_i = s_i - max s`` is exact for the
      largest logit (``s_i - s_i = 0``) and otherwise off by ``u (|s_i| + |max s| + |d_i|)``;
    - ``r = sum exp(d_j)``: ``exp(0) = 1`` is exact, the other terms carry their ``exp``
      and ``d_j`` errors; the sum adds ``gamma(n-1) r``, except that when the other terms
      add up to ``t < u`` every partial sum rounds to the number of top classes, and
      the error is ``t`` itself;
    - ``log r`` adds its own error relative to ``log r``; ``d_i - log r`` rounds once.

    What matters for the checks: the error of ``log p_i`` is absolute, of the size of
    ``u |z_i / T|`` and not of ``u |log p_i|``, so tiny probabilities at low ``T`` carry
    a relative error of ``u |z_i| / T``."""
    T, u, k, g_n = _rounding(logits, T)
    s = logits / T
    m = s.max(dim=-1, keepdim=True).values
    d = s - m
    others = d != 0
    rho = u * (s.abs() + m.abs() + d.abs()) * others
    e = d.exp()
    r = e.sum(dim=-1, keepdim=True)
    t = (e * others).sum(dim=-1, keepdim=True)
    summation = torch.where(t * (1 + g_n) < u, t, g_n * r)
    rel_r = ((e * others * (rho + k)).sum(dim=-1, keepdim=True) + summation) / r
    ell = r.log()
    return rho + rel_r + k * ell + u * (d.abs() + ell)


def softmax_relative_error_bound(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Bound on the relative error of ``softmax(logits / T)``, entry by entry, whether it
    is computed as ``exp(d_i) / r`` or as ``exp(log_softmax)``: the log-softmax bound
    plus one ``exp`` and one rounding."""
    u = unit_roundoff(logits.dtype)
    return log_softmax_error_bound(logits, T) + 2 * ELEMENTARY_ULPS * u + u


def softmax_error_bound(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Bound on ``|softmax(logits / T) - p|`` entry by entry (absolute)."""
    p = torch.softmax(logits / _check_logits(logits, T), dim=-1)
    return p * softmax_relative_error_bound(logits, T)


def entropy_error_bound(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Bound on the error of ``H = -sum p_i log p_i`` computed from ``log_softmax``, per
    row: each term's error from ``p_i`` and ``log p_i``, its two roundings, the sum; and
    ``n`` times the smallest subnormal for terms that underflow (``p_i < 1e-308``)."""
    T, u, _, _ = _rounding(logits, T)
    n = logits.shape[-1]
    log_p = torch.log_softmax(logits / T, dim=-1)
    p = log_p.exp()
    alpha = log_softmax_error_bound(logits, T)
    rel_p = softmax_relative_error_bound(logits, T)
    terms = p * log_p
    underflow = n * torch.finfo(logits.dtype).smallest_normal * (1 + log_p.abs()).max(dim=-1).values
    return ((terms.abs() * (rel_p + u) + p * alpha).sum(dim=-1)
            + sum_rounding_bound(terms) + underflow)


# -----------------------------------------------------------------------------
# Chapter "Temperature": dH/dT by autograd against Var_{p^T}(z) / T^3.


def autograd_entropy_derivative_error(logits: torch.Tensor, T: float) -> torch.Tensor:
    """Bound on the rounding error of autograd's ``dH/dT`` for ``H = -sum p log p`` with
    ``log p = log_softmax(z / T)``, per row. It follows the backward pass step by step:

    - ``g_i = -p_i - p_i log p_i`` (the gradient reaching ``log p``), and ``G = sum g_j``:
      ``G`` is about ``-(1 + H)`` and is rounded at the size of 1;
    - ``ds_i = g_i - p_i G`` (log-softmax's backward). At low ``T`` the top class has
      ``g_top ~ -1`` and ``p_top G ~ -1``: two numbers of size 1 cancel to leave ``H``, so
      ``ds_top`` is off by ``u``, and so is ``sum_i ds_i`` (exactly 0 in exact
      arithmetic);
    - ``dH/dT = -sum_i ds_i z_i / T^2``: that error of size ``u`` is multiplied by
      ``|z_top| / T^2``, whatever ``H`` is.

    So the bound is ``~ u |z| / T^2`` when the soft targets are nearly one-hot, while
    ``dH/dT`` itself, ``Var/T^3``, falls like ``exp(-gap / T)``: there float64 autograd
    cannot find the derivative, and this bound says so."""
    T, u, k, g_n = _rounding(logits, T)
    log_p = torch.log_softmax(logits / T, dim=-1)
    p = log_p.exp()
    alpha = log_softmax_error_bound(logits, T)  # absolute, on log p
    rel_p = alpha + k + u  # relative, on p = exp(log p)
    g = -(p + p * log_p)
    dg = p * ((1 + log_p.abs()) * (rel_p + 2 * u) + alpha)
    G = g.sum(dim=-1, keepdim=True)
    dG = dg.sum(dim=-1, keepdim=True) + g_n * g.abs().sum(dim=-1, keepdim=True)
    ds = g - p * G
    d_ds = dg + p * G.abs() * (rel_p + u) + p * dG + u * (g.abs() + p * G.abs())
    weight = logits.abs() / T**2  # d s_i / dT = -z_i / T^2, three roundings
    return (weight * (d_ds + 3 * u * ds.abs())).sum(dim=-1) + g_n * (weight * ds.abs()).sum(dim=-1)


def closed_form_entropy_derivative_error(logits: torch.Tensor, T: float) -> torch.Tensor:
    """Bound on the rounding error of ``Var_{p^T}(z) / T^3`` computed as
    ``sum p_i (z_i - sum_j p_j z_j)^2 / T^3``, per row.

    The variance is a sum of non-negative terms, so it never cancels: its error is a
    small multiple of ``u`` times the result, plus ``p_i``'s own relative error (about
    ``u |z_i| / T``) in the terms of the unlikely classes. An error in the mean enters
    only through ``sum p_i |z_i - mean|``."""
    T, u, _, g_n = _rounding(logits, T)
    p = torch.softmax(logits / T, dim=-1)
    rel_p = softmax_relative_error_bound(logits, T)
    weighted = p * logits.abs()
    mean = (p * logits).sum(dim=-1, keepdim=True)
    d_mean = (weighted * (rel_p + u)).sum(dim=-1) + g_n * weighted.sum(dim=-1)
    centred = logits - mean
    v = p * centred**2
    var = v.sum(dim=-1)
    d_var = (v * (rel_p + 3 * u)).sum(dim=-1) + 2 * d_mean * (p * centred.abs()).sum(dim=-1) + g_n * var
    return (d_var + 4 * u * var) / T**3  # T**3 and the division: 3 more roundings


def entropy_derivative_tolerance(logits: torch.Tensor, T: float) -> torch.Tensor:
    """How far autograd's ``dH/dT`` and the closed form ``Var/T^3`` may differ, per row:
    the sum of their two rounding bounds (chapter "Temperature", equation
    temp-entropy-derivative)."""
    return autograd_entropy_derivative_error(logits, T) + closed_form_entropy_derivative_error(logits, T)


def entropy_from_log_softmax(logits: torch.Tensor, T) -> torch.Tensor:
    """``H(softmax(logits / T))`` along the last dimension, from ``log_softmax`` (the
    chapter's ``entropy_of_soft_targets``); ``T`` may be a tensor that requires grad."""
    log_p = torch.log_softmax(logits / T, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def variance_over_t_cubed(logits: torch.Tensor, T: float) -> torch.Tensor:
    """``Var_{p^T}(z) / T^3`` along the last dimension (the chapter's
    ``entropy_derivative``, and ``theory.entropy_temperature_derivative``)."""
    p = torch.softmax(logits / T, dim=-1)
    mean = (p * logits).sum(dim=-1, keepdim=True)
    return (p * (logits - mean) ** 2).sum(dim=-1) / T**3


def autograd_temperature_derivative(function: Callable, logits: torch.Tensor, T: float) -> torch.Tensor:
    """``d function(row, T) / dT`` by autograd, row by row (each row on its own, as a
    reader checking one image would compute it)."""
    T_leaf = torch.tensor(float(T), dtype=logits.dtype, requires_grad=True)
    rows = logits if logits.dim() == 2 else logits[None]
    grads = [torch.autograd.grad(function(row, T_leaf), T_leaf)[0] for row in rows]
    out = torch.stack(grads)
    return out if logits.dim() == 2 else out[0]


@dataclass(frozen=True)
class CheckSummary:
    """What one check found at one temperature.

    ``worst``: the largest ``|difference| / tolerance`` over the rows (at most 1, or the
    check fails). ``sharp``: the fraction of rows whose tolerance is below
    ``SHARP_FRACTION`` of the quantity checked, i.e. where the check can tell a right
    formula from one that is off by that fraction."""

    T: float
    worst: float
    sharp: float


SHARP_FRACTION = 1e-6


def check_entropy_derivative(
    logits: torch.Tensor,
    temperatures: Sequence[float],
    entropy: Callable = entropy_from_log_softmax,
    derivative: Callable = variance_over_t_cubed,
) -> list[CheckSummary]:
    """Asserts, for every row of ``logits`` and every ``T``, that autograd's derivative of
    ``entropy`` and the closed form ``derivative`` (both ``f(z, T)``, row-wise) differ by
    at most :func:`entropy_derivative_tolerance`, and that the closed form is > 0."""
    _check_float(logits, "logits")
    rows = logits if logits.dim() == 2 else logits[None]
    summaries = []
    for T in temperatures:
        autograd = autograd_temperature_derivative(entropy, rows, T)
        closed = derivative(rows, T)
        tolerance = entropy_derivative_tolerance(rows, T)
        ratio = (autograd - closed).abs() / tolerance
        bad = (ratio > 1).nonzero().flatten().tolist()
        assert not bad, (
            f"T = {T}: autograd dH/dT and Var/T^3 differ by more than their rounding bound in "
            f"rows {bad[:5]}: autograd {autograd[bad[:5]].tolist()}, closed form "
            f"{closed[bad[:5]].tolist()}, tolerance {tolerance[bad[:5]].tolist()}")
        assert (closed > 0).all(), f"T = {T}: Var/T^3 <= 0 in rows {(closed <= 0).nonzero().flatten().tolist()}"
        sharp = (tolerance < SHARP_FRACTION * closed).double().mean().item()
        summaries.append(CheckSummary(float(T), ratio.max().item(), sharp))
    return summaries


# -----------------------------------------------------------------------------
# Chapter "Temperature": the low-temperature bounds (temp-low-rate) and (temp-low-top).


@dataclass(frozen=True)
class LowTemperatureSummary:
    """At one temperature: the largest ``|log(e^{g_i/T} p_i) + log k|`` over the rows and
    the classes outside the top set ``A``, and what the theorem allows for it,
    ``max log(1 + (n - k) e^{-gamma/T} / k)`` plus rounding."""

    T: float
    deviation: float
    allowed: float


def check_low_temperature_bounds(logits: torch.Tensor, temperatures: Sequence[float]) -> list[LowTemperatureSummary]:
    """Asserts (temp-low-rate) and (temp-low-top) of the chapter "Temperature" for every
    row and temperature, computed from ``log_softmax`` in the logits' dtype, with a
    tolerance from the rounding of each side:

    - ``log(e^{g_i/T} p_i) = log p_i + g_i / T`` lies in ``[-log n, -log k]``, and in fact
      within ``log(1 + s/k) <= log(1 + (n - k) e^{-gamma/T} / k)`` of ``-log k``;
    - for ``i`` in ``A``, ``0 <= 1/k - p_i <= (n - k)/k^2 e^{-gamma/T}``.

    The rounding of ``log p_i + g_i/T`` is that of ``log p_i`` (:func:`log_softmax_error_bound`,
    about ``u |z_i| / T``), of ``g_i / T`` (two roundings) and of the sum."""
    _check_float(logits, "logits")
    z = logits if logits.dim() == 2 else logits[None]
    u = unit_roundoff(z.dtype)
    n = z.shape[1]
    top = z.max(dim=1, keepdim=True).values
    gap = top - z
    in_A = gap == 0
    k = in_A.sum(dim=1, keepdim=True).to(z.dtype)
    second = torch.where(in_A, math.inf, gap).min(dim=1, keepdim=True).values
    summaries = []
    for T in temperatures:
        T = _check_logits(z, T)
        log_p = torch.log_softmax(z / T, dim=1)
        log_rate = log_p + gap / T
        tol = (log_softmax_error_bound(z, T) + 3 * u * (gap / T)
               + u * (log_rate.abs() + math.log(n)))
        # log(1 + x) <= x, and s(T) <= (n - k) e^{-gamma/T}: (temp-low-exact)
        s_bound = (n - k) * torch.exp(-second / T)
        allowed = torch.log1p(s_bound / k) * (1 + 4 * ELEMENTARY_ULPS * u)
        deviation = (log_rate + torch.log(k)).where(~in_A, torch.zeros(()))
        assert (log_rate <= -torch.log(k) + tol).all(), f"T = {T}: log(e^(g/T) p) > -log k"
        assert (log_rate >= -math.log(n) - tol).all(), f"T = {T}: log(e^(g/T) p) < -log n"
        assert (-deviation <= allowed + tol).all(), f"T = {T}: e^(g/T) p approaches 1/k too slowly"
        p = log_p.exp()
        top_error = (1 / k - p).where(in_A, torch.zeros(()))
        top_tol = u / k + p * softmax_relative_error_bound(z, T) + u * top_error.abs()
        bound = s_bound / k**2
        bound_tol = bound * (2 * ELEMENTARY_ULPS * u * (1 + second / T) + 4 * u)
        assert (top_error >= -top_tol).all(), f"T = {T}: p_i > 1/k for a top class"
        assert (top_error <= bound + bound_tol + top_tol).all(), f"T = {T}: (temp-low-top) fails"
        worst = deviation.abs().where(~in_A, torch.zeros(())).max().item()
        summaries.append(LowTemperatureSummary(T, worst, (allowed + tol).where(~in_A, torch.zeros(())).max().item()))
    return summaries


# -----------------------------------------------------------------------------
# Chapters "Hinton's formulation" and "Gradients": autograd on the library's losses
# against the closed-form gradients (soft-gradient) / (grad-soft) and (kd-gradient).


def cross_entropy_gradient_tolerance(logits: torch.Tensor, T: float, target: torch.Tensor,
                                     target_error: torch.Tensor | float = 0.0) -> torch.Tensor:
    """How far autograd's gradient of ``CE(target, softmax(logits / T))`` (through
    ``log_softmax``) and the formula ``(softmax(logits / T) - target) / T`` may differ,
    entry by entry; ``target_error`` bounds the error of each computation's own copy of
    the target (0 for an exact one-hot label; :func:`softmax_error_bound` for a teacher's
    soft targets).

    Autograd computes ``(-q_i + p_i sum_j q_j) / T``: the sum of the targets is rounded
    (``gamma(n-1)``), ``p_i`` is ``exp(log_softmax)``; the formula rounds ``p_i - q_i``."""
    T, u, _, g_n = _rounding(logits, T)
    p = torch.softmax(logits / T, dim=-1)
    rel_p = softmax_relative_error_bound(logits, T)
    q = target.abs()
    dq = torch.as_tensor(target_error, dtype=logits.dtype).expand_as(q)
    q_sum = q.sum(dim=-1, keepdim=True)
    autograd = (dq + u * q + p * (dq.sum(dim=-1, keepdim=True) + g_n * q_sum)
                + p * q_sum * (rel_p + u) + u * (q + p * q_sum))
    formula = p * rel_p + dq + u * (p + q)
    return (autograd + formula + 2 * u * (p + q)) / T


def soft_gradient_tolerance(student_logits: torch.Tensor, T: float, *, teacher_logits=None,
                            teacher_probs=None, scale_by_t2: bool = False) -> torch.Tensor:
    """Tolerance for autograd's gradient of ``kdbook.soft_distillation_loss`` (batch mean
    of ``KL(p_t^T || p_s^T)``, times ``T^2`` if ``scale_by_t2``) against
    ``c (p_s^T - p_t^T) / (T B)``, ``c = T^2`` or ``1``: :func:`cross_entropy_gradient_tolerance`
    scaled the same way, plus the roundings of the scaling (``T**2``, ``/ B``)."""
    if (teacher_logits is None) == (teacher_probs is None):
        raise ValueError("give exactly one of teacher_logits or teacher_probs")
    T = _check_logits(student_logits, T)
    u = unit_roundoff(student_logits.dtype)
    if teacher_logits is not None:
        q = torch.softmax(teacher_logits / T, dim=-1)
        dq = softmax_error_bound(teacher_logits, T)
    else:
        q, dq = teacher_probs, torch.zeros_like(teacher_probs)  # the same tensor on both sides
    scale = (T**2 if scale_by_t2 else 1.0) / student_logits.shape[0]
    p = torch.softmax(student_logits / T, dim=-1)
    tol = cross_entropy_gradient_tolerance(student_logits, T, q, dq)
    return scale * (tol + 4 * u * (p - q).abs() / T)


def distillation_gradient_tolerance(student_logits, teacher_logits, labels, T: float, alpha: float) -> torch.Tensor:
    """Tolerance for autograd's gradient of ``kdbook.distillation_loss`` against
    (kd-gradient) divided by ``B``: ``alpha`` times the hard term's tolerance (one-hot
    target, exact), ``1 - alpha`` times the soft term's with ``T^2``, and the roundings
    of the weighted sum."""
    u = unit_roundoff(student_logits.dtype)
    n = student_logits.shape[-1]
    onehot = torch.nn.functional.one_hot(labels, n).to(student_logits.dtype)
    B = student_logits.shape[0]
    hard = cross_entropy_gradient_tolerance(student_logits, 1.0, onehot) / B
    soft = soft_gradient_tolerance(student_logits, T, teacher_logits=teacher_logits, scale_by_t2=True)
    q = torch.softmax(student_logits, dim=-1)
    g_hard = (q - onehot).abs() / B
    g_soft = T * (torch.softmax(student_logits / T, -1) - torch.softmax(teacher_logits / T, -1)).abs() / B
    return alpha * hard + (1 - alpha) * soft + 4 * u * (alpha * g_hard + (1 - alpha) * g_soft)


def _assert_within(computed, expected, tolerance, what: str) -> float:
    """Asserts ``|computed - expected| <= tolerance`` entry by entry; returns the largest
    ratio ``|computed - expected| / tolerance``."""
    ratio = (computed - expected).abs() / tolerance
    if not (ratio <= 1).all():
        worst = ratio.argmax()
        raise AssertionError(
            f"{what}: differ by more than their rounding bound (worst entry {worst.item()}: "
            f"{computed.flatten()[worst].item()!r} vs {expected.flatten()[worst].item()!r}, "
            f"tolerance {tolerance.flatten()[worst].item():.3g})")
    return ratio.max().item()


def check_soft_gradient(student_logits: torch.Tensor, T: float, *, teacher_logits=None,
                        teacher_probs=None, scale_by_t2: bool = False) -> float:
    """Asserts that autograd's gradient of ``kdbook.soft_distillation_loss`` equals
    ``c (p_s^T - p_t^T) / (T B)`` ((grad-soft), batch mean) to within
    :func:`soft_gradient_tolerance`; returns the worst ``|difference| / tolerance``."""
    leaf = student_logits.detach().clone().requires_grad_(True)
    loss = losses.soft_distillation_loss(leaf, teacher_logits, T, teacher_probs=teacher_probs,
                                         scale_by_t2=scale_by_t2)
    (grad,) = torch.autograd.grad(loss, leaf)
    q = teacher_probs if teacher_probs is not None else torch.softmax(teacher_logits / T, dim=1)
    c = T**2 if scale_by_t2 else 1.0
    expected = c * (torch.softmax(student_logits / T, dim=1) - q) / T / len(student_logits)
    tol = soft_gradient_tolerance(student_logits, T, teacher_logits=teacher_logits,
                                  teacher_probs=teacher_probs, scale_by_t2=scale_by_t2)
    return _assert_within(grad, expected, tol, f"autograd and (p_s - p_t)/T at T = {T}")


def check_distillation_gradient(student_logits, teacher_logits, labels, T: float, alpha: float) -> float:
    """Asserts that autograd's gradient of ``kdbook.distillation_loss`` equals
    ``[alpha (q - e_y) + (1 - alpha) T (p_s^T - p_t^T)] / B`` (kd-gradient) to within
    :func:`distillation_gradient_tolerance`; returns the worst ratio."""
    leaf = student_logits.detach().clone().requires_grad_(True)
    loss = losses.distillation_loss(leaf, teacher_logits, labels, temperature=T, alpha=alpha)
    (grad,) = torch.autograd.grad(loss, leaf)
    n = student_logits.shape[1]
    onehot = torch.nn.functional.one_hot(labels, n).to(student_logits.dtype)
    expected = (alpha * (torch.softmax(student_logits, 1) - onehot)
                + (1 - alpha) * T * (torch.softmax(student_logits / T, 1)
                                     - torch.softmax(teacher_logits / T, 1))) / len(labels)
    tol = distillation_gradient_tolerance(student_logits, teacher_logits, labels, T, alpha)
    return _assert_within(grad, expected, tol, f"autograd and (kd-gradient) at T = {T}, alpha = {alpha}")


def check_entropy_increasing(logits: torch.Tensor, temperatures: Sequence[float]) -> torch.Tensor:
    """Asserts that ``H(softmax(z / T))`` never decreases along increasing
    ``temperatures`` by more than the rounding of its two ends (:func:`entropy_error_bound`),
    and that it rises by more than that rounding wherever ``H > 1e-250``. Returns the
    entropies, shape ``(rows, len(temperatures))``.

    Why the strict part holds whatever the logits: where ``H`` is far above float64's
    underflow its error is either a few ``u`` or (when the runner-up's probability ``t``
    is below ``u``) ``t`` itself, with ``H ~ t log(1/t)``; from one temperature to the
    next, 10% higher, ``H`` then grows by a factor ``e^{g/T (1 - 1/1.1)}``, at least about
    30 where ``H ~ u``, so the rise is several times the rounding."""
    z = logits if logits.dim() == 2 else logits[None]
    temperatures = [float(T) for T in temperatures]
    if any(b <= a for a, b in zip(temperatures, temperatures[1:])):
        raise ValueError("temperatures must be increasing")
    H = torch.stack([entropy_from_log_softmax(z, T) for T in temperatures], 1)
    bound = torch.stack([entropy_error_bound(z, T) for T in temperatures], 1)
    rises, rounding = H.diff(dim=1), bound[:, :-1] + bound[:, 1:]
    assert (rises >= -rounding).all(), "the entropy decreases by more than rounding"
    assert (rises > rounding)[H[:, :-1] > 1e-250].all(), "the entropy does not rise above rounding"
    return H


# -----------------------------------------------------------------------------
# Losses (chapters "Hinton's formulation", "Gradients", "Label smoothing"): the
# rounding of a cross-entropy or a KL divergence computed from log-softmax.


def cross_entropy_error_bound(logits: torch.Tensor, target: torch.Tensor, T: float = 1.0,
                              target_error: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Bound on the error of ``-sum_i target_i log_softmax(logits / T)_i``, per row: each
    ``log p_i`` is off by :func:`log_softmax_error_bound`, each product rounds, the sum
    adds ``gamma(n-1)`` of the absolute terms, and ``target_error`` (absolute, per entry)
    multiplies ``|log p_i|``. Relative to the terms, not to the result: a KL divergence
    ``CE - H`` that is much smaller than its terms keeps this absolute error."""
    T = _check_logits(logits, T)
    u = unit_roundoff(logits.dtype)
    log_p = torch.log_softmax(logits / T, dim=-1)
    q = target.abs()
    dq = torch.as_tensor(target_error, dtype=logits.dtype)
    terms = q * log_p
    return ((q * log_softmax_error_bound(logits, T) + dq * log_p.abs() + u * terms.abs()).sum(dim=-1)
            + sum_rounding_bound(terms))


def kl_error_bound(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
                   teacher_as_probabilities: bool = False) -> torch.Tensor:
    """Bound on the error of ``KL(p_t^T || p_s^T) = sum_i p_t,i (log p_t,i - log p_s,i)``
    from two log-softmaxes (as ``F.kl_div(..., log_target=True)`` computes it), per row.
    With ``teacher_as_probabilities`` the teacher enters as ``p_t = softmax(z_t / T)``
    and its logarithm is taken of the probabilities (``xlogy``, or ``F.kl_div`` without
    ``log_target``): one ``log`` more per term."""
    T, u, k, _ = _rounding(student_logits, T)
    log_ps = torch.log_softmax(student_logits / T, dim=-1)
    log_pt = torch.log_softmax(teacher_logits / T, dim=-1)
    q = log_pt.exp()
    diff = log_pt - log_ps
    terms = q * diff
    rel_q = softmax_relative_error_bound(teacher_logits, T)
    log_q_error = rel_q + k * log_pt.abs() if teacher_as_probabilities else log_softmax_error_bound(teacher_logits, T)
    each = (q * (log_softmax_error_bound(student_logits, T) + log_q_error)
            + terms.abs() * (rel_q + 2 * u))
    return each.sum(dim=-1) + sum_rounding_bound(terms)


def loss_error_bound(student_logits, teacher_logits, labels, T: float, hard_weight: float,
                     soft_weight: float, teacher_as_probabilities: bool = False) -> torch.Tensor:
    """Bound on the error of ``hard_weight * CE(labels, softmax(z_s)) + soft_weight *
    KL(p_t^T || p_s^T)``, both batch means, computed from log-softmaxes: the loss
    (kd-loss) has weights ``alpha`` and ``(1 - alpha) T^2``."""
    u = unit_roundoff(student_logits.dtype)
    B, n = student_logits.shape
    onehot = torch.nn.functional.one_hot(labels, n).to(student_logits.dtype)
    hard = cross_entropy_error_bound(student_logits, onehot)
    soft = kl_error_bound(student_logits, teacher_logits, T, teacher_as_probabilities)
    hard_value = torch.log_softmax(student_logits, -1).gather(1, labels[:, None]).abs()
    soft_value = (torch.softmax(teacher_logits / T, -1)
                  * (torch.log_softmax(teacher_logits / T, -1) - torch.log_softmax(student_logits / T, -1))
                  ).sum(-1).abs()
    total = abs(hard_weight) * hard_value.mean() + abs(soft_weight) * soft_value.mean()
    # the two batch means (gamma(B)), the weights and the final sum (4 roundings)
    return (abs(hard_weight) * hard.mean() + abs(soft_weight) * soft.mean()
            + (gamma(B, student_logits.dtype) + 4 * u) * total)


def distillation_loss_error_bound(student_logits, teacher_logits, labels, T: float, alpha: float,
                                  teacher_as_probabilities: bool = False) -> torch.Tensor:
    """Bound on the error of the batch-mean loss (kd-loss) computed from log-softmaxes
    (``kdbook.distillation_loss``, or the chapter's version written from scratch)."""
    return loss_error_bound(student_logits, teacher_logits, labels, T, alpha, (1 - alpha) * T**2,
                            teacher_as_probabilities)


def entropy_of_probabilities_error_bound(p: torch.Tensor, relative_error: torch.Tensor | float) -> torch.Tensor:
    """Bound on the error of ``-sum p_i log p_i`` (``torch.special.entr``) computed from
    probabilities that carry a relative error ``relative_error`` each, per row:
    ``d(p log p) = (log p + 1) dp``, two roundings per term, and the sum."""
    _check_float(p, "p")
    u = unit_roundoff(p.dtype)
    terms = torch.special.entr(p)
    rel = torch.as_tensor(relative_error, dtype=p.dtype)
    log_p = torch.where(p > 0, p.log(), torch.zeros(()))
    return ((p * rel * (log_p.abs() + 1) + (2 * ELEMENTARY_ULPS + 2) * u * terms.abs()).sum(dim=-1)
            + sum_rounding_bound(terms))
