"""Latency "as deployed": every runtime in its OWN process, processes alternating over several cycles.

Why not one process. ``bench_int8.py`` used to time OpenVINO in the same process right after a spinning
ONNX Runtime session; the ORT worker threads kept spinning after their block and slowed OpenVINO
(median 9.7 ms per OpenVINO call after an ORT block against 5.7 ms after an OpenVINO block). A deployed
model has its process to itself, so that is how it is measured here: for every cycle, every candidate
gets a fresh child process (``python _asdeployed.py --child JOB``) that loads the model, warms up, times
``seconds`` of calls on the same input and writes its samples as JSON. The order is rotated each cycle
(A B C, B C A, C A B, ...: no candidate always runs first or last) and consecutive cycles alternate the
processes A B A B ..., so slow drift of the machine hits every candidate alike.

The ratio of two candidates is :data:`edgecnn.estimator.RATIO_ESTIMATOR` (:func:`edgecnn.stats.ratio_estimate`)
over the cycles: a cycle's ratio is one candidate's block median over the other's in the same cycle,
the interval the order-statistic 95 % interval of the median, cross-checked against the ratio of the
pooled p50s and flagged when multi-modal. A verdict on a target (:func:`judge`) is one of ``met``,
``not met`` or ``inconclusive`` by edgecnn's gate rule (:func:`edgecnn.check.decision.decide`: the whole
interval on one side of the target, else inconclusive), and it is ``inconclusive`` outright when

- the value is a product of ratios from different runs (not a measurement of anything deployed);
- a block of either candidate collapsed: its p50 is over :data:`COLLAPSE_FACTOR` x that candidate's own
  median over all blocks (one run had torch at p50 418 ms instead of ~127 ms and still printed met);
- the 1-minute load average exceeded the core count before or after a block of either candidate;
- the cycles are multi-modal (some cycles caught one candidate busy), or a candidate failed.

The load average before and after every block and the CPU flags are in the result.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "edgecnn.bench-as-deployed/1"
#: a block whose p50 is above this many times the candidate's own median block p50 has collapsed
COLLAPSE_FACTOR = 1.5
RUNTIMES = ("torch", "onnxruntime", "openvino")
VERDICTS = ("met", "not met", "inconclusive")


@dataclass(frozen=True)
class Candidate:
    """One thing to time as deployed. ``model``: a torch artifact folder (torch), an ONNX file
    (onnxruntime, openvino), an onnx artifact folder (openvino: through edgecnn's OpenVINO runner) or an
    OpenVINO IR .xml (openvino). ``options``: onnxruntime ``spinning``
    (None = ONNX Runtime's default, which is what a deployed session uses); openvino ``precision``
    (``f32`` pins the float parts to f32, ``model`` keeps the plugin's default)."""

    label: str
    runtime: str
    model: str
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")


# --------------------------------------------------------------------------------------------------
# the child: load, warm up, time, write samples
# --------------------------------------------------------------------------------------------------
def _load_torch(model: str, threads: int, options: dict):
    import torch

    from edgecnn.runtime import open_runner

    torch.set_num_threads(threads)
    runner = open_runner(model, threads=threads)
    return runner.infer, {"runtime": "torch", "version": torch.__version__, "description": runner.description}


def _load_onnxruntime(model: str, threads: int, options: dict):
    import onnxruntime as ort

    from edgecnn.runtime.onnxrt import create_session

    spinning = options.get("spinning")
    sess = create_session(model, threads=threads, spinning=spinning)
    name = sess.get_inputs()[0].name
    spin = "ONNX Runtime default (on)" if spinning is None else ("on" if spinning else "off")
    return (lambda x: sess.run(None, {name: x})[0]), {
        "runtime": "onnxruntime",
        "version": ort.__version__,
        "description": f"onnxruntime {ort.__version__} CPU (intra-op threads {threads}, spinning {spin})",
    }


def _load_openvino(model: str, threads: int, options: dict, shape: tuple[int, ...]):
    """An edgecnn artifact folder runs through edgecnn's own OpenVINO runner (what ``--runtime openvino``
    and a bundle use); a bare file (the peer's IR) through plain ``openvino.Core`` with the same settings."""
    import openvino as ov

    if Path(model).is_dir():
        from edgecnn.runtime import open_runner

        precision = {"f32": "fp32", "bf16": "bf16"}.get(options.get("precision", "f32"), "fp32")
        runner = open_runner(model, threads=threads, runtime="openvino", precision=precision)
        return runner.infer, {
            "runtime": "openvino",
            "version": runner.version,
            "description": f"edgecnn {runner.description}",
            "config": runner.settings,
        }
    core = ov.Core()
    net = core.read_model(model)
    net.reshape({net.inputs[0].any_name: list(shape)})
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if options.get("precision", "f32") == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(net, "CPU", config)
    request = compiled.create_infer_request()
    used = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    used = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(
        used.split("'")[1] if "'" in used else used, used
    )

    def infer(x):
        request.infer({0: x}, share_inputs=True)
        return request.get_output_tensor(0).data

    version = ov.get_version().split("-")[0]
    return infer, {
        "runtime": "openvino",
        "version": version,
        "description": f"openvino {version} CPU (threads {threads}, LATENCY, 1 stream, inference precision "
        f"{used}, static shape)",
        "config": {k: str(v) for k, v in config.items()},
    }


def child_main(job_path: str) -> int:
    """Run one timing job (a JSON file written by :func:`run_block`) and write its result JSON."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    cand, threads = job["candidate"], int(job["threads"])
    x = np.ascontiguousarray(np.load(job["inputs"]), dtype=np.float32)
    t0 = time.perf_counter()
    if cand["runtime"] == "openvino":
        infer, info = _load_openvino(cand["model"], threads, cand["options"], x.shape)
    else:
        infer, info = {"torch": _load_torch, "onnxruntime": _load_onnxruntime}[cand["runtime"]](
            cand["model"], threads, cand["options"]
        )
    load_s = time.perf_counter() - t0
    t0, warm = time.perf_counter(), 0
    while warm < 3 or time.perf_counter() - t0 < job["warmup_s"]:
        infer(x)
        warm += 1
    samples: list[float] = []
    gc.disable()
    t_start = time.perf_counter()
    while len(samples) < job["max_calls"] and (
        len(samples) < job["min_calls"] or time.perf_counter() - t_start < job["seconds"]
    ):
        t = time.perf_counter()
        infer(x)
        samples.append((time.perf_counter() - t) * 1e3)
    gc.enable()
    result = info | {
        "samples_ms": [round(s, 4) for s in samples],
        "load_s": round(load_s, 3),
        "warmup_calls": warm,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pid": os.getpid(),
    }
    tmp = Path(job["out"] + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(job["out"])
    return 0


# --------------------------------------------------------------------------------------------------
# the parent: cycles of child processes
# --------------------------------------------------------------------------------------------------
def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def run_block(cand: Candidate, work: Path, *, inputs: Path, threads: int, settings: dict, tag: str) -> dict:
    """One child process for ``cand``; the block record (samples, load average before/after, or the error)."""
    job = {
        "candidate": asdict(cand),
        "threads": threads,
        "inputs": str(inputs),
        "out": str(work / f"{tag}.result.json"),
        **{k: settings[k] for k in ("warmup_s", "seconds", "min_calls", "max_calls")},
    }
    job_file = work / f"{tag}.job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    block = {"label": cand.label, "load_before": load_average()}
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(job_file)],
            capture_output=True,
            text=True,
            timeout=settings["timeout_s"],
            env=os.environ | {"NNCF_CI": "1"},
        )
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {settings['timeout_s']} s"
    block["wall_s"] = round(time.perf_counter() - t, 2)
    block["load_after"] = load_average()
    out = Path(job["out"])
    if rc == 0 and out.is_file():
        block.update(json.loads(out.read_text(encoding="utf-8")))
        block["p50_ms"] = float(np.median(block["samples_ms"]))
    else:
        tail = " | ".join((err or "").strip().splitlines()[-3:])[-400:]
        block["error"] = f"child exit {rc}" + (" (killed by a signal)" if rc is not None and rc < 0 else "")
        block["error"] += f": {tail}" if tail else ""
    return block


def run_as_deployed(
    candidates: list[Candidate],
    inputs: np.ndarray,
    *,
    cycles: int = 9,
    seconds: float = 3.0,
    warmup_s: float = 1.0,
    threads: int = 2,
    min_calls: int = 10,
    max_calls: int = 100_000,
    timeout_s: float = 600.0,
    progress: bool = True,
) -> dict:
    """Time every candidate in its own process, ``cycles`` times, order rotated per cycle; see the module."""
    if len({c.label for c in candidates}) != len(candidates):
        raise ValueError("candidate labels must be unique")
    settings = {
        "cycles": int(cycles),
        "seconds": float(seconds),
        "warmup_s": float(warmup_s),
        "threads": int(threads),
        "min_calls": int(min_calls),
        "max_calls": int(max_calls),
        "timeout_s": float(timeout_s),
        "batch": int(inputs.shape[0]),
        "input": list(inputs.shape[1:]),
    }
    blocks: list[dict] = []
    failed: set[str] = set()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecnn-as-deployed-") as tmp:
        work = Path(tmp)
        x_path = work / "inputs.npy"
        np.save(x_path, np.ascontiguousarray(inputs, dtype=np.float32))
        for cycle in range(cycles):
            k = cycle % len(candidates)
            for i, cand in enumerate(candidates[k:] + candidates[:k]):
                if cand.label in failed:
                    continue
                tag = f"c{cycle}-{i}"
                block = run_block(cand, work, inputs=x_path, threads=threads, settings=settings, tag=tag)
                block["cycle"] = cycle
                blocks.append(block)
                if "error" in block:
                    failed.add(cand.label)
                if progress:
                    what = block.get("error") or f"p50 {block['p50_ms']:.3f} ms"
                    print(
                        f"  cycle {cycle + 1}/{cycles} {cand.label:40s} {what}  load {block['load_after']}", flush=True
                    )
    return summarise(blocks, candidates, settings, seconds_total=time.perf_counter() - t_start)


def run_from_args(candidates: list[Candidate], input_spec, args, threads: int, *, seconds=None, progress=True) -> dict:
    """The benchmarks' one preamble: batch-1 inputs for ``input_spec`` and ``run_as_deployed`` with the
    script's ``--cycles`` / ``--seconds`` / ``--warmup`` (``seconds`` overrides the timed seconds)."""
    from edgecnn.bench import bench_inputs

    return run_as_deployed(
        candidates,
        bench_inputs(input_spec, 1),
        cycles=args.cycles,
        seconds=args.seconds if seconds is None else seconds,
        warmup_s=args.warmup,
        threads=threads,
        progress=progress,
    )


def for_disk(run: dict) -> dict:
    """``run`` as a results file keeps it: every block's raw samples replaced by their count and p10 / p50 / p90
    (a 0.05 ms network gives ~40,000 samples a block: the zoo's JSON was 14 MB). The verdicts need only the
    block p50s and the pooled p50 interval, both kept."""
    blocks = []
    for b in run.get("blocks", []):
        b = dict(b)
        samples = b.pop("samples_ms", None)
        if samples:
            q = np.percentile(np.asarray(samples, dtype=np.float64), [10, 50, 90])
            b["samples"] = {"n": len(samples), "p10_ms": float(q[0]), "p50_ms": float(q[1]), "p90_ms": float(q[2])}
        blocks.append(b)
    return run | {"blocks": blocks}


def summarise(blocks: list[dict], candidates: list[Candidate], settings: dict, *, seconds_total: float = 0.0) -> dict:
    """The run's JSON: settings, environment (CPU flags, cores), load averages, blocks, and per candidate its
    pooled p50 with interval, block p50s by cycle, collapsed blocks and high-load blocks."""
    from edgecnn import stats
    from edgecnn.envinfo import fingerprint

    cores = os.cpu_count() or 1
    cands = {}
    for c in candidates:
        mine = [b for b in blocks if b["label"] == c.label]
        ok = [b for b in mine if "error" not in b]
        entry: dict = {"runtime": c.runtime, "model": Path(c.model).name, "options": c.options}
        entry["failed"] = next((b["error"] for b in mine if "error" in b), None)
        entry["description"] = ok[0].get("description") if ok else None
        entry["block_p50_ms"] = {str(b["cycle"]): b["p50_ms"] for b in ok}
        loads = [v for b in mine for v in (b.get("load_before"), b.get("load_after")) if v is not None]
        entry["max_load"] = max(loads) if loads else None
        entry["high_load_blocks"] = sorted(
            {b["cycle"] for b in mine if _max_load(b) is not None and _max_load(b) > cores}
        )
        if ok:
            pooled = np.concatenate([np.asarray(b["samples_ms"], dtype=np.float64) for b in ok])
            p50 = stats.median_interval(pooled)
            own = float(np.median([b["p50_ms"] for b in ok]))
            entry.update(
                p50_ms=p50.point,
                p50_ci_ms=[p50.low, p50.high],
                p90_ms=float(np.percentile(pooled, 90)),
                calls=int(pooled.size),
                median_block_p50_ms=own,
                collapsed_blocks=[b["cycle"] for b in ok if b["p50_ms"] > COLLAPSE_FACTOR * own],
                peak_rss_mb=max(b.get("peak_rss_mb") or 0 for b in ok),
            )
        cands[c.label] = entry
    env = fingerprint(with_gpu=False)
    return {
        "schema": SCHEMA,
        "run_id": uuid.uuid4().hex[:12],
        "method": "each candidate in its own process per block; cycles of processes, order rotated each cycle",
        "settings": settings,
        "environment": env,
        "cpu_flags": env.get("cpu_flags"),
        "cores": cores,
        "load_average": {
            "first": blocks[0].get("load_before") if blocks else None,
            "last": blocks[-1].get("load_after") if blocks else None,
            "max": max((_max_load(b) for b in blocks if _max_load(b) is not None), default=None),
        },
        "candidates": cands,
        "blocks": blocks,
        "seconds": round(seconds_total, 1),
    }


def _max_load(block: dict) -> float | None:
    vals = [v for v in (block.get("load_before"), block.get("load_after")) if v is not None]
    return max(vals) if vals else None


# --------------------------------------------------------------------------------------------------
# ratios and verdicts
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """How many times faster ``label`` is than ``reference`` (reference latency / label latency), with the
    estimator's interval, the interquartile range of the per-cycle values, and what makes it unjudgeable.
    ``runs``: the run ids it was measured in - exactly one for a measurement."""

    label: str
    reference: str
    point: float | None
    low: float | None
    high: float | None
    iqr: tuple[float, float] | None
    cycles: int
    runs: frozenset
    flags: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        d = asdict(self)
        d["runs"] = sorted(self.runs)
        d["estimator"] = "reference / candidate latency = 1 / (median of per-cycle ratios)"
        return d


def compare(run: dict, label: str, reference: str) -> Comparison:
    """``label`` against ``reference`` in one as-deployed run (see :class:`Comparison`)."""
    from edgecnn import stats
    from edgecnn.estimator import MULTIMODAL

    a, r = run["candidates"][label], run["candidates"][reference]
    problems = []
    for who, e in ((label, a), (reference, r)):
        if e.get("failed"):
            problems.append(f"{who} failed: {e['failed']}")
        if e.get("collapsed_blocks"):
            problems.append(
                f"{who} collapsed in cycle(s) {e['collapsed_blocks']}: block p50 above {COLLAPSE_FACTOR}x its own "
                f"median block p50 {e['median_block_p50_ms']:.4g} ms"
            )
        if e.get("high_load_blocks"):
            problems.append(
                f"load average above the {run['cores']} cores around {who}'s block(s) in cycle(s) "
                f"{e['high_load_blocks']} (max {e['max_load']})"
            )
    shared = sorted(set(a.get("block_p50_ms", {})) & set(r.get("block_p50_ms", {})), key=int)
    if not shared:
        problems.append("no cycle timed both")
        return Comparison(label, reference, None, None, None, None, 0, frozenset({run["run_id"]}), (), tuple(problems))
    est = stats.ratio_estimate(
        [a["block_p50_ms"][k] for k in shared],
        [r["block_p50_ms"][k] for k in shared],
        model_p50=stats.Interval(a["p50_ms"], *a["p50_ci_ms"], 0.95, "p50"),
        reference_p50=stats.Interval(r["p50_ms"], *r["p50_ci_ms"], 0.95, "p50"),
    )
    sp = est.speedup()
    per_cycle = [r["block_p50_ms"][k] / a["block_p50_ms"][k] for k in shared]
    iqr = (float(np.percentile(per_cycle, 25)), float(np.percentile(per_cycle, 75)))
    if MULTIMODAL in est.flags:
        problems.append(f"multi-modal cycles ({'; '.join(est.notes(label, reference))})")
    return Comparison(
        label,
        reference,
        sp.point,
        sp.low,
        sp.high,
        iqr,
        len(shared),
        frozenset({run["run_id"]}),
        est.flags,
        tuple(problems),
    )


def product(a: Comparison, b: Comparison) -> Comparison:
    """``a`` x ``b`` (e.g. a speed-up from one run times a gain from another). Kept only so that such a
    number can be shown for what it is: :func:`judge` never calls it met."""
    runs = a.runs | b.runs
    vals = [a.point, b.point, a.low, b.low, a.high, b.high]
    point, low, high = (None, None, None) if None in vals else (a.point * b.point, a.low * b.low, a.high * b.high)
    return Comparison(
        a.label,
        a.reference,
        point,
        low,
        high,
        None,
        min(a.cycles, b.cycles),
        runs,
        a.flags + b.flags,
        a.problems + b.problems,
    )


def judge(c: Comparison, target: float) -> dict:
    """``met`` / ``not met`` / ``inconclusive`` for "``c.label`` is at least ``target`` times as fast as
    ``c.reference``" (see the module docstring for when it is inconclusive whatever the value)."""
    from edgecnn.check.decision import decide

    reasons = list(c.problems)
    if len(c.runs) != 1:
        reasons.insert(0, f"a product of ratios from {len(c.runs)} different runs is not a measurement")
    if c.point is None:
        reasons.append("no value")
    if reasons:
        verdict = "inconclusive"
    else:
        status = decide(c.point, target, ">=", c.low, c.high)
        verdict = {"pass": "met", "fail": "not met"}.get(status, "inconclusive")
        if verdict == "inconclusive":
            reasons.append(f"the 95% interval [{c.low:.3g}, {c.high:.3g}] contains the target {target}")
    return {"verdict": verdict, "target": target, "reasons": reasons} | c.as_dict()


def fmt(c: Comparison | dict) -> str:
    """``3.41x [3.30-3.52]`` (point [95% interval]), or ``-``."""
    d = c.as_dict() if isinstance(c, Comparison) else c
    if d.get("point") is None:
        return "-"
    return f"{d['point']:.2f}x [{d['low']:.2f}-{d['high']:.2f}]"


def choose(run: dict, labels: list[str]) -> str | None:
    """Of ``labels`` (the same model in different runtimes), the one with the lowest pooled p50 in this run."""
    ok = [lab for lab in labels if run["candidates"].get(lab, {}).get("p50_ms") is not None]
    return min(ok, key=lambda lab: run["candidates"][lab]["p50_ms"]) if ok else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="child process of the as-deployed benchmarks (internal)")
    ap.add_argument("--child", required=True, help="job JSON written by run_block")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    return child_main(args.child)


if __name__ == "__main__":
    sys.exit(main())
