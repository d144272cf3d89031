"""Reports of the gate: Markdown, JUnit XML, PNG and JSON written from real check results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edgecnn.check import check
from edgecnn.report import plot_reports, render_junit, render_markdown, write_reports


@pytest.fixture(scope="module")
def bad_report(lenet_digits, tmp_path_factory):
    from gate_helpers import damaged_model

    damaged = damaged_model(lenet_digits, tmp_path_factory.mktemp("report") / "damaged")
    # failing metrics, an inconclusive one (threshold inside the top-5 interval) and a skipped one
    first = check(damaged, lenet_digits, "digits", {"decide_on": "point"}, latency=False)
    top5 = first.metric("top5_drop")
    policy = {
        "max_top1_drop": 1.0,
        "max_top5_drop": (top5.value + top5.high) / 2,
        "min_speedup": 1.5,
        "max_class_drop": 10.0,
    }
    return check(damaged, lenet_digits, "digits", policy, latency=False)


@pytest.fixture(scope="module")
def good_report(lenet_digits):
    return check(
        lenet_digits,
        lenet_digits,
        "digits",
        {
            "min_agreement": 0.99,
            "latency_min_time_s": 0.2,
            "latency_min_repeats": 5,
            "latency_warmup": 3,
            "latency_threads": 1,
        },
    )


def test_statuses_of_the_fixture(bad_report):
    status = {m.key: m.status for m in bad_report.metrics}
    assert status["top1_drop"] == "fail" and status["top5_drop"] == "inconclusive"
    assert status["speedup"] == "skipped" and status["worst_class_drop"] == "fail"
    assert bad_report.verdict == "fail" and bad_report.exit_code == 3


def test_markdown(bad_report, good_report):
    md = render_markdown(bad_report)
    lines = md.splitlines()
    assert lines[0].startswith("## ") and "FAIL" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("| metric |"))
    rows = lines[header + 2 : header + 2 + len(bad_report.metrics)]
    assert [r.split("|")[1].strip() for r in rows] == [m.label for m in bad_report.metrics]
    assert all(r.count("|") - r.count("\\|") == 7 for r in rows)  # 6 cells, pipes in values escaped
    assert "❌ fail" in md and "⚠️ inconclusive" in md and "⏭️ skipped" in md
    assert "| class | images |" in md and md.count(" pt ❌ |") >= 1  # classes over the budget are flagged
    assert "top-1 drop" in md.split("| metric |")[0]  # the reasons name the failing metric above the table
    ok = render_markdown(good_report)
    assert "PASS" in ok.splitlines()[0] and "agreement" in ok


def test_junit_parses_one_case_per_metric(bad_report):
    root = ET.fromstring(render_junit(bad_report))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [m.key for m in bad_report.metrics]
    assert len({c.get("name") for c in cases}) == len(cases)
    by_status = {m.key: m.status for m in bad_report.metrics}
    for c in cases:
        kind = by_status[c.get("name")]
        assert (c.find("failure") is not None) == (kind == "fail")
        assert (c.find("error") is not None) == (kind == "inconclusive")
        assert (c.find("skipped") is not None) == (kind == "skipped")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(s == "fail" for s in by_status.values())
    assert int(suite.get("errors")) == sum(s == "inconclusive" for s in by_status.values())
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["verdict"] == "fail" and props["exit_code"] == "3"


def test_json_is_strict_and_complete(bad_report, good_report):
    for rep in (bad_report, good_report):
        text = json.dumps(rep.to_dict(), allow_nan=False)  # raises on NaN/inf
        data = json.loads(text)
        assert {"verdict", "metrics", "per_class", "accuracy", "latency", "size", "environment", "policy"} <= set(data)
        assert len(data["per_class"]) == 10
    assert good_report.to_dict()["latency"]["original"]["p50_ms"] > 0


def test_png_plots(bad_report, good_report, tmp_path):
    from PIL import Image

    for name, reps in (("one.png", bad_report), ("two.png", [good_report, bad_report]), ("lat.png", good_report)):
        path = plot_reports(reps, tmp_path / name)
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 400
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_write_reports_records_paths(good_report, tmp_path):
    paths = write_reports(
        good_report,
        json=tmp_path / "r.json",
        junit=tmp_path / "r.xml",
        markdown=tmp_path / "r.md",
        plot=tmp_path / "r.png",
    )
    assert set(paths) == {"json", "junit", "markdown", "plot"}
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["reports"]["plot"] == str(tmp_path / "r.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md", "r.png", "r.xml"]
