"""Training checkpoints: where ``train`` keeps one (``OUT.ckpt.pt`` next to the artifact), an atomic
write after every epoch, and a read that unpickles tensors and plain values only (``weights_only=True``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .artifact import atomic_file
from .errors import OptionError, WeightsError
from .models.weights import load_failure

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_path", "save_checkpoint", "read_checkpoint", "check_resume_settings"]

CHECKPOINT_FORMAT = "edgecnn.checkpoint/1"


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where ``train`` keeps the resumable checkpoint of artifact ``out``: next to it, ``OUT.ckpt.pt``."""
    out = Path(out)
    return out.parent / f"{out.name}.ckpt.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save through a temporary file + rename: a crash mid-write keeps the previous checkpoint."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:  # a file object: a full disk surfaces as its OSError
        torch.save(state, fh)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint written by ``fit`` (tensors and plain values only: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Checkpoint '{path}' does not exist; pass the OUT.ckpt.pt file that 'edgecnn train' "
            "writes next to its --out after every epoch."
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        pickled, detail = load_failure(exc)
        if pickled:
            raise WeightsError(
                f"Checkpoint '{path}' holds pickled Python objects{detail}, which edgecnn refuses to unpickle; "
                "pass a checkpoint written by 'edgecnn train'."
            ) from exc
        raise WeightsError(
            f"Cannot read checkpoint '{path}' ({detail}); pass a checkpoint written by 'edgecnn train'."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"'{path}' is not an edgecnn training checkpoint; to start from plain weights use "
            "--weights instead of --resume."
        )
    return state


#: the TrainConfig fields that decide what a run computes; a resumed run keeps the checkpoint's
RUN_SETTINGS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "warmup_epochs",
    "schedule",
    "seed",
    "augment",
)


def check_resume_settings(state: dict | None, config, path: str | os.PathLike) -> None:
    """Refuse to resume checkpoint ``state`` with a ``config`` (TrainConfig) whose run settings differ from
    the ones it was trained with: the manifest would record settings the first epochs never used, and the
    result would match no uninterrupted run. The fields compared are :data:`RUN_SETTINGS`."""
    if state is None:
        return
    saved = state.get("config") or {}
    before = dataclasses.replace(config, **{k: saved[k] for k in RUN_SETTINGS if k in saved})
    differ = []
    for key in RUN_SETTINGS:
        old, new = getattr(before, key), getattr(config, key)
        if key == "lr":  # None means the optimizer's default
            old, new = before.resolved_lr(), config.resolved_lr()
        if old != new:
            differ.append(f"{key} {old:g} -> {new:g}" if _number(old) and _number(new) else f"{key} {old} -> {new}")
    if differ:
        raise OptionError(
            f"--resume continues the run in '{path}' with its own settings, but this call changes "
            f"{', '.join(differ)}; drop those options to resume it as it was, or train a new run from the "
            "finished artifact with --weights OUT and the new settings."
        )


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
