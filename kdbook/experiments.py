"""Named, seeded runs and sweeps, with results cached on disk by configuration.

A :class:`RunSpec` says everything that determines a run: the student, the data
(subset, labelled fraction, label noise), the teacher, and the :class:`TrainConfig`.
:func:`run` trains it (checkpointing every epoch, so an interrupted run resumes) or,
if a result for the same configuration, data and teacher weights exists, loads it.
Each result carries its metrics, learning curves and provenance (profile, device,
data source, wall time, torch version, commit).

Results go to ``KDBOOK_RESULTS`` if set, else ``$KDBOOK_HOME/results``. The book's
full-profile results are committed under ``results/`` in the repository (run the
sweeps with ``KDBOOK_RESULTS=results``) so the website's numbers can be traced.

``python -m kdbook.experiments CHAPTER [--profile full]`` runs a chapter's sweep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdbook import settings
from kdbook.data import CIFAR10, CLASSES, TensorLoader, load_cifar10, stratified_subset
from kdbook.files import atomic_write
from kdbook.models import StudentCNN, count_parameters, freeze, half_state, load_half_state
from kdbook.soft_labels import cached_teacher, stored_teacher_outputs, weights_fingerprint
from kdbook.teacher import _commit, available_teacher, ls_teacher, standin_teacher
from kdbook.train import (ADDED_SETTINGS, DISTILLATION_METHODS, UNLABELLED, OnlineTeacher, TrainConfig, fit,
                          key_fields, predict_logits, seed_everything)
from kdbook.unseen_class import omitted_class_metrics

TEACHERS = ("none", "book", "book-ls", "standin", "standin-ls")
TARGETS = ("labels", "teacher-argmax")
TEACHER_VIEWS = ("cached", "online")
NUM_CLASSES = len(CLASSES)
UNLABELLED_METHODS = ("kd", "lskd", "ctkd")  # soft terms that need no label (DKD's does)


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run (``name`` is a label, not part of the key)."""

    name: str
    train: TrainConfig
    student_width: int = 16
    student_depth: int = 1
    batch_size: int = 256
    train_per_class: int | None = None  # None: all 5,000 per class
    test_per_class: int | None = None  # None: all 1,000 per class
    subset_seed: int = 0
    labelled_fraction: float | None = None  # fraction of each class whose label is used; None: all
    train_on_unlabelled: bool = False  # KD only: the unlabelled rest gets the soft term
    label_noise: float = 0.0  # symmetric: this fraction of labels moved to a random other class
    # "book": the book's teacher; "book-ls": the same recipe with label smoothing 0.1;
    # "standin"/"standin-ls": the small quick-profile stand-ins, without/with label smoothing
    teacher: str = "none"
    teacher_run: "RunSpec | None" = None  # a previous run's student as teacher (born-again)
    targets: str = "labels"  # "teacher-argmax": train on the teacher's hard predictions
    # Hold out this many training images per class (stratified, seeded, disjoint from the
    # training images) and evaluate on them instead of the test set, which the run then
    # never touches: for choosing a setting. Results report metrics["val_acc"], no test_acc.
    validation_per_class: int | None = None
    # Leave every training image of this class out of the student's training (transfer)
    # set, as Hinton et al. left out the 3s; the run then also reports that class's test
    # accuracy before and after raising its bias (kdbook.unseen_class).
    omit_class: int | None = None
    # Distillation only. "cached": the teacher's outputs for the uncropped image or its
    # mirror, computed once and looked up; "online": the teacher run on every batch, on
    # the student's own random crop and flip (a consistent teacher, Beyer et al., 2022).
    teacher_view: str = "cached"

    def __post_init__(self):
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {self.teacher!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.teacher_run is not None and self.teacher != "none":
            raise ValueError("give either teacher or teacher_run, not both")
        has_teacher = self.teacher != "none" or self.teacher_run is not None
        if (self.train.method in DISTILLATION_METHODS or self.targets == "teacher-argmax") and not has_teacher:
            raise ValueError(f"{self.name}: KD and teacher-argmax targets need a teacher")
        if self.train_on_unlabelled and (self.train.method not in UNLABELLED_METHODS or self.labelled_fraction is None):
            raise ValueError(f"train_on_unlabelled needs method in {UNLABELLED_METHODS} and a labelled_fraction")
        v = self.validation_per_class
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"validation_per_class must be None or a positive int, got {v!r}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise must lie in [0, 1), got {self.label_noise!r}")
        c = self.omit_class
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < NUM_CLASSES):
            raise ValueError(f"omit_class must be None or a class index in 0..{NUM_CLASSES - 1}, got {c!r}")
        if self.teacher_view not in TEACHER_VIEWS:
            raise ValueError(f"teacher_view must be one of {TEACHER_VIEWS}, got {self.teacher_view!r}")
        if self.teacher_view == "online" and self.train.method not in DISTILLATION_METHODS:
            raise ValueError(f"teacher_view='online' needs a distillation method {DISTILLATION_METHODS}, "
                             f"got method={self.train.method!r}")

    def config_dict(self) -> dict:
        """The run's settings as they enter its key.

        A setting added after results were stored is left out while it has its default
        value, so the stored runs keep their keys (``ADDED_SPEC_SETTINGS`` here,
        ``kdbook.train.ADDED_SETTINGS`` for the training settings)."""
        d = asdict(self)
        d.pop("name")
        d["train"] = key_fields(self.train)
        if d["teacher_run"] is not None:
            d["teacher_run"] = self.teacher_run.config_dict()
        for name, default in ADDED_SPEC_SETTINGS.items():
            if d.get(name) == default:
                d.pop(name)
        return d


def spec_from_dict(config: dict, name: str = "") -> RunSpec:
    """The :class:`RunSpec` whose ``config_dict()`` is ``config`` (a stored result's ``spec``)."""
    fields = dict(config)
    fields["train"] = TrainConfig(**fields["train"])
    if fields.get("teacher_run") is not None:
        fields["teacher_run"] = spec_from_dict(fields["teacher_run"], name="teacher")
    return RunSpec(name=name, **fields)


# RunSpec settings added after the first results were stored, with their defaults: a run
# that leaves them at the default has the key it had before they existed. A new RunSpec
# setting goes here (tests/test_experiments.py checks the stored keys).
ADDED_SPEC_SETTINGS: dict = {"validation_per_class": None, "omit_class": None, "teacher_view": "cached"}
ADDED_TRAIN_SETTINGS = ADDED_SETTINGS  # (kdbook.train) the same registry, for readers of this module


# -----------------------------------------------------------------------------
# Data of a run.


@dataclass
class RunData:
    train_images: Tensor
    train_labels: Tensor  # what the loss sees (noisy / pseudo / UNLABELLED)
    clean_labels: Tensor  # the true labels of the same images
    test_images: Tensor  # the evaluation images: the test set, or the held-out validation images
    test_labels: Tensor
    evaluation: str = "test"  # "test" or "validation": which set test_images holds
    # With omit_class: the training images before the class was left out (labels unused),
    # on which the omitted class's bias is chosen.
    bias_images: Tensor | None = None
    train_positions: Tensor | None = None  # where train_images sit in the full training set


def noisy_labels(labels: Tensor, rate: float, seed: int, num_classes: int = 10) -> Tensor:
    """Moves a ``rate`` fraction of labels (chosen at random) to a uniformly random other class."""
    gen = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(labels), generator=gen) < rate
    shift = torch.randint(1, num_classes, (len(labels),), generator=gen)
    return torch.where(flip, (labels + shift) % num_classes, labels)


def run_data(spec: RunSpec, cifar: CIFAR10) -> RunData:
    train_idx = (torch.arange(len(cifar.train_labels)) if spec.train_per_class is None else
                 stratified_subset(cifar.train_labels, per_class=spec.train_per_class, seed=spec.subset_seed))
    test_idx = (torch.arange(len(cifar.test_labels)) if spec.test_per_class is None else
                stratified_subset(cifar.test_labels, per_class=spec.test_per_class, seed=spec.subset_seed))
    if spec.validation_per_class is not None:
        train_idx, val_idx = split_validation(cifar.train_labels, train_idx, spec.validation_per_class,
                                              seed=spec.subset_seed + 3)
    bias_images = None
    if spec.omit_class is not None:
        bias_images = cifar.train_images[train_idx]
        train_idx = train_idx[cifar.train_labels[train_idx] != spec.omit_class]
    clean = cifar.train_labels[train_idx]
    labels = noisy_labels(clean, spec.label_noise, spec.subset_seed + 1) if spec.label_noise else clean.clone()
    images = cifar.train_images[train_idx]
    if spec.labelled_fraction is not None:
        labelled = stratified_subset(clean, fraction=spec.labelled_fraction, seed=spec.subset_seed + 2)
        if spec.train_on_unlabelled:
            mask = torch.ones(len(labels), dtype=torch.bool)
            mask[labelled] = False
            labels[mask] = UNLABELLED
        else:
            images, labels, clean = images[labelled], labels[labelled], clean[labelled]
            train_idx = train_idx[labelled]
    if spec.validation_per_class is not None:
        return RunData(images, labels, clean, cifar.train_images[val_idx], cifar.train_labels[val_idx], "validation",
                       bias_images, train_idx)
    return RunData(images, labels, clean, cifar.test_images[test_idx], cifar.test_labels[test_idx],
                   bias_images=bias_images, train_positions=train_idx)


def split_validation(labels: Tensor, train_idx: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """``train_idx`` split into (the rest, ``per_class`` held-out images of each class), both sorted.

    Stratified and seeded; the two parts are disjoint and together are ``train_idx``."""
    held = stratified_subset(labels[train_idx], per_class=per_class, seed=seed)
    keep = torch.ones(len(train_idx), dtype=torch.bool)
    keep[held] = False
    return train_idx[keep], train_idx[held]


# -----------------------------------------------------------------------------
# Teachers of a run.


def resolve_teacher(spec: RunSpec, cifar: CIFAR10, device, *, train: bool = True) -> tuple[nn.Module | None, str]:
    """The teacher model and a description of it (``train=False``: never trains a
    missing teacher, raises ``LookupError`` or ``FileNotFoundError`` instead)."""
    if spec.teacher_run is not None:
        result = (run(spec.teacher_run, cifar=cifar, device=device, progress=False) if train
                  else stored(spec.teacher_run, cifar=cifar, device=device))
        if result is None:
            raise LookupError(f"no stored result for the born-again teacher {spec.teacher_run.name!r}")
        model = load_student(spec.teacher_run, result, device)
        return model, f"born-again teacher: {spec.teacher_run.name} (test accuracy {result['metrics']['test_acc']:.4f})"
    if spec.teacher == "none":
        return None, "none"
    model, info = {
        "book": lambda: available_teacher(cifar, device, train_if_missing=train),
        "book-ls": lambda: ls_teacher(cifar, device, train_if_missing=train),
        "standin": lambda: standin_teacher(cifar, device, train_if_missing=train),
        "standin-ls": lambda: standin_teacher(cifar, device, label_smoothing=0.1, train_if_missing=train),
    }[spec.teacher]()
    return model, info["description"]


def make_student(spec: RunSpec) -> StudentCNN:
    return StudentCNN(spec.student_width, spec.student_depth)


def load_student(spec: RunSpec, result: dict, device) -> StudentCNN:
    path = settings.results_dir() / f"{result['key']}.pt"
    model = make_student(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return freeze(load_half_state(model, state).to(device))


# -----------------------------------------------------------------------------
# Running and caching.


def run_key(spec: RunSpec, data_source: str, teacher_fingerprint: str) -> str:
    blob = json.dumps({"spec": spec.config_dict(), "data": data_source, "teacher": teacher_fingerprint},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_result(key: str) -> dict | None:
    path = settings.results_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"kdbook: ignoring unreadable result {path} ({err})")
        return None


def run(spec: RunSpec, *, cifar: CIFAR10 | None = None, device=None, progress: bool = True) -> dict:
    """The result of ``spec``: read from the cache (:func:`stored`, which never trains a
    teacher), or else trained (resuming a checkpoint), with its teacher built only then."""
    device = torch.device(device) if device is not None else settings.device()
    cifar = cifar or load_cifar10()
    found = stored(spec, cifar=cifar, device=device)
    if found is not None:
        return found
    teacher, teacher_description = resolve_teacher(spec, cifar, device)
    fingerprint = weights_fingerprint(teacher) if teacher is not None else "none"
    return _train(spec, run_key(spec, cifar.source, fingerprint), cifar, device, teacher, teacher_description,
                  progress)


def stored(spec: RunSpec, *, cifar: CIFAR10 | None = None, device=None,
           fingerprints: dict | None = None) -> dict | None:
    """The stored result of ``spec``, or None; never trains anything (not even a teacher).

    A run computed on another copy of the data (``KDBOOK_RESULTS_DATA``: the book's stored
    runs, read in Colab) is used as it is; its provenance names the data it was computed on.
    ``fingerprints``: a dict that keeps each named teacher's weights fingerprint between
    calls, so that reading many results loads each teacher once."""
    device = torch.device(device) if device is not None else settings.device()
    cifar = cifar or load_cifar10()
    fingerprints = {} if fingerprints is None else fingerprints
    if spec.teacher_run is None and spec.teacher in fingerprints:
        fingerprint = fingerprints[spec.teacher]
    else:
        try:
            teacher, _ = resolve_teacher(spec, cifar, device, train=False)
        except (LookupError, FileNotFoundError):
            return None
        fingerprint = weights_fingerprint(teacher) if teacher is not None else "none"
        if spec.teacher_run is None:
            fingerprints[spec.teacher] = fingerprint
    for data_source in dict.fromkeys([cifar.source, settings.results_data()]):
        key = run_key(spec, data_source, fingerprint) if data_source else None
        found = _load_result(key) if key else None
        if found is not None and (settings.results_dir() / f"{key}.pt").exists():
            return found
    return None


def _train(spec, key, cifar, device, teacher, teacher_description, progress) -> dict:
    start = time.perf_counter()
    data = run_data(spec, cifar)
    if spec.targets == "teacher-argmax":
        data.train_labels = pseudo_labels(teacher, data.train_images, device)
    train_loader = TensorLoader(data.train_images, data.train_labels, spec.batch_size, shuffle=True,
                                augment=True, drop_last=len(data.train_labels) > spec.batch_size,
                                device=device, seed=spec.train.seed)
    test_loader = TensorLoader(data.test_images, data.test_labels, 1000, device=device)
    kd_teacher = None
    if spec.train.method in DISTILLATION_METHODS:
        kd_teacher = distillation_teacher(spec, data, cifar, teacher, device)
    seed_everything(spec.train.seed)
    student = make_student(spec).to(device)
    checkpoint = settings.subdir("checkpoints") / f"run-{key}.pt"
    history = fit(student, train_loader, spec.train, eval_loader=test_loader, teacher=kd_teacher,
                  checkpoint=checkpoint, eval_every=max(1, spec.train.epochs // CURVE_POINTS),
                  progress=progress)
    result = {
        "key": key,
        "name": spec.name,
        "spec": spec.config_dict(),
        "metrics": evaluation_metrics(student, test_loader, book_teacher_predictions(data.test_images, cifar, device),
                                      data.evaluation),
        **({} if spec.omit_class is None else
           {"omitted_class": omitted_class_metrics(student, data, spec.omit_class, device)}),
        "history": history_with_evaluation_name(history.epochs, data.evaluation),
        "student_parameters": count_parameters(student),
        "train_images": len(data.train_labels),
        "labelled_images": int((data.train_labels != UNLABELLED).sum()),
        "label_noise_measured": float((data.train_labels != data.clean_labels).float().mean()),
        "provenance": {
            "profile": settings.profile(), "device": settings.describe_device(device), "data": cifar.source,
            "wall_s": time.perf_counter() - start, "train_wall_s": sum(e["seconds"] for e in history.epochs),
            "torch": torch.__version__, "commit": _commit(), "teacher": teacher_description,
            "autocast": str(settings.autocast_dtype(device)).removeprefix("torch.") if spec.train.amp else "off",
        },
    }
    # The student's weights (half precision, tens of kB): later runs may use it as a teacher.
    with atomic_write(settings.results_dir() / f"{key}.pt") as handle:
        torch.save(half_state(student), handle)
    with atomic_write(settings.results_dir() / f"{key}.json") as handle:
        handle.write(json.dumps(result, indent=1).encode())
    checkpoint.unlink(missing_ok=True)  # the result supersedes it
    return result


def distillation_teacher(spec: RunSpec, data: RunData, cifar: CIFAR10, teacher: nn.Module, device):
    """What the training loop asks for the teacher's outputs: the teacher itself, run on each
    batch (``teacher_view="online"``), or its cached outputs for the run's training images,
    taken from a stored table of the whole training set when there is one (a subset's rows
    cost nothing), else computed for these images and stored."""
    if spec.teacher_view == "online":
        return OnlineTeacher(teacher)
    name = fingerprint_name(teacher)
    whole = stored_teacher_outputs(teacher, cifar.train_images, name=name, device=device)
    if whole is not None and data.train_positions is not None:
        return whole.rows(data.train_positions)
    return cached_teacher(teacher, data.train_images, name=name, device=device)


def pseudo_labels(teacher: nn.Module, images: Tensor, device) -> Tensor:
    """The teacher's hard predictions on the (unaugmented) images: self-training's labels."""
    table = cached_teacher(teacher, images, name="argmax", device=device)
    return table.logits[:, 0].argmax(1).cpu()


def fingerprint_name(teacher: nn.Module) -> str:
    return type(teacher).__name__


def book_teacher_predictions(images: Tensor, cifar: CIFAR10, device) -> Tensor:
    """The book teacher's top-1 prediction on each of ``images`` (uncropped), from its table
    of outputs: every run evaluated on the same images compares with the same predictions,
    so they are computed once and kept on disk rather than once per run."""
    teacher, _ = available_teacher(cifar, device)
    return cached_teacher(teacher, images, name=fingerprint_name(teacher), device=device).logits[:, 0].argmax(1).cpu()


def test_metrics(student: nn.Module, test_loader: TensorLoader, teacher_pred: Tensor) -> dict:
    """Accuracy, per-class accuracy, loss, and top-1 agreement with the book's teacher, whose
    predictions on the loader's images, in order, are ``teacher_pred``."""
    logits = predict_logits(student, test_loader)
    labels = test_loader.labels.cpu()
    pred = logits.argmax(1)
    per_class = [float((pred[labels == c] == c).float().mean()) for c in range(10)]
    return {
        "test_acc": float((pred == labels).float().mean()),
        "test_loss": float(F.cross_entropy(logits, labels)),
        "per_class_acc": per_class,
        "agreement_with_book_teacher": float((pred == teacher_pred).float().mean()),
        "test_images": len(labels),
    }


def evaluation_metrics(student, loader: TensorLoader, teacher_pred: Tensor, evaluation: str = "test") -> dict:
    """:func:`test_metrics`, with each key renamed for a validation set ("val_acc",
    "val_loss", "per_class_val_acc", "agreement_with_book_teacher_val", "val_images")
    so that no validation number is ever read as a test number."""
    metrics = test_metrics(student, loader, teacher_pred)
    if evaluation == "test":
        return metrics
    if evaluation != "validation":
        raise ValueError(f"evaluation must be 'test' or 'validation', got {evaluation!r}")
    return {VALIDATION_NAMES[k]: v for k, v in metrics.items()}


VALIDATION_NAMES = {"test_acc": "val_acc", "test_loss": "val_loss", "per_class_acc": "per_class_val_acc",
                    "agreement_with_book_teacher": "agreement_with_book_teacher_val", "test_images": "val_images"}


def history_with_evaluation_name(epochs: list[dict], evaluation: str) -> list[dict]:
    """Per-epoch records; on a validation run the evaluated accuracy is "val_acc"."""
    if evaluation == "test":
        return epochs
    return [{("val_acc" if k == "test_acc" else k): v for k, v in e.items()} for e in epochs]


def run_all(specs: list[RunSpec], *, progress: bool = True, cifar: CIFAR10 | None = None) -> list[dict]:
    """Runs (or loads) every spec in order; one progress bar over the sweep."""
    cifar = cifar or load_cifar10()
    results = []
    bar = tqdm(specs, desc="sweep", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        results.append(run(spec, cifar=cifar, progress=progress))
    return results


def check_runs(results: list[dict], teacher: nn.Module, teacher_fingerprint: str) -> str:
    """The checks that must hold at any scale, for the results of a sweep.

    Every training loss is finite and the last epoch's is below the first's; every
    student beats chance on the test set; and ``teacher`` still has the weights whose
    :func:`~kdbook.soft_labels.weights_fingerprint` was ``teacher_fingerprint`` before
    the runs (distillation must never train the teacher). Raises ``AssertionError``
    naming the run and the check that failed; returns a one-line summary.
    """
    for r in results:
        # A learned temperature (CTKD) is pushed up on purpose, which can raise the total
        # loss; its hard-label loss is the one that must fall.
        falling = "hard" if r.get("spec", {}).get("train", {}).get("method") == "ctkd" else "loss"
        losses = [e[falling] for e in r["history"]]
        if not all(math.isfinite(v) for v in losses):
            raise AssertionError(f"run {r['name']!r}: a training loss is not finite: {losses}")
        if not losses[-1] < losses[0]:
            raise AssertionError(f"run {r['name']!r}: the training loss did not fall "
                                 f"(first epoch {losses[0]:.4f}, last {losses[-1]:.4f})")
        split = "test" if "test_acc" in r["metrics"] else "validation"  # a validation run has val_acc
        acc = r["metrics"]["test_acc" if split == "test" else "val_acc"]
        chance = 1 / len(r["metrics"]["per_class_acc" if split == "test" else "per_class_val_acc"])
        if not acc > chance:
            raise AssertionError(f"run {r['name']!r}: {split} accuracy {acc:.4f} "
                                 f"is not above chance ({chance:.2f})")
    if weights_fingerprint(teacher) != teacher_fingerprint:
        raise AssertionError("the teacher's weights changed during the runs")
    return f"{len(results)} runs: losses finite and falling; all above chance; teacher unchanged"


# -----------------------------------------------------------------------------
# The chapters' sweeps. Each plan is a list of RunSpecs for the active profile.


@dataclass(frozen=True)
class Scale:
    """How big a profile's runs are."""

    train_per_class: int | None  # None: all 5,000 images per class
    test_per_class: int | None  # None: all 1,000 per class
    epochs: int
    seeds: tuple[int, ...]


SCALES = {
    "quick": Scale(train_per_class=100, test_per_class=100, epochs=4, seeds=(0, 1)),
    "full": Scale(train_per_class=None, test_per_class=None, epochs=15, seeds=(0, 1, 2)),
}
STUDENT_LR = 0.1  # peak learning rate of the students (SGD, Nesterov, batch 256)
# Test-set evaluations per run, at most: a run on 2% of the labels has 50 times more
# (50 times shorter) epochs than a full-data run, and evaluating after each would
# cost more than training. Evaluation changes no weights, so it is not in the run key.
CURVE_POINTS = 15


def scale(profile: str | None = None) -> Scale:
    return SCALES[profile or settings.profile()]


def student_config(sc: Scale, seed: int, **changes) -> TrainConfig:
    """The students' training recipe: the same for every method, so comparisons are fair."""
    base = dict(epochs=sc.epochs, lr=STUDENT_LR, weight_decay=5e-4, amp=True, seed=seed)
    return TrainConfig(**{**base, **changes})


def spec(name: str, sc: Scale, seed: int, *, student: tuple[int, int] = (16, 1), teacher: str = "none",
         train: dict | None = None, **fields) -> RunSpec:
    return RunSpec(name=name, train=student_config(sc, seed, **(train or {})), student_width=student[0],
                   student_depth=student[1], train_per_class=sc.train_per_class,
                   test_per_class=sc.test_per_class, teacher=teacher, **fields)


def kd(T: float = 4.0, alpha: float = 0.5, **changes) -> dict:
    return dict(method="kd", temperature=T, alpha=alpha, **changes)


def plan_distilling(profile: str | None = None) -> list[RunSpec]:
    """Chapter "Distilling a CNN": the student alone vs distilled, same budget, several seeds."""
    sc = scale(profile)
    runs = []
    for seed in sc.seeds:
        runs.append(spec(f"alone, seed {seed}", sc, seed))
        runs.append(spec(f"KD T=4 alpha=0.5, seed {seed}", sc, seed, teacher="book", train=kd()))
    return runs


def plan_teacher_view(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Distilling a CNN": the cached teacher (the chapter's KD runs, same keys)
    against a consistent teacher run on the student's own crop and flip, every seed."""
    sc = scale(profile)
    return {view: [spec(f"KD T=4 alpha=0.5, {view} teacher, seed {s}", sc, s, teacher="book", train=kd(),
                        teacher_view=view) for s in sc.seeds] for view in TEACHER_VIEWS}


OMITTED_CLASS = CLASSES.index("cat")  # the class left out of the transfer set (Hinton et al.: the 3s)


def plan_unseen_class(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Distilling a CNN": the student alone and distilled (T = 4, alpha = 0.5) on the
    training images without a single cat, every seed."""
    sc = scale(profile)
    name = CLASSES[OMITTED_CLASS]
    return {"alone": [spec(f"no {name}s, alone, seed {s}", sc, s, omit_class=OMITTED_CLASS) for s in sc.seeds],
            "kd": [spec(f"no {name}s, KD T=4 alpha=0.5, seed {s}", sc, s, teacher="book", train=kd(),
                        omit_class=OMITTED_CLASS) for s in sc.seeds]}


TEMPERATURES = (1, 2, 4, 8, 16)
ALPHAS = (0.1, 0.5, 0.9)
NOISE = 0.4  # fraction of training labels moved to another class in the label-noise test
LR_FACTORS = (1, 0.1, 0.01)
SMALL_STUDENT = (8, 1)
GUIDELINE_TEMPERATURES = (4, 8)


def plan_hyperparameters(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Hyperparameters": the T x alpha grid, then the source's guidelines one by one."""
    sc = scale(profile)
    seed = sc.seeds[0]
    grid = [spec(f"KD T={T} alpha={a}", sc, seed, teacher="book", train=kd(T, a))
            for a in ALPHAS for T in TEMPERATURES]
    small = [spec("small student alone", sc, seed, student=SMALL_STUDENT)] + [
        spec(f"small student KD T={T}", sc, seed, student=SMALL_STUDENT, teacher="book", train=kd(T, 0.5))
        for T in TEMPERATURES]
    default_alone = [spec("alone", sc, seed)]
    noise = [spec("noisy labels, alone", sc, seed, label_noise=NOISE)] + [
        spec(f"noisy labels, KD alpha={a}", sc, seed, teacher="book", label_noise=NOISE, train=kd(4, a))
        for a in ALPHAS]
    lr = [spec(f"KD lr x{f:g}", sc, seed, teacher="book", train=kd(lr=STUDENT_LR * f)) for f in LR_FACTORS]
    # Guideline 2 ("increase T for a small student") is decided by T = 4 against T = 8 for
    # both students: those four cells get the other seeds too (seed 0 is in the grid above).
    small_t = [spec(f"{who} KD T={T}, seed {s}", sc, s, student=size, teacher="book", train=kd(T, 0.5))
               for s in sc.seeds[1:] for who, size in (("student", (16, 1)), ("small student", SMALL_STUDENT))
               for T in GUIDELINE_TEMPERATURES]
    return {"grid": grid, "small": small, "alone": default_alone, "noise": noise, "lr": lr,
            "small_t_seeds": small_t}


LABELLED_FRACTIONS = (0.02, 0.05, 0.10)


def plan_little_labels(profile: str | None = None) -> list[RunSpec]:
    """Chapter "Little labelled data": hard labels alone vs KD vs KD with the unlabelled rest.

    Every run sees the same number of images in total (the budget of a full-data run),
    so runs on a small labelled subset get proportionally more epochs."""
    sc = scale(profile)
    seed = sc.seeds[0]
    runs = []
    for frac in LABELLED_FRACTIONS:
        epochs = max(sc.epochs, round(sc.epochs / frac))
        pct = f"{frac:.0%}"
        runs.append(spec(f"{pct} labels, alone", sc, seed, labelled_fraction=frac, train=dict(epochs=epochs)))
        runs.append(spec(f"{pct} labels, KD", sc, seed, teacher="book", labelled_fraction=frac,
                         train=kd(epochs=epochs)))
        runs.append(spec(f"{pct} labels, KD + soft targets on the rest", sc, seed, teacher="book",
                         labelled_fraction=frac, train_on_unlabelled=True, train=kd()))
    return runs


BAN_GENERATIONS = 3
LS_TEACHER_TEMPERATURES = (1.0, 2.0)


def plan_variants(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Variants": self-training, born-again networks, label smoothing, LS teachers."""
    prof = profile or settings.profile()
    sc = scale(prof)
    seeds = sc.seeds[:3]
    teacher, ls_teacher_name = ("book", "book-ls") if prof == "full" else ("standin", "standin-ls")
    self_training = [spec(f"self-training, seed {s}", sc, s, teacher="book", targets="teacher-argmax")
                     for s in seeds]
    label_smoothing = [spec(f"label smoothing 0.1, seed {s}", sc, s, train=dict(label_smoothing=0.1))
                       for s in seeds]
    generations = [spec("born-again generation 0 (alone)", sc, seeds[0])]
    for g in range(1, BAN_GENERATIONS + 1):
        generations.append(spec(f"born-again generation {g}", sc, seeds[0], teacher_run=generations[-1],
                                train=kd(T=1.0, alpha=0.0)))
    teachers = []
    for s in seeds:
        teachers.append(spec(f"KD from teacher without LS, seed {s}", sc, s, teacher=teacher, train=kd()))
        teachers.append(spec(f"KD from teacher with LS, seed {s}", sc, s, teacher=ls_teacher_name, train=kd()))
    # The LS-teacher verdict at lower temperatures (T = 4 is in ``teachers``).
    teachers_by_t = [spec(f"KD T={T:g} from teacher {'with' if ls else 'without'} LS, seed {s}", sc, s,
                          teacher=ls_teacher_name if ls else teacher, train=kd(T))
                     for T in LS_TEACHER_TEMPERATURES for s in seeds for ls in (True, False)]
    return {"self_training": self_training, "label_smoothing": label_smoothing,
            "born_again": generations, "ls_teacher": teachers, "ls_teacher_by_t": teachers_by_t}


# Born-again networks as Furlanello et al. (2018) ran them: a student that fits its training
# set well, several generations, each with its own initialisation and data order, both of
# the paper's losses, several chains. (``plan_variants``'s chain is the first edition's
# exploratory one: the 24k student, one seed shared by every generation, BAN only.)
BAN_STUDENT = (32, 2)  # about 290k parameters, against the 24k default student
BAN_ALPHAS = {"ban": 0.0, "ban_labels": 0.5}  # BAN: the teacher only; BAN+L: the labels too


def generation_seed(chain: int, generation: int) -> int:
    """The seed of ``generation`` in the chain started with seed ``chain``: a fresh seed
    (initialisation and data order) per generation; BAN and BAN+L share it, so they pair."""
    return chain + 1000 * generation


def plan_born_again(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Generation 0 of every chain trained alone; generation g distils at T = 1 from generation
    g - 1 of its own chain and variant, with alpha 0 (BAN) or 0.5 (BAN+L)."""
    sc = scale(profile)
    plan = {"generation_0": [], **{variant: [] for variant in BAN_ALPHAS}}
    for chain in sc.seeds:
        first = spec(f"BAN student generation 0, chain {chain}", sc, chain, student=BAN_STUDENT)
        plan["generation_0"].append(first)
        for variant, alpha in BAN_ALPHAS.items():
            teacher = first
            for g in range(1, BAN_GENERATIONS + 1):
                label = "BAN" if alpha == 0 else "BAN+L"
                teacher = spec(f"{label} generation {g}, chain {chain}", sc, generation_seed(chain, g),
                               student=BAN_STUDENT, teacher_run=teacher, train=kd(T=1.0, alpha=alpha))
                plan[variant].append(teacher)
    return plan


# -----------------------------------------------------------------------------
# Chapter "Beyond Hinton": DKD, logit-standardized KD and CTKD against Hinton's KD,
# same student, recipe, data and teacher. DKD's beta is chosen on held-out training
# images (one seed: a selection, not a finding); the test set never enters the choice.

DKD_BETAS = (1.0, 2.0, 4.0, 8.0)  # candidates for DKD's beta (8 is mdistiller's CIFAR-100 value)
VALIDATION_PER_CLASS = 500  # held-out training images per class for the choice (5,000 in all)


def validation_size(sc: Scale) -> int:
    """Held-out images per class: 500 of the full 5,000; a tenth of a quick-profile subset."""
    return VALIDATION_PER_CLASS if sc.train_per_class is None else max(1, sc.train_per_class // 10)


def dkd(beta: float, T: float = 4.0, **changes) -> dict:
    """DKD settings: TCKD weight 1 (mdistiller's), NCKD weight ``beta``, the book's alpha = 0.5."""
    return dict(method="dkd", temperature=T, dkd_alpha=1.0, dkd_beta=float(beta), **changes)


LSKD = dict(method="lskd", temperature=2.0)  # Sun et al.'s base temperature; lskd_weight 9 (the default)
CTKD = dict(method="ctkd", temperature=4.0)  # the learned T starts at Hinton's T = 4


def chosen_beta(selection: list[dict]) -> float:
    """DKD's beta with the highest validation accuracy among ``selection`` (ties: the smaller).

    ``selection``: the results of the plan's "beta_selection" runs. A result that carries
    a test accuracy, or is not a DKD validation run, is refused: the test set never enters."""
    if not selection:
        raise ValueError("selection is empty: pass the results of the beta_selection runs")
    scored = []
    for r in selection:
        train = spec_from_dict(r["spec"]).train
        if "test_acc" in r["metrics"] or "val_acc" not in r["metrics"] or train.method != "dkd":
            raise ValueError(f"run {r.get('name')!r} is not a DKD run evaluated on the validation split; "
                             "beta must be chosen on validation accuracy only")
        scored.append((r["metrics"]["val_acc"], -train.dkd_beta))
    best_acc, neg_beta = max(scored)
    return -neg_beta


def plan_beyond_hinton(profile: str | None = None, beta: float | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Beyond Hinton". ``beta_selection``: DKD at each of :data:`DKD_BETAS` on the
    validation split, seed 0. ``methods`` (only when ``beta`` is given, chosen by
    :func:`chosen_beta` from the selection's results): for every seed, Hinton's KD (the
    distilling chapter's runs, same keys), DKD at ``beta``, LS-KD and CTKD."""
    sc = scale(profile)
    held_out = validation_size(sc)
    # The quick profile (tests, CPUs) tries the two ends of the range only.
    betas = DKD_BETAS if sc is SCALES["full"] else (DKD_BETAS[0], DKD_BETAS[-1])
    plan = {"beta_selection": [
        spec(f"DKD beta={b:g} (validation)", sc, sc.seeds[0], teacher="book", validation_per_class=held_out,
             train=dkd(b)) for b in betas]}
    if beta is None:
        return plan
    methods = []
    for seed in sc.seeds:
        methods += [
            spec(f"KD T=4 alpha=0.5, seed {seed}", sc, seed, teacher="book", train=kd()),
            spec(f"DKD beta={beta:g}, seed {seed}", sc, seed, teacher="book", train=dkd(beta)),
            spec(f"LS-KD, seed {seed}", sc, seed, teacher="book", train=LSKD),
            spec(f"CTKD, seed {seed}", sc, seed, teacher="book", train=CTKD),
        ]
    return {**plan, "methods": methods}


def plan_beyond_hinton_stored(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """The whole plan once every selection run is stored (beta chosen from them), else
    the selection alone: ``python -m kdbook.experiments beyond-hinton`` runs the
    selection, then the methods at the chosen beta."""
    plan = plan_beyond_hinton(profile)
    cifar, fingerprints = load_cifar10(), {}
    found = [stored(s, cifar=cifar, fingerprints=fingerprints) for s in plan["beta_selection"]]
    if any(r is None for r in found):
        return plan
    return plan_beyond_hinton(profile, beta=chosen_beta(found))


PLANS = {
    "distilling": plan_distilling,
    "unseen-class": plan_unseen_class,
    "teacher-view": plan_teacher_view,
    "hyperparameters": plan_hyperparameters,
    "little-labels": plan_little_labels,
    "variants": plan_variants,
    "born-again": plan_born_again,
    "beyond-hinton": plan_beyond_hinton_stored,
}


def flatten(plan) -> list[RunSpec]:
    return [s for group in plan.values() for s in group] if isinstance(plan, dict) else list(plan)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run a chapter's sweep (results are cached; rerun to resume).")
    parser.add_argument("chapter", choices=[*PLANS, "all"])
    parser.add_argument("--profile", choices=settings.PROFILES, default=None,
                        help="quick or full (default: KDBOOK_PROFILE, else full with CUDA, quick without)")
    parser.add_argument("--list", action="store_true", help="list the runs of the plan (names only; nothing is trained)")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["KDBOOK_PROFILE"] = args.profile
    chapters = list(PLANS) if args.chapter == "all" else [args.chapter]
    cifar = load_cifar10()
    for chapter in chapters:
        specs = flatten(PLANS[chapter]())
        print(f"{chapter}: {len(specs)} runs, profile {settings.profile()}, results in {settings.results_dir()}")
        if args.list:
            for s in specs:
                print(f"  {s.name}")
            continue
        with settings.Stopwatch(cifar.source) as clock:
            run_all(specs, cifar=cifar)
            # A staged plan (beyond-hinton) grows once its first stage is stored: run the rest.
            more = [s for s in flatten(PLANS[chapter]()) if s not in specs]
            if more:
                print(f"{chapter}: {len(more)} more runs chosen from the first stage")
                run_all(more, cifar=cifar)
        print(clock.stamp.line())


if __name__ == "__main__":
    main()
