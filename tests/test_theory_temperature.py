"""The helpers of the chapter "Temperature": kdbook.theory (moments, the high-temperature
expansion, sums over a symbolic number of classes, entropy), kdbook.plots (the animation
and the slider that must not leave widgets in stored notebooks), and the checker of the
exercise ex-temperature-entropy, with right and deliberately wrong answers."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import sympy as sp
import torch
from matplotlib.animation import FuncAnimation

from kdbook import plots
from kdbook import theory as th
from kdbook.exercises import ExerciseFailure, Unsolved, placeholder
from kdbook.exercises import temperature as ex

T = sp.Symbol("T", positive=True)
u = sp.Symbol("u", positive=True)
n = sp.Symbol("n", integer=True, positive=True)
i, j, k = sp.symbols("i j k", integer=True)
z = sp.IndexedBase("z", real=True)


# -----------------------------------------------------------------------------
# centred, variance, softmax_high_t


def test_centred_sums_to_zero_and_keeps_differences():
    zs = th.logit_symbols("z", 4)
    c = th.centred(zs)
    assert sp.simplify(sp.Add(*c)) == 0
    assert sp.simplify((c[0] - c[1]) - (zs[0] - zs[1])) == 0
    assert th.centred([sp.Integer(3), sp.Integer(5)]) == [-1, 1]


def test_centred_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        th.centred([])


def test_variance_matches_definition_and_numbers():
    p = [sp.Rational(1, 2), sp.Rational(1, 4), sp.Rational(1, 4)]
    x = [sp.Integer(0), sp.Integer(2), sp.Integer(4)]
    # mean 3/2, E[x^2] = 1 + 4 = 5, variance 5 - 9/4 = 11/4
    assert th.variance(p, x) == sp.Rational(11, 4)
    with pytest.raises(ValueError, match="same length"):
        th.variance(p, x[:2])


def test_variance_of_constant_is_zero():
    p = th.softmax(th.logit_symbols("z", 3), T)
    a = sp.Symbol("a", real=True)
    assert th.is_zero(th.variance(p, [a, a, a]))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_softmax_high_t_matches_series(order):
    zs = th.logit_symbols("z", 3)
    p = th.softmax(zs, 1 / u)
    approx = th.softmax_high_t(zs, 1 / u, order=order)
    for pi, ai in zip(p, approx):
        # the remainder is O(u^(order + 1)): its series up to u^order vanishes
        assert sp.simplify(sp.series(pi - ai, u, 0, order + 1).removeO()) == 0
    # and not beyond: the next term is missing (generic logits)
    assert sp.simplify(sp.series(p[0] - approx[0], u, 0, order + 2).removeO()) != 0


def test_softmax_high_t_numeric_and_bad_order():
    z_values = [sp.Rational(1), sp.Rational(-2), sp.Rational(1, 2)]
    Tv = sp.Integer(50)
    exact = [float(v) for v in th.softmax(z_values, Tv)]
    approx = [float(v) for v in th.softmax_high_t(z_values, Tv, order=2)]
    assert max(abs(a - b) for a, b in zip(exact, approx)) < 1e-5
    with pytest.raises(ValueError, match="order"):
        th.softmax_high_t(z_values, Tv, order=4)


# -----------------------------------------------------------------------------
# sums over a symbolic number of classes


def test_expand_sums_linearity():
    x = sp.Symbol("x")
    s = sp.Sum(2 * x * z[k] + z[k] ** 2 + 3, (k, 1, n))
    expanded = th.expand_sums(s)
    assert expanded == 2 * x * sp.Sum(z[k], (k, 1, n)) + sp.Sum(z[k] ** 2, (k, 1, n)) + 3 * n


def test_freeze_sums_canonical_index():
    a = th.freeze_sums(sp.Sum(z[j] ** 2, (j, 1, n)))
    b = th.freeze_sums(sp.Sum(z[k] ** 2, (k, 1, n)))
    c = th.freeze_sums(sp.Sum(z[k] ** 3, (k, 1, n)))
    assert isinstance(a, sp.Symbol) and a == b and a != c
    # different ranges are different sums
    assert th.freeze_sums(sp.Sum(z[k], (k, 1, n))) != th.freeze_sums(sp.Sum(z[k], (k, 2, n)))


def test_freeze_sums_keeps_nested_sum_inside():
    nested = sp.Sum(z[j] * sp.Sum(sp.exp(z[k]), (k, 1, n)), (j, 1, n))
    frozen = th.freeze_sums(nested)
    assert isinstance(frozen, sp.Symbol) and "exp" in frozen.name


def test_freeze_sums_rejects_multiple_limits():
    with pytest.raises(ValueError, match="one index"):
        th.freeze_sums(sp.Sum(z[j] * z[k], (j, 1, n), (k, 1, n)))


def test_sums_as_symbols_proves_and_refutes():
    s1 = sp.Sum(z[k], (k, 1, n))
    mean = s1 / n
    variance_two_ways = sp.Sum((z[k] - mean) ** 2, (k, 1, n)) - (sp.Sum(z[j] ** 2, (j, 1, n)) - s1**2 / n)
    assert sp.simplify(th.sums_as_symbols(variance_two_ways)) == 0
    wrong = sp.Sum((z[k] - mean) ** 2, (k, 1, n)) - sp.Sum(z[j] ** 2, (j, 1, n))
    assert sp.simplify(th.sums_as_symbols(wrong)) != 0


def test_truncate_sums_polynomial_and_bad_order():
    truncated = th.truncate_sums(sp.Sum(sp.exp(u * z[k]), (k, 1, n)), u, 2)
    assert truncated == sp.Sum(1 + u * z[k] + u**2 * z[k] ** 2 / 2, (k, 1, n))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="order"):
            th.truncate_sums(truncated, u, bad)


def test_sum_series_matches_concrete_n():
    """The general-n expansion of the softmax, evaluated at n = 3, equals sympy's
    series of the concrete 3-class softmax."""
    p_i = sp.exp(u * z[i]) / sp.Sum(sp.exp(u * z[k]), (k, 1, n))
    general = th.sum_series(p_i, u, 2)
    z3 = th.logit_symbols("z", 3)
    concrete = sp.series(th.softmax(z3, 1 / u)[0], u, 0, 3).removeO()
    substitutions = {n: 3, z[i]: z3[0]}
    for r in (1, 2):
        power_sum = th.freeze_sums(sp.Sum(z[k] ** r, (k, 1, n)))
        substitutions[power_sum] = sum(zz**r for zz in z3)
    power_sum_1 = th.freeze_sums(sp.Sum(z[k], (k, 1, n)))
    substitutions[power_sum_1] = sum(z3)
    assert sp.simplify(general.subs(substitutions) - concrete) == 0


def test_sum_series_second_order_softmax_general_n():
    p_i = sp.exp(u * z[i]) / sp.Sum(sp.exp(u * z[k]), (k, 1, n))
    mean = sp.Sum(z[k], (k, 1, n)) / n
    c_i = z[i] - mean
    m2 = sp.Sum((z[k] - mean) ** 2, (k, 1, n)) / n
    right = 1 / n + u * c_i / n + u**2 * (c_i**2 - m2) / (2 * n)
    series = th.sum_series(p_i, u, 2)
    assert sp.simplify(series - sp.expand(th.sums_as_symbols(right))) == 0
    wrong = 1 / n + u * c_i / n + u**2 * c_i**2 / (2 * n)  # forgets -m2
    assert sp.simplify(series - sp.expand(th.sums_as_symbols(wrong))) != 0


# -----------------------------------------------------------------------------
# numeric entropy and its temperature derivative


def test_softmax_entropy_values():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    H = th.softmax_entropy(logits, 1.0)
    assert torch.allclose(H[0], torch.tensor(math.log(4), dtype=torch.float64))
    assert H[1] < 1e-18 and torch.isfinite(H).all()
    assert torch.isfinite(th.softmax_entropy(torch.tensor([1e4, 0.0], dtype=torch.float64), 0.05))


@pytest.mark.parametrize("T_value", [0.2, 1.0, 7.0, 300.0])
def test_entropy_temperature_derivative_matches_autograd(T_value):
    generator = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(5, 7, generator=generator, dtype=torch.float64)
    T_tensor = torch.tensor(T_value, dtype=torch.float64, requires_grad=True)
    for row in logits:
        (grad,) = torch.autograd.grad(th.softmax_entropy(row, T_tensor), T_tensor)
        closed = th.entropy_temperature_derivative(row, T_value)
        assert torch.allclose(grad, closed, rtol=1e-7, atol=1e-15)
        assert closed > 0
        if T_value != 1.0:  # a wrong power of T (Var / T^2) would disagree
            assert not torch.allclose(grad, closed * T_value, rtol=1e-3)


def test_entropy_derivative_zero_for_equal_logits_and_bad_temperature():
    assert th.entropy_temperature_derivative(torch.full((4,), 2.5, dtype=torch.float64), 3.0) == 0
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            th.entropy_temperature_derivative(torch.zeros(3), bad)
        with pytest.raises(ValueError, match="temperature"):
            th.softmax_entropy(torch.zeros(3), bad)


# -----------------------------------------------------------------------------
# kdbook.plots


@pytest.fixture
def clean_widget_env(monkeypatch):
    monkeypatch.delenv("KDBOOK_WIDGETS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return monkeypatch


def test_live_frontend_false_in_the_tests_and_overrides(clean_widget_env):
    assert plots.live_frontend() is False  # no IPython kernel here
    clean_widget_env.setenv("KDBOOK_WIDGETS", "1")
    assert plots.live_frontend() is True
    clean_widget_env.setenv("KDBOOK_WIDGETS", "0")
    assert plots.live_frontend() is False
    clean_widget_env.setenv("KDBOOK_WIDGETS", "yes")
    with pytest.raises(ValueError, match="KDBOOK_WIDGETS"):
        plots.live_frontend()


def test_live_frontend_false_outside_a_kernel(clean_widget_env):
    """Without an IPython kernel (a plain script): no widgets, even with
    JPY_SESSION_NAME set."""
    clean_widget_env.setenv("JPY_SESSION_NAME", "x.ipynb")
    assert plots.live_frontend() is False


def test_slider_prints_note_without_frontend(clean_widget_env, capsys):
    calls = []
    plots.slider(lambda T=1.0: calls.append(T), T=plots.LogSlider(0.1, 10, 1.0))
    assert capsys.readouterr().out.strip() == plots.SLIDER_NOTE
    assert calls == []  # nothing drawn, no widget created


def test_slider_creates_widget_when_forced(clean_widget_env):
    pytest.importorskip("ipywidgets")
    clean_widget_env.setenv("KDBOOK_WIDGETS", "1")
    seen = []
    plots.slider(lambda T=1.0: seen.append(T), T=plots.LogSlider(0.1, 10, 2.0))
    assert seen and abs(seen[0] - 2.0) < 1e-12


def test_log_slider_validation_and_widget():
    with pytest.raises(ValueError, match="low"):
        plots.LogSlider(1.0, 0.5, 0.7)
    with pytest.raises(ValueError, match="steps"):
        plots.LogSlider(0.1, 10, 1.0, steps=0)
    ipywidgets = pytest.importorskip("ipywidgets")
    widget = plots.LogSlider(0.1, 100, 4.0).widget()
    assert isinstance(widget, ipywidgets.FloatLogSlider)
    assert widget.min == pytest.approx(-1) and widget.max == pytest.approx(2)


def _animation():
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=30)
    (line,) = ax.plot([0, 1], [0, 0])

    def update(t):
        line.set_ydata([0, t])
        return (line,)

    return fig, FuncAnimation(fig, update, frames=[0.0, 0.5, 1.0])


def test_animation_html_is_self_contained():
    fig, animation = _animation()
    html = plots.animation_html(animation, fps=2)
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "font-awesome" not in html and 'class="fa' not in html
    assert html.count("data:image/png;base64") == 3
    assert "\u25b6" in html  # the play button, drawn with Unicode
    assert not plt.fignum_exists(fig.number)  # the figure was closed


def test_offline_html_rejects_unknown_icons_and_leftover_links():
    with pytest.raises(ValueError, match="icon"):
        plots.offline_html('<i class="fa fa-rocket"></i>')
    with pytest.raises(ValueError, match="external"):
        plots.offline_html('<script src="https://cdn.example.org/x.js"></script>')
    assert plots.offline_html('<link rel="stylesheet"\nhref="https://cdn.example.org/a.css">\n<p>x</p>') == "<p>x</p>"


def test_drawing_helpers():
    fig, (a1, a2) = plt.subplots(1, 2)
    plots.show_image(a1, torch.zeros(3, 8, 8, dtype=torch.uint8), "blank")
    assert a1.get_title() == "blank"
    with pytest.raises(ValueError, match="shape"):
        plots.show_image(a1, torch.zeros(8, 8, 3, dtype=torch.uint8))
    probs = {1: [0.7, 0.2, 0.1], 4: [0.4, 0.3, 0.3]}
    plots.soft_target_bars(a2, probs, ["a", "b", "c"])
    assert len(a2.patches) == 6 and a2.get_yscale() == "log"
    with pytest.raises(ValueError, match="entries"):
        plots.soft_target_bars(a2, {1: [0.5, 0.5]}, ["a", "b", "c"])
    plots.provenance_title(fig, "Title", "made by " + "x" * 200, width=50)
    assert fig._suptitle.get_text().startswith("Title\n") and fig._suptitle.get_text().count("\n") >= 4
    plt.close(fig)


# -----------------------------------------------------------------------------
# The checker of ex-temperature-entropy


def _bisection_solution(logits, entropy):
    def H(log_T):
        log_p = torch.log_softmax(logits / math.exp(log_T), dim=-1)
        return -(log_p.exp() * log_p).sum().item()

    lo, hi = -1.0, 1.0
    while H(lo) > entropy:
        lo *= 2
    while H(hi) < entropy:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if H(mid) < entropy else (lo, mid)
    return torch.tensor(math.exp((lo + hi) / 2))  # a 0-d tensor is accepted too


def test_checker_accepts_right_answers():
    assert "all 5 checks passed" in ex.check_temperature_for_entropy(ex.reference_temperature_for_entropy)
    assert "all 5 checks passed" in ex.check_temperature_for_entropy(_bisection_solution)


@pytest.mark.parametrize("description, wrong", ex._WRONG_TEMPERATURES)
def test_checker_names_known_mistakes(description, wrong):
    with pytest.raises(ExerciseFailure) as failure:
        ex.check_temperature_for_entropy(wrong)
    message = str(failure.value)
    assert description in message
    assert "expected" in message and "got" in message and "Hint:" in message and "input logits=" in message


def test_checker_feedback_for_overflow():
    """Entropy from exp/sum/log overflows at small T: nan, then a failing case with the
    overflow hint."""

    def naive(logits, entropy):
        def H(T_):
            p = torch.exp(logits / T_)
            p = p / p.sum()
            return float(-(p * torch.log(p)).sum())

        lo, hi = 1e-3, 1e3
        for _ in range(100):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if H(mid) < entropy else (lo, mid)
        return mid

    with pytest.raises(ExerciseFailure, match="overflows"):
        ex.check_temperature_for_entropy(naive)


@pytest.mark.parametrize("returned, pattern", [
    ("hot", "expected a temperature"),
    (-1.0, "expected a temperature"),
    (torch.ones(2), "expected a temperature"),
])
def test_checker_rejects_non_temperatures(returned, pattern):
    with pytest.raises(ExerciseFailure, match=pattern):
        ex.check_temperature_for_entropy(lambda logits, entropy: returned)


def test_checker_reports_exceptions_and_lets_placeholders_through():
    def broken(logits, entropy):
        raise RuntimeError("boom")

    with pytest.raises(ExerciseFailure, match="raised RuntimeError: boom"):
        ex.check_temperature_for_entropy(broken)
    with pytest.raises(ExerciseFailure, match="expected a function"):
        ex.check_temperature_for_entropy(3.0)
    with pytest.raises(Unsolved):
        ex.check_temperature_for_entropy(lambda logits, entropy: placeholder("ex-temperature-entropy"))


def test_checker_does_not_let_inputs_be_modified():
    def vandal(logits, entropy):
        T = ex.reference_temperature_for_entropy(logits, entropy)
        logits.mul_(0)
        return T

    assert "all 5 checks passed" in ex.check_temperature_for_entropy(vandal)
