"""The device-state probe of edgecnn eval / bench / check --host: sent over ssh to the device's Python (stdin)
and run there; prints one JSON object. Standard library only, Python 3.6+ (JetPack 4.6).

Every field is what the device says, or "unavailable" when it cannot be read here (not a Jetson, not root,
tool not installed): nothing is guessed. ``power`` (nvpmodel mode and jetson_clocks) decides whether two
latencies were measured under the same power settings.
"""

import glob
import importlib
import json
import os
import platform
import re
import subprocess
import sys

UNAVAILABLE = "unavailable"
#: devfreq names of Jetson GPUs (Nano gm20b, TX2 gp10b, Xavier gv11b, Orin ga10b)
GPU_DEVFREQ = re.compile(r"gpu|gm20b|gp10b|gv11b|ga10b|gb10b", re.I)
EMC_RATE = (
    "/sys/kernel/debug/bpmp/debug/clk/emc/rate",
    "/sys/kernel/debug/clk/emc/clk_rate",
    "/sys/kernel/debug/clk/override.emc/clk_rate",
)
MODULES = ("numpy", "onnxruntime", "tensorrt", "PIL")


def read(path):
    try:
        with open(path, "rb") as fh:
            text = fh.read(4096).decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return None
    return text or None


def command(*argv):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)  # noqa: UP022 - Python 3.6
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode("utf-8", "replace").strip()
    return text if out.returncode == 0 and text else None


def l4t():
    line = read("/etc/nv_tegra_release")
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", line or "")
    return "R{}.{}".format(*m.groups()) if m else (line.splitlines()[0][:120] if line else None)


def nvpmodel():
    text = command("nvpmodel", "-q")
    m = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    if not m:
        return None
    ids = [ln.strip() for ln in text.splitlines() if ln.strip().isdigit()]
    return {"name": m.group(1), "id": int(ids[0]) if ids else None}


def freqs(folder, cur="cur_freq"):
    vals = {
        k: read(os.path.join(folder, f)) for k, f in (("cur_hz", cur), ("min_hz", "min_freq"), ("max_hz", "max_freq"))
    }
    return {k: int(v) for k, v in vals.items() if v and v.isdigit()} or None


def gpu_clock():
    for folder in sorted(glob.glob("/sys/class/devfreq/*")):
        if GPU_DEVFREQ.search(os.path.basename(folder)) or GPU_DEVFREQ.search(read(folder + "/name") or ""):
            got = freqs(folder)
            if got:
                return dict(got, path=folder)
    return None


def emc_clock():
    for path in EMC_RATE:
        v = read(path)
        if v and v.isdigit():
            return {"cur_hz": int(v), "path": path}
    return None


def jetson_clocks(gpu):
    """jetson_clocks pins every CPU and the GPU at their maximum: min == max frequency (read, not assumed)."""
    if not gpu or "min_hz" not in gpu or "max_hz" not in gpu:
        return None
    cpus = glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq")
    pinned = [read(c + "/scaling_min_freq") == read(c + "/scaling_max_freq") for c in cpus]
    return "on" if gpu["min_hz"] == gpu["max_hz"] and pinned and all(pinned) else "off"


def temperatures():
    out = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        kind, temp = read(zone + "/type"), read(zone + "/temp")
        if temp and temp.lstrip("-").isdigit():
            out[kind or os.path.basename(zone)] = int(temp) / 1000.0
    return out or None


def cpu_model():
    fields = {}
    for line in (read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields.get("model name") or fields.get("hardware") or platform.processor() or None


def module_version(name):
    try:
        return getattr(importlib.import_module(name), "__version__", "installed")
    except Exception:  # noqa: BLE001 - a module that does not import is as good as absent
        return None


def main():
    modules = {name: module_version(name) for name in MODULES}
    gpu = gpu_clock()
    trt = modules["tensorrt"] or command("dpkg-query", "-W", "-f=${Version}", "tensorrt")
    state = {
        "board": read("/proc/device-tree/model"),
        "l4t": l4t(),
        "jetpack": command("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"),
        "tensorrt": trt,
        "nvpmodel": nvpmodel(),
        "jetson_clocks": jetson_clocks(gpu),
        "gpu_clock": gpu,
        "emc_clock": emc_clock(),
        "temperature_c": temperatures(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_path": sys.executable,
        "numpy": modules["numpy"],
        "onnxruntime": modules["onnxruntime"],
    }
    state = dict((k, UNAVAILABLE if v is None else v) for k, v in state.items())
    print(json.dumps({"state": state, "modules": modules}))


if __name__ == "__main__":
    main()
