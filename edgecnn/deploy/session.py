"""A device over ssh for ``edgecnn eval / bench / check --host``: its state, its copies, its runners.

:class:`DeviceSession` reads the device's state with a small probe (``deploy_templates/probe.py``, sent
to the device's Python on stdin), refuses a device whose Python lacks what run.py needs before anything
is copied, copies each bundle and the host's preprocessed inputs once, and starts one ``run.py --serve``
per bundle (:class:`ServedModel`): it checks its files and the inputs' sha256, writes the logits of every
input, then times latency blocks on request, so :func:`edgecnn.bench.measure_latency` interleaves models
on the device exactly as it does here.

What is on the device is trusted by content, never by name: a bundle lives in ``<remote-dir>/bundles/KEY``
(KEY: sha256 of its manifest's file list) and is reused only when its manifest lists the same files and
``run.py --check-files`` passes there; inputs live in ``<remote-dir>/data/SHA256.npy`` and are reused only
when their sha256 is that name. A copy lands in ``*.part`` and is renamed only after it checked out, so an
interrupted copy is redone, never used; a finished copy that no longer checks out is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..devices import TARGETS, DeviceProfile, default_device, load_profile
from ..errors import InvalidInput, OptionError
from ..integrity import file_digest
from .remote import RemoteError, RemoteOptions, _run, require_ssh_tools, ssh_options

GATE_DIR = "edgecnn-gate"
SERVE_PREFIX = "edgecnn-serve: "
UNAVAILABLE = "unavailable"
#: what the device's Python must import to run a bundle of each runtime, and how to get it there
NEEDS = {"onnxruntime": ("numpy", "onnxruntime"), "tensorrt": ("numpy", "tensorrt")}
INSTALL = {
    "numpy": "pip3 install numpy (Jetson: sudo apt install python3-numpy)",
    "onnxruntime": "pip3 install onnxruntime",
    "tensorrt": "sudo apt install python3-libnvinfer (JetPack's TensorRT for Python)",
}
#: on the device: the key of a bundle's manifest (sha256 of its file list), as :func:`bundle_key` computes it
_KEY = (
    "import hashlib,json,sys\n"
    "f=json.load(open(sys.argv[1]))['files']\n"
    "print(hashlib.sha256(json.dumps(f,sort_keys=True,separators=(',',':')).encode()).hexdigest())"
)
#: on the device: the sha256 of each file named, or 'missing'
_SHA = (
    "import hashlib,os,sys\n"
    "for p in sys.argv[1:]:\n"
    " h=hashlib.sha256()\n"
    " if not os.path.isfile(p):\n  print('missing'); continue\n"
    " with open(p,'rb') as f:\n  for b in iter(lambda: f.read(1<<20), b''): h.update(b)\n"
    " print(h.hexdigest())"
)


@dataclass
class DeviceOptions(RemoteOptions):
    """Where ``eval`` / ``bench`` / ``check`` run with ``--host``: the ssh options of ``deploy --host`` plus
    ``device``, the profile the bundles are made for (a name, a target's default, or a profile YAML)."""

    device: str = "cpu"

    @classmethod
    def from_cli(cls, ssh: dict, device: str | None) -> DeviceOptions | None:
        """The options of a command's ssh flags and ``--device``; None without --host (then --device is the
        local one). Their rules raise OptionError (exit 2)."""
        options = cls().merged({**ssh, "ssh_option": tuple(ssh.get("ssh_option") or ()), "device": device or "cpu"})
        return options if options.host else None

    def validate(self) -> None:
        super().validate()
        if self.host is not None:
            self.profile()

    def profile(self) -> DeviceProfile:
        name = default_device(self.device) if self.device in TARGETS else self.device
        try:
            return load_profile(name)
        except InvalidInput as exc:
            raise OptionError(f"--device {self.device} (with --host): {exc}") from None


def bundle_key(art: Artifact) -> str:
    """sha256 of the bundle's file list (each file with its sha256): the same files give the same key."""
    files = json.dumps(art.manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(files.encode()).hexdigest()


class DeviceSession:
    """One device: ssh / scp commands, the probe, copies by content, served models. Use it as a context
    manager: leaving it stops every served model and removes this session's logits from the device."""

    def __init__(self, options: DeviceOptions):
        options.validate()
        require_ssh_tools()
        opts = ssh_options(
            port=options.port,
            identity=options.identity,
            options=options.ssh_option,
            connect_timeout=options.connect_timeout,
        )
        port = options.port
        self.options, self.host, self.py = options, options.host, options.remote_python
        self.ssh = ["ssh", *opts, *(["-p", str(port)] if port else []), "--", options.host]
        self.scp = ["scp", "-q", *opts, *(["-P", str(port)] if port else []), "--"]
        self.base = (options.remote_dir or GATE_DIR).rstrip("/")
        self.run_dir = f"{self.base}/runs/{uuid.uuid4().hex[:12]}"
        self.profile = options.profile()
        self.served: list[ServedModel] = []
        self.local = tempfile.TemporaryDirectory(prefix="edgecnn-device-")

    def __enter__(self) -> DeviceSession:
        return self

    def __exit__(self, *exc) -> None:
        for served in self.served:
            served.close()
        try:
            self.sh(f"rm -rf -- {shlex.quote(self.run_dir)}", what="clean up", timeout=30)
        except RemoteError:
            pass
        self.local.cleanup()

    # -- commands ----------------------------------------------------------------------------------
    def sh(self, command: str, *, what: str, timeout: float | None = None, input: str | None = None):
        timeout = timeout or self.options.remote_timeout
        return _run(
            [*self.ssh, command], timeout=timeout, what=what, host=self.host, port=self.options.port, input=input
        )

    def python(self, program: str, *args: str, what: str):
        words = " ".join(shlex.quote(a) for a in (self.py, "-c", program, *args))
        return self.sh(words, what=what)

    def copy(self, src: str, dst: str, *, what: str, recursive: bool = False) -> None:
        cmd = [*self.scp[:1], *(["-r"] if recursive else []), *self.scp[1:], src, dst]
        proc = _run(cmd, timeout=self.options.remote_timeout, what=what, host=self.host, port=self.options.port)
        if proc.returncode != 0:
            raise RemoteError(f"Copying {what} with {self.host} failed: {_last(proc.stderr)}")

    # -- state -------------------------------------------------------------------------------------
    def probe(self) -> dict:
        """The device's state (every field read there or 'unavailable'); RemoteError when its Python cannot
        run the profile's runtime, naming what to install."""
        source = resources.files("edgecnn.deploy_templates").joinpath("probe.py").read_text(encoding="utf-8")
        proc = self.sh(f"{shlex.quote(self.py)} -", what="probe the device", timeout=60, input=source)
        try:
            found = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise RemoteError(
                f"{self.py} did not run on {self.host} (exit {proc.returncode}: {_last(proc.stderr)}); install "
                "Python 3 there (sudo apt install python3) or pass --remote-python the path of its Python 3."
            ) from None
        missing = [m for m in NEEDS[self.profile.runtime] if not found["modules"].get(m)]
        if missing:
            raise RemoteError(
                f"{self.host} ({self.py}) lacks {', '.join(missing)}, which run.py needs for "
                f"{self.profile.runtime}: {'; '.join(INSTALL[m] for m in missing)} - or pass --remote-python a "
                "Python that has them."
            )
        return {**found["state"], "host": self.host, "profile": self.profile.name}

    # -- copies by content -------------------------------------------------------------------------
    def ensure_bundle(self, art: Artifact, role: str) -> dict:
        """``art`` (a bundle) on the device, copied unless the same files are already there and check out."""
        key = bundle_key(art)
        rdir = f"{self.base}/bundles/{key[:32]}"
        q = shlex.quote
        t0 = time.perf_counter()
        listing = self.sh(f"[ -d {q(rdir)} ] && echo final; true", what="look for the bundle")
        copied = "final" not in listing.stdout.split()
        if not copied:
            why = self._check_bundle(rdir, key)
            if why:
                raise RemoteError(
                    f"The bundle on {self.host}:{rdir} is not the one edgecnn copied: {why} (changed on the device); "
                    f"delete {rdir} there to copy it again."
                )
        else:
            part = rdir + ".part"  # a copy cut short earlier is removed: never used
            self._ok(self.sh(f"rm -rf -- {q(part)} && mkdir -p -- {q(self.base)}/bundles", what="prepare"), "prepare")
            self.copy(str(art.path.resolve()), f"{self.host}:{part}", what=f"the {role} bundle", recursive=True)
            why = self._check_bundle(part, key)
            if why:
                self.sh(f"rm -rf -- {q(part)}", what="remove a bad copy")
                raise RemoteError(
                    f"The copy of the {role} bundle to {self.host}:{part} arrived changed: {why}; run again."
                )
            self._ok(
                self.sh(f"[ -e {q(rdir)} ] || mv -- {q(part)} {q(rdir)}; rm -rf -- {q(part)}", what="finish"), "finish"
            )
        return {
            "role": role,
            "bundle": art.path.name,
            "remote_dir": rdir,
            "copied": copied,
            "seconds": round(time.perf_counter() - t0, 2),
        }

    def build_engine(self, bundle: dict) -> None:
        """A TensorRT bundle's engine, built on the device by its build_engine.sh unless already built there."""
        q = shlex.quote
        proc = self.sh(
            f"cd {q(bundle['remote_dir'])} && if [ -f model.engine ]; then echo reused; "
            f"else PYTHON={q(self.py)} bash build_engine.sh; fi",
            what="build the engine",
        )
        if proc.returncode != 0:
            raise RemoteError(
                f"build_engine.sh failed on {self.host} (exit {proc.returncode}): {_last(proc.stderr or proc.stdout)}"
            )
        bundle["engine"] = "reused" if proc.stdout.strip().endswith("reused") else "built on the device"

    def _check_bundle(self, rdir: str, key: str) -> str | None:
        """Why the bundle in ``rdir`` is not the one with ``key`` (None when it is, file by file)."""
        q = shlex.quote
        py = q(self.py)
        proc = self.sh(
            f"{py} -c {q(_KEY)} {q(rdir + '/manifest.json')} && {py} {q(rdir + '/run.py')} --check-files",
            what="check the bundle's files",
        )
        if proc.returncode != 0:
            return _last(proc.stderr).removeprefix("error: ").split(" (")[0]
        if proc.stdout.split()[:1] != [key]:
            return "its manifest.json lists other files than the bundle made here"
        return None

    def ensure_inputs(self, path: Path, digest: str) -> dict:
        """The preprocessed inputs at ``<remote-dir>/data/DIGEST.npy``, copied unless already there."""
        rpath = f"{self.base}/data/{digest}.npy"
        part = rpath + ".part"
        q = shlex.quote
        found = self.python(_SHA, rpath, what="look for the inputs").stdout.split()[:1]
        if found and found[0] not in ("missing", digest):
            raise RemoteError(
                f"{self.host}:{rpath} does not match its sha256 (changed on the device); delete it there to copy "
                "it again."
            )
        copied = found != [digest]
        if copied:
            self._ok(self.sh(f"rm -f -- {q(part)} && mkdir -p -- {q(self.base)}/data", what="prepare"), "prepare")
            self.copy(str(path), f"{self.host}:{part}", what="the inputs")
            if self.python(_SHA, part, what="check the inputs").stdout.split()[:1] != [digest]:
                self.sh(f"rm -f -- {q(part)}", what="remove a bad copy")
                raise RemoteError(f"The inputs copied to {self.host}:{part} arrived changed (sha256); run again.")
            self._ok(self.sh(f"mv -f -- {q(part)} {q(rpath)}", what="finish"), "finish")
        mkdir = self.sh(f"mkdir -p -- {q(self.run_dir)}", what="prepare")
        self._ok(mkdir, "prepare")
        return {"remote_path": rpath, "sha256": digest, "bytes": path.stat().st_size, "copied": copied}

    def _ok(self, proc, what: str) -> None:
        if proc.returncode != 0:
            raise RemoteError(f"Cannot {what} on {self.host}: {_last(proc.stderr)}")

    # -- models ------------------------------------------------------------------------------------
    def serve(self, bundle: dict, inputs: dict, *, label: str, artifact: Artifact, batch: int, threads: int | None):
        served = ServedModel(self, bundle, inputs, label=label, artifact=artifact, batch=batch, threads=threads)
        self.served.append(served)
        return served

    def fetch_logits(self, served: ServedModel) -> np.ndarray:
        """The served model's logits, copied back and checked against the sha256 the device reported."""
        local = Path(self.local.name) / f"{len(os.listdir(self.local.name))}.npy"
        self.copy(f"{self.host}:{served.logits_path}", str(local), what="the logits")
        if file_digest(local) != served.ready["logits_sha256"]:
            raise RemoteError(f"The logits copied back from {self.host} do not match their sha256; run again.")
        return np.load(local, allow_pickle=False)


class ServedModel:
    """One bundle's ``run.py --serve`` on the device, also a runner-like object for
    :func:`edgecnn.bench.measure_latency` (``timed_calls``: seconds per call, timed on the device)."""

    def __init__(self, session: DeviceSession, bundle: dict, inputs: dict, *, label, artifact, batch, threads):
        self.session, self.label, self.artifact = session, label, artifact
        self.input_spec = artifact.input
        self.logits_path = f"{session.run_dir}/{uuid.uuid4().hex[:8]}.npy"
        words = [session.py, f"{bundle['remote_dir']}/run.py", "--serve", "--inputs", inputs["remote_path"]]
        words += ["--inputs-sha256", inputs["sha256"], "--logits", self.logits_path, "--batch-size", str(batch)]
        words += ["--threads", str(threads)] if threads else []
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*session.ssh, "exec " + " ".join(shlex.quote(w) for w in words)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self._buf = b""
        self.ready = self._reply(session.options.remote_timeout)
        self.description = f"{self.ready['runner']} on {session.host}"

    def infer(self, x):  # pragma: no cover - bench times a served model through timed_calls
        raise RemoteError("a served model runs on the device; time it with timed_calls")

    def timed_calls(self, x, *, warmup=None, block_s=None, preroll: float = 0.0) -> list[float]:
        """Seconds per call on the device: a warm-up (int calls / float seconds) or one timed block."""
        if warmup is not None:
            req = {"cmd": "warm", **({"seconds": warmup} if isinstance(warmup, float) else {"calls": warmup})}
        else:
            req = {"cmd": "block", "seconds": block_s, "preroll": preroll}
        self.proc.stdin.write((json.dumps({**req, "batch": int(len(x))}) + "\n").encode())
        self.proc.stdin.flush()
        return self._reply(max(60.0, 20 * float(block_s or 1)))["times"]

    def _reply(self, timeout: float) -> dict:
        """The next protocol line from the device (other output is ignored); RemoteError when run.py stopped."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith(SERVE_PREFIX):
                    reply = json.loads(text[len(SERVE_PREFIX) :])
                    if "error" in reply:
                        raise RemoteError(f"run.py on {self.session.host}: {reply['error']}")
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise RemoteError(f"run.py on {self.session.host} did not answer within {timeout:.0f} s.")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RemoteError(self._stopped())
                self._buf += chunk

    def _stopped(self) -> str:
        rc = self.proc.wait(timeout=30)
        self._err.seek(0)
        last = _last(self._err.read().decode("utf-8", "replace"))
        if rc == 255:
            return f"Cannot reach {self.session.host} over ssh: {last}"
        return f"run.py on {self.session.host} stopped (exit {rc}): {last.removeprefix('error: ')}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def _last(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip() and not ln.startswith("warning:")]
    return lines[-1][:300] if lines else "no output"
