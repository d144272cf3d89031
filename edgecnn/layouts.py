"""Which ONNX file of an artifact a runtime family runs (issue 13: the deploy target decides the INT8 layout).

Stub agreed between helpers; the INT8-layout work fills it in. Runtimes call ``model_file_for(artifact, family)``
with ``family`` "cpu" (ONNX Runtime / OpenVINO on a CPU) or "tensorrt" (TensorRT on a GPU or Jetson).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Family = Literal["cpu", "tensorrt"]


def model_file_for(artifact, family: Family) -> Path:
    """The model file ``family`` should run (today: the artifact's one model file)."""
    return artifact.model_file
