"""The largest size or count a user may ask for: one place, used by the command-line option types
(:mod:`edgecnn.cli._common`) and the option objects' fields (:func:`edgecnn.options.bounded`).

Generous for real work, small enough that a typo or a hostile file fails at once with one line instead
of running for days, spawning 100,000 threads or exhausting memory.
"""

from __future__ import annotations

MAX_THREADS = 1024  # intra-op threads of a runtime
MAX_WORKERS = 64  # data-loading worker processes
MAX_BATCH = 65_536  # images in one batch
MAX_INPUT_SIZE = 8192  # pixels on one side of the input
MAX_CHANNELS = 64  # input channels
MAX_CLASSES = 100_000
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1  # what every generator takes (numpy's legacy seeding stops there)
MAX_SECONDS = 86_400  # one day: any time budget or timeout
MAX_IMAGES = 1_000_000  # images drawn for one purpose (calibration subset, parity / golden images)
MAX_RUNS = 1_000_000  # timed or warm-up runs, bootstrap resamples
MAX_LAYERS = 100_000  # layers of a network (pruning granularity, float layers left, ...)
MAX_RATIO = 1_000_000.0  # a dimensionless ratio (speed-up, size ratio, KL in nats, a loss weight)
MAX_LIST = 100  # values in one comma-separated option (e.g. sweep --prune: one candidate each)
MAX_ONNX_BYTES = 2 << 30  # an ONNX file read whole (protobuf's own limit is 2 GiB)
MAX_CLASSES_FILE_BYTES = 4 << 20  # a class-names file, one name per line (ImageNet-21k's is under 1 MiB)

# YAML options files (recipes, policies, device profiles, augment policies): a few lines each.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 10_000  # scalars + lists + mappings, with every alias expanded
MAX_YAML_DEPTH = 64  # nesting of lists / mappings
MAX_YAML_ALIASES = 100  # *references to &anchors
