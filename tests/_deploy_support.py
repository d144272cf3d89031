"""Helpers for the device / TensorRT / doctor / deploy tests: real ONNX artifacts of the trained LeNet-5
(FP32 via edgecnn's exporter, INT8 Q/DQ via ONNX Runtime's static quantizer on real digits) and a real
OpenSSH server on 127.0.0.1 for the --host tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np


def export_lenet_onnx(torch_art, out: Path, *, opset: int = 13):
    """ONNX artifact of a torch artifact (edgecnn.export when present, else the legacy torch exporter)."""
    try:
        from edgecnn.export.onnx import export_onnx
    except ImportError:
        export_onnx = None
    if export_onnx is not None:
        return export_onnx(torch_art, out, opset=opset, progress=False)
    import torch

    from edgecnn.artifact import new_manifest, write_artifact
    from edgecnn.models import load_torch_model

    model = load_torch_model(torch_art)
    manifest = new_manifest(
        model=torch_art.model,
        format="onnx",
        file="model.onnx",
        precision="fp32",
        input=torch_art.input,
        classes=torch_art.classes,
        stage="export",
        params={"opset": opset},
        parent=torch_art,
        architecture=torch_art.manifest.get("architecture"),
    )

    def write(tmp: Path) -> None:
        torch.onnx.export(
            model,
            torch.zeros(1, *torch_art.input_shape),
            str(tmp / "model.onnx"),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )

    return write_artifact(out, manifest, write)


def quantize_qdq(onnx_art, out: Path, *, n_calib: int = 128):
    """INT8 Q/DQ ONNX artifact for TensorRT (symmetric int8, per-channel weights, float biases), calibrated
    with ONNX Runtime's quantize_static on real training digits."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgecnn.artifact import new_manifest, write_artifact
    from edgecnn.data import load_dataset

    ds = load_dataset("digits", onnx_art.input, "train")
    x = np.stack([ds[i][0].numpy() for i in range(n_calib)]).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x[i : i + 32]} for i in range(0, len(x), 32)])

        def get_next(self):
            return next(self.batches, None)

    manifest = new_manifest(
        model=onnx_art.model,
        format="onnx",
        file="model.onnx",
        precision="int8",
        input=onnx_art.input,
        classes=onnx_art.classes,
        stage="quantize",
        params={"tool": "onnxruntime.quantize_static", "calibration": n_calib},
        parent=onnx_art,
        architecture=onnx_art.manifest.get("architecture"),
    )

    def write(tmp: Path) -> None:
        quantize_static(
            str(onnx_art.model_file),
            str(tmp / "model.onnx"),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )

    return write_artifact(out, manifest, write)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_binary() -> str | None:
    for cand in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class LoopbackSshd:
    """A throwaway sshd on 127.0.0.1: temp host key, temp authorized_keys with a fresh client key."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.key = self.root / "client_key"
        self.proc = None

    def start(self) -> LoopbackSshd:
        sshd = sshd_binary()
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / name)], check=True)
        auth = self.root / "authorized_keys"
        shutil.copyfile(self.root / "client_key.pub", auth)
        auth.chmod(0o600)
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.root / 'host_key'}",
                    f"AuthorizedKeysFile {auth}",
                    "PermitRootLogin yes",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self._log = open(self.root / "sshd.log", "wb")
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError("sshd did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    @property
    def ssh_options(self) -> list[str]:
        return ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]
