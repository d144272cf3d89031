"""Environment fingerprint: which libraries and which machine produced a number."""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from importlib import metadata

_PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "nncf", "torch-pruning", "openvino", "tensorrt")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    wanted = (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "avx512_bf16",
        "amx_bf16",
        "neon",
        "asimd",
    )
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def fingerprint(*, with_gpu: bool = True) -> dict:
    """A JSON-able description of this machine and the library versions in use.

    GPU fields come from torch when this process has already imported it (every stage that ran a torch
    or TensorRT model has; a fingerprint never pays for a torch import). ``with_gpu`` False leaves them out.
    """
    info: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "versions": {p: v for p in _PACKAGES if (v := package_version(p)) is not None},
    }
    info["versions"]["edgecnn"] = package_version("edgecnn") or "dev"
    if with_gpu:
        info.update(_gpu_facts(sys.modules.get("torch")))
    return info


def _gpu_facts(torch) -> dict:
    """Name, compute capability and CUDA version of the current GPU, from an imported torch (or {})."""
    try:
        if torch is not None and torch.cuda.is_available():
            idx = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(idx)
            return {
                "gpu": torch.cuda.get_device_name(idx),
                "compute_capability": f"{major}.{minor}",
                "cuda": torch.version.cuda,
            }
    except Exception:  # noqa: BLE001 - a fingerprint must never fail the caller
        pass
    return {}


def fingerprint_key(info: dict) -> dict:
    """The part of a fingerprint that must match for latencies to be comparable."""
    return {
        "cpu": info.get("cpu"),
        "cpu_count": info.get("cpu_count"),
        "gpu": info.get("gpu"),
        "versions": {k: info.get("versions", {}).get(k) for k in ("torch", "onnxruntime", "openvino", "tensorrt")},
    }


def physical_cores() -> int:
    """Physical cores (torch's and ONNX Runtime's default thread count); logical CPUs as fallback."""
    cores, phys, core = set(), None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in list(fh) + [""]:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":", 1)[1].strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1
