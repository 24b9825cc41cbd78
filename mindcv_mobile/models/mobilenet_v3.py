"""MobileNetV3 small and large (Howard et al., 2019, https://arxiv.org/abs/1905.02244).

Tables 1 and 2 of the paper as data. As in mindcv (whose weights we load), depthwise convs use
TensorFlow "same" padding, the SE reduction is ``make_divisible(mid / 4)`` with a hard-sigmoid
gate, the last 1x1 conv has 6x the last block's width, and the head is pool -> Dense ->
hard-swish -> dropout -> Dense.
"""

from __future__ import annotations

from mindspore import nn

from .layers import (
    HardSwish,
    InvertedResidual,
    MobileNet,
    conv_norm_act,
    drop_path_rates,
    init_weights,
    make_divisible,
)

# Rows: (kernel, expansion channels, out_channels, use_se, activation, stride).
ARCHS = {
    "large": [
        (3, 16, 16, False, "relu", 1),
        (3, 64, 24, False, "relu", 2),
        (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2),
        (5, 120, 40, True, "relu", 1),
        (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hswish", 2),
        (3, 200, 80, False, "hswish", 1),
        (3, 184, 80, False, "hswish", 1),
        (3, 184, 80, False, "hswish", 1),
        (3, 480, 112, True, "hswish", 1),
        (3, 672, 112, True, "hswish", 1),
        (5, 672, 160, True, "hswish", 2),
        (5, 960, 160, True, "hswish", 1),
        (5, 960, 160, True, "hswish", 1),
    ],
    "small": [
        (3, 16, 16, True, "relu", 2),
        (3, 72, 24, False, "relu", 2),
        (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hswish", 2),
        (5, 240, 40, True, "hswish", 1),
        (5, 240, 40, True, "hswish", 1),
        (5, 120, 48, True, "hswish", 1),
        (5, 144, 48, True, "hswish", 1),
        (5, 288, 96, True, "hswish", 2),
        (5, 576, 96, True, "hswish", 1),
        (5, 576, 96, True, "hswish", 1),
    ],
}
STEM_CHANNELS = 16
HEAD_CHANNELS = {"large": 1280, "small": 1024}


def mobilenet_v3(
    arch: str = "large",
    alpha: float = 1.0,
    num_classes: int = 1000,
    in_channels: int = 3,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
) -> MobileNet:
    """Build MobileNetV3-``arch`` ("large" or "small") with width multiplier ``alpha``.

    Parameter names: ``features.0/1`` stem, ``features.3..`` blocks (``.layers.K``, SE as
    ``conv_reduce``/``conv_expand``), then the last 1x1 conv/BN, ``classifier.0`` and
    ``classifier.3`` the two Dense layers.

    ``drop_path_rate``: stochastic depth, ``rate * i / n`` for block ``i`` where ``n`` counts the
    inverted-residual blocks plus the last 1x1 conv, the final stage of the reference
    architecture's trunk (16 for large, 12 for small); only blocks with a shortcut use it.
    """
    if arch not in ARCHS:
        raise ValueError(f"MobileNetV3 arch must be one of {sorted(ARCHS)}, got {arch!r}")
    channels = make_divisible(STEM_CHANNELS * alpha)
    features = conv_norm_act(in_channels, channels, 3, 2, act="hswish")
    rates = drop_path_rates(drop_path_rate, len(ARCHS[arch]) + 1)
    for (kernel, expansion, out, use_se, act, stride), rate in zip(ARCHS[arch], rates):
        mid = make_divisible(expansion * alpha)
        out = make_divisible(out * alpha)
        features.append(
            InvertedResidual(
                channels, mid, out, kernel, stride, act=act, use_se=use_se, dw_pad_mode="same", drop_path_rate=rate
            )
        )
        channels = out
    last_conv = channels * 6
    features += conv_norm_act(channels, last_conv, 1, act="hswish")
    head = make_divisible(HEAD_CHANNELS[arch] * alpha)
    classifier = nn.SequentialCell(
        [
            nn.Dense(last_conv, head),
            HardSwish(),
            nn.Dropout(p=drop_rate),
            nn.Dense(head, num_classes),
        ]
    )
    net = MobileNet(features, classifier, last_conv)
    init_weights(net)
    return net
