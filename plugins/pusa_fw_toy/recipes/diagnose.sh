#!/usr/bin/env bash
# Sampler error vs model error (docs/toy_training.md): the t2v gates of one toy model sampled at shift 1,
# 2 and 3 with 20 steps and at shift 2 and 3 with 50 steps, 64 held-out seeds, prompts without direction
# words; then one table with the still share and the per-video speed histograms.
#
#   bash plugins/pusa_fw_toy/recipes/diagnose.sh MODEL_DIR OUT_DIR
#
# Finished settings are skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/../../.."
model="${1:?name the toy model directory}"; out="${2:?name the output directory}"
PYTHON="${PYTHON:-.venv/bin/python}"
SEEDS="${SEEDS:-64}"
SETTINGS="${SETTINGS:-1x20 2x20 3x20 2x50 3x50}"
mkdir -p "$out"
named=()
for setting in $SETTINGS; do
    shift_value="${setting%x*}"; steps="${setting#*x}"
    folder="$out/shift$shift_value-steps$steps"
    [ -e "$folder/eval_toy.json" ] || "$PYTHON" -m pusa_fw eval-toy --base "$model" --task t2v --seeds "$SEEDS" \
        --shift "$shift_value" --steps "$steps" --out "$folder" >/dev/null
    named+=("shift $shift_value x $steps steps=$folder")
done
"$PYTHON" -m pusa_fw_toy.gate_table "${named[@]}" | tee "$out/table.md"
