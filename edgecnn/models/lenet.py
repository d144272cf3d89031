"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document recognition").

Layers as in the paper: C1 6@5x5 -> S2 2x2 average subsampling -> C3 16@5x5 -> S4 2x2 average
subsampling -> F5 120 -> F6 84 -> output 10, tanh squashing throughout. At 1x32x32 the network has
61,706 parameters. The paper's own count is 60,000 because (a) C3 there connects each of its 16 maps to
only a subset of S2's 6 maps (1,516 instead of 2,416 weights), (b) each subsampling map has a trainable
coefficient and bias (12 + 32), and (c) the output layer is a fixed, hand-set RBF (840 non-trainable
values). We use the full C3 connection, plain average pooling and a linear output, as every modern
reference implementation does: those are what ONNX Runtime, TensorRT and structured pruning handle well.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelSpec, register


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (32, 32)):
        super().__init__()
        h, w = input_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # C1
            nn.Tanh(),
            nn.AvgPool2d(2),  # S2
            nn.Conv2d(6, 16, kernel_size=5),  # C3
            nn.Tanh(),
            nn.AvgPool2d(2),  # S4
        )
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * fh * fw, 120),  # F5 (C5 in the paper: 5x5 conv over a 5x5 map)
            nn.Tanh(),
            nn.Linear(120, 84),  # F6
            nn.Tanh(),
            nn.Linear(84, num_classes),  # output
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _build(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
    return LeNet5(num_classes=num_classes, in_channels=in_channels, input_size=input_size)


register(
    ModelSpec(
        name="lenet5",
        family="lenet",
        builder=_build,
        default_input=(1, 32, 32),
        min_input=16,
        mean=(0.5,),
        std=(0.5,),
        crop_ratio=1.0,
        classifier="classifier.5",
        first_conv="features.0",
        paper="LeCun et al. 1998, Proc. IEEE 86(11)",
        notes="61,706 params at 1x32x32 (paper: 60,000 with sparse C3 and RBF output; see module docstring)",
    )
)
