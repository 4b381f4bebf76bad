"""kdbook.train: checkpoint-resume equivalence, teacher isolation, cached teachers,
learning on real data, configuration checks, schedules and evaluation helpers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from kdbook import settings
from kdbook.data import Batch, TensorLoader, stratified_subset
from kdbook.models import StudentCNN, TeacherNet
from kdbook.train import (
    CachedTeacher,
    OnlineTeacher,
    TrainConfig,
    as_teacher,
    evaluate,
    fit,
    lr_factor,
    make_optimizer,
    make_scheduler,
    predict_logits,
    seed_everything,
    train_epoch,
)


def make_student(seed: int = 0, width: int = 4) -> StudentCNN:
    seed_everything(seed)
    return StudentCNN(width=width, depth=1)


def make_teacher(seed: int = 1) -> TeacherNet:
    seed_everything(seed)
    return TeacherNet(widths=(8, 16, 16), stem=8)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def without_seconds(history) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history.epochs]


# -----------------------------------------------------------------------------
# Checkpoints.


# Every real run uses mixed precision and channels_last: resuming must be exact with them too.
# Mixed precision is forced to bfloat16 autocast, which a CPU without native bfloat16 would
# otherwise replace by float32 (settings.autocast_dtype).
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bfloat16-nhwc"])
@pytest.mark.parametrize("method", ["ce", "kd"])
def test_resumed_run_equals_unbroken_run(method, amp, loader_factory, tmp_path, monkeypatch):
    if amp:
        monkeypatch.setattr(settings, "autocast_dtype", lambda device: torch.bfloat16)
    config = TrainConfig(method=method, epochs=2, lr=0.05, seed=0, amp=amp, channels_last=amp)

    def teacher():
        return OnlineTeacher(make_teacher()) if method == "kd" else None

    # One unbroken session.
    loaders = loader_factory()
    unbroken = make_student(seed=0)
    full = fit(unbroken, loaders.train, config, eval_loader=loaders.test, teacher=teacher(), progress=False)
    assert len(full.epochs) == 2

    # Session 1 stops after one epoch; session 2 starts with fresh objects from the checkpoint.
    ckpt = tmp_path / "run.pt"
    loaders = loader_factory()
    first = make_student(seed=0)
    part = fit(first, loaders.train, config, eval_loader=loaders.test, teacher=teacher(),
               checkpoint=ckpt, stop_after=1, progress=False)
    assert len(part.epochs) == 1 and ckpt.exists()
    assert without_seconds(part) == without_seconds(full)[:1]

    loaders = loader_factory()
    resumed = make_student(seed=99)  # different initialisation: the weights must come from the checkpoint
    assert not torch.equal(resumed.head.weight, first.head.weight)
    rest = fit(resumed, loaders.train, config, eval_loader=loaders.test, teacher=teacher(),
               checkpoint=ckpt, progress=False)

    assert_same_state(resumed, unbroken)
    assert without_seconds(rest) == without_seconds(full)
    assert [e["epoch"] for e in rest.epochs] == [1, 2]

    # A finished run found again trains no further.
    again = make_student(seed=5)
    done = fit(again, loaders.train, config, teacher=teacher(), checkpoint=ckpt, progress=False)
    assert without_seconds(done) == without_seconds(full)
    assert_same_state(again, unbroken)


def test_checkpoint_of_another_configuration_is_refused(loader_factory, tmp_path):
    ckpt = tmp_path / "run.pt"
    loaders = loader_factory()
    fit(make_student(), loaders.train, TrainConfig(epochs=2, lr=0.05), checkpoint=ckpt, stop_after=1, progress=False)
    with pytest.raises(ValueError, match=r"different configuration.*'lr'") as info:
        fit(make_student(), loaders.train, TrainConfig(epochs=2, lr=0.1), checkpoint=ckpt, progress=False)
    assert str(ckpt) in str(info.value)


# -----------------------------------------------------------------------------
# The teacher is never changed by distillation.


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_unchanged(module: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    for key, value in snapshot.items():
        assert torch.equal(state[key], value), f"teacher {key} changed"
    assert all(p.grad is None for p in module.parameters())


def test_sanity_teacher_in_train_mode_would_move_bn_buffers(tiny_loaders):
    """The checks below can fail: a forward pass in train mode moves BatchNorm buffers."""
    teacher = make_teacher().train()
    snapshot = _snapshot(teacher)
    with torch.no_grad():
        teacher(next(iter(tiny_loaders.train)).images)
    with pytest.raises(AssertionError):
        _assert_unchanged(teacher, snapshot)


def test_fit_leaves_the_teacher_unchanged(tiny_loaders):
    teacher = make_teacher().train()  # deliberately left in training mode
    snapshot = _snapshot(teacher)
    student = make_student()
    student_before = _snapshot(student)
    fit(student, tiny_loaders.train, TrainConfig(method="kd", epochs=1), teacher=teacher, progress=False)
    assert not teacher.training
    _assert_unchanged(teacher, snapshot)
    assert any(not torch.equal(student.state_dict()[k], v) for k, v in student_before.items())


def test_online_teacher_re_evaluates_after_train_call(tiny_loaders):
    teacher = make_teacher()
    online = OnlineTeacher(teacher)
    snapshot = _snapshot(teacher)
    teacher.train()  # someone flips it back between epochs
    student = make_student()
    config = TrainConfig(method="kd", epochs=1)
    optimizer = make_optimizer(student, config)
    train_epoch(student, tiny_loaders.train, optimizer, None, config, online, progress=False)
    assert not teacher.training
    _assert_unchanged(teacher, snapshot)


# -----------------------------------------------------------------------------
# Cached teachers.


def _kd_run(loaders, teacher, epochs=2):
    student = make_student(seed=0)
    history = fit(student, loaders.train, TrainConfig(method="kd", epochs=epochs, lr=0.05), teacher=teacher,
                  progress=False)
    return student, history


def _assert_close_runs(a, b):
    (sa, ha), (sb, hb) = a, b
    for key, value in sa.state_dict().items():
        torch.testing.assert_close(value, sb.state_dict()[key], rtol=1e-4, atol=1e-5, msg=key)
    for ea, eb in zip(ha.epochs, hb.epochs):
        assert ea["loss"] == pytest.approx(eb["loss"], rel=1e-5)


def test_cached_teacher_equals_online_teacher_without_augmentation(cifar):
    """Logits stored once by predict_logits (for a loader whose positions are 0..N-1)
    train the student as running the teacher on every batch does."""
    idx = stratified_subset(cifar.train_labels, per_class=10, seed=0)
    images, labels = cifar.train_images[idx], cifar.train_labels[idx]
    train = TensorLoader(images, labels, 32, shuffle=True, augment=False, seed=0)
    plain = TensorLoader(images, labels, 32)
    teacher = make_teacher()
    cached = CachedTeacher(predict_logits(teacher, plain))
    assert cached.logits.shape == (len(idx), 10)

    online_run = _kd_run(_Loaders(train), OnlineTeacher(teacher))
    cached_run = _kd_run(_Loaders(train), cached)
    _assert_close_runs(online_run, cached_run)


def test_an_online_teacher_computes_as_the_cache_does_whatever_the_runs_autocast(cifar):
    """The fixed and the consistent teacher differ only in the view: an online teacher gives,
    under a run's bfloat16 autocast, the float32 logits the cached table holds for the image."""
    from kdbook.soft_labels import compute_teacher_logits

    images = cifar.train_images[:16]
    batch = next(iter(TensorLoader(images, cifar.train_labels[:16], 16)))  # in order, not augmented
    teacher = make_teacher().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        online = OnlineTeacher(teacher)(batch)
    table = compute_teacher_logits(teacher, images, device="cpu")  # the same batch, layout and precision
    assert online.dtype == torch.float32
    assert torch.equal(online, table[:, 0])  # same arithmetic, same machine: the same bits


def test_cached_teacher_indexed_by_full_positions_for_a_subset_loader(cifar):
    """With ``indices=``, batch.indices are positions in the full array, so the cached
    table is indexed by those: scatter predict_logits' rows (in loader order) into it."""
    idx = stratified_subset(cifar.train_labels, per_class=10, seed=0)
    train = TensorLoader(cifar.train_images, cifar.train_labels, 32, indices=idx, shuffle=True, seed=0)
    plain = TensorLoader(cifar.train_images, cifar.train_labels, 32, indices=idx)
    teacher = make_teacher()
    table = torch.full((len(cifar.train_labels), 10), math.nan)
    table[plain.indices] = predict_logits(teacher, plain)
    online_run = _kd_run(_Loaders(train), OnlineTeacher(teacher), epochs=1)
    cached_run = _kd_run(_Loaders(train), CachedTeacher(table), epochs=1)
    _assert_close_runs(online_run, cached_run)


def test_fit_refuses_a_cached_teacher_indexed_by_subset_positions(cifar):
    """The trap: logits in loader order (one row per subset sample) cannot be looked up
    by full-array positions; fit says so before training instead of failing mid-epoch."""
    idx = stratified_subset(cifar.train_labels, per_class=10, seed=0)
    train = TensorLoader(cifar.train_images, cifar.train_labels, 32, indices=idx, shuffle=True, seed=0)
    plain = TensorLoader(cifar.train_images, cifar.train_labels, 32, indices=idx)
    cached = CachedTeacher(predict_logits(make_teacher(), plain))
    student = StudentCNN(width=4, depth=1)
    with pytest.raises(ValueError, match="cached teacher has 100 rows"):
        fit(student, train, TrainConfig(method="kd", epochs=1), teacher=cached, progress=False)


class _Loaders:
    def __init__(self, train):
        self.train = train


def test_cached_teacher_with_two_views_picks_the_flipped_row(few_loader):
    n = len(few_loader.labels)
    table = torch.stack([torch.arange(n * 10.0).view(n, 10), -torch.arange(n * 10.0).view(n, 10) - 1], dim=1)
    assert table.shape == (n, 2, 10)
    teacher = CachedTeacher(table)
    flips = []
    for batch in few_loader:
        out = teacher(batch)
        assert out.shape == (len(batch.labels), 10)
        for j, (i, f) in enumerate(zip(batch.indices.tolist(), batch.flipped.tolist())):
            assert torch.equal(out[j], table[i, 1] if f else table[i, 0])
            flips.append(f)
    assert any(flips) and not all(flips)


def test_cached_teacher_batch_lookup():
    table = torch.randn(6, 2, 3)
    batch = Batch(torch.zeros(3, 3, 32, 32), torch.zeros(3, dtype=torch.int64), torch.tensor([4, 0, 4]),
                  torch.tensor([True, False, False]))
    out = CachedTeacher(table)(batch)
    assert torch.equal(out, torch.stack([table[4, 1], table[0, 0], table[4, 0]]))
    single = CachedTeacher(table[:, 0].double())
    assert single.logits.dtype == torch.float32
    assert torch.equal(single(batch), table[[4, 0, 4], 0])


@pytest.mark.parametrize("shape", [(5,), (5, 3, 10), (5, 2, 3, 10)])
def test_cached_teacher_bad_shapes(shape):
    with pytest.raises(ValueError, match="logits"):
        CachedTeacher(torch.zeros(shape))


def test_as_teacher():
    model = make_teacher()
    assert isinstance(as_teacher(model), OnlineTeacher)
    cached = CachedTeacher(torch.zeros(4, 10))
    assert as_teacher(cached) is cached and as_teacher(None) is None
    with pytest.raises(TypeError, match="teacher"):
        as_teacher(torch.zeros(4, 10))


@pytest.fixture
def few_loader(cifar):
    """40 images as a standalone array: batch.indices are positions 0..39 in it."""
    idx = stratified_subset(cifar.train_labels, per_class=4, seed=0)
    return TensorLoader(cifar.train_images[idx], cifar.train_labels[idx], 16, shuffle=True, augment=True, seed=3)


# -----------------------------------------------------------------------------
# Learning on real data.


def test_a_few_epochs_learn_something(loader_factory):
    loaders = loader_factory(per_class=30, augment=False)
    student = make_student(width=8)
    history = fit(student, loaders.train, TrainConfig(epochs=3, optimizer="adam", lr=0.01),
                  eval_loader=loaders.test, progress=False)
    losses = history.column("loss")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert history.column("train_acc")[-1] > 0.15  # chance is 0.10
    assert all(0.0 <= a <= 1.0 for a in history.column("test_acc"))
    assert history.column("epoch") == [1, 2, 3]


def test_kd_history_records_both_terms(tiny_loaders):
    history = fit(make_student(), tiny_loaders.train, TrainConfig(method="kd", epochs=1, alpha=0.3),
                  teacher=make_teacher(), progress=False)
    (record,) = history.epochs
    assert {"loss", "hard", "soft", "train_acc", "lr", "seconds", "epoch"} <= set(record)
    # Sample-weighted means of alpha * hard + (1 - alpha) * soft are that combination of the means.
    assert record["loss"] == pytest.approx(0.3 * record["hard"] + 0.7 * record["soft"], rel=1e-5)


def test_non_finite_loss_stops_training(tiny_loaders):
    student = make_student()
    with torch.no_grad():
        student.head.weight.fill_(math.nan)
    with pytest.raises(FloatingPointError, match="loss"):
        fit(student, tiny_loaders.train, TrainConfig(epochs=1), progress=False)


# -----------------------------------------------------------------------------
# Configuration and schedules.


@pytest.mark.parametrize("kwargs, name", [
    ({"method": "mse"}, "method"),
    ({"method": "KD"}, "method"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "step"}, "schedule"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": -2}, "epochs"),
    ({"epochs": 1.5}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"lr": math.inf}, "lr"),
    ({"lr": math.nan}, "lr"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": -0.5}, "alpha"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
])
def test_train_config_validation(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": "0.05"}, "lr"),
    ({"lr": True}, "lr"),
    ({"temperature": "4"}, "temperature"),
    ({"alpha": None}, "alpha"),
    ({"label_smoothing": "0.1"}, "label_smoothing"),
])
def test_train_config_wrong_types_name_the_field(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        TrainConfig(**kwargs)


def test_train_config_describe():
    assert TrainConfig(method="kd", temperature=2, alpha=0.25).describe().startswith("KD (T=2, alpha=0.25)")
    assert "label smoothing 0.1" in TrainConfig(label_smoothing=0.1).describe()


def test_fit_checks_teacher_against_method(tiny_loaders):
    with pytest.raises(ValueError, match="teacher"):
        fit(make_student(), tiny_loaders.train, TrainConfig(method="kd", epochs=1), progress=False)
    with pytest.raises(ValueError, match="teacher"):
        fit(make_student(), tiny_loaders.train, TrainConfig(method="ce", epochs=1), teacher=make_teacher(),
            progress=False)


def test_onecycle_schedule():
    config = TrainConfig(schedule="onecycle", warmup_fraction=0.2)
    total = 100
    f = [lr_factor(s, total, config) for s in range(total + 1)]
    assert f[0] == 0.0 and f[20] == pytest.approx(1.0) and f[total] == pytest.approx(0.0, abs=1e-12)
    assert max(f) == pytest.approx(1.0) and all(0.0 <= x <= 1.0 + 1e-12 for x in f)
    assert all(a < b for a, b in itertools.pairwise(f[:21]))  # rising during warm-up
    assert all(a > b for a, b in itertools.pairwise(f[20:]))  # falling after it
    no_warmup = TrainConfig(schedule="onecycle", warmup_fraction=0.0)
    assert lr_factor(0, total, no_warmup) == 1.0 and lr_factor(total, total, no_warmup) == 0.0


def test_cosine_and_constant_schedules():
    total = 50
    cosine = [lr_factor(s, total, TrainConfig(schedule="cosine")) for s in range(total + 1)]
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert cosine[total // 2] == pytest.approx(0.5)
    assert all(a > b for a, b in itertools.pairwise(cosine))
    constant = TrainConfig(schedule="constant")
    assert all(lr_factor(s, total, constant) == 1.0 for s in range(total + 1))


def test_scheduler_drives_the_optimizer_lr():
    config = TrainConfig(lr=0.2, epochs=2, schedule="onecycle", warmup_fraction=0.25)
    model = nn.Linear(2, 2)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, steps_per_epoch=4, config=config)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.2 * lr_factor(s, 8, config) for s in range(8)]
    assert lrs == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_make_optimizer_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    for name in ("sgd", "adam"):
        optimizer = make_optimizer(model, TrainConfig(optimizer=name, lr=0.3))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        assert len(params) == 3 and all(p is not model[0].weight for p in params)
        assert optimizer.param_groups[0]["lr"] == 0.3


def test_seed_everything_makes_initialisation_repeatable():
    assert_same_state(make_student(seed=4), make_student(seed=4))
    assert not torch.equal(make_student(seed=4).head.weight, make_student(seed=5).head.weight)


# -----------------------------------------------------------------------------
# Prediction and evaluation.


def test_predict_logits_refuses_shuffled_or_augmented_loaders(cifar):
    model = make_student()
    for kwargs in ({"shuffle": True}, {"augment": True}):
        loader = TensorLoader(cifar.test_images[:8], cifar.test_labels[:8], 4, **kwargs)
        with pytest.raises(ValueError, match="shuffle=False and augment=False"):
            predict_logits(model, loader)


def test_predict_logits_in_loader_order_and_restores_mode(tiny_loaders):
    model = make_student().train()
    buffers = _snapshot(model)
    logits = predict_logits(model, tiny_loaders.test)
    assert logits.shape == (len(tiny_loaders.test.labels), 10) and logits.dtype == torch.float32
    assert model.training  # restored
    _assert_unchanged(model, buffers)  # ran in eval mode: BatchNorm statistics did not move
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model(b.images) for b in tiny_loaders.test])
    torch.testing.assert_close(logits, expected)


def test_evaluate(tiny_loaders):
    model = make_student()
    result = evaluate(model, tiny_loaders.test)
    assert 0.0 <= result["acc"] <= 1.0
    assert math.isfinite(result["loss"]) and result["loss"] > 0
    logits = predict_logits(model, tiny_loaders.test)
    labels = tiny_loaders.test.labels
    assert result["acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert result["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, labels)), rel=1e-6)


def test_tta_averages_the_mirror_image(tiny_loaders):
    model = make_student().eval()
    tta = predict_logits(model, tiny_loaders.test, tta=True)
    with torch.no_grad():
        expected = torch.cat([(model(b.images) + model(b.images.flip(3))) / 2 for b in tiny_loaders.test])
    torch.testing.assert_close(tta, expected)
    assert not torch.allclose(tta, predict_logits(model, tiny_loaders.test))

    # A flip-invariant model (global average pooling first) is unchanged by TTA.
    seed_everything(0)
    invariant = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    torch.testing.assert_close(predict_logits(invariant, tiny_loaders.test, tta=True),
                               predict_logits(invariant, tiny_loaders.test))


def test_eval_every_evaluates_every_kth_and_the_last_epoch(tiny_loaders):
    history = fit(make_student(), tiny_loaders.train, TrainConfig(epochs=5, lr=0.05),
                  eval_loader=tiny_loaders.test, eval_every=2, progress=False)
    assert [e["epoch"] for e in history.epochs if "test_acc" in e] == [2, 4, 5]


def test_evaluating_less_often_changes_no_weights(tiny_loaders):
    # Evaluation must not touch the weights or the random streams: that is why the
    # run cache may ignore eval_every.
    config = TrainConfig(epochs=3, lr=0.05, seed=0)
    every, rarely = make_student(), make_student()
    fit(every, tiny_loaders.train, config, eval_loader=tiny_loaders.test, progress=False)
    fit(rarely, tiny_loaders.train, config, eval_loader=tiny_loaders.test, eval_every=3, progress=False)
    assert_same_state(every, rarely)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_eval_every_rejects_non_positive_ints(bad, tiny_loaders):
    with pytest.raises(ValueError, match="eval_every"):
        fit(make_student(), tiny_loaders.train, TrainConfig(epochs=1), eval_every=bad, progress=False)


def test_int_and_float_numbers_make_the_same_config():
    # A grid written with T=4 must hit the cache entry of a run written with T=4.0.
    import json
    from dataclasses import asdict

    as_int = TrainConfig(method="kd", temperature=4, alpha=1, lr=1)
    as_float = TrainConfig(method="kd", temperature=4.0, alpha=1.0, lr=1.0)
    assert json.dumps(asdict(as_int)) == json.dumps(asdict(as_float))
    assert type(as_int.temperature) is float and type(as_int.alpha) is float


def test_fit_trains_unlabelled_samples_through_the_soft_term_only(cifar):
    """Samples labelled UNLABELLED (little-labels' unlabelled rest) enter the soft term; the
    hard term and the training accuracy average over the labelled ones."""
    import torch.nn.functional as F

    from kdbook.losses import soft_distillation_loss
    from kdbook.train import UNLABELLED

    labels = cifar.train_labels[:64].clone()
    labels[::2] = UNLABELLED
    loader = TensorLoader(cifar.train_images[:64], labels, 64)  # one batch, in order, not augmented
    teacher, student = OnlineTeacher(make_teacher().eval()), make_student()
    batch = next(iter(loader))
    with torch.no_grad():  # the student in training mode, as fit runs it
        z_s, z_t = student(batch.images), teacher(batch)
    known = labels != UNLABELLED
    expected = 0.5 * F.cross_entropy(z_s[known], labels[known]) + 0.5 * soft_distillation_loss(z_s, z_t, 4.0)
    history = fit(student, loader, TrainConfig(method="kd", epochs=1, lr=0.05), teacher=teacher, progress=False)
    record = history.epochs[0]
    assert record["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert record["train_acc"] == pytest.approx(float((z_s.argmax(1) == labels)[known].float().mean()))
