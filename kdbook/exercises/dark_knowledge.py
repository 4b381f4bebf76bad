"""Checkers for the exercises of the chapter "Dark knowledge and information"
(book/dark_knowledge.ipynb).

``check_mutual_information`` checks exercise ``ex-dark-mutual-information``: the mutual
information I(A; B), in nats, of a discrete joint distribution given as a 2-D tensor.
Each case isolates one part of the answer, and known wrong answers are recognised so
that the feedback can name the mistake.
"""

from __future__ import annotations

import math

import torch
from torch.special import xlogy

from kdbook.exercises import check_function

EXERCISE = "ex-dark-mutual-information"


def _marginals(joint):
    return joint.sum(dim=1, keepdim=True), joint.sum(dim=0, keepdim=True)


def _entropy(p):
    return -xlogy(p, p).sum()


def reference_mutual_information(joint):
    """``sum_{a,b} p(a,b) log(p(a,b) / (p(a) p(b)))`` in nats, with ``0 log 0 = 0``."""
    p_a, p_b = _marginals(joint)
    return float((xlogy(joint, joint) - xlogy(joint, p_a * p_b)).sum())


def _swapped_marginals(joint):
    p_a, p_b = _marginals(joint)  # p(a) taken over columns, p(b) over rows: transposed
    return float((xlogy(joint, joint) - xlogy(joint, p_b.T * p_a.T)).sum())


# Known wrong answers: (what the answer did, a function that does it). The descriptions
# complete the sentence "Your result is what you get when ...".
MISTAKES = [
    ("the logarithm is in base 2 (bits) instead of the natural logarithm (nats)",
     lambda joint: reference_mutual_information(joint) / math.log(2)),
    ("the result is the joint entropy H(A, B), not the mutual information",
     lambda joint: float(_entropy(joint))),
    ("the sign is reversed: H(A, B) - H(A) - H(B) instead of H(A) + H(B) - H(A, B)",
     lambda joint: -reference_mutual_information(joint)),
    ("the result is the entropy H(A) of the first variable alone",
     lambda joint: float(_entropy(joint.sum(dim=1)))),
    ("the marginals are swapped: p(a) summed over a column and p(b) over a row",
     _swapped_marginals),
]


def _table(rows):
    return torch.tensor(rows, dtype=torch.float64)


def cases():
    """The checker's cases, ``(name, hint, arguments)``, each isolating one part of the answer."""
    return [
        ("independent variables: p(a, b) = p(a) p(b)",
         "When A and B are independent every ratio p(a, b) / (p(a) p(b)) is 1, so the "
         "mutual information is 0.",
         dict(joint=_table([[0.12, 0.28], [0.18, 0.42]]))),
        ("a table with zeros, 2 x 3",
         "Entries with p(a, b) = 0 contribute 0 (0 log 0 = 0): skip them, or use "
         "torch.special.xlogy, so that no nan appears.",
         dict(joint=_table([[0.3, 0.0, 0.2], [0.1, 0.4, 0.0]]))),
        ("a copy: B = A, uniform over 3 values",
         "I(A; A) = H(A): here log 3 = 1.0986 nats. Use the natural logarithm "
         "(log2 gives bits: 1.585); the zeros off the diagonal contribute 0.",
         dict(joint=_table([[1 / 3, 0, 0], [0, 1 / 3, 0], [0, 0, 1 / 3]]))),
        ("a general 3 x 2 table",
         "The marginals: p(a) sums row a over b (joint.sum(dim=1)), p(b) sums column b "
         "over a (joint.sum(dim=0)); I(A; B) = sum p(a, b) log(p(a, b) / (p(a) p(b))).",
         dict(joint=_table([[0.25, 0.05], [0.1, 0.2], [0.15, 0.25]]))),
        ("A constant: a 1 x 4 table",
         "If A takes one value it carries no information about B: the result is 0. "
         "Take the table's shape as given.",
         dict(joint=_table([[0.1, 0.2, 0.3, 0.4]]))),
    ]


def check_mutual_information(mutual_information) -> str:
    """Checks ``mutual_information(joint)`` of exercise ``ex-dark-mutual-information``;
    raises :class:`kdbook.exercises.ExerciseFailure` with specific feedback on the first
    case it gets wrong."""
    names, hints, arguments = zip(*cases())
    return check_function(EXERCISE, mutual_information, reference_mutual_information, arguments,
                          hints=hints, names=names, mistakes=MISTAKES, rtol=1e-6, atol=1e-9)
