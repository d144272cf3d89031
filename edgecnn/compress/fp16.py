"""FP16 ONNX for GPU targets (TensorRT ``--fp16``, ONNX Runtime CUDA).

The conversion is ONNX Runtime's own ``onnxruntime.transformers.float16`` (shipped with onnxruntime, so
no extra dependency): float initializers and tensors become float16, with Cast nodes where an op must
stay in float32. Inputs and outputs stay float32 by default (``fp16_io=False``), so callers feed the same
preprocessed float32 batches as for the FP32 model; ``fp16_io=True`` makes them float16 too (saves the
two casts on a GPU; the caller then feeds float16). On a CPU, ONNX Runtime runs many FP16 ops by
casting back to FP32, so FP16 is a size/GPU format here, not a CPU speed-up.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..artifact import Artifact, derived_manifest, write_artifact
from ..data.source import DataSource
from ..errors import InvalidInput, OptionError, require
from ..evaluation import agreement, run_over, top1
from ..export.onnx import parity_images
from ..limits import MAX_THREADS
from ..options import Options, bounded
from ..runtime.onnxrt import create_session, run_batches
from .int8_record import finish_metadata
from .quantize import fp32_onnx, load_source, require_out

#: real images the FP16 model is compared on when no --data is given
PARITY_IMAGES = 16


@dataclass
class Fp16Options(Options):
    """Every option of the FP16 stage."""

    fp16_io: bool = False  # float16 inputs/outputs too (default: float32 I/O)
    data: DataSource | None = None  # labelled data: top-1 of FP32 and FP16 on its held-out split
    val_split: float = bounded(0.2, 0, 1, lo_open=True, hi_open=True)
    skip_corrupt: bool = False
    threads: int | None = bounded(None, 1, MAX_THREADS)  # ONNX Runtime threads of the comparison

    def __post_init__(self) -> None:
        self.data = DataSource.optional(self.data)

    def validate(self) -> None:
        if not 0.0 < self.val_split < 1.0:
            raise OptionError(f"--val-split must be between 0 and 1 (exclusive), got {self.val_split}.")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}.")


def convert_fp16(src, out: str | os.PathLike, options: Fp16Options | None = None, *, progress: bool = True) -> Artifact:
    """The fp16 stage: ``src`` (torch or FP32 onnx artifact) -> float16 onnx artifact at ``out``.

    With ``options.data`` the FP16 model is scored against FP32 on its held-out split in ONNX Runtime (top-1
    and agreement are recorded, one streamed pass for both models); without it, agreement on 16 real digits
    images is still measured."""
    options = options if options is not None else Fp16Options()
    options.validate()
    require_out(out, src)
    t0 = time.perf_counter()
    src = load_source(src)
    with tempfile.TemporaryDirectory(prefix="edgecnn-fp16-") as tmpdir:
        fp32_model = onnx.load(str(fp32_onnx(src, Path(tmpdir), progress=progress).model_file))
        half = to_float16(fp32_model, fp16_io=options.fp16_io)
        metrics = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
        metrics.update(_parity(src, fp32_model, half, options, progress))
        params = {"fp16_io": options.fp16_io, "data": options.data.describe("val") if options.data else None}
        manifest = derived_manifest(
            src,
            stage="fp16",
            precision="fp16",
            params=params,
            metrics=metrics,
            extra={
                "fp16": {
                    "io_dtype": "float16" if options.fp16_io else "float32",
                    "converter": "onnxruntime.transformers.float16",
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            },
        )
        finish_metadata(half, manifest["id"], "fp16")

        def write(tmp: Path) -> None:
            onnx.save(half, str(tmp / "model.onnx"))

        return write_artifact(out, manifest, write)


def _parity(src: Artifact, fp32_model, half, options: Fp16Options, progress: bool) -> dict:
    """FP16 vs FP32 logits in ONNX Runtime: on --data's held-out split (streamed; with top-1), else 16 digits."""
    ref_session = create_session(fp32_model, threads=options.threads)
    half_session = create_session(half, threads=options.threads)
    dtype = np.float16 if options.fp16_io else np.float32

    def fp32_fn(x):
        return run_batches(ref_session, x)

    def fp16_fn(x):
        return run_batches(half_session, x.astype(dtype, copy=False)).astype(np.float32)

    labels = None
    if options.data is not None:
        dataset = options.data.dataset(
            src.input,
            "val",
            val_split=options.val_split,
            skip_corrupt=options.skip_corrupt,
            num_classes=src.num_classes,
        )
        options.data.check_classes(dataset.classes, src.num_classes, fix="pass data with the model's classes")
        (ref, got), labels, _ = run_over([fp32_fn, fp16_fn], dataset, progress=progress, desc="FP32 vs FP16")
    else:
        images, _desc = parity_images(src.input, "digits", PARITY_IMAGES)
        images = np.asarray(images, np.float32)
        ref, got = fp32_fn(images), fp16_fn(images)
    out: dict = {
        "fp16_parity": {
            "agreement_with_fp32": agreement(ref, got),
            "max_abs_diff": float(np.max(np.abs(ref - got))),
            "images": int(len(ref)),
            "evaluated_in": "onnxruntime CPU",
        }
    }
    if labels is not None:
        out.update(top1=top1(got, labels), fp32_top1=top1(ref, labels), eval_data=options.data.describe("val"))
        out["top1_drop_pt"] = 100 * (out["fp32_top1"] - out["top1"])
    return out


def to_float16(model, *, fp16_io: bool = False):
    """A float16 copy of an FP32 ModelProto (inputs/outputs float32 unless ``fp16_io``)."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise InvalidInput(
            "This model is INT8 (QDQ); FP16 conversion needs the FP32 model. Choose --int8 or --fp16 "
            "for one artifact (TensorRT can still build INT8 layers with FP16 fallback: "
            "edgecnn build --int8 --fp16)."
        )
    float16 = require("onnxruntime.transformers.float16", purpose="FP16 conversion")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(
            onnx.ModelProto.FromString(model.SerializeToString()), keep_io_types=not fp16_io
        )
    return half
