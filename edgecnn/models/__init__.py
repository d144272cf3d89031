"""Model zoo: registry, builders, weight loading, and torch artifacts (structure + safetensors)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

from ..artifact import Artifact, is_artifact, new_manifest, write_artifact
from ..errors import ArtifactError, InvalidInput, suggest
from . import lenet, zoo  # noqa: F401  (each registers its networks)
from .registry import ModelSpec, create_model, get_spec, list_models, register
from .sources import ModelSource, known_record
from .structure import apply_structure
from .weights import imagenet_state_dict, load_into, read_state_dict

__all__ = [
    "ModelSpec",
    "ModelSource",
    "spec_for",
    "spec_of",
    "create_model",
    "get_spec",
    "list_models",
    "register",
    "build_model",
    "load_torch_model",
    "save_torch_artifact",
    "count_params",
    "count_macs",
    "architecture_of",
    "torch_artifact",
    "unknown_layer",
]

log = logging.getLogger("edgecnn")


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions and matrix products)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


def spec_for(model) -> ModelSpec:
    """The ModelSpec of a model reference: a zoo name, torchvision:NAME, timm:NAME, FILE.py:fn or module:fn
    (a ModelSource or a ModelSpec is taken as it is)."""
    return model if isinstance(model, ModelSpec) else ModelSource.parse(model).spec()


def spec_of(arch: dict, where: str = "the artifact") -> ModelSpec:
    """The ModelSpec of a manifest's ``architecture`` record: its recorded source, else its zoo name."""
    if arch.get("source"):
        return ModelSource.from_record(arch["source"], where).spec()
    return get_spec(arch["name"])


def architecture_of(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size,
    structure: dict | None = None,
    source: dict | None = None,
) -> dict:
    """The manifest's ``architecture``: enough to rebuild the network (``source``: how, when it is not a zoo
    name; by default the source that ``name`` was resolved from in this process)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    arch = {
        "name": name,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "input_size": [int(h), int(w)],
        "structure": structure or None,
    }
    source = source or known_record(name)
    if source:
        arch["source"] = source
    return arch


def build_model(
    name,
    *,
    weights: str = "random",
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size=None,
    warn_random: bool = True,
):
    """Build ``name`` (a model reference or its ModelSpec) and load ``weights`` ('random', 'imagenet', a
    state_dict file or an artifact).

    Returns (model, info) where info records the weights source and anything adapted on load.
    With an artifact as weights and no explicit num_classes, its classes are kept.
    """
    spec = spec_for(name)
    name = spec.name
    info: dict = {"weights": weights}
    if weights == "random":
        if warn_random:
            warnings.warn(f"{name}: random weights - accuracy means nothing until the model is trained.", stacklevel=2)
        model = spec.build(num_classes=num_classes or 1000, in_channels=in_channels, input_size=input_size)
        return model, info
    if is_artifact(weights):
        art = Artifact.load(weights, formats=("torch",))
        if art.model != name:
            raise InvalidInput(
                f"Artifact '{weights}' holds {art.model}, not {name}; pass a {name} artifact or use MODEL {art.model}."
            )
        model = load_torch_model(art)
        info.update(parent=art, classes=art.classes)
        if num_classes is not None and num_classes != art.num_classes:
            fresh = spec.build(num_classes=num_classes, in_channels=art.input_shape[0], input_size=art.input_shape[1:])
            info["report"] = load_into(fresh, spec, model.state_dict(), source=f"artifact {weights}")
            model = fresh
            info.pop("classes")
        return model, info
    if weights == "imagenet":
        state, source = imagenet_state_dict(spec), "torchvision ImageNet weights"
        info["classes_hint"] = 1000
    else:
        p = Path(weights)
        state, source = read_state_dict(p), f"'{p}'"
    model = spec.build(
        num_classes=num_classes or _classes_in(state, spec) or 1000, in_channels=in_channels, input_size=input_size
    )
    info["report"] = load_into(model, spec, state, source=source)
    return model, info


def _classes_in(state: dict, spec: ModelSpec) -> int | None:
    w = state.get(f"{spec.classifier}.weight")
    return int(w.shape[0]) if w is not None else None


def torch_artifact(src, *, why: str, who: str = "") -> Artifact:
    """``src`` (an Artifact or its directory) as a torch artifact; another format fails with ``why`` (the fix).

    ``who`` names the role in the message (e.g. "The teacher ")."""
    if not isinstance(src, Artifact):
        return Artifact.load(src, formats=("torch",))
    if src.format != "torch":
        raise ArtifactError(f"{who}'{src.path}' is a {src.format} artifact; {why}.")
    return src


def unknown_layer(model, names) -> tuple[str, str] | None:
    """(name, ' Did you mean ...?') for the first of ``names`` that is not a module path of ``model``, else None."""
    modules = [n for n, _ in model.named_modules() if n]
    known = set(modules)
    for name in names:
        if name not in known:
            return name, suggest(name, modules)
    return None


def load_torch_model(artifact):
    """Rebuild the network of a torch artifact (including a pruned structure) and load its tensors."""
    artifact.verify()  # its files against the manifest's sha256 (hashed once per process)
    arch = artifact.manifest.get("architecture") or {}
    if "name" not in arch:
        raise ArtifactError(f"'{artifact.path}' has no architecture record; re-create the artifact.")
    spec = spec_of(arch, f"'{artifact.path}'")
    model = spec.build(num_classes=arch["num_classes"], in_channels=arch["in_channels"], input_size=arch["input_size"])
    if arch.get("structure"):
        apply_structure(model, arch["structure"])
    try:
        state = load_file(str(artifact.model_file))
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Cannot read {artifact.model_file}: {exc}; re-create the artifact.") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:3]
        raise ArtifactError(
            f"{artifact.model_file} does not match its manifest's architecture "
            f"({' '.join(first)[:300]}); re-create the artifact."
        ) from exc
    model.eval()
    return model


def save_torch_artifact(
    model,
    out,
    *,
    name: str,
    input_spec: dict,
    classes: list[str],
    stage: str,
    params: dict | None = None,
    parent=None,
    metrics: dict | None = None,
    structure: dict | None = None,
    precision: str = "fp32",
    extra: dict | None = None,
    source: dict | None = None,
):
    """Write ``model`` as a torch artifact: model.safetensors + manifest (architecture, structure, input);
    ``source``: the model source record (default: the one ``name`` was resolved from, if not a zoo name)."""
    if source is None and isinstance(parent, Artifact):  # a derived network keeps its parent's source
        parent_arch = parent.manifest.get("architecture") or {}
        source = parent_arch.get("source") if parent_arch.get("name") == name else None
    arch = architecture_of(
        name,
        num_classes=len(classes),
        in_channels=input_spec["channels"],
        input_size=(input_spec["height"], input_spec["width"]),
        structure=structure,
        source=source,
    )
    shape = (input_spec["channels"], input_spec["height"], input_spec["width"])
    measured = {"params": count_params(model), "macs": count_macs(model, shape)}
    measured.update(metrics or {})
    manifest = new_manifest(
        model=name,
        format="torch",
        file="model.safetensors",
        precision=precision,
        input=input_spec,
        classes=classes,
        stage=stage,
        params=params,
        parent=parent,
        architecture=arch,
        metrics=measured,
        extra=extra,
    )
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / "model.safetensors"), metadata={"edgecnn_model": name})

    return write_artifact(out, manifest, write)


def describe_models(names=None, *, input_size=None, in_channels=None, num_classes: int | None = None) -> list[dict]:
    """Parameters and MACs of each zoo model at the requested (or its default) input and class count
    (default: 10 for LeNet-5, as in the paper; 1000 - ImageNet - for the others).

    Models are built on torch's meta device: shapes only, no weights allocated or initialised and no
    arithmetic, so listing the whole zoo (VGG-19: 144 M parameters) takes a second instead of minutes."""
    rows = []
    for name in names or list_models():
        spec = spec_for(name)
        c = in_channels or spec.default_input[0]
        hw = tuple(input_size) if input_size else spec.default_input[1:]
        classes = num_classes or (10 if spec.family == "lenet" else 1000)
        with torch.device("meta"):
            model = spec.build(num_classes=classes, in_channels=c, input_size=hw)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "input": [c, *hw],
                "classes": classes,
                "min_input": spec.min_input,
                "params": count_params(model),
                "macs": count_macs(model, (c, *hw)),
                "paper": spec.paper,
            }
        )
    return rows
