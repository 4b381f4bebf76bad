"""Benchmark: distillation as cheap as plain training, measured side by side.

``python -m kdbook.bench [--device cpu|cuda] [--json PATH] [--steps N]`` times, on the
same student, data and batch size, in one process, the library's own training step
(:func:`kdbook.train.train_epoch`, in the precision and memory layout of the book's runs):

1. plain cross-entropy training fed by the tensor-resident loader;
2. KD with cached teacher outputs looked up by sample index (and flip);
3. KD with the teacher run on every batch (the usual tutorial loop);
4. plain training fed by a torchvision DataLoader with PIL transforms (2 workers),
   and each of the two loaders alone (augmented batches produced, no training);
5. teacher inference over the training set, both flips (the cost of building the
   cache), against one teacher training epoch (extrapolated from timed steps).

It prints images/second for each, the ratios 2/1, 3/2, 4/1 and the loaders-alone
ratio, with torch version, device and threads; ``--json`` writes the same.

``python -m kdbook.bench --precision`` times a student training step and a teacher
forward pass in float32 and in bfloat16 (:func:`time_precision`): on a CPU without native
bfloat16 the second is several times slower, which is why mixed precision is float32 there.

``python -m kdbook.bench --methods`` instead times one training step of each
distillation method of chapter "Beyond Hinton" (KD, DKD, LS-KD, CTKD) fed by cached
teacher outputs, and the loss alone, as ratios to Hinton's KD (:func:`time_methods`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdbook import settings
from kdbook.data import MEAN, STD, Batch, TensorLoader, load_cifar10
from kdbook.models import StudentCNN, TeacherNet, freeze
from kdbook.soft_labels import compute_teacher_logits
from kdbook.train import (CachedTeacher, OnlineTeacher, TrainConfig, batch_losses, grad_scaler,
                          make_learned_temperature, train_epoch)

# ----------------------------------------------------------------------------- settings
BENCH = dict(
    student=dict(width=16, depth=1),  # the experiments' default student
    batch_size=256,  # examples per training step, every mode
    steps=40,  # timed training steps per mode (after warm-up)
    warmup=5,  # untimed steps per mode
    loader_batches=60,  # batches per loaders-alone measurement
    temperature=4.0,
    alpha=0.5,
    teacher_batch=512,  # teacher training step batch size (the teacher recipe's)
    teacher_steps=6,  # timed teacher training steps
    teacher_warmup=2,  # untimed teacher training steps before them
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work, times: int = 1) -> float:
    """Seconds that ``times`` calls of ``work()`` take on ``device`` (queued GPU work finished
    before and after)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(times):
        work()
    synchronize(device)
    return time.perf_counter() - start


class PILCIFAR(torch.utils.data.Dataset):
    """The usual pipeline: uint8 arrays -> PIL image -> torchvision transforms, per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        import torchvision.transforms as T

        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC for PIL
        self.labels = labels.numpy()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                    T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def pil_loader(cifar, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(PILCIFAR(cifar.train_images, cifar.train_labels), batch_size=batch_size,
                                       shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)


def endless(batches):
    while True:
        yield from batches


def time_training(model, batches, config: TrainConfig, steps: int, warmup: int, teacher=None,
                  learned_temperature=None) -> float:
    """Seconds for ``steps`` training steps of :func:`kdbook.train.train_epoch` itself (after
    ``warmup`` untimed ones): ``batches`` yields :class:`~kdbook.data.Batch`; precision and
    memory layout come from ``config`` (``amp``, ``channels_last``), as in every run.
    ``learned_temperature`` (CTKD's) is optimised with the model."""
    params = list(model.parameters())
    if learned_temperature is not None:
        params += list(learned_temperature.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
    device = next(model.parameters()).device
    scaler = grad_scaler(device, config)

    def steps_of_train_epoch(n: int) -> None:
        train_epoch(model, itertools.islice(batches, n), optimizer, None, config, teacher, progress=False,
                    scaler=scaler, learned_temperature=learned_temperature)

    steps_of_train_epoch(warmup)
    return timed(device, lambda: steps_of_train_epoch(steps))


def time_loader(batches, device, n: int) -> float:
    next(batches)  # first batch outside the clock (worker start-up)
    return timed(device, lambda: next(batches).images.to(device), n)


def pil_batches(loader, device):
    """The DataLoader's (images, labels) as the :class:`~kdbook.data.Batch` that ``train_epoch``
    reads (no sample indices: plain training needs none)."""
    for images, labels in endless(loader):
        yield Batch(images.to(device, non_blocking=True), labels.to(device, non_blocking=True), None, None)


def make_student(device, channels_last: bool, dims: dict | None = None):
    torch.manual_seed(0)
    student = StudentCNN(**(dims or BENCH["student"])).to(device)
    return student.to(memory_format=torch.channels_last) if channels_last else student


def run(device: torch.device, steps: int, amp: bool, channels_last: bool) -> dict:
    cifar = load_cifar10()
    dry_run = steps < 40  # CI's rehearsal (--steps 5): every mode, as little of each as runs
    bs, warm = BENCH["batch_size"], 1 if dry_run else BENCH["warmup"]
    tensor_loader = TensorLoader(cifar.train_images, cifar.train_labels, bs, shuffle=True, augment=True,
                                 drop_last=True, device=device)
    teacher = TeacherNet().to(device)
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    # The cache for mode 2 covers every training image; building it is timed in mode 5
    # on the full set with the default --steps (40 or more), else (a dry run, as in CI) on
    # the first 256 images, the rate extrapolated to 50,000.
    precision = dict(amp=amp, channels_last=channels_last)
    plain = TrainConfig(method="ce", **precision)
    kd = TrainConfig(method="kd", temperature=BENCH["temperature"], alpha=BENCH["alpha"], **precision)
    seconds, images_per_step = {}, bs
    seconds["plain_tensor"] = time_training(make_student(device, channels_last), endless(tensor_loader), plain,
                                            steps, warm)

    cache_n = 256 if dry_run else len(cifar.train_images)
    t0 = time.perf_counter()
    cache_logits = compute_teacher_logits(teacher, cifar.train_images[:cache_n], device=device, amp=amp)
    synchronize(device)
    cache_seconds = time.perf_counter() - t0
    table = torch.zeros(len(cifar.train_images), 2, 10)
    table[:cache_n] = cache_logits
    cached = CachedTeacher(table).to(device)
    seconds["kd_cached"] = time_training(make_student(device, channels_last), endless(tensor_loader), kd,
                                         steps, warm, teacher=cached)
    seconds["kd_online"] = time_training(make_student(device, channels_last), endless(tensor_loader), kd,
                                         steps, warm, teacher=OnlineTeacher(teacher))
    dataloader = pil_loader(cifar, bs)
    seconds["plain_dataloader"] = time_training(make_student(device, channels_last), pil_batches(dataloader, device),
                                                plain, steps, warm)
    n_batches = 20 if dry_run else BENCH["loader_batches"]
    seconds["loader_tensor_alone"] = time_loader(endless(tensor_loader), device, n_batches)
    seconds["loader_pil_alone"] = time_loader(pil_batches(dataloader, device), device, n_batches)
    del dataloader

    # A dry run's two teacher steps at the recipe's batch of 512 took about half its time on a CPU.
    teacher_steps, teacher_warmup, teacher_batch = ((1, 1, 64) if dry_run else
                                                    (BENCH["teacher_steps"], BENCH["teacher_warmup"],
                                                     BENCH["teacher_batch"]))
    teacher_epoch = time_teacher_epoch(cifar, device, amp, channels_last, teacher_steps, teacher_warmup,
                                       teacher_batch)
    n_train = len(cifar.train_images)
    rates = {k: steps * images_per_step / v for k, v in seconds.items() if not k.startswith("loader")}
    rates.update({k: n_batches * bs / v for k, v in seconds.items() if k.startswith("loader")})
    cache_rate = 2 * cache_n / cache_seconds  # forward passes (image + mirror) per second
    return {
        **settings.provenance(cifar.source, device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "amp_bfloat16": amp,  # (name kept for stored results) mixed precision on or off
        "autocast": settings.autocast_name(device, amp),
        "channels_last": channels_last,
        "settings": {**BENCH, "steps": steps, "warmup": warm, "teacher_batch": teacher_batch},
        "images_per_second": rates,
        "seconds": seconds,
        "teacher_cache": {
            "images": cache_n,
            "seconds": cache_seconds,
            "seconds_for_50000_both_flips": cache_seconds * n_train / cache_n,
            "forward_passes_per_second": cache_rate,
        },
        "teacher_epoch_seconds_estimate": teacher_epoch,
        "ratios": ratios(seconds, cache_seconds * n_train / cache_n, teacher_epoch),
    }


def ratios(seconds: dict[str, float], cache_build_seconds: float, teacher_epoch_seconds: float) -> dict[str, float]:
    """The benchmark's ratios, from seconds measured in one run (same steps and batch per mode)."""
    return {
        "kd_cached_over_plain": seconds["kd_cached"] / seconds["plain_tensor"],
        "online_over_cached": seconds["kd_online"] / seconds["kd_cached"],
        "dataloader_over_tensor": seconds["plain_dataloader"] / seconds["plain_tensor"],
        "loader_speedup": seconds["loader_pil_alone"] / seconds["loader_tensor_alone"],
        "cache_build_over_teacher_epoch": cache_build_seconds / teacher_epoch_seconds,
    }


def time_teacher_epoch(cifar, device, amp: bool, channels_last: bool, steps: int, warmup: int,
                       bs: int = BENCH["teacher_batch"]) -> float:
    """One teacher training epoch (50,000 images), extrapolated from ``steps`` timed steps
    of ``bs`` images after ``warmup`` untimed ones."""
    loader = TensorLoader(cifar.train_images, cifar.train_labels, bs, shuffle=True, augment=True,
                          drop_last=True, device=device)
    torch.manual_seed(0)
    teacher = TeacherNet().to(device)
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    plain = TrainConfig(method="ce", amp=amp, channels_last=channels_last)
    seconds = time_training(teacher, endless(loader), plain, steps, warmup)
    return seconds / (steps * bs) * len(cifar.train_images)


def report(result: dict) -> str:
    r, ips = result["ratios"], result["images_per_second"]
    lines = [
        f"torch {result['torch']} | device {result['device']} | threads {result['threads']} | "
        f"autocast {result.get('autocast', result['amp_bfloat16'])} | channels_last {result['channels_last']} | data {result['data']}",
        f"student StudentCNN({BENCH['student']['width']}, {BENCH['student']['depth']}), batch "
        f"{BENCH['batch_size']}, {result['settings']['steps']} timed steps per mode",
        "",
        f"{'mode':<48}{'images/s':>12}",
        f"{'1. plain CE, tensor loader':<48}{ips['plain_tensor']:>12.0f}",
        f"{'2. KD, cached teacher outputs':<48}{ips['kd_cached']:>12.0f}",
        f"{'3. KD, teacher run on every batch':<48}{ips['kd_online']:>12.0f}",
        f"{'4. plain CE, DataLoader + PIL (2 workers)':<48}{ips['plain_dataloader']:>12.0f}",
        f"{'   tensor loader alone (augmented batches)':<48}{ips['loader_tensor_alone']:>12.0f}",
        f"{'   DataLoader + PIL alone (augmented batches)':<48}{ips['loader_pil_alone']:>12.0f}",
        f"{'5. teacher inference, both flips (passes/s)':<48}{result['teacher_cache']['forward_passes_per_second']:>12.0f}",
        "",
        f"ratio 2/1 kd_cached_over_plain      {r['kd_cached_over_plain']:.3f}   (bar: <= 1.10)",
        f"ratio 3/2 online_over_cached        {r['online_over_cached']:.3f}",
        f"ratio 4/1 dataloader_over_tensor    {r['dataloader_over_tensor']:.3f}",
        f"loader_speedup (PIL / tensor)       {r['loader_speedup']:.1f}   (bar: >= 5)",
        f"teacher cache for 50,000 images x 2 flips: {result['teacher_cache']['seconds_for_50000_both_flips']:.1f} s "
        f"vs one teacher training epoch {result['teacher_epoch_seconds_estimate']:.1f} s "
        f"(ratio {r['cache_build_over_teacher_epoch']:.2f}, bar: < 1)",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- methods
# The soft terms of chapter "Beyond Hinton", with the settings of its runs.
METHOD_CONFIGS = {
    "kd": dict(method="kd", temperature=4.0),
    "dkd": dict(method="dkd", temperature=4.0, dkd_beta=8.0),
    "lskd": dict(method="lskd", temperature=2.0),
    "ctkd": dict(method="ctkd", temperature=4.0),
}


def time_methods(device: torch.device, steps: int = BENCH["steps"], rounds: int = 3, amp: bool = True,
                 channels_last: bool = True, loss_steps: int = 200) -> dict:
    """Cost of each distillation method, fed by cached teacher outputs, in one process.

    For each method of :data:`METHOD_CONFIGS`: seconds per training step (student forward
    and backward, the method's loss through :func:`kdbook.train.batch_losses`, optimiser
    step; CTKD's temperature in the optimiser), and seconds per forward+backward of the
    loss alone on a fixed batch of logits. The methods take turns, ``rounds`` times, and
    the median round counts, so that a slow moment of the machine hits all of them alike.
    The cached outputs are random numbers: the loss's cost does not depend on the values."""
    cifar = load_cifar10()
    bs, warm = BENCH["batch_size"], BENCH["warmup"]
    loader = TensorLoader(cifar.train_images, cifar.train_labels, bs, shuffle=True, augment=True,
                          drop_last=True, device=device)
    cached = CachedTeacher(torch.randn(len(cifar.train_labels), 2, 10, generator=torch.Generator().manual_seed(0)))
    cached.to(device)
    configs = {name: TrainConfig(**c, amp=amp, channels_last=channels_last) for name, c in METHOD_CONFIGS.items()}
    step_seconds = {name: [] for name in configs}
    loss_seconds = {name: [] for name in configs}
    for _ in range(rounds):
        for name, config in configs.items():
            step_seconds[name].append(_time_method_steps(config, loader, cached, device, steps, warm) / steps)
            loss_seconds[name].append(_time_loss_alone(config, device, loss_steps) / loss_steps)
    step = {k: sorted(v)[len(v) // 2] for k, v in step_seconds.items()}
    loss = {k: sorted(v)[len(v) // 2] for k, v in loss_seconds.items()}
    return {
        **settings.provenance(cifar.source, device), "threads": torch.get_num_threads(),
        "amp": amp, "channels_last": channels_last, "batch_size": bs, "steps": steps, "rounds": rounds,
        "student": BENCH["student"],
        "seconds_per_step": step, "seconds_per_loss": loss,
        "step_ratio_to_kd": {k: v / step["kd"] for k, v in step.items()},
        "loss_ratio_to_kd": {k: v / loss["kd"] for k, v in loss.items()},
    }


def _time_method_steps(config, loader, cached, device, steps, warmup) -> float:
    learned = make_learned_temperature(config, steps + warmup)
    if learned is not None:
        learned.to(device)
    return time_training(make_student(device, config.channels_last), endless(loader), config, steps, warmup,
                         teacher=cached, learned_temperature=learned)


def _time_loss_alone(config, device, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    bs = BENCH["batch_size"]
    logits = torch.randn(bs, 10, generator=g).to(device).requires_grad_(True)
    teacher, labels = torch.randn(bs, 10, generator=g).to(device), torch.randint(0, 10, (bs,), generator=g).to(device)
    learned = make_learned_temperature(config, 2 * steps)
    if learned is not None:
        learned.to(device)

    def step():
        batch_losses(logits, labels, config, teacher, learned)["loss"].backward()

    timed(device, step, steps)  # the first half warms up
    return timed(device, step, steps)


def time_precision(device: torch.device, steps: int = 3, rounds: int = 3, teacher_batch: int = 64,
                   student: tuple[int, int] | None = None) -> dict:
    """Seconds per student training step (batch 256; the student ``(width, depth)``, default
    the experiments' one), in the NCHW and the NHWC (channels-last) layout, and per teacher
    forward pass (batch ``teacher_batch``), in float32 and in the low precision torch
    autocasts to here (bfloat16 on a CPU, whether or not it computes it natively; the
    device's dtype on a GPU), each taking turns ``rounds`` times (median round): the
    measurement behind :func:`kdbook.settings.autocast_dtype`'s choice of float32 on CPUs
    without bfloat16, and behind the born-again chains' ``experiments.BAN_TRAIN``."""
    low = torch.bfloat16 if device.type == "cpu" else settings.autocast_dtype(device)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(BENCH["batch_size"], 3, 32, 32, generator=g).to(device)
    labels = torch.randint(0, 10, (BENCH["batch_size"],), generator=g).to(device)
    dims = BENCH["student"] if student is None else dict(width=student[0], depth=student[1])
    teacher = freeze(TeacherNet().to(device))

    def precision(dtype):
        return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)

    def student_step(channels_last: bool):
        model = make_student(device, channels_last, dims)
        batch = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def step(dtype):
            with precision(dtype):
                logits = model(batch)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
        return step

    def teacher_forward(dtype):
        with torch.no_grad(), precision(dtype):
            teacher(images[:teacher_batch])

    tasks = {"student_step": student_step(False), "student_step_nhwc": student_step(True),
             "teacher_forward": teacher_forward}
    seconds = {task: {str(d).removeprefix("torch."): [] for d in (torch.float32, low)} for task in tasks}
    for _ in range(rounds):
        for task, fn in tasks.items():
            for dtype in (torch.float32, low):
                fn(dtype)  # warm-up
                seconds[task][str(dtype).removeprefix("torch.")].append(timed(device, lambda: fn(dtype), steps) / steps)
    median = {task: {d: sorted(v)[len(v) // 2] for d, v in by_dtype.items()} for task, by_dtype in seconds.items()}
    low_name = str(low).removeprefix("torch.")
    return {
        "torch": torch.__version__, "device": settings.describe_device(device), "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_computes_bfloat16": settings.cpu_computes_bfloat16(), "low_precision": low_name,
        "student": dims, "steps": steps, "rounds": rounds, "teacher_batch": teacher_batch, "seconds": median,
        "low_over_float32": {task: v[low_name] / v["float32"] for task, v in median.items()},
    }


def report_precision(result: dict) -> str:
    low = result["low_precision"]
    lines = [f"torch {result['torch']} | device {result['device']} | threads {result['threads']} | "
             f"CPU capability {result['cpu_capability']} | native bfloat16 {result['cpu_computes_bfloat16']}",
             "", f"{'':<42}{'float32 (s)':>12}{low + ' (s)':>16}{'ratio':>8}"]
    student = "StudentCNN({width}, {depth}) step, batch 256".format(**result["student"])
    for task, label in (("student_step", f"{student}, NCHW"), ("student_step_nhwc", f"{student}, NHWC"),
                        ("teacher_forward", f"teacher forward, batch {result['teacher_batch']}")):
        s = result["seconds"][task]
        lines.append(f"{label:<42}{s['float32']:>12.3f}{s[low]:>16.3f}{result['low_over_float32'][task]:>8.2f}")
    return "\n".join(lines)


def report_methods(result: dict) -> str:
    lines = [f"torch {result['torch']} | device {result['device']} | threads {result['threads']} | "
             f"amp {result['amp']} | batch {result['batch_size']} | "
             f"{result['steps']} steps x {result['rounds']} rounds",
             "", f"{'method':<8}{'ms/step':>10}{'x KD':>8}{'us/loss':>12}{'x KD':>8}"]
    for name in result["seconds_per_step"]:
        lines.append(f"{name:<8}{1e3 * result['seconds_per_step'][name]:>10.2f}{result['step_ratio_to_kd'][name]:>8.3f}"
                     f"{1e6 * result['seconds_per_loss'][name]:>12.1f}{result['loss_ratio_to_kd'][name]:>8.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--steps", type=int, default=BENCH["steps"], help="timed steps per mode (CI dry run: 5)")
    parser.add_argument("--no-amp", action="store_true", help="float32 instead of mixed precision (bfloat16, or float16 on GPUs before compute capability 8.0)")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--methods", action="store_true",
                        help="time a training step of KD, DKD, LS-KD and CTKD instead (chapter Beyond Hinton)")
    parser.add_argument("--precision", action="store_true",
                        help="time float32 against bfloat16 (or the GPU's autocast dtype) instead")
    parser.add_argument("--student", type=int, nargs=2, metavar=("WIDTH", "DEPTH"), default=None,
                        help="with --precision: the student to time (default 16 1; the born-again chains': 32 2)")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else settings.device()
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available here")
    start = time.perf_counter()
    if args.precision:
        result = time_precision(device, steps=min(args.steps, 3), student=args.student)
    elif args.methods:
        result = time_methods(device, args.steps, amp=not args.no_amp, channels_last=not args.no_channels_last)
    else:
        result = run(device, args.steps, amp=not args.no_amp, channels_last=not args.no_channels_last)
    result["wall_s"] = time.perf_counter() - start
    print(report_precision(result) if args.precision else report_methods(result) if args.methods else report(result))
    print(f"benchmark wall time {result['wall_s']:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
