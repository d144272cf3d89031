"""Read-side integrity of artifacts: the files a manifest lists stay inside the artifact directory, are
regular files, and match their sha256.

Digests are cached per process, keyed by the file's identity (real path, device, inode, size, mtime in
ns), so verifying the same artifact again - every command verifies what it reads, and a stage may be
handed an :class:`~edgecnn.artifact.Artifact` loaded earlier - costs a ``stat`` per file, not a re-hash.
A file rewritten in place gets a new size or mtime and is hashed again. Files are opened non-blocking and
checked to be regular before a byte is read, so a FIFO or a device in place of a model never blocks.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .errors import ArtifactError
from .manifest_schema import inside_path

MANIFEST = "manifest.json"  # the same name as edgecnn.artifact.MANIFEST
_CACHE: dict[tuple, str] = {}
_CACHE_MAX = 4096
_CHUNK = 1 << 20


def _hash_open_file(fd: int) -> str:
    h = hashlib.sha256()
    while block := os.read(fd, _CHUNK):
        h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the regular file at ``path`` (reused while the file's identity is unchanged)."""
    real = os.path.realpath(path)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ArtifactError(f"Cannot read '{path}' ({exc.strerror}); re-create the artifact.") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"'{path}' is not a regular file; re-create the artifact.")
        key = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = _CACHE.get(key)
        if digest is None:
            digest = _hash_open_file(fd)
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.clear()
            _CACHE[key] = digest
        return digest
    finally:
        os.close(fd)


def confined(root: Path, rel: str) -> Path:
    """``root / rel`` after checking that ``rel`` is a relative path that stays inside ``root`` (no ``..``,
    no absolute path, no symlink leading out) and names a regular file. Nothing is opened."""
    if not inside_path(rel):
        raise ArtifactError(
            f"Artifact '{root}' names '{rel}' in {MANIFEST}, which is not a path inside the artifact; "
            "model files must stay inside the artifact directory - re-create the artifact."
        )
    path = root / rel
    top = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([top, real]) != top:
        raise ArtifactError(
            f"'{path}' resolves to '{real}', outside the artifact '{root}'; model files must stay inside the "
            "artifact directory (no symlinks leading out) - re-create the artifact."
        )
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise ArtifactError(
            f"{path} is listed in {MANIFEST} but missing; the artifact is incomplete - re-create it."
        ) from exc
    if not stat.S_ISREG(mode):
        raise ArtifactError(f"'{path}' is not a regular file; re-create the artifact.")
    return path


#: what a bundle's build_engine.sh writes next to its files on the device (the bundle's run.py knows the
#: same names, edgecnn/deploy_templates/run.py DEVICE_OUTPUTS); a bundle may hold them unlisted
BUNDLE_DEVICE_OUTPUTS = ("model.engine", "engine.json", "build_engine.log", "timing.cache", "model_fp16.onnx")


def unlisted(root: Path, files: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """Files (and links) under ``root`` that the manifest does not list, manifest.json, ``allowed`` and the
    temporary files of an atomic manifest update aside."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        names = filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            rel = (rel_dir / name).as_posix()
            if rel == MANIFEST or rel in allowed or rel.startswith(f".{MANIFEST}.tmp-"):
                continue
            if rel not in files:
                found.append(rel)
    return sorted(found)


def check_files(root: Path, files: dict, *, kind: str = "") -> None:
    """Every listed file is confined to ``root`` and regular; nothing else lies in ``root`` (a ``kind``
    'bundle' may also hold what its engine build wrote there on the device)."""
    for rel in files:
        confined(root, rel)
    extra = unlisted(root, files, BUNDLE_DEVICE_OUTPUTS if kind == "bundle" else ())
    if extra:
        more = f" (and {len(extra) - 3} more)" if len(extra) > 3 else ""
        raise ArtifactError(
            f"Artifact '{root}' holds {', '.join(extra[:3])}{more}, not listed in {MANIFEST} (so not "
            "verifiable); remove it or re-create the artifact."
        )


def verify_files(root: Path, files: dict) -> None:
    """Each listed file's sha256 against the manifest; ArtifactError names the first mismatch."""
    for rel, digest in files.items():
        path = confined(root, rel)
        if file_digest(path) != digest:
            raise ArtifactError(
                f"{path} does not match its sha256 in {MANIFEST} (modified or corrupted); re-create the artifact."
            )
