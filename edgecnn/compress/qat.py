"""Quantization-aware fine-tuning on the torch side: fake quantization of every Conv2d / Linear plus
knowledge distillation from the FP32 original, so the weights learn the INT8 grid that NNCF applies when
the fine-tuned network is exported and quantized again (``edgecnn quantize --qat``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.augment import AugmentPolicy
from ..train import TrainConfig, fit
from .distill import kd_loss
from .teacher import channels_of, check_teacher

# AdamW learning rate of quantization-aware fine-tuning. Measured on the pruned LeNet-5 of the digits
# recipe (10 epochs): 1e-4 left the KD loss flat (INT8 -1.39 pt, as plain PTQ), 1e-3 recovered to -0.56 pt,
# 3e-3 -1.11 pt.
QAT_LR = 1e-3


class FakeQuant(nn.Module):
    """A Conv2d / Linear with fake-quantized input (per tensor; range calibrated, then learned LSQ-style with
    a straight-through estimator) and weights (symmetric INT8 per output channel, narrow range as NNCF's)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.signed = True
        self.calibrating = True
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("amin", torch.zeros(()))

    def forward(self, x):
        if self.calibrating:
            self.amax = torch.maximum(self.amax, x.detach().max())
            self.amin = torch.minimum(self.amin, x.detach().min())
            return self.layer(x)
        qmin, qmax = (-128, 127) if self.signed else (0, 255)
        s = self.log_scale.exp()
        xq = x / s
        xq = xq + (torch.clamp(torch.round(xq), qmin, qmax) - xq).detach()  # STE through round/clamp
        xq = xq * s
        w = self.layer.weight
        dims = tuple(range(1, w.ndim))
        ws = (w.detach().abs().amax(dim=dims, keepdim=True) / 127.0).clamp_min(1e-12)
        wq = w / ws
        wq = (wq + (torch.clamp(torch.round(wq), -127, 127) - wq).detach()) * ws
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(xq, wq, self.layer.bias)
        return nn.functional.linear(xq, wq, self.layer.bias)

    def freeze_range(self):
        self.calibrating = False
        self.signed = bool(self.amin < 0)
        top = float(max(self.amax.abs(), self.amin.abs()))
        scale = max(top, 1e-8) / (127.0 if self.signed else 255.0)
        self.log_scale.data.fill_(float(np.log(scale)))


def _wrap(model: nn.Module) -> list[str]:
    """Replace every plain Conv2d / Linear of ``model`` by a FakeQuant around it; returns their names."""
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) in (nn.Conv2d, nn.Linear):
                setattr(module, child_name, FakeQuant(child))
                wrapped.append(f"{name + '.' if name else ''}{child_name}")
    return wrapped


def _unwrap(model: nn.Module) -> None:
    """Plain layers carrying the fine-tuned weights again."""
    for _name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, FakeQuant):
                setattr(module, child_name, child.layer)


def qat_finetune(
    model,
    teacher,
    train_set,
    calib_batches: list[np.ndarray],
    *,
    epochs: int,
    lr: float | None = None,
    batch_size: int = 64,
    temperature: float = 4.0,
    alpha: float = 0.7,
    seed: int = 0,
    progress: bool = False,
    augment: tuple[AugmentPolicy, float | None] | None = None,
) -> dict:
    """Fine-tune ``model`` (BatchNorm already folded) in place with fake quantization of every Conv2d /
    Linear - weights per output channel, symmetric INT8 (narrow range, as NNCF's weights); inputs per
    tensor with ranges calibrated on ``calib_batches`` and then learned (LSQ-style, straight-through
    estimator) - and knowledge distillation from ``teacher`` (the FP32 original). The weights it learns are
    robust to the INT8 grid that NNCF applies when the model is exported and quantized afterwards.
    ``augment``: (the policy ``train_set`` was read with - default none -, the teacher's held-out top-1): the
    teacher is scored on the augmented images and warned about (:func:`~.teacher.check_teacher`).
    Returns the training record."""
    policy, teacher_top1 = augment or (AugmentPolicy.preset("none"), None)
    teacher_augmented = check_teacher(teacher, train_set, teacher_top1, policy, seed=seed)
    wrapped = _wrap(model)
    model.eval()
    with torch.no_grad():
        for b in calib_batches:
            model(torch.from_numpy(b))
    for m in model.modules():
        if isinstance(m, FakeQuant):
            m.freeze_range()
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits, targets, inputs):
        with torch.no_grad():
            t = teacher(inputs)
        return kd_loss(logits, t, targets, temperature=temperature, alpha=alpha)

    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="adamw",
        lr=lr or QAT_LR,
        weight_decay=0.0,
        seed=seed,
        device="cpu",
        augment=policy,
        schedule="cosine",
    )
    result = fit(model, train_set, None, config, loss_fn=loss_fn, progress=progress)
    _unwrap(model)
    model.eval()
    return {
        "epochs": epochs,
        "fake_quantized_layers": len(wrapped),
        "lr": config.resolved_lr(),
        "kd": {"temperature": temperature, "alpha": alpha},
        "augment": policy.record(channels_of(train_set), train_set),
        "teacher_top1_augmented": teacher_augmented,
        "seconds": round(result["seconds"], 1),
        "history": result["history"],
    }
