"""kdbook.bench: the precision benchmark's arithmetic (one tiny round; no timing is asserted)."""

from __future__ import annotations

import pytest
import torch

from kdbook import bench


def test_precision_benchmark_reports_both_precisions_and_their_ratio():
    result = bench.time_precision(torch.device("cpu"), steps=1, rounds=1, teacher_batch=2, student=(4, 1))
    assert result["low_precision"] == "bfloat16" and result["student"] == {"width": 4, "depth": 1}
    for task in ("student_step", "student_step_nhwc", "teacher_forward"):
        seconds = result["seconds"][task]
        assert set(seconds) == {"float32", "bfloat16"} and all(s > 0 for s in seconds.values())
        assert result["low_over_float32"][task] == pytest.approx(seconds["bfloat16"] / seconds["float32"])
    text = bench.report_precision(result)
    assert "StudentCNN(4, 1) step, batch 256, NHWC" in text and "teacher forward, batch 2" in text


def test_ratios_divide_the_right_modes():
    seconds = {"plain_tensor": 2.0, "kd_cached": 2.2, "kd_online": 8.8, "plain_dataloader": 6.0,
               "loader_tensor_alone": 0.5, "loader_pil_alone": 4.0}
    r = bench.ratios(seconds, cache_build_seconds=30.0, teacher_epoch_seconds=60.0)
    assert r == pytest.approx({"kd_cached_over_plain": 1.1, "online_over_cached": 4.0, "dataloader_over_tensor": 3.0,
                               "loader_speedup": 8.0, "cache_build_over_teacher_epoch": 0.5})


def test_time_training_times_train_epoch_itself(monkeypatch):
    """The benchmark's steps are the library's: train_epoch, with the run's config, warm-up untimed."""
    from kdbook.data import Batch
    from kdbook.models import StudentCNN
    from kdbook.train import TrainConfig

    calls = []
    real_train_epoch = bench.train_epoch

    def recording_train_epoch(model, loader, optimizer, scheduler, config, teacher=None, **kw):
        batches = list(loader)
        calls.append((len(batches), config, teacher))
        return real_train_epoch(model, batches, optimizer, scheduler, config, teacher, **kw)

    monkeypatch.setattr(bench, "train_epoch", recording_train_epoch)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3]), torch.arange(4),
                  torch.zeros(4, dtype=torch.bool))
    config = TrainConfig(method="ce", amp=True, channels_last=True)
    seconds = bench.time_training(StudentCNN(4, 1), bench.endless([batch]), config, steps=3, warmup=2)
    assert seconds > 0
    assert [n for n, _, _ in calls] == [2, 3] and all(c is config for _, c, _ in calls)
