"""Structured pruning: how much faster is a pruned network in ONNX Runtime, and does every zoo model
survive pruning?

Default (latency): ResNet-50 at 3x224x224 (random weights: speed and graph structure, not accuracy)
is pruned with ``edgecnn.compress.prune.prune`` to 50 % of its channels (L1, uniform, round-to 8),
both networks are exported to ONNX (BatchNorm folded, parity checked) and measured together in one
run with ``edgecnn.bench.measure_latency``, interleaved (A B A B ...), so machine drift cancels in the
ratio. torch eager is measured alongside for reference.

    python benchmarks/bench_prune.py                       # ResNet-50, 50 % channels, 224 px
    python benchmarks/bench_prune.py --model resnet18 --ratio 0.3 --seconds 2

``--zoo``: every zoo model pruned at 30 % (small inputs, 10 classes, no fine-tuning), reloaded from
disk (structure + safetensors) and compared with the in-memory network, exported to ONNX, and the
ONNX Runtime logits compared with torch's. This is the full-zoo version of the test in
tests/test_prune.py (which runs one model per family to stay fast).

Writes benchmarks/results/prune_<model>.json/.md, or prune_zoo.json/.md.
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
RESULTS = ROOT / "benchmarks" / "results"


def _random_artifact(name: str, out: Path, *, size, in_channels, num_classes):
    import torch

    from edgecnn.models import get_spec, save_torch_artifact

    spec = get_spec(name)
    torch.manual_seed(0)
    model = spec.build(num_classes=num_classes, in_channels=in_channels, input_size=size).eval()
    return save_torch_artifact(
        model,
        out,
        name=name,
        input_spec=spec.input_spec(in_channels, size),
        classes=[str(i) for i in range(num_classes)],
        stage="random-init",
        params={"weights": "random"},
    )


def latency(args) -> int:
    from edgecnn.bench import environment_line, markdown_table, measure_latency
    from edgecnn.compress.prune import PruneOptions, prune
    from edgecnn.export.onnx import export_onnx

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-prune-") as tmp:
        tmp = Path(tmp)
        src = _random_artifact(args.model, tmp / "original", size=args.size, in_channels=3, num_classes=1000)
        t = time.perf_counter()
        pruned = prune(src, tmp / "pruned", PruneOptions(ratio=args.ratio, importance=args.importance), progress=False)
        prune_s = time.perf_counter() - t
        rep = pruned.manifest["pruning"]
        onnx_orig = export_onnx(src, tmp / "original-onnx", progress=False)
        onnx_pruned = export_onnx(pruned, tmp / "pruned-onnx", progress=False)
        labels = ["ORT FP32 original", "ORT FP32 pruned", "torch original", "torch pruned"]
        lat = measure_latency(
            [onnx_orig, onnx_pruned, src, pruned],
            labels=labels,
            batch_sizes=tuple(args.batch),
            warmup=1.0,
            min_time_s=args.seconds,
            threads=args.threads,
            progress=False,
        )
        by = {(r["label"], r["batch_size"]): r for r in lat["results"]}
        ratios = {}
        for b in args.batch:
            o, p = by[(labels[0], b)], by[(labels[1], b)]
            to, tp_ = by[(labels[2], b)], by[(labels[3], b)]
            ratios[str(b)] = {
                "ort_latency_ratio": p["latency_ms"]["p50"] / o["latency_ms"]["p50"],
                "ort_speedup": o["latency_ms"]["p50"] / p["latency_ms"]["p50"],
                "torch_latency_ratio": tp_["latency_ms"]["p50"] / to["latency_ms"]["p50"],
                "ort_ratio_rounds": p.get("ratio_rounds"),
            }
        result = {
            "schema": "edgecnn.bench-prune/1",
            "settings": vars(args),
            "environment": lat["environment"],
            "model": args.model,
            "input": list(src.input_shape),
            "pruning": {
                "ratio": args.ratio,
                "importance": args.importance,
                "round_to": rep["round_to"],
                "macs": rep["macs"],
                "params": rep["params"],
                "achieved": rep["achieved"],
                "seconds": round(prune_s, 2),
            },
            "onnx_parity_max_abs": {
                "original": onnx_orig.metrics.get("parity", {}).get("max_abs"),
                "pruned": onnx_pruned.metrics.get("parity", {}).get("max_abs"),
            },
            "ratios": ratios,
            "latency": lat,
            "seconds": round(time.perf_counter() - t_all, 1),
            "note": "random weights; all four candidates measured interleaved in one run - read the ratios, "
            "absolute ms drift with machine load",
        }
    out = RESULTS / f"prune_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    pr = result["pruning"]
    md = [
        f"# {args.model} pruned to {1 - args.ratio:.0%} of its channels ({args.importance}, round-to {pr['round_to']})",
        "",
        f"MACs {pr['macs']['before'] / 1e9:.2f} G -> {pr['macs']['after'] / 1e9:.2f} G "
        f"({pr['achieved']['macs_ratio']:.3f}); params {pr['params']['before'] / 1e6:.2f} M -> "
        f"{pr['params']['after'] / 1e6:.2f} M ({pr['achieved']['params_ratio']:.3f}); input "
        f"{'x'.join(map(str, result['input']))}.",
        "",
        markdown_table(lat),
        "| batch | ORT latency ratio pruned/original | ORT speed-up | torch latency ratio |",
        "|---|---|---|---|",
    ]
    for b, r in ratios.items():
        md.append(f"| {b} | {r['ort_latency_ratio']:.3f} | {r['ort_speedup']:.2f}x | {r['torch_latency_ratio']:.3f} |")
    md += ["", environment_line(lat) + ". Random weights; interleaved rounds; ratios are the result.", ""]
    out.with_suffix(".md").write_text("\n".join(md), encoding="utf-8")
    for b, r in ratios.items():
        print(
            f"batch {b}: ORT pruned/original latency {r['ort_latency_ratio']:.3f} ({r['ort_speedup']:.2f}x faster); "
            f"torch {r['torch_latency_ratio']:.3f}; MACs ratio {pr['achieved']['macs_ratio']:.3f}"
        )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def zoo(args) -> int:
    import numpy as np
    import torch

    from edgecnn.compress.prune import PruneOptions, prune
    from edgecnn.export.onnx import export_onnx
    from edgecnn.models import get_spec, list_models, load_torch_model
    from edgecnn.runtime import open_runner

    rows, t_all, failures = [], time.perf_counter(), 0
    for name in args.models or list_models():
        spec = get_spec(name)
        c = 1 if name == "lenet5" else 3
        size = max(32, spec.min_input)
        row = {"model": name, "input": [c, size, size]}
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix=f"edgecnn-prune-zoo-{name}-") as tmp:
                tmp = Path(tmp)
                src = _random_artifact(name, tmp / "src", size=size, in_channels=c, num_classes=10)
                t = time.perf_counter()
                art = prune(src, tmp / "pruned", PruneOptions(ratio=0.3), progress=False)
                row["prune_s"] = round(time.perf_counter() - t, 2)
                rep = art.manifest["pruning"]
                model = load_torch_model(art)
                x = torch.randn(4, c, size, size, generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    out = model(x).numpy()
                t = time.perf_counter()
                onnx_art = export_onnx(art, tmp / "onnx", parity_data="digits", progress=False)
                row["export_s"] = round(time.perf_counter() - t, 2)
                with open_runner(onnx_art) as runner:
                    got = runner.infer(x.numpy())
                row.update(
                    output_shape=list(out.shape),
                    round_to=rep["round_to"],
                    layers_changed=len(rep["layers"]),
                    channel_ratio=round(rep["achieved"]["channel_ratio"], 4),
                    macs_ratio=round(rep["achieved"]["macs_ratio"], 4),
                    params_ratio=round(rep["achieved"]["params_ratio"], 4),
                    reload_max_abs_diff=art.metrics["reload_max_abs_diff"],
                    ort_max_abs_diff=float(np.abs(got - out).max()),
                    logit_scale=float(np.abs(out).max()),
                    export_parity_max_abs=onnx_art.metrics.get("parity", {}).get("max_abs"),
                )
                row["ok"] = (
                    row["output_shape"] == [4, 10]
                    and row["reload_max_abs_diff"] == 0.0
                    and row["ort_max_abs_diff"] <= 1e-4 * max(1.0, row["logit_scale"])
                )
        except Exception as exc:  # noqa: BLE001 - a benchmark reports every failure and goes on
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        failures += not row["ok"]
        rows.append(row)
        print(
            f"{name:12s} {'ok  ' if row['ok'] else 'FAIL'} "
            + (
                f"MACs {row['macs_ratio']:.3f} params {row['params_ratio']:.3f} "
                f"reload diff {row['reload_max_abs_diff']} "
                f"ORT diff {row['ort_max_abs_diff']:.2e} ({row['seconds']} s)"
                if "macs_ratio" in row
                else row.get("error", "")
            ),
            flush=True,
        )
    from edgecnn.envinfo import fingerprint

    result = {
        "schema": "edgecnn.bench-prune-zoo/1",
        "settings": vars(args),
        "environment": fingerprint(),
        "rows": rows,
        "failures": failures,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    out = RESULTS / "prune_zoo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = [
        "| model | input | round-to | channels removed | MACs ratio | params ratio | output | reload diff | "
        "ORT vs torch max abs | prune s | export s | ok |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        if "macs_ratio" in r:
            md.append(
                f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['round_to']} | {r['channel_ratio']:.3f} | "
                f"{r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | {r['output_shape']} | {r['reload_max_abs_diff']} | "
                f"{r['ort_max_abs_diff']:.1e} | {r['prune_s']} | {r['export_s']} | {'yes' if r['ok'] else 'NO'} |"
            )
        else:
            md.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | | | | | | | | | | NO: {r.get('error')} |")
    md += [
        "",
        "Random weights, 10 classes, ratio 0.3 (L1, uniform, auto round-to), no fine-tuning. reload diff: "
        "max |logits| difference between the network pruned in memory and the one rebuilt from disk.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md), encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.md')}; {failures} failure(s)")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed")
    ap.add_argument("--importance", default="l1")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per candidate and batch size")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--zoo", action="store_true", help="prune every zoo model at 30%% and check reload + ONNX parity")
    ap.add_argument("--models", nargs="*", help="with --zoo: only these models")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    os.environ.setdefault("NNCF_CI", "1")
    return zoo(args) if args.zoo else latency(args)


if __name__ == "__main__":
    sys.exit(main())
