"""kdbook.settings (profiles, device, home, run stamps) and kdbook.models."""

from __future__ import annotations

import os

import pytest
import torch

import kdbook
from kdbook import settings
from kdbook.models import StudentCNN, TeacherNet, count_parameters

# -----------------------------------------------------------------------------
# Settings.


def test_the_test_configuration_sets_the_quick_profile():
    # conftest.py sets it for the tests and the notebook kernels nbval starts.
    assert os.environ["KDBOOK_PROFILE"] == "quick"
    assert settings.profile() == "quick"


def test_profile_from_the_environment(monkeypatch):
    for value in ("quick", "full", " full "):
        monkeypatch.setenv("KDBOOK_PROFILE", value)
        assert settings.profile() == value.strip()
    monkeypatch.setenv("KDBOOK_PROFILE", "bogus")
    with pytest.raises(ValueError, match="KDBOOK_PROFILE") as info:
        settings.profile()
    assert "'bogus'" in str(info.value) and "quick" in str(info.value) and "full" in str(info.value)
    monkeypatch.delenv("KDBOOK_PROFILE")
    assert settings.profile() == ("full" if torch.cuda.is_available() else "quick")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_raises(monkeypatch):
    monkeypatch.setenv("KDBOOK_DEVICE", "cuda")
    with pytest.raises(ValueError, match="KDBOOK_DEVICE"):
        settings.device()


def test_device(monkeypatch):
    monkeypatch.setenv("KDBOOK_DEVICE", "cpu")
    assert settings.device() == torch.device("cpu")
    monkeypatch.setenv("KDBOOK_DEVICE", "no-such-device")
    with pytest.raises(ValueError, match="KDBOOK_DEVICE"):
        settings.device()
    monkeypatch.delenv("KDBOOK_DEVICE")
    assert settings.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert settings.describe_device("cpu").startswith("cpu (")


def test_home_honours_kdbook_home(tmp_path, monkeypatch):
    target = tmp_path / "nested" / "home"
    monkeypatch.setenv("KDBOOK_HOME", str(target))
    assert settings.home() == target and target.is_dir()
    assert settings.subdir("results") == target / "results" and (target / "results").is_dir()
    monkeypatch.setenv("KDBOOK_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert settings.home() == tmp_path / "user" / ".cache" / "kdbook"


def test_stopwatch_stamp(monkeypatch):
    monkeypatch.setenv("KDBOOK_DEVICE", "cpu")
    with settings.Stopwatch(data="CIFAR-10, test copy") as sw:
        assert sw.stamp is None
        sum(range(1000))
    stamp = sw.stamp
    assert stamp.profile == "quick" and stamp.data == "CIFAR-10, test copy"
    assert stamp.device.startswith("cpu") and stamp.wall_s >= 0
    assert {k: getattr(stamp, k) for k in settings.provenance("CIFAR-10, test copy")} == \
        settings.provenance("CIFAR-10, test copy")  # the one provenance record, plus the wall time
    line = stamp.line()
    for part in ("profile=quick", "device=cpu", "data=CIFAR-10, test copy", "wall time", "s |",
                 f"torch {torch.__version__}"):
        assert part in line, part


def test_public_api():
    for name in ("ResponseDistillationLoss", "SoftLabelDistillationLoss", "distillation_loss",
                 "soft_distillation_loss", "soft_targets"):
        assert callable(getattr(kdbook, name))
    assert isinstance(kdbook.__version__, str)


# -----------------------------------------------------------------------------
# Models.


@pytest.mark.parametrize("width, depth", [(4, 1), (4, 2), (8, 1)])
def test_student_output_shape(width, depth):
    model = StudentCNN(width=width, depth=depth)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert StudentCNN(width=width, depth=depth, num_classes=7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_student_size_grows_with_width_and_depth():
    sizes = {(w, d): count_parameters(StudentCNN(width=w, depth=d)) for w in (4, 8, 16) for d in (1, 2)}
    for d in (1, 2):
        assert sizes[(4, d)] < sizes[(8, d)] < sizes[(16, d)]
    for w in (4, 8, 16):
        assert sizes[(w, 1)] < sizes[(w, 2)]


@pytest.mark.parametrize("kwargs, name", [
    ({"width": 0}, "width"), ({"width": -1}, "width"), ({"width": 2.0}, "width"), ({"width": True}, "width"),
    ({"depth": 0}, "depth"), ({"depth": 1.5}, "depth"),
])
def test_student_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        StudentCNN(**kwargs)


def test_teacher_output_shape_and_size():
    small = TeacherNet(widths=(8, 16, 16), stem=8)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    big = TeacherNet()
    assert big.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert count_parameters(big) == pytest.approx(1.97e6, rel=0.01)  # "about 1.97M parameters"
    assert count_parameters(big) > 50 * count_parameters(StudentCNN(width=4))


def test_count_parameters_ignores_frozen():
    model = StudentCNN(width=4)
    total = count_parameters(model)
    model.head.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.head.weight.numel()


# -----------------------------------------------------------------------------
# Teacher recipes keep their keys.


def test_teacher_recipe_keys_survive_new_train_settings():
    """The shipped teacher's record and the stored label-smoothing teacher's file name
    carry the recipe's key: a TrainConfig setting added later (at its default) must not
    change it, or the book would look for (and retrain) a teacher it already has."""
    import dataclasses
    import json
    from pathlib import Path

    from kdbook import teacher
    from kdbook.train import TrainConfig

    shipped = json.loads(teacher.PROVENANCE_FILE.read_text())
    assert teacher.RECIPE.key() == shipped["recipe_key"]
    # The shipped label-smoothing teacher is the current recipe's.
    assert teacher.ls_teacher_file().parent == teacher.WEIGHTS_DIR
    assert teacher.ls_teacher_file().name == f"teacher-ls-{teacher.ls_recipe().key()}.pt"
    from kdbook.train import ADDED_SETTINGS

    for field in dataclasses.fields(TrainConfig):
        if field.name in ADDED_SETTINGS:
            assert field.default == ADDED_SETTINGS[field.name], f"{field.name}: registered default differs"
    # a setting that differs from its default does change the key
    changed = dataclasses.replace(teacher.RECIPE, train=dataclasses.replace(teacher.RECIPE.train, epochs=25))
    assert changed.key() != teacher.RECIPE.key()


def test_the_package_re_exports_what_the_chapters_use():
    from kdbook.data import load_cifar10
    from kdbook.train import TrainConfig, fit

    assert kdbook.load_cifar10 is load_cifar10 and kdbook.fit is fit and kdbook.TrainConfig is TrainConfig
    assert kdbook.StudentCNN is StudentCNN and kdbook.TeacherNet is TeacherNet
    assert callable(kdbook.analyze_dark_knowledge) and callable(kdbook.distillation_loss)
