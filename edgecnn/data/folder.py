"""ImageFolder datasets: ``DIR/train/<class>/*`` + ``DIR/val/<class>/*``, or one ``DIR/<class>/*`` split
into train / val with a fixed seed (stratified)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from .images import eval_transform, is_image_file, read_image, train_transform

log = logging.getLogger("edgecnn")


def scan_class_folders(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs, recursively per class."""
    if not root.exists():
        raise DataError(
            f"Data folder '{root}' does not exist; pass a folder of class sub-folders, 'digits' or 'synthetic'."
        )
    if not root.is_dir():
        raise DataError(f"Data path '{root}' is a file; pass a folder laid out as {root}/<class>/<image>.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = []
    for label, cls in enumerate(classes):
        files = sorted(f for f in (root / cls).rglob("*") if f.is_file() and is_image_file(f))
        samples += [(f, label) for f in files]
    if not classes or not samples:
        raise DataError(
            f"Data folder '{root}' holds no images in class sub-folders; lay it out as {root}/<class>/<image>.jpg."
        )
    return classes, samples


class ImageFolderDataset(Dataset):
    #: items are decoded from disk one by one (a loader with workers decodes in parallel)
    decodes = True

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        input_spec: dict,
        *,
        augment=False,
        skip_corrupt: bool = False,
    ):
        self.classes = classes
        self.channels = int(input_spec["channels"])
        self.transform = train_transform(input_spec, augment) if augment else eval_transform(input_spec)
        self.skipped: list[Path] = []
        if skip_corrupt:
            good = []
            for f, y in samples:
                try:
                    read_image(f, self.channels)
                    good.append((f, y))
                except DataError:
                    self.skipped.append(f)
            if self.skipped:
                log.warning("skipped %d unreadable image(s), first: %s", len(self.skipped), self.skipped[0])
            if not good:
                raise DataError("Every image was unreadable; check the data folder.")
            samples = good
        self.samples = samples
        self.targets = [y for _, y in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.transform(read_image(path, self.channels)), label


def load_folder(
    root: Path,
    input_spec: dict,
    split: str,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    augment=False,
    skip_corrupt: bool = False,
) -> ImageFolderDataset:
    root = Path(root)
    sub = {"train": "train", "val": "val"}.get(split)
    if (root / "train").is_dir() and (root / "val").is_dir():
        if sub is None:
            raise DataError(f"split must be 'train' or 'val', got {split!r}.")
        classes, samples = scan_class_folders(root / sub)
        other, _ = scan_class_folders(root / ("val" if sub == "train" else "train"))
        if other != classes:
            raise DataError(f"'{root}/train' and '{root}/val' have different class folders; make them match.")
    else:
        classes, samples = scan_class_folders(root)
        if split in ("train", "val"):
            if not 0.0 < val_split < 1.0:
                raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_split}.")
            samples = _split(samples, val_split, seed)[0 if split == "train" else 1]
    return ImageFolderDataset(samples, classes, input_spec, augment=augment, skip_corrupt=skip_corrupt)


def _split(samples, val_split: float, seed: int):
    labels = np.array([y for _, y in samples])
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_split))
        if len(idx) > 1:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return [samples[i] for i in sorted(train)], [samples[i] for i in sorted(val)]
