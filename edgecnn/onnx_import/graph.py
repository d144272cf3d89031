"""Reading an ONNX file for ``edgecnn import``: bounded, parsed (never executed), checked; its one image
input and one N x C output described; the class names and the input spec from the options."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model

from .. import limits
from ..artifact import sha256_file
from ..data.images import preprocess_contract
from ..data.source import DataSource
from ..errors import InvalidInput, OptionError
from ..export.onnx import PARITY_IMAGES
from ..manifest_schema import inside_path
from ..models.registry import ModelSpec
from ..options import Options, bounded

#: NNCF's per-channel INT8 needs QuantizeLinear-13: older graphs are converted to this opset
MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()
#: a mean / std is in pixel/255 units; anything beyond this is a typo
MAX_NORM = 1000.0
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
BATCH = "batch"
_TYPES = {v: k.lower() for k, v in onnx.TensorProto.DataType.items()}


class ImportRefused(InvalidInput):
    """The file is not an ONNX image classifier edgecnn can take (exit 1, one line)."""


@dataclass
class ImportOptions(Options):
    """Every option of ``edgecnn import``; ``validate()`` holds its rules (OptionError -> exit 2)."""

    classes: str | None = None  # file: one class name per line, in the order of the model's outputs
    num_classes: int | None = bounded(None, 1, limits.MAX_CLASSES)  # instead of --classes: names 0..N-1
    input_size: tuple[int, int] | None = bounded(None, 1, limits.MAX_INPUT_SIZE)  # (H, W); default: the graph's
    in_channels: int | None = bounded(None, 1, limits.MAX_CHANNELS)  # default: the graph's
    mean: tuple[float, ...] | None = bounded(None, -MAX_NORM, MAX_NORM)  # per channel (or one for all), pixel/255
    std: tuple[float, ...] | None = bounded(None, 0, MAX_NORM, lo_open=True)
    resize: int | None = bounded(None, 1, limits.MAX_INPUT_SIZE)  # shorter side before the center crop
    name: str | None = None  # the manifest's model name; default: the file's stem
    opset: int | None = bounded(None, MIN_OPSET, MAX_OPSET)  # convert to this opset (default: only below 13)
    dynamic_batch: bool = True  # make a fixed batch dynamic when the graph allows it
    simplify: bool = False  # onnxslim (a rewrite: parity measured)
    parity_data: DataSource | None = None  # real images for running / parity; default: the bundled digits
    parity_images: int = bounded(PARITY_IMAGES, 1, limits.MAX_IMAGES)

    def __post_init__(self) -> None:
        self.parity_data = DataSource.optional(self.parity_data)

    def validate(self) -> None:
        if self.classes is None and self.num_classes is None:
            raise OptionError(
                "edgecnn import needs the class names: pass --classes FILE (one name per line, in the order of "
                "the model's outputs) or --num-classes N."
            )
        if self.classes is not None and self.num_classes is not None:
            raise OptionError("Pass either --classes FILE or --num-classes N, not both.")
        for flag, values, example in (("--mean", self.mean, "0.485,0.456,0.406"), ("--std", self.std, "0.229,...")):
            if values is None:
                raise OptionError(
                    f"{flag} is required: the per-channel value the network was trained with, in pixel/255 units "
                    f"(e.g. {flag} {example}); edgecnn never guesses a model's preprocessing."
                )
            if not values:
                raise OptionError(f"{flag} needs one value per input channel (or one for all).")
        if self.in_channels is not None:
            check_norm(self.mean, self.std, self.in_channels)
        if self.name is not None and not MODEL_NAME.fullmatch(self.name):
            raise OptionError(
                f"--name {self.name!r}: use letters, digits and . _ + - (at most 100, starting with a letter or digit)."
            )
        if self.parity_data is not None and not self.parity_data.is_real:
            raise OptionError("--parity-data must be real images (digits or a folder), not synthetic noise.")


def check_norm(mean, std, channels: int) -> None:
    """--mean / --std hold one value per channel or one for all."""
    for flag, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise OptionError(
                f"{flag} has {len(values)} values but the model takes {channels} channel(s); give {channels} "
                f"(one per channel) or 1 (the same for all)."
            )


@dataclass
class GraphIO:
    """What the import needs to know of a graph: its one input and one output, opset and precision."""

    input_name: str
    dims: list  # N, C, H, W: an int when fixed, a name (or None) when symbolic
    output_name: str
    out_dims: list | None  # None: the output's shape is not declared (then known from a run)
    opset: int
    precision: str

    @property
    def batch(self) -> int | None:
        """The fixed batch size, None when the batch dimension is symbolic."""
        n = self.dims[0]
        return n if isinstance(n, int) and n > 0 else None


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def read_bounded(path: Path, limit: int, what: str, fix: str) -> bytes:
    """The bytes of regular file ``path`` (at most ``limit``); ImportRefused naming it otherwise."""
    if not path.exists():
        raise ImportRefused(f"{what} '{path}' does not exist; {fix}.")
    if not path.is_file():
        raise ImportRefused(f"{what} '{path}' is not a regular file; {fix}.")
    size = path.stat().st_size
    if size > limit:
        raise ImportRefused(f"{what} '{path}' is {_mib(size)}, over the {_mib(limit)} edgecnn reads; {fix}.")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ImportRefused(f"Cannot read {what} '{path}' ({exc.strerror}); {fix}.") from exc
    if len(data) > limit:  # grew while being read
        raise ImportRefused(f"{what} '{path}' is over the {_mib(limit)} edgecnn reads; {fix}.")
    return data


def class_names(opts: ImportOptions) -> list[str]:
    """The class names: the --classes file (one per line, trailing blank lines ignored), or 0..N-1."""
    if opts.classes is None:
        return [str(i) for i in range(opts.num_classes)]
    path = Path(opts.classes)
    fix = "pass a text file with one class name per line"
    data = read_bounded(path, limits.MAX_CLASSES_FILE_BYTES, "Classes file", fix)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(f"Classes file '{path}' is not UTF-8 text (byte {exc.start}); {fix}.") from exc
    names = [line.rstrip("\r").strip(" ") for line in text.split("\n")]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ImportRefused(f"Classes file '{path}' is empty; {fix}.")
    if len(names) > limits.MAX_CLASSES:
        raise ImportRefused(f"Classes file '{path}' has {len(names):,} lines, over {limits.MAX_CLASSES:,}; {fix}.")
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if not name:
            raise ImportRefused(f"Classes file '{path}' line {i} is empty; {fix} (no blank lines between names).")
        if len(name) > 4096 or any(not ch.isprintable() for ch in name):
            raise ImportRefused(
                f"Classes file '{path}' line {i} has a control character (tab, escape, ...) or is over 4096 "
                f"characters; {fix}."
            )
        if name in seen:
            raise ImportRefused(f"Classes file '{path}' names {name!r} twice (lines {seen[name]} and {i}); {fix}.")
        seen[name] = i
    return names


def parse_model(raw: bytes, path: Path) -> tuple[onnx.ModelProto, dict | None]:
    """``raw`` as an ONNX model (parsed, never executed) with its external weights loaded, and what they were
    (None: none); refused unless it is a checked graph at an opset the installed onnx package knows."""
    fix = "pass a .onnx file saved by torch.onnx.export, onnx.save or another ONNX exporter"
    try:
        model = onnx.load_model_from_string(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ImportRefused(
            f"'{path}' is not an ONNX model (protobuf cannot parse it: {first_line(exc)}); {fix}."
        ) from exc
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise ImportRefused(f"'{path}' is not an ONNX model (no graph, no IR version); {fix}.")
    opset = opset_of(model)
    if opset > MAX_OPSET:
        raise ImportRefused(
            f"'{path}' uses opset {opset} but the installed onnx {onnx.__version__} knows opsets up to {MAX_OPSET}; "
            f"upgrade onnx or re-export the model with opset <= {MAX_OPSET}."
        )
    external = load_external(model, path, len(raw))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ImportRefused(f"'{path}' fails onnx.checker ({first_line(exc)}); re-export the model.") from exc
    return model, external


def _tensors(graph: onnx.GraphProto):
    """Every tensor of ``graph``: initializers and attribute tensors, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(sub)


def load_external(model: onnx.ModelProto, path: Path, size: int) -> dict | None:
    """Weights the file keeps in external data files (torch.onnx's default for its dynamo exporter): each file
    must lie in the model's folder (no '..', no absolute path, no symlink out) and be a regular file, all
    together within MAX_ONNX_BYTES; they are read into the model (the artifact is one file). Returns
    ``{"tensors": n, "files": {name: sha256}}`` or None when there are none."""
    tensors = [t for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not tensors:
        return None
    top = os.path.realpath(path.parent)
    files: dict[str, str] = {}
    for t in tensors:
        loc = ExternalDataInfo(t).location
        real = os.path.realpath(path.parent / loc) if inside_path(loc) else ""
        if not real or os.path.commonpath([top, real]) != top or not os.path.isfile(real):
            raise ImportRefused(
                f"'{path}' keeps tensor {t.name!r} in external data {loc!r}, which is not a file beside the model "
                "(external data must stay in the model's folder); move it there or re-save the model in one file."
            )
        files.setdefault(loc, real)
    total = size + sum(os.path.getsize(real) for real in files.values())
    if total > limits.MAX_ONNX_BYTES:
        raise ImportRefused(
            f"'{path}' and its external data are {_mib(total)}, over the {_mib(limits.MAX_ONNX_BYTES)} one ONNX "
            "file can hold; edgecnn imports models that fit in one file."
        )
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # noqa: BLE001 - onnx raises ValueError / OSError / its own for bad offsets
        raise ImportRefused(f"Cannot read the external data of '{path}' ({first_line(exc)}); re-export it.") from exc
    return {"tensors": len(tensors), "files": {loc: sha256_file(Path(real)) for loc, real in files.items()}}


def opset_of(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _dims(value_info) -> list | None:
    """The declared shape: ints for fixed dims, the name (or None) for symbolic ones; None when undeclared."""
    tt = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def shape_text(dims) -> str:
    return " x ".join("?" if d is None else str(d) for d in dims)


def describe(model: onnx.ModelProto, path: Path) -> GraphIO:
    """The graph's one image input and one N x C output, or ImportRefused saying why it is not a classifier."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs[:4]) + (", ..." if len(inputs) > 4 else "")
        raise ImportRefused(
            f"'{path}' has {len(inputs)} inputs ({names}); edgecnn imports image classifiers with exactly one "
            "N x C x H x W image input - export the model with one input."
        )
    inp = inputs[0]
    dtype = inp.type.tensor_type.elem_type if inp.type.HasField("tensor_type") else 0
    if dtype != onnx.TensorProto.FLOAT:
        raise ImportRefused(
            f"'{path}' input '{inp.name}' is {_TYPES.get(dtype, 'not a tensor')}; edgecnn feeds float32 images - "
            "re-export the model with a float32 input."
        )
    dims = _dims(inp)
    if dims is None or len(dims) != 4:
        shown = "undeclared" if dims is None else shape_text(dims)
        raise ImportRefused(
            f"'{path}' input '{inp.name}' has shape {shown}; edgecnn imports image classifiers with one "
            "N x C x H x W (NCHW) input."
        )
    if len(g.output) != 1:
        raise ImportRefused(
            f"'{path}' has {len(g.output)} outputs; edgecnn imports classifiers with exactly one N x C output "
            "(the logits) - export the model with that output only."
        )
    out_dims = _dims(g.output[0])
    if out_dims is None:  # not declared: ask shape inference (on a copy; nothing of it is kept)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                inferred = onnx.shape_inference.infer_shapes(model).graph.output[0]
                out_dims = _dims(inferred)
            except Exception:  # noqa: BLE001 - no inference: the run below measures the shape
                out_dims = None
    if out_dims is not None and len(out_dims) != 2:
        raise ImportRefused(
            f"'{path}' output '{g.output[0].name}' is {shape_text(out_dims)}, not the N x C scores of a "
            "classifier; edgecnn imports image classifiers (one N x C output: a score per class)."
        )
    precision = "int8" if any(n.op_type in QUANTIZED_OPS for n in g.node) else "fp32"
    return GraphIO(inp.name, dims, g.output[0].name, out_dims, opset_of(model), precision)


# --------------------------------------------------------------------------------------------------
# The input spec
# --------------------------------------------------------------------------------------------------
def fixed(d) -> bool:
    return isinstance(d, int) and d > 0


def input_spec(io: GraphIO, opts: ImportOptions, path: Path) -> dict:
    """The manifest's input spec from the graph's fixed dimensions and the options; a contradiction between
    them is ImportRefused (the network cannot take that input), a dimension neither gives is OptionError."""
    _, c, h, w = io.dims
    shape = f"{shape_text(io.dims)}"
    if fixed(c):
        if opts.in_channels is not None and opts.in_channels != c:
            raise ImportRefused(
                f"--in-channels {opts.in_channels} contradicts '{path}': its input '{io.input_name}' is {shape} "
                f"({c} channels); pass --in-channels {c} or leave it out."
            )
        channels = c
    elif opts.in_channels is None:
        raise OptionError(f"'{path}' input '{io.input_name}' is {shape} (channels not fixed); pass --in-channels.")
    else:
        channels = opts.in_channels
    if channels not in (1, 3):
        nhwc = " (it looks like NHWC: export it as NCHW)" if fixed(w) and w in (1, 3) else ""
        raise ImportRefused(
            f"'{path}' input '{io.input_name}' is {shape}: {channels} channels{nhwc}; edgecnn feeds gray (1) or "
            "RGB (3) images in NCHW layout."
        )
    size = _input_size(io, opts, path)
    check_norm(opts.mean, opts.std, channels)
    resize = int(opts.resize or min(size))
    record = ModelSpec(
        name="onnx-import",
        family="onnx-import",
        builder=_no_builder,
        default_input=(channels, *size),
        min_input=1,
        mean=tuple(opts.mean),
        std=tuple(opts.std),
        crop_ratio=min(size) / resize,
    )
    spec = record.input_spec()  # the one input-spec record (with its preprocessing contract) every manifest has
    if spec["resize"] != resize:  # crop_ratio round trip: say exactly what was asked
        spec["resize"] = resize
        spec["preprocess"] = preprocess_contract(spec)
    return spec


def _no_builder(**_):
    raise ImportRefused("an imported ONNX model has no torch network to build; use its ONNX artifact.")


def _input_size(io: GraphIO, opts: ImportOptions, path: Path) -> tuple[int, int]:
    """(H, W): the graph's fixed size (an --input-size must agree) or --input-size where it is symbolic."""
    h, w = io.dims[2:]
    want = tuple(opts.input_size) if opts.input_size is not None else None
    if want is None:
        if fixed(h) and fixed(w):
            return h, w
        raise OptionError(
            f"'{path}' input '{io.input_name}' is {shape_text(io.dims)} (height / width not fixed); pass "
            "--input-size HxW, the size the network was trained at."
        )
    known = [(d if fixed(d) else None) for d in (h, w)]
    if any(f is not None and f != x for f, x in zip(known, want)):
        got = "x".join("?" if f is None else str(f) for f in known)
        raise ImportRefused(
            f"--input-size {want[0]}x{want[1]} contradicts '{path}': its input '{io.input_name}' is fixed at "
            f"{shape_text(io.dims)} ({got} pixels); pass --input-size {got} or leave it out."
        )
    return want  # type: ignore[return-value]
