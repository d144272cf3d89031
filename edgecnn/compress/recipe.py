"""Compression recipes: the options of ``edgecnn compress`` as one validated object, from the command line
or from a YAML file.

A recipe file holds the same options as the command line (``prune: 0.5``, ``int8: true``,
``calib: calibration/``; kebab-case or snake_case). Unknown keys are rejected with the closest known one,
so a typo never silently turns a step off. Options given on the command line override the file.
Relative paths (calib, data, weights, out) are taken relative to the current directory, like on the
command line.

    # examples/recipes/lenet5-prune-kd-int8.yaml
    model: lenet5
    weights: runs/lenet5            # an artifact, a state_dict file, 'imagenet' or 'random'
    prune: 0.6
    finetune-epochs: 6
    distill: true
    int8: true
    calib: digits
    data: digits
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..data.augment import AugmentPolicy
from ..data.source import DataSource
from ..errors import OptionError
from ..limits import MAX_CHANNELS, MAX_CLASSES, MAX_EPOCHS, MAX_IMAGES, MAX_INPUT_SIZE, MAX_SEED, MAX_THREADS
from ..options import Options, bounded, read_yaml_mapping
from .chain import ChainPlan
from .fp16 import Fp16Options
from .precision import check_precision_flags, int8_flags_given
from .prune import PruneOptions
from .quantize import QuantizeOptions


class RecipeError(OptionError):
    """A recipe file or option set that cannot be run."""


@dataclass
class CompressRecipe(Options):
    ERROR: ClassVar[type[Exception]] = RecipeError
    # source
    model: str | None = None  # zoo name or artifact path
    weights: str | None = None  # 'imagenet', 'random', a file or an artifact (model names only)
    num_classes: int | None = bounded(None, 1, MAX_CLASSES)
    in_channels: int | None = bounded(None, 1, MAX_CHANNELS)
    input_size: int | None = bounded(None, 1, MAX_INPUT_SIZE)
    # pruning (+ fine-tuning, optionally distilled from the original)
    prune: float | None = bounded(None, 0, 1, lo_open=True, hi_open=True)  # channel ratio to remove
    importance: Literal["l1", "l2", "bn", "taylor"] = "l1"
    finetune_epochs: int | None = bounded(None, 0, MAX_EPOCHS)  # default: 3 when data is given, else 0
    distill: bool = False
    temperature: float = bounded(4.0, 0, 100, lo_open=True)
    augment: AugmentPolicy | None = None  # fine-tuning / QAT images: none | light | default | FILE
    # INT8
    int8: bool = False
    calib: DataSource | None = None
    subset_size: int = bounded(300, 1, MAX_IMAGES)
    target: Literal["auto", "cpu", "tensorrt"] = "auto"
    preset: Literal["performance", "mixed"] = "performance"
    range_estimator: str = "default"
    max_drop: float | None = bounded(None, 0, 100)
    qat: bool = False
    qat_epochs: int = bounded(3, 1, MAX_EPOCHS)
    compact_names: bool = False  # short tensor names in the INT8 file (smallest targets)
    # FP16
    fp16: bool = False
    fp16_io: bool = False
    # data, output, report
    data: DataSource | None = None
    out: str | None = None
    bench: bool = True
    bench_seconds: float = bounded(2.0, 0, 3600)
    threads: int | None = bounded(None, 1, MAX_THREADS)
    seed: int = bounded(0, 0, MAX_SEED)
    # free text, ignored by the chain
    name: str | None = None
    description: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [k for k in super().keys() if k != "extra"]

    @classmethod
    def fields(cls) -> list[str]:
        return cls.keys()

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "recipe") -> CompressRecipe:
        return cls.from_mapping(data, where=where, validate=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CompressRecipe:
        data = read_yaml_mapping(path, what="Recipe file", example="examples/recipes/", error=RecipeError)
        if not data:
            raise RecipeError(
                f"Recipe '{path}' is empty; write options such as 'int8: true' and 'calib: calibration/'."
            )
        return cls.from_mapping(data, where=f"recipe '{path}'", validate=False)

    def merged(self, overrides: dict | None = None, **kw) -> CompressRecipe:
        """A copy with the non-None ``overrides`` (command-line options) applied; checked by :meth:`validate`."""
        return super().merged(overrides, validate=False, **kw)

    # -- the chain it describes --------------------------------------------------------------------
    @property
    def finetune(self) -> int:
        """Fine-tuning epochs after pruning: ``finetune_epochs``, else 3 when data is given, else 0."""
        return self.finetune_epochs if self.finetune_epochs is not None else (3 if self.data else 0)

    def plan(self) -> ChainPlan:
        """The stages this recipe runs, each with its options object (their rules live there)."""
        ft = self.finetune
        plan = ChainPlan()
        if self.prune is not None:
            plan.prune = PruneOptions(
                ratio=self.prune,
                importance=self.importance,
                finetune_epochs=ft,
                data=self.data if (ft or self.importance == "taylor") else None,
                distill=self.distill,
                temperature=self.temperature,
                seed=self.seed,
                augment=self.augment if ft else None,
            )
        if self.int8:
            plan.int8 = QuantizeOptions(
                calib=self.calib,
                subset_size=self.subset_size,
                target=self.target,
                preset=self.preset,
                range_estimator=self.range_estimator,
                max_drop=self.max_drop,
                data=self.data,
                qat=self.qat,
                epochs=self.qat_epochs,
                augment=self.augment if self.qat else None,
                threads=self.threads,
                seed=self.seed,
                compact_names=self.compact_names,
            )
        elif self.fp16:
            plan.fp16 = Fp16Options(fp16_io=self.fp16_io, data=self.data)
        return plan

    # -- checks ---------------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse option sets that cannot be run or contradict each other, saying what to change. The
        rules of one stage live in that stage's options (checked through :meth:`plan`); here are the
        rules about how the stages fit together."""
        if not self.model:
            raise RecipeError("No model: pass MODEL (a zoo name or an artifact directory) or 'model:' in the recipe.")
        try:
            check_precision_flags(
                self.int8,
                self.fp16,
                self.fp16_io,
                int8_flags_given(
                    {
                        "calib": self.calib,
                        "max_drop": self.max_drop,
                        "qat": self.qat,
                        "compact_names": self.compact_names,
                    }
                ),
            )
        except OptionError as exc:
            raise RecipeError(str(exc)) from None
        if self.distill and self.prune is None:
            raise RecipeError(
                "--distill distils the pruned network from the original while fine-tuning; it needs "
                "--prune R (QAT always distils)."
            )
        if self.distill and not self.data:
            raise RecipeError("--distill fine-tunes on labelled data; add --data (e.g. --data digits).")
        if self.finetune_epochs:
            if self.prune is None:
                raise RecipeError("--finetune-epochs fine-tunes after pruning; add --prune R.")
            if not self.data:
                raise RecipeError("--finetune-epochs needs --data to fine-tune on.")
        if self.augment is not None and not (self.prune is not None and self.finetune) and not self.qat:
            raise RecipeError(
                f"--augment {self.augment} sets the images of fine-tuning after --prune (with --data) or of --qat; "
                "add one of them."
            )
        if self.prune is None and not self.int8 and not self.fp16:
            raise RecipeError("Nothing to do: add --prune R, --int8 --calib DIR and/or --fp16.")
        try:
            self.plan().validate()
        except RecipeError:
            raise
        except OptionError as exc:
            raise RecipeError(str(exc)) from None
