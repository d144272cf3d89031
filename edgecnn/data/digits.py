"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): the real labelled images
available offline, used for every accuracy claim. Split: stratified, 80 % train / 20 % held out
(360 images), fixed seed, so every command and test sees the same held-out images."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

CLASSES = [str(i) for i in range(10)]
SPLIT_SEED = 0
VAL_FRACTION = 0.2


def _arrays():
    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def split_indices(n_total: int | None = None, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
        self.images = torch.from_numpy(images[idx]).unsqueeze(1)  # N,1,8,8 in [0,1]
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
        return self.__getitems__([i])[0]

    def __getitems__(self, indices) -> list:
        """Batched fetch (DataLoader calls this with a whole batch of indices): the random jitter and the
        resize run once per batch instead of once per image, which halves LeNet-5's epoch time on CPU."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if self._cache is not None:
            x = self._cache[idx]
        else:
            x = self._prepare(_jitter(self.images[idx]))
        return list(zip(x.unbind(0), self.targets[idx].tolist()))


def _jitter(x: torch.Tensor) -> torch.Tensor:
    """Random rotation (+-10 deg), scale (0.9-1.1) and shift (+-1 px of 8), drawn per image, on N,1,8,8."""
    n = x.shape[0]
    angle = torch.empty(n).uniform_(-10, 10) * (torch.pi / 180)
    scale = torch.empty(n).uniform_(0.9, 1.1)
    shift = torch.empty(n, 2).uniform_(-0.25, 0.25)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
