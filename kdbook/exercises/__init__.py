"""Checkers for the code exercises: specific feedback, never just "wrong".

Each chapter's checkers live in ``kdbook.exercises.<chapter>``. A checker runs the
student's function on chosen inputs, compares with the reference solution, and on the
first disagreement raises :class:`ExerciseFailure` saying which input, what was
expected, what came back, and a hint. When every case agrees it returns a short
confirmation string (the notebook prints it).

Conventions in the notebooks (the student-copy command relies on them):

- the reference solution of a code exercise is a code cell tagged ``solution``; in a
  student copy it is replaced by a stub whose body calls :func:`placeholder`;
- the cell that calls the checker is tagged ``check`` and is kept in student copies.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch


class ExerciseFailure(AssertionError):
    """The answer disagrees with the reference; the message says where and how."""


class Unsolved(NotImplementedError):
    """Raised by a placeholder a student has not replaced yet."""


def placeholder(exercise: str) -> None:
    """Body of an unsolved exercise in a student copy."""
    raise Unsolved(f"Exercise {exercise!r} is not solved yet: replace this placeholder with your code.")


def describe(value: Any) -> str:
    """A short, readable description of an input or output for feedback messages."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 12:
            return f"tensor({value.tolist()}, dtype={value.dtype})"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    return repr(value)


def _fail(exercise: str, case: str, detail: str, hint: str) -> ExerciseFailure:
    message = f"{exercise}: {case}: {detail}"
    if hint:
        message += f"\nHint: {hint}"
    return ExerciseFailure(message)


def compare(exercise: str, case: str, got: Any, expected: Any, *, hint: str = "",
            rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Raises :class:`ExerciseFailure` unless ``got`` matches ``expected`` (numbers or tensors)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise _fail(exercise, case, f"expected a torch.Tensor, got {type(got).__name__}", hint)
        if got.shape != expected.shape:
            raise _fail(exercise, case, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}", hint)
        got_f, exp_f = got.detach().double(), expected.detach().double()
        if not torch.allclose(got_f, exp_f, rtol=rtol, atol=atol, equal_nan=False):
            worst = int((got_f - exp_f).abs().flatten().argmax())
            raise _fail(exercise, case,
                        f"expected {describe(expected)}, got {describe(got)} "
                        f"(largest difference at flat index {worst}: expected "
                        f"{exp_f.flatten()[worst].item():.6g}, got {got_f.flatten()[worst].item():.6g})", hint)
        return
    try:
        got_value = float(got)
    except (TypeError, ValueError):
        raise _fail(exercise, case, f"expected a number, got {type(got).__name__}", hint) from None
    if not abs(got_value - float(expected)) <= atol + rtol * abs(float(expected)):
        raise _fail(exercise, case, f"expected {float(expected):.6g}, got {got_value:.6g}", hint)


def check_function(exercise: str, candidate: Callable, reference: Callable,
                   cases: Sequence[dict[str, Any]], *, hints: Sequence[str] | None = None,
                   rtol: float = 1e-6, atol: float = 1e-8) -> str:
    """Runs ``candidate(**case)`` and ``reference(**case)`` for each case and compares.

    ``hints[i]`` is shown when case ``i`` fails (each case can test one mistake)."""
    if not callable(candidate):
        raise ExerciseFailure(f"{exercise}: expected a function, got {type(candidate).__name__}")
    for i, case in enumerate(cases):
        label = "input " + ", ".join(f"{k}={describe(v)}" for k, v in case.items())
        hint = hints[i] if hints else ""
        try:
            got = candidate(**case)
        except Unsolved:
            raise
        except Exception as err:
            raise _fail(exercise, label, f"your function raised {type(err).__name__}: {err}", hint) from err
        compare(exercise, label, got, reference(**case), hint=hint, rtol=rtol, atol=atol)
    return f"{exercise}: all {len(cases)} checks passed"
