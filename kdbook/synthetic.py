"""A classification problem whose Bayes class probabilities are known exactly, and a
student to train on it (chapter "Why distillation helps: the statistical view",
book/why_distillation_helps.ipynb).

The data are a Gaussian mixture in ``dim`` dimensions: class ``k`` has prior ``pi_k``
and density ``N(mu_k, sigma^2 I)``, all classes sharing ``sigma``. Bayes' rule then
gives the class probabilities

    eta_k(x) = pi_k N(x; mu_k, sigma^2 I) / sum_j pi_j N(x; mu_j, sigma^2 I)
             = softmax_k(<mu_k, x> / sigma^2 - |mu_k|^2 / (2 sigma^2) + log pi_k),

an affine function of ``x`` inside a softmax: a linear softmax student
(:func:`fit_softmax_regression`) can represent ``eta`` exactly, and so can it represent
every teacher ``softmax(log(eta) / tau)`` of :func:`tempered`. Any gap between a
student and ``eta`` is then estimation error or the teacher's bias, never a lack of
capacity.

Everything is float64 and seeded: the same seed gives the same data.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbook import findings

DTYPE = torch.float64


@dataclass(frozen=True)
class GaussianMixture:
    """Class means ``means`` (K, D), shared standard deviation ``sigma``, priors (K,)."""

    means: Tensor
    sigma: float
    priors: Tensor

    def __post_init__(self):
        if self.means.ndim != 2 or self.means.shape[0] < 2:
            raise ValueError(f"means must have shape (classes >= 2, dim), got {tuple(self.means.shape)}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma!r}")
        if self.priors.shape != (self.means.shape[0],):
            raise ValueError(f"priors must have shape ({self.means.shape[0]},), got {tuple(self.priors.shape)}")
        if (self.priors <= 0).any() or abs(float(self.priors.sum()) - 1) > 1e-12:
            raise ValueError("priors must be positive and sum to 1")

    @property
    def classes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def bayes_logits(self, x: Tensor) -> Tensor:
        """Logits whose softmax is ``eta(x)``: the affine form of Bayes' rule above."""
        var = self.sigma**2
        return (x @ self.means.T / var - (self.means**2).sum(1) / (2 * var)
                + self.priors.log())

    def bayes_probs(self, x: Tensor) -> Tensor:
        """The Bayes class probabilities ``eta(x)``, shape (N, K)."""
        return F.softmax(self.bayes_logits(x), dim=1)

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` points and their classes, drawn from the mixture with a seeded generator."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        generator = torch.Generator().manual_seed(seed)
        y = torch.multinomial(self.priors, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=DTYPE)
        return self.means[y] + self.sigma * noise, y


def ring_mixture(classes: int = 4, dim: int = 2, radius: float = 2.0, sigma: float = 1.0) -> GaussianMixture:
    """Equal priors, class means equally spaced on a circle of ``radius`` in the first two
    coordinates (``dim >= 2``; other coordinates are pure noise)."""
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an int >= 2, got {classes!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    angles = 2 * math.pi * torch.arange(classes, dtype=DTYPE) / classes
    means = torch.zeros(classes, dim, dtype=DTYPE)
    means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
    return GaussianMixture(means, sigma, torch.full((classes,), 1 / classes, dtype=DTYPE))


def tempered(probs: Tensor, tau: float) -> Tensor:
    """``softmax(log(probs) / tau)``: a teacher that sharpens (``tau < 1``, over-confident)
    or flattens (``tau > 1``, under-confident) the probabilities; ``tau = 1`` keeps them."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    return F.softmax(probs.log() / tau, dim=1)


def expected_kl(p: Tensor, q: Tensor) -> Tensor:
    """Mean over the rows of ``KL(p || q)``: with ``p = eta`` it is the excess risk
    (cross-entropy minus the Bayes risk) of the predictor ``q`` on those points."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(1).mean()


@dataclass(frozen=True)
class LinearStudent:
    """``softmax(x @ weight.T + bias)``."""

    weight: Tensor  # (K, D)
    bias: Tensor  # (K,)

    def logits(self, x: Tensor) -> Tensor:
        return x @ self.weight.T + self.bias

    def probs(self, x: Tensor) -> Tensor:
        return F.softmax(self.logits(x), dim=1)


def fit_softmax_regression(x: Tensor, targets: Tensor, weight_decay: float = 1e-5,
                           max_iter: int = 100) -> LinearStudent:
    """The linear softmax student minimising
    ``mean_i CE(targets_i, softmax(W x_i + b)) + weight_decay / 2 * |W|^2``.

    ``targets`` are class indices (N,) (one-hot labels) or distributions (N, K) (soft
    targets). The objective is convex in (W, b), so Newton's method from zero finds its
    minimum: the result does not depend on an initialisation, a learning rate or a batch
    order, and with a dozen parameters each Newton step costs less than a gradient step
    of a small network."""
    x, targets = _checked(x, targets, weight_decay)
    with one_thread():
        return _newton(x, targets, weight_decay, max_iter)


@contextmanager
def one_thread():
    """Runs the block with one torch thread: on tensors this small, waking more threads
    costs far more than the arithmetic (ten times more on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _newton(x: Tensor, targets: Tensor, weight_decay: float, max_iter: int) -> LinearStudent:
    features = torch.cat([x, torch.ones(len(x), 1, dtype=DTYPE)], dim=1)  # (N, D + 1)
    classes, width = targets.shape[1], features.shape[1]
    decay = torch.full((classes, width), weight_decay, dtype=DTYPE)
    decay[:, -1] = 0  # the biases are not penalised
    # Adding the same vector to every class's row of (W, b) changes no prediction, so
    # the Hessian of the cross-entropy is singular along those D + 1 directions. Adding
    # their projector makes it invertible without changing the step in the other
    # directions: the gradient has no component along them (each row of targets and of
    # q sums to 1) once the parameters have none, as at the start from zero, and the
    # penalty keeps it so.
    shifts = torch.eye(width, dtype=DTYPE).repeat(classes, 1) / math.sqrt(classes)  # (K * (D+1), D+1)
    projector = shifts @ shifts.T
    params = torch.zeros(classes, width, dtype=DTYPE)
    loss = _objective(params, features, targets, decay)
    for _ in range(max_iter):
        q = F.softmax(features @ params.T, dim=1)
        grad = ((q - targets).T @ features / len(x) + decay * params).flatten()
        hessian = _hessian(q, features) + torch.diag(decay.flatten()) + projector
        step = torch.linalg.solve(hessian, -grad)
        decrement = -(grad @ step)  # Newton decrement squared: about twice the loss above the minimum
        if decrement < 1e-20:  # ... far below the rounding error of a loss of order 1 in float64
            break
        step = step.reshape(classes, width)
        if decrement < 1e-8:  # close enough for quadratic convergence: take the full step
            params = params + step
            loss = _objective(params, features, targets, decay)
            continue
        scale = 1.0
        while True:  # backtracking: a full Newton step far from the minimum can overshoot
            trial = params + scale * step
            trial_loss = _objective(trial, features, targets, decay)
            if trial_loss <= loss - 1e-4 * scale * decrement or scale < 1e-8:
                break
            scale /= 2
        params, loss = trial, trial_loss
    return LinearStudent(params[:, :-1].clone(), params[:, -1].clone())


def _checked(x: Tensor, targets: Tensor, weight_decay: float) -> tuple[Tensor, Tensor]:
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    if targets.ndim == 1:
        if targets.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"class-index targets must be integer, got {targets.dtype}")
        targets = F.one_hot(targets.long(), int(targets.max()) + 1)
    elif targets.ndim != 2:
        raise ValueError(f"targets must be (N,) class indices or (N, K) distributions, got {tuple(targets.shape)}")
    if targets.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but targets have {targets.shape[0]}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    return x.to(DTYPE), targets.to(DTYPE)


def _objective(params: Tensor, features: Tensor, targets: Tensor, decay: Tensor) -> Tensor:
    log_q = F.log_softmax(features @ params.T, dim=1)
    return -(targets * log_q).sum(1).mean() + (decay * params**2).sum() / 2


def _hessian(q: Tensor, features: Tensor) -> Tensor:
    """Hessian of the mean cross-entropy in the flattened (K, D + 1) parameters:
    mean_i (diag(q_i) - q_i q_i^T) kron (x_i x_i^T)."""
    n, classes = q.shape
    covariance = torch.diag_embed(q) - q[:, :, None] * q[:, None, :]  # (N, K, K)
    blocks = torch.einsum("nkl,na,nb->kalb", covariance, features, features) / n
    width = features.shape[1]
    return blocks.reshape(classes * width, classes * width)


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided t interval of the mean (n >= 2 values):
    :func:`kdbook.findings.t_interval`, in the form the figures use."""
    values = [float(v) for v in torch.as_tensor(values, dtype=DTYPE).flatten()]
    if len(values) < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {len(values)}")
    mean, (low, high) = findings.t_interval(values, confidence)
    return mean, (high - low) / 2
