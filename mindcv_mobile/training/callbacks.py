"""What happens at the end of every step and epoch: logging, validation, checkpoints, metrics.

Only rank 0 writes (checkpoints, ``metrics.jsonl``); every rank logs to its own stream. Under
data parallelism the BatchNorm statistics are averaged over ranks before validation and saving.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from typing import Callable, Optional

import numpy as np
from mindspore.train import Callback

from ..run_dir import RunDir

_logger = logging.getLogger(__name__)

# Per-rank running statistics: BatchNorm's, and the QAT activation observers' min/max EMAs.
BN_STATISTICS = ("moving_mean", "moving_variance", ".min_val", ".max_val")


class SyncBatchNormStatistics(Callback):
    """Average the BatchNorm moving statistics (and QAT observer ranges) over the ranks at every epoch end.

    Data parallelism all-reduces gradients, so trainable weights stay identical on every rank, but
    each rank's BatchNorm keeps the running mean/variance of its own shard. Averaging them (timm's
    ``--dist-bn reduce``) before validation and checkpointing makes every rank hold the same
    network, so rank 0's checkpoint and validation stand for all of them. Must run before the
    callback that validates and saves. EMA shadows of the statistics (``ema.*``) are averaged too.

    Args:
        cell: the Cell whose parameters are averaged (the train step: network, EMA, optimizer).
        group_size: number of ranks.
    """

    def __init__(self, cell, group_size: int) -> None:
        super().__init__()
        self.params = [p for p in cell.get_parameters() if p.name.endswith(BN_STATISTICS)]
        self.group_size = group_size

    def synchronize(self) -> None:
        """One all-reduce of all statistics, flattened: the same call on every rank."""
        if self.group_size <= 1 or not self.params:
            return
        import mindspore as ms
        from mindspore import ops

        arrays = [p.asnumpy() for p in self.params]
        flat = np.concatenate([a.reshape(-1).astype(np.float32) for a in arrays])
        # The primitive runs eagerly in graph and PyNative mode on CPU and Ascend (MindSpore 2.10);
        # CPU collectives only support sum.
        total = ops.AllReduce()(ms.Tensor(flat)).asnumpy() / self.group_size
        offset = 0
        for param, array in zip(self.params, arrays):
            part = total[offset : offset + array.size].reshape(array.shape).astype(array.dtype)
            param.set_data(ms.Tensor(part))
            offset += array.size

    def on_train_epoch_end(self, run_context):
        self.synchronize()


@dataclasses.dataclass(frozen=True)
class MonitorPlan:
    """When the monitor logs, validates and saves: the recipe's intervals and limits."""

    num_epochs: int
    val_interval: int = 1
    ckpt_interval: int = 1
    keep_checkpoint_max: int = 10
    log_interval: int = 100
    sink_mode: bool = False
    save_policy: str = "latest_k"  # or top_k: keep the best by val top-1 (run_dir.SAVE_POLICIES)
    # What identifies the run (recipe keys that fix the LR position, the data order and the
    # parameters), saved in every checkpoint for the resume check.
    recipe: str = ""


class TrainMonitor(Callback):
    """Per-epoch log line, validation, metrics row and checkpoint; a progress bar on a terminal.

    Args:
        run_dir: where rank 0 writes (a :class:`~mindcv_mobile.run_dir.RunDir`); ``None`` on other ranks.
        model_name: prefix of checkpoint files.
        lr_schedule: the per-step LR list (for logging the LR in use).
        global_batch: images per step over all devices (for img/s).
        plan: epochs, intervals and checkpoint limits (:class:`MonitorPlan`).
        evaluate: ``evaluate() -> dict`` of metrics, or None to skip validation.
        save_params: ``() -> Cell`` of what to save (network, optimizer state, EMA).
        history, kept, best_top1: what the run this one resumes had written, so metrics.jsonl and
            checkpoint rotation continue across restarts.
    """

    def __init__(
        self,
        run_dir: Optional[RunDir],
        model_name: str,
        lr_schedule,
        global_batch: int,
        plan: MonitorPlan,
        evaluate: Optional[Callable[[], dict]] = None,
        save_params: Optional[Callable[[], object]] = None,
        history: Optional[list] = None,
        kept: Optional[list] = None,
        best_top1: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.run_dir, self.model_name, self.lr_schedule = run_dir, model_name, lr_schedule
        self.global_batch, self.plan = global_batch, plan
        self.evaluate, self.save_params = evaluate, save_params
        self.best_top1 = best_top1
        self.best_path: Optional[str] = None
        self.last_metrics: dict = {}
        self.history: list = list(history or [])
        self.kept: list = list(kept or [])
        self.skipped_steps = 0
        # Epochs done before the current Model.train call, when the trainer calls it once per epoch.
        self.epoch_offset = 0
        self._bar = None
        self._train_start = time.time()
        self._epoch_start = 0.0
        self._losses: list = []

    # ---------------------------------------------------------------- helpers
    def _lr_at(self, step: int) -> float:
        return float(self.lr_schedule[min(max(step, 0), len(self.lr_schedule) - 1)])

    def _epoch(self, cb) -> int:
        return self.epoch_offset + cb.cur_epoch_num

    def _global_step(self, cb) -> int:
        return (self._epoch(cb) - 1) * cb.batch_num + (cb.cur_step_num - 1) % cb.batch_num + 1

    @staticmethod
    def _outputs(outputs) -> tuple:
        """(loss, overflow, loss scale) from the train step's outputs; a bare loss when the step does
        not check overflow (CPU, fixed loss scale)."""

        def value(x):
            return np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x)

        if isinstance(outputs, (tuple, list)):
            overflow = bool(value(outputs[1]).any()) if len(outputs) > 1 else False
            scale = float(value(outputs[2]).reshape(-1)[0]) if len(outputs) > 2 else None
            return float(value(outputs[0]).mean()), overflow, scale
        return float(value(outputs).mean()), False, None

    # ---------------------------------------------------------------- callbacks

    def on_train_epoch_begin(self, run_context):
        self._epoch_start = time.time()
        self._losses = []
        cb = run_context.original_args()
        if not self.plan.sink_mode and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=cb.batch_num,
                desc=f"epoch {self._epoch(cb)}/{self.plan.num_epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        loss, overflow, scale = self._outputs(cb.net_outputs)
        if overflow:
            # Dynamic loss scaling (Ascend/GPU): the update was skipped and the scale lowered.
            self.skipped_steps += 1
            _logger.warning(
                "step %d: gradient overflow, update skipped; loss scale now %g (%d skipped so far)",
                self._global_step(cb),
                scale or float("nan"),
                self.skipped_steps,
            )
            return
        self._losses.append(loss)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at epoch {self._epoch(cb)} step {self._global_step(cb)}; stopping. Last good "
                f"checkpoint: {self.last_checkpoint() or 'none saved yet'}. Lower lr or check the data"
            )
        if self.plan.sink_mode:
            return
        step_in_epoch = (cb.cur_step_num - 1) % cb.batch_num + 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self._lr_at(self._global_step(cb) - 1):.5f}")
        elif step_in_epoch % self.plan.log_interval == 0 and step_in_epoch != cb.batch_num:
            _logger.info(
                "epoch [%d/%d] step [%d/%d] loss %.4f lr %.6f",
                self._epoch(cb),
                self.plan.num_epochs,
                step_in_epoch,
                cb.batch_num,
                loss,
                self._lr_at(self._global_step(cb) - 1),
            )

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        epoch, steps = self._epoch(cb), cb.batch_num
        seconds = time.time() - self._epoch_start
        loss = float(np.mean(self._losses)) if self._losses else float("nan")
        step = self._global_step(cb)
        row = {
            "epoch": epoch,
            "global_step": step,
            "loss": round(loss, 6),
            # Step losses in that mean: every step, or 1 in sink mode (MindSpore returns one per sink).
            "loss_steps": len(self._losses),
            "lr": self._lr_at(step - 1),
            "epoch_time_s": round(seconds, 3),
            "ms_per_step": round(1000 * seconds / steps, 2),
            "img_per_s": round(self.global_batch * steps / seconds, 2),
        }
        if self.evaluate is not None and (epoch % self.plan.val_interval == 0 or epoch == self.plan.num_epochs):
            t0 = time.time()
            metrics = self.evaluate()
            row.update({k: (None if v is None else round(float(v), 6)) for k, v in metrics.items()})
            row["val_time_s"] = round(time.time() - t0, 3)
        self.last_metrics = row
        self.history.append(row)
        top1 = row.get("Top_1_Accuracy")
        val = ""
        if "Top_1_Accuracy" in row:
            top5 = row.get("Top_5_Accuracy")
            val = (
                f", val top-1 {100 * top1:.2f}%"
                + (f" top-5 {100 * top5:.2f}%" if top5 is not None else "")
                + f" loss {row.get('val_loss', float('nan')):.4f}"
            )
        _logger.info(
            "epoch [%d/%d] steps %d loss %.4f lr %.6f epoch-time %.1fs %.1f ms/step %.1f img/s%s",
            epoch,
            self.plan.num_epochs,
            steps,
            loss,
            row["lr"],
            seconds,
            row["ms_per_step"],
            row["img_per_s"],
            val,
        )
        if self.run_dir is None:
            return
        self.run_dir.write_metrics(self.history)
        is_best = top1 is not None and (self.best_top1 is None or top1 > self.best_top1)
        if is_best:
            self.best_top1 = top1
        if epoch % self.plan.ckpt_interval == 0 or epoch == self.plan.num_epochs or is_best:
            self._save(
                epoch,
                step,
                periodic=epoch % self.plan.ckpt_interval == 0 or epoch == self.plan.num_epochs,
                is_best=is_best,
            )

    def summary(self) -> str:
        """The run's closing line (logged by the trainer once, after its last Model.train call)."""
        minutes = (time.time() - self._train_start) / 60
        best = f", best val top-1 {100 * self.best_top1:.2f}% ({self.best_path})" if self.best_top1 is not None else ""
        skipped = f", {self.skipped_steps} overflow steps skipped" if self.skipped_steps else ""
        return f"training done in {minutes:.1f} min{best}{skipped}"

    # ---------------------------------------------------------------- checkpoints
    def last_checkpoint(self) -> Optional[str]:
        pointer = self.run_dir.pointer() if self.run_dir is not None else None
        return pointer.get("path") if pointer else None

    def _save(self, epoch: int, step: int, periodic: bool, is_best: bool) -> None:
        state = {
            "epoch_num": epoch,
            "step_num": step,
            "train_state.best_top1": -1.0 if self.best_top1 is None else float(self.best_top1),
            "train_state.recipe": self.plan.recipe,
        }
        params = self.save_params()
        if periodic:
            self.kept = self.run_dir.save_epoch_checkpoint(
                params,
                self.model_name,
                epoch,
                step,
                state,
                self.kept,
                self.plan.keep_checkpoint_max,
                policy=self.plan.save_policy,
                score=self.last_metrics.get("Top_1_Accuracy"),
            )
        if is_best:
            self.best_path = self.run_dir.save_best(params, self.model_name, state)
