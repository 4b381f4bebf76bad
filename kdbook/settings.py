"""Run profiles, the training device, and where the library keeps its files.

Two profiles run the same code at two sizes:

- ``full``: the real experiment (the default where CUDA is available);
- ``quick``: a small stratified subset of CIFAR-10 for CPUs and tests (the default
  without CUDA; the test configuration, ``conftest.py``, sets it for every test and
  notebook, so the suite never starts a full run).

``KDBOOK_PROFILE=quick|full`` overrides the default.
``KDBOOK_DEVICE`` picks the device (``cpu``, ``cuda``, ``cuda:1``...).
``KDBOOK_HOME`` is the folder for caches, checkpoints and results (point it at
Google Drive in Colab so that a disconnect loses nothing); default ``~/.cache/kdbook``.
``KDBOOK_RESULTS`` overrides where experiment results go (default ``$KDBOOK_HOME/results``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PROFILES = ("quick", "full")


def profile() -> str:
    """The active profile name: ``quick`` or ``full``."""
    requested = os.environ.get("KDBOOK_PROFILE", "").strip()
    if requested:
        if requested not in PROFILES:
            raise ValueError(
                f"KDBOOK_PROFILE={requested!r} is not a profile; allowed values: {', '.join(PROFILES)}"
            )
        return requested
    return "full" if torch.cuda.is_available() else "quick"


def device() -> torch.device:
    """The training device: ``KDBOOK_DEVICE`` if set, else CUDA when available, else CPU."""
    requested = os.environ.get("KDBOOK_DEVICE", "").strip()
    if requested:
        try:
            dev = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(
                f"KDBOOK_DEVICE={requested!r} is not a torch device; use e.g. 'cpu' or 'cuda'"
            ) from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"KDBOOK_DEVICE={requested!r} but CUDA is not available here; use 'cpu'")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic instructions (AVX512_BF16 or AMX), which
    oneDNN's bfloat16 kernels use. Elsewhere bfloat16 is converted to and from float32
    around float32 arithmetic, and costs more than float32 alone (``python -m kdbook.bench
    --precision``, which times both in turns): on an AVX2-only CPU a student's training step
    took 5.7 times as long as in float32, a teacher's forward pass 18 times; on an AVX-512
    CPU without AVX512_BF16 (the book's 2-core machine, whose oneDNN nonetheless reports
    bfloat16 support) 1.24 and 2.88 times."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch too old or too new to say: no autocast is the safe choice
        return False


def autocast_dtype(dev: torch.device | str | None = None) -> torch.dtype:
    """The autocast dtype of mixed-precision runs on ``dev`` (default :func:`device`).

    bfloat16 on CPUs that compute it natively (:func:`cpu_computes_bfloat16`) and on CUDA
    GPUs of compute capability 8.0 or more (Ampere and later: A100, L4, H100...); float32,
    that is no mixed precision, on other CPUs, where bfloat16 would be emulated; float16 on
    older GPUs (a T4, Colab's free GPU, is 7.5), where bfloat16 is emulated and slow.
    float16 has a narrow range (smallest normal number 6e-5), so small gradients underflow
    to 0 unless the loss is scaled: training with it uses ``torch.amp.GradScaler``
    (:func:`kdbook.train.fit`). Like the GPU's, the choice is the device's: a run's key
    says ``amp``, its provenance the dtype it ran in."""
    dev = torch.device(dev) if dev is not None else device()
    if dev.type == "cpu":
        return torch.bfloat16 if cpu_computes_bfloat16() else torch.float32
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(dev) >= (8, 0) else torch.float16
    raise ValueError(f"device type {dev.type!r} has no autocast policy here; allowed: 'cpu', 'cuda'")


def autocast_name(dev: torch.device | str | None, amp: bool) -> str:
    """What a run with ``amp`` computes in on ``dev``: "bfloat16", "float16", "float32" (a CPU
    without native bfloat16) or "off" (no autocast)."""
    return str(autocast_dtype(dev)).removeprefix("torch.") if amp else "off"


def describe_device(dev: torch.device | str | None = None) -> str:
    """A short human description, e.g. ``cpu (2 threads, x86_64, AVX2)`` or ``cuda (NVIDIA H200)``.

    For a CPU, the instruction set torch's kernels use (``AVX2``, ``AVX512``...): the same
    run took several times as long on an AVX2-only CPU as on one with AVX-512 and AMX."""
    dev = torch.device(dev) if dev is not None else device()
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()}, {torch.backends.cpu.get_cpu_capability()})"


def results_data() -> str | None:
    """``KDBOOK_RESULTS_DATA``: the data source (as results name it, e.g. ``CIFAR-10, JPEG
    q75 copy``) of stored results that may stand in for runs on this machine's data; a
    result read that way keeps its own provenance. Unset: only runs on the same data."""
    return os.environ.get("KDBOOK_RESULTS_DATA", "").strip() or None


def home() -> Path:
    """Root folder for caches, checkpoints and results (``KDBOOK_HOME``)."""
    root = os.environ.get("KDBOOK_HOME", "").strip()
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "kdbook"
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(name: str) -> Path:
    """A named folder under :func:`home` (``data``, ``checkpoints``, ``results``...)."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Where experiment results and derived weights go: ``KDBOOK_RESULTS`` if set, else
    ``$KDBOOK_HOME/results`` (the book's full-profile results are committed under
    ``results/`` in the repository: run sweeps with ``KDBOOK_RESULTS=results``)."""
    root = os.environ.get("KDBOOK_RESULTS", "").strip()
    path = Path(root).expanduser() if root else subdir("results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def commit() -> str:
    """The checkout's short commit hash ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(data: str, dev: torch.device | str | None = None) -> dict[str, str]:
    """The record every result carries (runs, teachers, benchmarks, a chapter's timed cells):
    profile, device, data, torch version and commit. Each adds its own fields (wall time...)."""
    return {"profile": profile(), "device": describe_device(dev), "data": data, "torch": torch.__version__,
            "commit": commit()}


@dataclass(frozen=True)
class RunStamp:
    """A timed block's :func:`provenance` and wall time."""

    profile: str
    device: str
    data: str
    torch: str
    commit: str
    wall_s: float

    def line(self) -> str:
        return (
            f"profile={self.profile} | device={self.device} | data={self.data} | "
            f"wall time {self.wall_s:.1f} s | torch {self.torch}"
        )


class Stopwatch:
    """Times a block and builds its :class:`RunStamp`::

        with Stopwatch(data=cifar.source) as sw:
            ...train...
        print(sw.stamp.line())
    """

    def __init__(self, data: str, dev: torch.device | str | None = None):
        self.data = data
        self.dev = dev
        self.stamp: RunStamp | None = None

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.stamp = RunStamp(**provenance(self.data, self.dev), wall_s=time.perf_counter() - self._t0)
