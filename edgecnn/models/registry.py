"""The model registry: one :class:`ModelSpec` per network, the single source of truth for building a
model and for everything that must agree with it (preprocessing, export shapes, calibration, pruning).

The registry holds the type and the table only; each family registers its networks from its own module
(:mod:`.lenet`, :mod:`.zoo`), and ``edgecnn.models`` imports those modules, so importing any part of the
package fills the table and no builder module is imported back from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..data.images import preprocess_contract
from ..errors import InvalidInput, UnknownModel, suggest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Everything edgecnn needs to know about one network.

    builder(num_classes, in_channels, input_size) -> nn.Module. Module names of torchvision networks are
    torchvision's, so torchvision state_dicts load unchanged.
    """

    name: str
    family: str
    builder: Callable
    default_input: tuple[int, int, int]  # C, H, W
    min_input: int  # smallest square side the architecture accepts
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_ratio: float = 0.875  # resize side = crop / crop_ratio (256 -> 224)
    classifier: str = "fc"  # module path of the final classification layer
    first_conv: str = "conv1"  # module path of the stem convolution
    torchvision: str | None = None  # torchvision builder name, if any
    prune_ignore: tuple[str, ...] = ()  # module paths pruning must not touch (besides classifier)
    paper: str = ""
    notes: str = ""
    extra_kwargs: dict = field(default_factory=dict)
    source: dict | None = None  # how to rebuild a network that is not a zoo name (models.sources); None: the zoo

    def build(self, num_classes: int = 1000, in_channels: int | None = None, input_size: int | tuple | None = None):
        in_channels = self.default_input[0] if in_channels is None else int(in_channels)
        h, w = _size_pair(input_size) if input_size is not None else self.default_input[1:]
        if num_classes < 1:
            raise InvalidInput(f"num_classes must be >= 1, got {num_classes}.")
        if in_channels < 1:
            raise InvalidInput(f"in_channels must be >= 1, got {in_channels}.")
        if min(h, w) < self.min_input:
            raise InvalidInput(
                f"{self.name} needs inputs of at least {self.min_input}x{self.min_input}, got {h}x{w}; "
                f"pass --input-size {self.min_input} or larger."
            )
        return self.builder(num_classes=num_classes, in_channels=in_channels, input_size=(h, w), **self.extra_kwargs)

    def input_spec(
        self, in_channels: int | None = None, input_size: int | tuple | None = None, *, mean=None, std=None
    ) -> dict:
        """The preprocessing record stored in every manifest (how to feed the model, without code); ``mean`` /
        ``std`` (one value, or one per channel) replace the model's own."""
        c = self.default_input[0] if in_channels is None else int(in_channels)
        h, w = _size_pair(input_size) if input_size is not None else self.default_input[1:]
        mean, std = _channel_stats(tuple(mean or self.mean), c), _channel_stats(tuple(std or self.std), c)
        spec = {
            "channels": c,
            "height": h,
            "width": w,
            "layout": "NCHW",
            "dtype": "float32",
            "color": "gray" if c == 1 else "rgb",
            "scale": 1 / 255,
            "mean": mean,
            "std": std,
            "resize": int(round(min(h, w) / self.crop_ratio)),
            "crop": [h, w],
            "interpolation": "bilinear",
            "formula": "x = (pixel / 255 - mean) / std after resize (shorter side) + center crop; exact: preprocess",
        }
        spec["preprocess"] = preprocess_contract(spec)
        return spec


def _size_pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) != 2:
        raise InvalidInput(f"input size must be N or HxW, got {size}.")
    return size  # type: ignore[return-value]


def _channel_stats(values: tuple[float, ...], channels: int) -> list[float]:
    if len(values) == channels:
        return [float(v) for v in values]
    avg = sum(values) / len(values)
    return [round(float(avg), 6)] * channels


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(
            f"Unknown model '{name}'.{suggest(name, _REGISTRY)} Run 'edgecnn models' to list them."
        ) from None


def create_model(name: str, *, num_classes: int = 1000, in_channels: int | None = None, input_size=None):
    """Build a randomly initialised network from the registry."""
    return get_spec(name).build(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
