"""CIFAR-10, from torchvision's files or an offline ImageFolder copy, decoded once.

``load_cifar10()`` finds the data (an explicit root, else ``KDBOOK_DATA``, else
torchvision's download into the library's cache), decodes it to uint8 tensors
once, and caches the arrays on disk with a checksum so the next load is fast and a
corrupt cache is rebuilt rather than used.

``TensorLoader`` keeps the images as one tensor on the training device and does the
standard augmentation (random crop with 4 pixels of zero padding, horizontal flip)
there, with no PIL and no worker processes in the training loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

from kdbook import settings
from kdbook.files import atomic_write, read_cache

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the CIFAR-10 training set, used to normalise inputs.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CACHE_FORMAT = 1  # bump when the cache layout changes


@dataclass
class CIFAR10:
    """The whole dataset as tensors: images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    source: str  # short label that every result carries, e.g. "CIFAR-10, JPEG q75 copy"
    location: str  # where the files were read from

    def __repr__(self) -> str:
        return (
            f"CIFAR10(train={tuple(self.train_images.shape)}, test={tuple(self.test_images.shape)}, "
            f"source={self.source!r}, location={self.location!r})"
        )


# -----------------------------------------------------------------------------
# Finding the data.


@dataclass(frozen=True)
class _Found:
    kind: str  # "torchvision" or "imagefolder"
    path: Path  # torchvision: the folder holding cifar-10-batches-py; imagefolder: holds train/ test/


def _detect(path: Path) -> _Found | None:
    """Recognises a data root at ``path`` or one folder below it."""
    for candidate in [path, *sorted(p for p in path.iterdir() if p.is_dir())] if path.is_dir() else []:
        if (candidate / "cifar-10-batches-py").is_dir():
            return _Found("torchvision", candidate)
        if candidate.name == "cifar-10-batches-py":
            return _Found("torchvision", candidate.parent)
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return _Found("imagefolder", candidate)
    return None


def _why_not(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    return "holds neither cifar-10-batches-py/ (torchvision) nor train/ and test/ (ImageFolder)"


def _find(root: str | os.PathLike | None) -> _Found:
    explicit = root if root is not None else os.environ.get("KDBOOK_DATA") or None
    origin = "root argument" if root is not None else "KDBOOK_DATA"
    if explicit is not None:
        path = Path(explicit).expanduser()
        found = _detect(path)
        if found is None:
            raise FileNotFoundError(
                f"CIFAR-10 not found at {path} ({origin}): it {_why_not(path)}.\n"
                "Point it at torchvision's CIFAR-10 folder or at an ImageFolder tree "
                "(train/<class>/*.jpg, test/<class>/*.jpg), or unset it to download."
            )
        return found
    download_root = settings.subdir("data") / "torchvision"
    found = _detect(download_root) if download_root.exists() else None
    if found is not None:
        return found
    try:
        import torchvision

        torchvision.datasets.CIFAR10(download_root, train=True, download=True)
    except Exception as err:  # no network, disk full...: say what was tried and how to fix it
        raise FileNotFoundError(
            "CIFAR-10 could not be found or downloaded. Tried:\n"
            "  - root argument: not given\n"
            "  - KDBOOK_DATA: not set\n"
            f"  - torchvision download into {download_root}: {type(err).__name__}: {err}\n"
            "Fix: set KDBOOK_DATA (or pass root=) to a folder with torchvision's "
            "cifar-10-batches-py/ or an ImageFolder tree train/<class>/, test/<class>/."
        ) from err
    return _Found("torchvision", download_root)


# -----------------------------------------------------------------------------
# Decoding.


def _read_torchvision(path: Path) -> dict[str, np.ndarray]:
    import torchvision

    arrays = {}
    for split in ("train", "test"):
        ds = torchvision.datasets.CIFAR10(path, train=split == "train", download=False)
        arrays[f"{split}_images"] = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
        arrays[f"{split}_labels"] = np.asarray(ds.targets, dtype=np.int64)
    return arrays


def _class_folders(split_dir: Path) -> list[Path]:
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    names = tuple(p.name for p in folders)
    if names != CLASSES:
        raise ValueError(
            f"{split_dir} must hold one folder per CIFAR-10 class {CLASSES}, found {names}"
        )
    return folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_imagefolder(path: Path) -> dict[str, np.ndarray]:
    from PIL import Image
    from tqdm.auto import tqdm

    arrays = {}
    for split in ("train", "test"):
        files, labels = [], []
        for label, folder in enumerate(_class_folders(path / split)):
            names = _image_files(folder)
            files += names
            labels += [label] * len(names)
        images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
        for i, f in enumerate(tqdm(files, desc=f"decoding {split} images", leave=False)):
            with Image.open(f) as im:
                if im.size != (32, 32):
                    raise ValueError(f"{f} is {im.size[0]}x{im.size[1]}, CIFAR-10 images are 32x32")
                images[i] = np.asarray(im.convert("RGB"))
        arrays[f"{split}_images"] = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    return arrays


# Standard JPEG luminance quantisation table (ITU T.81, Annex K), natural order.
_JPEG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)


def jpeg_quality(file: Path) -> int | None:
    """The libjpeg quality setting that produced ``file``, read off its quantisation
    table, or None if the file is not a JPEG made with the standard tables."""
    from PIL import Image

    with Image.open(file) as im:
        table = list(getattr(im, "quantization", {}).get(0, []))
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        if table == [min(max((t * scale + 50) // 100, 1), 255) for t in _JPEG_LUMA]:
            return q
    return None


def _describe(found: _Found) -> str:
    if found.kind == "torchvision":
        return "CIFAR-10 (torchvision original)"
    first = _image_files(_class_folders(found.path / "train")[0])[0]
    if first.suffix.lower() in (".jpg", ".jpeg"):
        q = jpeg_quality(first)
        return f"CIFAR-10, JPEG q{q} copy" if q else "CIFAR-10, JPEG copy"
    return "CIFAR-10, ImageFolder copy"


# -----------------------------------------------------------------------------
# The decoded-array cache.


def _signature(found: _Found) -> str:
    """Cheap fingerprint of the source files (names and sizes of what was found)."""
    parts = [found.kind, str(found.path.resolve()), str(CACHE_FORMAT)]
    if found.kind == "torchvision":
        base = found.path / "cifar-10-batches-py"
        parts += [f"{p.name}:{p.stat().st_size}" for p in sorted(base.iterdir())]
    else:
        for split in ("train", "test"):
            for folder in _class_folders(found.path / split):
                entries = list(os.scandir(folder))
                size = sum(e.stat().st_size for e in entries)
                parts.append(f"{split}/{folder.name}:{len(entries)}:{size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _checksums(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    return {k: zlib.crc32(np.ascontiguousarray(v).data) for k, v in arrays.items()}


EXPECTED_SHAPES = {
    "train_images": (50000, 3, 32, 32),
    "train_labels": (50000,),
    "test_images": (10000, 3, 32, 32),
    "test_labels": (10000,),
}


def _validate(arrays: dict[str, np.ndarray]) -> None:
    for key, shape in EXPECTED_SHAPES.items():
        if key not in arrays or arrays[key].shape != shape:
            got = arrays[key].shape if key in arrays else "missing"
            raise ValueError(f"{key}: expected shape {shape}, got {got}")


def _load_cache(file: Path) -> dict[str, np.ndarray]:
    """Loads and verifies a cache file; raises on anything partial or corrupt."""
    with np.load(file, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        arrays = {k: npz[k] for k in EXPECTED_SHAPES}
    _validate(arrays)
    if meta.get("crc32") != _checksums(arrays):
        raise ValueError("checksum mismatch")
    return arrays


def _save_cache(file: Path, arrays: dict[str, np.ndarray], description: str) -> None:
    meta = json.dumps({"crc32": _checksums(arrays), "source": description, "format": CACHE_FORMAT})
    with atomic_write(file) as handle:
        np.savez(handle, meta=np.array(meta), **arrays)


def load_cifar10(root: str | os.PathLike | None = None, *, cache: bool = True) -> CIFAR10:
    """CIFAR-10's 50,000 training and 10,000 test images as uint8 tensors.

    Sources, in order: ``root`` or ``KDBOOK_DATA`` (torchvision's files or an
    ImageFolder tree ``train/<class>/*``, ``test/<class>/*``, at that path or one
    folder below); otherwise torchvision's download into ``$KDBOOK_HOME/data``.
    """
    found = _find(root)
    description = _describe(found)
    cache_file = settings.subdir("data") / f"cifar10-{_signature(found)}.npz"
    arrays = read_cache(cache_file, _load_cache, "the decoded images") if cache else None
    if arrays is None:
        reader = _read_torchvision if found.kind == "torchvision" else _read_imagefolder
        arrays = reader(found.path)
        _validate(arrays)
        if cache:
            _save_cache(cache_file, arrays, description)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return CIFAR10(
        t["train_images"], t["train_labels"], t["test_images"], t["test_labels"],
        CLASSES, description, str(found.path),
    )


# -----------------------------------------------------------------------------
# Subsets.


def stratified_subset(
    labels: Tensor, *, per_class: int | None = None, fraction: float | None = None, seed: int = 0
) -> Tensor:
    """Sorted indices of a seeded subset with the same number of samples from each class.

    Give exactly one of ``per_class`` (samples per class) or ``fraction`` (of each class).
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    classes = torch.unique(labels)
    smallest = min(int((labels == c).sum()) for c in classes)
    if fraction is not None:
        if not (0 < fraction <= 1):
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        per_class = max(1, round(fraction * smallest))
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= smallest:
        raise ValueError(f"per_class must be an int in [1, {smallest}], got {per_class!r}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


# -----------------------------------------------------------------------------
# The tensor-resident batch iterator.


class Batch(NamedTuple):
    images: Tensor  # float, normalised, (B, 3, 32, 32)
    labels: Tensor  # int64 (B,)
    indices: Tensor  # int64 (B,): positions in the full array, for cached teacher outputs
    flipped: Tensor  # bool (B,): whether the image was mirrored


class TensorLoader:
    """Batches of a uint8 image tensor kept on ``device``, augmented there.

    Augmentation (``augment=True``): random crop of the image zero-padded by 4
    pixels, and a horizontal flip with probability 1/2, both done as one gather.
    The shuffle order and augmentation of epoch ``e`` depend only on ``(seed, e)``
    (call :meth:`set_epoch`), so a resumed run sees the same batches as an unbroken one.
    """

    PAD = 4

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        indices: Tensor | None = None,
        shuffle: bool = False,
        augment: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.device = torch.device(device)
        self.indices = (
            torch.arange(images.shape[0]) if indices is None else indices.to(torch.int64)
        ).to(self.device)
        # Only the selected images move to the device, padded once.
        subset = images[self.indices.cpu()]
        self.padded = torch.nn.functional.pad(subset, (self.PAD,) * 4).to(self.device)
        self.labels = labels[self.indices.cpu()].to(self.device)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last, self.dtype = seed, drop_last, dtype
        self.channels_last = channels_last
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.epoch)

    def _crop_flip(self, rows: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Gathers 32x32 crops of the padded images at ``rows``; random if ``gen`` is given."""
        n, size, p = len(rows), self.padded.shape[-1] - 2 * self.PAD, self.PAD
        if gen is None:
            flipped = torch.zeros(n, dtype=torch.bool, device=self.device)
            return self.padded[rows, :, p : p + size, p : p + size], flipped
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=self.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=self.device)
        flipped = torch.rand(n, generator=gen, device=self.device) < 0.5
        offsets = torch.arange(size, device=self.device)
        ys = dy[:, None] + offsets
        xs = dx[:, None] + offsets
        xs = torch.where(flipped[:, None], xs.flip(1), xs)  # a flip is reversed column order
        channels = torch.arange(3, device=self.device)
        crops = self.padded[
            rows[:, None, None, None], channels[None, :, None, None], ys[:, None, :, None], xs[:, None, None, :]
        ]
        return crops, flipped

    def __iter__(self) -> Iterator[Batch]:
        gen = self._generator()
        n = len(self.labels)
        order = torch.randperm(n, generator=gen, device=self.device) if self.shuffle else torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            crops, flipped = self._crop_flip(rows, gen if self.augment else None)
            images = (crops.to(self.dtype) - self.mean) / self.std
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield Batch(images, self.labels[rows], self.indices[rows], flipped)
