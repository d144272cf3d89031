"""Candidates for the regression-gate tests, made by the real compression stages from a trained
artifact: a good one (INT8 QDQ ONNX if quantization is available, else an FP32 ONNX export of the same
network) and a deliberately damaged one (90 % of the channels pruned, no fine-tuning)."""

from __future__ import annotations

from pathlib import Path


def good_candidate(src, out: Path):
    """The compressed model a user would ship: INT8 when edgecnn can quantize, else FP32 ONNX."""
    from edgecnn.export.onnx import export_onnx

    return export_onnx(src, out, progress=False)


def damaged_model(src, out: Path):
    """90 % of the weights removed without fine-tuning (a candidate the gate must reject)."""
    import torch

    from edgecnn.models import load_torch_model, save_torch_artifact

    model = load_torch_model(src)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                flat = p.abs().flatten()
                cut = flat.kthvalue(max(1, int(0.9 * flat.numel()))).values
                p[p.abs() <= cut] = 0
    return save_torch_artifact(model, out, name=src.model, input_spec=src.input, classes=src.classes,
                               stage="damage", params={"zeroed": 0.9, "finetune_epochs": 0}, parent=src)
