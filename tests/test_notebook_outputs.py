"""What the committed notebooks show on the website.

- no notebook stores an error output, and cells were run top to bottom;
- an experiment chapter (metadata ``kdbook.experiment``) listed in the table of
  contents shows full-profile results: its stored outputs carry a provenance line
  with ``profile=full`` and none with ``profile=quick``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def toc_files() -> set[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.add(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def output_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for key in ("text/plain", "text/markdown"):
                if key in out.get("data", {}):
                    parts.append("".join(out["data"][key]))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_errors_and_in_order(path):
    nb = json.loads(path.read_text())
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert counts == sorted(counts), f"{path.name}: cells were executed out of order"
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: stored error {out.get('ename')}"


EXPERIMENTS = [p for p in NOTEBOOKS if json.loads(p.read_text())["metadata"].get("kdbook", {}).get("experiment")]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_chapters_on_the_site_show_full_profile_results(path):
    nb = json.loads(path.read_text())
    text = output_text(nb)
    on_site = f"book/{path.stem}" in toc_files()
    if not on_site:
        pytest.skip(f"{path.name} is not in _toc.yml yet (its full-profile runs are pending)")
    assert re.search(r"profile=full\b", text), f"{path.name}: no full-profile provenance line in its outputs"
    assert not re.search(r"profile=quick\b", text), f"{path.name}: holds quick-profile outputs"
    assert "data=" in text and "device=" in text, f"{path.name}: outputs without data/device provenance"


def test_experiment_notebooks_are_marked():
    assert EXPERIMENTS, "no notebook carries metadata kdbook.experiment"
