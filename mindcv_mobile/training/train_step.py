"""The training step and every device-dependent choice about precision and loss scaling.

Decided once here, logged once, used everywhere:

- Ascend, GPU: the recipe's ``amp_level`` (O2/O3 in the published recipes); loss scale
  ``auto``/``dynamic``: dynamic, starting at ``loss_scale``; ``fixed``: fixed, steps skipped on
  overflow only with ``drop_overflow_update``.
- CPU: amp O0 (float16 on CPU is 3-4x slower here) unless ``amp_force``; a fixed loss scale that
  never skips a step (MindSpore's overflow check needs NPU/GPU status ops).
"""

from __future__ import annotations

import dataclasses
import logging

import mindspore as ms
from mindspore import Tensor, nn, ops

_logger = logging.getLogger(__name__)

# ms.amp.auto_mixed_precision's levels, and the loss-scale kinds resolve_precision knows.
AMP_LEVELS = ("O0", "O1", "O2", "O3")
LOSS_SCALE_TYPES = ("auto", "fixed", "dynamic")

_grad_scale = ops.MultitypeFuncGraph("grad_scale")


@_grad_scale.register("Tensor", "Tensor")
def _unscale(scale, grad):
    return grad * ops.cast(ops.Reciprocal()(scale), ops.dtype(grad))


@dataclasses.dataclass(frozen=True)
class Precision:
    """Resolved mixed precision and loss scaling for one device."""

    amp_level: str
    loss_scale: float
    dynamic: bool
    check_overflow: bool
    notes: tuple = ()

    def describe(self) -> str:
        kind = "dynamic" if self.dynamic else "fixed"
        skip = ", overflowing steps skipped" if self.check_overflow else ""
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"amp {self.amp_level}, {kind} loss scale {self.loss_scale:g}{skip}{notes}"


def resolve_precision(cfg, device: str) -> Precision:
    """Pick amp level and loss-scale kind for ``device`` from the recipe; never fail on a recipe
    written for another device, say what was changed instead."""
    notes = []
    amp_level = cfg.amp_level
    if device == "CPU" and amp_level != "O0" and not cfg.amp_force:
        notes.append(
            f"recipe amp_level {amp_level} -> O0 on CPU, where float16 is 3-4x slower; --amp_force True keeps it"
        )
        amp_level = "O0"
    kind = cfg.loss_scale_type
    if device == "CPU":
        if kind == "dynamic":
            notes.append("dynamic loss scale needs Ascend/GPU overflow status; fixed on CPU")
        if cfg.drop_overflow_update:
            notes.append("drop_overflow_update ignored on CPU (no overflow status op)")
        return Precision(amp_level, cfg.loss_scale, dynamic=False, check_overflow=False, notes=tuple(notes))
    dynamic = kind in ("auto", "dynamic")
    return Precision(
        amp_level,
        cfg.loss_scale,
        dynamic=dynamic,
        check_overflow=dynamic or cfg.drop_overflow_update,
        notes=tuple(notes),
    )


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """One optimisation step: scaled loss -> gradients -> unscale -> all-reduce (data parallel)
    -> [clip] -> [overflow check] -> optimizer -> [EMA update]. Returns the loss, or (loss,
    overflow, loss scale) when it checks overflow (dynamic or drop_overflow_update on Ascend/GPU).

    The optimizer must be built with ``loss_scale=1``: gradients are unscaled here, for every
    device, so there is one place where the scale is undone.
    """

    def __init__(
        self,
        network: nn.Cell,
        optimizer: nn.Optimizer,
        precision: Precision,
        clip_grad: bool = False,
        clip_value: float = 15.0,
        ema: nn.Cell | None = None,
    ) -> None:
        if precision.dynamic:
            scale_sense = nn.DynamicLossScaleUpdateCell(
                loss_scale_value=precision.loss_scale, scale_factor=2, scale_window=2000
            )
        else:
            scale_sense = Tensor(precision.loss_scale, ms.float32)
        super().__init__(network, optimizer, scale_sense)
        self.check_overflow = precision.check_overflow
        self.clip_grad = clip_grad
        self.clip_value = clip_value
        self.use_ema = ema is not None
        if self.use_ema:
            self.ema = ema

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scaling_sens = self.scale_sense
        sens = ops.ones_like(loss) * ops.cast(scaling_sens, ops.dtype(loss))
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.hyper_map(ops.partial(_grad_scale, scaling_sens), grads)
        grads = self.grad_reducer(grads)
        if self.clip_grad:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        if self.check_overflow:
            status = Tensor([0] * 8, ms.int32)
            overflow = self.process_loss_scale(self.get_overflow_status(status, grads))
            if not overflow:
                loss = ops.depend(loss, self.optimizer(grads))
                if self.use_ema:
                    loss = ops.depend(loss, self.ema())
            # The monitor logs skipped steps instead of stopping on their non-finite loss.
            return loss, overflow, scaling_sens
        loss = ops.depend(loss, self.optimizer(grads))
        if self.use_ema:
            loss = ops.depend(loss, self.ema())
        return loss
