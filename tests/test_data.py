"""Data: the bundled digits (fixed stratified split), ImageFolder directories written as real image files,
the synthetic generator, and how unreadable images are reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecnn.data import describe_source, load_dataset
from edgecnn.data.digits import split_indices
from edgecnn.data.images import preprocess_file, read_image
from edgecnn.errors import DataError
from edgecnn.models import get_spec

LENET = get_spec("lenet5").input_spec()


def write_digit_folder(root, *, per_class: int = 6, split: str | None = "both", classes=range(10), fmt: str = "png"):
    """Write real digits (scikit-learn's 8x8 images, upscaled to 32x32) as image files in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    layout = {"train": (0, per_class), "val": (per_class, per_class + max(2, per_class // 2))}
    if split is None:
        layout = {"": (0, per_class)}
    for sub, (lo, hi) in layout.items():
        for c in classes:
            folder = root / sub / f"digit{c}" if sub else root / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(d.target == c)[lo:hi]:
                img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8), mode="L").resize((32, 32))
                img.save(folder / f"{i}.{fmt}")
    return root


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, val = split_indices()
    assert len(train) == 1437 and len(val) == 360
    assert not set(train) & set(val)
    t2, v2 = split_indices()
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    ds = load_dataset("digits", LENET, "val")
    counts = np.bincount(ds.targets.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert ds.classes == [str(i) for i in range(10)]


def test_digits_follow_the_input_spec():
    spec = get_spec("resnet18").input_spec(in_channels=3, input_size=(40, 48))
    ds = load_dataset("digits", spec, "val")
    x, y = ds[0]
    assert x.shape == (3, 40, 48) and x.dtype == torch.float32 and isinstance(y, int)
    # normalised with the spec's mean/std: background pixels (0) map to -mean/std per channel
    bg = [(-m / s) for m, s in zip(spec["mean"], spec["std"])]
    assert np.allclose(x[:, 0, 0].numpy(), bg, atol=1e-5)
    gray = load_dataset("digits", LENET, "val")[0][0]
    assert gray.shape == (1, 32, 32) and float(gray.min()) == pytest.approx(-1.0) and float(gray.max()) <= 1.0


def test_digits_augmentation_is_random_batched_and_label_preserving():
    ds = load_dataset("digits", LENET, "train", augment=True)
    torch.manual_seed(0)
    a = ds.__getitems__([0, 1, 2, 3])
    b = ds.__getitems__([0, 1, 2, 3])
    assert [y for _, y in a] == [y for _, y in b] == [int(ds.targets[i]) for i in range(4)]
    assert all(x.shape == (1, 32, 32) for x, _ in a)
    assert not torch.equal(a[0][0], b[0][0])  # fresh jitter on every fetch
    plain = load_dataset("digits", LENET, "train", augment=False)
    # the jitter is small: each augmented digit is still nearest to its own plain version
    aug = torch.stack([x.flatten() for x, _ in a])
    ref = torch.stack([plain[i][0].flatten() for i in range(4)])
    assert torch.cdist(aug, ref).argmin(1).tolist() == [0, 1, 2, 3]
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 32, 32) and y.shape == (16,)


def test_imagefolder_train_val_layout(tmp_path):
    root = write_digit_folder(tmp_path / "digits")
    train = load_dataset(str(root), LENET, "train")
    val = load_dataset(str(root), LENET, "val")
    assert train.classes == val.classes == [f"digit{i}" for i in range(10)]
    assert len(train) == 60 and len(val) == 30
    x, y = train[7]
    assert x.shape == (1, 32, 32) and y == 1
    rgb = get_spec("resnet18").input_spec(input_size=40)
    x3, _ = load_dataset(str(root), rgb, "val")[0]
    assert x3.shape == (3, 40, 40)
    aug = load_dataset(str(root), rgb, "train", augment=True)
    assert aug[0][0].shape == (3, 40, 40)


def test_imagefolder_single_folder_val_split(tmp_path):
    root = write_digit_folder(tmp_path / "flat", split=None, per_class=10)
    train = load_dataset(str(root), LENET, "train", val_split=0.3, seed=1)
    val = load_dataset(str(root), LENET, "val", val_split=0.3, seed=1)
    assert len(train) == 70 and len(val) == 30
    assert np.bincount(val.targets).tolist() == [3] * 10  # stratified
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}  # disjoint
    again = load_dataset(str(root), LENET, "val", val_split=0.3, seed=1)
    assert [p for p, _ in again.samples] == [p for p, _ in val.samples]  # deterministic
    with pytest.raises(DataError, match="--val-split must be between 0 and 1"):
        load_dataset(str(root), LENET, "train", val_split=1.0)


def test_missing_empty_and_mismatched_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), LENET, "train")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images in class sub-folders"):
        load_dataset(str(tmp_path / "empty"), LENET, "train")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(str(tmp_path / "file.txt"), LENET, "train")
    root = write_digit_folder(tmp_path / "mismatch", per_class=2)
    (root / "val" / "digit9").rename(root / "val" / "nine")
    with pytest.raises(DataError, match="different class folders"):
        load_dataset(str(root), LENET, "train")


def test_corrupt_image_is_named_or_skipped_with_a_count(tmp_path):
    root = write_digit_folder(tmp_path / "d", per_class=3)
    bad = root / "train" / "digit3" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    ds = load_dataset(str(root), LENET, "train")
    idx = [i for i, (p, _) in enumerate(ds.samples) if p == bad][0]
    with pytest.raises(DataError) as exc:
        ds[idx]
    assert str(bad) in str(exc.value) and "--skip-corrupt" in str(exc.value)
    skipped = load_dataset(str(root), LENET, "train", skip_corrupt=True)
    assert skipped.skipped == [bad] and len(skipped) == len(ds) - 1


def test_read_image_converts_modes(tmp_path):
    from PIL import Image

    arr16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(tmp_path / "alpha.png")
    Image.new("RGB", (10, 6), (0, 0, 255)).save(tmp_path / "blue.jpg")
    deep = read_image(tmp_path / "deep.png", 1)
    assert deep.mode == "L" and np.asarray(deep).max() > 200
    assert read_image(tmp_path / "alpha.png", 3).getpixel((0, 0)) == (255, 255, 255)
    assert read_image(tmp_path / "blue.jpg", 1).mode == "L"
    arr = preprocess_file(tmp_path / "blue.jpg", get_spec("resnet18").input_spec(input_size=32))
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32


def test_synthetic_is_shape_only():
    ds = load_dataset("synthetic:12", LENET, "train", num_classes=3)
    assert len(ds) == 12 and ds.classes == ["class0", "class1", "class2"] and ds[0][0].shape == (1, 32, 32)
    assert not torch.equal(ds[0][0], load_dataset("synthetic:12", LENET, "val", num_classes=3)[0][0])
    with pytest.raises(DataError, match="synthetic:N"):
        load_dataset("synthetic:many", LENET, "train")
    assert "no accuracy meaning" in describe_source("synthetic", "val")["description"]
    assert describe_source("digits", "val")["val_fraction"] == 0.2
