"""A network in memory as an artifact: ``edgecnn.from_module(net, input=..., classes=..., out=...)``.

The artifact is an ordinary torch artifact (safetensors + manifest), so ``prune``, ``quantize``, ``export_onnx``,
``check`` and ``deploy`` take it like any other. Its source is recorded as ``object`` with the class path; since
an object cannot be rebuilt from a name, a template copy of the network is kept for the rest of the process,
which is what later stages in the same notebook or script rebuild from. In another process the class is imported
and called with ``kwargs`` (when it is importable, i.e. not defined in ``__main__``); or pass
``factory='file.py:build'`` and the artifact records that factory instead (its file's sha256 included), so any
process - the command line included - rebuilds it. A network that is already pruned or otherwise reshaped is
saved with its structure against a fresh build, as pruning does.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..artifact import Artifact
from ..errors import InvalidInput
from . import load_torch_model, save_torch_artifact
from .sources import ModelSource, check_input, register_module
from .structure import describe_structure


def _shape(input) -> tuple[int, int, int]:
    if isinstance(input, int):
        return (3, input, input)
    shape = tuple(int(v) for v in input)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 2:
        shape = (3, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidInput(f"input={input!r}: give the input as (channels, height, width), e.g. (3, 224, 224).")
    return shape  # type: ignore[return-value]


def from_module(
    net: nn.Module,
    *,
    input,
    classes,
    out: str | os.PathLike,
    mean=None,
    std=None,
    factory: str | None = None,
    kwargs: dict | None = None,
    metrics: dict | None = None,
) -> Artifact:
    """Save ``net`` (an ``nn.Module`` giving N x classes logits) as a torch artifact in ``out`` and return it.

    ``input``: (C, H, W) (or a side: 3 x side x side); ``classes``: their names, or how many; ``mean`` / ``std``:
    the input normalisation (default ImageNet's; one value or one per channel). ``factory``: a reference
    (``file.py:fn`` / ``module:fn``) that builds the same architecture, recorded instead of the class path;
    ``kwargs``: what the class (or factory) is called with to rebuild it."""
    if not isinstance(net, nn.Module):
        raise InvalidInput(f"from_module takes a torch.nn.Module, got {type(net).__name__}.")
    c, h, w = _shape(input)
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else [str(n) for n in classes]
    if not names:
        raise InvalidInput("classes: give the class names (or their number); got none.")
    net = net.to("cpu").eval()
    source = ModelSource.parse(factory) if factory else register_module(net, kwargs)
    spec = source.spec()
    check_input(spec, c, (h, w), len(names))
    fresh = spec.build(num_classes=len(names), in_channels=c, input_size=(h, w))
    structure = describe_structure(net, fresh)
    art = save_torch_artifact(
        net,
        out,
        name=spec.name,
        input_spec=spec.input_spec(in_channels=c, input_size=(h, w), mean=mean, std=std),
        classes=names,
        stage="from_module",
        params={"class": f"{type(net).__module__}:{type(net).__qualname__}", "factory": factory},
        metrics=metrics,
        structure=structure or None,
        source=spec.source,
    )
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((load_torch_model(art)(x) - net(x)).abs().max())
    if diff != 0.0:
        raise InvalidInput(
            f"{spec.name} rebuilt from '{art.path}' gives other logits than the network given (max |diff| {diff:.3g}); "
            "its forward depends on state outside its parameters and buffers - pass a factory that builds it."
        )
    art.update_metrics({"reload_max_abs_diff": diff})
    return art
