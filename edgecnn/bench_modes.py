"""``edgecnn bench`` beside latency: the runtime each onnx artifact runs in (``--runtime``), the peak memory
of a fresh process that loads and runs the model, and a throughput mode (batch > 1, several streams).

Peak memory is the RSS high-water mark of a new Python process that loads one candidate in one runtime and
runs it a few times: an onnx artifact's file goes straight into OpenVINO, or into ONNX Runtime through
edgecnn's one session factory (a light module, no torch), with the runner's own settings - about what a
deployed bundle holds; a torch artifact through edgecnn. It is
``VmHWM`` of /proc/self/status, not ``ru_maxrss``: Linux carries the parent's RSS at fork into a child's
``ru_maxrss`` across exec (a 900 MiB benchmarking process made every child read 900 MiB), while VmHWM
belongs to the new process alone (``ru_maxrss`` where there is no /proc). The process also reports its
high-water mark before importing the runtime, so the runtime + model share is visible. Nothing of the
benchmarking process (other candidates, caches, the data) is counted.

Throughput mode keeps several inferences in flight at once: OpenVINO with the THROUGHPUT hint, ``streams``
streams and an AsyncInferQueue; ONNX Runtime (and torch) with ``streams`` Python threads calling one
session concurrently, each with ``threads // streams`` intra-op threads. Candidates run in alternating
rounds and the median images/s of the rounds is reported with every round's value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .artifact import Artifact
from .bench import bench_inputs, measure_latency, physical_cores, ratio_between
from .data.source import DataSource
from .errors import InvalidInput, OptionError
from .runtime_choice import RUNTIMES, applies, open_in, record_choice

THROUGHPUT_ROUNDS = 3
MEMORY_RUNS = 5
MEMORY_TIMEOUT_S = 600

_CHILD = r"""
import json, resource, sys
def hwm_kib():
    # VmHWM: this process's own high-water mark; ru_maxrss also carries the parent's RSS at fork across exec
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
a = json.loads(sys.argv[1])
import numpy as np
x = np.zeros(a["shape"], np.float32)
before = hwm_kib()
if a["runtime"] == "openvino":
    import openvino as ov
    core = ov.Core()
    model = core.read_model(a["file"])
    if a["reshape"]:
        model.reshape({model.inputs[0].any_name: a["shape"]})
    request = core.compile_model(model, "CPU", a["config"]).create_infer_request()
    run = lambda: request.infer({0: x})
elif a["runtime"] == "onnxruntime":
    from edgecnn.runtime.onnxrt import create_session  # the one session factory (no torch behind it)
    session = create_session(a["file"], threads=a["threads"], spinning=a["spinning"])
    feed = {session.get_inputs()[0].name: x}
    run = lambda: session.run(None, feed)
else:
    from edgecnn.runtime_choice import open_in
    runner = open_in(a["path"], None, threads=a["threads"])
    run = lambda: runner.infer(x)
for _ in range(a["runs"]):
    run()
peak = hwm_kib()
print("edgecnn-peak-rss " + json.dumps({"peak_kib": peak, "before_load_kib": before}))
"""


class _Item:
    """One candidate of a bench run: an artifact in a runtime (or a caller's runner-like object)."""

    def __init__(self, art: Artifact | None, runtime: str | None, runner=None):
        self.art, self.runtime, self.runner = art, runtime, runner


def _expand(artifacts: Sequence, runtime: str | None) -> list[_Item]:
    items = []
    for a in artifacts:
        if hasattr(a, "infer") and callable(a.infer):
            items.append(_Item(getattr(a, "artifact", None), None, a))
            continue
        art = a if isinstance(a, Artifact) else Artifact.load(a)
        if not applies(art, runtime):
            items.append(_Item(art, None))
        elif runtime == "auto":
            items += [_Item(art, rt) for rt in RUNTIMES]
        else:
            items.append(_Item(art, runtime))
    return items


def _label(item: _Item) -> str:
    if item.runner is not None:
        return getattr(item.runner, "label", None) or type(item.runner).__name__
    art = item.art
    return f"{art.path.name} ({art.format} {art.precision}{', ' + item.runtime if item.runtime else ''})"


def run_bench(
    artifacts: Sequence,
    *,
    runtime: str | None = None,
    memory: bool = True,
    throughput_batch: int | None = 8,
    streams: int = 2,
    labels: Sequence[str] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    ort_spinning: bool = False,
    **latency,
) -> dict:
    """:func:`edgecnn.bench.measure_latency` of ``artifacts`` (each onnx one in ``runtime``; ``auto``: in both,
    with the faster named per artifact in ``runtime_choices``), plus ``memory`` (peak RSS of a fresh process
    per candidate) and ``throughput_mode`` (batch ``throughput_batch``, ``streams`` in flight) when asked."""
    items = _expand(artifacts, runtime)
    names = list(labels) if labels is not None else [_label(i) for i in items]
    if labels is not None and len(labels) != len(items):
        raise OptionError(f"{len(labels)} labels for {len(items)} artifacts; give one --label per artifact.")
    threads = int(threads or physical_cores())
    runners = []
    try:
        for it in items:
            opts = {"spinning": True} if ort_spinning and it.runtime in (None, "onnxruntime") else {}
            if it.art is not None and it.art.format != "onnx":
                opts = {}
            runners.append(it.runner or open_in(it.art, it.runtime, device=device, threads=threads, **opts))
        result = measure_latency(runners, labels=names, threads=threads, device=device, **latency)
        for cand, r in zip(result["candidates"], runners):
            cand["runtime"] = getattr(r, "kind", None)
            cand["runner_settings"] = getattr(r, "settings", None)
    finally:
        for it, r in zip(items, runners):
            if it.runner is None:
                r.close()
    names = [c["label"] for c in result["candidates"]]  # made unique by measure_latency
    if runtime == "auto":
        result["runtime_choices"] = _choices(result, items, names)
    result["settings"].update(runtime=runtime, streams=streams, throughput_batch=throughput_batch)
    if memory:
        result["memory"] = [_peak_memory(it, r, name, threads) for it, r, name in zip(items, runners, names)]
    if throughput_batch:
        data = latency.get("data", "digits")
        result["throughput_mode"] = measure_throughput(
            items, names, batch=throughput_batch, streams=streams, threads=threads, data=data, device=device
        )
    return result


def _choices(result: dict, items: list[_Item], names: list[str]) -> list[dict]:
    """Per onnx artifact measured in both runtimes: the faster at each batch size, from the same rounds."""
    out = []
    by = {(r["label"], r["batch_size"]): r for r in result["results"]}
    for i, it in enumerate(items):
        if it.runtime != "onnxruntime" or i + 1 >= len(items) or items[i + 1].art is not it.art:
            continue
        for b in result["settings"]["batch_sizes"]:
            sub = {
                "results": [
                    {**by[(names[i], b)], "label": "onnxruntime"},
                    {**by[(names[i + 1], b)], "label": "openvino"},
                ],
                "settings": result["settings"],
                "environment": result["environment"],
            }
            rec = record_choice(sub, {}, {})
            out.append({"artifact": str(it.art.path), "batch_size": b, **rec})
    return out


def _child_args(item: _Item, runner, threads: int) -> dict:
    """What the fresh process loads: an onnx artifact's file straight into its runtime with the runner's own
    settings (as a deployed bundle would, without edgecnn or torch); anything else through edgecnn."""
    spec = item.art.input
    shape = [1, int(spec["channels"]), int(spec["height"]), int(spec["width"])]
    args = {"path": str(item.art.path), "shape": shape, "threads": threads, "runs": MEMORY_RUNS, "runtime": None}
    kind = getattr(runner, "kind", None)
    if kind == "openvino":
        config = {k: v for k, v in runner.config.items()}
        args.update(runtime="openvino", file=str(runner.model_path), config=config, reshape=runner.fixed_batch is None)
    elif kind == "onnxruntime" and str(runner.device) == "cpu":
        args.update(
            runtime="onnxruntime",
            file=str(runner.model_path),
            threads=int(runner.threads or threads),
            spinning=bool(runner.spinning),
        )
    return args


def _peak_memory(item: _Item, runner, label: str, threads: int) -> dict:
    """RSS high-water mark of a fresh process that loads ``item`` and runs it :data:`MEMORY_RUNS` times."""
    row = {"label": label, "runtime": item.runtime, "how": "VmHWM of a fresh process: load + run at batch 1"}
    if item.art is None:
        return {**row, "error": "a runner object, not an artifact: no fresh process can load it"}
    args = _child_args(item, runner, threads)
    row["loads"] = {
        "openvino": "python + numpy + openvino",
        "onnxruntime": "python + numpy + edgecnn.runtime.onnxrt (~9 MiB) + onnxruntime",
    }.get(args["runtime"], "python + numpy + edgecnn with torch")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=MEMORY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {**row, "error": f"the child process took over {MEMORY_TIMEOUT_S} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("edgecnn-peak-rss ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {**row, "error": f"the child process failed: {tail}"}
    got = json.loads(line.split(" ", 1)[1])
    return {
        **row,
        "peak_rss_mib": round(got["peak_kib"] / 1024, 1),
        "before_load_rss_mib": round(got["before_load_kib"] / 1024, 1),  # python + numpy
        "model_rss_mib": round((got["peak_kib"] - got["before_load_kib"]) / 1024, 1),
    }


def _parallel(call, streams: int, seconds: float) -> int:
    """Calls of ``call`` completed by ``streams`` threads in ``seconds``."""
    stop = time.perf_counter() + seconds
    counts = [0] * streams

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            call()
            counts[i] += 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(streams)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts)


def _openvino_calls(runner, x: np.ndarray, streams: int, seconds: float) -> int:
    queue = runner.async_queue(len(x), streams)
    stop, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < stop:
        queue.start_async({0: x})
        n += 1
    queue.wait_all()
    return n


def measure_throughput(
    items: list[_Item],
    names: list[str],
    *,
    batch: int,
    streams: int,
    threads: int,
    data="digits",
    device: str = "cpu",
    seconds: float = 1.0,
) -> list[dict]:
    """Images/s of every candidate at ``batch`` with ``streams`` inferences in flight, in alternating rounds."""
    if batch < 1 or streams < 1:
        raise InvalidInput(f"throughput batch and streams must be >= 1, got {batch} / {streams}.")
    source = DataSource.parse(data)
    per_stream = max(1, threads // streams)
    opened, rows = [], []
    try:
        for it, name in zip(items, names):
            row = {"label": name, "runtime": it.runtime, "batch_size": batch, "streams": streams}
            if it.art is None:
                rows.append({**row, "error": "a runner object: throughput mode needs an artifact"})
                opened.append(None)
                continue
            if it.runtime == "openvino":
                r = open_in(it.art, "openvino", threads=threads, hint="THROUGHPUT", streams=streams)
                how = f"OpenVINO THROUGHPUT hint, {streams} streams, {threads} threads, AsyncInferQueue"
            else:
                r = open_in(it.art, it.runtime, device=device, threads=per_stream)
                how = f"{streams} threads calling one {r.kind} session, {per_stream} intra-op thread(s) each"
            rows.append({**row, "how": how, "runner": r.description, "rounds_images_per_s": []})
            opened.append(r)
        xs = [bench_inputs(it.art.input, batch, source) if it.art is not None else None for it in items]
        for rnd in range(THROUGHPUT_ROUNDS):
            order = list(range(len(items)))
            order = order[rnd % len(order) :] + order[: rnd % len(order)]
            for i in order:
                r, x = opened[i], xs[i]
                if r is None:
                    continue
                r.infer(x)  # compile / warm this batch size outside the timing
                t0 = time.perf_counter()
                if items[i].runtime == "openvino":
                    n = _openvino_calls(r, x, streams, seconds)
                else:
                    n = _parallel(lambda r=r, x=x: r.infer(x), streams, seconds)
                rows[i]["rounds_images_per_s"].append(n * batch / (time.perf_counter() - t0))
    finally:
        for r in opened:
            if r is not None:
                r.close()
    for row in rows:
        vals = row.get("rounds_images_per_s")
        if vals:
            row["images_per_s"] = float(np.median(vals))
    return rows


def extra_table(result: dict) -> tuple[list[list[str]], list[str]]:
    """Rows of peak memory and throughput mode per candidate (for the table bench prints)."""
    mem = {m["label"]: m for m in result.get("memory") or []}
    thr = {t["label"]: t for t in result.get("throughput_mode") or []}
    rows = []
    for cand in result["candidates"]:
        m, t = mem.get(cand["label"], {}), thr.get(cand["label"], {})
        rows.append(
            [
                cand["label"],
                cand.get("runtime") or "-",
                f"{m['peak_rss_mib']:.1f}" if "peak_rss_mib" in m else m.get("error", "-"),
                f"{m['model_rss_mib']:.1f}" if "model_rss_mib" in m else "-",
                f"{t['images_per_s']:.1f}" if "images_per_s" in t else t.get("error", "-"),
                f"batch {t['batch_size']} x {t['streams']} streams" if t else "-",
            ]
        )
    cols = ["candidate", "runtime", "peak RSS MiB", "runtime+model MiB", "throughput img/s", "throughput mode"]
    return rows, cols


__all__ = ["extra_table", "measure_throughput", "ratio_between", "run_bench"]
