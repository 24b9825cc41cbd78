"""What happens at the end of every step and epoch: logging, validation, checkpoints, metrics.

Only rank 0 writes (checkpoints, ``metrics.jsonl``); every rank logs to its own stream. Under
data parallelism the BatchNorm statistics are averaged over ranks before validation and saving.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Optional

import numpy as np
from mindspore.train import Callback

from ..run_dir import RunDir
from .progress import Progress, format_eta

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
        sinks_per_epoch: MindSpore epochs per real epoch (device sinks, see :class:`MonitorPlan`).
    """

    def __init__(self, cell, group_size: int, sinks_per_epoch: int = 1) -> None:
        super().__init__()
        self.params = [p for p in cell.get_parameters() if p.name.endswith(BN_STATISTICS)]
        self.group_size, self.sinks_per_epoch = group_size, sinks_per_epoch

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
        if run_context.original_args().cur_epoch_num % self.sinks_per_epoch == 0:
            self.synchronize()


@dataclasses.dataclass(frozen=True)
class MonitorPlan:
    """When the monitor logs, validates and saves: the recipe's intervals and limits."""

    num_epochs: int
    val_interval: int = 1
    ckpt_interval: int = 1
    keep_checkpoint_max: int = 10
    log_interval: int = 100
    # Dataset sink mode on Ascend/GPU with sink_size = steps per epoch / sinks_per_epoch: MindSpore
    # counts every sink as an epoch (its ``epoch`` argument is epochs x sinks_per_epoch) and calls
    # the step callback once per sink; the monitor maps them back to real epochs and steps.
    sinks_per_epoch: int = 1
    save_policy: str = "latest_k"  # or top_k: keep the best by val top-1 (run_dir.SAVE_POLICIES)
    # What identifies the run (recipe keys that fix the LR position, the data order and the
    # parameters), saved in every checkpoint for the resume check.
    recipe: str = ""

    @classmethod
    def from_recipe(cls, cfg, sinks_per_epoch: int = 1, recipe: str = "") -> "MonitorPlan":
        """The plan a recipe's keys ask for; top_k ranks by val top-1, so without validation it is latest_k."""
        return cls(
            cfg.epoch_size,
            val_interval=cfg.val_interval,
            ckpt_interval=cfg.ckpt_save_interval,
            keep_checkpoint_max=cfg.keep_checkpoint_max,
            log_interval=cfg.log_interval,
            sinks_per_epoch=sinks_per_epoch,
            save_policy=cfg.ckpt_save_policy if cfg.val_while_train else "latest_k",
            recipe=recipe,
        )


class TrainMonitor(Callback):
    """Progress inside the epochs, and per epoch: log line, validation, metrics row, checkpoint.

    Inside an epoch: a tqdm bar on a terminal, else a line every ``log_interval`` steps, both with
    ETAs (:class:`~mindcv_mobile.training.progress.Progress`); with a TensorBoard writer, the loss,
    LR and loss scale every ``log_interval`` steps and the epoch's row at its end.

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
        tensorboard: a :class:`~mindcv_mobile.training.tensorboard.ScalarWriter` (rank 0), or None.
        progress: the bar/log lines (default: a terminal decides; tests pass their own clock).
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
        tensorboard=None,
        progress: Optional[Progress] = None,
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
        self.tensorboard = tensorboard
        self.progress = progress or Progress(plan.num_epochs, plan.log_interval, global_batch)
        self._train_start = time.time()
        self._epoch_start = 0.0
        self._losses: list = []

    # ---------------------------------------------------------------- helpers
    def _lr_at(self, step: int) -> float:
        return float(self.lr_schedule[min(max(step, 0), len(self.lr_schedule) - 1)])

    def _ms_epoch(self, cb) -> int:
        """MindSpore's epoch number: a real epoch, or one device sink of it."""
        return self.epoch_offset + cb.cur_epoch_num

    def _epoch(self, cb) -> int:
        return (self._ms_epoch(cb) - 1) // self.plan.sinks_per_epoch + 1

    def _steps_per_epoch(self, cb) -> int:
        return cb.batch_num * self.plan.sinks_per_epoch

    def _global_step(self, cb) -> int:
        """Batches done in the run, after the step (or sink) that just ended."""
        return (self._ms_epoch(cb) - 1) * cb.batch_num + (cb.cur_step_num - 1) % cb.batch_num + 1

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
        cb = run_context.original_args()
        if (self._ms_epoch(cb) - 1) % self.plan.sinks_per_epoch:
            return  # a later sink of the same epoch
        self._epoch_start = time.time()
        self._losses = []
        self.progress.start_epoch(self._epoch(cb), self._steps_per_epoch(cb))

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        loss, overflow, scale = self._outputs(cb.net_outputs)
        step = self._global_step(cb)
        lr = self._lr_at(step - 1)
        if overflow:
            # Dynamic loss scaling (Ascend/GPU): the update was skipped and the scale lowered.
            self.skipped_steps += 1
            _logger.warning(
                "step %d: gradient overflow, update skipped; loss scale now %g (%d skipped so far)",
                step,
                scale or float("nan"),
                self.skipped_steps,
            )
        else:
            self._losses.append(loss)
            if not math.isfinite(loss):
                self.progress.close()
                raise FloatingPointError(
                    f"loss is {loss} at epoch {self._epoch(cb)} step {step}; stopping. Last good "
                    f"checkpoint: {self.last_checkpoint() or 'none saved yet'}. Lower lr or check the data"
                )
        in_epoch = step - (self._epoch(cb) - 1) * self._steps_per_epoch(cb)
        interval_loss = self.progress.advance(in_epoch, None if overflow else loss, lr)
        if interval_loss is not None and self.tensorboard is not None:
            self.tensorboard.scalars({"train/loss": interval_loss, "train/lr": lr, "train/loss_scale": scale}, step)

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        if self._ms_epoch(cb) % self.plan.sinks_per_epoch:
            return  # the epoch goes on in the next sink
        self.progress.end_epoch()
        epoch, steps = self._epoch(cb), self._steps_per_epoch(cb)
        seconds = max(time.time() - self._epoch_start, 1e-6)
        loss = float(np.mean(self._losses)) if self._losses else float("nan")
        step = self._global_step(cb)
        row = {
            "epoch": epoch,
            "global_step": step,
            "loss": round(loss, 6),
            # Step losses in that mean: every step, or one per device sink (MindSpore returns the
            # last step's loss of each sink).
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
        self._epoch_scalars(row)
        top1 = row.get("Top_1_Accuracy")
        val = ""
        if "Top_1_Accuracy" in row:
            top5 = row.get("Top_5_Accuracy")
            val = (
                f", val top-1 {100 * top1:.2f}%"
                + (f" top-5 {100 * top5:.2f}%" if top5 is not None else "")
                + f" loss {row.get('val_loss', float('nan')):.4f}"
            )
        eta = f", run ETA {format_eta(self.progress.run_eta())}" if epoch < self.plan.num_epochs else ""
        _logger.info(
            "epoch [%d/%d] steps %d loss %.4f lr %.6f epoch-time %.1fs %.1f ms/step %.1f img/s%s%s",
            epoch,
            self.plan.num_epochs,
            steps,
            loss,
            row["lr"],
            seconds,
            row["ms_per_step"],
            row["img_per_s"],
            val,
            eta,
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

    def on_train_end(self, run_context):
        self.progress.close()

    def close(self) -> None:
        """Close the progress bar and the event file (the trainer calls it once, also after a failure)."""
        self.progress.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
            _logger.info("TensorBoard: tensorboard --logdir %s", self.tensorboard.logdir)
            self.tensorboard = None

    def _epoch_scalars(self, row: dict) -> None:
        """The epoch's row as TensorBoard scalars at its last global step, then a flush."""
        if self.tensorboard is None:
            return
        names = {
            "train/epoch_loss": "loss",
            "val/top1": "Top_1_Accuracy",
            "val/top5": "Top_5_Accuracy",
            "val/loss": "val_loss",
            "perf/img_per_s": "img_per_s",
            "perf/epoch_time_s": "epoch_time_s",
        }
        self.tensorboard.scalars({tag: row.get(key) for tag, key in names.items()}, row["global_step"])
        self.tensorboard.flush()

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
