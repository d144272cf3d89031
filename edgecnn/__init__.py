"""edgecnn: train, compress, deploy and gate classic image-classification CNNs for edge devices."""

import importlib

__version__ = "0.1.0"
__all__ = ["from_module"]


def __getattr__(name: str):
    """``edgecnn.from_module`` (PEP 562): resolved on first use, so ``import edgecnn`` and ``edgecnn --help``
    do not pay for torch."""
    if name == "from_module":
        return importlib.import_module("edgecnn.models.inmemory").from_module
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")
