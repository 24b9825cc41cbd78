#!/usr/bin/env bash
# The model zoo's mobilenetv2_quant names its evaluation script run_infer.sh in one place and
# run_infer_quant.sh in another; both run the same evaluation (see run_infer_quant.sh):
#
#   bash scripts/run_infer.sh [Ascend|GPU|CPU] DATASET_PATH CHECKPOINT_PATH [eval.py options...]
exec bash "$(dirname "$0")/run_infer_quant.sh" "$@"
