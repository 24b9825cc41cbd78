"""Classify images with a checkpoint (MindSpore) or an exported .onnx file (onnxruntime): top-5 with names.

    python infer.py --ckpt_path runs/x/mobilenet_v3_small_100-best.ckpt photo.jpg more_photos/
    python infer.py --ckpt_path mobilenet.onnx --output predictions.csv photos/     # fast CPU path
    python infer.py -c RECIPE --pretrained True --classes imagenet_classes.txt photo.jpg

Class names come from --classes, else the exported file's .json metadata, else classes.json in the
checkpoint's run directory, else label indices. Without -c, a checkpoint's run directory config.yaml
gives model, num_classes and preprocessing.
"""
import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import run_main
from mindcv_mobile.config import parse_args
from mindcv_mobile.deploy import classify, predictions_format, read_class_names, write_predictions
from mindcv_mobile.evaluation import config_from_run_dir


def _arguments(group) -> None:
    group.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    group.add_argument("--classes", default="", help="class names: a JSON list or a text file, one name per line")
    group.add_argument("--topk", default=5, type=int, help="classes shown per image")
    group.add_argument("--output", default="", help="also write the predictions to a .csv or .json file")


def main(argv=None) -> int:
    cfg, extras = parse_args(argv, description="Classify images (top-5) with a .ckpt or .onnx",
                             extra_arguments=_arguments)
    if not extras.config and cfg.ckpt_path and not cfg.ckpt_path.lower().endswith(".onnx"):
        cfg = config_from_run_dir(cfg, cfg.ckpt_path)
    if extras.output:
        predictions_format(extras.output)  # a wrong extension fails before any work is done
    names = read_class_names(extras.classes) if extras.classes else None
    predictions = classify(cfg, extras.images, classes=names, topk=extras.topk)
    for p in predictions:
        top = ", ".join(f"{t['class']} {t['probability']:.4f}" for t in p["top"])
        print(f"{p['path']}: {top}")
    if extras.output:
        print(f"predictions written to {write_predictions(predictions, extras.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "infer.py"))
