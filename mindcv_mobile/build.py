"""Recipe -> objects: the only place where configuration keys become the model, its precision,
the data loaders, the loss, the LR schedule, the optimizer, the train step and the eval network.

Each factory owns its choice table and the mapping from recipe keys to its arguments
(``schedule_kwargs``, ``optimizer_kwargs``, ``loss_kwargs`` beside the factory); this module
calls them, so no caller spells a factory's keyword arguments. Quantization-aware training is
decided here, once: ``quant: True`` wraps the float MobileNetV2 for training, evaluation and
export alike.

Evaluation resolution: the eval preprocessing follows the model's registry record where the user
set nothing (see :func:`resolve_eval_config`), so ``mobilenet_v2_075_160`` validates at 160 px.
"""

from __future__ import annotations

import logging
from typing import Optional

from mindspore import nn

from .config import Config, copy_config
from .data import create_dataset, create_loader, create_transforms, download_dataset
from .data.transforms import transform_kwargs
from .host import data_workers
from .models import create_model, get_model_cfg, load_checkpoint, load_model_weights, pretrained_path
from .models.registry import check_input_size
from .quant import check_qat_checkpoint, quantize_from_config
from .training import EMA, TrainStep, create_loss, create_lr_schedule, create_optimizer, resolve_precision
from .training.ema import EMA_PREFIX
from .training.loss import loss_kwargs
from .training.lr import schedule_kwargs
from .training.optim import optimizer_kwargs
from .training.train_step import Precision, mixed_precision

_logger = logging.getLogger(__name__)

# Eval preprocessing keys a model record carries; used when neither recipe nor command line set them.
MODEL_RECORD_KEYS = ("image_resize", "crop_pct", "interpolation", "mean", "std")


# ------------------------------------------------------------------------------------ data
def build_transforms(cfg: Config, is_training: bool) -> list:
    """The recipe's train or eval transforms for the configured model."""
    check_input_size(cfg.model, cfg.image_resize)
    if cfg.in_channels != 3:
        # Caught here: MindSpore would fail inside graph compilation with pages of IR.
        raise ValueError(
            f"in_channels={cfg.in_channels} but the data pipeline yields RGB images (3 channels); use --in_channels 3 "
            f"(other input widths are for create_model() fed by your own pipeline)"
        )
    return create_transforms(is_training=is_training, **transform_kwargs(cfg))


def fetch_dataset(cfg: Config, is_main: bool = True, distributed: bool = False) -> None:
    """``dataset_download: True``: the official archives of cifar10 / cifar100 / mnist into
    ``data_dir`` when missing, fetched by the main process while the others wait."""
    if not cfg.dataset_download:
        return
    if is_main:
        download_dataset(cfg.dataset, cfg.data_dir)
    if distributed:
        from mindspore.communication.comm_func import barrier

        barrier()


def build_train_dataset(cfg: Config, epoch: int = 0, rank: int = 0, group_size: int = 1, distribute: bool = False):
    """This process's shard of the training split, shuffled for ``epoch`` (order depends only on
    ``(seed, epoch)``)."""
    return create_dataset(
        cfg.dataset,
        cfg.data_dir,
        cfg.train_split,
        shuffle=cfg.shuffle,
        num_samples=cfg.num_samples,
        num_shards=group_size if distribute else None,
        shard_id=rank if distribute else None,
        num_parallel_workers=data_workers(cfg.num_parallel_workers),
        seed=cfg.seed,
        epoch=epoch,
        aug_repeats=cfg.aug_repeats,
    )


def build_train_loader(cfg: Config, dataset):
    """Batches of ``dataset`` with the recipe's train transforms and mixup/cutmix."""
    return create_loader(
        dataset,
        cfg.batch_size,
        drop_remainder=cfg.drop_remainder,
        is_training=True,
        transform=build_transforms(cfg, True),
        num_classes=cfg.num_classes,
        mixup=cfg.mixup,
        cutmix=cfg.cutmix,
        mixup_prob=cfg.mixup_prob,
        num_parallel_workers=data_workers(cfg.num_parallel_workers),
    )


def build_eval_loader(cfg: Config, batch_size: Optional[int] = None, classes: Optional[list] = None):
    """The full val split (never sharded, never dropping the remainder) with eval transforms,
    labelled by ``classes`` (the run's class list; None: the split's own class folders)."""
    workers = data_workers(cfg.num_parallel_workers)
    dataset = create_dataset(
        cfg.dataset, cfg.data_dir, cfg.val_split, shuffle=False, num_parallel_workers=workers, classes=classes
    )
    return create_loader(
        dataset,
        batch_size or cfg.batch_size,
        drop_remainder=False,
        is_training=False,
        transform=build_transforms(cfg, False),
        num_classes=cfg.num_classes,
        num_parallel_workers=workers,
    )


# ------------------------------------------------------------------------------------ model
def _quantized(net: nn.Cell, cfg: Config) -> nn.Cell:
    """The QAT MobileNetV2 of ``quant: True`` on the float ``net`` (weights already loaded)."""
    return quantize_from_config(net, cfg) if cfg.quant else net


def build_model(cfg: Config, cpu_kernels: bool = False, amp_level: str = "O0") -> nn.Cell:
    """The network to train: ``cfg.model`` with the recipe's start weights (``pretrained`` /
    ``ckpt_path``), made quantization-aware when ``quant`` is set, in ``amp_level`` (the resolved
    precision's). ``cpu_kernels``: use the compiled CPU ops (the training path passes what the
    runtime found)."""
    net = create_model(
        cfg.model,
        num_classes=cfg.num_classes,
        pretrained=cfg.pretrained,
        checkpoint_path=cfg.ckpt_path or None,
        in_channels=cfg.in_channels,
        drop_rate=cfg.drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        cpu_kernels=cpu_kernels,
    )
    net = _quantized(net, cfg)
    return mixed_precision(net, amp_level, cfg.amp_cast_list)


def weights_path(cfg: Config) -> str:
    """The file whose weights are evaluated: ``ckpt_path`` or the released weights of ``cfg.model``."""
    if cfg.ckpt_path:
        return cfg.ckpt_path
    if cfg.pretrained:
        return pretrained_path(cfg.model)
    raise ValueError(
        "no weights to evaluate: pass --ckpt_path FILE.ckpt or --pretrained True "
        "(an untrained network would score random weights)"
    )


def _checked_params(cfg: Config, path: str) -> dict:
    """The checkpoint's entries to load into ``cfg.model`` (EMA shadows when ``cfg.ema``), after
    checking that its classifier has ``cfg.num_classes`` rows (or 1001 for 1000)."""
    params = load_checkpoint(path)
    if cfg.ema:
        prefix = EMA_PREFIX + "."
        shadows = {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}
        if not shadows:
            raise ValueError(f"ema: True but {path} holds no {prefix}* weights; validate with --ema False")
        params = shadows
    head = f"{get_model_cfg(cfg.model).classifier}.weight"
    if head in params:
        rows = int(params[head].shape[0])
        if rows != cfg.num_classes and not (rows == 1001 and cfg.num_classes == 1000):
            raise ValueError(
                f"{path} has a {rows}-class classifier ({head} {tuple(params[head].shape)}) but "
                f"num_classes is {cfg.num_classes}; evaluate with --num_classes {rows}"
            )
    if cfg.quant:
        check_qat_checkpoint(params, path)
    return params


def load_eval_network(cfg: Config) -> nn.Cell:
    """A fresh, portable ``cfg.model`` (QAT when ``quant``) in eval mode holding every weight of
    the checkpoint (see ``weights_path``); ``net.load_report`` says what was loaded.

    Errors instead of leaving any parameter at its initialisation: a checkpoint of another model,
    or a classifier of another size than ``num_classes`` (except 1001 -> 1000, sliced, logged).
    """
    path = weights_path(cfg)
    params = _checked_params(cfg, path)
    net = _quantized(
        create_model(
            cfg.model,
            num_classes=cfg.num_classes,
            in_channels=cfg.in_channels,
            drop_rate=cfg.drop_rate,
        ),
        cfg,
    )
    # A path (not the dict) names the file in the loader's log; EMA shadows exist only as a dict.
    report = load_model_weights(net, params if cfg.ema else path, get_model_cfg(cfg.model))
    if report.missing:
        raise ValueError(
            f"{path} lacks {len(report.missing)} parameters of {cfg.model} (e.g. {report.missing[:3]}): "
            f"is it a checkpoint of another model or width?"
        )
    net.set_train(False)
    net.load_report = report
    return net


# ------------------------------------------------------------------------------ training
def build_precision(cfg: Config, device: str) -> Precision:
    return resolve_precision(cfg, device)


def build_loss(cfg: Config, reduction: Optional[str] = None) -> nn.Cell:
    """The recipe's loss; ``reduction="none"`` gives per-image losses (evaluation)."""
    return create_loss(**loss_kwargs(cfg, reduction))


def build_lr_schedule(cfg: Config, steps_per_epoch: int) -> list:
    return create_lr_schedule(steps_per_epoch=steps_per_epoch, **schedule_kwargs(cfg))


def build_optimizer(cfg: Config, net: nn.Cell, lr_schedule) -> nn.Optimizer:
    return create_optimizer(net.trainable_params(), lr=lr_schedule, **optimizer_kwargs(cfg))


def build_train_step(cfg: Config, net: nn.Cell, optimizer: nn.Optimizer, precision: Precision) -> TrainStep:
    """loss -> gradients -> optimizer (-> EMA) as one Cell."""
    ema = EMA(net, decay=cfg.ema_decay) if cfg.ema else None
    return TrainStep(
        nn.WithLossCell(net, build_loss(cfg)),
        optimizer,
        precision,
        clip_grad=cfg.clip_grad,
        clip_value=cfg.clip_value,
        ema=ema,
        accumulation_steps=cfg.gradient_accumulation_steps,
    )


def build_eval_network(cfg: Config, net: nn.Cell) -> nn.Cell:
    """``(loss per image, logits, label)`` for ``ms.train.Model``'s metrics (eval_indexes [0, 1, 2])."""
    return nn.WithEvalCell(net, build_loss(cfg, reduction="none"))


def eval_amp_level(cfg: Config, device: str) -> str:
    """Validation's mixed precision: ``val_amp_level``, O0 on CPU unless forced (as training's)."""
    if device == "CPU" and cfg.val_amp_level != "O0" and not cfg.amp_force:
        _logger.info(
            "val_amp_level %s -> O0 on CPU, where float16 is slower (--amp_force True keeps it)", cfg.val_amp_level
        )
        return "O0"
    return cfg.val_amp_level


def eval_precision(cfg: Config, net: nn.Cell, device: str) -> nn.Cell:
    """``net`` in validation's mixed precision (:func:`eval_amp_level`, ``amp_cast_list``)."""
    return mixed_precision(net, eval_amp_level(cfg, device), cfg.amp_cast_list)


# ---------------------------------------------------------------------- eval configuration
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
    from_record = {
        "image_resize": record.image_size,
        "crop_pct": record.crop_pct,
        "interpolation": record.interpolation,
        "mean": list(record.mean),
        "std": list(record.std),
    }
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


def eval_config(cfg: Config) -> Config:
    """What validation, export and inference use: one process, the model record's preprocessing."""
    return resolve_eval_config(standalone_config(cfg))


__all__ = [
    "MODEL_RECORD_KEYS",
    "build_eval_loader",
    "fetch_dataset",
    "build_eval_network",
    "build_loss",
    "build_lr_schedule",
    "build_model",
    "build_optimizer",
    "build_precision",
    "build_train_dataset",
    "build_train_loader",
    "build_train_step",
    "build_transforms",
    "eval_amp_level",
    "eval_config",
    "eval_precision",
    "load_eval_network",
    "resolve_eval_config",
    "standalone_config",
    "weights_path",
]
