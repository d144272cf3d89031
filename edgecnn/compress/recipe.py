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

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput, suggest


class RecipeError(InvalidInput):
    """A recipe file or option set that cannot be run."""


@dataclass
class CompressRecipe:
    # source
    model: str | None = None              # zoo name or artifact path
    weights: str | None = None            # 'imagenet', 'random', a file or an artifact (model names only)
    num_classes: int | None = None
    in_channels: int | None = None
    input_size: int | None = None
    # pruning (+ fine-tuning, optionally distilled from the original)
    prune: float | None = None            # channel ratio to remove, 0..1
    importance: str = "l1"
    finetune_epochs: int | None = None    # default: 3 when data is given, else 0
    distill: bool = False
    temperature: float = 4.0
    # INT8
    int8: bool = False
    calib: str | None = None
    subset_size: int = 300
    target: str = "auto"
    preset: str = "performance"
    range_estimator: str = "default"
    max_drop: float | None = None
    qat: bool = False
    qat_epochs: int = 3
    compact_names: bool = False           # short tensor names in the INT8 file (smallest targets)
    # FP16
    fp16: bool = False
    fp16_io: bool = False
    # data, output, report
    data: str | None = None
    out: str | None = None
    bench: bool = True
    bench_seconds: float = 2.0
    threads: int | None = None
    seed: int = 0
    # free text, ignored by the chain
    name: str | None = None
    description: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "recipe") -> "CompressRecipe":
        if not isinstance(data, dict):
            raise RecipeError(f"{where} must be a mapping of option: value (got {type(data).__name__}).")
        known = cls.fields()
        values = {}
        for raw_key, value in data.items():
            key = str(raw_key).strip().lstrip("-").replace("-", "_")
            if key not in known:
                hint = suggest(key, known) or suggest(key.replace("_", "-"), [k.replace("_", "-") for k in known])
                raise RecipeError(f"{where}: unknown option '{raw_key}'.{hint} Known options: "
                                  f"{', '.join(k.replace('_', '-') for k in known)}.")
            values[key] = value
        recipe = cls(**values)
        recipe._coerce(where)
        return recipe

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CompressRecipe":
        import yaml

        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"Recipe file '{p}' does not exist; pass a YAML file (see examples/recipes/).")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise RecipeError(f"Recipe '{p}' is not valid YAML ({first}); fix the file.") from exc
        if data is None:
            raise RecipeError(f"Recipe '{p}' is empty; write options such as 'int8: true' and 'calib: calibration/'.")
        return cls.from_dict(data, where=f"recipe '{p}'")

    def merged(self, overrides: dict) -> "CompressRecipe":
        """A copy with the non-None ``overrides`` (command-line options) applied."""
        values = dataclasses.asdict(self)
        values.pop("extra", None)
        for k, v in overrides.items():
            if k not in values:
                raise RecipeError(f"unknown option '{k}'.{suggest(k, list(values))}")
            if v is not None:
                values[k] = v
        out = CompressRecipe(**values)
        out._coerce("options")
        return out

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return d

    # -- checks ---------------------------------------------------------------------------------
    def _coerce(self, where: str) -> None:
        types = {"num_classes": int, "in_channels": int, "input_size": int, "prune": float, "finetune_epochs": int,
                 "temperature": float, "subset_size": int, "max_drop": float, "qat_epochs": int,
                 "bench_seconds": float, "threads": int, "seed": int}
        flags = ("distill", "int8", "qat", "fp16", "fp16_io", "bench")
        strings = ("model", "weights", "importance", "calib", "target", "preset", "range_estimator", "data", "out",
                   "name", "description")
        for k, t in types.items():
            v = getattr(self, k)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (t is int and isinstance(v, float) and not v.is_integer()):
                raise RecipeError(f"{where}: '{k.replace('_', '-')}' must be a {'whole ' if t is int else ''}number, got {v!r}.")
            setattr(self, k, t(v))
        for k in flags:
            if not isinstance(getattr(self, k), bool):
                raise RecipeError(f"{where}: '{k.replace('_', '-')}' must be true or false, got {getattr(self, k)!r}.")
        for k in strings:
            v = getattr(self, k)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise RecipeError(f"{where}: '{k.replace('_', '-')}' must be text, got {v!r}.")
            if v is not None:
                setattr(self, k, str(v))

    def validate(self) -> None:
        """Refuse option sets that cannot be run or contradict each other, saying what to change."""
        if not self.model:
            raise RecipeError("No model: pass MODEL (a zoo name or an artifact directory) or 'model:' in the recipe.")
        if self.int8 and self.fp16:
            raise RecipeError("--int8 and --fp16 both given; the chain ends in one precision - pick one "
                              "(TensorRT can mix them at build time: edgecnn build --int8 --fp16).")
        if self.fp16_io and not self.fp16:
            raise RecipeError("--fp16-io only applies with --fp16.")
        if self.int8 and not self.calib:
            raise RecipeError("--int8 needs calibration images: add --calib DIR (e.g. --calib calibration/) or "
                              "--calib digits; build a set with 'edgecnn calib'.")
        if self.calib and not self.int8:
            raise RecipeError("--calib is only used by --int8; add --int8 or drop --calib.")
        for flag, on in (("--max-drop", self.max_drop is not None), ("--qat", self.qat),
                         ("--compact-names", self.compact_names)):
            if on and not self.int8:
                raise RecipeError(f"{flag} belongs to INT8 quantization; add --int8 --calib DIR.")
        for flag, on in (("--max-drop", self.max_drop is not None), ("--qat", self.qat)):
            if on and not self.data:
                raise RecipeError(f"{flag} needs --data (the labelled set to measure / fine-tune on).")
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise RecipeError(f"--prune is the fraction of channels to remove, between 0 and 1 (exclusive); got {self.prune}.")
        if self.distill and self.prune is None:
            raise RecipeError("--distill distils the pruned network from the original while fine-tuning; it needs "
                              "--prune R (QAT always distils).")
        if self.distill and not self.data:
            raise RecipeError("--distill fine-tunes on labelled data; add --data (e.g. --data digits).")
        if self.finetune_epochs:
            if self.prune is None:
                raise RecipeError("--finetune-epochs fine-tunes after pruning; add --prune R.")
            if not self.data:
                raise RecipeError("--finetune-epochs needs --data to fine-tune on.")
        if self.prune is None and not self.int8 and not self.fp16:
            raise RecipeError("Nothing to do: add --prune R, --int8 --calib DIR and/or --fp16.")
        if self.target not in ("auto", "cpu", "tensorrt"):
            raise RecipeError(f"target must be auto, cpu or tensorrt, got '{self.target}'.{suggest(self.target, ['auto', 'cpu', 'tensorrt'])}")
        if self.subset_size < 1:
            raise RecipeError(f"subset-size must be >= 1, got {self.subset_size}.")
        if self.bench_seconds < 0:
            raise RecipeError(f"bench-seconds must be >= 0, got {self.bench_seconds}.")
