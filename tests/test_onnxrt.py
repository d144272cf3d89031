"""The ONNX Runtime runner: explicit session settings, and one clear error for every way an ONNX
artifact or its input can be wrong (including onnxruntime not being installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgecnn.errors import ArtifactError, InvalidInput, MissingDependency


@pytest.fixture(scope="module")
def digits_batch(lenet_onnx):
    from edgecnn.bench import bench_inputs

    return bench_inputs(lenet_onnx.input, 8)


def _copy(art, tmp_path, name="copy"):
    from edgecnn.artifact import Artifact

    dst = tmp_path / name
    shutil.copytree(art.path, dst)
    return Artifact.load(dst)


def test_runner_settings_are_explicit(lenet_onnx, lenet_digits, digits_batch):
    from edgecnn.runtime import open_runner
    from edgecnn.runtime.onnxrt import OrtRunner

    with open_runner(lenet_onnx, threads=1, inter_threads=1, opt_level="all", spinning=False) as runner:
        assert isinstance(runner, OrtRunner)
        opts = runner.session.get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert runner.providers[0] == "CPUExecutionProvider"
        assert "intra 1" in runner.description and "opt all" in runner.description
        assert runner.fixed_batch is None and runner.image_shape == (1, 32, 32)
        onnx_logits = runner.infer(digits_batch)
    with open_runner(lenet_onnx, threads=2) as runner:  # defaults: no spinning, all optimisations
        opts = runner.session.get_session_options()
        assert (
            opts.intra_op_num_threads == 2 and opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        )
        assert opts.graph_optimization_level.name == "ORT_ENABLE_ALL"
    with open_runner(lenet_onnx, threads=1, spinning=True) as runner:
        assert runner.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert "spinning" in runner.description
    with open_runner(lenet_digits, threads=1) as runner:
        torch_logits = runner.infer(digits_batch)
    assert onnx_logits.shape == (8, 10) and onnx_logits.dtype == np.float32
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-4


def test_optimisation_levels_agree(lenet_onnx, digits_batch):
    from edgecnn.runtime import open_runner

    outs = {}
    for level in ("disable", "basic", "extended", "all"):
        with open_runner(lenet_onnx, threads=1, opt_level=level) as runner:
            outs[level] = runner.infer(digits_batch)
    for level, out in outs.items():
        assert np.abs(out - outs["all"]).max() <= 1e-5, level
    with pytest.raises(InvalidInput, match="must be one of disable, basic, extended, all"):
        open_runner(lenet_onnx, opt_level="max")
    with pytest.raises(InvalidInput, match="Unknown ONNX Runtime option"):
        open_runner(lenet_onnx, turbo=True)


def test_truncated_file_is_a_clear_error(lenet_onnx, tmp_path):
    from edgecnn.runtime import open_runner

    art = _copy(lenet_onnx, tmp_path)
    data = art.model_file.read_bytes()
    art.model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="does not match its sha256.*modified or corrupted"):
        open_runner(art)
    # without the hash check ONNX Runtime itself refuses, and the message still says what happened
    with pytest.raises(ArtifactError, match="cannot load.*Protobuf parsing failed.*truncated, corrupted or modified"):
        open_runner(art, verify=False)


def test_corrupted_file_is_a_clear_error(lenet_onnx, tmp_path):
    """Flipped bytes inside the weights still parse as ONNX: only the sha256 catches them."""
    from edgecnn.runtime import open_runner

    art = _copy(lenet_onnx, tmp_path)
    data = bytearray(art.model_file.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    art.model_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        open_runner(art)


def test_not_an_onnx_model_even_with_matching_hash(lenet_onnx, tmp_path):
    from edgecnn.artifact import MANIFEST, sha256_file
    from edgecnn.runtime import open_runner

    art = _copy(lenet_onnx, tmp_path)
    art.model_file.write_bytes(b"this is not a protobuf" * 10)
    digest = sha256_file(art.model_file)
    m = json.loads((art.path / MANIFEST).read_text())
    m["sha256"], m["files"]["model.onnx"] = digest, digest
    (art.path / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(
        ArtifactError, match="cannot load.*it is not a valid ONNX model; re-create it with 'edgecnn export'"
    ):
        open_runner(art.path)


def test_wrong_kind_of_artifact(lenet_digits):
    from edgecnn.runtime.onnxrt import OrtRunner

    with pytest.raises(ArtifactError, match="is a torch artifact; ONNX Runtime runs onnx artifacts.*edgecnn export"):
        OrtRunner(lenet_digits)


def test_wrong_input_shapes(lenet_onnx):
    from edgecnn.runtime import open_runner

    with open_runner(lenet_onnx, threads=1) as runner:
        with pytest.raises(
            InvalidInput,
            match=r"batch of images \(N, C, H, W\) with C,H,W = 1x32x32; got an array of shape \(1, 32, 32\)",
        ):
            runner.infer(np.zeros((1, 32, 32), np.float32))
        with pytest.raises(InvalidInput, match="takes images of C,H,W = 1x32x32.*got 3x32x32"):
            runner.infer(np.zeros((2, 3, 32, 32), np.float32))
        with pytest.raises(InvalidInput, match="got 1x64x64"):
            runner.infer(np.zeros((2, 1, 64, 64), np.float32))
        # float64 input is converted, not refused (the values are what matters)
        assert runner.infer(np.zeros((3, 1, 32, 32), np.float64)).shape == (3, 10)
    runner.close()
    with pytest.raises(InvalidInput, match="closed"):
        runner.infer(np.zeros((1, 1, 32, 32), np.float32))


def test_batch_size_not_exported(lenet_digits, tmp_path):
    from edgecnn.export import export_onnx
    from edgecnn.runtime import open_runner

    art = export_onnx(
        lenet_digits, tmp_path / "b1", dynamic_batch=False, batch_size=1, parity_images_n=4, progress=False
    )
    with open_runner(art, threads=1) as runner:
        assert runner.fixed_batch == 1
        assert runner.infer(np.zeros((1, 1, 32, 32), np.float32)).shape == (1, 10)
        with pytest.raises(InvalidInput, match="exported with a fixed batch size of 1, so it cannot run a batch of 8"):
            runner.infer(np.zeros((8, 1, 32, 32), np.float32))


def test_gpu_provider_missing_is_clear(lenet_onnx):
    import onnxruntime as ort

    from edgecnn.runtime import open_runner

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(MissingDependency, match="no CUDAExecutionProvider.*onnxruntime-gpu.*--device cpu"):
        open_runner(lenet_onnx, device="cuda")
    with pytest.raises(InvalidInput, match="Unknown device 'tpu'"):
        open_runner(lenet_onnx, device="tpu")


def _without_onnxruntime(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``import onnxruntime`` fails as if it were not installed."""
    prelude = "import sys; sys.modules['onnxruntime'] = None\n"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, timeout=120)


def test_missing_onnxruntime_library(lenet_onnx):
    proc = _without_onnxruntime(
        "from edgecnn.errors import MissingDependency\n"
        "from edgecnn.runtime import open_runner\n"
        "try:\n"
        f"    open_runner({str(lenet_onnx.path)!r})\n"
        "except MissingDependency as exc:\n"
        "    print('MISSING:', exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "MISSING: onnxruntime is needed for running ONNX models" in proc.stdout
    assert "install it with: pip install onnxruntime" in proc.stdout


def test_missing_onnxruntime_cli(lenet_onnx):
    proc = _without_onnxruntime(
        "from edgecnn.cli import main\n"
        f"main(['bench', {str(lenet_onnx.path)!r}, '--min-time', '0', '--min-repeats', '1', '--warmup', '0'])\n"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "pip install onnxruntime" in err
