"""``train(cfg)``: a recipe in, a trained run directory out (see ``run_dir.py`` for what it holds).

The loop only: every object it runs comes from ``build.py``, every file it writes goes through
``run_dir.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import mindspore as ms
import numpy as np

from ..build import (
    build_eval_loader,
    build_eval_network,
    build_lr_schedule,
    build_model,
    build_optimizer,
    build_precision,
    build_train_dataset,
    build_train_loader,
    build_train_step,
)
from ..config import Config
from ..data import class_names
from ..evaluation import eval_metrics, named_metrics
from ..models import load_checkpoint
from ..run_dir import LOG, RunDir
from ..runtime import Runtime, init_runtime, resolve_sink_mode, setup_logging
from ..training.callbacks import MonitorPlan, SyncBatchNormStatistics, TrainMonitor

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    run_dir: str
    epochs: int
    history: list
    best_top1: Optional[float]
    best_checkpoint: Optional[str]
    last_checkpoint: Optional[str]


@dataclasses.dataclass
class _Resumed:
    epoch: int = 0
    best_top1: Optional[float] = None
    history: list = dataclasses.field(default_factory=list)
    kept: list = dataclasses.field(default_factory=list)


def _resume(cfg: Config, run: RunDir, train_step, optimizer) -> _Resumed:
    """Restore weights, optimizer state, LR position (optimizer global_step) and epoch."""
    if not (cfg.resume or (cfg.ckpt_path and cfg.resume_opt)):
        return _Resumed()
    path = (run.resume_path() if cfg.resume == "auto" else cfg.resume) if cfg.resume else cfg.ckpt_path
    state = load_checkpoint(path)
    # The LR schedule is recomputed from the recipe (epoch_size may have grown); its position
    # is the optimizer's global_step, which is restored.
    state.pop("learning_rate", None)
    missing, _ = ms.load_param_into_net(train_step, state, strict_load=False)
    missing = [m for m in missing if m != "learning_rate" and (not m.startswith("ema.") or cfg.ema)]
    if missing:
        raise ValueError(
            f"cannot resume from {path}: it lacks {len(missing)} parameters of this run "
            f"({missing[:3]}...); is it a checkpoint of another model or recipe?"
        )
    out = _Resumed(epoch=int(state["epoch_num"].asnumpy()) if "epoch_num" in state else 0)
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


def train(cfg: Config, rt: Optional[Runtime] = None) -> RunResult:
    """Train ``cfg.model`` on ``cfg.data_dir`` as the recipe says; return what the run produced."""
    rt = rt or init_runtime(cfg)
    run = RunDir(cfg.ckpt_save_dir)
    if rt.is_main:
        run.check_writable()
        setup_logging(run.file(LOG), rt.rank)
    else:
        setup_logging(None, rt.rank)
    # init_runtime logged this before the handlers above existed.
    _logger.info("runtime: %s", rt.describe())
    precision = build_precision(cfg, rt.device)

    # ---- data: every rank reads its own shard of the training split
    classes = class_names(cfg.data_dir, cfg.train_split, cfg.dataset)
    if len(classes) > cfg.num_classes:
        raise ValueError(
            f"{cfg.data_dir}/{cfg.train_split} has {len(classes)} classes but num_classes is "
            f"{cfg.num_classes}; set --num_classes {len(classes)}"
        )

    def train_set(epoch: int):
        return build_train_dataset(cfg, epoch, rt.rank, rt.group_size, rt.distribute)

    def train_loader(epoch: int):
        """The pipeline of one epoch. Its shuffle order and augmentation draws depend only on
        (seed, epoch), so a resumed run sees exactly what an uninterrupted one would have."""
        ms.dataset.config.set_seed(cfg.seed + epoch)
        return build_train_loader(cfg, train_set(epoch))

    # Counted from the shard size, not from a batched pipeline: MindSpore would run one through
    # the sampler to count its batches.
    shard_size = train_set(0).get_dataset_size()
    if cfg.drop_remainder and cfg.batch_size > shard_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is larger than this process's {shard_size} training images "
            f"with drop_remainder: True; use --batch_size {shard_size} or less, or --drop_remainder False"
        )
    steps_per_epoch = shard_size // cfg.batch_size if cfg.drop_remainder else -(-shard_size // cfg.batch_size)
    val_loader = build_eval_loader(cfg) if cfg.val_while_train else None

    # ---- model, schedule, optimizer, train step
    net = build_model(cfg, cpu_kernels=rt.cpu_kernels, amp_level=precision.amp_level)
    lr_schedule = build_lr_schedule(cfg, steps_per_epoch)
    optimizer = build_optimizer(cfg, net, lr_schedule)
    train_step = build_train_step(cfg, net, optimizer, precision)
    ema = train_step.ema if train_step.use_ema else None
    resumed = _resume(cfg, run, train_step, optimizer)

    if rt.is_main:
        run.write_config(cfg)
        run.write_classes(classes)

    # Per-image eval loss, averaged per image: the same number validate.py reports.
    model = ms.train.Model(
        train_step,
        eval_network=build_eval_network(cfg, net),
        metrics=eval_metrics(cfg.num_classes),
        eval_indexes=[0, 1, 2],
    )

    def evaluate() -> dict:
        if ema is not None:
            ema.swap_in()
        try:
            return named_metrics(model.eval(val_loader, dataset_sink_mode=False))
        finally:
            if ema is not None:
                ema.swap_out()

    sink = resolve_sink_mode(cfg)
    global_batch = cfg.batch_size * rt.group_size
    plan = MonitorPlan(
        cfg.epoch_size,
        val_interval=cfg.val_interval,
        ckpt_interval=cfg.ckpt_save_interval,
        keep_checkpoint_max=cfg.keep_checkpoint_max,
        log_interval=cfg.log_interval,
        sink_mode=sink,
    )
    monitor = TrainMonitor(
        run if rt.is_main else None,
        cfg.model,
        lr_schedule,
        global_batch,
        plan,
        evaluate=evaluate if val_loader is not None else None,
        save_params=lambda: train_step,
        history=resumed.history,
        kept=resumed.kept,
        best_top1=resumed.best_top1,
    )
    params = sum(int(np.prod(p.shape)) for p in net.get_parameters())
    _logger.info(
        "model %s: %.2fM params (BN statistics included), %d classes; data %s/%s: %d steps/epoch of "
        "batch %d x %d device(s) = global batch %d; lr %g (%s, warmup %g epochs), %s %s; %s; sink mode %s",
        cfg.model,
        params / 1e6,
        cfg.num_classes,
        cfg.data_dir,
        cfg.train_split,
        steps_per_epoch,
        cfg.batch_size,
        rt.group_size,
        global_batch,
        cfg.lr,
        cfg.scheduler,
        cfg.warmup_epochs,
        cfg.opt,
        f"wd {cfg.weight_decay:g} ({cfg.weight_decay_filter})",
        precision.describe(),
        sink,
    )
    callbacks = [monitor]
    if rt.distribute and rt.group_size > 1:
        _logger.info(
            "data parallel over %d ranks: lr %g is used as set, not rescaled for global batch %d (linear "
            "rule: lr x new global batch / the recipe's global batch); BatchNorm statistics averaged over "
            "ranks every epoch",
            rt.group_size,
            cfg.lr,
            global_batch,
        )
        callbacks.insert(0, SyncBatchNormStatistics(train_step, rt.group_size))
    if rt.is_main:
        _logger.info("run directory: %s", run.path)
    try:
        if sink:
            # One pipeline for all epochs: a new dataset per epoch would rebuild the device's data
            # channel. Data order still follows (seed, epoch); augmentation draws do not restart.
            model.train(
                cfg.epoch_size,
                train_loader(resumed.epoch),
                callbacks=callbacks,
                dataset_sink_mode=True,
                initial_epoch=resumed.epoch,
            )
        else:
            for epoch in range(resumed.epoch, cfg.epoch_size):
                # One epoch per call (MindSpore sizes the pipeline's iterator by the call's epoch
                # count); the monitor numbers epochs and steps from the offset.
                monitor.epoch_offset = epoch
                model.train(1, train_loader(epoch), callbacks=callbacks, dataset_sink_mode=False)
    except Exception as err:
        if rt.distribute:
            # Named here because msrun reports only the pid of the first worker it sees exit.
            _logger.error("rank %d of %d failed: %s: %s", rt.rank, rt.group_size, type(err).__name__, err)
        raise
    _logger.info("%s", monitor.summary())
    return RunResult(
        run_dir=run.path,
        epochs=cfg.epoch_size,
        history=monitor.history,
        best_top1=monitor.best_top1,
        best_checkpoint=monitor.best_path,
        last_checkpoint=monitor.last_checkpoint(),
    )
