"""Which ONNX file of an artifact a runtime family runs (issue 13: the deploy target decides the INT8 layout,
never the host that quantized it).

An INT8 artifact quantized with ``--target auto`` (the default) holds two layouts of one NNCF calibration,
both listed with their sha256 in ``manifest.json`` and named per family under ``quantization.layouts``:

* ``tensorrt`` - ``model.onnx``: signed INT8, zero point 0, TensorRT's fusion placement. Target-neutral:
  TensorRT builds it, and ONNX Runtime / OpenVINO run it correctly (slower on x86: a ReLU in front of a
  signed quantizer cannot be folded).
* ``cpu`` - ``model.cpu.onnx``: unsigned activations and the rewrites that let ONNX Runtime fuse every
  convolution on x86 (:func:`edgecnn.compress.qdq.adapt_for_target`). TensorRT rejects it (uint8).

``--target cpu`` / ``--target tensorrt`` write that one layout as ``model.onnx``. FP32 / FP16 artifacts (and
INT8 ones with no layout record, e.g. imported) have one file that serves every family.

Runtimes ask :func:`model_file_for` (or :func:`choose`, which also says why) with ``family`` "cpu" (ONNX
Runtime / OpenVINO on a CPU) or "tensorrt" (TensorRT on a GPU or Jetson). The chosen file is checked against
its sha256 in the manifest before it is returned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .artifact import Artifact
from .errors import ArtifactError
from .integrity import confined, file_digest

Family = Literal["cpu", "tensorrt"]
FAMILIES: tuple[str, ...] = ("cpu", "tensorrt")
#: file name of each layout when an artifact holds both (the tensorrt one is the manifest's model file)
LAYOUT_FILES = {"tensorrt": "model.onnx", "cpu": "model.cpu.onnx"}
RUNS_ON = {"cpu": "ONNX Runtime / OpenVINO on a CPU", "tensorrt": "TensorRT on a GPU or Jetson"}
#: deploy --target -> the family whose layout its bundle ships
TARGET_FAMILY = {"cpu": "cpu", "gpu": "tensorrt", "jetson": "tensorrt"}


class LayoutError(ArtifactError):
    """The artifact has no INT8 layout a runtime family can run."""


@dataclass(frozen=True)
class Choice:
    """The file ``family`` runs and why. ``layout`` is the INT8 layout's name, None when the artifact has one
    file for every family (FP32, FP16, an INT8 model without a layout record)."""

    family: str
    layout: str | None
    file: Path
    sha256: str
    reason: str
    purpose: str = ""

    @property
    def line(self) -> str:
        """One line for the user, e.g. 'INT8 layout: cpu (model.cpu.onnx) for target cpu - ...'."""
        if self.layout is None:
            return f"model file: {self.file.name} for {self.purpose or self.family} - {self.reason}"
        return f"INT8 layout: {self.layout} ({self.file.name}) for {self.purpose or self.family} - {self.reason}"

    def record(self) -> dict:
        """What a report or bundle.json records about the choice."""
        return {
            "family": self.family,
            "layout": self.layout,
            "file": self.file.name,
            "sha256": self.sha256,
            "reason": self.reason,
            "line": self.line,
        }


def recorded_layouts(manifest: dict) -> dict[str, str]:
    """family -> file name of the INT8 layouts an artifact's manifest names ({} when it names none).
    Artifacts written before both layouts existed record one ``quantization.target``: that layout is the model
    file."""
    q = manifest.get("quantization") or {}
    layouts = q.get("layouts")
    if isinstance(layouts, dict) and layouts:
        out = {}
        for fam, entry in layouts.items():
            rel = entry.get("file") if isinstance(entry, dict) else None
            if fam not in FAMILIES or not isinstance(rel, str):
                raise ArtifactError(
                    f"manifest.json: quantization.layouts.{fam} must name a file of a known family "
                    f"({', '.join(FAMILIES)}); re-create the artifact."
                )
            out[fam] = rel
        return out
    if q.get("target") in FAMILIES:
        return {q["target"]: manifest["file"]}
    return {}


def choose(artifact: Artifact, family: str, *, purpose: str = "", verify: bool = True) -> Choice:
    """The file ``family`` runs, checked against its sha256 (``verify=False``: only that the manifest lists it,
    for a caller that opted out of hashing); LayoutError when the artifact has none for it. ``purpose`` names
    what asked (e.g. 'target jetson', 'ONNX Runtime on cpu') in the choice's line."""
    if family not in FAMILIES:
        raise ValueError(f"bug: unknown runtime family {family!r} (one of {', '.join(FAMILIES)})")
    purpose = purpose or RUNS_ON[family]
    layouts = recorded_layouts(artifact.manifest) if artifact.precision == "int8" else {}
    if not layouts:
        why = (
            "INT8 without a layout record (not written by edgecnn quantize): its one file serves every runtime"
            if artifact.precision == "int8"
            else f"{artifact.precision} artifact: one file serves every runtime"
        )
        return _checked(artifact, family, None, artifact.manifest["file"], why, purpose, verify)
    how = (
        "both layouts written by --target auto"
        if len(layouts) > 1
        else "quantized with --target " + next(iter(layouts))
    )
    if family in layouts:
        why = f"the {family} layout for {RUNS_ON[family]} ({how})"
        return _checked(artifact, family, family, layouts[family], why, purpose, verify)
    if family == "cpu" and "tensorrt" in layouts:
        why = (
            "the artifact has only the tensorrt layout (quantized with --target tensorrt); it runs correctly "
            "on a CPU, slower than a cpu layout - re-quantize with --target auto for both"
        )
        return _checked(artifact, family, "tensorrt", layouts["tensorrt"], why, purpose, verify)
    have = ", ".join(sorted(layouts))
    raise LayoutError(
        f"'{artifact.path}' has no INT8 layout for {RUNS_ON[family]} (it holds only the {have} layout: "
        f"{how}, whose uint8 activations TensorRT rejects); re-quantize with --target auto or --target tensorrt."
    )


def _checked(
    artifact: Artifact, family: str, layout: str | None, rel: str, why: str, purpose: str, verify: bool = True
) -> Choice:
    files = artifact.manifest.get("files") or {}
    if rel not in files:
        raise ArtifactError(
            f"{artifact.path / 'manifest.json'} names {rel} as the {layout or 'model'} file but does not list it "
            "under 'files' with a sha256, so it cannot be verified; re-create the artifact."
        )
    path = confined(artifact.path, rel)
    if verify and file_digest(path) != files[rel]:
        raise ArtifactError(
            f"{path} does not match its sha256 in manifest.json (modified or corrupted); re-create the artifact."
        )
    return Choice(family, layout, path, files[rel], why, purpose)


def model_file_for(artifact: Artifact, family: Family) -> Path:
    """The model file ``family`` should run, verified by sha256 (see :func:`choose`)."""
    return choose(artifact, family).file


def view(artifact: Artifact, choice: Choice) -> Artifact:
    """``artifact`` as seen by the runtime of ``choice``: an in-memory copy whose model file (and sha256) is the
    chosen layout's, for code that reads ``model_file``. Never written back (its manifest is not the file's)."""
    if choice.file == artifact.model_file:
        return artifact
    manifest = copy.deepcopy(artifact.manifest)
    manifest["file"] = choice.file.relative_to(artifact.path).as_posix()
    manifest["sha256"] = choice.sha256
    return _View(path=artifact.path, manifest=manifest)


class _View(Artifact):
    """A layout view: reads like the artifact, refuses to rewrite its manifest."""

    def update_metrics(self, metrics: dict) -> None:
        raise RuntimeError("bug: update_metrics on a layout view would rewrite manifest.json with another file")
