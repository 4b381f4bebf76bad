"""Teacher outputs computed once per (teacher, data) and cached on disk.

For KD with a cached teacher, the logits of every training image and of its mirror
image are computed in one pass and stored as an (N, 2, C) tensor; the training loop
then looks them up by sample index and flip (:class:`kdbook.train.CachedTeacher`).
The cache key hashes the teacher's weights and the image bytes in order, so outputs
are never mixed up across teachers, datasets or sample orders.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import torch
from torch import Tensor, nn

from kdbook import settings
from kdbook.data import TensorLoader
from kdbook.files import atomic_write, read_cache
from kdbook.models import evaluating
from kdbook.train import CachedTeacher, autocast


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of a model's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def images_fingerprint(images: Tensor) -> str:
    """CRC-32 of the image bytes in order, with the shape: changes with any reordering."""
    crc = zlib.crc32(images.contiguous().numpy().data)
    return f"{tuple(images.shape)}-{crc:08x}"


@torch.no_grad()
def compute_teacher_logits(teacher: nn.Module, images: Tensor, *, device=None,
                           batch_size: int = 1000, amp: bool = False) -> Tensor:
    """Logits of ``teacher`` for every image and its mirror: float32 (N, 2, C) on the CPU."""
    device = torch.device(device) if device is not None else settings.device()
    loader = TensorLoader(images, torch.zeros(len(images), dtype=torch.int64), batch_size, device=device)
    rows = []
    with evaluating(teacher):
        for batch in loader:
            # NHWC, the layout the teachers are trained in: on a CPU the book teacher's forward
            # pass took a quarter less time than in NCHW, with the same logits up to rounding.
            nhwc = batch.images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                views = torch.stack([teacher(nhwc).float(), teacher(nhwc.flip(3)).float()], 1)
            rows.append(views.cpu())
    return torch.cat(rows)


def _cache_path(teacher: nn.Module, images: Tensor, name: str) -> tuple[str, Path]:
    key = f"{name}-{weights_fingerprint(teacher)}-{images_fingerprint(images)}"
    return key, settings.subdir("teacher_outputs") / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def stored_teacher_outputs(teacher: nn.Module, images: Tensor, *, name: str = "teacher",
                           device=None) -> CachedTeacher | None:
    """The :class:`CachedTeacher` of ``images`` if its table is on disk and sound, else None
    (a damaged file is reported and treated as missing)."""
    key, path = _cache_path(teacher, images, name)

    def load(file: Path) -> Tensor:
        saved = torch.load(file, map_location="cpu", weights_only=True)
        if saved["key"] != key or saved["logits"].shape[:2] != (len(images), 2):
            raise ValueError(f"holds {saved['key']!r} with shape {tuple(saved['logits'].shape)}")
        return saved["logits"]

    logits = read_cache(path, load, f"the outputs of {name}")
    return None if logits is None else CachedTeacher(logits, f"cached outputs of {name}").to(device or settings.device())


def cached_teacher(teacher: nn.Module, images: Tensor, *, name: str = "teacher", device=None,
                   amp: bool = False) -> CachedTeacher:
    """A :class:`CachedTeacher` for ``images`` (positions 0..N-1), computed once and kept on disk."""
    found = stored_teacher_outputs(teacher, images, name=name, device=device)
    if found is not None:
        return found
    key, path = _cache_path(teacher, images, name)
    logits = compute_teacher_logits(teacher, images, device=device, amp=amp)
    with atomic_write(path) as handle:
        torch.save({"key": key, "logits": logits}, handle)
    return CachedTeacher(logits, f"cached outputs of {name}").to(device or settings.device())
