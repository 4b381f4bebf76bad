"""kdbook.teacher (export/load, the shipped weights) and kdbook.report."""

from __future__ import annotations

import math

import pytest
import torch

from kdbook import report, teacher
from kdbook.data import TensorLoader, stratified_subset
from kdbook.models import TeacherNet
from kdbook.train import evaluate


def test_export_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TeacherNet(widths=(8, 16, 16)).eval()
    weights, prov = tmp_path / "t.pt", tmp_path / "t.json"
    teacher.export_teacher(net, {"recipe": {"widths": [8, 16, 16]}, "x": 1}, weights, prov)
    loaded, record = teacher.load_teacher("cpu", weights, prov)
    assert record["weights_sha256"] and record["x"] == 1
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():  # half-precision storage: close, not equal
        assert torch.allclose(loaded(x), net(x), atol=5e-2)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    weights.write_bytes(weights.read_bytes() + b"tampered")
    with pytest.raises(ValueError, match="does not match the checksum"):
        teacher.load_teacher("cpu", weights, prov)


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m kdbook.teacher"):
        teacher.load_teacher("cpu", tmp_path / "none.pt", tmp_path / "none.json")


def test_recipe_key_changes_with_the_recipe():
    assert teacher.RECIPE.key() == teacher.TeacherRecipe().key()
    assert teacher.ls_recipe().key() != teacher.RECIPE.key()
    assert teacher.ls_recipe().train.label_smoothing == teacher.LS_EPSILON


@pytest.mark.skipif(not teacher.WEIGHTS_FILE.exists(), reason="no shipped teacher weights yet")
def test_shipped_teacher(cifar):
    """The shipped weights: small, with provenance, and as accurate as the record says."""
    assert teacher.WEIGHTS_FILE.stat().st_size <= 5 * 2**20
    model, prov = teacher.load_teacher("cpu")
    for key in ("data", "device", "epochs", "test_acc", "test_acc_flip_tta", "train_wall_s", "commit"):
        assert key in prov
    # The book's bar: >= 90% on the JPEG copy's test set, reached with flip test-time
    # augmentation (the record keeps both numbers; the chapters quote both).
    assert prov["test_acc_flip_tta"] >= 0.90 and prov["test_acc"] >= 0.88
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    idx = stratified_subset(cifar.test_labels, per_class=50, seed=0)
    acc = evaluate(model, TensorLoader(cifar.test_images, cifar.test_labels, 250, indices=idx))["acc"]
    assert acc > 0.85  # 500 test images: within sampling error of the recorded accuracy


def test_mean_std_and_difference():
    assert report.mean_std([1.0]) == (1.0, 0.0)
    m, s = report.mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == 1.0
    d = report.difference([0.5, 0.6, 0.7], [0.6, 0.8, 0.7])
    assert math.isclose(d["gain"], 0.1)
    assert math.isclose(d["se"], math.sqrt(0.01 / 3 + 0.01 / 3))
    assert math.isclose(d["paired_se"], 0.1 / math.sqrt(3))


def test_markdown_table_and_provenance_line():
    assert report.markdown_table(["a", "b"], [(1, 2)]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    runs = [{"provenance": {"profile": "full", "device": "cpu", "data": "d", "wall_s": 60}}] * 2
    line = report.provenance_line(runs)
    assert "profile=full" in line and "2 runs" in line and "2.0 min" in line


def test_without_the_shipped_weights_the_stand_in_teaches(monkeypatch):
    """available_teacher: the book's teacher when its weights load, else the cached stand-in."""
    stand_in = (TeacherNet(widths=(8, 16, 16)).eval(), {"description": "stand-in", "standin": True})
    asked = []

    def fake_standin(cifar, device, *, train_if_missing):
        asked.append(train_if_missing)
        return stand_in

    def missing(device):
        raise FileNotFoundError("no teacher.pt")

    monkeypatch.setattr(teacher, "standin_teacher", fake_standin)
    monkeypatch.setattr(teacher, "load_teacher", missing)
    assert teacher.available_teacher(None, "cpu", train_if_missing=False) is stand_in
    assert asked == [False]

    shipped = TeacherNet(widths=(8, 16, 16)).eval()
    provenance = {"architecture": "TeacherNet", "test_acc": 0.9, "test_acc_flip_tta": 0.91,
                  "data": "d", "epochs": 1, "device": "cpu"}
    monkeypatch.setattr(teacher, "load_teacher", lambda device: (shipped, provenance))
    model, info = teacher.available_teacher(None, "cpu")
    assert model is shipped and info["standin"] is False and info["description"].startswith("the book's teacher")
    assert asked == [False]  # the stand-in was not asked for
