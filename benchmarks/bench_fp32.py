"""FP32 CPU latency, side by side in one interleaved run: torch eager vs edgecnn's ONNX in ONNX Runtime
vs OpenVINO on the very same ONNX file (OpenVINO is the strongest CPU peer).

    pip install -r benchmarks/requirements.txt     # OpenVINO, for the peer column only
    python benchmarks/bench_fp32.py                # ResNet-50 @224, batch 1 and 8
    python benchmarks/bench_fp32.py --model resnet18 --batch-sizes 1 --min-time 5

Writes benchmarks/results/fp32_<model>.json and .md. Random weights (latency does not depend on them;
the classifier is scaled to a trained network's logit range so the parity numbers mean something).
What it checks (issue 3):
  - parity torch vs ONNX Runtime (and vs OpenVINO) at the full input size on real images (digits);
  - edgecnn ONNX FP32 in ORT faster than torch eager FP32;
  - ORT no slower than OpenVINO FP32 by more than 10 % (ratio ORT/OpenVINO <= 1.10).
Ratios come from one interleaved run (edgecnn.bench); absolute milliseconds on a shared machine drift,
the ratios do not. The load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    OpenVinoRunner,
    check_line,
    load_average,
    random_artifact,  # noqa: E402
    require_openvino,
    write_results,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: physical cores)")
    ap.add_argument("--min-time", type=float, default=10.0, help="timed seconds per candidate and batch size")
    ap.add_argument("--min-repeats", type=int, default=20)
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per candidate and batch size")
    ap.add_argument("--workdir", default=None, help="keep the artifacts here (default: a temporary folder)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    require_openvino()
    import numpy as np
    import torch

    from edgecnn.bench import environment_line, markdown_table, measure_latency, physical_cores
    from edgecnn.export.onnx import compare_outputs, export_onnx, parity_images, torch_outputs
    from edgecnn.models import load_torch_model
    from edgecnn.runtime import open_runner

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    load_start = load_average()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-fp32-") as tmp:
        work = Path(args.workdir or tmp)
        print(f"[1/4] random-weight {args.model} @{args.size} -> {work}", flush=True)
        src = random_artifact(args.model, work / f"{args.model}-torch", size=args.size)
        print("[2/4] edgecnn export (BN folded, onnxslim, checker, parity on digits)", flush=True)
        onnx_art = export_onnx(src, work / f"{args.model}-onnx", progress=False)
        parity_ort = onnx_art.manifest["metrics"]["parity"]
        ov = OpenVinoRunner(onnx_art.model_file, onnx_art.input, threads=threads, label="OpenVINO FP32 (same ONNX)")
        images, _ = parity_images(src.input, "digits", 16)
        reference = torch_outputs(load_torch_model(src), images)
        ov_out = np.concatenate([ov.infer(images[i : i + 8]) for i in range(0, len(images), 8)])
        parity_ov = compare_outputs(reference, ov_out)
        print(
            f"      parity ORT: max abs {parity_ort['max_abs']:.2e} "
            f"(logits up to {parity_ort['reference_max_abs']:.1f}); "
            f"OpenVINO: max abs {parity_ov['max_abs']:.2e}",
            flush=True,
        )
        print(
            f"[3/4] interleaved latency, batch {args.batch_sizes}, {threads} threads, >= {args.min_time} s each",
            flush=True,
        )
        labels = ["torch eager FP32", "edgecnn ONNX FP32 (ORT)", ov.label, "ORT, intra-op spinning on"]
        ort_spin = open_runner(onnx_art, threads=threads, spinning=True)  # ONNX Runtime's own default, for comparison
        result = measure_latency(
            [src, onnx_art, ov, ort_spin],
            batch_sizes=args.batch_sizes,
            warmup=float(args.warmup),
            min_time_s=args.min_time,
            min_repeats=args.min_repeats,
            threads=threads,
            labels=labels,
            progress=True,
        )
        ov.close()
        ort_spin.close()
    load_end = load_average()

    print("[4/4] results", flush=True)
    rows = {(r["label"], r["batch_size"]): r for r in result["results"]}
    checks, summary = [], {}
    for b in args.batch_sizes:
        ort, peer = rows[(labels[1], b)], rows[(labels[2], b)]
        # both per-round ratios are against torch in the same round, so their quotient is ORT/OpenVINO per round
        per_round = [o / p for o, p in zip(ort["round_ratios"], peer["round_ratios"])]
        ort_vs_ov = float(np.median(per_round)) if per_round else ort["latency_ms"]["p50"] / peer["latency_ms"]["p50"]
        summary[f"batch_{b}"] = {
            "ort_vs_torch_ratio": ort["ratio"],
            "ort_speedup_vs_torch": ort["speedup"],
            "ort_vs_torch_rounds_iqr": [ort["ratio_rounds"]["q25"], ort["ratio_rounds"]["q75"]],
            "ort_vs_openvino_ratio": ort_vs_ov,
            "ort_vs_openvino_rounds_iqr": list(np.percentile(per_round, [25, 75])) if per_round else None,
            "openvino_vs_torch_ratio": peer["ratio"],
            "ort_spinning_vs_torch_ratio": rows[(labels[3], b)]["ratio"],
        }
        checks.append(
            (
                f"batch {b}: ORT faster than torch eager",
                ort["ratio"] < 1.0,
                f"ORT/torch latency ratio {ort['ratio']:.3f} (speed-up {ort['speedup']:.2f}x, per-round IQR "
                f"{ort['ratio_rounds']['q25']:.3f}-{ort['ratio_rounds']['q75']:.3f})",
            )
        )
        checks.append(
            (
                f"batch {b}: ORT within 10% of OpenVINO",
                ort_vs_ov <= 1.10,
                f"ORT/OpenVINO latency ratio {ort_vs_ov:.3f}"
                + (
                    f" (per-round IQR {np.percentile(per_round, 25):.3f}-{np.percentile(per_round, 75):.3f})"
                    if per_round
                    else ""
                ),
            )
        )
    checks.append(
        (
            "parity torch vs ORT <= 1e-4 max abs",
            parity_ort["max_abs"] <= 1e-4,
            f"{parity_ort['max_abs']:.2e} on {parity_ort['n_images']} digits at {args.size}px "
            f"(logits up to {parity_ort['reference_max_abs']:.1f})",
        )
    )

    data = {
        "benchmark": "fp32",
        "model": args.model,
        "input": [3, args.size, args.size],
        "weights": "random (classifier scaled to max |logit| 10)",
        "threads": threads,
        "load_average": {"start": load_start, "end": load_end},
        "seconds": round(time.perf_counter() - t0, 1),
        "parity": {"onnxruntime": parity_ort, "openvino": parity_ov},
        "export": {
            k: onnx_art.manifest["onnx"][k] for k in ("opset", "dynamic_batch", "nodes", "bn_folded", "simplified")
        },
        "summary": summary,
        "checks": [{"name": n, "passed": bool(ok), "detail": d} for n, ok, d in checks],
        "bench": result,
        "caveat": "Measured on a machine shared with other jobs; absolute milliseconds are disturbed by their load, "
        "the ratios (interleaved rounds in one process) much less so.",
    }
    md = [
        f"# FP32 CPU latency: {args.model} @{args.size}",
        "",
        f"One interleaved run (edgecnn.bench), {threads} threads, >= {args.min_time} s timed per candidate and batch "
        f"size; random weights. Load average at start {load_start}, at end {load_end}: the machine was shared, so "
        "compare the ratios, not the milliseconds.",
        "",
        markdown_table(result),
        "Ratio = median over rounds of candidate / torch eager latency (lower is faster); "
        "[IQR] of the per-round ratios. "
        "edgecnn's ORT runner turns intra-op thread spinning off by default (better on shared machines); "
        "the last row is ONNX Runtime's own default (spinning on) on the same file.",
        "",
        "## Checks",
        *[check_line(n, ok, d) for n, ok, d in checks],
        "",
        f"Parity (16 held-out digits resized to {args.size}px RGB): torch vs ORT max abs {parity_ort['max_abs']:.2e}, "
        f"torch vs OpenVINO max abs {parity_ov['max_abs']:.2e}; largest logit {parity_ort['reference_max_abs']:.1f}.",
        "",
        f"Environment: {environment_line(result)}",
        "",
    ]
    json_path, md_path = write_results(f"fp32_{args.model}", data, "\n".join(md), Path(args.out))
    print("\n".join(md))
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
