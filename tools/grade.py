"""A gradebook for instructors: runs every submitted notebook and records each exercise's check.

::

    python tools/grade.py SUBMISSIONS_DIR --out gradebook.csv [--timeout SECONDS]

Submissions are code. Grading runs them: do it in a container or on a throwaway
machine, never where a notebook could reach anything you care about.

What counts as a submission: every ``*.ipynb`` under SUBMISSIONS_DIR (hidden folders
and ``.ipynb_checkpoints`` left out), and every other file directly in SUBMISSIONS_DIR
(a submission that is not a notebook gets an ``error`` row). A notebook directly in
SUBMISSIONS_DIR runs alone in an empty temporary folder; one in a subfolder (a
student's folder) runs in a temporary copy of that folder, so it finds the files next
to it. Nothing is written to SUBMISSIONS_DIR.

Each notebook runs from the top in a fresh kernel, one cell at a time, past cells that
fail, until its time (``--timeout`` seconds for the whole notebook) runs out. Its
exercises are its ``check`` cells (the cells a student copy keeps, see
``tools/student.py``), each named by the exercise label the student copy carries (the
stub's ``# Exercise LABEL:`` line, the cell's ``kdbook.exercise`` metadata, or the
``:label:`` of the last ``{exercise}`` box above it). The CSV has one row per
(submission, exercise), with columns ``submission, exercise, status, message``:

- ``passed``: the check cell ran; message: its first printed line ("... all N checks passed");
- ``failed``: the checker raised ``ExerciseFailure``; message: the first line of its feedback;
- ``unsolved``: a placeholder raised ``Unsolved`` (the stub was left in place);
- ``error``: anything else: the check raised another exception (e.g. ``NameError`` when
  the solution cell did not run), the kernel died, the notebook has no check cell, or
  the file is not a notebook (exercise left empty);
- ``timeout``: the notebook's time ran out before this check ran or finished.

The exit status is 0 when every submission was graded (whatever the grades), 2 on bad
arguments. It needs nbformat and nbclient (in requirements.txt, not in the package).
Exercises do not depend on the run profile, so the notebooks run in the ``quick``
profile unless ``KDBOOK_PROFILE`` is set.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from student import CHECK_TAG, SOLUTION_TAG, exercise_labels

STATUSES = ("passed", "failed", "unsolved", "error", "timeout")
COLUMNS = ("submission", "exercise", "status", "message")
# A code exercise's cell: the stub in a student copy ("exercise"), the solution in the book.
EXERCISE_TAGS = ("exercise", SOLUTION_TAG)
# Exception names that the checkers of kdbook.exercises raise.
FAILURE, UNSOLVED = "ExerciseFailure", "Unsolved"
_STUB_HEADER = re.compile(r"^# Exercise (\S+): ")  # first line of a stub (student.stub_source)


@dataclass
class Row:
    submission: str
    exercise: str
    status: str
    message: str


# ---------------------------------------------------------------- which cells are checks


def exercise_cells(nb) -> tuple[dict[int, str], list[str]]:
    """``({index of a check cell: its exercise label}, [labels of exercises without a check])``."""
    label, checks, stubs = "", {}, []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            label = (exercise_labels(cell.source) or [label])[-1]
            continue
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if any(tag in tags for tag in EXERCISE_TAGS):
            header = _STUB_HEADER.match(cell.source)
            label = cell.metadata.get("kdbook", {}).get("exercise") or (header.group(1) if header else label)
            stubs.append(label or f"cell {index}")
        if CHECK_TAG in tags:
            checks[index] = label or f"cell {index}"
    return checks, [s for s in dict.fromkeys(stubs) if s not in checks.values()]


# ---------------------------------------------------------------- running one notebook


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _verdict(cell, error: CellExecutionError | None, earlier: str) -> tuple[str, str]:
    """(status, message) of a check cell that ran."""
    if error is None:
        return "passed", _first_line(_printed(cell))
    if error.ename == FAILURE:
        return "failed", _first_line(error.evalue)
    if error.ename == UNSOLVED:
        return "unsolved", _first_line(error.evalue)
    message = f"{error.ename}: {_first_line(error.evalue)}"
    return "error", message + (f" (after {earlier})" if earlier else "")


def run_notebook(nb, workdir: Path, timeout: float, kernel: str) -> dict[int, tuple[str, str]]:
    """Executes ``nb`` in ``workdir``; returns ``{check cell index: (status, message)}``."""
    checks, _ = exercise_cells(nb)
    verdicts: dict[int, tuple[str, str]] = {}
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, startup_timeout=max(timeout, 1),
                            shutdown_kernel="immediate", resources={"metadata": {"path": str(workdir)}})
    deadline = time.monotonic() + timeout
    earlier = ""  # the first failure of a cell that is not a check, to explain later errors
    stopped = None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                client.timeout = max(1, int(deadline - time.monotonic() + 0.999))
                try:
                    client.execute_cell(cell, index)
                    error = None
                except CellExecutionError as err:
                    error = err
                if index in checks:
                    verdicts[index] = _verdict(cell, error, earlier)
                elif error is not None and not earlier:
                    earlier = f"cell {index} raised {error.ename}: {_first_line(error.evalue)}"
    except (CellTimeoutError, TimeoutError) as err:
        stopped = ("timeout", f"the notebook did not finish within {timeout:g} s ({type(err).__name__})")
    except DeadKernelError:
        stopped = ("error", "the kernel died (the notebook crashed its Python process)")
    except RuntimeError as err:  # e.g. the kernel did not start
        stopped = ("error", f"could not run the notebook: {_first_line(err)}")
    for index in checks:
        if index not in verdicts:
            verdicts[index] = stopped or ("error", "this check cell did not run")
    return verdicts


def _workspace(path: Path, submissions: Path, into: Path) -> Path:
    """A temporary copy of the notebook's folder (only the notebook when it lies directly
    in the submissions folder, which holds everyone's work)."""
    workdir = into / "work"
    if path.parent.resolve() == submissions.resolve():
        workdir.mkdir()
    else:
        shutil.copytree(path.parent, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return workdir


def grade_notebook(path: Path, submissions: Path, timeout: float, kernel: str) -> list[Row]:
    name = path.relative_to(submissions).as_posix()
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 (whatever the file is, it gets its row)
        return [Row(name, "", "error", f"not a readable notebook: {type(err).__name__}: {_first_line(err)}")]
    checks, without_check = exercise_cells(nb)
    rows = [Row(name, label, "error", "its check cell is missing") for label in without_check]
    if not checks:
        return rows or [Row(name, "", "error", "no check cells: is this a student copy of a chapter?")]
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        workdir = _workspace(path, submissions, Path(tmp))
        verdicts = run_notebook(nb, workdir, timeout, kernel)
    return [Row(name, checks[i], *verdicts[i]) for i in sorted(checks)] + rows


# ---------------------------------------------------------------- the class


def submissions_in(folder: Path) -> list[Path]:
    """Every notebook under ``folder`` and every other file directly in it, sorted."""
    def hidden(path: Path) -> bool:
        return any(part.startswith(".") for part in path.relative_to(folder).parts)

    notebooks = [p for p in folder.rglob("*.ipynb") if p.is_file() and not hidden(p)]
    others = [p for p in folder.iterdir() if p.is_file() and p.suffix != ".ipynb" and not hidden(p)]
    return sorted(notebooks + others)


def grade(folder: Path, timeout: float, kernel: str = "python3", log=print) -> list[Row]:
    rows: list[Row] = []
    for path in submissions_in(folder):
        if path.suffix != ".ipynb":
            found = [Row(path.relative_to(folder).as_posix(), "", "error",
                         f"not a notebook ({path.suffix or 'no extension'}): submit the .ipynb file")]
        else:
            found = grade_notebook(path, folder, timeout, kernel)
        for row in found:
            log(f"{row.submission}\t{row.exercise or '-'}\t{row.status}\t{row.message}")
        rows.extend(found)
    return rows


def write_csv(rows: list[Row], out: Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows((r.submission, r.exercise, r.status, r.message) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/grade.py", description=__doc__.split("\n")[0])
    parser.add_argument("submissions", type=Path, help="folder of submitted notebooks (or of students' folders)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV gradebook to write")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per notebook (default 600)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel to run them in (default python3)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"SUBMISSIONS_DIR {args.submissions} is not a folder")
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    os.environ.setdefault("KDBOOK_PROFILE", "quick")  # the kernels inherit it
    rows = grade(args.submissions, args.timeout, args.kernel)
    write_csv(rows, args.out)
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    print(f"{args.out}: {len(rows)} rows from {len({r.submission for r in rows})} submissions; "
          + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
