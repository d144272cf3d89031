"""The rules ``edgecnn doctor`` checks: the ONNX-TensorRT parser's op tables, per-op TensorRT
restrictions, DLA layer restrictions and the Q/DQ findings, over a shape/constness view of the graph.

:func:`edgecnn.doctor.diagnose` runs them for one device profile; the sources of each table are in
:mod:`edgecnn.doctor`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from .compress.qdq import validate_qdq

# -- ONNX-TensorRT parser support ------------------------------------------------------------------
# Ops marked N in onnx-tensorrt docs/operators.md (10.15 table; also N in every earlier table).
NEVER_SUPPORTED = frozenset(
    """
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split()
)

# First TensorRT release whose ONNX parser imports the op (onnx-tensorrt changelog + 8.4/8.5 tables).
ADDED_IN = {
    **dict.fromkeys("Einsum IsNaN GatherND Scatter ScatterElements ScatterND Sign Round".split(), (8, 2)),
    **dict.fromkeys("Shrink Xor".split(), (8, 4)),
    **dict.fromkeys(
        (
            "RandomNormal RandomNormalLike MeanVarianceNormalization RoiAlign Mod Trilu GridSample NonZero "
            "OneHot Reciprocal HardSwish NonMaxSuppression"
        ).split(),
        (8, 5),
    ),
    **dict.fromkeys("GroupNormalization LayerNormalization IsInf".split(), (8, 6)),
    "Hardmax": (9, 2),
    "DeformConv": (10, 1),
    **dict.fromkeys("BlackmanWindow HammingWindow HannWindow".split(), (10, 4)),
    "STFT": (10, 5),
    **dict.fromkeys("RotaryEmbedding RMSNormalization TensorScatter".split(), (10, 15)),
}
# In the 10.15 table but not the 8.5 one, first release undocumented: "may be unsupported" before 10.15.
UNDATED_10X = frozenset("Attention CastLike Gelu Mish".split())

# Every op the parser knows (10.15 table, Y rows); anything else in the default domain is unknown to it.
KNOWN_SUPPORTED = frozenset(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu
Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow
HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()
)


def max_opset(version: tuple[int, int]) -> tuple[int, str]:
    """Highest ONNX opset the parser of TensorRT ``version`` reads, and how we know."""
    if version < (8, 5):
        return 13, "onnx-tensorrt release 8.0-8.4 docs: 'up to Opset 13'"
    if version < (9, 0):
        return 17, "onnx-tensorrt release 8.5/8.6 docs: 'up to Opset 17'"
    if version < (10, 0):
        return 19, "onnx-tensorrt 9.2 docs: 'up to Opset 19'"
    if version < (10, 6):
        return 20, "onnx-tensorrt 10.0 docs: 'opset 9 to opset 20'"
    if version < (10, 15):
        return 22, "inferred: 10.6 moved to ONNX 1.17 (opset 22); check your release's docs/operators.md"
    return 24, "onnx-tensorrt 10.15 / 11.x docs: 'opset 9 to opset 24'"


# -- findings --------------------------------------------------------------------------------------
@dataclass
class Finding:
    severity: str  # error: the build fails | fallback: runs on the GPU, not the DLA | warning: check it
    node: str
    op: str
    problem: str
    fix: str


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    """Shapes (from ONNX shape inference) and constness of every tensor, for rule checks."""

    def __init__(self, model):
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - shapes are a help, not a requirement
            pass
        g = model.graph
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.shapes: dict[str, list] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        for name, init in self.inits.items():
            self.shapes[name] = list(init.dims)

    def is_constant(self, name: str) -> bool:
        """An initializer, a Constant, or a (Q->)DQ / Identity / Cast chain over one."""
        if name in self.inits:
            return True
        node = self.producer.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        if node.op_type in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast", "Transpose", "Reshape"):
            return bool(node.input) and self.is_constant(node.input[0])
        return False

    def rank(self, name: str) -> int | None:
        s = self.shapes.get(name)
        return len(s) if s is not None else None

    def array(self, name: str):
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None


# -- checks ----------------------------------------------------------------------------------------
def _check_parser(model, graph: _Graph, trt: tuple[int, int], out: list[Finding]) -> None:
    ver = f"{trt[0]}.{trt[1]}"
    for node in model.graph.node:
        name = node.name or node.output[0]
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            fix = (
                "export Q/DQ instead of FakeQuantize (edgecnn quantize does)"
                if "FakeQuantize" in op
                else "replace it with standard ONNX ops, or register a TensorRT plugin of that name"
            )
            out.append(
                Finding("error", name, f"{node.domain}:{op}", f"custom-domain op; TensorRT {ver} has no importer", fix)
            )
            continue
        if op in NEVER_SUPPORTED:
            out.append(
                Finding(
                    "error",
                    name,
                    op,
                    f"not supported by the TensorRT {ver} ONNX parser",
                    "rewrite the model without it (see onnx-tensorrt docs/operators.md)",
                )
            )
            continue
        if op in ADDED_IN and trt < ADDED_IN[op]:
            need = ".".join(map(str, ADDED_IN[op]))
            out.append(
                Finding(
                    "error",
                    name,
                    op,
                    f"imported only from TensorRT {need} on (this is {ver})",
                    f"use a device/JetPack with TensorRT >= {need} or remove the op",
                )
            )
            continue
        if op in UNDATED_10X and trt < (10, 15):
            sev = "error" if trt < (9, 0) else "warning"
            out.append(
                Finding(
                    sev,
                    name,
                    op,
                    f"in onnx-tensorrt's 10.15 table, not in the 8.x tables; TensorRT {ver} may not import it",
                    "check with trtexec on the device, or decompose the op",
                )
            )
            continue
        if op not in KNOWN_SUPPORTED and op not in ADDED_IN:
            out.append(
                Finding(
                    "warning",
                    name,
                    op,
                    "not listed in onnx-tensorrt's operator table",
                    "check with trtexec on the device",
                )
            )
            continue
        _check_restrictions(node, graph, trt, out)


def _check_restrictions(node, graph: _Graph, trt: tuple[int, int], out: list[Finding]) -> None:
    op, name = node.op_type, node.name or node.output[0]
    a = _attrs(node)
    if op in ("Conv", "ConvTranspose"):
        if len(node.input) > 1 and not graph.is_constant(node.input[1]):
            out.append(
                Finding(
                    "error",
                    name,
                    op,
                    "weights W are computed at run time; TensorRT needs them constant",
                    "fold the weights into an initializer (onnxslim / constant folding)",
                )
            )
        k = a.get("kernel_shape") or (graph.shapes.get(node.input[1], [])[2:] if len(node.input) > 1 else [])
        if k and len(k) not in (2, 3):
            out.append(
                Finding("error", name, op, f"{len(k)}D convolution; TensorRT runs 2D and 3D only", "use a 2D conv")
            )
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        k = a.get("kernel_shape", [])
        if len(k) not in (2, 3):
            out.append(Finding("error", name, op, f"{len(k)}D pooling; TensorRT runs 2D and 3D only", "use 2D pooling"))
        if any(d != 1 for d in a.get("dilations", [])):
            out.append(Finding("error", name, op, "dilated pooling is not supported", "remove the dilation"))
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            out.append(Finding("error", name, op, "the Indices output is not supported", "drop return_indices"))
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        zp = graph.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None:
            if (
                str(zp.dtype) not in ("int8",)
                and not (trt >= (8, 6) and str(zp.dtype).startswith("float8"))
                and str(zp.dtype) not in ("int4",)
            ):
                out.append(
                    Finding(
                        "error",
                        name,
                        op,
                        f"{zp.dtype} zero point (asymmetric/unsigned quantization); "
                        "TensorRT takes signed INT8 with zero point 0",
                        "quantize symmetrically to int8 (edgecnn quantize does for TensorRT targets)",
                    )
                )
            elif (zp != 0).any():
                out.append(
                    Finding(
                        "error",
                        name,
                        op,
                        "non-zero zero point; TensorRT needs zero point 0",
                        "quantize symmetrically (preset=performance in NNCF)",
                    )
                )
    elif op == "TopK" and trt < (8, 6) and len(node.input) > 1 and not graph.is_constant(node.input[1]):
        out.append(
            Finding("error", name, op, "K computed at run time; TensorRT < 8.6 needs a constant K", "make K constant")
        )


# DLA: ONNX op -> checker; ops absent here do not run on the DLA through TensorRT.
def _check_dla(model, graph: _Graph, profile, trt: tuple[int, int], batch: int, out: list[Finding]) -> None:
    orin = (profile.dla_version or "1.0") >= "2.0"
    for node in model.graph.node:
        op, name = node.op_type, node.name or node.output[0]
        if node.domain not in ("", "ai.onnx") or op in ("Constant", "Identity", "Dropout"):
            continue
        why = _dla_problem(node, graph, op, orin, trt)
        if why:
            out.append(Finding("fallback", name, op, why, "runs on the GPU with --gpu-fallback"))
    if batch > 4096:
        out.append(Finding("fallback", "-", "batch", f"batch {batch} > 4096, the DLA maximum", "use a smaller batch"))
    for tensor, shape in graph.shapes.items():
        if shape and any(d and d > 8192 for d in shape[1:]):
            out.append(
                Finding(
                    "fallback",
                    tensor,
                    "shape",
                    f"a non-batch dimension of {shape} exceeds 8192 (DLA limit)",
                    "reduce the tensor size",
                )
            )
            break


def _dla_problem(node, graph: _Graph, op: str, orin: bool, trt: tuple[int, int]) -> str | None:
    a = _attrs(node)
    rank = graph.rank(node.input[0]) if node.input else None
    if rank is not None and rank != 4 and op not in ("Gemm", "MatMul", "QuantizeLinear", "DequantizeLinear"):
        return f"{rank}D tensor; DLA layers take 4D (NCHW) tensors only"
    if op == "Conv":
        return _dla_conv(node, graph, a)
    if op == "ConvTranspose":
        return _dla_conv_transpose(node, graph, a)
    if op in ("MaxPool", "AveragePool"):
        return _dla_pool(a)
    return _dla_other(node, graph, op, a, orin, trt)


def _dla_other(node, graph: _Graph, op: str, a: dict, orin: bool, trt: tuple[int, int]) -> str | None:
    """Activations, element-wise, reductions and the rest (convolution and pooling have their own)."""
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMin", "ReduceL1", "ReduceL2"):
        return (
            "imported as a TensorRT reduce layer, which NVIDIA's Orin DLA op table lists as not exposed to DLA; "
            "an AveragePool/MaxPool with window <= 8 stays on the DLA"
        )
    if op in (
        "Relu",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "BatchNormalization",
        "Add",
        "Sub",
        "Mul",
        "Max",
        "Sum",
        "Reshape",
        "Transpose",
        "Slice",
        "Split",
    ):
        return None
    if op == "PRelu":
        return None if graph.is_constant(node.input[1]) else "slope is not a build-time constant"
    if op == "Clip":
        lo = graph.array(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min")
        hi = graph.array(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max")
        try:
            ok = lo is not None and hi is not None and float(lo) == 0.0 and 1.0 <= float(hi) <= 127.0
        except (TypeError, ValueError):
            ok = False
        return None if ok else "DLA runs Clip only as clipped ReLU (min 0, max in [1, 127])"
    if op == "Concat":
        axis = int(a.get("axis", 1))
        return None if axis in (1, -3) else f"concatenation along axis {axis}; DLA concatenates channels (axis 1) only"
    if op in ("Gemm", "MatMul"):
        return None if len(node.input) > 1 and graph.is_constant(node.input[1]) else "second input is not constant"
    if op == "LRN":
        size = int(a.get("size", 5))
        return None if size in (3, 5, 7, 9) else f"LRN window {size}; DLA takes 3, 5, 7 or 9"
    if op in ("Resize", "Upsample"):
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return None if mode in ("nearest", "linear") else f"resize mode {mode}"
    if op in ("Softmax", "Equal", "Abs"):
        return None if orin else f"{op} runs on the DLA of Orin (NVDLA v2) only, not Xavier"
    if op in ("QuantizeLinear", "DequantizeLinear"):
        if trt < (10, 0):
            return (
                "Q/DQ (explicit quantization) layers do not run on the DLA in TensorRT 8.x; INT8 on DLA there "
                "needs calibration scales (NVIDIA's DLA-SW qdq-translator) - or deploy FP16 on the DLA"
            )
        return None
    if op == "Flatten":
        return "Flatten makes a 2D tensor; NVIDIA's Orin DLA op table lists it as not exposed to DLA"
    return "no DLA implementation in TensorRT for this op (NVIDIA DLA layer list / Orin DLA op matrix)"


def _dla_conv(node, graph: _Graph, a: dict) -> str | None:
    w = graph.shapes.get(node.input[1], []) if len(node.input) > 1 else []
    k = list(a.get("kernel_shape") or w[2:])
    s, d = list(a.get("strides", [1] * len(k))), list(a.get("dilations", [1] * len(k)))
    p = list(a.get("pads", [0] * 2 * len(k)))
    groups = int(a.get("group", 1))
    if len(k) != 2:
        return f"{len(k)}D convolution; DLA runs 2D only"
    if not all(1 <= x <= 32 for x in k):
        return f"kernel {k} outside [1, 32]"
    if not all(1 <= x <= 8 for x in s):
        return f"stride {s} outside [1, 8]"
    if not all(0 <= x <= 31 for x in p) or any(p[i] >= k[i % 2] for i in range(len(p))):
        return f"padding {p} outside [0, 31] or not smaller than the kernel {k}"
    if not all(1 <= x <= 32 for x in d):
        return f"dilation {d} outside [1, 32]"
    if w and not 1 <= w[0] <= 8192:
        return f"{w[0]} output channels outside [1, 8192]"
    if groups > 8192:
        return f"{groups} groups > 8192"
    if not graph.is_constant(node.input[1]):
        return "weights are not constant"
    return None


def _dla_conv_transpose(node, graph: _Graph, a: dict) -> str | None:
    w = graph.shapes.get(node.input[1], []) if len(node.input) > 1 else []
    k = list(a.get("kernel_shape") or w[2:])
    if len(k) != 2 or not all(1 <= x <= 32 for x in k):
        return f"kernel {k}: DLA deconvolution needs 2D kernels in [1, 32]"
    if any(a.get("pads", [])):
        return "padded deconvolution; DLA needs padding 0"
    if int(a.get("group", 1)) != 1 or any(x != 1 for x in a.get("dilations", [])):
        return "grouped or dilated deconvolution; DLA needs groups = dilation = 1"
    return None


def _dla_pool(a: dict) -> str | None:
    k, s = list(a.get("kernel_shape", [])), list(a.get("strides", [1, 1]))
    p = list(a.get("pads", [0, 0, 0, 0]))
    if len(k) != 2:
        return "DLA pooling is 2D only"
    if not all(1 <= x <= 8 for x in k):
        return f"window {k} outside [1, 8]"
    if not all(1 <= x <= 16 for x in s):
        return f"stride {s} outside [1, 16]"
    if not all(0 <= x <= 7 for x in p):
        return f"padding {p} outside [0, 7]"
    return None


def _qdq_findings(model) -> list[Finding]:
    """The quantization checker's TensorRT rules (edgecnn.compress.qdq)."""
    out = []
    for v in validate_qdq(model, rules="tensorrt"):
        if v.severity == "error" and v.rule in ("zero-point-missing", "unsigned", "zero-point-nonzero"):
            continue  # reported by _check_restrictions already
        out.append(
            Finding(
                "error" if v.severity == "error" else "warning",
                v.node,
                f"Q/DQ {v.rule}",
                v.detail,
                "re-quantize for TensorRT (edgecnn quantize)",
            )
        )
    return out


# -- 2:4 structured sparsity -----------------------------------------------------------------------
#: sparse tensor-core kernels tile the channel dimensions by this; other counts run dense (edgecnn's reading
#: of NVIDIA's TensorRT guidance: its sparse kernels are chosen only for layers of this shape)
SPARSE_CHANNEL_MULTIPLE = 32
#: the first compute capability with sparse tensor cores (Ampere; Orin is 8.7; Xavier 7.2 and Nano 5.3 have none)
SPARSE_MIN_CC = (8, 0)


def _const_weight(graph: _Graph, name: str):
    """The constant array behind ``name``, through Q/DQ / Identity / Cast (zeros stay zeros in INT8)."""
    for _ in range(4):
        arr = graph.array(name)
        node = graph.producer.get(name)
        if (
            arr is not None
            or node is None
            or node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast")
        ):
            return arr
        name = node.input[0]
    return None


def _weight_of(node, graph: _Graph):
    """(K outputs, C inputs, weight grouped as (..., C)) of a Conv / Gemm / MatMul with constant weights, or a
    reason it has none TensorRT could run sparse."""
    a = _attrs(node)
    if node.op_type == "Conv":
        w = _const_weight(graph, node.input[1]) if len(node.input) > 1 else None
        if w is None or w.ndim != 4:
            return "not a 2-D convolution with constant weights"
        if a.get("group", 1) != 1:
            return f"grouped convolution (group={a['group']})"
        return w.shape[0], w.shape[1], w.transpose(2, 3, 0, 1)  # K, C, R, S -> R, S, K, C
    idx = 1
    w = _const_weight(graph, node.input[idx]) if len(node.input) > idx else None
    if w is None or w.ndim != 2:
        return "weights are not a constant matrix"
    if node.op_type == "Gemm" and a.get("transB", 0):
        return w.shape[0], w.shape[1], w  # (out, in): rows are groups along in
    return w.shape[1], w.shape[0], w.T  # (in, out) -> (out, in)


def sparse_layers(model, graph: _Graph, precision: str) -> list[dict]:
    """Every Conv / Gemm / MatMul whose constant weights hold the 2:4 pattern along input channels (TensorRT's
    published rule: for each output channel and kernel position, every 4 input channels have >= 2 zeros), with
    whether TensorRT can run it sparse and, if not, why."""
    rows = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        got = _weight_of(node, graph)
        if isinstance(got, str):
            continue
        k, c, w = got
        if c % 4 or w.size == 0 or int(((w.reshape(-1, 4) != 0).sum(axis=1) > 2).sum()):
            continue  # dense: not a 2:4 layer
        m = SPARSE_CHANNEL_MULTIPLE
        why = []
        if c % m:
            why.append(f"{c} input channels, not a multiple of {m}")
        if k % m:
            why.append(f"{k} output channels, not a multiple of {m}")
        if precision == "fp32":
            why.append("FP32 engine with TF32 off: sparse tensor cores run FP16 / INT8 / TF32 only (deploy --fp16)")
        rows.append(
            {"node": node.name or node.output[0], "op": node.op_type, "in": int(c), "out": int(k), "eligible": not why}
            | ({"reason": "; ".join(why)} if why else {})
        )
    return rows


def sparsity_support(profile) -> tuple[bool, str]:
    """(whether the profile's GPU has sparse tensor cores, the sentence that says so)."""
    ccs = [tuple(int(x) for x in c.split(".")) for c in profile.compute_capability]
    ok = [c for c in ccs if c >= SPARSE_MIN_CC]
    shown = ", ".join(profile.compute_capability) or "none"
    if not ok:
        return False, (
            f"{profile.name} (compute capability {shown}) has no sparse tensor cores (they start with Ampere, 8.0; "
            "Orin has them, Xavier and Nano do not): the 2:4 pattern cannot be faster there"
        )
    if len(ok) < len(ccs):
        return True, f"{profile.name}: only its GPUs of compute capability 8.0 or newer have sparse tensor cores"
    return True, f"{profile.name} (compute capability {shown}) has sparse tensor cores"
