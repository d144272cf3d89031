"""The Runner interface. A runner owns one loaded model and turns float32 NCHW batches into logits.

Each artifact format maps to a runner class, imported lazily so that a missing optional runtime
(onnxruntime, tensorrt) only matters when an artifact of that kind is actually run.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import numpy as np

from ..artifact import Artifact
from ..errors import ArtifactError, InvalidInput

# artifact format -> "module:Class"; other modules add to this with register_runner.
_RUNNERS: dict[str, str] = {
    "torch": "edgecnn.runtime.torch_runner:TorchRunner",
    "onnx": "edgecnn.runtime.onnxrt:OrtRunner",
    "engine": "edgecnn.runtime.tensorrt:TensorRTRunner",
}
# (artifact format, runtime) -> "module:Class": the runtimes a format may run in besides its default
_RUNTIMES: dict[tuple[str, str], str] = {
    ("onnx", "onnxruntime"): "edgecnn.runtime.onnxrt:OrtRunner",
    ("onnx", "openvino"): "edgecnn.runtime.openvino:OpenVinoRunner",
}


def register_runner(fmt: str, target: str, *, runtime: str | None = None) -> None:
    """``target`` ("module:Class") runs artifacts of format ``fmt``: by default, or when ``runtime`` is asked."""
    if runtime is None:
        _RUNNERS[fmt] = target
    else:
        _RUNTIMES[(fmt, runtime)] = target


def runtimes_for(fmt: str) -> list[str]:
    """The runtimes (besides its default runner) an artifact of format ``fmt`` can be opened in."""
    return [rt for f, rt in _RUNTIMES if f == fmt]


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


def require_onnx(art, runtime: str, alternative: str = "") -> None:
    """ArtifactError unless ``art`` is an onnx artifact: the one line every ONNX runtime says."""
    if art.format != "onnx":
        raise ArtifactError(
            f"'{art.path}' is a {art.format} artifact; {runtime} runs onnx artifacts - make one with "
            f"'edgecnn export {art.path} --out DIR'{alternative}."
        )


def check_batch(artifact, batch: np.ndarray, image_shape: tuple, fixed_batch: int | None) -> None:
    """InvalidInput unless ``batch`` is N,C,H,W with the model's C,H,W (None: any) and, for a model exported
    with a fixed batch size, exactly that N."""
    path = artifact.path
    want = "x".join("?" if d is None else str(d) for d in image_shape)
    if batch.ndim != 4:
        raise InvalidInput(
            f"'{path}' takes a batch of images (N, C, H, W) with C,H,W = {want}; "
            f"got an array of shape {tuple(batch.shape)}."
        )
    if any(d is not None and d != b for d, b in zip(image_shape, batch.shape[1:])):
        raise InvalidInput(
            f"'{path}' takes images of C,H,W = {want} (its manifest's input spec); "
            f"got {'x'.join(map(str, batch.shape[1:]))}. Preprocess with the artifact's input spec."
        )
    if fixed_batch is not None and batch.shape[0] != fixed_batch:
        raise InvalidInput(
            f"'{path}' was exported with a fixed batch size of {fixed_batch}, "
            f"so it cannot run a batch of {batch.shape[0]}; use batch size {fixed_batch} "
            f"(--batch-size {fixed_batch}) or {_dynamic_batch_hint(artifact)}."
        )


def _dynamic_batch_hint(artifact) -> str:
    """How to get a dynamic batch: re-import an imported ONNX file, else re-export."""
    manifest = getattr(artifact, "manifest", None) or {}
    source = (manifest.get("architecture") or {}).get("source") or {}
    if source.get("kind") == "onnx-import":
        note = (manifest.get("onnx") or {}).get("batch_note") or ""
        if note.startswith("batch kept fixed"):  # edgecnn import tried: the graph cannot take another batch
            return f"use the original network with a dynamic batch ({note})"
        return f"re-import {source.get('file')} with a dynamic batch (edgecnn import ... --dynamic-batch)"
    return "re-export with a dynamic batch (edgecnn export --dynamic-batch)"


def open_runner(
    artifact, *, device: str = "cpu", threads: int | None = None, runtime: str | None = None, **options
) -> Runner:
    """Load ``artifact`` (an Artifact or a path) into the runner for its format, or into ``runtime``
    (e.g. "openvino" for an onnx artifact; None: the format's default runner)."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    target = _RUNNERS.get(artifact.format)
    if runtime is not None:
        target = _RUNTIMES.get((artifact.format, runtime))
        if target is None:
            can = runtimes_for(artifact.format)
            raise ArtifactError(
                f"'{artifact.path}' is a {artifact.format} artifact, which --runtime {runtime} cannot run"
                + (f" (it runs in {', '.join(can)})" if can else "; export it to ONNX first with 'edgecnn export'")
                + "."
            )
    if target is None:
        raise ArtifactError(
            f"'{artifact.path}' is a {artifact.format} artifact, which cannot be run directly; "
            "pass a torch, onnx or engine artifact."
        )
    module, _, cls = target.partition(":")
    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls(artifact, device=device, threads=threads, **options)
