"""What the gate measures on the two models: paired accuracy statistics from their outputs on the same
images, and their latency measured interleaved in one run."""

from __future__ import annotations

import numpy as np

from .. import bench, stats
from ..data.source import DataSource
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
def measure_pair_latency(
    original,
    candidate,
    policy: Policy,
    *,
    device: str = "cpu",
    data: DataSource | str = "digits",
    progress: bool = False,
) -> dict:
    """Latency of both models measured interleaved in one run (:func:`edgecnn.bench.measure_latency`):
    per-model p50 and the candidate/original ratio with a confidence interval.

    The point ratio is bench's ratio of the overall medians. Its interval is the distribution-free
    interval of the median of the per-round ratios (each round times both models back to back under
    the same load, so machine drift cancels within a round). Blocks are kept short so that even a
    short measurement has ~10 rounds; with fewer rounds the interval is [min, max] of the rounds.
    """
    block = min(0.1, max(0.01, policy.latency_min_time_s / 10))
    result = bench.measure_latency(
        [original, candidate],
        batch_sizes=(policy.latency_batch_size,),
        warmup=policy.latency_warmup,
        min_time_s=policy.latency_min_time_s,
        min_repeats=policy.latency_min_repeats,
        threads=policy.latency_threads,
        device=device,
        interleave=True,
        progress=progress,
        data=str(data),
        block_time_s=block,
    )
    return pair_from_bench(result, policy.latency_batch_size, confidence=policy.confidence)


def pair_from_bench(result: dict, batch_size: int, *, confidence: float = 0.95) -> dict:
    """Reduce a two-candidate ``bench.measure_latency`` result to what the gate reports."""
    rows = [r for r in result["results"] if r["batch_size"] == batch_size]
    if len(rows) != 2:  # pragma: no cover - bench returns one row per candidate and batch size
        raise RuntimeError(f"expected 2 latency results at batch {batch_size}, got {len(rows)}")
    orig, cand = rows
    ratio = float(cand["ratio"])
    rounds = cand.get("round_ratios") or []
    if rounds:
        iv = stats.median_interval(rounds, confidence=confidence)
        low, high = min(iv.low, ratio), max(iv.high, ratio)
        spread = f"{iv.method}, {100 * iv.confidence:.0f}% coverage"
    else:  # pragma: no cover - the gate always interleaves
        low = high = ratio
        spread = "no per-round ratios"

    def side(r):
        s = r["latency_ms"]
        return {
            "label": r["label"],
            "p50_ms": s["p50"],
            "p90_ms": s["p90"],
            "p99_ms": s["p99"],
            "mean_ms": s["mean"],
            "std_ms": s["std"],
            "runs": r["n"],
            "throughput": r["throughput"],
        }

    return {
        "batch_size": batch_size,
        "original": side(orig),
        "candidate": side(cand),
        "latency_ratio": {"point": ratio, "low": low, "high": high, "spread": spread, "rounds": len(rounds)},
        "speedup": {
            "point": 1.0 / ratio,
            "low": 1.0 / high,
            "high": 1.0 / low,
            "spread": spread,
            "rounds": len(rounds),
        },
        "round_ratios": rounds,
        "settings": result.get("settings"),
        "fingerprint_key": result.get("fingerprint_key"),
        "seconds": result.get("seconds"),
    }
