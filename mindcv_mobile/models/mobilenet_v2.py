"""MobileNetV2 (Sandler et al., 2018, https://arxiv.org/abs/1801.04381).

Table 2 of the paper as data; widths rounded to multiples of 8; ReLU6; symmetric padding.
"""

from __future__ import annotations

from mindspore import nn

from .layers import InvertedResidual, MobileNet, conv_norm_act, drop_path_rates, init_weights, make_divisible

# Table 2: (expand_ratio t, out_channels c, repeats n, first stride s).
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
BLOCKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def mobilenet_v2(
    alpha: float = 1.0,
    num_classes: int = 1000,
    in_channels: int = 3,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
) -> MobileNet:
    """Build MobileNetV2 with width multiplier ``alpha``.

    Parameter names: ``features.0/1`` stem conv/BN, ``features.{3..19}.layers.K`` blocks,
    ``features.20/21`` last 1x1 conv/BN, ``classifier.1`` the Dense head (``classifier.0`` is
    dropout). ``drop_path_rate``: stochastic depth of the 17 blocks, ``rate * i / 17`` for block
    ``i`` (only the blocks with a shortcut use it). The trunk that ``features_only`` exposes
    ends at the last block: the 1x1 conv to 1280 channels is the classification head's.
    """
    channels = make_divisible(STEM_CHANNELS * alpha)
    # The last conv is never narrowed below 1280 (paper, section 5.1).
    last_channels = make_divisible(LAST_CHANNELS * max(1.0, alpha))
    features = conv_norm_act(in_channels, channels, 3, 2, act="relu6")
    rates = iter(drop_path_rates(drop_path_rate, sum(repeats for _, _, repeats, _ in BLOCKS)))
    for expand_ratio, out, repeats, first_stride in BLOCKS:
        out = make_divisible(out * alpha)
        for i in range(repeats):
            features.append(
                InvertedResidual(
                    channels,
                    round(channels * expand_ratio),
                    out,
                    stride=first_stride if i == 0 else 1,
                    act="relu6",
                    drop_path_rate=next(rates),
                )
            )
            channels = out
    trunk_len = len(features)
    features += conv_norm_act(channels, last_channels, 1, act="relu6")
    classifier = nn.SequentialCell([nn.Dropout(p=drop_rate), nn.Dense(last_channels, num_classes)])
    net = MobileNet(features, classifier, last_channels, trunk_len=trunk_len)
    init_weights(net)
    return net
