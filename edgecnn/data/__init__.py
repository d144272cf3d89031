"""Datasets: the bundled digits, ImageFolder directories, and synthetic tensors for plumbing tests.

Every ``--data`` string is parsed once into a :class:`~edgecnn.data.source.DataSource`;
:func:`load_dataset` and :func:`describe_source` accept either form.
"""

from __future__ import annotations

from .source import DataSource

__all__ = ["DataSource", "load_dataset", "describe_source"]


def load_dataset(
    source,
    input_spec: dict,
    split: str = "val",
    *,
    val_split: float = 0.2,
    seed: int = 0,
    augment: bool = False,
    skip_corrupt: bool = False,
    num_classes: int = 10,
):
    """``source`` is a DataSource or its text ('digits', 'synthetic[:N]', a folder); ``split`` 'train' | 'val'."""
    return DataSource.parse(source).dataset(
        input_spec,
        split,
        val_split=val_split,
        seed=seed,
        augment=augment,
        skip_corrupt=skip_corrupt,
        num_classes=num_classes,
    )


def describe_source(source, split: str) -> dict:
    """What the manifest records about the data a number was measured on."""
    return DataSource.parse(source).describe(split)
