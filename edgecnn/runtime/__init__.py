"""Runners: one interface (load / infer / close) over torch, ONNX Runtime and TensorRT."""

from .base import Runner, open_runner, register_runner

__all__ = ["Runner", "open_runner", "register_runner"]
