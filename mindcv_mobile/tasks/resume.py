"""Continuing a run: which checkpoint, whether it fits this run, and what it restores (weights,
optimizer state, LR position, epoch, metrics history, kept checkpoints)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import mindspore as ms

from ..config import Config
from ..models import load_checkpoint
from ..run_dir import RunDir, resume_changes

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Resumed:
    epoch: int = 0
    best_top1: Optional[float] = None
    history: list = dataclasses.field(default_factory=list)
    kept: list = dataclasses.field(default_factory=list)


def _resume_from(cfg: Config, run: RunDir) -> Optional[str]:
    """The checkpoint this run continues from (``resume``, or ``ckpt_path`` with ``resume_opt``)."""
    if cfg.resume:
        return run.resume_path() if cfg.resume == "auto" else cfg.resume
    return cfg.ckpt_path if cfg.ckpt_path and cfg.resume_opt else None


def _check_resumable(path: str, state: dict, train_step, changes: list) -> None:
    """The toolkit's one-line refusals, before MindSpore's loader sees a checkpoint that cannot fit."""
    if changes:
        raise ValueError(
            f"cannot resume from {path}: {', '.join(changes)} (these fix the LR position, the data order or the "
            f"parameters); set them back, or start a new run without --resume"
        )
    params = {p.name: p for p in train_step.get_parameters()}
    for name, value in state.items():
        if name in params and tuple(params[name].shape) != tuple(value.shape):
            raise ValueError(
                f"cannot resume from {path}: {name} has shape {tuple(value.shape)} there and "
                f"{tuple(params[name].shape)} in this run; is it a checkpoint of another model or num_classes?"
            )


def resume(cfg: Config, run: RunDir, train_step, optimizer, recipe: str) -> Resumed:
    """Restore weights, optimizer state, LR position (optimizer global_step) and epoch."""
    path = _resume_from(cfg, run)
    if path is None:
        return Resumed()
    state = load_checkpoint(path)
    changes = resume_changes(path, state, recipe)
    # The LR schedule is recomputed from the recipe (epoch_size may have grown); its position
    # is the optimizer's global_step, which is restored.
    state = {k: v for k, v in state.items() if k not in ("learning_rate", "train_state.recipe")}
    _check_resumable(path, state, train_step, changes)
    missing, _ = ms.load_param_into_net(train_step, state, strict_load=False)
    missing = [m for m in missing if m != "learning_rate" and (not m.startswith("ema.") or cfg.ema)]
    if missing:
        raise ValueError(
            f"cannot resume from {path}: it lacks {len(missing)} parameters of this run "
            f"({missing[:3]}...); is it a checkpoint of another model or recipe?"
        )
    out = Resumed(epoch=int(state["epoch_num"].asnumpy()) if "epoch_num" in state else 0)
    if "train_state.best_top1" in state and float(state["train_state.best_top1"].asnumpy()) >= 0:
        out.best_top1 = float(state["train_state.best_top1"].asnumpy())
    if out.epoch >= cfg.epoch_size:
        raise ValueError(
            f"{path} is from epoch {out.epoch}; epoch_size {cfg.epoch_size} leaves nothing to "
            f"train (raise --epoch_size)"
        )
    if os.path.abspath(os.path.dirname(path)) == run.path:
        # Same run directory: its metrics rows up to the checkpoint's epoch continue (rows a
        # killed run wrote after its last checkpoint are dropped), as does checkpoint rotation.
        out.history = [r for r in run.read_metrics() if r["epoch"] <= out.epoch]
        out.kept = run.kept_checkpoints()
    _logger.info(
        "resumed from %s: epoch %d, global step %d",
        path,
        out.epoch,
        int(optimizer.global_step.asnumpy().reshape(-1)[0]),
    )
    return out
