"""Compression stages: structured pruning (``prune``), 2:4 / unstructured sparsity (``sparsity``),
knowledge distillation (``distill``) and INT8 quantization. Each stage is ``stage(src, ..., out) -> Artifact``;
import the submodule you need (they pull in torch and friends lazily, so ``edgecnn --help`` stays fast)."""
