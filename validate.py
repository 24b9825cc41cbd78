"""Validate a checkpoint: top-1 / top-5 on the recipe's val split with the model's eval transforms.

python validate.py -c configs/mobilenetv2/mobilenet_v2_0.75_ascend.yaml --data_dir /data/imagenet --ckpt_path W.ckpt
python validate.py --model mobilenet_v2_075 --image_resize 192 --pretrained True --data_dir /data/imagenet
python validate.py --ckpt_path runs/x/best.ckpt --data_dir data/digits   # no -c: the run's config.yaml
python validate.py --ckpt_path runs/x --confusion cm.png --table runs.csv # every checkpoint of a run
python validate.py --ckpt_path model.onnx --data_dir data/digits          # an exported file (.onnx, .mindir)

An exported file is scored in its runtime (onnxruntime, MindSpore for .mindir) with the
preprocessing, class count and class names of the ``<file>.json`` export.py wrote beside it; a
recipe's values are replaced by the file's, a command-line value must agree with them.

Printed per checkpoint: the per-class table (worst class first), a one-line summary and the dict
``{'Top_1_Accuracy': ..., 'Top_5_Accuracy': ..., 'loss': ..., 'samples': ...}`` for scripts
(the last line); with several checkpoints, then a markdown table of them.
"""

import argparse
import os
import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import parse_args, run_main
from mindcv_mobile.evaluation import (
    checkpoints_markdown,
    confusion_paths,
    per_class_table,
    write_checkpoints_table,
    write_confusion,
)
from mindcv_mobile.files import write_json
from mindcv_mobile.tasks.validate import checkpoint_configs, validate_checkpoints

PER_CLASS_AUTO_MAX = 20  # classes up to which the per-class table is printed unless --per_class False


def _flag(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(str(text).lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


def _arguments(group) -> None:
    group.add_argument(
        "--output",
        default="",
        help="also write the metrics to this JSON file (several checkpoints: a list, with checkpoint and epoch)",
    )
    group.add_argument(
        "--per_class",
        nargs="?",
        const=True,
        default=None,
        type=_flag,
        metavar="BOOL",
        help=f"print accuracy per class (images, correct, accuracy), worst first; unset: printed when there are "
        f"{PER_CLASS_AUTO_MAX} classes or fewer and one checkpoint",
    )
    group.add_argument(
        "--confusion",
        default="",
        metavar="PATH.png",
        help="write the confusion matrix as an image (.png, .svg or .pdf) and as CSV beside it (PATH with .csv; "
        "rows: true class, columns: predicted); several checkpoints: PATH-<checkpoint>.png each",
    )
    group.add_argument(
        "--table",
        default="",
        metavar="PATH",
        help="write the checkpoints table (checkpoint, epoch, top-1, top-5, loss, images) as CSV, or as markdown "
        "when PATH ends in .md",
    )


def _confusion_path(path: str, checkpoint: str, several: bool) -> str:
    """``path``, or with several files PATH-<name>.png for <name>.ckpt (an exported file keeps its
    format, PATH-<name>_onnx.png: apart from the checkpoint it was exported from)."""
    if not several:
        return path
    stem, ext = os.path.splitext(path)
    name, kind = os.path.splitext(os.path.basename(checkpoint))
    suffix = "" if kind.lower() == ".ckpt" else kind.replace(".", "_")
    return f"{stem}-{name}{suffix}{ext}"


def main(argv=None) -> int:
    cfg, extras = parse_args(
        argv, description="Validate checkpoints (top-1/top-5)", extra_arguments=_arguments, entry="validate"
    )
    paths = getattr(extras, "ckpt_paths", None) or [cfg.ckpt_path]
    if extras.confusion:
        confusion_paths(extras.confusion)  # a wrong extension fails before any evaluation
    cfgs = checkpoint_configs(cfg, paths, from_run=not extras.config)
    reports = validate_checkpoints(cfgs)
    several = len(reports) > 1
    for report in reports:
        per_class = extras.per_class
        if per_class is None:
            per_class = not several and len(report.classes) <= PER_CLASS_AUTO_MAX
        if per_class:
            print(f"per class ({report.checkpoint}):" if several else "per class:")
            print(per_class_table(report.per_class()))
        if extras.confusion:
            path = _confusion_path(extras.confusion, report.checkpoint, several)
            top1 = report.metrics["Top_1_Accuracy"]
            title = f"{os.path.basename(report.checkpoint)} on {report.data}: top-1 {100 * top1:.2f}%"
            csv_path, image_path, note = write_confusion(path, report.confusion, report.names, title)
            print(f"confusion matrix: {image_path or note}, {csv_path}", file=sys.stderr)
        print(f"{report.checkpoint}: {report.summary()}" if several else report.summary())
        print(report.metrics)
    rows = [report.row() for report in reports]
    if several:
        print(checkpoints_markdown(rows))
    if extras.table:
        print(f"checkpoints table: {write_checkpoints_table(extras.table, rows)}", file=sys.stderr)
    if extras.output:
        write_json(extras.output, rows if several else reports[0].metrics, "metrics")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "validate.py"))
