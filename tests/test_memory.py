"""Evaluation streams: peak memory does not grow with the size of the held-out split.

The finding (issue 12): the compress comparison and accuracy-aware INT8 held the whole split in memory
as float32 (a 50,000-image 224 px folder: ~30 GB). Here the same `edgecnn compress --data` runs on a
folder of 300 and of 900 held-out 224x224 JPEGs, each in its own process; holding the split would add
600 x 3 x 224 x 224 x 4 B = 344 MiB of peak RSS, streaming adds next to nothing (both sizes are past
what the decode workers keep in flight: 2 batches per worker). The full-size claim
(20,000 images, < 3 GB) is measured by benchmarks/bench_memory.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CHILD = r"""
import json, resource, sys
from edgecnn.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
print("RSS " + json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def _folder(root, n_val: int):
    rng = np.random.default_rng(0)
    for split, n in (("val", n_val), ("train", 20)):
        for i in range(n):
            d = root / split / f"c{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=85)
    return root


def _peak_rss_mb(args, tmp_path) -> float:
    env = dict(os.environ, NNCF_CI="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RSS "))
    return json.loads(line[4:]) / 1024


@pytest.mark.slow
def test_compress_comparison_memory_does_not_grow_with_the_split(tmp_path):
    common = [
        "lenet5",
        "--weights",
        "random",
        "--num-classes",
        "2",
        "--in-channels",
        "3",
        "--input-size",
        "224",
        "--prune",
        "0.3",
        "--finetune-epochs",
        "0",
        "--no-bench",
    ]
    small = _folder(tmp_path / "small", 300)
    large = _folder(tmp_path / "large", 900)
    rss_small = _peak_rss_mb(["compress", *common, "--data", small, "--out", tmp_path / "r1"], tmp_path)
    rss_large = _peak_rss_mb(["compress", *common, "--data", large, "--out", tmp_path / "r2"], tmp_path)
    report = json.loads((tmp_path / "r2" / "compress.json").read_text())
    assert report["table"]["images"].startswith("900 held-out images")
    # the extra 600 images alone are 344 MiB as float32; streaming keeps the difference to allocator noise
    assert rss_large - rss_small < 100, (rss_small, rss_large)
