"""The CI examples are executed, not just shown: the GitHub workflow and the GitLab job both call
examples/ci/gate.sh with the same settings, and the test runs exactly that command on the digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GATE = "examples/ci/gate.sh"
SHARED_KEYS = (
    "MODEL",
    "DATA",
    "COMPRESS",
    "PRUNE_MACS",
    "FINETUNE_EPOCHS",
    "OUT",
    "POLICY",
    "BASELINE",
    "ON_INCONCLUSIVE",
)


def _github() -> tuple[str, dict, dict]:
    wf = yaml.safe_load((REPO / "examples/ci/github-actions.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the bare key `on` as True
    assert "pull_request" in on
    (job,) = wf["jobs"].values()
    steps = [s for s in job["steps"] if GATE in str(s.get("run", ""))]
    assert len(steps) == 1, "exactly one step runs the gate script"
    env = {**(wf.get("env") or {}), **(job.get("env") or {}), **(steps[0].get("env") or {})}
    return steps[0]["run"].strip(), {k: str(v) for k, v in env.items()}, job


def _gitlab() -> tuple[str, dict, dict]:
    ci = yaml.safe_load((REPO / "examples/ci/.gitlab-ci.yml").read_text())
    jobs = {k: v for k, v in ci.items() if isinstance(v, dict) and "script" in v}
    (job,) = jobs.values()
    lines = [line for line in job["script"] if GATE in line]
    assert len(lines) == 1, "exactly one script line runs the gate script"
    env = {**(ci.get("variables") or {}), **(job.get("variables") or {})}
    return lines[0].strip(), {k: str(v) for k, v in env.items()}, job


def _run(command: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a CI command as the CI would (bash, repo root), with edgecnn from this interpreter's venv."""
    full = {k: v for k, v in os.environ.items()}
    full.update({k: v for k, v in env.items() if "${{" not in v and not v.startswith("$")})
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
    full.setdefault("NNCF_CI", "1")
    return subprocess.run(["bash", "-c", command], cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout)


def test_both_ci_files_call_the_same_gate_script():
    gh_cmd, gh_env, gh_job = _github()
    gl_cmd, gl_env, gl_job = _gitlab()
    assert gh_cmd == gl_cmd == GATE
    assert {k: gh_env.get(k) for k in SHARED_KEYS} == {k: gl_env.get(k) for k in SHARED_KEYS}
    out = gh_env["OUT"]
    assert gl_job["artifacts"]["reports"]["junit"] == f"{out}/junit.xml"
    assert f"{out}/report.md" in gl_job["artifacts"]["paths"]
    assert gl_job["allow_failure"]["exit_codes"] == [4]  # inconclusive warns, fail blocks
    gh_text = (REPO / "examples/ci/github-actions.yml").read_text()
    for f in ("report.md", "junit.xml", "report.png"):
        assert f"{out}/{f}" in gh_text
    assert (REPO / gh_env["POLICY"]).is_file()
    assert os.access(REPO / GATE, os.X_OK)


def test_scripts_parse_and_project_gate_covers_both_models():
    for script in (GATE, "scripts/ci_gate.sh"):
        res = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    text = (REPO / "scripts/ci_gate.sh").read_text()
    assert GATE in text and "MODEL=lenet5" in text and "MODEL=resnet18" in text
    assert os.access(REPO / "scripts/ci_gate.sh", os.X_OK)


def test_gate_script_rejects_bad_settings():
    res = _run(GATE, {"COMPRESS": "zip", "ORIGINAL": "x"})
    assert res.returncode == 2 and "COMPRESS" in res.stderr


def test_ci_gate_runs_on_digits(lenet_digits, tmp_path):
    """The GitHub step, as written, with the trained LeNet-5 as ORIGINAL (the workflow trains it)."""
    command, env, _ = _github()
    out = tmp_path / "gate"
    baseline = tmp_path / "baseline" / "lenet5.json"
    env.update(OUT=str(out), ORIGINAL=str(lenet_digits.path), BASELINE=str(baseline), UPDATE_BASELINE="1")
    res = _run(command, env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "PASS" in res.stdout
    for name in ("report.md", "report.json", "junit.xml", "report.png"):
        assert (out / name).is_file() and str(out / name) in res.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert report["candidate"]["precision"] == "int8" and report["candidate"]["format"] == "onnx"
    # prune+int8: the candidate descends from the pruned model, which descends from the original
    assert report["size"]["macs_ratio"] is not None and report["size"]["macs_ratio"] <= 0.6
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert len(suite.findall("testcase")) == len(report["metrics"])
    assert baseline.is_file()

    # The GitLab job's command, gating a broken candidate against the same original and baseline.
    from gate_helpers import damaged_model

    gl_command, gl_env, _ = _gitlab()
    bad = damaged_model(lenet_digits, tmp_path / "damaged")
    gl_env.update(
        OUT=str(tmp_path / "gate-bad"), ORIGINAL=str(lenet_digits.path), CANDIDATE=str(bad.path), BASELINE=str(baseline)
    )
    res = _run(gl_command, gl_env)
    assert res.returncode == 3, res.stdout[-3000:] + res.stderr[-3000:]
    assert "FAIL" in res.stdout and "top-1 drop" in res.stdout
    bad_report = json.loads((tmp_path / "gate-bad" / "report.json").read_text())
    failing = {m["key"] for m in bad_report["metrics"] if m["status"] == "fail"}
    assert {"top1_drop", "baseline_top1"} <= failing
