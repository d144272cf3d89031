"""Files copied verbatim into deployment bundles (run.py, verify.sh). They run on the device with only
numpy + onnxruntime or TensorRT (+ Pillow for images), so they import nothing from edgecnn and stay
compatible with Python 3.6 (JetPack 4.6 on Jetson Nano / TX2)."""
