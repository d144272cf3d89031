"""``edgecnn sweep``: a measured Pareto front over pruning ratio x precision on one target.

The question a user actually has is "what is the fastest version of my network on this device that
stays within my accuracy budget?". A sweep builds every candidate (prune -> export -> fp16 / int8),
scores each on real held-out data, measures the latency of all of them interleaved in one run on the
target, and keeps the candidates no other measured candidate beats on both accuracy and latency.

Rules that keep the answer honest:
- Latency is only ever measured, never estimated. A candidate that cannot run here (a TensorRT
  engine without a GPU, fp16 on a runtime without fp16 kernels) is listed as "not measured" with
  the reason, and it is never on the front nor chosen by ``--budget``.
- Every candidate lives in its own artifact directory and is recorded in ``sweep-state.json`` as soon
  as it is built and scored, so an interrupted sweep resumes where it stopped and reuses finished
  candidates (their sha256 is checked, so a candidate changed on disk is rebuilt, not trusted).
- Latency is re-measured for all candidates together on every run (ratios are only meaningful
  within one interleaved run).
"""

from __future__ import annotations

import logging
import operator
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InvalidInput

log = logging.getLogger("edgecnn")

STATE = "sweep-state.json"
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("cpu", "gpu", "jetson")
BUDGET_KEYS = {
    "top1": "top-1 accuracy in percent",
    "top1_drop": "top-1 drop against the original in percentage points",
    "agreement": "fraction of predictions equal to the original's",
    "latency_ms": "median latency at batch 1 in milliseconds",
    "speedup": "latency of the original / latency of the candidate",
    "size_mb": "model file size in MB",
}
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


# -- budgets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: float

    def holds(self, metrics: dict) -> bool:
        v = metrics.get(self.key)
        return v is not None and _OPS[self.op](v, self.value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"


def parse_budget(text: str | None) -> list[Condition]:
    """'top1_drop<=0.5, speedup>=2' -> conditions. Unknown keys are an error with a suggestion."""
    from .errors import suggest

    if not text:
        return []
    conds = []
    for part in re.split(r"[,;]|\band\b", text):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|pt|ms|mb|x)?", part, re.I)
        if not m:
            raise InvalidInput(f"Cannot read budget '{part}'; write KEY<=VALUE or KEY>=VALUE, e.g. 'top1_drop<=0.5'.")
        key = m.group(1).lower()
        if key not in BUDGET_KEYS:
            raise InvalidInput(f"Unknown budget key '{key}'.{suggest(key, BUDGET_KEYS)} Known: {', '.join(BUDGET_KEYS)}.")
        conds.append(Condition(key, m.group(2), float(m.group(3))))
    return conds


# -- candidates ------------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str                           # e.g. "p0.30-int8"
    prune: float
    precision: str
    path: str | None = None             # artifact directory
    sha256: str | None = None
    status: str = "pending"             # pending | built | failed | not-measured | measured
    reason: str | None = None           # why not built / not measured
    metrics: dict = field(default_factory=dict)
    pareto: bool = False

    @property
    def measured(self) -> bool:
        return self.status == "measured" and self.metrics.get("latency_ms") is not None \
            and self.metrics.get("top1") is not None


def candidate_name(prune: float, precision: str) -> str:
    return f"p{prune:.2f}-{precision}"


def dominates(a: dict, b: dict) -> bool:
    """a dominates b: no slower and no less accurate, and strictly better on one of the two."""
    return (a["latency_ms"] <= b["latency_ms"] and a["top1"] >= b["top1"]
            and (a["latency_ms"] < b["latency_ms"] or a["top1"] > b["top1"]))


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Measured candidates not dominated by any other measured candidate, fastest first."""
    measured = [c for c in candidates if c.measured]
    front = [c for c in measured if not any(dominates(o.metrics, c.metrics) for o in measured if o is not c)]
    for c in candidates:
        c.pareto = c in front
    return sorted(front, key=lambda c: c.metrics["latency_ms"])


def choose(candidates: list[Candidate], budget: list[Condition]) -> Candidate | None:
    """The fastest measured candidate that meets every condition of the budget."""
    ok = [c for c in candidates if c.measured and all(cond.holds(c.metrics) for cond in budget)]
    return min(ok, key=lambda c: c.metrics["latency_ms"]) if ok else None


def parse_list(text: str, *, kind: str, choices: tuple[str, ...] | None = None) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise InvalidInput(f"--{kind} needs at least one value.")
    if choices is None:
        try:
            values = [float(t) for t in items]
        except ValueError:
            raise InvalidInput(f"--{kind} takes comma-separated numbers, e.g. 0,0.3,0.5; got '{text}'.") from None
        bad = [v for v in values if not 0.0 <= v < 1.0]
        if bad:
            raise InvalidInput(f"--{kind} ratios must be in [0, 1); got {bad[0]:g}.")
        return sorted(set(values))
    from .errors import suggest

    for t in items:
        if t not in choices:
            raise InvalidInput(f"Unknown {kind} '{t}'.{suggest(t, choices)} Choose from {', '.join(choices)}.")
    return list(dict.fromkeys(items))


def candidate_rows(candidates: list[Candidate]) -> tuple[list[list[str]], list[str]]:
    cols = ["candidate", "prune", "precision", "top-1", "drop (pt)", "agreement", "latency ms", "speed-up", "size MB",
            "pareto", "status"]
    rows = []
    for c in sorted(candidates, key=lambda c: (c.prune, PRECISIONS.index(c.precision))):
        m = c.metrics

        def f(key, fmt):
            return "-" if m.get(key) is None else fmt.format(m[key])

        rows.append([c.name, f"{c.prune:.2f}", c.precision, f("top1", "{:.2f}%"), f("top1_drop", "{:+.2f}"),
                     f("agreement", "{:.3f}"), f("latency_ms", "{:.3f}"), f("speedup", "{:.2f}x"), f("size_mb", "{:.2f}"),
                     "*" if c.pareto else "", c.status if not c.reason else f"{c.status}: {c.reason}"])
    return rows, cols


def markdown(report: dict) -> str:
    cands = [Candidate(**c) for c in report["candidates"]]
    rows, cols = candidate_rows(cands)
    lines = [f"# Sweep: {report['model']} on {report['target']}", "",
             f"Data: {report['data']} (held-out split, {report.get('n_images', '?')} images). "
             + (f"Latency: batch 1, {report.get('threads', '?')} threads, all candidates interleaved in one run; "
                f"reference ({report['latency_reference']}) = {report['original_latency_ms']:.3f} ms."
                if report.get("original_latency_ms") is not None
                else "Latency: not measured on this machine (see each candidate's status)."), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append("`*` = on the Pareto front (no other measured candidate is both faster and more accurate).")
    if report.get("budget"):
        best = report.get("best")
        lines.append(f"Budget `{report['budget']}`: " + (f"fastest candidate meeting it is **{best['name']}** "
                     f"({best['metrics']['latency_ms']:.3f} ms, top-1 {best['metrics']['top1']:.2f}%)." if best
                     else "no measured candidate meets it."))
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Accuracy vs latency, all measured candidates, front connected, one marker per precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = [Candidate(**c) for c in report["candidates"]]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for prec in PRECISIONS:
        pts = [c for c in cands if c.measured and c.precision == prec]
        if pts:
            ax.scatter([c.metrics["latency_ms"] for c in pts], [c.metrics["top1"] for c in pts], marker=markers[prec],
                       s=45, label=prec, zorder=3)
            for c in pts:
                ax.annotate(f"{c.prune:.0%}", (c.metrics["latency_ms"], c.metrics["top1"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
    front = sorted((c for c in cands if c.pareto and c.measured), key=lambda c: c.metrics["latency_ms"])
    if front:
        ax.step([c.metrics["latency_ms"] for c in front], [c.metrics["top1"] for c in front], where="post",
                color="gray", lw=1, ls="--", label="Pareto front", zorder=2)
    best = report.get("best")
    if best:
        ax.scatter([best["metrics"]["latency_ms"]], [best["metrics"]["top1"]], s=160, facecolors="none",
                   edgecolors="red", lw=1.5, label=f"chosen ({report['budget']})", zorder=4)
    ax.set_xlabel("latency, batch 1 (ms) - measured, interleaved")
    ax.set_ylabel("top-1 on held-out data (%)")
    ax.set_title(f"{report['model']} on {report['target']}: labels = prune ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from .artifact import atomic_file

    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def as_dicts(candidates: list[Candidate]) -> list[dict]:
    return [asdict(c) for c in candidates]


# -- the stage -------------------------------------------------------------------------------------
def _settings(original, *, data, calib, finetune_epochs, distill, target, device, subset_size) -> dict:
    """What a candidate's content depends on; a resumed sweep must have been made with the same."""
    return {"original_sha256": original.sha256, "model": original.model, "data": data, "calib": str(calib),
            "finetune_epochs": finetune_epochs, "distill": distill, "target": target, "device": device,
            "subset_size": subset_size}


def _load_state(path: Path, settings: dict) -> dict:
    import json

    if not path.exists():
        return {"settings": settings, "candidates": {}, "pruned": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is unreadable ({exc}); delete it or choose another --out.") from exc
    old = state.get("settings", {})
    diff = [k for k in settings if old.get(k) != settings[k]]
    if diff:
        raise InvalidInput(
            f"Sweep folder '{path.parent}' was made with different settings ({', '.join(diff)}); "
            "choose another --out, or pass --fresh to start over there."
        )
    return state


def _reusable(entry: dict | None) -> bool:
    """A recorded artifact can be reused when it is still on disk unchanged."""
    from .artifact import Artifact

    if not entry or not entry.get("path"):
        return False
    try:
        art = Artifact.load(entry["path"])
        art.verify()
    except Exception:  # noqa: BLE001 - anything wrong with it means: rebuild
        return False
    return art.sha256 == entry.get("sha256")


def _runs_here(target: str) -> tuple[bool, str | None]:
    """Can latency on ``target`` be measured on this machine? (cpu: always; gpu: needs TensorRT + CUDA)."""
    if target == "cpu":
        return True, None
    if target == "jetson":
        import platform

        if platform.machine() != "aarch64" or not Path("/etc/nv_tegra_release").exists():
            return False, "Jetson latency must be measured on the Jetson (deploy the bundle, run run.py --bench)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed here"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU here"
    except ImportError:
        return False, "torch without CUDA"
    return True, None


def sweep(source: str, *, data: str, out: str | Path | None = None, prune_ratios=(0.0, 0.3, 0.5, 0.7),
          precisions=("fp32", "int8"), target: str = "cpu", device: str | None = None, calib: str | None = None,
          budget: str | None = None, weights: str | None = None, finetune_epochs: int = 0, distill: bool = False,
          subset_size: int = 300, threads: int | None = None, min_time_s: float = 1.0, fresh: bool = False,
          deploy_out: str | Path | None = None, progress: bool = True) -> dict:
    """Build, score and time every (prune ratio x precision) candidate of ``source`` on ``target``.

    ``source`` is a torch artifact or a zoo model name with ``weights``. Returns the report dict that is
    also written to ``out``/sweep.json (+ sweep.md, sweep.png).
    """
    import shutil
    import time

    from .artifact import Artifact, atomic_write_json, atomic_write_text, is_artifact
    from .data import describe_source, load_dataset
    from .runtime import open_runner
    from .evaluation import predict

    if target not in TARGETS:
        from .errors import suggest

        raise InvalidInput(f"Unknown target '{target}'.{suggest(target, TARGETS)} Choose from {', '.join(TARGETS)}.")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise InvalidInput(f"Unknown precision '{bad[0]}'; choose from {', '.join(PRECISIONS)}.")
    conditions = parse_budget(budget)
    if "int8" in precisions and calib is None:
        calib = data
    ratios = sorted(set(float(r) for r in prune_ratios))
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise InvalidInput("prune ratios must be in [0, 1).")

    # 1. the original (a torch artifact)
    if is_artifact(source):
        original = Artifact.load(source, formats=("torch",))
        name = original.model
    else:
        from .models import get_spec

        get_spec(source)  # unknown model -> suggestion
        if weights is None:
            raise InvalidInput(f"A sweep of '{source}' needs trained weights: pass --weights FILE|ARTIFACT|imagenet, "
                               "or a torch artifact from 'edgecnn train' instead of the model name.")
        name = source
        original = None
    out = Path(out) if out else Path("runs") / "sweep" / f"{name}-{target}"
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if original is None:
        from .models import build_model, get_spec, save_torch_artifact

        orig_dir = out / "original"
        if is_artifact(orig_dir):
            original = Artifact.load(orig_dir)
        else:
            model, info = build_model(name, weights=weights)
            spec = get_spec(name)
            original = save_torch_artifact(model, orig_dir, name=name, input_spec=spec.input_spec(),
                                           classes=info.get("classes") or [str(i) for i in range(1000)],
                                           stage="load", params={"weights": weights})
    device = device or {"cpu": "x86-cpu", "gpu": "x86-gpu", "jetson": "jetson-orin-nano"}[target]
    settings = _settings(original, data=data, calib=calib, finetune_epochs=finetune_epochs, distill=distill,
                         target=target, device=device, subset_size=subset_size)
    state_path = out / STATE
    state = _load_state(state_path, settings)

    def save_state():
        atomic_write_json(state_path, state)

    save_state()
    dataset = load_dataset(data, original.input, "val", num_classes=original.num_classes)
    if len(dataset.classes) != original.num_classes:
        raise InvalidInput(f"Data '{data}' has {len(dataset.classes)} classes but {original.model} predicts "
                           f"{original.num_classes}; sweep on data with the model's classes.")
    with open_runner(original, threads=threads) as r:
        o_logits, labels, _ = predict(r, dataset)
    o_pred = o_logits.argmax(1)
    o_top1 = 100.0 * float((o_pred == labels).mean())

    # 2. build + score every candidate (resumable)
    wanted = list(precisions)
    if "fp32" not in wanted:
        wanted.insert(0, "fp32")      # the unpruned FP32 in the target runtime is the latency reference
    candidates: list[Candidate] = []
    jobs = [(r, p) for r in ratios for p in wanted if p in precisions or (r == 0.0 and p == "fp32")]
    from tqdm.auto import tqdm

    bar = tqdm(jobs, desc="sweep", disable=not progress, unit="cand")
    for ratio, precision in bar:
        cname = candidate_name(ratio, precision)
        bar.set_postfix_str(cname)
        entry = state["candidates"].get(cname)
        cand = Candidate(name=cname, prune=ratio, precision=precision)
        if entry and entry.get("status") in ("built", "measured", "not-measured") and _reusable(entry):
            cand.path, cand.sha256 = entry["path"], entry["sha256"]
            cand.metrics = {k: v for k, v in entry.get("metrics", {}).items() if k in ("top1", "top1_drop", "agreement", "size_mb")}
            cand.status, cand.reason = "built", entry.get("reason")
            cand.metrics["reused"] = True
            candidates.append(cand)
            continue
        t0 = time.perf_counter()
        try:
            art = _build_candidate(original, out, ratio, precision, state, save_state, data=data, calib=calib,
                                   finetune_epochs=finetune_epochs, distill=distill, target=target,
                                   subset_size=subset_size, progress=False)
        except InvalidInput as exc:
            cand.status, cand.reason = "failed", str(exc)
            state["candidates"][cname] = asdict(cand)
            save_state()
            candidates.append(cand)
            continue
        cand.path, cand.sha256, cand.status = str(art.path), art.sha256, "built"
        try:
            with open_runner(art, threads=threads) as r:
                c_logits, _, _ = predict(r, dataset)
            c_pred = c_logits.argmax(1)
            top1 = 100.0 * float((c_pred == labels).mean())
            cand.metrics.update(top1=top1, top1_drop=o_top1 - top1, agreement=float((c_pred == o_pred).mean()))
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this precision here
            cand.status, cand.reason = "not-measured", f"cannot run in ONNX Runtime here: {str(exc).splitlines()[0][:120]}"
        cand.metrics["size_mb"] = art.model_file.stat().st_size / 1e6
        cand.metrics["build_seconds"] = round(time.perf_counter() - t0, 2)
        state["candidates"][cname] = asdict(cand)
        save_state()
        candidates.append(cand)

    # 3. latency of every runnable candidate, interleaved in one run, on the target
    runs_here, why_not = _runs_here(target)
    timed = [c for c in candidates if c.status == "built" and c.metrics.get("top1") is not None]
    timed.sort(key=lambda c: c.name != candidate_name(0.0, "fp32"))   # the reference runs first
    ref_latency = None
    bench_meta = {}
    if not runs_here:
        for c in timed:
            c.status, c.reason = "not-measured", why_not
    elif timed:
        from .bench import measure_latency

        arts = _latency_artifacts(timed, target, device, out)
        result = measure_latency([a for a, _ in arts], batch_sizes=(1,), warmup=0.2, min_time_s=min_time_s,
                                 min_repeats=20, threads=threads, device="cuda" if target != "cpu" else "cpu",
                                 progress=progress, labels=[c.name for c in timed])
        bench_meta = {"threads": result["settings"].get("threads"), "environment": result.get("environment")}
        by_label = {r["label"]: r for r in result["results"]}
        for c in timed:
            row = by_label.get(c.name)
            c.metrics["latency_ms"] = row["latency_ms"]["p50"]
            c.metrics["latency_p90_ms"] = row["latency_ms"]["p90"]
            c.status, c.reason = "measured", None
        ref = next((c for c in timed if c.name == candidate_name(0.0, "fp32")), timed[0])
        ref_latency = ref.metrics["latency_ms"]
        for c in timed:
            c.metrics["speedup"] = ref_latency / c.metrics["latency_ms"]
    front = pareto_front(candidates)
    best = choose(candidates, conditions) if conditions else None
    shown = [c for c in candidates if c.precision in precisions]   # the reference-only fp32 stays out of the table
    report = {
        "schema": "edgecnn.sweep/1", "model": original.model, "original": str(original.path), "target": target,
        "device": device, "data": describe_source(data, "val")["source"], "n_images": int(len(labels)),
        "original_top1": o_top1, "original_latency_ms": ref_latency, "latency_reference": candidate_name(0.0, "fp32"),
        "threads": bench_meta.get("threads"), "environment": bench_meta.get("environment"),
        "settings": settings, "candidates": as_dicts(shown), "front": [c.name for c in front if c in shown],
        "budget": budget, "best": asdict(best) if best else None,
    }
    for c in candidates:
        state["candidates"][c.name] = asdict(c)
    save_state()
    atomic_write_json(out / "sweep.json", report)
    atomic_write_text(out / "sweep.md", markdown(report))
    plot(report, out / "sweep.png")
    report["paths"] = {"json": str(out / "sweep.json"), "markdown": str(out / "sweep.md"), "plot": str(out / "sweep.png")}
    if conditions and best is None:
        report["no_candidate"] = True
    if deploy_out and best is not None:
        from .deploy import deploy

        report["deploy"] = deploy(best.path, target=target, device=device, out=deploy_out)
    return report


def _build_candidate(original, out: Path, ratio: float, precision: str, state: dict, save_state, *, data, calib,
                     finetune_epochs, distill, target, subset_size, progress):
    """original -> (pruned torch) -> FP32 ONNX -> FP16 / INT8 ONNX; intermediate steps are reused."""
    from .artifact import Artifact
    from .export.onnx import export_onnx

    torch_key, onnx_key = f"torch-p{ratio:.2f}", f"onnx-p{ratio:.2f}"
    if ratio == 0.0:
        src = original
    elif _reusable(state["pruned"].get(torch_key)):
        src = Artifact.load(state["pruned"][torch_key]["path"])
    else:
        from .compress.prune import prune

        src = prune(original, out / "stages" / torch_key, ratio=ratio, finetune_epochs=finetune_epochs,
                    data=data if finetune_epochs else None, distill=distill, progress=progress)
        state["pruned"][torch_key] = {"path": str(src.path), "sha256": src.sha256}
        save_state()
    cdir = out / "candidates"
    if precision == "fp32":
        return export_onnx(src, cdir / candidate_name(ratio, "fp32"), progress=progress)
    if _reusable(state["pruned"].get(onnx_key)):
        fp32 = Artifact.load(state["pruned"][onnx_key]["path"])
    elif _reusable(state["candidates"].get(candidate_name(ratio, "fp32"))):
        fp32 = Artifact.load(state["candidates"][candidate_name(ratio, "fp32")]["path"])
    else:
        fp32 = export_onnx(src, out / "stages" / onnx_key, progress=progress)
        state["pruned"][onnx_key] = {"path": str(fp32.path), "sha256": fp32.sha256}
        save_state()
    if precision == "fp16":
        from .compress.fp16 import convert_fp16

        return convert_fp16(fp32, cdir / candidate_name(ratio, "fp16"), progress=progress)
    from .compress.quantize import quantize

    return quantize(fp32, cdir / candidate_name(ratio, "int8"), calib=calib, subset_size=subset_size,
                    target="tensorrt" if target in ("gpu", "jetson") else "cpu", progress=progress)


def _latency_artifacts(cands: list[Candidate], target: str, device: str, out: Path) -> list:
    """What to time: the ONNX candidates on CPU; TensorRT engines built from them on a GPU target."""
    from .artifact import Artifact

    arts = []
    for c in cands:
        art = Artifact.load(c.path)
        if target != "cpu":
            from .runtime.tensorrt import build_engine

            art = build_engine(art, out / "engines" / c.name, device=device, precision=c.precision)
        arts.append((art, c.name))
    return arts
