"""Validate a checkpoint: top-1 / top-5 on the recipe's val split with the model's eval transforms.

python validate.py -c configs/mobilenetv2/mobilenet_v2_0.75_ascend.yaml --data_dir /data/imagenet --ckpt_path W.ckpt
python validate.py --model mobilenet_v2_075 --image_resize 192 --pretrained True --data_dir /data/imagenet
python validate.py --ckpt_path runs/x/best.ckpt --data_dir data/digits   # no -c: the run's config.yaml
"""

import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import parse_args, run_main
from mindcv_mobile.config import config_from_run_dir
from mindcv_mobile.files import write_json
from mindcv_mobile.tasks import validate


def _arguments(group) -> None:
    group.add_argument("--output", default="", help="also write the metrics to this JSON file")


def main(argv=None) -> int:
    cfg, extras = parse_args(argv, description="Validate a checkpoint (top-1/top-5)", extra_arguments=_arguments)
    if not extras.config and cfg.ckpt_path:
        cfg = config_from_run_dir(cfg, cfg.ckpt_path)
    result = validate(cfg)
    print(result)
    if extras.output:
        write_json(extras.output, result, "metrics")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "validate.py"))
