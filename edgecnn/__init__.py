"""edgecnn: train, compress, deploy and gate classic image-classification CNNs for edge devices."""

__version__ = "0.1.0"
