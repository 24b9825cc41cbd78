"""The per-model records and the name -> (builder, record) table behind ``registry.py``.

Kept apart from ``create_model`` so that ``checkpoint.py`` can read a record (head name, released
file, hash) without importing the module that loads checkpoints into new models.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Callable, Optional, Tuple

from mindspore import nn

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclasses.dataclass(frozen=True)
class ModelCfg:
    """What is known about a registered model and its released weights.

    ``params_m`` counts ALL parameters, BN moving mean/variance included (mindcv's
    convention), for ``num_classes`` classes; ``num_classes`` is the released head's size
    (1001 for mindcv's MobileNetV1: TF-slim's extra background class).
    """

    url: str = ""
    input_size: Tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    first_conv: str = "features.0"
    classifier: str = "classifier"
    params_m: Optional[float] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    recipe: str = ""

    @property
    def image_size(self) -> int:
        return self.input_size[-1]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1] if self.url else ""

    @property
    def sha256_prefix(self) -> str:
        """The hash in names like ``mobilenet_v2_100-d5532038.ckpt``, or '' when there is none."""
        stem = self.filename.rsplit(".", 1)[0]
        if "-" not in stem:
            return ""
        tail = stem.rsplit("-", 1)[1]
        return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else ""


_REGISTRY: dict = {}


def register_model(name: str, builder: Callable[..., nn.Cell], cfg: ModelCfg) -> None:
    """Add ``name`` to the registry. ``builder(num_classes=, in_channels=, drop_rate=, drop_path_rate=)`` -> Cell."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = (builder, cfg)


def list_models(pattern: str = "*") -> list:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def lookup(name: str) -> tuple:
    """``(builder, ModelCfg)`` of a registered name; an unknown name is a ValueError with the closest ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"see list_models(); e.g. {', '.join(list_models()[:4])}"
        raise ValueError(f"unknown model {name!r}; {hint}")
    return _REGISTRY[name]


def get_model_cfg(name: str) -> ModelCfg:
    """The :class:`ModelCfg` record of a registered model."""
    return lookup(name)[1]
