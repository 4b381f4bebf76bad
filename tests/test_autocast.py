"""Mixed precision: the autocast dtype follows the device (``kdbook.settings.autocast_dtype``),
and float16 training scales the loss with ``torch.amp.GradScaler`` (``kdbook.train.fit``),
whose state checkpoints save and restore.

No GPU is needed: the device's compute capability is simulated, and the float16 path of
``fit`` runs on the CPU where torch supports float16 autocast there.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

import pytest
import torch

from kdbook import settings, train
from kdbook.models import StudentCNN
from kdbook.train import TrainConfig, fit, seed_everything


def simulate_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize("capability, expected", [
    ((6, 0), torch.float16),  # P100
    ((7, 0), torch.float16),  # V100
    ((7, 5), torch.float16),  # T4, Colab's free GPU
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100, H200
])
def test_autocast_dtype_follows_the_compute_capability(monkeypatch, capability, expected):
    simulate_gpu(monkeypatch, capability)
    assert settings.autocast_dtype("cuda") == expected
    assert settings.autocast_dtype(torch.device("cuda", 0)) == expected
    monkeypatch.setenv("KDBOOK_DEVICE", "cuda")  # the default is the training device
    assert settings.autocast_dtype() == expected


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_autocast_dtype_on_cpu_follows_native_bfloat16_even_beside_an_old_gpu(monkeypatch, native, expected):
    simulate_gpu(monkeypatch, (7, 5))
    monkeypatch.setattr(settings, "cpu_computes_bfloat16", lambda: native)
    assert settings.autocast_dtype("cpu") == expected
    monkeypatch.setenv("KDBOOK_DEVICE", "cpu")
    assert settings.autocast_dtype() == expected


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or platform.machine() != "x86_64",
                    reason="reads the CPU flags of an x86-64 Linux machine")
def test_native_bfloat16_means_bfloat16_instructions_not_avx512_alone():
    # AVX-512 without AVX512_BF16 emulates bfloat16 (slower than float32 here), though oneDNN
    # reports bfloat16 support there; the flags the kernel lists are the reference.
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert settings.cpu_computes_bfloat16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_float32_mixed_precision_is_no_autocast(monkeypatch):
    monkeypatch.setattr(settings, "cpu_computes_bfloat16", lambda: False)
    model = torch.nn.Linear(4, 4)
    with train.autocast(torch.device("cpu"), True):
        assert model(torch.ones(1, 4)).dtype == torch.float32
    monkeypatch.setattr(settings, "cpu_computes_bfloat16", lambda: True)
    with train.autocast(torch.device("cpu"), True):
        assert model(torch.ones(1, 4)).dtype == torch.bfloat16
    with train.autocast(torch.device("cpu"), False):
        assert model(torch.ones(1, 4)).dtype == torch.float32


def test_autocast_dtype_refuses_other_devices():
    with pytest.raises(ValueError, match="'meta'.*allowed: 'cpu', 'cuda'"):
        settings.autocast_dtype("meta")


def test_grad_scaler_only_for_float16_autocast(monkeypatch):
    cpu = torch.device("cpu")
    assert not train.grad_scaler(cpu, TrainConfig(amp=True)).is_enabled()  # bfloat16
    monkeypatch.setattr(settings, "autocast_dtype", lambda dev=None: torch.float16)
    assert train.grad_scaler(cpu, TrainConfig(amp=True)).is_enabled()
    assert not train.grad_scaler(cpu, TrainConfig(amp=False)).is_enabled()  # float32


def cpu_supports_float16_autocast() -> bool:
    a = torch.ones(2, 2)
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.mm(a, a).dtype == torch.float16
    except (RuntimeError, AssertionError):
        return False


def student() -> StudentCNN:
    seed_everything(0)
    return StudentCNN(width=4, depth=1)


@pytest.mark.skipif(not cpu_supports_float16_autocast(), reason="this torch has no float16 autocast on CPU")
def test_float16_training_with_loss_scaling_runs_and_checkpoints_its_scale(monkeypatch, loader_factory, tmp_path):
    monkeypatch.setattr(settings, "autocast_dtype", lambda dev=None: torch.float16)  # as on a T4
    model = student()
    dtypes = set()
    model.head.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    config = TrainConfig(epochs=2, lr=0.05, amp=True, seed=0)
    loaders = loader_factory()
    checkpoint = tmp_path / "run.pt"
    history = fit(model, loaders.train, config, eval_loader=loaders.test, checkpoint=checkpoint, progress=False)
    assert torch.float16 in dtypes, "the model did not run in float16"
    assert all(math.isfinite(e["loss"]) for e in history.epochs)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    saved = torch.load(checkpoint, weights_only=False)["scaler"]
    assert saved["scale"] > 0 and saved["_growth_tracker"] >= 0

    # Resuming restores the loss scale the run had reached, not the initial one.
    state = torch.load(checkpoint, weights_only=False)
    state["scaler"]["scale"] = 2.0**7
    torch.save(state, checkpoint)
    scaler = train.grad_scaler(torch.device("cpu"), config)
    model = student()
    optimizer = train.make_optimizer(model, config)
    scheduler = train.make_scheduler(optimizer, len(loaders.train), config)
    train._resume(checkpoint, model, optimizer, scheduler, config, scaler)
    assert scaler.get_scale() == 2.0**7

    # A checkpoint of a bfloat16 run (no scaler state) resumes with the initial scale.
    del state["scaler"]
    torch.save(state, checkpoint)
    fresh = train.grad_scaler(torch.device("cpu"), config)
    initial = fresh.get_scale()
    train._resume(checkpoint, student(), optimizer, scheduler, config, fresh)
    assert fresh.get_scale() == initial != 2.0**7


def test_bfloat16_training_saves_no_loss_scale(loader_factory, tmp_path):
    config = TrainConfig(epochs=1, lr=0.05, amp=True, seed=0)
    checkpoint = tmp_path / "run.pt"
    fit(student(), loader_factory().train, config, checkpoint=checkpoint, progress=False)
    assert torch.load(checkpoint, weights_only=False)["scaler"] == {}
