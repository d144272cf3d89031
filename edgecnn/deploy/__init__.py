"""Deployment bundles for Jetson, x86 GPU and CPU targets, and copying them to a device over ssh.

A bundle is an artifact (format ``bundle``) that a device can use without edgecnn installed::

    model.onnx         the model (FP32, FP16 or Q/DQ INT8 ONNX)
    build_engine.sh    trtexec with the flags of the TensorRT version found on the device (TensorRT targets)
    run.py             classify images / --verify, with TensorRT or ONNX Runtime; numpy-only preprocessing
    verify.sh          ./verify.sh = python3 run.py --verify
    bundle.json        preprocessing, classes, batch profile, trtexec flags per TensorRT family, tolerances
    golden/            real held-out images of the training data (else digits), their inputs and outputs (.npy)
    README.md          what to copy, what to run, what success looks like
    manifest.json      edgecnn manifest; sha256 of every file above (run.py checks them first)

Why trtexec on the device instead of an engine from the host: a TensorRT plan only loads in the
TensorRT version and on the GPU model that built it, so the engine must be built where it runs. The
script reads the TensorRT version from trtexec and picks the matching flag set (8.0-8.3, 8.4-8.6,
10.x, 11.x); the flag rules live in :func:`edgecnn.runtime.tensorrt.trtexec_args`.

The package: :mod:`.bundle` (the deploy stage, ``make_bundle``), :mod:`.scripts` (build_engine.sh and
README rendering), :mod:`.remote` (ssh / scp to a device); this module picks the artifact and runs the
command (``deploy``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..artifact import Artifact, is_artifact
from ..devices import default_device, load_profile
from ..errors import ArtifactError, EdgeCnnError
from ..runfolder import REPORT, unfinished
from .bundle import (
    BUNDLE_SCHEMA,
    GOLDEN_N,
    BundleOptions,
    GoldenImages,
    check_bundle,
    golden_images,
    make_bundle,
    reference_outputs,
    resolve_precision,
    tolerance,
)
from .remote import RemoteError, RemoteOptions, deploy_remote, ssh_options
from .scripts import build_script, bundle_readme, file_word

__all__ = [
    "BUNDLE_SCHEMA",
    "GOLDEN_N",
    "BundleOptions",
    "GoldenImages",
    "RemoteError",
    "RemoteOptions",
    "build_script",
    "bundle_readme",
    "check_bundle",
    "deploy",
    "deploy_remote",
    "golden_images",
    "latest_compress_output",
    "make_bundle",
    "reference_outputs",
    "resolve_precision",
    "ssh_options",
    "tolerance",
]

COMPRESS_DIR = Path("runs") / "compress"


# -- which artifact ------------------------------------------------------------------------------
def latest_compress_output(root: str | Path = ".") -> tuple[Artifact, str]:
    """The newest deployable artifact ``edgecnn compress`` wrote under ``root/runs/compress``.

    ``compress`` writes one folder per run, possibly holding several stage artifacts (pruned torch,
    quantized ONNX ...). Every manifest under it is read; ONNX artifacts win over torch ones (they are
    what compress hands to deployment), then the newest ``created`` time. Returns (artifact, why).
    """
    base = Path(root) / COMPRESS_DIR
    if not base.is_dir():
        raise ArtifactError(
            f"No ARTIFACT given and no '{base}' here; pass the artifact to deploy, or run "
            "'edgecnn compress' in this directory first."
        )
    # runs still going or interrupted (a re-run may have replaced some steps already): never deployed
    skipped = sorted(p.name for p in base.iterdir() if p.is_dir() and unfinished(p))
    # compress writes <run>/compress.json whose "final" names the artifact to deploy: trust the newest run
    for report in sorted(base.glob(f"*/{REPORT}"), key=lambda p: p.stat().st_mtime, reverse=True):
        if report.parent.name in skipped:
            continue
        try:
            final = json.loads(report.read_text(encoding="utf-8")).get("final")
        except (OSError, ValueError):
            continue
        for cand in ([Path(final), Path(root) / final] if final else []) + [report.parent / "final"]:
            if is_artifact(cand):
                art = Artifact.load(cand)
                return art, (
                    f"newest edgecnn compress output: {cand} (run {report.parent.name}, final step "
                    f"{art.stage}, {art.format} {art.precision}, created {art.manifest.get('created', '?')})"
                )
    found = []
    for mpath in sorted(base.rglob("manifest.json")):
        parts = mpath.relative_to(base).parts
        if any(part.startswith(".") for part in parts) or parts[0] in skipped:
            continue  # temporary directories of a running stage, runs that did not finish
        try:
            art = Artifact.load(mpath.parent, verify=False)  # make_bundle verifies the one chosen
        except EdgeCnnError:
            continue
        if art.format in ("onnx", "torch"):
            found.append(art)
    if not found:
        unfinished_note = (
            f" (run(s) {', '.join(skipped)} did not finish: run compress again into them)" if skipped else ""
        )
        raise ArtifactError(
            f"'{base}' holds no ONNX or torch artifact of a finished run{unfinished_note}; run 'edgecnn "
            "compress' first or pass ARTIFACT."
        )
    best = max(found, key=lambda a: (a.format == "onnx", str(a.manifest.get("created", "")), a.path.stat().st_mtime))
    why = (
        f"newest edgecnn compress output: {best.path} ({best.model}, {best.format}, {best.precision}, "
        f"stage {best.stage}, created {best.manifest.get('created', '?')})"
    )
    return best, why


# -- the command ---------------------------------------------------------------------------------
def deploy(
    artifact=None,
    *,
    target: str,
    device: str | None = None,
    out=None,
    host: str | None = None,
    port: int | None = None,
    identity: str | None = None,
    remote_dir: str | None = None,
    remote_python: str = "python3",
    ssh_option=(),
    remote_timeout: float = 1800,
    connect_timeout: int = 10,
    root: str | Path = ".",
    **bundle_kwargs,
) -> dict:
    """``edgecnn deploy``: pick the artifact (or the newest compress output), write the bundle, and with
    ``host`` copy it to the device and build + verify there. Returns {bundle, source, notes, remote}.
    ``bundle_kwargs`` are :func:`make_bundle`'s options."""
    remote = RemoteOptions().merged(
        dict(
            host=host,
            port=port,
            identity=identity,
            remote_dir=remote_dir,
            remote_python=remote_python,
            ssh_option=tuple(ssh_option),
            remote_timeout=remote_timeout,
            connect_timeout=connect_timeout,
        ),
        where="deploy",
    )
    device = device or default_device(target)
    if artifact is None:
        src, why = latest_compress_output(root)
    else:
        if not is_artifact(artifact):
            raise ArtifactError(
                f"'{artifact}' is not an edgecnn artifact directory (no manifest.json); pass the "
                "directory written by export / quantize / compress."
            )
        src, why = Artifact.load(artifact), f"{artifact}"
    remote.preflight()  # a bad key or a missing ssh fails before anything is written
    if out is None:  # a safe folder name: the model name is checked in make_bundle, --device may be a path
        prec = bundle_kwargs.get("precision") or src.precision
        out = Path(root) / "runs" / "deploy" / file_word(f"{src.model}-{load_profile(device).name}-{prec}")
    bundle = make_bundle(src, out, target=target, device=device, **bundle_kwargs)
    result = {"bundle": bundle, "source": why, "notes": bundle.manifest["bundle"]["notes"], "remote": None}
    if remote.host:
        result["remote"] = deploy_remote(
            bundle,
            remote.host,
            port=remote.port,
            identity=remote.identity,
            remote_dir=remote.remote_dir,
            remote_python=remote.remote_python,
            options=remote.ssh_option,
            timeout=remote.remote_timeout,
            connect_timeout=remote.connect_timeout,
        )
    return result
