"""The training step and every device-dependent choice about precision and loss scaling.

Decided once here, logged once, used everywhere:

- Ascend, GPU: the recipe's ``amp_level`` (O2/O3 in the published recipes); loss scale
  ``auto``/``dynamic``: dynamic, starting at ``loss_scale``; ``fixed``: fixed, steps skipped on
  overflow only with ``drop_overflow_update``.
- CPU: amp O0 (float16 on CPU is 3-4x slower here) unless ``amp_force``; a fixed loss scale that
  never skips a step (MindSpore's overflow check needs NPU/GPU status ops).

Gradient accumulation (``gradient_accumulation_steps`` N > 1): every batch's unscaled gradients
are added, divided by N, to per-device buffers; every N-th batch the buffers are all-reduced,
clipped and applied, then cleared. With the loss averaged over the batch this is one update on the
N batches concatenated, except for BatchNorm, whose statistics stay per batch. As in mindcv, the
LR schedule counts batches: its position advances on every batch and an update uses the value at
its batch. The buffers and their counter are parameters of the step, so checkpoints carry them
and a resumed run continues mid-accumulation exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

_logger = logging.getLogger(__name__)

# ms.amp.auto_mixed_precision's levels, and the loss-scale kinds resolve_precision knows.
AMP_LEVELS = ("O0", "O1", "O2", "O3")
LOSS_SCALE_TYPES = ("auto", "fixed", "dynamic")

_grad_scale = ops.MultitypeFuncGraph("grad_scale")


@_grad_scale.register("Tensor", "Tensor")
def _unscale(scale, grad):
    return grad * ops.cast(ops.Reciprocal()(scale), ops.dtype(grad))


_add_share = ops.MultitypeFuncGraph("add_share")


@_add_share.register("Tensor", "Tensor", "Tensor")
def _add_share_tensor(factor, buffer, grad):
    return ops.assign_add(buffer, grad * ops.cast(factor, ops.dtype(grad)))


_zero = ops.MultitypeFuncGraph("zero")


@_zero.register("Tensor")
def _zero_tensor(buffer):
    return ops.assign(buffer, ops.zeros_like(buffer))


def cast_cells(names) -> tuple:
    """The ``nn`` cell classes of ``amp_cast_list`` names (``nn.Conv2d``, ``Conv2d`` or
    ``mindspore.nn.Conv2d``); an unknown name is a one-line error listing close ones."""
    out = []
    for name in names:
        short = str(name).rsplit(".", 1)[-1]
        cls = getattr(nn, short, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Cell)):
            close = difflib.get_close_matches(short, [n for n in dir(nn) if n[:1].isupper()], n=3)
            hint = f"; did you mean {', '.join('nn.' + c for c in close)}?" if close else ""
            raise ValueError(f"amp_cast_list: {name!r} is not a mindspore.nn cell class{hint}")
        out.append(cls)
    return tuple(out)


class _CastOutput(nn.Cell):
    """``cell`` with its output cast to ``dtype``; parameter names unchanged."""

    def __init__(self, cell: nn.Cell, dtype) -> None:
        super().__init__(auto_prefix=False)
        self.cell = cell
        self.dtype = dtype

    def construct(self, *inputs):
        return ops.cast(self.cell(*inputs), self.dtype)


def _cast_listed(net: nn.Cell, classes: tuple, compute, output) -> None:
    """Every cell of ``classes`` inside ``net`` computes in ``compute`` and hands on ``output``."""
    children = net.name_cells()
    for name, child in children.items():
        if isinstance(child, classes):
            net._cells[name] = _CastOutput(child.to_float(compute), output)
        else:
            _cast_listed(child, classes, compute, output)
    if isinstance(net, nn.SequentialCell):
        net.cell_list = list(net.cells())


def mixed_precision(net: nn.Cell, amp_level: str, cast_list=None) -> nn.Cell:
    """``net`` in ``amp_level``. ``cast_list`` (cell class names), as mindcv's ``amp_cast_list``:
    at O1 the listed cells compute in float16 (white list), at O2 everything but the listed cells
    does (black list); ignored at O0 and O3. None: MindSpore's own lists.

    A list is applied cell by cell with ``Cell.to_float`` (MindSpore's ``custom_mixed_precision``
    writes generated Python files into the working directory on every call)."""
    if amp_level == "O0":
        return net
    if cast_list and amp_level in ("O1", "O2"):
        classes = cast_cells(cast_list)
        if amp_level == "O1":
            _cast_listed(net, classes, ms.float16, ms.float32)
            return net
        _cast_listed(net.to_float(ms.float16), classes, ms.float32, ms.float16)
        return _CastOutput(net, ms.float32)
    return ms.amp.auto_mixed_precision(net, amp_level)


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
        accumulation_steps: int = 1,
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
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be an integer >= 1, got {accumulation_steps!r}")
        self.accumulation_steps = accumulation_steps
        if accumulation_steps > 1:
            self.accum_grads = self.weights.clone(prefix="accumulation", init="zeros")
            self.accum_count = Parameter(Tensor(0, ms.int32), name="accumulation.count", requires_grad=False)
            self.accum_share = Tensor(1.0 / accumulation_steps, ms.float32)

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scaling_sens = self.scale_sense
        sens = ops.ones_like(loss) * ops.cast(scaling_sens, ops.dtype(loss))
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.hyper_map(ops.partial(_grad_scale, scaling_sens), grads)
        if self.accumulation_steps > 1:
            loss, overflow = self._accumulate(loss, grads, scaling_sens)
        else:
            loss, overflow = self._update(loss, self.grad_reducer(grads), scaling_sens)
        if self.check_overflow:
            # The monitor logs skipped steps instead of stopping on their non-finite loss.
            return loss, overflow, scaling_sens
        return loss

    def _update(self, loss, grads, scaling_sens):
        """Reduced gradients -> [clip] -> [overflow check] -> optimizer -> [EMA]: (loss, overflow)."""
        if self.clip_grad:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        if self.check_overflow:
            status = Tensor([0] * 8, ms.int32)
            overflow = self.process_loss_scale(self.get_overflow_status(status, grads))
            if not overflow:
                loss = ops.depend(loss, self.optimizer(grads))
                if self.use_ema:
                    loss = ops.depend(loss, self.ema())
            return loss, overflow
        loss = ops.depend(loss, self.optimizer(grads))
        if self.use_ema:
            loss = ops.depend(loss, self.ema())
        return loss, Tensor(False)

    def _accumulate(self, loss, grads, scaling_sens):
        """Add this batch's share to the buffers; every N-th batch apply them and clear them."""
        loss = ops.depend(loss, self.hyper_map(ops.partial(_add_share, self.accum_share), self.accum_grads, grads))
        count = self.accum_count + 1
        loss = ops.depend(loss, ops.assign(self.accum_count, count))
        overflow = Tensor(False)
        if count >= self.accumulation_steps:
            # Devices keep their own buffers until the update: one all-reduce per N batches.
            loss, overflow = self._update(loss, self.grad_reducer(self.accum_grads), scaling_sens)
            loss = ops.depend(loss, self.hyper_map(_zero, self.accum_grads))
            loss = ops.depend(loss, ops.assign(self.accum_count, ops.zeros_like(count)))
        else:
            # No update on this batch; the LR schedule still advances one position.
            step = self.optimizer.global_step_increase_tensor
            loss = ops.depend(loss, ops.assign_add(self.optimizer.global_step, step))
        return loss, overflow
