"""Issue 13 item 4: 2:4 sparsity reaches the engine. A 2:4 artifact (``edgecnn sparsify --pattern 2:4``)
deployed for TensorRT gets ``--sparsity=enable`` in build_engine.sh (run here with bash and a stand-in
trtexec that records its argv), bundle.json says so and why, ``doctor`` lists which 2:4 layers TensorRT
can run sparse and says when the device has no sparse tensor cores, and the README says how to confirm
it in trtexec's verbose log. The Python-API build sets BuilderFlag.SPARSE_WEIGHTS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper
from test_tensorrt import TRT_SKIP

from edgecnn.artifact import Artifact
from edgecnn.deploy import make_bundle
from edgecnn.runtime.engine_plan import EngineOptions, families_in_range, is_2to4, trtexec_args

RECORDING_TRTEXEC = """#!/usr/bin/env bash
# Stand-in for trtexec: prints the version banner, records its arguments one per line, writes the engine.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
if [ "${1:-}" != "--help" ]; then printf '%s\\n' "$@" > "$ARGV_FILE"; fi
for a in "$@"; do
  case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac
done
"""


def _build_argv(bundle: Path, tmp_path: Path, **env_extra) -> list[str]:
    """Run the bundle's build_engine.sh with bash, the recording trtexec first on PATH; its argv."""
    stub = tmp_path / "stub-bin" / "trtexec"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(RECORDING_TRTEXEC)
    stub.chmod(0o755)
    argv_file = tmp_path / f"argv-{bundle.name}.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("TRTEXEC", "TRT_VERSION", "BUILD_VERBOSE")}
    env.update(
        PATH=f"{stub.parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        PYTHON=sys.executable,
        ARGV_FILE=str(argv_file),
        **env_extra,
    )
    r = subprocess.run(
        ["bash", str(bundle / "build_engine.sh")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return argv_file.read_text().splitlines()


@pytest.fixture(scope="module")
def lenet_2to4(lenet_digits, tmp_path_factory):
    """``lenet_digits`` through ``edgecnn sparsify --pattern 2:4`` (its one 2:4 layer: classifier.1, 400 -> 120)."""
    out = tmp_path_factory.mktemp("sparse") / "lenet-2to4"
    r = run_cli(["sparsify", lenet_digits.path, "--pattern", "2:4", "--out", out, "--no-progress"])
    assert r.exit_code == 0, r.output
    return Artifact.load(out)


def test_2to4_bundle_enables_sparsity_in_build_engine_sh(lenet_2to4, lenet_digits, tmp_path):
    sparse = make_bundle(lenet_2to4, tmp_path / "sparse", target="jetson", device="jetson-orin-nano", build_now="never")
    dense = make_bundle(lenet_digits, tmp_path / "dense", target="jetson", device="jetson-orin-nano", build_now="never")

    argv = _build_argv(sparse.path, tmp_path)
    assert "--sparsity=enable" in argv and "--onnx=model.onnx" in argv and "--verbose" not in argv
    assert "--sparsity=enable" not in _build_argv(dense.path, tmp_path)
    assert "--verbose" in _build_argv(sparse.path, tmp_path, BUILD_VERBOSE="1")  # how the README confirms it

    info = json.loads((sparse.path / "bundle.json").read_text())
    sp = info["tensorrt"]["sparsity"]
    assert sp["enabled"] is True and "2:4" in sp["why"] and "--sparsity=enable" in sp["why"]
    assert sp["flags"] == {"trtexec": "--sparsity=enable", "builder_flag": "SPARSE_WEIGHTS"}
    assert info["tensorrt"]["options"]["sparse_weights"] is True
    assert all("--sparsity=enable" in args for args in info["tensorrt"]["trtexec"].values())
    dense_info = json.loads((dense.path / "bundle.json").read_text())
    assert dense_info["tensorrt"]["sparsity"]["enabled"] is False
    assert not any("--sparsity=enable" in a for a in dense_info["tensorrt"]["trtexec"].values())

    pre = info["preflight"]["sparsity"]  # LeNet's one 2:4 layer (400 -> 120) misses the channel rule
    assert pre["device_supported"] is True and len(pre["layers"]) == 1
    layer = pre["layers"][0]
    assert layer["eligible"] is False and "not a multiple of 32" in layer["reason"]
    assert dense_info["preflight"]["sparsity"] is None

    readme = (sparse.path / "README.md").read_text()
    assert "## 2:4 sparsity" in readme and "--sparsity=enable" in readme
    assert "BUILD_VERBOSE=1 ./build_engine.sh" in readme and "build_engine.log" in readme
    assert "Layers eligible for sparse math" in readme
    assert "TRT inference plan picked sparse implementation for layers" in readme
    assert "2:4 sparsity" not in (dense.path / "README.md").read_text()


def test_sparsity_record_survives_export(lenet_2to4, tmp_path):
    from edgecnn.export import export_onnx

    onnx_art = export_onnx(lenet_2to4, tmp_path / "onnx", progress=False)
    assert is_2to4(lenet_2to4) and is_2to4(onnx_art)
    assert onnx_art.manifest["sparsity"] == lenet_2to4.manifest["sparsity"]


def test_trtexec_sparsity_flag_for_every_family():
    opts = EngineOptions(precision="fp16", input_name="x", input_chw=(1, 32, 32), batch=None, sparse_weights=True)
    dense = EngineOptions(precision="fp16", input_name="x", input_chw=(1, 32, 32), batch=None)
    for version in ("8.2", "8.5", "10.3", "11.0"):
        assert "--sparsity=enable" in trtexec_args(opts, version)
        assert "--sparsity=enable" not in trtexec_args(dense, version)
    assert families_in_range((8, 0), (11, 9)) == ["8.0", "8.4", "10", "11"]


def _two_four(k: int, c: int, rng) -> np.ndarray:
    """A (k, c, 1, 1) weight with the 2:4 pattern along input channels."""
    w = rng.standard_normal((k, c, 1, 1)).astype(np.float32)
    w.reshape(k, c // 4, 4)[:, :, :2] = 0
    return w


def _synthetic_onnx(path: Path) -> Path:
    """Conv 64->64 (2:4, eligible), Conv 64->48 (2:4, 48 outputs), Conv 48->16 (dense)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(_two_four(64, 64, rng), "w_ok"),
        numpy_helper.from_array(_two_four(48, 64, rng), "w_odd"),
        numpy_helper.from_array(rng.standard_normal((16, 48, 1, 1)).astype(np.float32), "w_dense"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_ok"], ["a"], name="conv_ok"),
        helper.make_node("Conv", ["a", "w_odd"], ["b"], name="conv_odd"),
        helper.make_node("Conv", ["b", "w_dense"], ["y"], name="conv_dense"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_doctor_lists_sparse_eligible_layers_orin_vs_xavier_and_nano(cli_run, tmp_path):
    from edgecnn.doctor import diagnose

    path = _synthetic_onnx(tmp_path / "m.onnx")
    rep = diagnose(path, "jetson-orin-nano", precision="fp16")
    sp = rep.sparsity
    assert sp["device_supported"] and sp["eligible"] == 1
    rows = {r["node"]: r for r in sp["layers"]}
    assert set(rows) == {"conv_ok", "conv_odd"}  # the dense conv is no 2:4 layer
    assert rows["conv_ok"]["eligible"] and not rows["conv_odd"]["eligible"]
    assert "48 output channels, not a multiple of 32" in rows["conv_odd"]["reason"]
    assert rep.ok  # eligibility is information, not a failure
    fp32 = diagnose(path, "jetson-orin-nano", precision="fp32").sparsity
    assert fp32["eligible"] == 0 and "TF32" in fp32["layers"][0]["reason"]

    r = cli_run(["doctor", path, "--device", "jetson-orin-nano", "--fp16"])
    assert r.exit_code == 0, r.output
    assert "1 of 2 2:4 layer(s) eligible" in r.output and "conv_ok" in r.output and "conv_odd" in r.output
    assert "has sparse tensor cores" in r.output
    for device in ("jetson-agx-xavier", "jetson-nano"):
        r = cli_run(["doctor", path, "--device", device, "--fp16"])
        assert "has no sparse tensor cores" in r.output and "Orin has them" in r.output, r.output
        assert "0 of 2 2:4 layer(s) eligible" in r.output
    assert diagnose(path, "jetson-agx-xavier", precision="fp16").sparsity["device_supported"] is False


class _FakeTrt(types.SimpleNamespace):
    """Just enough of the tensorrt module for serialize_network to run; records the builder flags set."""


def _fake_trt():
    class ILogger:
        class Severity:
            ERROR, WARNING, INFO = 1, 2, 3

        def __init__(self):
            pass

    config = mock.MagicMock()
    config.get_timing_cache.return_value.serialize.return_value = b"cache"
    builder = mock.MagicMock()
    builder.create_builder_config.return_value = config
    builder.build_serialized_network.return_value = b"plan"
    parser = mock.MagicMock()
    parser.parse_from_file.return_value = True
    flags = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32", SPARSE_WEIGHTS="SPARSE_WEIGHTS")
    trt = _FakeTrt(
        __version__="10.3.0",
        ILogger=ILogger,
        Builder=lambda logger: builder,
        OnnxParser=lambda network, logger: parser,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=flags,
    )
    return trt, config


@pytest.mark.parametrize("sparse", [True, False])
def test_python_api_build_sets_sparse_weights_flag(tmp_path, sparse):
    """serialize_network (the Python-API build of 'edgecnn build' and deploy's prebuild) with a stand-in tensorrt
    module: SPARSE_WEIGHTS is set exactly for a 2:4 model."""
    from edgecnn.runtime.tensorrt import serialize_network

    trt, config = _fake_trt()
    opts = EngineOptions(precision="fp16", input_name="x", input_chw=(1, 32, 32), batch=None, sparse_weights=sparse)
    plan, cache = serialize_network(trt, tmp_path / "m.onnx", opts)
    assert plan == b"plan" and cache == b"cache"
    set_flags = [c.args[0] for c in config.set_flag.call_args_list]
    assert ("SPARSE_WEIGHTS" in set_flags) is sparse and "FP16" in set_flags


@pytest.mark.tensorrt
@pytest.mark.skipif(TRT_SKIP is not None, reason=TRT_SKIP or "")
def test_real_build_of_a_2to4_engine(lenet_2to4, tmp_path):
    """A real TensorRT build: the engine's recorded options have sparse weights on (the builder flag was set)."""
    from test_tensorrt import _local_profile

    from edgecnn.export import export_onnx
    from edgecnn.runtime.tensorrt import build_engine

    onnx_art = export_onnx(lenet_2to4, tmp_path / "onnx", opset=13, progress=False)
    eng = build_engine(onnx_art, tmp_path / "engine", device=_local_profile(), precision="fp16", progress=False)
    assert eng.manifest["tensorrt"]["options"]["sparse_weights"] is True
    assert is_2to4(eng)
