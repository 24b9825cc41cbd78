"""create_transforms: the train / eval image pipelines as lists of MindSpore vision ops.

Train (Inception-style crop, as in mindcv/timm ImageNet recipes):
    RandomCropDecodeResize (encoded input; decodes only the crop) or RandomResizedCrop
    (decoded input) -> RandomHorizontalFlip / RandomVerticalFlip -> auto_augment or
    RandomColorAdjust -> Normalize -> HWC2CHW -> RandomErasing (a Python op on CHW float32, so
    it comes after HWC2CHW and erases in normalised units: fill 0 is the mean colour)
Eval: Decode -> Resize(shorter side to image_resize / crop_pct) -> CenterCrop -> Normalize
    -> HWC2CHW. Output of both: float32 CHW.
"""

from __future__ import annotations

import logging

import mindspore.dataset.vision as vision

from ..models.records import IMAGENET_MEAN, IMAGENET_STD
from .auto_augment import auto_augment_op

_logger = logging.getLogger(__name__)

# What create_dataset yields as "image" for each dataset: encoded file bytes or a decoded
# HWC uint8 array. Encoded input lets the train crop decode only the cropped region.
DATASET_INPUTS = {"imagenet": "encoded", "cifar10": "decoded", "cifar100": "decoded", "mnist": "decoded"}

INTERPOLATIONS = {
    "bilinear": vision.Inter.BILINEAR,
    "bicubic": vision.Inter.BICUBIC,
    "pilcubic": vision.Inter.PILCUBIC,  # PIL's bicubic, as timm/mindcv eval with Pillow
    "nearest": vision.Inter.NEAREST,
    "area": vision.Inter.AREA,
}


def _check_prob(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability and must be in [0, 1]; got {value}")
    return value


def _check_range(name: str, pair, low: float, high: float | None = None) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max); got {pair!r}") from None
    if not (low < a <= b and (high is None or b <= high)):
        upper = "" if high is None else f" <= {high}"
        raise ValueError(f"{name} must satisfy {low} < min <= max{upper}; got {pair!r}")
    return a, b


def _check_channels(name: str, values, positive: bool = False) -> list[float]:
    values = [float(v) for v in values]
    if len(values) != 3 or (positive and min(values) <= 0):
        raise ValueError(
            f"{name} must be 3 {'positive ' if positive else ''}numbers (R, G, B) on the 0..255 scale; got {values!r}"
        )
    return values


def _color_jitter(value) -> tuple[float, float, float, float] | None:
    """(brightness, contrast, saturation, hue) strengths from a number or a 3/4-list; None when all are 0."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value] * 3
    ok = len(values) in (3, 4) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if ok:
        values = [float(v) for v in values] + [0.0] * (4 - len(values))
        ok = min(values[:3]) >= 0 and 0 <= values[3] <= 0.5
    if not ok:
        raise ValueError(
            f"color_jitter must be a number >= 0, or a list [brightness, contrast, saturation] or "
            f"[brightness, contrast, saturation, hue] of numbers >= 0 with hue <= 0.5; got {value!r}"
        )
    return tuple(values) if any(values) else None


def _erase_value(value):
    """RandomErasing's fill: an int 0..255, [r, g, b] of them, or 'random' (per-pixel normal noise)."""
    if isinstance(value, str) and value.lower() == "random":
        return "random"
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) in (1, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        if all(v == int(v) and 0 <= v <= 255 for v in values):
            ints = [int(v) for v in values]
            return ints[0] if len(values) == 1 and not isinstance(value, (list, tuple)) else ints
    raise ValueError(f"re_value must be an integer 0-255, a list [r, g, b] of them, or 'random'; got {value!r}")


# Recipe keys create_transforms takes as they are, and those it takes as tuples (YAML gives lists).
_RECIPE_SCALARS = (
    "image_resize hflip vflip color_jitter interpolation auto_augment re_prob re_value re_max_attempts crop_pct"
).split()
_RECIPE_PAIRS = ("scale", "ratio", "re_scale", "re_ratio", "mean", "std")


def transform_kwargs(cfg) -> dict:
    """:func:`create_transforms`' arguments from a recipe, all but ``is_training``."""
    kwargs = {key: cfg[key] for key in _RECIPE_SCALARS}
    kwargs.update({key: tuple(cfg[key]) for key in _RECIPE_PAIRS})
    return {"dataset_name": cfg.dataset, **kwargs}


def create_transforms(
    dataset_name: str = "imagenet",
    image_resize: int = 224,
    is_training: bool = False,
    scale=(0.08, 1.0),
    ratio=(0.75, 1.333),
    hflip: float = 0.5,
    vflip: float = 0.0,
    color_jitter=0.4,
    interpolation: str = "bilinear",
    auto_augment: str | None = None,
    re_prob: float = 0.0,
    re_scale=(0.02, 0.33),
    re_ratio=(0.3, 3.3),
    re_value=0,
    re_max_attempts: int = 10,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    crop_pct: float = 0.875,
) -> list:
    """MindSpore ops turning one "image" of ``create_dataset(dataset_name)`` into float32 CHW.

    Args:
        dataset_name: a key of ``DATASET_INPUTS``; decides whether the input is encoded bytes
            ("imagenet": train uses RandomCropDecodeResize, eval Decode) or a decoded HWC
            uint8 array ("cifar10", "cifar100", "mnist": RandomResizedCrop; eval resizes straight
            to image_resize and ignores crop_pct, since a 32 px image has no border to spare).
        image_resize: output height = width.
        scale, ratio: RandomResizedCrop area fraction and aspect ratio ranges.
        hflip, vflip: flip probabilities (op omitted at 0).
        color_jitter: brightness = contrast = saturation strength, or a list [b, c, s] or
            [b, c, s, hue] (hue <= 0.5): RandomColorAdjust with factors in [max(0, 1 - x), 1 + x]
            and hue shift in [-hue, hue]; used only when auto_augment is None (as mindcv does).
        interpolation: a key of ``INTERPOLATIONS``.
        auto_augment: None, "autoaug" (ImageNet policy; also "autoaug-cifar10"/"-svhn"),
            "trivialaugwide" (or "trivialaug"), RandAugment as "randaug-m9-n2-mstd0.5", or AugMix
            as "augmix-m3-w3-d-1-a1" (``AugMix``; m severity, w width, d depth, a alpha).
            RandAugment maps m (0..10, timm scale) and n (default 2) onto MindSpore's C++
            RandAugment; mstd, mmax, w and inc are accepted and ignored (MindSpore has no
            magnitude noise, op weights or "increasing" op set). Fill colour is the mean pixel,
            as in timm. All of them run on the uint8 image, before Normalize.
        re_prob, re_scale, re_ratio, re_value, re_max_attempts: RandomErasing after Normalize
            and HWC2CHW (it takes CHW arrays), so re_value is written in normalised units: 0 is
            the mean colour, [r, g, b] (ints 0..255) per channel, "random" standard-normal noise
            per pixel.
        mean, std: per-channel Normalize values on the 0..255 scale.
        crop_pct: eval centre-crop fraction: resize the shorter side to
            int(image_resize / crop_pct), then crop image_resize (224 / 0.875 -> 256).
    """
    key = str(dataset_name).lower()
    if key not in DATASET_INPUTS:
        raise ValueError(f"unknown dataset_name {dataset_name!r}; choose one of {sorted(DATASET_INPUTS)}")
    encoded = DATASET_INPUTS[key] == "encoded"
    if isinstance(image_resize, bool) or int(image_resize) != image_resize or image_resize <= 0:
        raise ValueError(f"image_resize must be a positive int; got {image_resize!r}")
    image_resize = int(image_resize)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {sorted(INTERPOLATIONS)}")
    inter = INTERPOLATIONS[interpolation]
    if not float(crop_pct) > 0.0:
        # Above 1 the resize is smaller than the crop, which CenterCrop pads (mindcv's volo_d4: 1.15).
        raise ValueError(f"crop_pct must be > 0; got {crop_pct!r}")
    mean = _check_channels("mean", mean)
    std = _check_channels("std", std, positive=True)
    # Every argument is checked in eval mode too, so a bad recipe fails before training starts.
    scale = _check_range("scale", scale, 0.0, 1.0)
    ratio = _check_range("ratio", ratio, 0.0)
    re_scale = _check_range("re_scale", re_scale, 0.0)
    re_ratio = _check_range("re_ratio", re_ratio, 0.0)
    hflip = _check_prob("hflip", hflip)
    vflip = _check_prob("vflip", vflip)
    re_prob = _check_prob("re_prob", re_prob)
    jitter = _color_jitter(color_jitter)
    re_value = _erase_value(re_value)
    if int(re_max_attempts) < 1:
        raise ValueError(f"re_max_attempts must be >= 1; got {re_max_attempts!r}")
    if auto_augment:
        fill = tuple(int(round(min(max(m, 0.0), 255.0))) for m in mean)
        augment = auto_augment_op(auto_augment, interpolation, fill)
    normalize = [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]

    if not is_training:
        if encoded:
            resize = int(image_resize / float(crop_pct))
            return [vision.Decode(), vision.Resize(resize, inter), vision.CenterCrop(image_resize), *normalize]
        return [vision.Resize((image_resize, image_resize), inter), *normalize]

    if encoded:
        ops = [vision.RandomCropDecodeResize(image_resize, scale, ratio, inter)]
    else:
        ops = [vision.RandomResizedCrop(image_resize, scale, ratio, inter)]
    if hflip > 0:
        ops.append(vision.RandomHorizontalFlip(hflip))
    if vflip > 0:
        ops.append(vision.RandomVerticalFlip(vflip))
    if auto_augment:
        ops.append(augment)
    elif jitter:
        ops.append(vision.RandomColorAdjust(*jitter))
    ops += normalize
    if re_prob > 0:
        # vision.RandomErasing is a Python op on CHW float arrays (MindSpore 2.10).
        ops.append(vision.RandomErasing(re_prob, re_scale, re_ratio, re_value, max_attempts=int(re_max_attempts)))
    return ops
