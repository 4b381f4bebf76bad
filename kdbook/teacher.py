"""The book's teacher: its recipe, the command that trains it, and the shipped weights.

``python -m kdbook.teacher`` trains :class:`~kdbook.models.TeacherNet` on all of
CIFAR-10 with the recipe below, checkpointing after every epoch (run it again to
resume), then writes half-precision weights and a provenance record (data, device,
epochs, accuracy, wall time, commit) next to this module, in ``kdbook/weights/``.

``load_teacher()`` returns the shipped teacher. ``available_teacher()`` returns it
when present and otherwise a small stand-in trained in under a minute on a subset
(cached), always with a description saying which one it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from kdbook import settings
from kdbook.data import CIFAR10, TensorLoader, load_cifar10, stratified_subset
from kdbook.files import atomic_write, read_cache
from kdbook.models import StudentCNN, TeacherNet, count_parameters, freeze, half_state, load_half_state
from kdbook.train import TrainConfig, evaluate, fit, key_fields, seed_everything

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "teacher.pt"
PROVENANCE_FILE = WEIGHTS_DIR / "teacher.json"


@dataclass(frozen=True)
class TeacherRecipe:
    """Everything that determines the trained teacher."""

    widths: tuple[int, int, int] = (64, 256, 256)
    batch_size: int = 512  # examples per optimiser step
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=24,
        lr=0.2,  # peak learning rate for batch 512 (SGD, Nesterov momentum 0.9)
        weight_decay=5e-4,
        warmup_fraction=0.15,
        # Mixed precision (settings.autocast_dtype): bfloat16 on CPUs with bfloat16 instructions
        # (AMX, AVX512_BF16) and recent GPUs; float16 with loss scaling on older GPUs (a T4);
        # float32 on other CPUs, where bfloat16 is emulated and slower than float32.
        amp=True,
        channels_last=True,
        seed=0,
    ))

    def key(self) -> str:
        """Names the recipe's checkpoints and stored weights. A TrainConfig setting added
        after the teachers were trained is left out while it has its default
        (:func:`kdbook.train.key_fields`), so their keys and the stored label-smoothing
        teacher's file name stay as they were."""
        recipe = {**asdict(self), "train": key_fields(self.train)}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


RECIPE = TeacherRecipe()


def _loaders(cifar: CIFAR10, batch_size: int, device, seed: int, train_idx=None, test_idx=None):
    train = TensorLoader(cifar.train_images, cifar.train_labels, batch_size, indices=train_idx,
                         shuffle=True, augment=True, drop_last=True, device=device, seed=seed)
    test = TensorLoader(cifar.test_images, cifar.test_labels, 1000, indices=test_idx, device=device)
    return train, test


def train_teacher(recipe: TeacherRecipe = RECIPE, *, device=None, stop_after: int | None = None,
                  export: bool = True, progress: bool = True) -> tuple[TeacherNet | None, dict | None]:
    """Trains (or resumes) a teacher; returns (model, provenance) when finished, else (None, None).

    ``export`` writes the result as the shipped teacher (``kdbook/weights``)."""
    device = torch.device(device) if device is not None else settings.device()
    cifar = load_cifar10()
    train_loader, test_loader = _loaders(cifar, recipe.batch_size, device, recipe.train.seed)
    seed_everything(recipe.train.seed)
    model = TeacherNet(recipe.widths).to(device)
    checkpoint = settings.subdir("checkpoints") / f"teacher-{recipe.key()}.pt"
    print(f"teacher {recipe.key()}: {count_parameters(model):,} parameters; checkpoint {checkpoint}")
    history = fit(model, train_loader, recipe.train, eval_loader=test_loader,
                  checkpoint=checkpoint, stop_after=stop_after, progress=progress)
    if len(history.epochs) < recipe.train.epochs:
        print(f"stopped after epoch {len(history.epochs)} of {recipe.train.epochs}; run again to resume")
        return None, None
    provenance = {
        "architecture": f"TeacherNet(widths={list(recipe.widths)})",
        "parameters": count_parameters(model),
        "recipe": asdict(recipe),
        "recipe_key": recipe.key(),
        **settings.provenance(cifar.source, device),
        "autocast": settings.autocast_name(device, recipe.train.amp),
        "epochs": recipe.train.epochs,
        "test_acc": evaluate(model, test_loader, amp=recipe.train.amp)["acc"],
        "test_acc_flip_tta": evaluate(model, test_loader, tta=True, amp=recipe.train.amp)["acc"],
        "train_wall_s": sum(e["seconds"] for e in history.epochs),
        "history": history.epochs,
    }
    if export:
        export_teacher(model, provenance)
    return model, provenance


def export_teacher(model: nn.Module, provenance: dict, weights_file: Path = WEIGHTS_FILE,
                   provenance_file: Path = PROVENANCE_FILE) -> None:
    """Writes half-precision weights and the provenance record (default: ``kdbook/weights``)."""
    with atomic_write(weights_file) as handle:
        torch.save(half_state(model), handle)
    provenance = {**provenance, "weights_sha256": hashlib.sha256(Path(weights_file).read_bytes()).hexdigest()}
    with atomic_write(provenance_file) as handle:
        handle.write(json.dumps(provenance, indent=1).encode())


def load_teacher(device=None, weights_file: Path = WEIGHTS_FILE,
                 provenance_file: Path = PROVENANCE_FILE) -> tuple[TeacherNet, dict]:
    """The shipped teacher (float32, eval mode, frozen) and its provenance record."""
    if not Path(weights_file).exists() or not Path(provenance_file).exists():
        raise FileNotFoundError(
            f"no teacher weights at {weights_file}; train them with `python -m kdbook.teacher`"
        )
    provenance = json.loads(Path(provenance_file).read_text())
    if hashlib.sha256(Path(weights_file).read_bytes()).hexdigest() != provenance["weights_sha256"]:
        raise ValueError(f"{weights_file} does not match the checksum in {provenance_file}")
    model = TeacherNet(tuple(provenance["recipe"]["widths"]))
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    model = freeze(load_half_state(model, state).to(device or settings.device()))
    return model, provenance


def describe_teacher(provenance: dict) -> str:
    """One line naming the teacher and where its accuracy comes from."""
    return (f"{provenance['architecture']}: test accuracy {provenance['test_acc']:.4f} "
            f"({provenance['test_acc_flip_tta']:.4f} with flip TTA) on {provenance['data']}, "
            f"{provenance['epochs']} epochs on {provenance['device']}")


# -----------------------------------------------------------------------------
# A stand-in when the shipped teacher is absent (quick runs before it was trained).

# 1,000 images for 6 epochs, for a stand-in that only has to be better than the quick
# students (about 20% test accuracy). Widths 16-32-64, two convolutions per stage: 21 s on
# one thread of this book's 2-core CPU, test accuracy 0.315, where widths 24-48-96 took 34 s
# for 0.330 (and 32-64-128, 47 s for 0.337); each timed with another job on the other core.
STANDIN = dict(width=16, depth=2, per_class=100, epochs=6, lr=0.05, batch_size=128, seed=0, channels_last=True)


def standin_teacher(cifar: CIFAR10 | None = None, device=None, *,
                    train_if_missing: bool = True) -> tuple[nn.Module, dict]:
    """A small CNN trained on a 100-per-class subset (well under a minute on a CPU), cached
    (``train_if_missing=False``: ``FileNotFoundError`` instead of training it)."""
    device = torch.device(device) if device is not None else settings.device()
    cifar = cifar or load_cifar10()
    settings_ = {**STANDIN, "data": cifar.source}
    key = hashlib.sha256(json.dumps(settings_, sort_keys=True).encode()).hexdigest()[:12]
    path = settings.subdir("checkpoints") / f"standin-teacher-{key}.pt"

    def fresh_model() -> nn.Module:
        seed_everything(STANDIN["seed"])
        return StudentCNN(STANDIN["width"], STANDIN["depth"]).to(device)

    model = fresh_model()

    def load(file: Path) -> dict:
        saved = torch.load(file, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        return saved["info"]

    info = read_cache(path, load, "the stand-in teacher")
    if info is None:
        if not train_if_missing:
            raise FileNotFoundError(f"no stand-in teacher at {path}")
        model = fresh_model()  # a damaged file may have loaded some of its weights
        train_idx = stratified_subset(cifar.train_labels, per_class=STANDIN["per_class"], seed=0)
        test_idx = stratified_subset(cifar.test_labels, per_class=100, seed=0)
        train, test = _loaders(cifar, STANDIN["batch_size"], device, 0, train_idx, test_idx)
        config = TrainConfig(epochs=STANDIN["epochs"], lr=STANDIN["lr"], seed=STANDIN["seed"],
                             channels_last=STANDIN["channels_last"])
        fit(model, train, config, progress=False)
        info = {
            "description": (f"stand-in teacher StudentCNN({STANDIN['width']}, {STANDIN['depth']}) trained on "
                            f"{10 * STANDIN['per_class']} images of {cifar.source} "
                            f"(test accuracy {evaluate(model, test)['acc']:.3f} on 1,000 test images)"),
            "standin": True,
        }
        with atomic_write(path) as handle:
            torch.save({"model": model.state_dict(), "info": info}, handle)
    return freeze(model), info


def available_teacher(cifar: CIFAR10 | None = None, device=None, *,
                      train_if_missing: bool = True) -> tuple[nn.Module, dict]:
    """The shipped teacher if its weights are present, else the cached stand-in.

    ``info["description"]`` says which, for the chapter to print next to its figures."""
    try:
        model, provenance = load_teacher(device)
    except FileNotFoundError:
        return standin_teacher(cifar, device, train_if_missing=train_if_missing)
    return model, {"description": "the book's teacher, " + describe_teacher(provenance),
                   "standin": False, **provenance}


LS_EPSILON = 0.1  # label smoothing of the second teacher (Mueller et al. 2019 use 0.1)


def ls_recipe() -> TeacherRecipe:
    return dataclasses.replace(RECIPE, train=dataclasses.replace(RECIPE.train, label_smoothing=LS_EPSILON))


def ls_teacher_file() -> Path:
    """The label-smoothing teacher's weights: shipped with the package (``kdbook/weights``,
    like the book's teacher), or else trained here into the results folder."""
    name = f"teacher-ls-{ls_recipe().key()}.pt"
    shipped = WEIGHTS_DIR / name
    return shipped if shipped.exists() else settings.results_dir() / name


def ls_teacher(cifar: CIFAR10 | None = None, device=None, *, train_if_missing: bool = True) -> tuple[nn.Module, dict]:
    """The book's teacher recipe trained with label smoothing 0.1 (:func:`ls_teacher_file`).

    Training it, where its weights are missing, takes as long as the book's teacher (a
    resumable run)."""
    recipe = ls_recipe()
    weights = ls_teacher_file()
    provenance_file = weights.with_suffix(".json")
    if not weights.exists():
        if not train_if_missing:
            raise FileNotFoundError(f"no label-smoothing teacher at {weights}")
        model, provenance = train_teacher(recipe, device=device, export=False)
        if model is None:
            raise RuntimeError("label-smoothing teacher training stopped early; run again to resume")
        export_teacher(model, provenance, weights, provenance_file)
    model, provenance = load_teacher(device, weights, provenance_file)
    return model, {"description": f"teacher trained with label smoothing {LS_EPSILON}, " + describe_teacher(provenance),
                   "standin": False, **provenance}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train (or resume) the book's teacher and ship its weights.")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: KDBOOK_DEVICE, else CUDA if available)")
    parser.add_argument("--stop-after", type=int, default=None, help="train at most this many epochs in this call")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    parser.add_argument("--no-export", action="store_true", help="do not write kdbook/weights/")
    args = parser.parse_args(argv)
    recipe = RECIPE
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=args.epochs))
    with settings.Stopwatch("CIFAR-10 (see provenance)", args.device) as clock:
        _, provenance = train_teacher(recipe, device=args.device, stop_after=args.stop_after,
                                      export=not args.no_export)
    if provenance is not None:
        print(describe_teacher(provenance))
    print(clock.stamp.line())


if __name__ == "__main__":
    main()
