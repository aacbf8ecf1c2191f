#!/usr/bin/env bash
# The quality gates along a base-training run: every kept checkpoint whose step is a multiple of EVERY is
# packed (EMA weights) and run through `eval-toy --task t2v` once; one JSON line per step goes to OUT.
# Run it now and then beside the training (or in a loop); steps already in OUT are skipped.
#
#   bash plugins/pusa_fw_toy/recipes/gate_curve.sh RUN_DIR INIT_DIR OUT.jsonl [EVERY=1000] [SEEDS=64]
set -euo pipefail
cd "$(dirname "$0")/../../.."
run="$1"; init="$2"; out="$3"; every="${4:-1000}"; seeds="${5:-64}"
PYTHON="${PYTHON:-.venv/bin/python}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
touch "$out"
for checkpoint in "$run"/checkpoints/step-*; do
    [ -e "$checkpoint/manifest.json" ] || continue   # not complete yet
    step=$((10#${checkpoint##*step-}))
    (( step % every == 0 )) || continue
    grep -q "\"step\": $step," "$out" && continue
    cp -r "$checkpoint" "$scratch/checkpoint" 2>/dev/null || continue   # pruned while copying
    "$PYTHON" -m pusa_fw toy-pack "$scratch/checkpoint" --ema --init "$init" --out "$scratch/model" >/dev/null
    "$PYTHON" -m pusa_fw eval-toy --base "$scratch/model" --task t2v --seeds "$seeds" --out "$scratch/eval" >/dev/null
    "$PYTHON" - "$scratch/eval/eval_toy.json" "$step" >> "$out" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
gates = {name: result["value"] for name, result in report["gates"]["results"].items()}
print(json.dumps({"step": int(sys.argv[2]), **gates, "passed": report["gates"]["passed"]}))
PY
    rm -rf "$scratch/checkpoint" "$scratch/model" "$scratch/eval"
done
