"""The main job on the built-in default data: train LeNet-5 and ResNet-18 on the bundled digits and
evaluate them on the held-out split. Run with `make demo`."""
