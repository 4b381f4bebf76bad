"""kdbook.theory: the sympy definitions and the identities the chapters derive."""

from __future__ import annotations

import pytest
import sympy as sp

from kdbook import theory as th

T = sp.Symbol("T", positive=True)


def test_logit_symbols():
    z = th.logit_symbols("z", 3)
    assert [s.name for s in z] == ["z_1", "z_2", "z_3"]
    assert all(s.is_real for s in z)


@pytest.mark.parametrize("n", [1, 0, -2, 2.0, True, "3"])
def test_logit_symbols_bad_n(n):
    with pytest.raises(ValueError, match=r"\bn\b"):
        th.logit_symbols("z", n)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_softmax_sums_to_one(n):
    z = th.logit_symbols("z", n)
    for temperature in (sp.Integer(1), T):
        p = th.softmax(z, temperature)
        assert len(p) == n
        assert sp.simplify(sp.Add(*p) - 1) == 0
        assert th.is_zero(sp.Add(*p) - 1)


def test_softmax_numeric_value():
    p = th.softmax([sp.Integer(0), sp.log(3)])
    assert sp.simplify(p[0] - sp.Rational(1, 4)) == 0 and sp.simplify(p[1] - sp.Rational(3, 4)) == 0


def test_kl_of_p_with_itself_is_zero():
    p = th.softmax(th.logit_symbols("z", 3), T)
    assert th.is_zero(th.kl_divergence(p, p))
    q = th.softmax(th.logit_symbols("s", 3), T)
    assert not th.is_zero(th.kl_divergence(p, q))


def test_cross_entropy_is_entropy_plus_kl():
    p = th.softmax(th.logit_symbols("t", 3))
    q = th.softmax(th.logit_symbols("s", 3))
    assert th.is_zero(th.cross_entropy(p, q) - th.entropy(p) - th.kl_divergence(p, q))


def test_soft_gradient_identity():
    """d KL(p_t^T || p_s^T) / d z_s_i = (p_s_i - p_t_i) / T, for n = 3; is_zero tells a
    wrong version (missing 1/T, swapped sign) apart."""
    zs, zt = th.logit_symbols("s", 3), th.logit_symbols("t", 3)
    ps, pt = th.softmax(zs, T), th.softmax(zt, T)
    kl = th.kl_divergence(pt, ps)
    for i in range(3):
        assert th.is_zero(sp.diff(kl, zs[i]) - (ps[i] - pt[i]) / T)
    grad0 = sp.diff(kl, zs[0])
    assert not th.is_zero(grad0 - (ps[0] - pt[0]))  # missing 1/T
    assert not th.is_zero(grad0 - (pt[0] - ps[0]) / T)  # wrong sign


def test_is_zero_basic():
    x = sp.Symbol("x", real=True)
    assert th.is_zero(sp.exp(2 * x) - sp.exp(x) ** 2)
    assert th.is_zero(sp.Integer(0))
    assert not th.is_zero(x)
    assert not th.is_zero(sp.exp(x) - x - 1)


def test_length_mismatch_raises():
    p = th.softmax(th.logit_symbols("z", 3))
    q = th.softmax(th.logit_symbols("s", 2))
    with pytest.raises(ValueError, match="same length"):
        th.kl_divergence(p, q)
    with pytest.raises(ValueError, match="same length"):
        th.cross_entropy(p, q)
