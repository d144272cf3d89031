"""INT8 post-training quantization (NNCF, ONNX backend), accuracy-aware fallback to floating point for the
most sensitive layers, and quantization-aware fine-tuning - all producing one QDQ ONNX artifact.

Route (measured on this project's 2-core AVX2 CPU: ``benchmarks/bench_int8.py`` and
``benchmarks/bench_int8_zoo.py``, results in ``benchmarks/results/int8_resnet50.md`` and ``int8_zoo.md``):
the torch artifact is exported to FP32 ONNX with BatchNorm folded into the convolutions, then NNCF's ONNX
backend calibrates it and writes QuantizeLinear/DequantizeLinear pairs with INT8-stored weights. Quantizing
the torch model instead needs BN folded first (an unfolded BatchNorm stays a float op between the INT8
convolutions) and compiles a C++ extension; the ONNX route avoids both.

NNCF's graph is then adapted per layout (:func:`edgecnn.compress.qdq.adapt_for_target`); ``--target auto``
(the default) writes both layouts below from the one calibration - ``model.onnx`` (tensorrt, target-neutral)
and ``model.cpu.onnx`` (cpu) - and the deploy target picks the file (:mod:`edgecnn.layouts`, written by
:mod:`edgecnn.compress.int8_record`); ``--target cpu|tensorrt`` writes that layout alone:

* every target: a layer that reads its input through a shape-only op after the DequantizeLinear
  (``DQ -> Flatten -> Gemm``: AlexNet's and VGG's first classifier layer, the biggest layer of the
  network) gets an identical Q/DQ pair right in front of it, so it runs in INT8 instead of FP32;
* ``cpu`` (ONNX Runtime, OpenVINO): NNCF's own choice - unsigned activations after ReLU, both inputs of a
  residual add quantized. ONNX Runtime folds ``ReLU -> Q(uint8, zp 0)`` and fuses every conv into
  QLinearConv; this is the fast layout on x86. Four rewrites make the rest fuse too: signed activations
  are stored as uint8 with zero point 128 (exact; x86 QLinearConv fuses uint8 in and out), the
  quantizers that meet in a Concat group share one scale and zero point (coarser steps for some),
  a Concat of equally quantized inputs runs on the 8-bit tensors with one DequantizeLinear after it
  (exact), and a BatchNormalization between Q/DQ (DenseNet's pre-activation BN) becomes a depthwise 1x1
  QLinearConv (int32 bias: within half a step).
  DenseNet-121 @224 went from 0.75x to 1.59x of FP32 with them (benchmarks/results/int8_zoo.md).
* ``tensorrt``: signed INT8 with zero point 0 everywhere, per-channel weights on the output axis,
  per-tensor activations; Q/DQ removed from the convolution side of residual adds (kept on the skip
  input) and one scale per Concat, so TensorRT can fuse. :func:`edgecnn.compress.qdq.validate_qdq`
  checks the result and the manifest records it. (ONNX Runtime runs this layout correctly but slower on
  CPU: it cannot drop a ReLU in front of a signed zero-point-0 quantizer.)

Accuracy-aware mode (``max_drop`` + ``data``) measures the INT8 model against the FP32 one on the
held-out split in ONNX Runtime (:mod:`edgecnn.compress.accuracy`); when it loses more than the budget,
every quantized layer is tried in floating point on its own, layers are ranked by the top-1 they give
back (ties by agreement with FP32), and the best are kept in floating point, one at a time, until the
budget is met; with two layouts the layers are chosen on the first (tensorrt: its signed activations
after ReLU are the coarser ones) and kept in float in the other too, whose top-1 is measured on its own. ``qat``
fine-tunes with fake quantization and knowledge distillation from the original
first (:mod:`edgecnn.compress.qat`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import onnx

from ..artifact import Artifact, check_out
from ..data.augment import AugmentPolicy
from ..data.calibration import CalibrationSet, load_calibration
from ..data.source import DataSource
from ..errors import ArtifactError, InvalidInput, OptionError, require, suggest
from ..export.onnx import export_onnx, fold_batchnorm
from ..limits import MAX_BATCH, MAX_EPOCHS, MAX_IMAGES, MAX_LAYERS, MAX_SEED, MAX_THREADS
from ..models import load_torch_model
from ..options import Options, bounded
from . import qdq
from .accuracy import HeldOut, measure_with_float, restore_accuracy
from .int8_record import layout_families, record, validation
from .qat import qat_finetune

log = logging.getLogger("edgecnn")

Target = Literal["auto", "cpu", "tensorrt"]
Preset = Literal["performance", "mixed"]
RangeEstimator = Literal[
    "default", "minmax", "mean_minmax", "median_minmax", "mean_no_outliers", "mean_quantile", "histogram"
]
TARGETS, PRESETS, RANGE_ESTIMATORS = get_args(Target), get_args(Preset), get_args(RangeEstimator)
LAYER_OPS = ("Conv", "Gemm", "MatMul")


class BudgetNotMet(InvalidInput):
    """Accuracy-aware quantization could not meet --max-drop."""


@dataclass
class QuantizeOptions(Options):
    """Every option of the INT8 stage; ``validate()`` holds its rules (OptionError -> exit 2 on the CLI)."""

    calib: DataSource | None = None  # calibration images: a folder, digits, synthetic[:N]
    subset_size: int = bounded(300, 1, MAX_IMAGES)
    target: Target = "auto"  # auto: both layouts (tensorrt + cpu) in one artifact; the deploy target picks
    preset: Preset = "performance"
    range_estimator: RangeEstimator = "default"
    fast_bias_correction: bool = True
    per_channel: bool = True
    ignore: tuple[str, ...] = ()  # ONNX node names / regular expressions left in float
    max_drop: float | None = bounded(None, 0, 100)  # accuracy-aware: top-1 points allowed on --data's held-out split
    data: DataSource | None = None  # labelled data: accuracy measurement and QAT
    max_float_layers: int | None = bounded(None, 0, MAX_LAYERS)
    qat: bool = False
    epochs: int = bounded(3, 0, MAX_EPOCHS)  # QAT epochs
    qat_lr: float | None = bounded(None, 0, 100, lo_open=True)
    calib_batch_size: int = bounded(1, 1, MAX_BATCH)
    compact_names: bool = False
    skip_corrupt: bool = False
    seed: int = bounded(0, 0, MAX_SEED)  # calibration subset (and QAT) seed
    threads: int | None = bounded(None, 1, MAX_THREADS)  # ONNX Runtime threads of the evaluations
    val_split: float = bounded(0.2, 0, 1, lo_open=True, hi_open=True)  # held-out fraction of one-folder --data
    augment: AugmentPolicy | None = None  # QAT's training images: none | light | default | FILE (default: none)

    def __post_init__(self) -> None:
        self.calib = DataSource.optional(self.calib)
        self.data = DataSource.optional(self.data)
        self.augment = None if self.augment is None else AugmentPolicy.parse(self.augment)
        self.ignore = (self.ignore,) if isinstance(self.ignore, str) else tuple(self.ignore)

    def validate(self) -> None:
        if self.calib is None:
            raise OptionError(
                "--int8 needs calibration images: pass --calib DIR (e.g. --calib calibration/), "
                "--calib digits, or build a set with 'edgecnn calib'."
            )
        for flag, value, lo in (
            ("--subset-size", self.subset_size, 1),
            ("--calib-batch-size", self.calib_batch_size, 1),
            ("--max-float-layers", self.max_float_layers, 0),
            ("--threads", self.threads, 1),
        ):
            if value is not None and value < lo:
                raise OptionError(f"{flag} must be >= {lo}, got {value}.")
        for what, value, choices in (
            ("target", self.target, TARGETS),
            ("preset", self.preset, PRESETS),
            ("range estimator", self.range_estimator, RANGE_ESTIMATORS),
        ):
            if value not in choices:
                raise OptionError(
                    f"Unknown {what} '{value}'.{suggest(str(value), choices)} Choose one of: {', '.join(choices)}."
                )
        if self.target == "tensorrt" and self.preset == "mixed":
            raise OptionError(
                "--preset mixed quantizes activations asymmetrically, which TensorRT rejects; use "
                "--preset performance with --target tensorrt (or --target cpu)."
            )
        if self.target == "tensorrt" and not self.per_channel:
            raise OptionError(
                "--per-tensor weights break TensorRT's rules (per-channel weights); drop --per-tensor "
                "or use --target cpu."
            )
        if self.max_drop is not None and self.max_drop < 0:
            raise OptionError(f"--max-drop must be >= 0 (points of top-1), got {self.max_drop}.")
        if self.max_drop is not None and self.data is None:
            raise OptionError(
                "--max-drop needs --data (the labelled set whose held-out split measures the drop, e.g. --data digits)."
            )
        if self.qat and self.data is None:
            raise OptionError("--qat needs --data to fine-tune on (e.g. --data digits).")
        if self.augment is not None and not self.qat:
            raise OptionError(f"--augment {self.augment} sets the QAT training images; add --qat (and --data).")
        if self.qat and self.epochs < 1:
            raise OptionError(f"--epochs must be >= 1 for --qat, got {self.epochs}.")
        if self.qat_lr is not None and not self.qat_lr > 0:
            raise OptionError(f"--qat-lr must be > 0, got {self.qat_lr}.")
        if not 0.0 < self.val_split < 1.0:
            raise OptionError(f"--val-split must be between 0 and 1 (exclusive), got {self.val_split}.")


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def require_out(out, *sources) -> None:
    """A stage that writes an artifact needs --out; a taken one fails before any work."""
    if out is None:
        raise OptionError("Missing option '--out' (the output artifact directory).")
    check_out(out, *sources)


def load_source(src) -> Artifact:  # a path: a torch or onnx artifact; an Artifact: verified again (cached)
    return Artifact.checked(src, formats=None if isinstance(src, Artifact) else ("torch", "onnx"))


def _quiet(progress: bool):
    """NNCF draws its own progress bars on stdout; keep them only when progress is wanted."""
    if progress:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _nncf():
    os.environ.setdefault("NNCF_CI", "1")  # no telemetry
    nncf = require("nncf", purpose="INT8 quantization")
    logging.getLogger("nncf").setLevel(logging.ERROR if not log.isEnabledFor(logging.INFO) else logging.INFO)
    return nncf


def fp32_onnx(src: Artifact, workdir: Path, *, progress: bool = False) -> Artifact:
    """The FP32 ONNX artifact to quantize: ``src`` itself when it is one, else ``src`` exported (BN folded)."""
    if src.format == "onnx":
        if src.precision != "fp32":
            raise ArtifactError(
                f"'{src.path}' is already {src.precision}; quantize its FP32 parent "
                f"({(src.manifest.get('parent') or {}).get('path', 'the exported FP32 artifact')})."
            )
        return src
    if src.format != "torch":
        raise ArtifactError(f"'{src.path}' is a {src.format} artifact; quantize a torch or FP32 onnx artifact.")
    if src.precision != "fp32":
        raise ArtifactError(f"'{src.path}' is {src.precision}; quantize an FP32 artifact.")
    return export_onnx(src, workdir / "fp32", progress=False, parity_data="digits")


def list_layers(src) -> list[dict]:
    """The layers of ``src`` that ``--ignore`` can name (``edgecnn quantize ARTIFACT --list-layers``): the
    Conv/Gemm/MatMul nodes of the FP32 ONNX graph that quantize calibrates (a torch artifact is exported
    first, BN folded, as quantize does); for an INT8 artifact, its quantized layers."""
    src = load_source(src)
    if src.format == "onnx" and src.precision == "int8":
        model = onnx.load(str(src.model_file))
        quantized = set(qdq.quantized_layers(model))
        return [
            {"name": qdq.name_of(n), "op_type": n.op_type, "int8": qdq.name_of(n) in quantized}
            for n in model.graph.node
            if n.op_type in LAYER_OPS
        ]
    with tempfile.TemporaryDirectory(prefix="edgecnn-layers-") as tmp:
        model = onnx.load(str(fp32_onnx(src, Path(tmp)).model_file))
    return [{"name": qdq.name_of(n), "op_type": n.op_type} for n in model.graph.node if n.op_type in LAYER_OPS]


# --------------------------------------------------------------------------------------------------
# NNCF post-training quantization of an ONNX model
# --------------------------------------------------------------------------------------------------
def _range_estimator(name: str):
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    if name == "default":
        return None
    table = {
        "minmax": R.MINMAX,
        "mean_minmax": R.MEAN_MINMAX,
        "median_minmax": R.MEDIAN_MINMAX,
        "mean_no_outliers": R.MEAN_NO_OUTLIERS_MINMAX,
        "mean_quantile": R.MEAN_QUANTILE,
        "histogram": getattr(R, "HISTOGRAM", None),
    }
    est = table.get(name)
    if est is None:
        raise OptionError(f"Unknown range estimator '{name}'; choose one of: {', '.join(RANGE_ESTIMATORS)}.")
    return est


def resolve_ignored(model, ignore: Sequence[str]) -> list[str]:
    """ONNX node names matching ``ignore`` (exact node names or regular expressions); an entry that
    matches nothing is an error naming the closest node."""
    names = [n.name for n in model.graph.node if n.name]
    out: list[str] = []
    for item in ignore:
        if item in names:
            out.append(item)
            continue
        try:
            rx = re.compile(item)
        except re.error:
            rx = None
        hits = [n for n in names if rx.fullmatch(n)] if rx else []
        if not hits:
            layers = [n.name for n in model.graph.node if n.op_type in LAYER_OPS]
            raise InvalidInput(
                f"--ignore '{item}' matches no node of the ONNX model.{suggest(item, layers)} "
                "Give ONNX node names (e.g. '/fc/Gemm') or a regular expression ('/layer4/.*'); "
                "list them with 'edgecnn quantize ARTIFACT --list-layers'."
            )
        out += [h for h in hits if h not in out]
    return out


def nncf_quantize(
    model,
    calib,
    *,
    preset: str = "performance",
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    per_channel: bool = True,
    range_estimator: str = "default",
    ignored: Sequence[str] = (),
    quantize_outputs: bool = False,
    progress: bool = False,
):
    """NNCF PTQ of an FP32 ONNX ModelProto on preprocessed calibration batches -> QDQ ModelProto.

    ``quantize_outputs`` is NNCF's option (its ONNX backend cannot put a quantizer on a graph output with
    no consumer)."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(calib), lambda batch: {input_name: batch})
    adv = AdvancedQuantizationParameters(quantize_outputs=quantize_outputs)
    # per-tensor activations everywhere: NNCF's CPU config allows per-channel activation quantizers (after ReLU6,
    # inside squeeze-excitation); ONNX Runtime then leaves those convolutions in float and TensorRT rejects them
    adv.activations_quantization_params = QuantizationParameters(per_channel=False)
    if not per_channel:
        adv.weights_quantization_params = QuantizationParameters(per_channel=False)
    est = _range_estimator(range_estimator)
    if est is not None:
        adv.activations_range_estimator_params = est
    kwargs = {}
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored))
    preset_enum = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[preset]
    with _quiet(progress), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nncf.quantize(
            model,
            dataset,
            preset=preset_enum,
            subset_size=min(subset_size, len(calib)),
            fast_bias_correction=fast_bias_correction,
            advanced_parameters=adv,
            **kwargs,
        )


# --------------------------------------------------------------------------------------------------
# the stage: resolve -> run (calibrate, PTQ, accuracy / QAT, validate) -> record
# --------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One quantize run: the resolved inputs and what each step produced."""

    src: Artifact
    options: QuantizeOptions
    work: Path
    progress: bool
    families: tuple[str, ...] = ("cpu",)  # the layouts written, the first one is model.onnx
    layout_note: str | None = None  # why a layout 'auto' writes is left out
    calib: CalibrationSet | None = None
    fp32: Artifact | None = None
    ignored: list[str] = field(default_factory=list)
    models: dict = field(default_factory=dict)  # family -> the QDQ ModelProto of that layout
    rewrites: dict = field(default_factory=dict)  # family -> what adapt_for_target changed
    accuracy: dict | None = None  # the first layout's accuracy-aware report
    layout_accuracy: dict | None = None  # family -> its own measured top-1 (with --data)
    qat: dict | None = None
    validation: dict = field(default_factory=dict)  # family -> TensorRT-rule summary
    timings: dict = field(default_factory=dict)

    @property
    def int8(self):
        """The first layout's model (the one accuracy-aware mode chooses layers on)."""
        return self.models[self.families[0]]

    @contextlib.contextmanager
    def timed(self, key: str):
        t = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t

    def ptq(self, fp32_model) -> None:
        """NNCF PTQ of ``fp32_model`` on this run's calibration batches (once), adapted to every layout."""
        o = self.options
        raw = nncf_quantize(
            fp32_model,
            self.calib,
            preset=o.preset,
            subset_size=o.subset_size,
            fast_bias_correction=o.fast_bias_correction,
            per_channel=o.per_channel,
            range_estimator=o.range_estimator,
            ignored=self.ignored,
            progress=self.progress,
        )
        for i, fam in enumerate(self.families):
            model = raw if i == len(self.families) - 1 else copy.deepcopy(raw)
            self.rewrites[fam] = qdq.adapt_for_target(model, fam)
            self.models[fam] = model


def quantize(
    src,
    out: str | os.PathLike,
    options: QuantizeOptions,
    *,
    calib_set: CalibrationSet | None = None,
    progress: bool = True,
) -> Artifact:
    """The quantize stage: ``src`` (torch or FP32 onnx artifact) -> INT8 QDQ onnx artifact at ``out``: with
    ``options.target`` 'auto' both layouts (``model.onnx`` for TensorRT, ``model.cpu.onnx`` for CPUs), else
    the one asked for.

    ``options.calib`` names the calibration images; ``calib_set`` is that set already read by the caller
    (then nothing is scanned or decoded again). ``options.max_drop`` (points of top-1 on the held-out split
    of ``options.data``) turns on accuracy-aware mode; ``options.qat`` fine-tunes with fake quantization + KD
    for ``options.epochs`` first when PTQ alone misses the budget (or always, without a budget).
    ``options.compact_names`` shortens tensor names in the written file (the manifest keeps the table)."""
    t0 = time.perf_counter()
    src, options = _resolve(src, out, options)
    with tempfile.TemporaryDirectory(prefix="edgecnn-quantize-") as tmpdir:
        run = _Run(src=src, options=options, work=Path(tmpdir), progress=progress)
        run.families, run.layout_note = layout_families(options.target, options.preset, options.per_channel)
        if run.layout_note:
            log.warning("%s", run.layout_note)
        with run.timed("calibration_read"):
            run.calib = (
                calib_set
                if calib_set is not None
                else load_calibration(
                    options.calib,
                    src.input,
                    subset_size=options.subset_size,
                    batch_size=options.calib_batch_size,
                    seed=options.seed,
                    skip_corrupt=options.skip_corrupt,
                    progress=progress,
                )
            )
        _check_calibration_shape(run.calib, src)
        with run.timed("export"):
            run.fp32 = fp32_onnx(src, run.work, progress=progress)
            fp32_model = onnx.load(str(run.fp32.model_file))
        run.ignored = resolve_ignored(fp32_model, options.ignore) if options.ignore else []
        with run.timed("ptq"):
            run.ptq(fp32_model)
        if options.data is not None:
            with run.timed("accuracy"):
                _accuracy_aware(run, fp32_model)
        run.validation = {fam: validation(run.models[fam], fam) for fam in run.families}
        return record(run, out, t0)


def _resolve(src, out, options: QuantizeOptions) -> tuple[Artifact, QuantizeOptions]:
    """Checks that fail in a second: --out, the options, the source's format."""
    require_out(out, src)
    options.validate()
    src = load_source(src)
    if options.qat and src.format != "torch":
        parent = (src.manifest.get("parent") or {}).get("path")
        raise ArtifactError(
            f"--qat fine-tunes the torch network; pass the torch artifact "
            f"{'(' + parent + ') ' if parent else ''}instead of the onnx one."
        )
    return src, options


def _check_calibration_shape(calib: CalibrationSet, src: Artifact) -> None:
    want = tuple(src.input_shape)
    got = tuple(calib.batches[0].shape[1:]) if calib.batches else None
    if got != want:
        raise InvalidInput(
            f"Calibration batches are {got} per image but '{src.path}' takes {want}; read them "
            "with the model's input spec (load_calibration(source, artifact.input))."
        )


def _accuracy_aware(run: _Run, fp32_model) -> None:
    """Measure INT8 against FP32 on the held-out split; keep layers in float / fine-tune (QAT) to meet the budget
    (chosen on the first layout), then the same layers in float in every other layout, each measured."""
    o = run.options
    held = HeldOut.from_source(
        o.data, run.src, val_split=o.val_split, skip_corrupt=o.skip_corrupt, threads=o.threads, progress=run.progress
    )
    held.set_reference(fp32_model)
    budget = o.max_drop if o.max_drop is not None else float("inf")
    first = run.families[0]
    run.models[first], run.accuracy = restore_accuracy(
        run.int8, held, max_drop_pt=budget, max_layers=0 if o.qat else o.max_float_layers, rank=not o.qat
    )
    if o.qat and (o.max_drop is None or not run.accuracy["met"]):
        _qat_route(run, held, budget)
    acc = run.accuracy
    if o.max_drop is not None and not acc["met"]:
        top = ", ".join(f"{r['layer']} ({r['top1_gain_pt']:+.1f} pt)" for r in acc["ranking"][:3])
        raise BudgetNotMet(
            f"INT8 loses {acc['ptq_drop_pt']:.2f} pt top-1 on '{o.data}' (budget {o.max_drop} pt); keeping "
            f"{len(acc['kept_float'])} layer(s) in FP32 still leaves {acc['final_drop_pt']:.2f} pt"
            f"{' (most sensitive: ' + top + ')' if top else ''}. Fine-tune with --qat --epochs N, give more "
            "calibration images, or relax --max-drop."
        )
    kept = [k["layer"] for k in acc["kept_float"]]
    run.layout_accuracy = {first: _layout_measure(acc["final_top1"], acc["fp32_top1"], o.max_drop, kept)}
    for fam in run.families[1:]:
        run.models[fam], top1 = measure_with_float(run.models[fam], kept, held)
        run.layout_accuracy[fam] = _layout_measure(top1, acc["fp32_top1"], o.max_drop, kept)
        if o.max_drop is not None and not run.layout_accuracy[fam]["met"]:
            log.warning(
                "the %s layout loses %.2f pt top-1 with the layers kept in float on the %s layout (budget %s pt); "
                "quantize with --target %s to choose them on that layout alone",
                fam,
                run.layout_accuracy[fam]["top1_drop_pt"],
                first,
                o.max_drop,
                fam,
            )


def _layout_measure(top1: float, fp32_top1: float, max_drop: float | None, kept: list[str]) -> dict:
    drop = 100 * (fp32_top1 - top1)
    return {
        "top1": top1,
        "top1_drop_pt": drop,
        "met": None if max_drop is None else drop <= max_drop + 1e-9,
        "kept_float": list(kept),
    }


def _qat_route(run: _Run, held: HeldOut, budget: float) -> None:
    """PTQ missed the budget (or QAT was asked for without one): fine-tune with fake quantization + KD, export,
    quantize again with the same calibration batches, then (if still needed) keep sensitive layers in float."""
    o, src = run.options, run.src
    teacher = load_torch_model(src)
    student = copy.deepcopy(teacher)
    folded = fold_batchnorm(student)
    aug = o.augment or AugmentPolicy.preset("none")
    # the training split of the same split as the held-out one (seeded alike), so no held-out image is trained on
    train_set = o.data.dataset(
        src.input, "train", val_split=o.val_split, skip_corrupt=o.skip_corrupt, num_classes=src.num_classes, augment=aug
    )
    calib_batches = run.calib.batches[: max(1, 64 // run.calib.batches[0].shape[0])]
    kw = {
        "epochs": o.epochs,
        "lr": o.qat_lr,
        "seed": o.seed,
        "progress": run.progress,
        "augment": (aug, held.fp32_top1),
    }
    run.qat = qat_finetune(student, teacher, train_set, calib_batches, **kw)
    run.qat["bn_folded"] = len(folded)
    exported = export_onnx(src, run.work / "qat_fp32", model=student, progress=False, parity_data="digits")
    before = {k: run.accuracy[k] for k in ("int8_top1", "ptq_drop_pt")}
    run.ptq(onnx.load(str(exported.model_file)))
    run.models[run.families[0]], run.accuracy = restore_accuracy(
        run.int8, held, max_drop_pt=budget, max_layers=o.max_float_layers
    )
    run.accuracy["before_qat"] = before
