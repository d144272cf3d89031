"""Pre-flight check: will this ONNX model build for that device, and what falls off the DLA?

``diagnose`` reads the ONNX graph (no TensorRT needed) and reports, for one TensorRT version of a
device profile:

* ops the TensorRT ONNX parser of that version cannot import, and model opsets it cannot read;
* Q/DQ nodes TensorRT rejects (it takes signed INT8 with zero point 0 only);
* precision the device cannot run (INT8 on a Jetson Nano ...);
* with ``dla_core``: every layer that will not run on the DLA and falls back to the GPU (or fails the
  build without --gpu-fallback), per NVIDIA's published DLA layer restrictions.

Coverage, honestly: the op table follows onnx-tensorrt's ``docs/operators.md`` (release 8.4, 8.5 and
10.15 tables) plus its changelog for when ops were added; ops present in the 10.15 table whose first
10.x release is not documented are flagged as "may be unsupported" before 10.15. Restrictions are
checked where they are static properties of a CNN graph (conv/pool dims, constant weights, Q/DQ zero
points); data-dependent ones (e.g. Resize scale ranges on DLA) are not. DLA rules come from the TensorRT
developer guide ("DLA Supported Layers and Restrictions") and NVIDIA's Orin DLA ONNX op matrix
(Deep-Learning-Accelerator-SW); the real builder can still reject a layer for memory reasons (the DLA
convolution buffer), which only ``trtexec --verbose`` on the device shows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from .artifact import Artifact, is_artifact
from .devices import load_profile, parse_version
from .doctor_rules import (  # noqa: F401 - the rule tables and checks stay importable from edgecnn.doctor
    ADDED_IN,
    KNOWN_SUPPORTED,
    NEVER_SUPPORTED,
    UNDATED_10X,
    Finding,
    _attrs,
    _check_dla,
    _check_parser,
    _check_restrictions,
    _dla_problem,
    _Graph,
    _qdq_findings,
    max_opset,
    sparse_layers,
    sparsity_support,
)
from .errors import ArtifactError, InvalidInput
from .layouts import choose


# -- report ----------------------------------------------------------------------------------------
@dataclass
class DoctorReport:
    artifact: str
    device: str
    tensorrt: str
    jetpack: str | None
    precision: str
    dla_core: int | None
    opset: int
    ops: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    coverage: str = ""
    sparsity: dict | None = None  # 2:4 layers and whether TensorRT can run them sparse (None: no 2:4 layer)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def fallbacks(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "fallback"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors and nothing falling off the DLA (warnings do not fail the check)."""
        return not self.errors and not self.fallbacks

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def require_buildable(self, *, gpu_fallback: bool, source) -> None:
        """Raise InvalidInput when the build would fail (the first error), or when layers fall off the DLA
        and --gpu-fallback was not given. ``source`` is what the user passed (named in the hint)."""
        if self.errors:
            f = self.errors[0]
            raise InvalidInput(
                f"Pre-flight check failed for {self.device} (TensorRT {self.tensorrt}): "
                f"{len(self.errors)} problem(s), first: {f.op} ({f.node}): {f.problem} - {f.fix}. "
                f"Full table: edgecnn doctor {source} --device {self.device}."
            )
        if self.fallbacks and not gpu_fallback:
            f = self.fallbacks[0]
            raise InvalidInput(
                f"{len(self.fallbacks)} layer(s) cannot run on DLA core {self.dla_core} (first: {f.op}: "
                f"{f.problem}); add --gpu-fallback to run them on the GPU, or see 'edgecnn doctor "
                f"{source} --device {self.device} --dla-core {self.dla_core}'."
            )


# -- ONNX graph facts ------------------------------------------------------------------------------
def _load(path: Path):
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ArtifactError(f"Cannot read ONNX model '{path}' ({first}); re-export it.") from exc


def describe_onnx(path: str | Path) -> dict:
    """Input name/shape, batch (None when dynamic), opset, Q/DQ and FP16 presence, op counts."""
    model = _load(Path(path))
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise ArtifactError(f"'{path}' has {len(inputs)} graph inputs; edgecnn deploys single-input image classifiers.")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ArtifactError(f"'{path}' input '{inp.name}' has rank {len(dims)}; edgecnn expects NCHW images.")
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    chw = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    ops = Counter((n.domain + ":" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in g.node)
    fp16 = inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 or any(
        i.data_type == onnx.TensorProto.FLOAT16 for i in g.initializer
    )
    return {
        "input_name": inp.name,
        "input_chw": chw,
        "batch": batch,
        "dynamic_batch": batch is None,
        "output_name": g.output[0].name if g.output else None,
        "opset": int(opset),
        "ops": dict(ops),
        "qdq": bool(ops.get("QuantizeLinear") or ops.get("DequantizeLinear")),
        "fp16": bool(fp16),
    }


def diagnose(
    src,
    device: str,
    *,
    tensorrt: str | None = None,
    dla_core: int | None = None,
    precision: str | None = None,
    batch: int | None = None,
) -> DoctorReport:
    """Check ``src`` (an ONNX artifact or .onnx path) against ``device`` at TensorRT ``tensorrt``
    (default: the profile's default version). Returns a DoctorReport; raises only for bad arguments."""
    profile = load_profile(device)
    art, path = _resolve_source(src, "tensorrt" if profile.uses_tensorrt else "cpu")
    model = _load(path)
    info = describe_onnx(path)
    graph = _Graph(model)
    precision = precision or (
        art.precision if art is not None else ("int8" if info["qdq"] else "fp16" if info["fp16"] else "fp32")
    )
    findings: list[Finding] = []
    sparsity = None
    if profile.uses_tensorrt:
        version, trt, jetpack = _check_tensorrt(profile, tensorrt, model, graph, info, findings)
        sparsity = _check_sparsity(model, graph, profile, precision, findings)
    else:
        version, jetpack = "-", None
        _check_onnxruntime(model, findings)
    _check_precision(profile, precision, findings)
    if dla_core is not None:
        profile.check_dla_core(dla_core)
        _check_dla_build(model, graph, profile, trt, precision, batch, info, findings)
    return DoctorReport(
        artifact=str(art.path if art is not None else path),
        device=profile.name,
        tensorrt=version,
        jetpack=jetpack,
        precision=precision,
        dla_core=dla_core,
        opset=info["opset"],
        ops=info["ops"],
        findings=findings,
        coverage=_coverage(dla_core),
        sparsity=sparsity,
    )


def _resolve_source(src, family: str) -> tuple[Artifact | None, Path]:
    """The ONNX artifact (None for a bare .onnx path) and the model file ``src`` names: of an INT8 artifact, the
    layout the device's runtime ``family`` runs (:func:`edgecnn.layouts.choose`)."""
    if isinstance(src, Artifact):
        art = src
    elif is_artifact(src):
        art = Artifact.load(src)
    else:
        art = None
    if art is not None and art.format != "onnx":
        raise ArtifactError(
            f"'{art.path}' is a {art.format} artifact; doctor checks ONNX artifacts (make one with 'edgecnn export')."
        )
    path = choose(art, family).file if art is not None else Path(src)
    if not path.is_file():
        raise ArtifactError(f"'{path}' does not exist; pass an ONNX artifact directory or a .onnx file.")
    return art, path


def _check_tensorrt(
    profile, tensorrt: str | None, model, graph: _Graph, info: dict, findings: list[Finding]
) -> tuple[str, tuple[int, int], str | None]:
    """Opset, parser and Q/DQ checks for the TensorRT version asked; (version, (major, minor), jetpack)."""
    version = tensorrt or profile.trt_default
    try:
        trt = parse_version(version)
    except ValueError:
        raise InvalidInput(f"--tensorrt {version!r} is not a version; write it like 8.5 or 10.3.") from None
    trt = (trt[0], 0) if trt[1] == 999 else trt
    if not profile.trt_in_range(version):
        raise InvalidInput(
            f"{profile.name} ships TensorRT {profile.trt_range_text}; --tensorrt {version} is outside it."
        )
    top, how = max_opset(trt)
    if info["opset"] > top:
        findings.append(
            Finding(
                "error",
                "-",
                f"opset {info['opset']}",
                f"TensorRT {version} reads ONNX up to opset {top} ({how})",
                f"re-export with --opset {min(top, 17)}",
            )
        )
    if trt >= (10, 0) and info["opset"] < 9:
        findings.append(
            Finding(
                "error",
                "-",
                f"opset {info['opset']}",
                "TensorRT 10+ reads opset 9 and newer",
                "re-export with --opset 17",
            )
        )
    _check_parser(model, graph, trt, findings)
    if info["qdq"]:
        findings += _qdq_findings(model)
    jetpack = (profile.software_for(version) or {}).get("jetpack")
    return version, trt, jetpack


def _check_onnxruntime(model, findings: list[Finding]) -> None:
    """ONNX Runtime devices: only custom-domain ops (other than com.microsoft) fail."""
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx", "com.microsoft"):
            findings.append(
                Finding(
                    "error",
                    node.name or node.output[0],
                    f"{node.domain}:{node.op_type}",
                    "custom-domain op; ONNX Runtime has no kernel for it",
                    "export standard ONNX ops",
                )
            )


def _check_precision(profile, precision: str, findings: list[Finding]) -> None:
    if not profile.supports(precision):
        others = ", ".join(profile.precisions)
        hardware = ", ".join(profile.compute_capability) or profile.runtime
        findings.append(
            Finding(
                "error",
                "-",
                f"precision {precision}",
                f"{profile.name} does not run {precision.upper()} ({hardware})",
                f"deploy one of: {others}",
            )
        )


def _check_dla_build(
    model, graph: _Graph, profile, trt, precision: str, batch: int | None, info: dict, findings: list[Finding]
) -> None:
    """DLA builds: precision, static shapes, and every layer that falls off the DLA."""
    if precision == "fp32":
        findings.append(Finding("error", "-", "precision fp32", "DLA runs FP16 or INT8 only", "add --fp16"))
    if info["dynamic_batch"]:
        findings.append(
            Finding(
                "warning",
                info["input_name"],
                "dynamic batch",
                "DLA needs static shapes; the engine is built for one batch size (min = opt = max)",
                "pick it with --batch N,N,N",
            )
        )
    _check_dla(model, graph, profile, trt, batch or info["batch"] or 1, findings)


def _check_sparsity(model, graph: _Graph, profile, precision: str, findings: list[Finding]) -> dict | None:
    """The 2:4 layers (None when there are none), which TensorRT can run sparse, and whether the device can."""
    rows = sparse_layers(model, graph, precision)
    if not rows:
        return None
    supported, device = sparsity_support(profile)
    if not supported:
        findings.append(
            Finding("warning", "-", "2:4 sparsity", device, "deploy to an Orin (or another Ampere+) device profile")
        )
    eligible = sum(r["eligible"] for r in rows)
    return {
        "device_supported": supported,
        "device": device,
        "eligible": eligible if supported else 0,
        "layers": rows,
        "rule": (
            "TensorRT runs a Conv / Gemm / MatMul on sparse tensor cores when, for each output channel and kernel "
            "position, every 4 input channels hold >= 2 zeros, its input and output channel counts are multiples "
            "of 32, it computes in FP16 / INT8 / TF32, and the GPU is Ampere or newer (compute capability >= 8.0); "
            "the builder still picks a sparse kernel only where it is faster (see trtexec --verbose)"
        ),
    }


def _coverage(dla_core: int | None) -> str:
    coverage = (
        "ONNX ops vs onnx-tensorrt docs/operators.md (8.4, 8.5, 10.15 tables + changelog); static restrictions only"
    )
    if dla_core is not None:
        coverage += (
            "; DLA rules per TensorRT 'DLA Supported Layers and Restrictions' and NVIDIA's Orin DLA op "
            "matrix (convolution-buffer limits are only known to the builder)"
        )
    return coverage
