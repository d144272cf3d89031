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
from pathlib import Path

import numpy as np

from ..errors import InvalidInput


def convert_fp16(src, out: str | os.PathLike, *, fp16_io: bool = False, data: str | None = None,
                 val_split: float = 0.2, model=None, progress: bool = True):
    """The fp16 stage: ``src`` (torch or FP32 onnx artifact) -> float16 onnx artifact at ``out``.

    With ``data`` the FP16 model is scored against FP32 on its held-out split in ONNX Runtime (top-1 and
    agreement are recorded); without it, agreement on 16 real digits images is still measured."""
    import onnx

    from ..artifact import Artifact, new_manifest, write_artifact
    from ..data import describe_source
    from ..runtime.onnxrt import create_session, run_batches
    from .quantize import _finish_metadata, fp32_onnx, load_eval_set

    t0 = time.perf_counter()
    if not isinstance(src, Artifact):
        src = Artifact.load(src, formats=("torch", "onnx"))
    with tempfile.TemporaryDirectory(prefix="edgecnn-fp16-") as tmpdir:
        fp32 = fp32_onnx(src, Path(tmpdir), progress=progress, model=model)
        fp32_model = onnx.load(str(fp32.model_file))
        half = to_float16(fp32_model, fp16_io=fp16_io)
        if data:
            images, labels, _ = load_eval_set(data, src.input, val_split=val_split, num_classes=src.num_classes)
        else:
            from ..export.onnx import parity_images

            images, _desc = parity_images(src.input, "digits", 16)
            images, labels = np.asarray(images, np.float32), None
        ref = run_batches(create_session(fp32_model), images)
        feed = images.astype(np.float16) if fp16_io else images
        got = run_batches(create_session(half), feed).astype(np.float32)
        metrics = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
        parity = {"agreement_with_fp32": float((ref.argmax(1) == got.argmax(1)).mean()),
                  "max_abs_diff": float(np.max(np.abs(ref - got))), "images": int(len(images)),
                  "evaluated_in": "onnxruntime CPU"}
        if labels is not None:
            metrics.update(top1=float((got.argmax(1) == labels).mean()), fp32_top1=float((ref.argmax(1) == labels).mean()),
                           eval_data=describe_source(data, "val"))
            metrics["top1_drop_pt"] = 100 * (metrics["fp32_top1"] - metrics["top1"])
        metrics["fp16_parity"] = parity
        params = {"fp16_io": fp16_io, "data": describe_source(data, "val") if data else None}
        manifest = new_manifest(model=src.model, format="onnx", file="model.onnx", precision="fp16", input=src.input,
                                classes=src.classes, stage="fp16", params=params, parent=src,
                                architecture=src.manifest.get("architecture"), metrics=metrics,
                                extra={"fp16": {"io_dtype": "float16" if fp16_io else "float32",
                                                "converter": "onnxruntime.transformers.float16",
                                                "seconds": round(time.perf_counter() - t0, 2)}})

        _finish_metadata(half, manifest["id"], "fp16")

        def write(tmp: Path) -> None:
            onnx.save(half, str(tmp / "model.onnx"))

        return write_artifact(out, manifest, write)


def to_float16(model, *, fp16_io: bool = False):
    """A float16 copy of an FP32 ModelProto (inputs/outputs float32 unless ``fp16_io``)."""
    import onnx

    from ..errors import require

    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise InvalidInput("This model is INT8 (QDQ); FP16 conversion needs the FP32 model. Choose --int8 or --fp16 "
                           "for one artifact (TensorRT can still build INT8 layers with FP16 fallback: "
                           "edgecnn build --int8 --fp16).")
    float16 = require("onnxruntime.transformers.float16", purpose="FP16 conversion")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(onnx.ModelProto.FromString(model.SerializeToString()),
                                                keep_io_types=not fp16_io)
    return half
