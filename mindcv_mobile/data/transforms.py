"""create_transforms: the train / eval image pipelines as lists of MindSpore C++ vision ops.

Train (Inception-style crop, as in mindcv/timm ImageNet recipes):
    RandomCropDecodeResize (encoded input; decodes only the crop) or RandomResizedCrop
    (decoded input) -> RandomHorizontalFlip / RandomVerticalFlip -> auto_augment or
    RandomColorAdjust -> Normalize -> HWC2CHW -> RandomErasing
Eval: Decode -> Resize(shorter side to image_resize / crop_pct) -> CenterCrop -> Normalize
    -> HWC2CHW. Output of both: float32 CHW.
"""
from __future__ import annotations

import logging
import re

import mindspore.dataset.vision as vision

from ..models.records import IMAGENET_MEAN, IMAGENET_STD

_logger = logging.getLogger(__name__)

# What create_dataset yields as "image" for each dataset: encoded file bytes or a decoded
# HWC uint8 array. Encoded input lets the train crop decode only the cropped region.
DATASET_INPUTS = {"imagenet": "encoded", "cifar10": "decoded"}

INTERPOLATIONS = {
    "bilinear": vision.Inter.BILINEAR,
    "bicubic": vision.Inter.BICUBIC,
    "pilcubic": vision.Inter.PILCUBIC,  # PIL's bicubic, as timm/mindcv eval with Pillow
    "nearest": vision.Inter.NEAREST,
    "area": vision.Inter.AREA,
}
# The geometric ops inside MindSpore's AutoAugment/RandAugment/TrivialAugmentWide take only
# these three; other choices fall back to bilinear there.
_AUGMENT_INTERPOLATIONS = {"nearest": vision.Inter.NEAREST, "bicubic": vision.Inter.BICUBIC,
                           "pilcubic": vision.Inter.BICUBIC}

AUTO_AUGMENT_POLICIES = {
    "autoaug": vision.AutoAugmentPolicy.IMAGENET,
    "autoaug-imagenet": vision.AutoAugmentPolicy.IMAGENET,
    "autoaug-cifar10": vision.AutoAugmentPolicy.CIFAR10,
    "autoaug-svhn": vision.AutoAugmentPolicy.SVHN,
}
TRIVIAL_AUGMENT_NAMES = ("trivialaug", "trivialaugwide")
RAND_AUGMENT_PREFIXES = ("randaug", "rand")
RAND_AUGMENT_GRAMMAR = (
    "randaug-m<magnitude 0..10>[-n<num_ops>][-mstd<std>][-mmax<max>][-w<idx>][-inc<0|1>], "
    "e.g. 'randaug-m9-mstd0.5' (timm/mindcv grammar; 'rand-' prefix also accepted)")
# timm measures magnitude on a 0..10 scale (its _LEVEL_DENOM); MindSpore's RandAugment indexes
# num_magnitude_bins evenly spaced levels from 0 to each op's maximum, so 11 bins make
# magnitude m mean the same fraction m/10 of the maximum as in timm.
_RAND_AUGMENT_LEVELS = 10


def _parse_rand_augment(spec: str) -> dict:
    """'randaug-m9-n2-mstd0.5' -> {"magnitude": 9, "num_ops": 2, ignored keys...}."""
    parts = spec.split("-")
    out = {"num_ops": 2, "magnitude": None}
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", part)
        if match is None:
            raise ValueError(f"cannot parse {part!r} in auto_augment={spec!r}; "
                             f"expected {RAND_AUGMENT_GRAMMAR}")
        key, value = match.group(1), float(match.group(2))
        if key == "m":
            if value != int(value) or not 0 <= value <= _RAND_AUGMENT_LEVELS:
                raise ValueError(f"RandAugment magnitude m{match.group(2)} in {spec!r} must be "
                                 f"an integer 0..{_RAND_AUGMENT_LEVELS}")
            out["magnitude"] = int(value)
        elif key == "n":
            if value != int(value) or value < 1:
                raise ValueError(f"RandAugment n{match.group(2)} in {spec!r} must be an "
                                 f"integer >= 1")
            out["num_ops"] = int(value)
        elif key in ("mstd", "mmax", "w", "inc"):
            out[key] = value
        else:
            raise ValueError(f"unknown RandAugment key {key!r} in auto_augment={spec!r}; "
                             f"expected {RAND_AUGMENT_GRAMMAR}")
    if out["magnitude"] is None:
        raise ValueError(f"auto_augment={spec!r} lacks the magnitude m<0..10>; expected "
                         f"{RAND_AUGMENT_GRAMMAR}")
    return out


def auto_augment_op(spec: str, interpolation: str = "bilinear", fill=(124, 116, 104)):
    """One MindSpore C++ op for an auto-augment string (see ``create_transforms``)."""
    name = str(spec).lower()
    inter = _AUGMENT_INTERPOLATIONS.get(interpolation, vision.Inter.BILINEAR)
    if name in AUTO_AUGMENT_POLICIES:
        return vision.AutoAugment(AUTO_AUGMENT_POLICIES[name], inter, fill)
    if name in TRIVIAL_AUGMENT_NAMES:
        return vision.TrivialAugmentWide(31, inter, fill)
    if name.split("-")[0] in RAND_AUGMENT_PREFIXES:
        args = _parse_rand_augment(name)
        ignored = {k: v for k, v in args.items() if k in ("mstd", "mmax", "w", "inc")}
        if ignored:
            # MindSpore 2.10's RandAugment has a fixed magnitude, uniform op choice and the
            # torchvision op set; timm's magnitude noise/weights/"increasing" ops do not exist.
            _logger.info("auto_augment=%r: %s not supported by MindSpore's RandAugment, ignored",
                         spec, sorted(ignored))
        return vision.RandAugment(args["num_ops"], args["magnitude"], _RAND_AUGMENT_LEVELS + 1,
                                  inter, fill)
    raise ValueError(
        f"unknown auto_augment {spec!r}; choose one of {sorted(AUTO_AUGMENT_POLICIES)}, "
        f"{list(TRIVIAL_AUGMENT_NAMES)} or {RAND_AUGMENT_GRAMMAR}")


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
        raise ValueError(f"{name} must be 3 {'positive ' if positive else ''}numbers (R, G, B) on "
                         f"the 0..255 scale; got {values!r}")
    return values


# Recipe keys create_transforms takes as they are, and those it takes as tuples (YAML gives lists).
_RECIPE_SCALARS = ("image_resize", "hflip", "vflip", "color_jitter", "interpolation", "auto_augment", "re_prob",
                   "re_value", "re_max_attempts", "crop_pct")
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
    color_jitter: float | None = 0.4,
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
            uint8 array ("cifar10": RandomResizedCrop; eval resizes straight to image_resize
            and ignores crop_pct, since a 32 px image has no border to spare).
        image_resize: output height = width.
        scale, ratio: RandomResizedCrop area fraction and aspect ratio ranges.
        hflip, vflip: flip probabilities (op omitted at 0).
        color_jitter: brightness = contrast = saturation strength; used only when > 0 and
            auto_augment is None (as mindcv does).
        interpolation: a key of ``INTERPOLATIONS``.
        auto_augment: None, "autoaug" (ImageNet policy; also "autoaug-cifar10"/"-svhn"),
            "trivialaug", or RandAugment as "randaug-m9-n2-mstd0.5". RandAugment maps m (0..10,
            timm scale) and n (default 2) onto MindSpore's C++ RandAugment; mstd, mmax, w and
            inc are accepted and ignored (MindSpore has no magnitude noise, op weights or
            "increasing" op set). Fill colour is the mean pixel, as in timm.
        re_prob, re_scale, re_ratio, re_value, re_max_attempts: RandomErasing after Normalize
            (so value 0 is the mean colour); re_value may also be "random" or (r, g, b).
        mean, std: per-channel Normalize values on the 0..255 scale.
        crop_pct: eval centre-crop fraction: resize the shorter side to
            int(image_resize / crop_pct), then crop image_resize (224 / 0.875 -> 256).
    """
    key = str(dataset_name).lower()
    if key not in DATASET_INPUTS:
        raise ValueError(f"unknown dataset_name {dataset_name!r}; choose one of "
                         f"{sorted(DATASET_INPUTS)}")
    encoded = DATASET_INPUTS[key] == "encoded"
    if isinstance(image_resize, bool) or int(image_resize) != image_resize or image_resize <= 0:
        raise ValueError(f"image_resize must be a positive int; got {image_resize!r}")
    image_resize = int(image_resize)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of "
                         f"{sorted(INTERPOLATIONS)}")
    inter = INTERPOLATIONS[interpolation]
    if not 0.0 < float(crop_pct) <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct!r}")
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
    if color_jitter is not None and float(color_jitter) < 0:
        raise ValueError(f"color_jitter must be >= 0 or None; got {color_jitter!r}")
    if int(re_max_attempts) < 1:
        raise ValueError(f"re_max_attempts must be >= 1; got {re_max_attempts!r}")
    if auto_augment:
        fill = tuple(int(round(min(max(m, 0.0), 255.0))) for m in mean)
        augment = auto_augment_op(auto_augment, interpolation, fill)
    normalize = [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]

    if not is_training:
        if encoded:
            resize = int(image_resize / float(crop_pct))
            return [vision.Decode(), vision.Resize(resize, inter), vision.CenterCrop(image_resize),
                    *normalize]
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
    elif color_jitter:
        cj = float(color_jitter)
        ops.append(vision.RandomColorAdjust(brightness=cj, contrast=cj, saturation=cj))
    ops += normalize
    if re_prob > 0:
        # vision.RandomErasing is a Python op on CHW float arrays (MindSpore 2.10).
        ops.append(vision.RandomErasing(
            prob=re_prob, scale=re_scale, ratio=re_ratio, value=re_value,
            max_attempts=int(re_max_attempts)))
    return ops
