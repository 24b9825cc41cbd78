#!/usr/bin/env bash
# Evaluate a quantization-aware (QAT) MobileNetV2 checkpoint in the argument order of the
# MindSpore model zoo's mobilenetv2_quant scripts, ending with its result line:
#
#   bash scripts/run_infer_quant.sh [Ascend|GPU|CPU] DATASET_PATH CHECKPOINT_PATH [eval.py options...]
#   -> result:{'acc':0.71976314102564111}        (top-1 accuracy)
#
# DATASET_PATH is the validation folder itself (e.g. ~/imagenet/val/) or the root holding val/.
# The model comes from the config.yaml beside the checkpoint when train.py wrote it, else from the
# QAT recipe of the platform (RECIPE=path/to/recipe.yaml replaces it). scripts/run_infer.sh is
# the same command under the model zoo's other name.
set -euo pipefail
PROG=$(basename "$0")
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
    echo "usage: bash scripts/$PROG [Ascend|GPU|CPU] DATASET_PATH CHECKPOINT_PATH [eval.py options...]" >&2
    echo "  e.g. bash scripts/$PROG Ascend ~/imagenet/val/ ~/train/mobilenet-60_1601.ckpt" >&2
    exit 2
}
fail() {
    echo "$PROG: error: $*" >&2
    exit 2
}

[ $# -ge 3 ] || usage
PLATFORM=$1 DATASET_PATH=$2 CKPT=$3
shift 3
case $PLATFORM in
    Ascend|GPU) default_recipe="$ROOT/configs/mobilenetv2_quant/mobilenet_v2_quant_ascend.yaml" ;;
    CPU) default_recipe="$ROOT/configs/mobilenetv2_quant/mobilenet_v2_quant_digits_cpu.yaml" ;;
    *) fail "platform must be Ascend, GPU or CPU, got '$PLATFORM'" ;;
esac
[ -d "$DATASET_PATH" ] || fail "DATASET_PATH '$DATASET_PATH' is not a folder"
[ -f "$CKPT" ] || fail "CHECKPOINT_PATH '$CKPT' not found; expected a QAT .ckpt file"
recipe=()
if [ -n "${RECIPE:-}" ] || [ ! -f "$(dirname "$CKPT")/config.yaml" ]; then
    RECIPE=${RECIPE:-$default_recipe}
    [ -f "$RECIPE" ] || fail "recipe '$RECIPE' not found"
    recipe=(-c "$RECIPE")
fi

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
metrics=$(mktemp "${TMPDIR:-/tmp}/infer_quant.XXXXXX.json")
trap 'rm -f "$metrics"' EXIT
"$PY" "$ROOT/eval.py" "${recipe[@]}" --device_target "$PLATFORM" --dataset_path "$DATASET_PATH" \
    --pretrain_ckpt "$CKPT" --quant True --distribute False --output "$metrics" "$@"
# The seed's script leaves the result line in ./val/infer.log as well.
mkdir -p val || fail "cannot create ./val for infer.log"
"$PY" -c "import json, sys; print(\"result:{'acc':%r}\" % json.load(open(sys.argv[1]))['Top_1_Accuracy'])" "$metrics" \
    | tee val/infer.log
