"""ResNet-50 @224, batch 1, every runtime AS DEPLOYED - each in its own process, processes alternating:

    torch FP32 | ORT FP32 | edgecnn INT8 in ORT | edgecnn INT8 in OpenVINO (edgecnn's own Q/DQ ONNX) |
    OpenVINO INT8 of the peer route (NNCF on the same FP32 ONNX) | ORT quantize_static QDQ |
    edgecnn pruned-50% + INT8 in ORT and in OpenVINO

Targets (issues 5 and 17): edgecnn INT8 >= 3.3x faster than torch FP32; pruned + INT8 >= 10x; edgecnn's
chosen CPU runtime (the faster of ORT and OpenVINO on edgecnn's INT8, measured in the same run: what
``deploy --runtime auto`` does) at least as fast as OpenVINO INT8 of the peer route and as ORT
quantize_static - speed ratio >= 0.97 with its 95 % interval and IQR.

How it is measured (``benchmarks/_asdeployed.py``): each candidate runs in a fresh child process per block
(loads the model, warms up, times ``--seconds`` of calls, returns its samples as JSON), ONNX Runtime with
its defaults (intra-op spinning on, as a deployed session), OpenVINO with threads, LATENCY hint and f32
inference precision set, torch eager; blocks alternate over ``--cycles`` cycles with the order rotated.
No runtime shares a process with another, so one's spinning threads cannot slow the next (the old
in-process phase 2 timed OpenVINO at 9.7 ms per call after an ORT block vs 5.7 ms after an OpenVINO block),
and every number is from this one run: no product of ratios from different runs is a headline. A
verdict is ``inconclusive`` when the baseline (or the candidate) collapsed in a block, the load average
exceeded the core count, the cycles are multi-modal, or the target lies inside the 95 % interval.

Weights are random unless --weights says otherwise (speed does not depend on them; accuracy is not
measured here). Calibration: the repository's calibration/ photos for edgecnn, NNCF-OpenVINO and ORT.

    python benchmarks/bench_int8.py                 # writes benchmarks/results/int8_resnet50.{json,md}
    python benchmarks/bench_int8.py --quick         # smoke: resnet18 @64, 2 cycles; writes to a temp folder
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _asdeployed import Candidate, choose, compare, fmt, for_disk, judge, run_from_args  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    bench_setup,
    have_openvino,
    nncf_openvino_int8,
    ort_quantize_static,
    smoke_out,
    torch_artifact,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
TORCH, ORT_FP32 = "torch FP32", "ORT FP32"
E_ORT, E_OV = "edgecnn INT8 (ORT)", "edgecnn INT8 (OpenVINO)"
PEER_OV, ORT_STATIC = "OpenVINO INT8 (NNCF, peer route)", "ORT quantize_static QDQ"


def pruned_labels(ratio: float) -> tuple[str, str]:
    p = f"edgecnn pruned-{round(100 * ratio)}% + INT8"
    return f"{p} (ORT)", f"{p} (OpenVINO)"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="INT8 side by side, every runtime as deployed in its own process")
    ap.add_argument("--model", default=None, help="zoo model (default resnet50; --quick: resnet18)")
    ap.add_argument("--size", type=int, default=None, help="input side (default 224; --quick: 64)")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--calib", default=str(ROOT / "calibration"))
    ap.add_argument("--subset", type=int, default=None, help="calibration images (default 300; --quick: 8)")
    ap.add_argument("--prune-ratio", type=float, default=0.5)
    ap.add_argument("--no-prune", action="store_true", help="skip the pruned candidates")
    ap.add_argument("--cycles", type=int, default=None, help="cycles of processes (default 9; --quick: 2)")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per block (default 3; --quick: 0.3)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per block (default 1; --quick: 0.1)")
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: physical cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run; never writes into benchmarks/results/")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/int8_resnet50.json)")
    args = ap.parse_args(argv)
    full, quick = (
        {"model": "resnet50", "size": 224, "subset": 300, "cycles": 9, "seconds": 3.0, "warmup": 1.0},
        {"model": "resnet18", "size": 64, "subset": 8, "cycles": 2, "seconds": 0.3, "warmup": 0.1},
    )
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.out = smoke_out(args.quick, args.out, RESULTS / "int8_resnet50.json", "int8.json")
    return args


def build(args, tmp: Path, threads: int) -> tuple[list[Candidate], dict]:
    """Every artifact and peer model; the candidates to time and what was built (sizes, seconds, notes)."""
    import torch

    from edgecnn.compress.quantize import QuantizeOptions, quantize
    from edgecnn.data.calibration import load_calibration
    from edgecnn.export.onnx import export_onnx

    torch.set_num_threads(threads)
    info: dict = {"seconds": {}, "notes": [], "file_bytes": {}}
    t = time.perf_counter()
    src, _ = torch_artifact(args.model, tmp / "torch", size=args.size, weights=args.weights)
    ispec = src.input
    fp32 = export_onnx(src, tmp / "fp32", progress=False)
    info["seconds"]["export"] = time.perf_counter() - t
    qopts = QuantizeOptions(calib=args.calib, subset_size=args.subset, target="cpu")
    t = time.perf_counter()
    int8 = quantize(fp32, tmp / "int8", qopts, progress=False)
    info["seconds"]["edgecnn_quantize"] = time.perf_counter() - t
    info["input_spec"] = ispec
    info["macs"] = src.manifest["metrics"]["macs"]
    cands = [
        Candidate(TORCH, "torch", str(src.path)),
        Candidate(ORT_FP32, "onnxruntime", str(fp32.model_file)),
        Candidate(E_ORT, "onnxruntime", str(int8.model_file)),
    ]
    cal = load_calibration(args.calib, ispec, subset_size=args.subset)
    if have_openvino():
        cands.append(Candidate(E_OV, "openvino", str(int8.path)))
        t = time.perf_counter()
        peer = nncf_openvino_int8(fp32.model_file, tmp / "peer" / "model.xml", cal.batches, args.subset)
        info["seconds"]["openvino_nncf_quantize"] = time.perf_counter() - t
        cands.append(Candidate(PEER_OV, "openvino", str(peer)))
    else:
        info["notes"].append("OpenVINO not installed: its columns are missing (pip install 'edgecnn[openvino]').")
    t = time.perf_counter()
    static = ort_quantize_static(fp32.model_file, tmp / "ort-static.onnx", cal.batches)
    info["seconds"]["ort_quantize_static"] = time.perf_counter() - t
    cands.append(Candidate(ORT_STATIC, "onnxruntime", str(static)))
    if not args.no_prune:
        cands += _pruned(args, src, tmp, qopts, info)
    info["file_bytes"] = {c.label: _size(Path(c.model)) for c in cands}
    return cands, info


def _pruned(args, src, tmp: Path, qopts, info: dict) -> list[Candidate]:
    from edgecnn.compress.prune import PruneOptions, prune
    from edgecnn.compress.quantize import quantize
    from edgecnn.export.onnx import export_onnx

    t = time.perf_counter()
    pruned = prune(src, tmp / "pruned", PruneOptions(ratio=args.prune_ratio), progress=False)
    p_fp32 = export_onnx(pruned, tmp / "pruned-fp32", progress=False)
    p_int8 = quantize(p_fp32, tmp / "pruned-int8", qopts, progress=False)
    info["seconds"]["prune_and_quantize"] = time.perf_counter() - t
    info["pruned"] = pruned.manifest["pruning"]["achieved"] | {
        "macs": pruned.manifest["pruning"]["macs"],
        "params": pruned.manifest["pruning"]["params"],
    }
    p_ort, p_ov = pruned_labels(args.prune_ratio)
    out = [Candidate(p_ort, "onnxruntime", str(p_int8.model_file))]
    if have_openvino():
        out.append(Candidate(p_ov, "openvino", str(p_int8.path)))
    return out


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".onnx"))
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


def targets(run: dict, prune_ratio: float | None = 0.5) -> dict:
    """The verdicts, every one from this single as-deployed run (see _asdeployed.judge)."""
    chosen = choose(run, [E_ORT, E_OV])
    out: dict = {"chosen_runtime": chosen}

    def add(key: str, label: str | None, reference: str, goal: float, meaning: str) -> None:
        if label is None or label not in run["candidates"] or reference not in run["candidates"]:
            out[key] = {"verdict": "inconclusive", "target": goal, "reasons": ["not measured"], "meaning": meaning}
            return
        out[key] = judge(compare(run, label, reference), goal) | {"meaning": meaning}

    add("edgecnn_int8_vs_torch_fp32", chosen, TORCH, 3.3, "torch FP32 / chosen edgecnn INT8 latency")
    if prune_ratio is not None:
        p_chosen = choose(run, list(pruned_labels(prune_ratio)))
        out["pruned_chosen_runtime"] = p_chosen
        add("pruned_int8_vs_torch_fp32", p_chosen, TORCH, 10.0, "torch FP32 / chosen pruned + INT8 latency")
    add("edgecnn_int8_vs_openvino_int8_peer", chosen, PEER_OV, 0.97, "OpenVINO INT8 (NNCF peer) / chosen edgecnn INT8")
    add("edgecnn_int8_vs_ort_quantize_static", chosen, ORT_STATIC, 0.97, "ORT quantize_static / chosen edgecnn INT8")
    return out


def markdown(run: dict, tg: dict, args, info: dict) -> str:
    c0 = run["candidates"]
    lines = [
        f"{args.model} @{args.size}, batch 1, {run['settings']['threads']} threads, {run['environment'].get('cpu')} "
        f"(flags: {', '.join(run['cpu_flags'] or []) or 'none of interest'}; {run['cores']} cores)",
        "",
        f"As deployed: each candidate in its own process per block, {run['settings']['cycles']} cycles of "
        f"{run['settings']['seconds']} s blocks, order rotated; load average {run['load_average']}.",
        "",
        "| candidate | runtime | p50 ms [95% CI] | speed-up vs torch FP32 [95% CI] | IQR over cycles | problems |",
        "|---|---|---|---|---|---|",
    ]
    for lab, e in c0.items():
        if e.get("p50_ms") is None:
            lines.append(f"| {lab} | {e['runtime']} | failed: {e.get('failed')} | - | - | - |")
            continue
        c = compare(run, lab, TORCH) if TORCH in c0 else None
        iqr = f"{c.iqr[0]:.2f}-{c.iqr[1]:.2f}" if c and c.iqr else "-"
        lines.append(
            f"| {lab} | {e['runtime']} | {e['p50_ms']:.3f} [{e['p50_ci_ms'][0]:.3f}-{e['p50_ci_ms'][1]:.3f}] | "
            f"{fmt(c) if c else '-'} | {iqr} | {'; '.join(c.problems) if c and c.problems else '-'} |"
        )
    lines += ["", f"Chosen CPU runtime for edgecnn INT8 (faster in this run): **{tg['chosen_runtime']}**", ""]
    lines += ["| target | value [95% CI] | IQR | goal | verdict | why |", "|---|---|---|---|---|---|"]
    for k, v in tg.items():
        if not isinstance(v, dict):
            continue
        iqr = f"{v['iqr'][0]:.2f}-{v['iqr'][1]:.2f}" if v.get("iqr") else "-"
        lines.append(
            f"| {k} | {fmt(v)} | {iqr} | >= {v['target']} | **{v['verdict']}** | {'; '.join(v['reasons']) or '-'} |"
        )
    lines += [""] + [f"- {n}" for n in info["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, threads = bench_setup(parse_args, argv)
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-int8-") as tmp:
        cands, info = build(args, Path(tmp), threads)
        run = run_from_args(cands, info["input_spec"], args, threads)
    tg = targets(run, None if args.no_prune else args.prune_ratio)
    info["notes"].append(
        "random weights unless --weights says otherwise; every number from this one run (no products of "
        "ratios from different runs); absolute ms drift with machine load, the ratios are the result"
    )
    if args.quick:
        info["notes"].append("SMOKE RUN (--quick): too few cycles for results; do not quote these numbers")
    result = {
        "schema": "edgecnn.bench-int8/3",
        "smoke": bool(args.quick),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"threads": threads},
        "as_deployed": for_disk(run),
        "targets": tg,
        "macs": info.get("macs"),
        "pruned": info.get("pruned"),
        "file_bytes": info["file_bytes"],
        "seconds": {k: round(v, 1) for k, v in info["seconds"].items()} | {"timing": run["seconds"]},
        "notes": info["notes"],
    }
    out = Path(args.out)
    write_results(out.stem, result, markdown(run, tg, args, info), out.parent)
    for k, v in tg.items():
        if isinstance(v, dict):
            print(
                f"{k:40s} {fmt(v):24s} target {v['target']}: {v['verdict']}"
                + (f" ({'; '.join(v['reasons'])})" if v["reasons"] else "")
            )
    print(f"chosen runtime: {tg['chosen_runtime']}\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
