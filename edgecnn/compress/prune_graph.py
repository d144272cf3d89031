"""The Torch-Pruning side of the prune stage: the dependency graph, one pruning step, the ratio search.

Torch-Pruning traces the network once and groups coupled channels (residual adds, concatenations, depthwise and
grouped convolutions, squeeze-excitation, BatchNorm); :func:`_prune_step` removes a fraction of each group with the
per-layer caps and rounding of :mod:`edgecnn.compress.prune`. A parameter that belongs to no layer type the graph
knows (a custom layer's own ``nn.Parameter``, a layer-scale vector, ...) would be cut along a guessed dimension:
such networks are refused with the parameters named (:func:`check_wrapped`), never pruned by guesswork.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors import InvalidInput
from ..models import count_params
from .channels import measure, width


class NothingToPrune(InvalidInput):
    """The network has no channel the request may remove (everything ignored, too small, ...)."""


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


def check_wrapped(model, input_shape: tuple[int, int, int], model_name: str) -> None:
    """Refuse a network with parameters outside every layer type Torch-Pruning's dependency graph knows: it would
    cut them along a guessed dimension (its "unwrapped parameters"), so the error names them instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    names = sorted(graph._param_to_name[item.parameters] for item in graph.unwrapped_parameters)
    if names:
        owners = sorted({type(model.get_submodule(n.rpartition(".")[0])).__name__ for n in names})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise InvalidInput(
            f"Cannot prune {model_name} safely: {shown} belong to no layer type Torch-Pruning's dependency graph "
            f"knows ({', '.join(owners)}), so it would cut them along a guessed dimension; prune a network whose "
            "parameters live in Conv/Linear/BatchNorm/LayerNorm layers, or leave pruning out."
        )
