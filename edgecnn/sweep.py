"""``edgecnn sweep``: a measured Pareto front over pruning ratio x precision on one target.

The question a user actually has is "what is the fastest version of my network on this device that
stays within my accuracy budget?". A sweep builds every candidate (prune -> export -> fp16 / int8),
scores each on real held-out data, measures the latency of all of them interleaved in one run on the
target, and keeps the candidates no other measured candidate beats on both accuracy and latency.

Rules that keep the answer honest:
- Latency is only ever measured, never estimated. A candidate that cannot run here (a TensorRT
  engine without a GPU, fp16 on a runtime without fp16 kernels) is listed as "not measured" with
  the reason, and it is never on the front nor chosen by ``--budget``.
- Every candidate lives in its own artifact directory and is recorded in ``sweep-state.json`` as soon
  as it is built and scored, so an interrupted sweep resumes where it stopped and reuses finished
  candidates (their sha256 is checked, so a candidate changed on disk is rebuilt, not trusted).
- Latency is re-measured for all candidates together on every run (ratios are only meaningful
  within one interleaved run).
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from tqdm.auto import tqdm

from . import sweep_runtime
from .artifact import Artifact, atomic_write_json, atomic_write_text, is_artifact
from .bench import measure_latency, ratio_between
from .compress.chain import ChainPlan, run_chain
from .compress.fp16 import Fp16Options
from .compress.prune import PruneOptions
from .compress.quantize import QuantizeOptions
from .compress.source import load_original
from .data.augment import AugmentPolicy
from .data.calibration import load_calibration
from .data.source import DataSource
from .deploy import deploy
from .devices import default_device
from .errors import InvalidInput, OptionError, suggest
from .estimator import RATIO_ESTIMATOR
from .evaluation import predict
from .limits import MAX_EPOCHS, MAX_IMAGES, MAX_THREADS
from .models import spec_for
from .options import Options, bounded
from .pareto import (
    BUDGET_KEYS,
    PRECISIONS,
    TARGETS,
    Candidate,
    Condition,
    as_dicts,
    candidate_name,
    candidate_rows,
    choose,
    dominates,
    markdown,
    pareto_front,
    parse_budget,
    parse_list,
    plot,
)
from .runtime import open_runner
from .runtime.tensorrt import build_engine

log = logging.getLogger("edgecnn")

__all__ = [
    "BUDGET_KEYS",
    "PRECISIONS",
    "TARGETS",
    "Candidate",
    "Condition",
    "SweepOptions",
    "as_dicts",
    "candidate_name",
    "candidate_rows",
    "choose",
    "dominates",
    "markdown",
    "pareto_front",
    "parse_budget",
    "parse_list",
    "plot",
    "sweep",
    "sweep_data",
]

STATE = "sweep-state.json"
DEFAULT_RATIOS = (0.0, 0.3, 0.5, 0.7)
NO_DATA = "A sweep scores candidates on labelled data: pass --data (e.g. --data digits)."


# -- options -----------------------------------------------------------------------------------------
@dataclass
class SweepOptions(Options):
    """What a sweep builds and how it measures; the CLI, a script and the tests all fill this one object."""

    ERROR: ClassVar[type[Exception]] = OptionError
    data: DataSource | None = None  # default: an artifact's training data, from its manifest (sweep_data)
    out: str | None = None
    prune_ratios: tuple[float, ...] | None = bounded(None, 0, 1, hi_open=True)  # None: DEFAULT_RATIOS (ONNX: 0)
    precisions: tuple[str, ...] = ("fp32", "int8")
    target: Literal["cpu", "gpu", "jetson"] = "cpu"
    device: str | None = None
    calib: DataSource | None = None  # default: the training split of data
    budget: str | None = None
    weights: str | None = None
    finetune_epochs: int = bounded(0, 0, MAX_EPOCHS)
    distill: bool = False
    augment: AugmentPolicy | None = None  # fine-tuning images of pruned candidates (default: 'default')
    subset_size: int = bounded(300, 1, MAX_IMAGES)
    threads: int | None = bounded(None, 1, MAX_THREADS)
    min_time_s: float = bounded(1.0, 0, 3600, lo_open=True)
    fresh: bool = False
    deploy_out: str | None = None
    runtime: Literal["onnxruntime", "openvino", "auto"] | None = None  # CPU runtimes measured (sweep_runtime)

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise OptionError(
                f"Unknown target '{self.target}'.{suggest(self.target, TARGETS)} Choose from {', '.join(TARGETS)}."
            )
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise OptionError(f"Unknown precision '{bad[0]}'; choose from {', '.join(PRECISIONS)}.")
        if any(not 0.0 <= r < 1.0 for r in self.prune_ratios or ()):
            raise OptionError("prune ratios must be in [0, 1).")
        sweep_runtime.check_options(self.runtime, self.target, self.precisions)
        parse_budget(self.budget)
        if self.deploy_out and not self.budget:
            raise OptionError("--deploy-out needs --budget (it deploys the fastest candidate that meets the budget).")

    @property
    def ratios(self) -> list[float]:
        return sorted(set(float(r) for r in (DEFAULT_RATIOS if self.prune_ratios is None else self.prune_ratios)))

    def precision_only(self, original: Artifact) -> None:
        """An ONNX original (an imported model, or an exported one) has no torch network here: its sweep is over
        precisions only (prune ratio 0 unless --prune says otherwise, which is an option error)."""
        if original.format != "onnx":
            return
        if self.prune_ratios is None:
            self.prune_ratios = (0.0,)
        asked = [
            flag
            for flag, on in (
                ("--prune", any(r > 0 for r in self.prune_ratios)),
                ("--distill", self.distill),
                ("--finetune-epochs", self.finetune_epochs > 0),
            )
            if on
        ]
        if asked:
            source = (original.manifest.get("architecture") or {}).get("source") or {}
            what = f"imported from {source['file']}" if source.get("kind") == "onnx-import" else "exported"
            raise OptionError(
                f"'{original.path}' is an ONNX artifact ({what}): its sweep is precision only (--precision), since "
                f"{', '.join(asked)} need(s) the torch network; drop {' / '.join(asked)} or sweep a torch artifact."
            )

    def settings(self, original: Artifact, device: str) -> dict:
        """What a candidate's content depends on; a resumed sweep must have been made with the same."""
        return {
            "original_sha256": original.sha256,
            "model": original.model,
            "data": str(self.data),
            "calib": str(self.calib or self.data),
            "finetune_epochs": self.finetune_epochs,
            "distill": self.distill,
            **({"augment": self.augment.record()} if self.augment is not None else {}),
            "target": self.target,
            "device": device,
            "subset_size": self.subset_size,
        }

    def plan(self, ratio: float, precision: str) -> ChainPlan:
        """The chain that builds candidate (ratio, precision)."""
        plan = ChainPlan(export_original=ratio == 0.0)
        if ratio > 0.0:
            ft = self.finetune_epochs
            plan.prune = PruneOptions(
                ratio=ratio,
                finetune_epochs=ft,
                data=self.data if ft else None,
                distill=self.distill,
                augment=self.augment,
            )
        if precision == "int8":
            plan.int8 = QuantizeOptions(
                calib=self.calib or self.data,
                subset_size=self.subset_size,
                target="tensorrt" if self.target in ("gpu", "jetson") else "cpu",
            )
        elif precision == "fp16":
            plan.fp16 = Fp16Options()
        return plan


# -- state: finished steps and candidates, reused when unchanged on disk ----------------------------
def _load_state(path: Path, settings: dict) -> dict:
    if not path.exists():
        return {"settings": settings, "candidates": {}, "pruned": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is unreadable ({exc}); delete it or choose another --out.") from exc
    old = state.get("settings", {})
    diff = [k for k in settings if old.get(k) != settings[k]]
    if diff:
        raise InvalidInput(
            f"Sweep folder '{path.parent}' was made with different settings ({', '.join(diff)}); "
            "choose another --out, or pass --fresh to start over there."
        )
    return state


def _reusable(entry: dict | None) -> bool:
    """A recorded artifact can be reused when it is still on disk unchanged."""
    if not entry or not entry.get("path"):
        return False
    try:
        art = Artifact.load(entry["path"])
        art.verify()
    except Exception:  # noqa: BLE001 - anything wrong with it means: rebuild
        return False
    return art.sha256 == entry.get("sha256")


class _State:
    """sweep-state.json: written after every step, so an interrupted sweep resumes; also the chain's cache."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.data = _load_state(path, settings)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def get(self, key: str) -> Artifact | None:
        entry = self.data["pruned"].get(key)
        return Artifact.load(entry["path"]) if _reusable(entry) else None

    def put(self, key: str, artifact: Artifact) -> None:
        self.data["pruned"][key] = {"path": str(artifact.path), "sha256": artifact.sha256}
        self.save()

    def record(self, cand: Candidate) -> None:
        self.data["candidates"][cand.name] = asdict(cand)
        self.save()

    def reuse(self, cand: Candidate) -> bool:
        entry = self.data["candidates"].get(cand.name)
        if not (entry and entry.get("status") in ("built", "measured", "not-measured") and _reusable(entry)):
            return False
        cand.path, cand.sha256 = entry["path"], entry["sha256"]
        cand.metrics = {
            k: v for k, v in entry.get("metrics", {}).items() if k in ("top1", "top1_drop", "agreement", "size_mb")
        }
        cand.status, cand.reason = "built", entry.get("reason")
        cand.metrics["reused"] = True
        return True


def _runs_here(target: str) -> tuple[bool, str | None]:
    """Can latency on ``target`` be measured on this machine? (cpu: always; gpu: needs TensorRT + CUDA)."""
    if target == "cpu":
        return True, None
    if target == "jetson":
        if platform.machine() != "aarch64" or not Path("/etc/nv_tegra_release").exists():
            return False, (
                "Jetson latency must be measured on the Jetson: deploy the bundle there and run "
                "python3 run.py --bench --batch-sizes 1,8 --json bench.json"
            )
    try:
        import tensorrt  # noqa: F401  (heavy, optional)
    except ImportError:
        return False, "TensorRT is not installed here"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU here"
    return True, None


# -- the stage -------------------------------------------------------------------------------------
def sweep(source: str, options: SweepOptions | None = None, *, progress: bool = True, **fields) -> dict:
    """Build, score and time every (prune ratio x precision) candidate of ``source`` on the target.

    ``source`` is a torch artifact or a zoo model name with ``weights``; ``options`` (or its fields as
    keywords) say what to build. Returns the report that is also written to ``out``/sweep.json
    (+ sweep.md, sweep.png).
    """
    opts = (options or SweepOptions()).merged(fields)
    if opts.data is None and not is_artifact(source):
        raise OptionError(NO_DATA)
    original, out = _resolve_original(source, opts)
    opts.data, chosen = sweep_data(opts, original)
    device = opts.device or default_device(opts.target)
    state = _State(out / STATE, opts.settings(original, device))
    dataset = opts.data.dataset(original.input, "val", num_classes=original.num_classes)
    opts.data.check_classes(
        dataset.classes, original.num_classes, who=original.model, fix="sweep on data with the model's classes"
    )
    with open_runner(original, threads=opts.threads) as r:
        o_logits, labels, _ = predict(r, dataset)
    candidates = _build_all(original, opts, out, state, dataset, o_logits, labels, progress)
    bench_meta, ref_latency = _time_all(candidates, opts, device, out, progress)
    return _record(
        original, opts, out, device, state, candidates, labels, o_logits, bench_meta, ref_latency, data_chosen=chosen
    )


def sweep_data(opts: SweepOptions, original: Artifact) -> tuple[DataSource, str | None]:
    """--data, or (not given) the original's training data from its manifest, with a note saying so; data
    unlike the training data is an error (the sweep gates candidates on it)."""
    return DataSource.for_model(opts.data, original, who="the original", gate=True)


def _resolve_original(source: str, opts: SweepOptions) -> tuple[Artifact, Path]:
    """The original as a torch artifact (a model name is built with --weights into OUT/original) and OUT."""
    original = None
    if is_artifact(source):
        original = Artifact.load(source, formats=("torch", "onnx"))
        opts.precision_only(original)
        name = original.model
    else:
        name = spec_for(source).name  # an unknown name fails here, with the nearest one
        if opts.weights is None:
            raise InvalidInput(
                f"A sweep of '{source}' needs trained weights: pass --weights FILE|ARTIFACT|imagenet, "
                "or a torch artifact from 'edgecnn train' instead of the model name."
            )
    out = Path(opts.out) if opts.out else Path("runs") / "sweep" / f"{name}-{opts.target}"
    if opts.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if original is None:
        orig_dir = out / "original"
        if is_artifact(orig_dir):
            original = Artifact.load(orig_dir)
        else:
            original, _ = load_original(source, orig_dir, weights=opts.weights, formats=("torch",))
    return original, out


def _build_all(
    original, opts: SweepOptions, out: Path, state: _State, dataset, o_logits, labels, progress: bool
) -> list[Candidate]:
    """Build and score every candidate (resumable); the unpruned FP32 is always built: it is the reference."""
    asked = sweep_runtime.build_precisions(opts.precisions)
    wanted = asked if "fp32" in asked else ["fp32", *asked]
    jobs = [(r, p) for r in opts.ratios for p in wanted if p in asked or (r == 0.0 and p == "fp32")]
    calib = functools.cache(
        lambda: load_calibration(opts.calib or opts.data, original.input, subset_size=opts.subset_size)
    )  # read once, for the first INT8 candidate; every candidate shares the original's input spec
    candidates = []
    bar = tqdm(jobs, desc="sweep", disable=not progress, unit="cand")
    for ratio, precision in bar:
        cand = Candidate(name=candidate_name(ratio, precision), prune=ratio, precision=precision)
        bar.set_postfix_str(cand.name)
        candidates.append(cand)
        if state.reuse(cand):
            continue
        t0 = time.perf_counter()
        try:
            art = _build(original, opts, out, state, ratio, precision, calib)
        except InvalidInput as exc:
            cand.status, cand.reason = "failed", str(exc)
            state.record(cand)
            continue
        cand.path, cand.sha256, cand.status = str(art.path), art.sha256, "built"
        _score(cand, art, opts, dataset, o_logits, labels)
        cand.metrics["build_seconds"] = round(time.perf_counter() - t0, 2)
        state.record(cand)
    measured = sweep_runtime.variants(candidates, opts.runtime, opts.target, opts.precisions)
    for c in measured:
        if c.runtime not in (None, "onnxruntime") and c.status == "built":
            _score(c, Artifact.load(c.path), opts, dataset, o_logits, labels)
    return measured


def _build(original, opts: SweepOptions, out: Path, state: _State, ratio: float, precision: str, calib):
    """original -> (pruned torch) -> FP32 ONNX -> FP16 / INT8 ONNX through the one chain; steps are reused."""
    r = f"{ratio:.2f}"
    layout = {
        "prune": out / "stages" / f"torch-p{r}",
        "export original": out / "candidates" / candidate_name(0, "fp32"),
        "export pruned": out / "candidates" / candidate_name(ratio, "fp32"),
        "int8": out / "candidates" / candidate_name(ratio, "int8"),
        "fp16": out / "candidates" / candidate_name(ratio, "fp16"),
    }
    keys = {"prune": f"torch-p{r}", "export original": "onnx-p0.00", "export pruned": f"onnx-p{r}"}
    result = run_chain(
        original,
        opts.plan(ratio, precision),
        layout.__getitem__,
        cache=state,
        keys=keys,
        calib_set=calib() if precision == "int8" else None,
        progress=False,
    )
    return result.final


def _score(cand: Candidate, art: Artifact, opts: SweepOptions, dataset, o_logits, labels) -> None:
    try:
        with sweep_runtime.open_candidate(cand, art, opts.threads) as r:
            c_logits, _, _ = predict(r, dataset)
        c_pred, o_pred = c_logits.argmax(1), o_logits.argmax(1)
        top1 = 100.0 * float((c_pred == labels).mean())
        o_top1 = 100.0 * float((o_pred == labels).mean())
        cand.metrics.update(top1=top1, top1_drop=o_top1 - top1, agreement=float((c_pred == o_pred).mean()))
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this precision here
        where = "OpenVINO" if cand.runtime == "openvino" else "ONNX Runtime"
        cand.status, cand.reason = "not-measured", f"cannot run in {where} here: {str(exc).splitlines()[0][:120]}"
    cand.metrics["size_mb"] = art.model_file.stat().st_size / 1e6


def _time_all(candidates: list[Candidate], opts: SweepOptions, device: str, out: Path, progress: bool):
    """Latency of every runnable candidate, interleaved in one run, on the target (the reference first)."""
    runs_here, why_not = _runs_here(opts.target)
    timed = [c for c in candidates if c.status == "built" and c.metrics.get("top1") is not None]
    ref_name = sweep_runtime.name(0.0, "fp32", sweep_runtime.runtimes(opts.runtime, opts.target)[0])
    timed.sort(key=lambda c: c.name != ref_name)
    if not runs_here:
        for c in timed:
            c.status, c.reason = "not-measured", why_not
        return {}, None
    if not timed:
        return {}, None
    arts = _latency_artifacts(timed, opts, device, out)
    try:
        result = _measure(arts, timed, opts, progress)
    finally:
        for a in arts:
            if hasattr(a, "close"):
                a.close()
    by_label = {r["label"]: r for r in result["results"]}
    ref = next((c for c in timed if c.name == ref_name), timed[0])
    for c in timed:
        row = by_label.get(c.name)
        c.metrics["latency_ms"] = row["latency_ms"]["p50"]
        c.metrics["latency_p90_ms"] = row["latency_ms"]["p90"]
        own = by_label.get(sweep_runtime.reference_name(c), by_label[ref.name])
        c.metrics.update(_speedup(row, own))
        c.status, c.reason = "measured", None
    meta = {"threads": result["settings"].get("threads"), "environment": result.get("environment")}
    return {**meta, "estimator": RATIO_ESTIMATOR}, ref.metrics["latency_ms"]


def _measure(arts: list, timed: list[Candidate], opts: SweepOptions, progress: bool) -> dict:
    return measure_latency(
        arts,
        batch_sizes=(1,),
        warmup=0.2,
        min_time_s=opts.min_time_s,
        min_repeats=20,
        threads=opts.threads,
        device="cuda" if opts.target != "cpu" else "cpu",
        progress=progress,
        labels=[c.name for c in timed],
    )


def _speedup(row: dict, reference: dict) -> dict:
    """Speed-up of a candidate against the reference (prune 0, fp32, same runtime) by the one estimator:
    its point and interval, and what it flagged (multi-modal rounds, a disagreeing p50 ratio)."""
    if row is reference:
        return {"speedup": 1.0, "speedup_ci": [1.0, 1.0], "speedup_flags": []}
    est = ratio_between(row, reference)
    sp = est.speedup()
    return {"speedup": sp.point, "speedup_ci": [sp.low, sp.high], "speedup_flags": list(est.flags)}


def _record(
    original,
    opts: SweepOptions,
    out: Path,
    device: str,
    state: _State,
    candidates,
    labels,
    o_logits,
    bench_meta: dict,
    ref_latency,
    *,
    data_chosen: str | None = None,
) -> dict:
    """The report: sweep.json / .md / .png, the state file, and the chosen candidate's bundle if asked."""
    conditions = parse_budget(opts.budget)
    front = pareto_front(candidates)
    best = choose(candidates, conditions) if conditions else None
    shown = [c for c in candidates if c.precision in opts.precisions]  # the reference-only fp32 stays out
    report = {
        "schema": "edgecnn.sweep/1",
        "model": original.model,
        "original": str(original.path),
        "target": opts.target,
        "device": device,
        "runtime": opts.runtime,
        "data": opts.data.describe("val")["source"],
        "data_chosen": data_chosen,
        "n_images": int(len(labels)),
        "original_top1": 100.0 * float((o_logits.argmax(1) == labels).mean()),
        "original_latency_ms": ref_latency,
        "latency_reference": candidate_name(0.0, "fp32"),
        "latency_estimator": bench_meta.get("estimator"),
        "threads": bench_meta.get("threads"),
        "environment": bench_meta.get("environment"),
        "settings": state.data["settings"],
        "candidates": as_dicts(shown),
        "front": [c.name for c in front if c in shown],
        "budget": opts.budget,
        "best": asdict(best) if best else None,
    }
    for c in candidates:
        state.data["candidates"][c.name] = asdict(c)
    state.save()
    atomic_write_json(out / "sweep.json", report)
    atomic_write_text(out / "sweep.md", markdown(report))
    plot(report, out / "sweep.png")
    report["paths"] = {
        "json": str(out / "sweep.json"),
        "markdown": str(out / "sweep.md"),
        "plot": str(out / "sweep.png"),
    }
    if conditions and best is None:
        report["no_candidate"] = True
    if opts.deploy_out and best is not None:
        rt = {"runtime": best.runtime} if best.runtime == "openvino" else {}  # the runtime it was fastest in
        report["deploy"] = deploy(best.path, target=opts.target, device=device, out=opts.deploy_out, **rt)
    return report


def _latency_artifacts(cands: list[Candidate], opts: SweepOptions, device: str, out: Path) -> list:
    """What to time: the ONNX candidates on CPU, opened in their runtimes; TensorRT engines on a GPU target."""
    arts = []
    try:
        for c in cands:
            art = Artifact.load(c.path)
            if opts.target != "cpu":
                arts.append(build_engine(art, out / "engines" / c.name, device=device, precision=c.precision))
            else:
                arts.append(sweep_runtime.open_candidate(c, art, opts.threads))
    except BaseException:
        for a in arts:
            if hasattr(a, "close"):
                a.close()
        raise
    return arts
