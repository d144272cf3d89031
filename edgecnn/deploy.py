"""Deployment bundles for Jetson, x86 GPU and CPU targets, and copying them to a device over ssh.

A bundle is an artifact (format ``bundle``) that a device can use without edgecnn installed::

    model.onnx         the model (FP32, FP16 or Q/DQ INT8 ONNX)
    build_engine.sh    trtexec with the flags of the TensorRT version found on the device (TensorRT targets)
    run.py             classify images / --verify, with TensorRT or ONNX Runtime; numpy-only preprocessing
    verify.sh          ./verify.sh = python3 run.py --verify
    bundle.json        preprocessing, classes, batch profile, trtexec flags per TensorRT family, tolerances
    golden/            real digit images, their preprocessed inputs (.npy) and the reference outputs (.npy)
    README.md          what to copy, what to run, what success looks like
    manifest.json      edgecnn manifest; sha256 of every file above (run.py checks them first)

Why trtexec on the device instead of an engine from the host: a TensorRT plan only loads in the
TensorRT version and on the GPU model that built it, so the engine must be built where it runs. The
script reads the TensorRT version from trtexec and picks the matching flag set (8.0-8.3, 8.4-8.6,
10.x, 11.x); the flag rules live in :func:`edgecnn.runtime.tensorrt.trtexec_args`.

The golden outputs come from ONNX Runtime on the host (the reference the model was validated with);
tolerances depend on the precision the device computes in (tight for FP32, looser for FP16 / INT8,
always with top-1 agreement wherever the golden top-1 is unambiguous).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .artifact import Artifact, is_artifact
from .errors import ArtifactError, EdgeCnnError, InvalidInput, MissingDependency

log = logging.getLogger("edgecnn")

BUNDLE_SCHEMA = "edgecnn.bundle/1"
COMPRESS_DIR = Path("runs") / "compress"
GOLDEN_N = 10
ORT_MAX_BATCH = 64
REBUILT_ON_DEVICE = ("model.engine", "engine.json", "timing.cache", "build_engine.log", "model_fp16.onnx", "verify.json")


class RemoteError(EdgeCnnError):
    """The device could not be reached, or the build / verification on it failed."""


# -- which artifact ------------------------------------------------------------------------------
def latest_compress_output(root: str | Path = ".") -> tuple[Artifact, str]:
    """The newest deployable artifact ``edgecnn compress`` wrote under ``root/runs/compress``.

    ``compress`` writes one folder per run, possibly holding several stage artifacts (pruned torch,
    quantized ONNX ...). Every manifest under it is read; ONNX artifacts win over torch ones (they are
    what compress hands to deployment), then the newest ``created`` time. Returns (artifact, why).
    """
    base = Path(root) / COMPRESS_DIR
    if not base.is_dir():
        raise ArtifactError(f"No ARTIFACT given and no '{base}' here; pass the artifact to deploy, or run "
                            "'edgecnn compress' in this directory first.")
    # compress writes <run>/compress.json whose "final" names the artifact to deploy: trust the newest run
    for report in sorted(base.glob("*/compress.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            final = json.loads(report.read_text(encoding="utf-8")).get("final")
        except (OSError, ValueError):
            continue
        for cand in ([Path(final), Path(root) / final] if final else []) + [report.parent / "final"]:
            if is_artifact(cand):
                art = Artifact.load(cand)
                return art, (f"newest edgecnn compress output: {cand} (run {report.parent.name}, final step "
                             f"{art.stage}, {art.format} {art.precision}, created {art.manifest.get('created', '?')})")
    found = []
    for mpath in sorted(base.rglob("manifest.json")):
        if any(part.startswith(".") for part in mpath.relative_to(base).parts):
            continue                                   # temporary directories of a running stage
        try:
            art = Artifact.load(mpath.parent)
        except EdgeCnnError:
            continue
        if art.format in ("onnx", "torch"):
            found.append(art)
    if not found:
        raise ArtifactError(f"'{base}' holds no ONNX or torch artifact; run 'edgecnn compress' first or pass ARTIFACT.")
    best = max(found, key=lambda a: (a.format == "onnx", str(a.manifest.get("created", "")), a.path.stat().st_mtime))
    why = (f"newest edgecnn compress output: {best.path} ({best.model}, {best.format}, {best.precision}, "
           f"stage {best.stage}, created {best.manifest.get('created', '?')})")
    return best, why


def _as_onnx(src: Artifact, tmp: Path, opset: int) -> Artifact:
    if src.format == "onnx":
        return src
    if src.format == "torch":
        from .export.onnx import export_onnx

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
            hint = ("quantize it first ('edgecnn quantize'): INT8 comes from Q/DQ nodes, not calibration at build time"
                    if precision == "int8" else f"deploy it as {model_precision}")
            raise InvalidInput(f"The model is {model_precision}; --precision {precision} is not possible - {hint}.")
        if runtime != "tensorrt":
            raise InvalidInput(f"--precision fp16 builds an FP16 TensorRT engine; {profile.name} with {runtime} runs the "
                               "model as it is - drop --precision or deploy an FP16 ONNX.")
    return precision


def tolerance(precision: str, expected: np.ndarray, runtime: str) -> dict:
    """|out - golden| <= atol + rtol * |golden|; FP16 / INT8 bounds scale with the logits' range."""
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    if precision == "fp32":
        tol = {"atol": 1e-3, "rtol": 1e-3, "basis": "FP32: 1e-3 absolute + 1e-3 relative"}
    elif precision == "fp16":
        tol = {"atol": round(0.02 * scale, 6), "rtol": 0.01, "basis": "FP16: 2% of max |golden logit| + 1% relative"}
    else:
        tol = {"atol": round(0.10 * scale, 6), "rtol": 0.05,
               "basis": "INT8: 10% of max |golden logit| + 5% relative (kernels differ between runtimes)"}
    tol["argmax"] = "top-1 must match wherever the golden top-1 leads by more than twice the bound"
    tol["runtime"] = runtime
    return tol


# -- golden data ---------------------------------------------------------------------------------
def golden_images(input_spec: dict, n: int = GOLDEN_N) -> tuple[list, list[int]]:
    """``n`` real held-out digits (one per class first), rendered at the model's input size as 8-bit images."""
    import torch
    from PIL import Image

    from .data.digits import _arrays, split_indices

    images, labels = _arrays()
    _, val = split_indices(labels=labels)
    picked: list[int] = []
    for cls in range(10):
        picked += [int(i) for i in val if labels[i] == cls][:1]
    picked += [int(i) for i in val if int(i) not in picked][: max(0, n - len(picked))]
    picked = picked[:n]
    h, w, c = int(input_spec["height"]), int(input_spec["width"]), int(input_spec["channels"])
    x = torch.from_numpy(images[picked]).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    arr = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).squeeze(1).numpy()
    out = []
    for a in arr:
        img = Image.fromarray(a, mode="L")
        out.append(img if c == 1 else img.convert("RGB"))
    return out, [int(labels[i]) for i in picked]


def reference_outputs(onnx_path: Path, inputs: np.ndarray, max_batch: int) -> tuple[np.ndarray, str]:
    import onnxruntime as ort

    from .runtime.onnxrt import create_session

    sess = create_session(onnx_path, threads=1)
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    outs = [sess.run(None, {inp.name: inputs[i:i + max_batch].astype(dtype)})[0]
            for i in range(0, len(inputs), max_batch)]
    return np.concatenate(outs).astype(np.float32), f"onnxruntime {ort.__version__} CPUExecutionProvider"


# -- build_engine.sh -----------------------------------------------------------------------------
def _vnum(v: tuple[int, int]) -> int:
    return v[0] * 100 + min(v[1], 99)


def build_script(*, profile, opts, families: dict[str, list[str]], selected: str, model_name: str) -> str:
    """bash: check files, find trtexec, read its TensorRT version, run the flag set of that family."""
    from . import __version__

    q = shlex.quote
    lo, hi = profile.trt_min, profile.trt_max
    fp16_convert = opts.precision == "fp16" and not opts.model_is_fp16
    cases = []
    for fam, args in families.items():
        pattern = {"8.0": "8.0|8.1|8.2|8.3", "8.4": "8.4|8.5|8.6", "10": "9.*|10.*", "11": "11.*"}[fam]
        pre = ""
        if fam == "11" and fp16_convert:
            pre = ('    # TensorRT 11 is strongly typed: FP16 must be in the ONNX itself (ModelOpt AutoCast)\n'
                   '    if [ ! -f model_fp16.onnx ]; then\n'
                   '      "$PYTHON" -m modelopt.onnx.autocast --onnx_path model.onnx --output_path model_fp16.onnx \\\n'
                   '        || die "FP16 on TensorRT 11 needs an FP16 ONNX: pip3 install nvidia-modelopt[onnx]"\n'
                   '    fi\n')
        cases.append(f"  {pattern})\n{pre}    ARGS=({' '.join(q(a) for a in args)})\n    ;;")
    cases_text = "\n".join(cases)
    return f"""#!/usr/bin/env bash
# Build the TensorRT engine for this bundle ON THE DEVICE (a plan only runs on the GPU and TensorRT
# version that built it). Generated by edgecnn {__version__} for {model_name} on {profile.name}
# ({profile.description}); precision {opts.precision}; TensorRT {profile.trt_range_text} supported,
# bundle made for {selected}. Usage: ./build_engine.sh   (env: PYTHON, TRTEXEC, TRT_VERSION to override)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${{PYTHON:-python3}}"
say() {{ printf '[build_engine] %s\\n' "$*"; }}
die() {{ printf '[build_engine] ERROR: %s\\n' "$*" >&2; exit 1; }}

# 1. the files are the ones edgecnn wrote (sha256 in manifest.json)
"$PYTHON" run.py --check-files || die "bundle files do not match manifest.json; copy the bundle again"

# 2. trtexec: PATH, then where JetPack and the TensorRT tarballs put it
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || true)}}"
for cand in /usr/src/tensorrt/bin/trtexec /usr/local/tensorrt/bin/trtexec /opt/tensorrt/bin/trtexec; do
  if [ -z "$TRTEXEC" ] && [ -x "$cand" ]; then TRTEXEC="$cand"; fi
done
[ -n "$TRTEXEC" ] || die "trtexec not found; install TensorRT (JetPack: sudo apt install nvidia-jetpack) or set TRTEXEC=/path/to/trtexec"

# 3. which TensorRT: trtexec's banner '[TensorRT v8502]' / '[TensorRT v100300]', else the Python package
TRT_VERSION="${{TRT_VERSION:-}}"
if [ -z "$TRT_VERSION" ]; then
  code="$("$TRTEXEC" --help 2>&1 | grep -m1 -o 'TensorRT v[0-9]*' | grep -o '[0-9]*$' || true)"
  if [ -n "$code" ]; then
    if [ "$code" -ge 10000 ]; then
      TRT_VERSION="$((code / 10000)).$(((code / 100) % 100)).$((code % 100))"
    else
      TRT_VERSION="$((code / 1000)).$(((code / 100) % 10)).$((code % 100))"
    fi
  else
    TRT_VERSION="$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
  fi
fi
[ -n "$TRT_VERSION" ] || die "cannot tell the TensorRT version; set TRT_VERSION=8.5.2 (for example)"
major="${{TRT_VERSION%%.*}}"; rest="${{TRT_VERSION#*.}}"; minor="${{rest%%.*}}"
num=$((major * 100 + minor))
if [ "$num" -lt {_vnum(lo)} ] || [ "$num" -gt {_vnum(hi)} ]; then
  die "TensorRT $TRT_VERSION is outside {profile.trt_range_text}, what {profile.name} ships; re-deploy with the --device that matches this machine"
fi

# 4. the flags of this TensorRT generation (edgecnn.runtime.tensorrt.trtexec_args)
case "$major.$minor" in
{cases_text}
  *)
    die "no flag set for TensorRT $TRT_VERSION in this bundle"
    ;;
esac
say "TensorRT $TRT_VERSION: $TRTEXEC ${{ARGS[*]}}"
"$TRTEXEC" "${{ARGS[@]}}" 2>&1 | tee build_engine.log
[ -s model.engine ] || die "trtexec wrote no model.engine; see build_engine.log"
printf '{{"tensorrt": "%s", "trtexec": "%s", "built": "%s"}}\\n' "$TRT_VERSION" "$TRTEXEC" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > engine.json
say "engine ready: model.engine ($(du -h model.engine | cut -f1)). Next: $PYTHON run.py --verify"
"""


def _bundle_readme(info: dict, profile, has_build: bool) -> str:
    name = info["name"]
    dev = profile.name
    steps = []
    if has_build:
        steps.append("./build_engine.sh                 # picks the trtexec flags for the TensorRT found there")
    steps.append("./verify.sh                       # sha256 of every file, then outputs vs golden/")
    steps.append("python3 run.py path/to/images/    # top-5 classes per image")
    sw = profile.software_for(info["tensorrt"]["selected"]) if info.get("tensorrt") else None
    needs = ("numpy, onnxruntime, Pillow" if info["runtime"] == "onnxruntime"
             else "numpy, Pillow, TensorRT with its Python bindings (JetPack: python3-libnvinfer), CUDA runtime")
    tol = info["tolerance"][info["runtime"]]
    lines = [
        f"# {name}",
        "",
        f"{info['model']} ({info['precision']}) for **{dev}** - {profile.description}.",
        f"Runtime: {info['runtime']}" + (f"; TensorRT {profile.trt_range_text} (made for {info['tensorrt']['selected']}"
                                         f"{', JetPack ' + sw['jetpack'] if sw and 'jetpack' in sw else ''})"
                                         if info.get("tensorrt") else "") + ".",
        "",
        "## Copy",
        "",
        "```bash",
        f"scp -r {name} user@device:~/",
        "```",
        "",
        "## Run on the device",
        "",
        "```bash",
        f"cd ~/{name}",
        *steps,
        "```",
        "",
        f"Needs: {needs}. Set PYTHON=/path/to/python3 for another interpreter.",
        "",
        "## Success looks like",
        "",
        "```",
        "files       N checked against manifest.json sha256: ok",
        f"outputs     max |err| ... (atol {tol['atol']:.3g} + rtol {tol['rtol']:.3g}*|golden|), top-1 agree {info['golden']['n']}/{info['golden']['n']} ...",
        "VERIFY PASSED",
        "```",
        "",
        f"Tolerance: {tol['basis']}; {tol['argmax']}. A failed check prints VERIFY FAILED with the reason and",
        "exits 1; a modified file fails before anything runs.",
    ]
    return "\n".join(lines) + "\n"


# -- the bundle ----------------------------------------------------------------------------------
def make_bundle(src, out, *, target: str, device: str | None = None, precision: str | None = None,
                runtime: str | None = None, batch: tuple[int, int, int] | None = None, dla_core: int | None = None,
                gpu_fallback: bool = False, workspace_gb: float | None = None, tensorrt: str | None = None,
                golden: int = GOLDEN_N, build_now: str = "auto") -> Artifact:
    """The deploy stage: artifact -> bundle artifact at ``out``. What the user should know (DLA fallbacks,
    older JetPacks that cannot build it, whether the engine was built here) is in
    ``manifest["bundle"]["notes"]`` and bundle.json.

    ``build_now``: 'auto' builds the engine right away for --target gpu when TensorRT and a matching GPU
    are here (stored under prebuilt/, hashed); 'never' skips it; 'always' fails if it cannot build.
    """
    import tempfile

    from .artifact import new_manifest, write_artifact
    from .data.images import preprocess_file
    from .devices import TARGETS, default_device, load_profile
    from .doctor import describe_onnx, diagnose, max_opset
    from .runtime.tensorrt import EngineOptions, families_in_range, plan_engine, trtexec_args

    if target not in TARGETS:
        raise InvalidInput(f"--target must be one of {', '.join(TARGETS)}, got {target!r}.")
    profile = load_profile(device or default_device(target))
    if profile.target != target:
        raise InvalidInput(f"{profile.name} is a {profile.target} device; use --target {profile.target} "
                           f"(or a {target} device, e.g. --device {default_device(target)}).")
    runtime = runtime or profile.runtime
    if runtime == "tensorrt" and not profile.uses_tensorrt:
        raise InvalidInput(f"{profile.name} has no TensorRT; use --runtime onnxruntime.")
    if not isinstance(src, Artifact):
        src = Artifact.load(src)
    if golden < 1:
        raise InvalidInput(f"--golden must be >= 1, got {golden}.")
    notes: list[str] = []
    selected = None
    if profile.uses_tensorrt:
        selected = tensorrt or profile.trt_default
        if not profile.trt_in_range(selected):
            raise InvalidInput(f"{profile.name} ships TensorRT {profile.trt_range_text}; --tensorrt {selected} is outside it.")
    opset = min(17, max_opset(profile.trt_min)[0]) if profile.uses_tensorrt else 17
    with tempfile.TemporaryDirectory() as tmpdir:
        onnx_art = _as_onnx(src, Path(tmpdir), opset)
        info = describe_onnx(onnx_art.model_file)
        precision = resolve_precision(onnx_art.precision, precision, profile, "tensorrt" if profile.uses_tensorrt else runtime)
        if dla_core is not None and not profile.uses_tensorrt:
            raise InvalidInput(f"{profile.name} has no DLA; drop --dla-core.")
        opts: EngineOptions | None = None
        families: dict[str, list[str]] = {}
        if profile.uses_tensorrt:
            opts = plan_engine(onnx_art, profile, precision=precision, batch=batch, dla_core=dla_core,
                               gpu_fallback=gpu_fallback, workspace_gb=workspace_gb, timing_cache="timing.cache")
            for fam in families_in_range(profile.trt_min, profile.trt_max):
                if fam == "11" and dla_core is not None:
                    continue
                families[fam] = trtexec_args(opts, {"8.0": "8.2", "8.4": "8.5", "10": "10.3", "11": "11.0"}[fam])
            report = diagnose(onnx_art, profile.name, tensorrt=selected, dla_core=dla_core, precision=precision,
                              batch=opts.batch[1] if opts.batch else None)
            low = profile.tensorrt["min"]
            if low != selected:
                early = diagnose(onnx_art, profile.name, tensorrt=low, precision=precision)
                if early.errors:
                    notes.append(f"on TensorRT {low} (older JetPack) this model will not build: {early.errors[0].op} - "
                                 f"{early.errors[0].problem}")
        else:
            if batch is not None:
                raise InvalidInput("--batch sets TensorRT optimisation profiles; ONNX Runtime bundles take any batch.")
            report = diagnose(onnx_art, profile.name, precision=precision)
        if report.errors:
            f = report.errors[0]
            raise InvalidInput(f"Pre-flight check failed for {profile.name} (TensorRT {report.tensorrt}): {f.op}: "
                               f"{f.problem} - {f.fix}. Full table: edgecnn doctor {onnx_art.path} --device {profile.name}.")
        if report.fallbacks and not gpu_fallback:
            raise InvalidInput(f"{len(report.fallbacks)} layer(s) cannot run on DLA core {dla_core} (first: "
                               f"{report.fallbacks[0].op}: {report.fallbacks[0].problem}); add --gpu-fallback, or see "
                               f"'edgecnn doctor ... --dla-core {dla_core}'.")
        notes += [f"{w.op}: {w.problem}" for w in report.warnings]
        if report.fallbacks:
            notes.append(f"{len(report.fallbacks)} layer(s) fall back from the DLA to the GPU (edgecnn doctor lists them)")
        max_batch = opts.max_batch if opts else (ORT_MAX_BATCH if info["dynamic_batch"] else int(info["batch"]))

        imgs, labels = golden_images(src.input, golden)
        img_dir = Path(tmpdir) / "golden-images"
        img_dir.mkdir()
        names = []
        for i, (img, y) in enumerate(zip(imgs, labels)):
            name = f"{i:02d}-digit{y}.png"
            img.save(img_dir / name)
            names.append(name)
        inputs = np.stack([preprocess_file(img_dir / n, src.input) for n in names]).astype(np.float32)
        expected, ref_desc = reference_outputs(onnx_art.model_file, inputs, max_batch)
        tol = {"onnxruntime": tolerance(onnx_art.precision, expected, "onnxruntime")}
        if profile.uses_tensorrt:
            tol["tensorrt"] = tolerance(precision, expected, "tensorrt")
        top1 = expected.argmax(1)
        classes = src.classes
        golden_acc = float(np.mean([classes[int(t)] == str(y) for t, y in zip(top1, labels)])) if classes else None
        out = Path(out)
        bundle_info = {
            "schema": BUNDLE_SCHEMA, "name": out.name, "model": src.model, "classes": classes, "input": src.input,
            "precision": precision, "model_precision": onnx_art.precision, "target": target, "runtime": runtime,
            "device": {k: v for k, v in profile.summary().items() if k not in ("notes", "sources", "path")},
            "onnx": "model.onnx", "engine": "model.engine", "input_name": info["input_name"],
            "output_name": info["output_name"], "opset": info["opset"], "dynamic_batch": info["dynamic_batch"],
            "max_batch": max_batch, "dla_core": dla_core,
            "tensorrt": ({"selected": selected, "range": profile.trt_range_text, "options": opts.to_dict(),
                          "trtexec": families} if opts else None),
            "tolerance": tol,
            "golden": {"inputs": "golden/inputs.npy", "expected": "golden/expected.npy",
                       "images": [f"golden/images/{n}" for n in names], "labels": labels, "n": len(names),
                       "reference": ref_desc, "top1_matches_label": golden_acc},
            "preflight": {"tensorrt": report.tensorrt, "ok": report.ok,
                          "findings": [f.__dict__ for f in report.findings]},
            "notes": notes,
        }
        params = {"target": target, "device": profile.name, "runtime": runtime, "precision": precision,
                  "tensorrt": selected, "batch": list(opts.batch) if opts and opts.batch else None,
                  "dla_core": dla_core, "gpu_fallback": gpu_fallback,
                  "workspace_mb": opts.workspace_mb if opts else None, "golden": len(names)}
        manifest = new_manifest(model=src.model, format="bundle", file="model.onnx", precision=precision,
                                input=src.input, classes=classes, stage="deploy", params=params,
                                parent=src,
                                architecture=src.manifest.get("architecture"),
                                metrics={k: v for k, v in src.metrics.items() if k in ("params", "macs")},
                                extra={"bundle": {"target": target, "device": profile.name, "runtime": runtime,
                                                  "tensorrt": selected, "notes": notes}})

        def write(tmp: Path) -> None:
            shutil.copyfile(onnx_art.model_file, tmp / "model.onnx")
            (tmp / "golden" / "images").mkdir(parents=True)
            for n in names:
                shutil.copyfile(img_dir / n, tmp / "golden" / "images" / n)
            np.save(tmp / "golden" / "inputs.npy", inputs, allow_pickle=False)
            np.save(tmp / "golden" / "expected.npy", expected, allow_pickle=False)
            tmpl = resources.files("edgecnn.deploy_templates")
            (tmp / "run.py").write_text(tmpl.joinpath("run.py").read_text(encoding="utf-8"), encoding="utf-8")
            (tmp / "verify.sh").write_text(tmpl.joinpath("verify.sh").read_text(encoding="utf-8"), encoding="utf-8")
            if opts is not None:
                (tmp / "build_engine.sh").write_text(build_script(profile=profile, opts=opts, families=families,
                                                                  selected=selected, model_name=src.model),
                                                     encoding="utf-8")
            for script in ("run.py", "verify.sh", "build_engine.sh"):
                if (tmp / script).exists():
                    (tmp / script).chmod(0o755)
            if target == "gpu" and opts is not None and build_now != "never":
                notes.extend(_prebuild(tmp, profile, opts, required=build_now == "always"))
            (tmp / "bundle.json").write_text(json.dumps(bundle_info, indent=2) + "\n", encoding="utf-8")
            (tmp / "README.md").write_text(_bundle_readme(bundle_info, profile, opts is not None), encoding="utf-8")

        return write_artifact(out, manifest, write)


def _prebuild(tmp: Path, profile, opts, *, required: bool) -> list[str]:
    """--target gpu: build the engine here when TensorRT and a GPU of the profile are present."""
    from .runtime.tensorrt import import_tensorrt, local_gpu, serialize_network

    try:
        trt = import_tensorrt("building the engine now")
        gpu = local_gpu()
    except MissingDependency as exc:
        if required:
            raise
        why = "TensorRT is not installed" if "TensorRT" in str(exc) else "no CUDA GPU is visible"
        return [f"engine not built here ({why}); run ./build_engine.sh on the GPU machine"]
    if gpu["compute_capability"] not in profile.compute_capability or not profile.trt_in_range(trt.__version__):
        msg = (f"engine not built here: {gpu['gpu']} (cc {gpu['compute_capability']}) / TensorRT {trt.__version__} "
               f"do not match {profile.name}; run ./build_engine.sh on the target")
        if required:
            raise InvalidInput(msg)
        return [msg]
    import dataclasses

    build_opts = dataclasses.replace(opts, timing_cache=None)
    plan, _ = serialize_network(trt, tmp / "model.onnx", build_opts)
    (tmp / "prebuilt").mkdir()
    (tmp / "prebuilt" / "model.engine").write_bytes(plan)
    meta = {"tensorrt": trt.__version__, "gpu": gpu["gpu"], "compute_capability": gpu["compute_capability"],
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "by": "edgecnn deploy (TensorRT Python API)"}
    (tmp / "prebuilt" / "engine.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return [f"engine built here with TensorRT {trt.__version__} on {gpu['gpu']} (prebuilt/model.engine); it loads only "
            "with this TensorRT version and GPU model"]


def check_bundle(path) -> Artifact:
    """Load a bundle and check every file's sha256 (ArtifactError names the first bad file)."""
    art = Artifact.load(path, formats=("bundle",))
    art.verify()
    return art


# -- ssh -----------------------------------------------------------------------------------------
def ssh_options(*, port: int | None, identity: str | None, options=(), connect_timeout: int = 10) -> list[str]:
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(connect_timeout)}", "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4"]
    if not any(str(o).split("=")[0] == "StrictHostKeyChecking" for o in options):
        opts += ["-o", "StrictHostKeyChecking=accept-new"]
    for o in options:
        opts += ["-o", str(o)]
    if identity:
        if not Path(identity).expanduser().is_file():
            raise InvalidInput(f"--identity {identity} does not exist; pass the private key file for the device.")
        opts += ["-i", str(Path(identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    return opts


def _run(cmd: list[str], *, timeout: float, what: str, host: str, port: int | None) -> subprocess.CompletedProcess:
    log.info("%s: %s", what, " ".join(shlex.quote(c) for c in cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{what} on {host} did not finish within {timeout:.0f} s; check the device, or raise "
                          "--remote-timeout.") from None
    if proc.returncode == 255:
        last = (proc.stderr.strip().splitlines() or ["ssh failed"])[-1]
        raise RemoteError(f"Cannot reach {host}{f' (port {port})' if port else ''} over ssh: {last}; check --host, "
                          "--port, --identity, and that sshd runs on the device and accepts this key.")
    return proc


def deploy_remote(bundle, host: str, *, port: int | None = None, identity: str | None = None,
                  remote_dir: str | None = None, remote_python: str = "python3", options=(),
                  connect_timeout: int = 10, timeout: float = 1800, build: bool | None = None) -> dict:
    """Copy ``bundle`` to ``host`` (USER@HOST) with scp, run build_engine.sh (TensorRT bundles) and
    ``run.py --verify`` there, and return what happened. Raises RemoteError if any step fails."""
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise MissingDependency(f"'{tool}' is not installed here; install the OpenSSH client "
                                    "(apt install openssh-client).")
    art = bundle if isinstance(bundle, Artifact) else Artifact.load(bundle, formats=("bundle",))
    info = json.loads((art.path / "bundle.json").read_text(encoding="utf-8"))
    runtime = info["runtime"]
    build = (runtime == "tensorrt") if build is None else build
    rdir = remote_dir or f"edgecnn-bundles/{art.path.name}"
    opts = ssh_options(port=port, identity=identity, options=options, connect_timeout=connect_timeout)
    ssh = ["ssh", *opts, *(["-p", str(port)] if port else []), host]
    scp = ["scp", "-r", "-q", *opts, *(["-P", str(port)] if port else [])]
    q = shlex.quote
    steps = []
    t0 = time.perf_counter()
    parent = str(Path(rdir).parent)
    proc = _run([*ssh, f"rm -rf {q(rdir)} && mkdir -p {q(parent)}"], timeout=connect_timeout + 30,
                what="prepare remote folder", host=host, port=port)
    if proc.returncode != 0:
        raise RemoteError(f"Cannot create {rdir} on {host}: {proc.stderr.strip()[-300:]}")
    proc = _run([*scp, str(art.path), f"{host}:{rdir}"], timeout=max(120, timeout / 4), what="copy bundle",
                host=host, port=port)
    if proc.returncode != 0:
        raise RemoteError(f"Copying the bundle to {host}:{rdir} failed: {proc.stderr.strip()[-300:]}")
    steps.append({"step": "copy", "rc": 0, "seconds": round(time.perf_counter() - t0, 2)})
    py = q(remote_python)
    if build:
        t = time.perf_counter()
        proc = _run([*ssh, f"cd {q(rdir)} && PYTHON={py} bash build_engine.sh"], timeout=timeout,
                    what="build engine", host=host, port=port)
        steps.append({"step": "build_engine.sh", "rc": proc.returncode, "seconds": round(time.perf_counter() - t, 2),
                      "tail": (proc.stdout + proc.stderr).strip().splitlines()[-8:]})
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise RemoteError(f"build_engine.sh failed on {host} (exit {proc.returncode}): {last[0][:300]}")
    t = time.perf_counter()
    rt = "" if build or runtime == "onnxruntime" else " --runtime onnxruntime"
    proc = _run([*ssh, f"cd {q(rdir)} && {py} run.py --verify{rt}"], timeout=timeout, what="verify", host=host,
                port=port)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("edgecnn-verify-result: "):
            result = json.loads(line.split(": ", 1)[1])
    steps.append({"step": "run.py --verify", "rc": proc.returncode, "seconds": round(time.perf_counter() - t, 2),
                  "tail": [ln for ln in proc.stdout.strip().splitlines() if not ln.startswith("edgecnn-verify-result")][-6:]})
    report = {"host": host, "port": port, "remote_dir": rdir, "runtime": result.get("runtime") if result else runtime,
              "steps": steps, "verify": result, "passed": bool(result and result.get("passed") and proc.returncode == 0),
              "seconds": round(time.perf_counter() - t0, 2)}
    if not report["passed"]:
        why = (result or {}).get("reason") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"Verification on {host}:{rdir} failed (exit {proc.returncode}): {why[:300]}")
    return report


# -- the command ---------------------------------------------------------------------------------
def deploy(artifact=None, *, target: str, device: str | None = None, out=None, host: str | None = None,
           port: int | None = None, identity: str | None = None, remote_dir: str | None = None,
           remote_python: str = "python3", ssh_option=(), remote_timeout: float = 1800, root: str | Path = ".",
           **bundle_kwargs) -> dict:
    """``edgecnn deploy``: pick the artifact (or the newest compress output), write the bundle, and with
    ``host`` copy it to the device and build + verify there. Returns {bundle, source, notes, remote}."""
    from .devices import default_device

    if artifact is None:
        src, why = latest_compress_output(root)
    else:
        if not is_artifact(artifact):
            raise ArtifactError(f"'{artifact}' is not an edgecnn artifact directory (no manifest.json); pass the "
                                "directory written by export / quantize / compress.")
        src, why = Artifact.load(artifact), f"{artifact}"
    device = device or default_device(target)
    if host:                                  # fail on a bad key or a missing ssh before writing anything
        ssh_options(port=port, identity=identity, options=ssh_option)
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise MissingDependency(f"'{tool}' is not installed here; install the OpenSSH client "
                                        "(apt install openssh-client).")
    if out is None:
        prec = bundle_kwargs.get("precision") or src.precision
        out = Path(root) / "runs" / "deploy" / f"{src.model}-{device}-{prec}"
    bundle = make_bundle(src, out, target=target, device=device, **bundle_kwargs)
    result = {"bundle": bundle, "source": why, "notes": bundle.manifest["bundle"]["notes"], "remote": None}
    if host:
        result["remote"] = deploy_remote(bundle, host, port=port, identity=identity, remote_dir=remote_dir,
                                         remote_python=remote_python, options=ssh_option, timeout=remote_timeout)
    return result
