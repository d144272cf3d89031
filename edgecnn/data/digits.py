"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): the real labelled images
available offline, used for every accuracy claim. Split: stratified, 80 % train / 20 % held out
(360 images), fixed seed, so every command and test sees the same held-out images."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES = [str(i) for i in range(10)]
SPLIT_SEED = 0
VAL_FRACTION = 0.2


def _arrays():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def split_indices(n_total: int | None = None, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if labels is None:
        _, labels = _arrays()
    idx = np.arange(len(labels))
    train, val = train_test_split(idx, test_size=VAL_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return np.sort(train), np.sort(val)


class DigitsDataset(Dataset):
    """The digits resized (bilinear) to the model's input, replicated to its channels and normalised
    with the manifest's mean/std. Training adds a small random affine jitter."""

    classes = CLASSES

    def __init__(self, input_spec: dict, split: str = "val", augment: bool = False):
        images, labels = _arrays()
        train_idx, val_idx = split_indices(labels=labels)
        idx = {"train": train_idx, "val": val_idx, "all": np.arange(len(labels))}[split]
        self.images = torch.from_numpy(images[idx]).unsqueeze(1)   # N,1,8,8 in [0,1]
        self.targets = torch.from_numpy(labels[idx])
        self.size = (int(input_spec["height"]), int(input_spec["width"]))
        self.channels = int(input_spec["channels"])
        self.mean = torch.tensor(input_spec["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(input_spec["std"], dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self._cache = None if augment else self._prepare(self.images)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = x.expand(-1, self.channels, -1, -1)
        return ((x - self.mean) / self.std).contiguous()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        if self._cache is not None:
            return self._cache[i], int(self.targets[i])
        x = self.images[i : i + 1]
        x = _jitter(x)
        return self._prepare(x)[0], int(self.targets[i])


def _jitter(x: torch.Tensor) -> torch.Tensor:
    """Random rotation (+-10 deg), scale (0.9-1.1) and shift (+-1 px of 8) on a 1x1x8x8 batch."""
    import math

    angle = math.radians(float(torch.empty(1).uniform_(-10, 10)))
    scale = float(torch.empty(1).uniform_(0.9, 1.1))
    tx, ty = (float(v) for v in torch.empty(2).uniform_(-0.25, 0.25))
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=x.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
