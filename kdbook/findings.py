"""The book's empirical verdicts, each computed once from the stored results.

A finding compares two sets of runs (or a contrast of four) seed by seed and says
how large the difference is, with a 95% interval from the t distribution:

- paired by seed where the runs share their seeds (same initial weights and data
  order), which removes the seed-to-seed noise the two arms have in common;
- a verdict from the interval: ``supported`` if it lies wholly on the side the claim
  predicts, ``contradicted`` if wholly on the other side, ``inconclusive`` if it holds
  0; from fewer than 3 seeds a finding is ``exploratory`` whatever its size.

``python -m kdbook.findings`` computes every registered finding from the stored
full-profile results (it never trains: a missing run is an error) and writes
``results/findings.json`` and the appendix page ``book/findings.md``. The chapters
call :func:`evaluate` on the runs they show and glue the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from scipy import stats

from kdbook import experiments
from kdbook.data import load_cifar10

VERDICTS = ("supported", "contradicted", "inconclusive", "exploratory")
MIN_SEEDS = 3  # below this a comparison is exploratory
LEVEL = 0.95
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Finding:
    """One verdict with its evidence. ``estimate`` and ``ci`` are in percentage points."""

    id: str
    chapter: str
    claim: str
    estimate: float
    ci: tuple[float, float]
    n_seeds: int
    verdict: str
    method: str  # how the interval was computed
    evidence: tuple[str, ...]  # the run keys it rests on

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def summary(self) -> str:
        # A born-again finding pairs by chain (each generation has its own seed): its
        # replicates are chains.
        unit = "chain" if "by chain" in self.method else "seed"
        return (f"{self.estimate:+.2f} points, 95% CI [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}], "
                f"{self.n_seeds} {unit}{'' if self.n_seeds == 1 else 's'}: {self.verdict}")


# -----------------------------------------------------------------------------
# Intervals.


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """Mean of ``values`` and its two-sided t interval (n - 1 degrees of freedom).

    With one value there is no spread to estimate: the interval is (-inf, inf)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one number, got none")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, (-math.inf, math.inf)
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, (mean - half, mean + half)


def paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """``b - a`` seed by seed: the mean difference and its t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired runs need as many runs in a as in b, got {len(a)} and {len(b)}")
    return t_interval([y - x for x, y in zip(a, b)], level)


def verdict(ci: tuple[float, float], n_seeds: int, predicted_sign: int) -> str:
    """The verdict on a claim that predicts a difference of sign ``predicted_sign`` (+1 or -1)."""
    if predicted_sign not in (1, -1):
        raise ValueError(f"predicted_sign must be 1 or -1, got {predicted_sign!r}")
    if n_seeds < MIN_SEEDS:
        return "exploratory"
    low, high = (predicted_sign * c for c in ci)
    low, high = min(low, high), max(low, high)
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "inconclusive"


def accuracy(result: dict) -> float:
    """Final-epoch test accuracy of a run, in percent."""
    return 100 * result["metrics"]["test_acc"]


def by_seed(results: Sequence[dict]) -> dict[int, dict]:
    seeds = [r["spec"]["train"]["seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"one run per seed expected, got seeds {seeds}")
    return dict(zip(seeds, results))


def compare(id: str, chapter: str, claim: str, a: Sequence[dict], b: Sequence[dict],
            predicted_sign: int = 1, measure: Callable[[dict], float] = accuracy) -> Finding:
    """The finding "b differs from a with sign ``predicted_sign``", paired by seed;
    ``measure(result)`` is the number compared, in percent (default: :func:`accuracy`)."""
    runs_a, runs_b = by_seed(a), by_seed(b)
    if sorted(runs_a) != sorted(runs_b):
        raise ValueError(f"{id}: the arms must share their seeds, got {sorted(runs_a)} and {sorted(runs_b)}")
    seeds = sorted(runs_a)
    return compare_pairs(id, chapter, claim, [(runs_a[s], runs_b[s]) for s in seeds], predicted_sign, measure,
                         "paired by seed, t interval")


def compare_pairs(id: str, chapter: str, claim: str, pairs: Sequence[tuple[dict, dict]], predicted_sign: int = 1,
                  measure: Callable[[dict], float] = accuracy, method: str = "paired, t interval") -> Finding:
    """The finding "b differs from a with sign ``predicted_sign``" from ``(a, b)`` pairs of
    runs that belong together (the same seed; or, in a born-again chain, teacher and
    descendant), one pair per independent replicate."""
    estimate, ci = paired([measure(a) for a, _ in pairs], [measure(b) for _, b in pairs])
    return Finding(id, chapter, claim, estimate, ci, len(pairs), verdict(ci, len(pairs), predicted_sign),
                   method, tuple(r["key"] for pair in zip(*pairs) for r in pair))


def contrast(id: str, chapter: str, claim: str, arms: dict[str, Sequence[dict]],
             weights: dict[str, int], predicted_sign: int = 1) -> Finding:
    """A contrast sum_k w_k acc_k computed seed by seed (e.g. a difference of differences)."""
    seeded = {name: by_seed(runs) for name, runs in arms.items()}
    seeds = sorted(set.intersection(*(set(s) for s in seeded.values())))
    values = [sum(w * accuracy(seeded[name][s]) for name, w in weights.items()) for s in seeds]
    estimate, ci = t_interval(values)
    keys = tuple(seeded[name][s]["key"] for name in arms for s in seeds)
    return Finding(id, chapter, claim, estimate, ci, len(seeds), verdict(ci, len(seeds), predicted_sign),
                   "contrast computed per seed, t interval", keys)


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Seed-to-seed standard deviation pooled over groups of repeated runs, and its
    degrees of freedom (the sum of each group's n - 1)."""
    groups = [list(g) for g in groups if len(g) > 1]
    if not groups:
        raise ValueError("groups must hold at least one group of 2 or more runs")
    dof = sum(len(g) - 1 for g in groups)
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / dof), dof


def single_seed(id: str, chapter: str, claim: str, a: Sequence[dict], b: Sequence[dict],
                noise: tuple[float, int], predicted_sign: int = 1) -> Finding:
    """``mean(b) - mean(a)`` for arms of one seed each (or means over single-seed cells):
    the interval uses the pooled seed noise ``(sd, dof)`` of one run; the verdict is
    exploratory, whatever the size."""
    sd, dof = noise
    estimate = statistics.fmean(map(accuracy, b)) - statistics.fmean(map(accuracy, a))
    half = stats.t.ppf(0.5 + LEVEL / 2, dof) * sd * math.sqrt(1 / len(a) + 1 / len(b))
    ci = (estimate - half, estimate + half)
    return Finding(id, chapter, claim, estimate, ci, 1, verdict(ci, 1, predicted_sign),
                   f"one seed per run; interval from the pooled seed noise ({dof} degrees of freedom)",
                   tuple(r["key"] for r in [*a, *b]))


# -----------------------------------------------------------------------------
# The registry: each finding from its chapter's plan. Registered once, here.

REGISTRY: dict[str, Callable] = {}


def register(id: str):
    def wrap(fn):
        if id in REGISTRY:
            raise ValueError(f"finding {id!r} is registered twice")
        REGISTRY[id] = fn
        return fn
    return wrap


def _runs(specs, get):
    return [get(s) for s in specs]


def _method(runs: Sequence[dict], method: str) -> list[dict]:
    return [r for r in runs if r["spec"]["train"]["method"] == method]


@register("kd-gain")
def _kd_gain(get) -> Finding:
    runs = _runs(experiments.plan_distilling(), get)
    return compare("kd-gain", "distilling", "KD (T = 4, alpha = 0.5) beats the same student trained alone",
                   _method(runs, "ce"), _method(runs, "kd"))


@register("fixed-vs-consistent-teacher")
def _teacher_view(get) -> Finding:
    plan = experiments.plan_teacher_view()
    return compare("fixed-vs-consistent-teacher", "distilling",
                   "a teacher run on the student's own crop (online) teaches better than the cached outputs "
                   "of the uncropped image", _runs(plan["cached"], get), _runs(plan["online"], get))


@register("patient-schedule")
def _patient_schedule(get) -> Finding:
    plan = experiments.plan_patient_schedule()
    return compare("patient-schedule", "distilling",
                   f"with {experiments.PATIENT_EPOCHS_FACTOR} times the epochs, distillation still beats the student "
                   "trained alone", _runs(plan["alone"], get), _runs(plan["kd"], get))


def omitted_class_accuracy(result: dict) -> float:
    """Test accuracy on the class left out of training, after its bias was raised, in percent."""
    return 100 * result["omitted_class"]["class_test_acc_after"]


@register("unseen-class")
def _unseen_class(get) -> Finding:
    plan = experiments.plan_unseen_class()
    return compare("unseen-class", "distilling",
                   "trained without a single cat, the distilled student recognises more test cats than the student "
                   "trained alone on the same images, after each one's cat bias is raised by the same rule",
                   _runs(plan["alone"], get), _runs(plan["kd"], get), measure=omitted_class_accuracy)


@register("guideline-small-student-T")
def _small_student_t(get) -> Finding:
    plan = experiments.plan_hyperparameters()
    sc = experiments.scale()
    grid_seed = sc.seeds[0]
    cells = {}
    for who, size in (("student", (16, 1)), ("small", experiments.SMALL_STUDENT)):
        for T in experiments.GUIDELINE_TEMPERATURES:
            seed0 = [s for s in plan["grid"] + plan["small"]
                     if (s.student_width, s.student_depth) == size and s.train.method == "kd"
                     and s.train.temperature == T and s.train.alpha == 0.5 and s.train.seed == grid_seed]
            others = [s for s in plan["small_t_seeds"]
                      if (s.student_width, s.student_depth) == size and s.train.temperature == T]
            cells[f"{who} T={T}"] = _runs(seed0 + others, get)
    return contrast("guideline-small-student-T", "hyperparameters",
                    "raising T from 4 to 8 helps the small student (8-16-32) more than the book's (16-32-64)",
                    cells, {"small T=8": 1, "small T=4": -1, "student T=8": -1, "student T=4": 1})


def _ls_teacher(T: float):
    def compute(get) -> Finding:
        plan = experiments.plan_variants()
        specs = [s for s in plan["ls_teacher"] + plan["ls_teacher_by_t"] if s.train.temperature == T]
        runs = _runs(specs, get)
        plain = [r for r in runs if r["spec"]["teacher"] == "book"]
        smoothed = [r for r in runs if r["spec"]["teacher"] == "book-ls"]
        return compare(f"ls-teacher-T{T:g}", "variants",
                       f"at T = {T:g}, a teacher trained with label smoothing distils worse than the plain teacher",
                       plain, smoothed, predicted_sign=-1)
    return compute


def _ls_teacher_temperatures() -> list[float]:
    return sorted({*experiments.LS_TEACHER_TEMPERATURES, 4.0})


for _T in _ls_teacher_temperatures():
    register(f"ls-teacher-T{_T:g}")(_ls_teacher(_T))


@register("label-smoothing-student")
def _label_smoothing(get) -> Finding:
    alone = _method(_runs(experiments.plan_distilling(), get), "ce")
    smoothed = _runs(experiments.plan_variants()["label_smoothing"], get)
    return compare("label-smoothing-student", "variants",
                   "label smoothing 0.1 alone improves the student (no teacher)", alone, smoothed)


@register("self-training")
def _self_training(get) -> Finding:
    alone = _method(_runs(experiments.plan_distilling(), get), "ce")
    pseudo = _runs(experiments.plan_variants()["self_training"], get)
    return compare("self-training", "variants",
                   "training on the teacher's hard predictions beats training on the labels",
                   alone, pseudo)


def seed_noise(get) -> tuple[float, int]:
    """The pooled seed-to-seed sd of one full run: the book's 3-seed groups of the
    default student (alone, KD, label smoothing, self-training)."""
    distilling = _runs(experiments.plan_distilling(), get)
    variants = experiments.plan_variants()
    groups = [_method(distilling, "ce"), _method(distilling, "kd"),
              _runs(variants["label_smoothing"], get), _runs(variants["self_training"], get)]
    return pooled_sd([[accuracy(r) for r in g] for g in groups])


def _named(runs: Sequence[dict], name: str) -> list[dict]:
    found = [r for r in runs if r["name"] == name]
    if len(found) != 1:
        raise LookupError(f"expected one run named {name!r}, found {len(found)}")
    return found


def _little_labels(pct: str):
    def compute(get) -> list[Finding]:
        specs = [s for s in experiments.plan_little_labels() if s.name.startswith(f"{pct} labels")]
        runs = [{**get(s), "name": s.name} for s in specs]
        alone, kd_ = _named(runs, f"{pct} labels, alone"), _named(runs, f"{pct} labels, KD")
        rest = _named(runs, f"{pct} labels, KD + soft targets on the rest")
        noise = seed_noise(get)
        return [single_seed(f"little-labels-kd-{pct[:-1]}", "little_labels",
                            f"with {pct} of the labels, KD beats the student trained on them alone",
                            alone, kd_, noise),
                single_seed(f"little-labels-unlabelled-{pct[:-1]}", "little_labels",
                            f"with {pct} of the labels, adding soft targets on the unlabelled rest beats KD on "
                            "the labelled images only", kd_, rest, noise)]
    return compute


for _pct in ("2%", "5%", "10%"):
    REGISTRY[f"little-labels-{_pct}"] = _little_labels(_pct)  # two findings each


def _hyper(get):
    plan = experiments.plan_hyperparameters()
    return {g: [{**get(s), "name": s.name} for s in specs] for g, specs in plan.items() if g != "small_t_seeds"}


@register("guideline-noisy-labels-alpha")
def _noisy_alpha(get) -> Finding:
    noise_runs = _hyper(get)["noise"]
    low, high = (sorted(_method(noise_runs, "kd"), key=lambda r: r["spec"]["train"]["alpha"])[i] for i in (0, -1))
    return single_seed("guideline-noisy-labels-alpha", "hyperparameters",
                       "with 40% noisy labels, a larger alpha (more weight on the labels) helps",
                       [low], [high], seed_noise(get))


@register("guideline-lower-lr")
def _lower_lr(get) -> Finding:
    lr_runs = sorted(_hyper(get)["lr"], key=lambda r: -r["spec"]["train"]["lr"])
    return single_seed("guideline-lower-lr", "hyperparameters",
                       "a 10x lower peak learning rate helps the distilled student", [lr_runs[0]], [lr_runs[1]],
                       seed_noise(get))


def _grid_means(get, axis: str):
    grid = _hyper(get)["grid"]
    other = "alpha" if axis == "temperature" else "temperature"
    values = sorted({r["spec"]["train"][axis] for r in grid})
    return {v: [r for r in grid if r["spec"]["train"][axis] == v] for v in values}, other


def _start(axis: str, default: float, label: str):
    def compute(get) -> Finding:
        groups, _ = _grid_means(get, axis)
        mean = {v: statistics.fmean(map(accuracy, rs)) for v, rs in groups.items()}
        best_other = max((v for v in groups if v != default), key=mean.get)
        return single_seed(f"guideline-start-{label}", "hyperparameters",
                           f"{label} = {default:g} is as good as the best other {label} tried "
                           f"({best_other:g}), averaged over the grid's other axis",
                           groups[best_other], groups[default], seed_noise(get))
    return compute


register("guideline-start-T")(_start("temperature", 4.0, "T"))
register("guideline-start-alpha")(_start("alpha", 0.5, "alpha"))


@register("born-again-same-seed-chain")
def _born_again_chain(get) -> Finding:
    gens = _runs(experiments.plan_variants()["born_again"], get)
    return single_seed("born-again-same-seed-chain", "variants",
                       "a born-again generation (T = 1, alpha = 0, same seed as its teacher, the 24k-parameter "
                       "student) beats generation 0", [gens[0]], [gens[-1]], seed_noise(get))


def _born_again(id: str, variant: str, generation: int):
    """Generation ``generation`` of each chain against that chain's generation 0, paired by
    chain (each generation has its own seed, so the runs pair by descent, not by seed)."""
    def compute(get) -> Finding:
        plan = experiments.plan_born_again()
        first = _runs(plan["generation_0"], get)
        per_chain = experiments.BAN_GENERATIONS
        later = _runs(plan[variant][generation - 1::per_chain], get)  # generation g of chains 0, 1, 2...
        loss = ("the previous generation's outputs only (BAN)" if variant == "ban"
                else "the previous generation's outputs and the labels, alpha = 0.5 (BAN+L)")
        return compare_pairs(id, "variants",
                             f"born-again generation {generation}, distilled at T = 1 from {loss} with its own seed, "
                             "beats generation 0 of its chain (the 290k-parameter student trained alone)",
                             list(zip(first, later)), method="paired by chain, t interval")
    return compute


for _id, _variant, _generation in (("born-again", "ban", 1), ("born-again-labels", "ban_labels", 1),
                                   ("born-again-gen3", "ban", 3), ("born-again-labels-gen3", "ban_labels", 3)):
    register(_id)(_born_again(_id, _variant, _generation))


def _beyond_hinton(method: str, label: str):
    def compute(get) -> Finding:
        selection = _runs(experiments.plan_beyond_hinton()["beta_selection"], get)
        runs = _runs(experiments.plan_beyond_hinton(beta=experiments.chosen_beta(selection))["methods"], get)
        return compare(f"{method}-vs-kd", "beyond_hinton", f"{label} beats Hinton's KD (T = 4, alpha = 0.5) on the "
                       "book's student, recipe and teacher", _method(runs, "kd"), _method(runs, method))
    return compute


register("dkd-vs-kd")(_beyond_hinton("dkd", "DKD (beta chosen on a validation split)"))
register("lskd-vs-kd")(_beyond_hinton("lskd", "logit-standardized KD (T = 2, weight 9)"))
register("ctkd-vs-kd")(_beyond_hinton("ctkd", "CTKD (temperature learned adversarially, from T = 4)"))


class MissingRun(LookupError):
    """A finding's run is not stored (raised by :func:`stored_only`)."""


def evaluate_all(get: Callable | None = None, pending: list[str] | None = None) -> list[Finding]:
    """Every registered finding, in registration order. With a ``pending`` list, a registry
    entry whose runs are not all stored (``get`` raises :class:`MissingRun`) is named there
    instead of computed: registered, not yet run."""
    out = []
    for id, compute in REGISTRY.items():
        try:
            found = compute(get or _run_or_train)
        except MissingRun:
            if pending is None:
                raise
            pending.append(id)
            continue
        out.extend(found if isinstance(found, list) else [found])
    ids = [f.id for f in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"finding ids must be unique, got {ids}")
    return out


def _run_or_train(spec, cifar=None) -> dict:
    return experiments.run(spec, cifar=cifar, progress=False)


def evaluate(id: str, get: Callable | None = None, *, cifar=None) -> Finding | list[Finding]:
    """Finding ``id`` from the active profile's runs (a list for a registry entry that
    yields several, e.g. ``little-labels-2%``); ``get(spec) -> result`` (default:
    :func:`kdbook.runs.run` on ``cifar``, loaded if not given, which trains a missing run)."""
    if id not in REGISTRY:
        raise ValueError(f"id must be one of {sorted(REGISTRY)}, got {id!r}")
    return REGISTRY[id](get or (lambda spec: _run_or_train(spec, cifar)))


_FINGERPRINTS: dict = {}  # teacher name -> weights fingerprint, filled by stored_only
_CIFAR = None  # the data, loaded once by stored_only


def stored_only(spec) -> dict:
    """A run's stored result, or :class:`MissingRun`: the findings command never trains."""
    global _CIFAR
    if _CIFAR is None:
        _CIFAR = load_cifar10()
    result = experiments.stored(spec, cifar=_CIFAR, fingerprints=_FINGERPRINTS)
    if result is None:
        raise MissingRun(f"no stored result for run {spec.name!r}: run its chapter's sweep first")
    return result


# -----------------------------------------------------------------------------
# The findings file and page.


def to_json(findings: Sequence[Finding]) -> str:
    return json.dumps([{**asdict(f), "ci": list(f.ci), "evidence": list(f.evidence)} for f in findings],
                      indent=1) + "\n"


def to_markdown(findings: Sequence[Finding], pending: Sequence[str] = ()) -> str:
    rows = [f"| `{f.id}` | {f.chapter} | {f.claim} | {f.estimate:+.2f} | "
            f"[{f.ci[0]:+.2f}, {f.ci[1]:+.2f}] | {f.n_seeds} | **{f.verdict}** |" for f in findings]
    return "\n".join([
        "# Findings at a glance",
        "",
        "<!-- Generated by `python -m kdbook.findings` from results/findings.json; do not edit. -->",
        "",
        "Every empirical verdict of the book, computed from the stored full-profile runs",
        "(CIFAR-10, JPEG q75 copy; this machine's CPU) by `python -m kdbook.findings`, which",
        "also writes `results/findings.json`. Estimates are differences in final-epoch test",
        "accuracy (for `unseen-class`: on the omitted class, after its bias is raised)",
        "in percentage points, paired by seed, with 95% intervals from the t",
        "distribution. A finding from fewer than 3 seeds is *exploratory* whatever its size;",
        "otherwise it is *supported* or *contradicted* when its interval excludes 0, and",
        "*inconclusive* when it does not.",
        "",
        "| id | chapter | claim | estimate (points) | 95% CI | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *([f"Registered but not yet run (their full-profile runs are not stored, so they state no verdict): "
           f"{', '.join(f'`{id}`' for id in pending)}.", ""] if pending else []),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compute every finding from the stored results.")
    parser.add_argument("--json", default=str(ROOT / "results" / "findings.json"))
    parser.add_argument("--page", default=str(ROOT / "book" / "findings.md"))
    parser.add_argument("--results", default=str(ROOT / "results"), help="the stored full-profile results")
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = parser.parse_args(argv)
    os.environ["KDBOOK_PROFILE"] = "full"
    os.environ["KDBOOK_RESULTS"] = args.results
    pending: list[str] = []
    findings = evaluate_all(stored_only, pending)
    files = {Path(args.json): to_json(findings), Path(args.page): to_markdown(findings, pending)}
    if args.check:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        print("up to date" if not stale else "stale: " + ", ".join(stale))
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text)
    for f in findings:
        print(f"{f.id}: {f.summary()}")
    for id in pending:
        print(f"{id}: not yet run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
