"""Export stages: torch artifact -> ONNX artifact (BN folded, simplified, checked, parity-measured)."""

from .onnx import ExportError, ParityError, export_onnx, fold_batchnorm, measure_parity

__all__ = ["ExportError", "ParityError", "export_onnx", "fold_batchnorm", "measure_parity"]
