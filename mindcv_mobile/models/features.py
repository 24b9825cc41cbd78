"""MobileNets as backbones: ``create_model(name, features_only=True, out_indices=...)``.

Levels. Every MobileNet halves the resolution five times, so a backbone offers five feature
maps, indexed by their level::

    out_indices:  0   1   2   3   4
    stride:       2   4   8   16  32      (stride of level i = 2 ** (i + 1))

``DEFAULT_OUT_INDICES`` is (1, 2, 3, 4): strides 4 to 32, the usual inputs of detection and
segmentation necks; add 0 for the stride-2 map. A level's map is the output of the last layer of
``features`` that still runs at that stride (the end of the stage, before the next stride-2
layer), so each is the most processed map at its resolution, as in timm:

- MobileNetV1: the last depthwise-separable block at each stride (64/128/256/512/1024 channels
  at width 1.0);
- MobileNetV2: the last inverted-residual block at each stride (16/24/32/96/320); the 1x1 conv to
  1280 channels before the pool belongs to the classification head and is not built;
- MobileNetV3: the last block at each stride, and at stride 32 the 1x1 conv (+BN, hard-swish)
  that widens the last block 6x (large 16/24/40/112/960, small 16/16/24/48/576). In the
  reference architecture this conv is the final stage of the trunk, not part of the head.
  V3-small's first block already has stride 2, so its stride-2 map is the stem's output.

Layers after the deepest requested level are not built: their parameters do not exist, and a
classification checkpoint loads with those entries (and the classifier's) reported as skipped.
"""

from __future__ import annotations

from typing import Sequence

from mindspore import nn

NUM_LEVELS = 5
DEFAULT_OUT_INDICES = (1, 2, 3, 4)


def level_stride(index: int) -> int:
    """Output stride of feature level ``index`` (0 -> 2, ..., 4 -> 32)."""
    return 2 ** (index + 1)


def feature_levels(cells: Sequence[nn.Cell]) -> list:
    """One ``{"chs", "reduction", "module"}`` dict per level of a ``features`` list (the trunk).

    Each cell's stride is the product of the strides of its convolutions, its output channels
    those of its last BatchNorm (activations keep the previous ones); a level is the last cell
    whose output has its stride. ``module`` is the cell's name in the model, ``features.<k>``.
    """
    last, reduction, channels = {}, 1, None
    for index, cell in enumerate(cells):
        for _, sub in cell.cells_and_names():
            if isinstance(sub, nn.Conv2d):
                reduction *= int(sub.stride[0])
            elif isinstance(sub, nn.BatchNorm2d):
                channels = int(sub.moving_mean.shape[0])
        last[reduction] = {"chs": channels, "reduction": reduction, "module": f"features.{index}"}
    strides = [level_stride(i) for i in range(NUM_LEVELS)]
    if sorted(last) != strides:
        raise ValueError(f"a MobileNet trunk must reach strides {strides}, these layers reach {sorted(last)}")
    return [last[s] for s in strides]


def check_out_indices(out_indices, model_name: str) -> tuple:
    """``out_indices`` as a tuple of increasing levels in 0..4; anything else is a ValueError."""
    if out_indices is None:
        return DEFAULT_OUT_INDICES
    valid = isinstance(out_indices, (list, tuple)) and len(out_indices) > 0
    valid = valid and all(isinstance(i, int) and not isinstance(i, bool) for i in out_indices)
    valid = valid and all(0 <= i < NUM_LEVELS for i in out_indices)
    valid = valid and all(a < b for a, b in zip(out_indices, out_indices[1:]))
    if not valid:
        mapping = ", ".join(f"{i}: stride {level_stride(i)}" for i in range(NUM_LEVELS))
        raise ValueError(
            f"{model_name}: out_indices must be increasing distinct levels in 0..{NUM_LEVELS - 1} "
            f"({mapping}), got {out_indices!r}"
        )
    return tuple(out_indices)


class MobileNetFeatures(nn.Cell):
    """The trunk of a MobileNet up to its deepest requested level; ``construct`` returns a tuple
    of feature maps, shallowest first.

    Attributes:
        feature_info: one ``{"chs": channels, "reduction": stride, "module": "features.<k>"}``
            per returned map, in order.
        out_channels: the ``chs`` of each returned map (what mindcv's feature wrapper offers).
        unbuilt_prefixes: parameter-name prefixes of the classification model that this one
            leaves out (deeper layers, the classifier); checkpoint loading reports their entries
            as skipped rather than unexpected.
    """

    def __init__(self, net: nn.Cell, out_indices: Sequence[int] = DEFAULT_OUT_INDICES) -> None:
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.feature_info = [dict(net.feature_info[i]) for i in self.out_indices]
        self.out_channels = [info["chs"] for info in self.feature_info]
        positions = tuple(int(info["module"].split(".")[1]) for info in self.feature_info)
        self.out_positions = positions
        kept = list(net.features)[: positions[-1] + 1]
        # Same attribute name and indices as the classification model: same parameter names.
        self.features = nn.CellList(kept)
        own = {p.name for p in self.get_parameters()}
        unbuilt = set()
        for param in net.get_parameters():
            if param.name not in own:
                parts = param.name.split(".")
                depth = 2 if parts[0] == "features" else 1
                unbuilt.add(".".join(parts[:depth]) + ".")
        self.unbuilt_prefixes = tuple(sorted(unbuilt))

    def construct(self, x):
        outs = ()
        for index, cell in enumerate(self.features):
            x = cell(x)
            if index in self.out_positions:
                outs = outs + (x,)
        return outs


__all__ = [
    "NUM_LEVELS",
    "DEFAULT_OUT_INDICES",
    "level_stride",
    "feature_levels",
    "check_out_indices",
    "MobileNetFeatures",
]
