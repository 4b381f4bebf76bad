"""The teacher and the student CNNs.

The teacher follows the shape of Keller Jordan's airbench networks (three groups
of two 3x3 convolutions with max-pooling, BatchNorm, GELU), a design that trains to
over 90% on CIFAR-10 in few epochs; the code here is written for this book.
The students are plain VGG-style CNNs whose width and depth are arguments, so the
chapters can vary the gap between teacher and student.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, TypeVar

from torch import Tensor, nn

Model = TypeVar("Model", bound=nn.Module)


def conv_bn(c_in: int, c_out: int, act: type[nn.Module] = nn.GELU) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act()]


class TeacherNet(nn.Module):
    """airbench-style CNN: stem conv, then per group conv -> pool -> conv, then a linear head.

    ``widths=(64, 256, 256)`` gives about 1.97M parameters.
    """

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), stem: int = 32, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = conv_bn(3, stem)
        c_in = stem
        for width in widths:
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
                       nn.BatchNorm2d(width), nn.GELU(), *conv_bn(width, width)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(c_in, num_classes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class StudentCNN(nn.Module):
    """Three stages of ``depth`` conv-BN-ReLU layers with widths (w, 2w, 4w), each
    followed by 2x2 max-pooling; global average pooling and a linear head."""

    def __init__(self, width: int = 16, depth: int = 1, num_classes: int = 10):
        super().__init__()
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        layers: list[nn.Module] = []
        c_in = 3
        for stage in range(3):
            c_out = width * 2**stage
            for _ in range(depth):
                layers += conv_bn(c_in, c_out, nn.ReLU)
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)
        self.width, self.depth = width, depth

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -----------------------------------------------------------------------------
# Small helpers every user of a trained network needs.


def freeze(model: Model) -> Model:
    """``model`` in eval mode with gradients off, as a teacher must be: its BatchNorm layers
    use their running statistics (and never update them) and nothing in it is trained."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the ``with`` block; the mode it had before is restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def half_state(model: nn.Module) -> dict:
    """The state dict with its floating-point tensors in float16, on the CPU: stored weights
    at half the bytes (the networks here lose nothing measurable by it)."""
    return {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in model.state_dict().items()}


def load_half_state(model: Model, state: dict) -> Model:
    """Loads a :func:`half_state` (or any state dict) into ``model`` in float32."""
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model
