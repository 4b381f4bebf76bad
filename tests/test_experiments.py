"""kdbook.runs and kdbook.experiments: run specs, data of a run, caching by configuration, the plans."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from kdbook import experiments as ex
from kdbook import runs
from kdbook import settings
from kdbook import teacher as teacher_module
from kdbook.data import TensorLoader
from kdbook.train import UNLABELLED, CachedTeacher, TrainConfig, batch_losses, predict_logits

REPO_RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture
def results_home(tmp_path, monkeypatch):
    """Results and checkpoints of these tests go to a fresh folder (the data cache stays)."""
    monkeypatch.setenv("KDBOOK_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def tiny(name="tiny", **fields) -> runs.RunSpec:
    train = fields.pop("train", TrainConfig(epochs=1, lr=0.05, seed=0))
    base = dict(student_width=4, student_depth=1, batch_size=32, train_per_class=6, test_per_class=4)
    return runs.RunSpec(name=name, train=train, **{**base, **fields})


def test_noisy_labels_moves_the_requested_fraction_to_other_classes():
    labels = torch.arange(10).repeat(2000)
    noisy = runs.noisy_labels(labels, 0.4, seed=3)
    moved = noisy != labels
    assert abs(moved.float().mean().item() - 0.4) < 0.02
    assert torch.equal(noisy, runs.noisy_labels(labels, 0.4, seed=3))
    assert not torch.equal(noisy, runs.noisy_labels(labels, 0.4, seed=4))
    assert noisy.min() >= 0 and noisy.max() <= 9


def test_run_data_subsets_labelled_fraction_and_unlabelled_rest(cifar):
    spec = tiny(train_per_class=50, labelled_fraction=0.1, teacher="book",
                train=TrainConfig(method="kd", epochs=1))
    data = runs.run_data(spec, cifar)
    assert len(data.train_labels) == 50  # 10% of 50 per class, 10 classes
    assert torch.equal(data.train_labels, data.clean_labels)
    rest = dataclasses.replace(spec, train_on_unlabelled=True)
    data = runs.run_data(rest, cifar)
    assert len(data.train_labels) == 500
    assert int((data.train_labels == UNLABELLED).sum()) == 450
    labelled = data.train_labels != UNLABELLED
    assert torch.equal(data.train_labels[labelled], data.clean_labels[labelled])
    assert torch.bincount(data.clean_labels[labelled]).tolist() == [5] * 10


def test_run_data_label_noise_touches_training_labels_only(cifar):
    data = runs.run_data(tiny(train_per_class=100, label_noise=0.3), cifar)
    rate = (data.train_labels != data.clean_labels).float().mean().item()
    assert 0.24 < rate < 0.36
    assert len(data.test_labels) == 40


@pytest.mark.parametrize("fields, message", [
    (dict(teacher="bogus"), "teacher must be one of"),
    (dict(targets="bogus"), "targets must be one of"),
    (dict(train=TrainConfig(method="kd")), "need a teacher"),
    (dict(targets="teacher-argmax"), "need a teacher"),
    (dict(train_on_unlabelled=True, teacher="book", train=TrainConfig(method="kd")), "labelled_fraction"),
    (dict(label_noise=1.0), "label_noise must lie in"),
    (dict(omit_class=10), "omit_class must be None or a class index"),
    (dict(omit_class=True), "omit_class must be None or a class index"),
    (dict(teacher_view="bogus", teacher="book", train=TrainConfig(method="kd")), "teacher_view must be one of"),
    (dict(teacher_view="online"), "needs a distillation method"),
])
def test_run_spec_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny(**fields)


def test_an_interrupted_run_resumes_from_a_checkpoint_beside_its_results(cifar, results_home, monkeypatch):
    # The checkpoint lives in the results folder, so a sweep committed unfinished resumes elsewhere.
    spec = tiny(train=TrainConfig(epochs=2, lr=0.05, seed=0))
    real_fit = runs.fit

    def one_epoch_then_interrupted(*args, **kwargs):
        real_fit(*args, **kwargs, stop_after=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "fit", one_epoch_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.run(spec, cifar=cifar, progress=False)
    (checkpoint,) = (results_home / runs.IN_PROGRESS).glob("run-*.pt")
    assert runs.progress_of(spec, cifar=cifar) == "epoch 1 of 2 done"
    monkeypatch.setattr(runs, "fit", real_fit)
    result = runs.run(spec, cifar=cifar, progress=False)
    assert [e["epoch"] for e in result["history"]] == [1, 2] and not checkpoint.exists()
    # Both halves ran here: the record names one device, the one every epoch names.
    assert {e["device"] for e in result["history"]} == {result["provenance"]["device"]}
    assert runs.progress_of(spec, cifar=cifar) == "stored"


def test_a_run_resumed_on_another_machine_names_each_stretch_of_epochs():
    epochs = [dict(epoch=1, device="cpu A", autocast="bfloat16"), dict(epoch=2, device="cpu A", autocast="bfloat16"),
              dict(epoch=3, device="cpu B", autocast="float32")]
    assert runs.machines(epochs) == {"device": "cpu A, bfloat16, epochs 1-2; cpu B, float32, epochs 3-3",
                                     "autocast": "bfloat16/float32"}
    assert runs.machines(epochs[:2]) == {}  # one machine: its own record says it all
    assert runs.machines([dict(epoch=1), *epochs[2:]])["device"].startswith("not recorded, not recorded, epochs 1-1")


def test_run_key_ignores_the_name_but_not_the_rest():
    a, b = tiny("a"), tiny("b")
    assert runs.run_key(a, "data", "t") == runs.run_key(b, "data", "t")
    assert runs.run_key(a, "data", "t") != runs.run_key(a, "other data", "t")
    assert runs.run_key(a, "data", "t") != runs.run_key(a, "data", "other teacher")
    changed = dataclasses.replace(a, train=dataclasses.replace(a.train, seed=1))
    assert runs.run_key(a, "data", "t") != runs.run_key(changed, "data", "t")


def test_run_trains_once_then_reads_the_cache(cifar, results_home, monkeypatch):
    spec = tiny(teacher="book", train=TrainConfig(method="kd", epochs=1, lr=0.05))
    result = runs.run(spec, cifar=cifar, progress=False)
    stem = f"{runs.slug(spec.name)}-{result['key']}"  # a listing of results/ reads
    assert (results_home / f"{stem}.json").exists() and (results_home / f"{stem}.pt").exists()
    assert 0 <= result["metrics"]["test_acc"] <= 1
    assert len(result["metrics"]["per_class_acc"]) == 10
    # The result type's names for what chapters read: the spec that made it, the accuracy.
    assert isinstance(result, runs.RunResult) and result.spec == spec
    assert result.test_acc == result["metrics"]["test_acc"]
    prov = result["provenance"]
    assert prov["profile"] == "quick" and prov["data"] == cifar.source and prov["wall_s"] > 0
    assert set(settings.provenance(cifar.source)) <= set(prov)  # the one record every result carries

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(runs, "fit", no_training)
    # Reading a stored run never builds a teacher that could be trained (train=False only).
    resolved = []
    real_resolve = runs.resolve_teacher
    monkeypatch.setattr(runs, "resolve_teacher", lambda *a, **k: resolved.append(k.get("train", True))
                        or real_resolve(*a, **k))
    again = runs.run(dataclasses.replace(spec, name="renamed"), cifar=cifar, progress=False)
    assert again["key"] == result["key"] and again["metrics"] == result["metrics"]
    assert isinstance(again, runs.RunResult) and again.spec == spec  # named as first stored
    assert resolved == [False]


def test_the_book_teachers_predictions_come_from_the_teacher_itself(cifar):
    # Runs compare with the teacher's predictions from its table of outputs (computed once
    # per set of images), which must be the teacher's own predictions, in order.
    data = runs.run_data(tiny(), cifar)
    loader = TensorLoader(data.test_images, data.test_labels, 1000, device="cpu")
    teacher, _ = teacher_module.available_teacher(cifar, "cpu")
    predictions = runs.book_teacher_predictions(data.test_images, cifar, "cpu")
    assert torch.equal(predictions, runs.predict_logits(teacher, loader).argmax(1))
    student = runs.make_student(tiny())
    logits = runs.predict_logits(student, loader)
    metrics = runs.evaluation_metrics(logits, data.test_labels, predictions)
    agree = (logits.argmax(1) == predictions).float().mean().item()
    assert metrics["agreement_with_book_teacher"] == agree


def test_omit_class_leaves_the_class_out_of_training_only(cifar):
    spec = tiny(omit_class=3)
    data = runs.run_data(spec, cifar)
    assert not (data.train_labels == 3).any() and len(data.train_labels) == 9 * 6
    assert (data.test_labels == 3).sum() == 4  # the test set keeps every class
    assert len(data.bias_images) == 10 * 6  # the pool for the bias: all training images, labels unused
    assert runs.run_data(tiny(), cifar).bias_images is None


def test_a_run_without_a_class_reports_it_before_and_after_the_shift(cifar, results_home):
    result = runs.run(tiny(omit_class=3), cifar=cifar, progress=False)
    omitted = result["omitted_class"]
    assert omitted["class"] == 3 and omitted["share"] == pytest.approx(0.1)
    for key in ("class_test_acc_before", "class_test_acc_after", "test_acc_before", "test_acc_after"):
        assert 0 <= omitted[key] <= 1, key
    assert omitted["test_acc_before"] == pytest.approx(result["metrics"]["test_acc"])
    assert result["train_images"] == 54


@pytest.mark.parametrize("view, teacher_type", [("cached", "CachedTeacher"), ("online", "OnlineTeacher")])
def test_teacher_view_picks_the_teacher_the_loop_gets(cifar, results_home, monkeypatch, view, teacher_type):
    seen = []

    class Stop(Exception):
        pass

    def spy(*args, teacher=None, **kwargs):
        seen.append(type(teacher).__name__)
        raise Stop

    monkeypatch.setattr(runs, "fit", spy)
    with pytest.raises(Stop):
        runs.run(tiny(teacher="book", teacher_view=view, train=TrainConfig(method="kd", epochs=1)), cifar=cifar,
               progress=False)
    assert seen == [teacher_type]


def test_teacher_view_and_omit_class_enter_the_key_only_when_set():
    kd_spec = tiny(teacher="book", train=TrainConfig(method="kd"))
    assert "teacher_view" not in kd_spec.config_dict() and "omit_class" not in kd_spec.config_dict()
    online = dataclasses.replace(kd_spec, teacher_view="online")
    assert runs.run_key(online, "d", "t") != runs.run_key(kd_spec, "d", "t")
    assert runs.run_key(dataclasses.replace(kd_spec, omit_class=3), "d", "t") != runs.run_key(kd_spec, "d", "t")


def test_born_again_chain_uses_the_previous_student(cifar, results_home):
    gen0 = tiny("gen0")
    gen1 = tiny("gen1", teacher_run=gen0, train=TrainConfig(method="kd", epochs=1, temperature=1.0, alpha=0.0))
    result = runs.run(gen1, cifar=cifar, progress=False)
    assert result["provenance"]["teacher"].startswith("born-again teacher: gen0")
    assert result["spec"]["teacher_run"]["student_width"] == 4
    # The teacher's fit of the (uncropped) training images and the student's agreement with it.
    teacher, _ = runs.resolve_teacher(gen1, cifar, "cpu")
    data = runs.run_data(gen1, cifar)
    teacher_pred = predict_logits(teacher, TensorLoader(data.train_images, data.clean_labels, 64)).argmax(1)
    measured = result["teacher_run"]
    # The table is computed in another memory layout (NHWC): a near-tie may fall the other way.
    assert abs(measured["teacher_train_acc"] - float((teacher_pred == data.clean_labels).float().mean())) \
        <= 1 / len(data.clean_labels)
    assert set(measured) == {"teacher_train_acc", "student_train_acc", "train_agreement", "test_agreement"}
    assert all(0 <= v <= 1 for v in measured.values())
    assert "teacher_run" not in runs.run(gen0, cifar=cifar, progress=False)


def test_self_training_replaces_labels_by_teacher_predictions(cifar, results_home):
    spec = tiny(teacher="book", targets="teacher-argmax")
    teacher, _ = runs.resolve_teacher(spec, cifar, "cpu")
    images = runs.run_data(spec, cifar).train_images
    labels = runs.pseudo_labels(teacher, images, "cpu")
    with torch.no_grad():
        expected = teacher(next(iter(TensorLoader(images, labels, len(labels)))).images).argmax(1)
    assert torch.equal(labels, expected)
    result = runs.run(spec, cifar=cifar, progress=False)
    assert result["spec"]["targets"] == "teacher-argmax" and 0 <= result["label_noise_measured"] <= 1


def test_batch_losses_with_unlabelled_samples():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, 10), torch.randn(6, 10)
    labels = torch.tensor([1, UNLABELLED, 3, UNLABELLED, 5, 7])
    config = TrainConfig(method="kd", temperature=2.0, alpha=0.3)
    parts = batch_losses(logits, labels, config, teacher)
    known = labels != UNLABELLED
    hard = torch.nn.functional.cross_entropy(logits[known], labels[known])
    soft = torch.nn.functional.kl_div(torch.log_softmax(logits / 2, 1), torch.log_softmax(teacher / 2, 1),
                                      reduction="batchmean", log_target=True) * 4
    assert torch.allclose(parts["hard"], hard) and torch.allclose(parts["soft"], soft)
    assert torch.allclose(parts["loss"], 0.3 * hard + 0.7 * soft)
    nothing = batch_losses(logits, torch.full((6,), UNLABELLED), config, teacher)
    assert nothing["hard"] == 0 and torch.allclose(nothing["loss"], 0.7 * soft)
    with pytest.raises(IndexError):  # cross-entropy runs refuse unlabelled samples
        batch_losses(logits, labels, TrainConfig(method="ce"), None)


def test_plans_share_runs_through_the_cache_key():
    distilling = ex.plan_distilling("full")
    plan = ex.plan_hyperparameters("full")
    # The grid's T=4, alpha=0.5 cell and the x1 learning-rate run are the distilling
    # chapter's seed-0 KD run; the grid's reference is its seed-0 run alone.
    (cell,) = [s for s in plan["grid"] if s.train.temperature == 4 and s.train.alpha == 0.5]
    (lr_x1,) = [s for s in plan["lr"] if s.train.lr == ex.STUDENT_LR]
    seed0_kd, seed0_alone = distilling[1], distilling[0]
    assert seed0_kd.train.method == "kd" and seed0_alone.train.method == "ce"
    assert runs.run_key(cell, "d", "t") == runs.run_key(seed0_kd, "d", "t") == runs.run_key(lr_x1, "d", "t")
    assert runs.run_key(plan["alone"][0], "d", "t") == runs.run_key(seed0_alone, "d", "t")
    assert len(distilling) == 2 * len(ex.SCALES["full"].seeds)
    assert all(s.train_per_class is None for s in distilling)
    quick = ex.plan_distilling("quick")
    assert all(s.train_per_class == ex.SCALES["quick"].train_per_class for s in quick)


def test_quick_grid_is_a_corner_of_the_full_grid_with_the_cells_the_chapter_reads():
    assert ex.grid_axes("full") == (ex.TEMPERATURES, ex.ALPHAS)
    temperatures, alphas = ex.grid_axes("quick")
    assert set(temperatures) < set(ex.TEMPERATURES) and set(alphas) < set(ex.ALPHAS)
    # the guideline cells (T = 4 and 8), the default alpha and the lowest one (noisy labels)
    assert {*ex.GUIDELINE_TEMPERATURES, 4} <= set(temperatures) and {0.5, min(ex.ALPHAS)} <= set(alphas)
    grid = ex.plan_hyperparameters("quick")["grid"]
    assert len(grid) == len(temperatures) * len(alphas) < len(ex.plan_hyperparameters("full")["grid"])


def test_results_dir_honours_kdbook_results(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBOOK_RESULTS", str(tmp_path / "r"))
    assert settings.results_dir() == tmp_path / "r" and (tmp_path / "r").is_dir()


def _fake_result(name="r", losses=(2.0, 1.5), acc=0.4):
    return {"name": name, "history": [{"loss": v} for v in losses],
            "metrics": {"test_acc": acc, "per_class_acc": [acc] * 10}}


@pytest.mark.parametrize("result, message", [
    (_fake_result(losses=(2.0, float("nan"))), "not finite"),
    (_fake_result(losses=(2.0, 2.1)), "did not fall"),
    (_fake_result(acc=0.1), "not above chance"),
])
def test_check_runs_names_the_run_and_the_failed_check(result, message):
    teacher = torch.nn.Linear(2, 2)
    fingerprint = runs.weights_fingerprint(teacher)
    with pytest.raises(AssertionError, match=message):
        runs.check_runs([_fake_result("fine"), result], teacher, fingerprint)
    assert "2 runs" in runs.check_runs([_fake_result("a"), _fake_result("b")], teacher, fingerprint)


def test_check_runs_catches_a_changed_teacher():
    teacher = torch.nn.Linear(2, 2)
    fingerprint = runs.weights_fingerprint(teacher)
    with torch.no_grad():
        teacher.weight[0, 0] += 1e-6
    with pytest.raises(AssertionError, match="teacher's weights changed"):
        runs.check_runs([_fake_result()], teacher, fingerprint)


def test_slug_and_a_result_stored_under_its_key_alone(cifar, results_home, monkeypatch):
    assert runs.slug("KD T=4 alpha=0.5, seed 0") == "kd-t-4-alpha-0-5-seed-0"
    assert runs.slug("no cats, KD T=4 alpha=0.5, seed 2") == "no-cats-kd-t-4-alpha-0-5-seed-2"
    spec = tiny(train=TrainConfig(epochs=1, lr=0.05))
    result = runs.run(spec, cifar=cifar, progress=False)
    for suffix in (".json", ".pt"):  # the layout before 2026-12: the key alone
        runs.result_file(result["key"], suffix).rename(results_home / f"{result['key']}{suffix}")
    monkeypatch.setattr(runs, "_train", lambda *a, **k: pytest.fail("retrained a stored run"))
    assert runs.run(spec, cifar=cifar, progress=False)["key"] == result["key"]
    assert runs.load_student(spec, result, "cpu") is not None


def test_every_stored_result_keeps_its_key():
    """A new RunSpec or TrainConfig setting must leave the stored runs' keys alone:
    each stored spec, read back into a RunSpec, gives exactly the dict it was keyed by,
    and its files are named ``<slug of its name>-<key>`` (.json and .pt)."""
    stored = {p: json.loads(p.read_text()) for p in sorted(REPO_RESULTS.glob("*.json"))}
    results = {p: r for p, r in stored.items() if isinstance(r, dict) and "spec" in r and "key" in r}
    assert len(results) >= 50
    for path, r in results.items():
        assert runs.spec_from_dict(r["spec"]).config_dict() == r["spec"], r["name"]
        assert path.stem == f"{runs.slug(r['name'])}-{r['key']}", path.name
        assert path.with_suffix(".pt").is_file(), path.name


def test_a_run_stored_on_another_copy_of_the_data_is_read_when_allowed(cifar, results_home, monkeypatch):
    """What Colab does with the book's stored runs (KDBOOK_RESULTS_DATA): a run of the same
    configuration computed on the named data copy is read, not retrained; its provenance
    still names the copy it was computed on. Without the setting it is not used."""
    import dataclasses as dc

    spec = tiny(train=TrainConfig(epochs=1, lr=0.05))
    elsewhere = dc.replace(cifar, source="another copy of CIFAR-10")
    stored_result = runs.run(spec, cifar=elsewhere, progress=False)
    trained = []
    real_train = runs._train
    monkeypatch.setattr(runs, "_train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    monkeypatch.setenv("KDBOOK_RESULTS_DATA", "another copy of CIFAR-10")
    read = runs.run(spec, cifar=cifar, progress=False)
    assert trained == [] and read["key"] == stored_result["key"]
    assert read["provenance"]["data"] == "another copy of CIFAR-10"
    monkeypatch.delenv("KDBOOK_RESULTS_DATA")
    runs.run(spec, cifar=cifar, progress=False)
    assert trained == [1]


def test_a_subset_takes_its_rows_from_a_stored_table_of_the_whole_training_set(cifar, monkeypatch):
    spec = tiny(teacher="book", labelled_fraction=0.5, omit_class=2, train=TrainConfig(method="kd"))
    data = runs.run_data(spec, cifar)
    assert torch.equal(cifar.train_images[data.train_positions], data.train_images)
    whole = torch.randn(len(cifar.train_images), 2, 10)
    monkeypatch.setattr(runs, "stored_teacher_outputs", lambda *a, **k: CachedTeacher(whole))
    table = runs.distillation_teacher(spec, data, cifar, teacher=None, device="cpu")
    assert torch.equal(table.logits, whole[data.train_positions])


def test_looking_up_a_run_never_trains_a_missing_stand_in(cifar, results_home, monkeypatch, tmp_path):
    monkeypatch.setenv("KDBOOK_HOME", str(tmp_path / "home"))  # no stand-in teacher there

    def no_training(*args, **kwargs):
        raise AssertionError("a teacher was trained by a lookup")

    monkeypatch.setattr(teacher_module, "fit", no_training)
    spec = tiny(teacher="standin", train=TrainConfig(method="kd", epochs=1))
    assert runs.stored(spec, cifar=cifar) is None


def test_unlabelled_samples_train_through_fit(cifar):
    """KD on a training set whose second half has no labels: fit runs, the hard term uses
    the labelled half only and the training accuracy counts labelled samples only."""
    from kdbook.data import stratified_subset
    from kdbook.models import StudentCNN
    from kdbook.train import fit, seed_everything

    idx = stratified_subset(cifar.train_labels, per_class=6, seed=0)
    labels = cifar.train_labels.clone()
    labels[idx[len(idx) // 2:]] = UNLABELLED
    loader = TensorLoader(cifar.train_images, labels, 16, indices=idx, shuffle=True, augment=True, seed=0)
    table = CachedTeacher(torch.randn(len(cifar.train_labels), 2, 10, generator=torch.Generator().manual_seed(0)))
    seed_everything(0)
    history = fit(StudentCNN(4, 1), loader, TrainConfig(method="kd", epochs=2, lr=0.05), teacher=table,
                  progress=False)
    for epoch in history.epochs:
        assert all(torch.isfinite(torch.tensor(epoch[k])) for k in ("loss", "hard", "soft"))
        assert 0 <= epoch["train_acc"] <= 1


def test_the_command_line_lists_a_plan_without_training(monkeypatch, capsys, results_home):
    monkeypatch.setenv("KDBOOK_PROFILE", "quick")  # restored after the test (main sets it too)

    def no_training(*args, **kwargs):
        raise AssertionError("--list trained a run")

    monkeypatch.setattr(runs, "run", no_training)
    ex.main(["unseen-class", "--profile", "quick", "--list"])
    out = capsys.readouterr().out
    assert "unseen-class: 4 runs, profile quick" in out
    assert "  no cats, KD T=4 alpha=0.5, seed 1: not started" in out
    with pytest.raises(SystemExit):
        ex.main(["no-such-chapter"])


def test_born_again_chains_have_a_fresh_seed_per_generation_and_pair_the_two_losses():
    plan = ex.plan_born_again("full")
    assert len(plan["generation_0"]) == 3 and len(plan["ban"]) == len(plan["ban_labels"]) == 3 * ex.BAN_GENERATIONS
    for variant, alpha in ex.BAN_ALPHAS.items():
        for run in plan[variant]:
            assert (run.student_width, run.student_depth) == ex.BAN_STUDENT
            assert run.train.method == "kd" and run.train.temperature == 1.0 and run.train.alpha == alpha
            parent = run.teacher_run
            assert parent in plan["generation_0"] or parent in plan[variant]  # its own chain and loss
            assert run.train.seed != parent.train.seed  # fresh initialisation and data order
    ban_seeds = [r.train.seed for r in plan["ban"]]
    assert ban_seeds == [r.train.seed for r in plan["ban_labels"]] and len(set(ban_seeds)) == len(ban_seeds)


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_patient_schedule_is_the_chapters_runs_with_four_times_the_epochs(profile):
    chapter = {s.name: s for s in ex.plan_distilling(profile)}
    plan = ex.plan_patient_schedule(profile)
    sc = ex.scale(profile)
    for arm, name in (("alone", "alone, seed {}"), ("kd", "KD T=4 alpha=0.5, seed {}")):
        assert [s.train.seed for s in plan[arm]] == list(sc.seeds)  # paired by seed with the other arm
        for s in plan[arm]:
            short = chapter[name.format(s.train.seed)]
            assert s.train.epochs == ex.PATIENT_EPOCHS_FACTOR * short.train.epochs
            assert dataclasses.replace(s, name=short.name, train=dataclasses.replace(s.train, epochs=short.train.epochs)) \
                == short  # nothing else differs
