"""What the gate measures on the two models: paired accuracy statistics from their outputs on the same
images, and their latency measured interleaved in one run."""

from __future__ import annotations

import numpy as np

from .. import bench, stats
from ..artifact import Artifact
from ..data.source import DataSource
from ..errors import EdgeCnnError
from ..estimator import RATIO_ESTIMATOR
from .policy import Policy


def paired_accuracy(
    o_logits: np.ndarray, c_logits: np.ndarray, labels: np.ndarray, classes: list[str], policy: Policy
) -> tuple[dict, list[dict]]:
    """Top-1/top-5 of both with the paired bootstrap interval of each drop, McNemar, agreement, KL and the
    per-class accuracy rows (original vs candidate), all from the same images."""
    n = len(labels)
    k = min(5, o_logits.shape[1])
    o_pred, c_pred = o_logits.argmax(1), c_logits.argmax(1)
    o1, c1 = o_pred == labels, c_pred == labels
    o5 = (np.argsort(-o_logits, axis=1, kind="stable")[:, :k] == labels[:, None]).any(1)
    c5 = (np.argsort(-c_logits, axis=1, kind="stable")[:, :k] == labels[:, None]).any(1)
    kw = {"confidence": policy.confidence, "n_resamples": policy.bootstrap_resamples, "seed": policy.seed}
    drop1 = stats.paired_bootstrap(o1, c1, **kw).scaled(100.0)
    drop5 = stats.paired_bootstrap(o5, c5, **kw).scaled(100.0)
    b, c = stats.discordant(o1, c1)
    agree = int(np.count_nonzero(o_pred == c_pred))
    per_class = _per_class(o_pred, c_pred, labels, classes)
    worst = min(per_class, key=lambda r: (r["delta"], r["index"])) if per_class else None
    accuracy = {
        "n": int(n),
        "top_k": int(k),
        "original": {"top1": 100 * float(o1.mean()), "top5": 100 * float(o5.mean())},
        "candidate": {"top1": 100 * float(c1.mean()), "top5": 100 * float(c5.mean())},
        "top1_drop": drop1.as_dict(),
        "top5_drop": drop5.as_dict(),
        "mcnemar": {**stats.mcnemar(b, c), "meaning": "b: images only the original got right, c: only the candidate"},
        "agreement": stats.wilson_interval(agree, n, confidence=policy.confidence).as_dict(),
        "disagreements": int(n - agree),
        "kl": _kl_summary(o_logits, c_logits),
        "worst_class": ({"class": worst["class"], "drop": 0.0 - worst["delta"]} if worst else None),
    }
    return accuracy, per_class


def _per_class(o_pred: np.ndarray, c_pred: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[dict]:
    rows = []
    for i, name in enumerate(classes):
        mask = labels == i
        m = int(mask.sum())
        if m == 0:
            continue
        oa, ca = float((o_pred[mask] == i).mean()), float((c_pred[mask] == i).mean())
        rows.append(
            {
                "class": name,
                "index": i,
                "n": m,
                "original": 100 * oa,
                "candidate": 100 * ca,
                "delta": 100 * (ca - oa),
                "agreement": float((o_pred[mask] == c_pred[mask]).mean()),
            }
        )
    return rows


def _kl_summary(o_logits: np.ndarray, c_logits: np.ndarray) -> dict:
    with np.errstate(all="ignore"):
        kl = stats.kl_divergence(o_logits, c_logits)
    if not np.isfinite(kl).all():
        return {
            "mean": float("inf"),
            "p95": float("inf"),
            "max": float("inf"),
            "direction": "KL(original || candidate), nats",
        }
    return {
        "mean": float(kl.mean()),
        "p95": float(np.quantile(kl, 0.95)),
        "max": float(kl.max()),
        "direction": "KL(original || candidate), nats",
    }


# --------------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------------
def same_runtime_reference(candidate: Artifact, original: Artifact) -> tuple[Artifact | None, str | None]:
    """The FP32 artifact of the candidate's own runtime in its lineage (the FP32 ONNX an INT8 ONNX was
    quantized from), so that a speed-up can be split into runtime and compression gains; (None, why not)
    when the original already runs in that runtime or no such ancestor is on disk unchanged."""
    if not isinstance(candidate, Artifact) or not isinstance(original, Artifact):
        return None, None
    if candidate.format == original.format:
        return None, None
    for ref in reversed(candidate.manifest.get("lineage") or []):
        if ref.get("format") != candidate.format or ref.get("precision") != "fp32":
            continue
        try:
            art = Artifact.load(ref["path"])
        except (EdgeCnnError, KeyError, OSError):
            break
        if art.sha256 == ref.get("sha256"):
            return art, None
        break
    return None, (
        f"no FP32 {candidate.format} ancestor of the candidate on disk: its speed-up against the same runtime "
        f"was not measured (the speed-up against the {original.format} original mixes runtime and compression)"
    )


def measure_pair_latency(
    original,
    candidate,
    policy: Policy,
    *,
    reference=None,
    device: str = "cpu",
    data: DataSource | str = "digits",
    progress: bool = False,
    runner_options: dict | None = None,
) -> dict:
    """Latency of both models (and of ``reference``, the candidate's FP32 in its own runtime, when given)
    measured interleaved in one run (:func:`edgecnn.bench.measure_latency`): per-model p50 and the
    candidate/original ratio by the one estimator (:data:`~edgecnn.estimator.RATIO_ESTIMATOR`), its
    interval widened and flagged when the rounds are multi-modal or disagree with the p50s."""
    result = bench.measure_latency(
        [original, candidate] + ([reference] if reference is not None else []),
        batch_sizes=(policy.latency_batch_size,),
        warmup=policy.latency_warmup,
        min_time_s=policy.latency_min_time_s,
        min_repeats=policy.latency_min_repeats,
        confidence=policy.confidence,
        threads=policy.latency_threads,
        device=device,
        interleave=True,
        progress=progress,
        data=str(data),
        runner_options=runner_options,
    )
    return pair_from_bench(result, policy.latency_batch_size, confidence=policy.confidence)


def _ratio_dicts(est: stats.RatioEstimate) -> tuple[dict, dict]:
    """(latency ratio, speed-up) of one estimate, as the report and the metric rows read them."""
    spread = f"{est.method}, {100 * est.confidence:.0f}% interval over {est.rounds} rounds"
    if est.flags:
        spread += "; widened: " + ", ".join(est.flags)
    sp = est.speedup()
    common = {"spread": spread, "rounds": est.rounds, "flags": list(est.flags), "estimator": est.method}
    return (
        {"point": est.point, "low": est.low, "high": est.high, **common},
        {"point": sp.point, "low": sp.low, "high": sp.high, **common},
    )


def _side(r: dict, cand: dict) -> dict:
    s = r["latency_ms"]
    return {
        "label": r["label"],
        "format": cand.get("format"),
        "precision": cand.get("precision"),
        "p50_ms": s["p50"],
        "p90_ms": s["p90"],
        "p99_ms": s["p99"],
        "mean_ms": s["mean"],
        "std_ms": s["std"],
        "runs": r["n"],
        "throughput": r["throughput"],
    }


def pair_from_bench(result: dict, batch_size: int, *, confidence: float = 0.95) -> dict:
    """Reduce a ``bench.measure_latency`` result of [original, candidate(, reference)] to what the gate
    reports: both sides, the candidate/original ratio and speed-up (``latency_ratio`` / ``speedup``) and,
    with a reference, ``same_runtime``: the candidate against its own runtime's FP32."""
    rows = [r for r in result["results"] if r["batch_size"] == batch_size]
    if len(rows) not in (2, 3):  # pragma: no cover - bench returns one row per candidate and batch size
        raise RuntimeError(f"expected 2 or 3 latency results at batch {batch_size}, got {len(rows)}")
    orig, cand = rows[:2]
    est = bench.ratio_between(cand, orig, confidence=confidence)
    ratio, speedup = _ratio_dicts(est)
    notes = est.notes("candidate", "the original")
    same = None
    if len(rows) == 3:
        ref_est = bench.ratio_between(cand, rows[2], confidence=confidence)
        ref_ratio, ref_speedup = _ratio_dicts(ref_est)
        ref_cand = result["candidates"][2]
        same = {
            "reference": {k: ref_cand.get(k) for k in ("label", "artifact", "format", "precision")},
            "p50_ms": rows[2]["latency_ms"]["p50"],
            "latency_ratio": ref_ratio,
            "speedup": ref_speedup,
        }
        notes += ref_est.notes("candidate", f"its FP32 {ref_cand.get('format')}")
    return {
        "batch_size": batch_size,
        "estimator": RATIO_ESTIMATOR,
        "original": _side(orig, result["candidates"][0]),
        "candidate": _side(cand, result["candidates"][1]),
        "latency_ratio": ratio,
        "speedup": speedup,
        "estimate": est.as_dict(),
        "same_runtime": same,
        "round_ratios": cand.get("round_ratios") or [],
        "notes": notes,
        "settings": result.get("settings"),
        "fingerprint_key": result.get("fingerprint_key"),
        "seconds": result.get("seconds"),
    }
