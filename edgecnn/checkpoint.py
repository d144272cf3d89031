"""Training checkpoints: where ``train`` keeps one (``OUT.ckpt.pt`` next to the artifact), an atomic
write after every epoch, and a read that unpickles tensors and plain values only (``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .artifact import atomic_file
from .errors import WeightsError

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_path", "save_checkpoint", "read_checkpoint"]

CHECKPOINT_FORMAT = "edgecnn.checkpoint/1"


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where ``train`` keeps the resumable checkpoint of artifact ``out``: next to it, ``OUT.ckpt.pt``."""
    out = Path(out)
    return out.parent / f"{out.name}.ckpt.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save through a temporary file + rename: a crash mid-write keeps the previous checkpoint."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(
            f"Cannot read checkpoint '{path}' ({first}); pass a checkpoint written by 'edgecnn train'."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"'{path}' is not an edgecnn training checkpoint; to start from plain weights use "
            "--weights instead of --resume."
        )
    return state
