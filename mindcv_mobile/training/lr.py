"""Per-step learning-rate schedules with linear warm-up, equal to mindcv's ``create_scheduler``.

A schedule is a plain ``list[float]`` of ``steps_per_epoch * num_epochs`` values, one per optimizer
step, handed to the optimizer as a dynamic learning rate. It has two phases.

Warm-up (keys ``warmup_epochs``, ``warmup_factor``): ``W = round(warmup_epochs * steps_per_epoch)``
steps; step ``i < W`` (0-based) runs at::

    lr * warmup_factor + (i / W) * (lr - lr * warmup_factor)

so step 0 runs at ``lr * warmup_factor`` (0 with the recipes' default) and the ramp reaches exactly
``lr`` at step ``W``, the first step of the main phase (mindcv's ``linear_refined_lr``).

Main phase: steps ``j = 0 .. M - 1`` after warm-up (``M = steps_per_epoch * num_epochs - W``),
``t = j / steps_per_epoch`` epochs, ``D = round(decay_epochs * steps_per_epoch)`` steps
(``decay_epochs`` defaults to ``num_epochs - warmup_epochs``):

====================== ==================================================================================
``constant``           ``lr``
``cosine_decay``       ``min_lr + (lr_c - min_lr) * (1 + cos(pi * (j - c * D) / D)) / 2`` in cycle
                       ``c = j // D`` with peak ``lr_c = lr * cycle_decay**c``; ``min_lr`` once
                       ``c >= num_cycles``. Keys: ``min_lr``, ``decay_epochs``, ``num_cycles``,
                       ``cycle_decay``. ``warmup_cosine_decay`` is another name for it.
``step_decay``         ``lr * decay_rate ** (j // D)``. Keys: ``decay_rate``, ``decay_epochs``.
``multi_step_decay``   ``lr * decay_rate ** n`` with ``n`` the number of milestones ``m`` (epochs after
                       warm-up, repeats count twice) with ``round(m * steps_per_epoch) <= j``.
                       Keys: ``decay_rate``, ``multi_step_decay_milestones``.
``exponential_decay``  ``lr * decay_rate ** t``. Key: ``decay_rate``.
``polynomial_decay``   ``lr * (1 - j / M) ** decay_rate``: falls towards 0 at the end of the run.
                       Key: ``decay_rate`` (the exponent).
``polynomial``         this toolkit's variant, not mindcv's ``polynomial_decay``:
                       ``min_lr + (lr - min_lr) * (1 - min(j, D) / D) ** power``, then ``min_lr``.
                       Keys: ``min_lr``, ``decay_epochs``, ``power`` (the recipe's ``poly_power``).
``one_cycle``          rises from ``lr / 25`` at step 0 to ``lr`` at ``U = 0.3 * M - 1``, then falls
                       to ``min_lr`` at step ``M - 1``, both halves cosine-shaped:
                       ``b + (a - b) * (1 + cos(pi * p)) / 2`` going from ``a`` to ``b`` as ``p``
                       runs 0..1. Key: ``min_lr``.
``cyclic``             triangle between ``min_lr`` and ``lr``: ``H = M // (2 * num_cycles)`` steps up,
                       ``H`` steps down, repeated to the end of the run. Keys: ``min_lr``, ``num_cycles``.
====================== ==================================================================================

``min_lr`` is used only by the cosine, ``polynomial``, ``one_cycle`` and ``cyclic`` schedules: step,
multi-step, exponential and ``polynomial_decay`` keep decaying below it, as mindcv's do.
``one_cycle`` and ``cyclic`` shape the whole run themselves: they need ``warmup_epochs`` 0 and
``lr_epoch_stair`` False.

``lr_epoch_stair=True`` holds every step of an epoch at the value of the epoch's first step
(mindcv's ``linear_lr`` / ``cosine_decay_lr`` instead of the ``*_refined_lr`` variants). With whole
epochs, step and multi-step decay change only at epoch boundaries with or without it, as in mindcv.

Fractional ``warmup_epochs``, ``decay_epochs`` and milestones are rounded to whole steps (e.g. step
decay every 2.4 epochs decays at steps ``k * round(2.4 * steps_per_epoch)``); with whole epochs every
schedule equals mindcv's.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from ..errors import unknown_choice

__all__ = ["create_lr_schedule", "list_schedulers"]

_logger = logging.getLogger(__name__)

# one_cycle: the peak is lr, the start lr / _ONE_CYCLE_DIV, the rise takes this share of the run.
_ONE_CYCLE_DIV = 25.0
_ONE_CYCLE_RISE = 0.3


@dataclass(frozen=True)
class _Decay:
    """Validated inputs of the main phase, in steps where that is exact."""

    lr: float
    min_lr: float
    steps_per_epoch: int
    main_steps: int
    decay_steps: int
    decay_rate: float
    milestone_steps: tuple[int, ...]
    num_cycles: int
    cycle_decay: float
    power: float


def _constant(j: int, d: _Decay) -> float:
    return d.lr


def _cosine_decay(j: int, d: _Decay) -> float:
    cycle = j // d.decay_steps
    if cycle >= d.num_cycles:
        return d.min_lr
    peak = d.lr * d.cycle_decay**cycle
    progress = (j - cycle * d.decay_steps) / d.decay_steps
    return d.min_lr + 0.5 * (peak - d.min_lr) * (1.0 + math.cos(math.pi * progress))


def _step_decay(j: int, d: _Decay) -> float:
    return d.lr * d.decay_rate ** (j // d.decay_steps)


def _multi_step_decay(j: int, d: _Decay) -> float:
    return d.lr * d.decay_rate ** bisect.bisect_right(d.milestone_steps, j)


def _exponential_decay(j: int, d: _Decay) -> float:
    return d.lr * d.decay_rate ** (j / d.steps_per_epoch)


def _polynomial_decay(j: int, d: _Decay) -> float:
    return d.lr * (1.0 - min(j, d.main_steps) / d.main_steps) ** d.decay_rate


def _polynomial(j: int, d: _Decay) -> float:
    progress = min(j, d.decay_steps) / d.decay_steps
    return d.min_lr + (d.lr - d.min_lr) * (1.0 - progress) ** d.power


def _cos_between(start: float, end: float, progress: float) -> float:
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def _one_cycle(j: int, d: _Decay) -> float:
    top = _ONE_CYCLE_RISE * d.main_steps - 1  # last step of the rise (may be < 0 on tiny runs)
    if j <= top:
        return _cos_between(d.lr / _ONE_CYCLE_DIV, d.lr, j / top)
    return _cos_between(d.lr, d.min_lr, (j - top) / (d.main_steps - 1 - top))


def _cyclic(j: int, d: _Decay) -> float:
    period = 2 * (d.main_steps // (2 * d.num_cycles))
    phase = j / period - j // period
    return d.min_lr + (d.lr - d.min_lr) * (1.0 - abs(2.0 * phase - 1.0))


_SCHEDULERS: dict[str, Callable[[int, _Decay], float]] = {
    "constant": _constant,
    "cosine_decay": _cosine_decay,
    "step_decay": _step_decay,
    "multi_step_decay": _multi_step_decay,
    "exponential_decay": _exponential_decay,
    "polynomial_decay": _polynomial_decay,
    "polynomial": _polynomial,
    "one_cycle": _one_cycle,
    "cyclic": _cyclic,
}
_ALIASES = {"warmup_cosine_decay": "cosine_decay"}
# Schedules that shape the whole run: no warm-up phase, no per-epoch stair.
_WHOLE_RUN = ("one_cycle", "cyclic")
_USES_DECAY_EPOCHS = ("cosine_decay", "step_decay", "polynomial")

SCHEDULER_CHOICES = tuple(_SCHEDULERS) + tuple(_ALIASES)


def schedule_kwargs(cfg) -> dict:
    """:func:`create_lr_schedule`'s arguments from a recipe, all but ``steps_per_epoch`` (a property
    of the data, known to the build step)."""
    return {
        "scheduler": cfg.scheduler,
        "lr": cfg.lr,
        "num_epochs": cfg.epoch_size,
        "min_lr": cfg.min_lr,
        "warmup_epochs": cfg.warmup_epochs,
        "warmup_factor": cfg.warmup_factor,
        "decay_epochs": cfg.decay_epochs,
        "decay_rate": cfg.decay_rate,
        "multi_step_decay_milestones": cfg.multi_step_decay_milestones,
        "lr_epoch_stair": cfg.lr_epoch_stair,
        "num_cycles": cfg.num_cycles,
        "cycle_decay": cfg.cycle_decay,
        "power": cfg.poly_power,
    }


def list_schedulers() -> list[str]:
    """Names accepted by :func:`create_lr_schedule` (without the alias ``warmup_cosine_decay``)."""
    return sorted(_SCHEDULERS)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return value


def _milestone_steps(milestones: object, steps_per_epoch: int) -> tuple[int, ...]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(f"multi_step_decay_milestones must be a list of epochs, got {milestones!r}")
    epochs = [_number("multi_step_decay_milestones", m) for m in milestones]
    if any(m < 0 for m in epochs):
        raise ValueError(f"multi_step_decay_milestones must be epochs >= 0, got {list(milestones)}")
    return tuple(sorted(round(m * steps_per_epoch) for m in epochs))


def create_lr_schedule(
    scheduler: str,
    lr: float,
    steps_per_epoch: int,
    num_epochs: int,
    min_lr: float = 0.0,
    warmup_epochs: float = 0,
    warmup_factor: float = 0.0,
    decay_epochs: float | None = None,
    decay_rate: float = 0.9,
    multi_step_decay_milestones: Sequence[float] = (30, 60, 90),
    lr_epoch_stair: bool = False,
    num_cycles: int = 1,
    cycle_decay: float = 1.0,
    power: float = 1.0,
) -> list[float]:
    """Build one learning rate per optimizer step (``steps_per_epoch * num_epochs`` values).

    Formulas, and which arguments each schedule reads, are in the module docstring.
    ``warmup_epochs``, ``decay_epochs`` and the milestones may be fractional (e.g. step decay every
    2.4 epochs); they are rounded to whole steps.

    Raises:
        ValueError: unknown ``scheduler`` (naming the accepted ones), an out-of-range value, or
            warm-up / ``lr_epoch_stair`` with ``one_cycle`` or ``cyclic``.
        TypeError: a value of the wrong type (e.g. a bool or str where a number belongs).
    """
    name = _ALIASES.get(scheduler, scheduler)
    if name not in _SCHEDULERS:
        raise unknown_choice("scheduler", scheduler, SCHEDULER_CHOICES)
    lr = _number("lr", lr)
    min_lr = _number("min_lr", min_lr)
    steps_per_epoch = _integer("steps_per_epoch", steps_per_epoch)
    num_epochs = _integer("num_epochs", num_epochs)
    warmup_epochs = _number("warmup_epochs", warmup_epochs)
    warmup_factor = _number("warmup_factor", warmup_factor)
    decay_rate = _number("decay_rate", decay_rate)
    num_cycles = _integer("num_cycles", num_cycles)
    cycle_decay = _number("cycle_decay", cycle_decay)
    power = _number("power", power)
    if not isinstance(lr_epoch_stair, bool):
        raise TypeError(f"lr_epoch_stair must be a bool, got {lr_epoch_stair!r}")

    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not 0 <= min_lr <= lr:
        raise ValueError(f"min_lr must be in [0, lr={lr}], got {min_lr}")
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    if num_epochs <= 0:
        raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if name in _WHOLE_RUN and (warmup_epochs > 0 or lr_epoch_stair):
        raise ValueError(
            f"scheduler {scheduler!r} shapes the whole run step by step and takes no warm-up or epoch "
            f"stair, got warmup_epochs={warmup_epochs:g}, lr_epoch_stair={lr_epoch_stair}: "
            "set warmup_epochs: 0 and lr_epoch_stair: False"
        )
    if warmup_epochs >= num_epochs:
        # A short run of a long recipe (--epoch_size 1 on a recipe with warmup 4) stops inside
        # the warmup: the LR never reaches its peak, as it would not in the recipe's first epoch.
        _logger.warning(
            "warmup_epochs %s >= num_epochs %s: the run ends inside the linear warmup", warmup_epochs, num_epochs
        )
    if not 0 <= warmup_factor <= 1:
        raise ValueError(f"warmup_factor must be in [0, 1], got {warmup_factor}")
    if decay_rate <= 0:
        raise ValueError(f"decay_rate must be > 0, got {decay_rate}")
    if num_cycles < 1:
        raise ValueError(f"num_cycles must be >= 1, got {num_cycles}")
    if cycle_decay <= 0:
        raise ValueError(f"cycle_decay must be > 0, got {cycle_decay}")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")

    total_steps = steps_per_epoch * num_epochs
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    main_steps = max(total_steps - warmup_steps, 0)
    if decay_epochs is None:
        decay_epochs = max(num_epochs - warmup_epochs, 1)
    decay_epochs = _number("decay_epochs", decay_epochs)
    decay_steps = round(decay_epochs * steps_per_epoch)
    if name in _USES_DECAY_EPOCHS and decay_steps < 1:
        raise ValueError(f"decay_epochs must cover at least one step, got {decay_epochs}")
    if name == "cosine_decay" and warmup_steps + num_cycles * decay_steps > total_steps:
        _logger.warning(
            "warmup_epochs + num_cycles * decay_epochs = %s > num_epochs = %s: the cosine is cut "
            "off before reaching min_lr",
            warmup_epochs + num_cycles * decay_epochs,
            num_epochs,
        )
    if name == "cyclic" and main_steps < 2 * num_cycles:
        raise ValueError(
            f"cyclic needs at least 2 * num_cycles = {2 * num_cycles} steps, got steps_per_epoch * num_epochs "
            f"= {total_steps}"
        )

    decay = _Decay(
        lr=lr,
        min_lr=min_lr,
        steps_per_epoch=steps_per_epoch,
        main_steps=main_steps,
        decay_steps=max(decay_steps, 1),
        decay_rate=decay_rate,
        milestone_steps=_milestone_steps(multi_step_decay_milestones, steps_per_epoch),
        num_cycles=num_cycles,
        cycle_decay=cycle_decay,
        power=power,
    )
    rule = _SCHEDULERS[name]
    start = lr * warmup_factor
    schedule = [start + i / warmup_steps * (lr - start) for i in range(warmup_steps)]
    schedule += [rule(j, decay) for j in range(main_steps)]
    schedule = schedule[:total_steps]
    if lr_epoch_stair:
        schedule = [schedule[i - i % steps_per_epoch] for i in range(total_steps)]
    return schedule
