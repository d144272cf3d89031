"""Multi-process training through torchrun (DDP): two CPU processes on the gloo backend, exactly the
command a multi-GPU user runs (there NCCL is picked automatically). Only rank 0 writes the artifact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgecnn.artifact import Artifact


def test_torchrun_two_processes_gloo(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    out = tmp_path / "ddp-lenet"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    cmd = launcher + [
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "edgecnn.cli",
        "train",
        "lenet5",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
        str(tmp_path / "ddp.json"),
        "-q",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    art = Artifact.load(out, verify=True)
    params = art.manifest["stage"]["params"]
    assert params["world_size"] == 2 and params["device"] == "cpu"
    assert art.metrics["top1"] > 0.3 and len(art.manifest["history"]) == 1  # one real epoch, far above 10 %
    # the two processes saw all 1,437 training images between them (all-reduced statistics)
    assert 0.0 < art.manifest["history"][0]["train_top1"] <= 1.0
    # exactly one writer: one artifact, one checkpoint, one result table, no temporary directories
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-lenet", "ddp-lenet.ckpt.pt", "ddp.json"]
    assert proc.stdout.count("edgecnn train lenet5") == 1
