"""Checkers for the exercises of the chapter "Temperature" (book/temperature.ipynb).

``check_temperature_for_entropy`` checks exercise ``ex-temperature-entropy``: a function
``temperature_for_entropy(logits, entropy)`` that returns the temperature ``T`` at which
``softmax(logits / T)`` has the given entropy (in nats). The temperature is unique
because the entropy increases strictly with ``T`` (theorem ``thm-temp-entropy``), but
near ``log n`` it is ill-conditioned (the entropy hardly moves with ``T``), so the
checker compares the **entropy at the returned temperature** with the target rather
than the temperatures themselves. Known wrong answers are recognised so that the
feedback can name the mistake.
"""

from __future__ import annotations

import math

import torch

from kdbook.exercises import ExerciseFailure, Unsolved, compare, describe, diagnose

EXERCISE = "ex-temperature-entropy"
TOLERANCE = 1e-6  # nats


def entropy_at(logits: torch.Tensor, T: float) -> float:
    """``H(softmax(logits / T))`` in nats, computed stably (from log-softmax)."""
    log_p = torch.log_softmax(logits.double() / T, dim=-1)
    return float(-(log_p.exp() * log_p).sum())


def _bisect(logits, entropy, entropy_fn=entropy_at, bracket=None) -> float:
    """The temperature with ``entropy_fn(logits, T) = entropy``, by bisection on log T."""
    lo, hi = (-1.0, 1.0) if bracket is None else (math.log(bracket[0]), math.log(bracket[1]))
    if bracket is None:
        while entropy_fn(logits, math.exp(lo)) > entropy:
            lo *= 2
        while entropy_fn(logits, math.exp(hi)) < entropy:
            hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if entropy_fn(logits, math.exp(mid)) < entropy else (lo, mid)
    return math.exp((lo + hi) / 2)


def reference_temperature_for_entropy(logits, entropy) -> float:
    """The reference solution: bisection on ``log T`` with a bracket widened as needed."""
    return _bisect(logits, entropy)


def _entropy_bits(logits, T):
    return entropy_at(logits, T) / math.log(2)


# Known wrong answers, each as the temperature it would return. The checker compares
# entropies, so each is wrapped by ``_achieved`` below.
_WRONG_TEMPERATURES = [
    ("you return the inverse temperature 1/T instead of T",
     lambda logits, entropy: 1 / reference_temperature_for_entropy(logits, entropy)),
    ("the entropy is measured in bits (log base 2) instead of nats",
     lambda logits, entropy: _bisect(logits, entropy, _entropy_bits)),
    ("the search for T stays inside the bracket [0.1, 10] instead of widening it",
     lambda logits, entropy: _bisect(logits, entropy, bracket=(0.1, 10.0))),
    ("the search for T stays inside the bracket [0.01, 100] instead of widening it",
     lambda logits, entropy: _bisect(logits, entropy, bracket=(0.01, 100.0))),
]


def _as_temperature(value):
    """The returned temperature as a float, or None when it is not a single number."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _achieved(temperature_fn):
    """``(logits, entropy) -> entropy of softmax(logits / T)`` at the T that
    ``temperature_fn`` returns (nan when T is not a positive finite number)."""

    def achieved(logits, entropy):
        T = _as_temperature(temperature_fn(logits=logits, entropy=entropy))
        if T is None or not (math.isfinite(T) and T > 0):
            return math.nan
        return entropy_at(logits, T)

    return achieved


def cases():
    """The checker's cases, ``(name, hint, arguments)``; each can expose one mistake."""
    f64 = torch.float64
    return [
        ("three logits, a target in the middle",
         ("H(softmax(z / T)) increases with T (theorem thm-temp-entropy): if the entropy "
         "at your T is too small, T must grow. Compute the entropy in nats (natural log)."),
         {"logits": torch.tensor([2.0, 0.0, -1.0], dtype=f64), "entropy": 0.8}),
        ("ten logits, a target close to log 10 (needs a large T)",
         ("Near log n the entropy changes slowly with T, so the answer is a large "
         "temperature (here above 100): do not limit the search to a fixed bracket, "
         "widen it until it contains the target."),
         {"logits": torch.linspace(-4.0, 5.0, 10, dtype=f64), "entropy": math.log(10) - 1e-4}),
        ("large logits, a small target (needs a small T)",
         ("During the search T gets small, logits / T exceeds 709 and exp overflows to "
         "inf in float64 (then inf / inf = nan, and every comparison with nan is False). "
         "Compute the entropy from torch.log_softmax."),
         {"logits": torch.tensor([30.0, 29.5, 10.0, -20.0], dtype=f64), "entropy": 0.05}),
        ("two logits tie for the maximum: the target must exceed log 2",
         ("With k tied maxima the entropy tends to log k, not 0, as T -> 0 (theorem "
         "thm-temp-low), so this target (just above log 2) needs a small T."),
         {"logits": torch.tensor([3.0, 3.0, 1.0, 0.0, -2.0], dtype=f64),
              "entropy": math.log(2) + 0.01}),
        ("logits shifted by 1000 (the softmax ignores the shift)",
         ("softmax((z + a) / T) = softmax(z / T): the answer does not change when a "
         "constant is added to every logit, but exp(z / T) overflows unless you use "
         "log_softmax (or subtract the maximum)."),
         {"logits": torch.tensor([1002.0, 1000.0, 999.0], dtype=f64), "entropy": 0.9}),
    ]


def check_temperature_for_entropy(temperature_for_entropy) -> str:
    """Checks ``temperature_for_entropy(logits, entropy)`` of exercise
    ``ex-temperature-entropy``; raises :class:`kdbook.exercises.ExerciseFailure` with
    specific feedback on the first case it gets wrong. Compared: the entropy (nats)
    of ``softmax(logits / T)`` at the returned ``T``, with the target."""
    if not callable(temperature_for_entropy):
        raise ExerciseFailure(f"{EXERCISE}: expected a function, got "
                              f"{type(temperature_for_entropy).__name__}")
    mistakes = [(description, _achieved(wrong)) for description, wrong in _WRONG_TEMPERATURES]
    all_cases = cases()
    for number, (name, hint, arguments) in enumerate(all_cases, start=1):
        label = (f"case {number} of {len(all_cases)} ({name}), input "
                 + ", ".join(f"{k}={describe(v)}" for k, v in arguments.items()))
        try:
            returned = temperature_for_entropy(**{k: (v.clone() if isinstance(v, torch.Tensor) else v)
                                                 for k, v in arguments.items()})
        except Unsolved:
            raise
        except Exception as err:
            raise ExerciseFailure(f"{EXERCISE}: {label}: your function raised "
                                  f"{type(err).__name__}: {err}\nHint: {hint}") from err
        T = _as_temperature(returned)
        if T is None or not (math.isfinite(T) and T > 0):
            raise ExerciseFailure(f"{EXERCISE}: {label}: expected a temperature (a positive "
                                  f"float), got {describe(returned)}\nHint: {hint}")
        reference_T = reference_temperature_for_entropy(**arguments)
        got = entropy_at(arguments["logits"], T)
        where = (f"{label}; the entropy at your T = {T:.6g} (the target is reached at "
                 f"T = {reference_T:.6g})")
        try:
            compare(EXERCISE, where, got, arguments["entropy"], hint=hint, rtol=0, atol=TOLERANCE)
        except ExerciseFailure as failure:
            mistake = diagnose(got, arguments["entropy"], arguments, mistakes, rtol=0, atol=TOLERANCE)
            if mistake:
                raise ExerciseFailure(f"{failure}\nYour result is what you get when {mistake}.") from None
            raise
    return f"{EXERCISE}: all {len(all_cases)} checks passed"
