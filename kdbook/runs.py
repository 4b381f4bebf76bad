"""Named, seeded runs, with results cached on disk by configuration: the experiment engine.

A :class:`RunSpec` says everything that determines a run: the student, the data
(subset, labelled fraction, label noise), the teacher, and the :class:`TrainConfig`.
:func:`run` trains it (checkpointing every epoch, so an interrupted run resumes) or,
if a result for the same configuration, data and teacher weights exists, loads it.
Each result carries its metrics, learning curves and provenance (profile, device,
data source, wall time, torch version, commit).

Results go to ``KDBOOK_RESULTS`` if set, else ``$KDBOOK_HOME/results``. The book's
full-profile results are committed under ``results/`` in the repository (run the
sweeps with ``KDBOOK_RESULTS=results``) so the website's numbers can be traced.

The chapters' sweeps (lists of RunSpecs) are in :mod:`kdbook.experiments`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdbook import settings
from kdbook.data import CIFAR10, CLASSES, TensorLoader, load_cifar10, stratified_subset
from kdbook.files import atomic_write, read_cache
from kdbook.models import StudentCNN, count_parameters, freeze, half_state, load_half_state
from kdbook.soft_labels import cached_teacher, stored_teacher_outputs, weights_fingerprint
from kdbook.teacher import available_teacher, ls_teacher, standin_teacher
from kdbook.train import (DISTILLATION_METHODS, UNLABELLED, OnlineTeacher, TrainConfig, fit, key_fields,
                          predict_logits, seed_everything)
from kdbook.unseen_class import omitted_class_metrics

TEACHERS = ("none", "book", "book-ls", "standin")
TARGETS = ("labels", "teacher-argmax")
TEACHER_VIEWS = ("cached", "online")
NUM_CLASSES = len(CLASSES)
UNLABELLED_METHODS = ("kd", "lskd", "ctkd")  # soft terms that need no label (DKD's does)
# Test-set evaluations per run, at most: a run on 2% of the labels has 50 times more
# (50 times shorter) epochs than a full-data run, and evaluating after each would
# cost more than training. Evaluation changes no weights, so it is not in the run key.
CURVE_POINTS = 15


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
    # "book": the book's teacher; "book-ls": the same recipe with label smoothing 0.1 (both
    # shipped with the package); "standin": the small stand-in for a missing book teacher
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
        for name, allowed in (("teacher", TEACHERS), ("targets", TARGETS), ("teacher_view", TEACHER_VIEWS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
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


class RunResult(dict):
    """A run's result: the record stored as JSON in the results folder (a dict: ``metrics``,
    ``history``, ``provenance``, ...), with names for what the chapters read most:
    ``result.spec``, the :class:`RunSpec` that made it (``result["spec"]`` is its stored
    form, the settings of the key), and ``result.test_acc``, its final-epoch test accuracy."""

    @cached_property
    def spec(self) -> RunSpec:
        return spec_from_dict(self["spec"], self.get("name", ""))

    @property
    def test_acc(self) -> float:
        return self["metrics"]["test_acc"]


# RunSpec settings added after the first results were stored, with their defaults: a run
# that leaves them at the default has the key it had before they existed. A new RunSpec
# setting goes here (tests/test_experiments.py checks the stored keys).
ADDED_SPEC_SETTINGS: dict = {"validation_per_class": None, "omit_class": None, "teacher_view": "cached"}


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
    load = {"book": available_teacher, "book-ls": ls_teacher, "standin": standin_teacher}[spec.teacher]
    model, info = load(cifar, device, train_if_missing=train)
    return model, info["description"]


def make_student(spec: RunSpec) -> StudentCNN:
    return StudentCNN(spec.student_width, spec.student_depth)


def load_student(spec: RunSpec, result: dict, device) -> StudentCNN:
    path = result_file(result["key"], ".pt")
    model = make_student(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return freeze(load_half_state(model, state).to(device))


# -----------------------------------------------------------------------------
# Running and caching.


def run_key(spec: RunSpec, data_source: str, teacher_fingerprint: str) -> str:
    blob = json.dumps({"spec": spec.config_dict(), "data": data_source, "teacher": teacher_fingerprint},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


IN_PROGRESS = "in-progress"  # the results folder's subfolder of unfinished runs' checkpoints


def slug(name: str) -> str:
    """A run's name as the start of its file names: "KD T=4 alpha=0.5, seed 0" -> "kd-t-4-alpha-0-5-seed-0"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].rstrip("-")


def result_file(key: str, suffix: str, name: str = "") -> Path:
    """The file of the run with ``key`` (``suffix``: ".json" for the result, ".pt" for the
    student's weights): ``<slug of its name>-<key><suffix>`` in the results folder, so that
    a listing reads. The key alone finds it: a file stored under another name of the same
    run, or under the key alone (results stored before 2026-12), is found as well."""
    folder = settings.results_dir()
    found = sorted(folder.glob(f"*{key}{suffix}"))
    if found:
        return found[0]
    return folder / (f"{slug(name)}-{key}{suffix}" if slug(name) else f"{key}{suffix}")


def _load_result(key: str) -> RunResult | None:
    return read_cache(result_file(key, ".json"), lambda path: RunResult(json.loads(path.read_text())),
                      "a run's result")


def run(spec: RunSpec, *, cifar: CIFAR10 | None = None, device=None, progress: bool = True) -> RunResult:
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
           fingerprints: dict | None = None) -> RunResult | None:
    """The stored result of ``spec``, or None; never trains anything (not even a teacher).

    A run computed on another copy of the data (``KDBOOK_RESULTS_DATA``: the book's stored
    runs, read in Colab) is used as it is; its provenance names the data it was computed on.
    ``fingerprints``: a dict that keeps each named teacher's weights fingerprint between
    calls, so that reading many results loads each teacher once."""
    device = torch.device(device) if device is not None else settings.device()
    cifar = cifar or load_cifar10()
    fingerprint = teacher_fingerprint(spec, cifar, device, fingerprints)
    return None if fingerprint is None else _stored_with(spec, cifar, fingerprint)


def teacher_fingerprint(spec: RunSpec, cifar: CIFAR10, device, fingerprints: dict | None = None) -> str | None:
    """The weights fingerprint of ``spec``'s teacher ("none" for a run without one), or None
    while that teacher is not stored; builds nothing. ``fingerprints``: as in :func:`stored`."""
    fingerprints = {} if fingerprints is None else fingerprints
    if spec.teacher_run is None and spec.teacher in fingerprints:
        return fingerprints[spec.teacher]
    try:
        teacher, _ = resolve_teacher(spec, cifar, device, train=False)
    except (LookupError, FileNotFoundError):
        return None
    fingerprint = weights_fingerprint(teacher) if teacher is not None else "none"
    if spec.teacher_run is None:
        fingerprints[spec.teacher] = fingerprint
    return fingerprint


def _stored_with(spec: RunSpec, cifar: CIFAR10, fingerprint: str) -> RunResult | None:
    for data_source in dict.fromkeys([cifar.source, settings.results_data()]):
        key = run_key(spec, data_source, fingerprint) if data_source else None
        found = _load_result(key) if key else None
        if found is not None and result_file(key, ".pt").exists():
            return found
    return None


def checkpoint_file(key: str) -> Path:
    """The checkpoint of an unfinished run: beside the results it will become, so that a sweep
    run with KDBOOK_RESULTS=results can commit it and another machine resumes it."""
    return settings.results_dir() / IN_PROGRESS / f"run-{key}.pt"


def progress_of(spec: RunSpec, *, cifar: CIFAR10, device=None, fingerprints: dict | None = None) -> str:
    """Where ``spec`` stands, for a sweep's listing (trains nothing): "stored", "epoch k of n
    done" (a checkpoint in the results folder's in-progress/), "not started", or "waits for its
    teacher" (a teacher run or trained teacher not stored yet)."""
    device = torch.device(device) if device is not None else settings.device()
    fingerprint = teacher_fingerprint(spec, cifar, device, fingerprints)
    if fingerprint is None:
        return "waits for its teacher"
    if _stored_with(spec, cifar, fingerprint) is not None:
        return "stored"
    checkpoint = checkpoint_file(run_key(spec, cifar.source, fingerprint))
    if not checkpoint.exists():
        return "not started"
    epoch = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
    return f"epoch {epoch} of {spec.train.epochs} done"


def _train(spec, key, cifar, device, teacher, teacher_description, progress) -> RunResult:
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
    checkpoint = checkpoint_file(key)
    history = fit(student, train_loader, spec.train, eval_loader=test_loader, teacher=kd_teacher,
                  checkpoint=checkpoint, eval_every=max(1, spec.train.epochs // CURVE_POINTS),
                  progress=progress)
    eval_logits = predict_logits(student, test_loader)
    result = RunResult({
        "key": key,
        "name": spec.name,
        "spec": spec.config_dict(),
        "metrics": evaluation_metrics(eval_logits, data.test_labels.cpu(),
                                      book_teacher_predictions(data.test_images, cifar, device), data.evaluation),
        **({} if spec.omit_class is None else
           {"omitted_class": omitted_class_metrics(student, data, spec.omit_class, device)}),
        **({} if spec.teacher_run is None else
           {"teacher_run": teacher_run_metrics(student, eval_logits.argmax(1), teacher, data, device)}),
        "history": history_with_evaluation_name(history.epochs, data.evaluation),
        "student_parameters": count_parameters(student),
        "train_images": len(data.train_labels),
        "labelled_images": int((data.train_labels != UNLABELLED).sum()),
        "label_noise_measured": float((data.train_labels != data.clean_labels).float().mean()),
        "provenance": {
            **settings.provenance(cifar.source, device),
            "wall_s": time.perf_counter() - start, "train_wall_s": sum(e["seconds"] for e in history.epochs),
            "teacher": teacher_description,
            "autocast": settings.autocast_name(device, spec.train.amp),
            **machines(history.epochs),
        },
    })
    # The student's weights (half precision, tens of kB): later runs may use it as a teacher.
    with atomic_write(result_file(key, ".pt", spec.name)) as handle:
        torch.save(half_state(student), handle)
    with atomic_write(result_file(key, ".json", spec.name)) as handle:
        handle.write(json.dumps(result, indent=1).encode())
    checkpoint.unlink(missing_ok=True)  # the result supersedes it
    return result


def teacher_run_metrics(student: nn.Module, student_eval: Tensor, teacher: nn.Module, data: RunData,
                        device) -> dict[str, float]:
    """For a student of a trained run (a born-again generation): how well its teacher fits the
    training images (uncropped, true labels), and how often the student's top-1 prediction
    agrees with the teacher's on the training and on the evaluation images (the student's
    predictions on these: ``student_eval``). The teacher's predictions come from its tables
    of outputs (the training table is the one the run was taught from)."""
    train_loader = TensorLoader(data.train_images, data.clean_labels, 1000, device=device)
    teacher_train = pseudo_labels(teacher, data.train_images, device)
    teacher_eval = pseudo_labels(teacher, data.test_images, device)
    student_train = predict_logits(student, train_loader).argmax(1)
    suffix = "test" if data.evaluation == "test" else "val"
    return {
        "teacher_train_acc": float((teacher_train == data.clean_labels.cpu()).float().mean()),
        "student_train_acc": float((student_train == data.clean_labels.cpu()).float().mean()),
        "train_agreement": float((student_train == teacher_train).float().mean()),
        f"{suffix}_agreement": float((student_eval == teacher_eval).float().mean()),
    }


def machines(epochs: list[dict]) -> dict[str, str]:
    """For a run whose epochs ran on more than one device or precision (resumed on another
    machine): its "device" and "autocast", each stretch of epochs named, e.g. "cpu (1 threads,
    x86_64, AVX512), bfloat16, epochs 1-9; cpu (2 threads, x86_64, AVX2), float32, epochs
    10-15". Empty for a run on one machine (the finishing machine's record says it all)."""
    stretches: list[list] = []
    for e in epochs:
        where = (e.get("device", "not recorded"), e.get("autocast", "not recorded"))
        if stretches and stretches[-1][0] == where:
            stretches[-1][2] = e["epoch"]
        else:
            stretches.append([where, e["epoch"], e["epoch"]])
    if len(stretches) < 2:
        return {}
    return {"device": "; ".join(f"{d}, {a}, epochs {first}-{last}" for (d, a), first, last in stretches),
            "autocast": "/".join(dict.fromkeys(a for (_, a), _, _ in stretches))}


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
    """The teacher's hard predictions on the (unaugmented) images, from its table of outputs
    (computed once per teacher and images, the table KD looks up for the same images):
    self-training's labels, and the predictions every run's agreement with the book's
    teacher is measured against."""
    table = cached_teacher(teacher, images, name=fingerprint_name(teacher), device=device)
    return table.logits[:, 0].argmax(1).cpu()


def fingerprint_name(teacher: nn.Module) -> str:
    return type(teacher).__name__


def book_teacher_predictions(images: Tensor, cifar: CIFAR10, device) -> Tensor:
    """The book teacher's top-1 prediction on each of ``images`` (uncropped), from its table
    of outputs: every run evaluated on the same images compares with the same predictions,
    so they are computed once and kept on disk rather than once per run."""
    teacher, _ = available_teacher(cifar, device)
    return pseudo_labels(teacher, images, device)


def evaluation_metrics(logits: Tensor, labels: Tensor, teacher_pred: Tensor, evaluation: str = "test") -> dict:
    """A student's accuracy, per-class accuracy, loss, and top-1 agreement with the book's
    teacher (whose predictions on the same images are ``teacher_pred``), from its ``logits``
    on the evaluation images. On a validation set each key is renamed ("val_acc", "val_loss",
    "per_class_val_acc", "agreement_with_book_teacher_val", "val_images") so that no
    validation number is ever read as a test number."""
    if evaluation not in ("test", "validation"):
        raise ValueError(f"evaluation must be 'test' or 'validation', got {evaluation!r}")
    pred = logits.argmax(1)
    metrics = {
        "test_acc": float((pred == labels).float().mean()),
        "test_loss": float(F.cross_entropy(logits, labels)),
        "per_class_acc": [float((pred[labels == c] == c).float().mean()) for c in range(NUM_CLASSES)],
        "agreement_with_book_teacher": float((pred == teacher_pred).float().mean()),
        "test_images": len(labels),
    }
    return metrics if evaluation == "test" else {VALIDATION_NAMES[k]: v for k, v in metrics.items()}


VALIDATION_NAMES = {"test_acc": "val_acc", "test_loss": "val_loss", "per_class_acc": "per_class_val_acc",
                    "agreement_with_book_teacher": "agreement_with_book_teacher_val", "test_images": "val_images"}


def history_with_evaluation_name(epochs: list[dict], evaluation: str) -> list[dict]:
    """Per-epoch records; on a validation run the evaluated accuracy is "val_acc"."""
    if evaluation == "test":
        return epochs
    return [{("val_acc" if k == "test_acc" else k): v for k, v in e.items()} for e in epochs]


def run_all(specs: list[RunSpec], *, progress: bool = True, cifar: CIFAR10 | None = None) -> list[RunResult]:
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
