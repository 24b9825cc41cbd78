"""Optimizers with weight-decay filtering and layer-wise LR decay (mindcv's ``create_optimizer``
semantics). MindSpore's cells where it has them; Lion, NAdam, Adan and a CPU-capable LAMB come
from :mod:`.optimizers`.

Weight-decay filters (which parameters are exempt from decay):

* ``disable``: none -- decay on every parameter, BN gamma/beta and biases included.
* ``auto``: what a MindSpore optimizer does when given a flat parameter list (mindcv passes
  the list through for ``auto``): names containing ``"gamma"`` or ``"beta"`` are exempt, i.e.
  BatchNorm's affine parameters. Biases (Dense, SE 1x1 convs) are still decayed.
* ``norm_and_bias``: every parameter with ``ndim <= 1`` or whose name ends in ``.gamma``,
  ``.beta`` or ``.bias`` -- BN affine parameters and all biases.

The split is always passed as explicit MindSpore parameter groups, so what each filter does
is visible through :func:`split_weight_decay` and does not depend on MindSpore's defaults.

``layer_decay``: parameters are assigned to layers by name (:func:`layer_ids`: the stem is
layer 0, each MobileNet block one layer, the head the last), and each (layer, decayed or not)
pair becomes a group whose lr is the schedule times ``layer_decay**(last layer - layer)``.
As in mindcv, 1-D parameters (BN affine, biases) are then never decayed.

``loss_scale``: MindSpore optimizers divide the gradients by it (after adding
``weight_decay * loss_scale * w``, so the effective decay is unchanged). Pair a value
``S != 1`` with a train step that multiplies the loss (its ``sens``) by ``S`` and does not
unscale the gradients itself, as ``FixedLossScaleManager(S, drop_overflow_update=False)``
does. The cells of :mod:`.optimizers` divide first and add the unscaled decay: the same update.
``adamw`` (``nn.AdamWeightDecay``) has no such argument and rejects ``S != 1``, and so does
``lamb`` (mindcv asserts it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

import numpy as np
from mindspore import Parameter, Tensor, nn

from ..errors import unknown_choice
from .optimizers import Adan, Lamb, Lion, NAdam

__all__ = ["create_optimizer", "split_weight_decay", "layer_ids", "list_optimizers", "list_weight_decay_filters"]

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


def _nesterov(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    return _momentum(params, lr, {**a, "nesterov": True})


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


# The cells of optimizers.py keep mindcv's eps (nadam/adan 1e-8, lamb 1e-6); ``eps`` is rmsprop/adam's.
def _lion(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    beta1, beta2 = a["betas"]
    return Lion(params, lr, beta1=beta1, beta2=beta2, loss_scale=a["loss_scale"])


def _nadam(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    beta1, beta2 = a["betas"]
    return NAdam(params, lr, beta1, beta2, loss_scale=a["loss_scale"], schedule_decay=a["schedule_decay"])


def _adan(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    beta1, beta2, beta3 = a["betas"]
    return Adan(params, lr, beta1, beta2, beta3, loss_scale=a["loss_scale"])


def _lamb(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    if a["loss_scale"] != 1.0:
        raise ValueError(
            f"opt 'lamb' cannot undo loss_scale={a['loss_scale']}; use loss_scale=1.0 (as mindcv requires)"
        )
    beta1, beta2 = a["betas"]
    return Lamb(params, lr, beta1=beta1, beta2=beta2)


def _adagrad(params, lr, a: dict[str, Any]) -> nn.Optimizer:
    # Accumulator starts at 0.1, no epsilon: accum += g^2; w -= lr*g/sqrt(accum) (L2 decay in g).
    return nn.Adagrad(params, learning_rate=lr, loss_scale=a["loss_scale"])


_OPTIMIZERS: dict[str, Callable[..., nn.Optimizer]] = {
    "momentum": _momentum,
    "sgd": _sgd,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
    "nesterov": _nesterov,
    "lion": _lion,
    "nadam": _nadam,
    "adan": _adan,
    "lamb": _lamb,
    "adagrad": _adagrad,
}
# Default betas where they are not (0.9, 0.999): mindcv's for lion; for adan the authors' (weights of the
# history), the values mindcv also uses; optimizers without betas ignore them.
_BETAS = {"lion": (0.9, 0.99), "adan": (0.98, 0.92, 0.99)}
_NESTEROV_OPTS = ("momentum", "sgd", "adam", "nesterov")


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
        "layer_decay": cfg.layer_decay,
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


_BLOCK = re.compile(r"features\.(\d+)\.(.+)")
# Top-level cell names mindcv's models give their classifier (the fallback's head).
_HEAD_NAMES = frozenset({"classifier", "head", "fc", "last_linear", "linear", "mlp_head"})
_LAYERS_PER_GROUP = 12


def layer_ids(names: Sequence[str]) -> list[int]:
    """The layer of each parameter name for layer-wise LR decay: 0 is the stem, the largest the head.

    Names under a ``features.<i>.`` sequence (our MobileNets): an entry whose parameters sit in
    sub-cells (``features.3.layers.0.weight``) is a block, and each block is one layer; the
    plain conv/BN entries before the first block (and any parameters before ``features``) are
    the stem, layer 0; entries after the last block and everything after ``features``
    (``classifier.*``) are the head. A plain entry between blocks joins the block before it.
    Other names: mindcv's fallback, groups of 12 parameters in order with the classifier
    (a first name part ``classifier``/``head``/``fc``/...) as one last layer.
    """
    matches = [_BLOCK.match(n) for n in names]
    blocks = sorted({int(m.group(1)) for m in matches if m and "." in m.group(2)})
    if not blocks:
        in_head = [n.split(".")[0] in _HEAD_NAMES for n in names]
        trunk = 0
        ids = []
        for head in in_head:
            ids.append(-1 if head else trunk // _LAYERS_PER_GROUP)
            trunk += not head
        top = -(-trunk // _LAYERS_PER_GROUP)
        return [top if i < 0 else i for i in ids]
    ids, after_features = [], False
    for m in matches:
        if m is None:
            ids.append(len(blocks) + 1 if after_features else 0)
            continue
        after_features = True
        index = int(m.group(1))
        if index > blocks[-1]:
            ids.append(len(blocks) + 1)
        else:  # 0 before the first block, else the rank of the block at or before ``index``
            ids.append(sum(b <= index for b in blocks))
    used = sorted(set(ids))  # renumber 0..k-1 (e.g. a network without a stem)
    return [used.index(i) for i in ids]


def _param_groups(params, lr, weight_decay: float, no_decay, layer_decay: Optional[float]) -> list[dict]:
    """MindSpore parameter groups: decay split by ``no_decay`` (a set of ids) and, with
    ``layer_decay``, one lr per layer (``lr * layer_decay**(top - layer)``, 1-D parameters undecayed)."""
    if layer_decay is None:
        if weight_decay > 0 and no_decay:
            decay = [p for p in params if id(p) not in no_decay]
            groups = [{"params": decay, "weight_decay": weight_decay}] if decay else []
            groups.append({"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0})
            return groups + [{"order_params": params}]
        # One group carrying the decay: a flat list would let MindSpore exempt gamma/beta by name.
        return [{"params": params, "weight_decay": weight_decay}]
    ids = layer_ids([p.name for p in params])
    top = max(ids)
    grouped: dict[tuple[int, bool], list[Parameter]] = {}
    for p, layer in zip(params, ids):
        decayed = weight_decay > 0 and p.ndim > 1 and id(p) not in no_decay
        grouped.setdefault((layer, decayed), []).append(p)
    groups = [
        {"params": ps, "weight_decay": weight_decay if decayed else 0.0, "lr": lr * layer_decay ** (top - layer)}
        for (layer, decayed), ps in grouped.items()
    ]
    return groups + [{"order_params": params}]


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
    betas: Optional[Sequence[float]] = None,
    layer_decay: Optional[float] = None,
    schedule_decay: float = 4e-3,
) -> nn.Optimizer:
    """Build a MindSpore optimizer over ``params`` (usually ``net.trainable_params()``).

    Args:
        params: the parameters to update.
        opt: (case-insensitive) ``momentum`` (``nn.Momentum``; ``nn.SGD`` when ``nesterov``,
            see ``_momentum``), ``nesterov`` (``momentum`` with Nesterov on), ``sgd``
            (``nn.SGD``), ``rmsprop`` (``nn.RMSProp``, TF-style), ``adam`` (``nn.Adam``, L2
            decay), ``adamw`` (``nn.AdamWeightDecay``), ``adagrad`` (``nn.Adagrad``), or
            ``lion`` / ``nadam`` / ``adan`` / ``lamb`` (the cells of
            :mod:`~mindcv_mobile.training.optimizers`).
        lr: a constant, or one value per step (list / 1-D array / Tensor, e.g. from
            :func:`~mindcv_mobile.training.lr.create_lr_schedule`).
        weight_decay: decay coefficient for the parameters the filter does not exempt.
        momentum: momentum of ``momentum``, ``nesterov``, ``sgd`` and ``rmsprop``.
        nesterov: Nesterov momentum (``momentum``, ``sgd``, ``adam``).
        weight_decay_filter: ``disable`` / ``auto`` / ``norm_and_bias`` (see module docstring).
        loss_scale: the fixed loss scale the optimizer divides gradients by (see module docstring).
        eps: epsilon of ``rmsprop`` / ``adam`` / ``adamw``; the others keep mindcv's.
        rmsprop_decay: moving-average decay of the squared gradient in ``rmsprop``.
        betas: ``(beta1, beta2)`` of ``adam`` / ``adamw`` / ``lion`` / ``nadam`` / ``lamb``,
            ``(beta1, beta2, beta3)`` of ``adan`` (weights of the history, as in the authors'
            implementation, not the paper's weights of the newest term); None = mindcv's
            defaults for ``opt``.
        layer_decay: layer-wise LR decay (mindcv's): each layer of :func:`layer_ids` gets
            ``lr * layer_decay**(num_layers - 1 - layer)`` (the head the full ``lr``, a
            schedule scaled as a whole), and 1-D parameters get no weight decay on top of
            ``weight_decay_filter``. None = off.
        schedule_decay: momentum-schedule decay of ``nadam``.

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
    default_betas = _BETAS.get(opt, (0.9, 0.999))
    betas = default_betas if betas is None else betas
    if not (isinstance(betas, (tuple, list)) and len(betas) == len(default_betas)):
        raise ValueError(f"betas of opt {opt!r} must be {len(default_betas)} numbers, got {betas!r}")
    if layer_decay is not None:
        layer_decay = _check_float("layer_decay", layer_decay, 0.0, 1.0, low_open=True, high_open=False)
    args = {
        "momentum": _check_float("momentum", momentum, 0.0, 1.0),
        "nesterov": nesterov,
        "loss_scale": _check_float("loss_scale", loss_scale, 0.0, math.inf, low_open=True),
        "eps": _check_float("eps", eps, 0.0, math.inf, low_open=True),
        "rmsprop_decay": _check_float("rmsprop_decay", rmsprop_decay, 0.0, 1.0),
        "betas": tuple(_check_float(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas)),
        "schedule_decay": _check_float("schedule_decay", schedule_decay, 0.0, math.inf),
    }
    if (nesterov or opt == "nesterov") and opt in ("momentum", "sgd", "nesterov") and args["momentum"] == 0.0:
        raise ValueError(f"Nesterov momentum (opt {opt!r}) needs momentum > 0, got 0.0")
    if nesterov and opt not in _NESTEROV_OPTS:
        raise ValueError(f"nesterov=True is not supported by opt {opt!r}; accepted with: {', '.join(_NESTEROV_OPTS)}")

    _, no_decay = split_weight_decay(params, weight_decay_filter)
    groups = _param_groups(params, lr, weight_decay, {id(p) for p in no_decay}, layer_decay)
    return _OPTIMIZERS[opt](groups, lr, args)
