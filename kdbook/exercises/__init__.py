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

import inspect
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
            values = value.detach().cpu()
            if values.is_floating_point():  # 6 significant digits, as in the comparisons
                text = repr(_rounded(values.tolist())).replace("'", "")
            else:
                text = repr(values.tolist())
            return f"tensor({text}, dtype={value.dtype})"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    return repr(value)


def _rounded(values: Any) -> Any:
    """Floats (in nested lists) as strings with 6 significant digits."""
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    return f"{values:.6g}"


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
            detail = f"expected {describe(expected)}, got {describe(got)}"
            if expected.numel() > 1:
                worst = int((got_f - exp_f).abs().flatten().argmax())
                detail += (f" (largest difference at flat index {worst}: expected "
                           f"{exp_f.flatten()[worst].item():.6g}, got {got_f.flatten()[worst].item():.6g})")
            raise _fail(exercise, case, detail, hint)
        return
    try:
        got_value = float(got)
    except (TypeError, ValueError):
        raise _fail(exercise, case, f"expected a number, got {type(got).__name__}", hint) from None
    if not abs(got_value - float(expected)) <= atol + rtol * abs(float(expected)):
        raise _fail(exercise, case, f"expected {float(expected):.6g}, got {got_value:.6g}", hint)


def _matches(got: Any, value: Any, rtol: float, atol: float) -> bool:
    """Whether ``got`` equals ``value`` within tolerance (False on any type or shape mismatch)."""
    try:
        compare("", "", got, value, rtol=rtol, atol=atol)
    except ExerciseFailure:
        return False
    return True


def diagnose(got: Any, expected: Any, case: dict[str, Any],
             mistakes: Sequence[tuple[str, Callable]] | None,
             rtol: float = 1e-6, atol: float = 1e-8) -> str:
    """The description of the first known mistake whose result is ``got`` on ``case``
    (and differs from ``expected``), or ``""``.

    ``mistakes`` pairs a description ("the soft term is not multiplied by T**2") with a
    function that makes that mistake, so that feedback can say what the answer did."""
    for description, wrong in mistakes or ():
        try:
            value = wrong(**case)
        except Exception:  # a mistake model that cannot run on this case says nothing
            continue
        if _matches(got, value, rtol, atol) and not _matches(value, expected, rtol, atol):
            return description
    return ""


def check_function(exercise: str, candidate: Callable, reference: Callable,
                   cases: Sequence[dict[str, Any]], *, hints: Sequence[str] | None = None,
                   names: Sequence[str] | None = None,
                   mistakes: Sequence[tuple[str, Callable]] | None = None,
                   rtol: float = 1e-6, atol: float = 1e-8) -> str:
    """Runs ``candidate(**case)`` and ``reference(**case)`` for each case and compares.

    ``hints[i]`` is shown when case ``i`` fails (each case can test one mistake);
    ``names[i]`` says in a few words what case ``i`` tests. ``mistakes`` are known wrong
    answers, ``(description, function)``: when the answer agrees with one of them the
    feedback names that mistake too. A candidate that raises :class:`Unsolved` (a
    student copy's placeholder) lets it through."""
    if not callable(candidate):
        raise ExerciseFailure(f"{exercise}: expected a function, got {type(candidate).__name__}")
    for i, case in enumerate(cases):
        label = "input " + ", ".join(f"{k}={describe(v)}" for k, v in case.items())
        if names:
            label = f"case {i + 1} of {len(cases)} ({names[i]}), {label}"
        hint = hints[i] if hints else ""
        _check_signature(exercise, candidate, case)
        try:
            got = candidate(**{k: _copy(v) for k, v in case.items()})
        except Unsolved:
            raise
        except Exception as err:
            raise _fail(exercise, label, f"your function raised {type(err).__name__}: {err}", hint) from err
        expected = reference(**case)
        try:
            compare(exercise, label, got, expected, hint=hint, rtol=rtol, atol=atol)
        except ExerciseFailure as failure:
            mistake = diagnose(got, expected, case, mistakes, rtol, atol)
            if mistake:
                raise ExerciseFailure(f"{failure}\nYour result is what you get when {mistake}.") from None
            raise
    return f"{exercise}: all {len(cases)} checks passed"


def _check_signature(exercise: str, candidate: Callable, case: dict[str, Any]) -> None:
    """A clear message when the candidate cannot take the case's keyword arguments."""
    try:
        signature = inspect.signature(candidate)
    except (TypeError, ValueError):  # builtins and the like: let the call itself tell
        return
    try:
        signature.bind(**case)
    except TypeError:
        name = getattr(candidate, "__name__", "your function")
        raise ExerciseFailure(
            f"{exercise}: {name}{signature} cannot be called as "
            f"{name}({', '.join(f'{k}=...' for k in case)}): the checker passes the arguments "
            "by name, so use the parameter names the exercise gives"
        ) from None


def _copy(value: Any) -> Any:
    """A tensor's copy, so that a candidate that modifies its inputs in place cannot
    change the reference's inputs."""
    return value.clone() if isinstance(value, torch.Tensor) else value
