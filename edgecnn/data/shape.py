"""The model input a folder of images suggests, when the user gives none.

Rule (``input_from_folder``): look at up to 64 images spread over the folder (headers only) and take
* channels: 1 when every one is grayscale (PIL modes 1, L, LA, I, I;16, F, or a palette of grays), else 3;
* side: the median short side, rounded up to a multiple of 8, at least the model's smallest input
  (rounded up to 8) and at most the model's own default side - so 28x28 digits give 1x32x32 for lenet5 and
  resnet18 alike, and 640x480 photos give 3x224x224 for resnet18 (never a bigger input than the model's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .folder import scan_class_folders

SAMPLE = 64
GRAY_MODES = ("1", "L", "LA", "I", "F")


@dataclass(frozen=True)
class FolderInput:
    channels: int
    side: int
    sampled: int
    median_short_side: int
    grayscale: bool

    def describe(self) -> str:
        kind = "grayscale" if self.grayscale else "color"
        return (
            f"from the data: {self.sampled} {kind} images sampled, median short side {self.median_short_side} px "
            "(rule: 1 channel when all are grayscale, else 3; side = the median short side rounded up to 8, "
            "within [model minimum, model default]); set --in-channels / --input-size to override"
        )

    def record(self) -> dict:
        return {
            "from": "data",
            "sampled_images": self.sampled,
            "grayscale": self.grayscale,
            "median_short_side": self.median_short_side,
            "rule": "channels 1 if all sampled images are grayscale else 3; side = ceil8(median short side) "
            "clamped to [ceil8(model min input), model default side]",
        }


def _is_gray(img: Image.Image) -> bool:
    if img.mode in GRAY_MODES or img.mode.startswith("I;16"):
        return True
    if img.mode == "P":
        palette = img.getpalette() or []
        triples = [palette[i : i + 3] for i in range(0, len(palette), 3)]
        return all(r == g == b for r, g, b in triples)
    return False


def input_from_folder(root: str | Path, min_input: int, default_side: int) -> FolderInput | None:
    """What :data:`the rule <edgecnn.data.shape>` picks for the images under ``root``; None when none is readable."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        root = root / "train"
    _, samples = scan_class_folders(root)
    step = max(1, len(samples) // SAMPLE)
    shorts, gray = [], True
    for path, _ in samples[::step][:SAMPLE]:
        try:
            with Image.open(path) as img:
                shorts.append(min(img.size))
                gray = gray and _is_gray(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            continue  # an unreadable file is reported when the data is read
    if not shorts:
        return None
    median = sorted(shorts)[len(shorts) // 2]
    ceil8 = lambda v: 8 * math.ceil(v / 8)  # noqa: E731
    side = min(int(default_side), max(ceil8(min_input), ceil8(median)))
    return FolderInput(
        channels=1 if gray else 3, side=side, sampled=len(shorts), median_short_side=median, grayscale=gray
    )
