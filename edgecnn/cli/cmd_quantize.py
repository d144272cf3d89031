from __future__ import annotations

import click

from ._common import BATCH_SIZE, EPOCHS, FINITE, IMAGES, LAYERS, SEED, THREADS, print_table, write_json

TARGETS = ("auto", "cpu", "tensorrt")
PRESETS = ("performance", "mixed")
RANGE_ESTIMATORS = (
    "default",
    "minmax",
    "mean_minmax",
    "median_minmax",
    "mean_no_outliers",
    "mean_quantile",
    "histogram",
)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


@click.command("quantize")
@click.argument("artifact", type=click.Path())
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Output artifact directory.")
@click.option("--int8", "int8", is_flag=True, help="INT8 QDQ ONNX (the default precision; needs --calib).")
@click.option("--fp16", "fp16", is_flag=True, help="Float16 ONNX instead of INT8 (GPU targets).")
@click.option("--fp16-io", is_flag=True, help="With --fp16: float16 inputs/outputs too (default: float32 I/O).")
@click.option(
    "--calib",
    help="Calibration images: a folder (searched recursively, e.g. calibration/), 'digits', "
    "or 'synthetic:N' (plumbing only).",
)
@click.option(
    "--subset-size",
    type=IMAGES,
    default=300,
    show_default=True,
    help="Calibration images used (a random subset when the folder has more).",
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default="auto",
    show_default=True,
    help="INT8 layout(s) written. auto: both from one calibration - model.onnx (tensorrt) and model.cpu.onnx "
    "(cpu) - and the deploy target picks one; cpu: only the fastest layout for ONNX Runtime/OpenVINO on a CPU; "
    "tensorrt: only signed symmetric INT8 with TensorRT's fusion placement, checked by the validator.",
)
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="performance",
    show_default=True,
    help="NNCF preset: performance = symmetric activations; mixed = asymmetric (cpu target only).",
)
@click.option(
    "--range-estimator",
    type=click.Choice(RANGE_ESTIMATORS),
    default="default",
    show_default=True,
    help="How activation ranges are estimated from the calibration statistics (NNCF).",
)
@click.option(
    "--fast-bias-correction/--bias-correction",
    default=True,
    show_default=True,
    help="NNCF's fast bias correction, or the slower full BiasCorrection.",
)
@click.option(
    "--per-channel/--per-tensor",
    default=True,
    show_default=True,
    help="Weight scales per output channel (TensorRT needs per-channel).",
)
@click.option(
    "--ignore",
    multiple=True,
    metavar="NODE",
    help="ONNX node name or regular expression to leave in floating point (repeatable; see --list-layers).",
)
@click.option(
    "--max-drop",
    type=FINITE,
    help="Accuracy-aware: allowed top-1 drop in points on --data's held-out "
    "split; the most sensitive layers stay FP32 until it fits.",
)
@click.option(
    "--data",
    help="Labelled data to evaluate on (held-out split) and to fine-tune with --qat: 'digits' or an image folder.",
)
@click.option("--max-float-layers", type=LAYERS, help="Accuracy-aware: at most this many FP32 layers.")
@click.option(
    "--qat",
    is_flag=True,
    help="Fine-tune with fake quantization + distillation from the original when "
    "PTQ misses --max-drop (or always, without --max-drop).",
)
@click.option("--epochs", type=click.IntRange(1, EPOCHS.max), default=3, show_default=True, help="QAT epochs.")
@click.option("--qat-lr", type=FINITE, help="QAT learning rate (AdamW; default 1e-3).")
@click.option(
    "--augment", metavar="POLICY", help="QAT augmentation: none | light | default | FILE.yaml [default: none]."
)
@click.option(
    "--calib-batch-size", type=BATCH_SIZE, default=1, show_default=True, help="Batch size of the calibration passes."
)
@click.option(
    "--compact-names",
    is_flag=True,
    help="Short tensor names in the written file (smallest targets; the manifest maps them back).",
)
@click.option("--skip-corrupt", is_flag=True, help="Skip unreadable calibration images instead of failing.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the calibration subset.")
@click.option("--threads", type=THREADS, help="ONNX Runtime threads for the evaluations.")
@click.option(
    "--val-split",
    type=FINITE,
    default=0.2,
    show_default=True,
    help="Held-out fraction of a single-folder --data (the split the drop is measured on).",
)
@click.option(
    "--validate-only",
    is_flag=True,
    help="Only check ARTIFACT (a QDQ onnx artifact or .onnx file) against TensorRT's rules; exit 3 if it breaks one.",
)
@click.option(
    "--list-layers",
    is_flag=True,
    help="Only list the Conv/Gemm/MatMul layers of ARTIFACT (the names --ignore takes) and exit.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the summary as JSON.")
def command(artifact, out, int8, fp16, fp16_io, validate_only, list_layers, json_path, **values):
    """Quantize a torch or FP32 onnx ARTIFACT to an INT8 QDQ ONNX artifact (NNCF post-training quantization,
    calibrated on --calib), or convert it to FP16 with --fp16. Every INT8 result is checked against
    TensorRT's explicit-quantization rules and the report is stored in its manifest.

    \b
    Examples:
      edgecnn quantize runs/resnet18 --calib calibration/ --out runs/resnet18-int8
      edgecnn quantize runs/resnet18 --calib digits --target tensorrt --max-drop 0.3 --data digits --out runs/r18-trt
      edgecnn quantize runs/lenet5 --calib digits --qat --epochs 3 --data digits --out runs/lenet5-qat
      edgecnn quantize runs/resnet18-onnx --fp16 --out runs/resnet18-fp16
      edgecnn quantize runs/r18-trt/model.onnx --validate-only
      edgecnn quantize runs/resnet18 --list-layers
    """
    if validate_only:
        _validate_only(artifact, json_path)
        return
    if list_layers:
        _list_layers(artifact, json_path)
        return
    from ..compress.precision import check_precision_flags, int8_flags_given

    precision = check_precision_flags(int8, fp16, fp16_io, int8_flags_given(values), int8_by_default=True)
    if precision == "fp16":
        from ..compress.fp16 import Fp16Options, convert_fp16

        options = Fp16Options().merged(
            {k: values[k] for k in ("data", "val_split", "skip_corrupt", "threads")}, fp16_io=fp16_io
        )
        art = convert_fp16(artifact, out, options)
        _print_fp16_summary(art, json_path)
        return
    from ..compress.quantize import QuantizeOptions, quantize

    art = quantize(artifact, out, QuantizeOptions().merged(values))
    write_json(json_path, print_quantize_summary(art))


def _print_fp16_summary(art, json_path) -> None:
    m = art.manifest["metrics"]
    parity = m["fp16_parity"]
    rows = [
        ["artifact", str(art.path)],
        ["model", f"{art.model} (fp16, I/O {art.manifest['fp16']['io_dtype']})"],
        ["file", _size(art.model_file.stat().st_size)],
        ["agreement with FP32", _pct(parity["agreement_with_fp32"]) + f" on {parity['images']} images"],
        ["max |logit diff|", f"{parity['max_abs_diff']:.3g}"],
    ]
    if "top1" in m:
        rows.append(["top-1 FP32 -> FP16", f"{_pct(m['fp32_top1'])} -> {_pct(m['top1'])}"])
    print_table(rows, ["fp16", "value"], title=f"edgecnn quantize --fp16 -> {art.path}")
    write_json(json_path, {"artifact": str(art.path), "id": art.id, "metrics": m})


def _list_layers(artifact, json_path) -> None:
    from ..compress.quantize import list_layers

    layers = list_layers(artifact)
    columns = ["layer", "op"] + (["int8"] if layers and "int8" in layers[0] else [])
    print_table(
        [[r["name"], r["op_type"]] + (["yes" if r["int8"] else "no"] if "int8" in r else []) for r in layers],
        columns,
        title=f"layers of {artifact} (names for --ignore)",
    )
    write_json(json_path, {"artifact": str(artifact), "layers": layers})


def print_quantize_summary(art) -> dict:
    """The INT8 report table (also used by 'edgecnn compress')."""
    q, m = art.manifest["quantization"], art.manifest["metrics"]
    v, cal = q["validation"], q["calibration"]
    rows = [
        ["artifact", str(art.path)],
        ["model", f"{art.model} (int8 QDQ, {art.num_classes} classes)"],
        *_layout_rows(art, q),
        *(
            [["names", f"compacted: {q['compact_names']['tensors']} tensors renamed (table in the manifest)"]]
            if q.get("compact_names")
            else []
        ),
        ["route", q["route"]],
        ["weights", q["weights"]],
        ["activations", q["activations"]],
        ["calibration", f"{cal['images']} images from {cal['source']}"],
    ]
    if q["rewrites"].get("requantized_layers"):
        rows.append(["re-quantized after reshape", ", ".join(q["rewrites"]["requantized_layers"])])
    if q["rewrites"].get("residual_adds_fused"):
        rows.append(["residual adds made fusable", str(len(q["rewrites"]["residual_adds_fused"]))])
    if q["rewrites"].get("concat_before_dequantize"):
        rows.append(["concats on 8-bit tensors", str(len(q["rewrites"]["concat_before_dequantize"]))])
    if q["rewrites"].get("batchnorm_as_depthwise"):
        rows.append(["BatchNorms as depthwise INT8 convs", str(len(q["rewrites"]["batchnorm_as_depthwise"]))])
    if not q.get("layouts"):
        rows.append(["TensorRT rules", _verdict(v)])
    if "top1" in m and "top1_by_layout" not in m:
        rows.append(
            [
                "top-1 FP32 -> INT8 (ORT)",
                f"{_pct(m['fp32_top1'])} -> {_pct(m['top1'])} ({m['top1_drop_pt']:+.2f} pt drop)",
            ]
        )
    acc = q.get("accuracy_aware") or {}
    if acc.get("max_drop_pt") is not None:
        rows.append(["budget", f"{acc['max_drop_pt']} pt: {'met' if acc.get('met') else 'NOT met'}"])
    for k in q.get("kept_float") or []:
        reason = next((x["reason"] for x in acc.get("kept_float", []) if x["layer"] == k), "")
        rows.append(["kept FP32", f"{k}: {reason}"])
    if q.get("qat"):
        qat = q["qat"]
        rows.append(
            [
                "QAT",
                f"{qat['epochs']} epoch(s), {qat['fake_quantized_layers']} fake-quantized layers, "
                f"KD T={qat['kd']['temperature']}",
            ]
        )
    rows.append(["seconds", str(q["seconds"].get("total"))])
    for w in cal.get("warnings") or []:
        rows.append(["warning", w])
    print_table(rows, ["quantize", "value"], title=f"edgecnn quantize -> {art.path}")
    if acc.get("ranking"):
        print_table(
            [[r["layer"], f"{r['top1_gain_pt']:+.2f}", f"{r['agreement_gain_pt']:+.2f}"] for r in acc["ranking"][:10]],
            ["layer kept FP32 alone", "top-1 gain (pt)", "agreement gain (pt)"],
            title="measured layer sensitivity (most helpful first)",
        )
    return {"artifact": str(art.path), "id": art.id, "metrics": m, "quantization": q}


def _verdict(v: dict) -> str:
    verdict = "passed" if v["passed"] else f"{v['errors']} error(s)"
    if v["warnings"]:
        verdict += f", {v['warnings']} warning(s)"
    return verdict + ("" if v["required"] else " (not required for the cpu layout)")


def _layout_rows(art, q: dict) -> list[list[str]]:
    """One row per INT8 layout: its file and size, what runs it, the TensorRT rules and its own top-1."""
    layouts = q.get("layouts")
    if not layouts:  # written before layouts were recorded
        return [["file", _size(art.model_file.stat().st_size)], ["target", q["target"]]]
    rows = [["target", f"{q['target']}: {q.get('layout_choice', '')}"]]
    fp32 = art.manifest["metrics"].get("fp32_top1")
    for fam, e in layouts.items():
        text = f"{e['file']} ({_size((art.path / e['file']).stat().st_size)}) for {e['runs_on']}; TensorRT rules "
        text += _verdict(e["validation"])
        if "top1" in e:
            text += f"; top-1 FP32 -> INT8 (ORT) {_pct(fp32)} -> {_pct(e['top1'])} ({e['top1_drop_pt']:+.2f} pt drop)"
            text += " - budget NOT met" if e.get("met") is False else ""
        rows.append([f"INT8 layout {fam}", text])
    return rows


def _validate_only(path, json_path) -> None:
    from ..compress.qdq import RULE_TEXT, errors, summarize, validate_qdq

    violations = validate_qdq(path, "tensorrt")
    if violations:
        print_table(
            [[v.node, v.rule, v.severity, v.detail] for v in violations[:200]],
            ["node", "rule", "severity", "detail"],
            title=f"TensorRT QDQ rules: {path}",
        )
        if len(violations) > 200:
            click.echo(f"... and {len(violations) - 200} more")
    summary = summarize(violations)
    summary["rules_text"] = {k: RULE_TEXT[k] for k in summary["by_rule"] if k in RULE_TEXT}
    write_json(json_path, summary)
    bad = errors(violations)
    if bad:
        click.echo(
            f"error: {len(bad)} violation(s) of TensorRT's explicit-quantization rules, first: {bad[0]}", err=True
        )
        raise SystemExit(3)
    click.echo(
        f"passed: {path} follows TensorRT's explicit-quantization rules"
        + (f" ({len(violations)} fusion warning(s))" if violations else "")
    )
