"""Pruned networks as data: per-layer channel counts recorded in the manifest, rebuilt on load.

A structurally pruned network no longer matches its constructor. Instead of pickling the module we
store, for every Conv2d / BatchNorm2d / Linear whose shape differs from the freshly built network, its
new dimensions; :func:`apply_structure` resizes those layers in a fresh model so that the saved
safetensors load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ArtifactError

_DIMS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}


def _dims(module: nn.Module) -> dict | None:
    for cls, attrs in _DIMS.items():
        if type(module) is cls:
            return {"type": cls.__name__, **{a: int(getattr(module, a)) for a in attrs}}
    return None


def describe_structure(model: nn.Module, reference: nn.Module) -> dict:
    """Layers of ``model`` whose dimensions differ from ``reference`` (the unpruned build)."""
    ref = dict(reference.named_modules())
    changed = {}
    for name, module in model.named_modules():
        d = _dims(module)
        if d is None:
            continue
        r = _dims(ref[name]) if name in ref else None
        if r != d:
            changed[name] = d
    return changed


def apply_structure(model: nn.Module, structure: dict) -> nn.Module:
    """Resize the layers named in ``structure`` in place (weights are left uninitialised)."""
    modules = dict(model.named_modules())
    for name, dims in structure.items():
        module = modules.get(name)
        if module is None or type(module).__name__ != dims.get("type"):
            raise ArtifactError(
                f"Pruned structure names layer '{name}' ({dims.get('type')}) that this network does not have; "
                "the artifact does not belong to this model - re-create it."
            )
        if isinstance(module, nn.Conv2d):
            module.in_channels, module.out_channels = dims["in_channels"], dims["out_channels"]
            module.groups = dims["groups"]
            kh, kw = module.kernel_size
            module.weight = nn.Parameter(
                torch.empty(dims["out_channels"], dims["in_channels"] // dims["groups"], kh, kw)
            )
            if module.bias is not None:
                module.bias = nn.Parameter(torch.empty(dims["out_channels"]))
        elif isinstance(module, nn.BatchNorm2d):
            n = dims["num_features"]
            module.num_features = n
            if module.affine:
                module.weight = nn.Parameter(torch.ones(n))
                module.bias = nn.Parameter(torch.zeros(n))
            if module.track_running_stats:
                module.running_mean = torch.zeros(n)
                module.running_var = torch.ones(n)
        elif isinstance(module, nn.Linear):
            module.in_features, module.out_features = dims["in_features"], dims["out_features"]
            module.weight = nn.Parameter(torch.empty(dims["out_features"], dims["in_features"]))
            if module.bias is not None:
                module.bias = nn.Parameter(torch.empty(dims["out_features"]))
    return model
