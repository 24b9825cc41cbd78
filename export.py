"""Export a checkpoint to MINDIR, ONNX or AIR (Ascend only), checked against the MindSpore Cell.

    python export.py -c RECIPE --ckpt_path W.ckpt --file_format MINDIR --output mobilenet.mindir
    python export.py --ckpt_path runs/x/best.ckpt --file_format ONNX --output x.onnx --batch_size 8
    python export.py --model mobilenet_v2_075_160 --pretrained True --file_format ONNX   # 160 px from the record
    python export.py --ckpt_path runs/qat/best.ckpt --quant True --output qat   # qat.mindir + int8 qat.onnx
"""
import sys

import mindcv_mobile  # noqa: F401  (first: sets CPU speed defaults before MindSpore loads)
from mindcv_mobile.cli import run_main
from mindcv_mobile.config import parse_args
from mindcv_mobile.deploy import EXPORT_FORMATS, export_model
from mindcv_mobile.evaluation import config_from_run_dir


def _arguments(group) -> None:
    group.add_argument("--file_format", default="MINDIR", type=str.upper, choices=list(EXPORT_FORMATS),
                       help="exported format (AIR needs Ascend)")
    group.add_argument("--output", default="", help="file to write (default <model>.<ext>; the extension is added "
                       "when missing); <output>.json beside it records input shape, preprocessing and class names")
    group.add_argument("--no_verify", action="store_true",
                       help="skip loading the file back and comparing its logits with the Cell's")


def main(argv=None) -> int:
    cfg, extras = parse_args(argv, description="Export a checkpoint to MINDIR / ONNX / AIR",
                             extra_arguments=_arguments)
    if not extras.config and cfg.ckpt_path:
        cfg = config_from_run_dir(cfg, cfg.ckpt_path)
    if cfg.quant:  # a QAT checkpoint: deploy-graph MINDIR + int8 ONNX (mindcv_mobile/quant/export.py)
        from mindcv_mobile.quant.export import export_quant_model
        q = export_quant_model(cfg, extras.output or None, verify=not extras.no_verify)
        print(f"exported deploy graph {q.mindir}, int8 ONNX {q.int8_onnx} (fp32 reference {q.fp32_onnx}) "
              f"from {q.checkpoint}")
        if q.int8_vs_simulation is not None:
            print(f"int8 ONNX vs QAT simulation: max abs difference {q.int8_vs_simulation:.3g} (max |logit| "
                  f"{q.max_abs_logit:.3g}), top-1 agreement {100 * q.top1_agreement:.0f}% on 8 random inputs; "
                  f"MINDIR vs fp32 ONNX {q.mindir_vs_fp32:.3g}")
        return 0
    # A recipe's batch_size is a training batch; the exported batch is 1 unless given here.
    batch_size = cfg.batch_size if cfg.origins.get("batch_size") == "command line" else 1
    result = export_model(cfg, extras.file_format, extras.output or None, batch_size=batch_size,
                          verify=not extras.no_verify)
    shape = "x".join(str(d) for d in result.input_shape)
    print(f"exported {result.file_format} {result.path}: input {shape} from {result.checkpoint}")
    if result.max_abs_diff is not None:
        print(f"max abs difference vs the MindSpore Cell: {result.max_abs_diff:.3g} (max |logit| "
              f"{result.max_abs_logit:.3g}, float32 noise {result.noise:.3g}, tolerance {result.tolerance:.3g})")
    print(f"metadata: {result.metadata_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "export.py"))
