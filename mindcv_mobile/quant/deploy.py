"""Int8 deployment of a QAT MobileNetV2: the folded deploy graph, its MINDIR, and an int8 ONNX.

* :func:`build_deploy_net`: a plain float MobileNetV2 with every BatchNorm folded into its conv
  (conv with bias), weights on the int8 grid (``scale_c * q``, ``q`` in [-127, 127]) taken from
  the QAT model with its moving statistics: the network onnxruntime and MindSpore Lite compute.
* :func:`export_int8_onnx`: MindSpore's ONNX exporter writes no QuantizeLinear/DequantizeLinear
  and its ``Round`` is rejected by onnxruntime, so the float deploy graph is exported and then
  quantized by ``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel int8
  weights, uint8 activations), with the scale and zero point of every activation given as a
  tensor override from the QAT observers. The weights are already on the int8 grid, so
  onnxruntime's per-channel symmetric quantization reproduces the QAT integers exactly; at load
  time onnxruntime fuses the Q/DQ pairs into QLinearConv / QLinearAdd / QGemm int8 kernels.

The same functions quantize a float model post-training (``calibration`` batches, no overrides):
the PTQ baseline of ``benchmarks/quant``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections import Counter
from typing import Iterable, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import nn

from ..models.layers import GlobalAvgPooling, MobileNet, portable_layers
from .fake_quant import fake_quant_weight
from .qat import QuantConvBN, QuantInvertedResidual, QuantMobileNetV2, quantize_model

_logger = logging.getLogger(__name__)

ONNX_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis attribute) needs opset 13
BATCH_DIM = "batch"
INPUT_NAME, OUTPUT_NAME = "image", "logits"  # as mindcv_mobile.deploy names its exports


class _DeployConv(nn.Cell):
    """Conv with the BN folded in (bias) and its ReLU6, if any."""

    def __init__(self, layer: QuantConvBN, int8_weights: bool, input_scale: Optional[float]) -> None:
        super().__init__()
        self.name = layer.conv_name
        weight, bias = layer.folded_weight_and_bias(int8_weights, input_scale)
        self.conv = nn.Conv2d(**layer.conv_args, has_bias=True)
        self.conv.weight.set_data(weight)
        self.conv.bias.set_data(bias)
        self.act = nn.ReLU6() if layer.has_act else nn.Identity()

    def construct(self, x):
        return self.act(self.conv(x))


class _DeployResidual(nn.Cell):
    def __init__(self, layers: list, use_res_connect: bool) -> None:
        super().__init__()
        self.layers = nn.SequentialCell(layers)
        self.use_res_connect = use_res_connect

    def construct(self, x):
        if self.use_res_connect:
            return x + self.layers(x)
        return self.layers(x)


class DeployMobileNetV2(nn.Cell):
    """MobileNetV2 as deployed: folded convs (+ReLU6), residual adds, average pool, Dense.

    With ``int8_weights`` (a trained QAT model) weights are on their int8 grid and biases on the
    int32 grid ``input_scale * weight_scale`` of the int8 kernels. Parameter names are
    ``<conv>.weight`` / ``<conv>.bias`` of the float model's conv layers (``features.0.weight``,
    ``features.0.bias``, ...) and ``classifier.1.weight/bias``: the ONNX initializer names, which
    :func:`onnx_range_overrides` uses to find each conv.
    """

    def __init__(self, net: QuantMobileNetV2, int8_weights: bool = True) -> None:
        super().__init__()
        # Each layer's input scale is the scale of the quant point before it (the int32 bias
        # grid); an untrained QAT model has no ranges, so its biases stay float.
        trained = int8_weights and int(net.quant_step.asnumpy()) > 0
        point = net.input_quant

        def input_scale(current) -> Optional[float]:
            return current.qparams()[0] if trained else None

        blocks = []
        for layer in net.features:
            convs = layer.layers if isinstance(layer, QuantInvertedResidual) else [layer]
            deployed = []
            for conv in convs:
                deployed.append(_DeployConv(conv, int8_weights, input_scale(point)))
                point = conv.act_quant
            if isinstance(layer, QuantInvertedResidual):
                blocks.append(_DeployResidual(deployed, layer.use_res_connect))
                point = layer.add_quant if layer.use_res_connect else point
            else:
                blocks.extend(deployed)
        self.features = nn.SequentialCell(blocks)
        with portable_layers():  # only ever exported: MindSpore's ops, never the compiled CPU kernels
            self.pool = GlobalAvgPooling()
        dense = net.classifier[1]
        out_features, in_features = dense.weight.shape
        self.classifier = nn.Dense(in_features, out_features)
        if trained:
            weight, bias = dense.quantized_weight_and_bias(input_scale(net.pool_quant))
        elif int8_weights:
            weight, bias = fake_quant_weight(dense.weight.value()), dense.bias.value()
        else:
            weight, bias = dense.weight.value(), dense.bias.value()
        self.classifier.weight.set_data(weight)
        self.classifier.bias.set_data(bias)
        for _, cell in self.cells_and_names():
            if isinstance(cell, _DeployConv):
                cell.conv.weight.name, cell.conv.bias.name = f"{cell.name}.weight", f"{cell.name}.bias"
        self.classifier.weight.name, self.classifier.bias.name = "classifier.1.weight", "classifier.1.bias"

    def construct(self, x):
        return self.classifier(self.pool(self.features(x)))


def _as_qat(net: Union[QuantMobileNetV2, MobileNet]) -> QuantMobileNetV2:
    if isinstance(net, QuantMobileNetV2):
        return net
    if isinstance(net, MobileNet):
        return quantize_model(net)
    raise ValueError(f"expected a QuantMobileNetV2 or a float MobileNetV2, got {type(net).__name__}")


def build_deploy_net(net: Union[QuantMobileNetV2, MobileNet], int8_weights: Optional[bool] = None) -> DeployMobileNetV2:
    """The float deploy graph of ``net`` with BN folded (moving statistics).

    ``int8_weights`` defaults to True for a QAT model (weights on its int8 grid) and False for a
    float MobileNetV2 (weights folded, unquantized: the fp32 / post-training baseline).
    """
    if int8_weights is None:
        int8_weights = isinstance(net, QuantMobileNetV2)
    deploy = DeployMobileNetV2(_as_qat(net), int8_weights=int8_weights)
    deploy.set_train(False)
    return deploy


def _dummy_input(image_size: int, in_channels: int, batch_size: int = 1) -> ms.Tensor:
    return ms.Tensor(np.zeros((batch_size, in_channels, image_size, image_size), np.float32))


def _with_suffix(path: str, suffix: str) -> str:
    path = os.fspath(path)
    return path if path.endswith(suffix) else path + suffix


def _export(cell: nn.Cell, image_size: int, in_channels: int, file_format: str, path: str) -> None:
    """Export into a private temporary folder (MindSpore accepts only [0-9a-zA-Z@_-.:/\\] in file
    names and writes read-only files), then move into place: no partial file on failure."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    work = tempfile.mkdtemp(prefix="mindcv_mobile_quant_", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        stem = os.path.join(work, "model")
        x = _dummy_input(image_size, in_channels)
        if file_format == "ONNX":
            ms.onnx.export(cell, x, file_name=stem + ".onnx", input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
            produced = stem + ".onnx"
        else:
            ms.export(cell, x, file_name=stem, file_format="MINDIR")
            produced = stem + ".mindir"
        os.chmod(produced, 0o644)
        shutil.move(produced, path + ".tmp")
        os.replace(path + ".tmp", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_deploy_mindir(net: Union[QuantMobileNetV2, MobileNet], path: str, image_size: int,
                         in_channels: int = 3) -> str:
    """Write the deploy graph (BN folded; int8-grid weights for a QAT net) as MINDIR, batch 1;
    returns the path (``.mindir`` appended when missing)."""
    path = _with_suffix(path, ".mindir")
    _export(build_deploy_net(net), image_size, in_channels, "MINDIR", path)
    return path


def export_deploy_onnx(net: Union[QuantMobileNetV2, MobileNet], path: str, image_size: int,
                       in_channels: int = 3) -> str:
    """Write the float deploy graph as ONNX (opset 13, input ``image``, output ``logits``,
    dynamic batch); returns the path (``.onnx`` appended when missing).

    A fresh deploy Cell is built per call: MindSpore 2.10 crashes exporting one Cell twice.
    """
    import onnx
    from onnx import version_converter

    path = _with_suffix(path, ".onnx")
    _export(build_deploy_net(net), image_size, in_channels, "ONNX", path)
    model = onnx.load(path)
    if model.opset_import[0].version < ONNX_OPSET:
        model = version_converter.convert_version(model, ONNX_OPSET)
    _dynamic_batch(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _dynamic_batch(model) -> None:
    # MindSpore exports batch 1; the graph has no reshape, so only the declared shapes (and
    # the version converter's inferred value_info) pin it.
    del model.graph.value_info[:]
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM


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
                raise ValueError(f"ONNX Conv {node.name} has weight {node.input[1]!r}, which is no conv of the "
                                 f"QAT model")
            overrides[node.output[0]] = entry(point)
            for user in consumers.get(node.output[0], []):
                if user.op_type == "Clip":  # ReLU6: onnxruntime folds it into the uint8 range
                    overrides[user.output[0]] = entry(point)
        elif node.op_type == "Add":
            adds.append(node)
        elif node.op_type == "Gemm":
            gemms.append(node)
    if conv_points or len(adds) != len(add_points) or len(gemms) != 1:
        raise ValueError(f"the ONNX graph does not match the QAT model: convs without a node "
                         f"{sorted(conv_points)[:3]}, {len(adds)} Add nodes for {len(add_points)} residual adds, {len(gemms)} Gemm nodes for 1")
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


def quantize_onnx(fp32_path: str, int8_path: str, overrides: Optional[dict] = None,
                  calibration: Optional[Iterable[np.ndarray]] = None) -> str:
    """Quantize a float ONNX model to int8 QDQ (uint8 activations, per-channel int8 weights).

    With ``overrides`` (QAT) every quantized activation must be covered by them: a tensor left to
    calibration is an error, so the int8 model's ranges are provably the trained ones. Without
    them (post-training quantization) the ranges are the min/max over ``calibration`` batches.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:  # it needs sympy; without it onnxruntime only warns that it was skipped
        quant_pre_process = None

    model = onnx.load(fp32_path)
    input_name = model.graph.input[0].name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    batches = list(calibration) if calibration is not None else []
    if not batches:
        if not overrides:
            raise ValueError("post-training quantization needs calibration batches (no QAT ranges given)")
        # All ranges are overridden; calibration only has to run once.
        batches = [np.zeros([1] + dims[1:], np.float32)]
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
    os.makedirs(os.path.dirname(os.path.abspath(int8_path)), exist_ok=True)
    tmp, prepared = int8_path + ".tmp", int8_path + ".pre.tmp"
    try:
        # onnxruntime's recommended pre-processing; shape inference only, so tensor names stay.
        if quant_pre_process is not None:
            quant_pre_process(fp32_path, prepared, skip_optimization=True)
        quantize_static(prepared if quant_pre_process is not None else fp32_path, tmp, _Batches(input_name, batches), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv", "Clip", "Add", "Gemm"], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
        int8_model = onnx.load(tmp)
        if overrides:
            quantized = {node.input[0] for node in int8_model.graph.node if node.op_type == "QuantizeLinear"}
            uncovered = sorted(name for name in quantized if name not in overrides)
            if uncovered:
                raise ValueError(f"{int8_path}: activations {uncovered[:5]} were quantized with calibration "
                                 f"ranges, not QAT observer ranges")
        _dynamic_batch(int8_model)
        onnx.save(int8_model, tmp)
        os.replace(tmp, int8_path)
    finally:
        for path in (tmp, prepared):
            if os.path.exists(path):
                os.remove(path)
    return int8_path


@dataclasses.dataclass
class Int8Export:
    """What :func:`export_int8_onnx` wrote."""

    int8_onnx: str
    fp32_onnx: str
    quantized_tensors: int


def export_int8_onnx(net: QuantMobileNetV2, path: str, image_size: int, in_channels: int = 3,
                     fp32_path: Optional[str] = None) -> Int8Export:
    """Export a trained QAT model as an int8 ONNX (QDQ) whose activation ranges are the QAT
    observers'. The float deploy graph goes to ``fp32_path`` (default: beside ``path`` with
    ``_fp32`` appended), the fp32 reference with the same (int8-grid) weights."""
    if not isinstance(net, QuantMobileNetV2):
        raise ValueError(f"export_int8_onnx takes a QAT model (quantize_model / create_quant_model), "
                         f"got {type(net).__name__}; for a float model use export_deploy_onnx + quantize_onnx")
    if int(net.quant_step.asnumpy()) == 0:
        raise ValueError("the QAT model has not trained a single step: its activation observers hold no ranges "
                         "(fine-tune with quant: true first)")
    path = _with_suffix(path, ".onnx")
    fp32_path = fp32_path or path[: -len(".onnx")] + "_fp32.onnx"
    export_deploy_onnx(net, fp32_path, image_size, in_channels)
    overrides = onnx_range_overrides(fp32_path, net)
    quantize_onnx(fp32_path, path, overrides=overrides)
    return Int8Export(int8_onnx=path, fp32_onnx=fp32_path, quantized_tensors=len(overrides))


def onnx_session(path: str, optimized_model_path: Optional[str] = None, threads: int = 0):
    """An onnxruntime CPU session (all graph optimizations: Q/DQ fused into int8 kernels)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # not the note that a saved optimized model is CPU-specific
    if threads:
        options.intra_op_num_threads = threads
    if optimized_model_path:
        options.optimized_model_filepath = optimized_model_path
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def runtime_op_types(path: str) -> Counter:
    """Op types onnxruntime actually runs for the model at ``path`` (after its graph
    optimizations), e.g. QLinearConv for an int8 conv."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        onnx_session(path, optimized_model_path=optimized)
        return Counter(node.op_type for node in onnx.load(optimized).graph.node)


__all__ = ["DeployMobileNetV2", "build_deploy_net", "export_deploy_mindir", "export_deploy_onnx",
           "onnx_range_overrides", "quantize_onnx", "export_int8_onnx", "Int8Export", "onnx_session",
           "runtime_op_types"]
