"""The instructors' gradebook (``tools/grade.py``) on a small class.

The class works on a purpose-made notebook with two tiny exercises (not a whole
chapter), so that grading takes seconds: a right answer (in a student's folder, reading
a file that lies next to it), an untouched student copy, a wrong answer, a file that is
not a notebook, a misnamed file, a notebook that crashes its kernel; then, with a short
timeout, a notebook that loops forever.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import sys
from pathlib import Path

import nbformat
import pytest

import student  # tools/student.py (tests/conftest.py puts tools/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("grade", ROOT / "tools" / "grade.py")
grade = importlib.util.module_from_spec(spec)
sys.modules["grade"] = grade  # (dataclasses look their module up there)
spec.loader.exec_module(grade)

CHECK = """from kdbook.exercises import check_function

print(check_function("{label}", {name}, lambda x: {reference}, [{{"x": 1}}, {{"x": 3}}]))"""


def exercise_notebook() -> nbformat.NotebookNode:
    """The answer key: two exercises, each a solution cell and a check cell."""
    nb = nbformat.v4.new_notebook()
    for label, name, reference in (("ex-double", "double", "2 * x"), ("ex-square", "square", "x * x")):
        nb.cells += [
            nbformat.v4.new_markdown_cell(f"```{{exercise}} {name}\n:label: {label}\n\nWrite `{name}(x)`.\n```"),
            nbformat.v4.new_code_cell(f"def {name}(x):\n    return {reference}", metadata={"tags": ["solution"]}),
            nbformat.v4.new_code_cell(CHECK.format(label=label, name=name, reference=reference),
                                      metadata={"tags": ["check"]}),
        ]
    return nb


def with_solution(nb, name: str, source: str):
    """``nb`` with the solution (or stub) cell defining ``name`` replaced by ``source``."""
    nb = nbformat.from_dict(nb)
    cell = next(c for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source
                and "check" not in c.metadata.get("tags", []))
    cell.source = source
    return nb


def run_grade(folder: Path, out: Path, timeout: float) -> dict[tuple[str, str], tuple[str, str]]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert grade.main([str(folder), "--out", str(out), "--timeout", str(timeout)]) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == list(grade.COLUMNS)
    assert all(r["status"] in grade.STATUSES for r in rows)
    return {(r["submission"], r["exercise"]): (r["status"], r["message"]) for r in rows}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_class_gets_one_row_per_submission_and_exercise(tmp_path):
    key = exercise_notebook()
    copy = student.student_version(key, default_label="tiny")
    class_ = tmp_path / "submissions"
    (class_ / "alice").mkdir(parents=True)
    # Alice's answer reads a file next to her notebook, and writes one (into the copy only).
    (class_ / "alice" / "factor.txt").write_text("2")
    alice = with_solution(copy, "double",
                          "def double(x):\n    return int(open('factor.txt').read()) * x\n\n"
                          "open('scratch.txt', 'w').write('written while grading')")
    alice = with_solution(alice, "square", "def square(x):\n    return x ** 2")
    nbformat.write(alice, class_ / "alice" / "tiny.ipynb")
    nbformat.write(copy, class_ / "bob.ipynb")  # untouched student copy
    carol = with_solution(copy, "double", "def double(x):\n    return x + 2")  # wrong
    nbformat.write(with_solution(carol, "square", "def square(x):\n    return x * x"), class_ / "carol.ipynb")
    (class_ / "dave.pdf").write_bytes(b"%PDF-1.4 my answers")
    (class_ / "erin.ipynb").write_text("these are my answers, not a notebook")
    crash = nbformat.from_dict(copy)
    crash.cells.insert(0, nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    nbformat.write(crash, class_ / "frank.ipynb")
    before = snapshot(class_)

    grades = run_grade(class_, tmp_path / "gradebook.csv", timeout=120)

    assert grades[("alice/tiny.ipynb", "ex-double")] == ("passed", "ex-double: all 2 checks passed")
    assert grades[("alice/tiny.ipynb", "ex-square")] == ("passed", "ex-square: all 2 checks passed")
    status, message = grades[("bob.ipynb", "ex-double")]
    assert status == "unsolved" and "ex-double" in message and "not solved yet" in message
    assert grades[("bob.ipynb", "ex-square")][0] == "unsolved"
    status, message = grades[("carol.ipynb", "ex-double")]
    assert status == "failed" and message.startswith("ex-double:") and "expected 2, got 3" in message
    assert grades[("carol.ipynb", "ex-square")][0] == "passed"
    assert grades[("dave.pdf", "")][0] == "error" and "not a notebook" in grades[("dave.pdf", "")][1]
    assert grades[("erin.ipynb", "")][0] == "error" and "not a readable notebook" in grades[("erin.ipynb", "")][1]
    for label in ("ex-double", "ex-square"):
        status, message = grades[("frank.ipynb", label)]
        assert status == "error" and "kernel died" in message
    assert len(grades) == 10
    assert snapshot(class_) == before  # graded in temporary copies: nothing written there


def test_a_notebook_that_never_ends_times_out_and_the_batch_goes_on(tmp_path):
    class_ = tmp_path / "submissions"
    class_.mkdir()
    loop = student.student_version(exercise_notebook(), default_label="tiny")
    loop.cells.insert(0, nbformat.v4.new_code_cell("while True:\n    pass"))
    nbformat.write(loop, class_ / "a-loop.ipynb")
    (class_ / "b-notes.txt").write_text("graded after the loop")

    grades = run_grade(class_, tmp_path / "gradebook.csv", timeout=3)
    for label in ("ex-double", "ex-square"):
        status, message = grades[("a-loop.ipynb", label)]
        assert status == "timeout" and "within 3 s" in message
    assert grades[("b-notes.txt", "")][0] == "error"


def test_labels_of_check_cells_and_exercises_without_a_check():
    key = exercise_notebook()
    checks, missing = grade.exercise_cells(key)
    assert list(checks.values()) == ["ex-double", "ex-square"] and missing == []
    copy = student.student_version(key, default_label="tiny")
    copy.cells[0].source = "Exercise boxes removed by the student."  # the stub's header still names it
    copy.cells = [c for c in copy.cells if not (c.source.startswith("from kdbook") and "ex-square" in c.source)]
    checks, missing = grade.exercise_cells(copy)
    assert list(checks.values()) == ["ex-double"] and missing == ["ex-square"]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit) as exit_, contextlib.redirect_stderr(io.StringIO()):
        grade.main([str(tmp_path / "absent"), "--out", str(tmp_path / "g.csv")])
    assert exit_.value.code == 2
