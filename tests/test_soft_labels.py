"""kdbook.soft_labels: teacher outputs for both flips, cached by teacher and data."""

from __future__ import annotations

import pytest
import torch

from kdbook import soft_labels
from kdbook.data import TensorLoader
from kdbook.models import StudentCNN


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBOOK_HOME", str(tmp_path))
    return tmp_path


def model(seed=0):
    torch.manual_seed(seed)
    return StudentCNN(4, 1).eval()


def test_logits_of_image_and_mirror(cifar):
    images = cifar.train_images[:50]
    net = model()
    logits = soft_labels.compute_teacher_logits(net, images, device="cpu", batch_size=16)
    assert logits.shape == (50, 2, 10) and logits.dtype == torch.float32
    batch = next(iter(TensorLoader(images, cifar.train_labels[:50], 50)))
    with torch.no_grad():
        assert torch.allclose(logits[:, 0], net(batch.images), atol=1e-5)
        assert torch.allclose(logits[:, 1], net(batch.images.flip(3)), atol=1e-5)


def test_cache_is_keyed_by_teacher_and_image_order(cifar, home, monkeypatch):
    images = cifar.train_images[:40]
    first = soft_labels.cached_teacher(model(0), images, device="cpu")
    files = list((home / "teacher_outputs").iterdir())
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(soft_labels, "compute_teacher_logits", fail)
    again = soft_labels.cached_teacher(model(0), images, device="cpu")
    assert torch.equal(first.logits, again.logits)
    with pytest.raises(AssertionError, match="recomputed"):
        soft_labels.cached_teacher(model(1), images, device="cpu")  # other weights: other key
    with pytest.raises(AssertionError, match="recomputed"):
        soft_labels.cached_teacher(model(0), images.flip(0), device="cpu")  # other order: other key


def test_damaged_cache_file_is_recomputed(cifar, home):
    images = cifar.train_images[:20]
    first = soft_labels.cached_teacher(model(0), images, device="cpu")
    (path,) = (home / "teacher_outputs").iterdir()
    path.write_bytes(path.read_bytes()[:100])
    again = soft_labels.cached_teacher(model(0), images, device="cpu")
    assert torch.equal(first.logits, again.logits)


def test_fingerprints():
    assert soft_labels.weights_fingerprint(model(0)) == soft_labels.weights_fingerprint(model(0))
    assert soft_labels.weights_fingerprint(model(0)) != soft_labels.weights_fingerprint(model(1))
    x = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    y = x.clone()
    y[1, 0, 0, 0] = 1
    assert soft_labels.images_fingerprint(x) != soft_labels.images_fingerprint(y)
