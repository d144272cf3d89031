"""edgecnn deploy: a bundle for every device profile, generated and verified here (hashes, script syntax,
trtexec flags per TensorRT version, run.py reproducing the golden outputs with ONNX Runtime), plus the
error paths a user meets."""

from __future__ import annotations

import ast
import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.artifact import Artifact, atomic_write_json
from edgecnn.deploy import check_bundle, latest_compress_output, make_bundle, resolve_precision
from edgecnn.devices import list_profiles, load_profile
from edgecnn.errors import ArtifactError, InvalidInput
from edgecnn.runtime.tensorrt import EngineOptions, families_in_range, trtexec_args

PROFILES = sorted(p.name for p in list_profiles())
FAMILY_VERSION = {"8.0": "8.2", "8.4": "8.5", "10": "10.3", "11": "11.0"}


def run_py(bundle: Path, *args, python=sys.executable, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [python, str(bundle / "run.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=str(bundle.parent),
        env=env,
        timeout=120,
    )


def check_scripts(bundle: Path) -> None:
    for sh in bundle.glob("*.sh"):
        r = subprocess.run(["bash", "-n", str(sh)], capture_output=True, text=True)
        assert r.returncode == 0, (sh, r.stderr)
        assert os.access(sh, os.X_OK)
    py_compile.compile(str(bundle / "run.py"), doraise=True, cfile=str(bundle.parent / "run.pyc"))
    # JetPack 4.6 ships Python 3.6: run.py must parse with its grammar
    ast.parse((bundle / "run.py").read_text(), feature_version=(3, 6))


@pytest.mark.parametrize("device", PROFILES)
def test_bundle_for_every_device(device, lenet_onnx13, tmp_path):
    p = load_profile(device)
    precision = "fp16" if p.uses_tensorrt and p.supports("fp16") else "fp32"
    art = make_bundle(lenet_onnx13, tmp_path / f"{device}-bundle", target=p.target, device=device, precision=precision)
    b = art.path
    assert art.format == "bundle" and art.precision == precision and check_bundle(b).id == art.id
    files = set(art.manifest["files"])
    assert {
        "model.onnx",
        "run.py",
        "verify.sh",
        "bundle.json",
        "README.md",
        "golden/inputs.npy",
        "golden/expected.npy",
    } <= files
    assert ("build_engine.sh" in files) == p.uses_tensorrt
    assert len([f for f in files if f.startswith("golden/images/")]) == 32  # GOLDEN_N (issue 15: more than 10)
    check_scripts(b)
    info = json.loads((b / "bundle.json").read_text())
    assert info["device"]["name"] == device and info["precision"] == precision
    if p.uses_tensorrt:
        fams = info["tensorrt"]["trtexec"]
        assert list(fams) == families_in_range(p.trt_min, p.trt_max)
        opts = EngineOptions(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in info["tensorrt"]["options"].items()}
        )
        script = (b / "build_engine.sh").read_text()
        for fam, args in fams.items():
            assert args == trtexec_args(opts, FAMILY_VERSION[fam])
            assert "--onnx=model.onnx" in args and "--saveEngine=model.engine" in args
            assert ("--explicitBatch" in args) == (fam in ("8.0", "8.4"))
            assert (f"--workspace={opts.workspace_mb}" in args) == (fam == "8.0")
            assert (f"--memPoolSize=workspace:{opts.workspace_mb}" in args) == (fam != "8.0")
            assert ("--fp16" in args) == (fam != "11") and ("--stronglyTyped" in args) == (fam == "11")
            assert "--minShapes=input:1x1x32x32" in args and "--maxShapes=input:16x1x32x32" in args
            assert "--timingCacheFile=timing.cache" in args
            assert " ".join(args[:2]) in script
        assert f"-gt {p.trt_max[0] * 100 + min(p.trt_max[1], 99)}" in script
        assert info["tolerance"]["tensorrt"]["basis"].startswith("FP16")
    r = run_py(b, "--verify", "--runtime", "onnxruntime")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VERIFY PASSED" in r.stdout and f"files       {len(files)} checked" in r.stdout
    result = json.loads(r.stdout.split("edgecnn-verify-result: ")[1])
    assert result["max_abs_error"] <= 1e-4 and result["argmax_agree"] == 32 and result["preprocess_max_abs_diff"] == 0
    assert info["golden"]["top1_matches_label"] >= 0.8  # real digits, trained model


def test_int8_qdq_bundle(lenet_qdq, tmp_path):
    art = make_bundle(lenet_qdq, tmp_path / "int8", target="jetson", device="jetson-orin-nano")
    info = json.loads((art.path / "bundle.json").read_text())
    assert art.precision == "int8" and info["model_precision"] == "int8"
    for args in info["tensorrt"]["trtexec"].values():
        assert "--int8" in args and "--fp16" in args and "--noTF32" not in args
    assert info["tolerance"]["tensorrt"]["basis"].startswith("INT8")
    assert info["tolerance"]["onnxruntime"]["basis"].startswith("INT8")
    r = run_py(art.path, "--verify", "--runtime", "onnxruntime")
    assert r.returncode == 0 and "VERIFY PASSED" in r.stdout, r.stdout + r.stderr


def test_dla_bundle(lenet_onnx13, tmp_path):
    art = make_bundle(
        lenet_onnx13,
        tmp_path / "dla",
        target="jetson",
        device="jetson-agx-orin",
        precision="fp16",
        dla_core=1,
        gpu_fallback=True,
    )
    info = json.loads((art.path / "bundle.json").read_text())
    for args in info["tensorrt"]["trtexec"].values():
        assert "--useDLACore=1" in args and "--allowGPUFallback" in args
        assert "--minShapes=input:1x1x32x32" in args and "--maxShapes=input:1x1x32x32" in args
    assert info["dla_core"] == 1 and info["max_batch"] == 1
    assert any("fall back from the DLA" in n for n in art.manifest["bundle"]["notes"])
    assert run_py(art.path, "--verify", "--runtime", "onnxruntime").returncode == 0


def test_torch_artifact_is_exported_for_the_device(lenet_digits, tmp_path):
    art = make_bundle(lenet_digits, tmp_path / "nano", target="jetson", device="jetson-nano", precision="fp16")
    info = json.loads((art.path / "bundle.json").read_text())
    assert info["opset"] == 13 and art.manifest["parent"]["id"] == lenet_digits.id  # TensorRT 8.2 reads opset 13
    assert run_py(art.path, "--verify", "--runtime", "onnxruntime").returncode == 0


def test_run_py_classifies_images(lenet_onnx13, tmp_path):
    art = make_bundle(lenet_onnx13, tmp_path / "cpu", target="cpu")
    out = tmp_path / "pred.json"
    r = run_py(art.path, art.path / "golden" / "images", "--top-k", "3", "--json", out)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    expected = np.load(art.path / "golden" / "expected.npy")
    assert len(rows) == 32 and all(len(row["top"]) == 3 for row in rows)
    assert [row["top"][0]["class"] for row in rows] == [str(i) for i in expected.argmax(1)]
    r = run_py(art.path, tmp_path / "nowhere")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = run_py(art.path)
    assert r.returncode == 2


def test_tampered_bundle_fails_clearly(lenet_onnx13, tmp_path):
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="cpu")
    exp = art.path / "golden" / "expected.npy"
    original = exp.read_bytes()
    arr = np.load(exp)
    arr[0, 0] += 1.0
    np.save(exp, arr)
    r = run_py(art.path, "--verify")
    assert r.returncode == 1 and "golden/expected.npy does not match its sha256 in manifest.json" in r.stderr
    r = subprocess.run(
        ["bash", str(art.path / "verify.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 1 and "sha256" in r.stderr
    with pytest.raises(ArtifactError, match="expected.npy does not match its sha256"):
        check_bundle(art.path)
    exp.write_bytes(original)
    check_bundle(art.path)
    (art.path / "run.py").unlink()
    with pytest.raises(ArtifactError, match="run.py is listed in manifest.json but missing"):
        check_bundle(art.path)


def test_verify_detects_wrong_outputs(lenet_onnx13, lenet_qdq, tmp_path):
    """A bundle whose model computes something else fails verification with the tolerance that would pass."""
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="cpu")
    shutil.copyfile(lenet_qdq.model_file, art.path / "model.onnx")  # swap in the INT8 model ...
    art.manifest["files"]["model.onnx"] = Artifact.load(lenet_qdq.path).sha256  # ... and re-sign it
    atomic_write_json(art.path / "manifest.json", art.manifest)
    r = run_py(art.path, "--verify")
    assert r.returncode == 1 and "VERIFY FAILED" in r.stdout and "would pass" in r.stdout


def test_golden_images_from_a_folder(tmp_path):
    """The golden set comes from real images: the digits (default) or an image folder, one image per class
    first; synthetic noise is refused."""
    from PIL import Image

    from edgecnn.deploy import golden_images
    from edgecnn.errors import DataError

    spec = {"channels": 1, "height": 32, "width": 32, "mean": [0.5], "std": [0.5]}
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 36), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    g = golden_images(spec, 3, tmp_path / "imgs")
    assert g.classes == ["cat", "dog"] and g.labels[:2] == [0, 1] and len(g.images) == len(g.names) == 3
    assert all(img.mode == "L" and img.size == (36, 40) for img in g.images)  # as read; run.py preprocesses
    digits = golden_images(spec, 12)
    assert digits.labels[:10] == list(range(10)) and digits.names[3] == "03-digit3.png"
    assert all(img.size == (32, 32) for img in digits.images)
    with pytest.raises(DataError, match="real images"):
        golden_images(spec, 3, "synthetic")


def test_precision_rules():
    orin, cpu = load_profile("jetson-orin-nano"), load_profile("x86-cpu")
    assert resolve_precision("fp32", "fp16", orin, "tensorrt") == "fp16"
    assert resolve_precision("int8", None, orin, "tensorrt") == "int8"
    with pytest.raises(InvalidInput, match="quantize it first"):
        resolve_precision("fp32", "int8", orin, "tensorrt")
    with pytest.raises(InvalidInput, match="cannot run INT8"):
        resolve_precision("int8", None, load_profile("jetson-nano"), "tensorrt")
    with pytest.raises(InvalidInput, match="does not run FP16"):
        resolve_precision("fp32", "fp16", cpu, "onnxruntime")
    with pytest.raises(InvalidInput, match="deploy it as fp16"):
        resolve_precision("fp16", "fp32", orin, "tensorrt")


def test_cli_deploy(cli_run, lenet_onnx13, tmp_path):
    assert cli_run(["deploy", "--help"]).exit_code == 0
    out = tmp_path / "gpu"
    js = tmp_path / "deploy.json"
    r = cli_run(["deploy", lenet_onnx13.path, "--target", "gpu", "--precision", "fp16", "--out", out, "--json", js])
    assert r.exit_code == 0, r.output
    assert "x86-gpu" in r.output and "./build_engine.sh && ./verify.sh" in r.output
    data = json.loads(js.read_text())
    assert data["params"]["device"] == "x86-gpu" and "build_engine.sh" in data["files"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert any("engine not built here (TensorRT is not installed)" in n for n in data["notes"])
        assert not (out / "prebuilt").exists()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--target", "jetson", "--device", "jetson-orin-nan"], 1, "Did you mean 'jetson-orin-nano'"),
        (
            ["--target", "jetson", "--device", "jetson-xavier-nx", "--precision", "fp16", "--dla-core", "2"],
            1,
            "--dla-core 2 does not exist",
        ),
        (
            ["--target", "jetson", "--device", "jetson-orin-nano", "--precision", "fp16", "--dla-core", "0"],
            1,
            "has no DLA",
        ),
        (["--target", "gpu", "--device", "jetson-nano"], 1, "use --target jetson"),
        (["--target", "jetson", "--device", "jetson-orin-nano", "--precision", "int8"], 1, "quantize it first"),
        (["--target", "cpu", "--port", "22"], 2, "need --host"),
        (["--target", "jetson", "--gpu-fallback"], 2, "--dla-core"),
    ],
)
def test_cli_deploy_errors(cli_run, lenet_onnx13, tmp_path, args, code, message):
    r = cli_run(["deploy", lenet_onnx13.path, "--out", tmp_path / "b", *args])
    assert r.exit_code == code and message in r.output and "Traceback" not in r.output
    if code == 1:
        assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_cli_deploy_int8_on_nano_and_opset(cli_run, lenet_qdq, lenet_onnx, tmp_path):
    r = cli_run(["deploy", lenet_qdq.path, "--target", "jetson", "--device", "jetson-nano", "--out", tmp_path / "b"])
    assert r.exit_code == 1 and "jetson-nano (compute capability 5.3) cannot run INT8" in r.output
    r = cli_run(["deploy", lenet_onnx.path, "--target", "jetson", "--device", "jetson-nano", "--out", tmp_path / "b"])
    assert r.exit_code == 1 and "Pre-flight check failed" in r.output and "--opset 13" in r.output
    assert len(r.output.strip().splitlines()) == 1


def _copy_as(art, dest: Path, created: str):
    shutil.copytree(art.path, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["created"] = created
    atomic_write_json(dest / "manifest.json", m)


def test_latest_compress_output(cli_run, lenet_onnx13, lenet_qdq, lenet_digits, tmp_path, monkeypatch):
    with pytest.raises(ArtifactError, match="run 'edgecnn compress'"):
        latest_compress_output(tmp_path)
    base = tmp_path / "runs" / "compress"
    _copy_as(lenet_onnx13, base / "exp1" / "onnx", "2030-01-01T00:00:00+00:00")
    _copy_as(lenet_qdq, base / "exp2" / "int8", "2030-01-02T00:00:00+00:00")
    _copy_as(lenet_digits, base / "exp3" / "pruned", "2030-01-03T00:00:00+00:00")  # newer, but torch
    (base / "exp4" / ".int8.tmp-abcd").mkdir(parents=True)  # a stage still running
    art, why = latest_compress_output(tmp_path)
    assert art.path == base / "exp2" / "int8" and art.precision == "int8" and "newest edgecnn compress output" in why
    monkeypatch.chdir(tmp_path)
    r = cli_run(["deploy", "--target", "cpu"])
    assert r.exit_code == 0, r.output
    assert "deploying the newest edgecnn compress output: runs/compress/exp2/int8" in r.output
    assert (tmp_path / "runs" / "deploy" / "lenet5-x86-cpu-int8" / "manifest.json").is_file()
    # a compress run report names its final artifact: that wins over scanning manifests
    run = base / "lenet5-20300105-000000"
    _copy_as(lenet_onnx13, run / "fp32", "2029-01-01T00:00:00+00:00")
    (run / "compress.json").write_text(json.dumps({"final": "runs/compress/lenet5-20300105-000000/fp32"}))
    art, why = latest_compress_output(tmp_path)
    assert art.path.resolve() == tmp_path / "runs/compress/lenet5-20300105-000000/fp32" and "final step export" in why


TRTEXEC_STANDIN = """#!/usr/bin/env bash
# Stands in for NVIDIA's trtexec (not installable here): prints its version banner, records its arguments,
# and writes a model.engine like the real one would.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec $*"
for a in "$@"; do
  case "$a" in --saveEngine=*) printf '%s\\n' "$@" > "${{a#--saveEngine=}}";; esac
done
"""


@pytest.mark.parametrize(
    "device, precision, code, version, family",
    [
        ("jetson-xavier-nx", "fp16", 8201, "8.2.1", "8.0"),  # JetPack 4.6.1: --explicitBatch --workspace
        ("jetson-xavier-nx", "fp16", 8502, "8.5.2", "8.4"),  # JetPack 5.1: --memPoolSize
        ("jetson-agx-orin", "fp16", 100300, "10.3.0", "10"),  # JetPack 6.1: no --explicitBatch
        ("x86-gpu", "fp32", 110200, "11.2.0", "11"),  # strongly typed
        ("jetson-agx-orin", "fp16", 8201, None, "outside 8.4-10.7"),
        ("jetson-xavier-nx", "fp16", 100300, None, "outside 8.0-8.5"),
        ("x86-gpu", "fp16", 110200, None, "FP16 on TensorRT 11 needs an FP16 ONNX"),
    ],
)
def test_build_engine_script_picks_flags(lenet_onnx13, tmp_path, device, precision, code, version, family):
    """build_engine.sh reads the TensorRT version from trtexec's banner and runs that family's flags;
    versions outside the device's range stop with a clear message."""
    p = load_profile(device)
    art = make_bundle(
        lenet_onnx13, tmp_path / "b", target=p.target, device=device, precision=precision, build_now="never"
    )
    tool = tmp_path / "bin" / "trtexec"
    tool.parent.mkdir()
    tool.write_text(TRTEXEC_STANDIN.format(code=code))
    tool.chmod(0o755)
    env = {**os.environ, "TRTEXEC": str(tool), "PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(art.path / "build_engine.sh")], capture_output=True, text=True, env=env, timeout=120
    )
    info = json.loads((art.path / "bundle.json").read_text())
    if version is None:
        assert r.returncode == 1 and family in r.stderr, r.stdout + r.stderr
        assert not (art.path / "model.engine").exists()
        return
    assert r.returncode == 0, r.stdout + r.stderr
    used = (art.path / "model.engine").read_text().split()
    assert used == info["tensorrt"]["trtexec"][family]
    assert json.loads((art.path / "engine.json").read_text())["tensorrt"] == version
    assert run_py(art.path, "--check-files").returncode == 0  # build outputs are not bundle files


def test_build_engine_script_without_trtexec(lenet_onnx13, tmp_path):
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="jetson", device="jetson-orin-nano")
    env = {k: v for k, v in os.environ.items() if k != "TRTEXEC"}
    env.update(PATH="/usr/bin:/bin", PYTHON=sys.executable)
    r = subprocess.run(["bash", str(art.path / "build_engine.sh")], capture_output=True, text=True, env=env)
    if Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("a real trtexec is installed at /usr/src/tensorrt/bin")
    assert r.returncode == 1 and "trtexec not found" in r.stderr


def test_run_py_tensorrt_path_without_tensorrt(lenet_onnx13, tmp_path):
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="jetson", device="jetson-orin-nano")
    r = run_py(art.path, "--verify")  # the bundle's default runtime is TensorRT
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        assert r.returncode == 1 and "tensorrt Python package is not importable" in r.stderr
    else:
        assert r.returncode == 1 and "no TensorRT engine yet: run ./build_engine.sh" in r.stderr
    sys.path.insert(0, str(art.path))
    try:
        import importlib

        runmod = importlib.import_module("run")
        assert runmod.same_version("8.5.2.2", "8.5.2") and not runmod.same_version("8.5.2", "10.3.0")
    finally:
        sys.path.remove(str(art.path))
        sys.modules.pop("run", None)
