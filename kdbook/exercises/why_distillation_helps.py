"""Checkers for the exercises of the chapter "Why distillation helps: the statistical view"
(book/why_distillation_helps.ipynb).

``check_expected_calibration_error`` checks exercise ``ex-stat-ece``: the expected
calibration error ``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width,
right-closed confidence bins ``((b - 1)/M, b/M]``. Each case isolates one part of the
answer (the weights, the bins' edges, what "confidence" is, empty bins, the default
number of bins), and known wrong answers are recognised so that the feedback can name
the mistake.
"""

from __future__ import annotations

import torch

from kdbook.calibration import expected_calibration_error
from kdbook.exercises import check_function

EXERCISE = "ex-stat-ece"


def reference_expected_calibration_error(probs, labels, n_bins=15):
    """:func:`kdbook.calibration.expected_calibration_error`."""
    return expected_calibration_error(probs, labels, n_bins)


def _bins(confidence, n_bins, right_closed=True):
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    return torch.bucketize(confidence, edges[1:-1], right=not right_closed)


def _gaps(probs, labels, n_bins, *, confidence=None, right_closed=True):
    """Per non-empty bin: (fraction of predictions, accuracy - mean confidence)."""
    probs = probs.double()
    top, predicted = probs.max(dim=1)
    confidence = top if confidence is None else confidence
    correct = (predicted == labels).double()
    index = _bins(confidence, n_bins, right_closed)
    out = []
    for b in index.unique():
        members = index == b
        out.append((members.double().mean(), correct[members].mean() - confidence[members].mean()))
    return out


# Known wrong answers: (what the answer did, a function that does it). The descriptions
# complete the sentence "Your result is what you get when ...".
MISTAKES = [
    ("the bins are averaged with equal weights instead of weights n_b / N",
     lambda probs, labels, n_bins=15: float(sum(abs(g) for _, g in _gaps(probs, labels, n_bins))
                                            / len(_gaps(probs, labels, n_bins)))),
    ("the gaps acc_b - conf_b are not taken in absolute value",
     lambda probs, labels, n_bins=15: float(abs(sum(w * g for w, g in _gaps(probs, labels, n_bins))))),
    ("the confidence is the probability of the true class instead of the largest probability",
     lambda probs, labels, n_bins=15: float(sum(w * abs(g) for w, g in _gaps(
         probs, labels, n_bins, confidence=probs.double().gather(1, labels[:, None]).squeeze(1))))),
    ("the bins are closed on the left, [(b-1)/M, b/M), instead of on the right",
     lambda probs, labels, n_bins=15: float(sum(w * abs(g) for w, g in _gaps(
         probs, labels, n_bins, right_closed=False)))),
    ("10 bins are used whatever n_bins is",
     lambda probs, labels, n_bins=15: float(sum(w * abs(g) for w, g in _gaps(probs, labels, 10)))),
]


def _two_class(confidences, correct):
    """Two-class predictions of class 0 with the given confidences, right where ``correct``."""
    confidences = torch.tensor(confidences, dtype=torch.float64)
    probs = torch.stack([confidences, 1 - confidences], dim=1)
    labels = torch.tensor([0 if c else 1 for c in correct])
    return dict(probs=probs, labels=labels)


def _random(N, n, seed, dtype=torch.float64, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(scale * torch.randn(N, n, generator=generator, dtype=torch.float64), dim=1)
    labels = torch.randint(0, n, (N,), generator=generator)
    return dict(probs=probs.to(dtype), labels=labels)


def cases():
    """The checker's cases, ``(name, hint, arguments)``, each isolating one part of the answer."""
    return [
        ("one bin: confidence 0.9, accuracy 1/2",
         "With one bin the ECE is |accuracy - mean confidence| = |0.5 - 0.9| = 0.4 here.",
         dict(**_two_class([0.9, 0.9], [True, False]), n_bins=1)),
        ("two groups of different size: weights n_b / N",
         "Three predictions at confidence 0.9, one right (gap 0.9 - 1/3), and one at 0.6, "
         "right (gap 0.4): the gaps are weighted by the fraction of predictions in the bin, "
         "3/4 and 1/4.",
         dict(**_two_class([0.9, 0.9, 0.9, 0.6], [True, False, False, True]), n_bins=15)),
        ("confidences on bin edges: right-closed bins",
         "With n_bins = 4 the bins are (0, 0.25], (0.25, 0.5], (0.5, 0.75] and (0.75, 1]: a "
         "confidence of exactly 0.5 belongs to the second, 0.75 to the third. "
         "torch.bucketize(confidence, inner_edges, right=False) does this; so does "
         "ceil(confidence * n_bins) - 1.",
         dict(**_two_class([0.5, 0.6, 0.75, 0.95], [True, True, False, True]), n_bins=4)),
        ("ten classes: confidence is the largest probability",
         "The confidence of a prediction is its largest probability (probs.max(dim=1)), "
         "whatever the label; the prediction is right when its argmax equals the label.",
         dict(**_random(40, 10, 0), n_bins=5)),
        ("many bins, most of them empty",
         "Empty bins have no accuracy and no confidence: leave them out (their weight n_b / N is 0) "
         "rather than letting 0/0 = nan into the sum.",
         dict(**_random(6, 3, 1), n_bins=50)),
        ("float32 probabilities, the default number of bins",
         "n_bins defaults to 15 (def expected_calibration_error(probs, labels, n_bins=15)); "
         "float32 inputs are fine (the checker allows for their rounding).",
         dict(**_random(300, 10, 2, dtype=torch.float32))),
    ]


def check_expected_calibration_error(expected_calibration_error) -> str:
    """Checks ``expected_calibration_error(probs, labels, n_bins=15)`` of exercise
    ``ex-stat-ece``; raises :class:`kdbook.exercises.ExerciseFailure` with specific
    feedback on the first case it gets wrong."""
    names, hints, arguments = zip(*cases())
    return check_function(EXERCISE, expected_calibration_error, reference_expected_calibration_error,
                          arguments, hints=hints, names=names, mistakes=MISTAKES,
                          rtol=1e-5, atol=1e-7)
