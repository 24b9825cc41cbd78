"""Auto-augment policies by name (timm/mindcv grammar): MindSpore's C++ AutoAugment, RandAugment
and TrivialAugmentWide, and AugMix (a Python op built from MindSpore's vision ops: MindSpore 2.10
has no AugMix). All act on HWC uint8 images, before Normalize.
"""

from __future__ import annotations

import logging
import math
import re

import mindspore.dataset.vision as vision
import numpy as np

_logger = logging.getLogger(__name__)

# The geometric ops inside MindSpore's AutoAugment/RandAugment/TrivialAugmentWide take only
# these three; other choices fall back to bilinear there.
_AUGMENT_INTERPOLATIONS = {
    "nearest": vision.Inter.NEAREST,
    "bicubic": vision.Inter.BICUBIC,
    "pilcubic": vision.Inter.BICUBIC,
}

AUTO_AUGMENT_POLICIES = {
    "autoaug": vision.AutoAugmentPolicy.IMAGENET,
    "autoaug-imagenet": vision.AutoAugmentPolicy.IMAGENET,
    "autoaug-cifar10": vision.AutoAugmentPolicy.CIFAR10,
    "autoaug-svhn": vision.AutoAugmentPolicy.SVHN,
}
TRIVIAL_AUGMENT_NAMES = ("trivialaug", "trivialaugwide")
TRIVIAL_AUGMENT_GRAMMAR = "trivialaugwide[-m<max magnitude>] ('trivialaug' also accepted)"
AUGMIX_NAME = "augmix"
AUGMIX_GRAMMAR = (
    "augmix[-m<severity 1..10>][-w<width>][-d<depth, -1 = random 1..3>][-a<alpha>][-b0][-mstd<std>], "
    "e.g. 'augmix-m3-w3-d-1-a1' (timm/mindcv grammar)"
)
RAND_AUGMENT_PREFIXES = ("randaug", "rand")
RAND_AUGMENT_GRAMMAR = (
    "randaug-m<magnitude 0..10>[-n<num_ops>][-mstd<std>][-mmax<max>][-w<idx>][-inc<0|1>], "
    "e.g. 'randaug-m9-mstd0.5' (timm/mindcv grammar; 'rand-' prefix also accepted)"
)
# timm measures magnitude on a 0..10 scale (its _LEVEL_DENOM); MindSpore's RandAugment indexes
# num_magnitude_bins evenly spaced levels from 0 to each op's maximum, so 11 bins make
# magnitude m mean the same fraction m/10 of the maximum as in timm.
_RAND_AUGMENT_LEVELS = 10


def _options(spec: str, grammar: str) -> list[tuple[str, str, float]]:
    """The key<number> parts after the name: 'augmix-m3-d-1' -> [("m", "3", 3.0), ("d", "-1", -1.0)].
    A dash followed by a digit is a minus sign, so "d-1" is depth -1."""
    text = spec.partition("-")[2]
    out = []
    for part in re.split(r"-(?=[a-z])", text) if text else []:
        match = re.fullmatch(r"([a-z]+)(-?\d+(?:\.\d+)?)", part)
        if match is None:
            raise ValueError(f"cannot parse {part!r} in auto_augment={spec!r}; expected {grammar}")
        out.append((match.group(1), match.group(2), float(match.group(2))))
    return out


def _parse_rand_augment(spec: str) -> dict:
    """'randaug-m9-n2-mstd0.5' -> {"magnitude": 9, "num_ops": 2, ignored keys...}."""
    out = {"num_ops": 2, "magnitude": None}
    for key, text, value in _options(spec, RAND_AUGMENT_GRAMMAR):
        if key == "m":
            if value != int(value) or not 0 <= value <= _RAND_AUGMENT_LEVELS:
                raise ValueError(
                    f"RandAugment magnitude m{text} in {spec!r} must be an integer 0..{_RAND_AUGMENT_LEVELS}"
                )
            out["magnitude"] = int(value)
        elif key == "n":
            if value != int(value) or value < 1:
                raise ValueError(f"RandAugment n{text} in {spec!r} must be an integer >= 1")
            out["num_ops"] = int(value)
        elif key in ("mstd", "mmax", "w", "inc"):
            out[key] = value
        else:
            raise ValueError(
                f"unknown RandAugment key {key!r} in auto_augment={spec!r}; expected {RAND_AUGMENT_GRAMMAR}"
            )
    if out["magnitude"] is None:
        raise ValueError(f"auto_augment={spec!r} lacks the magnitude m<0..10>; expected {RAND_AUGMENT_GRAMMAR}")
    return out


def _parse_augmix(spec: str) -> dict:
    """'augmix-m3-w3-d-1-a1' -> AugMix's arguments; defaults as timm/mindcv (3, 3, -1, 1.0)."""
    out = {"severity": 3, "width": 3, "depth": -1, "alpha": 1.0}
    for key, text, value in _options(spec, AUGMIX_GRAMMAR):
        if key == "a":
            if value <= 0:
                raise ValueError(f"AugMix alpha a{text} in {spec!r} must be > 0")
            out["alpha"] = value
        elif key in ("m", "w", "d"):
            low, high = {"m": (1, 10), "w": (1, None), "d": (-1, None)}[key]
            if value != int(value) or value < low or (high is not None and value > high):
                within = f"{low}..{high}" if high else f">= {low}"
                raise ValueError(f"AugMix {key}{text} in {spec!r} must be an integer {within}")
            out[{"m": "severity", "w": "width", "d": "depth"}[key]] = int(value)
        elif key == "b" and value == 0:
            pass  # blending off, the only mode here
        elif key == "b":
            raise ValueError(f"AugMix b{text} in {spec!r}: blended mixing is not supported; use b0 or omit it")
        elif key == "mstd":
            _logger.info("auto_augment=%r: mstd ignored (AugMix levels are uniform in [0, severity])", spec)
        else:
            raise ValueError(f"unknown AugMix key {key!r} in auto_augment={spec!r}; expected {AUGMIX_GRAMMAR}")
    return out


class AugMix:
    """AugMix (Hendrycks et al., 2020) on one HWC uint8 RGB image, built from MindSpore vision ops.

    ``width`` chains of ``depth`` ops each (depth <= 0: 1..3 per chain) are mixed with Dirichlet(alpha)
    weights; the mix is then blended into the image with a Beta(alpha, alpha) weight. The op set
    and levels are timm/mindcv's: every op draws its level uniformly in [0, severity] on the
    0..10 scale, random sign where it has one; enhance factors 1 +- 0.09 level (>= 0.1), rotate
    3 degrees per level, shear tan(angle) = 0.03 level, translate 0.03 level of the image,
    posterize to 4 - int(0.4 level) bits, solarize above 255 - int(25.5 level). Uses numpy's
    global random state, which ``mindspore.dataset.config.set_seed`` seeds. Output: uint8, same shape.
    """

    OPS = (
        "autocontrast equalize saturation contrast brightness sharpness rotate posterize solarize shear_x shear_y "
        "translate_x translate_y"
    ).split()
    TRANSLATE_PCT = 0.3  # of the image side at level 10 (timm/mindcv's AugMix setting)

    def __init__(
        self, severity=3, width=3, depth=-1, alpha=1.0, interpolation=vision.Inter.BILINEAR, fill=(124, 116, 104)
    ):
        self.severity, self.width, self.depth, self.alpha = severity, width, depth, alpha
        self.inter, self.fill = interpolation, tuple(int(v) for v in fill)

    def _affine(self, img, degrees=0.0, translate=(0.0, 0.0), shear=(0.0, 0.0)):
        return vision.Affine(degrees, translate, 1.0, shear, self.inter, self.fill)(img)

    def apply(self, img: np.ndarray, name: str, level: float) -> np.ndarray:
        """Op ``name`` at ``level`` (0..10); the sign of signed ops is drawn here."""
        sign = -1.0 if np.random.rand() < 0.5 else 1.0
        if name == "autocontrast":
            return vision.AutoContrast()(img)
        if name == "equalize":
            return vision.Equalize()(img)
        if name in ("saturation", "contrast", "brightness", "sharpness"):
            return getattr(vision, "Adjust" + name.capitalize())(max(0.1, 1.0 + sign * 0.09 * level))(img)
        if name == "rotate":
            return self._affine(img, degrees=sign * 3.0 * level)
        if name == "posterize":
            return vision.Posterize(4 - int(0.4 * level))(img)
        if name == "solarize":
            return vision.Solarize(255 - int(25.5 * level))(img)
        if name.startswith("shear"):
            angle = sign * math.degrees(math.atan(0.03 * level))
            return self._affine(img, shear=(angle, 0.0) if name == "shear_x" else (0.0, angle))
        shift = sign * self.TRANSLATE_PCT * level / 10.0
        return self._affine(img, translate=(shift, 0.0) if name == "translate_x" else (0.0, shift))

    def __call__(self, img):
        img = np.asarray(img)
        weights = np.random.dirichlet([self.alpha] * self.width).astype(np.float32)
        blend = np.float32(np.random.beta(self.alpha, self.alpha))
        mixed = np.zeros(img.shape, np.float32)
        for weight in weights:
            chain = img
            for name in np.random.choice(self.OPS, self.depth if self.depth > 0 else np.random.randint(1, 4)):
                chain = self.apply(chain, name, min(np.random.uniform(0, self.severity), 10.0))
            mixed += weight * chain.astype(np.float32)
        mixed = np.clip(mixed, 0, 255).astype(np.uint8).astype(np.float32)
        out = img.astype(np.float32) * (1 - blend) + mixed * blend
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def auto_augment_op(spec: str, interpolation: str = "bilinear", fill=(124, 116, 104)):
    """One op for an auto-augment string (see ``create_transforms``): a MindSpore C++ op, or ``AugMix``."""
    name = str(spec).lower()
    inter = _AUGMENT_INTERPOLATIONS.get(interpolation, vision.Inter.BILINEAR)
    if name in AUTO_AUGMENT_POLICIES:
        return vision.AutoAugment(AUTO_AUGMENT_POLICIES[name], inter, fill)
    head = name.split("-")[0]
    if head == "autoaug" and re.fullmatch(r"autoaug-mstd[0-9.]+", name):
        # mindcv's "autoaug-mstd0.5": the ImageNet policy with magnitude noise, which MindSpore's
        # AutoAugment (fixed magnitudes per policy entry) does not have.
        _logger.info("auto_augment=%r: magnitude noise (mstd) not supported by MindSpore's AutoAugment, ignored", spec)
        return vision.AutoAugment(vision.AutoAugmentPolicy.IMAGENET, inter, fill)
    if head in ("autoaugr", "3a"):
        raise ValueError(
            f"auto_augment={spec!r} (timm's {'increasing-posterize' if head == 'autoaugr' else '3-op'} AutoAugment "
            "variant) has no MindSpore op; use autoaug, randaug-m9-mstd0.5, trivialaugwide or augmix"
        )
    if head in TRIVIAL_AUGMENT_NAMES:
        for key, text, value in _options(name, TRIVIAL_AUGMENT_GRAMMAR):
            if key != "m" or value != int(value) or value < 1:
                raise ValueError(f"cannot use {key}{text} in auto_augment={spec!r}; expected {TRIVIAL_AUGMENT_GRAMMAR}")
        # mindcv draws a level in [0, m] and divides it by m, so m does not change the strengths.
        return vision.TrivialAugmentWide(31, inter, fill)
    if head == AUGMIX_NAME:
        return AugMix(**_parse_augmix(name), interpolation=inter, fill=fill)
    if head in RAND_AUGMENT_PREFIXES:
        args = _parse_rand_augment(name)
        ignored = {k: v for k, v in args.items() if k in ("mstd", "mmax", "w", "inc")}
        if ignored:
            # MindSpore 2.10's RandAugment has a fixed magnitude, uniform op choice and the
            # torchvision op set; timm's magnitude noise/weights/"increasing" ops do not exist.
            _logger.info("auto_augment=%r: %s not supported by MindSpore's RandAugment, ignored", spec, sorted(ignored))
        return vision.RandAugment(args["num_ops"], args["magnitude"], _RAND_AUGMENT_LEVELS + 1, inter, fill)
    raise ValueError(
        f"unknown auto_augment {spec!r}; choose one of {sorted(AUTO_AUGMENT_POLICIES)}, "
        f"{TRIVIAL_AUGMENT_GRAMMAR}, {RAND_AUGMENT_GRAMMAR} or {AUGMIX_GRAMMAR}"
    )
