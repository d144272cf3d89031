"""Weight sparsity: 2:4 semi-structured (for the sparse tensor cores of Ampere and later GPUs, which
TensorRT uses when an engine is built with sparsity enabled) and unstructured magnitude sparsity.

2:4 means: in every group of 4 consecutive weights along the *input-channel* dimension, at least 2 are
zero. For a Conv2d weight (K, C, R, S) the groups run along C for every (k, r, s) - TensorRT's and
NVIDIA ASP's convention (ASP permutes the weight to (R, S, K, C) and groups the last axis); for a
Linear weight (out, in) they run along ``in``. Within each group the 2 largest magnitudes are kept.

Layers TensorRT would not run on sparse kernels are skipped, and the manifest says why (ASP's rule):
grouped / depthwise convolutions, and weights whose output count is not a multiple of 8 or whose
input-channel count is not a multiple of 16 - which includes every stem convolution on 1-3 input
channels. The classifier is sparsified when it qualifies, as ASP does.

Fine-tuning keeps the mask: a gradient hook zeroes the gradient of every pruned weight (so neither
SGD momentum, weight decay nor AdamW can revive it - their updates of a zero weight with zero gradient
are zero) and a forward pre-hook re-applies the mask before every forward as a second guarantee. No
change to the training loop is needed.

Sparse weights are stored dense (zeros included) in safetensors and export to ONNX unchanged; the
speed-up appears only on hardware with sparse kernels (TensorRT on Ampere+/Orin), not in ONNX Runtime
on CPU. :func:`check_2to4` proves the pattern on any model, state_dict or artifact.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..artifact import Artifact, check_out, is_artifact
from ..errors import InvalidInput, OptionError, suggest
from ..evaluation import evaluate_module
from ..limits import MAX_EPOCHS
from ..models import load_torch_model, save_torch_artifact, torch_artifact, unknown_layer
from ..options import bounded
from ..train import FitOptions, fit

log = logging.getLogger("edgecnn")

__all__ = [
    "sparsify",
    "SparsifyOptions",
    "check_2to4",
    "check_mode",
    "eligible_layers",
    "mask_2to4",
    "mask_magnitude",
    "PATTERNS",
]

PATTERNS = ("2:4", "unstructured")
GROUP = 4
KEEP = 2


# -- masks -----------------------------------------------------------------------------------------
def _groups_view(weight):
    """The weight as (n_groups, 4): groups of 4 consecutive input channels (needs C % 4 == 0)."""
    if weight.dim() == 4:  # K, C, R, S -> R, S, K, C
        w = weight.permute(2, 3, 0, 1)
    elif weight.dim() == 2:  # out, in
        w = weight
    else:
        raise ValueError(f"2:4 applies to conv / linear weights, got a {weight.dim()}-d tensor")
    return w.reshape(-1, GROUP)


def _from_groups(groups, like):
    if like.dim() == 4:
        k, c, r, s = like.shape
        return groups.reshape(r, s, k, c).permute(2, 3, 0, 1).contiguous()
    return groups.reshape(like.shape).contiguous()


def mask_2to4(weight):
    """Boolean mask keeping the 2 largest |w| of every 4 consecutive input channels."""
    groups = _groups_view(weight.detach().abs())
    top = groups.topk(KEEP, dim=1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
    return _from_groups(keep, weight)


def mask_magnitude(weight, sparsity: float):
    """Boolean mask zeroing the ``sparsity`` fraction of smallest |w| of this tensor."""
    n = weight.numel()
    k = int(round(sparsity * n))
    if k <= 0:
        return torch.ones_like(weight, dtype=torch.bool)
    flat = weight.detach().abs().flatten()
    drop = flat.topk(k, largest=False).indices
    keep = torch.ones(n, dtype=torch.bool, device=weight.device)
    keep[drop] = False
    return keep.view_as(weight)


# -- which layers ----------------------------------------------------------------------------------
def skip_reason(module, pattern: str) -> str | None:
    """Why TensorRT would not run ``module`` sparse (None when it qualifies)."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups})"
        out_ch, in_ch = module.out_channels, module.in_channels
    elif isinstance(module, nn.Linear):
        out_ch, in_ch = module.out_features, module.in_features
    else:
        return "not a Conv2d / Linear"
    if pattern == "2:4":
        if in_ch % 16:
            return f"{in_ch} input channels, not a multiple of 16 (sparse tensor-core kernels need it)"
        if out_ch % 8:
            return f"{out_ch} outputs, not a multiple of 8 (sparse tensor-core kernels need it)"
    return None


def eligible_layers(model, pattern: str = "2:4", exclude: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]:
    """(layers to sparsify, {skipped layer: reason}) over every Conv2d / Linear of ``model``."""
    exclude = set(exclude)
    chosen, skipped = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if name in exclude:
            skipped[name] = "excluded by request"
            continue
        reason = skip_reason(module, pattern)
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    return chosen, skipped


# -- the check -------------------------------------------------------------------------------------
def check_2to4(obj, layers: Iterable[str] | None = None) -> list[dict]:
    """Every group of 4 consecutive input-channel weights has >= 2 zeros - or the list of violations.

    ``obj`` is an nn.Module, a state_dict, or a torch artifact (path or Artifact); ``layers`` names the
    layers to check (default: those an artifact's manifest lists as 2:4, else every Conv2d / Linear
    weight TensorRT could run sparse). Returns one dict per offending layer: layer, groups,
    violating_groups and the first violating group's (out, in_start, kh, kw) index.
    """
    state, manifest_layers = None, None
    if isinstance(obj, (str, os.PathLike)) and is_artifact(obj):
        obj = Artifact.load(obj, formats=("torch",))
    if isinstance(obj, Artifact):
        sp = obj.manifest.get("sparsity") or {}
        if sp.get("pattern") == "2:4":
            manifest_layers = list(sp.get("layers", {}))
        obj = load_torch_model(obj)
    if isinstance(obj, torch.nn.Module):
        if layers is None and manifest_layers is None:
            layers, _ = eligible_layers(obj, "2:4")
        state = {k: v for k, v in obj.state_dict().items()}
    else:
        state = dict(obj)
        if layers is None and manifest_layers is None:
            layers = [
                k[: -len(".weight")]
                for k, v in state.items()
                if k.endswith(".weight") and v.dim() in (2, 4) and v.shape[1] % 16 == 0 and v.shape[0] % 8 == 0
            ]
    layers = list(manifest_layers if layers is None else layers)
    violations = []
    for name in layers:
        w = state.get(f"{name}.weight")
        if w is None:
            violations.append({"layer": name, "error": "no such weight"})
            continue
        if w.dim() not in (2, 4) or w.shape[1] % GROUP:
            violations.append({"layer": name, "error": f"shape {tuple(w.shape)}: input channels not a multiple of 4"})
            continue
        nonzero = (_groups_view(w) != 0).sum(dim=1)
        bad = (nonzero > GROUP - KEEP).nonzero().flatten()
        if len(bad):
            first = int(bad[0])
            if w.dim() == 4:
                k, c, r, s = w.shape
                cg = c // GROUP
                rr, rem = divmod(first, s * k * cg)
                ss, rem = divmod(rem, k * cg)
                kk, gi = divmod(rem, cg)
                where = [kk, gi * GROUP, rr, ss]
            else:
                cg = w.shape[1] // GROUP
                where = [first // cg, (first % cg) * GROUP]
            violations.append(
                {"layer": name, "groups": int(nonzero.numel()), "violating_groups": int(len(bad)), "first": where}
            )
    return violations


def layer_sparsity(model, layers: Iterable[str]) -> dict[str, float]:
    modules = dict(model.named_modules())
    return {n: float((modules[n].weight == 0).float().mean()) for n in layers}


# -- keeping masks during fine-tuning --------------------------------------------------------------
class MaskKeeper:
    """Holds masks on a model while it trains: gradient hooks + forward pre-hooks (see module docstring)."""

    def __init__(self, model, masks: dict):
        self.masks = masks
        self._handles = []
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            module = modules[name]
            self._handles.append(module.weight.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype)))
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(mask)))
        self.apply(model)

    @staticmethod
    def _pre_hook(mask):
        def hook(module, inputs):
            with torch.no_grad():
                module.weight.mul_(mask.to(module.weight.device, module.weight.dtype))

        return hook

    def apply(self, model) -> None:
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, mask in self.masks.items():
                w = modules[name].weight
                w.mul_(mask.to(w.device, w.dtype))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


# -- options ---------------------------------------------------------------------------------------
@dataclass
class SparsifyOptions(FitOptions):
    """``pattern`` '2:4' (sparsity is then 0.5 by construction) or 'unstructured' (``sparsity`` of each
    eligible layer's smallest weights, default 0.5); ``finetune_epochs`` > 0 trains on ``data`` with the
    mask held fixed; ``exclude`` names layers to leave dense. Data, learning rate (default 0.01 SGD),
    batch size, seed and device: :class:`~edgecnn.train.FitOptions`."""

    pattern: Literal["2:4", "unstructured"] = "2:4"
    sparsity: float | None = bounded(None, 0, 1, lo_open=True, hi_open=True)
    finetune_epochs: int = bounded(0, 0, MAX_EPOCHS)
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.exclude, str):
            self.exclude = tuple(self.exclude)

    @property
    def resolved_sparsity(self) -> float:
        """The fraction of each layer's weights zeroed: 0.5 for 2:4, else ``sparsity`` (default 0.5)."""
        return 0.5 if self.pattern == "2:4" or self.sparsity is None else float(self.sparsity)

    def validate(self) -> None:
        if self.pattern not in PATTERNS:
            raise OptionError(
                f"Unknown sparsity pattern '{self.pattern}'.{suggest(self.pattern, PATTERNS)} "
                "Choose 2:4 or unstructured."
            )
        if self.pattern == "2:4" and self.sparsity not in (None, 0.5):
            raise OptionError(
                f"2:4 sparsity is 50 % by definition (2 of every 4 weights); drop --sparsity "
                f"{self.sparsity} or use --pattern unstructured."
            )
        if not 0.0 < self.resolved_sparsity < 1.0:
            raise OptionError(
                f"--sparsity must be between 0 and 1 (fraction of weights to zero), got {self.resolved_sparsity}."
            )
        self.check_finetune(self.finetune_epochs)
        if isinstance(self.exclude, str):
            raise OptionError(f"exclude must be a list of layer names, got the text {self.exclude!r}.")
        super().validate()


def check_mode(out, check: bool) -> None:
    """The rule between ``--out`` and ``--check``: sparsify writes to ``out``; a check writes nothing."""
    if check and out:
        raise OptionError("--check only verifies ARTIFACT; drop --out.")
    if not check and not out:
        raise OptionError("Missing option '--out' (or pass --check to verify ARTIFACT).")


# -- the stage -------------------------------------------------------------------------------------
def sparsify(src, out: str | os.PathLike, options: SparsifyOptions, *, progress: bool = True) -> Artifact:
    """The sparsify stage: zero weights of the torch artifact ``src`` as ``options`` say; write ``out``."""
    check_mode(out, check=False)
    options.validate()
    check_out(out, src)
    src = torch_artifact(src, why="sparsify the torch artifact it was exported from")
    model = load_torch_model(src)
    missing = unknown_layer(model, options.exclude)
    if missing:
        raise InvalidInput(f"--exclude '{missing[0]}': {src.model} has no such layer.{missing[1]}")
    chosen, skipped = eligible_layers(model, options.pattern, options.exclude)
    if not chosen:
        raise InvalidInput(
            f"No layer of {src.model} qualifies for {options.pattern} sparsity "
            f"({'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])}); nothing to do."
        )
    modules = dict(model.named_modules())
    masks = {
        n: (
            mask_2to4(modules[n].weight)
            if options.pattern == "2:4"
            else mask_magnitude(modules[n].weight, options.resolved_sparsity)
        )
        for n in chosen
    }
    val_set, top1 = None, {}
    if options.data is not None:
        val_set = options.dataset(src.input, "val", num_classes=src.num_classes)
        options.data.check_classes(
            val_set.classes, src.num_classes, who=src.model, fix="use the data the model was trained on"
        )
        top1["original"] = evaluate_module(model, val_set)["top1"]
    keeper = MaskKeeper(model, masks)
    history = ft = None
    try:
        if val_set is not None:
            top1["masked"] = evaluate_module(model, val_set)["top1"]
        if options.finetune_epochs > 0:
            train_set = options.dataset(src.input, "train", num_classes=src.num_classes, augment=True)
            ft = options.train_config(options.finetune_epochs)
            history = fit(model, train_set, val_set, ft, progress=progress)["history"]
            model.to("cpu")
        keeper.apply(model)
    finally:
        keeper.close()
    model.eval()
    if options.pattern == "2:4":
        bad = check_2to4(model, chosen)
        if bad:  # a bug, not a user error: the mask must hold by construction
            raise RuntimeError(f"2:4 pattern broken after sparsify: {bad[:3]}")
    if val_set is not None:
        top1["final"] = evaluate_module(model, val_set)["top1"]
    return _record(src, model, out, options, (chosen, skipped), top1, (ft, history))


def _record(
    src: Artifact,
    model,
    out,
    options: SparsifyOptions,
    layers: tuple[list[str], dict[str, str]],
    top1: dict,
    finetune: tuple,
) -> Artifact:
    """The sparsity report, the stage parameters and metrics, and the artifact."""
    chosen, skipped = layers
    ft, history = finetune
    modules = dict(model.named_modules())
    pattern = options.pattern
    total = sum(modules[n].weight.numel() for n in chosen)
    zeros = sum(int((modules[n].weight == 0).sum()) for n in chosen)
    all_weights = sum(m.weight.numel() for m in model.modules() if type(m).__name__ in ("Conv2d", "Linear"))
    report = {
        "pattern": pattern,
        "target_sparsity": options.resolved_sparsity,
        "group": [KEEP, GROUP] if pattern == "2:4" else None,
        "axis": "input channels (conv: for every k, r, s; linear: rows)" if pattern == "2:4" else None,
        "layers": layer_sparsity(model, chosen),
        "skipped": skipped,
        "sparse_weight_fraction": zeros / total if total else 0.0,
        "covered_weight_fraction": total / all_weights if all_weights else 0.0,
        "top1": top1 or None,
    }
    params = {
        "pattern": pattern,
        "sparsity": options.resolved_sparsity,
        "finetune_epochs": options.finetune_epochs,
        "data": options.data.describe("train") if options.data is not None else None,
        "exclude": list(options.exclude),
        "seed": options.seed,
        "finetune": options.training_record(ft, src.input["channels"]),
    }
    metrics = {"weight_sparsity": zeros / all_weights if all_weights else 0.0}
    if top1:
        metrics.update(top1=top1["final"], top1_original=top1["original"], eval_data=options.data.describe("val"))
    extra = {"sparsity": report}
    if history:
        extra["history"] = history
    return save_torch_artifact(
        model,
        out,
        name=src.model,
        input_spec=src.input,
        classes=src.classes,
        stage="sparsify",
        params=params,
        parent=src,
        metrics=metrics,
        structure=(src.manifest.get("architecture") or {}).get("structure"),
        extra=extra,
    )
