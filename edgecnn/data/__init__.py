"""Datasets: the bundled digits, ImageFolder directories, and synthetic tensors for plumbing tests."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError

__all__ = ["load_dataset", "describe_source"]


def load_dataset(source: str, input_spec: dict, split: str = "val", *, val_split: float = 0.2, seed: int = 0,
                 augment: bool = False, skip_corrupt: bool = False, num_classes: int = 10):
    """``source`` is 'digits', 'synthetic' / 'synthetic:N', or a folder. ``split`` is 'train' or 'val'.

    Every dataset has ``classes`` and yields (float tensor C,H,W normalised per ``input_spec``, label).
    """
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', got {split!r}.")
    if source == "digits":
        from .digits import DigitsDataset

        return DigitsDataset(input_spec, split=split, augment=augment)
    if source == "synthetic" or source.startswith("synthetic:"):
        from .synthetic import SyntheticDataset

        n = 64
        if ":" in source:
            try:
                n = int(source.split(":", 1)[1])
            except ValueError:
                raise DataError(f"'{source}': write synthetic:N with N a number of images.") from None
        return SyntheticDataset(input_spec, n=n, num_classes=num_classes, seed=seed + (0 if split == "train" else 1))
    from .folder import load_folder

    return load_folder(Path(source), input_spec, split, val_split=val_split, seed=seed, augment=augment,
                       skip_corrupt=skip_corrupt)


def describe_source(source: str, split: str) -> dict:
    """What the manifest records about the data a number was measured on."""
    if source == "digits":
        from .digits import SPLIT_SEED, VAL_FRACTION

        return {"source": "digits", "split": split, "description": "scikit-learn load_digits, stratified 80/20",
                "seed": SPLIT_SEED, "val_fraction": VAL_FRACTION}
    if source.startswith("synthetic"):
        return {"source": source, "split": split, "description": "synthetic noise (plumbing only, no accuracy meaning)"}
    return {"source": str(Path(source).resolve()), "split": split}
