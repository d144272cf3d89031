"""The two artifacts the gate compares: are they comparable (same classes, same input), what are they
(identity, file bytes, params and MACs through their lineage) and how do their costs relate."""

from __future__ import annotations

import math

from ..artifact import Artifact
from ..errors import InvalidInput
from ..layouts import recorded_layouts

#: input-spec keys that do not change what a model is fed
_SPEC_IGNORE = {"formula"}


class IncompatibleModels(InvalidInput):
    """Candidate and original cannot be compared on the same images (classes or input differ)."""


def _same(va, vb) -> bool:
    """Equal input-spec values (numbers and lists of numbers up to rounding)."""

    def number(x):
        return isinstance(x, (int, float))

    if (
        isinstance(va, (list, tuple))
        and isinstance(vb, (list, tuple))
        and len(va) == len(vb)
        and all(number(x) and number(y) for x, y in zip(va, vb))
    ):
        return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(va, vb))
    if number(va) and number(vb):
        return math.isclose(va, vb, rel_tol=1e-6)
    return va == vb


def ensure_comparable(candidate: Artifact, original: Artifact) -> None:
    """Raise IncompatibleModels unless both artifacts predict the same classes from the same input."""
    where = f"Candidate '{candidate.path}'"
    if candidate.num_classes != original.num_classes:
        raise IncompatibleModels(
            f"{where} predicts {candidate.num_classes} classes, original '{original.path}' "
            f"predicts {original.num_classes}; compare a candidate derived from this original."
        )
    if candidate.classes != original.classes:
        diff = next(i for i, (a, b) in enumerate(zip(candidate.classes, original.classes)) if a != b)
        raise IncompatibleModels(
            f"{where} and original '{original.path}' name their classes differently (class {diff}: "
            f"{candidate.classes[diff]!r} vs {original.classes[diff]!r}); compare models trained on the same classes."
        )
    a, b = candidate.input, original.input
    differ = [
        f"{key} {a.get(key)!r} vs {b.get(key)!r}"
        for key in sorted((set(a) | set(b)) - _SPEC_IGNORE)
        if not _same(a.get(key), b.get(key))
    ]
    if differ:
        raise IncompatibleModels(
            f"{where} and original '{original.path}' expect different inputs ({'; '.join(differ[:4])}); the gate "
            "feeds both the same images, so compare a candidate exported at the original's input spec."
        )


def describe_artifact(art: Artifact) -> dict:
    """Identity and cost of an artifact as the report records it."""
    params, params_from = _lineage_metric(art, "params")
    macs, macs_from = _lineage_metric(art, "macs")
    return {
        "path": str(art.path),
        "id": art.id,
        "model": art.model,
        "format": art.format,
        "precision": art.precision,
        "stage": art.stage,
        "sha256": art.sha256,
        "root_id": art.root_id,
        "num_classes": art.num_classes,
        "input": list(art.input_shape),
        "size_bytes": artifact_bytes(art),
        "params": params,
        "macs": macs,
        "params_from": params_from,
        "macs_from": macs_from,
    }


def artifact_bytes(art: Artifact, family: str = "cpu") -> int:
    """Bytes of the model file(s) a deployment of runtime ``family`` ships (manifest excluded): of an INT8
    artifact with several layouts, only the one that family runs (:mod:`edgecnn.layouts`)."""
    files = art.manifest.get("files") or {art.manifest["file"]: None}
    layouts = recorded_layouts(art.manifest) if art.precision == "int8" else {}
    other = set(layouts.values()) - {layouts.get(family, art.manifest["file"])}
    return sum((art.path / rel).stat().st_size for rel in files if rel not in other and (art.path / rel).is_file())


def _lineage_metric(art: Artifact, key: str, depth: int = 8):
    """A manifest metric, or the nearest ancestor's (an export or quantization keeps params and MACs)."""
    current = art
    for _ in range(depth):
        value = (current.manifest.get("metrics") or {}).get(key)
        if isinstance(value, (int, float)):
            return value, (None if current is art else current.stage)
        parent = current.manifest.get("parent")
        if not parent or not parent.get("path"):
            break
        try:
            current = Artifact.load(parent["path"])
        except Exception:  # noqa: BLE001 - a moved parent only means the number is unknown
            break
        if parent.get("sha256") and current.sha256 != parent["sha256"]:
            break
    return None, None


def size_ratios(original: dict, candidate: dict) -> dict:
    """File bytes, MACs and params of both (as :func:`describe_artifact` gives them) and candidate / original."""

    def ratio(key):
        o, c = original.get(key), candidate.get(key)
        return (c / o) if isinstance(o, (int, float)) and isinstance(c, (int, float)) and o else None

    return {
        "original_bytes": original["size_bytes"],
        "candidate_bytes": candidate["size_bytes"],
        "size_ratio": ratio("size_bytes"),
        "original_macs": original.get("macs"),
        "candidate_macs": candidate.get("macs"),
        "macs_ratio": ratio("macs"),
        "original_params": original.get("params"),
        "candidate_params": candidate.get("params"),
        "params_ratio": ratio("params"),
    }
