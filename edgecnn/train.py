"""Training loops, shared by ``train``, fine-tuning after pruning / sparsity, distillation and QAT.

``fit`` trains a module in place (SGD+momentum or AdamW, warm-up + cosine schedule, label smoothing,
AMP + channels_last on CUDA, DDP under ``torchrun``, a resumable checkpoint after every epoch); ``train``
is the stage: build or load a zoo model, fit it, write a torch artifact (scoring: :mod:`edgecnn.evaluation`;
processes and devices: :mod:`edgecnn.distributed`).

Options: :class:`TrainConfig` (the loop's settings) and :class:`FitOptions` (what every stage that trains
on ``--data`` shares) are :class:`~edgecnn.options.Options` whose ``validate()`` holds their rules, once.
Recipes: :func:`recipe` returns the settings we measured per model on the bundled digits; ``train`` uses
them for anything left unset, so ``edgecnn train lenet5 --data digits --out runs/lenet5`` reproduces the README.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .artifact import Artifact, check_out, is_artifact
from .checkpoint import CHECKPOINT_FORMAT, checkpoint_path, read_checkpoint, save_checkpoint
from .data.source import DataSource
from .distributed import (
    close_distributed,
    dist_info,
    init_distributed,
    is_main_process,
    resolve_device,
    seed_everything,
)
from .errors import DataError, EdgeCnnError, InvalidInput, OptionError, WeightsError
from .evaluation import evaluate_module, named_errors
from .models import architecture_of, build_model, get_spec, save_torch_artifact
from .options import Options, check_range

log = logging.getLogger("edgecnn")


class TrainingDiverged(EdgeCnnError):
    """The loss became NaN/inf: the learning rate is too high for this model and data."""


@dataclass
class TrainConfig(Options):
    epochs: int = 10
    batch_size: int = 64  # per process under torchrun (global batch = batch_size * WORLD_SIZE)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float | None = None  # default: 0.05 for sgd, 1e-3 for adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to biases and norm layers
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up, then the schedule
    schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA only
    channels_last: bool = True  # on CUDA only
    num_workers: int = 0
    augment: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 1e-3)

    def validate(self) -> None:
        if self.epochs < 0:
            raise OptionError(f"epochs must be >= 0, got {self.epochs}.")
        if self.batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {self.batch_size}.")
        if self.optimizer not in ("sgd", "adamw"):
            raise OptionError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}.")
        if self.lr is not None and not self.lr > 0:
            raise OptionError(f"learning rate must be > 0, got {self.lr}.")
        if self.weight_decay < 0:
            raise OptionError(f"weight decay must be >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise OptionError(f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.warmup_epochs < 0:
            raise OptionError(f"warm-up epochs must be >= 0, got {self.warmup_epochs}.")
        if self.schedule not in ("cosine", "constant"):
            raise OptionError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}.")
        if self.num_workers < 0:
            raise OptionError(f"workers must be >= 0, got {self.num_workers}.")


@dataclass
class FitOptions(Options):
    """What every stage that trains on ``data`` shares (prune / sparsify fine-tuning, distillation).

    ``config`` (a TrainConfig, or a mapping of its fields) sets the optimiser beyond ``lr`` and
    ``batch_size``; the stage's own epochs (and ``lr`` when given) replace its values."""

    data: DataSource | None = None
    lr: float | None = None  # default: the stage's (0.01 SGD for fine-tuning)
    batch_size: int = 64
    config: TrainConfig | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    val_split: float = 0.2  # held-out fraction of a folder of class sub-folders
    skip_corrupt: bool = False

    def __post_init__(self) -> None:
        self.data = DataSource.optional(self.data)
        if isinstance(self.config, dict):
            self.config = TrainConfig.from_mapping(self.config, where="config")

    def validate(self) -> None:
        if self.lr is not None and not self.lr > 0:
            raise OptionError(f"learning rate must be > 0, got {self.lr}.")
        if self.batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {self.batch_size}.")
        check_range("--val-split", self.val_split, 0, 1, True, True)
        if self.config is not None:
            self.config.validate()

    def as_dict(self) -> dict:
        out = super().as_dict()
        if self.config is not None:
            out["config"] = self.config.as_dict()
        return out

    def check_finetune(self, epochs: int) -> None:
        """The rules on ``--finetune-epochs``: >= 0, and training needs data."""
        check_range("--finetune-epochs", epochs, 0, None)
        if epochs > 0 and self.data is None:
            raise OptionError(
                "--finetune-epochs needs training data: pass --data digits or a folder of class sub-folders."
            )

    def train_config(self, epochs: int, default_lr: float | None = 0.01) -> TrainConfig:
        """The TrainConfig of the stage's training run: ``epochs``, and ``lr`` (else ``default_lr``)."""
        if self.config is None:
            return TrainConfig(
                epochs=epochs,
                batch_size=self.batch_size,
                seed=self.seed,
                device=self.device,
                lr=self.lr if self.lr is not None else default_lr,
            )
        return dataclasses.replace(self.config, epochs=epochs, **({"lr": self.lr} if self.lr is not None else {}))

    def dataset(self, input_spec: dict, split: str, *, num_classes: int, augment: bool = False):
        """The ``split`` ('train' | 'val') of ``data`` for a model with ``input_spec``."""
        return self.data.dataset(
            input_spec,
            split,
            val_split=self.val_split,
            seed=self.seed,
            augment=augment,
            skip_corrupt=self.skip_corrupt,
            num_classes=num_classes,
        )


# -- recipes -----------------------------------------------------------------------------------------
# Measured on the bundled digits, held-out split (360 images), 2 CPU cores; see README "overview".
# Keys: in_channels / input_size (the model input) + TrainConfig fields.
DIGITS_RECIPES: dict[str, dict] = {
    # 61,706 params; ~15 s on 2 idle cores; >= 98.6 % top-1 over seeds 0-2.
    "lenet5": {
        "in_channels": 1,
        "input_size": 32,
        "epochs": 30,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.1,
        "label_smoothing": 0.1,
        "weight_decay": 5e-4,
    },
    "resnet18": {
        "in_channels": 1,
        "input_size": 32,
        "epochs": 12,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "label_smoothing": 0.1,
        "weight_decay": 5e-4,
    },
}
# Any other zoo model on the digits: gray input at the smallest size >= 32 its architecture accepts.
_DIGITS_GENERIC = {
    "in_channels": 1,
    "epochs": 15,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "label_smoothing": 0.1,
    "weight_decay": 5e-4,
}
#: measured recipes per kind of data source: (per model, any other model)
MEASURED = {"digits": (DIGITS_RECIPES, _DIGITS_GENERIC)}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def recipe(model_name: str, data) -> dict:
    """The recommended settings for ``model_name`` on ``data`` (a DataSource or its text): {"name",
    "in_channels", "input_size", "config": TrainConfig kwargs}. Only the bundled digits have a measured
    recipe; other data get TrainConfig's defaults at the model's own input."""
    spec = get_spec(model_name)
    source = DataSource.parse(data)
    if source.kind not in MEASURED:
        return {"name": "default", "in_channels": None, "input_size": None, "config": {}}
    per_model, generic = MEASURED[source.kind]
    settings = dict(per_model.get(model_name) or generic)
    size = settings.pop("input_size", None) or max(32, 8 * math.ceil(spec.min_input / 8))
    channels = settings.pop("in_channels")
    name = f"{source.kind}/{model_name if model_name in per_model else 'generic'}"
    return {"name": name, "in_channels": channels, "input_size": size, "config": settings}


def configure(model_name: str, data, *, resume: dict | None = None, **overrides) -> TrainConfig:
    """A TrainConfig: explicit ``overrides`` (None = unset) > the resumed checkpoint's config > the recipe."""
    unknown = set(overrides) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
    base = dict(recipe(model_name, data)["config"])
    if resume is not None:
        base.update({k: v for k, v in (resume.get("config") or {}).items() if k in _CONFIG_FIELDS})
    base.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**base)
    config.validate()
    return config


# -- optimisation ----------------------------------------------------------------------------------------
def make_optimizer(model, config: TrainConfig):
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.resolved_lr())
    return torch.optim.SGD(groups, lr=config.resolved_lr(), momentum=config.momentum, nesterov=True)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# -- the loop -----------------------------------------------------------------------------------------
LossFn = Callable  # (logits, targets, inputs) -> loss tensor


@dataclass
class _Loop:
    """The moving parts of one ``fit`` run."""

    model: object
    net: object  # the model, or its DistributedDataParallel wrapper
    config: TrainConfig
    loader: DataLoader
    sampler: DistributedSampler | None
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: str
    world: int
    main: bool

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def use_amp(self) -> bool:
        return self.cuda and self.config.amp


def _setup(model, train_set, config: TrainConfig) -> _Loop:
    """Seed, join the process group, place the model and build loader, optimizer and scaler."""
    seed_everything(config.seed)
    init_distributed(config.device)
    world, rank, _ = dist_info()
    device = resolve_device(config.device)
    cuda = device.startswith("cuda")
    model.to(device)
    if cuda and config.channels_last:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(config.seed)
    sampler = None
    if world > 1:
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    per_process = len(train_set) // world
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=per_process > config.batch_size,
        num_workers=config.num_workers,
        generator=g if sampler is None else None,
        pin_memory=cuda,
        persistent_workers=config.num_workers > 0,
    )
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and config.amp)
    return _Loop(
        model=model,
        net=model,
        config=config,
        loader=loader,
        sampler=sampler,
        generator=g,
        optimizer=optimizer,
        scaler=scaler,
        device=device,
        world=world,
        main=rank == 0,
    )


def _restore(loop: _Loop, resume: dict | None, optimizer_state: dict | None) -> tuple[int | None, list[dict]]:
    """Load a checkpoint's model, optimizer, scaler and RNG states: (epoch to continue after, history)."""
    if resume is None:
        if optimizer_state:
            loop.optimizer.load_state_dict(optimizer_state)
        return None, []
    try:
        loop.model.load_state_dict(resume["model"])
        loop.optimizer.load_state_dict(resume["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise WeightsError(
            f"The checkpoint does not fit this model/optimizer ({first}); resume with the model, "
            "input and --optimizer it was trained with."
        ) from exc
    if loop.use_amp and resume.get("scaler"):
        loop.scaler.load_state_dict(resume["scaler"])
    rng = resume.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "loader" in rng:
        loop.generator.set_state(rng["loader"])
    return int(resume["epoch"]), list(resume.get("history") or [])


def _train_epoch(loop: _Loop, epoch: int, criterion, progress: bool) -> tuple[float, int, int]:
    """One pass over the training data: (summed loss, correct, seen), all-reduced over the processes."""
    config, optimizer = loop.config, loop.optimizer
    steps_per_epoch = max(1, len(loop.loader))
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    base_lr = config.resolved_lr()
    if loop.sampler is not None:
        loop.sampler.set_epoch(epoch)
    loop.net.train()
    seen, loss_sum, correct, bad_steps = 0, 0.0, 0, 0
    bar = tqdm(
        loop.loader,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=None if progress else True,
        leave=False,
        unit="batch",
        dynamic_ncols=True,
    )
    for i, (x, y) in enumerate(named_errors(bar)):
        f = lr_factor(epoch * steps_per_epoch + i, total, warmup, config.schedule)
        for grp in optimizer.param_groups:
            grp["lr"] = base_lr * f
        x, y = x.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True)
        if loop.cuda and config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=loop.use_amp):
            logits = loop.net(x)
            loss = criterion(logits, y, x)
        optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(optimizer)
        loop.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            bad_steps += 1
            # AMP skips an overflowing step by itself; in FP32 (or when it keeps happening) it is divergence.
            if not loop.use_amp or bad_steps >= 20:
                raise TrainingDiverged(
                    f"Training diverged at epoch {epoch + 1} (loss {value}); lower --lr "
                    f"(now {config.resolved_lr():g}) or add --warmup-epochs."
                )
            continue
        bad_steps = 0
        n = y.shape[0]
        seen += n
        loss_sum += value * n
        correct += int((logits.detach().argmax(1) == y).sum())
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
    if loop.world > 1:
        totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=loop.device)
        dist.all_reduce(totals)
        loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
    return loss_sum, correct, seen


def _save_epoch(loop: _Loop, path, meta: dict | None, epoch: int, history: list[dict]) -> None:
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            **(meta or {}),
            "epoch": epoch + 1,
            "config": asdict(loop.config),
            "model": {k: v.detach().cpu() for k, v in loop.model.state_dict().items()},
            "optimizer": loop.optimizer.state_dict(),
            "scaler": loop.scaler.state_dict() if loop.use_amp else {},
            "rng": {"torch": torch.get_rng_state(), "loader": loop.generator.get_state()},
            "history": history,
        },
    )


def fit(
    model,
    train_set,
    val_set=None,
    config: TrainConfig | None = None,
    *,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    on_epoch_end: Callable | None = None,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_meta: dict | None = None,
    resume: dict | None = None,
) -> dict:
    """Train ``model`` in place. Returns {"history": [...], "best_top1": ..., "seconds": ..., "device": ...}.

    ``loss_fn(logits, targets, inputs)`` replaces cross-entropy (distillation passes its KD loss here).
    ``on_epoch_end(epoch, model, optimizer, record)`` is called after each epoch.
    ``checkpoint``: a file rewritten after every epoch with model, optimizer, scaler, RNG states and
    history (plus ``checkpoint_meta``); ``resume``: such a checkpoint (see :func:`read_checkpoint`),
    training continues after its epoch and reproduces an uninterrupted run on CPU.
    Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each process sees
    its shard of the data (DistributedSampler), and only rank 0 validates and writes the checkpoint.
    """
    config = config or TrainConfig()
    config.validate()
    if len(train_set) == 0:
        raise DataError("The training set is empty; check the data folder.")
    loop = _setup(model, train_set, config)
    resumed_at, history = _restore(loop, resume, optimizer_state)
    start_epoch = start_epoch if resumed_at is None else resumed_at
    if loop.world > 1:
        loop.net = DistributedDataParallel(
            model, device_ids=[torch.device(loop.device).index or 0] if loop.cuda else None
        )
    ce = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    criterion = loss_fn or (lambda logits, y, x: ce(logits, y))
    best = max((r["val_top1"] for r in history if r.get("val_top1") is not None), default=None)
    show = progress and loop.main
    t0, cpu0 = time.perf_counter(), time.process_time()
    for epoch in range(start_epoch, config.epochs):
        t_epoch = time.perf_counter()
        loss_sum, correct, seen = _train_epoch(loop, epoch, criterion, show)
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(seen, 1),
            "train_top1": correct / max(seen, 1),
            "lr": loop.optimizer.param_groups[0]["lr"],
        }
        if val_set is not None and loop.main:
            record["val_top1"] = evaluate_module(model, val_set, batch_size=256, device=loop.device)["top1"]
            best = record["val_top1"] if best is None else max(best, record["val_top1"])
        record["seconds"] = round(time.perf_counter() - t_epoch, 3)
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, record)
        if show:
            val = f"  val top-1 {100 * record['val_top1']:.2f}%" if "val_top1" in record else ""
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  train top-1 "
                f"{100 * record['train_top1']:.2f}%{val}  ({record['seconds']:.1f} s)"
            )
        if checkpoint is not None and loop.main:
            _save_epoch(loop, checkpoint, checkpoint_meta, epoch, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, loop.optimizer, record)
    model.eval()
    # cpu_seconds (all threads of this process) does not depend on what else runs on the machine: on an
    # otherwise idle machine the wall time is at most this, even on one core.
    return {
        "history": history,
        "best_top1": best,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "device": loop.device,
        "world_size": loop.world,
    }


# -- the stage --------------------------------------------------------------------------------------------
@dataclass
class _TrainRun:
    """What the train stage resolved before fitting, and records afterwards."""

    model_name: str
    source: DataSource
    out: Path
    weights: str
    recipe_name: str
    input_spec: dict
    classes: list[str]
    train_set: object
    val_set: object
    state: dict | None = None
    resume: str | os.PathLike | None = None
    checkpoint: Path | None = None


def _resume_state(resume, model_name: str) -> dict | None:
    """The checkpoint to continue from (None without ``resume``), checked against the model."""
    if resume is None:
        return None
    state = read_checkpoint(resume)
    if state.get("model_name") != model_name:
        raise WeightsError(
            f"Checkpoint '{resume}' is for {state.get('model_name')}, not {model_name}; resume it "
            f"with MODEL {state.get('model_name')}."
        )
    return state


def _input_spec(spec, plan: dict, state: dict | None, weights: str, in_channels, input_size, resume) -> dict:
    """The model input: explicit > the resumed checkpoint's > a weights artifact's > the recipe's."""
    source_art = (
        Artifact.load(weights, formats=("torch",))
        if weights not in ("random", "imagenet") and is_artifact(weights)
        else None
    )
    if state is not None:
        arch = state["architecture"]
        defaults = (arch["in_channels"], tuple(arch["input_size"]))
    elif source_art is not None:
        defaults = (source_art.input_shape[0], source_art.input_shape[1:])
    else:
        defaults = (plan["in_channels"], plan["input_size"])
    in_channels = defaults[0] if in_channels is None else in_channels
    input_size = defaults[1] if input_size is None else input_size
    if state is not None:
        arch = state["architecture"]
        want = architecture_of(
            spec.name, num_classes=arch["num_classes"], in_channels=in_channels, input_size=input_size
        )
        if [want["in_channels"], want["input_size"]] != [arch["in_channels"], arch["input_size"]]:
            raise InvalidInput(
                f"Checkpoint '{resume}' was trained at {arch['in_channels']}x{arch['input_size'][0]}x"
                f"{arch['input_size'][1]}; drop --in-channels/--input-size when resuming."
            )
    input_spec = spec.input_spec(in_channels=in_channels, input_size=input_size)
    if min(input_spec["height"], input_spec["width"]) < spec.min_input:  # raises the clear message
        spec.build(
            num_classes=1, in_channels=input_spec["channels"], input_size=(input_spec["height"], input_spec["width"])
        )
    return input_spec


def _datasets(run: _TrainRun, config: TrainConfig, *, num_classes, val_split: float, skip_corrupt: bool) -> None:
    """Read the train / val splits into ``run`` and check them against the request and the checkpoint."""
    source = run.source
    kw = {"val_split": val_split, "skip_corrupt": skip_corrupt, "seed": config.seed, "num_classes": num_classes or 10}
    run.train_set = source.dataset(run.input_spec, "train", augment=config.augment, **kw)
    run.val_set = source.dataset(run.input_spec, "val", **kw)
    run.classes = list(run.train_set.classes)
    if num_classes is not None and num_classes != len(run.classes):
        raise InvalidInput(
            f"--num-classes {num_classes} but data '{source}' has {len(run.classes)} classes; drop --num-classes."
        )
    if len(run.val_set) == 0:
        raise DataError(f"Data '{source}' has no validation images; add a val/ folder or raise --val-split.")
    if run.state is not None:
        source.check_classes(
            run.classes,
            run.state["architecture"]["num_classes"],
            who=f"checkpoint '{run.resume}'",
            fix="resume on the data it was trained on",
        )


def _initial_model(spec, run: _TrainRun):
    """(model, weights info): the checkpoint's architecture, or the weights loaded into a fresh build."""
    c, h, w = run.input_spec["channels"], run.input_spec["height"], run.input_spec["width"]
    if run.state is not None:
        return spec.build(num_classes=len(run.classes), in_channels=c, input_size=(h, w)), {"weights": run.weights}
    with warnings.catch_warnings():
        if run.weights == "random":
            warnings.simplefilter("ignore")
        return build_model(
            spec.name,
            weights=run.weights,
            num_classes=len(run.classes),
            in_channels=c,
            input_size=(h, w),
            warn_random=False,
        )


def train(
    model_name: str,
    *,
    data,
    out: str | Path,
    weights: str = "random",
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size=None,
    config: TrainConfig | None = None,
    overrides: dict | None = None,
    val_split: float = 0.2,
    skip_corrupt: bool = False,
    progress: bool = True,
    resume: str | os.PathLike | None = None,
    checkpoint: bool = True,
    on_epoch_end: Callable | None = None,
):
    """The train stage: build/load ``model_name``, fit it on ``data``, write a torch artifact to ``out``.

    ``data`` is a DataSource or its text ('digits', 'synthetic[:N]', a folder). ``config`` is used as
    given; without it the config is :func:`configure`'s from ``overrides`` (TrainConfig fields, None =
    unset), the resumed checkpoint and :func:`recipe` for ``data``. Unset input size / channels come
    from the resumed checkpoint, a weights artifact, then the recipe. A checkpoint (``OUT.ckpt.pt``) is
    rewritten after every epoch; ``resume`` continues from one. Under torchrun only rank 0 writes; other
    ranks return None.
    """
    if config is not None and overrides:
        raise TypeError("pass a TrainConfig or overrides of the recipe's, not both")
    if resume is not None and weights != "random":
        raise OptionError("--resume restores the weights from the checkpoint; drop --weights.")
    spec = get_spec(model_name)
    source = DataSource.parse(data)
    out = Path(out)
    check_out(out)
    state = _resume_state(resume, model_name)
    plan = recipe(model_name, source)
    config = config or configure(model_name, source, resume=state, **(overrides or {}))
    config.validate()
    run = _TrainRun(
        model_name=model_name,
        source=source,
        out=out,
        weights=weights,
        recipe_name=plan["name"],
        input_spec=_input_spec(spec, plan, state, weights, in_channels, input_size, resume),
        classes=[],
        train_set=None,
        val_set=None,
        state=state,
        resume=resume,
        checkpoint=checkpoint_path(out) if checkpoint else None,
    )
    _datasets(run, config, num_classes=num_classes, val_split=val_split, skip_corrupt=skip_corrupt)
    seed_everything(config.seed)  # the initial weights too: the same seed gives the same run
    model, info = _initial_model(spec, run)
    c, h, w = run.input_spec["channels"], run.input_spec["height"], run.input_spec["width"]
    meta = {
        "model_name": model_name,
        "classes": run.classes,
        "input": run.input_spec,
        "architecture": architecture_of(model_name, num_classes=len(run.classes), in_channels=c, input_size=(h, w)),
    }
    owns_group = init_distributed(config.device)
    try:
        result = fit(
            model,
            run.train_set,
            run.val_set,
            config,
            progress=progress,
            checkpoint=run.checkpoint,
            checkpoint_meta=meta,
            resume=state,
            on_epoch_end=on_epoch_end,
        )
        if not is_main_process():
            return None
        return _record(run, model, config, result, info)
    finally:
        if owns_group:
            close_distributed()


def _record(run: _TrainRun, model, config: TrainConfig, result: dict, info: dict) -> Artifact:
    """Score the trained model on the held-out split and write the artifact (rank 0 only)."""
    final = evaluate_module(model, run.val_set, device=result["device"])
    model.to("cpu")
    skipped = len(getattr(run.train_set, "skipped", []) or []) + len(getattr(run.val_set, "skipped", []) or [])
    params = {
        "data": run.source.describe("train"),
        "weights": run.weights,
        "recipe": run.recipe_name,
        **asdict(config),
        "lr": config.resolved_lr(),
        "world_size": result["world_size"],
        "resumed_from": str(run.resume) if run.resume is not None else None,
        "resumed_at_epoch": int(run.state["epoch"]) if run.state is not None else None,
        "skipped_images": skipped,
    }
    metrics = {
        "top1": final["top1"],
        "top5": final["top5"],
        "eval_data": run.source.describe("val"),
        "train_seconds": round(result["seconds"], 2),
        "train_cpu_seconds": round(result["cpu_seconds"], 2),
    }
    return save_torch_artifact(
        model,
        run.out,
        name=run.model_name,
        input_spec=run.input_spec,
        classes=run.classes,
        stage="train",
        params=params,
        parent=info.get("parent"),
        metrics=metrics,
        extra={
            "history": result["history"],
            "weights_report": info.get("report"),
            "checkpoint": str(run.checkpoint) if run.checkpoint is not None else None,
        },
    )
