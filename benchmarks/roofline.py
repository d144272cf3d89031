"""This CPU's INT8 roofline, and ResNet-50 INT8 latency as a fraction of it.

The roofline is MEASURED, not looked up: the peak multiply-accumulate rate this machine reaches on a large
matrix product, on the same thread count the models run with (default: physical cores), in the same
runtimes:

- INT8: ``MatMulInteger`` (uint8 x int8 -> int32) in ONNX Runtime, and in OpenVINO a Q/DQ ``MatMul`` and
  the same n x n x n product as a Q/DQ 1x1 convolution (n channels over 32 x n/32 pixels: the int8
  convolution kernels a quantized network runs; the Q/DQ MatMul measured ~0.4x of it on an AVX2 EPYC), for
  each of ``--sizes``; the best MAC/s over runtimes, forms and sizes is the INT8 peak. These are the
  kernels a quantized convolution ends in (im2col / 1x1 conv =
  GEMM), on the widest integer dot-product instructions the CPU has (AVX-512 VNNI / AVX-VNNI when the
  flags say so, else AVX2 ``vpmaddubsw``).
- FP32 likewise (``MatMul`` in both runtimes), for the ratio INT8 peak / FP32 peak.
- Memory bandwidth: a large numpy copy (bytes read + written per second), for the ridge point.

Each GEMM runs in its own child process (no runtime's threads linger into another's measurement); the
result of a size is the median of its calls after a warm-up. CPU flags (avx512_vnni, avx_vnni, avx2, ...)
and clocks (``cpu MHz`` from /proc/cpuinfo at the start and end, cpufreq limits where the kernel exposes
them) are recorded beside the peaks.

ResNet-50 INT8 latency is the p50 of edgecnn's INT8 in its chosen CPU runtime, either read from a
``bench_int8.py`` result (``--from-bench``, default ``benchmarks/results/int8_resnet50.json`` when it is a
schema-3 result) or measured here as deployed (own process per block, ``--cycles``). Its MACs come from
edgecnn's ``count_macs`` (the artifact manifest). Fraction of roofline = (MACs / latency) / INT8 peak.

    python benchmarks/roofline.py                  # writes benchmarks/results/roofline.{json,md}
    python benchmarks/roofline.py --quick          # smoke: small GEMMs, resnet18 @64; temp folder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, have_openvino, smoke_out, torch_artifact, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# GEMM graphs and the child that times one
# --------------------------------------------------------------------------------------------------
def gemm_model(kind: str, n: int, path: Path) -> Path:
    """An ONNX graph computing one n x n x n product: ``int8`` (MatMulInteger, uint8 x int8 weights),
    ``qdq`` (Q/DQ around a float MatMul), ``qconv`` (the same product as a Q/DQ 1x1 convolution: OpenVINO's
    int8 convolution kernels) or ``fp32`` (MatMul)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "int8":
        w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "W")
        nodes = [helper.make_node("MatMulInteger", ["X", "W"], ["Y"])]
        x_type, y_type, inits = TensorProto.UINT8, TensorProto.INT32, [w]
    elif kind in ("qdq", "qconv"):  # the MatMul's weights are [K, N] (per column), the 1x1 conv's [N, K, 1, 1]
        conv = kind == "qconv"
        w = numpy_helper.from_array(rng.integers(-127, 128, (n, n, 1, 1) if conv else (n, n), dtype=np.int8), "W")
        sw = numpy_helper.from_array(np.full(n, 0.01, np.float32), "sw")
        zw = numpy_helper.from_array(np.zeros(n, np.int8), "zw")
        sx = numpy_helper.from_array(np.array(0.02, np.float32), "sx")
        zx = numpy_helper.from_array(np.array(0 if conv else 128, np.uint8), "zx")  # conv input: after a ReLU
        nodes = [
            helper.make_node("QuantizeLinear", ["X", "sx", "zx"], ["Xq"]),
            helper.make_node("DequantizeLinear", ["Xq", "sx", "zx"], ["Xd"]),
            helper.make_node("DequantizeLinear", ["W", "sw", "zw"], ["Wd"], axis=0 if conv else 1),
            helper.make_node("Conv" if conv else "MatMul", ["Xd", "Wd"], ["Y"]),
        ]
        x_type, y_type, inits = TensorProto.FLOAT, TensorProto.FLOAT, [w, sw, zw, sx, zx]
    else:
        w = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "W")
        nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"])]
        x_type, y_type, inits = TensorProto.FLOAT, TensorProto.FLOAT, [w]
    shape = gemm_input_shape(kind, n)
    graph = helper.make_graph(
        nodes,
        f"gemm_{kind}_{n}",
        [helper.make_tensor_value_info("X", x_type, shape)],
        [helper.make_tensor_value_info("Y", y_type, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def gemm_input_shape(kind: str, n: int) -> list[int]:
    """``qconv`` is the n x n x n product as a 1x1 convolution (n channels in and out over 32 x n/32 pixels,
    the form a quantized network's GEMMs take in OpenVINO); the others are n x n matrices."""
    return [1, n, 32, n // 32] if kind == "qconv" else [n, n]


def child(job: dict) -> dict:
    """Time ``job['model']`` (an n x n x n product) in ``job['runtime']``: median seconds per call."""
    n, kind, threads = job["n"], job["kind"], job["threads"]
    rng, shape = np.random.default_rng(1), gemm_input_shape(kind, n)
    if kind == "int8":
        x = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "qconv":
        x = rng.uniform(0, 5, shape).astype(np.float32)  # non-negative, as after a ReLU: uint8 with zero point 0
    else:
        x = rng.standard_normal(shape, dtype=np.float32)
    if job["runtime"] == "onnxruntime":
        from edgecnn.runtime.onnxrt import create_session

        sess = create_session(job["model"], threads=threads, spinning=False)
        run = lambda: sess.run(None, {"X": x})  # noqa: E731
    else:
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
        }
        req = ov.Core().compile_model(job["model"], "CPU", config).create_infer_request()
        run = lambda: req.infer({0: x}, share_inputs=True)  # noqa: E731
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < job["warmup_s"]:
        run()
    times = []
    t0 = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - t0 < job["seconds"]:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"median_s": float(np.median(times)), "calls": len(times)}


def time_gemm(runtime: str, kind: str, n: int, work: Path, *, threads: int, seconds: float, warmup_s: float) -> dict:
    model = gemm_model(kind, n, work / f"{kind}-{n}.onnx")
    job = {
        "runtime": runtime,
        "kind": kind,
        "n": n,
        "model": str(model),
        "threads": threads,
        "seconds": seconds,
        "warmup_s": warmup_s,
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    row = {"runtime": runtime, "kind": kind, "n": n, "macs": n**3}
    if proc.returncode != 0:
        return row | {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return row | res | {"gmac_per_s": n**3 / res["median_s"] / 1e9}


# --------------------------------------------------------------------------------------------------
# machine facts
# --------------------------------------------------------------------------------------------------
def clocks() -> dict:
    mhz = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            mhz = [float(line.split(":", 1)[1]) for line in fh if line.startswith("cpu MHz")]
    except OSError:
        pass
    out: dict = {"cpu_mhz": mhz}
    base = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    for name in ("scaling_max_freq", "cpuinfo_max_freq", "scaling_cur_freq"):
        f = base / name
        if f.is_file():
            out[name + "_mhz"] = int(f.read_text().strip()) / 1000
    return out


def memory_bandwidth(seconds: float, mb: int = 256) -> float:
    """GB/s of a large array copy (bytes read + written)."""
    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    times = []
    t0 = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t)
    return 2 * a.nbytes / min(times) / 1e9


def measure_peaks(args, threads: int) -> dict:
    runtimes = ["onnxruntime"] + (["openvino"] if have_openvino() else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-roofline-") as tmp:
        for n in args.sizes:
            for rt in runtimes:
                for kind in ("int8", "fp32") if rt == "onnxruntime" else ("qdq", "qconv", "fp32"):
                    row = time_gemm(rt, kind, n, Path(tmp), threads=threads, seconds=args.seconds, warmup_s=args.warmup)
                    rows.append(row)
                    print(
                        f"  {rt:12s} {kind:5s} n={n:5d} " + (row.get("error") or f"{row['gmac_per_s']:8.1f} GMAC/s"),
                        flush=True,
                    )
    ok = [r for r in rows if "gmac_per_s" in r]
    int8 = max((r for r in ok if r["kind"] in ("int8", "qdq", "qconv")), key=lambda r: r["gmac_per_s"], default=None)
    fp32 = max((r for r in ok if r["kind"] == "fp32"), key=lambda r: r["gmac_per_s"], default=None)
    return {"gemm": rows, "int8_peak": int8, "fp32_peak": fp32}


# --------------------------------------------------------------------------------------------------
# the model's latency
# --------------------------------------------------------------------------------------------------
def model_latency(args, threads: int) -> dict:
    """p50 of edgecnn's INT8 in its chosen runtime and the model's MACs: from a bench_int8 result, or measured."""
    src = Path(args.from_bench) if args.from_bench else None
    if src is not None and src.is_file():
        d = json.loads(src.read_text(encoding="utf-8"))
        if d.get("schema") == "edgecnn.bench-int8/3" and not d.get("smoke"):
            chosen = d["targets"]["chosen_runtime"]
            e = d["as_deployed"]["candidates"][chosen]
            return {
                "source": str(src),
                "model": d["settings"]["model"],
                "size": d["settings"]["size"],
                "runtime": chosen,
                "p50_ms": e["p50_ms"],
                "p50_ci_ms": e["p50_ci_ms"],
                "macs": d["macs"],
            }
        if args.from_bench_required:
            sys.exit(f"{src} is not a full bench_int8.py schema-3 result; run bench_int8.py first.")
    return _measure_model(args, threads)


def _measure_model(args, threads: int) -> dict:
    from _asdeployed import Candidate, choose, run_from_args

    from edgecnn.compress.quantize import QuantizeOptions, quantize
    from edgecnn.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgecnn-roofline-model-") as tmp:
        tmp = Path(tmp)
        src, _ = torch_artifact(args.model, tmp / "torch", size=args.size)
        ispec = src.input
        fp32 = export_onnx(src, tmp / "fp32", progress=False)
        int8 = quantize(
            fp32, tmp / "int8", QuantizeOptions(calib=args.calib, subset_size=args.subset, target="cpu"), progress=False
        )
        cands = [Candidate("edgecnn INT8 (ORT)", "onnxruntime", str(int8.model_file))]
        if have_openvino():
            cands.append(Candidate("edgecnn INT8 (OpenVINO)", "openvino", str(int8.path)))
        run = run_from_args(cands, ispec, args, threads, seconds=args.model_seconds, progress=False)
    chosen = choose(run, [c.label for c in cands])
    e = run["candidates"][chosen]
    return {
        "source": "measured here as deployed",
        "model": args.model,
        "size": args.size,
        "runtime": chosen,
        "p50_ms": e["p50_ms"],
        "p50_ci_ms": e["p50_ci_ms"],
        "macs": src.manifest["metrics"]["macs"],
        "load_average": run["load_average"],
        "cores": run["cores"],
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="this CPU's INT8 roofline and ResNet-50 INT8 as a fraction of it")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="GEMM sides (default 512 1024 2048)")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per GEMM (default 3)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="default: physical cores")
    ap.add_argument("--model", default=None, help="zoo model (default resnet50; --quick: resnet18)")
    ap.add_argument("--size", type=int, default=None, help="input side (default 224; --quick: 64)")
    ap.add_argument("--calib", default=str(ROOT / "calibration"))
    ap.add_argument("--subset", type=int, default=32)
    ap.add_argument("--cycles", type=int, default=None, help="cycles when the model is measured here (default 5)")
    ap.add_argument("--model-seconds", type=float, default=None, help="seconds per model block (default 3)")
    ap.add_argument("--from-bench", default=None, help="bench_int8.py result JSON to take the latency from")
    ap.add_argument("--quick", action="store_true", help="smoke run; never writes into benchmarks/results/")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/roofline.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    full = {
        "sizes": [512, 1024, 2048],
        "seconds": 3.0,
        "warmup": 1.0,
        "model": "resnet50",
        "size": 224,
        "cycles": 5,
        "model_seconds": 3.0,
    }
    quick = {
        "sizes": [128, 256],
        "seconds": 0.2,
        "warmup": 0.05,
        "model": "resnet18",
        "size": 64,
        "cycles": 2,
        "model_seconds": 0.2,
        "subset": 8,
    }
    args.from_bench_required = args.from_bench is not None
    if args.from_bench is None and not args.quick:
        args.from_bench = str(RESULTS / "int8_resnet50.json")
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None or (args.quick and k == "subset"):
            setattr(args, k, v)
    if any(n < 32 or n % 32 or n > 8192 for n in args.sizes):
        ap.error(
            "--sizes must be multiples of 32 from 32 to 8192 (1x1 convolution form: 32 x n/32 pixels); "
            f"got {args.sizes}"
        )
    args.out = smoke_out(args.quick, args.out, RESULTS / "roofline.json", "roofline.json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from edgecnn.bench import physical_cores
    from edgecnn.envinfo import cpu_flags, cpu_model, fingerprint

    threads = args.threads or physical_cores()
    t0 = time.perf_counter()
    load_start, clocks_start = os.getloadavg(), clocks()
    peaks = measure_peaks(args, threads)
    bw = memory_bandwidth(args.seconds)
    lat = model_latency(args, threads)
    load_end, clocks_end = os.getloadavg(), clocks()
    int8_peak = peaks["int8_peak"]["gmac_per_s"] if peaks["int8_peak"] else None
    achieved = lat["macs"] / (lat["p50_ms"] / 1e3) / 1e9
    result = {
        "schema": "edgecnn.roofline/1",
        "smoke": bool(args.quick),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "int8_instructions": _int8_isa(cpu_flags()),
        "threads": threads,
        "clocks": {"start": clocks_start, "end": clocks_end},
        "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in load_end]},
        "peaks": peaks,
        "int8_peak_gmac_per_s": int8_peak,
        "fp32_peak_gmac_per_s": peaks["fp32_peak"]["gmac_per_s"] if peaks["fp32_peak"] else None,
        "memory_bandwidth_gb_per_s": bw,
        "model": lat,
        "model_achieved_gmac_per_s": achieved,
        "fraction_of_int8_roofline": achieved / int8_peak if int8_peak else None,
        "environment": fingerprint(with_gpu=False),
        "seconds": round(time.perf_counter() - t0, 1),
        "method": __doc__.split("\n\n")[1],
    }
    out = Path(args.out)
    write_results(out.stem, result, markdown(result), out.parent)
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def _int8_isa(flags: list[str]) -> str:
    if "amx_int8" in flags:
        return "AMX-INT8"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI (vpdpbusd)"
    if "avx_vnni" in flags:
        return "AVX-VNNI (vpdpbusd, 256-bit)"
    return "AVX2 (vpmaddubsw + vpmaddwd, no VNNI)" if "avx2" in flags else "no AVX2"


def markdown(r: dict) -> str:
    p8, p32, m = r["peaks"]["int8_peak"], r["peaks"]["fp32_peak"], r["model"]
    frac = r["fraction_of_int8_roofline"]
    lines = [
        f"{r['cpu']}, {r['threads']} threads, flags {', '.join(r['cpu_flags'])} -> int8 via {r['int8_instructions']}; "
        f"cpu MHz {r['clocks']['start'].get('cpu_mhz')}; "
        f"load {r['load_average']['start']} -> {r['load_average']['end']}",
        "",
        "| GEMM | runtime | n | GMAC/s |",
        "|---|---|---|---|",
    ]
    for g in r["peaks"]["gemm"]:
        lines.append(f"| {g['kind']} | {g['runtime']} | {g['n']} | {g.get('gmac_per_s', float('nan')):.1f} |")
    lines += [
        "",
        f"INT8 peak {p8['gmac_per_s']:.1f} GMAC/s ({p8['runtime']} {p8['kind']}, n={p8['n']}); "
        if p8
        else "INT8 peak: -; ",
    ]
    if p32:
        lines[-1] += f"FP32 peak {p32['gmac_per_s']:.1f} GMAC/s ({p32['runtime']}, n={p32['n']}); "
    lines[-1] += f"memory copy {r['memory_bandwidth_gb_per_s']:.1f} GB/s."
    lines += [
        "",
        f"{m['model']} @{m['size']} INT8 ({m['runtime']}, {m['source']}): p50 {m['p50_ms']:.3f} ms, "
        f"{m['macs'] / 1e9:.3f} GMAC -> {r['model_achieved_gmac_per_s']:.1f} GMAC/s = "
        + (f"**{100 * frac:.0f} % of the measured INT8 roofline**." if frac else "-"),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
