"""``edgecnn eval / bench / check --host``: the same numbers, measured on the device.

Each artifact becomes a bundle for the device's profile (:func:`edgecnn.deploy.make_bundle`), copied once
(:class:`~edgecnn.deploy.session.DeviceSession` reuses what is there by content). The host preprocesses the
held-out images with the manifest's contract into one float32 ``.npy`` (streamed batch by batch, never held
whole in memory), copied with its sha256 and checked by run.py on the device before use. The device runs
the whole set with the bundle's own runner and writes the logits; latency is timed by the bundle's runner
in blocks that :func:`edgecnn.bench.measure_latency` interleaves exactly as it does here. What comes back
is scored by the same code as a local run: :func:`edgecnn.evaluation.scores` for ``eval``, the bench
estimator for ``bench``, and :mod:`edgecnn.check` (through :mod:`edgecnn.check.ondevice`) for ``check``.

The device's state (board, L4T/JetPack, TensorRT, nvpmodel mode, jetson_clocks, GPU/EMC clocks,
temperatures, CPU, load) is read before and after and reported; a field that cannot be read there is
"unavailable".
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .artifact import Artifact
from .bench import bench_inputs, measure_latency
from .data.source import DataSource
from .deploy.bundle import make_bundle
from .deploy.scripts import file_word
from .deploy.session import UNAVAILABLE, DeviceOptions, DeviceSession, ServedModel
from .envinfo import fingerprint_key
from .errors import OptionError
from .evaluation import batches, scores
from .integrity import file_digest

#: the probe fields that say under which power settings a latency was measured
POWER_KEYS = ("nvpmodel", "jetson_clocks")
#: the fields read again after the measurement
AFTER_KEYS = (*POWER_KEYS, "gpu_clock", "emc_clock", "temperature_c", "load_average")


# -- inputs ----------------------------------------------------------------------------------------
def write_inputs(dataset, path: Path, *, batch_size: int = 64) -> np.ndarray:
    """Every image of ``dataset``, preprocessed, into the float32 .npy ``path`` (streamed: memory bounded by
    the batch); returns the labels."""
    raw, labels, n, shape = path.with_suffix(".raw"), [], 0, None
    with open(raw, "wb") as fh:
        for x, y in batches(dataset, batch_size):
            fh.write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
            labels.append(y)
            n, shape = n + len(x), x.shape[1:]
    with open(path, "wb") as out, open(raw, "rb") as src:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(out, {**header, "shape": (n, *shape)})
        shutil.copyfileobj(src, out, 1 << 20)
    raw.unlink()
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def bench_file(spec: dict, batch: int, source: DataSource, path: Path) -> None:
    """The images ``edgecnn bench`` times at batch ``batch`` (the device takes the first ``b`` for smaller ones)."""
    np.save(path, bench_inputs(spec, batch, source), allow_pickle=False)


# -- the device ------------------------------------------------------------------------------------
def open_device(host: DeviceOptions) -> tuple[DeviceSession, dict]:
    """A session and the device's state: unreachable hosts and missing modules fail here, before any copy."""
    session = DeviceSession(host)
    try:
        return session, session.probe()
    except BaseException:
        session.__exit__(None, None, None)
        raise


def start_models(
    session: DeviceSession, arts: Sequence[tuple[str, Artifact]], inputs: Path, *, batch_size: int, threads: int | None
) -> tuple[list[ServedModel], dict]:
    """Bundle each (role, artifact) for the session's profile, copy bundles and inputs, and start run.py
    --serve for each (each writes the logits of every input). Returns (served models, what was copied)."""
    profile, folder = session.profile, Path(session.local.name)
    digest = file_digest(inputs)
    copies = {"bundles": [], "inputs": None}
    served = []
    for role, art in arts:
        name = file_word(f"{art.model}-{profile.name}-{art.precision}-{art.id}")
        bundle = make_bundle(art, folder / role / name, target=profile.target, device=str(profile.path or profile.name))
        copies["bundles"].append(session.ensure_bundle(bundle, role))
        if json.loads((bundle.path / "bundle.json").read_text(encoding="utf-8"))["runtime"] == "tensorrt":
            session.build_engine(copies["bundles"][-1])
    copies["inputs"] = session.ensure_inputs(inputs, digest)
    for (_, art), remote in zip(arts, copies["bundles"]):
        label = f"{art.path.name} ({art.format} {art.precision})"
        served.append(
            session.serve(remote, copies["inputs"], label=label, artifact=art, batch=batch_size, threads=threads)
        )
    return served, copies


def state_after(session: DeviceSession, before: dict) -> tuple[dict, str | None]:
    """The state read again after the measurement (``after``), and why latency is not comparable when the
    power settings changed in between (None when they did not)."""
    now = session.probe()
    before["after"] = {k: now.get(k) for k in AFTER_KEYS}
    return before, power_change(before, now, "at the start", "at the end")


def power_change(a: dict | None, b: dict | None, when_a: str, when_b: str) -> str | None:
    """Why two latencies are not comparable: the nvpmodel mode or jetson_clocks differ (fields readable on
    both sides only; 'unavailable' on both is the same setting)."""
    if not a or not b:
        return None
    diffs = [
        f"{k} {_show(a.get(k))} {when_a} vs {_show(b.get(k))} {when_b}" for k in POWER_KEYS if a.get(k) != b.get(k)
    ]
    return "power settings differ: " + "; ".join(diffs) if diffs else None


def _show(v) -> str:
    return v["name"] if isinstance(v, dict) and "name" in v else str(v if v is not None else UNAVAILABLE)


def device_fingerprint(state: dict, ready: dict) -> dict:
    """The environment of a result measured on the device (what baselines compare), from its probe and
    run.py's own report of its runtime."""
    versions = {ready.get("runtime"): ready.get("runtime_version")}
    for key in ("onnxruntime", "tensorrt"):
        if state.get(key) not in (None, UNAVAILABLE):
            versions.setdefault(key, state[key])
    env = {
        "host": state.get("host"),
        "python": state.get("python"),
        "machine": state.get("machine"),
        "cpu": state.get("cpu_model"),
        "cpu_flags": (ready.get("host") or {}).get("cpu_flags") or [],
        "cpu_count": state.get("cpu_count"),
        "gpu": state.get("board") if state.get("board") != UNAVAILABLE else None,
        "versions": versions,
    }
    return {"fingerprint": env, "key": fingerprint_key(env)}


def threads_text(served: ServedModel) -> str:
    """The threads run.py's runtime used on the device, as it reported them."""
    return ", ".join(f"{v}" for v in served.ready["threads"].values() if v) or "-"


def on_device_record(session: DeviceSession, copies: dict, served: Sequence[ServedModel]) -> dict:
    return {
        "host": session.host,
        "profile": session.profile.name,
        "target": session.profile.target,
        "runtime": served[0].ready["runtime"] if served else None,
        "remote_dir": session.base,
        **copies,
        "runs": [{k: s.ready[k] for k in ("runner", "n", "batch", "seconds", "files_checked")} for s in served],
    }


def no_local_runtime(runtime: str | None) -> None:
    """OptionError for --runtime with --host: on the device the bundle's runtime runs."""
    if runtime is not None:
        raise OptionError(
            f"--runtime {runtime} picks a runtime on this machine; with --host the bundle's runtime runs (from "
            "--device's profile)."
        )


# -- eval ------------------------------------------------------------------------------------------
def evaluate_on_device(
    artifact,
    data=None,
    *,
    host: DeviceOptions,
    batch_size: int = 64,
    val_split: float = 0.2,
    skip_corrupt: bool = False,
    threads: int | None = None,
    runtime: str | None = None,
) -> dict:
    """``edgecnn eval --host``: the held-out split of ``data`` run on the device; the result of
    :func:`edgecnn.evaluation.evaluate` plus ``device_state`` and ``on_device``."""
    no_local_runtime(runtime)
    t0 = time.perf_counter()
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    source, chosen = DataSource.for_model(data, art)
    dataset = source.dataset(
        art.input, "val", skip_corrupt=skip_corrupt, val_split=val_split, num_classes=art.num_classes
    )
    source.check_classes(dataset.classes, art.num_classes, fix="evaluate on data with the model's classes")
    session, state = open_device(host)
    with session:
        path = Path(session.local.name) / "inputs.npy"
        labels = write_inputs(dataset, path, batch_size=batch_size)
        (served,), copies = start_models(session, [("model", art)], path, batch_size=batch_size, threads=threads)
        logits = session.fetch_logits(served)
        state, _ = state_after(session, state)
        record = on_device_record(session, copies, [served])
    result = scores(logits, labels, art.classes)
    seconds = served.ready["seconds"]
    result.update(
        {
            "artifact": str(art.path),
            "model": art.model,
            "format": art.format,
            "precision": art.precision,
            "runner": served.description,
            "data": {**source.describe("val"), **({"chosen": chosen} if chosen else {})},
            "batch_size": served.ready["batch"],
            "images_per_second": len(labels) / seconds if seconds > 0 else None,
            "infer_seconds": seconds,
            "seconds": time.perf_counter() - t0,
            "skipped": len(getattr(dataset, "skipped", []) or []),
            "device_state": state,
            "on_device": record,
        }
    )
    return result


# -- bench -----------------------------------------------------------------------------------------
def bench_on_device(
    artifacts: Sequence,
    *,
    host: DeviceOptions,
    data="digits",
    threads: int | None = None,
    runtime: str | None = None,
    memory: bool = False,
    throughput_batch: int | None = None,
    **kw,
) -> dict:
    """``edgecnn bench --host``: every artifact bundled and timed on the device in the interleaved rounds of
    :func:`edgecnn.bench.measure_latency` (``kw`` are its options; run_bench's local-only options
    ``streams``, ``device`` and ``ort_spinning`` do not apply); the result plus ``device_state``."""
    no_local_runtime(runtime)
    for key in ("streams", "device", "ort_spinning"):
        kw.pop(key, None)
    arts = [a if isinstance(a, Artifact) else Artifact.load(a) for a in artifacts]
    source = DataSource.parse(data)
    largest = max(int(b) for b in kw.get("batch_sizes", (1,)))
    session, state = open_device(host)
    with session:
        specs = {repr(sorted(a.input.items())) for a in arts}
        if len(specs) > 1:
            raise OptionError("bench --host times artifacts with one input spec at a time; bench them separately.")
        path = Path(session.local.name) / "bench.npy"
        bench_file(arts[0].input, largest, source, path)
        served, copies = start_models(
            session, [(f"model {i + 1}", a) for i, a in enumerate(arts)], path, batch_size=largest, threads=threads
        )
        result = measure_latency(served, threads=threads, data=source, progress=False, **kw)
        state, why = state_after(session, state)
        record = on_device_record(session, copies, served)
    result["settings"].update(device=f"{host.host} ({session.profile.name})", threads=threads_text(served[0]))
    env = device_fingerprint(state, served[0].ready)
    result.update(environment=env["fingerprint"], fingerprint_key=env["key"], device_state=state, on_device=record)
    if why:
        result["notes"].append(f"latency not comparable across this run: {why}")
    if memory or throughput_batch:
        result["notes"].append("peak memory and throughput mode are measured on this machine only, not with --host")
    return result
