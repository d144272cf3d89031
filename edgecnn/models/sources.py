"""Where a network comes from: the zoo, torchvision or timm by name, a user's factory, or a module in memory.

``ModelSource.parse(text)`` is the one place a model reference is read:

* ``resnet18`` - a zoo name (:mod:`edgecnn.models.registry`);
* ``torchvision:NAME`` - any classification model of ``torchvision.models.list_models(module=torchvision.models)``;
* ``timm:NAME`` - a timm architecture (``timm.create_model(NAME, pretrained=False)``; weights come separately);
* ``path/to/file.py:factory`` or ``package.module:factory`` - a callable returning an ``nn.Module``, called with
  ``num_classes=`` (and ``in_channels=`` / ``in_chans=``) when it takes them. A YAML model card beside the file
  (``file.card.yaml`` or ``file.yaml``) may give its input (``input-size``, ``in-channels``, ``mean``, ``std``,
  ``crop-ratio``), ``kwargs`` for the factory, its ``classifier`` and layers pruning must leave whole (``ignore``).

Every source gives a :class:`~edgecnn.models.registry.ModelSpec` (:meth:`ModelSource.spec`), so training,
weights, pruning and export treat them alike. The manifest records :meth:`ModelSource.record` (kind, reference,
factory, kwargs, the sha256 of a factory's file); :meth:`ModelSource.from_record` rebuilds the source from it and
refuses a factory file that changed since.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import uuid
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from ..errors import ArtifactError, InvalidInput, UnknownModel, suggest
from ..limits import MAX_CHANNELS, MAX_INPUT_SIZE
from ..options import Options, bounded, read_yaml_mapping
from .registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, get_spec, list_models
from .zoo import replace_stem

KINDS = ("zoo", "torchvision", "timm", "file", "module", "object")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_PROBE_CLASSES = 997  # an unusual class count, so the classifier is the layer with this many outputs


def torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


@dataclass
class ModelCard(Options):
    """A small YAML file beside a factory: how to feed the network and what its factory needs."""

    input_size: int = bounded(224, 1, MAX_INPUT_SIZE)
    in_channels: int = bounded(3, 1, MAX_CHANNELS)
    mean: tuple[float, ...] | None = bounded(None, -1e3, 1e3)
    std: tuple[float, ...] | None = bounded(None, 0, 1e3, lo_open=True)
    crop_ratio: float = bounded(0.875, 0, 1, lo_open=True)
    classifier: str | None = None
    first_conv: str | None = None
    ignore: tuple[str, ...] = ()
    kwargs: dict = field(default_factory=dict)
    ERROR = InvalidInput


@dataclass(frozen=True)
class ModelSource:
    """A parsed model reference (see the module docstring). ``ref`` is the name (zoo, torchvision, timm), the
    absolute path of a factory file, a dotted module, or ``module:Class`` of a network given in memory."""

    kind: str
    ref: str
    factory: str = ""
    kwargs: tuple = ()  # sorted (key, value) pairs passed to the factory
    sha256: str | None = None
    session: str = ""  # from_module: the in-process template it was registered under

    # -- reading ----------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text) -> ModelSource:
        """The source ``text`` names; an unknown name or a missing file fails with one line and the fix."""
        if isinstance(text, ModelSource):
            return text
        text = str(text).strip()
        if text.startswith("torchvision:"):
            return cls("torchvision", _known(text[12:], torchvision_names(), "torchvision"))
        if text.startswith("timm:"):
            return cls("timm", _known(text[5:], timm.list_models(), "timm"))
        if ":" in text:
            left, _, fn = text.rpartition(":")
            if not _IDENT.fullmatch(fn):
                raise InvalidInput(f"'{text}': '{fn}' is not a Python name; write FILE.py:FACTORY or MODULE:FACTORY.")
            if left.endswith(".py") or "/" in left or "\\" in left:
                path = Path(left).expanduser()
                if not path.is_file():
                    raise InvalidInput(
                        f"Model file '{left}' does not exist; pass path/to/file.py:{fn} (a Python file whose {fn}() "
                        "returns an nn.Module)."
                    )
                path = path.resolve()
                return _with_card(cls("file", str(path), fn, sha256=_sha256(path)))
            if _DOTTED.fullmatch(left):
                module = _import_module(left)
                return _with_card(cls("module", left, fn, sha256=_module_sha(module)))
            raise InvalidInput(f"'{text}' is not a model reference; write FILE.py:FACTORY or package.module:FACTORY.")
        return cls("zoo", _zoo_name(text))

    @classmethod
    def from_record(cls, record: dict, where: str = "the artifact") -> ModelSource:
        """The source a manifest recorded; a factory file that is gone or changed is refused (one line)."""
        kind = record.get("kind")
        if kind == "onnx-import":
            raise ArtifactError(
                f"{where} was imported from the ONNX file {record.get('file')}: there is no torch network to rebuild; "
                "quantize, eval, bench, check, deploy and sweep --precision take it; prune and distill need torch."
            )
        if kind not in KINDS:
            raise ArtifactError(f"{where} records a model source of unknown kind {kind!r}; re-create it.")
        src = cls(
            kind,
            str(record.get("ref", "")),
            str(record.get("factory") or ""),
            tuple(sorted((record.get("kwargs") or {}).items())),
            record.get("sha256"),
            str(record.get("session") or ""),
        )
        if kind in ("file", "module"):
            path = Path(src.ref) if kind == "file" else _module_file(_import_module(src.ref, ArtifactError))
            if path is None or not path.is_file():
                raise ArtifactError(
                    f"The factory file of {where} ({src.ref}) no longer exists; restore it to rebuild the network."
                )
            now = _sha256(path)
            if src.sha256 and now != src.sha256:
                raise ArtifactError(
                    f"The factory file {path} changed since {where} was made (sha256 {now[:12]}..., recorded "
                    f"{src.sha256[:12]}...); restore that version of the file or re-create the artifact."
                )
        return src

    # -- writing ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The artifact's ``model``: what the user would type, without a machine-specific folder."""
        if self.kind in ("torchvision", "timm"):
            return f"{self.kind}:{self.ref}"
        if self.kind == "file":
            return f"{Path(self.ref).name}:{self.factory}"
        if self.kind == "module":
            return f"{self.ref}:{self.factory}"
        if self.kind == "zoo":
            return self.ref
        return f"module:{self.ref.rpartition(':')[2]}"  # from_module: the class name

    def record(self) -> dict | None:
        """What the manifest keeps to rebuild the network (None for a zoo name: the name is the reference)."""
        if self.kind == "zoo":
            return None
        rec = {"kind": self.kind, "ref": self.ref}
        if self.factory:
            rec["factory"] = self.factory
        rec["kwargs"] = dict(self.kwargs)
        if self.sha256:
            rec["sha256"] = self.sha256
        if self.session:
            rec["session"] = self.session
        rec["version"] = {"torchvision": torchvision.__version__, "timm": timm.__version__}.get(self.kind)
        return rec

    # -- building ---------------------------------------------------------------------------------------
    def spec(self) -> ModelSpec:
        """The ModelSpec of this source (built once per process)."""
        if self.kind == "zoo":
            return get_spec(self.ref)
        key = repr(self)  # kwargs may hold lists: the text is the key
        if key not in _SPECS:
            _SPECS[key] = _SPEC_MAKERS[self.kind](self)
            _BY_NAME[self.name] = self.record()
        return _SPECS[key]


_SPECS: dict[str, ModelSpec] = {}
_BY_NAME: dict[str, dict | None] = {}
_MODULES: dict[tuple[str, str], object] = {}
_TEMPLATES: dict[str, nn.Module] = {}


def known_record(name: str) -> dict | None:
    """The source record of a network named ``name`` that was resolved in this process (None: a zoo name)."""
    return _BY_NAME.get(name)


def _known(name: str, names: list[str], lib: str) -> str:
    if name in names:
        return name
    close = _close(name, names)
    hint = f" Did you mean {', '.join(f'{lib}:{n}' for n in close)}?" if close else ""
    listing = "torchvision.models.list_models()" if lib == "torchvision" else "timm.list_models()"
    raise UnknownModel(f"Unknown {lib} model '{name}'.{hint} See {listing} for the names.")


def _close(name: str, names: list[str]) -> list[str]:
    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def _zoo_name(text: str) -> str:
    if text in list_models():
        return text
    tv = torchvision_names()
    if text in tv:
        raise UnknownModel(
            f"Unknown model '{text}'. Did you mean 'torchvision:{text}'? The zoo has {', '.join(list_models()[:4])}, "
            "...; torchvision:NAME and timm:NAME take any of those libraries' classifiers."
        )
    return get_spec(text).name  # raises UnknownModel with the nearest zoo name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _module_file(module) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file) if file else None


def _module_sha(module) -> str | None:
    path = _module_file(module)
    return _sha256(path) if path is not None and path.is_file() else None


def _import_module(name: str, error=InvalidInput):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything while importing
        raise error(f"Cannot import module '{name}' ({type(exc).__name__}: {_first_line(exc)}).") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _load_file(path: str, sha: str | None):
    """Import a factory file once per (path, sha256); its folder is importable while it runs."""
    key = (path, sha or "")
    if key not in _MODULES:
        p = Path(path)
        stem = re.sub(r"\W", "_", p.stem)
        mod_name = f"edgecnn_user_{stem}_{(sha or uuid.uuid4().hex)[:10]}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, p)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        sys.path.insert(0, str(p.parent))
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file
            sys.modules.pop(mod_name, None)
            raise InvalidInput(
                f"Cannot import '{p}' ({type(exc).__name__}: {_first_line(exc)}); fix the file."
            ) from None
        finally:
            sys.path.remove(str(p.parent))
        _MODULES[key] = module
    return _MODULES[key]


def _factory(src: ModelSource):
    module = _load_file(src.ref, src.sha256) if src.kind == "file" else _import_module(src.ref)
    fn = getattr(module, src.factory, None)
    if fn is None or not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise InvalidInput(f"'{src.name}': {src.ref} has no callable '{src.factory}'.{suggest(src.factory, names)}")
    return fn


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _call(src: ModelSource, fn, kwargs: dict) -> nn.Module:
    try:
        net = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory
        raise InvalidInput(
            f"The factory {src.name} raised {type(exc).__name__}: {_first_line(exc)}; fix the factory or its kwargs."
        ) from None
    if not isinstance(net, nn.Module):
        raise InvalidInput(
            f"The factory {src.name} returned {type(net).__name__}, not a torch.nn.Module; return the network."
        )
    return net


def _build_factory(src: ModelSource, *, num_classes: int, in_channels: int, input_size, first_conv: str | None):
    fn = _factory(src)
    kwargs = dict(src.kwargs)
    if _accepts(fn, "num_classes"):
        kwargs["num_classes"] = num_classes
    stem_arg = next((a for a in ("in_channels", "in_chans") if _accepts(fn, a)), None)
    if stem_arg:
        kwargs[stem_arg] = in_channels
    net = _call(src, fn, kwargs)
    if not stem_arg and first_conv and net.get_submodule(first_conv).in_channels != in_channels:
        replace_stem(net, first_conv, in_channels)
    return net


def _build_object(src: ModelSource, *, num_classes: int, in_channels: int, input_size, first_conv: str | None):
    template = _TEMPLATES.get(src.session)
    if template is not None:
        return copy.deepcopy(template)
    module_name, _, qualname = src.ref.partition(":")
    cls = _import_module(module_name, ArtifactError) if module_name != "__main__" else None
    for part in qualname.split(".") if cls is not None else ():
        cls = getattr(cls, part, None)
    if cls is None:
        raise ArtifactError(
            f"This artifact holds a network given to edgecnn.from_module ({src.ref}), which cannot be rebuilt "
            "outside the process that made it; pass factory='file.py:build' to from_module, or use the artifact "
            "in that process."
        )
    return _call(ModelSource("object", src.ref), cls, dict(src.kwargs))


def _build_tv(name: str, *, num_classes: int, in_channels: int, input_size, first_conv: str):
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return replace_stem(net, first_conv, in_channels)


def _build_timm(name: str, *, num_classes: int, in_channels: int, input_size):
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def _layers(net: nn.Module, n_out: int | None) -> tuple[str | None, str | None]:
    """(classifier, first convolution) module paths: the last Linear / Conv2d with ``n_out`` outputs (else the
    last one), and the first Conv2d."""
    heads = [
        (name, getattr(m, "out_features", getattr(m, "out_channels", None)))
        for name, m in net.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    matching = [name for name, out in heads if out == n_out]
    classifier = matching[-1] if matching else (heads[-1][0] if heads else None)
    return classifier, (convs[0] if convs else None)


def _meta_layers(build) -> tuple[str | None, str | None]:
    with torch.device("meta"):
        net = build(num_classes=_PROBE_CLASSES)
    return _layers(net, _PROBE_CLASSES)


def _spec_tv(src: ModelSource) -> ModelSpec:
    build = partial(torchvision.models.get_model, src.ref, weights=None)
    classifier, first_conv = _meta_layers(build)
    return ModelSpec(
        name=src.name,
        family="torchvision",
        builder=partial(_build_tv, src.ref, first_conv=first_conv),
        default_input=(3, 224, 224),
        min_input=1,
        classifier=classifier,
        first_conv=first_conv,
        torchvision=src.ref,
        paper=f"torchvision.models.{src.ref}",
        source=src.record(),
    )


def _spec_timm(src: ModelSource) -> ModelSpec:
    cfg = timm.get_pretrained_cfg(src.ref)
    cfg = cfg.to_dict() if cfg is not None else {}
    classifier, first_conv = _meta_layers(partial(timm.create_model, src.ref, pretrained=False))
    return ModelSpec(
        name=src.name,
        family="timm",
        builder=partial(_build_timm, src.ref),
        default_input=tuple(cfg.get("input_size") or (3, 224, 224)),
        min_input=1,
        mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
        std=tuple(cfg.get("std") or IMAGENET_STD),
        crop_ratio=float(cfg.get("crop_pct") or 0.875),
        classifier=cfg.get("classifier") if isinstance(cfg.get("classifier"), str) else classifier,
        first_conv=cfg.get("first_conv") if isinstance(cfg.get("first_conv"), str) else first_conv,
        paper=f"timm {src.ref}",
        source=src.record(),
    )


def card_path(src: ModelSource) -> Path | None:
    """The model card beside a factory's file (``NAME.card.yaml``, else ``NAME.yaml``), if there is one."""
    if src.kind == "file":
        file = Path(src.ref)
    elif src.kind == "module":
        file = _module_file(_import_module(src.ref))
    else:
        return None
    if file is None:
        return None
    for cand in (file.with_suffix(".card.yaml"), file.with_suffix(".yaml")):
        if cand.is_file():
            return cand
    return None


def read_card(src: ModelSource) -> ModelCard:
    path = card_path(src)
    if path is None:
        return ModelCard()
    data = read_yaml_mapping(path, what="Model card", example="input-size: 32", error=InvalidInput)
    card = ModelCard.from_mapping(data, where=f"model card '{path}'")
    card.validate()
    return card


def _with_card(src: ModelSource) -> ModelSource:
    """``src`` with the factory kwargs of its model card (recorded in the manifest, so a rebuild needs no card)."""
    card = read_card(src)
    return replace(src, kwargs=tuple(sorted(card.kwargs.items()))) if card.kwargs else src


def _spec_factory(src: ModelSource) -> ModelSpec:
    card = read_card(src)
    fn = _factory(src)
    probe = {"num_classes": _PROBE_CLASSES} if _accepts(fn, "num_classes") else {}
    net = _call(src, fn, {**dict(src.kwargs), **probe})
    classifier, first_conv = _layers(net, _PROBE_CLASSES if probe else None)
    return _factory_spec(src, card, classifier, first_conv, _build_factory)


def _factory_spec(src, card: ModelCard, classifier, first_conv, builder) -> ModelSpec:
    c, side = card.in_channels, card.input_size
    return ModelSpec(
        name=src.name,
        family=src.kind,
        builder=partial(builder, src, first_conv=first_conv),
        default_input=(c, side, side),
        min_input=1,
        mean=tuple(card.mean) if card.mean else IMAGENET_MEAN,
        std=tuple(card.std) if card.std else IMAGENET_STD,
        crop_ratio=card.crop_ratio,
        classifier=card.classifier or classifier,
        first_conv=card.first_conv or first_conv,
        prune_ignore=tuple(card.ignore),
        paper=f"{src.name} (user factory)" if src.kind != "object" else f"{src.ref} (from_module)",
        source=src.record(),
    )


def _spec_object(src: ModelSource) -> ModelSpec:
    net = _build_object(src, num_classes=0, in_channels=0, input_size=None, first_conv=None)
    classifier, first_conv = _layers(net, None)
    return _factory_spec(src, ModelCard(), classifier, first_conv, _build_object)


_SPEC_MAKERS = {
    "torchvision": _spec_tv,
    "timm": _spec_timm,
    "file": _spec_factory,
    "module": _spec_factory,
    "object": _spec_object,
}


def register_module(net: nn.Module, kwargs: dict | None = None) -> ModelSource:
    """A source for a network given in memory (edgecnn.from_module): its class path, and a template copy
    kept in this process so that later stages can rebuild it (even after pruning)."""
    cls = type(net)
    token = uuid.uuid4().hex
    _TEMPLATES[token] = copy.deepcopy(net).to("cpu").eval()
    return ModelSource(
        "object", f"{cls.__module__}:{cls.__qualname__}", kwargs=tuple(sorted((kwargs or {}).items())), session=token
    )


def check_input(spec: ModelSpec, channels: int, size, num_classes: int | None) -> None:
    """Fail with one line when ``spec``'s network cannot take ``channels`` x ``size`` inputs or does not give
    ``num_classes`` outputs (zoo: its measured minimum side; other sources: one forward pass on zeros)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if spec.source is None:
        if min(h, w) < spec.min_input:
            spec.build(num_classes=num_classes or 10, in_channels=channels, input_size=(h, w))  # the clear message
        return
    net = spec.build(num_classes=num_classes or 10, in_channels=channels, input_size=(h, w)).eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, channels, h, w))
    except Exception as exc:  # noqa: BLE001 - shape errors surface as RuntimeError, ValueError, AssertionError ...
        raise InvalidInput(
            f"{spec.name} cannot take {channels}x{h}x{w} inputs ({type(exc).__name__}: {_first_line(exc)[:200]}); "
            "pass an --input-size / --in-channels the network accepts (or set them in its model card)."
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape is None or len(shape) != 2 or (num_classes is not None and shape[1] != num_classes):
        raise InvalidInput(
            f"{spec.name} returns {shape if shape else type(out).__name__} for one image, not (1, {num_classes}) "
            f"logits for the {num_classes or 'N'} classes; return logits, and give its factory a num_classes parameter."
        )
