"""What the quantize stage writes: one file per INT8 layout and the manifest that names them.

``--target auto`` (the default) writes both layouts of one NNCF calibration - the TensorRT one as
``model.onnx`` (target-neutral: signed INT8, zero point 0) and the CPU one as ``model.cpu.onnx`` - so the
deploy target, not the host that quantized, decides which one runs (:mod:`edgecnn.layouts`). ``--target cpu``
or ``tensorrt`` writes that layout alone as ``model.onnx``. ``quantization.layouts`` names each layout's file,
sha256, rewrites, TensorRT-rule validation and, when accuracy was measured, its own top-1.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import onnx

from ..artifact import derived_manifest, sha256_file, write_artifact
from ..export.onnx import compact_names as compact_tensor_names
from ..layouts import LAYOUT_FILES, RUNS_ON
from . import qdq

log = logging.getLogger("edgecnn")

#: the metadata key stamped into every INT8 file: which layout it is
LAYOUT_KEY = "edgecnn.int8_layout"

ROUTE_REASON = (
    "NNCF ONNX backend on the FP32 export with BatchNorm folded: fastest INT8 in ONNX Runtime on the "
    "measured CPU and INT8-stored weights; the torch backend needs BN folded first and a C++ build"
)
ACTIVATIONS = {
    "tensorrt": "int8 symmetric (zero point 0)",
    "cpu": "uint8: zero point 0 after ReLU, 128 for signed tensors (NNCF's symmetric int8 + 128), "
    "one shared quantizer per concat group",
}


def layout_families(target: str, preset: str, per_channel: bool) -> tuple[tuple[str, ...], str | None]:
    """The layouts a quantize run writes, the first one being the manifest's model file; and why a layout
    that 'auto' would write is left out (None when none is)."""
    if target != "auto":
        return (target,), None
    if preset == "mixed" or not per_channel:
        why = "--preset mixed (asymmetric activations)" if preset == "mixed" else "--per-tensor weights"
        return ("cpu",), f"no tensorrt layout: {why} break TensorRT's rules, so only the cpu layout is written"
    return ("tensorrt", "cpu"), None


def file_names(families: tuple[str, ...]) -> dict[str, str]:
    """family -> file: one layout is model.onnx; with both, the cpu one is model.cpu.onnx."""
    if len(families) == 1:
        return {families[0]: "model.onnx"}
    return {fam: LAYOUT_FILES[fam] for fam in families}


def finish_metadata(model, artifact_id: str, precision: str, layout: str | None = None) -> None:
    """Drop intermediate shape annotations (ONNX Runtime and TensorRT infer them; on a small network they
    are a sixth of the file) and stamp the artifact's id, precision (and INT8 layout) into the model's metadata."""
    del model.graph.value_info[:]
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"edgecnn.id": artifact_id, "edgecnn.precision": precision})
    if layout is not None:
        props[LAYOUT_KEY] = layout
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def validation(model, family: str) -> dict:
    """The TensorRT rules checked on one layout; required (and a failure a bug) for the tensorrt layout."""
    violations = qdq.validate_qdq(model, "tensorrt")
    result = qdq.summarize(violations)
    result["required"] = family == "tensorrt"
    if family == "tensorrt" and not result["passed"]:
        raise RuntimeError(f"bug: TensorRT-layout model fails its own validator: {qdq.errors(violations)[0]}")
    return result


def _params(run) -> dict:
    o = run.options
    return {
        "calib": run.calib.source.get("source", str(o.calib)),
        "subset_size": o.subset_size,
        "target": o.target,
        "preset": o.preset,
        "range_estimator": o.range_estimator,
        "fast_bias_correction": o.fast_bias_correction,
        "per_channel": o.per_channel,
        "ignore": list(o.ignore),
        "max_drop": o.max_drop,
        "data": o.data.describe("val") if o.data else None,
        "qat": o.qat,
        "epochs": o.epochs if o.qat else None,
        "calib_batch_size": o.calib_batch_size,
        "seed": o.seed,
        "compact_names": o.compact_names,
    }


def _layouts(run, names: dict[str, str]) -> dict:
    """quantization.layouts: per family its file (sha256 added once written), what it is and what it measured."""
    out = {}
    for fam in run.families:
        entry = {
            "file": names[fam],
            "runs_on": RUNS_ON[fam] + (" (and, slower, ONNX Runtime / OpenVINO on a CPU)" if fam == "tensorrt" else ""),
            "activations": ACTIVATIONS[fam],
            "rewrites": run.rewrites[fam],
            "validation": run.validation[fam],
        }
        measured = (run.layout_accuracy or {}).get(fam)
        if measured is not None:
            entry.update(measured, evaluated_in="onnxruntime")
        out[fam] = entry
    return out


def _metrics(run) -> dict:
    o, src, acc = run.options, run.src, run.accuracy
    metrics = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
    if acc is not None:
        metrics.update(
            top1=acc["final_top1"],
            fp32_top1=acc["fp32_top1"],
            top1_drop_pt=acc["final_drop_pt"],
            top1_layout=run.families[0],
            top1_by_layout={fam: m["top1"] for fam, m in run.layout_accuracy.items()},
            eval_data=o.data.describe("val"),
            evaluated_in="onnxruntime",
        )
    return metrics


def record(run, out, t0: float):
    """Manifest (params, metrics, the quantization report with its layouts) and the written artifact."""
    o, src, acc = run.options, run.src, run.accuracy
    primary = run.families[0]
    names = file_names(run.families)
    info = {
        # the route as it ran: NNCF on the FP32 ONNX, after quantization-aware fine-tuning when that ran
        "route": "nncf-onnx" + (" + qat" if run.qat else ""),
        "route_reason": ROUTE_REASON,
        "target": o.target,
        "layouts": _layouts(run, names),
        "layout_choice": (
            "--target auto: every layout below from one calibration; the deploy target picks the file "
            "(cpu: ONNX Runtime / OpenVINO on a CPU, tensorrt: TensorRT on a GPU or Jetson)"
            if o.target == "auto"
            else f"--target {o.target}: this one layout only"
        )
        + (f"; {run.layout_note}" if run.layout_note else ""),
        "activations": ACTIVATIONS[primary],
        "weights": (
            "int8 symmetric per-channel (axis 0 = output channels)" if o.per_channel else "int8 symmetric per-tensor"
        ),
        "fp32_onnx": "the source artifact"
        if run.fp32 is src
        else "exported from the torch source (BN folded; temporary, not kept - run 'edgecnn export' to keep one)",
        "rewrites": run.rewrites[primary],
        "ignored": run.ignored,
        "kept_float": [k["layer"] for k in (acc or {}).get("kept_float", [])],
        "accuracy_aware": acc,
        "qat": run.qat,
        "calibration": run.calib.describe(),
        "validation": run.validation[primary],
        "seconds": {k: round(v, 2) for k, v in run.timings.items()},
    }
    manifest = derived_manifest(
        src,
        stage="quantize",
        precision="int8",
        params=_params(run),
        metrics=_metrics(run),
        extra={"quantization": info},
    )
    for w in run.calib.warnings:
        log.info("calibration: %s", w)
    for fam in run.families:
        if o.compact_names:
            table = compact_tensor_names(run.models[fam])
            info["layouts"][fam]["compact_names"] = table
            info.setdefault("compact_names", table)
        finish_metadata(run.models[fam], manifest["id"], "int8", fam)

    def write(tmp: Path) -> None:
        for fam in run.families:
            path = tmp / names[fam]
            onnx.save(run.models[fam], str(path))
            info["layouts"][fam]["sha256"] = sha256_file(path)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 2)

    return write_artifact(out, manifest, write)
