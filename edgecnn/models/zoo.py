"""torchvision networks: AlexNet, VGG, GoogLeNet, ResNet, DenseNet.

Each builder calls torchvision's own constructor, so module names and parameter counts are
torchvision's and its state_dicts load unchanged. A non-RGB input replaces only the stem convolution
(same name, same hyper-parameters). All of these end in adaptive pooling, so the input size changes
nothing in the weights; ``min_input`` is the smallest square side a forward pass accepts (measured).
"""

from __future__ import annotations

from functools import partial

import torchvision
from torch import nn

from .registry import ModelSpec, register


def _get(obj: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        obj = getattr(obj, part) if not part.isdigit() else obj[int(part)]  # type: ignore[index]
    return obj


def _set(obj: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, last = path.rpartition(".")
    parent = _get(obj, parent_path) if parent_path else obj
    if last.isdigit():
        parent[int(last)] = module  # type: ignore[index]
    else:
        setattr(parent, last, module)


def replace_stem(model: nn.Module, first_conv: str, in_channels: int) -> nn.Module:
    conv = _get(model, first_conv)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{first_conv} is {type(conv).__name__}, expected Conv2d")
    if conv.in_channels == in_channels:
        return model
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    _set(model, first_conv, new)
    return model


def _tv_builder(tv_name: str, first_conv: str, extra: dict, *, num_classes: int, in_channels: int, input_size):
    model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **extra)
    return replace_stem(model, first_conv, in_channels)


def _register_tv(
    name: str,
    family: str,
    min_input: int,
    classifier: str,
    first_conv: str,
    paper: str,
    extra: dict | None = None,
    prune_ignore: tuple[str, ...] = (),
    notes: str = "",
) -> None:
    extra = dict(extra or {})
    register(
        ModelSpec(
            name=name,
            family=family,
            builder=partial(_tv_builder, name, first_conv, extra),
            default_input=(3, 224, 224),
            min_input=min_input,
            classifier=classifier,
            first_conv=first_conv,
            torchvision=name,
            prune_ignore=prune_ignore,
            paper=paper,
            notes=notes,
        )
    )


_register_tv(
    "alexnet",
    "alexnet",
    63,
    "classifier.6",
    "features.0",
    "Krizhevsky, Sutskever, Hinton 2012 (torchvision: one-GPU variant, Krizhevsky 2014)",
)
for _depth in (11, 13, 16, 19):
    for _bn in ("", "_bn"):
        _register_tv(
            f"vgg{_depth}{_bn}",
            "vgg",
            32,
            "classifier.6",
            "features.0",
            "Simonyan, Zisserman 2015" + (" (+BatchNorm)" if _bn else ""),
        )
_register_tv(
    "googlenet",
    "googlenet",
    15,
    "fc",
    "conv1.conv",
    "Szegedy et al. 2015 (Inception v1, BN variant)",
    extra={"aux_logits": False, "transform_input": False, "init_weights": True},
    notes="inference configuration: auxiliary classifiers dropped, as torchvision's published weights",
)
for _depth in (18, 34, 50, 101, 152):
    _register_tv(f"resnet{_depth}", "resnet", 1, "fc", "conv1", "He, Zhang, Ren, Sun 2016")
for _depth in (121, 161, 169, 201):
    _register_tv(
        f"densenet{_depth}",
        "densenet",
        29,
        "classifier",
        "features.conv0",
        "Huang, Liu, van der Maaten, Weinberger 2017",
    )
