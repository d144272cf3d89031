"""The training loop, shared by ``train``, fine-tuning after pruning / sparsity, distillation and QAT.

``fit`` trains a module in place (SGD+momentum or AdamW, warm-up + cosine schedule, label smoothing,
AMP + channels_last on CUDA, DDP under ``torchrun``, a resumable checkpoint after every epoch), with the
loop's settings in :class:`TrainConfig`. The train stage and the recipes: :mod:`edgecnn.train`, which
re-exports the public names here.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from .data.augment import AugmentPolicy
from .distributed import dist_info, init_distributed, resolve_device, seed_everything
from .errors import DataError, EdgeCnnError, OptionError, WeightsError
from .evaluation import evaluate_module, named_errors
from .limits import MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_WORKERS
from .options import Options, bounded

log = logging.getLogger("edgecnn")


class TrainingDiverged(EdgeCnnError):
    """The loss became NaN/inf: the learning rate is too high for this model and data."""


@dataclass
class TrainConfig(Options):
    epochs: int = bounded(10, 0, MAX_EPOCHS)
    batch_size: int = bounded(64, 1, MAX_BATCH)  # per process under torchrun (global batch = batch_size * WORLD_SIZE)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float | None = bounded(None, 0, 1e6, lo_open=True)  # default: 0.05 for sgd, 1e-3 for adamw
    momentum: float = bounded(0.9, 0, 1)
    weight_decay: float = bounded(5e-4, 0, 10)  # not applied to biases and norm layers
    label_smoothing: float = bounded(0.0, 0, 1, hi_open=True)
    warmup_epochs: float = bounded(0.0, 0, MAX_EPOCHS)  # linear warm-up, then the schedule
    schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = bounded(0, 0, MAX_SEED)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA only
    channels_last: bool = True  # on CUDA only
    num_workers: int = bounded(0, 0, MAX_WORKERS)
    augment: AugmentPolicy = field(default_factory=lambda: AugmentPolicy.preset("default"))  # or none/light/FILE
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.augment = AugmentPolicy.parse("default" if self.augment is None else self.augment)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "augment": self.augment.record()}

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
        self.augment.validate()


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


class _PlainProgress:
    """Progress as plain lines when stdout is not a terminal (CI logs, pipes), where tqdm's bar is off: one
    line every ``EDGECNN_PROGRESS_EVERY`` seconds (default 30) with the batch, running loss / accuracy and
    the elapsed time."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.every = _progress_every()
        self.t0 = self.last = time.perf_counter()

    def step(self, done: int, loss: float, acc: float) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        tqdm.write(
            f"{self.label}  batch {done}/{self.total}  loss {loss:.4f}  train top-1 {100 * acc:.2f}%  "
            f"elapsed {now - self.t0:.1f} s"
        )


def _progress_every() -> float:
    text = os.environ.get("EDGECNN_PROGRESS_EVERY", "30")
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"EDGECNN_PROGRESS_EVERY must be a number of seconds, got {text!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise OptionError(f"EDGECNN_PROGRESS_EVERY must be >= 0 seconds, got {text!r}.")
    return value


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
    plain = _PlainProgress(f"epoch {epoch + 1}/{config.epochs}", steps_per_epoch) if progress and bar.disable else None
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
        if plain is not None:
            plain.step(i + 1, loss_sum / max(seen, 1), correct / max(seen, 1))
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
