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

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidInput, suggest

TARGETS = ("jetson", "gpu", "cpu")
RUNTIMES = ("tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "int8")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "devices"

# key -> (types, required)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "description": ((str,), True),
    "target": ((str,), True),
    "runtime": ((str,), True),
    "arch": ((str,), True),
    "gpu": ((str, type(None)), False),
    "compute_capability": ((list,), True),
    "dla_cores": ((int,), True),
    "dla_version": ((str, type(None)), False),
    "precisions": ((list,), True),
    "memory_gb": ((int, float), True),
    "default_workspace_gb": ((int, float, type(None)), False),
    "tensorrt": ((dict, type(None)), True),
    "software": ((list,), True),
    "notes": ((list,), False),
    "sources": ((list,), False),
}
_TRT_KEYS = ("min", "max", "default")
_SOFTWARE_KEYS = ("jetpack", "l4t", "tensorrt", "cuda", "cudnn", "onnxruntime")


class UnknownDevice(InvalidInput):
    """A device name with no profile."""


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
class DeviceProfile:
    """One deployment target. See ``devices/*.yaml`` for the documented fields."""

    name: str
    description: str
    target: str
    runtime: str
    arch: str
    compute_capability: tuple[str, ...]
    dla_cores: int
    precisions: tuple[str, ...]
    memory_gb: float
    tensorrt: dict | None
    software: tuple[dict, ...]
    gpu: str | None = None
    dla_version: str | None = None
    default_workspace_gb: float | None = None
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

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
            raise InvalidInput(f"{self.name} has no DLA (deep learning accelerator); drop --dla-core, or pick a device "
                               "with DLA cores (see 'edgecnn devices').")
        if not 0 <= core < self.dla_cores:
            cores = "0" if self.dla_cores == 1 else f"0-{self.dla_cores - 1}"
            raise InvalidInput(f"{self.name} has {self.dla_cores} DLA core(s) (index {cores}); --dla-core {core} does not "
                               f"exist - pass --dla-core {cores.split('-')[0]}.")

    def check_precision(self, precision: str) -> None:
        """Raise InvalidInput when this device cannot run ``precision``."""
        if precision not in PRECISIONS:
            raise InvalidInput(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        if self.supports(precision):
            return
        cc = f" (compute capability {', '.join(self.compute_capability)})" if self.compute_capability else ""
        others = " or ".join(p for p in self.precisions if p != precision)
        if precision == "int8":
            raise InvalidInput(f"{self.name}{cc} cannot run INT8 in {self.runtime}; deploy {others} instead "
                               f"(e.g. --precision {self.precisions[-1]}), or pick a device with INT8 support.")
        raise InvalidInput(f"{self.name}{cc} does not run {precision.upper()} models; deploy {others} instead.")

    def summary(self) -> dict:
        """A JSON-able description (what 'edgecnn devices --json' writes)."""
        return {
            "name": self.name, "description": self.description, "target": self.target, "runtime": self.runtime,
            "arch": self.arch, "gpu": self.gpu, "compute_capability": list(self.compute_capability),
            "dla_cores": self.dla_cores, "dla_version": self.dla_version, "precisions": list(self.precisions),
            "memory_gb": self.memory_gb, "default_workspace_gb": self.default_workspace_gb,
            "tensorrt": dict(self.tensorrt) if self.tensorrt else None, "software": [dict(r) for r in self.software],
            "notes": list(self.notes), "sources": list(self.sources), "path": str(self.path) if self.path else None,
        }


# -- loading -------------------------------------------------------------------------------------
def search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("EDGECNN_DEVICES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(BUILTIN_DIR)
    if not BUILTIN_DIR.is_dir():            # installed from a wheel: the profiles went to <prefix>/share
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


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A profile by name ('jetson-orin-nano') or by path to a YAML file; validated."""
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or os.sep in text:
        if not path.is_file():
            raise UnknownDevice(f"Device profile file '{path}' does not exist; pass a device name "
                                "(see 'edgecnn devices') or a path to a profile YAML.")
    else:
        files = _profile_files()
        if text not in files:
            raise UnknownDevice(f"Unknown device '{text}'.{suggest(text, files)} Run 'edgecnn devices' to list them.")
        path = files[text]
    return _parse(path)


def _parse(path: Path) -> DeviceProfile:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"Device profile {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the file.") from exc
    where = f"Device profile {path}"
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} must be a mapping of keys to values; see devices/jetson-orin-nano.yaml.")
    unknown = [k for k in data if k not in _SCHEMA]
    if unknown:
        k = unknown[0]
        raise InvalidInput(f"{where} has unknown key '{k}'.{suggest(str(k), _SCHEMA)} "
                           f"Allowed keys: {', '.join(_SCHEMA)}.")
    for key, (types, required) in _SCHEMA.items():
        if key not in data:
            if required:
                raise InvalidInput(f"{where} lacks the required key '{key}'; add it.")
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InvalidInput(f"{where}: '{key}' must be {want}, got {type(value).__name__} {value!r}.")
    if data["name"] != path.stem:
        raise InvalidInput(f"{where}: name '{data['name']}' must match the file name '{path.stem}'.")
    _check_choice(where, "target", data["target"], TARGETS)
    _check_choice(where, "runtime", data["runtime"], RUNTIMES)
    precisions = data["precisions"]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise InvalidInput(f"{where}: 'precisions' must list some of {', '.join(PRECISIONS)}, got {precisions}.")
    cc = [str(c) for c in data["compute_capability"]]
    if any(not re.fullmatch(r"\d+\.\d+", c) for c in cc):
        raise InvalidInput(f"{where}: 'compute_capability' entries look like \"8.7\", got {cc}.")
    if data["dla_cores"] < 0:
        raise InvalidInput(f"{where}: 'dla_cores' must be >= 0.")
    if data["dla_cores"] and not data.get("dla_version"):
        raise InvalidInput(f"{where}: a device with DLA cores needs 'dla_version' (\"1.0\" Xavier, \"2.0\" Orin).")
    trt = data["tensorrt"]
    if data["runtime"] == "tensorrt":
        if not isinstance(trt, dict) or not cc:
            raise InvalidInput(f"{where}: a TensorRT device needs 'tensorrt: {{min, max, default}}' and 'compute_capability'.")
        bad = [k for k in trt if k not in _TRT_KEYS]
        if bad or any(k not in trt for k in _TRT_KEYS):
            raise InvalidInput(f"{where}: 'tensorrt' takes exactly the keys min, max, default (got {', '.join(map(str, trt))}).")
        try:
            lo, hi = version_floor(str(trt["min"])), parse_version(str(trt["max"]))
            dv = version_floor(str(trt["default"]))
        except ValueError as exc:
            raise InvalidInput(f"{where}: {exc} in 'tensorrt'; write versions as \"8.5\" or \"10.x\".") from None
        if not lo <= dv <= hi:
            raise InvalidInput(f"{where}: tensorrt default {trt['default']} is outside min {trt['min']} .. max {trt['max']}.")
        trt = {k: str(trt[k]) for k in _TRT_KEYS}
    elif trt is not None:
        raise InvalidInput(f"{where}: an onnxruntime device takes 'tensorrt: null'.")
    for row in data["software"]:
        if not isinstance(row, dict) or any(k not in _SOFTWARE_KEYS for k in row):
            raise InvalidInput(f"{where}: each 'software' entry is a mapping with keys among {', '.join(_SOFTWARE_KEYS)}; got {row!r}.")
    return DeviceProfile(
        name=data["name"], description=data["description"], target=data["target"], runtime=data["runtime"],
        arch=data["arch"], compute_capability=tuple(cc), dla_cores=int(data["dla_cores"]),
        precisions=tuple(precisions), memory_gb=float(data["memory_gb"]), tensorrt=trt,
        software=tuple({k: str(v) for k, v in row.items()} for row in data["software"]),
        gpu=data.get("gpu"), dla_version=data.get("dla_version"),
        default_workspace_gb=(float(data["default_workspace_gb"]) if data.get("default_workspace_gb") is not None else None),
        notes=tuple(str(n) for n in data.get("notes") or ()), sources=tuple(str(s) for s in data.get("sources") or ()),
        path=path,
    )


def _check_choice(where: str, key: str, value: str, choices) -> None:
    if value not in choices:
        raise InvalidInput(f"{where}: '{key}' must be one of {', '.join(choices)}, got {value!r}.{suggest(value, choices)}")


def default_device(target: str) -> str:
    """The profile ``deploy --target`` uses when no --device is given."""
    return {"jetson": "jetson-orin-nano", "gpu": "x86-gpu", "cpu": "x86-cpu"}[target]
