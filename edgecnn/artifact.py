"""Artifacts: a directory holding one model file plus ``manifest.json``.

Every stage reads an :class:`Artifact` and writes a new one with :func:`write_artifact`, which builds
the directory under a temporary name and renames it into place, so a failed stage never leaves a
half-written artifact behind. The manifest says what the model is, how to feed it, where it came from
(parent id + sha256, back to the original) and what has been measured on it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .envinfo import fingerprint
from .errors import ArtifactError

MANIFEST = "manifest.json"
SCHEMA = "edgecnn.artifact/1"
FORMATS = ("torch", "onnx", "engine", "bundle")
_REQUIRED = ("schema", "id", "model", "format", "file", "precision", "input", "classes", "stage", "sha256")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; when the block succeeds it is renamed to ``path``,
    otherwise removed - readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` through a temporary file in the same directory and rename it."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@dataclass
class Artifact:
    """A loaded artifact directory. ``manifest`` is the parsed ``manifest.json``."""

    path: Path
    manifest: dict

    # -- accessors -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["file"]

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    @property
    def input(self) -> dict:
        return self.manifest["input"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        spec = self.manifest["input"]
        return (int(spec["channels"]), int(spec["height"]), int(spec["width"]))

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def metrics(self) -> dict:
        return self.manifest.setdefault("metrics", {})

    @property
    def stage(self) -> str:
        return self.manifest["stage"]["name"]

    @property
    def root_id(self) -> str:
        """Id of the original artifact this one descends from (itself when it is an original)."""
        lineage = self.manifest.get("lineage") or []
        return lineage[0]["id"] if lineage else self.id

    def ref(self) -> dict:
        """How a child artifact refers to this one."""
        return {
            "id": self.id,
            "sha256": self.sha256,
            "path": str(self.path),
            "stage": self.stage,
            "format": self.format,
            "precision": self.precision,
        }

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, *, formats: Iterable[str] | None = None, verify: bool = False) -> Artifact:
        """Load an artifact directory (or its manifest.json). ``formats`` restricts the accepted kinds."""
        path = Path(path)
        if path.is_file() and path.name == MANIFEST:
            path = path.parent
        if not path.exists():
            raise ArtifactError(f"Artifact '{path}' does not exist; pass a directory written by an edgecnn command.")
        if not path.is_dir():
            raise ArtifactError(
                f"'{path}' is a file, not an edgecnn artifact directory; pass the directory that holds {MANIFEST}."
            )
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise ArtifactError(
                f"'{path}' has no {MANIFEST}, so it is not an edgecnn artifact; pass a directory "
                "written by an edgecnn command."
            )
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{mpath} is not valid JSON ({exc}); re-create the artifact.") from exc
        if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
            raise ArtifactError(
                f"{mpath} is not an edgecnn manifest (schema {SCHEMA!r} expected); re-create the artifact."
            )
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise ArtifactError(f"{mpath} lacks {', '.join(missing)}; re-create the artifact.")
        art = cls(path=path, manifest=manifest)
        if formats is not None:
            formats = tuple(formats)
            if art.format not in formats:
                raise ArtifactError(
                    f"'{path}' is a {art.format} artifact but this command needs {' or '.join(formats)}"
                    f"{_how_to_get(formats)}."
                )
        if not art.model_file.exists():
            raise ArtifactError(
                f"Artifact '{path}' lists {art.manifest['file']} but the file is missing; re-create the artifact."
            )
        if verify:
            art.verify()
        return art

    def verify(self) -> None:
        """Check every file's sha256 against the manifest; raise ArtifactError naming the first mismatch."""
        for rel, digest in self.manifest.get("files", {self.manifest["file"]: self.sha256}).items():
            f = self.path / rel
            if not f.exists():
                raise ArtifactError(
                    f"{f} is listed in {MANIFEST} but missing; the artifact is incomplete - re-create it."
                )
            if sha256_file(f) != digest:
                raise ArtifactError(
                    f"{f} does not match its sha256 in {MANIFEST} (modified or corrupted); re-create the artifact."
                )

    def update_metrics(self, metrics: dict) -> None:
        """Merge measured metrics into the manifest (atomically rewritten)."""
        self.metrics.update(metrics)
        atomic_write_json(self.path / MANIFEST, self.manifest)


def _how_to_get(formats: tuple[str, ...]) -> str:
    hints = {
        "onnx": "; make one with 'edgecnn export'",
        "torch": "; pass the artifact written by 'edgecnn train'",
        "engine": "; make one with 'edgecnn build'",
    }
    return "".join(hints.get(f, "") for f in formats[:1])


def new_manifest(
    *,
    model: str,
    format: str,
    file: str,
    precision: str,
    input: dict,
    classes: list[str],
    stage: str,
    params: dict | None = None,
    parent: Artifact | None = None,
    architecture: dict | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Build a manifest dict; lineage and metrics-so-far are inherited from ``parent``."""
    if format not in FORMATS:
        raise ValueError(f"unknown artifact format {format!r}")
    lineage: list[dict] = []
    if parent is not None:
        lineage = list(parent.manifest.get("lineage") or []) + [parent.ref()]
    manifest = {
        "schema": SCHEMA,
        "id": f"{model}-{stage}-{uuid.uuid4().hex[:10]}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "format": format,
        "file": file,
        "precision": precision,
        "input": dict(input),
        "classes": list(classes),
        "stage": {"name": stage, "params": _jsonable(params or {})},
        "parent": parent.ref() if parent is not None else None,
        "lineage": lineage,
        "architecture": architecture,
        "metrics": dict(metrics or {}),
        "environment": fingerprint(),
        "sha256": None,
        "files": {},
    }
    if extra:
        manifest.update(extra)
    return manifest


def derived_manifest(
    src: Artifact,
    *,
    stage: str,
    precision: str,
    params: dict,
    format: str = "onnx",
    file: str = "model.onnx",
    metrics: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The manifest of an artifact made from ``src`` by ``stage``: same model, input spec, classes and
    architecture, ``src`` as parent, and (unless ``metrics`` says otherwise) its params / MACs carried over."""
    if metrics is None:
        metrics = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
    return new_manifest(
        model=src.model,
        format=format,
        file=file,
        precision=precision,
        input=src.input,
        classes=src.classes,
        stage=stage,
        params=params,
        parent=src,
        architecture=src.manifest.get("architecture"),
        metrics=metrics,
        extra=extra,
    )


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def check_out(out: str | os.PathLike) -> None:
    """Refuse an output that :func:`write_artifact` would refuse; stages call it before any work, so a
    taken --out fails in a second instead of after minutes of training or calibration."""
    out = Path(out)
    if out.exists() and (out.is_file() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise ArtifactError(f"Output '{out}' exists and is not an edgecnn artifact; choose another --out or remove it.")


def write_artifact(out: str | os.PathLike, manifest: dict, write: Callable[[Path], None]) -> Artifact:
    """Create artifact directory ``out``: ``write(tmpdir)`` writes the model file(s) into a temporary
    sibling directory; hashes and the manifest are added and the directory is renamed into place.

    An existing *artifact* at ``out`` is replaced (it is our own output); an existing non-empty directory
    that is not an artifact is refused, so user files are never clobbered.
    """
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        model_path = tmp / manifest["file"]
        if not model_path.exists():
            raise RuntimeError(f"stage did not write its model file {manifest['file']}")
        files = {}
        for f in sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST):
            files[f.relative_to(tmp).as_posix()] = sha256_file(f)
        manifest["files"] = files
        manifest["sha256"] = files[manifest["file"]]
        (tmp / MANIFEST).write_text(json.dumps(_jsonable(manifest), indent=2) + "\n", encoding="utf-8")
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Artifact(path=out, manifest=manifest)


def is_artifact(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / MANIFEST).is_file() or (p.is_file() and p.name == MANIFEST)
