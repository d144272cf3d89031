"""Bring your own network: a small custom CNN through edgecnn's whole chain.

``build(num_classes=...)`` is the factory edgecnn calls: any Python file with a function that returns an
``nn.Module`` works the same way, referenced as ``examples/custom_model.py:build``. The network uses what real
edge models use - depthwise-separable convolutions, BatchNorm, SiLU and a squeeze-excitation block - so pruning
meets the same coupled channels as in MobileNet or EfficientNet.

Run it on its own (train on the bundled digits, compress, check, deploy, verify the bundle):

    python examples/custom_model.py                     # a few minutes on 2 cores
    python examples/custom_model.py --epochs 1 --quick  # a smoke run

or step by step, as the README shows:

    edgecnn train examples/custom_model.py:build --data digits --out runs/custom
    edgecnn compress runs/custom --prune 0.3 --distill --data digits --int8 --calib digits --out runs/custom-c
    edgecnn check runs/custom-c/final --against runs/custom
    edgecnn deploy runs/custom-c/final --target cpu --out runs/custom-bundle
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from torch import nn

HERE = Path(__file__).resolve()


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.SiLU()
    )


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): global pool, squeeze, expand, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, max(8, channels // reduction), 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(max(8, channels // reduction), channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Block(nn.Module):
    """Depthwise 3x3 + SE + pointwise 1x1, with a residual add when the shape allows it."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.depthwise = conv_bn(c_in, c_in, 3, stride, groups=c_in)
        self.se = SqueezeExcite(c_in)
        self.pointwise = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.pointwise(self.se(self.depthwise(x)))
        return x + y if self.residual else y


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.stem = conv_bn(in_channels, width, 3, 1)
        self.blocks = nn.Sequential(
            Block(width, width, 1),
            Block(width, 2 * width, 2),
            Block(2 * width, 2 * width, 1),
            Block(2 * width, 4 * width, 2),
        )
        self.head = nn.Sequential(conv_bn(4 * width, 8 * width, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.head(self.blocks(self.stem(x))))


def build(num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    """The factory edgecnn calls (with num_classes= and in_channels=, which it passes when accepted)."""
    return TinyNet(num_classes=num_classes, in_channels=in_channels, width=width)


def _edgecnn(*args, ok=(0,)) -> int:
    cmd = [sys.executable, "-m", "edgecnn.cli", *map(str, args)]
    print("$ edgecnn " + " ".join(map(str, args)), flush=True)
    code = subprocess.run(cmd).returncode
    if code not in ok:
        raise SystemExit(f"edgecnn {args[0]} failed (exit {code})")
    return code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs") / "custom-model")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer calibration images and no latency table")
    args = ap.parse_args(argv)
    out, ref = args.out, f"{HERE}:build"
    quick = ["--finetune-epochs", "1", "--subset-size", "64", "--no-bench"] if args.quick else []
    _edgecnn("train", ref, "--data", "digits", "--epochs", args.epochs, "--out", out / "trained", "-q")
    _edgecnn("compress", out / "trained", "--prune", "0.3", "--distill", "--data", "digits", "--int8", "--calib",
             "digits", "--out", out / "compressed", *quick)  # fmt: skip
    gate = ["--no-latency"] if args.quick else []
    code = _edgecnn("check", out / "compressed" / "final", "--against", out / "trained", *gate, ok=(0, 3, 4))
    print(f"gate: {({0: 'pass', 3: 'fail', 4: 'inconclusive'})[code]}")
    _edgecnn("deploy", out / "compressed" / "final", "--target", "cpu", "--out", out / "bundle")
    subprocess.run([sys.executable, out / "bundle" / "run.py", "--verify"], check=True)
    print(f"done: {out / 'bundle'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
