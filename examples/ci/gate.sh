#!/usr/bin/env bash
# Train (or reuse) a model, compress it, and gate the compressed model against the original with
# `edgecnn check`. One script, called by examples/ci/github-actions.yml, examples/ci/.gitlab-ci.yml,
# tests/test_ci_examples.py and (through scripts/ci_gate.sh) this project's own CI - so the commands a
# user copies are the commands our tests run.
#
# Settings (environment variables, all optional):
#   MODEL            zoo model                                         [lenet5]
#   DATA             'digits' or a folder of class sub-folders         [digits]
#   OUT              where artifacts and reports go                    [runs/gate/$MODEL]
#   ORIGINAL         a trained artifact to gate against (skips training)
#   EPOCHS           training epochs (default: the model's recipe for DATA)
#   COMPRESS         int8 | prune | prune+int8                         [int8]
#   PRUNE_MACS       fraction of MACs the pruned model keeps           [0.5]
#   FINETUNE_EPOCHS  fine-tuning epochs after pruning (with KD)        [20]
#   CALIB            calibration images for INT8                       [$DATA]
#   CANDIDATE        gate this artifact instead of compressing ORIGINAL
#   POLICY           gate policy                                       [examples/policies/digits-ci.yaml]
#   BASELINE         baseline file: compared when it exists
#   UPDATE_BASELINE  1: (re)write BASELINE when the gate passes
#   ON_INCONCLUSIVE  fail | warn: what exit code 4 (not enough evidence) does to the job  [fail]
#   EDGECNN          how to run edgecnn                                [edgecnn]
#
# Exit code: edgecnn check's - 0 pass, 3 fail, 4 inconclusive (0 with ON_INCONCLUSIVE=warn), 1/2 errors.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="${MODEL:-lenet5}"
DATA="${DATA:-digits}"
OUT="${OUT:-runs/gate/$MODEL}"
COMPRESS="${COMPRESS:-int8}"
PRUNE_MACS="${PRUNE_MACS:-0.5}"
FINETUNE_EPOCHS="${FINETUNE_EPOCHS:-20}"
CALIB="${CALIB:-$DATA}"
POLICY="${POLICY:-$here/../policies/digits-ci.yaml}"
ON_INCONCLUSIVE="${ON_INCONCLUSIVE:-fail}"
read -r -a EDGECNN_CMD <<< "${EDGECNN:-edgecnn}"
edgecnn() { command "${EDGECNN_CMD[@]}" "$@"; }

case "$COMPRESS" in int8|prune|prune+int8) ;; *) echo "gate.sh: COMPRESS must be int8, prune or prune+int8, got '$COMPRESS'" >&2; exit 2 ;; esac
case "$ON_INCONCLUSIVE" in fail|warn) ;; *) echo "gate.sh: ON_INCONCLUSIVE must be fail or warn, got '$ON_INCONCLUSIVE'" >&2; exit 2 ;; esac
mkdir -p "$OUT"

# 1. The original: reuse a trained artifact, or train one.
if [[ -z "${ORIGINAL:-}" ]]; then
  ORIGINAL="$OUT/original"
  echo "== train $MODEL on $DATA -> $ORIGINAL"
  edgecnn train "$MODEL" --data "$DATA" --out "$ORIGINAL" ${EPOCHS:+--epochs "$EPOCHS"} --quiet
fi

# 2. The candidate: compress the original (unless one was given).
if [[ -z "${CANDIDATE:-}" ]]; then
  src="$ORIGINAL"
  if [[ "$COMPRESS" == prune* ]]; then
    echo "== prune $src to ${PRUNE_MACS} of its MACs, fine-tune $FINETUNE_EPOCHS epochs with distillation"
    edgecnn prune "$src" --out "$OUT/pruned" --target-macs "$PRUNE_MACS" --finetune-epochs "$FINETUNE_EPOCHS" \
      --data "$DATA" --distill --device cpu --no-progress
    src="$OUT/pruned"
  fi
  if [[ "$COMPRESS" == *int8 ]]; then
    echo "== quantize $src to INT8 (calibration: $CALIB)"
    edgecnn quantize "$src" --int8 --calib "$CALIB" --target cpu --out "$OUT/int8"
    src="$OUT/int8"
  fi
  CANDIDATE="$src"
fi

# 3. The gate.
args=(check "$CANDIDATE" --against "$ORIGINAL" --data "$DATA" --policy "$POLICY"
      --json "$OUT/report.json" --junit "$OUT/junit.xml" --markdown "$OUT/report.md" --plot "$OUT/report.png")
if [[ -n "${BASELINE:-}" && -f "$BASELINE" ]]; then args+=(--baseline "$BASELINE"); fi
if [[ -n "${BASELINE:-}" && "${UPDATE_BASELINE:-0}" == 1 ]]; then args+=(--save-baseline "$BASELINE"); fi
echo "== edgecnn ${args[*]}"
set +e
edgecnn "${args[@]}"
code=$?
set -e
echo "reports: $OUT/report.md $OUT/report.json $OUT/junit.xml $OUT/report.png"
if [[ $code -eq 4 && "$ON_INCONCLUSIVE" == warn ]]; then
  echo "warning: the gate is inconclusive (not enough evidence); ON_INCONCLUSIVE=warn lets the job pass" >&2
  exit 0
fi
exit $code
