"""Training and evaluation loops, shared by ``train``, fine-tuning after pruning, and distillation.

``fit`` trains a module in place; ``evaluate`` scores any artifact (torch / onnx / engine) through its
runner; ``train`` is the stage: build or load a zoo model, fit it, write a torch artifact.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InvalidInput

log = logging.getLogger("edgecnn")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"              # sgd (momentum) | adamw
    lr: float | None = None             # default: 0.05 for sgd, 1e-3 for adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
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
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidInput(f"label smoothing must be in [0, 1), got {self.label_smoothing}.")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu.")
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


LossFn = Callable  # (logits, targets, inputs) -> loss tensor


def fit(model, train_set, val_set=None, config: TrainConfig | None = None, *, loss_fn: LossFn | None = None,
        progress: bool = True, on_epoch_end: Callable | None = None, start_epoch: int = 0,
        optimizer_state: dict | None = None) -> dict:
    """Train ``model`` in place. Returns {"history": [...], "best_top1": ..., "seconds": ...}.

    ``loss_fn(logits, targets, inputs)`` replaces cross-entropy (distillation passes its KD loss here).
    ``on_epoch_end(epoch, model, optimizer, record)`` is called after each epoch (checkpoints).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    config.validate()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    cuda = device.startswith("cuda")
    model.to(device)
    if cuda and config.channels_last:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=len(train_set) > config.batch_size,
                        num_workers=config.num_workers, generator=g, pin_memory=cuda)
    optimizer = make_optimizer(model, config)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    steps_per_epoch = max(1, len(loader))
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    base_lrs = [grp["lr"] for grp in optimizer.param_groups]
    ce = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    criterion = loss_fn or (lambda logits, y, x: ce(logits, y))
    use_amp = cuda and config.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    best = None
    t0 = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False, unit="batch")
        for i, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            f = lr_factor(step, total, warmup, config.schedule)
            for grp, lr in zip(optimizer.param_groups, base_lrs):
                grp["lr"] = lr * f
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda and config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = model(x)
                loss = criterion(logits, y, x)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = y.shape[0]
            seen += n
            loss_sum += float(loss.detach()) * n
            correct += int((logits.detach().argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
                  "lr": optimizer.param_groups[0]["lr"]}
        if val_set is not None:
            record["val_top1"] = evaluate_module(model, val_set, batch_size=256, device=device)["top1"]
            best = record["val_top1"] if best is None else max(best, record["val_top1"])
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, optimizer, record)
    model.eval()
    return {"history": history, "best_top1": best, "seconds": time.perf_counter() - t0, "device": device}


def _batches(dataset, batch_size: int):
    from torch.utils.data import DataLoader

    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield x.numpy().astype(np.float32, copy=False), y.numpy()


def scores(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """top-1, top-5 and per-class accuracy from logits and labels."""
    n = len(targets)
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1)[:, :k]
    per_class = {}
    for c, name in enumerate(classes):
        mask = targets == c
        if mask.any():
            per_class[name] = float((pred[mask] == c).mean())
    return {"top1": float((pred == targets).mean()) if n else 0.0,
            "top5": float((topk == targets[:, None]).any(1).mean()) if n else 0.0,
            "per_class": per_class, "n": int(n)}


def evaluate_module(model, dataset, *, batch_size: int = 256, device: str = "cpu") -> dict:
    import torch

    model.eval()
    outs, ys = [], []
    with torch.inference_mode():
        for x, y in _batches(dataset, batch_size):
            outs.append(model(torch.from_numpy(x).to(device)).float().cpu().numpy())
            ys.append(y)
    return scores(np.concatenate(outs), np.concatenate(ys), list(dataset.classes))


def predict(runner, dataset, *, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``dataset`` through ``runner``: (logits, labels, seconds spent inside infer)."""
    from tqdm.auto import tqdm

    outs, ys, spent = [], [], 0.0
    total = math.ceil(len(dataset) / batch_size)
    for x, y in tqdm(_batches(dataset, batch_size), total=total, desc="eval", disable=not progress, leave=False):
        t = time.perf_counter()
        outs.append(runner.infer(x))
        spent += time.perf_counter() - t
        ys.append(y)
    return np.concatenate(outs), np.concatenate(ys), spent


def evaluate(artifact, data: str, *, batch_size: int = 64, device: str = "cpu", threads: int | None = None,
             progress: bool = False, skip_corrupt: bool = False, val_split: float = 0.2) -> dict:
    """Score an artifact of any runnable format on the held-out split of ``data``."""
    from .artifact import Artifact
    from .data import describe_source, load_dataset
    from .runtime import open_runner

    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    dataset = load_dataset(data, artifact.input, "val", skip_corrupt=skip_corrupt, val_split=val_split,
                           num_classes=artifact.num_classes)
    if len(dataset.classes) != artifact.num_classes:
        raise InvalidInput(f"Data '{data}' has {len(dataset.classes)} classes but the model predicts "
                           f"{artifact.num_classes}; evaluate on data with the model's classes.")
    with open_runner(artifact, device=device, threads=threads) as runner:
        logits, labels, spent = predict(runner, dataset, batch_size=batch_size, progress=progress)
        kind = runner.description
    result = scores(logits, labels, artifact.classes)
    result.update({"artifact": str(artifact.path), "model": artifact.model, "format": artifact.format,
                   "precision": artifact.precision, "runner": kind, "data": describe_source(data, "val"),
                   "batch_size": batch_size, "images_per_second": len(labels) / spent if spent > 0 else None})
    return result


def train(model_name: str, *, data: str, out: str | Path, weights: str = "random", num_classes: int | None = None,
          in_channels: int | None = None, input_size=None, config: TrainConfig | None = None, val_split: float = 0.2,
          skip_corrupt: bool = False, progress: bool = True):
    """The train stage: build/load ``model_name``, fit it on ``data``, write a torch artifact to ``out``."""
    import warnings

    from .data import describe_source, load_dataset
    from .models import build_model, get_spec, save_torch_artifact

    config = config or TrainConfig()
    config.validate()
    spec = get_spec(model_name)
    input_spec = spec.input_spec(in_channels=in_channels, input_size=input_size)
    train_set = load_dataset(data, input_spec, "train", augment=config.augment, val_split=val_split,
                             skip_corrupt=skip_corrupt, seed=config.seed, num_classes=num_classes or 10)
    val_set = load_dataset(data, input_spec, "val", val_split=val_split, skip_corrupt=skip_corrupt, seed=config.seed,
                           num_classes=num_classes or 10)
    classes = list(train_set.classes)
    if num_classes is not None and num_classes != len(classes):
        raise InvalidInput(f"--num-classes {num_classes} but data '{data}' has {len(classes)} classes; drop --num-classes.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore") if weights == "random" else None
        model, info = build_model(model_name, weights=weights, num_classes=len(classes), in_channels=input_spec["channels"],
                                  input_size=(input_spec["height"], input_spec["width"]), warn_random=False)
    result = fit(model, train_set, val_set, config, progress=progress)
    final = evaluate_module(model, val_set, device=result["device"])
    model.to("cpu")
    params = {"data": describe_source(data, "train"), "weights": weights, **asdict(config), "lr": config.resolved_lr()}
    metrics = {"top1": final["top1"], "top5": final["top5"], "eval_data": describe_source(data, "val"),
               "train_seconds": round(result["seconds"], 2)}
    art = save_torch_artifact(model, out, name=model_name, input_spec=input_spec, classes=classes, stage="train",
                              params=params, parent=info.get("parent"), metrics=metrics,
                              extra={"history": result["history"], "weights_report": info.get("report")})
    return art
