"""The chapters' sweeps: each plan is a list (or named groups) of :class:`~kdbook.runs.RunSpec`
for the active profile, run or read by :mod:`kdbook.runs`.

``python -m kdbook.experiments CHAPTER [--profile full]`` runs a chapter's sweep; finished
runs are cached, so running it again resumes it.

The engine's functions that the chapters call are importable from here too
(``experiments.run_all(plan)``), so that a chapter needs one module for its runs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from kdbook import settings
from kdbook.data import CLASSES, load_cifar10
from kdbook.runs import (  # noqa: F401  (the engine, as the chapters call it: experiments.run_all(...))
    TEACHER_VIEWS,
    RunResult,
    RunSpec,
    check_runs,
    fingerprint_name,
    load_student,
    progress_of,
    resolve_teacher,
    run,
    run_all,
    run_data,
    spec_from_dict,
    stored,
)
from kdbook.train import TrainConfig

# -----------------------------------------------------------------------------
# The chapters' sweeps. Each plan is a list of RunSpecs for the active profile.


@dataclass(frozen=True)
class Scale:
    """How big a profile's runs are."""

    train_per_class: int | None  # None: all 5,000 images per class
    test_per_class: int | None  # None: all 1,000 per class
    epochs: int
    seeds: tuple[int, ...]
    # The students' memory layout: the same arithmetic either way (up to the order of float
    # roundings). On a CPU, where the quick profile runs, NHWC is faster: four quick KD runs
    # took 11.7 s instead of 15.2 s on one thread of the book's 2-core CPU (max pooling is slow
    # in NCHW there). The full profile keeps NCHW, the layout its stored runs were computed in
    # (it is part of their keys).
    channels_last: bool = False


SCALES = {
    # quick: a check that the code runs (the suite runs every chapter in it), not evidence
    "quick": Scale(train_per_class=100, test_per_class=50, epochs=3, seeds=(0, 1), channels_last=True),
    "full": Scale(train_per_class=None, test_per_class=None, epochs=15, seeds=(0, 1, 2)),
}
STUDENT_LR = 0.1  # peak learning rate of the students (SGD, Nesterov, batch 256)


def scale(profile: str | None = None) -> Scale:
    return SCALES[profile or settings.profile()]


def student_config(sc: Scale, seed: int, **changes) -> TrainConfig:
    """The students' training recipe: the same for every method, so comparisons are fair."""
    base = dict(epochs=sc.epochs, lr=STUDENT_LR, weight_decay=5e-4, amp=True, channels_last=sc.channels_last,
                seed=seed)
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


PATIENT_EPOCHS_FACTOR = 4  # the patient schedule: four times the chapter's epochs (60 in the full profile)


def plan_patient_schedule(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Distilling a CNN": the student alone and distilled (T = 4, alpha = 0.5) with
    :data:`PATIENT_EPOCHS_FACTOR` times the epochs of the chapter's runs, every seed: is the
    gain of distillation an effect of a short schedule?"""
    sc = scale(profile)
    epochs = PATIENT_EPOCHS_FACTOR * sc.epochs
    return {"alone": [spec(f"alone, {epochs} epochs, seed {s}", sc, s, train=dict(epochs=epochs)) for s in sc.seeds],
            "kd": [spec(f"KD T=4 alpha=0.5, {epochs} epochs, seed {s}", sc, s, teacher="book",
                        train=kd(epochs=epochs)) for s in sc.seeds]}


TEMPERATURES = (1, 2, 4, 8, 16)
ALPHAS = (0.1, 0.5, 0.9)
NOISE = 0.4  # fraction of training labels moved to another class in the label-noise test
LR_FACTORS = (1, 0.1, 0.01)
SMALL_STUDENT = (8, 1)
GUIDELINE_TEMPERATURES = (4, 8)


def grid_axes(profile: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The temperatures and alphas of chapter "Hyperparameters"' grid. The quick profile (the
    suite) runs the corner that every reading of the chapter needs (T = 4 against 8, alpha =
    0.5 against the lowest): 6 runs instead of 15."""
    if scale(profile) is SCALES["full"]:
        return TEMPERATURES, ALPHAS
    return (1, 4, 8), (0.1, 0.5)


def plan_hyperparameters(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Chapter "Hyperparameters": the T x alpha grid, then the source's guidelines one by one."""
    sc = scale(profile)
    seed = sc.seeds[0]
    temperatures, alphas = grid_axes(profile)
    grid = [spec(f"KD T={T} alpha={a}", sc, seed, teacher="book", train=kd(T, a))
            for a in alphas for T in temperatures]
    small = [spec("small student alone", sc, seed, student=SMALL_STUDENT)] + [
        spec(f"small student KD T={T}", sc, seed, student=SMALL_STUDENT, teacher="book", train=kd(T, 0.5))
        for T in temperatures]
    default_alone = [spec("alone", sc, seed)]
    noise = [spec("noisy labels, alone", sc, seed, label_noise=NOISE)] + [
        spec(f"noisy labels, KD alpha={a}", sc, seed, teacher="book", label_noise=NOISE, train=kd(4, a))
        for a in alphas]
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
    """Chapter "Variants": self-training, born-again networks, label smoothing, LS teachers
    (the book's teacher and its label-smoothing twin, both shipped, in every profile)."""
    sc = scale(profile)
    seeds = sc.seeds[:3]
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
        teachers.append(spec(f"KD from teacher without LS, seed {s}", sc, s, teacher="book", train=kd()))
        teachers.append(spec(f"KD from teacher with LS, seed {s}", sc, s, teacher="book-ls", train=kd()))
    # The LS-teacher verdict at lower temperatures (T = 4 is in ``teachers``).
    teachers_by_t = [spec(f"KD T={T:g} from teacher {'with' if ls else 'without'} LS, seed {s}", sc, s,
                          teacher="book-ls" if ls else "book", train=kd(T))
                     for T in LS_TEACHER_TEMPERATURES for s in seeds for ls in (True, False)]
    return {"self_training": self_training, "label_smoothing": label_smoothing,
            "born_again": generations, "ls_teacher": teachers, "ls_teacher_by_t": teachers_by_t}


# Born-again networks as Furlanello et al. (2018) ran them: a student that fits its training
# set well, several generations, each with its own initialisation and data order, both of
# the paper's losses, several chains. (``plan_variants``'s chain is the first edition's
# exploratory one: the 24k student, one seed shared by every generation, BAN only.)
BAN_STUDENT = (32, 2)  # about 290k parameters, against the 24k default student
# Stored after the full profile's other runs, so free to take the fastest setting on the
# book's 2-core CPU (AVX-512 without AVX512_BF16), one thread, batch 256: a training step of
# this student took 0.67-0.79 s in NHWC and 0.94-1.00 s in NCHW in float32, and 1.9-2.0 s in NHWC
# under bfloat16 autocast, which that CPU emulates (OMP_NUM_THREADS=1 python -m kdbook.bench
# --precision --student 32 2). float32 everywhere, so that a chain resumed on another machine
# computes in the same precision.
BAN_TRAIN = dict(channels_last=True, amp=False)
BAN_ALPHAS = {"ban": 0.0, "ban_labels": 0.5}  # BAN: the teacher only; BAN+L: the labels too


def generation_seed(chain: int, generation: int) -> int:
    """The seed of ``generation`` in the chain started with seed ``chain``: a fresh seed
    (initialisation and data order) per generation; BAN and BAN+L share it, so they pair."""
    return chain + 1000 * generation


def plan_born_again(profile: str | None = None) -> dict[str, list[RunSpec]]:
    """Generation 0 of every chain trained alone; generation g distils at T = 1 from generation
    g - 1 of its own chain and variant, with alpha 0 (BAN) or 0.5 (BAN+L)."""
    sc = scale(profile)
    # The quick profile checks the code, not the claim: one chain of the default student.
    whole = sc.train_per_class is None
    student, chains = (BAN_STUDENT, sc.seeds) if whole else ((16, 1), sc.seeds[:1])
    plan = {"generation_0": [], **{variant: [] for variant in BAN_ALPHAS}}
    for chain in chains:
        first = spec(f"BAN student generation 0, chain {chain}", sc, chain, student=student, train=BAN_TRAIN)
        plan["generation_0"].append(first)
        for variant, alpha in BAN_ALPHAS.items():
            teacher = first
            for g in range(1, BAN_GENERATIONS + 1):
                label = "BAN" if alpha == 0 else "BAN+L"
                teacher = spec(f"{label} generation {g}, chain {chain}", sc, generation_seed(chain, g),
                               student=student, teacher_run=teacher, train=kd(T=1.0, alpha=alpha, **BAN_TRAIN))
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
    "patient-schedule": plan_patient_schedule,
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
    parser.add_argument("--list", action="store_true",
                        help="list the runs of the plan and where each stands (stored, epochs done...); trains nothing")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["KDBOOK_PROFILE"] = args.profile
    chapters = list(PLANS) if args.chapter == "all" else [args.chapter]
    cifar = load_cifar10()
    for chapter in chapters:
        specs = flatten(PLANS[chapter]())
        print(f"{chapter}: {len(specs)} runs, profile {settings.profile()}, results in {settings.results_dir()}")
        if args.list:
            fingerprints = {}
            for s in specs:
                print(f"  {s.name}: {progress_of(s, cifar=cifar, fingerprints=fingerprints)}")
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
