#!/usr/bin/env bash
# Train on one device with the MobileNetV1 recipe of the chosen dataset, in the argument order of
# the MindSpore model zoo's MobileNetV1 scripts:
#
#   bash scripts/run_standalone_train.sh [cifar10|imagenet2012] [DATASET_PATH] [PRETRAINED_CKPT_PATH](optional) [train.py options...]
#
# DATASET_PATH: the ImageFolder root holding train/ and val/ (imagenet2012), or the folder holding
# cifar-10-batches-bin/ (cifar10). PRETRAINED_CKPT_PATH starts from those weights (a classifier of
# another size is dropped, i.e. fine-tuning). Extra options go to train.py (e.g. --epoch_size 10
# --ckpt_save_dir runs/v1). RECIPE=path/to/recipe.yaml replaces the dataset's default recipe.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
  echo "Usage: bash $0 [cifar10|imagenet2012] [DATASET_PATH] [PRETRAINED_CKPT_PATH](optional) [train.py options...]" >&2
  echo "  e.g. bash $0 cifar10 /data/cifar10" >&2
  exit 1
}

[ $# -ge 2 ] || usage
case "$1" in
  cifar10) default_recipe="$ROOT/configs/mobilenetv1/mobilenet_v1_1.0_cifar10_ascend.yaml" ;;
  imagenet2012) default_recipe="$ROOT/configs/mobilenetv1/mobilenet_v1_1.0_imagenet2012_ascend.yaml" ;;
  *) echo "error: dataset must be cifar10 or imagenet2012, got '$1'" >&2; usage ;;
esac
RECIPE="${RECIPE:-$default_recipe}"
[ -f "$RECIPE" ] || { echo "error: recipe not found: $RECIPE" >&2; exit 1; }
[ -d "$2" ] || { echo "error: DATASET_PATH is not a folder: $2" >&2; usage; }
dataset_path="$2"
shift 2
pretrained=()
# An optional third positional argument (not an option) is the pretrained checkpoint.
if [ $# -ge 1 ] && [[ "$1" != -* ]]; then
  [ -f "$1" ] || { echo "error: PRETRAINED_CKPT_PATH is not a file: $1" >&2; usage; }
  pretrained=(--ckpt_path "$1")
  shift
fi

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
exec "$PY" "$ROOT/train.py" -c "$RECIPE" --data_dir "$dataset_path" --distribute False "${pretrained[@]}" "$@"
