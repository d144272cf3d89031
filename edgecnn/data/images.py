"""Reading images the way every edgecnn stage must: any common format, grayscale / RGBA / 16-bit
converted, corrupt files named in the error, preprocessing taken from the manifest's input spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path, channels: int):
    """Open ``path`` as an 8-bit PIL image with 1 (L) or 3 (RGB) channels; raise DataError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            return img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"Cannot read image '{path}' ({str(exc).splitlines()[0][:120]}); remove or replace the file"
            " (or pass --skip-corrupt to skip unreadable images)."
        ) from exc


def eval_transform(input_spec: dict):
    """Resize (short side) -> center crop -> tensor -> normalize, all from the manifest's input spec."""
    crop = tuple(input_spec.get("crop") or (input_spec["height"], input_spec["width"]))
    return T.Compose(
        [
            T.Resize(int(input_spec.get("resize") or min(crop)), interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(input_spec["mean"], input_spec["std"]),
        ]
    )


def train_transform(input_spec: dict, *, hflip: bool = True):
    crop = tuple(input_spec.get("crop") or (input_spec["height"], input_spec["width"]))
    steps = [T.RandomResizedCrop(crop, scale=(0.5, 1.0))]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(input_spec["mean"], input_spec["std"])]
    return T.Compose(steps)


def preprocess_file(path: str | Path, input_spec: dict) -> np.ndarray:
    """One image file -> float32 array (C, H, W), exactly as evaluation feeds it."""
    img = read_image(path, int(input_spec["channels"]))
    return eval_transform(input_spec)(img).numpy().astype(np.float32)
