"""Student copies and answer keys of the chapters.

::

    python tools/student.py OUT_DIR                 # student copies of every chapter
    python tools/student.py OUT_DIR --answer-key    # answer keys instead
    python tools/student.py OUT_DIR book/formulation.ipynb   # only the notebooks named

A **student copy** is the chapter with

- every code cell tagged ``solution`` replaced by a stub: the same top-level imports,
  functions (same signatures and docstrings) and classes, whose bodies call
  :func:`kdbook.exercises.placeholder` with the exercise's label, which raises
  :class:`kdbook.exercises.Unsolved`; other top-level statements of the solution are
  left out;
- every ``{solution}`` block (sphinx-exercise, also the gated
  ``{solution-start}``/``{solution-end}`` form) removed from the Markdown cells;
- the ``check`` cells kept, so a student runs the same checks as the book;
- all outputs cleared.

Run from the top, a student copy stops at its first check whose solution is still a
placeholder (the check raises ``Unsolved``).

An **answer key** is the chapter as it is, with all outputs cleared.

The label of a solution cell's exercise is its metadata ``kdbook: {exercise: LABEL}``
if set, else the ``:label:`` of the last ``{exercise}`` directive above it.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_TAG = "solution"
CHECK_TAG = "check"
# Tags of a solution cell that make no sense on its stub (the stub is for editing).
DROPPED_TAGS = {SOLUTION_TAG, "hide-input", "hide-cell", "remove-input", "remove-cell"}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,}|:{3,})\s*\{(?P<name>[\w-]+)\}(?P<rest>.*)$")
_LABEL = re.compile(r"^\s*:label:\s*(?P<label>\S+)\s*$")


# ---------------------------------------------------------------- markdown

def _directive_blocks(lines: list[str]):
    """Yields ``(name, argument, start, end, body_lines)`` for each top-level MyST
    directive fence in ``lines`` (``end`` is the index of its closing line, or the last
    line when it is never closed, as in CommonMark)."""
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match.group("fence")
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        end = min(end, len(lines) - 1)
        yield match.group("name"), match.group("rest").strip(), i, end, lines[i + 1:end]
        i = end + 1


def remove_solutions(markdown: str) -> str:
    """The Markdown without its ``{solution}`` blocks (and gated solutions)."""
    lines = markdown.split("\n")
    drop: set[int] = set()
    gated_start = None
    for name, _, start, end, _ in _directive_blocks(lines):
        if name == "solution":
            drop.update(range(start, end + 1))
        elif name == "solution-start":
            gated_start = start
        elif name == "solution-end" and gated_start is not None:
            drop.update(range(gated_start, end + 1))
            gated_start = None
    if gated_start is not None:  # a gated solution that ends in a later cell
        drop.update(range(gated_start, len(lines)))
    kept = [line for k, line in enumerate(lines) if k not in drop]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")


def exercise_labels(markdown: str) -> list[str]:
    """The ``:label:`` of each ``{exercise}`` directive, in order."""
    labels = []
    for name, _, _, _, body in _directive_blocks(markdown.split("\n")):
        if name in ("exercise", "exercise-start"):
            labels.extend(m.group("label") for m in map(_LABEL.match, body) if m)
    return labels


# ---------------------------------------------------------------- code

def _stub_body(node: ast.AST, call: ast.stmt) -> list[ast.stmt]:
    docstring = ast.get_docstring(node, clean=False)
    body = [ast.Expr(ast.Constant(docstring))] if docstring is not None else []
    return body + [copy.deepcopy(call)]


def stub_source(source: str, exercise: str) -> str:
    """A stub for a solution cell: its imports, and its functions and classes with the
    same signatures whose bodies call ``kdbook.exercises.placeholder(exercise)``."""
    call = ast.parse(f"kdbook.exercises.placeholder({exercise!r})").body[0]
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics and the like: the whole cell becomes the placeholder
        tree = ast.Module(body=[], type_ignores=[])
    kept: list[ast.stmt] = []
    left_out = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            kept.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.body = _stub_body(node, call)
            kept.append(node)
        elif isinstance(node, ast.ClassDef):
            docstring = ast.get_docstring(node, clean=False)
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for method in methods:
                method.body = _stub_body(method, call)
            node.body = ([ast.Expr(ast.Constant(docstring))] if docstring is not None else []) + methods
            if not node.body:
                node.body = [ast.Pass()]
            kept.append(node)
        else:
            left_out += 1
    header = [f"# Exercise {exercise}: replace each placeholder below with your code."]
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in kept):
        kept.append(copy.deepcopy(call))
    elif left_out:
        header.append("# (After the definitions, add the code the exercise asks for.)")
    parts = ["import kdbook.exercises"] + [ast.unparse(node) for node in kept]
    return "\n".join(header) + "\n" + "\n\n\n".join(parts)


# ---------------------------------------------------------------- notebooks

def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def clear_outputs(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)  # widget state belongs to outputs


def answer_key(nb):
    """The notebook with its outputs cleared (a copy)."""
    nb = copy.deepcopy(nb)
    clear_outputs(nb)
    return nb


def student_version(nb, default_label: str = "exercise"):
    """The student copy of a notebook (a copy; see the module's docstring)."""
    nb = copy.deepcopy(nb)
    label = default_label
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            labels = exercise_labels(cell.source)
            if labels:
                label = labels[-1]
            cell.source = remove_solutions(cell.source)
        elif cell.cell_type == "code" and SOLUTION_TAG in _tags(cell):
            exercise = cell.metadata.get("kdbook", {}).get("exercise", label)
            cell.source = stub_source(cell.source, exercise)
            tags = [t for t in _tags(cell) if t not in DROPPED_TAGS] + ["exercise"]
            cell.metadata["tags"] = tags
    nb.cells = [c for c in nb.cells if not (c.cell_type == "markdown" and not c.source.strip())]
    clear_outputs(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/student.py",
        description="Write student copies (solutions replaced by placeholders, checks kept, "
                    "outputs cleared) or answer keys (outputs cleared) of the chapters.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the notebooks to (created)")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to convert (default: every notebook under book/)")
    parser.add_argument("--answer-key", action="store_true", help="write answer keys instead")
    args = parser.parse_intermixed_args(argv)

    paths = args.notebooks or sorted(
        p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if args.answer_key:
            out = answer_key(nb)
        else:
            out = student_version(nb, default_label=path.stem)
        nbformat.validate(out)
        target = args.out_dir / path.name
        nbformat.write(out, target)
        solutions = sum(SOLUTION_TAG in _tags(c) for c in nb.cells)
        checks = sum(CHECK_TAG in _tags(c) for c in nb.cells)
        kind = "answer key" if args.answer_key else "student copy"
        print(f"{target}: {kind} of {path.name} ({solutions} solution cells, {checks} check cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
