"""kdbook.data: loading CIFAR-10, error messages, the checksummed cache, stratified
subsets and the tensor-resident augmenting loader."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kdbook import data
from kdbook.data import (
    CLASSES,
    MEAN,
    STD,
    TensorLoader,
    jpeg_quality,
    load_cifar10,
    stratified_subset,
)

# -----------------------------------------------------------------------------
# Loading.


def test_load_cifar10_shapes_dtypes_and_balance(cifar):
    assert cifar.train_images.shape == (50000, 3, 32, 32)
    assert cifar.test_images.shape == (10000, 3, 32, 32)
    assert cifar.train_images.dtype == cifar.test_images.dtype == torch.uint8
    assert cifar.train_labels.shape == (50000,) and cifar.test_labels.shape == (10000,)
    assert cifar.train_labels.dtype == cifar.test_labels.dtype == torch.int64
    assert torch.equal(torch.bincount(cifar.train_labels, minlength=10), torch.full((10,), 5000))
    assert torch.equal(torch.bincount(cifar.test_labels, minlength=10), torch.full((10,), 1000))
    assert cifar.classes == CLASSES
    # Real images, not a zero-filled placeholder: every channel uses most of the range
    # and the per-channel means are near CIFAR-10's published statistics.
    sample = cifar.train_images[::50].float() / 255
    means = sample.mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor(MEAN), atol=0.02)
    assert int(cifar.train_images[:1000].max()) == 255 and int(cifar.train_images[:1000].min()) == 0
    # Train and test are different images.
    assert not torch.equal(cifar.train_images[:100], cifar.test_images[:100])


def test_source_describes_the_files(cifar):
    found = data._detect(Path(cifar.location))
    assert found is not None and found.path == Path(cifar.location)
    if found.kind == "torchvision":
        assert cifar.source == "CIFAR-10 (torchvision original)"
        return
    first = data._image_files(data._class_folders(found.path / "train")[0])[0]
    if first.suffix.lower() in (".jpg", ".jpeg"):
        q = jpeg_quality(first)
        assert cifar.source == (f"CIFAR-10, JPEG q{q} copy" if q else "CIFAR-10, JPEG copy")
    else:
        assert cifar.source == "CIFAR-10, ImageFolder copy"


def test_shared_copy_is_jpeg_q75(cifar):
    if Path(cifar.location).name != "cifar10-jpeg-q75":
        pytest.skip(f"KDBOOK_DATA is not the shared JPEG q75 copy ({cifar.location})")
    assert "JPEG q75" in cifar.source
    for split, cls in (("train", "cat"), ("test", "truck")):
        first = min((Path(cifar.location) / split / cls).iterdir())
        assert jpeg_quality(first) == 75


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 90, 95])
def test_jpeg_quality_reads_back_the_encoder_setting(tmp_path, quality):
    rng = np.random.default_rng(quality)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    file = tmp_path / "x.jpg"
    image.save(file, quality=quality)
    assert jpeg_quality(file) == quality


def test_jpeg_quality_of_a_png_is_none(tmp_path):
    file = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(file)
    assert jpeg_quality(file) is None


def test_detect_finds_roots_at_or_one_below(tmp_path):
    (tmp_path / "outer" / "inner" / "train").mkdir(parents=True)
    (tmp_path / "outer" / "inner" / "test").mkdir()
    found = data._detect(tmp_path / "outer")
    assert found is not None and (found.kind, found.path) == ("imagefolder", tmp_path / "outer" / "inner")
    (tmp_path / "tv" / "cifar-10-batches-py").mkdir(parents=True)
    for root in (tmp_path / "tv", tmp_path / "tv" / "cifar-10-batches-py"):
        found = data._detect(root)
        assert found is not None and (found.kind, found.path) == ("torchvision", tmp_path / "tv")
    (tmp_path / "empty").mkdir()
    assert data._detect(tmp_path / "empty") is None
    assert data._detect(tmp_path / "missing") is None


def test_bad_explicit_root_names_the_path(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_cifar10(missing)
    assert str(missing) in str(info.value) and "root argument" in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds neither") as info:
        load_cifar10(empty)
    assert str(empty) in str(info.value)


def test_bad_kdbook_data_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBOOK_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="KDBOOK_DATA") as info:
        load_cifar10()
    assert str(tmp_path / "nowhere") in str(info.value)


def test_wrong_class_folders_are_refused(tmp_path):
    for split in ("train", "test"):
        for name in ("cats", "dogs"):
            (tmp_path / split / name).mkdir(parents=True)
    with pytest.raises(ValueError, match="one folder per CIFAR-10 class"):
        load_cifar10(tmp_path)


def test_failed_download_says_what_was_tried(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def no_network(root, *args, **kwargs):
        calls.append(Path(root))
        raise OSError("network is unreachable")

    monkeypatch.delenv("KDBOOK_DATA", raising=False)
    monkeypatch.setenv("KDBOOK_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10()
    message = str(info.value)
    download_root = tmp_path / "data" / "torchvision"
    assert calls == [download_root]  # the download was tried, into KDBOOK_HOME
    for expected in ("root argument", "KDBOOK_DATA", "not set", str(download_root),
                     "OSError", "network is unreachable", "Fix"):
        assert expected in message, expected
    assert isinstance(info.value.__cause__, OSError)


# -----------------------------------------------------------------------------
# The cache.

SMALL_SHAPES = {
    "train_images": (20, 3, 4, 4),
    "train_labels": (20,),
    "test_images": (10, 3, 4, 4),
    "test_labels": (10,),
}


@pytest.fixture
def small_arrays(monkeypatch):
    """Random arrays, with the cache's expected shapes shrunk to theirs."""
    monkeypatch.setattr(data, "EXPECTED_SHAPES", SMALL_SHAPES)
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, SMALL_SHAPES["train_images"], dtype=np.uint8),
        "train_labels": rng.integers(0, 10, SMALL_SHAPES["train_labels"], dtype=np.int64),
        "test_images": rng.integers(0, 256, SMALL_SHAPES["test_images"], dtype=np.uint8),
        "test_labels": rng.integers(0, 10, SMALL_SHAPES["test_labels"], dtype=np.int64),
    }


def test_cache_round_trip(tmp_path, small_arrays):
    file = tmp_path / "cache.npz"
    data._save_cache(file, small_arrays, "test arrays")
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]  # no partial file left behind
    loaded = data._load_cache(file)
    assert set(loaded) == set(small_arrays)
    for key, array in small_arrays.items():
        assert loaded[key].dtype == array.dtype
        np.testing.assert_array_equal(loaded[key], array)


def test_cache_flipped_byte_is_detected(tmp_path, small_arrays):
    file = tmp_path / "cache.npz"
    data._save_cache(file, small_arrays, "test arrays")
    raw = bytearray(file.read_bytes())
    offset = raw.find(small_arrays["train_images"].tobytes())
    assert offset > 0  # stored uncompressed
    raw[offset + 123] ^= 0x01
    file.write_bytes(bytes(raw))
    with pytest.raises((ValueError, zipfile.BadZipFile, OSError)):
        data._load_cache(file)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_cache_truncated_file_is_detected(tmp_path, small_arrays, keep):
    file = tmp_path / "cache.npz"
    data._save_cache(file, small_arrays, "test arrays")
    raw = file.read_bytes()
    file.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises((ValueError, OSError, EOFError, zipfile.BadZipFile)):  # nothing partial loads
        data._load_cache(file)


def test_cache_checksum_mismatch_is_detected(tmp_path, small_arrays):
    """A well-formed file whose arrays do not match the recorded checksums (the zip
    layer is consistent, so only kdbook's own crc32 can notice)."""
    file = tmp_path / "cache.npz"
    data._save_cache(file, small_arrays, "test arrays")
    with np.load(file) as npz:
        meta = str(npz["meta"])
    assert set(json.loads(meta)["crc32"]) == set(small_arrays)
    changed = {k: v.copy() for k, v in small_arrays.items()}
    changed["test_labels"][0] = (changed["test_labels"][0] + 1) % 10
    np.savez(file, meta=np.array(meta), **changed)
    with pytest.raises(ValueError, match="checksum"):
        data._load_cache(file)


def test_cache_wrong_shape_is_detected(tmp_path, small_arrays):
    file = tmp_path / "cache.npz"
    bad = {**small_arrays, "train_labels": small_arrays["train_labels"][:-1]}
    data._save_cache(file, bad, "test arrays")
    with pytest.raises(ValueError, match="train_labels"):
        data._load_cache(file)


def test_concurrent_cache_writers_do_not_collide(tmp_path, small_arrays, monkeypatch):
    """Two processes that decode at the same time (e.g. notebooks run in parallel by
    nbval under pytest-xdist, on a cold cache) both save the cache. Simulated here
    deterministically: writer B saves completely between writer A's write of its
    temporary file and A's rename. Each writer must use its own temporary file."""
    file = tmp_path / "cache.npz"
    real_savez = np.savez
    nested = []

    def savez(path, *args, **kwargs):
        real_savez(path, *args, **kwargs)  # writer A has written its temporary file...
        if not nested:
            nested.append(path)
            data._save_cache(file, small_arrays, "writer B")  # ...and B runs in between

    monkeypatch.setattr(data.np, "savez", savez)
    data._save_cache(file, small_arrays, "writer A")
    loaded = data._load_cache(file)
    np.testing.assert_array_equal(loaded["train_images"], small_arrays["train_images"])
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def _tiny_imagefolder(root: Path, quality: int) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                folder / "0000.jpg", quality=quality)
    return root


def test_cache_signature_changes_when_the_files_change(tmp_path):
    """The cache key must change when the source files are replaced in place (e.g. the
    copy re-exported at another JPEG quality): otherwise the old decoded arrays are
    served while ``source`` already describes the new files."""
    root = _tiny_imagefolder(tmp_path / "copy", quality=75)
    found = data._detect(root)
    before = data._signature(found)
    assert data._signature(found) == before  # stable for unchanged files
    assert data._describe(found) == "CIFAR-10, JPEG q75 copy"
    _tiny_imagefolder(root, quality=30)  # same names, same counts, other bytes
    assert data._describe(found) == "CIFAR-10, JPEG q30 copy"
    assert data._signature(found) != before


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch, capsys):
    """End to end, on a copy of one image per class and split: a truncated cache file is
    noticed, the images are decoded again, the data is the same and the cache file is
    valid again afterwards."""
    root = _tiny_imagefolder(tmp_path / "copy", quality=75)
    tiny = {"train_images": (10, 3, 32, 32), "train_labels": (10,),
            "test_images": (10, 3, 32, 32), "test_labels": (10,)}
    monkeypatch.setattr(data, "EXPECTED_SHAPES", tiny)
    monkeypatch.setenv("KDBOOK_HOME", str(tmp_path / "home"))
    decodes = []
    reader = data._read_imagefolder

    def counting_reader(path):
        decodes.append(path)
        return reader(path)

    monkeypatch.setattr(data, "_read_imagefolder", counting_reader)
    first = load_cifar10(root)
    (cache,) = (tmp_path / "home" / "data").glob("cifar10-*.npz")
    assert len(decodes) == 1
    assert torch.equal(load_cifar10(root).train_images, first.train_images)
    assert len(decodes) == 1  # the second load was served from the cache

    size = cache.stat().st_size
    with open(cache, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises((ValueError, OSError, EOFError, zipfile.BadZipFile)):
        data._load_cache(cache)

    second = load_cifar10(root)
    assert len(decodes) == 2  # the damage was noticed and the files decoded again
    assert f"rebuilding the decoded images: {cache} is unreadable" in capsys.readouterr().out
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(second, key), getattr(first, key)), key
    assert second.source == first.source
    data._load_cache(cache)  # valid again
    rebuilt = data._load_cache(cache)  # raises if the rewritten file is not valid
    np.testing.assert_array_equal(rebuilt["test_labels"], first.test_labels.numpy())
    assert not list(cache.parent.glob("*.partial*"))


# -----------------------------------------------------------------------------
# Stratified subsets.


def test_stratified_subset_counts(cifar):
    idx = stratified_subset(cifar.train_labels, per_class=7, seed=3)
    assert idx.dtype == torch.int64 and len(idx) == 70
    assert torch.equal(idx, idx.sort().values) and len(torch.unique(idx)) == 70
    assert torch.equal(torch.bincount(cifar.train_labels[idx], minlength=10), torch.full((10,), 7))


def test_stratified_subset_is_seeded(cifar):
    a = stratified_subset(cifar.train_labels, per_class=5, seed=1)
    b = stratified_subset(cifar.train_labels, per_class=5, seed=1)
    c = stratified_subset(cifar.train_labels, per_class=5, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stratified_subset_fraction(cifar):
    idx = stratified_subset(cifar.test_labels, fraction=0.01)
    assert torch.equal(torch.bincount(cifar.test_labels[idx], minlength=10), torch.full((10,), 10))
    everything = stratified_subset(cifar.test_labels, fraction=1.0)
    assert torch.equal(everything, torch.arange(10000))


def test_stratified_subset_limited_by_smallest_class():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 4)
    idx = stratified_subset(labels, fraction=1.0)
    assert torch.equal(torch.bincount(labels[idx]), torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match=r"per_class must be an int in \[1, 3\]"):
        stratified_subset(labels, per_class=4)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"),
    ({"per_class": 3, "fraction": 0.5}, "exactly one"),
    ({"per_class": 0}, "per_class"),
    ({"per_class": -1}, "per_class"),
    ({"per_class": 5001}, "per_class"),
    ({"per_class": 2.5}, "per_class"),
    ({"per_class": True}, "per_class"),
    ({"fraction": 0.0}, "fraction"),
    ({"fraction": -0.5}, "fraction"),
    ({"fraction": 1.5}, "fraction"),
])
def test_stratified_subset_bad_arguments(cifar, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stratified_subset(cifar.train_labels, **kwargs)


# -----------------------------------------------------------------------------
# TensorLoader.


@pytest.fixture(scope="module")
def few(cifar):
    """50 training images (5 per class) and their labels, as a standalone array."""
    idx = stratified_subset(cifar.train_labels, per_class=5, seed=0)
    return cifar.train_images[idx].clone(), cifar.train_labels[idx].clone()


def denormalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    restored = images * std + mean
    assert (restored - restored.round()).abs().max() < 1e-2  # lands on integers
    return restored.round().clamp(0, 255).to(torch.uint8)


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def matching_offsets(original: torch.Tensor, crop: torch.Tensor, flipped: bool) -> list[tuple[int, int]]:
    """The (dy, dx) of the 81 crops of the 4-pixel zero-padded ``original`` equal to ``crop``."""
    padded = F.pad(original, (4, 4, 4, 4))
    hits = []
    for dy in range(9):
        for dx in range(9):
            window = padded[:, dy : dy + 32, dx : dx + 32]
            if torch.equal(window.flip(-1) if flipped else window, crop):
                hits.append((dy, dx))
    return hits


def test_augmented_batches_keep_labels_and_shapes(cifar, tiny_loaders):
    loader = tiny_loaders.train
    loader.set_epoch(3)
    seen = []
    for batch in loader:
        assert batch.images.shape == (len(batch.labels), 3, 32, 32)
        assert batch.images.dtype == torch.float32
        assert batch.labels.dtype == batch.indices.dtype == torch.int64
        assert batch.flipped.dtype == torch.bool
        assert torch.equal(batch.labels, cifar.train_labels[batch.indices])
        seen.append(batch.indices)
    seen = torch.cat(seen)
    # One epoch is a permutation of the subset.
    assert torch.equal(seen.sort().values, loader.indices.sort().values)
    assert not torch.equal(seen, loader.indices)  # shuffled


def test_augmented_images_are_padded_crops_flipped_as_reported(few):
    images, labels = few
    loader = TensorLoader(images, labels, 25, shuffle=True, augment=True, seed=7)
    offsets, flips = set(), []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            restored = denormalise(batch.images)
            for j in range(0, len(batch.labels), 3):
                original = images[batch.indices[j]]
                hits = matching_offsets(original, restored[j], bool(batch.flipped[j]))
                assert hits, f"image {int(batch.indices[j])} is no crop of its original"
                offsets.update(hits)
                flips.append(bool(batch.flipped[j]))
    # Augmentation really happens: several offsets, both flip states.
    assert len(offsets) > 5
    assert any(flips) and not all(flips)


def test_unaugmented_images_are_the_normalised_originals(few):
    images, labels = few
    loader = TensorLoader(images, labels, 16)
    batches = list(loader)
    got = torch.cat([b.images for b in batches])
    torch.testing.assert_close(got, normalise(images))
    assert torch.equal(torch.cat([b.indices for b in batches]), torch.arange(len(images)))
    assert torch.equal(torch.cat([b.labels for b in batches]), labels)
    assert not torch.cat([b.flipped for b in batches]).any()


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(b.images.clone(), b.indices.clone(), b.flipped.clone()) for b in loader]


def _same(a, b):
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


def test_batches_depend_only_on_seed_and_epoch(few):
    images, labels = few

    def make(seed):
        return TensorLoader(images, labels, 16, shuffle=True, augment=True, seed=seed)

    loader = make(0)
    epoch1 = _epoch(loader, 1)
    _epoch(loader, 2)
    assert _same(_epoch(loader, 1), epoch1)  # same loader, back to epoch 1
    assert _same(_epoch(make(0), 1), epoch1)  # a fresh loader (e.g. after resuming)
    assert not _same(_epoch(loader, 2), epoch1)
    assert not _same(_epoch(make(1), 1), epoch1)
    # Shuffle order alone also depends on the epoch.
    plain = TensorLoader(images, labels, 16, shuffle=True, seed=0)
    assert not torch.equal(torch.cat([i for _, i, _ in _epoch(plain, 0)]),
                           torch.cat([i for _, i, _ in _epoch(plain, 1)]))


@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (50, 16, False, [16, 16, 16, 2]),
    (50, 16, True, [16, 16, 16]),
    (48, 16, False, [16, 16, 16]),
    (48, 16, True, [16, 16, 16]),
    (10, 16, False, [10]),
    (10, 16, True, []),
])
def test_len_and_batch_sizes(few, n, batch_size, drop_last, sizes):
    images, labels = few
    loader = TensorLoader(images[:n], labels[:n], batch_size, drop_last=drop_last, shuffle=True, augment=True)
    assert len(loader) == len(sizes)
    assert [len(b.labels) for b in loader] == sizes


def test_indices_subset(cifar):
    wanted = torch.tensor([5, 17, 1000, 49999, 3, 256])
    loader = TensorLoader(cifar.train_images, cifar.train_labels, 4, indices=wanted, shuffle=True, augment=True)
    assert len(loader) == 2
    got = torch.cat([b.indices for b in loader])
    assert sorted(got.tolist()) == sorted(wanted.tolist())
    plain = TensorLoader(cifar.train_images, cifar.train_labels, 4, indices=wanted)
    batches = list(plain)
    assert torch.equal(torch.cat([b.indices for b in batches]), wanted)
    assert torch.equal(torch.cat([b.labels for b in batches]), cifar.train_labels[wanted])
    torch.testing.assert_close(torch.cat([b.images for b in batches]), normalise(cifar.train_images[wanted]))


def test_channels_last_and_dtype(few):
    images, labels = few
    loader = TensorLoader(images, labels, 8, channels_last=True, dtype=torch.float64)
    batch = next(iter(loader))
    assert batch.images.dtype == torch.float64
    assert batch.images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch.images.float(), normalise(images[:8]))


@pytest.mark.parametrize("change, match", [
    ({"images": "float"}, "images"),
    ({"images": "gray"}, "images"),
    ({"images": "3d"}, "images"),
    ({"labels": "short"}, "labels"),
    ({"labels": "2d"}, "labels"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -4}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
])
def test_tensor_loader_bad_arguments(few, change, match):
    images, labels = few
    kwargs = {"images": images, "labels": labels, "batch_size": 8}
    variants = {
        "float": images.float(), "gray": images[:, :1], "3d": images[:, 0],
        "short": labels[:-1], "2d": labels[:, None],
    }
    for key, value in change.items():
        kwargs[key] = variants.get(value, value) if isinstance(value, str) else value
    with pytest.raises(ValueError, match=match):
        TensorLoader(**kwargs)
