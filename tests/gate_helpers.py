"""Candidates for the regression-gate tests, made by the real compression stages from a trained
artifact: a good one (INT8 QDQ ONNX, NNCF post-training quantization calibrated on the digits) and a
deliberately damaged one (90 % of the channels pruned with Torch-Pruning, no fine-tuning)."""

from __future__ import annotations

from pathlib import Path


def good_candidate(src, out: Path):
    """The compressed model a user would ship: INT8 QDQ ONNX for ONNX Runtime on this CPU."""
    from edgecnn.compress.quantize import QuantizeOptions, quantize

    return quantize(src, out, QuantizeOptions(calib="digits", target="cpu"), progress=False)


def damaged_model(src, out: Path):
    """90 % of the channels removed and no fine-tuning: a candidate the gate must reject."""
    from edgecnn.compress.prune import PruneOptions, prune

    return prune(src, out, PruneOptions(ratio=0.9, max_layer_ratio=0.95, finetune_epochs=0), progress=False)
