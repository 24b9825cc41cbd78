"""``validate(cfg)``: score a checkpoint's top-1 / top-5 on a split, with checked weights;
``validate_checkpoints(cfgs)``: several checkpoints, one network per model.

What validation adds to the trainer's evaluation:

- weights are mandatory and checked (``build.load_eval_network``): a missing or unreadable file,
  a checkpoint that leaves any parameter at its initialisation, or a classifier of another size
  than ``num_classes`` is an error (training drops such a head to fine-tune; scoring it would
  measure random weights). The one exception is mindcv's 1001-class MobileNetV1 release
  validated with 1000 classes, whose first 1000 rows are the ImageFolder classes.
- the eval resolution follows the model's record where the user set none
  (``build.resolve_eval_config``).
- a report per checkpoint (:class:`ValidationReport`): the metrics, the confusion matrix of the
  same predictions (per-class accuracy), the class names and the time taken.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from typing import Optional, Sequence

import mindspore as ms
import numpy as np

from ..build import (
    build_eval_loader,
    build_eval_network,
    eval_config,
    eval_precision,
    fetch_dataset,
    load_eval_network,
    weights_path,
)
from ..config import Config, config_from_run_dir, copy_config
from ..data import class_names
from ..evaluation import class_labels, eval_metrics, per_class_rows, summary_line
from ..run_dir import classes_near
from ..runtime import Runtime, init_runtime, setup_logging
from ..schema import SCHEMA

_logger = logging.getLogger(__name__)

# Keys that shape the evaluated network (its loss included): checkpoints whose configurations
# agree on them are scored by one network, compiled once, with each checkpoint's weights loaded.
NETWORK_KEYS = (
    "mode",
    "device_target",
    "jit_level",
    "model",
    "num_classes",
    "in_channels",
    "drop_rate",
    "val_amp_level",
    "amp_force",
    "amp_cast_list",
    *SCHEMA["loss"],
    *SCHEMA["quant"],
)
# ... and these, with the class list, the val loader.
LOADER_KEYS = (*NETWORK_KEYS, *SCHEMA["dataset"], *SCHEMA["augmentation"])
# "<model>-<epoch>_<step>.ckpt" (training's epoch checkpoints) and "<model>-best.ckpt".
EPOCH_CHECKPOINT = re.compile(r"-(\d+)_(\d+)\.ckpt$")
BEST_SUFFIX = "-best.ckpt"


@dataclasses.dataclass
class ValidationReport:
    """One checkpoint scored. ``metrics``: ``{'Top_1_Accuracy', 'Top_5_Accuracy' (None below 5
    classes), 'loss', 'samples'}``; ``confusion``: ``num_classes`` x ``num_classes`` counts, rows
    true class, columns the class ranked first (its trace is the top-1 correct count)."""

    checkpoint: str
    epoch: Optional[int]
    model: str
    data: str
    classes: list
    metrics: dict
    confusion: np.ndarray
    seconds: float

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def names(self) -> list:
        """A name for every output (the confusion matrix's rows and columns)."""
        return class_labels(self.classes, self.confusion.shape[0])

    def per_class(self) -> list:
        return per_class_rows(self.confusion, self.classes)

    def summary(self) -> str:
        return summary_line(self.model, self.data, self.metrics, self.correct, self.seconds)

    def row(self) -> dict:
        """The checkpoints-table row: ``{"checkpoint", "epoch", **metrics}``."""
        return {"checkpoint": self.checkpoint, "epoch": self.epoch, **self.metrics}


def run_classes(cfg: Config) -> tuple:
    """The class list labels come from, and where it was found: the ``classes.json`` of the run
    that wrote the checkpoint, else the training split beside the val split, else (no training
    split) the val split's own class folders."""
    near = classes_near(weights_path(cfg))
    if near is not None:
        return near, f"the class list of {weights_path(cfg)}'s run"
    train_dir = os.path.join(cfg.data_dir, cfg.train_split)
    split = cfg.train_split if cfg.dataset != "imagenet" or os.path.isdir(train_dir) else cfg.val_split
    if split == cfg.val_split:
        _logger.info(
            "no classes.json beside the checkpoint and no %s: labels follow the class folders of %s/%s",
            train_dir,
            cfg.data_dir,
            cfg.val_split,
        )
    return class_names(cfg.data_dir, split, cfg.dataset), f"{cfg.data_dir}/{split}"


def run_checkpoints(folder: str) -> list:
    """The ``.ckpt`` files of a run directory: epoch checkpoints by epoch, any others by name,
    then the best."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".ckpt") and not n.startswith("."))
    if not names:
        raise FileNotFoundError(f"no .ckpt file in {folder}; pass a run directory (ckpt_save_dir) or .ckpt files")
    epochs = sorted((n for n in names if EPOCH_CHECKPOINT.search(n)), key=_epoch_step)
    best = [n for n in names if n.endswith(BEST_SUFFIX)]
    others = [n for n in names if n not in epochs and n not in best]
    return [os.path.join(folder, n) for n in epochs + others + best]


def _epoch_step(name: str) -> tuple:
    match = EPOCH_CHECKPOINT.search(name)
    return int(match.group(1)), int(match.group(2)), name


def checkpoint_configs(cfg: Config, paths: Sequence[str], from_run: bool = True) -> list:
    """One configuration per checkpoint of ``paths`` (files, or run directories for all their
    checkpoints, see :func:`run_checkpoints`): ``cfg`` with that ``ckpt_path`` and, when
    ``from_run`` (no -c given), rebuilt on the ``config.yaml`` of the checkpoint's run."""
    files = []
    for path in [p for p in paths if p] or [cfg.ckpt_path]:
        files.extend(run_checkpoints(path) if path and os.path.isdir(path) else [path])
    out = []
    for path in files:
        one = copy_config(cfg)
        one.ckpt_path = path
        if from_run and path:
            one = config_from_run_dir(one, path)
            one.ckpt_path = path
        out.append(one)
    return out


def checkpoint_epoch(path: str) -> Optional[int]:
    """The epoch a training checkpoint was written at (its ``epoch_num``, else its file name)."""
    try:
        state = ms.load_checkpoint(path, choice_func=lambda name: name == "epoch_num")
    except Exception:  # a released or foreign checkpoint may be in any format; the epoch is optional
        state = {}
    if "epoch_num" in state:
        return int(state["epoch_num"].asnumpy())
    match = EPOCH_CHECKPOINT.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def _key(cfg: Config, keys: Sequence[str]) -> str:
    return repr([(k, cfg[k]) for k in keys])


class _Scorer:
    """Evaluates checkpoints, keeping one network (and its compiled graph) per ``NETWORK_KEYS``
    and one loader per ``LOADER_KEYS`` and class list."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.networks = {}  # key -> (net that holds the weights, ms.train.Model)
        self.loaders = {}

    def _network(self, cfg: Config):
        """The network with ``cfg``'s checkpoint loaded (checked by ``load_eval_network``), and its Model."""
        fresh = load_eval_network(cfg)
        key = _key(cfg, NETWORK_KEYS)
        if key not in self.networks:
            net = eval_precision(cfg, fresh, self.rt.device)
            model = ms.train.Model(
                net,
                eval_network=build_eval_network(cfg, net),
                metrics=eval_metrics(cfg.num_classes, count_samples=True, confusion=True),
                eval_indexes=[0, 1, 2],
            )
            self.networks[key] = (fresh, model)
            return fresh, model
        held, model = self.networks[key]
        # New values into the parameters the compiled graph already uses: no recompilation.
        ms.load_param_into_net(held, {p.name: p for p in fresh.get_parameters()}, strict_load=True)
        held.load_report = fresh.load_report
        return held, model

    def _loader(self, cfg: Config, classes: list):
        key = _key(cfg, LOADER_KEYS) + repr(classes)
        if key not in self.loaders:
            self.loaders[key] = build_eval_loader(cfg, classes=classes)
        return self.loaders[key]

    def score(self, cfg: Config) -> ValidationReport:
        fetch_dataset(cfg)
        classes, source = run_classes(cfg)
        if len(classes) > cfg.num_classes:
            raise ValueError(
                f"{source} has {len(classes)} classes but num_classes is {cfg.num_classes}; "
                f"set --num_classes {len(classes)}"
            )
        net, model = self._network(cfg)
        loader = self._loader(cfg, classes)
        _logger.info(
            "validating %s (%d classes) from %s on %s/%s: %d px (resize %d, %s), batch %d",
            cfg.model,
            cfg.num_classes,
            net.load_report.path,
            cfg.data_dir,
            cfg.val_split,
            cfg.image_resize,
            int(cfg.image_resize / cfg.crop_pct),
            cfg.interpolation,
            cfg.batch_size,
        )
        start = time.perf_counter()
        raw = model.eval(loader, dataset_sink_mode=False)
        seconds = time.perf_counter() - start
        metrics = {
            "Top_1_Accuracy": float(raw["Top_1_Accuracy"]),
            "Top_5_Accuracy": float(raw["Top_5_Accuracy"]) if "Top_5_Accuracy" in raw else None,
            "loss": float(raw["loss"]),
            "samples": int(raw["samples"]),
        }
        if metrics["Top_5_Accuracy"] is None:
            _logger.info("Top_5_Accuracy: n/a (%d classes: top-5 would always be 1)", cfg.num_classes)
        path = weights_path(cfg)
        return ValidationReport(
            checkpoint=path,
            epoch=checkpoint_epoch(path) if cfg.ckpt_path else None,
            model=cfg.model,
            data=os.path.join(cfg.data_dir, cfg.val_split),
            classes=list(classes),
            metrics=metrics,
            confusion=raw["confusion"],
            seconds=seconds,
        )


def validate_checkpoints(cfgs: Sequence[Config], rt: Optional[Runtime] = None) -> list:
    """A :class:`ValidationReport` per configuration (one per checkpoint, see
    :func:`checkpoint_configs`), in order. Checkpoints of the same network share one network, so
    graph mode compiles it once; each keeps its own run's class list."""
    cfgs = [eval_config(cfg) for cfg in cfgs]
    if not cfgs:
        raise ValueError("no checkpoint to validate: pass --ckpt_path FILE.ckpt [FILE.ckpt ...] or a run directory")
    rt = rt or init_runtime(cfgs[0])
    setup_logging(None, rt.rank)
    scorer = _Scorer(rt)
    return [scorer.score(cfg) for cfg in cfgs]


def validate_report(cfg: Config, rt: Optional[Runtime] = None) -> ValidationReport:
    """The full report of one checkpoint (see :func:`validate`)."""
    return validate_checkpoints([cfg], rt)[0]


def validate(cfg: Config, rt: Optional[Runtime] = None) -> dict:
    """Score a checkpoint on ``cfg.val_split`` of ``cfg.data_dir`` with the model's eval transforms.

    Returns ``{'Top_1_Accuracy', 'Top_5_Accuracy' (None below 5 classes), 'loss', 'samples'}``:
    accuracies in [0, 1], the recipe's loss (label smoothing included) averaged per image, and the
    number of images scored, which is every image of the split.
    """
    return validate_report(cfg, rt).metrics
