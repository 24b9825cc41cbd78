"""What a recipe's quant keys mean: their checks, the QAT model they build, and the check that a
checkpoint holds trained QAT state. The build step and the config module call these; the QAT
cells themselves are in ``qat.py``."""

from __future__ import annotations

import logging

import numpy as np

from ..models.layers import MobileNet
from .qat import QuantMobileNetV2, count_fake_quant, quantize_model

_logger = logging.getLogger(__name__)


def check_quant_config(cfg) -> None:
    """Raise ValueError when a recipe with ``quant: True`` asks for what QAT cannot do."""
    if not cfg.model.startswith("mobilenet_v2_"):
        raise ValueError(f"quant: True supports the mobilenet_v2_* models, got model {cfg.model}")
    for name in ("amp_level", "val_amp_level"):
        # Observer ranges and folded-BN statistics are float32 arithmetic.
        if cfg[name] != "O0":
            raise ValueError(f"quant: True trains and evaluates in float32; set {name}: O0, got {cfg[name]}")
    if cfg.drop_path_rate:
        # The folded conv-BN blocks have no stochastic-depth branch: the rate would be ignored.
        raise ValueError(f"quant: True does not support drop_path_rate (got {cfg.drop_path_rate}); set it to 0")
    if cfg.ema:
        raise ValueError("quant: True does not support ema: True (the QAT state is not averaged); set ema: False")
    if cfg.quant_delay < 1:
        raise ValueError(
            f"quant_delay must be >= 1 step (observers need one batch to get a range), got {cfg.quant_delay}"
        )
    if cfg.freeze_bn < 0:
        raise ValueError(f"freeze_bn must be >= 0 steps, got {cfg.freeze_bn}")
    if not 0.0 <= cfg.quant_ema_decay < 1.0:
        raise ValueError(f"quant_ema_decay must be in [0, 1), got {cfg.quant_ema_decay}")


def quantize_from_config(net: MobileNet, cfg) -> QuantMobileNetV2:
    """The recipe's QAT model (``quant_delay``, ``freeze_bn``, ``quant_ema_decay``) built on the
    float ``net``, whose weights (e.g. the float checkpoint to fine-tune) were loaded already."""
    model = quantize_model(net, quant_delay=cfg.quant_delay, freeze_bn=cfg.freeze_bn, ema_decay=cfg.quant_ema_decay)
    points = count_fake_quant(model)
    _logger.info(
        "quantization-aware %s: %d activation quant points (uint8, EMA %g, frozen after %d steps), %d int8 "
        "per-channel weight tensors, BN folded (batch statistics for %d steps)",
        cfg.model,
        points["activations"],
        cfg.quant_ema_decay,
        cfg.quant_delay,
        points["weights"],
        cfg.freeze_bn,
    )
    return model


def check_qat_checkpoint(params: dict, path: str) -> None:
    """Raise unless ``params`` (a loaded checkpoint) holds trained QAT state: a float checkpoint
    has no activation ranges, so an int8 simulation of it would not quantize activations."""
    if "quant_step" not in params:
        raise ValueError(
            f"{path} is a float checkpoint (no QAT observer ranges): evaluate it with --quant False, "
            f"or fine-tune it first with train.py --quant True --ckpt_path {path}"
        )
    if int(np.asarray(params["quant_step"].asnumpy()).reshape(-1)[0]) == 0:
        raise ValueError(
            f"{path} is a QAT checkpoint saved before its first training step: its activation observers hold no ranges"
        )
