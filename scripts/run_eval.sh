#!/usr/bin/env bash
# Validate a checkpoint (top-1/top-5) with the MobileNetV1 recipe of the chosen dataset, in the
# argument order of the MindSpore model zoo's MobileNetV1 scripts:
#
#   bash scripts/run_eval.sh [cifar10|imagenet2012] [DATASET_PATH] [CHECKPOINT_PATH] [validate.py options...]
#
# DATASET_PATH: the ImageFolder root holding val/ (imagenet2012), or the folder holding
# cifar-10-batches-bin/ (cifar10). Extra options go to validate.py (e.g. --batch_size 64
# --output metrics.json). RECIPE=path/to/recipe.yaml replaces the dataset's default recipe.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
  echo "Usage: bash $0 [cifar10|imagenet2012] [DATASET_PATH] [CHECKPOINT_PATH] [validate.py options...]" >&2
  echo "  e.g. bash $0 imagenet2012 /data/imagenet ./ckpt/mobilenet_v1_100-best.ckpt" >&2
  exit 1
}

[ $# -ge 3 ] || usage
case "$1" in
  cifar10) default_recipe="$ROOT/configs/mobilenetv1/mobilenet_v1_1.0_cifar10_ascend.yaml" ;;
  imagenet2012) default_recipe="$ROOT/configs/mobilenetv1/mobilenet_v1_1.0_imagenet2012_ascend.yaml" ;;
  *) echo "error: dataset must be cifar10 or imagenet2012, got '$1'" >&2; usage ;;
esac
RECIPE="${RECIPE:-$default_recipe}"
[ -f "$RECIPE" ] || { echo "error: recipe not found: $RECIPE" >&2; exit 1; }
[ -d "$2" ] || { echo "error: DATASET_PATH is not a folder: $2" >&2; usage; }
[ -f "$3" ] || { echo "error: CHECKPOINT_PATH is not a file: $3" >&2; usage; }

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
dataset_path="$2" checkpoint="$3"
shift 3
exec "$PY" "$ROOT/validate.py" -c "$RECIPE" --data_dir "$dataset_path" --ckpt_path "$checkpoint" "$@"
