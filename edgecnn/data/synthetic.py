"""Synthetic images for plumbing and shape tests only. Never use them for an accuracy claim."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class SyntheticDataset(Dataset):
    def __init__(self, input_spec: dict, n: int = 64, num_classes: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        shape = (n, int(input_spec["channels"]), int(input_spec["height"]), int(input_spec["width"]))
        self.images = torch.randn(shape, generator=g)
        self.targets = torch.randint(0, num_classes, (n,), generator=g)
        self.classes = [f"class{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])
