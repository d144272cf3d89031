"""Pruned networks as data: per-layer shapes recorded in the manifest, rebuilt on load.

A structurally pruned network no longer matches its constructor. Instead of pickling the module we store,
for every module whose own parameters, buffers or integer attributes differ from the freshly built network,
its type, the changed attributes and the shape of each of its own tensors; :func:`apply_structure` resizes
those modules in a fresh build so that the saved safetensors load strictly.

This is layer-type agnostic: a depthwise or grouped convolution (``groups``), BatchNorm and timm's
``BatchNormAct2d``, Linear, the 1x1 convolutions of a squeeze-excitation block, LayerNorm / GroupNorm are all
"a module with tensors and a few integer attributes". The record of a layer is
``{"type", "attrs": {name: int | [int]}, "params": {name: shape}, "buffers": {name: shape}}``; artifacts
written before this format (``{"type", "in_channels", ...}`` for Conv2d / BatchNorm2d / Linear) still load.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ArtifactError

_LEGACY = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}


def _int_attrs(module: nn.Module) -> dict:
    """The public integer (or tuple-of-integers) attributes of ``module``: channel counts, groups, sizes."""
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[key] = value
        elif isinstance(value, (tuple, list)) and value and all(type(v) is int for v in value):
            out[key] = list(value)
    return out


def _shapes(tensors) -> dict:
    return {name: list(t.shape) for name, t in tensors if t is not None}


def _layer(module: nn.Module) -> dict:
    return {
        "type": type(module).__name__,
        "attrs": _int_attrs(module),
        "params": _shapes(module.named_parameters(recurse=False)),
        "buffers": _shapes(module.named_buffers(recurse=False)),
    }


def describe_structure(model: nn.Module, reference: nn.Module) -> dict:
    """Modules of ``model`` whose tensors or integer attributes differ from ``reference`` (the unpruned build)."""
    ref = dict(reference.named_modules())
    changed = {}
    for name, module in model.named_modules():
        mine = _layer(module)
        other = _layer(ref[name]) if name in ref else None
        if other is not None and other["type"] != mine["type"]:
            raise ArtifactError(f"layer '{name}' is a {mine['type']} here but a {other['type']} in a fresh build")
        if other == mine:
            continue
        if other is None:
            raise ArtifactError(
                f"layer '{name}' ({mine['type']}) is not in a fresh build of the network, so a pruned structure "
                "cannot describe it; prune a network whose modules its factory builds"
            )
        attrs = {k: v for k, v in mine["attrs"].items() if other["attrs"].get(k) != v}
        lost = [b for b in mine["buffers"] if b in module._non_persistent_buffers_set]
        if lost and mine["buffers"] != other["buffers"]:
            raise ArtifactError(
                f"layer '{name}' ({mine['type']}) has non-persistent buffers {lost} whose shape changed; they are "
                "not saved with the weights, so the pruned network cannot be rebuilt - --ignore that layer"
            )
        changed[name] = {"type": mine["type"], "attrs": attrs, "params": mine["params"], "buffers": mine["buffers"]}
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
        if "params" in dims:
            _apply(module, dims)
        else:
            _apply_legacy(module, dims)
    return model


def _apply(module: nn.Module, dims: dict) -> None:
    for key, value in (dims.get("attrs") or {}).items():
        setattr(module, key, tuple(value) if isinstance(value, list) else int(value))
    own_params = dict(module.named_parameters(recurse=False))
    for pname, shape in dims["params"].items():
        old = own_params.get(pname)
        dtype = old.dtype if old is not None else torch.float32
        grad = old.requires_grad if old is not None else True
        setattr(module, pname, nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=grad))
    own_buffers = dict(module.named_buffers(recurse=False))
    for bname, shape in (dims.get("buffers") or {}).items():
        old = own_buffers.get(bname)
        dtype = old.dtype if old is not None else torch.float32
        persistent = bname not in module._non_persistent_buffers_set
        module.register_buffer(bname, torch.zeros(shape, dtype=dtype), persistent=persistent)


def _apply_legacy(module: nn.Module, dims: dict) -> None:
    """The record written before the generic format: Conv2d / BatchNorm2d / Linear channel counts."""
    if isinstance(module, nn.Conv2d):
        module.in_channels, module.out_channels = dims["in_channels"], dims["out_channels"]
        module.groups = dims["groups"]
        kh, kw = module.kernel_size
        module.weight = nn.Parameter(torch.empty(dims["out_channels"], dims["in_channels"] // dims["groups"], kh, kw))
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
