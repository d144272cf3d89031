"""Device profiles: what a deployment target can run, read from ``devices/*.yaml``.

A profile states the facts a build or a bundle depends on - the TensorRT versions the device ships
(per JetPack release), the GPU's compute capability, DLA cores, the precisions TensorRT can use
there, memory and a default builder workspace. Profiles are data, validated on load: an unknown key
or a wrong type is an error that names the file and the key, because a typo in a profile would
otherwise silently produce a wrong engine.

Profiles are looked up in ``$EDGECNN_DEVICES`` (a folder, optional), then in the ``devices/`` folder
shipped with edgecnn. ``--device`` also accepts a path to a YAML file written in the same schema.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from .errors import InvalidInput, OptionError, suggest
from .options import Options, bounded, read_yaml_mapping

Target = Literal["jetson", "gpu", "cpu"]
RuntimeName = Literal["tensorrt", "onnxruntime"]
TARGETS: tuple[str, ...] = typing.get_args(Target)
RUNTIMES: tuple[str, ...] = typing.get_args(RuntimeName)
PRECISIONS = ("fp32", "fp16", "int8")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "devices"
EXAMPLE = "devices/jetson-orin-nano.yaml"
#: the profile each target deploys to when no --device is given (THE place that says so)
DEFAULT_DEVICES = {"jetson": "jetson-orin-nano", "gpu": "x86-gpu", "cpu": "x86-cpu"}

#: a profile's name: it names the file, folders of bundles and appears in the bundle's scripts
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TRT_KEYS = ("min", "max", "default")
_SOFTWARE_KEYS = ("jetpack", "l4t", "tensorrt", "cuda", "cudnn", "onnxruntime")


class UnknownDevice(InvalidInput):
    """A device name with no profile."""


class ProfileError(InvalidInput):
    """A device profile file that is not a valid profile (names the file, the key and the fix)."""


def parse_version(text: str) -> tuple[int, int]:
    """'8.5' / '8.5.2.2' / '10.x' -> (major, minor); 'N.x' means any minor of N (minor = 999 as an upper bound)."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+|x))?(?:\.[0-9A-Za-z]+)*\s*", str(text))
    if not m:
        raise ValueError(f"not a version: {text!r}")
    minor = m.group(2)
    return int(m.group(1)), (999 if minor in (None, "x") else int(minor))


def version_floor(text: str) -> tuple[int, int]:
    """Like parse_version, but 'N.x' -> (N, 0): the lowest version the text allows."""
    major, minor = parse_version(text)
    return (major, 0) if minor == 999 else (major, minor)


@dataclass(frozen=True)
class DeviceProfile(Options):
    """One deployment target. See ``devices/*.yaml`` for the documented fields.

    Read with the shared options loader (:meth:`read`): unknown or missing keys and wrong types fail
    naming the file and the key, :meth:`validate` holds the rules that tie the fields together."""

    ERROR: ClassVar[type[Exception]] = ProfileError

    name: str
    description: str
    target: Target
    runtime: RuntimeName
    arch: str
    compute_capability: tuple[str, ...]
    dla_cores: int = bounded(dataclasses.MISSING, 0, 16)
    precisions: tuple[str, ...]
    memory_gb: float = bounded(dataclasses.MISSING, 0, 65_536, lo_open=True)
    tensorrt: dict | None  # required: null for an ONNX Runtime device
    software: tuple[dict, ...]
    gpu: str | None = None
    dla_version: str | None = None
    default_workspace_gb: float | None = bounded(None, 0, 1024, lo_open=True)
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [k for k in super().keys() if k != "path"]

    @classmethod
    def required_keys(cls) -> list[str]:
        return [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]

    @classmethod
    def read(cls, path: Path) -> DeviceProfile:
        """The profile in YAML file ``path``: the shared options loader checks keys and types, then
        :meth:`validate` the rules between fields. Keys are written as in the shipped files (snake_case)."""
        data = read_yaml_mapping(path, what="Device profile", example=EXAMPLE, error=ProfileError)
        where = f"Device profile {path}"
        known = cls.keys()
        unknown = [k for k in data if k not in known]
        if unknown:
            k = unknown[0]
            raise ProfileError(
                f"{where} has unknown key '{k}'.{suggest(str(k), known)} Allowed keys: {', '.join(known)}."
            )
        missing = [k for k in cls.required_keys() if k not in data]
        if missing:
            raise ProfileError(f"{where} lacks the required key '{missing[0]}'; add it.")
        profile = dataclasses.replace(cls.from_mapping(data, where=where, validate=False), path=Path(path))
        profile.validate()
        return profile

    def __post_init__(self) -> None:
        """One form for comparing and printing: capabilities, versions and texts as strings."""

        def texts(row):
            return {k: str(v) for k, v in row.items()} if isinstance(row, dict) else row

        for key, value in (
            ("compute_capability", tuple(str(c) for c in self.compute_capability)),
            ("tensorrt", texts(self.tensorrt)),
            ("software", tuple(texts(r) for r in self.software)),
            ("precisions", tuple(self.precisions)),
            ("notes", tuple(str(n) for n in self.notes)),
            ("sources", tuple(str(n) for n in self.sources)),
        ):
            object.__setattr__(self, key, value)

    def validate(self) -> None:
        """The rules between fields; ProfileError names the file, the key and the fix."""
        where = f"Device profile {self.path}"
        self._check_texts(where)
        if self.path is not None and self.name != self.path.stem:
            raise ProfileError(f"{where}: name '{self.name}' must match the file name '{self.path.stem}'.")
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise ProfileError(
                f"{where}: 'precisions' must list some of {', '.join(PRECISIONS)}, got {list(self.precisions)}."
            )
        if any(not re.fullmatch(r"\d+\.\d+", c) for c in self.compute_capability):
            raise ProfileError(
                f"{where}: 'compute_capability' entries look like \"8.7\", got {list(self.compute_capability)}."
            )
        if self.dla_cores and not self.dla_version:
            raise ProfileError(f'{where}: a device with DLA cores needs \'dla_version\' ("1.0" Xavier, "2.0" Orin).')
        if self.runtime == "tensorrt":
            self._check_tensorrt(where)
        elif self.tensorrt is not None:
            raise ProfileError(f"{where}: an onnxruntime device takes 'tensorrt: null'.")
        for row in self.software:
            if not isinstance(row, dict) or any(k not in _SOFTWARE_KEYS for k in row):
                raise ProfileError(
                    f"{where}: each 'software' entry is a mapping with keys among "
                    f"{', '.join(_SOFTWARE_KEYS)}; got {row!r}."
                )

    def _check_texts(self, where: str) -> None:
        """The name is a safe word; every text is one line of printable characters (a line break or an
        escape sequence in a profile would otherwise travel into scripts and terminals)."""
        if not PROFILE_NAME.fullmatch(self.name):
            raise ProfileError(
                f"{where}: 'name' {self.name!r:.80} may hold only letters, digits, '.', '_' and '-' "
                "(at most 64, starting with a letter or digit); rename the profile and its file."
            )
        for key, text in _texts(self.as_dict()):
            if not text.isprintable():
                raise ProfileError(
                    f"{where}: '{key}' holds a control character (a line break?) in {text!r:.80}; "
                    "write it as one line of plain text."
                )

    def _check_tensorrt(self, where: str) -> None:
        trt = self.tensorrt
        if not isinstance(trt, dict) or not self.compute_capability:
            raise ProfileError(
                f"{where}: a TensorRT device needs 'tensorrt: {{min, max, default}}' and 'compute_capability'."
            )
        if any(k not in _TRT_KEYS for k in trt) or any(k not in trt for k in _TRT_KEYS):
            raise ProfileError(
                f"{where}: 'tensorrt' takes exactly the keys min, max, default (got {', '.join(map(str, trt))})."
            )
        try:
            lo, hi, dv = version_floor(trt["min"]), parse_version(trt["max"]), version_floor(trt["default"])
        except ValueError as exc:
            raise ProfileError(f'{where}: {exc} in \'tensorrt\'; write versions as "8.5" or "10.x".') from None
        if not lo <= dv <= hi:
            raise ProfileError(
                f"{where}: tensorrt default {trt['default']} is outside min {trt['min']} .. max {trt['max']}."
            )

    # -- facts ---------------------------------------------------------------------------------
    @property
    def uses_tensorrt(self) -> bool:
        return self.runtime == "tensorrt"

    @property
    def has_dla(self) -> bool:
        return self.dla_cores > 0

    def supports(self, precision: str) -> bool:
        return precision in self.precisions

    @property
    def trt_min(self) -> tuple[int, int]:
        return version_floor(self.tensorrt["min"]) if self.tensorrt else (0, 0)

    @property
    def trt_max(self) -> tuple[int, int]:
        return parse_version(self.tensorrt["max"]) if self.tensorrt else (0, 0)

    @property
    def trt_default(self) -> str | None:
        return self.tensorrt["default"] if self.tensorrt else None

    def trt_in_range(self, version: str) -> bool:
        v = parse_version(version)
        v = (v[0], 0) if v[1] == 999 else v
        return self.tensorrt is not None and self.trt_min <= v <= self.trt_max

    @property
    def trt_range_text(self) -> str:
        return f"{self.tensorrt['min']}-{self.tensorrt['max']}" if self.tensorrt else "-"

    def software_for(self, trt_version: str) -> dict | None:
        """The software row (JetPack release) that ships ``trt_version`` (major.minor match)."""
        want = parse_version(trt_version)
        for row in self.software:
            if "tensorrt" in row:
                have = parse_version(row["tensorrt"])
                if have[0] == want[0] and (have[1] == want[1] or 999 in (have[1], want[1])):
                    return row
        return None

    @property
    def jetpack_text(self) -> str:
        rows = [r["jetpack"] for r in self.software if "jetpack" in r]
        return ", ".join(rows) if rows else "-"

    def check_dla_core(self, core: int | None) -> None:
        """Raise InvalidInput when ``core`` is not a DLA core of this device."""
        if core is None:
            return
        if not self.has_dla:
            raise InvalidInput(
                f"{self.name} has no DLA (deep learning accelerator); drop --dla-core, or pick a device "
                "with DLA cores (see 'edgecnn devices')."
            )
        if not 0 <= core < self.dla_cores:
            cores = "0" if self.dla_cores == 1 else f"0-{self.dla_cores - 1}"
            raise InvalidInput(
                f"{self.name} has {self.dla_cores} DLA core(s) (index {cores}); --dla-core {core} "
                f"does not exist - pass --dla-core {cores.split('-')[0]}."
            )

    def check_precision(self, precision: str) -> None:
        """Raise InvalidInput when this device cannot run ``precision``."""
        if precision not in PRECISIONS:
            raise InvalidInput(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        if self.supports(precision):
            return
        cc = f" (compute capability {', '.join(self.compute_capability)})" if self.compute_capability else ""
        others = " or ".join(p for p in self.precisions if p != precision)
        if precision == "int8":
            raise InvalidInput(
                f"{self.name}{cc} cannot run INT8 in {self.runtime}; deploy {others} instead "
                f"(e.g. --precision {self.precisions[-1]}), or pick a device with INT8 support."
            )
        raise InvalidInput(f"{self.name}{cc} does not run {precision.upper()} models; deploy {others} instead.")

    def summary(self) -> dict:
        """A JSON-able description (what 'edgecnn devices --json' writes)."""
        return {
            **self.as_dict(),
            "tensorrt": dict(self.tensorrt) if self.tensorrt else None,
            "software": [dict(r) for r in self.software],
            "path": str(self.path) if self.path else None,
        }


def _texts(value, key: str = ""):
    """(key, text) for every string inside ``value`` (mappings and sequences walked)."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(str(k), key or str(k))
            yield from _texts(v, key or str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _texts(v, key)


# -- loading -------------------------------------------------------------------------------------
def search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("EDGECNN_DEVICES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(BUILTIN_DIR)
    if not BUILTIN_DIR.is_dir():  # installed from a wheel: the profiles went to <prefix>/share
        dirs.append(Path(sys.prefix) / "share" / "edgecnn" / "devices")
    return dirs


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in search_dirs():
        if d.is_dir():
            for f in sorted([*d.glob("*.yaml"), *d.glob("*.yml")], key=lambda p: p.stem):
                found.setdefault(f.stem, f)
    return found


def list_profiles() -> list[DeviceProfile]:
    """Every known profile, validated (a broken profile file is an error, not skipped)."""
    return [load_profile(path) for path in _profile_files().values()]


def profile_names() -> list[str]:
    return list(_profile_files())


def load_profile(name_or_path: str | os.PathLike | DeviceProfile) -> DeviceProfile:
    """A profile by name ('jetson-orin-nano') or by path to a YAML file; validated. A DeviceProfile
    is returned as it is (a profile read from a file stays that profile, not a name looked up again)."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or os.sep in text:
        if not path.is_file():
            raise UnknownDevice(
                f"Device profile file '{path}' does not exist; pass a device name "
                "(see 'edgecnn devices') or a path to a profile YAML."
            )
    else:
        files = _profile_files()
        if text not in files:
            raise UnknownDevice(f"Unknown device '{text}'.{suggest(text, files)} Run 'edgecnn devices' to list them.")
        path = files[text]
    return DeviceProfile.read(path)


def default_device(target: str) -> str:
    """The profile a ``target`` (jetson | gpu | cpu) deploys to when no --device is given."""
    if target not in DEFAULT_DEVICES:
        raise OptionError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}.{suggest(target, TARGETS)}")
    return DEFAULT_DEVICES[target]
