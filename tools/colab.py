"""Keeps every notebook's Colab setup cell in step with ``_config.yml``.

The public repository's URL lives in one place, ``repository.url`` (and
``repository.branch``) in ``_config.yml``. Each notebook under ``book/`` starts with a
code cell tagged ``kdbook-setup`` that, in Colab only, clones that repository (its
``results/`` hold the book's stored runs, which ``KDBOOK_RESULTS`` then points at) and
installs this package from the clone, then reports the device and the profile. On the
website that cell is folded (tag :data:`HIDE_TAG`). This module writes that cell from
one template (:data:`TEMPLATE`) and sets the notebook metadata that asks Colab for a
GPU in the chapters that train networks::

    python tools/colab.py            # rewrite the setup cells and metadata in place
    python tools/colab.py --check    # exit 1, listing the notebooks that disagree
    python tools/colab.py book/formulation.ipynb   # only the notebooks named

Publishing under another URL is: edit ``repository.url`` in ``_config.yml``, run the
first command, commit.

Which chapters train networks: a notebook's metadata ``kdbook: {trains: true|false}``
decides when an author sets it; otherwise :func:`trains_networks` looks for the
library's training entry points in its code cells (:data:`TRAINING_PATTERNS`).

The rewrite keeps the setup cell's stored outputs: the template prints the same lines
outside Colab whatever the URL, so the outputs of the run stay true.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

SETUP_TAG = "kdbook-setup"
ROOT = Path(__file__).resolve().parent.parent

# The setup cell, one template for every notebook. Outside Colab it does nothing but
# report (the reader installed requirements.txt). In Colab it makes a shallow clone of
# the repository, once per runtime, for the book's stored results (results/): a chapter
# then redraws its figures from the stored runs in seconds and trains only the runs
# whose settings the reader changed. It installs the package from that clone: its
# dependencies are unpinned (see pyproject.toml), so pip keeps Colab's torch,
# torchvision and numpy. Nothing is mounted automatically: one printed line says how to
# keep checkpoints on Google Drive. On the website the cell is folded (HIDE_TAG), so a
# page opens with its text.
TEMPLATE = '''\
# kdbook-setup: written from _config.yml by `python tools/colab.py`
import os
import subprocess
import sys

REPOSITORY = "{url}"
BRANCH = "{branch}"
if "google.colab" in sys.modules:
    # The repository, once per runtime: the package and the book's stored results.
    CLONE = "/content/{name}"
    if not os.path.isdir(CLONE):
        subprocess.run(
            ["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPOSITORY, CLONE],
            check=True,
        )
    # Installs kdbook from the clone; pip keeps Colab's torch, torchvision and numpy.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", CLONE], check=True)
    # Stored runs are read from there, and new ones written there, unless KDBOOK_RESULTS is set.
    if not os.environ.get("KDBOOK_RESULTS"):
        os.environ["KDBOOK_RESULTS"] = os.path.join(CLONE, "results")
    # The stored runs were computed on the book's JPEG copy of CIFAR-10, Colab downloads
    # the original: a stored run of the same configuration is read, not retrained (its
    # provenance names the data it came from); a changed configuration trains here.
    os.environ.setdefault("KDBOOK_RESULTS_DATA", "CIFAR-10, JPEG q75 copy")
    print(f"results: {{os.environ['KDBOOK_RESULTS']}} (runs stored there are not retrained)")
    print(
        "Long runs: mount Google Drive (Files panel), then run"
        " `%env KDBOOK_HOME=/content/drive/MyDrive/kdbook`: checkpoints"
        " then survive a disconnect, and re-running resumes."
    )

from kdbook import settings

print(f"device: {{settings.describe_device()}} | profile: {{settings.profile()}}")
print("To switch, run `%env KDBOOK_PROFILE=full` (or quick) before this cell.")'''
# myst-nb's tag that folds a cell's input and output behind one toggle on the website;
# Jupyter and Colab ignore it, so there the setup cell is an ordinary cell.
HIDE_TAG = "hide-cell"

# Calls that train a network, for notebooks without an explicit ``kdbook.trains`` flag.
TRAINING_PATTERNS = (
    r"\bfit\(",  # kdbook.train.fit
    r"\btrain_epoch\(",
    r"\bTrainConfig\(",
    r"\bDistillationTrainer\b",
    # (not available_teacher: it loads the shipped weights, training only when they are absent)
    r"\b(train_teacher|standin_teacher|ls_teacher)\(",
    r"\bkdbook\.(experiments|bench)\b",  # named training runs and sweeps
    r"\boptimi[sz]er\.step\(\)",  # a training loop written in the notebook
)

# Notebook metadata that asks Colab for a GPU runtime (what Colab itself saves
# for a notebook last run on its free GPU).
GPU_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


@dataclass(frozen=True)
class Repository:
    url: str
    branch: str

    @property
    def owner_and_name(self) -> tuple[str, str]:
        """``("owner", "repo")`` of a GitHub URL."""
        match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", self.url)
        if not match:
            raise ValueError(f"repository.url must be a GitHub URL https://github.com/OWNER/REPO, got {self.url!r}")
        return match.group(1), match.group(2)

    def colab_url(self, notebook: str) -> str:
        """The Colab link of a notebook, ``notebook`` relative to the repository root."""
        owner, name = self.owner_and_name
        return f"https://colab.research.google.com/github/{owner}/{name}/blob/{self.branch}/{notebook}"


def read_repository(config: Path | str = ROOT / "_config.yml") -> Repository:
    """``repository.url`` and ``repository.branch`` (default ``main``) of ``_config.yml``."""
    data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    repo = data.get("repository") or {}
    url = str(repo.get("url", "")).strip()
    if not url:
        raise ValueError(f"{config}: repository.url is not set")
    result = Repository(url=url.rstrip("/"), branch=str(repo.get("branch") or "main").strip())
    result.owner_and_name  # noqa: B018  (validates the URL)
    return result


def clone_name(url: str) -> str:
    """The folder a clone of ``url`` gets: its last path component, less ``.git``."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    name = name[:-len(".git")] if name.endswith(".git") else name
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise ValueError(f"repository.url must end in a repository name, got {url!r}")
    return name


def setup_source(repository: Repository) -> str:
    """The setup cell's source for ``repository``."""
    for value in (repository.url, repository.branch):
        if '"' in value or "\\" in value or "\n" in value:
            raise ValueError(f"unexpected character in repository setting {value!r}")
    return TEMPLATE.format(url=repository.url, branch=repository.branch, name=clone_name(repository.url))


def notebooks(book: Path | str = ROOT / "book") -> list[Path]:
    """Every notebook under ``book`` (checkpoint folders excluded), sorted."""
    return sorted(p for p in Path(book).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def setup_cells(nb) -> list[int]:
    """Indices of the cells tagged ``kdbook-setup``."""
    return [i for i, c in enumerate(nb.cells) if SETUP_TAG in c.get("metadata", {}).get("tags", [])]


def first_code_cell(nb) -> int | None:
    return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)


def trains_networks(nb) -> bool:
    """Whether the chapter trains networks: the ``kdbook.trains`` metadata flag if set,
    else whether a code cell uses the library's training entry points."""
    flag = nb.metadata.get("kdbook", {}).get("trains")
    if flag is not None:
        return bool(flag)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return any(re.search(pattern, code) for pattern in TRAINING_PATTERNS)


def has_gpu_metadata(nb) -> bool:
    return nb.metadata.get("accelerator") == "GPU" and bool(nb.metadata.get("colab", {}).get("gpuType"))


def problems(nb, repository: Repository) -> list[str]:
    """How a notebook disagrees with the template and the GPU policy (empty: it agrees)."""
    found = []
    cells = setup_cells(nb)
    if len(cells) != 1:
        found.append(f"{len(cells)} cells tagged {SETUP_TAG!r}, expected exactly 1")
    elif cells[0] != first_code_cell(nb):
        found.append(f"the {SETUP_TAG!r} cell is not the first code cell")
    else:
        cell = nb.cells[cells[0]]
        if cell.source != setup_source(repository):
            found.append("the setup cell differs from the template (repository URL or text)")
        if HIDE_TAG not in cell.get("metadata", {}).get("tags", []):
            found.append(f"the setup cell is not tagged {HIDE_TAG!r} (folded on the website)")
    trains = trains_networks(nb)
    if trains and not has_gpu_metadata(nb):
        found.append("trains networks but its metadata does not ask Colab for a GPU")
    if not trains and nb.metadata.get("accelerator") == "GPU":
        found.append("asks Colab for a GPU but trains no network (set metadata kdbook.trains to change)")
    return found


def rewrite(nb, repository: Repository) -> None:
    """Puts the template's setup cell first among the code cells (keeping the existing
    cell's id and outputs) and sets the GPU metadata; modifies ``nb`` in place."""
    source = setup_source(repository)
    cells = setup_cells(nb)
    if cells:
        cell = nb.cells[cells[0]]
        for extra in reversed(cells[1:]):
            del nb.cells[extra]
        if cells[0] != first_code_cell(nb):
            nb.cells.pop(cells[0])
            position = first_code_cell(nb)
            nb.cells.insert(len(nb.cells) if position is None else position, cell)
        cell.source = source
        tags = cell.metadata.setdefault("tags", [])
        if HIDE_TAG not in tags:
            tags.append(HIDE_TAG)
    else:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [SETUP_TAG, HIDE_TAG]})
        position = first_code_cell(nb)
        nb.cells.insert(len(nb.cells) if position is None else position, cell)

    if trains_networks(nb):
        nb.metadata["accelerator"] = GPU_METADATA["accelerator"]
        colab = nb.metadata.setdefault("colab", {})
        for key, value in GPU_METADATA["colab"].items():
            colab.setdefault(key, value)
    else:
        nb.metadata.pop("accelerator", None)
        nb.metadata.get("colab", {}).pop("gpuType", None)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/colab.py",
        description="Rewrite (or --check) every notebook's Colab setup cell from _config.yml.",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook disagrees")
    parser.add_argument("--config", type=Path, default=ROOT / "_config.yml", help="default: the repository's")
    parser.add_argument("--book", type=Path, default=ROOT / "book", help="folder of the notebooks")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="only these notebooks (default: every notebook under --book)")
    args = parser.parse_intermixed_args(argv)

    repository = read_repository(args.config)
    paths = args.notebooks or notebooks(args.book)
    disagree = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        found = problems(nb, repository)
        if not found:
            continue
        if args.check:
            disagree.append(path)
            for problem in found:
                print(f"{_shown(path)}: {problem}")
        else:
            rewrite(nb, repository)
            nbformat.validate(nb)
            nbformat.write(nb, path)
            print(f"{_shown(path)}: rewritten ({'; '.join(found)})")
    if args.check:
        if disagree:
            print(f"{len(disagree)} of {len(paths)} notebooks disagree with {args.config}; "
                  "run `python tools/colab.py` to rewrite them")
            return 1
        print(f"all {len(paths)} notebooks agree with repository {repository.url} ({repository.branch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
