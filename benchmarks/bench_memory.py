"""Peak memory of evaluation on a large image folder: `edgecnn compress --data` and `edgecnn check` on
20,000 generated 224x224 JPEGs (10 classes) stay under a fixed bound because batches stream from a
DataLoader with decode workers; nothing holds the split in memory (that alone would be 20,000 x 3 x
224 x 224 float32 = 12 GB).

    python benchmarks/bench_memory.py                     # 20,000 images, writes benchmarks/results/memory.json
    python benchmarks/bench_memory.py --images 2000       # a quick run

Each command runs in its own process (the edgecnn CLI, in a child Python that reports
``resource.getrusage`` for itself and for its decode workers when it exits). The model is LeNet-5 at
3x224x224 with random weights: the point is the data path, so the network is kept cheap and the
decode + preprocessing of 224 px JPEGs dominates. Decode throughput (images/s) is measured with 0 and
with N workers on the same files, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LIMIT_GB = 3.0

# Runs the edgecnn CLI in this child process and prints its peak RSS (self, and largest decode worker).
CHILD = r"""
import json, resource, sys
from edgecnn.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("EDGECNN_RSS " + json.dumps({"exit": code, "self_kb": me, "largest_worker_kb": kids}), flush=True)
"""


def make_folder(root: Path, n_val: int, n_train: int, size: int = 224, classes: int = 10, seed: int = 0) -> None:
    """val/<class>/*.jpg (n_val) and train/<class>/*.jpg (n_train): smooth colour fields + noise, one
    mean colour per class, so the files decode like photographs (q=90 JPEG, ~10-20 kB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for split, n in (("val", n_val), ("train", n_train)):
        for i in range(n):
            c = i % classes
            d = root / split / str(c)  # the class names a model built with --num-classes 10 carries
            d.mkdir(parents=True, exist_ok=True)
            base = np.stack(
                [(c * 25 + 100 * xx) % 255, (200 * yy + 13 * c) % 255, 128 + 60 * np.sin(6 * xx * yy + c)], -1
            )
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=90)


def run_cli(args: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("EDGECNN_RSS ")), None)
    if line is None or proc.returncode != 0 or json.loads(line.split(" ", 1)[1])["exit"] not in (0, 3, 4):
        raise SystemExit(f"command failed ({proc.returncode}): edgecnn {' '.join(args)}\n{proc.stderr[-3000:]}")
    rss = json.loads(line.split(" ", 1)[1])
    return {
        "args": args,
        "exit": rss["exit"],
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(rss["self_kb"] / 2**20, 3),
        "largest_worker_rss_gb": round(rss["largest_worker_kb"] / 2**20, 3),
    }


def decode_rates(folder: Path, input_spec: dict, workers: int, *, n: int = 1000, rounds: int = 5) -> dict:
    """Decode + preprocess throughput with 0 and ``workers`` decode workers, interleaved round by round over
    the same cached files. Reports the median images/s per setting with its [min, max] over the rounds, and
    the median of the per-round ratios (a round's two passes see the same machine load)."""
    from edgecnn.data.source import DataSource
    from edgecnn.evaluation import batches

    ds = DataSource.parse(str(folder)).dataset(input_spec, "val")
    idx = list(range(min(n, len(ds))))
    for i in idx:  # the same files from the page cache for every setting: time decoding, not the disk
        Path(ds.samples[i][0]).read_bytes()
    sub = torch.utils.data.Subset(ds, idx)
    settings = (0, workers)
    per_round = {w: [] for w in settings}
    for _ in range(rounds):
        for w in settings:
            t0 = time.perf_counter()
            count = sum(len(y) for _, y in batches(sub, 64, workers=w))
            per_round[w].append(count / (time.perf_counter() - t0))
    ratios = [b / a for a, b in zip(per_round[0], per_round[workers])]
    out = {
        f"workers={w}": {"median": round(float(np.median(v)), 1), "min": round(min(v), 1), "max": round(max(v), 1)}
        for w, v in per_round.items()
    }
    out[f"ratio workers={workers} / workers=0"] = {
        "median": round(float(np.median(ratios)), 2),
        "min": round(min(ratios), 2),
        "max": round(max(ratios), 2),
    }
    out["estimator"] = (
        f"images / wall s of one pass over {len(idx)} cached files (batch 64); median and "
        f"[min, max] over {rounds} interleaved rounds; ratio = median of per-round ratios"
    )
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000, help="held-out images (val split)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--keep", type=Path, help="make the folder here and keep it (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    ap.add_argument("--decode-only", action="store_true", help="only re-measure decode throughput (needs --keep)")
    a = ap.parse_args()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="edgecnn-mem-"))
    data = tmp / "data"
    t0 = time.perf_counter()
    if not (data / "val").is_dir():
        print(f"writing {a.images} + 300 JPEGs under {data} ...", flush=True)
        make_folder(data, a.images, 300)
    make_s = time.perf_counter() - t0
    env = dict(os.environ, NNCF_CI="1")
    run = tmp / "run"
    if a.decode_only:
        spec = json.loads((run / "original-onnx" / "manifest.json").read_text())["input"]
        result = json.loads(a.out.read_text())
        result["decode_images_per_s"] = decode_rates(data, spec, a.workers)
        a.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(result["decode_images_per_s"])
        return
    common = ["--weights", "random", "--num-classes", "10", "--in-channels", "3", "--input-size", "224"]
    print("edgecnn compress --data (INT8, the comparison streams every held-out image) ...", flush=True)
    compress = run_cli(
        [
            "compress",
            "lenet5",
            *common,
            "--int8",
            "--calib",
            str(data / "train"),
            "--subset-size",
            "300",
            "--data",
            str(data),
            "--no-bench",
            "--out",
            str(run),
        ],
        env,
    )
    print(f"  peak RSS {compress['peak_rss_gb']:.2f} GB in {compress['wall_s']} s", flush=True)
    print("edgecnn check (original and INT8 in one pass over the held-out images) ...", flush=True)
    check = run_cli(
        [
            "check",
            str(run / "int8"),
            "--against",
            str(run / "original-onnx"),
            "--data",
            str(data),
            "--no-latency",
            "--json",
            str(tmp / "check.json"),
        ],
        env,
    )
    print(f"  peak RSS {check['peak_rss_gb']:.2f} GB in {check['wall_s']} s", flush=True)
    spec = json.loads((run / "original-onnx" / "manifest.json").read_text())["input"]
    rates = decode_rates(data, spec, a.workers)
    result = {
        "schema": "edgecnn.bench-memory/1",
        "images": a.images,
        "image_size": 224,
        "model": "lenet5 3x224x224 (random)",
        "limit_gb": LIMIT_GB,
        "compress": compress,
        "check": check,
        "decode_images_per_s": rates,
        "made_folder_s": round(make_s, 1),
        "whole_split_float32_gb": round(a.images * 3 * 224 * 224 * 4 / 2**30, 2),
        # the edgecnn process itself; each decode worker is a forked process reported beside it (its RSS is
        # mostly pages shared with the parent, so adding the two would count those twice)
        "passed": max(compress["peak_rss_gb"], check["peak_rss_gb"]) < LIMIT_GB,
        "estimator": "peak RSS = resource.getrusage(RUSAGE_SELF).ru_maxrss of the edgecnn process; "
        "largest worker = RUSAGE_CHILDREN (the largest decode worker)",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"| command | peak RSS (GB) | + largest worker (GB) | wall (s) |\n|---|---|---|---|\n"
        f"| compress --data | {compress['peak_rss_gb']} | {compress['largest_worker_rss_gb']} "
        f"| {compress['wall_s']} |\n"
        f"| check | {check['peak_rss_gb']} | {check['largest_worker_rss_gb']} | {check['wall_s']} |"
    )
    print(
        f"decode + preprocess, images/s: {rates}; limit {LIMIT_GB} GB (edgecnn process): "
        f"{'met' if result['passed'] else 'MISSED'}"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
