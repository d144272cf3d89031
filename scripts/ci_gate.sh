#!/usr/bin/env bash
# The project's own regression gate, run by CI after the unit tests: on the bundled digits, train
# lenet5 and resnet18, compress them, and gate each compressed model against its original with
# `edgecnn check` (policy examples/policies/digits-ci.yaml). Same script as the CI examples use.
#
#   scripts/ci_gate.sh [OUT]      (default OUT: runs/ci-gate)
#
# lenet5   -> pruned to half its MACs, fine-tuned 20 epochs with distillation, then INT8 (ONNX Runtime)
# resnet18 -> INT8 (NNCF post-training quantization, ONNX Runtime); 5 training epochs keep it quick
# Exit status: 0 when both gates pass, else the first non-zero exit code (3 fail, 4 inconclusive).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_ROOT="${1:-runs/ci-gate}"
export NNCF_CI=1
if [[ -z "${EDGECNN:-}" ]]; then
  if [[ -x .venv/bin/edgecnn ]]; then EDGECNN=.venv/bin/edgecnn; else EDGECNN=edgecnn; fi
fi
export EDGECNN

status=0
run() {
  local name="$1"; shift
  echo "=================== gate: $name ==================="
  local code=0
  env "$@" OUT="$OUT_ROOT/$name" examples/ci/gate.sh || code=$?
  echo "gate $name: exit $code"
  if [[ $status -eq 0 && $code -ne 0 ]]; then status=$code; fi
}
SECONDS=0
run lenet5 MODEL=lenet5 COMPRESS=prune+int8 PRUNE_MACS=0.5 FINETUNE_EPOCHS=20
run resnet18 MODEL=resnet18 COMPRESS=int8 EPOCHS=5
echo "ci gate finished in ${SECONDS}s with exit $status"
echo "reports:"
for name in lenet5 resnet18; do
  for f in report.md report.json junit.xml report.png; do
    [[ -f "$OUT_ROOT/$name/$f" ]] && echo "  $OUT_ROOT/$name/$f"
  done
done
exit $status
