"""The deploy stage: an ONNX (or torch) artifact -> a bundle artifact a device can use without edgecnn.

``make_bundle`` runs in three steps: resolve (options, device profile, runtime, TensorRT version),
plan (precision, engine options and trtexec flags per TensorRT family, the ``doctor`` pre-flight) and
record (golden images and reference outputs, bundle.json, scripts, README, manifest). The target decides
an INT8 artifact's layout (:mod:`edgecnn.layouts`): ``--target cpu`` ships the cpu layout, ``gpu`` / ``jetson``
the tensorrt one, always as the bundle's ``model.onnx``, and bundle.json says which and why. The golden
outputs come from ONNX Runtime on the host running the file the bundle ships (the reference the model was
validated with); tolerances depend on the precision the device computes in (tight for FP32, looser for
FP16 / INT8, always with top-1 agreement wherever the golden top-1 is unambiguous).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from ..artifact import Artifact, check_out, derived_manifest, write_artifact
from ..data.images import preprocess_file
from ..data.source import DataSource
from ..devices import DeviceProfile, Target, default_device, load_profile
from ..doctor import DoctorReport, describe_onnx, diagnose, max_opset
from ..errors import ArtifactError, InvalidInput, MissingDependency
from ..export.onnx import export_onnx
from ..integrity import file_digest
from ..layouts import TARGET_FAMILY, Choice, choose, view
from ..options import bounded
from ..runtime.onnxrt import create_session, ort_version, run_batches
from ..runtime.tensorrt import (
    EngineOptions,
    EngineRequest,
    families_in_range,
    import_tensorrt,
    local_gpu,
    plan_engine,
    serialize_network,
    trtexec_args,
)
from ..runtime_choice import choose_runtime, measured_tolerance
from .golden import GOLDEN_N, GoldenImages, golden_images, golden_source, per_image
from .scripts import build_script, bundle_readme, check_model_name

log = logging.getLogger("edgecnn")

BUNDLE_SCHEMA = "edgecnn.bundle/1"
ORT_MAX_BATCH = 64
#: deploy --runtime auto: timed seconds per CPU runtime
AUTO_MIN_TIME_S = 1.0
#: how a CPU bundle's run.py compiles the model in OpenVINO (f32 pinned: never bf16 under an FP32 label)
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
#: the TensorRT version each trtexec flag family is rendered for
FAMILY_VERSION = {"8.0": "8.2", "8.4": "8.5", "10": "10.3", "11": "11.0"}


@dataclass
class BundleOptions(EngineRequest):
    """What ``edgecnn deploy`` asks of a bundle (the engine options come from :class:`EngineRequest`)."""

    target: Target = "cpu"
    device: str | None = None  # profile name or YAML path; default: the target's
    runtime: Literal["tensorrt", "onnxruntime", "openvino", "auto"] | None = None  # auto: measured here (cpu)
    tensorrt: str | None = None  # the TensorRT version the bundle is made for
    golden: int = bounded(GOLDEN_N, 1, 10_000)
    golden_data: DataSource | None = None  # default: the model's training data (see golden_source)
    build_now: Literal["auto", "never", "always"] = "auto"


# -- which model ---------------------------------------------------------------------------------
def _as_onnx(src: Artifact, tmp: Path, opset: int) -> Artifact:
    if src.format == "onnx":
        return src
    if src.format == "torch":
        log.info("exporting %s to ONNX (opset %d) for the bundle", src.path, opset)
        return export_onnx(src, tmp / "onnx", opset=opset, progress=False)
    raise ArtifactError(f"'{src.path}' is a {src.format} artifact; deploy takes an ONNX or torch artifact.")


# -- precision / tolerances ----------------------------------------------------------------------
def resolve_precision(model_precision: str, requested: str | None, profile, runtime: str) -> str:
    """The precision the device computes in. Only FP32 -> FP16 may differ from the model (a TensorRT flag)."""
    precision = requested or model_precision
    profile.check_precision(precision)
    if precision != model_precision:
        if not (model_precision == "fp32" and precision == "fp16"):
            hint = (
                "quantize it first ('edgecnn quantize'): INT8 comes from Q/DQ nodes, not calibration at build time"
                if precision == "int8"
                else f"deploy it as {model_precision}"
            )
            raise InvalidInput(f"The model is {model_precision}; --precision {precision} is not possible - {hint}.")
        if runtime != "tensorrt":
            raise InvalidInput(
                f"--precision fp16 builds an FP16 TensorRT engine; {profile.name} with {runtime} runs "
                "the model as it is - drop --precision or deploy an FP16 ONNX."
            )
    return precision


def tolerance(precision: str, expected: np.ndarray, runtime: str) -> dict:
    """|out - golden| <= atol + rtol * |golden|; FP16 / INT8 bounds scale with the logits' range."""
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    if precision == "fp32":
        tol = {"atol": 1e-3, "rtol": 1e-3, "basis": "FP32: 1e-3 absolute + 1e-3 relative"}
    elif precision == "fp16":
        tol = {"atol": round(0.02 * scale, 6), "rtol": 0.01, "basis": "FP16: 2% of max |golden logit| + 1% relative"}
    else:
        tol = {
            "atol": round(0.10 * scale, 6),
            "rtol": 0.05,
            "basis": "INT8: 10% of max |golden logit| + 5% relative (kernels differ between runtimes)",
        }
    tol["argmax"] = "top-1 must match wherever the golden top-1 leads by more than twice the bound"
    tol["runtime"] = runtime
    return tol


# -- golden data ---------------------------------------------------------------------------------
def reference_outputs(onnx_path: Path, inputs: np.ndarray, max_batch: int) -> tuple[np.ndarray, str]:
    """The host's ONNX Runtime outputs for ``inputs`` (fed as float16 to an FP16-input model), and what made them."""
    sess = create_session(onnx_path, threads=1)
    fp16 = "float16" in sess.get_inputs()[0].type
    out = run_batches(sess, inputs.astype(np.float16 if fp16 else np.float32), max_batch)
    return out.astype(np.float32), f"onnxruntime {ort_version()} CPUExecutionProvider"


# -- resolve -> plan -> record -------------------------------------------------------------------
@dataclass
class _Plan:
    """What the bundle will hold, decided before any file is written."""

    profile: DeviceProfile
    runtime: str
    selected: str | None  # TensorRT version the bundle is made for
    precision: str
    info: dict  # describe_onnx of the model
    engine: EngineOptions | None = None
    families: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report: DoctorReport | None = None
    layout: dict | None = None  # which INT8 layout of the source the bundle ships (None: not INT8 / one file)
    runtime_choice: dict | None = None  # --runtime auto: both CPU runtimes measured here, the faster chosen

    @property
    def max_batch(self) -> int:
        if self.engine:
            return self.engine.max_batch
        return ORT_MAX_BATCH if self.info["dynamic_batch"] else int(self.info["batch"])


def _resolve_device(opts: BundleOptions) -> tuple[DeviceProfile, str, str | None]:
    """(profile, runtime run.py uses by default, TensorRT version the bundle is made for)."""
    profile = load_profile(opts.device or default_device(opts.target))
    if profile.target != opts.target:
        raise InvalidInput(
            f"{profile.name} is a {profile.target} device; use --target {profile.target} "
            f"(or a {opts.target} device, e.g. --device {default_device(opts.target)})."
        )
    runtime = opts.runtime or profile.runtime
    if runtime == "tensorrt" and not profile.uses_tensorrt:
        raise InvalidInput(f"{profile.name} has no TensorRT; use --runtime onnxruntime.")
    if runtime in ("openvino", "auto") and opts.target != "cpu":
        raise InvalidInput(
            f"--runtime {runtime} is for --target cpu (OpenVINO runs on the CPU); {profile.name} runs "
            "tensorrt or onnxruntime."
        )
    selected = None
    if profile.uses_tensorrt:
        selected = opts.tensorrt or profile.trt_default
        if not profile.trt_in_range(selected):
            raise InvalidInput(
                f"{profile.name} ships TensorRT {profile.trt_range_text}; --tensorrt {selected} is outside it."
            )
    return profile, runtime, selected


def _plan(onnx_art: Artifact, opts: BundleOptions, profile: DeviceProfile, runtime: str, selected: str | None) -> _Plan:
    """Precision, engine options and trtexec flags, and the doctor's pre-flight verdict for the device."""
    info = describe_onnx(onnx_art.model_file)
    precision = resolve_precision(
        onnx_art.precision, opts.precision, profile, "tensorrt" if profile.uses_tensorrt else runtime
    )
    plan = _Plan(profile, runtime, selected, precision, info)
    if profile.uses_tensorrt:
        plan.engine = plan_engine(
            onnx_art,
            profile,
            precision=precision,
            batch=opts.batch,
            dla_core=opts.dla_core,
            gpu_fallback=opts.gpu_fallback,
            workspace_gb=opts.workspace_gb,
            timing_cache="timing.cache",
        )
        plan.families = {
            fam: trtexec_args(plan.engine, FAMILY_VERSION[fam])
            for fam in families_in_range(profile.trt_min, profile.trt_max)
            if not (fam == "11" and opts.dla_core is not None)
        }
        plan.report = diagnose(
            onnx_art,
            profile,
            tensorrt=selected,
            dla_core=opts.dla_core,
            precision=precision,
            batch=plan.engine.batch[1] if plan.engine.batch else None,
        )
        low = profile.tensorrt["min"]
        if low != selected:
            early = diagnose(onnx_art, profile, tensorrt=low, precision=precision)
            if early.errors:
                plan.notes.append(
                    f"on TensorRT {low} (older JetPack) this model will not build: "
                    f"{early.errors[0].op} - {early.errors[0].problem}"
                )
    else:
        if opts.dla_core is not None:
            raise InvalidInput(f"{profile.name} has no DLA; drop --dla-core.")
        if opts.batch is not None:
            raise InvalidInput("--batch sets TensorRT optimisation profiles; ONNX Runtime bundles take any batch.")
        plan.report = diagnose(onnx_art, profile, precision=precision)
    plan.report.require_buildable(gpu_fallback=opts.gpu_fallback, source=onnx_art.path)
    plan.notes += [f"{w.op}: {w.problem}" for w in plan.report.warnings]
    if plan.report.fallbacks:
        plan.notes.append(
            f"{len(plan.report.fallbacks)} layer(s) fall back from the DLA to the GPU (edgecnn doctor lists them)"
        )
    return plan


def _layout(onnx_art: Artifact, target: str) -> tuple[Artifact, Choice]:
    """The artifact as the target's runtime sees it: its INT8 layout for that family (LayoutError when it has
    none), as a view whose model file is the one the bundle ships."""
    choice = choose(onnx_art, TARGET_FAMILY[target], purpose=f"target {target}")
    return view(onnx_art, choice), choice


def _layout_record(src: Artifact, choice: Choice) -> dict | None:
    """bundle.json / manifest int8_layout: which layout of the source the bundle's model.onnx is, and why."""
    if choice.layout is None:
        return None
    entry = ((src.manifest.get("quantization") or {}).get("layouts") or {}).get(choice.layout) or {}
    rec = {k: v for k, v in choice.record().items() if k != "file"}
    rec.update(file="model.onnx", source_file=choice.file.name)
    for key in ("top1", "top1_drop_pt", "met", "validation"):
        if key in entry:
            rec[key] = entry[key]
    return rec


@dataclass
class _Golden:
    images: GoldenImages
    folder: Path  # the PNG files, named images.names
    inputs: np.ndarray
    expected: np.ndarray
    reference: str
    tolerance: dict
    top1_matches_label: float | None
    per_image: list[dict]


def _golden(src: Artifact, onnx_art: Artifact, opts: BundleOptions, plan: _Plan, tmp: Path) -> _Golden:
    """Golden images saved as files, their preprocessed inputs, the host's outputs and the tolerances."""
    data, why = golden_source(src, opts.golden_data)
    g = golden_images(src.input, opts.golden, data)
    g.data = {**data.describe("val"), "chosen": why}
    plan.notes.append(f"golden set: {len(g.names)} held-out images of {data} ({why})")
    folder = tmp / "golden-images"
    folder.mkdir()
    for img, name in zip(g.images, g.names):
        img.save(folder / name)
    inputs = np.stack([preprocess_file(folder / n, src.input) for n in g.names]).astype(np.float32)
    expected, reference = reference_outputs(onnx_art.model_file, inputs, plan.max_batch)
    _check_outputs(src, expected.shape[-1])
    tol = {"onnxruntime": tolerance(onnx_art.precision, expected, "onnxruntime")}
    if plan.profile.uses_tensorrt:
        tol["tensorrt"] = tolerance(plan.precision, expected, "tensorrt")
    else:  # a CPU bundle's run.py runs OpenVINO or ONNX Runtime, whichever the device has
        base = tolerance(onnx_art.precision, expected, "openvino")
        tol["openvino"] = measured_tolerance(onnx_art, inputs, expected, base, plan.max_batch)
    classes = src.classes
    acc = (
        float(np.mean([classes[int(t)] == g.classes[y] for t, y in zip(expected.argmax(1), g.labels)]))
        if classes
        else None
    )
    return _Golden(g, folder, inputs, expected, reference, tol, acc, per_image(g, classes, expected, tol))


def _bundle_info(
    name: str, src: Artifact, onnx_art: Artifact, opts: BundleOptions, plan: _Plan, golden: _Golden
) -> dict:
    """bundle.json: everything run.py and build_engine.sh read on the device."""
    info, engine, report = plan.info, plan.engine, plan.report
    return {
        "schema": BUNDLE_SCHEMA,
        "name": name,
        "model": src.model,
        "classes": src.classes,
        "input": src.input,
        "precision": plan.precision,
        "model_precision": onnx_art.precision,
        "target": opts.target,
        "runtime": plan.runtime,
        "device": {k: v for k, v in plan.profile.summary().items() if k not in ("notes", "sources", "path")},
        "onnx": "model.onnx",
        "engine": "model.engine",
        "input_name": info["input_name"],
        "output_name": info["output_name"],
        "opset": info["opset"],
        "dynamic_batch": info["dynamic_batch"],
        "max_batch": plan.max_batch,
        "dla_core": opts.dla_core,
        "tensorrt": (
            {
                "selected": plan.selected,
                "range": plan.profile.trt_range_text,
                "options": engine.to_dict(),
                "trtexec": plan.families,
                "sparsity": _sparsity_record(onnx_art, plan),
            }
            if engine
            else None
        ),
        "tolerance": golden.tolerance,
        "golden": {
            "inputs": "golden/inputs.npy",
            "expected": "golden/expected.npy",
            "images": [f"golden/images/{n}" for n in golden.images.names],
            "labels": golden.images.labels,
            "n": len(golden.images.names),
            "reference": golden.reference,
            "top1_matches_label": golden.top1_matches_label,
            "data": golden.images.data,
            "per_image": golden.per_image,
        },
        "preflight": {
            "tensorrt": report.tensorrt,
            "ok": report.ok,
            "findings": [f.__dict__ for f in report.findings],
            "sparsity": report.sparsity,
        },
        "int8_layout": plan.layout,
        "runtime_choice": plan.runtime_choice,
        "openvino": None if plan.profile.uses_tensorrt else dict(OPENVINO_CONFIG),
        "notes": plan.notes,
    }


def _sparsity_record(onnx_art: Artifact, plan: _Plan) -> dict:
    """bundle.json tensorrt.sparsity: whether the engine is built with sparse weights enabled, and why."""
    sp = (plan.report.sparsity if plan.report else None) or {}
    if not plan.engine.sparse_weights:
        return {"enabled": False, "why": "the model is not 2:4-sparse (its manifest has no 2:4 sparsity record)"}
    layers = len((onnx_art.manifest.get("sparsity") or {}).get("layers") or {})
    return {
        "enabled": True,
        "why": (
            f"the model is 2:4-sparse ({layers} layer(s), edgecnn sparsify --pattern 2:4), so the engine is built "
            "with trtexec --sparsity=enable (TensorRT Python API: BuilderFlag.SPARSE_WEIGHTS) and TensorRT may pick "
            "sparse tensor-core kernels for those layers"
        ),
        "flags": {"trtexec": "--sparsity=enable", "builder_flag": "SPARSE_WEIGHTS"},
        "device": sp.get("device"),
        "eligible_layers": [r["node"] for r in sp.get("layers", []) if r["eligible"]] if sp.get("eligible") else [],
        "confirm": "build_engine.log of trtexec --verbose: 'Layers eligible for sparse math' and "
        "'TRT inference plan picked sparse implementation for layers'",
    }


def _bundle_manifest(src: Artifact, opts: BundleOptions, plan: _Plan, n_golden: int) -> dict:
    engine = plan.engine
    params = {
        "target": opts.target,
        "device": plan.profile.name,
        "runtime": plan.runtime,
        "precision": plan.precision,
        "tensorrt": plan.selected,
        "batch": list(engine.batch) if engine and engine.batch else None,
        "dla_core": opts.dla_core,
        "gpu_fallback": opts.gpu_fallback,
        "workspace_mb": engine.workspace_mb if engine else None,
        "golden": n_golden,
    }
    bundle = {
        "target": opts.target,
        "device": plan.profile.name,
        "runtime": plan.runtime,
        "tensorrt": plan.selected,
        "int8_layout": plan.layout,
        "notes": plan.notes,
    }
    return derived_manifest(
        src, stage="deploy", precision=plan.precision, params=params, format="bundle", extra={"bundle": bundle}
    )


def _check_outputs(src: Artifact, outputs: int) -> None:
    """The manifest's class names must match the model's outputs, or run.py would name the wrong class."""
    if src.num_classes != outputs:
        raise ArtifactError(
            f"'{src.path}' lists {src.num_classes} classes in its manifest, while its model has {outputs} "
            "outputs; the bundle would report wrong class names - re-create the artifact."
        )


def _copy_verified(onnx_art: Artifact, dst: Path) -> None:
    """Copy the model into the bundle and prove the copy is the verified file: the hash the bundle
    records is one that was checked against the source's manifest, never a fresh one of unchecked bytes."""
    onnx_art.verify()
    shutil.copyfile(onnx_art.model_file, dst)
    if file_digest(dst) != onnx_art.sha256:
        raise ArtifactError(
            f"{onnx_art.model_file} changed while it was being bundled (its copy does not match the sha256 "
            "in its manifest); re-run deploy when nothing is writing to the artifact."
        )


def _write_files(
    tmp: Path, src: Artifact, onnx_art: Artifact, opts: BundleOptions, plan: _Plan, golden: _Golden, bundle_info: dict
) -> None:
    """Every file of the bundle into ``tmp`` (write_artifact hashes them and renames the folder into place)."""
    _copy_verified(onnx_art, tmp / "model.onnx")
    (tmp / "golden" / "images").mkdir(parents=True)
    for n in golden.images.names:
        shutil.copyfile(golden.folder / n, tmp / "golden" / "images" / n)
    np.save(tmp / "golden" / "inputs.npy", golden.inputs, allow_pickle=False)
    np.save(tmp / "golden" / "expected.npy", golden.expected, allow_pickle=False)
    templates = resources.files("edgecnn.deploy_templates")
    for script in ("run.py", "verify.sh"):
        (tmp / script).write_text(templates.joinpath(script).read_text(encoding="utf-8"), encoding="utf-8")
    if plan.engine is not None:
        (tmp / "build_engine.sh").write_text(
            build_script(
                profile=plan.profile,
                opts=plan.engine,
                families=plan.families,
                selected=plan.selected,
                model_name=src.model,
            ),
            encoding="utf-8",
        )
    for script in ("run.py", "verify.sh", "build_engine.sh"):
        if (tmp / script).exists():
            (tmp / script).chmod(0o755)
    if opts.target == "gpu" and plan.engine is not None and opts.build_now != "never":
        plan.notes.extend(_prebuild(tmp, plan.profile, plan.engine, required=opts.build_now == "always"))
    (tmp / "bundle.json").write_text(json.dumps(bundle_info, indent=2) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(bundle_readme(bundle_info, plan.profile, plan.engine is not None), encoding="utf-8")


def make_bundle(
    src,
    out,
    *,
    target: str,
    device: str | None = None,
    precision: str | None = None,
    runtime: str | None = None,
    batch: tuple[int, int, int] | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = False,
    workspace_gb: float | None = None,
    tensorrt: str | None = None,
    golden: int = GOLDEN_N,
    golden_data: DataSource | str | None = None,
    build_now: str = "auto",
) -> Artifact:
    """The deploy stage: artifact -> bundle artifact at ``out``. What the user should know (DLA fallbacks,
    older JetPacks that cannot build it, whether the engine was built here) is in
    ``manifest["bundle"]["notes"]`` and bundle.json.

    ``build_now``: 'auto' builds the engine right away for --target gpu when TensorRT and a matching GPU
    are here (stored under prebuilt/, hashed); 'never' skips it; 'always' fails if it cannot build.
    ``golden_data``: the real images of the golden set (default: the model's training data when the manifest
    records real images, else the digits; ``bundle.json`` golden.data says which and why).
    """
    opts = BundleOptions().merged(
        dict(
            target=target,
            device=device,
            precision=precision,
            runtime=runtime,
            batch=batch,
            dla_core=dla_core,
            gpu_fallback=gpu_fallback,
            workspace_gb=workspace_gb,
            tensorrt=tensorrt,
            golden=golden,
            golden_data=golden_data,
            build_now=build_now,
        ),
        where="deploy",
    )
    profile, runtime, selected = _resolve_device(opts)
    src = Artifact.checked(src)  # the sha256 of every file, also for an Artifact loaded earlier
    check_model_name(src.model, f"'{src.path}'")
    check_out(out, src)  # before the golden run and the build: --out must not be (or hold) the source
    opset = min(17, max_opset(profile.trt_min)[0]) if profile.uses_tensorrt else 17
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        onnx_art, choice = _layout(_as_onnx(src, tmp, opset), opts.target)
        runtime, measured = _cpu_runtime(onnx_art, runtime)
        plan = _plan(onnx_art, opts, profile, runtime, selected)
        plan.runtime_choice = measured
        if measured:
            plan.notes.append(f"runtime auto: {measured['why']}")
        plan.layout = _layout_record(onnx_art, choice)
        if plan.layout is not None and plan.layout.get("met") is False:
            plan.notes.append(
                f"the {choice.layout} layout misses the quantize --max-drop budget "
                f"({plan.layout['top1_drop_pt']:.2f} pt measured): re-quantize with --target {choice.layout}"
            )
        gold = _golden(src, onnx_art, opts, plan, tmp)
        out = Path(out)
        info = _bundle_info(out.name, src, onnx_art, opts, plan, gold)
        manifest = _bundle_manifest(src, opts, plan, len(gold.images.names))
        return write_artifact(out, manifest, lambda t: _write_files(t, src, onnx_art, opts, plan, gold, info))


def _cpu_runtime(onnx_art: Artifact, runtime: str) -> tuple[str, dict | None]:
    """--runtime auto (cpu): ONNX Runtime and OpenVINO measured on the shipped model here, in one interleaved
    run; (the faster, the measurement). Any other runtime: (it, None)."""
    if runtime != "auto":
        return runtime, None
    choice = choose_runtime(onnx_art, min_time_s=AUTO_MIN_TIME_S)
    return choice["chosen"], choice


def _prebuild(tmp: Path, profile, opts: EngineOptions, *, required: bool) -> list[str]:
    """--target gpu: build the engine here when TensorRT and a GPU of the profile are present."""
    try:
        trt = import_tensorrt("building the engine now")
        gpu = local_gpu()
    except MissingDependency as exc:
        if required:
            raise
        why = "TensorRT is not installed" if "TensorRT" in str(exc) else "no CUDA GPU is visible"
        return [f"engine not built here ({why}); run ./build_engine.sh on the GPU machine"]
    if gpu["compute_capability"] not in profile.compute_capability or not profile.trt_in_range(trt.__version__):
        msg = (
            f"engine not built here: {gpu['gpu']} (cc {gpu['compute_capability']}) / TensorRT {trt.__version__} "
            f"do not match {profile.name}; run ./build_engine.sh on the target"
        )
        if required:
            raise InvalidInput(msg)
        return [msg]
    plan, _ = serialize_network(trt, tmp / "model.onnx", dataclasses.replace(opts, timing_cache=None))
    (tmp / "prebuilt").mkdir()
    (tmp / "prebuilt" / "model.engine").write_bytes(plan)
    meta = {
        "tensorrt": trt.__version__,
        "gpu": gpu["gpu"],
        "compute_capability": gpu["compute_capability"],
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "by": "edgecnn deploy (TensorRT Python API)",
    }
    (tmp / "prebuilt" / "engine.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return [
        f"engine built here with TensorRT {trt.__version__} on {gpu['gpu']} (prebuilt/model.engine); it loads "
        "only with this TensorRT version and GPU model"
    ]


def check_bundle(path) -> Artifact:
    """Load a bundle and check every file's sha256 (ArtifactError names the first bad file)."""
    art = Artifact.load(path, formats=("bundle",))
    art.verify()
    return art
