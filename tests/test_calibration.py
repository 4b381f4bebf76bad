"""kdbook.calibration: reliability bins, the expected calibration error (ECE) and
temperature scaling, on predictors whose calibration is known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbook import calibration as cal

DELTA = 1e-6  # allowed probability that a sampled test fails although the code is right


def _predictions(confidence: torch.Tensor, accuracy: torch.Tensor, classes: int, seed: int):
    """Predictions of class 0 with the given confidences (the rest shared equally by the
    other classes), right with probability ``accuracy``, else labelled with another class."""
    generator = torch.Generator().manual_seed(seed)
    N = len(confidence)
    probs = ((1 - confidence) / (classes - 1))[:, None].repeat(1, classes)
    probs[:, 0] = confidence
    right = torch.rand(N, generator=generator, dtype=torch.float64) < accuracy
    wrong_label = 1 + torch.randint(0, classes - 1, (N,), generator=generator)
    return probs, torch.where(right, torch.zeros_like(wrong_label), wrong_label)


def _hoeffding_binned(N: int, n_bins: int, delta: float) -> float:
    """With probability >= 1 - delta, sum_b (n_b/N) |mean of n_b independent centred
    variables in [-1, 1] ... [0, 1]| <= this: Hoeffding in each bin with the union bound
    over bins (t_b = sqrt(log(2 B / delta) / (2 n_b))), then sum_b sqrt(n_b) <= sqrt(B N)."""
    return math.sqrt(n_bins * math.log(2 * n_bins / delta) / (2 * N))


def test_a_calibrated_predictor_has_ece_near_zero():
    N, classes = 100_000, 5
    generator = torch.Generator().manual_seed(0)
    confidence = 1 / classes + (1 - 1 / classes) * torch.rand(N, generator=generator, dtype=torch.float64)
    probs, labels = _predictions(confidence, confidence, classes, seed=1)
    ece = cal.expected_calibration_error(probs, labels)
    # given the confidences, each bin's accuracy minus its mean confidence is a mean of
    # independent centred Bernoulli deviations: the bound applies to the whole ECE
    assert ece < _hoeffding_binned(N, cal.N_BINS, DELTA)
    assert ece > 0  # sampling noise: a finite sample is never exactly calibrated


def test_exact_ece_of_two_groups():
    """Confidence 0.9 with 70% right and 0.6 with 60% right, equally many: ECE = 0.5 * 0.2."""
    confidence = torch.tensor([0.9] * 10 + [0.6] * 10, dtype=torch.float64)
    right = [True] * 7 + [False] * 3 + [True] * 6 + [False] * 4
    probs = torch.stack([confidence, 1 - confidence], dim=1)
    labels = torch.tensor([0 if r else 1 for r in right])
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.1, abs=1e-15)
    bins = cal.reliability_bins(probs, labels)
    assert bins.counts.sum() == 20 and int((bins.counts > 0).sum()) == 2
    assert torch.isnan(bins.accuracy[bins.counts == 0]).all()


def test_ece_of_an_overconfident_predictor_matches_its_analytic_value():
    """Confidence c ~ U(1/2, 1) on two classes, accuracy a(c) = 1/2 + (c - 1/2)/2 < c: the
    gap c - a(c) = (c - 1/2)/2 has one sign, so the population ECE is E[(c - 1/2)/2] = 1/8
    whatever the bins."""
    N = 100_000
    generator = torch.Generator().manual_seed(2)
    confidence = 0.5 + 0.5 * torch.rand(N, generator=generator, dtype=torch.float64)
    accuracy = 0.5 + (confidence - 0.5) / 2
    probs, labels = _predictions(confidence, accuracy, 2, seed=3)
    ece = cal.expected_calibration_error(probs, labels)
    # binned Bernoulli noise (as above) plus the sample mean of (c - 1/2)/2, a variable of
    # range 1/4, off its mean 1/8 by at most (1/4) sqrt(log(2/delta) / (2N)) (Hoeffding)
    tolerance = _hoeffding_binned(N, cal.N_BINS, DELTA / 2) + 0.25 * math.sqrt(math.log(4 / DELTA) / (2 * N))
    assert abs(ece - 1 / 8) < tolerance
    assert tolerance < 1 / 8 / 2  # the check could fail for a wrong ECE


def test_right_closed_bins_and_confidence_one():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    bins = cal.reliability_bins(probs, labels, n_bins=4)
    assert bins.counts.tolist() == [0, 1, 1, 1]  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75], 1 in the last


def test_bad_inputs_are_refused():
    probs = torch.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="n_bins"):
        cal.expected_calibration_error(probs, torch.tensor([0, 1, 0]), n_bins=0)
    with pytest.raises(TypeError, match="labels"):
        cal.expected_calibration_error(probs, torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(TypeError, match="probs"):
        cal.expected_calibration_error(torch.tensor([0.5, 0.5]), torch.tensor([0]))


def _tempered_sample(T0: float, N: int, classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(N, classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial(F.softmax(logits / T0, dim=1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_temperature_scaling_recovers_a_known_temperature():
    T0, N = 2.5, 20_000
    logits, labels = _tempered_sample(T0, N, 10, seed=4)
    T = cal.fit_temperature(logits, labels)
    # beta = 1/T indexes an exponential family p(y) ~ exp(beta z_y), so the MLE of beta has
    # asymptotic standard error 1 / sqrt(N E Var_p(z_y)); 6 of them: failure ~ 2e-9
    p = F.softmax(logits / T0, dim=1)
    fisher = ((p * logits**2).sum(1) - (p * logits).sum(1) ** 2).mean()
    se_beta = 1 / math.sqrt(N * float(fisher))
    assert abs(1 / T - 1 / T0) < 6 * se_beta
    assert 6 * se_beta < 0.1 / T0  # so that a wrong temperature would be caught


def test_fitted_temperature_is_the_nll_minimum_and_scales_with_the_logits():
    logits, labels = _tempered_sample(0.7, 2_000, 4, seed=5)
    T = cal.fit_temperature(logits, labels)
    assert cal.nll(logits, labels, T) < min(cal.nll(logits, labels, T * 1.01), cal.nll(logits, labels, T / 1.01))
    # the stationarity condition: mean_i (E_{softmax(z_i / T)} z - z_{i, y_i}) = 0
    p = F.softmax(logits / T, dim=1)
    slope = ((p * logits).sum(1) - logits.gather(1, labels[:, None]).squeeze(1)).mean()
    assert abs(float(slope)) < 1e-10  # bisection stops when beta's halves meet in float64
    assert cal.fit_temperature(3 * logits, labels) == pytest.approx(3 * T, rel=1e-10)
    # temperature scaling changes no prediction
    assert torch.equal((logits / T).argmax(1), logits.argmax(1))


def test_fit_temperature_refuses_logits_without_a_finite_optimum():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="separate the labels perfectly"):
        cal.fit_temperature(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no signal"):
        cal.fit_temperature(logits, torch.tensor([1, 0]))
