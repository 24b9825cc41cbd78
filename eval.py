"""Score a checkpoint with the model zoo's eval.py command line (MindSpore model zoo, MobileNetV1).

python eval.py --dataset imagenet2012 --dataset_path /data/imagenet/validation_preprocess --pretrain_ckpt W.ckpt
python eval.py --dataset cifar10 --dataset_path /data/cifar10 --pretrain_ckpt W.ckpt --batch_size 64

--dataset_path may be the split folder itself (class folders of images) or the root holding it.
Without -c, the model comes from the config.yaml beside the checkpoint when train.py wrote it,
else from the MobileNetV1 recipe of --dataset (as scripts/run_eval.sh). Prints the model zoo's
result line: result: {'top_5_accuracy': ..., 'top_1_accuracy': ...} ckpt=PATH
"""

import os
import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import model_zoo_recipe, parse_args, run_main
from mindcv_mobile.config import config_from_run_dir, resolve_split_folder
from mindcv_mobile.files import write_json
from mindcv_mobile.tasks import validate

ROOT = os.path.dirname(os.path.abspath(__file__))


def _arguments(group) -> None:
    group.add_argument("--output", default="", help="also write the metrics to this JSON file")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    description = "Score a checkpoint (model-zoo eval.py command line)"
    cfg, extras = parse_args(argv, description=description, extra_arguments=_arguments, entry="eval")
    if not cfg.ckpt_path and not cfg.pretrained:
        raise ValueError("no weights to score: give --pretrain_ckpt CKPT (or --pretrained True)")
    if not extras.config:
        run_cfg = config_from_run_dir(cfg, cfg.ckpt_path)
        recipe = model_zoo_recipe(argv, cfg, extras, ROOT) if run_cfg is cfg else None
        if recipe:  # no run directory beside the weights: the model zoo's recipe of the dataset
            cfg, extras = parse_args(["-c", recipe, *argv], description, _arguments, entry="eval")
        else:
            cfg = run_cfg
    note = resolve_split_folder(cfg, "val_split")
    if note:
        print(f"eval.py: {note}", file=sys.stderr)
    result = validate(cfg)
    top5, top1 = result["Top_5_Accuracy"], result["Top_1_Accuracy"]
    print(f"result: {{'top_5_accuracy': {top5}, 'top_1_accuracy': {top1}}} ckpt={cfg.ckpt_path or 'pretrained'}")
    if extras.output:
        write_json(extras.output, result, "metrics")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "eval.py"))
