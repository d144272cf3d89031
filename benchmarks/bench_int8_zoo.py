"""Every zoo family quantized to INT8: does it pass TensorRT's rules, run in ONNX Runtime, and beat its own
FP32 ONNX there?

For each model (random weights: this is about speed and graph structure, not accuracy) the script
exports FP32 ONNX (BatchNorm folded), quantizes it twice with ``edgecnn.compress.quantize`` - target
``cpu`` (ONNX Runtime layout) and target ``tensorrt`` (validated TensorRT layout) - on the default
``calibration/`` photos, checks both with the TensorRT-rules validator, and measures ORT FP32 / INT8-cpu /
INT8-tensorrt latency at batch 1 interleaved in one run (edgecnn.bench.measure_latency). Ratios are
what to read; absolute times drift on a shared machine.

    python benchmarks/bench_int8_zoo.py                      # all families at 224 px (lenet5 at 32)
    python benchmarks/bench_int8_zoo.py --models resnet18 alexnet --seconds 2

Writes benchmarks/results/int8_zoo.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121"]


def main(argv=None) -> int:
    os.environ.setdefault("NNCF_CI", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--size", type=int, default=224, help="input side for the torchvision models")
    ap.add_argument("--calib", default=str(ROOT / "calibration"))
    ap.add_argument("--subset", type=int, default=32, help="calibration images per quantization")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per candidate")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8_zoo.json"))
    args = ap.parse_args(argv)

    import torch

    from edgecnn.bench import measure_latency
    from edgecnn.compress.qdq import summarize, validate_qdq
    from edgecnn.compress.quantize import QuantizeOptions, quantize
    from edgecnn.export.onnx import export_onnx
    from edgecnn.models import build_model, get_spec, save_torch_artifact

    warnings.simplefilter("ignore")
    rows, t_all = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-int8-zoo-") as tmp:
        tmp = Path(tmp)
        for name in args.models:
            spec = get_spec(name)
            t0 = time.perf_counter()
            size = None if name == "lenet5" else args.size
            input_spec = spec.input_spec(input_size=size)
            torch.manual_seed(0)
            net, _ = build_model(
                name,
                weights="random",
                num_classes=1000 if name != "lenet5" else 10,
                input_size=(input_spec["height"], input_spec["width"]),
                warn_random=False,
            )
            classes = [str(i) for i in range(1000 if name != "lenet5" else 10)]
            src = save_torch_artifact(
                net,
                tmp / f"{name}-torch",
                name=name,
                input_spec=input_spec,
                classes=classes,
                stage="load",
                params={"weights": "random"},
            )
            fp32 = export_onnx(src, tmp / f"{name}-fp32", progress=False)
            row = {"model": name, "input": [input_spec["channels"], input_spec["height"], input_spec["width"]]}
            arts = [fp32]
            for target in ("cpu", "tensorrt"):
                t = time.perf_counter()
                art = quantize(
                    fp32,
                    tmp / f"{name}-int8-{target}",
                    QuantizeOptions(calib=args.calib, subset_size=args.subset, target=target),
                    progress=False,
                )
                v = summarize(validate_qdq(art.model_file))
                row[target] = {
                    "quantize_s": round(time.perf_counter() - t, 1),
                    "passes_tensorrt_rules": v["passed"],
                    "errors": v["errors"],
                    "warnings": v["warnings"],
                    "by_rule": v["by_rule"],
                    "rewrites": {
                        k: (len(x) if isinstance(x, list) else x)
                        for k, x in art.manifest["quantization"]["rewrites"].items()
                    },
                    "file_mb": round(art.model_file.stat().st_size / 1e6, 3),
                }
                arts.append(art)
            row["fp32_file_mb"] = round(fp32.model_file.stat().st_size / 1e6, 3)
            lat = measure_latency(
                arts,
                labels=["ORT FP32", "ORT INT8 (cpu)", "ORT INT8 (tensorrt layout)"],
                batch_sizes=(1,),
                warmup=1.0,
                min_time_s=args.seconds,
                threads=args.threads,
                progress=False,
            )
            for r, key in zip(lat["results"], ("fp32", "cpu", "tensorrt")):
                entry = {
                    "p50_ms": round(r["latency_ms"]["p50"], 3),
                    "speedup_vs_fp32": round(r["speedup"], 3),
                    "ratio_iqr": r.get("ratio_rounds"),
                }
                if key == "fp32":
                    row["fp32"] = entry
                else:
                    row[key].update(entry)
            row["int8_faster_than_fp32"] = row["cpu"]["speedup_vs_fp32"] > 1.0
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(
                f"{name:12s} fp32 {row['fp32']['p50_ms']:8.2f} ms | int8 cpu {row['cpu']['p50_ms']:8.2f} ms "
                f"({row['cpu']['speedup_vs_fp32']:.2f}x) | int8 trt-layout {row['tensorrt']['p50_ms']:8.2f} ms "
                f"({row['tensorrt']['speedup_vs_fp32']:.2f}x) | TRT rules: "
                f"{'pass' if row['tensorrt']['passes_tensorrt_rules'] else 'FAIL'}",
                flush=True,
            )
            env = lat["environment"]
    result = {
        "schema": "edgecnn.bench-int8-zoo/1",
        "settings": vars(args),
        "environment": env,
        "rows": rows,
        "exceptions": [
            {"model": r["model"], "int8_cpu_speedup": r["cpu"]["speedup_vs_fp32"]}
            for r in rows
            if not r["int8_faster_than_fp32"]
        ],
        "seconds": round(time.perf_counter() - t_all, 1),
        "note": "random weights; ratios measured interleaved in one run per model; shared machine -> "
        "absolute ms drift, ratios are what to read",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = [
        "| model | input | ORT FP32 ms | INT8 cpu ms (speed-up) | INT8 tensorrt-layout ms (speed-up) "
        "| TensorRT rules | size FP32 -> INT8 MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['fp32']['p50_ms']:.2f} | "
            f"{r['cpu']['p50_ms']:.2f} ({r['cpu']['speedup_vs_fp32']:.2f}x) | {r['tensorrt']['p50_ms']:.2f} "
            f"({r['tensorrt']['speedup_vs_fp32']:.2f}x) | "
            f"{'pass' if r['tensorrt']['passes_tensorrt_rules'] else 'FAIL'} | "
            f"{r['fp32_file_mb']:.2f} -> {r['cpu']['file_mb']:.2f} |"
        )
    md.append("")
    md.append(
        f"{env.get('cpu')}, {result['settings']['threads'] or 'physical-core'} threads; random weights; "
        "interleaved latency per model (ratios are the result; absolute ms drift with machine load)."
    )
    out.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
