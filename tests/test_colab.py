"""The Colab setup cell of every notebook agrees with ``_config.yml`` (``tools/colab.py``).

The tests that rewrite notebooks work on copies in a temporary folder, never on book/.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import colab  # tools/colab.py (tests/conftest.py puts tools/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = colab.notebooks(ROOT / "book")
REPOSITORY = colab.read_repository(ROOT / "_config.yml")


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def run_colab(*args: str) -> subprocess.CompletedProcess:
    """``python tools/colab.py ARGS``, run in this process (a new one would import torch)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = colab.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), "")


def test_there_are_notebooks():
    assert ROOT / "book" / "formulation.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_one_setup_cell_first_naming_the_configured_repository(path):
    nb = nbformat.read(path, as_version=4)
    cells = colab.setup_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged {colab.SETUP_TAG!r}"
    assert cells[0] == colab.first_code_cell(nb), f"{path.name}: the setup cell is not the first code cell"
    source = nb.cells[cells[0]].source
    assert f'REPOSITORY = "{REPOSITORY.url}"' in source
    assert f'BRANCH = "{REPOSITORY.branch}"' in source
    assert source == colab.setup_source(REPOSITORY), "run `python tools/colab.py`"
    assert colab.HIDE_TAG in nb.cells[cells[0]].metadata.get("tags", []), "run `python tools/colab.py`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_gpu_metadata_where_the_chapter_trains_networks(path):
    nb = nbformat.read(path, as_version=4)
    if colab.trains_networks(nb):
        assert nb.metadata.get("accelerator") == "GPU"
        assert nb.metadata["colab"].get("gpuType")
    else:
        assert "accelerator" not in nb.metadata


def test_the_first_chapter_trains_networks():
    nb = nbformat.read(ROOT / "book" / "formulation.ipynb", as_version=4)
    assert colab.trains_networks(nb) and colab.has_gpu_metadata(nb)


def test_check_mode_passes_on_the_book():
    result = subprocess.run([sys.executable, "tools/colab.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agree" in result.stdout


def test_config_is_read_with_yaml():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert REPOSITORY.url == config["repository"]["url"].rstrip("/")
    assert REPOSITORY.branch == config["repository"].get("branch", "main")
    owner, name = REPOSITORY.owner_and_name
    assert REPOSITORY.colab_url("book/x.ipynb") == \
        f"https://colab.research.google.com/github/{owner}/{name}/blob/{REPOSITORY.branch}/book/x.ipynb"


@pytest.fixture
def book_copy(tmp_path):
    """A copy of _config.yml and of the book's notebooks in a temporary folder."""
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    for path in NOTEBOOKS:
        target = tmp_path / "book" / path.relative_to(ROOT / "book")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return tmp_path


def _set_url(config: Path, url: str, branch: str = "main") -> None:
    text = config.read_text()
    text, count = re.subn(r"(?m)^(\s+url:\s*).*$", rf"\g<1>{url}", text, count=1)
    assert count == 1
    text = re.sub(r"(?m)^(\s+branch:\s*).*$", rf"\g<1>{branch}", text, count=1)
    config.write_text(text)


def test_changing_the_url_and_running_the_command_rewrites_every_setup_cell(book_copy):
    config, book = book_copy / "_config.yml", book_copy / "book"
    before = {p.name: nbformat.read(p, as_version=4) for p in colab.notebooks(book)}
    new_url = "https://github.com/someone-else/kd-fork"
    _set_url(config, new_url, branch="teaching")

    check = run_colab("--check", "--config", str(config), "--book", str(book))
    assert check.returncode == 1
    assert "disagree" in check.stdout and "formulation.ipynb" in check.stdout

    result = run_colab("--config", str(config), "--book", str(book))
    assert result.returncode == 0, result.stderr
    assert run_colab("--check", "--config", str(config), "--book", str(book)).returncode == 0
    # ...and the real configuration now disagrees with the copies
    assert run_colab("--check", "--book", str(book)).returncode == 1

    for path in colab.notebooks(book):
        nb, old = nbformat.read(path, as_version=4), before[path.name]
        (i,) = colab.setup_cells(nb)
        assert f'REPOSITORY = "{new_url}"' in nb.cells[i].source
        assert 'BRANCH = "teaching"' in nb.cells[i].source
        assert REPOSITORY.url not in nb.cells[i].source
        if colab.setup_cells(old) != [i]:
            continue  # its setup cell was missing or misplaced: the rewrite had to move cells
        # only the setup cell's source changed: same cells, ids and outputs
        assert [c.get("id") for c in nb.cells] == [c.get("id") for c in old.cells]
        assert nb.cells[i].outputs == old.cells[i].outputs
        for k, (cell, old_cell) in enumerate(zip(nb.cells, old.cells)):
            if k != i:
                assert cell == old_cell


def test_rewrite_adds_moves_and_dedupes_setup_cells():
    repository = colab.Repository("https://github.com/a/b", "main")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"),
                nbformat.v4.new_code_cell("from kdbook.train import fit\nhistory = fit(model, loader, config)")]
    assert colab.problems(nb, repository)
    colab.rewrite(nb, repository)
    assert colab.setup_cells(nb) == [1] and colab.first_code_cell(nb) == 1
    assert colab.has_gpu_metadata(nb) and "kdbook" not in nb.metadata  # detected, not recorded
    assert colab.problems(nb, repository) == []

    # a setup cell below other code, plus a duplicate: one is kept, first among code cells
    setup = nb.cells.pop(1)
    nb.cells.append(setup)
    nb.cells.append(nbformat.v4.new_code_cell("# dup", metadata={"tags": [colab.SETUP_TAG]}))
    assert colab.problems(nb, repository)
    colab.rewrite(nb, repository)
    assert len(colab.setup_cells(nb)) == 1 and colab.setup_cells(nb)[0] == colab.first_code_cell(nb)
    assert colab.problems(nb, repository) == []

    # the explicit flag wins over detection, and GPU metadata goes away
    nb.metadata["kdbook"] = {"trains": False}
    assert "asks Colab for a GPU but trains no network" in " ".join(colab.problems(nb, repository))
    colab.rewrite(nb, repository)
    assert "accelerator" not in nb.metadata and colab.problems(nb, repository) == []


def test_training_detection():
    def nb_with(source):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source)]
        return nb

    assert colab.trains_networks(nb_with("config = TrainConfig(epochs=3)\nfit(model, loader, config)"))
    assert colab.trains_networks(nb_with("history = kdbook.train.fit(model, loader, config)"))
    assert colab.trains_networks(nb_with("from kdbook.experiments import run\nrun(spec)"))
    assert colab.trains_networks(nb_with("teacher, about = ls_teacher(cifar)"))
    assert not colab.trains_networks(nb_with("teacher, about = available_teacher(cifar)"))
    assert colab.trains_networks(nb_with("loss.backward()\noptimizer.step()"))
    assert not colab.trains_networks(nb_with("import sympy as sp\nfrom kdbook import theory"))
    assert not colab.trains_networks(nb_with("from kdbook.train import predict_logits\nloss.backward()"))


def test_urls_that_are_not_github_are_refused(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://gitlab.com/a/b\n")
    with pytest.raises(ValueError, match="GitHub"):
        colab.read_repository(config)
    config.write_text("title: x\n")
    with pytest.raises(ValueError, match="repository.url"):
        colab.read_repository(config)


def test_setup_cell_outside_colab_installs_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append((a, k)))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("KDBOOK_RESULTS", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(colab.setup_source(REPOSITORY), "<setup cell>", "exec"), {})
    printed = out.getvalue()
    assert calls == [] and "KDBOOK_RESULTS" not in os.environ
    assert re.search(r"^device: .+ \| profile: (quick|full)$", printed, re.MULTILINE)
    assert "KDBOOK_PROFILE" in printed and "Drive" not in printed


# Runs the setup cell as Colab would: ``google.colab`` imported (a stand-in module),
# then the cell's source, twice in one process (re-running the cell), then prints the
# results folder it chose. Between the runs it leaves a mark in the clone, which a
# second clone would fail on (git refuses a non-empty folder) or remove.
COLAB_DRIVER = """
import os, sys, types
sys.modules["google"] = types.ModuleType("google")
sys.modules["google.colab"] = types.ModuleType("google.colab")
source = open(sys.argv[1]).read()
exec(compile(source, "<setup cell>", "exec"), {})
clone = sys.argv[2]
open(os.path.join(clone, "mark"), "w").close()
exec(compile(source, "<setup cell>", "exec"), {})
assert os.path.exists(os.path.join(clone, "mark")), "the second run cloned again"
print("KDBOOK_RESULTS=" + os.environ["KDBOOK_RESULTS"])
print("KDBOOK_RESULTS_DATA=" + os.environ["KDBOOK_RESULTS_DATA"])
"""

# Stands in for pip (found first on PYTHONPATH by `python -m pip`): records its arguments.
FAKE_PIP = r"""
import json, os, sys
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
"""


@pytest.fixture
def published(tmp_path):
    """A local repository standing in for the published one: a results/ folder with one
    stored result, on a branch other than the default."""
    repo = tmp_path / "origin" / "kd-book"
    (repo / "results").mkdir(parents=True)
    (repo / "results" / "0123456789abcdef.json").write_text('{"key": "0123456789abcdef"}')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q", "-b", "teaching"], ["add", "results"], ["commit", "-q", "-m", "results"]):
        subprocess.run(git + args, check=True, capture_output=True)
    return colab.Repository(url=repo.as_uri(), branch="teaching")


def _run_in_colab(tmp_path, repository, **env) -> tuple[subprocess.CompletedProcess, Path, list]:
    """Runs the setup cell as in Colab with the clone under tmp_path instead of /content
    and pip stubbed; returns the process, the clone's folder and pip's recorded calls."""
    source = colab.setup_source(repository)
    content = tmp_path / "content"
    assert source.count('CLONE = "/content/') == 1
    (tmp_path / "cell.py").write_text(source.replace('CLONE = "/content/', f'CLONE = "{content}/'))
    stubs = tmp_path / "stubs" / "pip"
    stubs.mkdir(parents=True, exist_ok=True)
    (stubs / "__init__.py").write_text("")
    (stubs / "__main__.py").write_text(FAKE_PIP)
    log = tmp_path / "pip.log"
    log.unlink(missing_ok=True)
    environment = {k: v for k, v in os.environ.items() if k != "KDBOOK_RESULTS"}
    environment.update(HOME=str(tmp_path / "home"), KDBOOK_HOME=str(tmp_path / "kdbook_home"),
                       FAKE_PIP_LOG=str(log), PYTHONPATH=os.pathsep.join([str(stubs.parent), str(ROOT)]),
                       **env)
    clone = content / colab.clone_name(repository.url)
    result = subprocess.run([sys.executable, "-c", COLAB_DRIVER, str(tmp_path / "cell.py"), str(clone)],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, clone, calls


def test_setup_cell_in_colab_clones_once_installs_and_points_at_the_stored_results(tmp_path, published):
    result, clone, calls = _run_in_colab(tmp_path, published)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"KDBOOK_RESULTS={clone / 'results'}" in result.stdout
    # the stored runs were computed on the JPEG copy: Colab reads them instead of retraining
    assert "KDBOOK_RESULTS_DATA=CIFAR-10, JPEG q75 copy" in result.stdout
    assert (clone / "results" / "0123456789abcdef.json").exists()
    assert subprocess.run(["git", "-C", str(clone), "rev-parse", "--abbrev-ref", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip() == "teaching"
    # pip installs the package from the clone (each time the cell runs) and nothing else
    assert calls == [["install", "-q", str(clone)]] * 2
    assert "KDBOOK_HOME=/content/drive" in result.stdout  # one line on keeping checkpoints on Drive
    assert re.search(r"^device: .+ \| profile: (quick|full)$", result.stdout, re.MULTILINE)


def test_setup_cell_in_colab_keeps_a_results_folder_the_reader_chose(tmp_path, published):
    chosen = str(tmp_path / "my-results")
    result, clone, _ = _run_in_colab(tmp_path, published, KDBOOK_RESULTS=chosen)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"KDBOOK_RESULTS={chosen}" in result.stdout and clone.exists()


def test_setup_cell_mounts_nothing_and_leaves_torch_alone():
    source = colab.setup_source(REPOSITORY)
    assert "drive.mount" not in source  # nothing mounted automatically
    code = [line for line in source.splitlines() if not line.lstrip().startswith("#")]
    assert not re.search(r"torch|numpy|--upgrade|-U\b|==", "\n".join(code))
    assert f'CLONE = "/content/{REPOSITORY.owner_and_name[1]}"' in source
    assert colab.clone_name("https://github.com/a/b.git") == "b"
    with pytest.raises(ValueError, match="repository name"):
        colab.clone_name("https://github.com/a/.git")


def test_setup_cell_is_folded_on_the_website():
    repository = colab.Repository("https://github.com/a/b", "main")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(colab.setup_source(repository), metadata={"tags": [colab.SETUP_TAG]})]
    assert colab.problems(nb, repository) == [f"the setup cell is not tagged {colab.HIDE_TAG!r} (folded on the website)"]
    colab.rewrite(nb, repository)
    assert nb.cells[0].metadata["tags"] == [colab.SETUP_TAG, colab.HIDE_TAG]
    assert colab.problems(nb, repository) == []
    colab.rewrite(nb, repository)  # once only
    assert nb.cells[0].metadata["tags"] == [colab.SETUP_TAG, colab.HIDE_TAG]


def test_package_leaves_torch_torchvision_numpy_unpinned():
    """pip keeps Colab's torch, torchvision and numpy only if nothing pins or caps them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if name in ("torch", "torchvision", "numpy"):
            assert not re.search(r"==|~=|<|!=|@", requirement), requirement
