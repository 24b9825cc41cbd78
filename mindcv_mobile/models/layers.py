"""Building blocks shared by every MobileNet.

Parameter names matter: they are the names mindcv's released checkpoints use, so blocks are
plain ``nn.SequentialCell`` lists whose indices are part of the checkpoint format. Cells without
parameters (activations, dropout) still occupy their index.
"""
from __future__ import annotations

import math
from typing import Optional

from mindspore import nn, ops
from mindspore.common import initializer as init


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    The rounding of the TensorFlow MobileNet reference (also mindcv, torchvision).
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class HardSwish(nn.Cell):
    """x * relu6(x + 3) / 6.

    In eval mode (inference, export) written elementwise: MindSpore 2.10's ONNX exporter has no
    mapping for the fused ``HSwish`` op, while ReLU6/Add/Mul/Div export everywhere. In training
    the fused op: the elementwise graph keeps three activation-sized intermediates alive, 1 GB
    more peak memory for MobileNetV3-small at batch 32, 224 px (2.46 vs 1.46 GB). Same math; no
    parameters, so checkpoints are unaffected.
    """

    def __init__(self) -> None:
        super().__init__()
        self.relu6 = nn.ReLU6()

    def construct(self, x):
        if self.training:
            return ops.hardswish(x)
        return x * self.relu6(x + 3.0) / 6.0


class HardSigmoid(nn.Cell):
    """relu6(x + 3) / 6, elementwise for the same reason as :class:`HardSwish`."""

    def __init__(self) -> None:
        super().__init__()
        self.relu6 = nn.ReLU6()

    def construct(self, x):
        return self.relu6(x + 3.0) / 6.0


def _same_pads(size: int, kernel: int, stride: int) -> tuple:
    """TensorFlow "same" padding along one axis: (before, after); the odd pixel goes after."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (same ``weight``, same math) that trains faster on small maps.

    MindSpore 2.10's CPU depthwise conv runs oneDNN's GEMM path once per (image, channel): on a
    7x7 map that is a 49-column GEMM per call, dominated by call overhead. There the layer is
    applied as one batched matmul per channel with the (output positions x input positions)
    matrix its kernel defines: 2-8x the FLOPs, but forward+backward measured 1.4-3x faster
    (5x5, 576 channels, 7x7, batch 32: 43 -> 14 ms). Only while training, only for maps where
    that held (at most ``MAX_OUT_POSITIONS`` outputs, matrix cost at most ``MAX_FLOP_RATIO`` x the
    direct conv), and only when ``matmul_small_maps`` is on, which ``runtime.init_runtime``
    decides per device (CPU: on; Ascend/GPU have real depthwise kernels). Inference and export
    always use the plain conv.
    """

    matmul_small_maps = False
    MAX_OUT_POSITIONS = 64
    MAX_FLOP_RATIO = 8

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, pad_mode: str = "pad",
                 padding: int = 0) -> None:
        super().__init__(channels, channels, kernel_size, stride, pad_mode=pad_mode, padding=padding,
                         group=channels, has_bias=False)
        self.kernel = int(kernel_size)
        self.step = int(stride)
        # (top, bottom, left, right); None for "same", which depends on the input size.
        self.fixed_pads = None if pad_mode == "same" else (0, 0, 0, 0) if pad_mode == "valid" else (padding,) * 4

    def _pads(self, height: int, width: int) -> tuple:
        if self.fixed_pads is None:
            return _same_pads(height, self.kernel, self.step) + _same_pads(width, self.kernel, self.step)
        return self.fixed_pads

    def construct(self, x):
        if self.training and self.matmul_small_maps:
            _, _, height, width = x.shape
            pads = self._pads(height, width)
            out_h = (height + pads[0] + pads[1] - self.kernel) // self.step + 1
            out_w = (width + pads[2] + pads[3] - self.kernel) // self.step + 1
            if out_h * out_w <= self.MAX_OUT_POSITIONS and height * width <= self.MAX_FLOP_RATIO * self.kernel ** 2:
                return self._matmul_conv(x, pads, out_h, out_w)
        return self.conv2d(x, self.weight)

    def _matmul_conv(self, x, pads: tuple, out_h: int, out_w: int):
        n, c, height, width = x.shape
        k = self.kernel
        out_pos = ops.arange(out_h * out_w).reshape(-1, 1)
        in_pos = ops.arange(height * width).reshape(1, -1)
        dy = in_pos // width - out_pos // out_w * self.step + pads[0]
        dx = in_pos % width - out_pos % out_w * self.step + pads[2]
        inside = ops.logical_and(ops.logical_and(dy >= 0, dy < k), ops.logical_and(dx >= 0, dx < k))
        tap = ops.where(inside, dy * k + dx, k * k)  # index k*k: a zero tap (padding)
        select = ops.one_hot(tap.reshape(-1), k * k + 1, ops.ones((), self.weight.dtype),
                             ops.zeros((), self.weight.dtype), axis=0)  # (k*k + 1, out * in)
        taps = ops.pad(self.weight.reshape(c, k * k), (0, 1))
        matrix = ops.matmul(taps, select).reshape(c, out_h * out_w, height * width)
        cols = ops.transpose(x.reshape(n, c, height * width), (1, 2, 0))  # (c, in, n)
        y = ops.bmm(ops.cast(matrix, x.dtype), cols)  # (c, out, n)
        return ops.transpose(y, (2, 0, 1)).reshape(n, c, out_h, out_w)


ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": HardSwish,
    "hsigmoid": HardSigmoid,
}


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: Optional[str] = "relu",
    pad_mode: str = "pad",
) -> list:
    """[Conv2d (no bias), BatchNorm2d, activation] as a list, to be spliced into a SequentialCell.

    ``pad_mode="pad"`` pads (k-1)/2 on every side (PyTorch style); ``"same"`` is TensorFlow
    style, putting the extra row/column of a stride-2 conv at the bottom/right. mindcv's
    MobileNetV3 uses "same" for depthwise convs, and its weights are trained with it.
    """
    padding = (kernel_size - 1) // 2 if pad_mode == "pad" else 0
    if groups > 1 and groups == in_channels == out_channels:
        conv = DepthwiseConv2d(in_channels, kernel_size, stride, pad_mode=pad_mode, padding=padding)
    else:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode=pad_mode, padding=padding,
                         group=groups, has_bias=False)
    layers = [
        conv,
        # MindSpore's momentum is the weight of the running value: 0.9 == PyTorch's 0.1.
        nn.BatchNorm2d(out_channels, momentum=0.9, eps=1e-5),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act]())
    return layers


class GlobalAvgPooling(nn.Cell):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    def __init__(self, keep_dims: bool = False) -> None:
        super().__init__()
        self.keep_dims = keep_dims

    def construct(self, x):
        return ops.mean(x, (2, 3), keep_dims=self.keep_dims)


class SqueezeExcite(nn.Cell):
    """Squeeze-and-excitation (Hu et al., https://arxiv.org/abs/1709.01507) with a hard-sigmoid
    gate, as MobileNetV3 uses it: 1x1 convs with bias, reduced width rounded to 8."""

    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_divisor: int = 8) -> None:
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor)
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, has_bias=True)
        self.act = nn.ReLU()
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, has_bias=True)
        self.gate = HardSigmoid()

    def construct(self, x):
        scale = ops.mean(x, (2, 3), keep_dims=True)
        scale = self.act(self.conv_reduce(scale))
        scale = self.gate(self.conv_expand(scale))
        return x * scale


class InvertedResidual(nn.Cell):
    """MobileNetV2/V3 block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear projection,
    with an identity shortcut when the shape is kept (Sandler et al., arXiv:1801.04381).

    The expand conv exists only when ``mid_channels != in_channels``; its absence shifts the
    indices of ``layers``, exactly as in mindcv's checkpoints.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "relu6",
        use_se: bool = False,
        dw_pad_mode: str = "pad",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = []
        if mid_channels != in_channels:
            layers += conv_norm_act(in_channels, mid_channels, 1, act=act)
        layers += conv_norm_act(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels, act=act,
                                pad_mode=dw_pad_mode)
        if use_se:
            layers.append(SqueezeExcite(mid_channels))
        layers += conv_norm_act(mid_channels, out_channels, 1, act=None)
        self.layers = nn.SequentialCell(layers)

    def construct(self, x):
        if self.use_res_connect:
            return x + self.layers(x)
        return self.layers(x)


class MobileNet(nn.Cell):
    """features -> global average pool -> [dropout] -> classifier, the layout of every family.

    ``features`` and ``classifier`` keep mindcv's names; ``head_drop`` has no parameters, so a
    dropout added to a head that had none (MobileNetV1) changes no checkpoint name.
    """

    def __init__(self, features: list, classifier: nn.Cell, num_features: int, head_drop_rate: float = 0.0) -> None:
        super().__init__()
        self.features = nn.SequentialCell(features)
        self.pool = GlobalAvgPooling()
        self.head_drop = nn.Dropout(p=head_drop_rate) if head_drop_rate > 0 else nn.Identity()
        self.classifier = classifier
        self.num_features = num_features

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.classifier(self.head_drop(self.pool(x)))

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


def init_weights(net: nn.Cell, scheme: str = "he_normal_fan_out") -> None:
    """Initialise conv/dense/BN weights in place.

    ``he_normal_fan_out``: conv N(0, sqrt(2 / (k*k*out))), dense N(0, 0.01) (MobileNetV2/V3
    papers' reference code and mindcv); ``xavier``: conv Xavier-uniform, dense truncated normal
    (mindcv's MobileNetV1). BN gamma 1, beta 0; biases 0.
    """
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            if scheme == "xavier":
                weight = init.initializer(init.XavierUniform(), cell.weight.shape, cell.weight.dtype)
            else:
                k_h, k_w = cell.kernel_size
                std = math.sqrt(2.0 / (k_h * k_w * cell.out_channels))
                weight = init.initializer(init.Normal(sigma=std), cell.weight.shape, cell.weight.dtype)
            cell.weight.set_data(weight)
            if cell.bias is not None:
                cell.bias.set_data(init.initializer("zeros", cell.bias.shape, cell.bias.dtype))
        elif isinstance(cell, nn.BatchNorm2d):
            cell.gamma.set_data(init.initializer("ones", cell.gamma.shape, cell.gamma.dtype))
            cell.beta.set_data(init.initializer("zeros", cell.beta.shape, cell.beta.dtype))
        elif isinstance(cell, nn.Dense):
            dist = init.TruncatedNormal() if scheme == "xavier" else init.Normal(sigma=0.01)
            cell.weight.set_data(init.initializer(dist, cell.weight.shape, cell.weight.dtype))
            if cell.bias is not None:
                cell.bias.set_data(init.initializer("zeros", cell.bias.shape, cell.bias.dtype))


__all__ = [
    "make_divisible", "HardSwish", "HardSigmoid", "ACTIVATIONS", "DepthwiseConv2d", "conv_norm_act", "GlobalAvgPooling",
    "SqueezeExcite", "InvertedResidual", "MobileNet", "init_weights",
]
