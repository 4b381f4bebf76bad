"""kdbook.timings: per-chapter training times from the stored provenance records, and the
GPU estimate's arithmetic."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from kdbook import timings
from kdbook.experiments import plan_distilling
from kdbook.teacher import PROVENANCE_FILE, RECIPE, ls_teacher_file

ROOT = Path(__file__).resolve().parent.parent


def student_flops_by_hand(width: int) -> int:
    """StudentCNN(width, 1): three 3x3 convolutions (3 -> w at 32x32, w -> 2w at 16x16,
    2w -> 4w at 8x8) and a linear head, 2 FLOPs per multiply-add."""
    convs = [(3, width, 32), (width, 2 * width, 16), (2 * width, 4 * width, 8)]
    return sum(2 * c_in * c_out * 9 * size * size for c_in, c_out, size in convs) + 2 * 4 * width * 10


@pytest.mark.parametrize("width", [8, 16])
def test_forward_flops_are_counted(width):
    assert timings.forward_flops("student", (width, 1)) == student_flops_by_hand(width)


def test_gpu_estimate_of_a_run():
    spec = plan_distilling("full")[0]
    flops = 3 * student_flops_by_hand(16) * 50_000 * 15
    steps = 15 * (50_000 // 256)
    assert timings.run_gpu_seconds(spec) == pytest.approx(flops / 4e12 + steps * 2e-3, rel=1e-12)


def write_result(folder: Path, name: str, spec, wall_s: float, profile: str = "full",
                 train_wall_s: float | None = None) -> None:
    record = {"name": spec.name, "spec": spec.config_dict(), "provenance": {
        "profile": profile, "device": "cpu (test)", "wall_s": wall_s,
        "train_wall_s": wall_s / 2 if train_wall_s is None else train_wall_s}}
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_cpu_times_sum_the_stored_full_profile_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBOOK_RESULTS", str(tmp_path))
    specs = plan_distilling("full")
    write_result(tmp_path, "a", specs[0], 40.0)
    # Resumed from a checkpoint: its wall time covers the last process, its epochs took 45 s.
    write_result(tmp_path, "b", specs[1], 20.0, train_wall_s=45.0)
    write_result(tmp_path, "c", specs[2], 1000.0, profile="quick")  # not the book's run
    (tmp_path / "bench-cpu.json").write_text('{"torch": "x"}')  # not a run

    (row,) = timings.chapter_rows(tmp_path, chapters=["distilling"])
    assert (row.stored, row.planned, row.cpu_s) == (2, len(specs), 85.0)
    assert row.gpu_s == pytest.approx(sum(timings.run_gpu_seconds(s) for s in specs))
    book, ls = timings.teacher_rows(tmp_path)
    assert book.cpu_s == json.loads(PROVENANCE_FILE.read_text())["train_wall_s"]
    assert ls.cpu_s == json.loads(ls_teacher_file().with_suffix(".json").read_text())["train_wall_s"]  # shipped
    assert book.gpu_s == pytest.approx(timings.teacher_gpu_seconds(RECIPE))

    text = timings.table(chapters=["distilling"])
    assert "| distilling | 2 of 6 | 85 s |" in text and "not measured" in text and "T4" in text
    gpu_check = tmp_path / "timings.txt"
    gpu_check.write_text("step (cuda, autocast float16, profile full)          seconds\n"
                         "benchmark (python -m kdbook.bench)                       40.0\n"
                         "chapter sweep: distilling                               123.4\n")
    assert timings.measured_on_gpu(gpu_check) == {"distilling": 123.4}
    assert "| 2 min (measured) |" in timings.table(gpu_check, chapters=["distilling"])
    gpu_check.write_text(gpu_check.read_text().replace("cuda", "cpu"))  # a CPU rehearsal measures no GPU
    assert timings.measured_on_gpu(gpu_check) == {}


def test_durations():
    assert [timings.duration(s) for s in (5, 89.4, 90, 3000, 5400, 9000)] == \
        ["5 s", "89 s", "2 min", "50 min", "1.5 h", "2.5 h"]


def test_the_instructors_table_agrees_with_the_stored_results(monkeypatch):
    """book/_timings.md is written by `KDBOOK_RESULTS=results python -m kdbook.timings
    --write book/_timings.md`; rerun it after storing new results."""
    monkeypatch.setenv("KDBOOK_RESULTS", str(ROOT / "results"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = timings.main(["--check", str(ROOT / "book" / "_timings.md")])
    assert code == 0, out.getvalue()
