"""Student copies and answer keys (``tools/student.py``), and how solutions are hidden.

The run tests execute a chapter's student copy and answer key with nbclient. To keep
them short they leave out the sections that train networks (the ones
``colab.trains_networks`` of ``tools/colab.py`` recognises), which the exercises do not use; the
nbval run of the chapter itself executes everything.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
import types
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import colab  # tools/ (tests/conftest.py puts it on sys.path)
import student

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = colab.notebooks(ROOT / "book")
WITH_SOLUTIONS = [p for p in NOTEBOOKS
                  if any(student.SOLUTION_TAG in c.metadata.get("tags", [])
                         for c in nbformat.read(p, as_version=4).cells)]
HIDING_TAGS = {"hide-input", "hide-cell", "remove-input", "remove-cell"}  # dropped in student copies


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def _tags(cell):
    return cell.metadata.get("tags", [])


def _top_level_signatures(source: str) -> dict[str, str]:
    """``{name: unparsed arguments}`` of the top-level functions (and class methods)."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = ast.unparse(node.args)
        elif isinstance(node, ast.ClassDef):
            for method in node.body:
                if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{method.name}"] = ast.unparse(method.args)
    return found


# ---------------------------------------------------------------- pieces

def test_stub_keeps_signatures_docstrings_and_imports():
    source = '''import torch
from torch import nn

def f(a, b=2, *args, c: int = 3, **kw) -> float:
    """Docstring kept."""
    return a + b

class Model(nn.Module):
    """A model."""
    def forward(self, x):
        return x * 2

answer = f(1)
print(answer)'''
    stub = student.stub_source(source, "ex-demo")
    assert "return a + b" not in stub and "x * 2" not in stub and "answer" not in stub
    assert _top_level_signatures(stub) == _top_level_signatures(source)
    assert "Docstring kept." in stub and "A model." in stub
    assert "import torch" in stub and "from torch import nn" in stub
    assert stub.count("kdbook.exercises.placeholder('ex-demo')") == 2
    assert stub.startswith("# Exercise ex-demo:")
    namespace: dict = {}
    exec(compile(stub, "<stub>", "exec"), namespace)
    with pytest.raises(Exception, match="ex-demo.*not solved yet"):
        namespace["f"](1)


def test_stub_of_a_solution_without_definitions_is_the_placeholder():
    stub = student.stub_source("x = 1\nprint(x)", "ex-demo")
    assert stub.rstrip().endswith("kdbook.exercises.placeholder('ex-demo')")
    stub = student.stub_source("%timeit f(1)", "ex-demo")  # not Python: all of it goes
    assert "timeit" not in stub and "placeholder('ex-demo')" in stub


def test_remove_solutions_handles_fences_nesting_and_gated_solutions():
    markdown = '''## Exercises

```{exercise} One
:label: ex-one

Do it.
```

````{solution} ex-one
:class: dropdown

Text with code:

```python
x = 1
```
````

:::{solution} ex-one
Colon fence.
:::

```{solution-start} ex-one
```
Gated text.
```{solution-end}
```

After.'''
    out = student.remove_solutions(markdown)
    assert "Do it." in out and "After." in out and "{exercise} One" in out
    for gone in ("solution", "x = 1", "Colon fence", "Gated text", "Text with code"):
        assert gone not in out
    assert student.exercise_labels(markdown) == ["ex-one"]


# ---------------------------------------------------------------- every chapter

@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_derivation_solutions_are_dropdowns(path):
    """Folded on the website. (Solution code cells are folded by tools/site_fixes.py at
    build time, which tests/test_site.py checks on the built pages.)"""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for name, argument, _, _, body in student._directive_blocks(cell.source.split("\n")):
                if name == "solution":
                    assert any(re.match(r"\s*:class:.*\bdropdown\b", line) for line in body), \
                        f"{path.name}: solution to {argument} is not a dropdown"


def test_site_fixes_fold_solutions_and_unquote_glued_strings():
    spec = importlib.util.spec_from_file_location("site_fixes", ROOT / "tools" / "site_fixes.py")
    site_fixes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site_fixes)
    nb = nbformat.v4.new_notebook()
    glued = nbformat.v4.new_output("display_data", {"application/papermill.record/text/plain": "'70.81'"},
                                   metadata={"scrapbook": {"name": "acc", "mime_prefix": "application/papermill.record/"}})
    printed = nbformat.v4.new_output("stream", name="stdout", text="'quoted' on purpose\n")
    nb.cells = [nbformat.v4.new_code_cell("def f(): pass", metadata={"tags": ["solution"]}),
                nbformat.v4.new_code_cell("g()", metadata={"tags": ["solution", "remove-cell"]}),
                nbformat.v4.new_code_cell("print(f())", metadata={"tags": ["check"]}),
                nbformat.v4.new_code_cell("glue('acc', '70.81')", outputs=[glued, printed])]
    app = types.SimpleNamespace(env=types.SimpleNamespace(doc2path=lambda name: f"{name}.ipynb"))
    source = [nbformat.writes(nb)]
    site_fixes._fix_notebook(app, "book/x", source)
    fixed = nbformat.reads(source[0], as_version=4)
    tags = [c.metadata.get("tags", []) for c in fixed.cells]
    assert tags == [["solution", "hide-input"], ["solution", "remove-cell"], ["check"], []]
    # a glued value is pasted without its repr's quotes (myst-nb's strip_text_quotes); other outputs untouched
    assert [o.get("metadata", {}).get("strip_text_quotes") for o in fixed.cells[3].outputs] == [True, None]
    markdown = ["# A page"]
    app.env.doc2path = lambda name: f"{name}.md"
    site_fixes._fix_notebook(app, "book/y", markdown)
    assert markdown == ["# A page"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_check_follows_a_solution(path):
    seen_solution = False
    for cell in nbformat.read(path, as_version=4).cells:
        seen_solution |= student.SOLUTION_TAG in _tags(cell)
        if student.CHECK_TAG in _tags(cell):
            assert seen_solution, f"{path.name}: a check cell with no solution cell before it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_student_copy_and_answer_key(path):
    nb = nbformat.read(path, as_version=4)
    copy = student.student_version(nb, default_label=path.stem)
    key = student.answer_key(nb)
    nbformat.validate(copy)
    nbformat.validate(key)

    for version in (copy, key):
        for cell in version.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
    assert [c.source for c in key.cells] == [c.source for c in nb.cells]

    originals = [c for c in nb.cells if c.cell_type == "code"]
    copies = [c for c in copy.cells if c.cell_type == "code"]
    assert len(copies) == len(originals)
    for original, stub in zip(originals, copies):
        if student.SOLUTION_TAG in _tags(original):
            assert student.SOLUTION_TAG not in _tags(stub) and not HIDING_TAGS & set(_tags(stub))
            assert "kdbook.exercises.placeholder(" in stub.source
            assert _top_level_signatures(stub.source) == _top_level_signatures(original.source)
        else:
            assert stub.source == original.source  # check cells (and all others) kept
    text = "\n".join(c.source for c in copy.cells if c.cell_type == "markdown")
    assert "{solution" not in text
    original_text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert text.count("{exercise}") == original_text.count("{exercise}")


def test_command_writes_student_copies_and_answer_keys(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert student.main([str(tmp_path / "students")]) == 0
        assert student.main([str(tmp_path / "keys"), "--answer-key", str(ROOT / "book" / "formulation.ipynb")]) == 0
    assert sorted(p.name for p in (tmp_path / "students").glob("*.ipynb")) == sorted(p.name for p in NOTEBOOKS)
    assert [p.name for p in (tmp_path / "keys").glob("*.ipynb")] == ["formulation.ipynb"]
    assert "student copy of formulation.ipynb (1 solution cells, 1 check cells)" in out.getvalue()


# ---------------------------------------------------------------- running them

def without_training_sections(nb):
    """The notebook less its sections (``#``/``##`` headings) whose code trains networks."""
    sections, current = [], []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.match(r"#{1,2} ", cell.source):
            sections.append(current)
            current = []
        current.append(cell)
    sections.append(current)

    def trains(section):
        probe = nbformat.v4.new_notebook()
        probe.cells = [c for c in section if c.cell_type == "code"]
        return colab.trains_networks(probe)

    nb = nbformat.from_dict(dict(nb))
    nb.cells = [cell for section in sections if not trains(section) for cell in section]
    return nb


def run_until_error(nb, workdir: Path):
    """Executes the code cells in order; returns ``(index, error)`` of the first that
    fails, or ``(None, None)``."""
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                return index, error
    return None, None


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_student_copy_runs_up_to_its_first_unsolved_exercise(tmp_path):
    nb = nbformat.read(ROOT / "book" / "formulation.ipynb", as_version=4)
    copy = without_training_sections(student.student_version(nb, "formulation"))
    assert colab.setup_cells(copy) == [colab.first_code_cell(copy)]
    index, error = run_until_error(copy, tmp_path)
    assert error is not None, "the student copy ran through: its checks do not detect placeholders"
    assert error.ename == "Unsolved", error
    assert "ex-formulation-reduction" in error.evalue
    assert student.CHECK_TAG in _tags(copy.cells[index]), "the first failure is not a check cell"
    first_check = next(i for i, c in enumerate(copy.cells) if student.CHECK_TAG in _tags(c))
    assert index == first_check
    assert "device:" in _stream_text(copy.cells[colab.first_code_cell(copy)])


def test_answer_key_passes_its_checks(tmp_path):
    nb = nbformat.read(ROOT / "book" / "formulation.ipynb", as_version=4)
    key = without_training_sections(student.answer_key(nb))
    index, error = run_until_error(key, tmp_path)
    assert error is None, f"cell {index} failed: {error}"
    checks = [c for c in key.cells if student.CHECK_TAG in _tags(c)]
    assert checks and all("checks passed" in _stream_text(c) for c in checks)
