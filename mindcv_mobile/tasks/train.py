"""``train(cfg)``: a recipe in, a trained run directory out (see ``run_dir.py`` for what it holds).

The loop only: every object it runs comes from ``build.py``, every file it writes goes through
``run_dir.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Optional

import mindspore as ms

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
    eval_amp_level,
    fetch_dataset,
)
from ..config import Config
from ..data import class_names
from ..evaluation import eval_metrics, named_metrics
from ..models.summary import summarize
from ..plot import plot_runs
from ..run_dir import CONFIG, LOG, RunDir, recipe_record
from ..runtime import Runtime, enable_compile_cache, init_runtime, resolve_sink_mode, setup_logging
from ..training.callbacks import MonitorPlan, SyncBatchNormStatistics, TrainMonitor
from ..training.progress import log_sink_note, sink_plan
from ..training.tensorboard import TENSORBOARD_DIR, open_scalar_writer
from .resume import Resumed, resume

_logger = logging.getLogger(__name__)

CURVES = "curves.png"  # in the run directory, drawn from metrics.jsonl at the end of training


@dataclasses.dataclass
class RunResult:
    run_dir: str
    epochs: int
    history: list
    best_top1: Optional[float]
    best_checkpoint: Optional[str]
    last_checkpoint: Optional[str]


def _open_run(cfg: Config, rt: Runtime) -> tuple:
    """The run directory (rank 0 picks it), and a note on why it is not ``ckpt_save_dir``.

    A directory holding a previous run is never written over: a run that does not continue it
    goes to ``<dir>-1`` (``-2``, ...), as timm does, and says so."""
    run, note = RunDir(cfg.ckpt_save_dir), ""
    continued = cfg.resume or (cfg.ckpt_path if cfg.resume_opt else "")
    continues = cfg.resume == "auto" or (continued and os.path.dirname(os.path.abspath(continued)) == run.path)
    if rt.is_main and run.holds_run() and not continues:
        new = run.next_free()
        note = (
            f"{run.path} holds a previous run; this run writes to {new.path} (--resume auto continues the "
            f"previous one, --ckpt_save_dir picks another folder)"
        )
        run = new
    return run, note


def _check_classes(cfg: Config, classes: list) -> None:
    where = f"{cfg.data_dir}/{cfg.train_split}"
    if len(classes) < 2:
        raise ValueError(f"{where} has {len(classes)} class folder ({classes}): a classifier needs at least 2 classes")
    if len(classes) > cfg.num_classes:
        raise ValueError(
            f"{where} has {len(classes)} classes but num_classes is {cfg.num_classes}; set --num_classes {len(classes)}"
        )
    if len(classes) < cfg.num_classes:
        _logger.warning(
            "%s has %d class folders but num_classes is %d: outputs %d-%d are never a target (set --num_classes %d "
            "unless the head is meant to be larger)",
            where,
            len(classes),
            cfg.num_classes,
            len(classes),
            cfg.num_classes - 1,
            len(classes),
        )


def _notes(cfg: Config, rt: Runtime, precision, sink: bool, sinks_per_epoch: int = 1, sink_size: int = 0) -> None:
    """What the recipe asks for that this run does differently, said once at the start."""
    if cfg.ckpt_save_policy == "top_k" and not cfg.val_while_train:
        _logger.warning(
            "ckpt_save_policy top_k ranks checkpoints by val top-1, but val_while_train is False: the "
            "newest %d are kept (latest_k)",
            cfg.keep_checkpoint_max,
        )
    if cfg.val_while_train and eval_amp_level(cfg, rt.device) != precision.amp_level:
        _logger.warning(
            "validation during training runs the training network at amp %s; val_amp_level %s applies to validate.py",
            precision.amp_level,
            cfg.val_amp_level,
        )
    if cfg.gradient_accumulation_steps > 1:
        _logger.info(
            "gradient accumulation %d: one update per %d batches (%d images over all devices); the LR "
            "schedule counts batches, as mindcv's",
            cfg.gradient_accumulation_steps,
            cfg.gradient_accumulation_steps,
            cfg.gradient_accumulation_steps * cfg.batch_size * rt.group_size,
        )
    if sink:
        log_sink_note(rt.device, sinks_per_epoch, sink_size, cfg.log_interval)


def _write_curves(run: RunDir) -> None:
    """``curves.png`` from metrics.jsonl; without matplotlib, the plot module's line on how to get it."""
    try:
        _logger.info("training curves: %s", plot_runs([run.path], run.file(CURVES)))
    except ImportError as err:
        _logger.info("%s", err)


def train(cfg: Config, rt: Optional[Runtime] = None) -> RunResult:
    """Train ``cfg.model`` on ``cfg.data_dir`` as the recipe says; return what the run produced."""
    rt = rt or init_runtime(cfg)
    run, note = _open_run(cfg, rt)
    created = not os.path.isdir(run.path) or not os.listdir(run.path)
    if rt.is_main:
        run.check_writable()
        setup_logging(run.file(LOG), rt.rank)
    else:
        setup_logging(None, rt.rank)
    # init_runtime logged this before the handlers above existed.
    _logger.info("runtime: %s", rt.describe())
    if note:
        _logger.warning("%s", note)
    try:
        parts = _prepare(cfg, rt, run)
    except Exception:
        if rt.is_main and not os.path.exists(run.file(CONFIG)):
            # Nothing was trained: leave no run directory holding only the log of a failed start.
            setup_logging(None, rt.rank)
            if os.path.exists(run.file(LOG)):
                os.remove(run.file(LOG))
            if created and not os.listdir(run.path):
                os.rmdir(run.path)
        raise
    enable_compile_cache(cfg, rt, len(parts.lr_schedule))  # before the first graph compiles
    return _fit(cfg, rt, run, parts)


@dataclasses.dataclass
class _Prepared:
    """What the build phase made for the loop."""

    precision: object
    train_loader: Callable
    steps_per_epoch: int
    val_loader: object
    net: object
    lr_schedule: list
    train_step: object
    recipe: str
    resumed: Resumed


def _prepare(cfg: Config, rt: Runtime, run: RunDir) -> _Prepared:
    """Everything the loop runs, from the build step; the run directory's config and classes."""
    precision = build_precision(cfg, rt.device)
    # ---- data: every rank reads its own shard of the training split; labels come from its classes
    fetch_dataset(cfg, rt.is_main, rt.distribute and rt.group_size > 1)
    classes = class_names(cfg.data_dir, cfg.train_split, cfg.dataset)
    _check_classes(cfg, classes)

    def train_loader(epoch: int):
        """The pipeline of one epoch. Its shuffle order and augmentation draws depend only on
        (seed, epoch), so a resumed run sees exactly what an uninterrupted one would have."""
        ms.dataset.config.set_seed(cfg.seed + epoch)
        return build_train_loader(cfg, build_train_dataset(cfg, epoch, rt.rank, rt.group_size, rt.distribute))

    # Counted from the shard size, not from a batched pipeline: MindSpore would run one through
    # the sampler to count its batches.
    shard_size = build_train_dataset(cfg, 0, rt.rank, rt.group_size, rt.distribute).get_dataset_size()
    if cfg.drop_remainder and cfg.batch_size > shard_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is larger than this process's {shard_size} training images "
            f"with drop_remainder: True; use --batch_size {shard_size} or less, or --drop_remainder False"
        )
    steps_per_epoch = shard_size // cfg.batch_size if cfg.drop_remainder else -(-shard_size // cfg.batch_size)
    val_loader = build_eval_loader(cfg, classes=classes) if cfg.val_while_train else None

    # ---- model, schedule, optimizer, train step, resumed state
    net = build_model(cfg, cpu_kernels=rt.cpu_kernels, amp_level=precision.amp_level)
    lr_schedule = build_lr_schedule(cfg, steps_per_epoch)
    optimizer = build_optimizer(cfg, net, lr_schedule)
    train_step = build_train_step(cfg, net, optimizer, precision)
    recipe = recipe_record(cfg, rt.group_size)
    resumed = resume(cfg, run, train_step, optimizer, recipe)
    if rt.is_main:
        run.write_config(cfg)
        run.write_classes(classes)
    return _Prepared(
        precision, train_loader, steps_per_epoch, val_loader, net, lr_schedule, train_step, recipe, resumed
    )


def _fit(cfg: Config, rt: Runtime, run: RunDir, parts: _Prepared) -> RunResult:
    """The epochs: Model.train with the monitor (log, validation, checkpoints, metrics)."""
    net, train_step, resumed, val_loader = parts.net, parts.train_step, parts.resumed, parts.val_loader
    ema = train_step.ema if train_step.use_ema else None
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
    sink_size, sinks = sink_plan(sink, rt.device, parts.steps_per_epoch, cfg.log_interval)
    _notes(cfg, rt, parts.precision, sink, sinks, sink_size)
    global_batch = cfg.batch_size * rt.group_size
    plan = MonitorPlan.from_recipe(cfg, sinks, parts.recipe)
    done_steps = resumed.epoch * parts.steps_per_epoch
    events = run.file(TENSORBOARD_DIR)
    tensorboard = open_scalar_writer(events, done_steps + 1) if rt.is_main and cfg.tensorboard else None
    monitor = TrainMonitor(
        run if rt.is_main else None,
        cfg.model,
        parts.lr_schedule,
        global_batch,
        plan,
        evaluate=evaluate if val_loader is not None else None,
        save_params=lambda: train_step,
        history=resumed.history,
        kept=resumed.kept,
        best_top1=resumed.best_top1,
        tensorboard=tensorboard,
    )
    if resumed.best_top1 is not None and os.path.isfile(run.best_checkpoint(cfg.model)):
        monitor.best_path = run.best_checkpoint(cfg.model)  # a resumed run with no new best keeps it
    model_line = summarize(
        cfg.model, image_size=cfg.image_resize, num_classes=cfg.num_classes, in_channels=cfg.in_channels
    ).line()
    _logger.info(
        "model %s, %d classes; data %s/%s: %d steps/epoch, %d steps "
        "in all%s, of batch %d x %d device(s) = global batch %d; lr %g (%s, warmup %g epochs), %s %s; %s; "
        "sink mode %s%s",
        model_line,
        cfg.num_classes,
        cfg.data_dir,
        cfg.train_split,
        parts.steps_per_epoch,
        cfg.epoch_size * parts.steps_per_epoch,
        f" ({done_steps} done)" if done_steps else "",
        cfg.batch_size,
        rt.group_size,
        global_batch,
        cfg.lr,
        cfg.scheduler,
        cfg.warmup_epochs,
        cfg.opt,
        f"wd {cfg.weight_decay:g} ({cfg.weight_decay_filter})",
        parts.precision.describe(),
        sink,
        f" ({sinks} sinks of {sink_size} steps per epoch)" if sinks > 1 else "",
    )
    callbacks = [monitor]
    if rt.distribute and rt.group_size > 1:
        _logger.info(
            "data parallel over %d ranks: lr %g is used as set, not rescaled for global batch %d (linear "
            "rule: lr x new global batch / the recipe's global batch); BatchNorm statistics (and QAT observer "
            "ranges) averaged over ranks every epoch",
            rt.group_size,
            cfg.lr,
            global_batch,
        )
        callbacks.insert(0, SyncBatchNormStatistics(train_step, rt.group_size, sinks))
    if rt.is_main:
        _logger.info("run directory: %s", run.path)
    try:
        if sink:
            # One pipeline for all epochs: a new dataset per epoch would rebuild the device's data
            # channel. Data order follows (seed, epoch); augmentation draws do not restart; epochs count sinks.
            model.train(
                cfg.epoch_size * sinks,
                parts.train_loader(resumed.epoch),
                callbacks=callbacks,
                dataset_sink_mode=True,
                sink_size=sink_size,
                initial_epoch=resumed.epoch * sinks,
            )
        else:
            for epoch in range(resumed.epoch, cfg.epoch_size):
                # One epoch per call (MindSpore sizes the pipeline's iterator by the call's epoch
                # count); the monitor numbers epochs and steps from the offset.
                monitor.epoch_offset = epoch
                model.train(1, parts.train_loader(epoch), callbacks=callbacks, dataset_sink_mode=False)
    except Exception as err:
        if rt.distribute:
            # Named here because msrun reports only the pid of the first worker it sees exit.
            _logger.error("rank %d of %d failed: %s: %s", rt.rank, rt.group_size, type(err).__name__, err)
        raise
    finally:
        monitor.close()
    if rt.is_main:
        _write_curves(run)
    _logger.info("%s", monitor.summary())
    return RunResult(
        run_dir=run.path,
        epochs=cfg.epoch_size,
        history=monitor.history,
        best_top1=monitor.best_top1,
        best_checkpoint=monitor.best_path,
        last_checkpoint=monitor.last_checkpoint(),
    )
