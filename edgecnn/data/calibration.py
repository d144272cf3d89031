"""Calibration sets for post-training quantization.

A calibration source is a folder of images (any common format, searched recursively, class
sub-folders optional), the bundled ``digits`` (their *training* split, so the held-out images used for
accuracy claims are never seen by calibration) or ``synthetic[:N]`` (noise: plumbing only).
Preprocessing always comes from the model's manifest (``input`` spec), exactly as evaluation feeds it.

Rules (as users of Ultralytics / TensorRT expect): fewer images than one batch is an error, fewer than
300 a warning (the statistics of a few dozen images are noisy); unreadable files are named in the error
(or skipped and named with ``skip_corrupt``); a folder without a single image says what it did find.

:func:`build_calibration_folder` writes a class-balanced folder of N images from a labelled dataset
(``edgecnn calib``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError
from .digits import CLASSES as DIGIT_CLASSES
from .digits import _arrays as digit_arrays
from .digits import split_indices as digit_split
from .folder import load_folder
from .images import IMAGE_SUFFIXES, is_image_file, preprocess_file, read_image
from .source import DataSource
from .synthetic import SyntheticDataset

log = logging.getLogger("edgecnn")

RECOMMENDED_IMAGES = 300


@dataclass
class CalibrationSet:
    """Preprocessed calibration batches, float32 (N, C, H, W), plus where they came from."""

    batches: list[np.ndarray]
    source: dict
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return int(sum(b.shape[0] for b in self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)

    def images(self) -> np.ndarray:
        return np.concatenate(self.batches, axis=0)

    def describe(self) -> dict:
        """What a manifest records about the calibration data."""
        return {**self.source, "images": self.num_images, "skipped": self.skipped[:20], "warnings": self.warnings}


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (recursive, sorted); DataError naming what is wrong otherwise."""
    root = Path(folder)
    if not root.exists():
        raise DataError(
            f"Calibration folder '{root}' does not exist; pass a folder of images (e.g. calibration/) "
            "or build one with 'edgecnn calib --data DATASET --n 300 --out DIR'."
        )
    if not root.is_dir():
        raise DataError(f"Calibration path '{root}' is a file; pass the folder that holds the images.")
    files, others = [], []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        (files if is_image_file(p) else others).append(p)
    if not files:
        if others:
            shown = ", ".join(str(o.relative_to(root)) for o in others[:3])
            more = ", ..." if len(others) > 3 else ""
            raise DataError(
                f"Calibration folder '{root}' holds no images, only {len(others)} other file(s) "
                f"({shown}{more}); add images ({', '.join(IMAGE_SUFFIXES[:5])}, ...)."
            )
        raise DataError(
            f"Calibration folder '{root}' is empty; add a few hundred representative images or build "
            "one with 'edgecnn calib --data DATASET --n 300 --out DIR'."
        )
    if others:
        log.info("calibration: ignoring %d non-image file(s) in %s (first: %s)", len(others), root, others[0].name)
    return files


def _choose(n_total: int, subset_size: int, seed: int) -> np.ndarray:
    """Which of n_total items to use: all when they fit, else an evenly spread random subset (sorted)."""
    if n_total <= subset_size:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=subset_size, replace=False))


def _batch(arrays: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    stacked = np.stack(arrays).astype(np.float32, copy=False)
    return [np.ascontiguousarray(stacked[i : i + batch_size]) for i in range(0, len(stacked), batch_size)]


def _check_count(n: int, batch_size: int, where: str, available: int | None = None) -> list[str]:
    """Fewer usable images than one batch: error. A source with fewer than 300 images: warning (asking for
    a smaller --subset-size from a bigger set is the user's informed choice and stays quiet)."""
    if n < batch_size:
        raise DataError(
            f"Calibration data {where} has {n} usable image(s), fewer than one batch of {batch_size}; "
            f"add images (>= {RECOMMENDED_IMAGES} recommended) or lower the batch size."
        )
    if (available if available is not None else n) < RECOMMENDED_IMAGES:
        msg = (
            f"calibrating on only {n} images from {where}; {RECOMMENDED_IMAGES}+ representative images give "
            "steadier INT8 ranges (build a set with 'edgecnn calib')"
        )
        warnings.warn(msg, stacklevel=3)
        return [msg]
    return []


def load_calibration(
    source: DataSource,
    input_spec: dict,
    *,
    subset_size: int = RECOMMENDED_IMAGES,
    batch_size: int = 1,
    seed: int = 0,
    skip_corrupt: bool = False,
    progress: bool = False,
) -> CalibrationSet:
    """Read up to ``subset_size`` calibration images from ``source`` preprocessed per ``input_spec``.

    ``source`` is a :class:`DataSource` (its text form is parsed for callers that still hold one). A folder
    is scanned once and each chosen image decoded once; the batches are what NNCF (and QAT's range
    calibration) reuse for the whole quantize run."""
    if subset_size < 1:
        raise DataError(f"subset size must be >= 1, got {subset_size}.")
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}.")
    source = DataSource.parse(source)
    if source.is_folder:
        return _load_folder(
            source.path,
            input_spec,
            subset_size=subset_size,
            batch_size=batch_size,
            seed=seed,
            skip_corrupt=skip_corrupt,
            progress=progress,
        )
    if source.is_synthetic:
        ds = SyntheticDataset(input_spec, n=min(source.n or subset_size, subset_size), seed=seed)
        arrays = [ds[i][0].numpy() for i in range(len(ds))]
        if len(arrays) < batch_size:
            raise DataError(f"'{source}' gives {len(arrays)} image(s), fewer than one batch of {batch_size}.")
        return CalibrationSet(
            _batch(arrays, batch_size), {"source": str(source), "note": "noise: plumbing only, no accuracy meaning"}
        )
    ds = source.dataset(input_spec, "train")  # a labelled set: its training split, never the held-out one
    idx = _balanced(np.asarray(ds.targets), subset_size, seed)
    arrays = [ds[int(i)][0].numpy() for i in idx]
    warn = _check_count(len(arrays), batch_size, f"'{source}' (training split)", available=len(ds))
    return CalibrationSet(
        _batch(arrays, batch_size),
        {"source": str(source), "split": "train", "selection": "class-balanced"},
        warnings=warn,
    )


def _load_folder(
    root: Path, input_spec: dict, *, subset_size: int, batch_size: int, seed: int, skip_corrupt: bool, progress: bool
) -> CalibrationSet:
    files = find_images(root)
    chosen = [files[i] for i in _choose(len(files), subset_size, seed)]
    arrays, used, skipped, errors = [], [], [], []
    for f in tqdm(chosen, desc="calibration images", disable=not progress, leave=False, unit="img"):
        try:
            arrays.append(preprocess_file(f, input_spec))
            used.append(f)
        except DataError as exc:
            skipped.append(str(f))
            errors.append(exc)
    if errors and not skip_corrupt:
        names = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise DataError(
            f"{len(skipped)} calibration file(s) cannot be read: {names}; remove or replace them, or pass "
            "--skip-corrupt to calibrate without them."
        )
    if skipped:
        log.warning("calibration: skipped %d unreadable file(s), first: %s", len(skipped), skipped[0])
    warn = _check_count(len(arrays), batch_size, f"'{root}'", available=len(files) - len(skipped))
    if skipped:
        warn.append(f"skipped {len(skipped)} unreadable file(s): {', '.join(skipped[:3])}")
    return CalibrationSet(
        _batch(arrays, batch_size),
        {
            "source": str(root.resolve()),
            "found": len(files),
            "selection": "all" if len(files) <= subset_size else f"random {subset_size} (seed {seed})",
        },
        files=[str(f) for f in used],
        skipped=skipped,
        warnings=warn,
    )


def _round_robin(labels: np.ndarray, seed: int) -> list[int]:
    """All indices, ordered so that every prefix is as class-balanced as the data allows (one of each
    class in turn, each class shuffled with ``seed``)."""
    rng = np.random.default_rng(seed)
    per_class = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        per_class.append(idx.tolist())
    order: list[int] = []
    for depth in range(max((len(p) for p in per_class), default=0)):
        order += [int(p[depth]) for p in per_class if depth < len(p)]
    return order


def _balanced(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of up to ``n`` items, class-balanced, sorted."""
    return np.sort(np.array(_round_robin(labels, seed)[:n], dtype=np.int64))


def build_calibration_folder(
    data: DataSource, n: int, out: str | os.PathLike, *, seed: int = 0, val_split: float = 0.2, overwrite: bool = False
) -> dict:
    """Write a class-balanced calibration folder of ``n`` images from ``data`` (the digits or an ImageFolder;
    a :class:`DataSource`, or its text form).

    Images come from the *training* split (never the held-out one) and land in ``out/<class>/``; a
    ``calibration.json`` records the source and per-class counts. The folder is written under a
    temporary name and renamed, so a failure leaves nothing half-written.
    """
    data = DataSource.parse(data)
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}.")
    if data.is_synthetic:
        raise DataError(
            "A calibration folder from synthetic noise would mislead INT8 ranges; pass 'digits' or "
            "a folder of labelled images."
        )
    out = Path(out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not (overwrite and (out / "calibration.json").is_file()):
            raise DataError(
                f"Output '{out}' exists and is not empty; choose another --out"
                + (" or pass --overwrite." if (out / "calibration.json").is_file() else ".")
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if data.is_folder:
            counts, source = _write_from_folder(data.path, n, tmp, seed=seed, val_split=val_split)
        else:
            counts, source = _write_from_digits(n, tmp, seed=seed)
        total = sum(counts.values())
        info = {
            **source,
            "images": total,
            "requested": n,
            "per_class": counts,
            "seed": seed,
            "selection": "class-balanced (round-robin over classes)",
        }
        (tmp / "calibration.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if total < n:
        warnings.warn(f"'{data}' has only {total} usable training images; wrote {total}, not {n}.", stacklevel=2)
    info["out"] = str(out)
    return info


def _write_from_digits(n: int, tmp: Path, *, seed: int) -> tuple[dict, dict]:
    images, labels = digit_arrays()
    train_idx, _ = digit_split(labels=labels)
    counts: dict[str, int] = {}
    for i in train_idx[_balanced(labels[train_idx], n, seed)]:
        cls = DIGIT_CLASSES[int(labels[i])]
        (tmp / cls).mkdir(exist_ok=True)
        arr = np.clip(images[i] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp / cls / f"digits_{int(i):04d}.png")
        counts[cls] = counts.get(cls, 0) + 1
    return counts, {"source": "digits", "split": "train", "note": "8x8 grayscale originals (scikit-learn load_digits)"}


def _write_from_folder(root: Path, n: int, tmp: Path, *, seed: int, val_split: float) -> tuple[dict, dict]:
    spec = {"channels": 3, "height": 1, "width": 1, "mean": [0, 0, 0], "std": [1, 1, 1]}
    ds = load_folder(root, spec, "train", val_split=val_split, seed=seed)
    counts: dict[str, int] = {}
    bad: list[str] = []
    used = 0
    for i in _round_robin(np.array(ds.targets), seed):
        if used >= n:
            break
        path, y = ds.samples[i]
        try:
            read_image(path, 3)
        except DataError:
            bad.append(str(path))
            continue
        cls = ds.classes[y]
        (tmp / cls).mkdir(exist_ok=True)
        shutil.copyfile(path, tmp / cls / f"{used:05d}_{Path(path).name}")
        counts[cls] = counts.get(cls, 0) + 1
        used += 1
    if not used:
        raise DataError(f"No readable image in '{root}'; check the dataset.")
    return counts, {
        "source": str(root.resolve()),
        "split": "train",
        "val_split": val_split,
        "skipped_unreadable": bad[:20],
    }
