"""Structured (channel) pruning on Torch-Pruning's dependency graph (Fang et al., CVPR 2023).

Removing an output channel of one convolution forces matching cuts elsewhere: the next layer's input
channels, its BatchNorm, every branch that meets it in a residual add (ResNet), and the slice it
occupies in a concatenation (DenseNet blocks, GoogLeNet inception outputs). Torch-Pruning traces the
network once and groups those coupled channels, so a group is ranked and removed as one unit and the
pruned network stays consistent. The classifier keeps its outputs (one per class) and the layers a
ModelSpec lists in ``prune_ignore`` are left alone.

What this module adds on top of the library:

* targets: a channel ratio, or a fraction of the original MACs / parameters to keep. A MACs or
  params target is met by bisecting the channel ratio on copies of the network and measuring each
  candidate, because MACs fall roughly quadratically - and unevenly - with channels;
* per-layer caps (``max_layer_ratio``) that actually hold: Torch-Pruning's ``max_pruning_ratio`` is only
  checked before a step, so global ranking can still strip a layer in one go; we trim each group as it
  is pruned instead;
* channel counts rounded to the *nearest* multiple of ``round_to`` (Torch-Pruning rounds down, which
  turns a 30 % cut of a 32-channel layer into 50 %), never below one multiple, and layers narrower
  than the multiple are left whole;
* N steps with fine-tuning between them (``edgecnn.train.fit``), optionally distilled from the
  unpruned original (``edgecnn.compress.distill``);
* the result saved as structure + safetensors (``models.save_torch_artifact``), rebuilt on load.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import InvalidInput, suggest

log = logging.getLogger("edgecnn")

__all__ = ["prune", "IMPORTANCES", "NothingToPrune", "auto_round_to", "prunable_widths"]

IMPORTANCES = {
    "l1": "L1 norm of each channel's weights, summed over the coupled group (Li et al. 2017)",
    "l2": "L2 norm of each channel's weights, summed over the coupled group",
    "bn": "|BatchNorm scale| of the channel (network slimming, Liu et al. 2017); needs BatchNorm layers",
    "taylor": "first-order Taylor estimate |w * dL/dw| on training batches (Molchanov et al. 2019); needs data",
}
DEFAULT_MAX_LAYER_RATIO = 0.8


class NothingToPrune(InvalidInput):
    """The network has no channel the request may remove (everything ignored, too small, ...)."""


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
    macs_of: object = None                     # fast MACs counter for the search (see _MacsCounter)
    imp_cache: dict = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------------
def _importance(name: str):
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "bn":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise InvalidInput(f"Unknown importance '{name}'.{suggest(name, IMPORTANCES)} Choose one of {', '.join(IMPORTANCES)}.")


def _width(module) -> int | None:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    return None


def prunable_widths(model, ignored: Sequence[str]) -> dict[str, int]:
    """Output widths of the Conv2d / Linear layers that are not ignored (nor inside an ignored module)."""
    prefixes = tuple(n + "." for n in ignored)
    out = {}
    for name, module in model.named_modules():
        w = _width(module)
        if w is None or name in ignored or name.startswith(prefixes):
            continue
        out[name] = w
    return out


def auto_round_to(widths: dict[str, int]) -> int:
    """The largest of 8, 4, 2, 1 such that one rounding step is at most a quarter of the narrowest layer.

    8 suits INT8 / tensor-core kernels (ResNet, VGG, DenseNet: narrowest layer 32-64); GoogLeNet's
    16-channel inception reductions get 4, and LeNet-5's 6-channel C1 gets 1 (no rounding).
    """
    narrowest = min(widths.values()) if widths else 1
    for r in (8, 4, 2):
        if narrowest >= 4 * r:
            return r
    return 1


def _measure(model, input_shape) -> tuple[int, int]:
    from ..models import count_macs, count_params

    return count_macs(model, input_shape), count_params(model)


class _MacsCounter:
    """MACs of pruned variants of one network without a traced forward pass.

    Pruning changes channel counts, never spatial sizes, so the output size of every Conv2d / Linear
    is recorded once; a variant's MACs are then a sum over its layers' current shapes. The counter is
    only used when it reproduces ``models.count_macs`` exactly on the unpruned network (the number
    written to the manifest is always ``count_macs``'s).
    """

    def __init__(self, model, input_shape):
        import torch
        from torch import nn

        self.positions: dict[str, int] = {}
        hooks = []
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                hooks.append(m.register_forward_hook(self._record(name)))
        try:
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, *input_shape))
        finally:
            for h in hooks:
                h.remove()

    def _record(self, name):
        def hook(module, inputs, output):
            self.positions[name] = int(output.numel() // output.shape[-1 if output.dim() == 2 else 1])
        return hook

    def __call__(self, model) -> int:
        from torch import nn

        total = 0
        for name, m in model.named_modules():
            if name not in self.positions:
                continue
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                total += self.positions[name] * m.out_channels * (m.in_channels // m.groups) * kh * kw
            elif isinstance(m, nn.Linear):
                total += self.positions[name] * m.out_features * m.in_features
        return total


class _CachedImportance:
    """Importance of each group, computed once per network state and reused by every candidate copy
    the ratio search tries (the copies carry identical weights, so the scores are identical)."""

    def __init__(self, inner, names: dict[int, str], cache: dict):
        self.inner, self.names, self.cache = inner, names, cache

    def __call__(self, group):
        item = group[0]
        key = (self.names.get(id(item.dep.target.module)), getattr(item.dep.handler, "__name__", str(item.dep.handler)),
               len(item.idxs))
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
    import torch
    from torch.utils.data import DataLoader

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


def _edge_pruner_class():
    import torch_pruning as tp

    class EdgePruner(tp.pruner.BasePruner):
        """BasePruner that rounds kept channels to the *nearest* multiple (at least one multiple)."""

        def _round_to(self, n_pruned, current_channels, round_to):
            if current_channels <= round_to:
                return 0                      # narrower than one multiple: leave the layer whole
            keep = current_channels - n_pruned
            keep = max(round_to, int(math.floor(keep / round_to + 0.5)) * round_to)
            return max(0, current_channels - min(keep, current_channels))

    return EdgePruner


def _prune_step(model, ratio: float, plan: _Plan) -> int:
    """Remove ``ratio`` of the current prunable channels of ``model`` in place; returns channels removed."""
    import torch

    modules = dict(model.named_modules())
    ignored_modules = [modules[n] for n in plan.ignored if n in modules]
    names = {id(m): n for n, m in modules.items()}
    example = torch.zeros(1, *plan.input_shape)
    model.eval()
    Pruner = _edge_pruner_class()
    importance = _CachedImportance(_importance(plan.importance), names, plan.imp_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = Pruner(model, example, importance=importance, pruning_ratio=float(ratio),
                        global_pruning=plan.global_pruning, ignored_layers=ignored_modules,
                        round_to=plan.round_to if plan.round_to > 1 else None)
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
        current = _width(root)
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
        if len(idxs) > allowed:               # trim to the cap, keeping the least important of TP's choice
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
    from tqdm.auto import tqdm

    from ..models import count_params

    measure = (plan.macs_of or (lambda m: _measure(m, plan.input_shape)[0])) if metric == "macs" else count_params
    current = measure(model)
    bar = tqdm(desc=f"search channel ratio for {metric} <= {goal / base:.3f}", disable=not progress, leave=False,
               unit="try")
    results: dict[float, tuple] = {}

    def feasible(r: float) -> bool:
        if r not in results:
            twin = _clone(model, plan.grads)
            _prune_step(twin, r, plan)
            results[r] = (measure(twin), twin)
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
                        f"{plan.max_layer_ratio} keeps {1 - plan.max_layer_ratio:.0%} of each layer; the classifier and "
                        "ignored layers stay whole). Raise --max-layer-ratio, use --global, or ask for less."
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


def _layer_report(model, before: dict[str, int]) -> dict[str, list[int]]:
    after = {n: _width(m) for n, m in model.named_modules() if _width(m) is not None}
    return {n: [before[n], after[n]] for n in before if n in after and after[n] != before[n]}


def _validate(ratio, target_macs, target_params, importance, steps, finetune_epochs, data, distill,
              max_layer_ratio, round_to, global_pruning) -> tuple[str, float]:
    given = [(k, v) for k, v in (("ratio", ratio), ("target_macs", target_macs), ("target_params", target_params))
             if v is not None]
    if not given:
        raise InvalidInput("Say how much to prune: pass --ratio R (fraction of channels to remove), "
                           "--target-macs F or --target-params F (fraction of the original to keep).")
    if len(given) > 1:
        raise InvalidInput(f"Pass only one of --ratio / --target-macs / --target-params (got {', '.join(k for k, _ in given)}).")
    kind, value = given[0]
    if not 0.0 < float(value) < 1.0:
        what = ("the fraction of channels to remove, e.g. 0.3" if kind == "ratio"
                else f"the fraction of the original {kind.split('_')[1].upper() if kind == 'target_macs' else 'parameters'} to keep, e.g. 0.5")
        raise InvalidInput(f"--{kind.replace('_', '-')} must be between 0 and 1 (exclusive): {what}; got {value}.")
    if importance not in IMPORTANCES:
        raise InvalidInput(f"Unknown importance '{importance}'.{suggest(importance, IMPORTANCES)} "
                           f"Choose one of {', '.join(IMPORTANCES)}.")
    if steps < 1:
        raise InvalidInput(f"--steps must be >= 1, got {steps}.")
    if finetune_epochs < 0:
        raise InvalidInput(f"--finetune-epochs must be >= 0, got {finetune_epochs}.")
    if finetune_epochs > 0 and not data:
        raise InvalidInput("--finetune-epochs needs training data: pass --data digits or a folder of class sub-folders.")
    if importance == "taylor" and not data:
        raise InvalidInput("--importance taylor ranks channels by gradients, so it needs --data; or use l1 / l2 / bn.")
    if distill and finetune_epochs < 1:
        raise InvalidInput("--distill fine-tunes the pruned network against the original; add --finetune-epochs N (and --data).")
    if not 0.0 < max_layer_ratio < 1.0:
        raise InvalidInput(f"--max-layer-ratio must be between 0 and 1 (exclusive), got {max_layer_ratio}.")
    if round_to is not None and round_to < 1:
        raise InvalidInput(f"--round-to must be >= 1, got {round_to}.")
    if kind == "ratio" and not global_pruning and value > max_layer_ratio:
        raise InvalidInput(f"--ratio {value} removes more of every layer than --max-layer-ratio {max_layer_ratio} "
                           "allows; raise --max-layer-ratio or lower --ratio.")
    return kind, float(value)


# -- the stage -------------------------------------------------------------------------------------
def prune(src, out: str | os.PathLike, *, ratio: float | None = None, target_macs: float | None = None,
          target_params: float | None = None, importance: str = "l1", global_pruning: bool = False,
          max_layer_ratio: float = DEFAULT_MAX_LAYER_RATIO, round_to: int | None = None, steps: int = 1,
          finetune_epochs: int = 0, data: str | None = None, distill: bool = False, temperature: float = 4.0,
          alpha: float = 0.9, lr: float | None = None, batch_size: int = 64, config=None,
          ignore: Sequence[str] = (), taylor_batches: int = 4, seed: int = 0, device: str = "auto",
          val_split: float = 0.2, skip_corrupt: bool = False, progress: bool = True):
    """The prune stage: remove channels from the torch artifact ``src``; write the result to ``out``.

    Exactly one target: ``ratio`` (fraction of prunable channels to remove, per layer or - with
    ``global_pruning`` - across the network), ``target_macs`` or ``target_params`` (fraction of the
    original to keep, e.g. 0.5 = at most half). ``round_to=None`` picks :func:`auto_round_to`. With
    ``steps`` > 1 the target is approached linearly, with ``finetune_epochs`` of training (on ``data``) after
    every step, distilled from the unpruned original when ``distill`` is set.
    """
    if out is not None:
        from ..artifact import check_out

        check_out(out)
    from ..artifact import Artifact
    from ..data import describe_source, load_dataset
    from ..errors import ArtifactError
    from ..models import get_spec, load_torch_model, save_torch_artifact
    from ..models.structure import describe_structure
    from ..evaluation import evaluate_module
    from ..train import TrainConfig, fit

    kind, value = _validate(ratio, target_macs, target_params, importance, steps, finetune_epochs, data, distill,
                            max_layer_ratio, round_to, global_pruning)
    if not isinstance(src, Artifact):
        src = Artifact.load(src, formats=("torch",))
    elif src.format != "torch":
        raise ArtifactError(f"'{src.path}' is a {src.format} artifact; pruning needs the torch artifact it was exported from.")
    arch = src.manifest["architecture"]
    spec = get_spec(arch["name"])
    model = load_torch_model(src)
    input_shape = src.input_shape

    modules = dict(model.named_modules())
    for name in ignore:
        if name not in modules or not name:
            raise InvalidInput(f"--ignore '{name}': {src.model} has no such layer.{suggest(name, [m for m in modules if m])} "
                               "Name layers by their module path (e.g. layer4.1.conv2 or features.0).")
    ignored = list(dict.fromkeys([spec.classifier, *spec.prune_ignore, *ignore]))
    widths = prunable_widths(model, ignored)
    if not widths:
        raise NothingToPrune(f"Nothing to prune in {src.model}: every convolution / linear layer is ignored "
                             f"({', '.join(ignored)}); drop some --ignore names.")
    if importance == "bn" and not any(type(m).__name__.startswith("BatchNorm") for m in model.modules()):
        raise InvalidInput(f"--importance bn ranks channels by BatchNorm scale, but {src.model} has no BatchNorm "
                           "layer; use l1, l2 or taylor.")
    rt = auto_round_to(widths) if round_to is None else int(round_to)
    all_widths = {n: _width(m) for n, m in model.named_modules() if _width(m) is not None}
    plan = _Plan(input_shape=input_shape, importance=importance, global_pruning=global_pruning,
                 max_layer_ratio=float(max_layer_ratio), round_to=rt, ignored=ignored, orig_width=all_widths)

    train_set = val_set = None
    if data:
        train_set = load_dataset(data, src.input, "train", augment=finetune_epochs > 0, val_split=val_split, seed=seed,
                                 skip_corrupt=skip_corrupt, num_classes=src.num_classes)
        if len(train_set.classes) != src.num_classes:
            raise InvalidInput(f"Data '{data}' has {len(train_set.classes)} classes but {src.model} predicts "
                               f"{src.num_classes}; prune with the data the model was trained on.")
        val_set = load_dataset(data, src.input, "val", val_split=val_split, seed=seed, skip_corrupt=skip_corrupt,
                               num_classes=src.num_classes)
        taylor_set = load_dataset(data, src.input, "train", val_split=val_split, seed=seed, skip_corrupt=skip_corrupt,
                                  num_classes=src.num_classes) if importance == "taylor" else None

    macs0, params0 = _measure(model, input_shape)
    if kind == "target_macs":
        counter = _MacsCounter(model, input_shape)
        plan.macs_of = counter if counter(model) == macs0 else None
    top1_0 = evaluate_module(model, val_set)["top1"] if val_set is not None else None
    teacher_loss = None
    if distill:
        from .distill import KnowledgeDistillationLoss

        teacher_loss = KnowledgeDistillationLoss(copy.deepcopy(model), temperature=temperature, alpha=alpha)
    if config is None:
        ft_config = TrainConfig(epochs=finetune_epochs, batch_size=batch_size, lr=0.01 if lr is None else lr,
                                seed=seed, device=device)
    else:
        ft_config = dataclasses.replace(config, epochs=finetune_epochs, **({"lr": lr} if lr is not None else {}))

    records = []
    ft_seconds = 0.0
    for k in range(1, steps + 1):
        if importance == "taylor":
            plan.grads = _taylor_grads(model, taylor_set, batches=taylor_batches, batch_size=batch_size, seed=seed + k)
        if kind == "ratio":
            done, goal_k = value * (k - 1) / steps, value * k / steps
            step_ratio = 1.0 - (1.0 - goal_k) / (1.0 - done)
            twin = _clone(model, plan.grads)
            try:
                _prune_step(twin, step_ratio, plan)
            except NothingToPrune:
                raise _nothing(src.model, ignored) from None
            model = twin
        else:
            metric = "macs" if kind == "target_macs" else "params"
            base = macs0 if metric == "macs" else params0
            goal = base * (1.0 - (1.0 - value) * k / steps)
            try:
                model, step_ratio = _search_ratio(model, plan, metric=metric, goal=goal, base=base, progress=progress)
            except NothingToPrune:
                raise _nothing(src.model, ignored) from None
        plan.grads = None
        plan.imp_cache.clear()      # the network changed (and may be fine-tuned next): scores are stale
        macs, params = _measure(model, input_shape)
        rec = {"step": k, "channel_ratio": round(step_ratio, 4), "macs": macs, "params": params,
               "macs_ratio": macs / macs0, "params_ratio": params / params0}
        if val_set is not None:
            rec["top1_pruned"] = evaluate_module(model, val_set)["top1"]
        if finetune_epochs > 0:
            result = fit(model, train_set, val_set, ft_config, loss_fn=teacher_loss, progress=progress)
            model.to("cpu").eval()
            ft_seconds += result["seconds"]
            rec["top1_finetuned"] = evaluate_module(model, val_set)["top1"]
            rec["history"] = result["history"]
        records.append(rec)
        log.info("prune step %d/%d: %s", k, steps, {k_: v for k_, v in rec.items() if k_ != "history"})
    if teacher_loss is not None:
        teacher_loss.close()

    macs1, params1 = _measure(model, input_shape)
    layers = _layer_report(model, all_widths)
    if not layers:
        raise NothingToPrune(
            f"{kind.replace('_', '-')} {value} removed no channel from {src.model} (narrowest prunable layer "
            f"{min(widths.values())} channels, --round-to {rt}); ask for more, or lower --round-to."
        )
    prunable_before = sum(widths.values())
    prunable_after = sum(_width(m) for n, m in model.named_modules() if n in widths)
    fresh = spec.build(num_classes=arch["num_classes"], in_channels=arch["in_channels"], input_size=arch["input_size"])
    structure = describe_structure(model, fresh)
    top1 = evaluate_module(model, val_set)["top1"] if val_set is not None else None

    report = {
        "requested": {"kind": kind, "value": value},
        "achieved": {"channel_ratio": 1.0 - prunable_after / prunable_before, "macs_ratio": macs1 / macs0,
                     "params_ratio": params1 / params0},
        "macs": {"before": macs0, "after": macs1},
        "params": {"before": params0, "after": params1},
        "importance": importance, "global": global_pruning, "round_to": rt,
        "round_to_source": "auto" if round_to is None else "user", "max_layer_ratio": max_layer_ratio,
        "ignored": ignored, "steps": records, "layers": layers,
        "top1": {"original": top1_0, "pruned": top1} if top1 is not None else None,
    }
    params = {"ratio": ratio, "target_macs": target_macs, "target_params": target_params, "importance": importance,
              "global": global_pruning, "max_layer_ratio": max_layer_ratio, "round_to": rt, "steps": steps,
              "finetune_epochs": finetune_epochs, "data": describe_source(data, "train") if data else None,
              "distill": distill, "temperature": temperature if distill else None, "alpha": alpha if distill else None,
              "ignore": list(ignore), "seed": seed,
              "finetune": ({k_: v for k_, v in dataclasses.asdict(ft_config).items() if k_ != "extra"}
                           | {"lr": ft_config.resolved_lr()}) if finetune_epochs > 0 else None}
    metrics = {"macs_ratio": macs1 / macs0, "params_ratio": params1 / params0}
    if top1 is not None:
        metrics.update(top1=top1, top1_original=top1_0, eval_data=describe_source(data, "val"))
    if ft_seconds:
        metrics["finetune_seconds"] = round(ft_seconds, 2)
    art = save_torch_artifact(model, out, name=src.model, input_spec=src.input, classes=src.classes, stage="prune",
                              params=params, parent=src, metrics=metrics, structure=structure,
                              extra={"pruning": report})
    art.update_metrics({"reload_max_abs_diff": _reload_check(model, art)})
    return art


def _reload_check(model, art) -> float:
    """Rebuild the saved artifact from disk (structure + safetensors) and compare logits with the
    network that was pruned in memory. Any difference is a bug in the structure description."""
    import torch

    from ..models import load_torch_model

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
