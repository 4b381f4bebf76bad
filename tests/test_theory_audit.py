"""The helpers of the claim audit (book/claim_audit.ipynb) in kdbook.theory: the soft term
at low temperature and with two temperatures, the bound on the scaled gradient at every
temperature, and the information identities for predictions and drawn labels. Each
statement is also checked against a wrong variant that must fail.

Float64 tolerances are derived from rounding: ``EPS`` is the unit roundoff, and each
comment says how many roundings a quantity goes through."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

import kdbook
from kdbook import theory as th

DTYPE = torch.float64
EPS = torch.finfo(DTYPE).eps
R = sp.Rational
T = sp.Symbol("T", positive=True)


def random_logits(seed: int, batch: int = 64, classes: int = 7, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, classes, generator=generator, dtype=DTYPE)


def top_gap(logits):
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


# -----------------------------------------------------------------------------
# soft_loss_two_temperatures


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_two_temperatures_with_equal_temperatures_is_the_soft_term(temperature):
    zs, zt = random_logits(0), random_logits(1)
    ours = th.soft_loss_two_temperatures(zs, zt, temperature, temperature)
    library = kdbook.soft_distillation_loss(zs, zt, temperature, scale_by_t2=False)
    # both are sums of n log-softmax differences; a few n EPS times their size
    assert abs(ours - library) <= 16 * zs.shape[1] * EPS * (1 + zs.abs().max() / temperature)


def test_two_temperatures_differ_from_one_shared_temperature():
    zs, zt = random_logits(0), random_logits(1)
    assert abs(th.soft_loss_two_temperatures(zs, zt, 0.5, 1.0)
               - th.soft_loss_two_temperatures(zs, zt, 1.0, 1.0)) > 0.1


@pytest.mark.parametrize("teacher_temperature", [1e-1, 1e-2, 1e-3])
def test_self_training_is_the_limit_of_the_teacher_temperature(teacher_temperature):
    zs, zt = random_logits(2), random_logits(3)
    n = zs.shape[1]
    top = zt.argmax(1)
    zg = zs.clone().requires_grad_(True)
    loss = th.soft_loss_two_temperatures(zg, zt, teacher_temperature, 1.0)
    loss.backward()
    # KL - CE(k*) = -H(p_t) + sum_i (e_k* - p_t)_i log q_i, and 1 - p_t,k* <= (n-1) e^(-gap/T)
    tail = (n - 1) * torch.exp(-top_gap(zt) / teacher_temperature)
    log_q = F.log_softmax(zs, dim=1)
    bound = (th.softmax_entropy(zt, teacher_temperature)
             + 2 * tail * log_q.abs().max(dim=1).values).mean()
    rounding = 4 * n * EPS * (2 * zs.abs().max() + math.log(n))
    assert abs(loss - F.cross_entropy(zs, top)) <= bound + rounding
    # gradient rows differ by (e_k* - p_t) / B, whose L1 norm is 2 (1 - p_t,k*) / B
    hard_grad = (F.softmax(zs, 1) - F.one_hot(top, n)) / len(zs)
    assert ((zg.grad - hard_grad).abs().sum(1) * len(zs) <= 2 * tail + 8 * n * EPS).all()


def test_self_training_limit_is_exact_in_sympy():
    T_t = sp.Symbol("T_t", positive=True)
    s = th.logit_symbols("s", 3)
    q = th.softmax(s)
    kl = th.kl_divergence(th.softmax([sp.Integer(0), sp.Integer(3), sp.Integer(1)], T_t), q)
    limit = sp.limit(kl, T_t, 0, "+")
    assert th.is_zero(limit + sp.log(q[1]))  # cross-entropy on the top class, 1
    assert not th.is_zero(limit + sp.log(q[0]))  # not on another class


def test_two_temperatures_rejects_bad_input():
    zs, zt = random_logits(0), random_logits(1)
    with pytest.raises(ValueError, match="temperature"):
        th.soft_loss_two_temperatures(zs, zt, 0.0, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        th.soft_loss_two_temperatures(zs, zt, 1.0, -2.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        th.soft_loss_two_temperatures(zs, zt[:, :3], 1.0, 1.0)
    with pytest.raises(TypeError, match="student_logits"):
        th.soft_loss_two_temperatures(zs.tolist(), zt, 1.0, 1.0)


# -----------------------------------------------------------------------------
# low_temperature_soft_limit


def test_low_temperature_limit_by_hand():
    student = torch.tensor([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [0.0, 2.0, 1.0]], dtype=DTYPE)
    teacher = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=DTYPE)
    per_row = [th.low_temperature_soft_limit(student[i:i + 1], teacher[i:i + 1]).item()
               for i in range(3)]
    # agrees: 0; disagrees: max s - s_k* = 3 - 0; tie on {0, 1}: 2 - (0 + 2)/2
    assert per_row == [0.0, 3.0, 1.0]
    assert th.low_temperature_soft_limit(student, teacher).item() == pytest.approx(4 / 3, rel=4 * EPS)


@pytest.mark.parametrize("teacher,student", [([2, 1, 0], [0, 3, 1]), ([1, 1, 0], [0, 2, 1])])
def test_low_temperature_limit_agrees_with_sympy(teacher, student):
    p_t = th.softmax([sp.Integer(v) for v in teacher], T)
    p_s = th.softmax([sp.Integer(v) for v in student], T)
    limit = sp.limit(T * th.kl_divergence(p_t, p_s), T, 0, "+")
    library = th.low_temperature_soft_limit(torch.tensor([student], dtype=DTYPE),
                                            torch.tensor([teacher], dtype=DTYPE))
    assert library.item() == float(limit)
    assert limit != 0  # the soft term does not vanish without the second factor T


@pytest.mark.parametrize("temperature", [1e-1, 1e-2, 1e-3])
def test_scaled_soft_term_is_within_the_proven_bound_of_its_limit(temperature):
    zs, zt = random_logits(4), random_logits(5)
    n = zs.shape[1]
    scaled = temperature * th.soft_loss_two_temperatures(zs, zt, temperature, temperature)
    margin = th.low_temperature_soft_limit(zs, zt)
    spread = zs.max(1).values - zs.min(1).values
    bound = (temperature * math.log(n)
             + (n - 1) * spread * torch.exp(-top_gap(zt) / temperature)).mean()
    rounding = 4 * n * EPS * (max(zs.abs().max(), zt.abs().max()) + temperature * math.log(n))
    assert abs(scaled - margin) <= bound + rounding
    # and T^2 KL = T (T KL) -> 0, with its gradient T (p_s - p_t) of norm <= sqrt(2) T
    zg = zs.clone().requires_grad_(True)
    kdbook.soft_distillation_loss(zg, zt, temperature).backward()
    rows = zg.grad * len(zs)
    assert (rows.norm(dim=1) <= math.sqrt(2) * temperature * (1 + 4 * n * EPS)).all()


def test_a_wrong_low_temperature_limit_is_rejected():
    """The limit is the margin at the teacher's top class, not the student's own:
    max_j s_j - s_(argmax s) is 0 for every student, and T KL does not tend to 0."""
    zs, zt = random_logits(6), random_logits(7)
    n, temperature = zs.shape[1], 1e-3
    scaled = temperature * th.soft_loss_two_temperatures(zs, zt, temperature, temperature)
    spread = zs.max(1).values - zs.min(1).values
    bound = (temperature * math.log(n)
             + (n - 1) * spread * torch.exp(-top_gap(zt) / temperature)).mean()
    own_margin = zs.max(1).values - zs.gather(1, zs.argmax(1, keepdim=True))[:, 0]
    assert (own_margin == 0).all()
    # the proven bound is tight enough to tell the two candidate limits apart
    assert abs(scaled - own_margin.mean()) > bound + 4 * n * EPS * zs.abs().max()


def test_low_temperature_limit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="classes"):
        th.low_temperature_soft_limit(random_logits(0), random_logits(1, classes=5))


# -----------------------------------------------------------------------------
# softmax_covariance and scaled_gradient_bound


def test_softmax_covariance_is_t_times_the_softmax_jacobian():
    z = random_logits(8, batch=3, classes=5)
    temperature = 2.5
    p = F.softmax(z / temperature, dim=1)
    for b in range(3):
        jacobian = torch.autograd.functional.jacobian(
            lambda v: F.softmax(v / temperature, dim=0), z[b])
        # both are products of entries of p (<= 1): a few EPS each
        assert torch.allclose(temperature * jacobian, th.softmax_covariance(p)[b],
                              rtol=0, atol=16 * EPS)


def test_softmax_covariance_eigenvalues_lie_in_zero_to_half():
    generator = torch.Generator().manual_seed(9)
    n = 8
    p = torch.cat([F.softmax(scale * torch.randn(200, n, generator=generator, dtype=DTYPE), 1)
                   for scale in (0.1, 1.0, 10.0, 100.0)])
    eigenvalues = torch.linalg.eigvalsh(th.softmax_covariance(p))
    # eigvalsh is backward stable: off by a small multiple of n EPS |C|, and |C| <= 1
    assert (eigenvalues >= -4 * n * EPS).all() and (eigenvalues <= 0.5 + 4 * n * EPS).all()
    half = torch.tensor([[0.5, 0.5] + [0.0] * (n - 2)], dtype=DTYPE)
    assert torch.linalg.eigvalsh(th.softmax_covariance(half)).max().item() == pytest.approx(
        0.5, abs=4 * n * EPS)


def test_softmax_covariance_rejects_non_probabilities():
    with pytest.raises(ValueError, match="p rows must sum to 1"):
        th.softmax_covariance(torch.tensor([[0.5, 0.6]], dtype=DTYPE))
    with pytest.raises(ValueError, match="non-negative"):
        th.softmax_covariance(torch.tensor([[1.5, -0.5]], dtype=DTYPE))


def test_scaled_gradient_holds_the_bound_at_every_temperature():
    zs, zt = random_logits(10, batch=100, classes=10), random_logits(11, batch=100, classes=10)
    n = zs.shape[1]
    bound = th.scaled_gradient_bound(zs, zt)
    z_max = max(zs.abs().max().item(), zt.abs().max().item())
    for temperature in torch.logspace(-3, 3, 13, dtype=DTYPE).tolist():
        zg = zs.clone().requires_grad_(True)
        kdbook.soft_distillation_loss(zg, zt, temperature).backward()
        rows = zg.grad * len(zs)  # T (p_s - p_t)
        slack = 4 * n * EPS * (math.sqrt(n) * temperature + z_max)
        assert (rows.norm(dim=1) <= bound + slack).all()


def test_scaled_gradient_bound_is_tight_and_a_smaller_constant_fails():
    delta = 1e-3
    zt = torch.tensor([[delta, -delta]], dtype=DTYPE)
    zg = (-zt).clone().requires_grad_(True)
    kdbook.soft_distillation_loss(zg, zt, 1.0).backward()
    ratio = (zg.grad.norm() / th.scaled_gradient_bound(-zt, zt)).item()
    assert abs(ratio - math.tanh(delta) / delta) <= 8 * EPS / delta
    assert ratio > 0.99  # a bound of 0.49 |c_s - c_t| would be violated here


def test_scaled_gradient_bound_ignores_constant_shifts():
    zs, zt = random_logits(12), random_logits(13)
    shifted = th.scaled_gradient_bound(zs + 5.0, zt - 2.0)
    assert torch.allclose(shifted, th.scaled_gradient_bound(zs, zt),
                          rtol=0, atol=16 * zs.shape[1] * EPS * (zs.abs().max() + 5))


# -----------------------------------------------------------------------------
# prediction_informations, expand_log_primes


def random_rational_table(seed: int, shape=(3, 3, 2)):
    weights = torch.randint(0, 5, shape, generator=torch.Generator().manual_seed(seed))
    total = int(weights.sum())
    return [[[R(int(v), total) for v in row] for row in block] for block in weights.tolist()]


def test_expand_log_primes():
    assert th.expand_log_primes(sp.log(R(12, 5))) == 2 * sp.log(2) + sp.log(3) - sp.log(5)
    assert th.expand_log_primes(3 * sp.log(2) - sp.log(8)) == 0
    assert th.expand_log_primes(sp.log(6) - sp.log(2) - sp.log(4)) != 0
    x = sp.Symbol("x", positive=True)
    assert th.expand_log_primes(sp.log(x) + sp.log(R(1, 2))) == sp.log(x) - sp.log(2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_information_difference_identity(seed):
    info = th.prediction_informations(random_rational_table(seed))
    difference = info["I(X;Y_s)"] - info["I(X;Y_t)"]
    assert th.expand_log_primes(difference - info["I(X;Y_s|Y_t)"] + info["I(X;Y_t|Y_s)"]) == 0
    # without the Markov chain the DPI's equality condition is not enough
    assert info["I(X;Y_t|Y_s)"] > 0
    assert th.expand_log_primes(difference - info["I(X;Y_s|Y_t)"]) != 0


def test_student_that_sees_x_breaks_the_equality_condition():
    p_x = [R(1, 4)] * 4
    unsure = [[R(3, 4), R(1, 4)]] * 2 + [[R(1, 4), R(3, 4)]] * 2
    sure = [[1, 0]] * 2 + [[0, 1]] * 2
    info = th.prediction_informations(th.prediction_joint(p_x, unsure, sure, "x"))
    assert info["I(X;Y_t|Y_s)"] == 0  # the claimed equality condition holds ...
    assert info["I(X;Y_s)"] > info["I(X;Y_t)"]  # ... and there is no equality


def test_markov_chain_gives_the_dpi_and_its_equality_condition():
    p_x = [R(1, 4)] * 4
    unsure = [[R(3, 4), R(1, 4)]] * 2 + [[R(1, 4), R(3, 4)]] * 2
    for flip in (0, R(1, 5)):
        channel = [[1 - flip, flip], [flip, 1 - flip]]
        info = th.prediction_informations(th.prediction_joint(p_x, unsure, channel, "teacher"))
        assert info["I(X;Y_s|Y_t)"] == 0
        equal = th.expand_log_primes(info["I(X;Y_s)"] - info["I(X;Y_t)"]) == 0
        assert equal == (info["I(X;Y_t|Y_s)"] == 0) == (flip == 0)


def test_prediction_informations_rejects_a_two_dimensional_table():
    with pytest.raises(ValueError, match="3-dimensional"):
        th.prediction_informations([[R(1, 2), R(1, 2)]])


# -----------------------------------------------------------------------------
# drawn_label_budget, information_of_function


def budget_at(temperature):
    rows = [[sp.Integer(1), sp.Integer(0), sp.Integer(0)], [sp.Integer(1), R(1, 2), -R(1, 2)]]
    targets = [th.softmax(row, temperature) for row in rows]
    terms = th.drawn_label_budget([R(1, 2)] * 2, targets)
    return {name: sp.N(value, 30) for name, value in terms.items()}


def test_the_fixed_budget_statement_is_false():
    """'Entropy and information share a fixed budget' (so more of one is less of the
    other): from T = 0.1 to 0.5 both rise, because the budget H(mean target) moves."""
    low, high = budget_at(R(1, 10)), budget_at(R(1, 2))
    assert high["mean entropy"] > low["mean entropy"]
    assert high["I(X;Y)"] > low["I(X;Y)"]
    assert high["H(mean target)"] > low["H(mean target)"]


@pytest.mark.parametrize("temperature", [R(1, 10), R(1, 2), R(4)])
def test_budget_identity_and_the_bound_that_holds(temperature):
    terms = budget_at(temperature)
    # 30 significant digits, values below 2: a true identity leaves ~1e-29
    assert abs(terms["mean entropy"] + terms["I(X;Y)"] - terms["H(mean target)"]) < 1e-25
    assert terms["I(X;Y)"] <= sp.log(3) - terms["mean entropy"]


def test_budget_of_uniform_targets_has_no_information():
    terms = th.drawn_label_budget([R(1, 3)] * 3, [[R(1, 2), R(1, 2)]] * 3)
    assert terms["I(X;Y)"] == 0 and sp.simplify(terms["mean entropy"] - sp.log(2)) == 0


def test_budget_and_information_of_function_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="targets needs one row"):
        th.drawn_label_budget([R(1, 2)] * 2, [[1, 0]])
    with pytest.raises(ValueError, match="values needs one entry"):
        th.information_of_function([R(1, 2)] * 2, [0])
    with pytest.raises(ValueError, match="sum to 1"):
        th.information_of_function([R(1, 2)] * 3, [0, 1, 2])


def test_dark_knowledge_can_be_negative_and_grows_without_bound():
    p_x = [R(1, 4)] * 4
    labels = [0, 0, 1, 1]
    constant = [(R(1, 2), R(1, 2))] * 4
    assert th.information_of_function(p_x, labels) == sp.log(2)
    assert th.information_of_function(p_x, constant) == 0  # dark knowledge -log 2 < 0
    for N in (8, 256):
        values = [(R(k, N), -R(k, N)) for k in range(N)]  # an injective teacher
        info = th.information_of_function([R(1, N)] * N, values)
        assert th.expand_log_primes(info - sp.log(N)) == 0
