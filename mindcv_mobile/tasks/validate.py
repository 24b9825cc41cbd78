"""``validate(cfg)``: score a checkpoint's top-1 / top-5 on a split, with checked weights.

What validation adds to the trainer's evaluation:

- weights are mandatory and checked (``build.load_eval_network``): a missing or unreadable file,
  a checkpoint that leaves any parameter at its initialisation, or a classifier of another size
  than ``num_classes`` is an error (training drops such a head to fine-tune; scoring it would
  measure random weights). The one exception is mindcv's 1001-class MobileNetV1 release
  validated with 1000 classes, whose first 1000 rows are the ImageFolder classes.
- the eval resolution follows the model's record where the user set none
  (``build.resolve_eval_config``).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import mindspore as ms

from ..build import (
    build_eval_loader,
    build_eval_network,
    eval_config,
    eval_precision,
    fetch_dataset,
    load_eval_network,
    weights_path,
)
from ..config import Config
from ..data import class_names
from ..evaluation import eval_metrics
from ..run_dir import classes_near
from ..runtime import Runtime, init_runtime, setup_logging

_logger = logging.getLogger(__name__)


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


def validate(cfg: Config, rt: Optional[Runtime] = None) -> dict:
    """Score a checkpoint on ``cfg.val_split`` of ``cfg.data_dir`` with the model's eval transforms.

    Returns ``{'Top_1_Accuracy', 'Top_5_Accuracy' (None below 5 classes), 'loss', 'samples'}``:
    accuracies in [0, 1], the recipe's loss (label smoothing included) averaged per image, and the
    number of images scored, which is every image of the split.
    """
    cfg = eval_config(cfg)
    rt = rt or init_runtime(cfg)
    setup_logging(None, rt.rank)
    fetch_dataset(cfg)
    classes, source = run_classes(cfg)
    if len(classes) > cfg.num_classes:
        raise ValueError(
            f"{source} has {len(classes)} classes but num_classes is {cfg.num_classes}; "
            f"set --num_classes {len(classes)}"
        )
    net = load_eval_network(cfg)
    net = eval_precision(cfg, net, rt.device)
    loader = build_eval_loader(cfg, classes=classes)
    model = ms.train.Model(
        net,
        eval_network=build_eval_network(cfg, net),
        metrics=eval_metrics(cfg.num_classes, count_samples=True),
        eval_indexes=[0, 1, 2],
    )
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
    raw = model.eval(loader, dataset_sink_mode=False)
    result = {
        "Top_1_Accuracy": float(raw["Top_1_Accuracy"]),
        "Top_5_Accuracy": float(raw["Top_5_Accuracy"]) if "Top_5_Accuracy" in raw else None,
        "loss": float(raw["loss"]),
        "samples": int(raw["samples"]),
    }
    if result["Top_5_Accuracy"] is None:
        _logger.info("Top_5_Accuracy: n/a (%d classes: top-5 would always be 1)", cfg.num_classes)
    return result
