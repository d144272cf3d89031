"""Reading images the way every edgecnn stage must: any common format, grayscale / RGBA / 16-bit
converted, corrupt files named in the error, preprocessing taken from the manifest's input spec."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

from ..errors import DataError
from .augment import AugmentPolicy

#: Pillow's own default limit (about 9459 x 9459); images over it are refused before decoding
DEFAULT_MAX_PIXELS = 89_478_485
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path, channels: int):
    """Open ``path`` as an 8-bit PIL image with 1 (L) or 3 (RGB) channels; raise DataError naming it.

    The pixel count is checked from the header, before anything is decoded (a 48 kB PNG may claim
    20000x20000 pixels): over :func:`max_pixels` it is a DataError like any unreadable file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with the file named
            opened = Image.open(path)
        with opened as img:
            _check_pixels(path, img.size)
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
    except Image.DecompressionBombError as exc:  # Pillow refuses at open (over twice its limit)
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_big(path, f"{int(pixels.group(1)):,} pixels" if pixels else "too large") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"Cannot read image '{path}' ({str(exc).splitlines()[0][:120]}); remove or replace the file"
            " (or pass --skip-corrupt to skip unreadable images)."
        ) from exc


def max_pixels() -> int:
    """The largest image edgecnn decodes: Pillow's MAX_IMAGE_PIXELS (raise it there to read bigger ones)."""
    return int(Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS)


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    w, h = size
    if w * h > max_pixels():
        raise _too_big(path, f"{w}x{h} ({w * h:,} pixels)")


def _too_big(path: Path, what: str) -> DataError:
    return DataError(
        f"Image '{path}' is {what}, over the {max_pixels():,} pixels edgecnn decodes (a decompression bomb?); "
        "remove or replace the file (or pass --skip-corrupt to skip unreadable images)."
    )


# -- the preprocessing contract -------------------------------------------------------------------
def preprocess_contract(input_spec: dict) -> dict:
    """The manifest's ``input.preprocess`` block: every step in integers and named library calls, so that
    a consumer without edgecnn (C, JavaScript, run.py) reproduces the inputs bit for bit. edgecnn's own
    evaluation (:class:`EvalTransform`) follows exactly these steps."""
    size = _resize_side(input_spec)
    ch, cw = _crop_size(input_spec)
    _, square_box = crop_box(size, size, input_spec)
    return {
        "version": 1,
        "applies_to": "image files (the bundled digits are 8x8 arrays resized in float by torch, not files)",
        "steps": ["decode", "resize", "crop", "to_float", "normalize"],
        "decode": (
            "Pillow Image.open; refused over max_pixels (checked from the header); 16-bit / 32-bit / float modes "
            "to 8-bit L as floor(clip(v / hi * 255 + 0.5, 0, 255)) with hi = 65535 for I;16* or when max > 255, "
            "else 255; modes with alpha composited over opaque white; then Image.convert(color)"
        ),
        "color": "L" if int(input_spec["channels"]) == 1 else "RGB",
        "max_pixels": max_pixels(),
        "resize": {
            "shorter_side": size,
            "longer_side": f"floor(longer * {size} / shorter) in integer arithmetic",
            "rounding": "floor",
            "skip_if_same_size": True,
            "library": "Pillow",
            "pillow": PIL.__version__,
            "call": "Image.resize((new_width, new_height), Image.BILINEAR)",
            "filter": "PIL.Image.BILINEAR",
            "dtype": "uint8",
        },
        "crop": {
            "height": ch,
            "width": cw,
            "top": f"floor((resized_height - {ch}) / 2)",
            "left": f"floor((resized_width - {cw}) / 2)",
            "rounding": "floor",
            "call": "Image.crop((left, top, left + width, top + height)); pixels outside the image are 0",
            "box_of_a_square_image": list(square_box),
        },
        "to_float": "float32(pixel) / float32(divide_by), one IEEE float32 division",
        "divide_by": 255,
        "normalize": "(x - float32(mean[c])) / float32(std[c]) in float32, per channel",
        "layout": "CHW per image, batched NCHW",
    }


def _resize_side(input_spec: dict) -> int:
    return int(input_spec.get("resize") or min(_crop_size(input_spec)))


def _crop_size(input_spec: dict) -> tuple[int, int]:
    h, w = input_spec.get("crop") or (input_spec["height"], input_spec["width"])
    return int(h), int(w)


def crop_box(width: int, height: int, input_spec: dict) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """For an image of ``width`` x ``height``: its size after the shorter-side resize and the crop box
    (left, top, right, bottom) in that resized image, in integers (floor), as the contract states."""
    size = _resize_side(input_spec)
    ch, cw = _crop_size(input_spec)
    if width <= height:
        new_w, new_h = size, height * size // width
    else:
        new_w, new_h = width * size // height, size
    left, top = (new_w - cw) // 2, (new_h - ch) // 2
    return (new_w, new_h), (left, top, left + cw, top + ch)


class EvalTransform:
    """PIL image (8-bit L / RGB) -> float32 tensor (C, H, W) by the manifest's preprocessing contract
    (:func:`preprocess_contract`): Pillow bilinear resize of the shorter side on the 8-bit image, floor
    center crop, /255 and (x - mean) / std in float32. A plain object, so loader workers can pickle it."""

    def __init__(self, input_spec: dict):
        self.spec = {k: input_spec.get(k) for k in ("channels", "height", "width", "resize", "crop")}
        c = int(input_spec["channels"])
        self.mean = np.asarray(input_spec["mean"], dtype=np.float32).reshape(c, 1, 1)
        self.std = np.asarray(input_spec["std"], dtype=np.float32).reshape(c, 1, 1)

    def array(self, img) -> np.ndarray:
        (new_w, new_h), box = crop_box(img.width, img.height, self.spec)
        if (new_w, new_h) != img.size:
            img = img.resize((new_w, new_h), Image.BILINEAR)
        x = np.asarray(img.crop(box), dtype=np.float32) / np.float32(255)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        return np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)

    def __call__(self, img) -> torch.Tensor:
        return torch.from_numpy(self.array(img))


def eval_transform(input_spec: dict) -> EvalTransform:
    """Resize (shorter side) -> center crop -> float -> normalize, exactly as the manifest's contract says."""
    return EvalTransform(input_spec)


def train_transform(input_spec: dict, policy=True):
    """The training transform of an :class:`~edgecnn.data.augment.AugmentPolicy` (or its name / True =
    'default'): its random steps, then tensor + normalize. Without a random crop the images are resized
    and center-cropped exactly as :func:`eval_transform` does. The policy decides the flip (auto: only
    multi-channel input is flipped)."""
    policy = AugmentPolicy.parse(policy)
    channels = int(input_spec["channels"])
    crop = tuple(input_spec.get("crop") or (input_spec["height"], input_spec["width"]))
    steps = []
    if policy.crop_scale is not None:
        steps.append(T.RandomResizedCrop(crop, scale=policy.crop_scale, ratio=policy.crop_ratio))
    if policy.rotate or policy.translate:
        steps.append(
            T.RandomAffine(degrees=policy.rotate, translate=(policy.translate,) * 2 if policy.translate else None)
        )
    if policy.flips(channels):
        steps.append(T.RandomHorizontalFlip())
    if policy.vflip:
        steps.append(T.RandomVerticalFlip())
    if policy.brightness or policy.contrast:
        steps.append(T.ColorJitter(brightness=policy.brightness, contrast=policy.contrast))
    if policy.crop_scale is None:
        return T.Compose([*steps, eval_transform(input_spec)])
    return T.Compose([*steps, T.ToTensor(), T.Normalize(input_spec["mean"], input_spec["std"])])


def preprocess_file(path: str | Path, input_spec: dict) -> np.ndarray:
    """One image file -> float32 array (C, H, W), exactly as evaluation feeds it."""
    return EvalTransform(input_spec).array(read_image(path, int(input_spec["channels"])))
