"""Symbolic (sympy) versions of the quantities the chapters derive.

Chapters write each derivation out in the notebook; these helpers build the
objects several chapters share, so that every chapter starts from the same
definitions. Probabilities are lists of sympy expressions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from kdbook import numerics
from kdbook.losses import check_logit_pair, check_probabilities, check_temperature


def logit_symbols(name: str, n: int) -> list[sp.Symbol]:
    """``n`` real symbols ``name_1 ... name_n`` (logits are real numbers)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    return list(sp.symbols(f"{name}_1:{n + 1}", real=True))


def softmax(z: Sequence[sp.Expr], T: sp.Expr = sp.Integer(1)) -> list[sp.Expr]:
    """``exp(z_i / T) / sum_j exp(z_j / T)``."""
    weights = [sp.exp(zi / T) for zi in z]
    total = sp.Add(*weights)
    return [w / total for w in weights]


def kl_divergence(p: Sequence[sp.Expr], q: Sequence[sp.Expr]) -> sp.Expr:
    """``KL(p || q) = sum_i p_i (log p_i - log q_i)``."""
    _same_length(p, q)
    return sp.Add(*[pi * (sp.log(pi) - sp.log(qi)) for pi, qi in zip(p, q)])


def cross_entropy(p: Sequence[sp.Expr], q: Sequence[sp.Expr]) -> sp.Expr:
    """``H(p, q) = -sum_i p_i log q_i``."""
    _same_length(p, q)
    return -sp.Add(*[pi * sp.log(qi) for pi, qi in zip(p, q)])


def entropy(p: Sequence[sp.Expr]) -> sp.Expr:
    """``H(p) = -sum_i p_i log p_i``."""
    return -sp.Add(*[pi * sp.log(pi) for pi in p])


def _same_length(p, q) -> None:
    if len(p) != len(q):
        raise ValueError(f"p and q must have the same length, got {len(p)} and {len(q)}")


def is_zero(expr: sp.Expr) -> bool:
    """True when sympy proves ``expr`` identically 0 (simplify, then expand exponentials)."""
    simplified = sp.simplify(expr)
    if simplified == 0:
        return True
    return sp.simplify(sp.expand(sp.powsimp(sp.expand(simplified), force=True))) == 0


# -----------------------------------------------------------------------------
# Temperature and gradients (chapters "Temperature" and "Gradients"): moments of
# logits, the high-temperature expansion, and sums over a symbolic number of
# classes n (sympy ``Sum`` with ``IndexedBase`` logits), reduced to finite
# identities that ``simplify`` can decide.


def centred(z: Sequence[sp.Expr]) -> list[sp.Expr]:
    """``z_i - mean(z)``: the logits with their mean removed (softmax ignores the mean)."""
    if len(z) < 1:
        raise ValueError("need at least one logit")
    mean = sp.Add(*z) / len(z)
    return [zi - mean for zi in z]


def variance(p: Sequence[sp.Expr], x: Sequence[sp.Expr]) -> sp.Expr:
    """``Var_p(x) = sum_i p_i x_i^2 - (sum_i p_i x_i)^2``, the variance of ``x`` under ``p``."""
    _same_length(p, x)
    return sp.Add(*[pi * xi**2 for pi, xi in zip(p, x)]) - sp.Add(*[pi * xi for pi, xi in zip(p, x)]) ** 2


def softmax_high_t(z: Sequence[sp.Expr], T: sp.Expr, order: int = 2) -> list[sp.Expr]:
    """The expansion of ``softmax(z / T)`` in powers of ``1/T`` up to ``order`` (1, 2 or 3).

    With ``c_i = z_i - mean(z)`` and the central moments ``m_k = mean(c^k)``::

        p_i = 1/n + c_i/(n T) + (c_i^2 - m_2)/(2 n T^2) + (c_i^3 - 3 m_2 c_i - m_3)/(6 n T^3) + O(T^-4)

    derived in the chapter "Temperature" (section sec-temperature-limits)."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    n = len(z)
    c = centred(z)
    m2 = sp.Add(*[ci**2 for ci in c]) / n
    m3 = sp.Add(*[ci**3 for ci in c]) / n
    terms = [
        lambda ci: sp.Integer(1) / n,
        lambda ci: ci / (n * T),
        lambda ci: (ci**2 - m2) / (2 * n * T**2),
        lambda ci: (ci**3 - 3 * m2 * ci - m3) / (6 * n * T**3),
    ]
    return [sp.Add(*[term(ci) for term in terms[: order + 1]]) for ci in c]


def _index_of(s: sp.Sum) -> tuple[sp.Symbol, sp.Expr, sp.Expr]:
    if len(s.limits) != 1:
        raise ValueError(f"only sums over one index are supported, got {s}")
    return s.limits[0]


def expand_sums(expr: sp.Expr) -> sp.Expr:
    """Uses the linearity of every ``Sum``: expands its summand, splits it over ``+``,
    and takes out the factors that do not depend on the summation index
    (``Sum(1, (k, 1, n))`` becomes ``n``)."""

    def split(*args):
        s = sp.Sum(*args)
        index, lo, hi = _index_of(s)
        total = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand(s.function)):
            factor, depends = term.as_independent(index, as_Add=False)
            total += factor * (hi - lo + 1 if depends == 1 else sp.Sum(depends, (index, lo, hi)))
        return total

    return expr.replace(sp.Sum, split)


_CANONICAL_INDEX = sp.Symbol("k_", integer=True)


def freeze_sums(expr: sp.Expr) -> sp.Expr:
    """Replaces every ``Sum`` by a symbol named after it (with a canonical index name, so
    that the same sum written with different indices becomes the same symbol).

    An identity that ``simplify`` proves with the sums as independent symbols holds for
    every value they can take, so for every ``n``. (The converse fails: relations between
    sums, such as ``sum_k q_k = 1``, must be substituted by the caller.) Sums nested in a
    summand stay inside the outer sum's symbol."""
    if isinstance(expr, sp.Sum):
        index, lo, hi = _index_of(expr)
        if index != _CANONICAL_INDEX and _CANONICAL_INDEX in expr.function.free_symbols:
            raise ValueError(f"the reserved index name {_CANONICAL_INDEX} appears in {expr}")
        summand = expr.function.xreplace({index: _CANONICAL_INDEX})
        return sp.Symbol(f"Sum({sp.sstr(summand)}, ({_CANONICAL_INDEX}, {sp.sstr(lo)}, {sp.sstr(hi)}))")
    if not expr.args or isinstance(expr, (sp.Indexed, sp.IndexedBase)):
        return expr
    return expr.func(*[freeze_sums(a) for a in expr.args])


def sums_as_symbols(expr: sp.Expr) -> sp.Expr:
    """``freeze_sums(expand_sums(expr))``: every sum split by linearity, then each
    remaining sum (a power sum, a sum of exponentials...) made an independent symbol."""
    return freeze_sums(expand_sums(expr))


def select_branch(expr: sp.Expr, *conditions) -> sp.Expr:
    """Replaces every ``Piecewise`` by its branch whose condition is one of ``conditions``
    (known to hold, e.g. ``(i >= 1) & (i <= n)`` for a class index ``i``).

    Differentiating a sum over ``k = 1..n`` with respect to ``z[i]`` gives such a
    ``Piecewise``: the derivative when ``i`` is one of the summed indices, and 0 otherwise."""
    known = set(conditions)

    def pick(*pairs):
        for value, condition in pairs:
            if condition in known:
                return value
        raise ValueError(f"no branch of {sp.Piecewise(*pairs)} has one of the conditions {conditions}")

    return expr.replace(sp.Piecewise, pick)


def truncate_sums(expr: sp.Expr, u: sp.Symbol, order: int) -> sp.Expr:
    """Replaces the summand of every ``Sum`` by its Taylor polynomial in ``u`` of degree
    ``order``. For a finite sum this changes the sum by ``O(u^(order + 1))``, so the
    expression's series in ``u`` up to ``u^order`` is unchanged."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be an int >= 0, got {order!r}")

    def truncate(*args):
        s = sp.Sum(*args)
        index, lo, hi = _index_of(s)
        poly = sp.series(s.function, u, 0, order + 1).removeO()
        return sp.Sum(poly, (index, lo, hi))

    return expr.replace(sp.Sum, truncate)


def sum_series(expr: sp.Expr, u: sp.Symbol, order: int) -> sp.Expr:
    """The series of ``expr`` in ``u`` up to and including ``u^order`` (no ``O`` term), for
    an expression built from finite ``Sum`` s over a symbolic number of terms: each
    summand is replaced by its Taylor polynomial, each sum is split into power sums
    (``expand_sums``), which become independent symbols (``freeze_sums``)."""
    frozen = freeze_sums(expand_sums(truncate_sums(expr, u, order)))
    return sp.expand(sp.series(frozen, u, 0, order + 1).removeO())


# Numeric closed forms (float64 tensors), checked against autograd in the chapters.


def softmax_entropy(logits, T: float = 1.0):
    """``H(softmax(logits / T))`` in nats, along the last dimension (from log-softmax, so
    no ``0 * log 0``)."""
    return numerics.entropy_from_log_softmax(logits, _positive_temperature(T))


def entropy_temperature_derivative(logits, T: float):
    """``dH(softmax(z / T))/dT = Var_{p^T}(z) / T^3`` (chapter "Temperature",
    section sec-temperature-entropy), along the last dimension."""
    return numerics.variance_over_t_cubed(logits, _positive_temperature(T))


def logit_matching_objective(student_logits, teacher_logits):
    """``(1/(2n)) sum_i (Delta_i - mean(Delta))^2`` with ``Delta = z_s - z_t``, averaged over
    the batch: the limit of ``T^2 KL(p_t^T || p_s^T)`` as ``T -> oo`` (chapter "Gradients",
    section sec-gradients-high-t)."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "student_logits and teacher_logits must both have shape (batch, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    delta = student_logits - teacher_logits
    centred_delta = delta - delta.mean(dim=1, keepdim=True)
    return (centred_delta**2).sum(dim=1).mean() / (2 * delta.shape[1])


def _positive_temperature(T):
    """A positive finite temperature: a number, or a 0-d tensor (kept, so that autograd
    can differentiate with respect to it)."""
    if isinstance(T, torch.Tensor):
        if T.numel() != 1 or not T.is_floating_point():
            raise TypeError(f"temperature must be a number or a 0-d float tensor, got {T!r}")
        check_temperature(T.item())
        return T
    return check_temperature(T)


# -----------------------------------------------------------------------------
# Label smoothing, the high-temperature limit, and discrete information theory
# (chapters "Label smoothing and distillation", "Dark knowledge and information",
# and the claim audit).


def centred_logit_penalty(z: Sequence[sp.Expr]) -> sp.Expr:
    """``(1 / (2n)) sum_i (z_i - mean(z))^2``: half the variance of the logits.

    The limit of ``T^2 KL(u || softmax(z / T))`` as ``T -> oo`` (u uniform), derived
    in the chapter "Label smoothing and distillation" (section sec-ls-high-t)."""
    n = len(z)
    if n < 2:
        raise ValueError(f"need at least 2 logits, got {n}")
    mean = sp.Add(*z) / n
    return sp.Add(*[(zi - mean) ** 2 for zi in z]) / (2 * n)


def _probability_table(joint, ndim: int):
    """``joint`` as a numpy object array of sympy numbers, checked to be a distribution."""
    table = np.array(joint, dtype=object)
    if table.ndim != ndim:
        raise ValueError(f"joint must be a {ndim}-dimensional table, got {table.ndim} dimensions")
    table = np.vectorize(sp.sympify, otypes=[object])(table)
    for value in table.flat:
        if not (value.is_number and value.is_real) or value.is_negative:
            raise ValueError(f"joint entries must be real numbers >= 0, got {value}")
    total = sp.Add(*table.flat)
    exact = all(v.is_Rational for v in table.flat)
    # Input validation, not a numeric check: inexact entries come from the caller's own
    # float arithmetic (rows normalised, products of marginals, ...), whose rounding this
    # function cannot know, so any sum within 1e-9 of 1 (millions of float64 roundings)
    # is accepted as meant to be 1, and a sum further off is taken for a mistake.
    if (sp.simplify(total - 1) != 0) if exact else abs(float(total) - 1) > 1e-9:
        raise ValueError(f"joint entries must sum to 1, got {total}")
    return table


def _plogp_ratio(p, numerator, denominator) -> sp.Expr:
    """``p log(numerator / denominator)``, with ``0 log(...) = 0``."""
    return sp.Integer(0) if p.is_zero else p * sp.log(numerator / denominator)


def mutual_information(joint) -> sp.Expr:
    """``I(A; B)`` in nats of a discrete joint distribution ``joint[a][b]``.

    Entries are numbers (exact rationals give an exact result); ``0 log 0 = 0``."""
    p = _probability_table(joint, 2)
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    return sp.Add(*[_plogp_ratio(p[a, b], p[a, b], pa[a] * pb[b])
                    for a in range(p.shape[0]) for b in range(p.shape[1])])


def conditional_mutual_information(joint) -> sp.Expr:
    """``I(A; C | B)`` in nats of ``joint[a][b][c]``: 0 exactly when ``A -> B -> C`` is a
    Markov chain (A and C independent given B)."""
    p = _probability_table(joint, 3)
    pab, pbc, pb = p.sum(axis=2), p.sum(axis=0), p.sum(axis=(0, 2))
    A, B, C = p.shape
    return sp.Add(*[_plogp_ratio(p[a, b, c], p[a, b, c] * pb[b], pab[a, b] * pbc[b, c])
                    for a in range(A) for b in range(B) for c in range(C)])


def marginal(joint, keep: Sequence[int]) -> list:
    """The marginal of a joint table over the axes in ``keep`` (in that order), as nested lists."""
    table = np.array(joint, dtype=object)
    keep = list(keep)
    if sorted(set(keep)) != sorted(keep) or not all(0 <= k < table.ndim for k in keep):
        raise ValueError(f"keep must list distinct axes of a {table.ndim}-dimensional table, got {keep}")
    drop = tuple(k for k in range(table.ndim) if k not in keep)
    summed = table.sum(axis=drop) if drop else table
    remaining = [k for k in range(table.ndim) if k in keep]
    return np.transpose(summed, [remaining.index(k) for k in keep]).tolist()


def prediction_joint(p_x: Sequence, teacher: Sequence[Sequence], student: Sequence[Sequence],
                     student_sees: str = "x") -> list:
    """The joint table ``p[x][y_t][y_s]`` of an input X, the teacher's prediction and the
    student's prediction.

    ``teacher[x][y_t] = p(y_t | x)``. With ``student_sees="x"`` the student is a channel
    from the input, ``student[x][y_s] = p(y_s | x)``, and the two predictions are
    independent given X (each network looks at X). With ``student_sees="teacher"`` it is
    a channel from the teacher's prediction, ``student[y_t][y_s] = p(y_s | y_t)``: then,
    and only then, ``X -> Y_t -> Y_s`` is a Markov chain."""
    if student_sees not in ("x", "teacher"):
        raise ValueError(f"student_sees must be 'x' or 'teacher', got {student_sees!r}")
    if len(teacher) != len(p_x):
        raise ValueError(f"teacher needs one row per input value: {len(p_x)} rows, got {len(teacher)}")
    rows_needed = len(p_x) if student_sees == "x" else len(teacher[0])
    if len(student) != rows_needed:
        raise ValueError(f"student needs {rows_needed} rows for student_sees={student_sees!r}, "
                         f"got {len(student)}")
    joint = []
    for x, px in enumerate(p_x):
        joint.append([[sp.sympify(px) * sp.sympify(pt)
                       * sp.sympify(student[x if student_sees == "x" else yt][ys])
                       for ys in range(len(student[0]))]
                      for yt, pt in enumerate(teacher[x])])
    return joint


# -----------------------------------------------------------------------------
# The claim audit: the soft term at low temperature, separate teacher and student
# temperatures, a bound on the scaled gradient valid at every temperature, and
# information identities for predictions and drawn labels.


def soft_loss_two_temperatures(student_logits, teacher_logits, T_teacher, T_student):
    """``KL(softmax(z_t / T_teacher) || softmax(z_s / T_student))``, averaged over the batch,
    without any ``T^2`` factor.

    With ``T_teacher = T_student = T`` it is the soft term of the distillation loss. With
    ``T_student = 1`` and ``T_teacher -> 0`` it tends to the cross-entropy of the student
    on the teacher's top class (a unique one): self-training (claim audit, claim 11)."""
    check_logit_pair(student_logits, teacher_logits)
    log_pt = F.log_softmax(teacher_logits / _positive_temperature(T_teacher), dim=1)
    log_ps = F.log_softmax(student_logits / _positive_temperature(T_student), dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


def low_temperature_soft_limit(student_logits, teacher_logits):
    """``lim_{T -> 0+} T * KL(p_t^T || p_s^T)``, averaged over the batch.

    Per example it is ``max_j s_j - mean_{i in A} s_i`` with ``s`` the student's logits and
    ``A`` the set of the teacher's largest logits (exact ties): for a unique teacher argmax
    ``k*``, the margin ``max_j s_j - s_{k*}``, 0 exactly when the student's top class is
    ``k*``. So ``T^2 KL`` tends to 0 (claim audit, claim 1)."""
    check_logit_pair(student_logits, teacher_logits)
    top = (teacher_logits == teacher_logits.max(dim=1, keepdim=True).values).to(student_logits.dtype)
    mean_on_top = (top * student_logits).sum(dim=1) / top.sum(dim=1)
    return (student_logits.max(dim=1).values - mean_on_top).mean()


def softmax_covariance(p):
    """``diag(p) - p p^T`` for each row ``p`` of a (batch, classes) tensor of probabilities:
    ``T`` times the Jacobian of ``softmax(z / T)`` at ``p = softmax(z / T)``. Its largest
    eigenvalue is at most 1/2 (claim audit, claims 4 and 5)."""
    # the tolerance only screens out tensors that are not probabilities at all
    check_probabilities(p, "p", atol=1e-6)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def scaled_gradient_bound(student_logits, teacher_logits):
    """``(1/2) ||c_s - c_t||_2`` per example (``c`` the centred logits): for every ``T > 0`` a
    bound on ``||T (p_s^T - p_t^T)||_2``, the logit gradient of ``T^2 KL(p_t^T || p_s^T)``
    (claim audit, claims 4 and 5)."""
    check_logit_pair(student_logits, teacher_logits)
    difference = student_logits - teacher_logits
    return (difference - difference.mean(dim=1, keepdim=True)).norm(dim=1) / 2


def prediction_informations(joint) -> dict[str, sp.Expr]:
    """``I(X;Y_t)``, ``I(X;Y_s)``, ``I(X;Y_s|Y_t)`` and ``I(X;Y_t|Y_s)`` (nats, exact for
    rational entries) of a joint table ``joint[x][y_t][y_s]``, e.g. from ``prediction_joint``.

    Two expansions of ``I(X; Y_t, Y_s)`` by the chain rule give, for every joint table,
    ``I(X;Y_s) - I(X;Y_t) = I(X;Y_s|Y_t) - I(X;Y_t|Y_s)``."""
    _probability_table(joint, 3)
    return {
        "I(X;Y_t)": mutual_information(marginal(joint, (0, 1))),
        "I(X;Y_s)": mutual_information(marginal(joint, (0, 2))),
        "I(X;Y_s|Y_t)": conditional_mutual_information(joint),
        "I(X;Y_t|Y_s)": conditional_mutual_information(marginal(joint, (0, 2, 1))),
    }


def drawn_label_budget(p_x: Sequence, targets: Sequence[Sequence]) -> dict[str, sp.Expr]:
    """For ``X ~ p_x`` and a label ``Y ~ targets[x]`` drawn from the target of ``X``: the mean
    entropy ``E_X H(p(.|X))``, the information ``I(X;Y)`` and ``H(mean target)``, which is
    their sum (nats, exact for exact entries).

    ``H(mean target)`` depends on the targets: it is no fixed budget. The fixed bound is
    ``I(X;Y) <= log n - E_X H(p(.|X))``."""
    if len(targets) != len(p_x):
        raise ValueError(f"targets needs one row per input value: {len(p_x)} rows, got {len(targets)}")
    joint = [[sp.sympify(px) * sp.sympify(t) for t in row] for px, row in zip(p_x, targets)]
    table = _probability_table(joint, 2)
    mean_target = list(table.sum(axis=0))
    rows = [[sp.sympify(t) for t in row] for row in targets]
    return {
        "mean entropy": sp.Add(*[sp.sympify(px) * _entropy_0log0(row) for px, row in zip(p_x, rows)]),
        "I(X;Y)": mutual_information(joint),
        "H(mean target)": _entropy_0log0(mean_target),
    }


def _entropy_0log0(p: Sequence[sp.Expr]) -> sp.Expr:
    """``H(p)`` with ``0 log 0 = 0`` (``entropy`` would give ``nan`` for an exact 0)."""
    return -sp.Add(*[pi * sp.log(pi) for pi in p if not pi.is_zero])


def information_of_function(p_x: Sequence, values: Sequence) -> sp.Expr:
    """``I(X; f(X)) = H(f(X))`` in nats for a discrete ``X ~ p_x`` and ``f(x) = values[x]``:
    the entropy of the partition of the inputs into groups with equal values (compared
    exactly: sympy numbers, ints, or sequences of them)."""
    if len(values) != len(p_x):
        raise ValueError(f"values needs one entry per input value: {len(p_x)}, got {len(values)}")
    _probability_table([[px] for px in p_x], 2)
    mass: dict = {}
    for px, value in zip(p_x, values):
        key = tuple(sp.sympify(v) for v in value) if isinstance(value, (list, tuple)) else sp.sympify(value)
        mass[key] = mass.get(key, sp.Integer(0)) + sp.sympify(px)
    return _entropy_0log0(list(mass.values()))


def expand_log_primes(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every logarithm of a positive rational written as an integer combination
    of logarithms of primes (``log(12/5) = 2 log 2 + log 3 - log 5``), then expanded.

    The logarithms of distinct primes are linearly independent over the rationals, so a
    rational combination of such logarithms is 0 exactly when this returns 0: an exact
    test for identities between mutual informations of rational tables."""

    def split(argument):
        if not (argument.is_Rational and argument.is_positive):
            return sp.log(argument)
        total = sp.Integer(0)
        for part, sign in ((argument.p, 1), (argument.q, -1)):
            for prime, power in sp.factorint(part).items():
                total += sign * power * sp.log(prime, evaluate=False)
        return total

    return sp.expand(sp.expand_log(expr, force=True).replace(sp.log, split))
