"""Evaluation in one place: the eval pipeline, the metrics, checked weights and ``validate(cfg)``.

The trainer's validation and ``validate.py`` share the transforms, the loader and the metric
definitions below, so a checkpoint validates to the number its training run reported.

What ``validate`` adds to the trainer's evaluation:

- weights are mandatory and checked: a missing or unreadable file, a checkpoint that leaves any
  parameter at its initialisation, or a classifier of another size than ``num_classes`` is an
  error (training drops such a head to fine-tune; scoring it would measure random weights). The
  one exception is mindcv's 1001-class MobileNetV1 release validated with 1000 classes, whose
  first 1000 rows are the ImageFolder classes.
- the eval resolution follows the model: image_resize, crop_pct, interpolation, mean and std
  come from the model's registry record when the user set none (``cfg.origins``), and the input
  size also when the model was named more explicitly than the size (see
  ``resolve_eval_config``), so ``mobilenet_v2_075_160`` validates at 160 px (resize 182, centre
  crop 160) and ``--model mobilenet_v2_075 --image_resize 192`` at 192.
- the loss is averaged per image and ``samples`` counts the images scored: the last partial
  batch is evaluated, never dropped.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from .config import Config, ConfigError, defaults, merge, read_yaml
from .config import validate as validate_config
from .data import class_names, create_dataset, create_loader, create_transforms
from .models import create_model, get_model_cfg, load_checkpoint, load_model_weights, pretrained_path
from .models.registry import check_input_size
from .quant import check_qat_checkpoint, quantize_from_config
from .runtime import Runtime, init_runtime, setup_logging

_logger = logging.getLogger(__name__)

# Eval preprocessing keys a model record carries; used when neither recipe nor command line set them.
MODEL_RECORD_KEYS = ("image_resize", "crop_pct", "interpolation", "mean", "std")
# A training run directory holds the resolved recipe and the class names beside its checkpoints.
RUN_CONFIG = "config.yaml"
RUN_CLASSES = "classes.json"
# Keys of a run's config.yaml that describe how that run started, not how to use its weights.
_RUN_START_KEYS = ("pretrained", "ckpt_path", "resume", "resume_opt", "distribute")
EMA_PREFIX = "ema."


def _workers(cfg: Config) -> int:
    return max(1, min(cfg.num_parallel_workers, os.cpu_count() or 1))


def copy_config(cfg: Config) -> Config:
    """An independent copy of ``cfg`` that keeps its ``origins``."""
    out = Config(copy.deepcopy(dict(cfg)))
    out.origins.update(getattr(cfg, "origins", {}))
    return out


def build_transforms(cfg: Config, is_training: bool) -> list:
    """The recipe's train or eval transforms for the configured model."""
    check_input_size(cfg.model, cfg.image_resize)
    return create_transforms(
        cfg.dataset, image_resize=cfg.image_resize, is_training=is_training, scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio), hflip=cfg.hflip, vflip=cfg.vflip, color_jitter=cfg.color_jitter,
        interpolation=cfg.interpolation, auto_augment=cfg.auto_augment, re_prob=cfg.re_prob,
        re_scale=tuple(cfg.re_scale), re_ratio=tuple(cfg.re_ratio), re_value=cfg.re_value,
        re_max_attempts=cfg.re_max_attempts, mean=tuple(cfg.mean), std=tuple(cfg.std), crop_pct=cfg.crop_pct)


def build_eval_loader(cfg: Config, batch_size: Optional[int] = None):
    """The full val split (never sharded, never dropping the remainder) with eval transforms."""
    dataset = create_dataset(cfg.dataset, cfg.data_dir, cfg.val_split, shuffle=False,
                             num_parallel_workers=_workers(cfg))
    return create_loader(dataset, batch_size or cfg.batch_size, drop_remainder=False, is_training=False,
                         transform=build_transforms(cfg, False), num_classes=cfg.num_classes,
                         num_parallel_workers=_workers(cfg))


class MeanLoss(nn.Loss):
    """``nn.Loss`` that averages per image when given per-image losses.

    A scalar (batch-mean) loss counts once per batch, exactly as ``nn.Loss``; a vector of
    per-image losses counts each image once, so a short last batch weighs what it holds.
    """

    def update(self, *inputs) -> None:
        if len(inputs) != 1:
            raise ValueError(f"MeanLoss.update takes one input (the loss), got {len(inputs)}")
        loss = self._convert_data(inputs[0])
        if loss.ndim == 0:
            super().update(loss)
        elif loss.ndim == 1:
            self._sum_loss += float(loss.astype(np.float64).sum())
            self._total_num += loss.shape[0]
        else:
            raise ValueError(f"MeanLoss.update: loss must be a scalar or a vector, got shape {loss.shape}")


class SampleCount(nn.Metric):
    """How many images were scored (the label batch sizes summed)."""

    def __init__(self) -> None:
        super().__init__()
        self.clear()

    def clear(self) -> None:
        self._count = 0

    def update(self, *inputs) -> None:
        self._count += int(self._convert_data(inputs[1]).shape[0])

    def eval(self) -> int:
        return self._count


def eval_metrics(num_classes: int, count_samples: bool = False) -> dict:
    """Metrics for ``ms.train.Model(..., eval_indexes=[0, 1, 2])`` over (loss, logits, label).

    Top-5 is left out below 5 classes: it would always be 1 and is reported as not applicable.
    """
    metrics = {"Top_1_Accuracy": nn.Top1CategoricalAccuracy(), "loss": MeanLoss()}
    if num_classes >= 5:
        metrics["Top_5_Accuracy"] = nn.Top5CategoricalAccuracy()
    if count_samples:
        metrics["samples"] = SampleCount()
    return metrics


def named_metrics(raw: dict) -> dict:
    """The trainer's names for one evaluation (``val_loss``; Top_5 None when not applicable)."""
    return {"Top_1_Accuracy": raw["Top_1_Accuracy"], "Top_5_Accuracy": raw.get("Top_5_Accuracy"),
            "val_loss": raw["loss"]}


def _set_by(cfg: Config, key: str) -> int:
    """How explicitly ``key`` was chosen: 0 schema default, 1 a recipe file, 2 command line / overrides."""
    origin = cfg.origins.get(key)
    if origin is None:
        return 0
    return 2 if origin in ("command line", "overrides") else 1


def resolve_eval_config(cfg: Config) -> Config:
    """A copy of ``cfg`` whose eval preprocessing follows the model's registry record where the user
    set nothing (keys of ``MODEL_RECORD_KEYS``).

    The input size is part of names like ``mobilenet_v2_075_160``, so it also follows the record
    when set less explicitly than the model: ``--model mobilenet_v2_075_160`` beats a recipe's
    ``image_resize: 224``, while ``--model mobilenet_v2_075 --image_resize 192`` (or both in one
    recipe) keeps 192. A recipe's crop_pct, interpolation, mean and std describe its data and hold.
    """
    record = get_model_cfg(cfg.model)
    from_record = {"image_resize": record.image_size, "crop_pct": record.crop_pct,
                   "interpolation": record.interpolation, "mean": list(record.mean), "std": list(record.std)}
    out = copy_config(cfg)
    for key in MODEL_RECORD_KEYS:
        beaten_by = _set_by(cfg, "model") if key == "image_resize" else 1
        if cfg[key] == from_record[key] or _set_by(cfg, key) >= beaten_by:
            continue
        out[key] = from_record[key]
        out.origins[key] = f"model record of {cfg.model}"
        _logger.info("%s %r from the model record of %s (set --%s to override)", key, from_record[key], cfg.model, key)
    return out


def standalone_config(cfg: Config) -> Config:
    """A copy of ``cfg`` for one process: evaluation and export score everything on one device."""
    out = copy_config(cfg)
    if out.distribute:
        _logger.info("distribute: True ignored: evaluation runs in one process")
    out.distribute = False
    out.origins.pop("distribute", None)
    return out


def config_from_run_dir(cfg: Config, weights: str) -> Config:
    """``cfg`` rebuilt on the ``config.yaml`` of the run directory holding ``weights``, when there is one.

    For entry points called without ``-c``: a checkpoint written by ``train.py`` sits beside the
    resolved recipe it was trained with (model, num_classes, image size, normalisation), which is
    then the base, with every key given on the command line applied on top. Keys describing how
    the run started (pretrained, ckpt_path, resume, distribute) are not taken from it.
    """
    run_config = os.path.join(os.path.dirname(os.path.abspath(weights)), RUN_CONFIG)
    if not weights or not os.path.isfile(run_config):
        return cfg
    values = {k: v for k, v in read_yaml(run_config).items() if k not in _RUN_START_KEYS}
    out = defaults()
    try:
        merge(out, values, run_config)
        merge(out, {k: cfg[k] for k in cfg.origins}, "command line")
        validate_config(out)
    except ConfigError as err:
        raise ValueError(f"{err} (read from the run directory of {weights}; pass -c RECIPE to use another)") from None
    _logger.info("configuration from %s (no -c given)", run_config)
    return out


def weights_path(cfg: Config) -> str:
    """The file whose weights are evaluated: ``ckpt_path`` or the released weights of ``cfg.model``."""
    if cfg.ckpt_path:
        return cfg.ckpt_path
    if cfg.pretrained:
        return pretrained_path(cfg.model)
    raise ValueError("no weights to evaluate: pass --ckpt_path FILE.ckpt or --pretrained True "
                     "(an untrained network would score random weights)")


def _checked_params(cfg: Config, path: str) -> dict:
    """The checkpoint's entries to load into ``cfg.model`` (EMA shadows when ``cfg.ema``), after
    checking that its classifier has ``cfg.num_classes`` rows (or 1001 for 1000)."""
    params = load_checkpoint(path)
    if cfg.ema:
        shadows = {name[len(EMA_PREFIX):]: value for name, value in params.items() if name.startswith(EMA_PREFIX)}
        if not shadows:
            raise ValueError(f"ema: True but {path} holds no {EMA_PREFIX}* weights; validate with --ema False")
        params = shadows
    head = f"{get_model_cfg(cfg.model).classifier}.weight"
    if head in params:
        rows = int(params[head].shape[0])
        if rows != cfg.num_classes and not (rows == 1001 and cfg.num_classes == 1000):
            raise ValueError(f"{path} has a {rows}-class classifier ({head} {tuple(params[head].shape)}) but "
                             f"num_classes is {cfg.num_classes}; evaluate with --num_classes {rows}")
    return params


def load_eval_network(cfg: Config) -> nn.Cell:
    """A fresh ``cfg.model`` in eval mode holding every weight of the checkpoint (see ``weights_path``).

    Errors instead of leaving any parameter at its initialisation: a checkpoint of another model,
    or a classifier of another size than ``num_classes`` (except 1001 -> 1000, sliced, logged).
    """
    path = weights_path(cfg)
    params = _checked_params(cfg, path)
    net = create_model(cfg.model, num_classes=cfg.num_classes, in_channels=cfg.in_channels, drop_rate=cfg.drop_rate,
                       drop_path_rate=cfg.drop_path_rate)
    if cfg.quant:  # a QAT checkpoint: the simulated int8 MobileNetV2 with its ranges (mindcv_mobile/quant)
        check_qat_checkpoint(params, path)
        net = quantize_from_config(net, cfg)
    # A path (not the dict) names the file in the loader's log; EMA shadows exist only as a dict.
    report = load_model_weights(net, params if cfg.ema else path, get_model_cfg(cfg.model))
    if report.missing:
        raise ValueError(f"{path} lacks {len(report.missing)} parameters of {cfg.model} (e.g. {report.missing[:3]}): "
                         f"is it a checkpoint of another model or width?")
    net.set_train(False)
    net.load_report = report
    return net


def _eval_precision(cfg: Config, device: str) -> str:
    if device == "CPU" and cfg.val_amp_level != "O0" and not cfg.amp_force:
        _logger.info("val_amp_level %s -> O0 on CPU, where float16 is slower (--amp_force True keeps it)",
                     cfg.val_amp_level)
        return "O0"
    return cfg.val_amp_level


def validate(cfg: Config, rt: Optional[Runtime] = None) -> dict:
    """Score a checkpoint on ``cfg.val_split`` of ``cfg.data_dir`` with the model's eval transforms.

    Returns ``{'Top_1_Accuracy', 'Top_5_Accuracy' (None below 5 classes), 'loss', 'samples'}``:
    accuracies in [0, 1], the recipe's loss (label smoothing included) averaged per image, and the
    number of images scored, which is every image of the split.
    """
    # Imported here: training's package imports this module (one place for eval).
    from .training.loss import create_loss

    cfg = resolve_eval_config(standalone_config(cfg))
    rt = rt or init_runtime(cfg)
    setup_logging(None, rt.rank)
    classes = class_names(cfg.data_dir, cfg.val_split, cfg.dataset)
    if len(classes) > cfg.num_classes:
        raise ValueError(f"{cfg.data_dir}/{cfg.val_split} has {len(classes)} classes but num_classes is "
                         f"{cfg.num_classes}; set --num_classes {len(classes)}")
    net = load_eval_network(cfg)
    amp_level = _eval_precision(cfg, rt.device)
    if amp_level != "O0":
        net = ms.amp.auto_mixed_precision(net, amp_level)
    loader = build_eval_loader(cfg)
    loss_fn = create_loss(cfg.loss, label_smoothing=cfg.label_smoothing, reduction="none")
    metrics = eval_metrics(cfg.num_classes, count_samples=True)
    model = ms.train.Model(net, eval_network=nn.WithEvalCell(net, loss_fn), metrics=metrics,
                           eval_indexes=[0, 1, 2])
    _logger.info("validating %s (%d classes) from %s on %s/%s: %d px (resize %d, %s), batch %d",
                 cfg.model, cfg.num_classes, net.load_report.path, cfg.data_dir, cfg.val_split, cfg.image_resize,
                 int(cfg.image_resize / cfg.crop_pct), cfg.interpolation, cfg.batch_size)
    raw = model.eval(loader, dataset_sink_mode=False)
    result = {"Top_1_Accuracy": float(raw["Top_1_Accuracy"]),
              "Top_5_Accuracy": float(raw["Top_5_Accuracy"]) if "Top_5_Accuracy" in raw else None,
              "loss": float(raw["loss"]), "samples": int(raw["samples"])}
    if result["Top_5_Accuracy"] is None:
        _logger.info("Top_5_Accuracy: n/a (%d classes: top-5 would always be 1)", cfg.num_classes)
    return result


__all__ = [
    "MODEL_RECORD_KEYS", "MeanLoss", "SampleCount", "build_eval_loader", "build_transforms", "config_from_run_dir",
    "copy_config", "eval_metrics", "load_eval_network", "named_metrics", "resolve_eval_config",
    "standalone_config", "validate", "weights_path",
]
