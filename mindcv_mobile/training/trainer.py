"""``train(cfg)``: a recipe in, a trained run directory out.

The run directory (``ckpt_save_dir``) holds the resolved ``config.yaml``, ``classes.json``,
``train.log``, ``metrics.jsonl`` (one row per epoch), epoch checkpoints with full training
state, ``<model>-best.ckpt`` (best val top-1) and ``last_checkpoint.json`` (what ``--resume
auto`` continues from).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..config import Config, save_config
from ..data import class_names, create_dataset, create_loader
from ..evaluation import build_eval_loader, build_transforms, eval_metrics, named_metrics
from ..models import create_model, load_checkpoint
from ..quant import quantize_from_config
from ..runtime import Runtime, data_workers, init_runtime, resolve_sink_mode, setup_logging
from .callbacks import (LAST_CHECKPOINT, METRICS_FILE, SyncBatchNormStatistics, TrainMonitor, read_jsonl,
                        write_json_atomic)
from .ema import EMA
from .loss import create_loss
from .lr import create_lr_schedule
from .optim import create_optimizer
from .train_step import TrainStep, resolve_precision

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    run_dir: str
    epochs: int
    history: list
    best_top1: Optional[float]
    best_checkpoint: Optional[str]
    last_checkpoint: Optional[str]


def _workers(cfg: Config) -> int:
    return data_workers(cfg.num_parallel_workers)


def _check_writable(run_dir: str) -> None:
    """Fail before any work when the run directory cannot take checkpoints."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(f"ckpt_save_dir {run_dir} is not writable ({err.strerror or err}); "
                              f"pass --ckpt_save_dir DIR for a folder you can write to") from None


def _resume_path(cfg: Config) -> str:
    if cfg.resume != "auto":
        return cfg.resume
    pointer = os.path.join(cfg.ckpt_save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(pointer):
        raise FileNotFoundError(f"--resume auto: no {LAST_CHECKPOINT} in {cfg.ckpt_save_dir}; nothing to resume "
                                f"(start without --resume, or pass a checkpoint path)")
    with open(pointer, encoding="utf-8") as f:
        return json.load(f)["path"]


def train(cfg: Config, rt: Optional[Runtime] = None) -> RunResult:
    """Train ``cfg.model`` on ``cfg.data_dir`` as the recipe says; return what the run produced."""
    rt = rt or init_runtime(cfg)
    run_dir = os.path.abspath(cfg.ckpt_save_dir)
    if rt.is_main:
        _check_writable(run_dir)
        setup_logging(os.path.join(run_dir, "train.log"), rt.rank)
    else:
        setup_logging(None, rt.rank)
    # init_runtime logged this before the handlers above existed.
    _logger.info("runtime: %s", rt.describe())
    precision = resolve_precision(cfg, rt.device)

    # ---- data: every rank reads its own shard of the training split
    classes = class_names(cfg.data_dir, cfg.train_split, cfg.dataset)
    if len(classes) > cfg.num_classes:
        raise ValueError(f"{cfg.data_dir}/{cfg.train_split} has {len(classes)} classes but num_classes is "
                         f"{cfg.num_classes}; set --num_classes {len(classes)}")

    def train_set(epoch: int):
        return create_dataset(cfg.dataset, cfg.data_dir, cfg.train_split, shuffle=cfg.shuffle,
                              num_samples=cfg.num_samples, num_shards=rt.group_size if rt.distribute else None,
                              shard_id=rt.rank if rt.distribute else None, num_parallel_workers=_workers(cfg),
                              seed=cfg.seed, epoch=epoch)

    def train_loader(epoch: int):
        """The pipeline of one epoch. Its shuffle order and augmentation draws depend only on
        (seed, epoch), so a resumed run sees exactly what an uninterrupted one would have."""
        ms.dataset.config.set_seed(cfg.seed + epoch)
        return create_loader(train_set(epoch), cfg.batch_size, drop_remainder=cfg.drop_remainder, is_training=True,
                             transform=build_transforms(cfg, True), num_classes=cfg.num_classes, mixup=cfg.mixup,
                             cutmix=cfg.cutmix, mixup_prob=cfg.mixup_prob, num_parallel_workers=_workers(cfg))

    # Counted from the shard size, not from a batched pipeline: MindSpore would run one through
    # the sampler to count its batches.
    shard_size = train_set(0).get_dataset_size()
    if cfg.drop_remainder and cfg.batch_size > shard_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than this process's {shard_size} training images "
                         f"with drop_remainder: True; use --batch_size {shard_size} or less, or --drop_remainder False")
    steps_per_epoch = shard_size // cfg.batch_size if cfg.drop_remainder else -(-shard_size // cfg.batch_size)
    val_loader = build_eval_loader(cfg) if cfg.val_while_train else None

    # ---- model, loss, schedule, optimizer
    net = create_model(cfg.model, num_classes=cfg.num_classes, pretrained=cfg.pretrained,
                       checkpoint_path=cfg.ckpt_path or None, in_channels=cfg.in_channels, drop_rate=cfg.drop_rate,
                       drop_path_rate=cfg.drop_path_rate)
    if cfg.quant:  # QAT MobileNetV2 on the float weights just loaded (mindcv_mobile/quant)
        net = quantize_from_config(net, cfg)
    if precision.amp_level != "O0":
        net = ms.amp.auto_mixed_precision(net, precision.amp_level)
    loss_fn = create_loss(cfg.loss, label_smoothing=cfg.label_smoothing, reduction=cfg.reduction)
    lr_schedule = create_lr_schedule(
        cfg.scheduler, lr=cfg.lr, steps_per_epoch=steps_per_epoch, num_epochs=cfg.epoch_size, min_lr=cfg.min_lr,
        warmup_epochs=cfg.warmup_epochs, warmup_factor=cfg.warmup_factor, decay_epochs=cfg.decay_epochs,
        decay_rate=cfg.decay_rate, multi_step_decay_milestones=cfg.multi_step_decay_milestones,
        lr_epoch_stair=cfg.lr_epoch_stair, num_cycles=cfg.num_cycles, cycle_decay=cfg.cycle_decay,
        power=cfg.poly_power)
    optimizer = create_optimizer(net.trainable_params(), opt=cfg.opt, lr=lr_schedule, weight_decay=cfg.weight_decay,
                                 momentum=cfg.momentum, nesterov=cfg.use_nesterov,
                                 weight_decay_filter=cfg.weight_decay_filter, loss_scale=1.0, eps=cfg.eps)
    ema = EMA(net, decay=cfg.ema_decay) if cfg.ema else None
    train_step = TrainStep(nn.WithLossCell(net, loss_fn), optimizer, precision, clip_grad=cfg.clip_grad,
                           clip_value=cfg.clip_value, ema=ema)

    # ---- resume: weights, optimizer state, LR position (optimizer global_step), epoch
    start_epoch, best_top1, history, kept = 0, None, [], []
    if cfg.resume or (cfg.ckpt_path and cfg.resume_opt):
        path = _resume_path(cfg) if cfg.resume else cfg.ckpt_path
        state = load_checkpoint(path)
        # The LR schedule is recomputed from the recipe (epoch_size may have grown); its position
        # is the optimizer's global_step, which is restored.
        state.pop("learning_rate", None)
        missing, _ = ms.load_param_into_net(train_step, state, strict_load=False)
        missing = [m for m in missing if m != "learning_rate"]
        missing = [m for m in missing if not m.startswith("ema.") or cfg.ema]
        if missing:
            raise ValueError(f"cannot resume from {path}: it lacks {len(missing)} parameters of this run "
                             f"({missing[:3]}...); is it a checkpoint of another model or recipe?")
        start_epoch = int(state["epoch_num"].asnumpy()) if "epoch_num" in state else 0
        if "train_state.best_top1" in state and float(state["train_state.best_top1"].asnumpy()) >= 0:
            best_top1 = float(state["train_state.best_top1"].asnumpy())
        if start_epoch >= cfg.epoch_size:
            raise ValueError(f"{path} is from epoch {start_epoch}; epoch_size {cfg.epoch_size} leaves nothing to "
                             f"train (raise --epoch_size)")
        if os.path.abspath(os.path.dirname(path)) == run_dir:
            # Same run directory: its metrics rows up to the checkpoint's epoch continue (rows a
            # killed run wrote after its last checkpoint are dropped), as does checkpoint rotation.
            history = [r for r in read_jsonl(os.path.join(run_dir, METRICS_FILE)) if r["epoch"] <= start_epoch]
            pointer = os.path.join(run_dir, LAST_CHECKPOINT)
            if os.path.isfile(pointer):
                with open(pointer, encoding="utf-8") as f:
                    kept = [k for k in json.load(f).get("kept", []) if os.path.isfile(k)]
        _logger.info("resumed from %s: epoch %d, global step %d", path, start_epoch,
                     int(optimizer.global_step.asnumpy().reshape(-1)[0]))

    if rt.is_main:
        save_config(cfg, os.path.join(run_dir, "config.yaml"))
        write_json_atomic(os.path.join(run_dir, "classes.json"), classes)

    # Per-image eval loss, averaged per image: the same number validate.py reports.
    eval_net = nn.WithEvalCell(net, create_loss(cfg.loss, label_smoothing=cfg.label_smoothing, reduction="none"))
    model = ms.train.Model(train_step, eval_network=eval_net, metrics=eval_metrics(cfg.num_classes),
                           eval_indexes=[0, 1, 2])

    def evaluate() -> dict:
        if ema is not None:
            ema.swap_in()
        try:
            return named_metrics(model.eval(val_loader, dataset_sink_mode=False))
        finally:
            if ema is not None:
                ema.swap_out()

    sink = resolve_sink_mode(cfg, rt.device)
    global_batch = cfg.batch_size * rt.group_size
    monitor = TrainMonitor(
        run_dir if rt.is_main else None, cfg.model, lr_schedule, global_batch, cfg.epoch_size,
        evaluate=evaluate if val_loader is not None else None, val_interval=cfg.val_interval,
        ckpt_interval=cfg.ckpt_save_interval, keep_checkpoint_max=cfg.keep_checkpoint_max,
        save_params=lambda: train_step, log_interval=cfg.log_interval, sink_mode=sink, history=history, kept=kept,
        best_top1=best_top1)
    params = sum(int(np.prod(p.shape)) for p in net.get_parameters())
    _logger.info("model %s: %.2fM params (BN statistics included), %d classes; data %s/%s: %d steps/epoch of "
                 "batch %d x %d device(s) = global batch %d; lr %g (%s, warmup %g epochs), %s %s; %s; sink mode %s",
                 cfg.model, params / 1e6, cfg.num_classes, cfg.data_dir, cfg.train_split, steps_per_epoch,
                 cfg.batch_size, rt.group_size, global_batch, cfg.lr, cfg.scheduler, cfg.warmup_epochs, cfg.opt,
                 f"wd {cfg.weight_decay:g} ({cfg.weight_decay_filter})", precision.describe(), sink)
    callbacks = [monitor]
    if rt.distribute and rt.group_size > 1:
        _logger.info("data parallel over %d ranks: lr %g is used as set, not rescaled for global batch %d (linear "
                     "rule: lr x new global batch / the recipe's global batch); BatchNorm statistics averaged over "
                     "ranks every epoch", rt.group_size, cfg.lr, global_batch)
        callbacks.insert(0, SyncBatchNormStatistics(train_step, rt.group_size))
    if rt.is_main:
        _logger.info("run directory: %s", run_dir)
    try:
        if sink:
            # One pipeline for all epochs: a new dataset per epoch would rebuild the device's data
            # channel. Data order still follows (seed, epoch); augmentation draws do not restart.
            model.train(cfg.epoch_size, train_loader(start_epoch), callbacks=callbacks, dataset_sink_mode=True,
                        initial_epoch=start_epoch)
        else:
            for epoch in range(start_epoch, cfg.epoch_size):
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
    return RunResult(run_dir=run_dir, epochs=cfg.epoch_size, history=monitor.history, best_top1=monitor.best_top1,
                     best_checkpoint=monitor.best_path, last_checkpoint=monitor.last_checkpoint())
