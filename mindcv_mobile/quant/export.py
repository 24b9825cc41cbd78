"""``export.py --quant True``: a QAT checkpoint to a deploy MINDIR and an int8 ONNX, both checked.

Writes, for an output stem ``S`` (default ``<model>_int8``):

* ``S.mindir``: the deploy graph (BN folded, weights on the int8 grid, float arithmetic), batch 1;
* ``S.onnx``: the int8 QDQ model (uint8 activations with the QAT observers' ranges, per-channel
  int8 weights) that onnxruntime runs with QLinearConv / QLinearAdd / QGemm kernels;
* ``S_fp32.onnx``: the float deploy graph it was quantized from (the fp32 reference);
* ``<file>.json`` beside each: input shape, preprocessing, class names (as ``mindcv_mobile.deploy``).

Checks (on by default): the MINDIR's logits equal the fp32 ONNX's (same float graph), and the
int8 ONNX's logits are within ``INT8_TOLERANCE`` of MindSpore's QAT simulation.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..config import Config
from ..evaluation import RUN_CLASSES, load_eval_network, resolve_eval_config, standalone_config
from ..runtime import init_runtime
from .deploy import INPUT_NAME, OUTPUT_NAME, export_deploy_mindir, export_int8_onnx, onnx_session

_logger = logging.getLogger(__name__)

# The deploy MINDIR and the fp32 ONNX are one float graph: float32 rounding only.
FLOAT_TOLERANCE = 1e-4
# int8 kernels accumulate in int32 and requantize with fixed-point rounding where the simulation
# rounds float32 values: a value on a rounding boundary lands one step apart and that propagates.
# Measured on the digits QAT model: max 0.10 on logits up to 5.4 (2%), identical top-1 on 100%.
INT8_TOLERANCE = 0.05


@dataclasses.dataclass
class QuantExportResult:
    """The files written and how far their logits are from the references (None: not checked)."""

    mindir: str
    int8_onnx: str
    fp32_onnx: str
    input_shape: tuple
    checkpoint: str
    mindir_vs_fp32: Optional[float] = None
    int8_vs_simulation: Optional[float] = None
    max_abs_logit: Optional[float] = None
    top1_agreement: Optional[float] = None


def _stem(cfg: Config, output: Optional[str]) -> str:
    path = output or f"{cfg.model}_int8"
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        path = os.path.join(path, f"{cfg.model}_int8")
    for suffix in (".onnx", ".mindir"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _write_metadata(cfg: Config, path: str, file_format: str, input_shape: tuple, checkpoint: str,
                    precision: str) -> str:
    meta = {"model": cfg.model, "num_classes": cfg.num_classes, "file_format": file_format,
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "input_shape": list(input_shape),
            "dataset": cfg.dataset, "image_resize": cfg.image_resize, "crop_pct": cfg.crop_pct,
            "interpolation": cfg.interpolation, "mean": list(cfg.mean), "std": list(cfg.std),
            "checkpoint": checkpoint, "precision": precision}
    classes = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), RUN_CLASSES)
    if os.path.isfile(classes):
        with open(classes, encoding="utf-8") as f:
            meta["classes"] = [str(c) for c in json.load(f)]
    tmp = path + ".json.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, path + ".json")
    return path + ".json"


def export_quant_model(cfg: Config, output: Optional[str] = None, verify: bool = True,
                       seed: int = 0) -> QuantExportResult:
    """Export the QAT checkpoint of ``cfg`` (``quant: True``, ``ckpt_path``) for int8 deployment.

    Raises ValueError for a float checkpoint (no observer ranges) and RuntimeError when a written
    file fails its check (the files are then removed).
    """
    if not cfg.quant:
        raise ValueError("export_quant_model exports QAT checkpoints: set quant: True (--quant True)")
    cfg = resolve_eval_config(standalone_config(cfg))
    init_runtime(cfg)
    net = load_eval_network(cfg)
    stem = _stem(cfg, output)
    size, channels = cfg.image_resize, cfg.in_channels
    mindir = export_deploy_mindir(net, stem + ".mindir", size, channels)
    exported = export_int8_onnx(net, stem + ".onnx", size, channels)
    checkpoint = net.load_report.path
    result = QuantExportResult(mindir=mindir, int8_onnx=exported.int8_onnx, fp32_onnx=exported.fp32_onnx,
                               input_shape=(1, channels, size, size), checkpoint=checkpoint)
    if verify:
        x = np.random.default_rng(seed).standard_normal((8, channels, size, size)).astype(np.float32)
        simulated = net(ms.Tensor(x)).asnumpy()
        int8 = _run_onnx(exported.int8_onnx, x)
        fp32 = _run_onnx(exported.fp32_onnx, x)
        graph = nn.GraphCell(ms.load(mindir))
        from_mindir = np.concatenate([graph(ms.Tensor(x[i:i + 1])).asnumpy() for i in range(len(x))])
        scale = max(1.0, float(np.abs(simulated).max()))
        result.max_abs_logit = float(np.abs(simulated).max())
        result.mindir_vs_fp32 = float(np.abs(from_mindir - fp32).max())
        result.int8_vs_simulation = float(np.abs(int8 - simulated).max())
        result.top1_agreement = float((int8.argmax(1) == simulated.argmax(1)).mean())
        failures = []
        if result.mindir_vs_fp32 > FLOAT_TOLERANCE * scale:
            failures.append(f"MINDIR vs fp32 ONNX logits differ by {result.mindir_vs_fp32:.3g}")
        if result.int8_vs_simulation > INT8_TOLERANCE * scale:
            failures.append(f"int8 ONNX vs QAT simulation logits differ by {result.int8_vs_simulation:.3g}")
        if failures:
            for path in (mindir, exported.int8_onnx, exported.fp32_onnx):
                if os.path.exists(path):
                    os.remove(path)
            raise RuntimeError(f"{stem}: {'; '.join(failures)} (max |logit| {result.max_abs_logit:.3g}); the export "
                               f"is not faithful and was removed")
    for path, fmt, precision in ((mindir, "MINDIR", "deploy graph: BN folded, int8-grid weights, float32"),
                                 (exported.int8_onnx, "ONNX", "int8 QDQ: uint8 activations (QAT ranges), "
                                                              "per-channel int8 weights"),
                                 (exported.fp32_onnx, "ONNX", "float32 deploy graph (int8-grid weights)")):
        shape = result.input_shape if fmt == "MINDIR" else ("batch",) + result.input_shape[1:]
        _write_metadata(cfg, path, fmt, shape, checkpoint, precision)
    return result


def _run_onnx(path: str, images: np.ndarray) -> np.ndarray:
    session = onnx_session(path)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


__all__ = ["QuantExportResult", "export_quant_model", "FLOAT_TOLERANCE", "INT8_TOLERANCE"]
