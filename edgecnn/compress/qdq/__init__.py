"""Q/DQ (QuantizeLinear / DequantizeLinear) ONNX models: checking them against TensorRT's explicit
quantization rules (:mod:`.validate`), the per-target graph rewrites the quantize stage applies
(:mod:`.rewrites`), which layers run in INT8 and keeping some in float (:mod:`.layers`), over the shared
graph lookups of :mod:`.graph`."""

from __future__ import annotations

from .graph import (
    BN_AS_DEPTHWISE,
    COMMUTING,
    QUANT_OPS,
    WEIGHTED_OPS,
    Graph,
    attr,
    dq_source,
    load_model,
    name_of,
    remove_dead_nodes,
    weight_axis,
)
from .layers import keep_float, quantized_layers
from .rewrites import (
    adapt_for_target,
    batchnorm_as_depthwise,
    concat_before_dequantize,
    fuse_friendly_residuals,
    harmonize_concat_quantizers,
    make_signed,
    quantize_gemm_bias,
    requantize_before_layers,
    uint8_activations,
    unify_concat_scales,
)
from .validate import RULE_TEXT, RULES, Violation, errors, summarize, validate_file, validate_qdq

__all__ = [
    "BN_AS_DEPTHWISE",
    "COMMUTING",
    "QUANT_OPS",
    "RULES",
    "RULE_TEXT",
    "WEIGHTED_OPS",
    "Graph",
    "Violation",
    "adapt_for_target",
    "attr",
    "batchnorm_as_depthwise",
    "concat_before_dequantize",
    "dq_source",
    "errors",
    "fuse_friendly_residuals",
    "harmonize_concat_quantizers",
    "keep_float",
    "load_model",
    "make_signed",
    "name_of",
    "quantize_gemm_bias",
    "quantized_layers",
    "remove_dead_nodes",
    "requantize_before_layers",
    "summarize",
    "uint8_activations",
    "unify_concat_scales",
    "validate_file",
    "validate_qdq",
    "weight_axis",
]
