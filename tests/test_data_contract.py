"""Issue 15 (and issue 14's decompression bomb): no silent data defaults, an exact preprocessing contract,
golden inputs from the user's data.

The model here is LeNet-5 trained for one epoch on a generated folder of 28x28 grayscale digit PNGs
(scikit-learn's load_digits, upscaled): the case where the old silent ``--data digits`` default gated a
folder-trained model on the bundled 8x8 digits.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error
from PIL import Image
from sklearn.datasets import load_digits

PER_CLASS = 24  # 240 PNGs: enough for 1 epoch and a held-out split, fast to write


def _write_digit_folder(root: Path, per_class: int = PER_CLASS) -> Path:
    d = load_digits()
    counts = {c: 0 for c in range(10)}
    for img, y in zip(d.images, d.target):
        if counts[int(y)] >= per_class:
            continue
        counts[int(y)] += 1
        folder = root / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray((img * 255.0 / 16.0).round().astype(np.uint8), mode="L")
        small.resize((28, 28), Image.BILINEAR).save(folder / f"{counts[int(y)]:03d}.png")
    return root


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    return _write_digit_folder(tmp_path_factory.mktemp("digits28") / "digits28")


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory, digit_folder):
    from edgecnn.train import TrainConfig, train

    out = tmp_path_factory.mktemp("folder-model") / "lenet5-digits28"
    return train("lenet5", data=str(digit_folder), out=out, config=TrainConfig(epochs=1, batch_size=32), progress=False)


@pytest.fixture(scope="module")
def folder_onnx(tmp_path_factory, folder_model):
    from edgecnn.export import export_onnx

    return export_onnx(folder_model, tmp_path_factory.mktemp("folder-onnx") / "onnx", progress=False)


# -- 1. no silent data default -------------------------------------------------------------------------
def test_check_without_data_uses_the_manifests_data_and_says_so(folder_model, digit_folder, cli_run, tmp_path):
    report = tmp_path / "check.json"
    res = cli_run(["check", folder_model.path, "--against", folder_model.path, "--no-latency", "--json", report])
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())["data"]
    assert data["source"] == str(digit_folder.resolve())
    # the output names the data and where it came from
    assert str(digit_folder.resolve()) in res.output and "training data" in res.output
    assert "manifest" in res.output


def test_check_on_data_unlike_the_training_data_is_an_error(folder_model, cli_run):
    """The finding: a model trained on the 28x28 folder gated on the bundled 8x8 digits (exit 3, no warning)."""
    res = cli_run(["check", folder_model.path, "--against", folder_model.path, "--no-latency", "--data", "digits"])
    msg = one_line_error(res)
    assert "digits" in msg and "trained on" in msg and "--data" in msg


def test_check_on_another_folder_with_the_same_classes_is_allowed(folder_model, cli_run, tmp_path):
    other = _write_digit_folder(tmp_path / "more", per_class=6)
    res = cli_run(["check", folder_model.path, "--against", folder_model.path, "--no-latency", "--data", other])
    assert res.exit_code == 0, res.output


def test_eval_without_data_uses_the_manifests_data(folder_onnx, digit_folder, cli_run, tmp_path):
    out = tmp_path / "eval.json"
    res = cli_run(["eval", folder_onnx.path, "-q", "--json", out])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["data"]["source"] == str(digit_folder.resolve())
    assert "training data" in res.output


def test_eval_without_data_and_none_recorded_is_an_error(cli_run, tmp_path):
    from edgecnn.compress.source import load_original

    art, _ = load_original("lenet5", tmp_path / "random", weights="random")
    msg = one_line_error(cli_run(["eval", art.path, "-q"]))
    assert "--data" in msg and "records no training data" in msg


def test_sweep_of_a_model_name_without_data_is_an_option_error(cli_run, tmp_path):
    res = cli_run(["sweep", "lenet5", "--weights", "random", "--out", tmp_path / "s"])
    assert res.exit_code == 2 and "--data" in res.output
    assert not (tmp_path / "s").exists()


def test_sweep_options_take_the_data_from_the_artifact(folder_model, digit_folder):
    from edgecnn.sweep import SweepOptions, sweep_data

    opts = SweepOptions().merged(out=None)  # no --data: not an error any more for an artifact
    source, note = sweep_data(opts, folder_model)
    assert str(source.path.resolve()) == str(digit_folder.resolve()) and "training data" in note


# -- 2. an exact preprocessing contract -------------------------------------------------------------
CONSUMER = textwrap.dedent(
    r'''
    """A stand-alone consumer: reads only manifest.json's input.preprocess block (onnxruntime, numpy, Pillow)."""
    import json, sys
    from pathlib import Path
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    manifest, model, folder, out = sys.argv[1:5]
    spec = json.loads(Path(manifest).read_text())["input"]
    pre = spec["preprocess"]
    assert pre["version"] == 1, pre
    rs, cr = pre["resize"], pre["crop"]
    assert rs["library"] == "Pillow" and rs["filter"] == "PIL.Image.BILINEAR" and rs["dtype"] == "uint8", rs
    assert rs["rounding"] == "floor" and cr["rounding"] == "floor", (rs, cr)
    mode = pre["color"]  # Pillow mode the decoded image is converted to
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(-1, 1, 1)

    def load(path):
        img = Image.open(path)
        img.load()
        img = img.convert(mode)
        w, h = img.size
        s = rs["shorter_side"]
        nw, nh = (s, h * s // w) if w <= h else (w * s // h, s)  # floor, integer arithmetic
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BILINEAR)
        ch, cw = cr["height"], cr["width"]
        top, left = (nh - ch) // 2, (nw - cw) // 2  # floor
        img = img.crop((left, top, left + cw, top + ch))
        x = np.asarray(img, dtype=np.float32) / np.float32(pre["divide_by"])
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        return (x - mean) / std

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    x = np.stack([load(p) for p in files]).astype(np.float32)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.save(Path(out) / "inputs.npy", x)
    np.save(Path(out) / "pred.npy", logits.argmax(1))
    print(json.dumps([str(p) for p in files]))
    '''
)

ODD_SIZES = [
    (37, 53),
    (53, 37),
    (28, 28),
    (640, 480),
    (39, 64),
    (35, 35),
    (33, 100),
    (8, 8),
    (45, 39),
    (37, 39),
    (70, 64),
]


def _odd_folder(root: Path) -> Path:
    """train/ and val/ with one class: PNGs (gray and RGB) and a JPEG at sizes whose crop offsets are x.5."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, (w, h) in enumerate(ODD_SIZES):
            d = root / split / ("a" if k % 2 else "b")
            d.mkdir(parents=True, exist_ok=True)
            yy, xx = np.mgrid[0:h, 0:w]
            base = ((xx * 7 + yy * 3) % 256).astype(np.uint8) ^ rng.integers(0, 40, (h, w), dtype=np.uint8)
            if k % 3 == 0:
                Image.fromarray(np.stack([base, base[::-1], 255 - base], -1), "RGB").save(d / f"{k}.png")
            elif k % 3 == 1:
                Image.fromarray(base, "L").save(d / f"{k}.png")
            else:
                Image.fromarray(base, "L").save(d / f"{k}.jpg", quality=90)
    return root


def _edgecnn_side(folder: Path, spec: dict, onnx_art):
    from edgecnn.data import DataSource
    from edgecnn.evaluation import predict
    from edgecnn.runtime import open_runner

    ds = DataSource.parse(str(folder)).dataset(spec, "val", num_classes=2)
    inputs = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    with open_runner(onnx_art) as r:
        logits, _, _ = predict(r, ds, batch_size=4, workers=0)
    return inputs, logits.argmax(1), [str(p) for p, _ in ds.samples]


@pytest.mark.parametrize("resize", [None, 37], ids=["manifest-as-trained", "resize37-crop32"])
def test_a_standalone_consumer_reproduces_the_inputs_bit_for_bit(folder_onnx, tmp_path, resize):
    from edgecnn.models.registry import get_spec

    folder = _odd_folder(tmp_path / "odd")
    spec = dict(folder_onnx.input)
    if resize is not None:  # the finding's case: resnet18 at 32 px -> resize 37, crop 32 (offset 2.5)
        spec = get_spec("resnet18").input_spec(in_channels=1, input_size=32)
        assert spec["resize"] == 37 and spec["crop"] == [32, 32]
    assert "preprocess" in spec, "the manifest states no exact preprocessing contract"
    (tmp_path / "manifest.json").write_text(json.dumps({"input": spec}))
    (tmp_path / "consumer.py").write_text(CONSUMER)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            tmp_path / "consumer.py",
            tmp_path / "manifest.json",
            folder_onnx.model_file,
            folder / "val",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    theirs_files = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, ours_pred, ours_files = _edgecnn_side(folder, spec, folder_onnx)
    assert [Path(p).name for p in theirs_files] == [Path(p).name for p in ours_files]
    theirs = np.load(out / "inputs.npy")
    assert theirs.dtype == ours.dtype == np.float32 and theirs.shape == ours.shape
    assert np.array_equal(theirs.view(np.uint32), ours.view(np.uint32)), np.abs(theirs - ours).max()
    assert np.array_equal(np.load(out / "pred.npy"), ours_pred)


def test_crop_offsets_round_down_and_are_stated_per_image():
    from edgecnn.data.images import crop_box

    spec = {"channels": 1, "height": 32, "width": 32, "resize": 37, "crop": [32, 32]}
    assert crop_box(37, 53, spec) == ((37, 53), (2, 10, 34, 42))  # 2.5 -> 2, 10.5 -> 10
    assert crop_box(39, 64, {**spec, "resize": 39}) == ((39, 64), (3, 16, 35, 48))  # 3.5 -> 3 (not 4)


def test_the_bundles_run_py_preprocesses_like_edgecnn(tmp_path, folder_onnx):
    """The deploy template's own copy of the preprocessing follows the same contract."""
    import importlib.util

    from edgecnn.data.images import preprocess_file

    spec_file = Path(__file__).parents[1] / "edgecnn" / "deploy_templates" / "run.py"
    mod_spec = importlib.util.spec_from_file_location("bundle_run", spec_file)
    run = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(run)
    folder = _odd_folder(tmp_path / "odd")
    from edgecnn.models.registry import get_spec

    spec = get_spec("resnet18").input_spec(in_channels=1, input_size=32)
    for f in sorted((folder / "val").rglob("*.*")):
        assert np.array_equal(run.preprocess(str(f), spec), preprocess_file(f, spec)), f


# -- 3. golden inputs from the user's data ----------------------------------------------------------
def test_deploy_golden_set_comes_from_the_training_folder(folder_onnx, digit_folder, tmp_path):
    from edgecnn.deploy import make_bundle

    bundle = make_bundle(folder_onnx, tmp_path / "bundle", target="cpu")
    info = json.loads((bundle.path / "bundle.json").read_text())
    golden = info["golden"]
    assert golden["data"]["source"] == str(digit_folder.resolve())
    assert golden["n"] > 10 and len(golden["images"]) == golden["n"]
    per_image = golden["per_image"]
    assert len(per_image) == golden["n"]
    assert {"image", "label", "top1", "margin", "unambiguous"} <= set(per_image[0])
    proc = subprocess.run(
        [sys.executable, "run.py", "--verify", "--json", "v.json"],
        cwd=bundle.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verify = json.loads((bundle.path / "v.json").read_text())
    assert len(verify["per_image"]) == golden["n"]
    assert {"image", "max_abs_error", "within_tolerance", "top1", "golden_top1", "checked"} <= set(
        verify["per_image"][0]
    )


def test_deploy_golden_data_option(folder_onnx, tmp_path, cli_run):
    res = cli_run(["deploy", "--help"])
    assert "--data" in res.output
    res = cli_run(
        ["deploy", folder_onnx.path, "--target", "cpu", "--out", tmp_path / "b", "--data", "digits", "--golden", 12]
    )
    assert res.exit_code == 0, res.output
    golden = json.loads((tmp_path / "b" / "bundle.json").read_text())["golden"]
    assert golden["data"]["source"] == "digits" and golden["n"] == 12


# -- 4. compress.json records the recipe file --------------------------------------------------------
def test_compress_json_records_the_recipe_file(folder_model, tmp_path, cli_run):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("fp16: true\nbench: false\n")
    out = tmp_path / "run"
    res = cli_run(["compress", folder_model.path, "--recipe", recipe, "--out", out])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "compress.json").read_text())["recipe_file"] == str(recipe)


# -- 5. decompression bombs ----------------------------------------------------------------------------
def _png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid PNG header claiming side x side pixels, with a few bytes of data: never decode it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_a_clear_error_and_skippable(tmp_path, folder_onnx, cli_run):
    from edgecnn.data import DataSource
    from edgecnn.data.images import read_image
    from edgecnn.errors import DataError

    bomb = _png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 50_000
    with pytest.raises(DataError, match="pixels"):
        read_image(bomb, 1)
    folder = tmp_path / "data"
    for split in ("train", "val"):
        _write_digit_folder(folder / split, per_class=3)
    _png_bomb(folder / "val" / "3" / "zz-bomb.png")
    ds = DataSource.parse(str(folder)).dataset(folder_onnx.input, "val", skip_corrupt=True)
    assert [p.name for p in ds.skipped] == ["zz-bomb.png"]
    msg = one_line_error(cli_run(["eval", folder_onnx.path, "--data", folder, "-q"]))
    assert "400,000,000 pixels" in msg and "--skip-corrupt" in msg
    res = cli_run(["eval", folder_onnx.path, "--data", folder, "-q", "--skip-corrupt"])
    assert res.exit_code == 0, res.output
