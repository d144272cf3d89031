"""Structured (channel) pruning on Torch-Pruning's dependency graph (Fang et al., CVPR 2023).

Removing an output channel of one convolution forces matching cuts elsewhere: the next layer's input channels, its
BatchNorm, every branch that meets it in a residual add (ResNet), and the slice it occupies in a concatenation
(DenseNet blocks, GoogLeNet inception outputs). Torch-Pruning traces the network once and groups those coupled
channels, so a group is ranked and removed as one unit and the pruned network stays consistent. The classifier keeps
its outputs (one per class) and the layers a ModelSpec lists in ``prune_ignore`` are left alone.

What this module adds on top of the library:

* targets: a channel ratio, or a fraction of the original MACs / parameters to keep. A MACs or params target is met by
  bisecting the channel ratio on copies of the network and measuring each candidate, because MACs fall roughly
  quadratically - and unevenly - with channels;
* per-layer caps (``max_layer_ratio``) that actually hold: Torch-Pruning's ``max_pruning_ratio`` is only checked
  before a step, so global ranking can still strip a layer in one go; we trim each group as it is pruned instead;
* channel counts rounded to the *nearest* multiple of ``round_to`` (Torch-Pruning rounds down, which turns a 30 % cut
  of a 32-channel layer into 50 %), never below one multiple, and layers narrower than the multiple are left whole;
* N steps with fine-tuning between them (``edgecnn.train.fit``), optionally distilled from the unpruned original
  (``edgecnn.compress.distill``);
* the result saved as structure + safetensors (``models.save_torch_artifact``), rebuilt on load.

The stage is ``prune(src, out, PruneOptions(...))``: resolve (artifact, layers, data) -> run (the steps) -> record
(report + artifact); every rule on the options lives in :meth:`PruneOptions.validate`.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch

from ..artifact import Artifact, check_out
from ..errors import InvalidInput, OptionError, suggest
from ..evaluation import evaluate_module
from ..limits import MAX_EPOCHS, MAX_LAYERS
from ..models import load_torch_model, save_torch_artifact, spec_of, torch_artifact, unknown_layer
from ..models.registry import ModelSpec
from ..models.structure import describe_structure
from ..options import bounded, check_range
from ..train import FitOptions, TrainConfig, fit
from .channels import MacsCounter, all_widths, auto_round_to, layer_report, measure, prunable_widths
from .distill import KnowledgeDistillationLoss, check_kd, check_teacher
from .prune_graph import NothingToPrune, _clone, _Plan, _prune_step, _search_ratio, _taylor_grads, check_wrapped

log = logging.getLogger("edgecnn")

__all__ = ["prune", "PruneOptions", "IMPORTANCES", "NothingToPrune", "auto_round_to", "prunable_widths"]

IMPORTANCES = {
    "l1": "L1 norm of each channel's weights, summed over the coupled group (Li et al. 2017)",
    "l2": "L2 norm of each channel's weights, summed over the coupled group",
    "bn": "|BatchNorm scale| of the channel (network slimming, Liu et al. 2017); needs BatchNorm layers",
    "taylor": "first-order Taylor estimate |w * dL/dw| on training batches (Molchanov et al. 2019); needs data",
}
DEFAULT_MAX_LAYER_RATIO = 0.8
TARGETS = ("ratio", "target_macs", "target_params")


# -- options ---------------------------------------------------------------------------------------
@dataclass
class PruneOptions(FitOptions):
    """What to prune and how. Exactly one target: ``ratio`` (fraction of prunable channels to remove,
    per layer or - with ``global_pruning`` - across the network), ``target_macs`` or ``target_params``
    (fraction of the original to keep, e.g. 0.5 = at most half). ``round_to=None`` picks
    :func:`auto_round_to`. With ``steps`` > 1 the target is approached linearly, with
    ``finetune_epochs`` of training on ``data`` after every step, distilled from the unpruned original
    (``temperature``, ``alpha``) when ``distill`` is set. ``ignore`` names layers to leave whole.
    Data, learning rate, batch size, seed and device: :class:`~edgecnn.train.FitOptions`."""

    ratio: float | None = bounded(None, 0, 1, lo_open=True, hi_open=True)
    target_macs: float | None = bounded(None, 0, 1, lo_open=True, hi_open=True)
    target_params: float | None = bounded(None, 0, 1, lo_open=True, hi_open=True)
    importance: Literal["l1", "l2", "bn", "taylor"] = "l1"
    global_pruning: bool = False
    max_layer_ratio: float = bounded(DEFAULT_MAX_LAYER_RATIO, 0, 1, lo_open=True, hi_open=True)
    round_to: int | None = bounded(None, 1, 1024)
    steps: int = bounded(1, 1, 1000)
    finetune_epochs: int = bounded(0, 0, MAX_EPOCHS)
    distill: bool = False
    temperature: float = bounded(4.0, 0, 100, lo_open=True)
    alpha: float = bounded(0.9, 0, 1)
    ignore: tuple[str, ...] = ()
    taylor_batches: int = bounded(4, 1, MAX_LAYERS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.ignore, str):
            self.ignore = tuple(self.ignore)

    def target(self) -> tuple[str, float]:
        """(kind, value) of the one target given: ('ratio' | 'target_macs' | 'target_params', fraction)."""
        given = [(k, getattr(self, k)) for k in TARGETS if getattr(self, k) is not None]
        if len(given) != 1:
            got = " and ".join(f"--{k.replace('_', '-')}" for k, _ in given)
            raise OptionError(
                "Say how much to prune with exactly one of --ratio R (fraction of channels to remove), "
                "--target-macs F or --target-params F (fraction of the original to keep)"
                + (f"; got {got}." if given else ".")
            )
        kind, value = given[0]
        return kind, float(value)

    def validate(self) -> None:
        kind, value = self.target()
        if not 0.0 < value < 1.0:
            kept = "MACs" if kind == "target_macs" else "parameters"
            what = (
                "the fraction of channels to remove, e.g. 0.3"
                if kind == "ratio"
                else f"the fraction of the original {kept} to keep, e.g. 0.5"
            )
            raise OptionError(f"--{kind.replace('_', '-')} must be between 0 and 1 (exclusive): {what}; got {value}.")
        if self.importance not in IMPORTANCES:
            raise OptionError(
                f"Unknown importance '{self.importance}'.{suggest(self.importance, IMPORTANCES)} "
                f"Choose one of {', '.join(IMPORTANCES)}."
            )
        check_range("--steps", self.steps, 1, None)
        self.check_finetune(self.finetune_epochs)
        if self.importance == "taylor" and self.data is None:
            raise OptionError(
                "--importance taylor ranks channels by gradients, so it needs --data; or use l1 / l2 / bn."
            )
        if self.distill and self.finetune_epochs < 1:
            raise OptionError(
                "--distill fine-tunes the pruned network against the original; add --finetune-epochs N (and --data)."
            )
        if self.distill:
            check_kd(self.temperature, self.alpha)
        check_range("--max-layer-ratio", self.max_layer_ratio, 0, 1, True, True)
        if self.round_to is not None:
            check_range("--round-to", self.round_to, 1, None)
        if kind == "ratio" and not self.global_pruning and value > self.max_layer_ratio:
            raise OptionError(
                f"--ratio {value} removes more of every layer than --max-layer-ratio "
                f"{self.max_layer_ratio} allows; raise --max-layer-ratio or lower --ratio."
            )
        if isinstance(self.ignore, str):
            raise OptionError(f"ignore must be a list of layer names, got the text {self.ignore!r}.")
        check_range("--taylor-batches", self.taylor_batches, 1, None)
        super().validate()


# -- the stage -------------------------------------------------------------------------------------
@dataclass
class _PruneJob:
    """What ``prune`` resolved before the first step: the source, its network and data, the plan."""

    src: Artifact
    spec: ModelSpec
    model: torch.nn.Module
    kind: str
    value: float
    plan: _Plan
    widths: dict[str, int]  # prunable layers before pruning
    macs0: int
    params0: int
    val_set: object = None
    train_set: object = None  # fine-tuning (augmented)
    taylor_set: object = None  # Taylor gradients (not augmented)
    top1_0: float | None = None
    teacher_aug: float | None = None  # --distill: the original's top-1 on augmented training images


def prune(src, out: str | os.PathLike, options: PruneOptions, *, progress: bool = True) -> Artifact:
    """The prune stage: remove channels from the torch artifact ``src`` as ``options`` say; write ``out``."""
    options.validate()
    check_out(out, src)
    job = _resolve(src, options)
    model, steps, ft_config, ft_seconds = _run(job, options, progress)
    return _record(job, options, model, steps, (ft_config, ft_seconds), out)


def _resolve(src, options: PruneOptions) -> _PruneJob:
    """Load the source, check the layers and the data against it, and plan the steps."""
    kind, value = options.target()
    src = torch_artifact(src, why="pruning needs the torch artifact it was exported from")
    spec = spec_of(src.manifest["architecture"], f"'{src.path}'")
    model = load_torch_model(src)
    missing = unknown_layer(model, options.ignore)
    if missing:
        raise InvalidInput(
            f"--ignore '{missing[0]}': {src.model} has no such layer.{missing[1]} "
            "Name layers by their module path (e.g. layer4.1.conv2 or features.0)."
        )
    check_wrapped(model, src.input_shape, src.model)
    ignored = list(dict.fromkeys([spec.classifier, *spec.prune_ignore, *options.ignore]))
    widths = prunable_widths(model, ignored)
    if not widths:
        raise NothingToPrune(
            f"Nothing to prune in {src.model}: every convolution / linear layer is ignored "
            f"({', '.join(ignored)}); drop some --ignore names."
        )
    if options.importance == "bn" and not any(type(m).__name__.startswith("BatchNorm") for m in model.modules()):
        raise InvalidInput(
            f"--importance bn ranks channels by BatchNorm scale, but {src.model} has no BatchNorm "
            "layer; use l1, l2 or taylor."
        )
    round_to = auto_round_to(widths) if options.round_to is None else int(options.round_to)
    plan = _Plan(
        input_shape=src.input_shape,
        importance=options.importance,
        global_pruning=options.global_pruning,
        max_layer_ratio=float(options.max_layer_ratio),
        round_to=round_to,
        ignored=ignored,
        orig_width=all_widths(model),
    )
    macs0, params0 = measure(model, src.input_shape)
    if kind == "target_macs":
        counter = MacsCounter(model, src.input_shape)
        plan.macs_of = counter if counter(model) == macs0 else None
    job = _PruneJob(
        src=src, spec=spec, model=model, kind=kind, value=value, plan=plan, widths=widths, macs0=macs0, params0=params0
    )
    if options.data is not None:
        n = src.num_classes
        job.val_set = options.dataset(src.input, "val", num_classes=n)
        options.data.check_classes(
            job.val_set.classes, n, who=src.model, fix="prune with the data the model was trained on"
        )
        if options.finetune_epochs > 0:
            job.train_set = options.dataset(src.input, "train", num_classes=n, augment=True)
        if options.importance == "taylor":
            job.taylor_set = options.dataset(src.input, "train", num_classes=n)
        job.top1_0 = evaluate_module(model, job.val_set)["top1"]
    return job


def _run(job: _PruneJob, options: PruneOptions, progress: bool):
    """The steps, each followed by fine-tuning when asked: (model, step records, fine-tuning config, seconds)."""
    ft_config = options.train_config(options.finetune_epochs)
    teacher_loss = (
        KnowledgeDistillationLoss(copy.deepcopy(job.model), temperature=options.temperature, alpha=options.alpha)
        if options.distill
        else None
    )
    job.teacher_aug = check_teacher(job.model, job.train_set, job.top1_0, options.policy) if teacher_loss else None
    model, records, ft_seconds = job.model, [], 0.0
    try:
        for k in range(1, options.steps + 1):
            model, rec = _step(job, options, model, k, progress)
            if options.finetune_epochs > 0:
                result = fit(model, job.train_set, job.val_set, ft_config, loss_fn=teacher_loss, progress=progress)
                model.to("cpu").eval()
                ft_seconds += result["seconds"]
                rec["top1_finetuned"] = evaluate_module(model, job.val_set)["top1"]
                rec["history"] = result["history"]
            records.append(rec)
            log.info("prune step %d/%d: %s", k, options.steps, {k_: v for k_, v in rec.items() if k_ != "history"})
    finally:
        if teacher_loss is not None:
            teacher_loss.close()
    return model, records, ft_config, ft_seconds


def _step(job: _PruneJob, options: PruneOptions, model, k: int, progress: bool):
    """Prune step ``k`` of ``options.steps`` on a copy of ``model``: (pruned copy, record)."""
    plan, steps = job.plan, options.steps
    if options.importance == "taylor":
        plan.grads = _taylor_grads(
            model, job.taylor_set, batches=options.taylor_batches, batch_size=options.batch_size, seed=options.seed + k
        )
    try:
        if job.kind == "ratio":
            done, goal_k = job.value * (k - 1) / steps, job.value * k / steps
            step_ratio = 1.0 - (1.0 - goal_k) / (1.0 - done)
            twin = _clone(model, plan.grads)
            _prune_step(twin, step_ratio, plan)
            model = twin
        else:
            metric = "macs" if job.kind == "target_macs" else "params"
            base = job.macs0 if metric == "macs" else job.params0
            goal = base * (1.0 - (1.0 - job.value) * k / steps)
            model, step_ratio = _search_ratio(model, plan, metric=metric, goal=goal, base=base, progress=progress)
    except NothingToPrune:
        raise _nothing(job.src.model, plan.ignored) from None
    plan.grads = None
    plan.imp_cache.clear()  # the network changed (and may be fine-tuned next): scores are stale
    macs, params = measure(model, plan.input_shape)
    rec = {
        "step": k,
        "channel_ratio": round(step_ratio, 4),
        "macs": macs,
        "params": params,
        "macs_ratio": macs / job.macs0,
        "params_ratio": params / job.params0,
    }
    if job.val_set is not None:
        rec["top1_pruned"] = evaluate_module(model, job.val_set)["top1"]
    return model, rec


def _record(
    job: _PruneJob, options: PruneOptions, model, records: list[dict], finetune: tuple[TrainConfig, float], out
) -> Artifact:
    """The pruning report, the stage parameters and metrics, and the artifact (reloaded and compared)."""
    src, plan = job.src, job.plan
    macs1, params1 = measure(model, plan.input_shape)
    layers = layer_report(model, plan.orig_width)
    if not layers:
        raise NothingToPrune(
            f"{job.kind.replace('_', '-')} {job.value} removed no channel from {src.model} (narrowest prunable layer "
            f"{min(job.widths.values())} channels, --round-to {plan.round_to}); ask for more, or lower --round-to."
        )
    after = sum(w for n, w in all_widths(model).items() if n in job.widths)
    arch = src.manifest["architecture"]
    fresh = job.spec.build(
        num_classes=arch["num_classes"], in_channels=arch["in_channels"], input_size=arch["input_size"]
    )
    top1 = evaluate_module(model, job.val_set)["top1"] if job.val_set is not None else None
    ft_config, ft_seconds = finetune
    report = {
        "requested": {"kind": job.kind, "value": job.value},
        "achieved": {
            "channel_ratio": 1.0 - after / sum(job.widths.values()),
            "macs_ratio": macs1 / job.macs0,
            "params_ratio": params1 / job.params0,
        },
        "macs": {"before": job.macs0, "after": macs1},
        "params": {"before": job.params0, "after": params1},
        "importance": options.importance,
        "global": options.global_pruning,
        "round_to": plan.round_to,
        "round_to_source": "auto" if options.round_to is None else "user",
        "max_layer_ratio": options.max_layer_ratio,
        "ignored": plan.ignored,
        "steps": records,
        "layers": layers,
        "top1": {"original": job.top1_0, "pruned": top1} if top1 is not None else None,
        "teacher_top1_augmented": job.teacher_aug,
    }
    distill = options.distill
    params = {
        "ratio": options.ratio,
        "target_macs": options.target_macs,
        "target_params": options.target_params,
        "importance": options.importance,
        "global": options.global_pruning,
        "max_layer_ratio": options.max_layer_ratio,
        "round_to": plan.round_to,
        "steps": options.steps,
        "finetune_epochs": options.finetune_epochs,
        "data": options.data.describe("train") if options.data is not None else None,
        "distill": distill,
        "temperature": options.temperature if distill else None,
        "alpha": options.alpha if distill else None,
        "ignore": list(options.ignore),
        "seed": options.seed,
        "finetune": options.training_record(ft_config, src.input["channels"]),
    }
    metrics = {"macs_ratio": macs1 / job.macs0, "params_ratio": params1 / job.params0}
    if top1 is not None:
        metrics.update(top1=top1, top1_original=job.top1_0, eval_data=options.data.describe("val"))
    if ft_seconds:
        metrics["finetune_seconds"] = round(ft_seconds, 2)
    art = save_torch_artifact(
        model,
        out,
        name=src.model,
        input_spec=src.input,
        classes=src.classes,
        stage="prune",
        params=params,
        parent=src,
        metrics=metrics,
        structure=describe_structure(model, fresh),
        extra={"pruning": report},
        source=arch.get("source"),
    )
    art.update_metrics({"reload_max_abs_diff": _reload_check(model, art)})
    return art


def _reload_check(model, art) -> float:
    """Rebuild the saved artifact from disk (structure + safetensors) and compare logits with the
    network that was pruned in memory. Any difference is a bug in the structure description."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *art.input_shape, generator=g)
    model.eval()
    with torch.no_grad():
        diff = float((load_torch_model(art)(x) - model(x)).abs().max())
    if diff != 0.0:
        raise RuntimeError(f"pruned {art.model} reloaded from {art.path} differs from the pruned network by {diff}")
    return diff


def _nothing(model_name: str, ignored: list[str]) -> NothingToPrune:
    return NothingToPrune(
        f"Nothing to prune in {model_name}: every channel group touches an ignored layer ({', '.join(ignored)}) - "
        "the classifier's outputs are fixed, and a group is frozen when any of its coupled layers is ignored; "
        "drop some --ignore names."
    )
