"""Exponential moving average of a network's weights (mindcv ``ema`` / timm ``ModelEma``).

The shadow copies cover every floating-point Parameter of the network: the trainable ones
and the BatchNorm moving statistics (timm averages the BN buffers too; mindcv only the
trainable ones, and evaluates with the live statistics). Each shadow is a Parameter named
``ema.<name>``, so it lands in any checkpoint of a Cell that holds the :class:`EMA`, and
``create_model(..., ema=True)``-style loaders can strip the prefix.

Update after every optimizer step, with ``d`` the decay and ``k`` the number of updates so far
(this one included)::

    shadow = d_k * shadow + (1 - d_k) * weight
    d_k = decay * (1 - exp(-k / 2000))   if warmup (mindcv's train step, the default)
    d_k = decay                           otherwise

The warm-up makes early shadows follow the weights closely (``d_1 ~ 5e-4``) instead of being
stuck near the initialization for the first ~1/(1-decay) steps.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

__all__ = ["EMA", "EMA_PREFIX"]

EMA_PREFIX = "ema"
# mindcv's TrainStep: decay * (1 - exp(-updates / 2000)).
_WARMUP_UPDATES = 2000.0

_FLOAT_TYPES = (ms.float16, ms.float32, ms.float64)

_ema_assign = ops.MultitypeFuncGraph("ema_assign")


@_ema_assign.register("Tensor", "Tensor", "Tensor")
def _ema_assign_tensor(decay: Tensor, shadow: Parameter, weight: Parameter) -> Tensor:
    decay = ops.cast(decay, shadow.dtype)
    return ops.assign(shadow, shadow * decay + weight * (1.0 - decay))


class EMA(nn.Cell):
    """Shadow weights of ``network`` updated by calling the cell (``ema()``) or ``ema.update()``.

    Both are graph-safe: build the EMA on the bare model (not a loss or train wrapper), keep it
    as an attribute of the train-step Cell and call it after the optimizer step, e.g.
    ``loss = ops.depend(loss, self.optimizer(grads)); loss = ops.depend(loss, self.ema())``.
    That Cell must be built with ``auto_prefix=False`` (as ``nn.TrainOneStepCell`` is):
    MindSpore 2.x otherwise renames every Parameter of a child cell to ``<attr>.<name>``,
    network weights included.

    Args:
        network: the model whose weights are averaged.
        decay: ``d`` in the module docstring, in ``[0, 1)``; mindcv's default 0.9999.
        warmup: ramp the decay as ``decay * (1 - exp(-k / 2000))`` (mindcv) instead of a constant.
    """

    def __init__(self, network: nn.Cell, decay: float = 0.9999, warmup: bool = True) -> None:
        # No auto prefix: the network's parameters must keep their names inside this cell.
        super().__init__(auto_prefix=False)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be a number in [0, 1), got {decay!r}")
        if not isinstance(warmup, bool):
            raise TypeError(f"EMA warmup must be a bool, got {warmup!r}")
        self.decay = float(decay)
        self.warmup = warmup
        weights = [p for p in network.get_parameters() if p.dtype in _FLOAT_TYPES]
        if not weights:
            raise ValueError("EMA: the network has no floating-point parameters")
        self.weights = ParameterTuple(weights)
        self.shadow = self.weights.clone(prefix=EMA_PREFIX, init="same")
        # Not "ema."-prefixed: a loader stripping that prefix must find only network weights.
        self.num_updates = Parameter(Tensor(0.0, ms.float32), name="ema_num_updates", requires_grad=False)
        self._decay_tensor = Tensor(self.decay, ms.float32)
        self.hyper_map = ops.HyperMap()
        self._swapped = False

    def construct(self) -> Tensor:
        """Same as :meth:`update`."""
        return self.update()

    def update(self) -> Tensor:
        """Fold the current weights into the shadows; returns the update count (float32)."""
        num_updates = ops.assign_add(self.num_updates, Tensor(1.0, ms.float32))
        if self.warmup:
            decay = self._decay_tensor * (1.0 - ops.exp(-num_updates / _WARMUP_UPDATES))
        else:
            decay = self._decay_tensor
        done = self.hyper_map(ops.partial(_ema_assign, decay), self.shadow, self.weights)
        return ops.depend(num_updates, done)

    def _swap(self) -> None:
        for weight, shadow in zip(self.weights, self.shadow):
            live = weight.asnumpy().copy()
            weight.set_data(Tensor(shadow.asnumpy().copy()))
            shadow.set_data(Tensor(live))

    def swap_in(self) -> None:
        """Put the shadow weights into the network (keeping the live ones in the shadows), e.g. to validate."""
        if self._swapped:
            raise RuntimeError("EMA weights are already swapped in; call swap_out() first")
        self._swap()
        self._swapped = True

    def swap_out(self) -> None:
        """Undo :meth:`swap_in`: the network gets its live weights back before training resumes."""
        if not self._swapped:
            raise RuntimeError("EMA weights are not swapped in; nothing to swap out")
        self._swap()
        self._swapped = False

    def copy_to(self, network: nn.Cell) -> None:
        """Load the shadow weights into another instance of the same architecture (matched by name)."""
        target = {p.name: p for p in network.get_parameters()}
        missing = [w.name for w in self.weights if w.name not in target]
        if missing:
            raise ValueError(f"EMA.copy_to: the target network lacks {missing[:5]} ({len(missing)} in all)")
        for weight, shadow in zip(self.weights, self.shadow):
            source = shadow if not self._swapped else weight
            target[weight.name].set_data(Tensor(np.array(source.asnumpy())))
