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
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch_pruning as tp
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..artifact import Artifact, check_out
from ..errors import InvalidInput, OptionError, suggest
from ..evaluation import evaluate_module
from ..limits import MAX_EPOCHS, MAX_LAYERS
from ..models import count_params, get_spec, load_torch_model, save_torch_artifact, torch_artifact, unknown_layer
from ..models.registry import ModelSpec
from ..models.structure import describe_structure
from ..options import bounded, check_range
from ..train import FitOptions, TrainConfig, fit
from .channels import MacsCounter, all_widths, auto_round_to, layer_report, measure, prunable_widths, width
from .distill import KnowledgeDistillationLoss, check_kd, check_teacher

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


class NothingToPrune(InvalidInput):
    """The network has no channel the request may remove (everything ignored, too small, ...)."""


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


# -- the Torch-Pruning steps -----------------------------------------------------------------------
@dataclass
class _Plan:
    """Everything one pruning step needs, independent of which copy of the network it runs on."""

    input_shape: tuple[int, int, int]
    importance: str
    global_pruning: bool
    max_layer_ratio: float
    round_to: int
    ignored: list[str]
    orig_width: dict[str, int]
    grads: dict | None = None
    macs_of: object = None  # fast MACs counter for the search (see channels.MacsCounter)
    imp_cache: dict = field(default_factory=dict)


_IMPORTANCE = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bn": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}


class _CachedImportance:
    """Importance of each group, computed once per network state and reused by every candidate copy
    the ratio search tries (the copies carry identical weights, so the scores are identical)."""

    def __init__(self, inner, names: dict[int, str], cache: dict):
        self.inner, self.names, self.cache = inner, names, cache

    def __call__(self, group):
        item = group[0]
        handler = item.dep.handler
        key = (self.names.get(id(item.dep.target.module)), getattr(handler, "__name__", str(handler)), len(item.idxs))
        if key[0] is None:
            return self.inner(group)
        if key not in self.cache:
            imp = self.inner(group)
            self.cache[key] = imp
        imp = self.cache[key]
        return None if imp is None else imp.clone()


def _clone(model, grads: dict | None):
    """Deep copy of ``model`` carrying the Taylor gradients (deepcopy drops .grad)."""
    twin = copy.deepcopy(model)
    if grads:
        for name, p in twin.named_parameters():
            if name in grads:
                p.grad = grads[name].clone()
    return twin


def _taylor_grads(model, train_set, *, batches: int, batch_size: int, seed: int) -> dict:
    """Accumulate dL/dw over a few training batches (eval mode: BatchNorm statistics stay untouched)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=g)
    ce = torch.nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        ce(model(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


class EdgePruner(tp.pruner.BasePruner):
    """BasePruner that rounds kept channels to the *nearest* multiple (at least one multiple)."""

    def _round_to(self, n_pruned, current_channels, round_to):
        if current_channels <= round_to:
            return 0  # narrower than one multiple: leave the layer whole
        keep = current_channels - n_pruned
        keep = max(round_to, int(math.floor(keep / round_to + 0.5)) * round_to)
        return max(0, current_channels - min(keep, current_channels))


def _prune_step(model, ratio: float, plan: _Plan) -> int:
    """Remove ``ratio`` of the current prunable channels of ``model`` in place; returns channels removed."""
    modules = dict(model.named_modules())
    ignored_modules = [modules[n] for n in plan.ignored if n in modules]
    names = {id(m): n for n, m in modules.items()}
    example = torch.zeros(1, *plan.input_shape)
    model.eval()
    importance = _CachedImportance(_IMPORTANCE[plan.importance](), names, plan.imp_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = EdgePruner(
            model,
            example,
            importance=importance,
            pruning_ratio=float(ratio),
            global_pruning=plan.global_pruning,
            ignored_layers=ignored_modules,
            round_to=plan.round_to if plan.round_to > 1 else None,
        )
    if pruner.initial_total_channels == 0:
        raise NothingToPrune("no prunable group")
    # Torch-Pruning silently skips a group whose every channel was selected (high ratios, global ranking),
    # which would make the result non-monotonic in the ratio. Let such groups through: the cap below
    # always keeps at least one multiple of round_to (and at least one channel) of every layer.
    pruner.DG.check_pruning_group = lambda group: True
    removed = 0
    for group in pruner.step(interactive=True):
        root = group[0].dep.target.module
        fn = group[0].dep.handler
        idxs = list(group[0].idxs)
        name = names.get(id(root))
        current = width(root)
        orig = plan.orig_width.get(name, current) if name is not None else current
        if current is None or orig is None:
            group.prune()
            continue
        min_keep = math.ceil(orig * (1.0 - plan.max_layer_ratio) - 1e-9)
        if plan.round_to > 1:
            min_keep = math.ceil(min_keep / plan.round_to) * plan.round_to
        min_keep = max(1, min(min_keep, current))
        allowed = current - min_keep
        if allowed <= 0:
            continue
        if len(idxs) > allowed:  # trim to the cap, keeping the least important of TP's choice
            full = pruner.DG.get_pruning_group(root, fn, list(range(current)))
            imp = pruner.estimate_importance(full)
            chosen = set(idxs)
            idxs = [int(i) for i in torch.argsort(imp).tolist() if int(i) in chosen][:allowed]
            group = pruner.DG.get_pruning_group(root, fn, idxs)
        group.prune()
        removed += len(idxs)
    model.zero_grad(set_to_none=True)
    return removed


def _search_ratio(model, plan: _Plan, *, metric: str, goal: float, base: float, progress: bool):
    """Smallest channel ratio (to within 0.004) whose pruned copy has ``metric`` <= ``goal``.

    Starts from the uniform-pruning guess MACs ~ (1 - r)^2 (params likewise), brackets the answer by
    doubling steps and bisects; ~6 candidates instead of a dozen. Returns (pruned copy, ratio).
    """
    size = (plan.macs_of or (lambda m: measure(m, plan.input_shape)[0])) if metric == "macs" else count_params
    current = size(model)
    bar = tqdm(
        desc=f"search channel ratio for {metric} <= {goal / base:.3f}", disable=not progress, leave=False, unit="try"
    )
    results: dict[float, tuple] = {}

    def feasible(r: float) -> bool:
        if r not in results:
            twin = _clone(model, plan.grads)
            _prune_step(twin, r, plan)
            results[r] = (size(twin), twin)
            bar.update(1)
        return results[r][0] <= goal

    try:
        guess = min(0.95, max(0.01, 1.0 - math.sqrt(max(goal, 1.0) / max(current, 1))))
        hi_cap = 0.99
        if feasible(guess):
            hi, d, lo = guess, 0.05, None
            while lo is None:
                cand = max(0.0, hi - d)
                if cand <= 0.0 or not feasible(cand):
                    lo = cand
                else:
                    hi, d = cand, d * 2
        else:
            lo, d, hi = guess, 0.05, None
            while hi is None:
                cand = min(hi_cap, lo + d)
                if feasible(cand):
                    hi = cand
                elif cand >= hi_cap:
                    raise InvalidInput(
                        f"Cannot bring {'MACs' if metric == 'macs' else 'parameters'} down to {goal / base:.3f} of the "
                        f"original: the most this network allows is {results[cand][0] / base:.3f} (--max-layer-ratio "
                        f"{plan.max_layer_ratio} keeps {1 - plan.max_layer_ratio:.0%} of each layer; the classifier "
                        "and ignored layers stay whole). Raise --max-layer-ratio, use --global, or ask for less."
                    )
                else:
                    lo, d = cand, d * 2
        while hi - lo > 0.004:
            mid = (lo + hi) / 2
            if feasible(mid):
                hi = mid
            else:
                lo = mid
    finally:
        bar.close()
    return results[hi][1], hi


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
    spec = get_spec(src.manifest["architecture"]["name"])
    model = load_torch_model(src)
    missing = unknown_layer(model, options.ignore)
    if missing:
        raise InvalidInput(
            f"--ignore '{missing[0]}': {src.model} has no such layer.{missing[1]} "
            "Name layers by their module path (e.g. layer4.1.conv2 or features.0)."
        )
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
