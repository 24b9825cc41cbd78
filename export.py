"""Export a checkpoint to MINDIR, ONNX or AIR (Ascend only), checked against the MindSpore Cell.

python export.py -c RECIPE --ckpt_path W.ckpt --file_format MINDIR --output mobilenet.mindir
python export.py --ckpt_path runs/x/best.ckpt --file_format ONNX --output x.onnx   # any batch size
python export.py --model mobilenet_v2_075_160 --pretrained True --file_format ONNX   # 160 px from the record
python export.py --ckpt_path runs/qat/best.ckpt --quant True --output qat   # qat.mindir + int8 qat.onnx
"""

import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import parse_args, run_main
from mindcv_mobile.config import config_from_run_dir
from mindcv_mobile.deploy import EXPORT_FORMATS
from mindcv_mobile.tasks.export import export


def _arguments(group) -> None:
    group.add_argument(
        "--file_format",
        default="MINDIR",
        type=str.upper,
        choices=list(EXPORT_FORMATS),
        help="exported format (AIR needs Ascend); ONNX files take any batch size, MINDIR and AIR "
        "the --batch_size given here (default 1); --quant True writes a deploy-graph MINDIR and "
        "int8 + fp32 ONNX files",
    )
    group.add_argument(
        "--output",
        default="",
        help="file to write (default <model>.<ext>; the extension is added "
        "when missing), or the stem of a --quant True export; <file>.json beside each file records "
        "input shape, preprocessing, precision and class names",
    )
    group.add_argument(
        "--no_verify", action="store_true", help="skip running the files and comparing their logits with the Cell's"
    )


def main(argv=None) -> int:
    cfg, extras = parse_args(
        argv, description="Export a checkpoint to MINDIR / ONNX / AIR", extra_arguments=_arguments, entry="export"
    )
    if not extras.config and cfg.ckpt_path:
        cfg = config_from_run_dir(cfg, cfg.ckpt_path)
    result = export(cfg, extras.file_format, extras.output or None, verify=not extras.no_verify)
    for f in result.files:
        print(f"exported {f.file_format} {f.path}: input {f.shape_text}, {f.precision}, from {result.checkpoint}")
        if f.max_abs_diff is not None:
            print(
                f"  max abs difference vs {f.compared_with}: {f.max_abs_diff:.3g} (max |logit| "
                f"{f.max_abs_logit:.3g}, tolerance {f.tolerance:.3g}), top-1 agreement "
                f"{100 * f.top1_agreement:.0f}%"
            )
        print(f"  metadata: {f.metadata_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "export.py"))
