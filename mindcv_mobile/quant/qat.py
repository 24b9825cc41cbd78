"""Quantization-aware training of the registry's MobileNetV2 (every width), 8-bit weights and
activations, BatchNorm folded into the convolutions.

``quantize_model(float_net)`` returns a :class:`QuantMobileNetV2` that computes what the int8
deployment will compute:

* every Conv2d + BatchNorm2d (+ ReLU6) becomes one :class:`QuantConvBN`: the BN scale is folded
  into the conv weight, which is fake-quantized per output channel (int8, symmetric), and the
  folded bias is put on the int32 grid ``input_scale * weight_scale`` the int8 kernel adds (a
  channel with a tiny running variance has a huge weight scale and a coarse bias grid: a float
  bias there made the simulation differ from onnxruntime by several output steps); batch
  statistics are used (and the moving ones updated) for the first ``freeze_bn`` training steps,
  after which the frozen moving statistics are used, exactly the folded conv + bias deployed;
* activations are fake-quantized (uint8, asymmetric, per tensor, EMA min/max observers) at the
  network input, at every conv output (after its ReLU6), at every residual add, and at the
  pooled features that feed the int8 classifier; the classifier's weights are int8 per row,
  its bias on the int32 grid, its logits stay float;
* observers track their range for the first ``quant_delay`` training steps, then freeze, so the
  rest of the fine-tuning adapts the weights to the ranges that will be deployed.

Parameter names are the float model's (``features.0.weight``, ``features.1.gamma``, ...), so a
float checkpoint loads into the QAT model and a QAT checkpoint into the float model; the extra
state is ``<tensor>.min_val`` / ``<tensor>.max_val`` per quant point and ``quant_step``.

BN folding follows the one-conv formulation (PyTorch's ``ConvBn2d``, equivalent to Jacob et
al.'s correction): ``y = conv(x, fq(w * s))`` with ``s = gamma / sqrt(moving_var + eps)``; in
training ``y / s`` is normalised with batch statistics, which equals ``conv(x, w)`` under BN.
"""

from __future__ import annotations

import logging
from typing import Optional

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..models.layers import ChannelMean, GlobalAvgPooling, InvertedResidual, MobileNet
from .fake_quant import ActivationQuant, fake_quant_bias, observer_weights, quantize_weight

_logger = logging.getLogger(__name__)

# MindSpore 1.x QuantizationAwareTraining's freeze_bn default, which the seed recipe ran with:
# BN statistics (and here also observer ranges) keep updating for the whole fine-tuning.
NEVER = 10_000_000
_SAFE_DIV = 1e-12
# nn.Conv2d attributes the deploy graph rebuilds the conv from.
_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "pad_mode", "padding", "dilation", "group")


# Every cell type of the registry's MobileNetV2; anything else (SE, hard-swish) is another model.
_V2_CELLS = (
    MobileNet,
    nn.SequentialCell,
    InvertedResidual,
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU6,
    nn.Dropout,
    nn.Identity,
    nn.Dense,
    GlobalAvgPooling,
    ChannelMean,
)


def _clone(param: Parameter, name: str, requires_grad: Optional[bool] = None) -> Parameter:
    return Parameter(
        Tensor(param.asnumpy()),
        name=name,
        requires_grad=param.requires_grad if requires_grad is None else requires_grad,
    )


class QuantConvBN(nn.Cell):
    """Conv2d + BatchNorm2d (+ ReLU6) folded into one cell with int8 weights and a uint8 output.

    Holds the float conv's ``weight`` and the BN's ``gamma, beta, moving_mean,
    moving_variance`` under their float names (``conv_name.weight``, ``bn_name.gamma``...).
    """

    def __init__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: Optional[nn.Cell], conv_name: str, bn_name: str
    ) -> None:
        super().__init__()
        if conv.has_bias:
            raise ValueError(f"{conv_name}: conv with bias before BN is not a MobileNetV2 layer")
        self.conv_name, self.bn_name = conv_name, bn_name
        self.weight = _clone(conv.weight, f"{conv_name}.weight")
        self.gamma = _clone(bn.gamma, f"{bn_name}.gamma")
        self.beta = _clone(bn.beta, f"{bn_name}.beta")
        self.moving_mean = _clone(bn.moving_mean, f"{bn_name}.moving_mean", requires_grad=False)
        self.moving_variance = _clone(bn.moving_variance, f"{bn_name}.moving_variance", requires_grad=False)
        self.param_names = {
            "weight": f"{conv_name}.weight",
            "gamma": f"{bn_name}.gamma",
            "beta": f"{bn_name}.beta",
            "moving_mean": f"{bn_name}.moving_mean",
            "moving_variance": f"{bn_name}.moving_variance",
        }
        self.eps = float(bn.eps)
        self.bn_new_weight = float(bn.momentum)  # MindSpore stores 1 - momentum: the batch's weight
        self.conv2d = conv.conv2d
        # What the deploy graph needs to rebuild the conv.
        self.conv_args = {key: getattr(conv, key) for key in _CONV_ARGS}
        self.has_act = act is not None
        if act is not None and not isinstance(act, nn.ReLU6):
            raise ValueError(f"{conv_name}: activation {type(act).__name__} is not supported (MobileNetV2 uses ReLU6)")
        self.act = nn.ReLU6() if self.has_act else nn.Identity()
        self.act_quant = ActivationQuant(f"{conv_name}.act_quant")

    def _scale_and_bias(self):
        std = ops.sqrt(self.moving_variance + self.eps)
        scale = self.gamma / std
        bias = self.beta - self.gamma * self.moving_mean / std
        return scale, bias

    def folded_weight_and_bias(self, int8_weights: bool = True, input_scale: Optional[float] = None) -> tuple:
        """The deployed conv from the moving statistics (eager): weight ``w * s`` (``s = gamma /
        std``) and bias ``beta - gamma * mean / std``; with ``int8_weights`` the weight on its int8
        grid and, given the input's activation scale, the bias on its int32 grid (what the int8
        kernel adds)."""
        scale, bias = self._scale_and_bias()
        weight = self.weight.value() * scale.reshape((-1, 1, 1, 1))
        if int8_weights:
            weight, weight_scale = quantize_weight(weight)
            if input_scale is not None:
                bias = fake_quant_bias(bias, input_scale * weight_scale.reshape((-1,)), 1.0)
        return weight, bias

    def construct(self, x, x_scale, flags):
        """(input, its activation scale, flags) -> (uint8-quantized output, its scale)."""
        _, _, bn_batch, enabled = flags
        std = ops.sqrt(self.moving_variance + self.eps)
        scale = self.gamma / std
        weight, weight_scale = quantize_weight(self.weight * scale.reshape((-1, 1, 1, 1)))
        y = self.conv2d(x, weight)
        grid = x_scale * weight_scale.reshape((-1,))
        if self.training:
            # BN of raw = y / scale (= conv(x, w) up to weight rounding) with batch statistics,
            # written on y: mean(raw) = mean(y) / scale, var(raw) = var(y) / scale^2. With
            # bn_batch = 0 (frozen) it reduces to the deployed y + (beta - gamma * mean / std).
            mean_y = ops.mean(y, (0, 2, 3))
            var_y = ops.mean(ops.square(y - mean_y.reshape((1, -1, 1, 1))), (0, 2, 3))
            # + tiny: a zero gamma gives scale 0 and y == 0; the channel then outputs beta.
            batch_var = var_y / (ops.square(scale) + _SAFE_DIV)
            var = bn_batch * batch_var + (1.0 - bn_batch) * self.moving_variance
            inv = 1.0 / ops.sqrt(var + self.eps)
            # gamma * mean(raw) = std * mean(y): no division by gamma.
            shift = bn_batch * std * mean_y + (1.0 - bn_batch) * self.gamma * self.moving_mean
            gain = std * inv  # 1 once BN is frozen
            # y * gain + bias = gain * (y + bias / gain): bias / gain on the int32 grid
            bias = fake_quant_bias(self.beta - shift * inv, grid * gain, enabled)
            out = y * gain.reshape((1, -1, 1, 1)) + bias.reshape((1, -1, 1, 1))
            count = y.shape[0] * y.shape[2] * y.shape[3]
            rate = bn_batch * self.bn_new_weight
            batch_mean = ops.stop_gradient(mean_y * std / (self.gamma + _SAFE_DIV))
            unbiased = ops.stop_gradient(batch_var) * (count / max(count - 1, 1))
            out = ops.depend(
                out, ops.assign(self.moving_mean, self.moving_mean + rate * (batch_mean - self.moving_mean))
            )
            out = ops.depend(
                out, ops.assign(self.moving_variance, self.moving_variance + rate * (unbiased - self.moving_variance))
            )
        else:
            bias = fake_quant_bias(self.beta - self.gamma * self.moving_mean / std, grid, enabled)
            out = y + bias.reshape((1, -1, 1, 1))
        return self.act_quant(self.act(out), flags)


class QuantDense(nn.Cell):
    """The classifier with int8 per-row weights and an int32-grid bias; logits stay float."""

    def __init__(self, dense: nn.Dense, name: str) -> None:
        super().__init__()
        self.weight = _clone(dense.weight, f"{name}.weight")
        self.bias = _clone(dense.bias, f"{name}.bias")
        self.param_names = {"weight": f"{name}.weight", "bias": f"{name}.bias"}
        self.matmul = ops.MatMul(transpose_b=True)
        self.bias_add = ops.BiasAdd()

    def quantized_weight_and_bias(self, input_scale: float) -> tuple:
        """(int8-grid weight, int32-grid bias) for an input of activation scale ``input_scale`` (eager)."""
        weight, weight_scale = quantize_weight(self.weight.value())
        return weight, fake_quant_bias(self.bias.value(), input_scale * weight_scale.reshape((-1,)), 1.0)

    def construct(self, x, x_scale, flags):
        enabled = flags[3]
        weight, weight_scale = quantize_weight(self.weight)
        bias = fake_quant_bias(self.bias, x_scale * weight_scale.reshape((-1,)), enabled)
        return self.bias_add(self.matmul(x, weight), bias)


class QuantInvertedResidual(nn.Cell):
    """An inverted residual block of QuantConvBN layers; the residual sum is quantized too."""

    def __init__(self, layers: list, use_res_connect: bool, name: str) -> None:
        super().__init__()
        self.layers = nn.CellList(layers)
        self.use_res_connect = use_res_connect
        if use_res_connect:
            self.add_quant = ActivationQuant(f"{name}.add_quant")

    def construct(self, x, x_scale, flags):
        out, scale = x, x_scale
        for layer in self.layers:
            out, scale = layer(out, scale, flags)
        if self.use_res_connect:
            return self.add_quant(x + out, flags)
        return out, scale


def _fold_sequence(cells: list, prefix: str, start: int = 0) -> list:
    """[Conv2d, BatchNorm2d, (ReLU6)]* named ``prefix.<start + index>`` -> [QuantConvBN]."""
    folded, i = [], 0
    while i < len(cells):
        conv = cells[i]
        bn = cells[i + 1] if i + 1 < len(cells) else None
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(
                f"{prefix}.{start + i}: expected Conv2d followed by BatchNorm2d, got {type(conv).__name__}"
                f" then {type(bn).__name__}: only MobileNetV2's conv-BN-ReLU6 layers can be folded"
            )
        act = cells[i + 2] if i + 2 < len(cells) and isinstance(cells[i + 2], nn.ReLU6) else None
        folded.append(QuantConvBN(conv, bn, act, f"{prefix}.{start + i}", f"{prefix}.{start + i + 1}"))
        i += 3 if act is not None else 2
    return folded


class QuantMobileNetV2(nn.Cell):
    """MobileNetV2 with 8-bit quantization-aware training; see the module docstring.

    Args:
        net: a float MobileNetV2 from ``create_model("mobilenet_v2_*")`` (its weights are copied).
        quant_delay: training steps during which activation observers update; then frozen.
        freeze_bn: training steps that use batch statistics; then the moving ones, frozen.
        ema_decay: decay of the observers' min/max moving average.
    """

    def __init__(
        self, net: MobileNet, quant_delay: int = NEVER, freeze_bn: int = NEVER, ema_decay: float = 0.999
    ) -> None:
        super().__init__()
        _check_steps("quant_delay", quant_delay, minimum=1)
        _check_steps("freeze_bn", freeze_bn, minimum=0)
        if not isinstance(net, MobileNet) or not isinstance(getattr(net, "classifier", None), nn.SequentialCell):
            raise ValueError(
                f"quantize_model takes a float MobileNetV2 from create_model('mobilenet_v2_*'), "
                f"got {type(net).__name__}"
            )
        for name, cell in net.cells_and_names():
            if not isinstance(cell, _V2_CELLS):
                raise ValueError(
                    f"quantize_model supports MobileNetV2 (conv-BN-ReLU6 layers, inverted residuals); "
                    f"found {type(cell).__name__} at {name}"
                )
        self.quant_delay, self.freeze_bn = int(quant_delay), int(freeze_bn)
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"quant_ema_decay must be a number in [0, 1), got {ema_decay!r}")
        self.ema_decay = float(ema_decay)
        self.input_quant = ActivationQuant("input_quant")
        features, cells, i = [], list(net.features), 0
        while i < len(cells):
            cell = cells[i]
            if isinstance(cell, InvertedResidual):
                features.append(
                    QuantInvertedResidual(
                        _fold_sequence(list(cell.layers), f"features.{i}.layers"), cell.use_res_connect, f"features.{i}"
                    )
                )
                i += 1
            else:
                step = 3 if i + 2 < len(cells) and isinstance(cells[i + 2], nn.ReLU6) else 2
                features += _fold_sequence(cells[i : i + step], "features", start=i)
                i += step
        self.features = nn.CellList(features)
        self.pool = net.pool
        self.head_drop = net.head_drop
        dropout, dense = list(net.classifier)
        if not isinstance(dense, nn.Dense):
            raise ValueError(f"classifier.1 must be a Dense layer, got {type(dense).__name__}")
        self.pool_quant = ActivationQuant("pool.act_quant")
        self.classifier = nn.CellList([dropout, QuantDense(dense, "classifier.1")])
        self.num_features = net.num_features
        self.quant_step = Parameter(Tensor(0, ms.int32), name="quant_step", requires_grad=False)
        self._apply_names()

    def _apply_names(self) -> None:
        # MindSpore prefixes parameter names with the attribute path when a cell is assigned;
        # the float names are what checkpoints (and the ONNX initializers) must carry.
        for _, cell in self.cells_and_names():
            for attr, name in getattr(cell, "param_names", {}).items():
                getattr(cell, attr).name = name
        self.quant_step.name = "quant_step"

    def _flags(self) -> tuple:
        # (observer keep weight, observer batch weight, BN uses batch statistics, quantize in
        # eval): computed once per step, shared by all quantizers.
        one = ops.ones((), ms.float32)
        if self.training:
            keep, batch = observer_weights(self.quant_step, self.quant_delay, self.ema_decay)
            return keep, batch, ops.cast(self.quant_step < self.freeze_bn, ms.float32), one
        zero = ops.zeros((), ms.float32)
        return one, zero, zero, ops.cast(self.quant_step > 0, ms.float32)

    def construct(self, x):
        flags = self._flags()
        x, scale = self.input_quant(x, flags)
        for layer in self.features:
            x, scale = layer(x, scale, flags)
        x, scale = self.pool_quant(self.pool(x), flags)
        x = self.classifier[0](self.head_drop(x))
        x = self.classifier[1](x, scale, flags)
        if self.training:
            x = ops.depend(x, ops.assign_add(self.quant_step, ops.ones((), ms.int32)))
        return x


def _check_steps(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer number of steps >= {minimum}, got {value!r}")


def quantize_model(
    net: MobileNet, quant_delay: int = NEVER, freeze_bn: int = NEVER, ema_decay: float = 0.999
) -> QuantMobileNetV2:
    """Convert a float MobileNetV2 (any width, weights loaded or not) for quantization-aware
    training. The float net is not modified; its weights and BN statistics are copied."""
    return QuantMobileNetV2(net, quant_delay=quant_delay, freeze_bn=freeze_bn, ema_decay=ema_decay)


def count_fake_quant(net: nn.Cell) -> dict:
    """Fake-quant points of a network: ``activations`` (observer + uint8 quantizer cells) and
    ``weights`` (layers whose weights are fake-quantized per channel)."""
    cells = [c for _, c in net.cells_and_names()]
    return {
        "activations": sum(isinstance(c, ActivationQuant) for c in cells),
        "weights": sum(isinstance(c, (QuantConvBN, QuantDense)) for c in cells),
    }


def expected_fake_quant(net: MobileNet) -> dict:
    """What :func:`count_fake_quant` must report for the QAT version of the float ``net``,
    derived from its architecture: activations = input + every conv output + every residual
    add + the classifier's input; weights = every conv + the classifier."""
    cells = [c for _, c in net.cells_and_names()]
    convs = sum(isinstance(c, nn.Conv2d) for c in cells)
    adds = sum(isinstance(c, InvertedResidual) and c.use_res_connect for c in cells)
    dense = sum(isinstance(c, nn.Dense) for c in cells)
    return {"activations": 1 + convs + adds + 1, "weights": convs + dense}
