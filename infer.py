"""Classify images with a checkpoint (MindSpore), an exported .onnx (onnxruntime) or .mindir file: top-5 with names.

    python infer.py --ckpt_path runs/x/mobilenet_v3_small_100-best.ckpt photo.jpg more_photos/
    python infer.py --ckpt_path mobilenet.onnx --output predictions.csv photos/     # fast CPU path
    python infer.py --ckpt_path mobilenet.mindir photos/
    python infer.py -c RECIPE --pretrained True --classes imagenet_classes.txt photo.jpg

Class names come from --classes, else the exported file's .json metadata, else classes.json in the
checkpoint's run directory, else label indices. Without -c, a checkpoint's run directory config.yaml
(an exported file's .json metadata) gives model, num_classes and preprocessing. Images are read in
batches and each prediction is printed (and written) as it comes, so memory does not grow with the
number of images. Unreadable images are skipped with a warning.
"""

import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import parse_args, run_main
from mindcv_mobile.config import config_from_run_dir
from mindcv_mobile.tasks.infer import infer, prediction_line, reads_run_config


def _arguments(group) -> None:
    group.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    group.add_argument("--classes", default="", help="class names: a JSON list or a text file, one name per line")
    group.add_argument("--topk", default=5, type=int, help="classes shown per image")
    group.add_argument("--output", default="", help="also write the predictions to a .csv or .json file")


def main(argv=None) -> int:
    cfg, extras = parse_args(
        argv,
        description="Classify images (top-5) with a .ckpt, .onnx or .mindir",
        extra_arguments=_arguments,
        entry="infer",
    )
    if not extras.config and reads_run_config(cfg):
        cfg = config_from_run_dir(cfg, cfg.ckpt_path)
    result = infer(
        cfg,
        extras.images,
        classes=extras.classes or None,
        topk=extras.topk,
        output=extras.output or None,
        on_prediction=lambda p: print(prediction_line(p)),
    )
    if result.skipped:
        print(
            f"skipped {len(result.skipped)} unreadable image(s): {', '.join(path for path, _ in result.skipped)}",
            file=sys.stderr,
        )
    if result.output:
        print(f"predictions written to {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "infer.py"))
