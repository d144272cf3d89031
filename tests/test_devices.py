"""Device profiles: every shipped YAML validates, states the facts deploy/build rely on, and bad profiles
or names fail with a message that names the fix."""

from __future__ import annotations

import json

import pytest

from edgecnn.devices import (
    DeviceProfile,
    UnknownDevice,
    list_profiles,
    load_profile,
    parse_version,
    profile_names,
    version_floor,
)
from edgecnn.errors import InvalidInput

EXPECTED = {
    "jetson-nano",
    "jetson-tx2",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-orin-nx-8gb",
    "jetson-agx-orin",
    "x86-gpu",
    "x86-cpu",
}


def test_every_profile_loads_and_is_consistent():
    profiles = {p.name: p for p in list_profiles()}
    assert EXPECTED <= set(profiles)
    for p in profiles.values():
        assert isinstance(p, DeviceProfile) and p.path is not None and p.path.stem == p.name
        assert p.precisions and set(p.precisions) <= {"fp32", "fp16", "int8"}
        if p.uses_tensorrt:
            assert p.trt_min <= version_floor(p.trt_default) <= p.trt_max
            assert p.compute_capability and p.default_workspace_gb and p.default_workspace_gb < p.memory_gb
            assert p.software_for(p.trt_default) is not None, f"{p.name}: no software row ships its default TensorRT"
            for row in p.software:  # every listed release lies inside the stated range
                assert p.trt_in_range(row["tensorrt"]), (p.name, row)
        if p.dla_cores:
            assert p.dla_version in ("1.0", "2.0")


def test_profile_facts():
    nano = load_profile("jetson-nano")
    assert nano.compute_capability == ("5.3",) and not nano.supports("int8") and nano.supports("fp16")
    assert (nano.trt_min, nano.trt_max) == ((8, 0), (8, 2)) and "4.6" in nano.jetpack_text
    assert nano.software_for("8.2")["cuda"] == "10.2" and nano.dla_cores == 0
    for name in ("jetson-xavier-nx", "jetson-agx-xavier"):
        p = load_profile(name)
        assert p.compute_capability == ("7.2",) and p.dla_cores == 2 and p.trt_max == (8, 5)
        assert p.software_for("8.5")["jetpack"].startswith("5.1")
    orin_nano = load_profile("jetson-orin-nano")
    assert orin_nano.compute_capability == ("8.7",) and orin_nano.dla_cores == 0
    assert load_profile("jetson-orin-nx").dla_cores == 2 and load_profile("jetson-orin-nx-8gb").dla_cores == 1
    agx = load_profile("jetson-agx-orin")
    assert agx.dla_cores == 2 and agx.software_for("8.5")["jetpack"].startswith("5.1")
    assert agx.software_for("8.6")["jetpack"] == "6.0" and agx.software_for("10.3")["cuda"] == "12.6"
    gpu = load_profile("x86-gpu")
    assert gpu.trt_in_range("10.3") and gpu.trt_in_range("11.2") and not gpu.trt_in_range("8.5")
    cpu = load_profile("x86-cpu")
    assert cpu.runtime == "onnxruntime" and cpu.tensorrt is None and not cpu.uses_tensorrt


def test_version_parsing():
    assert (
        parse_version("8.5.2.2") == (8, 5) and parse_version("10.x") == (10, 999) and version_floor("10.x") == (10, 0)
    )
    with pytest.raises(ValueError):
        parse_version("ten")


def test_unknown_device_suggests():
    with pytest.raises(UnknownDevice, match="Did you mean 'jetson-orin-nano'"):
        load_profile("jetson-orin-nan")
    with pytest.raises(UnknownDevice, match="does not exist"):
        load_profile("/nonexistent/board.yaml")


def test_dla_and_precision_checks():
    with pytest.raises(InvalidInput, match="has no DLA"):
        load_profile("jetson-nano").check_dla_core(0)
    with pytest.raises(InvalidInput, match=r"2 DLA core\(s\) \(index 0-1\); --dla-core 2 does not exist"):
        load_profile("jetson-agx-orin").check_dla_core(2)
    load_profile("jetson-agx-orin").check_dla_core(1)
    with pytest.raises(InvalidInput, match="jetson-nano .*cannot run INT8.*fp16"):
        load_profile("jetson-nano").check_precision("int8")
    with pytest.raises(InvalidInput, match="does not run FP16"):
        load_profile("x86-cpu").check_precision("fp16")


GOOD = """name: my-board
description: test board
target: jetson
runtime: tensorrt
arch: aarch64
compute_capability: ["8.7"]
dla_cores: 0
precisions: [fp32, fp16]
memory_gb: 8
default_workspace_gb: 1
tensorrt: {min: "8.5", max: "10.7", default: "10.3"}
software:
  - {jetpack: "6.1", tensorrt: "10.3.0", cuda: "12.6"}
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t + "dla_core: 1\n", r"unknown key 'dla_core'. Did you mean 'dla_cores'"),
        (lambda t: t.replace("memory_gb: 8\n", ""), "lacks the required key 'memory_gb'"),
        (lambda t: t.replace("dla_cores: 0", "dla_cores: two"), "'dla-cores' must be a whole number, got 'two'"),
        (lambda t: t.replace('default: "10.3"', 'default: "11.0"'), "default 11.0 is outside"),
        (lambda t: t.replace("target: jetson", "target: jetsn"), "'target' must be one of .*Did you mean 'jetson'"),
        (lambda t: t.replace("[fp32, fp16]", "[fp32, bf16]"), "'precisions' must list"),
        (lambda t: t.replace("dla_cores: 0", "dla_cores: 2"), "needs 'dla_version'"),
        (lambda t: t.replace("name: my-board", "name: other"), "must match the file name"),
        (lambda t: t.replace("{jetpack:", "{jetpak:"), "'software' entry"),
        (lambda t: t + ": [", "not valid YAML"),
    ],
)
def test_invalid_profiles_are_errors(tmp_path, edit, message):
    f = tmp_path / "my-board.yaml"
    f.write_text(edit(GOOD))
    with pytest.raises(InvalidInput, match=message):
        load_profile(f)


def test_custom_profile_folder(tmp_path, monkeypatch):
    (tmp_path / "my-board.yaml").write_text(GOOD)
    monkeypatch.setenv("EDGECNN_DEVICES", str(tmp_path))
    assert "my-board" in profile_names()
    p = load_profile("my-board")
    assert p.trt_default == "10.3" and not p.supports("int8")
    assert load_profile(tmp_path / "my-board.yaml") == p


def test_cli_devices(cli_run, tmp_path):
    assert cli_run(["devices", "--help"]).exit_code == 0
    out = tmp_path / "devices.json"
    r = cli_run(["devices", "--json", out])
    assert r.exit_code == 0
    for name in EXPECTED:
        assert name in r.output
    data = json.loads(out.read_text())
    assert {d["name"] for d in data} >= EXPECTED
    nano = next(d for d in data if d["name"] == "jetson-nano")
    assert nano["compute_capability"] == ["5.3"] and "int8" not in nano["precisions"]
    r = cli_run(["devices", "jetson-agx-orin"])
    assert r.exit_code == 0 and "JetPack" in r.output and "jetpack 6.0" in r.output


def test_cli_devices_unknown(cli_run):
    r = cli_run(["devices", "jetson-orin-nan"])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.strip().splitlines() if ln]
    assert len(lines) == 1 and "Did you mean 'jetson-orin-nano'" in lines[0] and "Traceback" not in r.output


def test_installed_wheel_finds_profiles_under_share(tmp_path, monkeypatch):
    """Outside a source checkout the profiles come from <prefix>/share/edgecnn/devices (pyproject data-files)."""
    import shutil
    import sys

    import edgecnn.devices as devices

    share = tmp_path / "share" / "edgecnn" / "devices"
    share.mkdir(parents=True)
    for f in devices.BUILTIN_DIR.glob("*.yaml"):
        shutil.copy(f, share / f.name)
    monkeypatch.setattr(devices, "BUILTIN_DIR", tmp_path / "site-packages" / "devices")  # not there in a wheel
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.delenv("EDGECNN_DEVICES", raising=False)
    assert devices.search_dirs()[-1] == share
    assert sorted(p.name for p in devices.list_profiles()) == sorted(f.stem for f in share.glob("*.yaml"))


def test_wheel_ships_every_profile(tmp_path):
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("edgecnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/data/share/edgecnn/devices/" in n}
    assert shipped == {f.name for f in (root / "devices").glob("*.yaml")} and len(shipped) >= 10
    assert "edgecnn/deploy_templates/build_engine.sh" in names or any(n.endswith("verify.sh") for n in names)


def test_default_device_per_target():
    """default_device is the one place that maps a target to the profile it deploys to."""
    from edgecnn.devices import TARGETS, default_device
    from edgecnn.errors import OptionError

    for target in TARGETS:
        assert load_profile(default_device(target)).target == target
    with pytest.raises(OptionError, match="--target must be one of jetson, gpu, cpu, got 'jetsn'. Did you mean"):
        default_device("jetsn")
