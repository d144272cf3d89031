"""Counting what pruning changes: output widths of the prunable layers, the rounding multiple that suits
them, and the MACs / parameters of a network and of its pruned variants.

Kept apart from :mod:`edgecnn.compress.prune` (which owns the options, the Torch-Pruning steps and the
stage) because these are plain measurements of a network that need no dependency graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models import count_macs, count_params

__all__ = ["width", "prunable_widths", "auto_round_to", "measure", "MacsCounter", "layer_report"]


def width(module) -> int | None:
    """Output channels of a Conv2d / features of a Linear; None for any other module."""
    if isinstance(module, nn.Conv2d):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    return None


def all_widths(model) -> dict[str, int]:
    """Output width of every Conv2d / Linear of ``model``, by module path."""
    return {n: w for n, m in model.named_modules() if (w := width(m)) is not None}


def prunable_widths(model, ignored: Sequence[str]) -> dict[str, int]:
    """Output widths of the Conv2d / Linear layers that are not ignored (nor inside an ignored module)."""
    prefixes = tuple(n + "." for n in ignored)
    out = {}
    for name, module in model.named_modules():
        w = width(module)
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


def measure(model, input_shape) -> tuple[int, int]:
    """(MACs, parameters) of ``model`` at batch 1."""
    return count_macs(model, input_shape), count_params(model)


def layer_report(model, before: dict[str, int]) -> dict[str, list[int]]:
    """{layer: [width before, width after]} for every layer whose width changed."""
    after = all_widths(model)
    return {n: [before[n], after[n]] for n in before if n in after and after[n] != before[n]}


class MacsCounter:
    """MACs of pruned variants of one network without a traced forward pass.

    Pruning changes channel counts, never spatial sizes, so the output size of every Conv2d / Linear
    is recorded once; a variant's MACs are then a sum over its layers' current shapes. The counter is
    only used when it reproduces ``models.count_macs`` exactly on the unpruned network (the number
    written to the manifest is always ``count_macs``'s).
    """

    def __init__(self, model, input_shape):
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
