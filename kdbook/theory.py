"""Symbolic (sympy) versions of the quantities the chapters derive.

Chapters write each derivation out in the notebook; these helpers build the
objects several chapters share, so that every chapter starts from the same
definitions. Probabilities are lists of sympy expressions.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp


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
