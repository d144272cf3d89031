"""Where labelled images come from, parsed once at the edge.

A :class:`DataSource` is the value behind every ``--data`` / ``--calib`` / ``--parity-data`` option:
the bundled ``digits``, ``synthetic[:N]`` noise (plumbing only) or an image folder. Commands parse the
user's text once (:meth:`DataSource.parse`) and pass the object on; no other module interprets the
strings. The object owns the rules that go with a source: the class-count check against a model, the
manifest description, and whether its numbers may back an accuracy claim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, InvalidInput
from .digits import SPLIT_SEED, VAL_FRACTION, DigitsDataset
from .folder import load_folder
from .synthetic import SyntheticDataset

#: synthetic sets are generated in memory: bound what a user can ask for
MAX_SYNTHETIC = 1_000_000
DEFAULT_SYNTHETIC = 64


@dataclass(frozen=True)
class DataSource:
    kind: str  # digits | synthetic | folder
    path: Path | None = None  # folder only
    n: int | None = None  # synthetic only: images asked for (None: the default)

    # -- parsing --------------------------------------------------------------------------------
    @classmethod
    def parse(cls, value: str | os.PathLike | DataSource) -> DataSource:
        """'digits', 'synthetic', 'synthetic:N' or a folder path (checked when it is read)."""
        if isinstance(value, DataSource):
            return value
        if value is None:
            raise InvalidInput("No data given; pass 'digits', 'synthetic:N' or a folder of class sub-folders.")
        text = str(value)
        if text == "digits":
            return cls("digits")
        if text == "synthetic" or text.startswith("synthetic:"):
            n = None
            if ":" in text:
                try:
                    n = int(text.split(":", 1)[1])
                except ValueError:
                    raise DataError(f"'{text}': write synthetic:N with N a number of images.") from None
                if not 1 <= n <= MAX_SYNTHETIC:
                    raise DataError(f"'{text}': N must be between 1 and {MAX_SYNTHETIC:,}.")
            return cls("synthetic", n=n)
        if not text.strip():
            raise InvalidInput("Empty data path; pass 'digits', 'synthetic:N' or a folder of class sub-folders.")
        return cls("folder", path=Path(text))

    @classmethod
    def optional(cls, value) -> DataSource | None:
        return None if value is None else cls.parse(value)

    def __str__(self) -> str:
        if self.kind == "folder":
            return str(self.path)
        if self.kind == "synthetic":
            return "synthetic" if self.n is None else f"synthetic:{self.n}"
        return self.kind

    # -- facts -------------------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"

    @property
    def is_real(self) -> bool:
        """Real labelled images: numbers measured on them may back an accuracy claim."""
        return not self.is_synthetic

    def require_folder(self, what: str = "Data") -> None:
        """Fail in a second, before minutes of work, when a folder source is not there."""
        if self.is_folder and not self.path.is_dir():
            if self.path.exists():
                raise DataError(
                    f"{what} path '{self.path}' is a file; pass a folder laid out as {self.path}/<class>/<image>."
                )
            raise DataError(
                f"{what} folder '{self.path}' does not exist; pass 'digits' or a folder of class sub-folders."
            )

    def describe(self, split: str) -> dict:
        """What a manifest records about the data a number was measured on."""
        if self.kind == "digits":
            return {
                "source": "digits",
                "split": split,
                "description": "scikit-learn load_digits, stratified 80/20",
                "seed": SPLIT_SEED,
                "val_fraction": VAL_FRACTION,
            }
        if self.is_synthetic:
            return {
                "source": str(self),
                "split": split,
                "description": "synthetic noise (plumbing only, no accuracy meaning)",
            }
        return {"source": str(self.path.resolve()), "split": split}

    def check_classes(self, classes, num_classes: int, *, who: str = "the model", fix: str = "") -> None:
        """The one class-count check: data with ``classes`` against a model predicting ``num_classes``."""
        n = classes if isinstance(classes, int) else len(classes)
        if n != num_classes:
            fix = fix or "use data with the model's classes"
            raise InvalidInput(f"Data '{self}' has {n} classes but {who} predicts {num_classes}; {fix}.")

    # -- reading -------------------------------------------------------------------------------------
    def dataset(
        self,
        input_spec: dict,
        split: str = "val",
        *,
        val_split: float = 0.2,
        seed: int = 0,
        augment: bool = False,
        hflip: bool = True,
        skip_corrupt: bool = False,
        num_classes: int = 10,
    ):
        """The ``split`` ('train' | 'val') as a Dataset yielding (float C,H,W normalised per ``input_spec``, label).

        Folder datasets decode lazily, one image per item (``decodes`` is True on them), so a loader
        with workers bounds memory by the batch, not the dataset."""
        if split not in ("train", "val"):
            raise DataError(f"split must be 'train' or 'val', got {split!r}.")
        if self.kind == "digits":
            return DigitsDataset(input_spec, split=split, augment=augment)
        if self.is_synthetic:
            return SyntheticDataset(
                input_spec,
                n=self.n or DEFAULT_SYNTHETIC,
                num_classes=num_classes,
                seed=seed + (0 if split == "train" else 1),
            )
        return load_folder(
            self.path,
            input_spec,
            split,
            val_split=val_split,
            seed=seed,
            augment=augment,
            hflip=hflip,
            skip_corrupt=skip_corrupt,
        )
