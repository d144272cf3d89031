"""Reports of the regression gate: Markdown (a pull-request comment), JUnit XML (CI test results),
a PNG plot (accuracy vs latency, per-class delta) and JSON (everything).

All writers are atomic (temporary file + rename), so a CI job never picks up half a report. The plot
uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from .artifact import atomic_file, atomic_write_json, atomic_write_text
from .bench_table import format_ratio
from .errors import OptionError
from .stats import wilson_interval

ICONS = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "skipped": "⏭️", "info": "ℹ️"}
VERDICT_WORD = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


# --------------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------------
def format_value(v: float | None, unit: str, *, with_unit: bool = True) -> str:
    """Human form of a metric value in its unit (used by the table, Markdown and JUnit messages)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "inf" if isinstance(v, float) and math.isinf(v) else "-"
    suffix = ""
    if unit == "pt":
        text, suffix = f"{v:.2f}", " pt"
    elif unit == "%":
        text, suffix = f"{v:.2f}", " %"
    elif unit == "x":  # 3 decimals, 3 significant digits below 0.1: a ratio of 0.000275 is not "0.000x"
        text, suffix = format_ratio(v), "x"
    elif unit == "ms":
        text, suffix = f"{v:.3f}", " ms"
    elif unit == "nats":
        text = f"{v:.4g}"
    elif unit == "fraction":
        text = f"{v:.4f}"
    elif unit == "bytes":
        text = human_bytes(v)
    elif unit == "count":
        text = _human_count(v)
    elif unit == "p":
        text = f"{v:.3g}"
    else:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text + (suffix if with_unit else "")


def human_bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def _human_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def check_plot_path(path: str | Path | None) -> None:
    """The plot is a PNG: OptionError (exit 2) for any other file name, before any work is done."""
    if path and not str(path).lower().endswith(".png"):
        raise OptionError(f"{str(path)!r}: the plot is a PNG; give a path ending in .png.")


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------
def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _name(side: dict) -> str:
    return f"{side['model']} {side['format']}/{side['precision']} ({side.get('stage')})"


def render_markdown(report) -> str:
    """A pull-request comment from a :class:`~edgecnn.check.CheckReport`: verdict line, metric table with
    thresholds and status, per-class table, and the details needed to reproduce the numbers."""
    lines = [f"## {ICONS[report.verdict]} edgecnn check: {VERDICT_WORD[report.verdict]}", ""]
    lines.append(
        f"**Candidate** `{_name(report.candidate)}` vs **original** `{_name(report.original)}` "
        f"on {report.data.get('source')} ({report.data.get('split')}, {report.n_images} images)."
    )
    lines.append("")
    if report.reasons:
        for r in report.reasons:
            lines.append(f"- {ICONS[report.verdict]} {_cell(r)}")
        lines.append("")
    ci = f"{100 * report.policy['confidence']:.0f}% CI"
    lines += [
        f"| metric | original | candidate | value [{ci}] | threshold | status |",
        "|---|---:|---:|---:|---:|:---|",
    ]
    for m in report.metrics:
        lines.append(
            f"| {_cell(m.label)} | {_cell(m.side_text(m.original))} | {_cell(m.side_text(m.candidate))} | "
            f"{_cell(m.value_text())} | {_cell(m.threshold_text())} | {ICONS.get(m.status, '')} {m.status} |"
        )
    lines.append("")
    if report.per_class:
        lines += [
            f"<details><summary>Per-class accuracy ({len(report.per_class)} classes)</summary>",
            "",
            "| class | images | original | candidate | delta | agreement |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        thr = report.policy.get("max_class_drop")
        for r in report.per_class:
            flag = " ❌" if thr is not None and -r["delta"] > thr else ""
            lines.append(
                f"| {_cell(r['class'])} | {r['n']} | {r['original']:.2f} % | {r['candidate']:.2f} % | "
                f"{r['delta']:+.2f} pt{flag} | {r['agreement']:.3f} |"
            )
        lines += ["", "</details>", ""]
    lines += ["<details><summary>Details</summary>", ""]
    for m in report.metrics:
        if m.detail:
            lines.append(f"- **{_cell(m.label)}**: {_cell(m.detail)}")
    rule = (
        "pass when the whole confidence interval is within the threshold, fail when it is entirely outside, "
        "otherwise inconclusive"
        if report.policy["decide_on"] == "ci"
        else "point estimates only"
    )
    lines.append(
        f"- **decision rule** (`decide_on: {report.policy['decide_on']}`): {rule}; agreement, class drop, "
        "KL and size are judged on their point value."
    )
    for note in report.notes:
        lines.append(f"- **note**: {_cell(note)}")
    for role, side in (("candidate", report.candidate), ("original", report.original)):
        lines.append(
            f"- **{role}**: `{side['path']}` id `{side['id']}` sha256 `{str(side['sha256'])[:12]}` "
            f"({side.get('runner', '')}, {format_value(side['size_bytes'], 'bytes')})"
        )
    fp = report.environment.get("fingerprint") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (fp.get("versions") or {}).items())
    gpu = f", {fp['gpu']}" if fp.get("gpu") else ""
    lines.append(f"- **environment**: {fp.get('cpu')} ({fp.get('cpu_count')} CPUs){gpu}; {versions}")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# JUnit XML
# --------------------------------------------------------------------------------------------------
def render_junit(report) -> str:
    """One <testcase> per metric. fail -> <failure>, inconclusive -> <error type="inconclusive">,
    skipped -> <skipped>; metrics without a threshold are passing test cases that carry their value."""
    suite_name = f"edgecnn.check.{report.candidate['model']}"
    counts = {"fail": 0, "inconclusive": 0, "skipped": 0}
    for m in report.metrics:
        if m.status in counts:
            counts[m.status] += 1
    attrs = {
        "tests": str(len(report.metrics)),
        "failures": str(counts["fail"]),
        "errors": str(counts["inconclusive"]),
        "skipped": str(counts["skipped"]),
        "time": f"{report.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "edgecnn check", **attrs})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **attrs, "timestamp": report.created})
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("verdict", report.verdict),
        ("exit_code", report.exit_code),
        ("candidate", report.candidate["path"]),
        ("original", report.original["path"]),
        ("data", report.data.get("source")),
        ("images", report.n_images),
        ("decide_on", report.policy["decide_on"]),
        ("confidence", report.policy["confidence"]),
    ):
        ET.SubElement(props, "property", {"name": name, "value": str(value)})
    classname = f"{suite_name}.{report.candidate['format']}_{report.candidate['precision']}"
    for m in report.metrics:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": m.key, "time": "0"})
        message = f"{m.label} = {m.value_text()}"
        if m.threshold is not None:
            message += f" (threshold {m.threshold_text()})"
        if m.status == "fail":
            el = ET.SubElement(case, "failure", {"type": "threshold", "message": message})
            el.text = m.detail
        elif m.status == "inconclusive":
            el = ET.SubElement(case, "error", {"type": "inconclusive", "message": message + ": evidence inconclusive"})
            el.text = m.detail
        elif m.status == "skipped":
            ET.SubElement(case, "skipped", {"message": m.detail or "skipped"})
        out = ET.SubElement(case, "system-out")
        out.text = f"{message}; status {m.status}. {m.detail}".strip()
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------
def plot_reports(reports, path: str | Path, *, title: str | None = None) -> Path:
    """PNG of one CheckReport or a list of them: left, top-1 accuracy vs latency (p50) of each original
    and candidate (arrow from original to candidate, Wilson interval on accuracy); right, per-class
    accuracy delta of each candidate, with the class-drop threshold when the policy has one. Without
    latency the x axis is the file size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_plot_path(path)
    reports = list(reports) if isinstance(reports, (list, tuple)) else [reports]
    if not reports:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(12, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, width_ratios=[1, 1.2])
    use_latency = all(r.latency for r in reports)
    colors = ["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    for i, r in enumerate(reports):
        n = r.n_images
        pts = []
        for role, side, acc_key in (("original", r.original, "original"), ("candidate", r.candidate, "candidate")):
            top1 = r.accuracy[acc_key]["top1"]
            x = r.latency[role]["p50_ms"] if use_latency else side["size_bytes"] / 1e6
            iv = wilson_interval(round(top1 * n / 100), n, confidence=r.policy["confidence"])
            pts.append((x, top1, 100 * (iv.point - iv.low), 100 * (iv.high - iv.point)))
        (xo, yo, lo_o, hi_o), (xc, yc, lo_c, hi_c) = pts
        c = colors[i % len(colors)]
        ax.errorbar(
            [xo],
            [yo],
            yerr=[[lo_o], [hi_o]],
            fmt="o",
            color="tab:blue",
            capsize=3,
            label="original" if i == 0 else None,
        )
        ax.errorbar(
            [xc],
            [yc],
            yerr=[[lo_c], [hi_c]],
            fmt="s",
            color=c,
            capsize=3,
            label=f"{r.candidate['model']} {r.candidate['format']}/{r.candidate['precision']} ({r.verdict})",
        )
        ax.annotate("", xy=(xc, yc), xytext=(xo, yo), arrowprops={"arrowstyle": "->", "color": c, "alpha": 0.6})
    ax.set_xlabel("latency p50 (ms, interleaved run)" if use_latency else "model file size (MB)")
    ax.set_ylabel(f"top-1 accuracy (%), {100 * reports[0].policy['confidence']:.0f}% Wilson interval")
    ax.set_title("accuracy vs latency" if use_latency else "accuracy vs size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")

    width = 0.8 / len(reports)
    for i, r in enumerate(reports):
        xs = [j + (i - (len(reports) - 1) / 2) * width for j in range(len(r.per_class))]
        deltas = [row["delta"] for row in r.per_class]
        thr = r.policy.get("max_class_drop")
        bar_colors = ["tab:red" if thr is not None and -d > thr else colors[i % len(colors)] for d in deltas]
        bx.bar(xs, deltas, width=width, color=bar_colors, label=f"{r.candidate['format']}/{r.candidate['precision']}")
        if thr is not None:
            bx.axhline(-thr, color="tab:red", linestyle="--", linewidth=1, label="max class drop" if i == 0 else None)
    first = reports[0]
    bx.set_xticks(
        range(len(first.per_class)),
        [row["class"] for row in first.per_class],
        rotation=45 if len(first.per_class) > 12 else 0,
        fontsize=8,
    )
    bx.axhline(0, color="black", linewidth=0.8)
    if all(abs(row["delta"]) < 1e-9 for r in reports for row in r.per_class):
        bx.text(
            0.5, 0.5, "no class changed its accuracy", transform=bx.transAxes, ha="center", va="center", color="gray"
        )
        bx.set_ylim(-1, 1)
    bx.set_ylabel("candidate - original accuracy (pt)")
    bx.set_title("per-class accuracy delta")
    bx.grid(True, axis="y", alpha=0.3)
    bx.legend(fontsize=8, loc="best")
    verdicts = ", ".join(f"{r.candidate['model']}: {VERDICT_WORD[r.verdict]}" for r in reports)
    fig.suptitle(title or f"edgecnn check - {verdicts}")
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# --------------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------------
def write_reports(
    report,
    *,
    json: str | Path | None = None,
    junit: str | Path | None = None,
    markdown: str | Path | None = None,
    plot: str | Path | None = None,
) -> dict[str, str]:
    """Write the requested reports of a CheckReport; paths are recorded in ``report.reports`` (the JSON
    lists them all)."""
    check_plot_path(plot)
    if markdown:
        atomic_write_text(Path(markdown), render_markdown(report))
        report.reports["markdown"] = str(markdown)
    if junit:
        atomic_write_text(Path(junit), render_junit(report))
        report.reports["junit"] = str(junit)
    if plot:
        plot_reports(report, plot)
        report.reports["plot"] = str(plot)
    if json:
        report.reports["json"] = str(json)
        atomic_write_json(Path(json), report.to_dict())
    return dict(report.reports)
