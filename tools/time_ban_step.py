"""One-thread training-step time of the born-again student (batch 256, random 32x32 images)
in each memory layout and precision: the measurement behind ``experiments.BAN_TRAIN``.

    python tools/time_ban_step.py [WIDTH DEPTH]      (default: experiments.BAN_STUDENT)
"""
import sys
import time

import torch
import torch.nn.functional as F

from kdbook.experiments import BAN_STUDENT
from kdbook.models import StudentCNN


def seconds_per_step(width: int, depth: int, channels_last: bool, bfloat16: bool, steps: int = 10) -> float:
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = StudentCNN(width, depth).to(memory_format=layout)
    images = torch.randn(256, 3, 32, 32).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (256,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for i in range(steps + 3):  # three warm-up steps
        if i == 3:
            start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


if __name__ == "__main__":
    torch.set_num_threads(1)
    width, depth = map(int, sys.argv[1:3]) if len(sys.argv) == 3 else BAN_STUDENT
    print(f"StudentCNN({width}, {depth}), one thread, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for channels_last in (False, True):
        for bfloat16 in (False, True):
            s = seconds_per_step(width, depth, channels_last, bfloat16)
            print(f"{'NHWC' if channels_last else 'NCHW'} {'bfloat16' if bfloat16 else 'float32 '}  {s:.3f} s/step")
