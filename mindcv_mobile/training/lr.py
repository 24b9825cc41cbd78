"""Per-step learning-rate schedules with linear warm-up (mindcv's ``create_scheduler`` semantics).

A schedule is a plain ``list[float]`` with one value per optimizer step, handed to the
optimizer as a dynamic learning rate. It has two phases:

* warm-up, ``W = round(warmup_epochs * steps_per_epoch)`` steps; step ``i`` (0-based, ``i < W``)::

      lr_i = lr * (warmup_factor + (1 - warmup_factor) * i / W)

  so step 0 runs at ``lr * warmup_factor`` (0 with the recipes' default) and the ramp reaches
  exactly ``lr`` at step ``W``, the first step of the decay phase. This is mindcv's
  ``linear_refined_lr``; the ``(i + 1) / W`` variant would shift every recipe's schedule by
  one step.
* decay, steps ``j = 0, 1, ...`` counted from the end of warm-up, ``t = j / steps_per_epoch``
  epochs, ``D = decay_epochs`` (default ``num_epochs - warmup_epochs``):

  ================== ===================================================================
  constant           ``lr``
  cosine_decay       ``min_lr + (lr_c - min_lr) * (1 + cos(pi * t_c / D)) / 2`` where cycle
                     ``c = floor(t / D)``, ``t_c = t - c * D``, ``lr_c = lr * cycle_decay**c``;
                     ``min_lr`` after ``num_cycles`` cycles
  step_decay         ``lr * decay_rate ** floor(t / D)``
  multi_step_decay   ``lr * decay_rate ** (number of milestones <= t)``; milestones count
                     epochs from the end of warm-up, as in mindcv
  polynomial         ``min_lr + (lr - min_lr) * (1 - min(t, D) / D) ** power``
  exponential_decay  ``lr * decay_rate ** t``
  ================== ===================================================================

  ``min_lr`` is also a floor for step, multi-step and exponential decay (no effect at the
  default 0, where the values equal mindcv's).

``lr_epoch_stair=True`` holds every step of an epoch at the value of the epoch's first step
(mindcv's ``linear_lr`` / ``cosine_decay_lr`` instead of the ``*_refined_lr`` variants).
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


@dataclass(frozen=True)
class _Decay:
    """Validated inputs of the decay phase, in steps where that is exact."""

    lr: float
    min_lr: float
    steps_per_epoch: int
    decay_steps: int
    decay_rate: float
    milestones: tuple[float, ...]
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
    return max(d.min_lr, d.lr * d.decay_rate ** (j // d.decay_steps))


def _multi_step_decay(j: int, d: _Decay) -> float:
    passed = bisect.bisect_right(d.milestones, j / d.steps_per_epoch)
    return max(d.min_lr, d.lr * d.decay_rate**passed)


def _polynomial(j: int, d: _Decay) -> float:
    progress = min(j, d.decay_steps) / d.decay_steps
    return d.min_lr + (d.lr - d.min_lr) * (1.0 - progress) ** d.power


def _exponential_decay(j: int, d: _Decay) -> float:
    return max(d.min_lr, d.lr * d.decay_rate ** (j / d.steps_per_epoch))


_SCHEDULERS: dict[str, Callable[[int, _Decay], float]] = {
    "constant": _constant,
    "cosine_decay": _cosine_decay,
    "step_decay": _step_decay,
    "multi_step_decay": _multi_step_decay,
    "polynomial": _polynomial,
    "exponential_decay": _exponential_decay,
}
# mindcv spells the polynomial schedule "polynomial_decay"; accept recipes written for it.
_ALIASES = {"polynomial_decay": "polynomial"}


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
    """Names accepted by :func:`create_lr_schedule`."""
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

    Formulas are in the module docstring. ``warmup_epochs`` and ``decay_epochs`` may be
    fractional (e.g. step decay every 2.4 epochs); they are rounded to whole steps.

    Raises:
        ValueError: unknown ``scheduler`` (naming the accepted ones) or an out-of-range value.
        TypeError: a value of the wrong type (e.g. a bool or str where a number belongs).
    """
    name = _ALIASES.get(scheduler, scheduler)
    if name not in _SCHEDULERS:
        raise unknown_choice("scheduler", scheduler, list(_SCHEDULERS) + list(_ALIASES))
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
    if decay_epochs is None:
        decay_epochs = max(num_epochs - warmup_epochs, 1)
    decay_epochs = _number("decay_epochs", decay_epochs)
    decay_steps = round(decay_epochs * steps_per_epoch)
    if decay_steps < 1:
        raise ValueError(f"decay_epochs must cover at least one step, got {decay_epochs}")
    if name == "cosine_decay" and warmup_steps + num_cycles * decay_steps > total_steps:
        _logger.warning(
            "warmup_epochs + num_cycles * decay_epochs = %s > num_epochs = %s: the cosine is cut "
            "off before reaching min_lr",
            warmup_epochs + num_cycles * decay_epochs,
            num_epochs,
        )

    if isinstance(multi_step_decay_milestones, (str, bytes)) or not isinstance(multi_step_decay_milestones, Sequence):
        raise TypeError(f"multi_step_decay_milestones must be a list of epochs, got {multi_step_decay_milestones!r}")
    milestones = tuple(_number("multi_step_decay_milestones", m) for m in multi_step_decay_milestones)
    if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m <= 0 for m in milestones):
        raise ValueError(f"multi_step_decay_milestones must be positive and increasing, got {list(milestones)}")

    decay = _Decay(
        lr=lr,
        min_lr=min_lr,
        steps_per_epoch=steps_per_epoch,
        decay_steps=decay_steps,
        decay_rate=decay_rate,
        milestones=milestones,
        num_cycles=num_cycles,
        cycle_decay=cycle_decay,
        power=power,
    )
    rule = _SCHEDULERS[name]
    schedule = [lr * (warmup_factor + (1.0 - warmup_factor) * i / warmup_steps) for i in range(warmup_steps)]
    schedule += [rule(j, decay) for j in range(total_steps - warmup_steps)]
    schedule = schedule[:total_steps]
    if lr_epoch_stair:
        schedule = [schedule[i - i % steps_per_epoch] for i in range(total_steps)]
    return schedule
