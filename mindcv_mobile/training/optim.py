"""Optimizers with weight-decay filtering (mindcv's ``create_optimizer`` semantics).

Weight-decay filters (which parameters are exempt from decay):

* ``disable``: none -- decay on every parameter, BN gamma/beta and biases included.
* ``auto``: what a MindSpore optimizer does when given a flat parameter list (mindcv passes
  the list through for ``auto``): names containing ``"gamma"`` or ``"beta"`` are exempt, i.e.
  BatchNorm's affine parameters. Biases (Dense, SE 1x1 convs) are still decayed.
* ``norm_and_bias``: every parameter with ``ndim <= 1`` or whose name ends in ``.gamma``,
  ``.beta`` or ``.bias`` -- BN affine parameters and all biases.

The split is always passed as explicit MindSpore parameter groups, so what each filter does
is visible through :func:`split_weight_decay` and does not depend on MindSpore's defaults.

``loss_scale``: MindSpore optimizers divide the gradients by it (after adding
``weight_decay * loss_scale * w``, so the effective decay is unchanged). Pair a value
``S != 1`` with a train step that multiplies the loss (its ``sens``) by ``S`` and does not
unscale the gradients itself, as ``FixedLossScaleManager(S, drop_overflow_update=False)``
does. ``adamw`` (``nn.AdamWeightDecay``) has no such argument and rejects ``S != 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, Union

import numpy as np
from mindspore import Parameter, Tensor, nn

from ..errors import unknown_choice

__all__ = ["create_optimizer", "split_weight_decay", "list_optimizers", "list_weight_decay_filters"]

LearningRate = Union[float, Sequence[float], np.ndarray, Tensor]


def _momentum(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    if a["nesterov"]:
        # MindSpore 2.10's CPU ApplyMomentum kernel ignores use_nesterov (measured: nn.Momentum
        # with use_nesterov=True makes plain-momentum updates). nn.SGD without dampening applies
        # the same rule, accum = mu*accum + g; w -= lr*(g + mu*accum), correctly on every device.
        return _sgd(params, lr, a)
    return nn.Momentum(params, lr, momentum=a["momentum"], loss_scale=a["loss_scale"])


def _sgd(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    return nn.SGD(params, lr, momentum=a["momentum"], nesterov=a["nesterov"], loss_scale=a["loss_scale"])


def _rmsprop(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    # MindSpore's RMSProp is TensorFlow's (the MobileNetV2/V3 papers' optimizer): mean square
    # starts at 1, eps sits inside the sqrt and lr is folded into the momentum buffer:
    #   s = rho*s + (1-rho)*g^2;  m = mu*m + lr*g/sqrt(s+eps);  w -= m.
    # The papers / timm's "rmsproptf" use rho=0.9, mu=0.9, eps=1e-3; mindcv's default eps is 1e-10.
    return nn.RMSProp(
        params,
        lr,
        decay=a["rmsprop_decay"],
        momentum=a["momentum"],
        epsilon=a["eps"],
        loss_scale=a["loss_scale"],
    )


def _adam(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    # L2-coupled decay (added to the gradient), unlike adamw.
    beta1, beta2 = a["betas"]
    return nn.Adam(
        params, lr, beta1=beta1, beta2=beta2, eps=a["eps"], use_nesterov=a["nesterov"], loss_scale=a["loss_scale"]
    )


def _adamw(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    if a["loss_scale"] != 1.0:
        raise ValueError(
            f"opt 'adamw' (nn.AdamWeightDecay) cannot undo loss_scale={a['loss_scale']}; use loss_scale=1.0 "
            "and let the train step unscale the gradients (e.g. a dynamic loss-scale cell)"
        )
    beta1, beta2 = a["betas"]
    return nn.AdamWeightDecay(params, lr, beta1=beta1, beta2=beta2, eps=a["eps"])


_OPTIMIZERS: dict[str, Callable[..., nn.Optimizer]] = {
    "momentum": _momentum,
    "sgd": _sgd,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
}


def _exempt_none(param: Parameter) -> bool:
    return False


def _exempt_norm(param: Parameter) -> bool:
    # The exact test MindSpore 2.x's Optimizer applies to a flat parameter list.
    return "beta" in param.name or "gamma" in param.name


def _exempt_norm_and_bias(param: Parameter) -> bool:
    return param.ndim <= 1 or param.name.endswith((".gamma", ".beta", ".bias"))


_WEIGHT_DECAY_FILTERS: dict[str, Callable[[Parameter], bool]] = {
    "disable": _exempt_none,
    "auto": _exempt_norm,
    "norm_and_bias": _exempt_norm_and_bias,
}


OPTIMIZER_CHOICES = tuple(_OPTIMIZERS)
WEIGHT_DECAY_FILTER_CHOICES = tuple(_WEIGHT_DECAY_FILTERS)


def optimizer_kwargs(cfg) -> dict:
    """:func:`create_optimizer`'s arguments from a recipe, all but ``params`` and ``lr`` (the
    schedule). Gradients are unscaled in the train step, so the optimizer's loss scale is 1."""
    return {
        "opt": cfg.opt,
        "weight_decay": cfg.weight_decay,
        "momentum": cfg.momentum,
        "nesterov": cfg.use_nesterov,
        "weight_decay_filter": cfg.weight_decay_filter,
        "loss_scale": 1.0,
        "eps": cfg.eps,
    }


def list_optimizers() -> list[str]:
    """Names accepted by :func:`create_optimizer` as ``opt``."""
    return sorted(_OPTIMIZERS)


def list_weight_decay_filters() -> list[str]:
    """Names accepted as ``weight_decay_filter``."""
    return sorted(_WEIGHT_DECAY_FILTERS)


def split_weight_decay(
    params: Sequence[Parameter], weight_decay_filter: str = "disable"
) -> tuple[list[Parameter], list[Parameter]]:
    """Split ``params`` into ``(decayed, exempt)`` lists (order kept) by ``weight_decay_filter``."""
    if weight_decay_filter not in _WEIGHT_DECAY_FILTERS:
        raise unknown_choice("weight_decay_filter", weight_decay_filter, list(_WEIGHT_DECAY_FILTERS))
    is_exempt = _WEIGHT_DECAY_FILTERS[weight_decay_filter]
    decay = [p for p in params if not is_exempt(p)]
    no_decay = [p for p in params if is_exempt(p)]
    return decay, no_decay


def _check_lr(lr: LearningRate) -> float | Tensor:
    if isinstance(lr, bool):
        raise TypeError(f"lr must be a float or a per-step schedule, got {lr!r}")
    if isinstance(lr, (int, float)):
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        return float(lr)
    values = lr.asnumpy() if isinstance(lr, Tensor) else np.asarray(lr)
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"an lr schedule must be a non-empty 1-D list of numbers, got shape {values.shape}")
    if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
        raise ValueError("an lr schedule must hold finite values >= 0")
    return Tensor(values.astype(np.float32))


def _check_float(
    name: str, value: object, low: float, high: float, low_open: bool = False, high_open: bool = True
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def create_optimizer(
    params: Sequence[Parameter],
    opt: str = "momentum",
    lr: LearningRate = 0.1,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay_filter: str = "disable",
    loss_scale: float = 1.0,
    eps: float = 1e-10,
    rmsprop_decay: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> nn.Optimizer:
    """Build a MindSpore optimizer over ``params`` (usually ``net.trainable_params()``).

    Args:
        params: the parameters to update.
        opt: (case-insensitive) ``momentum`` (``nn.Momentum``; ``nn.SGD`` when ``nesterov``,
            see ``_momentum``), ``sgd`` (``nn.SGD``), ``rmsprop`` (``nn.RMSProp``,
            TF-style), ``adam`` (``nn.Adam``, L2 decay) or ``adamw`` (``nn.AdamWeightDecay``).
        lr: a constant, or one value per step (list / 1-D array / Tensor, e.g. from
            :func:`~mindcv_mobile.training.lr.create_lr_schedule`).
        weight_decay: decay coefficient for the parameters the filter does not exempt.
        momentum: momentum of ``momentum``, ``sgd`` and ``rmsprop``.
        nesterov: Nesterov momentum (``momentum``, ``sgd``, ``adam``).
        weight_decay_filter: ``disable`` / ``auto`` / ``norm_and_bias`` (see module docstring).
        loss_scale: the fixed loss scale the optimizer divides gradients by (see module docstring).
        eps: epsilon of ``rmsprop`` / ``adam`` / ``adamw``.
        rmsprop_decay: moving-average decay of the squared gradient in ``rmsprop``.
        betas: ``(beta1, beta2)`` of ``adam`` / ``adamw``.

    Raises:
        ValueError: unknown ``opt`` / ``weight_decay_filter`` (listing the accepted ones), empty
            ``params``, or a value out of range.
    """
    if not isinstance(opt, str) or opt.lower() not in _OPTIMIZERS:
        raise unknown_choice("optimizer", opt, list(_OPTIMIZERS))
    opt = opt.lower()
    params = list(params)
    if not params:
        raise ValueError("params is empty: nothing to optimize")
    if not all(isinstance(p, Parameter) for p in params):
        raise TypeError("params must be mindspore Parameters, e.g. net.trainable_params()")
    lr = _check_lr(lr)
    weight_decay = _check_float("weight_decay", weight_decay, 0.0, math.inf)
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    args = {
        "momentum": _check_float("momentum", momentum, 0.0, 1.0),
        "nesterov": nesterov,
        "loss_scale": _check_float("loss_scale", loss_scale, 0.0, math.inf, low_open=True),
        "eps": _check_float("eps", eps, 0.0, math.inf, low_open=True),
        "rmsprop_decay": _check_float("rmsprop_decay", rmsprop_decay, 0.0, 1.0),
        "betas": tuple(_check_float(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas)),
    }
    if nesterov and opt in ("momentum", "sgd") and args["momentum"] == 0.0:
        raise ValueError("nesterov=True needs momentum > 0")
    if nesterov and opt in ("rmsprop", "adamw"):
        raise ValueError(f"nesterov=True is not supported by opt {opt!r}; accepted with: momentum, sgd, adam")

    decay, no_decay = split_weight_decay(params, weight_decay_filter)
    if weight_decay > 0 and no_decay:
        groups: list[dict[str, Any]] = []
        if decay:
            groups.append({"params": decay, "weight_decay": weight_decay})
        groups.append({"params": no_decay, "weight_decay": 0.0})
        groups.append({"order_params": params})
        return _OPTIMIZERS[opt](groups, lr, args)
    # One group carrying the decay: a flat list would let MindSpore exempt gamma/beta by name.
    return _OPTIMIZERS[opt]([{"params": params, "weight_decay": weight_decay}], lr, args)
