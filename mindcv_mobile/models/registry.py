"""Model registry: every model name, its builder and the record of its released weights.

One record per name carries what a user needs to use the model correctly (input size,
crop_pct, interpolation, mean/std) and what it was published with (weights url, parameter
count, top-1/top-5), so tests and README tables are checked against one source.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Optional, Sequence

from mindspore import nn

from .. import kernels
from .checkpoint import load_model_weights, pretrained_path
from .features import MobileNetFeatures, check_out_indices
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3
from .records import IMAGENET_MEAN, IMAGENET_STD, ModelCfg, get_model_cfg, list_models, lookup, register_model

_logger = logging.getLogger(__name__)

# Five stride-2 stages: below 32 px the last feature map would be empty in places.
MIN_INPUT_SIZE = 32

_MINDCV_URL = "https://download.mindspore.cn/toolkits/mindcv/mobilenet"


def check_input_size(name: str, image_size: int) -> int:
    """Return ``image_size`` if the model can take it, else raise a ValueError saying why."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_INPUT_SIZE:
        raise ValueError(
            f"{name} takes square inputs of at least {MIN_INPUT_SIZE} px (five stride-2 "
            f"stages), got image size {image_size!r}"
        )
    return image_size


def create_model(
    model_name: str,
    num_classes: int = 1000,
    pretrained: bool = False,
    checkpoint_path: Optional[str] = None,
    in_channels: int = 3,
    drop_rate: Optional[float] = None,
    drop_path_rate: Optional[float] = None,
    cpu_kernels: bool = False,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
) -> nn.Cell:
    """Build a registered model, optionally loading released or local weights.

    Args:
        model_name: a name from :func:`list_models`.
        num_classes: size of the classifier. Weights whose head has another size load without
            the head (with a warning), except a 1001-class head into 1000 classes, which keeps
            its first 1000 rows (mindcv's MobileNetV1 releases).
        pretrained: load the released weights from the local cache (see ``checkpoint.py``).
        checkpoint_path: load this ``.ckpt`` instead; exclusive with ``pretrained``.
        in_channels: input channels; released 3-channel stems are summed over RGB for 1.
        drop_rate: dropout before the last Dense layer; None keeps the model's default (0.2 for
            V2/V3, none for V1).
        drop_path_rate: stochastic depth in [0, 1): the residual branch of MobileNetV2/V3 block
            ``i`` of ``n`` is dropped per sample with probability ``drop_path_rate * i / n`` in
            training (identity in eval, no parameters). MobileNetV1 has no residual blocks: a
            rate there is accepted with a warning and has no effect. None or 0: off.
        cpu_kernels: build the depthwise convs, BatchNorms (with the activation after them),
            squeeze-excite and hard-swish layers on the
            compiled CPU kernels (``mindcv_mobile.kernels``) when the library is available here;
            a CPU-only model for training and evaluation in this process. Off by default: the
            model then uses MindSpore's own ops, runs on any device and exports to MINDIR/ONNX.
        features_only: return the backbone (:class:`~.features.MobileNetFeatures`) instead:
            ``net(x)`` is a tuple of feature maps and ``net.feature_info`` describes each
            (``chs``, ``reduction``, ``module``). No classifier is built (``num_classes`` and
            ``drop_rate`` are unused); a classification checkpoint loads with the head skipped.
        out_indices: with ``features_only``, the levels to return, increasing, in 0..4; level
            ``i`` has stride ``2 ** (i + 1)``. Default (1, 2, 3, 4): strides 4, 8, 16, 32.
    """
    builder, cfg = lookup(model_name)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if drop_rate is not None and not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if drop_path_rate is not None and (
        isinstance(drop_path_rate, bool)
        or not isinstance(drop_path_rate, (int, float))
        or not 0.0 <= drop_path_rate < 1.0
    ):
        raise ValueError(f"drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}")
    if not isinstance(features_only, bool):
        raise ValueError(f"features_only must be True or False, got {features_only!r}")
    if out_indices is not None and not features_only:
        raise ValueError(f"out_indices={out_indices!r} selects backbone outputs: pass it with features_only=True")
    levels = check_out_indices(out_indices, model_name) if features_only else None
    if pretrained and checkpoint_path:
        raise ValueError("pass either pretrained=True or checkpoint_path, not both")
    if not isinstance(cpu_kernels, bool):
        raise ValueError(f"cpu_kernels must be True or False, got {cpu_kernels!r}")
    kwargs = {"num_classes": num_classes, "in_channels": in_channels}
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    if drop_path_rate:
        kwargs["drop_path_rate"] = float(drop_path_rate)
    library = ""
    if cpu_kernels:
        library, why_not = kernels.library()
        if not library:
            _logger.warning(
                "%s: cpu_kernels=True but the compiled CPU kernels are unavailable (%s); building it "
                "with MindSpore's ops",
                model_name,
                why_not,
            )
    # Always set, "" included: only this call decides, not a kernels.use block around it.
    with kernels.use(library):
        net = builder(**kwargs)
        if features_only:
            net = MobileNetFeatures(net, levels)
    if pretrained or checkpoint_path:
        path = pretrained_path(model_name) if pretrained else checkpoint_path
        net.load_report = load_model_weights(net, path, cfg)
    return net


# --------------------------------------------------------------------------------------------
# The registered models. Published numbers: mindcv's tables for the released checkpoints
# (ImageNet-1k val, 224 px; params(M) counted with BN moving statistics).


def _mindcv(path: str) -> str:
    return f"{_MINDCV_URL}/{path}"


_V1_RECIPE = "configs/mobilenetv1/mobilenet_v1_{}_ascend.yaml"
for _alpha, _tag, _file, _params, _top1, _top5 in [
    (0.25, "025", "mobilenet_v1_025-d3377fba.ckpt", 0.47, 53.87, 77.66),
    (0.5, "050", "mobilenet_v1_050-23e9ddbe.ckpt", 1.34, 65.94, 86.51),
    (0.75, "075", "mobilenet_v1_075-5bed0c73.ckpt", 2.60, 70.44, 89.49),
    (1.0, "100", "mobilenet_v1_100-91c7b206.ckpt", 4.25, 72.95, 91.01),
]:
    register_model(
        f"mobilenet_v1_{_tag}",
        partial(mobilenet_v1, alpha=_alpha),
        ModelCfg(
            url=_mindcv(f"mobilenetv1/{_file}"),
            num_classes=1001,
            params_m=_params,
            top1=_top1,
            top5=_top5,
            recipe=_V1_RECIPE.format({0.25: "0.25", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0"}[_alpha]),
        ),
    )

# MobileNetV2: the paper's width x resolution grid. mindcv registers plain names for 1.4, 1.0
# and 0.75 and `_<res>` names for the grid; the `_<res>` models are the same network, their
# record differs in input size (and so in eval resize/crop).
_V2_RELEASED = {
    "075": ("mobilenet_v2_075-bd7bd4c4.ckpt", 2.66, 69.98, 89.32, "configs/mobilenetv2/mobilenet_v2_0.75_ascend.yaml"),
    "100": ("mobilenet_v2_100-d5532038.ckpt", 3.54, 72.27, 90.72, "configs/mobilenetv2/mobilenet_v2_1.0_ascend.yaml"),
    "140": ("mobilenet_v2_140-98776171.ckpt", 6.15, 75.56, 92.56, "configs/mobilenetv2/mobilenet_v2_1.4_ascend.yaml"),
}
_V2_ALPHAS = {"035": 0.35, "050": 0.5, "075": 0.75, "100": 1.0, "130": 1.3, "140": 1.4}
_V2_GRID = {
    "035": (224, 192, 160, 128, 96),
    "050": (224, 192, 160, 128, 96),
    "075": (192, 160, 128, 96),
    "100": (192, 160, 128, 96),
    "130": (224,),
    "140": (),
}
for _tag, _alpha in _V2_ALPHAS.items():
    _builder = partial(mobilenet_v2, alpha=_alpha)
    if _tag in _V2_RELEASED:
        _file, _params, _top1, _top5, _recipe = _V2_RELEASED[_tag]
        _cfg = ModelCfg(
            url=_mindcv(f"mobilenetv2/{_file}"),
            classifier="classifier.1",
            params_m=_params,
            top1=_top1,
            top5=_top5,
            recipe=_recipe,
        )
    else:
        _cfg = ModelCfg(classifier="classifier.1")
    register_model(f"mobilenet_v2_{_tag}", _builder, _cfg)
    for _res in _V2_GRID[_tag]:
        register_model(
            f"mobilenet_v2_{_tag}_{_res}", _builder, ModelCfg(input_size=(3, _res, _res), classifier="classifier.1")
        )

for _arch, _tag, _alpha, _file, _params, _top1, _top5 in [
    ("small", "075", 0.75, "", None, None, None),
    ("small", "100", 1.0, "mobilenet_v3_small_100-509c6047.ckpt", 2.55, 68.10, 87.86),
    ("large", "075", 0.75, "", None, None, None),
    ("large", "100", 1.0, "mobilenet_v3_large_100-1279ad5f.ckpt", 5.51, 75.23, 92.31),
]:
    register_model(
        f"mobilenet_v3_{_arch}_{_tag}",
        partial(mobilenet_v3, arch=_arch, alpha=_alpha),
        ModelCfg(
            url=_mindcv(f"mobilenetv3/{_file}") if _file else "",
            classifier="classifier.3",
            params_m=_params,
            top1=_top1,
            top5=_top5,
            recipe=f"configs/mobilenetv3/mobilenet_v3_{_arch}_ascend.yaml" if _file else "",
        ),
    )

# mindcv's current README rows: the same networks retrained with the same recipes on 8 Ascend 910*
# (Atlas 800T A2, MindSpore 2.5.0, graph mode, jit level O2). The records above keep the
# D910x8-G release that mindcv's default_cfgs, and so pretrained=True here, point at; these
# weights load with checkpoint_path=. The family READMEs (configs/<family>/README.md) are
# checked against both.
_MINDCV_910V2_URL = "https://download-mindspore.osinfra.cn/toolkits/mindcv/mobilenet"
PUBLISHED_910V2 = {
    _name: dataclasses.replace(get_model_cfg(_name), url=f"{_MINDCV_910V2_URL}/{_path}", top1=_top1, top5=_top5)
    for _name, _path, _top1, _top5 in [
        ("mobilenet_v1_025", "mobilenetv1/mobilenet_v1_025-cbe3d3b3-910v2.ckpt", 54.05, 77.74),
        ("mobilenet_v2_075", "mobilenetv2/mobilenet_v2_075-755932c4-910v2.ckpt", 69.73, 89.35),
        ("mobilenet_v3_small_100", "mobilenetv3/mobilenet_v3_small_100-6fa3c17d-910v2.ckpt", 68.07, 87.77),
        ("mobilenet_v3_large_100", "mobilenetv3/mobilenet_v3_large_100-bd4e7bdc-910v2.ckpt", 75.59, 92.57),
    ]
}

__all__ = [
    "create_model",
    "check_input_size",
    "MIN_INPUT_SIZE",
    "PUBLISHED_910V2",
    # re-exported from records.py, where they live
    "ModelCfg",
    "get_model_cfg",
    "list_models",
    "register_model",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
