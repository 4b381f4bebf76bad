"""The caches' file policy: written atomically (an interrupted write never leaves half a
file behind), and a damaged file is rebuilt, never used."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yields a binary handle to a unique temporary file next to ``path`` and moves it
    into place only when the block succeeds. Readers see the old file or the new one,
    never a partial one, and two processes writing the same path do not collide."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_cache(path: str | os.PathLike, load: Callable[[Path], T], what: str) -> T | None:
    """``load(path)``, or None when the file is missing or damaged (said once on stdout), so
    the caller rebuilds it. ``load`` raises on anything it would not trust: a partial file, a
    wrong key, a shape or checksum mismatch."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load(path)
    except Exception as err:  # noqa: BLE001 (damaged in whatever way: rebuilt, never used)
        print(f"kdbook: rebuilding {what}: {path} is unreadable ({type(err).__name__}: {err})")
        return None
