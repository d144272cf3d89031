"""Artifacts: a directory holding one model file plus ``manifest.json``.

Every stage reads an :class:`Artifact` and writes a new one with :func:`write_artifact`, which builds
the directory under a temporary name and renames it into place, so a failed stage never leaves a
half-written artifact behind. The manifest says what the model is, how to feed it, where it came from
(parent id + sha256, back to the original) and what has been measured on it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .envinfo import fingerprint
from .errors import WRITE_ONLY_ERRNOS, ArtifactError, EdgeCnnError, OutputError, cannot_write, os_write_error
from .integrity import check_files, file_digest, verify_files
from .manifest_schema import FORMATS, read_manifest
from .manifest_schema import validate as validate_manifest

MANIFEST = "manifest.json"
SCHEMA = "edgecnn.artifact/1"


def sha256_file(path: Path) -> str:
    """sha256 of a regular file; the one hashing routine (:func:`edgecnn.integrity.file_digest`, cached per
    process by the file's identity)."""
    return file_digest(path)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a file-system refusal (disk full, read-only, no permission ...) raised in the block into one
    :class:`OutputError` naming ``path``; anything else (a bug included) propagates unchanged."""
    try:
        yield
    except EdgeCnnError:
        raise
    except Exception as exc:
        err = os_write_error(exc)
        if err is None or _read_of_an_input(err, Path(path)):
            raise
        raise cannot_write(path, err) from exc


def _read_of_an_input(err: OSError, out: Path) -> bool:
    """An error that may come from reading (permission, not a folder ...) about a file outside the folder
    ``out`` is written in: not the output's fault, so not said as "cannot write"."""
    if err.errno in WRITE_ONLY_ERRNOS or not err.filename:
        return False
    where = Path(os.path.abspath(out)).parent
    return where not in Path(os.path.abspath(err.filename)).parents


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; when the block succeeds it is renamed to ``path``,
    otherwise removed - readers never see a half-written file. A full disk (or any file-system refusal)
    becomes one :class:`OutputError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
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
    def load(cls, path: str | os.PathLike, *, formats: Iterable[str] | None = None, verify: bool = True) -> Artifact:
        """Load an artifact directory (or its manifest.json). ``formats`` restricts the accepted kinds.

        The manifest is checked against the schema (:mod:`edgecnn.manifest_schema`), every file it lists
        must stay inside the directory, nothing unlisted may lie there, and (``verify``, the default) every
        file's sha256 must match - hashed once per process (:mod:`edgecnn.integrity`). ``verify=False`` is
        only for scanning many candidates; :meth:`verify` the one that is then used."""
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
        manifest = read_manifest(mpath)
        if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
            raise ArtifactError(
                f"{mpath} is not an edgecnn manifest (schema {SCHEMA!r} expected); re-create the artifact."
            )
        validate_manifest(manifest, mpath)
        art = cls(path=path, manifest=manifest)
        art._require_format(formats)
        if not (art.model_file.exists() or art.model_file.is_symlink()):
            raise ArtifactError(
                f"Artifact '{path}' lists {art.manifest['file']} but the file is missing; re-create the artifact."
            )
        if verify:
            art.verify()
        else:
            check_files(path, manifest["files"], kind=art.format)
        return art

    @classmethod
    def checked(cls, src: Artifact | str | os.PathLike, *, formats: Iterable[str] | None = None) -> Artifact:
        """``src`` as a verified artifact: a path is loaded (and verified), an Artifact already in memory is
        verified again - a file changed since it was loaded is caught, an unchanged one is not re-hashed."""
        if not isinstance(src, Artifact):
            return cls.load(src, formats=formats)
        src._require_format(formats)
        src.verify()
        return src

    def _require_format(self, formats: Iterable[str] | None) -> None:
        if formats is not None and self.format not in tuple(formats):
            formats = tuple(formats)
            raise ArtifactError(
                f"'{self.path}' is a {self.format} artifact but this command needs {' or '.join(formats)}"
                f"{_how_to_get(formats)}."
            )

    def verify(self) -> None:
        """Check that every listed file stays inside the artifact and is a regular file, that nothing unlisted
        lies there, and every file's sha256; raise ArtifactError naming the first problem. Cheap when
        repeated: digests are cached per file identity (see :mod:`edgecnn.integrity`)."""
        files = self.manifest.get("files")
        if not isinstance(files, dict) or self.manifest["file"] not in files:
            raise ArtifactError(
                f"{self.path / MANIFEST}: 'files' does not list {self.manifest['file']}, so it cannot be "
                "verified; re-create the artifact."
            )
        check_files(self.path, files, kind=self.format)
        verify_files(self.path, files)

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
    architecture, ``src`` as parent, and (unless ``metrics`` says otherwise) its params / MACs carried over; so is
    its weight-sparsity record (the zeros of a 2:4 model survive export, FP16 and post-training INT8; not QAT)."""
    if metrics is None:
        metrics = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
    retrained = stage == "quantize" and bool(params.get("qat"))  # QAT updates every weight, zeros included
    if src.manifest.get("sparsity") and "sparsity" not in (extra or {}) and not retrained:
        extra = {"sparsity": src.manifest["sparsity"], **(extra or {})}  # zeros survive export, FP16 and PTQ
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


def check_out(out: str | os.PathLike, *sources, artifact: bool = True) -> None:
    """Refuse an output that cannot or must not be written; stages call it before any work, so a bad
    --out fails in a second instead of after minutes of training or calibration.

    ``sources`` (artifacts, paths, or names/None that are no path) must not be ``out``, inside it, or hold
    it; ``out`` must be creatable (no dangling symlink, no file on its way, a writable file system); with
    ``artifact`` (not for a compress run folder) an existing ``out`` must be an artifact we may replace."""
    out = Path(out)
    for src in sources:
        _check_not_source(out, src)
    _check_creatable(out)
    if artifact and out.exists() and (out.is_file() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise ArtifactError(f"Output '{out}' exists and is not an edgecnn artifact; choose another --out or remove it.")


def _check_not_source(out: Path, src) -> None:
    if src is None:
        return
    where = Path(src.path if isinstance(src, Artifact) else src)
    if where.name == MANIFEST and where.is_file():
        where = where.parent
    if not where.exists():
        return  # a zoo name, 'random', 'digits': not a path
    o, s = out.resolve(), where.resolve()
    if o == s:
        why = "is the source artifact"
    elif o in s.parents:
        why = "contains the source artifact"
    elif s in o.parents:
        why = "is inside the source artifact"
    else:
        return
    raise ArtifactError(
        f"--out '{out}' {why} '{where}'; writing there would replace or alter the source - choose another --out."
    )


def _check_creatable(out: Path) -> None:
    """``out`` (and a temporary sibling) can be created: every existing part of its path is a folder, no
    dangling symlink stands in the way, and the folder it goes in is writable."""
    p = Path(os.path.abspath(out))
    while not p.exists():
        if p.is_symlink():
            raise OutputError(
                f"Output '{out}' cannot be created: '{p}' is a dangling symlink (to '{os.readlink(p)}'); "
                "remove the link or choose another --out."
            )
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"Output '{out}' cannot be created: '{p}' is a file, not a folder; choose another --out.")
    home = p if p != Path(os.path.abspath(out)) else p.parent
    if os.statvfs(home).f_flag & os.ST_RDONLY:
        raise cannot_write(out, OSError(errno.EROFS, f"'{home}' is on a read-only file system"))
    if not os.access(home, os.W_OK | os.X_OK):
        raise cannot_write(out, OSError(errno.EACCES, f"no permission to write in '{home}'"))


def write_artifact(out: str | os.PathLike, manifest: dict, write: Callable[[Path], None]) -> Artifact:
    """Create artifact directory ``out``: ``write(tmpdir)`` writes the model file(s) into a temporary
    sibling directory; hashes and the manifest are added and the directory is renamed into place.

    An existing *artifact* at ``out`` is replaced (it is our own output); an existing non-empty directory
    that is not an artifact is refused, so user files are never clobbered.
    """
    out = Path(out)
    check_out(out, (manifest.get("parent") or {}).get("path"))
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            write(tmp)
            _seal(tmp, manifest)
            _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Artifact(path=out, manifest=manifest)


def _seal(tmp: Path, manifest: dict) -> None:
    """Hash every file the stage wrote into ``tmp`` and write the manifest that lists them."""
    if not (tmp / manifest["file"]).exists():
        raise RuntimeError(f"stage did not write its model file {manifest['file']}")
    files = {}
    for f in sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[f.relative_to(tmp).as_posix()] = sha256_file(f)
    manifest["files"] = files
    manifest["sha256"] = files[manifest["file"]]
    (tmp / MANIFEST).write_text(json.dumps(_jsonable(manifest), indent=2) + "\n", encoding="utf-8")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an artifact already there is replaced, and restored if that fails."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def is_artifact(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / MANIFEST).is_file() or (p.is_file() and p.name == MANIFEST)
