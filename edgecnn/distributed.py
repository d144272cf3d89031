"""Processes and devices of a training run: torchrun's environment, the process group (NCCL on CUDA,
gloo on CPU), the device a process trains on, and seeding every random generator a run uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from .errors import InvalidInput

__all__ = ["dist_info", "is_main_process", "init_distributed", "close_distributed", "resolve_device", "seed_everything"]


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
    if world <= 1 or dist.is_initialized():
        return False
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(device: str = "auto") -> str:
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
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
