from __future__ import annotations

import click

from ..bench_table import format_ms, format_speedup
from ..estimator import RATIO_ESTIMATOR
from ._common import (
    CHANNELS,
    CLASSES,
    EPOCHS,
    FINITE,
    IMAGES,
    SECONDS,
    SIDE,
    THREADS,
    fmt_count,
    print_table,
    write_json,
)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@click.command("compress")
@click.argument("model", required=False)
@click.option(
    "--weights",
    help="For a model name: a state_dict file, an artifact, 'imagenet' or 'random' "
    "(default: ImageNet weights if they are in the torch cache).",
)
@click.option("--num-classes", type=CLASSES, default=None, help="Classes (model name + random weights).")
@click.option("--in-channels", type=CHANNELS, default=None, help="Input channels (model name only).")
@click.option("--input-size", type=SIDE, default=None, help="Square input side (model name only).")
@click.option("--prune", type=FINITE, default=None, help="Remove this fraction of channels (0-1), Torch-Pruning.")
@click.option(
    "--finetune-epochs",
    type=EPOCHS,
    default=None,
    help="Fine-tune after pruning on --data (default 3 with --data, else 0).",
)
@click.option(
    "--importance",
    type=click.Choice(["l1", "l2", "bn", "taylor"]),
    default=None,
    help="How pruning ranks channels (default l1; taylor needs --data).",
)
@click.option(
    "--distill", is_flag=True, default=None, help="Distil the pruned network from the original while fine-tuning."
)
@click.option("--augment", metavar="POLICY", help="Fine-tuning / QAT augmentation: none | light | default | FILE.yaml.")
@click.option("--int8", is_flag=True, default=None, help="INT8 QDQ ONNX (NNCF PTQ); needs --calib.")
@click.option("--calib", help="Calibration images for --int8: a folder (e.g. calibration/) or 'digits'.")
@click.option("--subset-size", type=IMAGES, default=None, help="Calibration images used (default 300).")
@click.option(
    "--target",
    type=click.Choice(["auto", "cpu", "tensorrt"]),
    default=None,
    help="INT8 layout: auto (default) writes both - model.onnx (tensorrt) and model.cpu.onnx (cpu) - and "
    "deploy --target picks one; cpu (ONNX Runtime/OpenVINO) or tensorrt (validated TensorRT rules) writes one.",
)
@click.option("--max-drop", type=FINITE, default=None, help="INT8 accuracy budget in top-1 points on --data.")
@click.option(
    "--qat", is_flag=True, default=None, help="Quantization-aware fine-tuning (+KD) if PTQ misses --max-drop."
)
@click.option("--qat-epochs", type=click.IntRange(1, EPOCHS.max), default=None, help="QAT epochs (default 3).")
@click.option(
    "--compact-names",
    is_flag=True,
    default=None,
    help="Short tensor names in the INT8 file (smallest targets; the manifest maps them back).",
)
@click.option("--fp16", is_flag=True, default=None, help="Float16 ONNX instead of INT8 (GPU targets).")
@click.option("--fp16-io", is_flag=True, default=None, help="With --fp16: float16 inputs/outputs too.")
@click.option("--data", help="Labelled data ('digits' or a folder): fine-tuning and the top-1 column (held-out split).")
@click.option("--recipe", type=click.Path(dir_okay=False), help="YAML file with these options (command line wins).")
@click.option(
    "--out", "-o", type=click.Path(file_okay=False), help="Run folder (default runs/compress/<model>-<time>)."
)
@click.option(
    "--no-bench",
    is_flag=True,
    default=None,
    help="Skip the latency measurement in the final table (speed-ups against the original's FP32 ONNX and "
    f"against the torch original, each 1 / latency ratio by the {RATIO_ESTIMATOR}).",
)
@click.option(
    "--bench-seconds", type=SECONDS, default=None, help="Timed seconds per artifact in the latency run (default 2)."
)
@click.option("--threads", type=THREADS, default=None, help="ONNX Runtime threads (default: physical cores).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
def command(
    model,
    weights,
    num_classes,
    in_channels,
    input_size,
    prune,
    finetune_epochs,
    importance,
    distill,
    augment,
    int8,
    calib,
    subset_size,
    target,
    max_drop,
    qat,
    qat_epochs,
    compact_names,
    fp16,
    fp16_io,
    data,
    recipe,
    out,
    no_bench,
    bench_seconds,
    threads,
    json_path,
):
    """Compress MODEL (a zoo name, torchvision:NAME, timm:NAME, FILE.py:factory or module:factory with
    --weights, or an artifact) in one chain: prune (+ fine-tune / distil), export, INT8 or FP16; end with an
    original-vs-compressed table measured in one run.

    \b
    Examples:
      edgecnn compress resnet50 --int8 --calib calibration/            # ImageNet weights from the torch cache
      edgecnn compress resnet50 --int8 --calib calibration/ --weights random
      edgecnn compress runs/lenet5 --prune 0.6 --distill --data digits --int8 --calib digits
      edgecnn compress torchvision:mobilenet_v2 --weights imagenet --int8 --calib calibration/
      edgecnn compress --recipe examples/recipes/resnet18-int8-tensorrt.yaml
    The final artifact is <run>/final (a link) and "final" in <run>/compress.json.
    """
    from ..compress.pipeline import compress

    options = {
        "weights": weights,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": input_size,
        "prune": prune,
        "finetune_epochs": finetune_epochs,
        "importance": importance,
        "distill": distill,
        "augment": augment,
        "int8": int8,
        "calib": calib,
        "subset_size": subset_size,
        "target": target,
        "max_drop": max_drop,
        "qat": qat,
        "qat_epochs": qat_epochs,
        "compact_names": compact_names,
        "fp16": fp16,
        "fp16_io": fp16_io,
        "data": data,
        "out": out,
        "bench": False if no_bench else None,
        "bench_seconds": bench_seconds,
        "threads": threads,
    }
    report = compress(model, recipe=recipe, **options)
    print_report(report)
    write_json(json_path, report)


def _speedup_cell(value: float, ci, flags=None) -> str:
    text = format_speedup(value)
    if ci:
        text += f" [{format_speedup(ci[0])[:-1]}, {format_speedup(ci[1])[:-1]}]"
    return text + (" !" if flags else "")


def _latency_lines(rows: list[dict], line) -> list[list[str]]:
    """p50, then the speed-up against the original's FP32 ONNX (the same runtime: the compression's gain)
    and, when the torch original was timed too, against it (runtime and compression together)."""
    out = [
        line("ORT latency p50 (batch 1)", lambda r: f"{format_ms(r['latency_ms'])} ms"),
        line(
            "speed-up vs original FP32 ONNX (same runtime)",
            lambda r: _speedup_cell(r["speedup"], r.get("speedup_ci"), r.get("latency_flags")),
        ),
    ]
    if "speedup_vs_torch" in rows[0]:
        out.append(
            line(
                "speed-up vs torch original",
                lambda r: _speedup_cell(r["speedup_vs_torch"], r.get("speedup_vs_torch_ci")),
            )
        )
    return out


def _layout_notes(report: dict) -> list[str]:
    """Which INT8 layouts the run wrote and which one the table's INT8 column ran (edgecnn.layouts)."""
    layouts = next((st.get("layouts") for st in report.get("steps") or [] if st.get("step") == "int8"), None)
    if not layouts:
        return []
    files = ", ".join(f"{fam} ({file})" for fam, file in layouts.items())
    ran = layouts.get("cpu") and f"cpu ({layouts['cpu']})" or f"tensorrt ({layouts['tensorrt']})"
    return [
        f"INT8 layouts: {files}; 'edgecnn deploy --target' picks one (cpu: the cpu layout, gpu/jetson: the "
        f"tensorrt layout); the table's INT8 column ran {ran} in ONNX Runtime here"
    ]


def print_report(report: dict) -> None:
    table = report["table"]
    rows = table["rows"]
    cols = ["", *[r["label"] for r in rows]]
    first = rows[0]

    def line(name, fn):
        return [name, *[fn(r) for r in rows]]

    out = [
        line("precision", lambda r: r["precision"]),
        line(
            "model file",
            lambda r: _size(r["file_bytes"]) + ("" if r is first else f" ({r['size_ratio']:.1f}x smaller)"),
        ),
        line("params", lambda r: fmt_count(r["params"])),
        line("MACs", lambda r: fmt_count(r["macs"])),
    ]
    if "top1" in first:
        out.append(
            line(
                "top-1",
                lambda r: (
                    f"{100 * r['top1']:.2f}%"
                    + ("" if r is first else f" ({100 * (r['top1'] - first['top1']) + 0.0:+.2f} pt)")
                ),
            )
        )
    out.append(line("agreement with original", lambda r: f"{100 * r['agreement']:.1f}%"))
    if "latency_ms" in first:
        out += _latency_lines(rows, line)
    print_table(out, cols, title=f"edgecnn compress {report['model']}: original vs compressed")
    notes = [f"images: {table['images']}"]
    if table.get("latency"):
        lat = table["latency"]
        notes.append(
            f"latency: one interleaved run, {lat['threads']} thread(s), {lat['environment']}; speed-ups = 1 / "
            f"latency ratio, {lat.get('estimator')} [95% CI] (! = flagged: see below)"
        )
        notes += [f"flagged: {n}" for n in lat.get("notes") or []]
    notes += _layout_notes(report)
    notes.append(f"final artifact: {report['final']}")
    notes.append(f"report: {report['run']}/compress.json ({report['seconds']['total']:.0f} s)")
    for n in notes:
        click.echo(n)
    for w in report.get("warnings") or []:
        click.echo(f"warning: {w}", err=True)
