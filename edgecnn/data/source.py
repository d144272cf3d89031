"""Where labelled images come from, parsed once at the edge.

A :class:`DataSource` is the value behind every ``--data`` / ``--calib`` / ``--parity-data`` option:
the bundled ``digits``, ``synthetic[:N]`` noise (plumbing only) or an image folder. Commands parse the
user's text once (:meth:`DataSource.parse`) and pass the object on; no other module interprets the
strings. The object owns the rules that go with a source: the class-count check against a model, the
manifest description, and whether its numbers may back an accuracy claim.
"""

from __future__ import annotations

import json
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
MANIFEST = "manifest.json"


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

    # -- the data a model was trained on ---------------------------------------------------------------
    @classmethod
    def of_training(cls, model) -> tuple[DataSource, str] | None:
        """The data ``model`` (an Artifact), or the nearest artifact up its lineage, was trained on, read from
        the manifests (``stage.params.data`` of a training split), and the manifest it was read from."""
        chain = [(Path(model.path) / MANIFEST, model.manifest)]
        for ref in reversed(model.manifest.get("lineage") or []):
            path = Path(str(ref.get("path", ""))) / MANIFEST
            try:
                chain.append((path, json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):  # a parent moved or deleted: look further up
                continue
        for path, manifest in chain:
            stage = manifest.get("stage") if isinstance(manifest, dict) else None
            data = (stage or {}).get("params", {}).get("data") if isinstance(stage, dict) else None
            if isinstance(data, dict) and data.get("split") == "train" and data.get("source"):
                return cls.parse(str(data["source"])), str(path)
        return None

    @classmethod
    def for_model(cls, value, model, *, who: str = "the model", gate: bool = False) -> tuple[DataSource, str | None]:
        """``value`` parsed or, when None, the data ``model`` was trained on (its manifest says) - never a silent
        default. The note says which data was taken and why (None when ``value`` was given). With ``gate``,
        data read through another input pipeline than the training data's is an error."""
        trained = cls.of_training(model)
        if value is None:
            if trained is None:
                raise InvalidInput(
                    f"No --data given and '{model.path}' records no training data in its manifest; "
                    "pass --data digits or a folder of class sub-folders."
                )
            source, where = trained
            if source.is_folder and not source.path.is_dir():
                raise DataError(
                    f"No --data given and {who}'s training data '{source}' (recorded in {where}) is not there "
                    "any more; pass --data with a folder of class sub-folders."
                )
            return source, f"{who}'s training data, from {where} (no --data given)"
        source = cls.parse(value)
        if gate and trained is not None:
            source.require_folder()
            source.check_like(*trained, who=who)
        return source, None

    def check_like(self, trained: DataSource, where: str, *, who: str = "the model") -> None:
        """Gating on data unlike the training data (the bundled 8x8 digits for a model trained on an image
        folder, or the reverse) measures another input pipeline: an error. Synthetic data is plumbing only."""
        if self.is_synthetic or trained.is_synthetic or self.kind == trained.kind:
            return
        raise InvalidInput(
            f"Data '{self}' is {self._kind_text} but {who} was trained on '{trained}' ({trained._kind_text}, per "
            f"{where}); drop --data to use its training data, or pass --data with images like it."
        )

    @property
    def _kind_text(self) -> str:
        return "the bundled 8x8 digits" if self.kind == "digits" else "an image folder"

    # -- reading -------------------------------------------------------------------------------------
    def dataset(
        self,
        input_spec: dict,
        split: str = "val",
        *,
        val_split: float = 0.2,
        seed: int = 0,
        augment=False,
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
            self.path, input_spec, split, val_split=val_split, seed=seed, augment=augment, skip_corrupt=skip_corrupt
        )
