"""How calibration/images/ was made (kept for provenance; you do not need to run it).

The source photographs ship inside two PyPI packages, so this works offline once their wheels are
present: scikit-image (``skimage/data/*``, public domain / CC0) and scikit-learn
(``sklearn/datasets/images/*.jpg``, CC BY 2.0). Each photograph contributes a resized full view plus a
few deterministic crops (seeded), all saved as JPEG quality 85 with the short side at 256 px, so the set
stays small (< 2 MB) while covering different scales and framings.

    pip download scikit-image --no-deps -d /tmp/skimg && unzip -o /tmp/skimg/*.whl 'skimage/data/*' -d /tmp/skimg
    python calibration/make_default_set.py /tmp/skimg/skimage/data

Licences and attributions: calibration/SOURCES.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

# file in the package -> (output stem, crops). Only images whose licence is stated as public domain,
# CC0 or CC BY in the package itself are used (see SOURCES.md).
SKIMAGE = {
    "astronaut.png": ("astronaut", 4),
    "chelsea.png": ("chelsea", 4),
    "coffee.png": ("coffee", 4),
    "rocket.jpg": ("rocket", 4),
    "hubble_deep_field.jpg": ("hubble", 2),
    "retina.jpg": ("retina", 2),
    "camera.png": ("camera", 2),  # grayscale
    "coins.png": ("coins", 2),  # grayscale
    "clock_motion.png": ("clock", 1),  # grayscale
    "grass.png": ("grass", 1),  # grayscale texture
    "gravel.png": ("gravel", 1),  # grayscale texture
    "brick.png": ("brick", 1),  # grayscale texture
}
SKLEARN = {"china.jpg": ("china", 4), "flower.jpg": ("flower", 4)}
SHORT_SIDE = 256


def _resize_short(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    s = side / min(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)


def views(img: Image.Image, crops: int, seed: int):
    """The full photograph and ``crops`` random crops covering 35-75 % of its area."""
    yield "full", _resize_short(img, SHORT_SIDE)
    rng = np.random.default_rng(seed)
    w, h = img.size
    for k in range(crops):
        frac = rng.uniform(0.35, 0.75)
        cw, ch = int(w * np.sqrt(frac)), int(h * np.sqrt(frac))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        yield f"crop{k + 1}", _resize_short(img.crop((x0, y0, x0 + cw, y0 + ch)), SHORT_SIDE)


def main(skimage_dir: str) -> None:
    import sklearn

    out = Path(__file__).resolve().parent / "images"
    out.mkdir(exist_ok=True)
    sources = [(Path(skimage_dir) / f, stem, n) for f, (stem, n) in SKIMAGE.items()]
    sk = Path(sklearn.__file__).parent / "datasets" / "images"
    sources += [(sk / f, stem, n) for f, (stem, n) in SKLEARN.items()]
    for i, (path, stem, n) in enumerate(sources):
        with Image.open(path) as src:
            img = src.convert("L" if src.mode in ("L", "I;16", "1") else "RGB")
        for tag, view in views(img, n, seed=i):
            view.save(out / f"{stem}_{tag}.jpg", quality=85, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1])
