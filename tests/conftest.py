"""Shared fixtures of the kdbook unit tests.

The suite runs on CPU in a few minutes: tiny stratified subsets of the real
CIFAR-10, tiny students, one or two epochs.

Environment:

- ``KDBOOK_DATA`` points at the data (CI sets it; locally e.g. ``/work/data``).
- ``KDBOOK_HOME`` is left alone: if it is set the decoded-array cache lives there,
  otherwise in the library's default (the user cache), so it is reused across runs.
- ``KDBOOK_PROFILE`` is set to ``quick`` by the root ``conftest.py``, so notebook
  kernels started by nbval (which inherit this environment) run the quick profile too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kdbook.data import CIFAR10, TensorLoader, load_cifar10, stratified_subset

# The authoring tools (colab.py, student.py, grade.py) live in tools/, outside the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 10


@dataclass
class Loaders:
    train: TensorLoader
    test: TensorLoader


def make_loaders(
    cifar: CIFAR10,
    *,
    per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
    batch_size: int = 32,
    augment: bool = True,
    shuffle: bool = True,
    seed: int = 0,
) -> Loaders:
    """Fresh TensorLoaders over a seeded stratified subset of CIFAR-10 (CPU).

    The train loader shuffles and augments by default; the test loader never does."""
    train_idx = stratified_subset(cifar.train_labels, per_class=per_class, seed=seed)
    test_idx = stratified_subset(cifar.test_labels, per_class=test_per_class, seed=seed)
    train = TensorLoader(cifar.train_images, cifar.train_labels, batch_size, indices=train_idx,
                         shuffle=shuffle, augment=augment, seed=seed)
    test = TensorLoader(cifar.test_images, cifar.test_labels, 64, indices=test_idx)
    return Loaders(train, test)


@pytest.fixture(scope="session")
def cifar() -> CIFAR10:
    """The real CIFAR-10, loaded once per session (decoded once, then from the cache)."""
    return load_cifar10()


@pytest.fixture
def tiny_loaders(cifar) -> Loaders:
    """20 images per class for training (shuffled, augmented, batch 32), 10 per class for testing."""
    return make_loaders(cifar)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def loader_factory(cifar):
    """``loader_factory(**kwargs)`` builds fresh loaders (see :func:`make_loaders`), e.g. one
    per simulated session in the checkpoint tests."""
    return lambda **kwargs: make_loaders(cifar, **kwargs)
