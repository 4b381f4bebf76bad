"""Chapter "Beyond Hinton" in the library: DKD, LS-KD and CTKD in the training loop, the
validation split that chooses DKD's beta, and the chapter's plan in the quick profile."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from kdbook import experiments as ex
from kdbook import runs
from kdbook.data import stratified_subset
from kdbook.learned_temperature import LearnedTemperature, learned_temperature_loss
from kdbook.losses import dkd_loss_parts, standardized_distillation_loss
from kdbook.models import StudentCNN, TeacherNet
from kdbook.train import (
    ADDED_SETTINGS,
    BEYOND_HINTON_SETTINGS,
    UNLABELLED,
    OnlineTeacher,
    TrainConfig,
    batch_losses,
    fit,
    seed_everything,
)


@pytest.fixture
def results_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBOOK_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def _batch(seed=0, n=8, c=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


# -----------------------------------------------------------------------------
# The loss of a batch: alpha * CE + (1 - alpha) * the method's soft term.


def test_batch_losses_dkd_and_lskd_combine_with_the_hard_term():
    logits, teacher, labels = _batch()
    hard = F.cross_entropy(logits, labels)
    dkd = TrainConfig(method="dkd", temperature=4.0, alpha=0.5, dkd_beta=2.0)
    parts = batch_losses(logits, labels, dkd, teacher)
    expected = dkd_loss_parts(logits, teacher, labels, 4.0, 1.0, 2.0)
    torch.testing.assert_close(parts["soft"], expected["loss"])
    torch.testing.assert_close(parts["loss"], 0.5 * hard + 0.5 * expected["loss"])
    torch.testing.assert_close(parts["tckd"], expected["tckd"])
    lskd = TrainConfig(method="lskd", temperature=2.0, alpha=0.3)
    parts = batch_losses(logits, labels, lskd, teacher)
    soft = 9.0 * standardized_distillation_loss(logits, teacher, 2.0)
    torch.testing.assert_close(parts["loss"], 0.3 * hard + 0.7 * soft)


def test_batch_losses_ctkd_uses_and_advances_the_learned_temperature():
    logits, teacher, labels = _batch()
    config = TrainConfig(method="ctkd", temperature=4.0)
    module = LearnedTemperature(total_steps=10, initial=4.0)
    parts = batch_losses(logits, labels, config, teacher, module)
    T = torch.tensor(4.0)
    soft = learned_temperature_loss(logits, teacher, T)
    torch.testing.assert_close(parts["loss"], 0.5 * F.cross_entropy(logits, labels) + 0.5 * soft)
    assert parts["temperature"].item() == pytest.approx(4.0, rel=1e-6) and int(module.steps_done) == 1
    with pytest.raises(ValueError, match="learned_temperature"):
        batch_losses(logits, labels, config, teacher)


def test_unlabelled_samples_soft_term_only_and_refused_by_dkd():
    logits, teacher, labels = _batch()
    labels[::2] = UNLABELLED
    known = labels != UNLABELLED
    parts = batch_losses(logits, labels, TrainConfig(method="lskd", temperature=2.0), teacher)
    torch.testing.assert_close(parts["hard"], F.cross_entropy(logits[known], labels[known]))
    with pytest.raises(ValueError, match="dkd"):
        batch_losses(logits, labels, TrainConfig(method="dkd"), teacher)


@pytest.mark.parametrize("changes, exc, name", [
    (dict(method="dkd", dkd_beta=-1.0), ValueError, "dkd_beta"),
    (dict(method="dkd", dkd_alpha=float("nan")), ValueError, "dkd_alpha"),
    (dict(method="lskd", lskd_weight="9"), TypeError, "lskd_weight"),
    (dict(method="ctkd", temperature=30.0), ValueError, "t_max"),
    (dict(method="ctkd", ctkd_t_min=0.0), ValueError, "t_min"),
    (dict(method="ctkd", ctkd_ramp_fraction=1.5), ValueError, "ctkd_ramp_fraction"),
    (dict(method="bogus"), ValueError, "method"),
])
def test_train_config_checks_the_new_settings(changes, exc, name):
    with pytest.raises(exc, match=name):
        TrainConfig(**changes)


def test_new_settings_are_registered_with_their_defaults():
    """Stored runs keep their keys: every new TrainConfig setting is in train.ADDED_SETTINGS
    with its default, and a default spec's key dict has none of them."""
    defaults = TrainConfig()
    for name in BEYOND_HINTON_SETTINGS:
        assert ADDED_SETTINGS[name] == getattr(defaults, name), name
    assert runs.ADDED_SPEC_SETTINGS["validation_per_class"] is None
    d = runs.RunSpec(name="x", train=TrainConfig()).config_dict()
    assert "validation_per_class" not in d and not set(BEYOND_HINTON_SETTINGS) & set(d["train"])


# -----------------------------------------------------------------------------
# CTKD in fit: the temperature is optimised and checkpointed with the student.


def _ctkd_fit(loaders, config, **kwargs):
    seed_everything(1)
    teacher = OnlineTeacher(TeacherNet(widths=(8, 16, 16), stem=8))
    seed_everything(0)
    student = StudentCNN(width=4, depth=1)
    history = fit(student, loaders.train, config, teacher=teacher, progress=False, **kwargs)
    return student, history


def test_ctkd_resumed_run_equals_unbroken_run(loader_factory, tmp_path):
    config = TrainConfig(method="ctkd", epochs=2, lr=0.05, temperature=4.0, ctkd_ramp_fraction=0.5)
    unbroken, full = _ctkd_fit(loader_factory(per_class=5, test_per_class=2), config)
    temperatures = full.column("temperature")
    assert len(temperatures) == 2 and temperatures[1] != pytest.approx(4.0, abs=1e-6)  # it was trained
    assert all(1.0 <= t <= 21.0 for t in temperatures)
    ckpt = tmp_path / "ctkd.pt"
    _ctkd_fit(loader_factory(per_class=5, test_per_class=2), config, checkpoint=ckpt, stop_after=1)
    assert torch.load(ckpt, weights_only=False)["learned_temperature"]["steps_done"] > 0
    resumed, part = _ctkd_fit(loader_factory(per_class=5, test_per_class=2), config, checkpoint=ckpt)
    assert part.column("temperature") == temperatures  # same T each epoch: state and step count restored
    for key, value in unbroken.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_old_checkpoints_without_the_new_settings_still_resume(loader_factory, tmp_path):
    config = TrainConfig(method="ce", epochs=2, lr=0.05)
    loaders = loader_factory(per_class=5, test_per_class=2)
    seed_everything(0)
    ckpt = tmp_path / "ce.pt"
    fit(StudentCNN(width=4, depth=1), loaders.train, config, checkpoint=ckpt, stop_after=1, progress=False)
    state = torch.load(ckpt, weights_only=False)
    for name in BEYOND_HINTON_SETTINGS:  # as written before these settings existed
        del state["config"][name]
    torch.save(state, ckpt)
    again = loader_factory(per_class=5, test_per_class=2)
    history = fit(StudentCNN(width=4, depth=1), again.train, config, checkpoint=ckpt, progress=False)
    assert len(history.epochs) == 2


# -----------------------------------------------------------------------------
# The validation split.


def test_split_validation_is_stratified_disjoint_and_complete(cifar):
    train_idx = stratified_subset(cifar.train_labels, per_class=50, seed=0)
    rest, held = runs.split_validation(cifar.train_labels, train_idx, 7, seed=3)
    assert torch.bincount(cifar.train_labels[held]).tolist() == [7] * 10
    assert torch.bincount(cifar.train_labels[rest]).tolist() == [43] * 10
    assert not set(rest.tolist()) & set(held.tolist())
    assert sorted(rest.tolist() + held.tolist()) == train_idx.tolist()


def test_run_data_with_validation_never_uses_the_test_set(cifar):
    spec = runs.RunSpec(name="v", train=TrainConfig(), train_per_class=30, test_per_class=4, validation_per_class=5)
    data = runs.run_data(spec, cifar)
    assert data.evaluation == "validation"
    assert len(data.train_labels) == 250 and len(data.test_labels) == 50
    # The evaluation images are training images, none of them among the run's training images.
    train_rows = {bytes(x.numpy()) for x in data.train_images}
    assert not any(bytes(x.numpy()) in train_rows for x in data.test_images)
    train_set = {bytes(x.numpy()) for x in cifar.train_images[stratified_subset(cifar.train_labels, per_class=30)]}
    assert all(bytes(x.numpy()) in train_set for x in data.test_images)


@pytest.mark.parametrize("fields, message", [
    (dict(validation_per_class=0), "validation_per_class"),
    (dict(validation_per_class=True), "validation_per_class"),
    (dict(teacher="book", labelled_fraction=0.5, train_on_unlabelled=True, train=TrainConfig(method="dkd")),
     "train_on_unlabelled"),
    (dict(train=TrainConfig(method="lskd")), "need a teacher"),
])
def test_run_spec_checks(fields, message):
    with pytest.raises(ValueError, match=message):
        runs.RunSpec(name="x", **{"train": TrainConfig(), **fields})


# -----------------------------------------------------------------------------
# The plan.


def test_plan_keys_are_distinct_and_kd_cells_are_the_distilling_chapters():
    plan = ex.plan_beyond_hinton("full", beta=2.0)
    specs = ex.flatten(plan)
    keys = [runs.run_key(s, "d", "t") for s in specs]
    assert len(set(keys)) == len(keys) == len(ex.DKD_BETAS) + 4 * len(ex.SCALES["full"].seeds)
    distilling = {s.name: runs.run_key(s, "d", "t") for s in ex.plan_distilling("full")}
    for s in plan["methods"]:
        if s.train.method == "kd":
            assert runs.run_key(s, "d", "t") == distilling[s.name]
    assert {s.train.method for s in plan["methods"]} == {"kd", "dkd", "lskd", "ctkd"}
    assert all(s.validation_per_class == 500 and s.train.seed == 0 for s in plan["beta_selection"])
    assert all(s.validation_per_class is None for s in plan["methods"])
    same = {(s.student_width, s.student_depth, s.train_per_class, s.train.lr, s.train.epochs) for s in specs}
    assert same == {(16, 1, None, ex.STUDENT_LR, ex.SCALES["full"].epochs)}
    assert list(ex.plan_beyond_hinton("full")) == ["beta_selection"]  # no beta, no methods


def _selection_result(beta, acc, key="val_acc"):
    spec = runs.RunSpec(name=f"b{beta}", train=TrainConfig(**ex.dkd(beta)), teacher="book", validation_per_class=5)
    return {"name": spec.name, "spec": spec.config_dict(), "metrics": {key: acc}}


def test_chosen_beta_uses_validation_accuracy_only():
    results = [_selection_result(1, 0.70), _selection_result(2, 0.74), _selection_result(4, 0.74),
               _selection_result(8, 0.71)]
    assert ex.chosen_beta(results) == 2.0  # the tie goes to the smaller beta
    assert ex.chosen_beta([_selection_result(8, 0.9), _selection_result(1, 0.1)]) == 8.0  # default beta read back
    with pytest.raises(ValueError, match="validation"):
        ex.chosen_beta([_selection_result(1, 0.70, key="test_acc")])
    with pytest.raises(ValueError, match="selection"):
        ex.chosen_beta([])


def _tiny(spec: runs.RunSpec) -> runs.RunSpec:
    """The same spec at a size a test can afford: 8 images per class, 1 epoch."""
    train = dataclasses.replace(spec.train, epochs=1)
    held = 2 if spec.validation_per_class is not None else None
    return dataclasses.replace(spec, train=train, train_per_class=8, test_per_class=3, batch_size=32,
                               validation_per_class=held)


def test_quick_plan_runs_every_method(cifar, results_home):
    plan = ex.plan_beyond_hinton("quick", beta=4.0)
    picks = [plan["beta_selection"][0]] + [next(s for s in plan["methods"] if s.train.method == m)
                                           for m in ("kd", "dkd", "lskd", "ctkd")]
    for spec in picks:
        result = runs.run(_tiny(spec), cifar=cifar, progress=False)
        losses = [e["loss"] for e in result["history"]]
        assert losses and all(torch.isfinite(torch.tensor(losses))), spec.name
        metrics = result["metrics"]
        if spec.validation_per_class is not None:
            assert "test_acc" not in metrics and 0 <= metrics["val_acc"] <= 1
            assert "val_acc" in result["history"][-1] and "test_acc" not in result["history"][-1]
        else:
            assert 0 <= metrics["test_acc"] <= 1
        if spec.train.method == "ctkd":
            assert 1.0 <= result["history"][-1]["temperature"] <= 21.0


def test_check_runs_accepts_validation_results():
    teacher = torch.nn.Linear(2, 2)
    result = {"name": "v", "history": [{"loss": 2.0}, {"loss": 1.0}],
              "metrics": {"val_acc": 0.5, "per_class_val_acc": [0.5] * 10}}
    assert "1 runs" in runs.check_runs([result], teacher, runs.weights_fingerprint(teacher))
    result["metrics"]["val_acc"] = 0.05
    with pytest.raises(AssertionError, match="validation accuracy"):
        runs.check_runs([result], teacher, runs.weights_fingerprint(teacher))
