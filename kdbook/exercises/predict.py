"""Checkers of the "predict, then run" exercises of the experiment chapters.

The student predicts the outcome of one configuration, writes ``my_experiment()``,
which runs it and returns its result, and the checker judges it against a run the
chapter shows. :func:`check_prediction` refuses a run that changed more than the
exercise allows (the comparison would not be fair) or used another profile, then
compares accuracies with the chapter's noise threshold: better, cannot be told apart,
or worse. Any honest outcome passes; the feedback says which, and that one seed per
arm is exploratory.

``check_temperature_experiment`` is exercise ``ex-hyper-predict-t`` (chapter
"Hyperparameters"): a temperature other than 4 for the small student.
"""

from __future__ import annotations

import functools
import operator
from typing import Callable

from kdbook.exercises import ExerciseFailure

EXERCISE = "ex-hyper-predict-t"


def _differences(got: dict, expected: dict, prefix: str = "") -> list[str]:
    """Settings (nested) whose values differ, as 'name: got (expected)' lines."""
    found = []
    for name in sorted(set(got) | set(expected)):
        a, b = got.get(name), expected.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{name}.")
        elif a != b:
            found.append(f"{prefix}{name} = {a!r} (the chapter's run: {b!r})")
    return found


def _setting(spec: dict, path: str):
    return functools.reduce(operator.getitem, path.split("."), spec)


def _with_setting(spec: dict, path: str, value) -> dict:
    head, _, rest = path.partition(".")
    if not rest:
        return {**spec, head: value}
    return {**spec, head: _with_setting(spec[head], rest, value)}


def check_prediction(exercise: str, experiment: Callable[[], dict], reference: dict, threshold: float,
                     may_change: str | tuple[str, ...]) -> str:
    """Runs ``experiment()`` and judges its result against ``reference``, a run of the
    chapter that differs only in the setting ``may_change`` (a dotted path in the run's
    spec, e.g. ``"train.temperature"``, or a tuple of them; the first is the one the
    exercise is about), with the noise ``threshold`` (in accuracy)."""
    paths = (may_change,) if isinstance(may_change, str) else tuple(may_change)
    may_change = paths[0]
    result = experiment()  # a placeholder raises Unsolved here
    if not isinstance(result, dict) or "spec" not in result or "metrics" not in result:
        raise ExerciseFailure(f"{exercise}: my_experiment() must return a run's result (the dict that "
                              f"experiments.run returns), got {type(result).__name__}")
    spec, ref = result["spec"], reference["spec"]
    chosen = _setting(spec, may_change)
    if chosen == _setting(ref, may_change):
        raise ExerciseFailure(f"{exercise}: choose a {may_change} other than {chosen!r}: that is the run "
                              "you compare with")
    fair = ref
    for path in paths:
        fair = _with_setting(fair, path, _setting(spec, path))
    changed = _differences(spec, fair)
    if changed:
        raise ExerciseFailure(f"{exercise}: only {', '.join(paths)} may change, or the comparison is not fair; "
                              "this run also changed:\n  " + "\n  ".join(changed)
                              + "\nHint: build the spec like the chapter's runs, changing that setting only.")
    if result["provenance"]["profile"] != reference["provenance"]["profile"]:
        raise ExerciseFailure(f"{exercise}: the run used profile {result['provenance']['profile']!r}, the "
                              f"reference {reference['provenance']['profile']!r}: compare like with like")
    acc, ref_acc = result["metrics"]["test_acc"], reference["metrics"]["test_acc"]
    gain = acc - ref_acc
    if gain > threshold:
        verdict = "is better by more than the noise threshold: the prediction of a gain holds in this run"
    elif gain < -threshold:
        verdict = "is worse by more than the noise threshold"
    else:
        verdict = "cannot be told apart from the chapter's run: the difference is within the noise threshold"
    return (f"{may_change} = {chosen!r}: {100 * acc:.2f}% against {100 * ref_acc:.2f}% "
            f"({100 * gain:+.2f} points, noise threshold {100 * threshold:.2f}): it {verdict}. One seed per "
            "arm, so this is exploratory: a claim needs three seeds per arm.")


def check_temperature_experiment(experiment: Callable[[], dict], reference: dict, threshold: float) -> str:
    """Exercise ``ex-hyper-predict-t``: the small student at a temperature other than the
    reference's T = 4, everything else equal."""
    return check_prediction(EXERCISE, experiment, reference, threshold, "train.temperature")
