"""The Runner interface. A runner owns one loaded model and turns float32 NCHW batches into logits.

Each artifact format maps to a runner class, imported lazily so that a missing optional runtime
(onnxruntime, tensorrt) only matters when an artifact of that kind is actually run.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import numpy as np

from ..artifact import Artifact
from ..errors import ArtifactError

# artifact format -> "module:Class"; other modules add to this with register_runner.
_RUNNERS: dict[str, str] = {
    "torch": "edgecnn.runtime.torch_runner:TorchRunner",
    "onnx": "edgecnn.runtime.onnxrt:OrtRunner",
    "engine": "edgecnn.runtime.tensorrt:TensorRTRunner",
}


def register_runner(fmt: str, target: str) -> None:
    _RUNNERS[fmt] = target


class Runner:
    """Base class. Subclasses set ``kind`` and implement ``_load``, ``infer`` and optionally ``close``."""

    kind: ClassVar[str] = "base"

    def __init__(self, artifact, *, device: str = "cpu", threads: int | None = None, **options):
        self.artifact = artifact
        self.device = device
        self.threads = threads
        self.options = options
        self._load()

    # -- to implement ------------------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> float32 (N, num_classes) logits."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared ----------------------------------------------------------------------------
    @property
    def description(self) -> str:
        return f"{self.kind} on {self.device}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_runner(artifact, *, device: str = "cpu", threads: int | None = None, **options) -> Runner:
    """Load ``artifact`` (an Artifact or a path) into the runner for its format."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    target = _RUNNERS.get(artifact.format)
    if target is None:
        raise ArtifactError(
            f"'{artifact.path}' is a {artifact.format} artifact, which cannot be run directly; "
            "pass a torch, onnx or engine artifact."
        )
    module, _, cls = target.partition(":")
    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls(artifact, device=device, threads=threads, **options)
