"""Every zoo family and four depthwise torchvision networks in INT8: does it pass TensorRT's rules, how much
faster than its FP32 ONNX is it, and is edgecnn's chosen CPU runtime as fast as the peers?

For each network (random weights: this is about speed and graph structure, not accuracy) the script
exports FP32 ONNX (BatchNorm folded), quantizes it with ``edgecnn.compress.quantize`` - target ``cpu``
(ONNX Runtime layout), and target ``tensorrt`` (checked with the TensorRT-rules validator) unless
``--no-trt-layout`` - and builds the two peer routes on the same FP32 ONNX and calibration photos: NNCF's
OpenVINO backend (OpenVINO INT8, saved as IR) and ONNX Runtime's ``quantize_static`` (QDQ, uint8
activations, per-channel int8 weights). Then, in ONE as-deployed run per network (``_asdeployed.py``:
every candidate in its own process per block, cycles of processes with the order rotated, load average
and CPU flags recorded), it times at batch 1:

    ORT FP32 | edgecnn INT8 in ORT | edgecnn INT8 in OpenVINO (edgecnn's own Q/DQ ONNX) |
    OpenVINO INT8 (NNCF peer route) | ORT quantize_static QDQ

and judges, per network, edgecnn's chosen CPU runtime (the faster of ORT and OpenVINO on edgecnn's INT8
in this run) against OpenVINO INT8 of the peer route and against ORT quantize_static (speed ratio >= 0.97,
95 % interval and IQR; inconclusive when the run was disturbed - see _asdeployed.judge).

    python benchmarks/bench_int8_zoo.py                                  # all default networks at 224 px
    python benchmarks/bench_int8_zoo.py --networks resnet18 mobilenet_v2 --cycles 5
    python benchmarks/bench_int8_zoo.py --quick                          # smoke: lenet5 + resnet18 @64

Networks: zoo names (lenet5 runs at 32 px), and torchvision names (``mobilenet_v2``, ``mobilenet_v3_large``,
``efficientnet_b0``, ``shufflenet_v2_x1_0``, or any ``torchvision:NAME``) built with random weights.
Writes benchmarks/results/int8_zoo.json and .md.
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
    ort_graph_profile,
    ort_quantize_static,
    smoke_out,
    torch_artifact,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
ZOO_NETWORKS = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121"]
DEPTHWISE_NETWORKS = ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0"]
DEFAULT_NETWORKS = ZOO_NETWORKS + DEPTHWISE_NETWORKS
FP32, E_ORT, E_OV = "ORT FP32", "edgecnn INT8 (ORT)", "edgecnn INT8 (OpenVINO)"
PEER_OV, ORT_STATIC = "OpenVINO INT8 (NNCF, peer route)", "ORT quantize_static QDQ"
PEER_TARGET = 0.97


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", "--models", dest="networks", nargs="+", default=None, help="subset to run")
    ap.add_argument("--size", type=int, default=None, help="input side (default 224; --quick: 64); lenet5: 32")
    ap.add_argument("--calib", default=str(ROOT / "calibration"))
    ap.add_argument("--subset", type=int, default=None, help="calibration images per quantization (default 32)")
    ap.add_argument("--cycles", type=int, default=None, help="cycles of processes per network (default 7)")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per block (default 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per block (default 0.5)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-trt-layout", action="store_true", help="skip the TensorRT-layout quantization and rules")
    ap.add_argument("--quick", action="store_true", help="smoke run; never writes into benchmarks/results/")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/int8_zoo.json)")
    args = ap.parse_args(argv)
    full = {"networks": DEFAULT_NETWORKS, "size": 224, "subset": 32, "cycles": 7, "seconds": 2.0, "warmup": 0.5}
    quick = {"networks": ["lenet5", "resnet18"], "size": 64, "subset": 8, "cycles": 2, "seconds": 0.2, "warmup": 0.1}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.quick:
        args.no_trt_layout = True
    args.out = smoke_out(args.quick, args.out, RESULTS / "int8_zoo.json", "int8_zoo.json")
    return args


def build_network(name: str, args, tmp: Path) -> tuple[dict, list[Candidate], dict]:
    """Quantize ``name`` every way; (row, candidates, input spec)."""
    from edgecnn.compress.qdq import summarize, validate_qdq
    from edgecnn.compress.quantize import QuantizeOptions, quantize
    from edgecnn.data.calibration import load_calibration
    from edgecnn.export.onnx import export_onnx

    key = name.removeprefix("torchvision:")
    src, net = torch_artifact(name, tmp / f"{key}-torch", size=None if name == "lenet5" else args.size)
    fp32 = export_onnx(src, tmp / f"{key}-fp32", model=net, progress=False)
    ispec = src.input
    row: dict = {
        "model": src.model,
        "input": [ispec["channels"], ispec["height"], ispec["width"]],
        "macs": src.manifest["metrics"]["macs"],
        "fp32_file_mb": round(fp32.model_file.stat().st_size / 1e6, 3),
        "quantize_s": {},
    }
    targets = ("cpu",) if args.no_trt_layout else ("cpu", "tensorrt")
    arts = {}
    for target in targets:
        t = time.perf_counter()
        art = quantize(
            fp32,
            tmp / f"{key}-int8-{target}",
            QuantizeOptions(calib=args.calib, subset_size=args.subset, target=target),
            progress=False,
        )
        row["quantize_s"][f"edgecnn_{target}"] = round(time.perf_counter() - t, 1)
        arts[target] = art
    if "tensorrt" in arts:
        v = summarize(validate_qdq(arts["tensorrt"].model_file))
        row["tensorrt_layout"] = {k: v[k] for k in ("passed", "errors", "warnings", "by_rule")}
    row["int8_file_mb"] = round(arts["cpu"].model_file.stat().st_size / 1e6, 3)
    cands = [
        Candidate(FP32, "onnxruntime", str(fp32.model_file)),
        Candidate(E_ORT, "onnxruntime", str(arts["cpu"].model_file)),
    ]
    cal = load_calibration(args.calib, ispec, subset_size=args.subset)
    if have_openvino():
        cands.append(Candidate(E_OV, "openvino", str(arts["cpu"].path)))
        t = time.perf_counter()
        peer = nncf_openvino_int8(fp32.model_file, tmp / f"{key}-peer" / "model.xml", cal.batches, args.subset)
        row["quantize_s"]["openvino_nncf"] = round(time.perf_counter() - t, 1)
        cands.append(Candidate(PEER_OV, "openvino", str(peer)))
    t = time.perf_counter()
    static = ort_quantize_static(fp32.model_file, tmp / f"{key}-ort-static.onnx", cal.batches)
    row["quantize_s"]["ort_quantize_static"] = round(time.perf_counter() - t, 1)
    cands.append(Candidate(ORT_STATIC, "onnxruntime", str(static)))
    row["ort_graph"] = {E_ORT: ort_graph_profile(arts["cpu"].model_file), ORT_STATIC: ort_graph_profile(static)}
    return row, cands, ispec


def judge_network(run: dict) -> dict:
    """Per network: speed-ups over ORT FP32, the chosen runtime, and its verdicts against the two peers."""
    c = run["candidates"]
    out: dict = {"p50_ms": {lab: e.get("p50_ms") for lab, e in c.items()}, "failed": {}}
    out["failed"] = {lab: e["failed"] for lab, e in c.items() if e.get("failed")}
    out["speedup_vs_fp32"] = {lab: compare(run, lab, FP32).as_dict() for lab in c if lab != FP32}
    chosen = choose(run, [E_ORT, E_OV])
    out["chosen_runtime"] = chosen
    for key, peer in (("vs_openvino_int8_peer", PEER_OV), ("vs_ort_quantize_static", ORT_STATIC)):
        if chosen is None or peer not in c:
            out[key] = {"verdict": "inconclusive", "target": PEER_TARGET, "reasons": ["not measured"]}
        else:
            out[key] = judge(compare(run, chosen, peer), PEER_TARGET)
    return out


def markdown(rows: list[dict], env: dict, args) -> str:
    lines = [
        f"| network | input | ORT FP32 ms | INT8 speed-up over ORT FP32 [95% CI]: {E_ORT} | {E_OV} | {PEER_OV} | "
        f"{ORT_STATIC} | chosen | chosen vs OpenVINO peer (IQR): verdict | chosen vs ORT static (IQR): verdict "
        "| TensorRT rules |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        j = r["judged"]
        sp = j["speedup_vs_fp32"]
        cols = [fmt(sp[lab]) if lab in sp else "-" for lab in (E_ORT, E_OV, PEER_OV, ORT_STATIC)]
        verdicts = []
        for key in ("vs_openvino_int8_peer", "vs_ort_quantize_static"):
            v = j[key]
            iqr = f" ({v['iqr'][0]:.2f}-{v['iqr'][1]:.2f})" if v.get("iqr") else ""
            verdicts.append(f"{fmt(v)}{iqr}: **{v['verdict']}**")
        trt = r.get("tensorrt_layout")
        fp = j["p50_ms"].get(FP32)
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r['input']))} | {'-' if fp is None else f'{fp:.3f}'} | "
            + " | ".join(cols)
            + f" | {j['chosen_runtime']} | "
            + " | ".join(verdicts)
            + f" | {'-' if trt is None else ('pass' if trt['passed'] else 'FAIL')} |"
        )
    lines += [
        "",
        f"{env.get('cpu')} (flags: {', '.join(env.get('cpu_flags') or [])}), {args.threads or 'physical-core'} "
        "threads; random weights; every network in one as-deployed run (each candidate in its own process per "
        f"block, {args.cycles} cycles of {args.seconds} s blocks).",
    ]
    for r in rows:
        g = r["ort_graph"][E_ORT]
        if g["float_conv"]:
            lines.append(
                f"- {r['model']}: ONNX Runtime runs {g['float_conv']} of edgecnn INT8's convolutions in float "
                f"({g['qlinear_conv']} as QLinearConv, {g['dequantize']} DequantizeLinear, {g['transpose']} Transpose; "
                f"{g['per_channel_activation_quantizers']} per-channel activation quantizers in the file); "
                f"ORT quantize_static: {r['ort_graph'][ORT_STATIC]['float_conv']} float"
            )
        for lab, err in r["judged"]["failed"].items():
            lines.append(f"- {r['model']}: {lab} failed: {err}")
        for key in ("vs_openvino_int8_peer", "vs_ort_quantize_static"):
            if r["judged"][key]["reasons"]:
                lines.append(f"- {r['model']} {key}: {'; '.join(r['judged'][key]['reasons'])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, threads = bench_setup(parse_args, argv)
    rows, env, t_all = [], {}, time.perf_counter()
    for name in args.networks:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgecnn-bench-int8-zoo-") as tmp:
            row, cands, ispec = build_network(name, args, Path(tmp))
            run = run_from_args(cands, ispec, args, threads, progress=False)
        env = run["environment"]
        row |= {
            "as_deployed": for_disk(run),
            "judged": judge_network(run),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        j = row["judged"]
        print(
            f"{row['model']:30s} INT8 ORT {fmt(j['speedup_vs_fp32'].get(E_ORT, {}))} over FP32"
            f" | chosen {j['chosen_runtime']}"
            f" | vs OpenVINO peer {fmt(j['vs_openvino_int8_peer'])} {j['vs_openvino_int8_peer']['verdict']}"
            f" | vs ORT static {fmt(j['vs_ort_quantize_static'])} {j['vs_ort_quantize_static']['verdict']}",
            flush=True,
        )
    result = {
        "schema": "edgecnn.bench-int8-zoo/2",
        "smoke": bool(args.quick),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"threads": threads},
        "environment": env,
        "cpu_flags": env.get("cpu_flags"),
        "rows": rows,
        "int8_slower_than_fp32": [
            r["model"] for r in rows if (r["judged"]["speedup_vs_fp32"].get(E_ORT) or {}).get("point", 2) < 1.0
        ],
        "seconds": round(time.perf_counter() - t_all, 1),
        "note": "random weights; each network's candidates timed as deployed (own process per block) in one run; "
        "ratios are what to read" + ("; SMOKE RUN (--quick), not results" if args.quick else ""),
    }
    out = Path(args.out)
    write_results(out.stem, result, markdown(rows, env, args), out.parent)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
