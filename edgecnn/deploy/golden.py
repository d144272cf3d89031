"""The bundle's golden set: real held-out images of the user's data (by default the image folder the model
was trained on), and what the host measured on each of them, so that a device's verification reports
image by image which outputs are within tolerance and where the top-1 is clear enough to be checked."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..artifact import Artifact
from ..data.digits import CLASSES as DIGIT_CLASSES
from ..data.digits import _arrays, split_indices
from ..data.images import read_image
from ..data.source import DataSource
from ..errors import DataError

#: golden images per bundle: enough that a few ambiguous ones (top-1 within the tolerance) leave many checked
GOLDEN_N = 32


@dataclass
class GoldenImages:
    """Real held-out images (8-bit PIL), their labels (indices into ``classes``) and file names."""

    images: list
    labels: list[int]
    names: list[str]
    classes: list[str]
    data: dict = field(default_factory=dict)  # which data, and why that data


def golden_source(src: Artifact, data) -> tuple[DataSource, str]:
    """The golden set's data and why: ``data`` when given, else the image folder ``src`` was trained on (its
    manifest says), else the bundled digits - with the reason, never silently."""
    if data is not None:
        return DataSource.parse(data), "--data"
    trained = DataSource.of_training(src)
    if trained is not None and trained[0].is_real:
        return trained[0], f"the model's training data, from {trained[1]}"
    why = "not recorded in its manifest" if trained is None else f"'{trained[0]}', not real images"
    return DataSource.parse("digits"), f"the bundled digits: the model's training data is {why}; pass --data DIR"


def _one_per_class_first(indices, labels, n: int) -> list[int]:
    """``n`` of ``indices``: the first of each class (in class order), then the next ones in order."""
    first: dict[int, int] = {}
    for i in indices:
        first.setdefault(int(labels[i]), int(i))
    picked = [first[c] for c in sorted(first)]
    chosen = set(picked)
    picked += [int(i) for i in indices if int(i) not in chosen][: max(0, n - len(picked))]
    return picked[:n]


def golden_images(input_spec: dict, n: int = GOLDEN_N, data: DataSource | str = "digits") -> GoldenImages:
    """``n`` real held-out images of ``data``, one per class first. The digits are rendered at the model's
    input size as 8-bit images; a folder's images are read as they are (run.py preprocesses them)."""
    source = DataSource.parse(data)
    if source.is_synthetic:
        raise DataError(
            "Golden outputs must come from real images, not synthetic noise; use the digits (default) "
            "or a folder of images."
        )
    channels = int(input_spec["channels"])
    if source.is_folder:
        source.require_folder("Golden data")
        dataset = source.dataset(input_spec, "val")
        picked = _one_per_class_first(range(len(dataset)), dataset.targets, n)
        labels = [int(dataset.targets[i]) for i in picked]
        return GoldenImages(
            [read_image(dataset.samples[i][0], channels) for i in picked],
            labels,
            [f"{k:02d}-class{y}.png" for k, y in enumerate(labels)],
            list(dataset.classes),
        )
    images, labels = _arrays()
    _, val = split_indices(labels=labels)
    picked = _one_per_class_first(val, labels, n)
    h, w = int(input_spec["height"]), int(input_spec["width"])
    x = torch.nn.functional.interpolate(
        torch.from_numpy(images[picked]).unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False
    )
    arr = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).squeeze(1).numpy()
    out = [Image.fromarray(a, mode="L") for a in arr]
    ys = [int(labels[i]) for i in picked]
    return GoldenImages(
        [img if channels == 1 else img.convert("RGB") for img in out],
        ys,
        [f"{k:02d}-digit{y}.png" for k, y in enumerate(ys)],
        list(DIGIT_CLASSES),
    )


def per_image(golden: GoldenImages, model_classes: list[str], expected: np.ndarray, tolerances: dict) -> list[dict]:
    """One row per golden image: its label, the host's top-1 and its lead over the runner-up, and per runtime
    whether that lead is clear of the tolerance (only then must a device's top-1 match)."""
    rows = []
    for k, (name, y) in enumerate(zip(golden.names, golden.labels)):
        logits = expected[k]
        order = np.argsort(logits)[::-1]
        top, second = float(logits[order[0]]), float(logits[order[1]]) if len(order) > 1 else float(logits[order[0]])
        rows.append(
            {
                "image": f"golden/images/{name}",
                "label": golden.classes[y],
                "top1": model_classes[int(order[0])] if model_classes else int(order[0]),
                "margin": round(top - second, 6),
                "unambiguous": {
                    rt: bool(top - second > 2 * (tol["atol"] + tol["rtol"] * abs(top)))
                    for rt, tol in tolerances.items()
                },
            }
        )
    return rows
