"""The schema of ``manifest.json``: what each key may hold, checked when an artifact is loaded.

A manifest is data from disk (possibly from a file share or a colleague's laptop), so nothing in it is
trusted before :func:`validate` has checked types, ranges and required keys. Every failure is one
ArtifactError that names the key (``'input.channels'``), what it must be and what it is. Reading is
bounded too: :func:`read_manifest` refuses files over :data:`MAX_BYTES` before parsing and JSON nested
deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import ArtifactError

MAX_BYTES = 16 << 20  # 16 MiB; edgecnn's own manifests are a few kB (a sweep's history tens of kB)
MAX_DEPTH = 64
MAX_SIDE = 16384  # image height / width
MAX_CHANNELS = 1024
MAX_CLASSES = 1_000_000
MAX_TEXT = 4096
SHA256 = re.compile(r"[0-9a-f]{64}")
FORMATS = ("torch", "onnx", "engine", "bundle")
REQUIRED = ("schema", "id", "model", "format", "file", "precision", "input", "classes", "stage", "sha256", "files")


class _Bad(Exception):
    """A key whose value breaks the schema (turned into one ArtifactError by :func:`validate`)."""

    def __init__(self, key: str, want: str, value=None, *, got: bool = True):
        super().__init__(key, want)
        self.key, self.want, self.value, self.got = key, want, value, got


def read_manifest(mpath: Path) -> object:
    """The parsed JSON of ``mpath``: a regular file of at most MAX_BYTES, nested at most MAX_DEPTH deep."""
    try:
        fd = os.open(mpath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ArtifactError(f"Cannot read {mpath} ({exc.strerror}); re-create the artifact.") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{mpath} is not a regular file; re-create the artifact.")
        if st.st_size > MAX_BYTES:
            raise ArtifactError(
                f"{mpath} is {st.st_size / (1 << 20):.1f} MiB; manifests are limited to "
                f"{MAX_BYTES >> 20} MiB - re-create the artifact."
            )
        data = fh.read(MAX_BYTES + 1)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except RecursionError as exc:
        raise ArtifactError(f"{mpath} is nested deeper than {MAX_DEPTH} levels; re-create the artifact.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath} is not valid JSON ({exc}); re-create the artifact.") from exc
    if _depth(manifest) > MAX_DEPTH:
        raise ArtifactError(f"{mpath} is nested deeper than {MAX_DEPTH} levels; re-create the artifact.")
    return manifest


def _depth(obj) -> int:
    """Nesting depth of a parsed JSON value (iterative: a hostile file cannot exhaust the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            stack.extend((v, level + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def validate(manifest: dict, mpath: Path) -> None:
    """Check ``manifest`` (already known to be a dict with the right ``schema``) against the schema."""
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{mpath} lacks {', '.join(missing)}; re-create the artifact.")
    try:
        _check(manifest)
    except _Bad as bad:
        got = f" (got {_show(bad.value)})" if bad.got else ""
        raise ArtifactError(f"{mpath}: '{bad.key}' {bad.want}{got}; re-create the artifact.") from None


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(m: dict) -> None:
    for key in ("id", "model", "precision"):
        _text(m, key)
    if m["format"] not in FORMATS:
        raise _Bad("format", f"must be one of {', '.join(FORMATS)}", m["format"])
    if not inside_path(_text(m, "file")):
        raise _Bad("file", "must be a relative path inside the artifact (no '..', not absolute)", m["file"])
    _check_input(_mapping(m, "input"))
    classes = m["classes"]
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise _Bad("classes", "must be a non-empty list of class names", classes)
    if not all(isinstance(c, str) and len(c) <= MAX_TEXT for c in classes):
        raise _Bad("classes", "must hold class names (strings)", classes)
    stage = _mapping(m, "stage")
    _text(stage, "name", "stage.name")
    if "params" in stage:
        _mapping(stage, "params", "stage.params")
    _check_files(m)
    for key in ("metrics", "environment"):
        if m.get(key) is not None:
            _mapping(m, key)
    if m.get("parent") is not None:
        _mapping(m, "parent")
    lineage = m.get("lineage")
    if lineage is not None and not (isinstance(lineage, list) and all(isinstance(r, dict) for r in lineage)):
        raise _Bad("lineage", "must be a list of parent records", lineage)
    if m.get("architecture") is not None:
        _check_architecture(_mapping(m, "architecture"), len(classes))


def inside_path(rel: str) -> bool:
    """``rel`` is a relative path that cannot leave the directory it is joined to (no ``..``, not absolute,
    no drive or backslash); symlinks are checked on disk by :func:`edgecnn.integrity.confined`."""
    posix, win = PurePosixPath(rel), PureWindowsPath(rel)
    return bool(rel) and not (
        posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or "\\" in rel
    )


def _check_files(m: dict) -> None:
    if not isinstance(m["sha256"], str) or not SHA256.fullmatch(m["sha256"]):
        raise _Bad("sha256", "must be a sha256 (64 lowercase hex digits)", m["sha256"])
    files = m["files"]
    if not isinstance(files, dict) or not files:
        raise _Bad(
            "files",
            f"must map every file of the artifact ({m['file']} at least) to its sha256, so it can be verified",
            files,
        )
    for rel, digest in files.items():
        if len(rel) > MAX_TEXT or not inside_path(rel):
            raise _Bad("files", "must name files by relative paths inside the artifact (no '..', not absolute)", rel)
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise _Bad("files", f"must give {rel} a sha256 (64 lowercase hex digits)", digest)
    if m["file"] not in files:
        raise _Bad("files", f"does not list the model file {m['file']}, so it cannot be verified", got=False)
    if files[m["file"]] != m["sha256"]:
        raise _Bad("sha256", f"differs from the sha256 of {m['file']} under 'files'", m["sha256"])


def _check_input(spec: dict) -> None:
    channels = _int(spec, "channels", 1, MAX_CHANNELS)
    for key in ("height", "width"):
        _int(spec, key, 1, MAX_SIDE)
    for key in ("mean", "std"):
        values = spec.get(key, "missing")
        if not isinstance(values, list) or len(values) != channels or not all(_finite(v) for v in values):
            raise _Bad(f"input.{key}", f"must be a list of {channels} finite number(s), one per channel", values)
    if any(v <= 0 for v in spec["std"]):
        raise _Bad("input.std", "must be > 0 for every channel (the input is divided by it)", spec["std"])
    if "scale" in spec and not (_finite(spec["scale"]) and spec["scale"] > 0):
        raise _Bad("input.scale", "must be a finite number > 0", spec["scale"])
    if spec.get("resize") is not None:
        _int(spec, "resize", 1, MAX_SIDE)
    crop = spec.get("crop")
    if crop is not None and not (
        isinstance(crop, list) and len(crop) == 2 and all(_is_int(c) and 1 <= c <= MAX_SIDE for c in crop)
    ):
        raise _Bad("input.crop", f"must be [height, width], each an integer from 1 to {MAX_SIDE}", crop)
    for key in ("layout", "dtype", "color", "interpolation", "formula"):
        if key in spec:
            _text(spec, key, f"input.{key}")


def _check_architecture(arch: dict, n_classes: int) -> None:
    if "name" in arch:
        _text(arch, "name", "architecture.name")
    if "num_classes" in arch:
        n = _int(arch, "num_classes", 1, MAX_CLASSES, "architecture.num_classes")
        if n != n_classes:
            raise _Bad("classes", f"lists {n_classes} class names but 'architecture.num_classes' is {n}", got=False)
    if "in_channels" in arch:
        _int(arch, "in_channels", 1, MAX_CHANNELS, "architecture.in_channels")
    size = arch.get("input_size")
    if "input_size" in arch and not (
        isinstance(size, list) and len(size) == 2 and all(_is_int(s) and 1 <= s <= MAX_SIDE for s in size)
    ):
        raise _Bad("architecture.input_size", f"must be [height, width], integers from 1 to {MAX_SIDE}", size)


# -- value checks --------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(d: dict, key: str, lo: int, hi: int, name: str | None = None) -> int:
    name = name or f"input.{key}"
    if key not in d:
        raise _Bad(name, "is missing", got=False)
    if not _is_int(d[key]) or not lo <= d[key] <= hi:
        raise _Bad(name, f"must be an integer from {lo} to {hi}", d[key])
    return d[key]


def _text(d: dict, key: str, name: str | None = None) -> str:
    name = name or key
    value = d.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _Bad(name, f"must be a non-empty string of at most {MAX_TEXT} characters", value)
    return value


def _mapping(d: dict, key: str, name: str | None = None) -> dict:
    value = d.get(key)
    if not isinstance(value, dict):
        raise _Bad(name or key, "must be a JSON object", value)
    return value
