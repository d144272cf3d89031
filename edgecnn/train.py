"""Training and evaluation loops, shared by ``train``, fine-tuning after pruning, and distillation.

``fit`` trains a module in place (SGD+momentum or AdamW, warm-up + cosine schedule, label smoothing,
AMP + channels_last on CUDA, DDP under ``torchrun``, a resumable checkpoint after every epoch);
``train`` is the stage (scoring lives in :mod:`edgecnn.evaluation`):
build or load a zoo model, fit it, write a torch artifact.

Recipes: :func:`recipe` returns the settings we measured per model on the bundled digits (input size,
channels, epochs, optimizer, learning rate); ``train`` and ``edgecnn train`` use them for anything the
caller leaves unset, so ``edgecnn train lenet5 --data digits --out runs/lenet5`` reproduces the README.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .artifact import check_out
from .errors import DataError, EdgeCnnError, InvalidInput, WeightsError
from .evaluation import evaluate_module, named_errors

log = logging.getLogger("edgecnn")


class TrainingDiverged(EdgeCnnError):
    """The loss became NaN/inf: the learning rate is too high for this model and data."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64                # per process under torchrun (global batch = batch_size * WORLD_SIZE)
    optimizer: str = "sgd"              # sgd (Nesterov momentum) | adamw
    lr: float | None = None             # default: 0.05 for sgd, 1e-3 for adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4          # not applied to biases and norm layers
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0          # linear warm-up, then the schedule
    schedule: str = "cosine"            # cosine | constant
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    amp: bool = True                    # mixed precision on CUDA only
    channels_last: bool = True          # on CUDA only
    num_workers: int = 0
    augment: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 1e-3)

    def validate(self) -> None:
        if self.epochs < 0:
            raise InvalidInput(f"epochs must be >= 0, got {self.epochs}.")
        if self.batch_size < 1:
            raise InvalidInput(f"batch size must be >= 1, got {self.batch_size}.")
        if self.optimizer not in ("sgd", "adamw"):
            raise InvalidInput(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}.")
        if self.lr is not None and not self.lr > 0:
            raise InvalidInput(f"learning rate must be > 0, got {self.lr}.")
        if self.weight_decay < 0:
            raise InvalidInput(f"weight decay must be >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidInput(f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.warmup_epochs < 0:
            raise InvalidInput(f"warm-up epochs must be >= 0, got {self.warmup_epochs}.")
        if self.schedule not in ("cosine", "constant"):
            raise InvalidInput(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}.")
        if self.num_workers < 0:
            raise InvalidInput(f"workers must be >= 0, got {self.num_workers}.")


# -- recipes -----------------------------------------------------------------------------------------
# Measured on the bundled digits, held-out split (360 images), 2 CPU cores; see README "overview".
# Keys: in_channels / input_size (the model input) + TrainConfig fields.
DIGITS_RECIPES: dict[str, dict] = {
    # 61,706 params; ~15 s on 2 idle cores; >= 98.6 % top-1 over seeds 0-2.
    "lenet5": {"in_channels": 1, "input_size": 32, "epochs": 30, "batch_size": 32, "optimizer": "sgd", "lr": 0.1,
               "label_smoothing": 0.1, "weight_decay": 5e-4},
    "resnet18": {"in_channels": 1, "input_size": 32, "epochs": 12, "batch_size": 64, "optimizer": "sgd", "lr": 0.05,
                 "label_smoothing": 0.1, "weight_decay": 5e-4},
}
# Any other zoo model on the digits: gray input at the smallest size >= 32 its architecture accepts.
_DIGITS_GENERIC = {"in_channels": 1, "epochs": 15, "batch_size": 64, "optimizer": "sgd", "lr": 0.05,
                   "label_smoothing": 0.1, "weight_decay": 5e-4}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def recipe(model_name: str, data: str) -> dict:
    """The recommended settings for ``model_name`` on ``data``: {"name", "in_channels", "input_size",
    "config": TrainConfig kwargs}. Only the bundled digits have a measured recipe; other data get
    TrainConfig's defaults at the model's own input."""
    from .models import get_spec

    spec = get_spec(model_name)
    if data != "digits":
        return {"name": "default", "in_channels": None, "input_size": None, "config": {}}
    settings = dict(DIGITS_RECIPES.get(model_name) or _DIGITS_GENERIC)
    size = settings.pop("input_size", None) or max(32, 8 * math.ceil(spec.min_input / 8))
    channels = settings.pop("in_channels")
    name = f"digits/{model_name}" if model_name in DIGITS_RECIPES else "digits/generic"
    return {"name": name, "in_channels": channels, "input_size": size, "config": settings}


def configure(model_name: str, data: str, *, resume: dict | None = None, **overrides) -> TrainConfig:
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


# -- devices and distributed ---------------------------------------------------------------------------
def dist_info() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment (1, 0, 0 when not launched by it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 1, 0, 0
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return dist_info()[1] == 0


def init_distributed(device: str = "auto") -> bool:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU). True if this call created it."""
    world, _, local_rank = dist_info()
    if world <= 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(device: str = "auto") -> str:
    import torch

    _, _, local_rank = dist_info()
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{local_rank}" if dist_info()[0] > 1 else "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu.")
    if device == "cuda" and dist_info()[0] > 1:
        return f"cuda:{local_rank}"
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInput(f"Unknown device {device!r}; use auto, cpu, cuda or cuda:N.")
    return device


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_optimizer(model, config: TrainConfig):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
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


# -- checkpoints ----------------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "edgecnn.checkpoint/1"


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where ``train`` keeps the resumable checkpoint of artifact ``out``: next to it, ``OUT.ckpt.pt``."""
    out = Path(out)
    return out.parent / f"{out.name}.ckpt.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save through a temporary file + rename: a crash mid-write keeps the previous checkpoint."""
    import torch

    from .artifact import atomic_file

    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint written by ``fit`` (tensors and plain values only: weights_only=True)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Checkpoint '{path}' does not exist; pass the OUT.ckpt.pt file that 'edgecnn train' "
                           "writes next to its --out after every epoch.")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(f"Cannot read checkpoint '{path}' ({first}); pass a checkpoint written by 'edgecnn train'.") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"'{path}' is not an edgecnn training checkpoint; to start from plain weights use --weights "
                           "instead of --resume.")
    return state


# -- the loop -----------------------------------------------------------------------------------------
LossFn = Callable  # (logits, targets, inputs) -> loss tensor


def fit(model, train_set, val_set=None, config: TrainConfig | None = None, *, loss_fn: LossFn | None = None,
        progress: bool = True, on_epoch_end: Callable | None = None, start_epoch: int = 0,
        optimizer_state: dict | None = None, checkpoint: str | os.PathLike | None = None,
        checkpoint_meta: dict | None = None, resume: dict | None = None) -> dict:
    """Train ``model`` in place. Returns {"history": [...], "best_top1": ..., "seconds": ..., "device": ...}.

    ``loss_fn(logits, targets, inputs)`` replaces cross-entropy (distillation passes its KD loss here).
    ``on_epoch_end(epoch, model, optimizer, record)`` is called after each epoch.
    ``checkpoint``: a file rewritten after every epoch with model, optimizer, scaler, RNG states and
    history (plus ``checkpoint_meta``); ``resume``: such a checkpoint (see :func:`read_checkpoint`),
    training continues after its epoch and reproduces an uninterrupted run on CPU.
    Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each process sees
    its shard of the data (DistributedSampler), and only rank 0 validates and writes the checkpoint.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    config.validate()
    if len(train_set) == 0:
        raise DataError("The training set is empty; check the data folder.")
    seed_everything(config.seed)
    init_distributed(config.device)
    world, rank, _ = dist_info()
    main = rank == 0
    device = resolve_device(config.device)
    cuda = device.startswith("cuda")
    model.to(device)
    if cuda and config.channels_last:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(config.seed)
    sampler = None
    if world > 1:
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    per_process = len(train_set) // world
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=per_process > config.batch_size, num_workers=config.num_workers,
                        generator=g if sampler is None else None, pin_memory=cuda,
                        persistent_workers=config.num_workers > 0)
    optimizer = make_optimizer(model, config)
    base_lrs = [config.resolved_lr() for _ in optimizer.param_groups]
    use_amp = cuda and config.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise WeightsError(f"The checkpoint does not fit this model/optimizer ({first}); resume with the model, "
                               "input and --optimizer it was trained with.") from exc
        if use_amp and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start_epoch = int(resume["epoch"])
        history = list(resume.get("history") or [])
        rng = resume.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "loader" in rng:
            g.set_state(rng["loader"])
    elif optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[torch.device(device).index or 0] if cuda else None)
    steps_per_epoch = max(1, len(loader))
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    criterion = loss_fn or (lambda logits, y, x: ce(logits, y))
    best = max((r["val_top1"] for r in history if r.get("val_top1") is not None), default=None)
    bad_steps = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for epoch in range(start_epoch, config.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        t_epoch = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=None if (progress and main) else True, leave=False,
                   unit="batch", dynamic_ncols=True)
        for i, (x, y) in enumerate(named_errors(bar)):
            step = epoch * steps_per_epoch + i
            f = lr_factor(step, total, warmup, config.schedule)
            for grp, lr in zip(optimizer.param_groups, base_lrs):
                grp["lr"] = lr * f
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda and config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = net(x)
                loss = criterion(logits, y, x)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            if not math.isfinite(value):
                bad_steps += 1
                # AMP skips an overflowing step by itself; in FP32 (or when it keeps happening) it is divergence.
                if not use_amp or bad_steps >= 20:
                    raise TrainingDiverged(f"Training diverged at epoch {epoch + 1} (loss {value}); lower --lr "
                                           f"(now {config.resolved_lr():g}) or add --warmup-epochs.")
                continue
            bad_steps = 0
            n = y.shape[0]
            seen += n
            loss_sum += value * n
            correct += int((logits.detach().argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
        if world > 1:
            import torch.distributed as dist

            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
                  "lr": optimizer.param_groups[0]["lr"]}
        if val_set is not None and main:
            record["val_top1"] = evaluate_module(model, val_set, batch_size=256, device=device)["top1"]
            best = record["val_top1"] if best is None else max(best, record["val_top1"])
        record["seconds"] = round(time.perf_counter() - t_epoch, 3)
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, record)
        if progress and main:
            val = f"  val top-1 {100 * record['val_top1']:.2f}%" if "val_top1" in record else ""
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  train top-1 "
                       f"{100 * record['train_top1']:.2f}%{val}  ({record['seconds']:.1f} s)")
        if checkpoint is not None and main:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, **(checkpoint_meta or {}), "epoch": epoch + 1,
                "config": asdict(config), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
                "rng": {"torch": torch.get_rng_state(), "loader": g.get_state()}, "history": history,
            })
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, optimizer, record)
    model.eval()
    # cpu_seconds (all threads of this process) does not depend on what else runs on the machine: on an
    # otherwise idle machine the wall time is at most this, even on one core.
    return {"history": history, "best_top1": best, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - cpu0, "device": device, "world_size": world}


# -- the stage --------------------------------------------------------------------------------------------
def train(model_name: str, *, data: str, out: str | Path, weights: str = "random", num_classes: int | None = None,
          in_channels: int | None = None, input_size=None, config: TrainConfig | None = None, val_split: float = 0.2,
          skip_corrupt: bool = False, progress: bool = True, resume: str | os.PathLike | None = None,
          checkpoint: bool = True, on_epoch_end: Callable | None = None):
    """The train stage: build/load ``model_name``, fit it on ``data``, write a torch artifact to ``out``.

    Unset input size / channels / config come from (in order) the resumed checkpoint, a weights
    artifact, and :func:`recipe` for ``data``. A checkpoint (``OUT.ckpt.pt``) is rewritten after every
    epoch; ``resume`` continues from one. Under torchrun only rank 0 writes; other ranks return None.
    """
    import warnings

    from .artifact import Artifact, is_artifact
    from .data import describe_source, load_dataset
    from .models import architecture_of, build_model, get_spec, save_torch_artifact

    spec = get_spec(model_name)
    out = Path(out)
    check_out(out)
    state = None
    if resume is not None:
        state = read_checkpoint(resume)
        if state.get("model_name") != model_name:
            raise WeightsError(f"Checkpoint '{resume}' is for {state.get('model_name')}, not {model_name}; resume it "
                               f"with MODEL {state.get('model_name')}.")
        if weights != "random":
            raise InvalidInput("--resume restores the weights from the checkpoint; drop --weights.")
    plan = recipe(model_name, data)
    config = config or configure(model_name, data, resume=state)
    config.validate()
    source_art = Artifact.load(weights, formats=("torch",)) if weights not in ("random", "imagenet") and is_artifact(weights) else None
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
        want = architecture_of(model_name, num_classes=arch["num_classes"], in_channels=in_channels, input_size=input_size)
        if [want["in_channels"], want["input_size"]] != [arch["in_channels"], arch["input_size"]]:
            raise InvalidInput(f"Checkpoint '{resume}' was trained at {arch['in_channels']}x{arch['input_size'][0]}x"
                               f"{arch['input_size'][1]}; drop --in-channels/--input-size when resuming.")
    input_spec = spec.input_spec(in_channels=in_channels, input_size=input_size)
    shape = (input_spec["channels"], input_spec["height"], input_spec["width"])
    if min(shape[1:]) < spec.min_input:
        spec.build(num_classes=1, in_channels=shape[0], input_size=shape[1:])  # raises the clear message
    train_set = load_dataset(data, input_spec, "train", augment=config.augment, val_split=val_split,
                             skip_corrupt=skip_corrupt, seed=config.seed, num_classes=num_classes or 10)
    val_set = load_dataset(data, input_spec, "val", val_split=val_split, skip_corrupt=skip_corrupt, seed=config.seed,
                           num_classes=num_classes or 10)
    classes = list(train_set.classes)
    if num_classes is not None and num_classes != len(classes):
        raise InvalidInput(f"--num-classes {num_classes} but data '{data}' has {len(classes)} classes; drop --num-classes.")
    if len(val_set) == 0:
        raise DataError(f"Data '{data}' has no validation images; add a val/ folder or raise --val-split.")
    info: dict = {"weights": weights}
    seed_everything(config.seed)          # the initial weights too: the same seed gives the same run
    if state is not None:
        if state["architecture"]["num_classes"] != len(classes):
            raise InvalidInput(f"Checkpoint '{resume}' predicts {state['architecture']['num_classes']} classes but data "
                               f"'{data}' has {len(classes)}; resume on the data it was trained on.")
        model = spec.build(num_classes=len(classes), in_channels=shape[0], input_size=shape[1:])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore") if weights == "random" else None
            model, info = build_model(model_name, weights=weights, num_classes=len(classes), in_channels=shape[0],
                                      input_size=shape[1:], warn_random=False)
    meta = {"model_name": model_name, "classes": classes, "input": input_spec,
            "architecture": architecture_of(model_name, num_classes=len(classes), in_channels=shape[0], input_size=shape[1:])}
    ckpt = checkpoint_path(out) if checkpoint else None
    owns_group = init_distributed(config.device)
    try:
        result = fit(model, train_set, val_set, config, progress=progress, checkpoint=ckpt, checkpoint_meta=meta,
                     resume=state, on_epoch_end=on_epoch_end)
        if not is_main_process():
            return None
        final = evaluate_module(model, val_set, device=result["device"])
        model.to("cpu")
        skipped = len(getattr(train_set, "skipped", []) or []) + len(getattr(val_set, "skipped", []) or [])
        params = {"data": describe_source(data, "train"), "weights": weights, "recipe": plan["name"],
                  **asdict(config), "lr": config.resolved_lr(), "world_size": result["world_size"],
                  "resumed_from": str(resume) if resume is not None else None,
                  "resumed_at_epoch": int(state["epoch"]) if state is not None else None, "skipped_images": skipped}
        metrics = {"top1": final["top1"], "top5": final["top5"], "eval_data": describe_source(data, "val"),
                   "train_seconds": round(result["seconds"], 2), "train_cpu_seconds": round(result["cpu_seconds"], 2)}
        return save_torch_artifact(model, out, name=model_name, input_spec=input_spec, classes=classes, stage="train",
                                   params=params, parent=info.get("parent"), metrics=metrics,
                                   extra={"history": result["history"], "weights_report": info.get("report"),
                                          "checkpoint": str(ckpt) if ckpt is not None else None})
    finally:
        if owns_group:
            close_distributed()
