"""MobileNetV1 (Howard et al., 2017, https://arxiv.org/abs/1704.04861).

mindcv's reading of Table 1: widths are ``int(c * alpha)`` with no rounding to 8 (so
mobilenet_v1_025 has 8, 16, 32, ... channels), symmetric padding, ReLU, Xavier init, and the
released ImageNet weights have a 1001-class head (TF-slim's background class).
"""

from __future__ import annotations

import logging

from mindspore import nn

from .layers import MobileNet, conv_norm_act, init_weights

_logger = logging.getLogger(__name__)

# Table 1: stem conv 3x3/2 to 32, then depthwise-separable blocks as (out_channels, stride).
STEM_CHANNELS = 32
BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


def mobilenet_v1(
    alpha: float = 1.0,
    num_classes: int = 1000,
    in_channels: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> MobileNet:
    """Build MobileNetV1 with width multiplier ``alpha``.

    Parameter names: ``features.0`` stem conv, ``features.{3..15}.{0,1,3,4}`` depthwise and
    pointwise conv/BN of each block, ``classifier`` the Dense head.

    ``drop_path_rate`` is accepted (a recipe written for another model keeps working) but does
    nothing: stochastic depth drops a residual branch and keeps the shortcut, and these blocks
    have no shortcut, so dropping one would cut the whole signal path.
    """
    if drop_path_rate:
        _logger.warning(
            "drop_path_rate=%s has no effect on MobileNetV1: its blocks have no residual shortcut to "
            "keep while a branch is dropped; use drop_rate for regularisation",
            drop_path_rate,
        )
    channels = int(STEM_CHANNELS * alpha)
    features = conv_norm_act(in_channels, channels, 3, 2, act="relu")
    for out, stride in BLOCKS:
        out = int(out * alpha)
        features.append(
            nn.SequentialCell(
                conv_norm_act(channels, channels, 3, stride, groups=channels, act="relu")
                + conv_norm_act(channels, out, 1, act="relu")
            )
        )
        channels = out
    net = MobileNet(features, nn.Dense(channels, num_classes), channels, head_drop_rate=drop_rate)
    init_weights(net, "xavier")
    return net
