"""Int8 ONNX of a QAT MobileNetV2 (and post-training int8 of a float one), and deploy-graph files.

MindSpore's ONNX exporter writes no QuantizeLinear/DequantizeLinear and its ``Round`` is rejected
by onnxruntime, so the float deploy graph (``quant.build_deploy_net``: BN folded, int8-grid
weights) is exported and then quantized by ``onnxruntime.quantization.quantize_static`` (QDQ
format, per-channel int8 weights, uint8 activations), with the scale and zero point of every
activation given as a tensor override from the QAT observers. The weights are already on the
int8 grid, so onnxruntime's per-channel symmetric quantization reproduces the QAT integers
exactly; at load time onnxruntime fuses the Q/DQ pairs into QLinearConv / QLinearAdd / QGemm.

Without overrides, :func:`quantize_onnx` quantizes post-training from ``calibration`` batches:
the PTQ baseline of ``benchmarks/quant``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Optional, Union

import mindspore as ms
import numpy as np

from ..models.layers import MobileNet
from ..quant import QuantInvertedResidual, QuantMobileNetV2, build_deploy_net
from .writer import dynamic_batch, private_folder, write_cell, write_onnx

ONNX_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis attribute) needs opset 13


def _with_suffix(path: str, suffix: str) -> str:
    path = os.fspath(path)
    return path if path.endswith(suffix) else path + suffix


def _trace_input(image_size: int, in_channels: int, batch_size: int = 1) -> ms.Tensor:
    return ms.Tensor(np.zeros((batch_size, in_channels, image_size, image_size), np.float32))


def export_deploy_mindir(
    net: Union[QuantMobileNetV2, MobileNet], path: str, image_size: int, in_channels: int = 3, batch_size: int = 1
) -> str:
    """Write the deploy graph of ``net`` as MINDIR with a fixed ``batch_size``; returns the path
    (``.mindir`` appended when missing)."""
    path = _with_suffix(path, ".mindir")
    return write_cell(build_deploy_net(net), _trace_input(image_size, in_channels, batch_size), "MINDIR", path)


def export_deploy_onnx(
    net: Union[QuantMobileNetV2, MobileNet], path: str, image_size: int, in_channels: int = 3
) -> str:
    """Write the float deploy graph of ``net`` as ONNX (opset 13, input ``image``, output
    ``logits``, dynamic batch); returns the path (``.onnx`` appended when missing)."""
    path = _with_suffix(path, ".onnx")
    return write_cell(build_deploy_net(net), _trace_input(image_size, in_channels), "ONNX", path, opset=ONNX_OPSET)


def onnx_range_overrides(onnx_path: str, net: QuantMobileNetV2) -> dict:
    """``{tensor name: [{"scale", "zero_point"}]}`` for every activation the int8 model
    quantizes, from the QAT observers: the graph input, each conv's output (and its Clip, i.e.
    ReLU6), each residual Add, and the pooled features entering the classifier (Gemm).

    Convs are matched by their weight initializer (``<conv>.weight``), Adds by order.
    """
    import onnx

    graph = onnx.load(onnx_path).graph
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    conv_points, add_points = {}, []
    for layer in net.features:
        convs = layer.layers if isinstance(layer, QuantInvertedResidual) else [layer]
        for conv in convs:
            conv_points[f"{conv.conv_name}.weight"] = conv.act_quant
        if isinstance(layer, QuantInvertedResidual) and layer.use_res_connect:
            add_points.append(layer.add_quant)

    def entry(point) -> list:
        scale, zero_point = point.qparams()
        return [{"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.uint8)}]

    overrides = {graph.input[0].name: entry(net.input_quant)}
    adds, gemms = [], []
    for node in graph.node:
        if node.op_type == "Conv":
            point = conv_points.pop(node.input[1], None)
            if point is None:
                raise ValueError(
                    f"ONNX Conv {node.name} has weight {node.input[1]!r}, which is no conv of the QAT model"
                )
            overrides[node.output[0]] = entry(point)
            for user in consumers.get(node.output[0], []):
                if user.op_type == "Clip":  # ReLU6: onnxruntime folds it into the uint8 range
                    overrides[user.output[0]] = entry(point)
        elif node.op_type == "Add":
            adds.append(node)
        elif node.op_type == "Gemm":
            gemms.append(node)
    if conv_points or len(adds) != len(add_points) or len(gemms) != 1:
        raise ValueError(
            f"the ONNX graph does not match the QAT model: convs without a node "
            f"{sorted(conv_points)[:3]}, {len(adds)} Add nodes for {len(add_points)} residual adds, "
            f"{len(gemms)} Gemm nodes for 1"
        )
    for node, point in zip(adds, add_points):
        overrides[node.output[0]] = entry(point)
    overrides[gemms[0].input[0]] = entry(net.pool_quant)
    return overrides


class _Batches:
    """onnxruntime CalibrationDataReader over a list of NCHW float32 arrays."""

    def __init__(self, input_name: str, batches: list) -> None:
        self.input_name = input_name
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, np.float32)}


def _quantize_static(source: str, target: str, batches: list, overrides: Optional[dict]) -> None:
    """onnxruntime's static QDQ quantization of ``source`` into ``target`` (both in a private folder)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:  # it needs sympy; without it onnxruntime only warns that it was skipped
        quant_pre_process = None

    if quant_pre_process is not None:
        # onnxruntime's recommended pre-processing; shape inference only, so tensor names stay.
        prepared = target + ".pre.onnx"
        quant_pre_process(source, prepared, skip_optimization=True)
        source = prepared
    extra = {
        # logits stay float: an argmax over a 256-level uint8 grid would create ties.
        "OpTypesToExcludeOutputQuantization": ["Gemm"],
        # Left on (onnxruntime's default): a channel whose weights are ~0 (BN gamma ~0) but whose
        # bias is not would overflow the int32 bias at scale s_in * s_w; onnxruntime widens that
        # channel's weight scale instead (its weights round to 0 either way). Every other channel
        # keeps the QAT grid exactly.
        "QDQDisableWeightAdjustForInt32Bias": False,
    }
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    input_name = onnx.load(source).graph.input[0].name
    quantize_static(
        source,
        target,
        _Batches(input_name, batches),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv", "Clip", "Add", "Gemm"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options=extra,
    )


def quantize_onnx(
    fp32_path: str, int8_path: str, overrides: Optional[dict] = None, calibration: Optional[Iterable[np.ndarray]] = None
) -> str:
    """Quantize a float ONNX model to int8 QDQ (uint8 activations, per-channel int8 weights)
    with a dynamic batch axis; returns ``int8_path``.

    With ``overrides`` (QAT) every quantized activation must be covered by them: a tensor left to
    calibration is an error, so the int8 model's ranges are provably the trained ones. Without
    them (post-training quantization) the ranges are the min/max over ``calibration`` batches.
    """
    import onnx

    batches = list(calibration) if calibration is not None else []
    if not batches:
        if not overrides:
            raise ValueError("post-training quantization needs calibration batches (no QAT ranges given)")
        # All ranges are overridden; calibration only has to run once.
        dims = [d.dim_value for d in onnx.load(fp32_path).graph.input[0].type.tensor_type.shape.dim]
        batches = [np.zeros([1] + dims[1:], np.float32)]
    with private_folder() as work:
        produced = os.path.join(work, "int8.onnx")
        _quantize_static(fp32_path, produced, batches, overrides)
        int8_model = onnx.load(produced)
    if overrides:
        quantized = {node.input[0] for node in int8_model.graph.node if node.op_type == "QuantizeLinear"}
        uncovered = sorted(name for name in quantized if name not in overrides)
        if uncovered:
            raise ValueError(
                f"{int8_path}: activations {uncovered[:5]} were quantized with calibration "
                f"ranges, not QAT observer ranges"
            )
    return write_onnx(dynamic_batch(int8_model), int8_path)


def check_trained_qat(net) -> None:
    """Raise unless ``net`` is a QAT model whose observers hold ranges (int8 needs them)."""
    if not isinstance(net, QuantMobileNetV2):
        raise ValueError(
            f"an int8 ONNX needs a QAT model (quantize_model / quant: True), got {type(net).__name__}; "
            f"for a float model use export_deploy_onnx + quantize_onnx"
        )
    if int(net.quant_step.asnumpy()) == 0:
        raise ValueError(
            "the QAT model has not trained a single step: its activation observers hold no ranges "
            "(fine-tune with quant: true first)"
        )


@dataclasses.dataclass
class Int8Export:
    """What :func:`export_int8_onnx` wrote."""

    int8_onnx: str
    fp32_onnx: str
    quantized_tensors: int


def export_int8_onnx(
    net: QuantMobileNetV2, path: str, image_size: int, in_channels: int = 3, fp32_path: Optional[str] = None
) -> Int8Export:
    """Export a trained QAT model as an int8 ONNX (QDQ) whose activation ranges are the QAT
    observers'. The float deploy graph goes to ``fp32_path`` (default: beside ``path`` with
    ``_fp32`` appended), the fp32 reference with the same (int8-grid) weights."""
    check_trained_qat(net)
    path = _with_suffix(path, ".onnx")
    fp32_path = fp32_path or path[: -len(".onnx")] + "_fp32.onnx"
    export_deploy_onnx(net, fp32_path, image_size, in_channels)
    overrides = onnx_range_overrides(fp32_path, net)
    quantize_onnx(fp32_path, path, overrides=overrides)
    return Int8Export(int8_onnx=path, fp32_onnx=fp32_path, quantized_tensors=len(overrides))


__all__ = [
    "ONNX_OPSET",
    "Int8Export",
    "check_trained_qat",
    "export_deploy_mindir",
    "export_deploy_onnx",
    "export_int8_onnx",
    "onnx_range_overrides",
    "quantize_onnx",
]
