"""Shared fixtures. Trained models come from the real training loop on the bundled digits, once per
test session, so every accuracy assertion is about real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NNCF_CI", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Path:
    """A session-wide folder for artifacts that several tests share."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def lenet_digits(runs):
    """LeNet-5 trained on the digits with the library's recipe (1x32x32, >= 98 % held-out top-1)."""
    from edgecnn.train import configure, train

    return train("lenet5", data="digits", out=runs / "lenet5", config=configure("lenet5", "digits"), progress=False)


@pytest.fixture(scope="session")
def resnet18_digits(runs):
    """ResNet-18 trained on the digits at 1x32x32 (few epochs: a real but quick torch artifact)."""
    from edgecnn.train import TrainConfig, train

    return train(
        "resnet18",
        data="digits",
        out=runs / "resnet18",
        in_channels=1,
        input_size=32,
        config=TrainConfig(epochs=4, batch_size=64),
        progress=False,
    )


@pytest.fixture(scope="session")
def lenet_onnx(runs, lenet_digits):
    """``lenet_digits`` exported to ONNX (dynamic batch, opset 17, parity measured on the digits)."""
    from edgecnn.export import export_onnx

    return export_onnx(lenet_digits, runs / "lenet5-onnx", progress=False)


@pytest.fixture(scope="session")
def lenet_onnx13(runs, lenet_digits):
    """``lenet_digits`` as ONNX opset 13: what every TensorRT 8.0+ parser reads (Jetson Nano / JetPack 4.6)."""
    from _deploy_support import export_lenet_onnx

    return export_lenet_onnx(lenet_digits, runs / "lenet5-onnx13", opset=13)


@pytest.fixture(scope="session")
def lenet_qdq(runs, lenet_onnx13):
    """``lenet_onnx13`` quantized to TensorRT-style INT8 Q/DQ (ONNX Runtime quantize_static on real digits)."""
    from _deploy_support import quantize_qdq

    return quantize_qdq(lenet_onnx13, runs / "lenet5-qdq")


def run_cli(args, **kwargs):
    """Invoke the edgecnn CLI in-process; returns click's Result."""
    from click.testing import CliRunner

    from edgecnn.cli import cli

    kwargs.setdefault("prog_name", "edgecnn")
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


@pytest.fixture
def cli_run():
    return run_cli
