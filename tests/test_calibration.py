"""Calibration folders (reading, preprocessing, errors), the default calibration/ set, and 'edgecnn calib'."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.calibration import build_calibration_folder, find_images, load_calibration
from edgecnn.data.source import DataSource
from edgecnn.errors import DataError
from edgecnn.models import get_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = get_spec("resnet18").input_spec(input_size=32)  # RGB, ImageNet mean/std, 32 px
source = DataSource.parse  # sources are parsed once, at the edge


def _photo(seed: int, size=(40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Every kind of image a user's folder holds: JPEG, PNG, BMP, GIF, WebP, grayscale, RGBA, 16-bit TIFF,
    nested sub-folders, and a text file that must be ignored."""
    root = tmp_path / "calib"
    (root / "a" / "deep").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(root / "one.jpg")
    Image.fromarray(_photo(1)).save(root / "a" / "two.png")
    Image.fromarray(_photo(2)).save(root / "a" / "three.bmp")
    Image.fromarray(_photo(3)).convert("P").save(root / "a" / "four.gif")
    Image.fromarray(_photo(4)).save(root / "a" / "deep" / "five.webp")
    Image.fromarray(_photo(5)[..., 0]).save(root / "gray.png")
    rgba = np.dstack([_photo(6), np.full((30, 40), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    sixteen = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50
    Image.fromarray(sixteen).save(root / "a" / "deep" / "sixteen.tif")
    (root / "notes.txt").write_text("not an image")
    return root


def test_reads_every_format_recursively(mixed_folder):
    with pytest.warns(UserWarning, match="only 8 images"):
        cal = load_calibration(source(mixed_folder), SPEC, batch_size=2)
    assert cal.num_images == 8 and len(cal) == 4
    assert all(b.shape == (2, 3, 32, 32) and b.dtype == np.float32 for b in cal)
    assert {Path(f).name for f in cal.files} == {
        "one.jpg",
        "two.png",
        "three.bmp",
        "four.gif",
        "five.webp",
        "gray.png",
        "alpha.png",
        "sixteen.tif",
    }
    assert "notes.txt" not in " ".join(cal.files)
    # preprocessing is the manifest's: resize + crop + ImageNet normalisation, so values leave [0, 1]
    x = cal.images()
    assert x.min() < -1.5 and x.max() > 1.5
    assert cal.describe()["images"] == 8 and cal.describe()["warnings"]


def test_one_channel_model_gets_gray(mixed_folder):
    spec = get_spec("lenet5").input_spec()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration(source(mixed_folder), spec, subset_size=3, seed=1)
    assert cal.images().shape == (3, 1, 32, 32)


def test_subset_is_seeded_and_spread(tmp_path):
    for i in range(12):
        Image.fromarray(_photo(i)).save(tmp_path / f"{i:02d}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_calibration(source(tmp_path), SPEC, subset_size=5, seed=3)
        b = load_calibration(source(tmp_path), SPEC, subset_size=5, seed=3)
        c = load_calibration(source(tmp_path), SPEC, subset_size=5, seed=4)
    assert a.files == b.files and len(a.files) == 5 and a.files != c.files


def test_missing_empty_and_non_image_folders(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*edgecnn calib"):
        load_calibration(source(tmp_path / "nope"), SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        find_images(tmp_path / "empty")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "readme.md").write_text("x")
    (docs / "labels.csv").write_text("x")
    with pytest.raises(DataError, match=r"no images, only 2 other file\(s\) \(labels.csv, readme.md\)"):
        load_calibration(source(docs), SPEC)
    f = tmp_path / "one.png"
    Image.fromarray(_photo(0)).save(f)
    with pytest.raises(DataError, match="is a file"):
        load_calibration(source(f), SPEC)


def test_fewer_images_than_a_batch_is_an_error(tmp_path):
    for i in range(3):
        Image.fromarray(_photo(i)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="3 usable image.*fewer than one batch of 4"):
        load_calibration(source(tmp_path), SPEC, batch_size=4)


def test_corrupt_files_named_or_skipped(tmp_path):
    for i in range(4):
        Image.fromarray(_photo(i)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=r"broken\.jpg.*--skip-corrupt"):
        load_calibration(source(tmp_path), SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration(source(tmp_path), SPEC, skip_corrupt=True)
    assert cal.num_images == 4 and cal.skipped == [str(tmp_path / "broken.jpg")]


def test_digits_source_uses_training_split_balanced():
    from edgecnn.data.digits import DigitsDataset

    spec = get_spec("lenet5").input_spec()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1,437 training images: no "fewer than 300" warning
        cal = load_calibration(source("digits"), spec, subset_size=50)
    assert cal.num_images == 50 and cal.source["split"] == "train"
    train = DigitsDataset(spec, "train")
    pool = train._cache.numpy()
    # every calibration image is one of the training images, preprocessed identically
    x = cal.images()
    for img in x[:5]:
        assert np.min(np.abs(pool - img).reshape(len(pool), -1).max(1)) < 1e-6


def test_build_folder_from_digits_is_balanced_and_atomic(tmp_path):
    out = tmp_path / "cal"
    info = build_calibration_folder(source("digits"), 30, out)
    assert info["images"] == 30 and set(info["per_class"].values()) == {3}
    files = find_images(out)
    assert len(files) == 30 and all(f.suffix == ".png" for f in files)
    assert json.loads((out / "calibration.json").read_text())["split"] == "train"
    with pytest.raises(DataError, match="--overwrite"):
        build_calibration_folder(source("digits"), 10, out)
    info = build_calibration_folder(source("digits"), 10, out, overwrite=True)
    assert len(find_images(out)) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_build_folder_from_image_folder(tmp_path):
    src = tmp_path / "ds"
    for c, n in (("cat", 9), ("dog", 3)):
        (src / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_photo(i)).save(src / c / f"{i}.jpg")
    (src / "cat" / "bad.jpg").write_bytes(b"junk")
    info = build_calibration_folder(source(str(src)), 4, tmp_path / "out")
    assert info["per_class"] == {"cat": 2, "dog": 2}
    with pytest.raises(DataError, match="synthetic"):
        build_calibration_folder(source("synthetic"), 4, tmp_path / "out2")


def test_default_calibration_set_is_small_real_and_documented():
    root = ROOT / "calibration"
    files = find_images(root)
    assert 40 <= len(files) <= 80
    assert sum(f.stat().st_size for f in files) < 2_000_000
    sources = (root / "SOURCES.md").read_text()
    stems = {re.sub(r"_(full|crop\d+)$", "", f.stem) for f in files}
    for stem in stems:
        assert f"`{stem}_*`" in sources, f"{stem} has no source/licence line in SOURCES.md"
    assert "CC0" in sources and "CC BY" in sources or "Attribution" in sources
    assert "edgecnn calib" in (root / "README.md").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration(source(root), get_spec("resnet50").input_spec(input_size=64), subset_size=len(files))
    assert cal.num_images == len(files) and not cal.skipped


def test_calib_cli(tmp_path, cli_run):
    r = cli_run(["calib", "--help"])
    assert r.exit_code == 0 and "class-balanced" in r.output
    r = cli_run(["calib", "--data", "digits", "--n", "20", "--out", tmp_path / "c", "--json", tmp_path / "c.json"])
    assert r.exit_code == 0, r.output
    assert len(find_images(tmp_path / "c")) == 20 and json.loads((tmp_path / "c.json").read_text())["images"] == 20
    r = cli_run(["calib", "--data", "digits", "--n", "20", "--out", tmp_path / "c"])
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = cli_run(["calib", "--data", tmp_path / "missing", "--n", "5", "--out", tmp_path / "d"])
    assert r.exit_code == 1 and "missing" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli_run(["calib", "--data", "digits", "--n", "0", "--out", tmp_path / "e"])
    assert r.exit_code == 2
