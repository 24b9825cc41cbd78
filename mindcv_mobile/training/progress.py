"""Where a run is inside its epochs and when it will end.

On a terminal, a tqdm bar per epoch (tqdm's own ETA is the epoch's; the postfix holds the loss, the
LR and the run's ETA). Elsewhere (a log file, CI, msrun's worker logs) a line every ``log_interval``
steps: step/total, loss, lr, img/s and the ETAs of the epoch and of the run, as h:mm:ss.

A step is one batch of one process, the unit of the LR schedule. Progress arrives once per
MindSpore step callback: every step when the host feeds the network (and on CPU, where MindSpore
runs dataset sink mode host-fed), once per device sink of ``sink_size`` steps in dataset sink mode
on Ascend/GPU. :func:`sink_size_for` picks that size so an epoch is split into sinks of about
``log_interval`` steps.

The ETA model: seconds per step measured within the current epoch, leaving out its first callback
(graph compilation, the pipeline's first batches), or the previous epoch's rate until a second
callback arrives; plus, per epoch still to end, the mean time spent between epochs so far
(validation, checkpoints, pipeline restarts).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Callable, Optional

_logger = logging.getLogger(__name__)

# Devices where dataset sink mode feeds the network from a device queue, one step callback per
# sink. On CPU, MindSpore 2.10 runs sink mode host-fed (one callback per step) and would take a
# sink_size as the length of an epoch while still running whole epochs, so none is passed there.
SINK_DEVICES = ("Ascend", "GPU")


def format_eta(seconds: Optional[float]) -> str:
    """``h:mm:ss`` (hours unbounded: ``27:03:09``); ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def sink_size_for(steps_per_epoch: int, log_interval: int) -> int:
    """Steps per device sink in dataset sink mode: the divisor of ``steps_per_epoch`` nearest to
    ``log_interval`` by ratio (the larger one on a tie).

    A divisor, so sinks tile every epoch exactly: an epoch ends at the end of a sink, where its
    checkpoint, validation and metrics row belong. The whole epoch when ``log_interval`` is at
    least the epoch, or when the epoch's length has no divisor near it (a prime number of steps
    gives 1 or the epoch; 1 would give up what sinking saves, so the epoch wins by ratio whenever
    ``steps_per_epoch / log_interval < log_interval``)."""
    if steps_per_epoch < 1 or log_interval < 1:
        raise ValueError(
            f"steps_per_epoch {steps_per_epoch} and log_interval {log_interval} must both be positive integers"
        )
    if log_interval >= steps_per_epoch:
        return steps_per_epoch
    divisors = [d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / log_interval)), -d))


def sink_plan(sink: bool, device: str, steps_per_epoch: int, log_interval: int) -> tuple:
    """(``sink_size`` for Model.train, sinks per epoch). In dataset sink mode on Ascend/GPU an epoch
    is split into sinks of :func:`sink_size_for` steps, so progress arrives during the epoch and
    every epoch still ends at the end of a sink; ``(-1, 1)`` (MindSpore's default: a sink per
    epoch) where the host feeds the network or the epoch is one sink."""
    if not sink or device not in SINK_DEVICES:
        return -1, 1
    size = sink_size_for(steps_per_epoch, log_interval)
    return (-1, 1) if size == steps_per_epoch else (size, steps_per_epoch // size)


def log_sink_note(device: str, sinks_per_epoch: int, sink_size: int, log_interval: int) -> None:
    """Say at the run's start what a metrics row's loss is in dataset sink mode (nothing on CPU,
    where every step's loss is seen)."""
    if device not in SINK_DEVICES:
        return
    if sinks_per_epoch == 1:
        _logger.info(
            "dataset sink mode: MindSpore returns one loss per sink, so each epoch's loss (log, "
            "metrics.jsonl) is its last step's, not the epoch mean (--dataset_sink_mode False for the mean)"
        )
        return
    _logger.info(
        "dataset sink mode: each epoch runs as %d device sinks of %d steps (about log_interval %d; progress "
        "per sink); MindSpore returns one loss per sink, so each epoch's loss (log, metrics.jsonl) is the mean "
        "of its sinks' last-step losses (--dataset_sink_mode False for the mean of every step)",
        sinks_per_epoch,
        sink_size,
        log_interval,
    )


class Progress:
    """Progress bar or log lines, and ETAs, for one run.

    Args:
        num_epochs: the run's last epoch (``epoch_size``).
        log_interval: steps between log lines (and TensorBoard step scalars).
        global_batch: images per step over all devices (for img/s).
        tty: draw a tqdm bar instead of log lines; ``None``: whether stderr is a terminal.
        clock: seconds, for tests (``time.time``).
    """

    def __init__(
        self,
        num_epochs: int,
        log_interval: int,
        global_batch: int,
        tty: Optional[bool] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.num_epochs, self.log_interval, self.global_batch = num_epochs, max(1, int(log_interval)), global_batch
        self.tty = sys.stderr.isatty() if tty is None else bool(tty)
        self.clock = clock
        self.epoch = 0
        self.steps_per_epoch = 0
        self.step = 0  # steps done in the current epoch
        self._bar = None
        self._overheads: list = []  # seconds between the last step of an epoch and the next epoch's start
        self._train_end: Optional[float] = None  # time of the last step of the epoch that ended
        self._prev_rate: Optional[float] = None
        self._interval_losses: list = []

    # ---------------------------------------------------------------- epoch
    def start_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        now = self.clock()
        if self._train_end is not None:
            self._overheads.append(now - self._train_end)
            self._train_end = None
        self.epoch, self.steps_per_epoch, self.step = epoch, steps_per_epoch, 0
        self._epoch_start = self._line_time = self._last_time = now
        self._line_step = 0
        self._first: Optional[tuple] = None  # (time, step) of the epoch's first callback
        self._interval_losses = []
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch}/{self.num_epochs}",
                unit="step",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def advance(self, step: int, loss: Optional[float], lr: float) -> Optional[float]:
        """The epoch has done ``step`` steps (a callback may cover several); ``loss`` is the latest
        step's (``None`` for a step whose update was skipped). When a multiple of ``log_interval``
        was reached: logs the line (off a terminal, except at the epoch's last step, whose epoch
        line follows) and returns the mean loss of the callbacks since the previous multiple (nan
        if all were skipped), for the step scalars; else None."""
        now = self.clock()
        previous, self.step, self._last_time = self.step, step, now
        if self._first is None:
            self._first = (now, step)
        if loss is not None:
            self._interval_losses.append(loss)
        if self._bar is not None:
            self._bar.update(step - previous)
            self._bar.set_postfix_str(
                f"loss {loss if loss is not None else float('nan'):.4f}, lr {lr:.5f}, "
                f"run ETA {format_eta(self.run_eta())}",
                refresh=False,
            )
        if step // self.log_interval == previous // self.log_interval:
            return None
        mean = sum(self._interval_losses) / len(self._interval_losses) if self._interval_losses else float("nan")
        self._interval_losses = []
        if not self.tty and step < self.steps_per_epoch:
            self._log_line(mean, lr, now)
        return mean

    def end_epoch(self) -> None:
        """The epoch's steps are done (validation and saving follow)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._prev_rate = self._rate()
        self._train_end = self._last_time

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---------------------------------------------------------------- estimates
    def _rate(self) -> Optional[float]:
        """Seconds per step."""
        if self._first is not None and self.step > self._first[1] and self._last_time > self._first[0]:
            return (self._last_time - self._first[0]) / (self.step - self._first[1])
        if self._prev_rate is not None:
            return self._prev_rate
        if self.step > 0:
            return (self._last_time - self._epoch_start) / self.step
        return None

    def _overhead(self) -> float:
        """Mean seconds between epochs; between two epochs, the time since the last step counts."""
        samples = list(self._overheads)
        if self._train_end is not None:
            samples.append(self.clock() - self._train_end)
        return sum(samples) / len(samples) if samples else 0.0

    def epoch_eta(self) -> Optional[float]:
        rate = self._rate()
        return None if rate is None else (self.steps_per_epoch - self.step) * rate

    def run_eta(self) -> Optional[float]:
        """Seconds to the run's end: the current epoch's steps, the later epochs' steps, and the
        mean between-epoch time for each epoch still to end (the current one included)."""
        rate = self._rate()
        if rate is None:
            return None
        later = self.num_epochs - self.epoch
        if self._train_end is not None:  # between epochs: this one's steps are done
            return later * (self.steps_per_epoch * rate + self._overhead())
        steps = self.steps_per_epoch - self.step + later * self.steps_per_epoch
        return steps * rate + (later + 1) * self._overhead()

    def _log_line(self, loss: float, lr: float, now: float) -> None:
        seconds = now - self._line_time
        img_per_s = self.global_batch * (self.step - self._line_step) / seconds if seconds > 0 else float("nan")
        self._line_time, self._line_step = now, self.step
        done = (self.epoch - 1) * self.steps_per_epoch + self.step
        _logger.info(
            "epoch [%d/%d] step [%d/%d] (%d/%d in the run) loss %.4f lr %.6f %.1f img/s, ETA epoch %s run %s",
            self.epoch,
            self.num_epochs,
            self.step,
            self.steps_per_epoch,
            done,
            self.num_epochs * self.steps_per_epoch,
            loss,
            lr,
            img_per_s,
            format_eta(self.epoch_eta()),
            format_eta(self.run_eta()),
        )
