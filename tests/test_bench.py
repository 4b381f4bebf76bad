"""kdbook.bench: the precision benchmark's arithmetic (one tiny round; no timing is asserted)."""

from __future__ import annotations

import pytest
import torch

from kdbook import bench


def test_precision_benchmark_reports_both_precisions_and_their_ratio():
    result = bench.time_precision(torch.device("cpu"), steps=1, rounds=1, teacher_batch=2)
    assert result["low_precision"] == "bfloat16"
    for task in ("student_step", "teacher_forward"):
        seconds = result["seconds"][task]
        assert set(seconds) == {"float32", "bfloat16"} and all(s > 0 for s in seconds.values())
        assert result["low_over_float32"][task] == pytest.approx(seconds["bfloat16"] / seconds["float32"])
    text = bench.report_precision(result)
    assert "student training step, batch 256" in text and "teacher forward, batch 2" in text
