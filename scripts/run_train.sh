#!/usr/bin/env bash
# Quantization-aware training of MobileNetV2 in the argument order of the MindSpore model zoo's
# mobilenetv2_quant scripts:
#
#   bash scripts/run_train.sh [Ascend|GPU|CPU] [RANK_TABLE_FILE|DEVICE_ID_LIST] DATASET_PATH [PRETRAINED_CKPT_PATH] [-- TRAIN_ARGS...]
#
# Ascend/GPU run configs/mobilenetv2_quant/mobilenet_v2_quant_ascend.yaml, CPU the digits QAT
# recipe (RECIPE=path/to/recipe.yaml replaces either). RANK_TABLE_FILE (a .json) gives one worker
# per device it lists; DEVICE_ID_LIST ("0,1") one worker per id, made the visible devices. More
# than one worker runs data-parallel under msrun (scripts/run_distribute_train.sh). DATASET_PATH
# is the dataset root or its training folder. PRETRAINED_CKPT_PATH is the float checkpoint to
# fine-tune; without it Ascend/GPU start from the released float weights (local cache) and CPU
# trains from scratch.
set -euo pipefail
PROG=$(basename "$0")
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
    echo "usage: bash scripts/$PROG [Ascend|GPU|CPU] [RANK_TABLE_FILE|DEVICE_ID_LIST] DATASET_PATH [PRETRAINED_CKPT_PATH] [-- TRAIN_ARGS...]" >&2
    echo "  e.g. bash scripts/$PROG GPU 0,1 ~/imagenet/train/ ~/mobilenet.ckpt" >&2
    exit 2
}
fail() {
    echo "$PROG: error: $*" >&2
    exit 2
}

[ $# -ge 3 ] || usage
PLATFORM=$1 DEVICES=$2 DATASET_PATH=$3
shift 3
case $PLATFORM in
    Ascend|GPU) default_recipe="$ROOT/configs/mobilenetv2_quant/mobilenet_v2_quant_ascend.yaml" ;;
    CPU) default_recipe="$ROOT/configs/mobilenetv2_quant/mobilenet_v2_quant_digits_cpu.yaml" ;;
    *) fail "platform must be Ascend, GPU or CPU, got '$PLATFORM'" ;;
esac
RECIPE=${RECIPE:-$default_recipe}
[ -f "$RECIPE" ] || fail "recipe '$RECIPE' not found"
[ -d "$DATASET_PATH" ] || fail "DATASET_PATH '$DATASET_PATH' is not a folder"
CKPT=""
if [ $# -ge 1 ] && [ "$1" != "--" ]; then
    CKPT=$1
    shift
    [ -f "$CKPT" ] || fail "PRETRAINED_CKPT_PATH '$CKPT' not found; expected a float .ckpt file"
fi
if [ $# -ge 1 ]; then
    [ "$1" = "--" ] || fail "unexpected argument '$1'; put train.py options after --"
    shift
fi

# The float weights QAT starts from: the given checkpoint, else the recipe's (CPU: none).
if [ -n "$CKPT" ]; then
    start=(--ckpt_path "$CKPT" --pretrained False)
elif [ "$PLATFORM" = CPU ]; then
    echo "$PROG: no PRETRAINED_CKPT_PATH: quantization-aware training from random weights" >&2
    start=(--ckpt_path "" --pretrained False)
else
    start=()
fi

if [ -f "$DEVICES" ]; then
    run_distributed=(bash "$ROOT/scripts/run_distribute_train.sh" imagenet2012 "$DEVICES")
    worker_num=2  # more than one: the rank table decides how many
elif [[ $DEVICES =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    IFS=, read -r -a ids <<< "$DEVICES"
    worker_num=${#ids[@]}
    # msrun numbers its workers' devices 0..N-1: the listed ids become those.
    case $PLATFORM in
        GPU) export CUDA_VISIBLE_DEVICES=$DEVICES ;;
        Ascend) export ASCEND_RT_VISIBLE_DEVICES=$DEVICES ;;
    esac
    run_distributed=(bash "$ROOT/scripts/run_distribute_train.sh" "$worker_num")
else
    fail "second argument must be a rank table file or a device id list such as 0,1; got '$DEVICES'"
fi

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
common=(--device_target "$PLATFORM" "${start[@]}" "$@")
if [ "$worker_num" -eq 1 ]; then
    exec "$PY" "$ROOT/train.py" -c "$RECIPE" --data_dir "$DATASET_PATH" --distribute False "${common[@]}"
fi
if [ -f "$DEVICES" ]; then
    RECIPE=$RECIPE exec "${run_distributed[@]}" "$DATASET_PATH" -- "${common[@]}"
fi
exec "${run_distributed[@]}" "$DATASET_PATH" "$RECIPE" -- "${common[@]}"
