"""The gate's runner: :func:`check` resolves its inputs, runs both models over the data in one pass (and
times them interleaved), and records a :class:`~edgecnn.check.CheckReport` with its verdict."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..data.source import DataSource
from ..deploy.session import DeviceOptions
from ..envinfo import fingerprint, fingerprint_key
from ..errors import DataError, InvalidInput, OptionError
from ..evaluation import predict
from ..ondevice import no_local_runtime
from ..runtime_choice import open_in
from ..runtime_choice import resolve as resolve_runtime
from .baseline import baseline_metrics, check_identity, load_baseline
from .compare import describe_artifact, ensure_comparable, size_ratios
from .decision import LATENCY_KEYS, metrics, not_comparable, reasons, verdict
from .measure import measure_pair_latency, paired_accuracy, same_runtime_reference
from .ondevice import DeviceRun, run_on_device
from .policy import Policy, resolve_policy
from .result import CheckReport


@dataclass
class _Inputs:
    """What a check runs on, resolved and checked before any model runs."""

    cand: Artifact
    orig: Artifact
    source: DataSource
    policy: Policy
    baseline: dict | None
    baseline_path: str | Path | None
    dataset: object = None
    notes: list[str] = field(default_factory=list)
    data_chosen: str | None = None  # why this data, when --data was not given
    runtime: str | None = None  # the CPU runtime every onnx artifact runs in (None: ONNX Runtime)


@dataclass
class _Outputs:
    """Both models' outputs on the same images (one pass over the data)."""

    original: np.ndarray
    candidate: np.ndarray
    labels: np.ndarray
    runners: tuple[str, str]


def check(
    candidate,
    original,
    data=None,
    policy=None,
    *,
    latency: bool = True,
    baseline: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    threads: int | None = None,
    val_split: float = 0.2,
    skip_corrupt: bool = False,
    progress: bool = False,
    workers: int | None = None,
    host: DeviceOptions | None = None,
    runtime: str | None = None,
) -> CheckReport:
    """Gate ``candidate`` against ``original`` on the held-out split of ``data``.

    ``data`` is a :class:`~edgecnn.data.source.DataSource` or its text ('digits', 'synthetic[:N]', a
    folder); None takes the original's training data from its manifest (``report.data["chosen"]`` says so).
    ``policy`` is a :class:`Policy`, a dict of its keys, a YAML file path or None (defaults: top-1
    drop at most 1 point, decided on the confidence interval). ``latency=False`` skips the latency
    measurement (latency thresholds are then reported as skipped). ``baseline`` is a file written by
    :func:`~edgecnn.check.save_baseline`. Both models see every batch of one pass over the data (decoded
    by ``workers`` processes for an image folder). ``host`` runs both on that device instead
    (:mod:`edgecnn.check.ondevice`): same statistics, plus the device's state. Raises EdgeCnnError for
    anything the user must fix; returns a report whose ``verdict`` / ``exit_code`` say whether the
    candidate passed. ``runtime`` ('onnxruntime' | 'openvino' | 'auto') runs every onnx artifact in that CPU
    runtime, accuracy and latency alike; ``auto`` measures both on the candidate first (noted in the report).
    """
    t0 = time.perf_counter()
    inputs = _resolve(candidate, original, data, policy, baseline, batch_size)
    if host is not None:
        no_local_runtime(runtime)
    inputs.runtime, choice = resolve_runtime(inputs.cand, runtime, threads=threads, data=inputs.source)
    if choice:
        inputs.notes.append(f"runtime auto: {choice['why']}")
    _load_images(inputs, val_split=val_split, skip_corrupt=skip_corrupt)
    run = None
    if host is not None:  # both on the device; what comes back is judged below, as here
        run = run_on_device(inputs, host, batch_size=batch_size, threads=threads, latency=latency, progress=progress)
        outputs = _checked(inputs, _Outputs(run.original, run.candidate, np.asarray(run.labels), run.runners))
        lat = run.latency
        inputs.notes += lat["notes"] if lat else []
    else:
        outputs = _run_both(
            inputs, batch_size=batch_size, device=device, threads=threads, progress=progress, workers=workers
        )
        lat = _latency(inputs, device=device, progress=progress) if latency else None
    report = _record(inputs, outputs, lat, val_split=val_split, device=run)
    report.seconds = time.perf_counter() - t0
    return report


# -- resolve ---------------------------------------------------------------------------------------
def _resolve(candidate, original, data, policy, baseline, batch_size: int) -> _Inputs:
    """Policy, artifacts, data source and baseline, all checked before any image is read."""
    policy = resolve_policy(policy)
    if batch_size < 1:
        raise OptionError(f"batch size must be >= 1, got {batch_size}.")
    cand = candidate if isinstance(candidate, Artifact) else Artifact.load(candidate)
    orig = original if isinstance(original, Artifact) else Artifact.load(original)
    source, chosen = DataSource.for_model(data, orig, who="the original", gate=True)
    ensure_comparable(cand, orig)
    base = load_baseline(baseline) if baseline is not None else None
    if base is not None:
        check_identity(base, orig, source, baseline)
    return _Inputs(cand, orig, source, policy, base, baseline, data_chosen=chosen)


def _load_images(inputs: _Inputs, *, val_split: float, skip_corrupt: bool) -> None:
    """The held-out split, checked against the models' classes (a folder is listed here, decoded later)."""
    source, orig = inputs.source, inputs.orig
    source.require_folder()
    dataset = source.dataset(
        orig.input, "val", val_split=val_split, skip_corrupt=skip_corrupt, num_classes=orig.num_classes
    )
    if len(dataset) == 0:
        raise DataError(
            f"Data '{source}' has no held-out images to check on; pass a folder with images in every class."
        )
    names = list(dataset.classes)
    source.check_classes(names, orig.num_classes, who="each model", fix="check on data with the models' classes")
    if source.is_synthetic:
        inputs.notes.append("synthetic data: plumbing only, the accuracy numbers mean nothing")
    elif names != orig.classes:
        raise DataError(
            f"Data '{source}' names its classes {names[:5]}... but the models were trained on "
            f"{orig.classes[:5]}...; check on data with the same class folders."
        )
    inputs.dataset = dataset


# -- run -------------------------------------------------------------------------------------------
def _run_both(
    inputs: _Inputs, *, batch_size: int, device: str, threads: int | None, progress: bool, workers: int | None
) -> _Outputs:
    """Original and candidate on every batch of ONE pass over the data."""
    orig, cand = inputs.orig, inputs.cand
    with (
        open_in(orig, inputs.runtime, device=device, threads=threads) as o_run,
        open_in(cand, inputs.runtime, device=device, threads=threads) as c_run,
    ):
        (o_logits, c_logits), labels, _ = predict(
            [o_run, c_run], inputs.dataset, batch_size=batch_size, workers=workers, progress=progress
        )
        runners = (o_run.description, c_run.description)
    return _checked(inputs, _Outputs(o_logits, c_logits, np.asarray(labels), runners))


def _checked(inputs: _Inputs, outputs: _Outputs) -> _Outputs:
    """The outputs, refused unless each model gave one row of class scores per image."""
    labels = outputs.labels
    for role, art, logits in (
        ("original", inputs.orig, outputs.original),
        ("candidate", inputs.cand, outputs.candidate),
    ):
        if logits.ndim != 2 or logits.shape[1] != art.num_classes or logits.shape[0] != len(labels):
            raise InvalidInput(
                f"The {role} '{art.path}' returned outputs of shape {logits.shape}, expected "
                f"({len(labels)}, {art.num_classes}); re-create the artifact."
            )
    if not np.isfinite(outputs.candidate).all():
        inputs.notes.append("the candidate produced non-finite outputs (NaN/inf) on some images")
    return outputs


def _latency(inputs: _Inputs, *, device: str, progress: bool) -> dict:
    """Both models timed interleaved, with the candidate's FP32 in its own runtime when its lineage has it;
    what the estimate flagged goes into the report's notes."""
    reference, why_not = same_runtime_reference(inputs.cand, inputs.orig)
    lat = measure_pair_latency(
        inputs.orig,
        inputs.cand,
        inputs.policy,
        reference=reference,
        device=device,
        data=inputs.source,
        progress=progress,
        runner_options={"onnx": {"runtime": inputs.runtime}} if inputs.runtime else None,
    )
    inputs.notes += ([why_not] if why_not else []) + lat["notes"]
    return lat


# -- record ----------------------------------------------------------------------------------------
def _record(
    inputs: _Inputs, outputs: _Outputs, lat: dict | None, *, val_split: float, device: DeviceRun | None = None
) -> CheckReport:
    """The report: measurements, metric rows (baseline rows last), verdict and reasons."""
    policy, n = inputs.policy, int(len(outputs.labels))
    accuracy, per_class = paired_accuracy(
        outputs.original, outputs.candidate, outputs.labels, inputs.orig.classes, policy
    )
    original = {**describe_artifact(inputs.orig), "runner": outputs.runners[0]}
    candidate = {**describe_artifact(inputs.cand), "runner": outputs.runners[1]}
    size = size_ratios(original, candidate)
    env = fingerprint()
    environment = device.environment if device else {"fingerprint": env, "key": fingerprint_key(env)}
    report = CheckReport(
        candidate=candidate,
        original=original,
        data={**inputs.source.describe("val"), "n_images": n, "val_split": val_split, "chosen": inputs.data_chosen},
        n_images=n,
        policy=policy.as_dict(),
        metrics=metrics(accuracy, per_class, lat, size, policy, n),
        per_class=per_class,
        accuracy=accuracy,
        latency=lat,
        size=size,
        baseline=None,
        environment=environment,
        notes=inputs.notes,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        device_state=device.state if device else None,
        on_device=device.on_device if device else None,
    )
    if device and device.not_comparable and lat is not None:
        not_comparable(report.metrics, LATENCY_KEYS, f"the device's {device.not_comparable}")
    base = inputs.baseline
    if base is not None:
        report.baseline = {
            "path": str(inputs.baseline_path),
            "created": base.get("created"),
            "metrics": base.get("metrics"),
            "candidate": base.get("candidate"),
        }
        report.metrics += baseline_metrics(report, base, policy)
    if not any(m.gated for m in report.metrics):
        report.notes.append("no threshold applied, so nothing was gated; set --max-top1-drop or pass --policy")
    report.verdict = verdict(report.metrics)
    report.reasons = reasons(report.metrics, policy, n, lat)
    return report
