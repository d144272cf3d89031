#!/usr/bin/env bash
# Verify this edgecnn bundle where it runs: every file's sha256 against manifest.json, then the model's
# outputs on the golden inputs against the golden outputs (tolerances are in bundle.json).
# Usage: ./verify.sh [--runtime tensorrt|onnxruntime]     (PYTHON=/path/to/python3 to pick an interpreter)
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python3}" run.py --verify "$@"
