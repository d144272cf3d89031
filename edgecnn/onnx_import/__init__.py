"""An ONNX classifier made elsewhere -> an edgecnn ONNX artifact (``edgecnn import``).

What an import proves before it writes anything:

1. **A bounded, well-formed ONNX file**: at most :data:`~edgecnn.limits.MAX_ONNX_BYTES`, parsed by the onnx
   package (nothing in it is executed), weights inside the file (external data is refused: an artifact is
   one verified file), an opset the installed onnx package knows, ``onnx.checker`` passed.
2. **An image classifier**: exactly one float32 NCHW input and one N x C output, C equal to the class names
   given (``--classes FILE``, one per line, bounded by :data:`~edgecnn.limits.MAX_CLASSES_FILE_BYTES`, or
   ``--num-classes``).
3. **The input spec is one the network takes**: a fixed dimension of the graph must agree with the option,
   and the network is run in ONNX Runtime at the spec on real images (a symbolic H x W it cannot take
   fails there, in one line).
4. **Rewrites only where the chain needs them, each measured.** An opset below 13 is converted to 13 (NNCF's
   per-channel INT8 needs QuantizeLinear-13), a fixed batch is made dynamic (the batch dimension renamed,
   and, if that alone does not run, reshapes that hard-code the batch freed), onnxslim only on request. The
   rewritten graph is compared with the original in ONNX Runtime on the same real images (max abs,
   top-1 agreement) and recorded in the manifest; a rewrite that changes the logits is refused, and a
   batch that cannot be made dynamic is kept fixed and recorded. A graph that needs no rewrite is copied
   byte for byte (the artifact's sha256 is the source file's).

The manifest records the input spec with its preprocessing contract, the classes, the source (kind
``onnx-import``, original file name and sha256) and every file's sha256, written atomically by
:func:`edgecnn.artifact.write_artifact`; ``quantize``, ``eval``, ``bench``, ``check``, ``deploy``, ``doctor``
and a precision-only ``sweep`` then take it like an exported artifact.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from .. import limits
from ..artifact import Artifact, check_out, new_manifest, write_artifact
from ..export.onnx import parity_images
from ..runtime.onnxrt import ort_version
from .graph import (
    BATCH,
    GraphIO,
    ImportOptions,
    ImportRefused,
    class_names,
    describe,
    fixed,
    input_spec,
    opset_of,
    parse_model,
    read_bounded,
)
from .rewrite import class_count_error, rewrite, run_original

__all__ = ["ImportOptions", "ImportRefused", "import_onnx"]


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------
def import_onnx(model_path, out, options: ImportOptions | None = None, **fields) -> Artifact:
    """Import the ONNX classifier at ``model_path`` as an edgecnn ONNX artifact at ``out``.

    ``options`` (or its fields as keywords) give the class names, the input spec and the rewrites allowed.
    Everything is checked and every rewrite measured before anything is written; returns the artifact."""
    t0 = time.perf_counter()
    opts = (options or ImportOptions()).merged(fields)
    path = Path(model_path)
    fix = "pass the path of an .onnx file"
    raw = read_bounded(path, limits.MAX_ONNX_BYTES, "ONNX file", fix)
    check_out(out, path)
    classes = class_names(opts)
    model, external = parse_model(raw, path)
    io = describe(model, path)
    if io.out_dims is not None and fixed(io.out_dims[1]) and io.out_dims[1] != len(classes):
        raise ImportRefused(class_count_error(path, io.out_dims[1], len(classes)))
    spec = input_spec(io, opts, path)
    images, data = parity_images(spec, opts.parity_data or "digits", opts.parity_images)
    reference = run_original(model, io, images, len(classes), path)
    done = rewrite(model, io, opts, images, reference, path)
    if external is not None and done.model is None:  # the weights now live inside: write the loaded graph
        done.model = model
    if done.parity is not None:
        done.parity.update(n_images=int(len(images)), data=data, precision=io.precision)
    manifest = _manifest(path, raw, model, opts, io, spec, classes, done)
    manifest["architecture"]["source"]["external_data"] = external

    def write(tmp: Path) -> None:
        target = tmp / "model.onnx"
        if done.model is None:
            target.write_bytes(raw)  # nothing rewritten: the user's bytes, unchanged
        else:
            onnx.save(done.model, str(target))
        manifest["onnx"]["seconds"] = round(time.perf_counter() - t0, 2)

    return write_artifact(out, manifest, write)


def _manifest(path: Path, raw: bytes, model, opts: ImportOptions, io: GraphIO, spec: dict, classes, done) -> dict:
    """The artifact's manifest: an original (no parent), its source file recorded by name and sha256."""
    written = done.model if done.model is not None else model
    dims = list(io.dims)
    if done.batch is None and io.batch is not None:
        dims[0] = BATCH
    ops = Counter(n.op_type for n in written.graph.node)
    info = {
        "importer": f"edgecnn import, onnx {onnx.__version__}, onnxruntime {ort_version()}",
        "producer": f"{model.producer_name} {model.producer_version}".strip() or None,
        "opset": opset_of(written),
        "original_opset": io.opset,
        "ir_version": int(written.ir_version),
        "dynamic_batch": done.batch is None,
        "batch_size": done.batch,
        "original_batch": io.batch,
        "batch_note": done.batch_note,
        "input_name": io.input_name,
        "output_name": io.output_name,
        "input_shape": ["?" if d is None else d for d in dims],
        "output_shape": [BATCH if done.batch is None else done.batch, len(classes)],
        "rewrites": done.rewrites,
        "nodes": len(written.graph.node),
        "ops": dict(sorted(ops.items())),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort_version(),
    }
    metrics = {"params": sum(int(np.prod(t.dims)) for t in written.graph.initializer)}
    if done.parity is not None:
        metrics["parity"] = done.parity
    params = {
        "file": path.name,
        "classes_file": Path(opts.classes).name if opts.classes else None,
        "num_classes": len(classes),
        "input_size": [spec["height"], spec["width"]],
        "in_channels": spec["channels"],
        "mean": spec["mean"],
        "std": spec["std"],
        "resize": spec["resize"],
        "opset": opts.opset,
        "dynamic_batch": opts.dynamic_batch,
        "simplify": opts.simplify,
        "parity_data": str(opts.parity_data or "digits"),
        "parity_images": opts.parity_images,
    }
    source = {"kind": "onnx-import", "file": path.name, "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    return new_manifest(
        model=opts.name or _name_of(path),
        format="onnx",
        file="model.onnx",
        precision=io.precision,
        input=spec,
        classes=classes,
        stage="import",
        params=params,
        architecture={"num_classes": len(classes), "in_channels": spec["channels"], "source": source},
        metrics=metrics,
        extra={"onnx": info},
    )


def _name_of(path: Path) -> str:
    """The model name from the file name: its stem in the characters a model name may hold."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", path.stem).lstrip("._+-")[:100]
    return name or "onnx-model"
