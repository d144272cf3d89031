"""torch artifact -> ONNX artifact.

The steps, in order, and why:

1. **Reference outputs first.** The original network (as loaded, eval mode) runs on real images (the
   bundled digits, resized to the artifact's input spec) *before* anything is changed, so the parity
   we record is end to end: folding, rewrites, export, simplification and ONNX Runtime together.
2. **Fold BatchNorm into the preceding convolution, in place** (eval statistics). The legacy exporter
   would fold most pairs itself, but doing it in torch makes the graph independent of exporter
   details, tells us how many pairs were folded, and is the same helper quantization needs before
   NNCF (an unfolded BatchNorm leaves float ops between the quantized convolutions and costs INT8 its
   speed-up). Pre-activation BatchNorms (DenseNet)
   have no convolution in front and stay in the graph; the manifest counts them.
3. **Make the graph exportable.** torch's legacy exporter cannot export an AdaptiveAvgPool2d whose
   output size does not divide its input size (AlexNet/VGG below 224 px, where a 1x1 map is pooled to
   7x7). With the input size fixed by the manifest, such a pool is an exact constant linear map; we
   replace it by two MatMuls with the pooling matrices.
4. **Export with the legacy (TorchScript) exporter**, ``dynamo=False``: fast, works for every zoo
   model and for NNCF-quantized models, and honours opset 17.
5. **Simplify** with onnxslim, then **onnx.checker**.
6. **Parity** torch vs ONNX Runtime on the same real images. FP32 must agree within 1e-4 max abs; a
   difference above 1 % of the largest logit means the graph is wrong and the export fails.
"""

from __future__ import annotations

import copy
import io
import logging
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch
from torch import fx, nn
from tqdm.auto import tqdm

from ..artifact import Artifact, check_out, derived_manifest, write_artifact
from ..data.source import DataSource
from ..errors import EdgeCnnError, InvalidInput
from ..models import load_torch_model
from ..runtime.onnxrt import create_session, ort_version

log = logging.getLogger("edgecnn")

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
MIN_OPSET = 11  # Gemm/Flatten/Pad semantics the zoo relies on
PARITY_ATOL_FP32 = 1e-4
PARITY_MAX_REL = 1e-2
PARITY_IMAGES = 16
try:
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as MAX_OPSET
except ImportError:  # pragma: no cover - private constant moved
    MAX_OPSET = 20


class ExportError(EdgeCnnError):
    """The model could not be exported to a valid ONNX graph."""


class ParityError(ExportError):
    """The exported graph computes something else than the torch model."""


# --------------------------------------------------------------------------------------------------
# Graph preparation (in place, on torch modules)
# --------------------------------------------------------------------------------------------------
def _set_submodule(model, name: str, module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def fold_batchnorm(model) -> list[str]:
    """Fold every BatchNorm2d that directly consumes a Conv2d's output into that convolution, in place.

    The model is put in eval mode (folding uses the running statistics). Pairs are found by tracing the
    forward pass with torch.fx (so residual branches, DenseNet's conv->norm2 and GoogLeNet's BasicConv2d
    are all seen), but the *original* module is modified: the BatchNorm becomes ``nn.Identity`` and the
    convolution gets the folded weight and bias. The model keeps its class (no fx GraphModule, which
    would switch NNCF to its experimental backend). A convolution whose output is also used elsewhere,
    or a module called more than once, is left alone. Returns ``["conv_name+bn_name", ...]``.
    """
    model.eval()
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - untraceable custom code: nothing folded, exporter still folds
        log.warning(
            "BatchNorm folding skipped: torch.fx cannot trace %s (%s)",
            type(model).__name__,
            str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__,
        )
        return []
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d:
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or type(modules.get(src.target)) is not nn.Conv2d:
            continue
        conv, bn = modules[src.target], modules[node.target]
        if (
            len(src.users) != 1
            or calls[src.target] != 1
            or calls[node.target] != 1
            or len(node.args) != 1
            or not bn.track_running_stats
            or bn.running_mean is None
            or conv.out_channels != bn.num_features
        ):
            continue
        pairs.append((src.target, node.target))
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            dtype = conv.weight.dtype
            # per-channel factors in float64, one rounding when applied to the (large) weight tensor
            scale = torch.rsqrt(bn.running_var.double() + bn.eps)
            if bn.affine:
                scale = scale * bn.weight.double()
            shift = -bn.running_mean.double() * scale + (bn.bias.double() if bn.affine else 0.0)
            bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
            conv.weight = nn.Parameter(conv.weight * scale.to(dtype).reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias * scale + shift).to(dtype))
            _set_submodule(model, bn_name, nn.Identity())
    return [f"{c}+{b}" for c, b in pairs]


def _pool_matrix(n_in: int, n_out: int):
    """Rows average the bins of torch's adaptive pooling: bin i covers [floor(i*n/o), ceil((i+1)*n/o))."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m.float()


class FixedAdaptiveAvgPool2d(nn.Module):
    """AdaptiveAvgPool2d for one known input size, as ``A_h @ x @ A_w^T`` (exact, exportable)."""

    def __init__(self, h_in: int, w_in: int, h_out: int, w_out: int):
        super().__init__()
        self.register_buffer("rows", _pool_matrix(h_in, h_out))
        self.register_buffer("cols_t", _pool_matrix(w_in, w_out).t().contiguous())

    def forward(self, x):
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


def _fixed_adaptive_pool(h_in: int, w_in: int, h_out: int, w_out: int) -> FixedAdaptiveAvgPool2d:
    return FixedAdaptiveAvgPool2d(h_in, w_in, h_out, w_out)


def make_exportable(model, input_shape: tuple[int, int, int]) -> list[str]:
    """Replace adaptive average pools the legacy exporter rejects (output size not a divisor of the
    input size) by an exact fixed-size equivalent, in place. Returns a description of each rewrite."""
    seen: dict[str, set] = {}

    def recorder(name: str):
        def hook(module, args) -> None:
            seen.setdefault(name, set()).add(tuple(args[0].shape[-2:]))

        return hook

    hooks = [
        m.register_forward_pre_hook(recorder(n)) for n, m in model.named_modules() if type(m) is nn.AdaptiveAvgPool2d
    ]
    if not hooks:
        return []
    param = next(model.parameters(), None)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
    rewrites = []
    for name, shapes in seen.items():
        if len(shapes) != 1:
            continue
        ((h_in, w_in),) = shapes
        out = model.get_submodule(name).output_size
        h_out, w_out = (out, out) if isinstance(out, int) else out
        h_out, w_out = h_out or h_in, w_out or w_in
        if h_in % h_out == 0 and w_in % w_out == 0:
            continue
        _set_submodule(model, name, _fixed_adaptive_pool(h_in, w_in, h_out, w_out))
        rewrites.append(f"{name}: AdaptiveAvgPool2d {h_in}x{w_in}->{h_out}x{w_out} as constant pooling MatMuls")
    return rewrites


def compact_names(model) -> dict:
    """Shorten a model file for the smallest targets: every tensor except the graph's inputs and outputs
    gets a short name (``t0``, ``t1``, ...), node names and doc strings are dropped (ONNX Runtime and
    TensorRT name nodes themselves). The graph computes exactly the same thing. Exporter names such as
    ``scale_/features/features.1/Tanh_output_0_1`` are most of a small INT8 file (LeNet-5: 8 of 21 kB).
    Returns ``{"tensors": n, "nodes": m, "names": {short: original}}`` for the manifest, so a name in an
    error from a runtime can still be traced back to the layer."""
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping)}"
        return mapping[name]

    for t in g.initializer:
        t.name = short(t.name)
    nodes = 0
    for n in g.node:
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
        nodes += bool(n.name)
        n.name = ""
        n.doc_string = ""
    for vi in g.value_info:
        vi.name = short(vi.name)
    model.doc_string = g.doc_string = ""
    return {"tensors": len(mapping), "nodes": nodes, "names": {v: k for k, v in mapping.items()}}


# --------------------------------------------------------------------------------------------------
# Export, simplify, check
# --------------------------------------------------------------------------------------------------
def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def to_onnx(
    model,
    path: str | Path,
    *,
    input_shape: tuple[int, int, int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    simplify: bool = True,
    metadata: dict | None = None,
) -> dict:
    """Export an eval-mode module to ``path`` (legacy exporter), simplify it, check it. Returns a
    description of the graph (opset, input/output names and shapes, op counts, simplification)."""
    path = Path(path)
    example = torch.zeros(batch_size, *input_shape)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
            )
    except torch.onnx.errors.OnnxExporterError as exc:
        raise ExportError(
            f"torch.onnx could not export the model at opset {opset}: {_first_line(exc)}. "
            f"Try another --opset (e.g. {DEFAULT_OPSET}) or report the unsupported operator."
        ) from exc
    export_s = time.perf_counter() - t0
    proto = onnx.load_from_string(buf.getvalue())
    del buf
    ops_before = len(proto.graph.node)
    simplified, simplify_error, t1 = False, None, time.perf_counter()
    if simplify:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slim = onnxslim.slim(proto)
            if slim is None:
                raise RuntimeError("onnxslim returned no model")
            proto, simplified = slim, True
        except Exception as exc:  # noqa: BLE001 - keep the checked unsimplified graph, say so loudly
            simplify_error = _first_line(exc)
            warnings.warn(f"onnxslim failed ({simplify_error}); keeping the unsimplified graph.", stacklevel=2)
    simplify_s = time.perf_counter() - t1
    proto.producer_name = "edgecnn"
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"The exported graph fails onnx.checker: {_first_line(exc)}; try another --opset.") from exc
    ops = Counter(n.op_type for n in proto.graph.node)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    return {
        "exporter": f"torch.onnx legacy (TorchScript) exporter, torch {torch.__version__}",
        "opset": opset,
        "ir_version": int(proto.ir_version),
        "dynamic_batch": bool(dynamic_batch),
        "batch_size": None if dynamic_batch else int(batch_size),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": dims,
        "output_shape": out_dims,
        "simplified": simplified,
        "simplify_error": simplify_error,
        "nodes_before_simplify": ops_before,
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items())),
        "bn_remaining": ops.get("BatchNormalization", 0),
        "seconds": {"export": round(export_s, 2), "simplify": round(simplify_s, 2)},
    }


# --------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------
def parity_images(
    input_spec: dict, data: DataSource | str = "digits", n: int = PARITY_IMAGES
) -> tuple[np.ndarray, dict]:
    """``n`` real images preprocessed with ``input_spec`` (float32 N,C,H,W) and what they are.

    The digits (default) give evenly spaced held-out digits, resized to the model's input and replicated
    to its channels: real pixels at any input spec. A folder gives its held-out split. Synthetic noise
    is refused: agreement on noise says nothing about agreement on images.
    """
    source = DataSource.parse(data)
    if n < 1:
        raise InvalidInput(f"parity needs at least 1 image, got {n}.")
    if source.is_synthetic:
        raise InvalidInput(
            "Parity must be measured on real images, not synthetic noise; pass --parity-data digits "
            "(default) or a folder of images."
        )
    dataset = source.dataset(input_spec, "val")
    total = len(dataset)
    if total == 0:
        raise InvalidInput(f"Parity data '{source}' has no held-out images; pass --parity-data digits.")
    idx = np.unique(np.linspace(0, total - 1, num=min(n, total)).round().astype(int))
    images = np.stack([np.asarray(dataset[int(i)][0], dtype=np.float32) for i in idx])
    return images, {**source.describe("val"), "indices": idx.tolist()}


def torch_outputs(model, images: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            outs.append(model(torch.from_numpy(images[i : i + batch_size])).float().cpu().numpy())
    return np.concatenate(outs)


def compare_outputs(reference: np.ndarray, actual: np.ndarray) -> dict:
    """Max abs / relative error and top-1 agreement (relative = max abs / largest |reference| logit:
    elementwise relative error explodes on logits near zero and says nothing)."""
    diff = np.abs(reference.astype(np.float64) - actual.astype(np.float64))
    scale = float(np.abs(reference).max())
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(diff.max() / scale) if scale > 0 else float(diff.max()),
        "reference_max_abs": scale,
        "top1_agreement": float((reference.argmax(1) == actual.argmax(1)).mean()),
    }


def measure_parity(
    onnx_path: str | Path,
    images: np.ndarray,
    reference: np.ndarray,
    *,
    batch_size: int | None = None,
    threads: int | None = None,
) -> dict:
    """Run ``images`` through ONNX Runtime (CPU, full graph optimisation, as users run it) and compare
    with ``reference`` (the torch outputs). ``batch_size`` set = the graph has that static batch; else
    the whole set runs as one batch and the first image alone as a second (dynamic batch exercised)."""
    session = create_session(onnx_path, threads=threads)
    name = session.get_inputs()[0].name
    if batch_size:
        reps = -(-len(images) // batch_size) * batch_size
        order = np.resize(np.arange(len(images)), reps)
        outs = [session.run(None, {name: images[order[i : i + batch_size]]})[0] for i in range(0, reps, batch_size)]
        actual, ref = np.concatenate(outs), reference[order]
    else:
        single = session.run(None, {name: images[:1]})[0]
        actual = np.concatenate([session.run(None, {name: images})[0], single])
        ref = np.concatenate([reference, reference[:1]])
    result = compare_outputs(ref, actual)
    result["runs"] = int(len(actual))
    return result


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------
def export_onnx(
    src,
    out,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    simplify: bool = True,
    fold_bn: bool = True,
    parity_data: DataSource | str | None = "digits",
    parity_images_n: int = PARITY_IMAGES,
    parity_max_rel: float | None = PARITY_MAX_REL,
    model=None,
    precision: str | None = None,
    progress: bool = True,
):
    """Export torch artifact ``src`` to an ONNX artifact at ``out`` (format onnx, file model.onnx).

    ``model`` replaces the network loaded from ``src`` (e.g. an in-memory pruned or quantized module
    whose lineage is ``src``); it is copied, never modified. ``parity_data`` is a DataSource or its text
    ('digits', the default, or an image folder), or None to skip the parity measurement (not
    recommended). Parity above ``parity_max_rel`` (relative to the largest logit) fails the export with
    ParityError.
    """
    src, data, ort = _resolve_export(src, out, opset=opset, batch_size=batch_size, parity_data=parity_data)
    precision = precision or src.precision
    steps = tqdm(total=5, desc="export", disable=not progress, leave=False, unit="step")

    def step(name: str) -> None:
        steps.set_postfix_str(name)
        log.info("export %s: %s", src.model, name)

    t_start = time.perf_counter()
    try:
        step("load")
        net = (load_torch_model(src) if model is None else copy.deepcopy(model)).to("cpu").eval()
        reference = _parity_reference(src, net, data, parity_images_n)
        steps.update()
        step("fold BatchNorm")
        folded = fold_batchnorm(net) if fold_bn else []
        rewrites = make_exportable(net, src.input_shape)
        steps.update()
        params = {
            "opset": opset,
            "dynamic_batch": dynamic_batch,
            "batch_size": batch_size,
            "simplify": simplify,
            "fold_bn": fold_bn,
            "parity_data": None if data is None else str(data),
            "parity_images": parity_images_n if data is not None else 0,
            "source_model": "artifact" if model is None else "in-memory module",
        }
        manifest, metadata = _export_manifest(src, precision, params)

        def write(tmp: Path) -> None:
            step("export + simplify")
            info = to_onnx(
                net,
                tmp / "model.onnx",
                input_shape=src.input_shape,
                opset=opset,
                dynamic_batch=dynamic_batch,
                batch_size=batch_size,
                simplify=simplify,
                metadata=metadata,
            )
            info.update(
                bn_folded=len(folded),
                bn_folded_pairs=folded,
                rewrites=rewrites,
                onnx_version=onnx.__version__,
                onnxruntime_version=ort,
            )
            manifest["onnx"] = info
            steps.update()
            step("parity")
            manifest["metrics"]["parity"] = _record_parity(
                tmp / "model.onnx",
                reference,
                precision=precision,
                parity_max_rel=parity_max_rel,
                batch_size=None if dynamic_batch else batch_size,
            )
            info["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
            steps.update()
            step("write")

        return write_artifact(out, manifest, write)
    finally:
        steps.close()


def _export_manifest(src: Artifact, precision: str, params: dict) -> tuple[dict, dict]:
    """The ONNX artifact's manifest (lineage: ``src``) and the metadata written into the ONNX file."""
    manifest = derived_manifest(src, stage="export", precision=precision, params=params)
    metadata = {
        "edgecnn.model": src.model,
        "edgecnn.id": manifest["id"],
        "edgecnn.precision": precision,
        "edgecnn.classes": ",".join(src.classes),
    }
    return manifest, metadata


def _resolve_export(src, out, *, opset: int, batch_size: int, parity_data) -> tuple[Artifact, DataSource | None, str]:
    """The torch artifact, the parity data and ONNX Runtime's version; every option checked before any work."""
    ort = ort_version()  # parity runs the graph in ONNX Runtime: fail now if it is missing
    if out is not None:
        check_out(out, src)
    if not isinstance(src, Artifact):
        src = Artifact.load(src, formats=("torch",))
    elif src.format != "torch":
        raise InvalidInput(
            f"'{src.path}' is a {src.format} artifact; export needs a torch artifact "
            "(the one written by 'edgecnn train' or a compression stage)."
        )
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InvalidInput(
            f"opset {opset} is not supported by the exporter; pass --opset between {MIN_OPSET} "
            f"and {MAX_OPSET} (default {DEFAULT_OPSET})."
        )
    if batch_size < 1:
        raise InvalidInput(f"batch size must be >= 1, got {batch_size}.")
    return src, DataSource.optional(parity_data), ort


def _parity_reference(src: Artifact, net, data: DataSource | None, n: int) -> tuple | None:
    """(images, torch outputs, data description) measured before anything changes the network."""
    if data is None:
        warnings.warn(
            "parity check skipped (parity_data=None): nothing proves the ONNX graph matches torch.", stacklevel=3
        )
        return None
    images, desc = parity_images(src.input, data, n)
    reference = torch_outputs(net, images)
    if reference.ndim != 2 or reference.shape[1] != src.num_classes:
        raise InvalidInput(
            f"The model outputs shape {list(reference.shape)} but '{src.path}' declares "
            f"{src.num_classes} classes; pass the model that belongs to this artifact."
        )
    return images, reference, desc


def _record_parity(
    onnx_path: Path, reference: tuple | None, *, precision: str, parity_max_rel: float | None, batch_size: int | None
) -> dict | None:
    """Parity of the written graph against the torch outputs; ParityError when it computes something else."""
    if reference is None:
        return None
    images, expected, desc = reference
    parity = measure_parity(onnx_path, images, expected, batch_size=batch_size, threads=torch.get_num_threads())
    parity.update(n_images=int(len(images)), data=desc, precision=precision)
    if precision == "fp32":
        parity["atol"] = PARITY_ATOL_FP32
        parity["within_atol"] = parity["max_abs"] <= PARITY_ATOL_FP32
    if parity_max_rel is not None and parity["max_rel"] > parity_max_rel:
        raise ParityError(
            f"ONNX Runtime disagrees with torch on {len(images)} real images: max abs error "
            f"{parity['max_abs']:.3g} = {100 * parity['max_rel']:.2g}% of the largest logit (limit "
            f"{100 * parity_max_rel:.2g}%), top-1 agreement {100 * parity['top1_agreement']:.0f}%. "
            "The exported graph is wrong; retry with --no-fold-bn / --no-simplify / another --opset "
            "to find the step that breaks it."
        )
    if precision == "fp32" and not parity["within_atol"]:
        warnings.warn(
            f"ONNX parity max abs error {parity['max_abs']:.3g} exceeds {PARITY_ATOL_FP32:g} "
            f"(logits up to {parity['reference_max_abs']:.3g}; {parity['max_rel']:.2g} relative).",
            stacklevel=4,
        )
    return parity
