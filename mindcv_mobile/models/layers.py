"""Building blocks shared by every MobileNet.

Parameter names matter: they are the names mindcv's released checkpoints use, so blocks are
plain ``nn.SequentialCell`` lists whose indices are part of the checkpoint format. Cells without
parameters (activations, dropout) still occupy their index.
"""

from __future__ import annotations

import math
from typing import Optional

from mindspore import dtype as mstype
from mindspore import nn, ops
from mindspore.common import initializer as init

from .. import kernels
from .features import feature_levels


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
    parameters, so checkpoints are unaffected. Built inside ``kernels.use(path)`` (a model from
    ``create_model(..., cpu_kernels=True)``), float32 inputs use the compiled hard-swish in both
    modes (MindSpore's HSwish and HSwishGrad were ~50 ms of a v3-small step).
    """

    def __init__(self) -> None:
        super().__init__()
        self.relu6 = nn.ReLU6()
        self.kernel_op, self.kernel_cfg = kernels.build(kernels.make_hardswish)

    def construct(self, x):
        if self.kernel_op is not None and x.dtype == mstype.float32:
            return self.kernel_op(x, self.kernel_cfg)
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


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (same ``weight``, same math) that runs fast on MindSpore's CPU.

    Built inside ``kernels.use(path)`` (``create_model(..., cpu_kernels=True)``, which the training
    path asks for on CPU), float32 inputs go through the compiled depthwise conv in training and
    eval; otherwise, and for other dtypes, MindSpore's grouped conv.
    """

    def __init__(
        self, channels: int, kernel_size: int, stride: int = 1, pad_mode: str = "pad", padding: int = 0
    ) -> None:
        super().__init__(
            channels, channels, kernel_size, stride, pad_mode=pad_mode, padding=padding, group=channels, has_bias=False
        )
        self.kernel_op, self.kernel_cfg = None, None
        if (int(kernel_size), int(stride)) in kernels.DEPTHWISE_SUPPORTED:
            self.kernel_op, self.kernel_cfg = kernels.build(
                kernels.make_depthwise, int(kernel_size), int(stride), pad_mode, int(padding)
            )

    def construct(self, x):
        if self.kernel_op is not None and x.dtype == mstype.float32:
            return self.kernel_op(x, self.weight, self.kernel_cfg)
        return self.conv2d(x, self.weight)


class ChannelMean(nn.Cell):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1), or (N, C) without ``keep_dims``; the
    compiled CPU kernel when built inside ``kernels.use(path)`` and the input is float32 (MindSpore's
    ReduceMean and its Tile gradient were ~60 ms of a v3-small step)."""

    def __init__(self, keep_dims: bool = True) -> None:
        super().__init__()
        self.keep_dims = keep_dims
        self.kernel_op, self.kernel_cfg = kernels.build(kernels.make_channel_mean)

    def construct(self, x):
        if self.kernel_op is not None and x.dtype == mstype.float32:
            y = self.kernel_op(x, self.kernel_cfg)
            return y if self.keep_dims else ops.squeeze(y, (2, 3))
        return ops.mean(x, (2, 3), keep_dims=self.keep_dims)


class ChannelScale(nn.Cell):
    """``x * scale`` for a per-(image, channel) scale of shape (N, C, 1, 1); compiled CPU kernel
    under the same rule as :class:`ChannelMean`."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel_op, self.kernel_cfg = kernels.build(kernels.make_channel_scale)

    def construct(self, x, scale):
        if self.kernel_op is not None and x.dtype == mstype.float32 and scale.dtype == mstype.float32:
            return self.kernel_op(x, scale, self.kernel_cfg)
        return x * scale


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
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            pad_mode=pad_mode,
            padding=padding,
            group=groups,
            has_bias=False,
        )
    # MindSpore's momentum is the weight of the running value: 0.9 == PyTorch's 0.1. Inside
    # kernels.use(path): BatchNorm and the activation in one compiled op, the activation's cell a
    # pass-through at its index (kernels/norm.py).
    norm, applied = kernels.build(kernels.make_norm_act, out_channels, 0.9, 1e-5, act)
    layers = [conv, norm if norm is not None else nn.BatchNorm2d(out_channels, momentum=0.9, eps=1e-5)]
    if act is not None:
        layers.append(applied if applied is not None else ACTIVATIONS[act]())
    return layers


class GlobalAvgPooling(nn.Cell):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    def __init__(self, keep_dims: bool = False) -> None:
        super().__init__()
        self.mean = ChannelMean(keep_dims)

    def construct(self, x):
        return self.mean(x)


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
        self.mean = ChannelMean()
        self.scale = ChannelScale()
        # Inside kernels.use(path): the whole block as one compiled op for float32 input.
        self.kernel_op, self.kernel_cfg = kernels.build(kernels.make_squeeze_excite)

    def construct(self, x):
        if self.kernel_op is not None and x.dtype == mstype.float32:
            down, up = self.conv_reduce, self.conv_expand
            return self.kernel_op(x, down.weight, down.bias, up.weight, up.bias, self.kernel_cfg)[0]
        scale = self.mean(x)
        scale = self.act(self.conv_reduce(scale))
        scale = self.gate(self.conv_expand(scale))
        return self.scale(x, scale)


class DropPath(nn.Cell):
    """Stochastic depth (Huang et al., https://arxiv.org/abs/1603.09382) on a residual branch.

    In training each sample's branch output is zeroed with probability ``drop_prob`` and the kept
    ones are divided by ``1 - drop_prob``, so the expected output is unchanged; in eval it is the
    identity. One Bernoulli draw per sample, broadcast over C, H, W. No parameters.
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = float(drop_prob)
        self.keep_prob = 1.0 - self.drop_prob

    def construct(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        # Drawn in float32 (Bernoulli has no float16 kernel on every device), applied in x's dtype.
        keep = ops.bernoulli(ops.zeros(shape, mstype.float32), p=self.keep_prob)
        return x * ops.cast(keep / self.keep_prob, x.dtype)


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> list:
    """Per-block drop probabilities growing linearly with depth: block ``i`` of ``num_blocks``
    (counted from 0 over the whole network) gets ``drop_path_rate * i / num_blocks``, so the first
    block is never dropped (timm's EfficientNet/MobileNet builder)."""
    return [drop_path_rate * i / num_blocks for i in range(num_blocks)]


class InvertedResidual(nn.Cell):
    """MobileNetV2/V3 block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear projection,
    with an identity shortcut when the shape is kept (Sandler et al., arXiv:1801.04381).

    The expand conv exists only when ``mid_channels != in_channels``; its absence shifts the
    indices of ``layers``, exactly as in mindcv's checkpoints. ``drop_path_rate``: stochastic
    depth on the residual branch (blocks with a shortcut only; a block without one keeps its
    whole output).
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
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = []
        if mid_channels != in_channels:
            layers += conv_norm_act(in_channels, mid_channels, 1, act=act)
        layers += conv_norm_act(
            mid_channels, mid_channels, kernel_size, stride, groups=mid_channels, act=act, pad_mode=dw_pad_mode
        )
        if use_se:
            layers.append(SqueezeExcite(mid_channels))
        layers += conv_norm_act(mid_channels, out_channels, 1, act=None)
        self.layers = nn.SequentialCell(layers)
        use_drop_path = self.use_res_connect and drop_path_rate > 0
        self.drop_path = DropPath(drop_path_rate) if use_drop_path else nn.Identity()

    def construct(self, x):
        if self.use_res_connect:
            return x + self.drop_path(self.layers(x))
        return self.layers(x)


class MobileNet(nn.Cell):
    """features -> global average pool -> [dropout] -> classifier, the layout of every family.

    ``features`` and ``classifier`` keep mindcv's names; ``head_drop`` has no parameters, so a
    dropout added to a head that had none (MobileNetV1) changes no checkpoint name.
    ``feature_info``: the five feature levels (strides 2..32) of the first ``trunk_len`` layers
    of ``features`` (all by default), see ``features.py``.
    """

    def __init__(
        self,
        features: list,
        classifier: nn.Cell,
        num_features: int,
        head_drop_rate: float = 0.0,
        trunk_len: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.feature_info = feature_levels(features[:trunk_len])
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
    "make_divisible",
    "HardSwish",
    "HardSigmoid",
    "ACTIVATIONS",
    "DepthwiseConv2d",
    "ChannelMean",
    "ChannelScale",
    "conv_norm_act",
    "GlobalAvgPooling",
    "SqueezeExcite",
    "DropPath",
    "drop_path_rates",
    "InvertedResidual",
    "MobileNet",
    "init_weights",
]
