"""Where a compression chain starts: an artifact, or a model reference (a zoo name, torchvision:/timm:NAME,
FILE.py:factory, module:factory) with its weights saved as one.

Shared by ``edgecnn compress`` and ``edgecnn sweep``: both need the original as a torch (or FP32 onnx)
artifact whose lineage every later step records.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torchvision

from ..artifact import Artifact, is_artifact
from ..errors import InvalidInput, OptionError, WeightsError
from ..models import build_model, save_torch_artifact, spec_for
from ..models.sources import check_input
from ..models.weights import imagenet_cache_file

log = logging.getLogger("edgecnn")


def load_original(
    source: str,
    out: Path,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size: int | None = None,
    formats: tuple[str, ...] = ("torch", "onnx"),
) -> tuple[Artifact, dict]:
    """(original artifact, what the report records about it). A model name is built with ``weights`` and
    saved to ``out``; without weights, ImageNet weights are used only when already in torch hub's cache."""
    if is_artifact(source):
        if weights:
            raise OptionError(
                "--weights is for a model name; an artifact already carries its weights - drop --weights."
            )
        art = Artifact.load(source, formats=formats)
        if art.precision != "fp32":
            raise InvalidInput(f"'{art.path}' is already {art.precision}; compress its FP32 original.")
        return art, {"source": "artifact", "path": str(art.path)}
    if Path(str(source)).exists():
        raise InvalidInput(
            f"'{source}' is neither a zoo model name nor an edgecnn artifact (no manifest.json); pass "
            "a model name with --weights FILE, or an artifact directory."
        )
    spec = spec_for(source)
    weights = weights or _cached_imagenet(spec)
    input_spec = spec.input_spec(in_channels=in_channels, input_size=input_size)
    if spec.source is not None:
        size = (input_spec["height"], input_spec["width"])
        check_input(spec, input_spec["channels"], size, num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, info = build_model(
            spec,
            weights=weights,
            num_classes=num_classes,
            in_channels=input_spec["channels"],
            input_size=(input_spec["height"], input_spec["width"]),
            warn_random=False,
        )
    if weights == "random":
        log.warning("%s: random weights - accuracy numbers mean nothing; size and speed do.", spec.name)
    classes = info.get("classes") or _class_names(net, spec, weights)
    art = save_torch_artifact(
        net,
        out,
        name=spec.name,
        input_spec=input_spec,
        classes=classes,
        stage="load",
        params={"weights": weights},
        parent=info.get("parent"),
        extra={"weights_report": info.get("report")},
        source=spec.source,
    )
    kind = (spec.source or {}).get("kind", "zoo")
    return art, {"source": kind, "model": spec.name, "weights": weights}


def _cached_imagenet(spec) -> str:
    """'imagenet' when the published weights are already in torch hub's cache; otherwise say what to pass."""
    where = ""
    if spec.torchvision is not None:
        cached, url = imagenet_cache_file(spec)
        if cached.is_file():
            return "imagenet"
        where = f"ImageNet weights are not in the torch cache ({cached}, from {url}); "
    raise WeightsError(
        f"{spec.name} needs weights: {where}pass --weights FILE (a state_dict .pth/.safetensors), "
        "--weights ARTIFACT (from 'edgecnn train'), --weights imagenet (download), or --weights "
        "random (size/speed only, accuracy means nothing)."
    )


def _class_names(net, spec, weights: str) -> list[str]:
    head = net.get_submodule(spec.classifier)
    n = int(getattr(head, "out_features", getattr(head, "out_channels", 0)))
    if weights == "imagenet" and n == 1000 and spec.torchvision is not None:
        meta = torchvision.models.get_model_weights(spec.torchvision).DEFAULT.meta
        if len(meta.get("categories", [])) == n:
            return list(meta["categories"])
    return [str(i) for i in range(n)]
