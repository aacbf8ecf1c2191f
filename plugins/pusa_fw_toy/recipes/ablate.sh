#!/usr/bin/env bash
# Short from-scratch ablations of the toy base at equal wall time (docs/toy_training.md).
#
#   RUNS=/outside/the/repo OMP_NUM_THREADS=1 bash plugins/pusa_fw_toy/recipes/ablate.sh ARM
#
# ARM is one of: baseline, shift3, heads6, wan-init, patch1, caption-half. Each arm changes one thing of
# base.toml (and its toy-init) and trains for the number of steps that fills the same wall-time budget
# on this machine (two arms at a time, one thread each: the step counts below come from the step times
# measured that way). Then its last weights (not the EMA: the runs are too short for a 0.999 average) are
# packed and `eval-toy --task t2v` reads the quality gates on 64 held-out seeds. Rerun to resume: a
# finished step is skipped, an interrupted run continues from its newest checkpoint.
# Results: $RUNS/ablate/ARM/{run,model,gates}/ and $RUNS/ablate/ARM/wall_time_s.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS="${RUNS:?set RUNS to a directory outside the repository}"
PYTHON="${PYTHON:-.venv/bin/python}"
arm="${1:?name an arm: baseline, shift3, heads6, wan-init, patch1, caption-half}"
BUDGET_S="${BUDGET_S:-1500}"      # wall-time budget of every arm
SEEDS="${SEEDS:-64}"
# Appended to toy-init, train and eval-toy (the tests shrink the arms with them; empty for the real runs).
INIT_ARGS="${INIT_ARGS:-}"
TRAIN_ARGS="${TRAIN_ARGS:-}"
EVAL_ARGS="${EVAL_ARGS:-}"

# Step times (s) of one arm while another runs beside it, one thread each, on the 2-core machine.
case "$arm" in
    baseline)     init=(--dim 192 --heads 2); step_s=0.93; train=() ;;
    shift3)       init=(--dim 192 --heads 2); step_s=0.93; train=(--set ptss.shift=3) ;;
    heads6)       init=(--dim 192 --heads 6); step_s=0.96; train=() ;;
    wan-init)     init=(--dim 192 --heads 2 --init wan); step_s=0.93; train=() ;;
    patch1)       init=(--dim 96 --heads 2 --patch 1); step_s="${PATCH1_STEP_S:-1.6}"; train=() ;;
    caption-half) init=(--dim 192 --heads 2); step_s=0.93;
                  train=(--set data.options.direction_caption_share=0.5) ;;
    *) echo "ablate.sh: unknown arm '$arm'" >&2; exit 2 ;;
esac
steps="${STEPS:-$("$PYTHON" -c "print(int($BUDGET_S / $step_s) // 50 * 50)")}"
dir="$RUNS/ablate/$arm"
mkdir -p "$dir"
pusa_fw() { "$PYTHON" -m pusa_fw "$@"; }

# shellcheck disable=SC2086
[ -e "$dir/init" ] || pusa_fw toy-init "$dir/init" --layers 4 --seed 0 "${init[@]}" $INIT_ARGS >/dev/null
if [ ! -e "$dir/trained" ]; then
    start="$(date +%s)"
    if [ -e "$dir/run/checkpoints/latest" ]; then
        pusa_fw train --resume "$dir/run" --no-progress
    else
        # shellcheck disable=SC2086
        pusa_fw train --config plugins/pusa_fw_toy/recipes/base.toml --output-dir "$dir/run" --no-progress \
            --set model.path="$dir/init" --set data.options.model_dir="$dir/init" --set max_steps="$steps" \
            --set checkpoint.keep_last=1 "${train[@]}" $TRAIN_ARGS
    fi
    echo $(( $(date +%s) - start )) >> "$dir/wall_time_s"
    touch "$dir/trained"
fi
[ -e "$dir/model" ] || pusa_fw toy-pack "$dir/run" --out "$dir/model" >/dev/null
# shellcheck disable=SC2086
[ -e "$dir/gates/eval_toy.json" ] || \
    pusa_fw eval-toy --base "$dir/model" --task t2v --seeds "$SEEDS" --out "$dir/gates" $EVAL_ARGS >/dev/null
