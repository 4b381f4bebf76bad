"""kdbook.synthetic: the Gaussian mixture's exact class probabilities, seeded data, the
tempered teachers and the linear softmax student."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbook import synthetic as sy

EPS = torch.finfo(torch.float64).eps


def _bayes_rule(mixture: sy.GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Bayes' rule from the densities, independently of the affine form of the module."""
    cov = mixture.sigma**2 * torch.eye(mixture.dim, dtype=torch.float64)
    log_joint = torch.stack([
        torch.distributions.MultivariateNormal(mean, cov).log_prob(x) + prior.log()
        for mean, prior in zip(mixture.means, mixture.priors)], dim=1)
    return (log_joint - log_joint.logsumexp(1, keepdim=True)).exp()


def _uneven_mixture():
    generator = torch.Generator().manual_seed(0)
    means = 2 * torch.randn(3, 4, generator=generator, dtype=torch.float64)
    return sy.GaussianMixture(means, 1.3, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("mixture", [sy.ring_mixture(4, 2, radius=1.5), _uneven_mixture()],
                         ids=["ring", "uneven"])
def test_eta_sums_to_one_and_is_bayes_rule(mixture):
    x, _ = mixture.sample(500, seed=1)
    eta = mixture.bayes_probs(x)
    assert eta.shape == (500, mixture.classes)
    # float64 rounding of a softmax of K terms: a few eps per entry
    assert torch.allclose(eta.sum(1), torch.ones(500, dtype=torch.float64), atol=10 * mixture.classes * EPS)
    # two float64 routes through exp/log of O(10) numbers: agree to ~1e-13
    assert torch.allclose(eta, _bayes_rule(mixture, x), atol=1e-12, rtol=0)


def test_labels_follow_eta():
    """Among points drawn from the mixture, class k's frequency is the mean of eta_k."""
    mixture = _uneven_mixture()
    x, y = mixture.sample(40_000, seed=2)
    frequency = torch.bincount(y, minlength=3).double() / len(y)
    # both estimate the prior; 6 standard errors of a frequency (sd <= 1/2): failure < 1e-8
    assert torch.allclose(frequency, mixture.bayes_probs(x).mean(0), atol=6 * 0.5 / math.sqrt(len(y)))
    assert torch.allclose(frequency, mixture.priors, atol=6 * 0.5 / math.sqrt(len(y)))


def test_a_seed_gives_the_same_data():
    mixture = sy.ring_mixture()
    x1, y1 = mixture.sample(50, seed=7)
    x2, y2 = mixture.sample(50, seed=7)
    x3, _ = mixture.sample(50, seed=8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_tempered_teachers():
    eta = F.softmax(torch.randn(20, 5, dtype=torch.float64), dim=1)
    assert torch.allclose(sy.tempered(eta, 1.0), eta, atol=1e-15)
    sharp, flat = sy.tempered(eta, 0.5), sy.tempered(eta, 2.0)
    assert (sharp.max(1).values >= eta.max(1).values).all()
    assert (flat.max(1).values <= eta.max(1).values).all()
    assert torch.equal(sharp.argmax(1), eta.argmax(1))
    assert sy.expected_kl(eta, eta) == 0
    assert sy.expected_kl(eta, sharp) > 0 and sy.expected_kl(eta, flat) > 0
    with pytest.raises(ValueError, match="tau"):
        sy.tempered(eta, 0.0)


def test_soft_bayes_targets_give_back_the_bayes_weights():
    """The student is well specified: fitted to eta without a penalty it is eta's affine
    form (up to the shift that changes no prediction, which the fit sets to zero)."""
    mixture = sy.ring_mixture(4, 2, radius=1.5)
    x, _ = mixture.sample(100, seed=3)
    student = sy.fit_softmax_regression(x, mixture.bayes_probs(x), weight_decay=0.0)
    var = mixture.sigma**2
    weight = mixture.means / var
    bias = -(mixture.means**2).sum(1) / (2 * var) + mixture.priors.log()
    # Newton stops at a decrement of 1e-20, i.e. parameters within ~1e-10 of the optimum
    assert torch.allclose(student.weight, weight - weight.mean(0), atol=1e-8)
    assert torch.allclose(student.bias, bias - bias.mean(), atol=1e-8)


@pytest.mark.parametrize("one_hot", [True, False], ids=["labels", "soft"])
def test_the_fit_is_a_stationary_point_of_the_penalised_loss(one_hot):
    mixture = sy.ring_mixture(3, 3, radius=1.0)
    x, y = mixture.sample(30, seed=4)
    targets = y if one_hot else sy.tempered(mixture.bayes_probs(x), 2.0)
    decay = 1e-3
    student = sy.fit_softmax_regression(x, targets, weight_decay=decay)
    weight = student.weight.clone().requires_grad_(True)
    bias = student.bias.clone().requires_grad_(True)
    soft = F.one_hot(y, 3).double() if one_hot else targets
    loss = -(soft * F.log_softmax(x @ weight.T + bias, 1)).sum(1).mean() + decay / 2 * (weight**2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-9 and bias.grad.abs().max() < 1e-9
    assert torch.allclose(student.weight.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="sigma"):
        sy.GaussianMixture(torch.zeros(2, 2, dtype=torch.float64), 0.0, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="priors"):
        sy.GaussianMixture(torch.zeros(2, 2, dtype=torch.float64), 1.0, torch.tensor([0.7, 0.7]))
    with pytest.raises(ValueError, match="classes"):
        sy.ring_mixture(classes=1)
    with pytest.raises(ValueError, match="n must be"):
        sy.ring_mixture().sample(0, seed=0)
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="integer"):
        sy.fit_softmax_regression(x, torch.zeros(4))
    with pytest.raises(ValueError, match="rows"):
        sy.fit_softmax_regression(x, torch.zeros(3, dtype=torch.int64))


def test_t_interval():
    mean, half = sy.t_interval([1.0, 2.0, 3.0])
    # t quantile 0.975 with 2 degrees of freedom is 4.302652729749464; sd = 1
    assert mean == 2.0 and half == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        sy.t_interval([1.0])
