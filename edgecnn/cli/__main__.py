"""``python -m edgecnn.cli`` (what torchrun runs: ``torchrun --nproc_per_node=2 -m edgecnn.cli train ...``)."""

from edgecnn.cli import main

main()
