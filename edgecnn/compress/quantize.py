"""INT8 post-training quantization (NNCF, ONNX backend), accuracy-aware fallback to floating point for the
most sensitive layers, and quantization-aware fine-tuning - all producing one QDQ ONNX artifact.

Route (measured on this project's 2-core AVX2 CPU, see FIELD-NOTES and ``benchmarks/bench_int8_zoo.py``):
the torch artifact is exported to FP32 ONNX with BatchNorm folded into the convolutions, then NNCF's ONNX
backend calibrates it and writes QuantizeLinear/DequantizeLinear pairs with INT8-stored weights. Quantizing
the torch model instead needs BN folded first (unfolded BN made INT8 ResNet-50 *slower* than FP32) and
compiles a C++ extension; the ONNX route avoids both and gave the fastest ResNets in ONNX Runtime.

NNCF's graph is then adapted per ``target``:

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
held-out split in ONNX Runtime; when it loses more than the budget, every quantized layer is tried in
floating point on its own, layers are ranked by the top-1 they give back (ties by agreement with FP32),
and the best are kept in floating point, one at a time, until the budget is met. ``qat`` fine-tunes
with fake quantization and knowledge distillation from the original first (see :func:`qat_finetune`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InvalidInput
from ..runtime.onnxrt import create_session, run_batches

log = logging.getLogger("edgecnn")

TARGETS = ("auto", "cpu", "tensorrt")
PRESETS = ("performance", "mixed")
RANGE_ESTIMATORS = ("default", "minmax", "mean_minmax", "median_minmax", "mean_no_outliers", "mean_quantile",
                    "histogram")
# How each family is quantized, and why (ratios: ORT INT8 vs ORT FP32, batch 1, 2 threads, this CPU;
# benchmarks/bench_int8_zoo.py re-measures them).
ROUTES = {
    "lenet": "nncf-onnx",
    "alexnet": "nncf-onnx",
    "vgg": "nncf-onnx",
    "googlenet": "nncf-onnx",
    "resnet": "nncf-onnx",
    "densenet": "nncf-onnx",
}


class BudgetNotMet(InvalidInput):
    """Accuracy-aware quantization could not meet --max-drop."""


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def resolve_target(target: str) -> str:
    """'auto' -> 'tensorrt' where a CUDA GPU is visible (the deploy runtime there), else 'cpu'."""
    if target not in TARGETS:
        raise InvalidInput(f"Unknown target '{target}'; choose one of: {', '.join(TARGETS)}.")
    if target != "auto":
        return target
    try:
        import torch

        return "tensorrt" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def _quiet(progress: bool):
    """NNCF draws its own progress bars on stdout; keep them only when progress is wanted."""
    if progress:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _nncf():
    os.environ.setdefault("NNCF_CI", "1")   # no telemetry
    from ..errors import require

    nncf = require("nncf", purpose="INT8 quantization")
    logging.getLogger("nncf").setLevel(logging.ERROR if not log.isEnabledFor(logging.INFO) else logging.INFO)
    return nncf


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 0.0


def load_eval_set(data: str, input_spec: dict, *, split: str = "val", val_split: float = 0.2,
                  skip_corrupt: bool = False, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images + labels of one split as arrays (ORT evaluation of in-memory model variants)."""
    from torch.utils.data import DataLoader

    from ..data import load_dataset

    ds = load_dataset(data, input_spec, split, val_split=val_split, skip_corrupt=skip_corrupt, num_classes=num_classes)
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=256, shuffle=False):
        xs.append(x.numpy().astype(np.float32, copy=False))
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys), list(ds.classes)


# --------------------------------------------------------------------------------------------------
# FP32 ONNX source
# --------------------------------------------------------------------------------------------------
def fp32_onnx(src, workdir: Path, *, progress: bool = False, model=None):
    """The FP32 ONNX artifact to quantize: ``src`` itself when it is one, else ``src`` exported (BN folded)."""
    from ..artifact import Artifact
    from ..errors import ArtifactError

    if not isinstance(src, Artifact):
        src = Artifact.load(src, formats=("torch", "onnx"))
    if src.format == "onnx":
        if model is not None:
            raise InvalidInput("An in-memory torch model can only be quantized from its torch artifact.")
        if src.precision != "fp32":
            raise ArtifactError(f"'{src.path}' is already {src.precision}; quantize its FP32 parent "
                                f"({(src.manifest.get('parent') or {}).get('path', 'the exported FP32 artifact')}).")
        return src
    if src.format != "torch":
        raise ArtifactError(f"'{src.path}' is a {src.format} artifact; quantize a torch or FP32 onnx artifact.")
    if src.precision != "fp32":
        raise ArtifactError(f"'{src.path}' is {src.precision}; quantize an FP32 artifact.")
    from ..export.onnx import export_onnx

    return export_onnx(src, workdir / "fp32", model=model, progress=False, parity_data="digits")


# --------------------------------------------------------------------------------------------------
# NNCF post-training quantization of an ONNX model
# --------------------------------------------------------------------------------------------------
def _range_estimator(name: str):
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    if name == "default":
        return None
    table = {"minmax": R.MINMAX, "mean_minmax": R.MEAN_MINMAX, "median_minmax": R.MEDIAN_MINMAX,
             "mean_no_outliers": R.MEAN_NO_OUTLIERS_MINMAX, "mean_quantile": R.MEAN_QUANTILE,
             "histogram": getattr(R, "HISTOGRAM", None)}
    est = table.get(name)
    if est is None:
        raise InvalidInput(f"Unknown range estimator '{name}'; choose one of: {', '.join(RANGE_ESTIMATORS)}.")
    return est


def resolve_ignored(model, ignore: Sequence[str]) -> list[str]:
    """ONNX node names matching ``ignore`` (exact node names or regular expressions); an entry that
    matches nothing is an error naming the closest node."""
    import re

    from ..errors import suggest

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
        hits = [n for n in names if rx is not None and rx.fullmatch(n)] if rx else []
        if not hits:
            layers = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
            raise InvalidInput(f"--ignore '{item}' matches no node of the ONNX model.{suggest(item, layers)} "
                               "Give ONNX node names (e.g. '/fc/Gemm') or a regular expression ('/layer4/.*').")
        out += [h for h in hits if h not in out]
    return out


def nncf_quantize(model, calib, *, preset: str = "performance", subset_size: int = 300,
                  fast_bias_correction: bool = True, per_channel: bool = True, range_estimator: str = "default",
                  ignored: Sequence[str] = (), quantize_outputs: bool = False, progress: bool = False):
    """NNCF PTQ of an FP32 ONNX ModelProto on preprocessed calibration batches -> QDQ ModelProto.

    ``quantize_outputs`` is NNCF's option (its ONNX backend cannot put a quantizer on a graph output with
    no consumer; :func:`quantize_logits` does that)."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(calib), lambda batch: {input_name: batch})
    adv = AdvancedQuantizationParameters(quantize_outputs=quantize_outputs)
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
        return nncf.quantize(model, dataset, preset=preset_enum, subset_size=min(subset_size, len(calib)),
                             fast_bias_correction=fast_bias_correction, advanced_parameters=adv, **kwargs)


def adapt_for_target(model, target: str) -> dict:
    """Apply the per-target Q/DQ rewrites described in the module docstring (in place)."""
    from . import qdq

    done: dict = {}
    if target == "tensorrt":
        done["signed"] = len(qdq.make_signed(model))       # before unifying: uint8 and int8 cannot share a scale
    done["concat_scales_unified"] = qdq.unify_concat_scales(model)
    done["requantized_layers"] = qdq.requantize_before_layers(model)
    if target == "cpu":
        done["int8_gemm_float_output"] = qdq.quantize_gemm_bias(model)
        done["uint8_activations"] = len(qdq.uint8_activations(model))
        done["concat_quantizers_harmonized"] = qdq.harmonize_concat_quantizers(model)
        done["concat_before_dequantize"] = qdq.concat_before_dequantize(model)
        done["batchnorm_as_depthwise"] = qdq.batchnorm_as_depthwise(model)
    if target == "tensorrt":
        done["residual_adds_fused"] = qdq.fuse_friendly_residuals(model)
    qdq.remove_dead_nodes(model)
    return done


# --------------------------------------------------------------------------------------------------
# accuracy-aware: keep the most sensitive layers in floating point
# --------------------------------------------------------------------------------------------------
def sensitivity(int8_model, images: np.ndarray, labels: np.ndarray, fp32_logits: np.ndarray, *,
                threads: int | None = None, progress: bool = False, layers: Sequence[str] | None = None) -> list[dict]:
    """For every quantized layer: top-1 and agreement with FP32 when only that layer is kept in floating
    point (all others INT8). Measured, in ONNX Runtime, on ``images``. Sorted most helpful first."""
    from tqdm.auto import tqdm

    from . import qdq

    base = run_batches(create_session(int8_model, threads=threads), images)
    base_top1, base_agree = _top1(base, labels), _agreement(base, fp32_logits)
    base_err = float(np.mean((base - fp32_logits) ** 2))
    rows = []
    for name in tqdm(list(layers or qdq.quantized_layers(int8_model)), desc="layer sensitivity", disable=not progress,
                     leave=False, unit="layer"):
        variant = copy.deepcopy(int8_model)
        qdq.keep_float(variant, [name])
        logits = run_batches(create_session(variant, threads=threads), images)
        rows.append({"layer": name, "top1": _top1(logits, labels), "top1_gain_pt": 100 * (_top1(logits, labels) - base_top1),
                     "agreement": _agreement(logits, fp32_logits),
                     "agreement_gain_pt": 100 * (_agreement(logits, fp32_logits) - base_agree),
                     "logit_mse_reduction": base_err - float(np.mean((logits - fp32_logits) ** 2))})
    rows.sort(key=lambda r: (-r["top1_gain_pt"], -r["agreement_gain_pt"], -r["logit_mse_reduction"]))
    return rows


def restore_accuracy(int8_model, images, labels, fp32_logits, *, max_drop_pt: float, threads: int | None = None,
                     max_layers: int | None = None, rank: bool = True, progress: bool = False) -> tuple[object, dict]:
    """Keep the most sensitive layers in floating point, one at a time in measured order, until the INT8
    model's top-1 is within ``max_drop_pt`` points of FP32. Returns (model, report).

    With ``max_layers=0`` nothing is kept, but the layers are still ranked (``rank``) so a missed
    budget can name the most sensitive ones."""
    from . import qdq

    fp32_top1 = _top1(fp32_logits, labels)
    logits = run_batches(create_session(int8_model, threads=threads), images)
    int8_top1 = _top1(logits, labels)
    report = {"max_drop_pt": None if max_drop_pt == float("inf") else max_drop_pt, "fp32_top1": fp32_top1, "int8_top1": int8_top1,
              "ptq_drop_pt": 100 * (fp32_top1 - int8_top1), "kept_float": [], "ranking": [], "met": None, "steps": []}
    report.update(met=100 * (fp32_top1 - int8_top1) <= max_drop_pt + 1e-9, final_top1=int8_top1,
                  final_drop_pt=report["ptq_drop_pt"])
    if report["met"] or (max_layers == 0 and not rank):
        return int8_model, report
    ranking = sensitivity(int8_model, images, labels, fp32_logits, threads=threads, progress=progress)
    report["ranking"] = ranking
    limit = len(ranking) if max_layers is None else min(max_layers, len(ranking))
    current, kept = int8_model, []
    best = (int8_top1, int8_model, [])
    for row in ranking[:limit]:
        kept.append(row["layer"])
        current = copy.deepcopy(int8_model)
        qdq.keep_float(current, kept)
        top1 = _top1(run_batches(create_session(current, threads=threads), images), labels)
        report["steps"].append({"kept": list(kept), "top1": top1, "drop_pt": 100 * (fp32_top1 - top1)})
        if top1 > best[0]:
            best = (top1, current, list(kept))
        if 100 * (fp32_top1 - top1) <= max_drop_pt + 1e-9:
            best = (top1, current, list(kept))
            break
    top1, model, kept = best
    why = {r["layer"]: r for r in ranking}
    report["kept_float"] = [{"layer": k, "reason": f"alone in FP32 it gives back {why[k]['top1_gain_pt']:+.2f} pt top-1 "
                             f"and {why[k]['agreement_gain_pt']:+.2f} pt agreement with FP32",
                             **{x: why[k][x] for x in ("top1_gain_pt", "agreement_gain_pt")}} for k in kept]
    report.update(final_top1=top1, final_drop_pt=100 * (fp32_top1 - top1),
                  met=100 * (fp32_top1 - top1) <= max_drop_pt + 1e-9)
    return model, report


# --------------------------------------------------------------------------------------------------
# quantization-aware fine-tuning (fake quantization + KD), torch side
# --------------------------------------------------------------------------------------------------
# AdamW learning rate of quantization-aware fine-tuning. Measured on the pruned LeNet-5 of the digits
# recipe (10 epochs): 1e-4 left the KD loss flat (INT8 -1.39 pt, as plain PTQ), 1e-3 recovered to -0.56 pt,
# 3e-3 -1.11 pt.
QAT_LR = 1e-3


def qat_finetune(model, teacher, train_set, calib_batches: list[np.ndarray], *, epochs: int, lr: float | None = None,
                 batch_size: int = 64, temperature: float = 4.0, alpha: float = 0.7, seed: int = 0,
                 progress: bool = False) -> dict:
    """Fine-tune ``model`` (BatchNorm already folded) in place with fake quantization of every Conv2d /
    Linear - weights per output channel, symmetric INT8 (narrow range, as NNCF's weights); inputs per
    tensor with ranges calibrated on ``calib_batches`` and then learned (LSQ-style, straight-through
    estimator) - and knowledge distillation from ``teacher`` (the FP32 original). The weights it learns are
    robust to the INT8 grid that NNCF applies when the model is exported and quantized afterwards.
    Returns the training record."""
    import torch
    from torch import nn

    from ..train import TrainConfig, fit
    from .distill import kd_loss

    class FakeQuant(nn.Module):
        def __init__(self, layer: nn.Module):
            super().__init__()
            self.layer = layer
            self.log_scale = nn.Parameter(torch.zeros(()))
            self.signed = True
            self.calibrating = True
            self.register_buffer("amax", torch.zeros(()))
            self.register_buffer("amin", torch.zeros(()))

        def forward(self, x):
            if self.calibrating:
                self.amax = torch.maximum(self.amax, x.detach().max())
                self.amin = torch.minimum(self.amin, x.detach().min())
                return self.layer(x)
            qmin, qmax = (-128, 127) if self.signed else (0, 255)
            s = self.log_scale.exp()
            xq = x / s
            xq = xq + (torch.clamp(torch.round(xq), qmin, qmax) - xq).detach()     # STE through round/clamp
            xq = xq * s
            w = self.layer.weight
            dims = tuple(range(1, w.ndim))
            ws = (w.detach().abs().amax(dim=dims, keepdim=True) / 127.0).clamp_min(1e-12)
            wq = w / ws
            wq = (wq + (torch.clamp(torch.round(wq), -127, 127) - wq).detach()) * ws
            if isinstance(self.layer, nn.Conv2d):
                return self.layer._conv_forward(xq, wq, self.layer.bias)
            return nn.functional.linear(xq, wq, self.layer.bias)

        def freeze_range(self):
            self.calibrating = False
            self.signed = bool(self.amin < 0)
            top = float(max(self.amax.abs(), self.amin.abs()))
            scale = max(top, 1e-8) / (127.0 if self.signed else 255.0)
            self.log_scale.data.fill_(float(np.log(scale)))

    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) in (nn.Conv2d, nn.Linear):
                fq = FakeQuant(child)
                setattr(module, child_name, fq)
                wrapped.append(f"{name + '.' if name else ''}{child_name}")
    model.eval()
    with torch.no_grad():
        for b in calib_batches:
            model(torch.from_numpy(b))
    for m in model.modules():
        if isinstance(m, FakeQuant):
            m.freeze_range()
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits, targets, inputs):
        with torch.no_grad():
            t = teacher(inputs)
        return kd_loss(logits, t, targets, temperature=temperature, alpha=alpha)

    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr or QAT_LR, weight_decay=0.0,
                         seed=seed, device="cpu", augment=False, schedule="cosine")
    result = fit(model, train_set, None, config, loss_fn=loss_fn, progress=progress)
    # unwrap: plain layers carrying the fine-tuned weights
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, FakeQuant):
                setattr(module, child_name, child.layer)
    model.eval()
    return {"epochs": epochs, "fake_quantized_layers": len(wrapped), "lr": config.resolved_lr(),
            "kd": {"temperature": temperature, "alpha": alpha}, "seconds": round(result["seconds"], 1),
            "history": result["history"]}


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------
def _validate_options(*, subset_size, preset, target, per_channel, range_estimator, max_drop, data, qat, epochs,
                      batch_size):
    if subset_size < 1:
        raise InvalidInput(f"--subset-size must be >= 1, got {subset_size}.")
    if batch_size < 1:
        raise InvalidInput(f"--calib-batch-size must be >= 1, got {batch_size}.")
    if preset not in PRESETS:
        raise InvalidInput(f"Unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}.")
    if range_estimator not in RANGE_ESTIMATORS:
        raise InvalidInput(f"Unknown range estimator '{range_estimator}'; choose one of: {', '.join(RANGE_ESTIMATORS)}.")
    if target == "tensorrt" and preset == "mixed":
        raise InvalidInput("--preset mixed quantizes activations asymmetrically, which TensorRT rejects; use "
                           "--preset performance with --target tensorrt (or --target cpu).")
    if target == "tensorrt" and not per_channel:
        raise InvalidInput("--per-tensor weights break TensorRT's rules (per-channel weights); drop --per-tensor or "
                           "use --target cpu.")
    if max_drop is not None and max_drop < 0:
        raise InvalidInput(f"--max-drop must be >= 0 (points of top-1), got {max_drop}.")
    if max_drop is not None and not data:
        raise InvalidInput("--max-drop needs --data to measure the drop on (e.g. --data digits); the held-out split is used.")
    if qat and not data:
        raise InvalidInput("--qat fine-tunes on labelled data; pass --data (e.g. --data digits).")
    if qat and epochs < 1:
        raise InvalidInput(f"--epochs must be >= 1 for --qat, got {epochs}.")


def quantize(src, out: str | os.PathLike, *, calib: str | os.PathLike, subset_size: int = 300, target: str = "auto",
             preset: str = "performance", range_estimator: str = "default", fast_bias_correction: bool = True,
             per_channel: bool = True, ignore: Sequence[str] = (), max_drop: float | None = None,
             data: str | None = None, qat: bool = False, epochs: int = 3, qat_lr: float | None = None,
             calib_batch_size: int = 1, max_float_layers: int | None = None, threads: int | None = None,
             seed: int = 0, skip_corrupt: bool = False, val_split: float = 0.2, model=None, progress: bool = True,
             compact_names: bool = False):
    """The quantize stage: ``src`` (torch or FP32 onnx artifact) -> INT8 QDQ onnx artifact at ``out``.

    ``calib`` is a folder of images, 'digits' or 'synthetic[:N]' (plumbing only). ``max_drop`` (points of
    top-1 on the held-out split of ``data``) turns on accuracy-aware mode; ``qat`` fine-tunes with fake
    quantization + KD for ``epochs`` first when PTQ alone misses the budget (or always, without a budget).
    ``model`` is an in-memory torch module that replaces the network of a torch ``src``.
    ``compact_names`` shortens tensor names in the written file (:func:`edgecnn.export.onnx.compact_names`);
    the manifest keeps the short -> original table.
    """
    if out is not None:
        from ..artifact import check_out

        check_out(out)
    from ..artifact import Artifact, new_manifest, write_artifact
    from ..data import describe_source
    from ..data.calibration import load_calibration
    from ..errors import ArtifactError
    from ..models import get_spec
    from . import qdq

    t0 = time.perf_counter()
    if not isinstance(src, Artifact):
        src = Artifact.load(src, formats=("torch", "onnx"))
    target = resolve_target(target)
    _validate_options(subset_size=subset_size, preset=preset, target=target, per_channel=per_channel,
                      range_estimator=range_estimator, max_drop=max_drop, data=data, qat=qat, epochs=epochs,
                      batch_size=calib_batch_size)
    if qat and src.format != "torch":
        parent = (src.manifest.get("parent") or {}).get("path")
        raise ArtifactError(f"--qat fine-tunes the torch network; pass the torch artifact "
                            f"{'(' + parent + ') ' if parent else ''}instead of the onnx one.")
    import onnx

    family = get_spec(src.model).family if _known(src.model) else "unknown"
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-quantize-") as tmpdir:
        work = Path(tmpdir)
        t = time.perf_counter()
        calib_set = load_calibration(calib, src.input, subset_size=subset_size, batch_size=calib_batch_size,
                                     seed=seed, skip_corrupt=skip_corrupt, progress=progress)
        timings["calibration_read"] = time.perf_counter() - t
        t = time.perf_counter()
        fp32 = fp32_onnx(src, work, progress=progress, model=model)
        timings["export"] = time.perf_counter() - t
        fp32_model = onnx.load(str(fp32.model_file))
        ignored = resolve_ignored(fp32_model, ignore) if ignore else []

        def ptq(fp32_proto):
            q = nncf_quantize(fp32_proto, calib_set, preset=preset, subset_size=subset_size,
                              fast_bias_correction=fast_bias_correction, per_channel=per_channel,
                              range_estimator=range_estimator, ignored=ignored, progress=progress)
            return q, adapt_for_target(q, target)

        t = time.perf_counter()
        int8, rewrites = ptq(fp32_model)
        timings["ptq"] = time.perf_counter() - t
        accuracy = qat_record = None
        eval_desc = None
        if data:
            t = time.perf_counter()
            images, labels, classes = load_eval_set(data, src.input, val_split=val_split, skip_corrupt=skip_corrupt,
                                                    num_classes=src.num_classes)
            if len(classes) != src.num_classes:
                raise InvalidInput(f"Data '{data}' has {len(classes)} classes but the model predicts "
                                   f"{src.num_classes}; pass data with the model's classes.")
            fp32_logits = run_batches(create_session(fp32_model, threads=threads), images)
            eval_desc = describe_source(data, "val")
            budget = max_drop if max_drop is not None else float("inf")
            int8, accuracy = restore_accuracy(int8, images, labels, fp32_logits, max_drop_pt=budget, threads=threads,
                                              max_layers=0 if qat else max_float_layers, rank=not qat,
                                              progress=progress)
            if qat and (max_drop is None or not accuracy["met"]):
                qat_record, int8, accuracy = _qat_route(src, model, work, calib_set, data, epochs, qat_lr, seed,
                                                        val_split, skip_corrupt, images, labels, fp32_logits, ptq,
                                                        budget, threads, max_float_layers, progress, accuracy)
            timings["accuracy"] = time.perf_counter() - t
            if max_drop is not None and not accuracy["met"]:
                top = ", ".join(f"{r['layer']} ({r['top1_gain_pt']:+.1f} pt)" for r in accuracy["ranking"][:3])
                raise BudgetNotMet(
                    f"INT8 loses {accuracy['ptq_drop_pt']:.2f} pt top-1 on '{data}' (budget {max_drop} pt); keeping "
                    f"{len(accuracy['kept_float'])} layer(s) in FP32 still leaves {accuracy['final_drop_pt']:.2f} pt"
                    f"{' (most sensitive: ' + top + ')' if top else ''}. Fine-tune with --qat --epochs N, give more "
                    "calibration images, or relax --max-drop.")
        violations = qdq.validate_qdq(int8, "tensorrt")
        validation = qdq.summarize(violations)
        validation["required"] = target == "tensorrt"
        if target == "tensorrt" and not validation["passed"]:
            first = qdq.errors(violations)[0]
            raise RuntimeError(f"bug: TensorRT-target model fails its own validator: {first}")
        route = ROUTES.get(family, "nncf-onnx")
        kept = [k["layer"] for k in (accuracy or {}).get("kept_float", [])]
        params = {"calib": describe_calib(calib), "subset_size": subset_size, "target": target, "preset": preset,
                  "range_estimator": range_estimator, "fast_bias_correction": fast_bias_correction,
                  "per_channel": per_channel, "ignore": list(ignore), "max_drop": max_drop,
                  "data": describe_source(data, "val") if data else None, "qat": qat,
                  "epochs": epochs if qat else None, "calib_batch_size": calib_batch_size, "seed": seed,
                  "compact_names": compact_names}
        metrics = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
        if accuracy is not None:
            metrics.update(top1=accuracy["final_top1"], fp32_top1=accuracy["fp32_top1"],
                           top1_drop_pt=accuracy["final_drop_pt"], eval_data=eval_desc, evaluated_in="onnxruntime")
        info = {
            "route": route + (" + qat" if qat_record else ""),
            "route_reason": _ROUTE_REASON,
            "target": target,
            "activations": "int8 symmetric (zero point 0)" if target == "tensorrt" else
                           "uint8: zero point 0 after ReLU, 128 for signed tensors (NNCF's symmetric int8 + 128), "
                           "one shared quantizer per concat group",
            "weights": ("int8 symmetric per-channel (axis 0 = output channels)" if per_channel
                        else "int8 symmetric per-tensor"),
            "fp32_onnx": "the source artifact" if fp32 is src else "exported from the torch source (BN folded; "
                         "temporary, not kept - run 'edgecnn export' to keep one)",
            "rewrites": rewrites,
            "ignored": ignored,
            "kept_float": kept,
            "accuracy_aware": accuracy,
            "qat": qat_record,
            "calibration": calib_set.describe(),
            "validation": validation,
            "seconds": {k: round(v, 2) for k, v in timings.items()},
        }
        manifest = new_manifest(model=src.model, format="onnx", file="model.onnx", precision="int8", input=src.input,
                                classes=src.classes, stage="quantize", params=params, parent=src,
                                architecture=src.manifest.get("architecture"), metrics=metrics,
                                extra={"quantization": info})
        for w in calib_set.warnings:
            log.info("calibration: %s", w)

        if compact_names:
            from ..export.onnx import compact_names as _compact

            info["compact_names"] = _compact(int8)
        _finish_metadata(int8, manifest["id"], "int8")

        def write(tmp: Path) -> None:
            onnx.save(int8, str(tmp / "model.onnx"))
            info["seconds"]["total"] = round(time.perf_counter() - t0, 2)

        return write_artifact(out, manifest, write)


def _finish_metadata(model, artifact_id: str, precision: str) -> None:
    """Drop intermediate shape annotations (ONNX Runtime and TensorRT infer them; on a small network they
    are a sixth of the file) and stamp the artifact's id and precision into the model's metadata."""
    del model.graph.value_info[:]
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"edgecnn.id": artifact_id, "edgecnn.precision": precision})
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


_ROUTE_REASON = ("NNCF ONNX backend on the FP32 export with BatchNorm folded: fastest INT8 in ONNX Runtime on the "
                 "measured CPU and INT8-stored weights; the torch backend needs BN folded first and a C++ build")


def _known(name: str) -> bool:
    from ..errors import UnknownModel
    from ..models import get_spec

    try:
        get_spec(name)
        return True
    except UnknownModel:
        return False


def describe_calib(calib) -> str:
    s = str(calib)
    return s if s in ("digits",) or s.startswith("synthetic") else str(Path(s).resolve())


def _qat_route(src, model, work, calib_set, data, epochs, qat_lr, seed, val_split, skip_corrupt, images, labels,
               fp32_logits, ptq, budget, threads, max_float_layers, progress, ptq_accuracy):
    """PTQ missed the budget (or QAT was asked for without one): fine-tune with fake quantization + KD, export,
    quantize again with the same calibration, then (if still needed) keep sensitive layers in float."""
    import onnx

    from ..data import load_dataset
    from ..export.onnx import export_onnx, fold_batchnorm
    from ..models import load_torch_model

    teacher = load_torch_model(src) if model is None else copy.deepcopy(model).eval()
    student = copy.deepcopy(teacher)
    folded = fold_batchnorm(student)
    train_set = load_dataset(data, src.input, "train", val_split=val_split, skip_corrupt=skip_corrupt,
                             num_classes=src.num_classes, seed=seed)
    record = qat_finetune(student, teacher, train_set, calib_set.batches[: max(1, 64 // calib_set.batches[0].shape[0])],
                          epochs=epochs, lr=qat_lr, seed=seed, progress=progress)
    record["bn_folded"] = len(folded)
    exported = export_onnx(src, work / "qat_fp32", model=student, progress=False, parity_data="digits")
    q, rewrites = ptq(onnx.load(str(exported.model_file)))
    q, accuracy = restore_accuracy(q, images, labels, fp32_logits, max_drop_pt=budget, threads=threads,
                                   max_layers=max_float_layers, progress=progress)
    accuracy["before_qat"] = {k: ptq_accuracy[k] for k in ("int8_top1", "ptq_drop_pt")}
    return record, q, accuracy
