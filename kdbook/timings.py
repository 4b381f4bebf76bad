"""How long each experiment chapter takes to train from scratch, for readers who plan.

The CPU column is measured: the sum of the wall times (:func:`run_seconds`) of the
chapter's full-profile runs stored in the results folder, and the teachers' training
times from their provenance records. The GPU column is an estimate, not a
measurement, from a stated model of a T4 (Colab's free GPU): each run's training
arithmetic (counted, :func:`training_flops`) at an assumed sustained rate, plus an
assumed fixed cost per optimiser step (:data:`T4`). Once ``tools/gpu_check.sh`` has
timed a chapter on a real GPU, ``--gpu-check timings.txt`` puts that measurement in
its place.

::

    export KDBOOK_RESULTS=results                # the book's stored results
    python -m kdbook.timings                     # print the table
    python -m kdbook.timings --write book/_timings.md   # the table the instructors' page includes
    python -m kdbook.timings --check book/_timings.md   # exit 1 if the file is out of date

Reads results only; never trains anything.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdbook import settings
from kdbook.experiments import PLANS, flatten
from kdbook.models import StudentCNN, TeacherNet
from kdbook.report import markdown_table
from kdbook.runs import RunSpec
from kdbook.teacher import PROVENANCE_FILE, RECIPE, TeacherRecipe, ls_recipe, ls_teacher_file

IMAGES_PER_CLASS, CLASSES = 5000, 10  # CIFAR-10's training set


@dataclass(frozen=True)
class GpuModel:
    """The assumptions behind the GPU estimate (nothing here was measured on a GPU)."""

    name: str
    flops_per_s: float  # sustained training arithmetic, float16 autocast
    step_s: float  # fixed cost of one optimiser step: kernel launches and Python, whatever the batch

    def basis(self) -> str:
        return (f"estimated, not measured: counted training arithmetic (3 x forward FLOPs x images) at an "
                f"assumed sustained {self.flops_per_s / 1e12:g} TFLOP/s on a {self.name}, plus an assumed "
                f"{self.step_s * 1e3:g} ms per optimiser step; evaluation and data loading left out")


# A T4 peaks at 65 TFLOP/s in float16 on tensor cores; networks as narrow as these keep it
# far from that, so a tenth of the peak and lower is what to expect (assumed 4 TFLOP/s).
# A training step of these small networks runs on the order of a hundred GPU kernels
# (forward, backward, optimiser) at some 10-20 microseconds of launch cost each (assumed 2 ms).
T4 = GpuModel(name="T4", flops_per_s=4e12, step_s=2e-3)


# ---------------------------------------------------------------- arithmetic


@lru_cache(maxsize=None)
def forward_flops(kind: str, shape: tuple) -> int:
    """FLOPs of one forward pass on one 3x32x32 image (convolutions and matrix products,
    counted by torch's FlopCounterMode) of ``StudentCNN(*shape)`` or ``TeacherNet(shape)``."""
    model = StudentCNN(*shape) if kind == "student" else TeacherNet(shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def training_images(spec: RunSpec) -> int:
    """Images in one epoch of ``spec``'s run."""
    per_class = (spec.train_per_class or IMAGES_PER_CLASS) - (spec.validation_per_class or 0)
    images = per_class * (CLASSES - (spec.omit_class is not None))
    if spec.labelled_fraction is not None and not spec.train_on_unlabelled:
        images = round(images * spec.labelled_fraction)
    return images


def training_flops(kind: str, shape: tuple, images_per_epoch: int, epochs: int) -> int:
    """Training arithmetic: a backward pass costs about twice the forward pass."""
    return 3 * forward_flops(kind, shape) * images_per_epoch * epochs


def gpu_seconds(kind: str, shape: tuple, images_per_epoch: int, epochs: int, batch_size: int,
                gpu: GpuModel = T4) -> float:
    steps = epochs * max(1, images_per_epoch // batch_size)
    return training_flops(kind, shape, images_per_epoch, epochs) / gpu.flops_per_s + steps * gpu.step_s


def run_gpu_seconds(spec: RunSpec, gpu: GpuModel = T4) -> float:
    seconds = gpu_seconds("student", (spec.student_width, spec.student_depth), training_images(spec),
                          spec.train.epochs, spec.batch_size, gpu)
    if spec.teacher_view == "online":  # the teacher's forward pass on every training image, every epoch
        teacher_flops = forward_flops("teacher", tuple(RECIPE.widths)) * training_images(spec) * spec.train.epochs
        seconds += teacher_flops / gpu.flops_per_s
    return seconds


def teacher_gpu_seconds(recipe: TeacherRecipe, gpu: GpuModel = T4) -> float:
    return gpu_seconds("teacher", tuple(recipe.widths), IMAGES_PER_CLASS * CLASSES, recipe.train.epochs,
                       recipe.batch_size, gpu)


# ---------------------------------------------------------------- stored records


def _canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def stored_runs(results: Path) -> dict[str, dict]:
    """The full-profile results in ``results``, by their spec (one per spec)."""
    found: dict[str, dict] = {}
    for path in sorted(Path(results).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "spec" in record and record.get("provenance", {}).get("profile") == "full":
            found.setdefault(_canonical(record["spec"]), record)
    return found


@dataclass
class Row:
    what: str
    stored: int
    planned: int
    cpu_s: float
    gpu_s: float
    gpu_measured: str = ""  # the GPU's name where the GPU time was measured


def run_seconds(result: dict) -> float:
    """A stored run's recorded time: its wall time, or, for a run resumed from a checkpoint
    (whose wall time covers the last process only), at least the time of all its epochs."""
    return max(result["provenance"]["wall_s"], result["provenance"].get("train_wall_s", 0.0))


def chapter_rows(results: Path, gpu: GpuModel = T4, chapters=None) -> list[Row]:
    """One row per chapter of ``chapters`` (default: every plan of kdbook.experiments)."""
    runs = stored_runs(results)
    rows = []
    for chapter in chapters or PLANS:
        specs = flatten(PLANS[chapter]("full"))
        found = [runs[key] for key in dict.fromkeys(_canonical(s.config_dict()) for s in specs) if key in runs]
        rows.append(Row(chapter, len(found), len(specs), sum(map(run_seconds, found)),
                        sum(run_gpu_seconds(s, gpu) for s in specs)))
    return rows


def teacher_rows(results: Path, gpu: GpuModel = T4, shipped: Path = PROVENANCE_FILE) -> list[Row]:
    rows = []
    for what, record, recipe in (
        ("the book's teacher (shipped with the package; used by every chapter)", Path(shipped), RECIPE),
        ("the label-smoothing teacher (shipped with the package; variants, statistical view)",
         ls_teacher_file().with_suffix(".json"), ls_recipe()),
    ):
        cpu = json.loads(record.read_text())["train_wall_s"] if record.exists() else 0.0
        rows.append(Row(what, int(record.exists()), 1, cpu, teacher_gpu_seconds(recipe, gpu)))
    return rows


def measured_on_gpu(timings_txt: Path) -> dict[str, float]:
    """``{chapter: seconds}`` from the timings table of ``tools/gpu_check.sh`` run on a GPU in
    the full profile (empty for its CPU or quick-profile rehearsals)."""
    text = Path(timings_txt).read_text()
    if not re.search(r"^step \(cuda\b.*profile full\)", text, re.MULTILINE):
        return {}
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^chapter sweep: (\S+)\s+([0-9.]+)\s*$", text, re.MULTILINE)}


# ---------------------------------------------------------------- the table


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table(gpu_check: Path | None = None, gpu: GpuModel = T4, chapters=None) -> str:
    """The Markdown table of chapters and teachers, with a note on each column, from the
    results folder (``KDBOOK_RESULTS``: a chapter's plan may depend on what is stored there)."""
    results = settings.results_dir()
    rows = chapter_rows(results, gpu, chapters) + teacher_rows(results, gpu)
    measured = measured_on_gpu(gpu_check) if gpu_check is not None else {}
    for row in rows:
        if row.what in measured:
            row.gpu_s, row.gpu_measured = measured[row.what], "measured"
    devices = sorted({r["provenance"]["device"] for r in stored_runs(results).values()})
    body = markdown_table(
        ("to train from scratch", "runs stored", "CPU, measured", f"GPU ({gpu.name}), estimated"),
        [(r.what, f"{r.stored} of {r.planned}", duration(r.cpu_s) if r.stored else "not yet run",
          duration(r.gpu_s) + (" (measured)" if r.gpu_measured else "")) for r in rows])
    notes = (f"CPU: the wall time recorded with each stored full-profile run (data preparation, teacher "
             f"outputs, training and evaluation), summed; measured on {'; '.join(devices) or 'no device yet'}; "
             f"a run that shared the CPU with other jobs, or was paused, recorded the longer time. "
             f"GPU: {gpu.basis()}, for every planned run.")
    return body + "\n\n" + notes + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbook.timings", description=__doc__.split("\n")[0])
    parser.add_argument("--gpu-check", type=Path, default=None, help="timings.txt of tools/gpu_check.sh on a GPU")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", type=Path, help="write the table to this Markdown file")
    what.add_argument("--check", type=Path, help="exit 1 unless this file holds the current table")
    args = parser.parse_args(argv)
    text = table(args.gpu_check)
    if args.write:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
    elif args.check:
        if not args.check.exists() or args.check.read_text(encoding="utf-8") != text:
            print(f"{args.check} is out of date: run `python -m kdbook.timings --write {args.check}`")
            return 1
        print(f"{args.check} agrees with the stored results")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
