"""Loading weights into a zoo network: a local state_dict file, an edgecnn artifact, torchvision's
ImageNet weights, or 'random'. Files are never unpickled beyond tensors (``weights_only=True``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import timm
import torch
import torchvision
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import WeightsError
from .registry import ModelSpec
from .zoo import _get

log = logging.getLogger("edgecnn")

STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors or torch-saved file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(
            f"Weights file '{path}' does not exist; pass a .pth/.pt/.safetensors file, an artifact, "
            "'imagenet' or 'random'."
        )
    if path.is_dir():
        raise WeightsError(
            f"'{path}' is a directory but not an edgecnn artifact (no manifest.json); pass a weights "
            "file or an artifact."
        )
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(
                f"Cannot read weights file '{path}': not a valid safetensors file ({_short(exc)})."
            ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        pickled, detail = load_failure(exc)
        if pickled:
            raise WeightsError(
                f"Weights file '{path}' holds pickled Python objects{detail}, which edgecnn refuses to unpickle; "
                "save model.state_dict() (torch.save) or a .safetensors file instead."
            ) from exc
        raise WeightsError(
            f"Cannot read weights file '{path}': not a torch state_dict or a damaged file ({detail})."
        ) from exc
    return _unwrap(obj, path)


def load_failure(exc: Exception) -> tuple[bool, str]:
    """A failed ``torch.load(..., weights_only=True)`` in our words: (the file pickles Python objects that the
    safe loader refused, the informative detail). torch's own preamble is never passed on: it advises
    re-running with weights_only=False, i.e. executing the file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return True, f" ({found.group(1)})"
    if "WeightsUnpickler error:" in text:
        rest = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
        if rest:
            return False, rest[0][:200]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not re.search(r"weights_only|Weights only load|torch\.load", ln)]
    return False, (useful[0][:200] if useful else type(exc).__name__ if not lines else "refused by the safe loader")


def _short(exc: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours parts of its messages
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"Weights file '{path}' is not a state_dict (a dict of tensors); save model.state_dict().")
    for key, value in obj.items():
        kind = "meta" if value.is_meta else None if value.layout == torch.strided else "sparse"
        if kind:
            raise WeightsError(
                f"Weights file '{path}' holds a {kind} tensor ({key}); edgecnn loads dense tensors with their "
                "data - save model.state_dict() of a model whose weights are materialised and dense."
            )
    # DDP / torch.compile prefixes
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def _hf_cache() -> Path:
    """Hugging Face's hub cache as the environment says now ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def _timm_repo(spec: ModelSpec) -> str:
    cfg = timm.get_pretrained_cfg((spec.source or {}).get("ref", ""))
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        raise WeightsError(
            f"{spec.name} has no published weights on the Hugging Face hub; pass --weights FILE, an artifact, or "
            "'random' and train it."
        )
    return repo


def imagenet_cache_file(spec: ModelSpec) -> tuple[Path, str]:
    """(path in torch hub's checkpoint cache, download URL) of ``spec``'s published ImageNet weights; for a timm
    model, (the file in Hugging Face's hub cache - or where it would be -, the hub repository)."""
    if spec.family == "timm":
        repo, cache = _timm_repo(spec), _hf_cache()
        for name in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, name, cache_dir=cache)
            if isinstance(hit, str):
                return Path(hit), f"https://huggingface.co/{repo}"
        return cache / f"models--{repo.replace('/', '--')}" / "model.safetensors", f"https://huggingface.co/{repo}"
    if spec.torchvision is None:
        raise WeightsError(
            f"{spec.name} has no published ImageNet weights; pass --weights FILE, an artifact, or "
            "'random' and train it."
        )
    url = torchvision.models.get_model_weights(spec.torchvision).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def imagenet_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """torchvision's published ImageNet weights through torch hub's cache ($TORCH_HOME/hub/checkpoints).

    The file is downloaded there (hash-checked, as torchvision does) when missing, and read with
    ``weights_only=True`` - torch hub's own loader would unpickle whatever file sits in the cache."""
    cached, url = imagenet_cache_file(spec)
    if spec.family == "timm":
        return read_state_dict(cached if cached.is_file() else _download_timm(spec))
    if not cached.is_file():
        match = torch.hub.HASH_REGEX.search(cached.name)
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(
                url, str(cached), hash_prefix=match.group(1) if match else None, progress=True
            )
        except Exception as exc:  # URLError, socket errors, HTTP errors, hash mismatch
            raise WeightsError(
                f"Could not download ImageNet weights for {spec.name} ({_short(exc)}). If this machine is offline, "
                f"copy {cached.name} (from {url}) to {cached}, or pass --weights FILE.pth."
            ) from exc
    return read_state_dict(cached)


def _download_timm(spec: ModelSpec) -> Path:
    """timm's published weights through Hugging Face's hub cache; offline: the same clear error as torchvision's."""
    repo, cache = _timm_repo(spec), _hf_cache()
    try:
        return Path(hf_hub_download(repo, "model.safetensors", cache_dir=cache))
    except Exception as exc:  # offline, proxy, HTTP errors, a repository without that file
        raise WeightsError(
            f"Could not download ImageNet weights for {spec.name} ({_short(exc)}). If this machine is offline, run "
            f"'huggingface-cli download {repo}' on one that is not and copy its cache to {cache}, or pass "
            "--weights FILE.safetensors."
        ) from exc


def adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt an RGB stem convolution to another channel count (timm's rule: sum for 1, tile otherwise)."""
    src = weight.shape[1]
    if src == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // src)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (src / in_channels)


def load_into(model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor], *, source: str) -> dict:
    """Load ``state`` into ``model``. A classifier whose class count differs is re-initialised (transfer
    learning) and an RGB stem is adapted to the model's channels; any other mismatch is an error that
    lists the first offending keys. Returns a report of what was adapted."""
    own = model.state_dict()
    report: dict = {"source": source, "reinitialised": [], "adapted": [], "ignored": []}
    state = dict(state)
    # torchvision GoogLeNet checkpoints made without weights= carry auxiliary classifiers we do not build.
    aux = [k for k in state if k.startswith(("aux1.", "aux2.")) and k not in own]
    for k in aux:
        del state[k]
    if aux:
        report["ignored"].append(f"{len(aux)} auxiliary-classifier tensors (aux1/aux2)")
    stem_w = f"{spec.first_conv}.weight"
    if (
        stem_w in state
        and stem_w in own
        and state[stem_w].shape != own[stem_w].shape
        and state[stem_w].shape[0] == own[stem_w].shape[0]
        and state[stem_w].shape[2:] == own[stem_w].shape[2:]
    ):
        state[stem_w] = adapt_stem(state[stem_w], own[stem_w].shape[1])
        report["adapted"].append(f"{stem_w}: {state[stem_w].shape[1]} input channels from the file's 3")
    head = spec.classifier + "."
    head_keys = [k for k in own if k.startswith(head)]
    head_mismatch = [k for k in head_keys if k in state and state[k].shape != own[k].shape]
    if head_mismatch:
        for k in head_keys:
            state.pop(k, None)
        report["reinitialised"].append(
            f"{spec.classifier} (classifier re-initialised for {_out_features(model, spec)} classes)"
        )
    missing = [k for k in own if k not in state and not (head_mismatch and k.startswith(head))]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:5])}")
        raise WeightsError(
            f"Weights from {source} do not fit {spec.name} - {' | '.join(parts)}. "
            "Check the model name, --num-classes and --in-channels, or pass weights saved from this architecture."
        )
    model.load_state_dict(state, strict=not head_mismatch)
    return report


def _out_features(model: nn.Module, spec: ModelSpec) -> int:
    head = _get(model, spec.classifier)
    return int(getattr(head, "out_features", getattr(head, "out_channels", 0)))
