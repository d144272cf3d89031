"""The regression gate on the bundled digits: real models, real runners, real files."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_helpers import one_line_error

from edgecnn.check import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, Policy, check, decide, save_baseline
from edgecnn.errors import InvalidInput

FAST_LATENCY = {"latency_min_time_s": 0.3, "latency_min_repeats": 10, "latency_warmup": 5, "latency_threads": 1}


@pytest.fixture(scope="module")
def gate_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def damaged(lenet_digits, gate_dir):
    """LeNet-5 pruned by 90 % without fine-tuning: a deliberately broken candidate."""
    from gate_helpers import damaged_model

    return damaged_model(lenet_digits, gate_dir / "damaged")


@pytest.fixture(scope="module")
def compressed(lenet_digits, gate_dir):
    """A legitimately compressed candidate of the trained LeNet-5 (INT8 ONNX when available)."""
    from gate_helpers import good_candidate

    return good_candidate(lenet_digits, gate_dir / "compressed")


# -- the decision rule ---------------------------------------------------------------------------------
def test_decide_rule():
    # a drop budget of 1 pt
    assert decide(0.2, 1.0, "<=", -0.5, 0.9) == "pass"
    assert decide(0.2, 1.0, "<=", -0.5, 1.4) == "inconclusive"
    assert decide(1.5, 1.0, "<=", 0.8, 2.2) == "inconclusive"
    assert decide(3.0, 1.0, "<=", 1.1, 4.0) == "fail"
    assert decide(0.2, 1.0, "<=", -0.5, 1.4, decide_on="point") == "pass"
    assert decide(1.5, 1.0, "<=", 0.8, 2.2, decide_on="point") == "fail"
    # a minimum (speed-up)
    assert decide(1.6, 1.5, ">=", 1.55, 1.7) == "pass"
    assert decide(1.6, 1.5, ">=", 1.4, 1.7) == "inconclusive"
    assert decide(1.2, 1.5, ">=", 1.1, 1.3) == "fail"
    assert decide(0.5, None, "<=") == "info"
    assert decide(float("nan"), 1.0, "<=") == "fail"


# -- policy --------------------------------------------------------------------------------------------
def test_policy_from_dict_and_overrides():
    p = Policy.from_dict({"max-top1-drop": 0.5, "min_agreement": 0.99, "decide_on": "point", "version": 1})
    assert (p.max_top1_drop, p.min_agreement, p.decide_on) == (0.5, 0.99, "point")
    q = p.merged(max_top1_drop=2.0, min_agreement=None)
    assert (q.max_top1_drop, q.min_agreement) == (2.0, 0.99)
    assert Policy.from_dict({"max_top1_drop": None}).max_top1_drop is None


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"max_top1_dorp": 1}, "Did you mean 'max_top1_drop'"),
        ({"min_agreement": 98}, "within [0, 1]"),
        ({"max_top1_drop": "one"}, "must be a number"),
        ({"decide_on": "vote"}, "'ci' or 'point'"),
        ({"version": 2}, "version"),
        ({"seed": 1.5}, "whole number"),
        (["max_top1_drop", 1], "mapping"),
    ],
)
def test_policy_rejects_bad_values(data, needle):
    with pytest.raises(InvalidInput, match=None) as exc:
        Policy.from_dict(data, source="p.yaml")
    assert needle in str(exc.value)


def test_example_policies_load():
    root = Path(__file__).resolve().parents[1] / "examples" / "policies"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 3
    defaults = Policy.load(root / "default.yaml")
    assert defaults == Policy()  # the documented defaults are the real ones
    for f in files:
        Policy.load(f)


# -- the gate ------------------------------------------------------------------------------------------
def test_identical_candidate_passes(lenet_digits):
    report = check(lenet_digits, lenet_digits, "digits", {"min_agreement": 1.0, "max_kl": 1e-9, **FAST_LATENCY})
    assert report.verdict == "pass" and report.exit_code == EXIT_PASS
    assert report.n_images == 360
    assert report.metric("agreement").value == 1.0
    drop = report.metric("top1_drop")
    assert (drop.value, drop.low, drop.high) == (0.0, 0.0, 0.0)
    assert report.metric("kl_mean").value == pytest.approx(0.0, abs=1e-12)
    ratio = report.metric("latency_ratio").value
    assert 0.7 < ratio < 1.4, ratio  # the same model timed against itself, interleaved
    assert report.latency["original"]["p50_ms"] > 0
    assert report.metric("size_ratio").value == 1.0


def test_good_compressed_model_passes(cli_run, lenet_digits, compressed, gate_dir):
    out = gate_dir / "good"
    policy = Path(__file__).resolve().parents[1] / "examples" / "policies" / "digits-ci.yaml"
    res = cli_run(
        [
            "check",
            compressed.path,
            "--against",
            lenet_digits.path,
            "--data",
            "digits",
            "--policy",
            policy,
            "--latency-min-time",
            "0.3",
            "--json",
            out / "r.json",
            "--junit",
            out / "r.xml",
            "--markdown",
            out / "r.md",
            "--plot",
            out / "r.png",
            "--save-baseline",
            out / "baseline.json",
        ]
    )
    assert res.exit_code == EXIT_PASS, res.output
    assert "PASS" in res.output
    for name in ("r.json", "r.xml", "r.md", "r.png", "baseline.json"):
        assert str(out / name) in res.output
    data = json.loads((out / "r.json").read_text())
    assert data["verdict"] == "pass" and data["exit_code"] == 0
    assert data["candidate"]["format"] != "torch" or data["candidate"]["stage"] != "train"
    m = {x["key"]: x for x in data["metrics"]}
    assert m["agreement"]["value"] >= 0.95 and m["top1_drop"]["status"] == "pass"
    assert data["latency"]["original"]["p50_ms"] > 0 and data["latency"]["candidate"]["p50_ms"] > 0
    suite = ET.parse(out / "r.xml").getroot().find("testsuite")
    assert len(suite.findall("testcase")) == len(data["metrics"])
    assert not suite.findall("testcase/failure")


def test_damaged_model_fails_and_names_the_metric(cli_run, lenet_digits, damaged, gate_dir):
    out = gate_dir / "bad"
    res = cli_run(
        [
            "check",
            damaged.path,
            "--against",
            lenet_digits.path,
            "--no-latency",
            "--min-agreement",
            "0.95",
            "--junit",
            out / "r.xml",
            "--markdown",
            out / "r.md",
            "--json",
            out / "r.json",
            "--save-baseline",
            out / "baseline.json",
        ]
    )
    assert res.exit_code == EXIT_FAIL, res.output
    assert "FAIL" in res.output and "top-1 drop" in res.output and "agreement" in res.output
    assert not (out / "baseline.json").exists()  # a failing gate never becomes the baseline
    md = (out / "r.md").read_text()
    assert "FAIL" in md.splitlines()[0] and "top-1 drop" in md
    data = json.loads((out / "r.json").read_text())
    failing = {x["key"] for x in data["metrics"] if x["status"] == "fail"}
    assert {"top1_drop", "agreement"} <= failing
    suite = ET.parse(out / "r.xml").getroot().find("testsuite")
    failed = {c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert failed == failing
    assert int(suite.get("failures")) == len(failing)


def test_same_check_twice_same_verdict(lenet_digits, damaged):
    a = check(damaged, lenet_digits, "digits", {"max_top1_drop": 5.0}, latency=False)
    b = check(damaged, lenet_digits, "digits", {"max_top1_drop": 5.0}, latency=False)
    assert a.verdict == b.verdict == "fail"
    assert a.accuracy == b.accuracy
    assert [m.status for m in a.metrics] == [m.status for m in b.metrics]


def test_inconclusive_when_interval_straddles_budget(cli_run, lenet_digits, damaged):
    first = check(damaged, lenet_digits, "digits", {"decide_on": "point"}, latency=False).metric("top1_drop")
    assert first.low < first.value < first.high
    budget = (first.value + first.high) / 2  # point estimate within budget, upper bound above it
    res = cli_run(
        ["check", damaged.path, "--against", lenet_digits.path, "--no-latency", "--max-top1-drop", f"{budget:.3f}"]
    )
    assert res.exit_code == EXIT_INCONCLUSIVE, res.output
    assert "INCONCLUSIVE" in res.output and "cannot be decided" in res.output
    # decided on the point estimate the same evidence passes
    res = cli_run(
        [
            "check",
            damaged.path,
            "--against",
            lenet_digits.path,
            "--no-latency",
            "--max-top1-drop",
            f"{budget:.3f}",
            "--decide-on",
            "point",
        ]
    )
    assert res.exit_code == EXIT_PASS, res.output


# -- baselines -----------------------------------------------------------------------------------------
def test_baseline_roundtrip_regression_and_fingerprint(lenet_digits, gate_dir):
    policy = {"max_top1_drop": 1.0, **FAST_LATENCY}
    report = check(lenet_digits, lenet_digits, "digits", policy)
    path = save_baseline(report, gate_dir / "base" / "baseline.json")
    base = json.loads(path.read_text())
    assert base["identity"]["model"] == "lenet5" and base["fingerprint_key"]["cpu"]
    again = check(lenet_digits, lenet_digits, "digits", {**policy, "baseline_latency_tolerance": 5.0}, baseline=path)
    assert again.verdict == "pass", again.summary()
    assert again.metric("baseline_top1").status == "pass"
    assert again.metric("baseline_latency").status == "pass"  # same machine, same versions
    # a baseline that was better than what we have now -> regression
    better = dict(base)
    better["metrics"] = {**base["metrics"], "candidate_top1": base["metrics"]["candidate_top1"] + 2.0}
    better["fingerprint_key"] = {**base["fingerprint_key"], "cpu": "Some Other CPU"}
    worse_path = gate_dir / "base" / "better.json"
    worse_path.write_text(json.dumps(better))
    r = check(lenet_digits, lenet_digits, "digits", policy, baseline=worse_path)
    assert r.verdict == "fail" and r.metric("baseline_top1").status == "fail"
    assert "top-1 vs baseline" in r.summary()
    lat = r.metric("baseline_latency")
    assert lat.status == "skipped" and "Some Other CPU" in lat.detail


def test_baseline_from_another_model(cli_run, lenet_digits, gate_dir):
    from edgecnn.models import create_model, save_torch_artifact

    other = save_torch_artifact(
        create_model("resnet18", num_classes=10, in_channels=1, input_size=32),
        gate_dir / "resnet18-random",
        name="resnet18",
        input_spec=_spec("resnet18"),
        classes=lenet_digits.classes,
        stage="train",
    )
    # plumbing: only the identity matters
    rep = check(other, other, "synthetic:16", {"max_top1_drop": 1.0}, latency=False)
    path = save_baseline(rep, gate_dir / "resnet-baseline.json")
    res = cli_run(["check", lenet_digits.path, "--against", lenet_digits.path, "--no-latency", "--baseline", path])
    msg = one_line_error(res)
    assert "resnet18" in msg and "lenet5" in msg and "--save-baseline" in msg
    bad = gate_dir / "not-a-baseline.json"
    bad.write_text('{"hello": 1}')
    msg = one_line_error(
        cli_run(["check", lenet_digits.path, "--against", lenet_digits.path, "--no-latency", "--baseline", bad])
    )
    assert "not an edgecnn check baseline" in msg


def _spec(name, **kw):
    from edgecnn.models import get_spec

    return get_spec(name).input_spec(in_channels=1, input_size=32, **kw)


# -- error paths ---------------------------------------------------------------------------------------
def test_help(cli_run):
    res = cli_run(["check", "--help"])
    assert res.exit_code == 0
    for opt in ("--against", "--max-top1-drop", "--policy", "--junit", "--save-baseline", "--no-latency"):
        assert opt in res.output


def test_different_class_count_is_an_error(cli_run, lenet_digits, gate_dir):
    from edgecnn.models import create_model, save_torch_artifact

    five = save_torch_artifact(
        create_model("lenet5", num_classes=5),
        gate_dir / "lenet5-5classes",
        name="lenet5",
        input_spec=lenet_digits.input,
        classes=[str(i) for i in range(5)],
        stage="train",
    )
    msg = one_line_error(cli_run(["check", five.path, "--against", lenet_digits.path, "--no-latency"]))
    assert "5 classes" in msg and "10" in msg


def test_different_input_spec_is_an_error(cli_run, lenet_digits, gate_dir):
    copy = gate_dir / "lenet5-other-mean"
    shutil.copytree(lenet_digits.path, copy, dirs_exist_ok=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["input"]["mean"] = [0.1]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    msg = one_line_error(cli_run(["check", copy, "--against", lenet_digits.path, "--no-latency"]))
    assert "different inputs" in msg and "mean" in msg


def test_missing_data_and_artifacts(cli_run, lenet_digits, tmp_path):
    msg = one_line_error(
        cli_run(
            ["check", lenet_digits.path, "--against", lenet_digits.path, "--no-latency", "--data", tmp_path / "nope"]
        )
    )
    assert "does not exist" in msg
    msg = one_line_error(cli_run(["check", tmp_path / "missing", "--against", lenet_digits.path]))
    assert "does not exist" in msg


@pytest.mark.parametrize(
    "text,needle",
    [
        ("max_top1_drop: [1, 2\n", "not valid YAML"),
        ("max_top1_drp: 1.0\n", "Did you mean 'max_top1_drop'"),
        ("min_agreement: 98\n", "min_agreement"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_malformed_policy_file(cli_run, lenet_digits, tmp_path, text, needle):
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    msg = one_line_error(
        cli_run(["check", lenet_digits.path, "--against", lenet_digits.path, "--no-latency", "--policy", f])
    )
    assert needle in msg and "policy.yaml" in msg


def test_usage_errors_exit_2(cli_run, lenet_digits, tmp_path):
    res = cli_run(["check", lenet_digits.path, "--against", lenet_digits.path, "--plot", tmp_path / "p.jpg"])
    assert res.exit_code == 2 and ".png" in res.output
    res = cli_run(["check", lenet_digits.path, "--against", lenet_digits.path, "--min-agreement", "98"])
    assert res.exit_code == 2 and "min_agreement" in res.output and "within [0, 1]" in res.output
    res = cli_run(["check", lenet_digits.path, "--against", lenet_digits.path, "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size" in res.output
    res = cli_run(["check", lenet_digits.path])
    assert res.exit_code == 2 and "--against" in res.output
