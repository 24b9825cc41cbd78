"""Train a MobileNet from a YAML recipe.

python train.py -c configs/mobilenetv3/mobilenet_v3_small_digits_cpu.yaml
msrun --worker_num 8 python train.py -c configs/mobilenetv3/mobilenet_v3_small_ascend.yaml --data_dir /data/imagenet
python train.py -c RECIPE --data_dir DIR --distribute False --lr 0.1     # any recipe key can be overridden
python train.py --arch mobilenetv2 --alpha 1.0 --resize 224 --data_url DIR  # model-zoo flags (README)
"""

import os
import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import model_zoo_recipe, parse_args, run_main
from mindcv_mobile.config import resolve_split_folder
from mindcv_mobile.tasks import train


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    description = "Train a MobileNet from a YAML recipe"
    cfg, extras = parse_args(argv, description=description)
    recipe = model_zoo_recipe(argv, cfg, extras, os.path.dirname(os.path.abspath(__file__)))
    if recipe:  # the model zoo's MobileNetV1 command line: its recipe of the dataset
        print(f"train.py: model-zoo flags without -c: training {recipe}", file=sys.stderr)
        cfg, _ = parse_args(["-c", recipe, *argv], description=description)
    # The model zoo's --dataset_path names the training folder itself.
    note = resolve_split_folder(cfg, "train_split")
    if note:
        print(f"train.py: {note}", file=sys.stderr)
    result = train(cfg)
    if result.best_top1 is not None:
        print(f"best val top-1 {100 * result.best_top1:.2f}% -> {result.best_checkpoint}")
    print(f"run directory: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "train.py"))
