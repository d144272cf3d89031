"""Shipping a bundle to a device over ssh: copy it with scp, run ``build_engine.sh`` (TensorRT bundles)
and ``run.py --verify`` there, and report what the device said.

Nothing from a manifest reaches the remote shell unquoted: the host and the remote folder are checked
against safe character sets (a folder name that needs no quoting means the same to scp's SFTP and legacy
modes), commands are argv lists, and the one remote command line quotes every word; the remote folder is
replaced only when it is absent or an edgecnn bundle. ssh runs in batch mode (no password prompts),
and a host key seen for the first time is accepted and remembered (``StrictHostKeyChecking=accept-new``)
unless ``--ssh-option`` says otherwise.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifact import Artifact
from ..errors import EdgeCnnError, InvalidInput, MissingDependency, OptionError
from ..limits import MAX_SECONDS
from ..options import Options, bounded
from .scripts import file_word

log = logging.getLogger("edgecnn")

#: USER@HOST (or HOST, or an ssh config alias): no option-like leading '-', no shell characters
HOST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,63}@)?[A-Za-z0-9_][A-Za-z0-9._:-]{0,252}")
#: a remote folder: a word shlex.quote leaves as it is (so scp's SFTP and legacy modes read it alike)
REMOTE_DIR = re.compile(r"[A-Za-z0-9_@%+=:,./-]{1,1024}")


class RemoteError(EdgeCnnError):
    """The device could not be reached, or the build / verification on it failed."""


@dataclass
class RemoteOptions(Options):
    """Where and how ``edgecnn deploy --host`` ships a bundle; :meth:`validate` holds the option rules."""

    host: str | None = None  # USER@HOST; None: write the bundle only
    port: int | None = bounded(None, 1, 65535)
    identity: str | None = None
    remote_dir: str | None = None
    remote_python: str = "python3"
    ssh_option: tuple[str, ...] = ()
    remote_timeout: float = bounded(1800.0, 1, MAX_SECONDS)
    connect_timeout: int = bounded(10, 1, 300)  # seconds ssh waits for the device to answer

    def validate(self) -> None:
        if self.host is None and (self.port or self.identity or self.remote_dir or self.ssh_option):
            raise OptionError("--port, --identity, --remote-dir and --ssh-option need --host USER@HOST.")
        if self.host is not None:
            check_remote_names(self.host, self.remote_dir)

    def preflight(self) -> None:
        """Fail on a bad key file or a missing ssh client before anything is written."""
        if self.host:
            require_ssh_tools()
            ssh_options(port=self.port, identity=self.identity, options=self.ssh_option)


def check_remote_names(host: str, remote_dir: str | None) -> None:
    """OptionError unless ``host`` is USER@HOST and ``remote_dir`` a plain relative or absolute folder."""
    if not HOST.fullmatch(host):
        raise OptionError(
            f"--host {host!r:.80} is not USER@HOST (letters, digits, '.', '_', '-', ':'; not starting with '-')."
        )
    if remote_dir is None:
        return
    parts = remote_dir.split("/")
    if (
        not REMOTE_DIR.fullmatch(remote_dir)
        or ".." in parts
        or remote_dir.rstrip("/") in ("", ".")
        or any(p.startswith("-") for p in parts)
    ):
        raise OptionError(
            f"--remote-dir {remote_dir!r:.80} is not a bundle folder: use letters, digits and _ @ % + = : , . / -, "
            "no '..' or '~', no part starting with '-', not / itself (e.g. --remote-dir edgecnn-bundles/my-bundle)."
        )


def require_ssh_tools() -> None:
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise MissingDependency(
                f"'{tool}' is not installed here; install the OpenSSH client (apt install openssh-client)."
            )


def ssh_options(*, port: int | None, identity: str | None, options=(), connect_timeout: int = 10) -> list[str]:
    opts = [
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={int(connect_timeout)}",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
    ]
    if not any(str(o).split("=")[0] == "StrictHostKeyChecking" for o in options):
        opts += ["-o", "StrictHostKeyChecking=accept-new"]
    for o in options:
        opts += ["-o", str(o)]
    if identity:
        if not Path(identity).expanduser().is_file():
            raise InvalidInput(f"--identity {identity} does not exist; pass the private key file for the device.")
        opts += ["-i", str(Path(identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    return opts


def _run(
    cmd: list[str], *, timeout: float, what: str, host: str, port: int | None, input: str | None = None
) -> subprocess.CompletedProcess:
    log.info("%s: %s", what, " ".join(shlex.quote(c) for c in cmd))
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **stdin)
    except subprocess.TimeoutExpired:
        raise RemoteError(
            f"{what} on {host} did not finish within {timeout:.0f} s; check the device, or raise --remote-timeout."
        ) from None
    if proc.returncode == 255:
        last = (proc.stderr.strip().splitlines() or ["ssh failed"])[-1]
        raise RemoteError(
            f"Cannot reach {host}{f' (port {port})' if port else ''} over ssh: {last}; check --host, "
            "--port, --identity, and that sshd runs on the device and accepts this key."
        )
    return proc


def _prepare_command(rdir: str) -> str:
    """Remote shell line: replace ``rdir`` only when it is absent or holds an edgecnn bundle (never a
    folder of the user's), and create its parent."""
    d = shlex.quote(rdir)
    return (
        f"if [ -e {d} ] && [ ! -f {d}/manifest.json ]; then printf '%s exists and is not an edgecnn bundle "
        f"(no manifest.json); pass another --remote-dir\\n' {d} >&2; exit 3; fi; "
        f"rm -rf -- {d} && mkdir -p -- {shlex.quote(str(Path(rdir).parent))}"
    )


def _tail(text: str, n: int) -> list[str]:
    return text.strip().splitlines()[-n:]


def deploy_remote(
    bundle,
    host: str,
    *,
    port: int | None = None,
    identity: str | None = None,
    remote_dir: str | None = None,
    remote_python: str = "python3",
    options=(),
    connect_timeout: int = 10,
    timeout: float = 1800,
    build: bool | None = None,
) -> dict:
    """Copy ``bundle`` to ``host`` (USER@HOST) with scp, run build_engine.sh (TensorRT bundles) and
    ``run.py --verify`` there, and return what happened. Raises RemoteError if any step fails."""
    check_remote_names(host, remote_dir)
    require_ssh_tools()
    art = bundle if isinstance(bundle, Artifact) else Artifact.load(bundle, formats=("bundle",))
    runtime = json.loads((art.path / "bundle.json").read_text(encoding="utf-8"))["runtime"]
    build = (runtime == "tensorrt") if build is None else build
    rdir = remote_dir or f"edgecnn-bundles/{file_word(art.path.name)}"
    opts = ssh_options(port=port, identity=identity, options=options, connect_timeout=connect_timeout)
    ssh = ["ssh", *opts, *(["-p", str(port)] if port else []), "--", host]
    scp = ["scp", "-r", "-q", *opts, *(["-P", str(port)] if port else []), "--"]
    q, py = shlex.quote, shlex.quote(remote_python)
    t0 = time.perf_counter()
    proc = _run(
        [*ssh, _prepare_command(rdir)], timeout=connect_timeout + 30, what="prepare remote folder", host=host, port=port
    )
    if proc.returncode != 0:
        raise RemoteError(f"Cannot create {rdir} on {host}: {proc.stderr.strip()[-300:]}")
    proc = _run(
        [*scp, str(art.path.resolve()), f"{host}:{rdir}"],
        timeout=max(120, timeout / 4),
        what="copy bundle",
        host=host,
        port=port,
    )
    if proc.returncode != 0:
        raise RemoteError(f"Copying the bundle to {host}:{rdir} failed: {proc.stderr.strip()[-300:]}")
    steps = [{"step": "copy", "rc": 0, "seconds": round(time.perf_counter() - t0, 2)}]
    if build:
        t = time.perf_counter()
        proc = _run(
            [*ssh, f"cd {q(rdir)} && PYTHON={py} bash build_engine.sh"],
            timeout=timeout,
            what="build engine",
            host=host,
            port=port,
        )
        steps.append(
            {
                "step": "build_engine.sh",
                "rc": proc.returncode,
                "seconds": round(time.perf_counter() - t, 2),
                "tail": _tail(proc.stdout + proc.stderr, 8),
            }
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise RemoteError(f"build_engine.sh failed on {host} (exit {proc.returncode}): {last[0][:300]}")
    t = time.perf_counter()
    rt = "" if build or runtime == "onnxruntime" else " --runtime onnxruntime"
    proc = _run(
        [*ssh, f"cd {q(rdir)} && {py} run.py --verify{rt}"], timeout=timeout, what="verify", host=host, port=port
    )
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("edgecnn-verify-result: "):
            result = json.loads(line.split(": ", 1)[1])
    steps.append(
        {
            "step": "run.py --verify",
            "rc": proc.returncode,
            "seconds": round(time.perf_counter() - t, 2),
            "tail": [ln for ln in proc.stdout.strip().splitlines() if not ln.startswith("edgecnn-verify-result")][-6:],
        }
    )
    report = {
        "host": host,
        "port": port,
        "remote_dir": rdir,
        "runtime": result.get("runtime") if result else runtime,
        "steps": steps,
        "verify": result,
        "passed": bool(result and result.get("passed") and proc.returncode == 0),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if not report["passed"]:
        why = (result or {}).get("reason") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"Verification on {host}:{rdir} failed (exit {proc.returncode}): {why[:300]}")
    return report
