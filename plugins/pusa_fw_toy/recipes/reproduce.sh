#!/usr/bin/env bash
# Reproduce the shipped toy models (plugins/pusa_fw_toy/weights): a base trained from scratch in the world
# without walls (base.toml, from a Wan-initialised toy-init), two VTA LoRAs on it (training seeds 0 and 1),
# the quality gates, the eval-toy table, then the shipped folder and its MANIFEST.json.
# WALLS=bounce runs the bounce-world curriculum instead (docs/toy_training.md section 7; the shipped weights):
# the same first stage packed into the bounce world with the codec's position channels (toy-pack --walls bounce
# --position-ramps), continued there (base-continue.toml, then base-held.toml: every sample holds one clean
# frame, so the base learns to read the heading from the nose), the VTA stages,
# and the long-video evaluation (eval-toy --long with the first VTA) before shipping.  Every
# stage is resumable: rerun the script after an interruption and finished stages are skipped, an
# interrupted training run continues from its newest checkpoint in $RUNS.
#
#   RUNS=/somewhere/outside/the/repo bash plugins/pusa_fw_toy/recipes/reproduce.sh
#
# Run state stays under $RUNS; only the last step writes into the repository ($SHIP_TO and $DOCS_TO).
# Keep $RUNS on a disk that outlives the session (e.g. $HOME/pusa-runs): it is the only copy of a run in
# progress.  BASE_FROM=shipped skips the base stages and starts the VTA stages from the base committed in
# $SHIP_TO/base (its own training record is carried over from $SHIP_TO/MANIFEST.json by ship).
# BASE1_FROM=shipped (implies WALLS=bounce) takes a committed wall-less base as the first stage (its record
# carried, its weights checked against that manifest) and trains only the bounce-world stage and what follows.  The variables below shrink
# the whole pipeline for a test (tests/toy/test_toy_reproduce.py); their defaults made the shipped files.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS="${RUNS:?set RUNS to a directory outside the repository}"
PYTHON="${PYTHON:-.venv/bin/python}"
RECIPES=plugins/pusa_fw_toy/recipes
VTA_SEEDS="${VTA_SEEDS:-0 1}"
INIT_ARGS="${INIT_ARGS:---dim 192 --layers 4 --heads 6 --init wan --seed 0}"
TRAIN_ARGS="${TRAIN_ARGS:-}"
GATE_SEEDS="${GATE_SEEDS:-64}"
EVAL_SEEDS="${EVAL_SEEDS:-128}"
EVAL_ARGS="${EVAL_ARGS:-}"
LONG_ARGS="${LONG_ARGS:---steps 10}"
SHIP_TO="${SHIP_TO:-plugins/pusa_fw_toy/weights}"
DOCS_TO="${DOCS_TO:-docs}"
mkdir -p "$RUNS"
WALLS="${WALLS:-none}"
[ "${BASE1_FROM:-}" = shipped ] && WALLS=bounce

pusa_fw() { "$PYTHON" -m pusa_fw "$@"; }

# stage NAME COMMAND...: run once; record the command and its wall time in $RUNS/stages.jsonl.
stage() {
    local name="$1"; shift
    [ -e "$RUNS/$name.done" ] && return 0
    local start; start="$(date +%s.%N)"
    "$@"
    "$PYTHON" - "$RUNS/stages.jsonl" "$name" "$start" "$(date +%s.%N)" "$TRAIN_ARGS" "$@" <<'PY'
import json, shlex, sys
path, name, start, end, train_args, *words = sys.argv[1:]
if words[0] == "train":  # the train helper: record the pusa-fw command it runs, and how it resumes
    run, rest = words[1], words[2:]
    command = " ".join(["pusa-fw", "train", *rest, "--output-dir", run, "--no-progress", *shlex.split(train_args)])
    command += f"  # resumed with: pusa-fw train --resume {run}"
else:
    command = " ".join("pusa-fw" if word == "pusa_fw" else word for word in words)
with open(path, "a") as log:
    log.write(json.dumps({"stage": name, "wall_time_s": float(end) - float(start), "command": command}) + "\n")
PY
    touch "$RUNS/$name.done"
}

# train RUN_DIR ARGS...: start the run, or resume it from its newest checkpoint.
train() {
    local run="$1"; shift
    if [ -e "$run/checkpoints/latest" ]; then
        pusa_fw train --resume "$run" --no-progress
    else
        # shellcheck disable=SC2086
        pusa_fw train "$@" --output-dir "$run" --no-progress $TRAIN_ARGS
    fi
}

if [ "${BASE_FROM:-}" = shipped ]; then   # restart from the committed base: its record comes along
    if [ ! -e "$RUNS/base-model" ]; then
        cp "$SHIP_TO/MANIFEST.json" "$RUNS/base-manifest.json"
        cp -r "$SHIP_TO/base" "$RUNS/base-model.partial" && mv "$RUNS/base-model.partial" "$RUNS/base-model"
    fi
elif [ "$WALLS" = bounce ]; then
    if [ "${BASE1_FROM:-}" = shipped ]; then   # the committed wall-less base is stage 1: its record comes along
        if [ ! -e "$RUNS/base0-model" ] && grep -q '"walls": *"bounce"' "$SHIP_TO/base/toy.json"; then
            echo "reproduce.sh: BASE1_FROM=shipped needs a committed wall-less base, and $SHIP_TO/base already" \
                 "knows the walls; use BASE_FROM=shipped (VTA stages only) or WALLS=bounce (from scratch)" >&2
            exit 2
        fi
        if [ ! -e "$RUNS/base0-model" ]; then   # a verbatim copy, checked against the manifest by ship
            cp "$SHIP_TO/MANIFEST.json" "$RUNS/base-manifest.json"
            cp -r "$SHIP_TO/base" "$RUNS/base0-model.partial" && mv "$RUNS/base0-model.partial" "$RUNS/base0-model"
        fi
        stage base1-pack pusa_fw toy-pack "$RUNS/base0-model" --out "$RUNS/base1-model" --walls bounce --position-ramps
    else
        # shellcheck disable=SC2086
        [ -e "$RUNS/toy-init" ] || pusa_fw toy-init "$RUNS/toy-init" $INIT_ARGS
        stage base train "$RUNS/base" --config "$RECIPES/base.toml" \
            --set model.path="$RUNS/toy-init" --set data.options.model_dir="$RUNS/toy-init"
        stage base-pack pusa_fw toy-pack "$RUNS/base" --ema --out "$RUNS/base1-model" --walls bounce --position-ramps
    fi
    stage base2 train "$RUNS/base2" --config "$RECIPES/base-continue.toml" \
        --set model.path="$RUNS/base1-model" --set data.options.model_dir="$RUNS/base1-model"
    stage base2-pack pusa_fw toy-pack "$RUNS/base2" --ema --out "$RUNS/base2-model"
    stage base3 train "$RUNS/base3" --config "$RECIPES/base-held.toml" \
        --set model.path="$RUNS/base2-model" --set data.options.model_dir="$RUNS/base2-model"
    stage base3-pack pusa_fw toy-pack "$RUNS/base3" --out "$RUNS/base-model"   # raw weights (base-held.toml)
else
    # shellcheck disable=SC2086
    [ -e "$RUNS/toy-init" ] || pusa_fw toy-init "$RUNS/toy-init" $INIT_ARGS
    stage base train "$RUNS/base" --config "$RECIPES/base.toml" \
        --set model.path="$RUNS/toy-init" --set data.options.model_dir="$RUNS/toy-init"
    stage base-pack pusa_fw toy-pack "$RUNS/base" --ema --out "$RUNS/base-model"
fi
# shellcheck disable=SC2086
stage gates pusa_fw eval-toy --base "$RUNS/base-model" --task t2v --seeds "$GATE_SEEDS" --out "$RUNS/gates" $EVAL_ARGS
loras=()
for seed in $VTA_SEEDS; do
    stage "vta-s$seed" train "$RUNS/vta-s$seed" --config "$RECIPES/vta.toml" --set seed="$seed" \
        --set model.path="$RUNS/base-model" --set data.options.model_dir="$RUNS/base-model"
    stage "vta-s$seed-export" pusa_fw export-lora "$RUNS/vta-s$seed" --out "$RUNS/vta-s$seed.safetensors" \
        --base-model "$RUNS/base-model"
    loras+=(--lora "$RUNS/vta-s$seed.safetensors")
done
# shellcheck disable=SC2086
stage eval pusa_fw eval-toy --base "$RUNS/base-model" "${loras[@]}" --seeds "$EVAL_SEEDS" --out "$RUNS/eval" $EVAL_ARGS
if [ "$WALLS" = bounce ]; then   # long videos need a model that knows the walls
    first_seed="${VTA_SEEDS%% *}"
    # shellcheck disable=SC2086
    stage long pusa_fw eval-toy --long --base "$RUNS/base-model" --lora "$RUNS/vta-s$first_seed.safetensors" \
        --out "$RUNS/long" $LONG_ARGS
fi
# shellcheck disable=SC2086
"$PYTHON" -m pusa_fw_toy.ship "$RUNS" "$SHIP_TO" --seeds $VTA_SEEDS --docs "$DOCS_TO"
