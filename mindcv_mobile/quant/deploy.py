"""The deploy graph of a QAT MobileNetV2: what int8 runtimes compute, as a plain float Cell.

:func:`build_deploy_net` gives a MobileNetV2 with every BatchNorm folded into its conv (conv with
bias) and weights on the int8 grid (``scale_c * q``, ``q`` in [-127, 127]) taken from the QAT
model with its moving statistics: the network onnxruntime and MindSpore Lite compute. A float
MobileNetV2 gives the same graph with unquantized folded weights (the fp32 / post-training
baseline). Writing it to files (MINDIR, the int8 ONNX) is ``mindcv_mobile.deploy``'s job.
"""

from __future__ import annotations

from typing import Optional, Union

from mindspore import nn

from ..models.layers import GlobalAvgPooling, MobileNet
from .fake_quant import fake_quant_weight
from .qat import QuantConvBN, QuantInvertedResidual, QuantMobileNetV2, quantize_model


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
    ``deploy.onnx_int8.onnx_range_overrides`` uses to find each conv.
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
        self.pool = GlobalAvgPooling()  # built outside kernels.use(): MindSpore's own ops, as exports need
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


__all__ = ["DeployMobileNetV2", "build_deploy_net"]
