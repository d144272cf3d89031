"""Augmentation as a policy: what random changes training images get, named, validated and recorded.

Every stage that trains (``train``, fine-tuning after ``prune`` / ``sparsify``, ``distill``, QAT, and
``compress`` / ``sweep`` through them) takes ``--augment none|light|default|FILE``:

* ``none``: no random change; training images are preprocessed exactly as for evaluation.
* ``light``: a random crop of 80-100 % of the area (aspect 0.9-1.1) and rotation up to 10 degrees;
  never a flip. Safe for digits, text and most industrial images.
* ``default``: a random crop of 50-100 % of the area; horizontal flips only when the input has more
  than one channel (``hflip: auto``). Single-channel data (digits, text, scans, most industrial
  cameras) is where a mirror image usually means something else, so it is never flipped unless a
  policy says ``hflip: true``.
* ``FILE``: a YAML mapping of the fields of :class:`AugmentPolicy`, starting from ``base`` (a preset,
  default ``none``), e.g. ``{base: light, rotate: 5, brightness: 0.2}``.

The bundled digits (8x8 arrays, not image files) use their own small affine jitter (rotation +-10
degrees, scale 0.9-1.1, shift +-1 px, never a flip) whenever the policy is not ``none``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import OptionError, suggest
from ..options import Options, bounded, read_yaml_mapping
from .digits import DigitsDataset

PRESETS: dict[str, dict] = {
    "none": {"crop_scale": None, "hflip": False},
    "light": {"crop_scale": (0.8, 1.0), "crop_ratio": (0.9, 1.1), "hflip": False, "rotate": 10.0},
    "default": {"crop_scale": (0.5, 1.0), "hflip": None},
}


class AugmentationWarning(UserWarning):
    """Augmentation that looks wrong for the data (e.g. a teacher that fails on the augmented images)."""


DIGITS_JITTER = "the bundled digits' affine jitter (rotate +-10 deg, scale 0.9-1.1, shift +-1 px of 8; no flip)"
EXAMPLE = "augment.yaml holding e.g. 'base: light' and 'rotate: 5'"


@dataclass
class AugmentPolicy(Options):
    """The random changes of one training image. ``hflip: None`` (auto) flips only multi-channel input."""

    IGNORED_KEYS: ClassVar[tuple[str, ...]] = ("base",)
    name: str = "default"
    crop_scale: tuple[float, ...] | None = bounded((0.5, 1.0), 0, 1, lo_open=True)  # None: center crop
    crop_ratio: tuple[float, ...] = bounded((3 / 4, 4 / 3), 0, 100, lo_open=True)  # its aspect-ratio range
    hflip: bool | None = None  # None: auto (on for 3-channel input, off for single-channel)
    vflip: bool = False
    rotate: float = bounded(0.0, 0, 180)  # +- degrees
    translate: float = bounded(0.0, 0, 0.5)  # +- fraction of the side
    brightness: float = bounded(0.0, 0, 1)
    contrast: float = bounded(0.0, 0, 1)
    file: str | None = None  # the YAML file it was read from

    def __post_init__(self) -> None:
        if self.crop_scale is not None:
            self.crop_scale = tuple(float(v) for v in self.crop_scale)
        self.crop_ratio = tuple(float(v) for v in self.crop_ratio)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> AugmentPolicy:
        if name not in PRESETS:
            raise OptionError(
                f"--augment '{name}' is not a preset or a file.{suggest(str(name), PRESETS)} "
                f"Use one of {', '.join(PRESETS)} or a YAML file ({EXAMPLE})."
            )
        return cls(name=name, **PRESETS[name])

    @classmethod
    def parse(cls, value) -> AugmentPolicy:
        """A policy from a preset name, a YAML file, a mapping, or True ('default') / False ('none')."""
        if isinstance(value, AugmentPolicy):
            return value
        if isinstance(value, bool):
            return cls.preset("default" if value else "none")
        if isinstance(value, dict):
            return cls._from_values(value, where="--augment", default_name="custom")
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise OptionError(f"--augment must be one of {', '.join(PRESETS)} or a YAML file, got {value!r}.")
        text = str(value)
        if text in PRESETS:
            return cls.preset(text)
        path = Path(text)
        if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
            return cls.preset(text)  # the nearest preset in the error
        data = read_yaml_mapping(path, what="Augment file", example=EXAMPLE)
        return cls._from_values(data, where=f"augment file '{path}'", default_name=path.stem, file=str(path))

    @classmethod
    def from_flags(cls, augment, no_augment: bool = False) -> AugmentPolicy | None:
        """``--augment X`` / ``--no-augment`` (an alias of ``--augment none``) of a command; None when unset."""
        if no_augment and augment is not None and str(augment) != "none":
            raise OptionError(f"--no-augment and --augment {augment} contradict each other; drop one.")
        if no_augment:
            return cls.preset("none")
        return None if augment is None else cls.parse(augment)

    @classmethod
    def _from_values(cls, data: dict, *, where: str, default_name: str, file: str | None = None) -> AugmentPolicy:
        base = data.get("base", "none")
        start = cls.preset(str(base)).as_dict()
        start.update(name=default_name, file=file)
        return cls.from_mapping({**start, **data}, where=where)

    # -- rules ----------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.crop_scale is not None:
            lo_hi = self.crop_scale
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
                raise OptionError(f"augment crop-scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(lo_hi)}.")
        r = self.crop_ratio
        if len(r) != 2 or not 0 < r[0] <= r[1]:
            raise OptionError(f"augment crop-ratio must be [lo, hi] with 0 < lo <= hi, got {list(r)}.")

    # -- what it does ---------------------------------------------------------------------------
    def __bool__(self) -> bool:
        """True when the policy changes images at random (``none`` is False)."""
        return bool(
            self.crop_scale is not None
            or self.hflip is not False
            or self.vflip
            or self.rotate
            or self.translate
            or self.brightness
            or self.contrast
        )

    def __str__(self) -> str:
        return self.file or self.name

    def flips(self, channels: int) -> bool:
        """Whether images with ``channels`` channels are flipped horizontally."""
        return bool(self.hflip) if self.hflip is not None else int(channels) > 1

    def steps(self, channels: int) -> list[str]:
        """The random steps, in order, in words (the manifest records them)."""
        out = []
        if self.crop_scale is not None:
            out.append(f"random resized crop (area {self.crop_scale[0]:g}-{self.crop_scale[1]:g})")
        if self.rotate or self.translate:
            out.append(f"random affine (rotate +-{self.rotate:g} deg, translate +-{self.translate:g})")
        if self.flips(channels):
            out.append("horizontal flip (p=0.5)")
        if self.vflip:
            out.append("vertical flip (p=0.5)")
        if self.brightness or self.contrast:
            out.append(f"color jitter (brightness {self.brightness:g}, contrast {self.contrast:g})")
        return out

    def record(self, channels: int | None = None, data=None) -> dict:
        """What a manifest records: the policy's fields, and (given the input's channels) what it does to the
        images of ``data`` (a DataSource or a dataset; the bundled digits get their own jitter)."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        if channels is not None:
            digits = getattr(data, "kind", None) == "digits" or isinstance(data, DigitsDataset)
            out["hflip_applied"] = self.flips(channels) and not digits
            if self.hflip is None:
                out["hflip_rule"] = "auto: flips only input with more than one channel"
            out["steps"] = ([DIGITS_JITTER] if self else []) if digits else self.steps(channels)
        return out
