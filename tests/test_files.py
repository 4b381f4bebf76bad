"""kdbook.files: the caches' policy (atomic writes; a damaged file is rebuilt, never used)."""

from __future__ import annotations

import json

import pytest
import torch

from kdbook import teacher
from kdbook.files import atomic_write, read_cache


def read_json(path):
    return json.loads(path.read_text())


def test_atomic_write_leaves_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "result.json"
    with atomic_write(path) as handle:
        handle.write(b'{"a": 1}')
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path) as handle:
            handle.write(b'{"a": ')
            raise RuntimeError("interrupted")
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no partial file left


def test_read_cache_missing_sound_and_damaged(tmp_path, capsys):
    path = tmp_path / "result.json"
    assert read_cache(path, read_json, "a result") is None  # missing: nothing said
    assert capsys.readouterr().out == ""
    path.write_text('{"a": 1}')
    assert read_cache(path, read_json, "a result") == {"a": 1}
    path.write_text('{"a": ')  # damaged: reported and treated as missing
    assert read_cache(path, read_json, "a result") is None
    assert f"rebuilding a result: {path} is unreadable (JSONDecodeError" in capsys.readouterr().out


def test_a_damaged_stand_in_teacher_is_trained_again(cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBOOK_HOME", str(tmp_path))
    monkeypatch.setitem(teacher.STANDIN, "width", 4)  # a tiny stand-in: seconds, not a minute
    monkeypatch.setitem(teacher.STANDIN, "per_class", 5)
    monkeypatch.setitem(teacher.STANDIN, "epochs", 1)
    first, info = teacher.standin_teacher(cifar, "cpu")
    (path,) = (tmp_path / "checkpoints").glob("standin-teacher-*.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FileNotFoundError):
        teacher.standin_teacher(cifar, "cpu", train_if_missing=False)  # damaged counts as missing
    again, info_again = teacher.standin_teacher(cifar, "cpu")
    assert info_again == info
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    loaded, _ = teacher.standin_teacher(cifar, "cpu", train_if_missing=False)  # sound again
    assert torch.equal(loaded.head.weight, first.head.weight)
