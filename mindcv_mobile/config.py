"""The recipe schema: every key, its type and its default, in one table.

A run's configuration is the schema's defaults, then a YAML recipe (``-c``), then command-line
overrides (``--lr 0.1``). Key names are mindcv's wherever mindcv has the concept, so its
MobileNet recipes run unchanged. An unknown key or a value of the wrong type is an error that
names the closest valid key or the accepted values.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import os
from typing import Any, Optional

import yaml

from .data import DATASET_READERS, INTERPOLATIONS
from .files import write_yaml
from .models.registry import IMAGENET_MEAN, IMAGENET_STD
from .quant import check_quant_config
from .run_dir import CONFIG as RUN_CONFIG
from .run_dir import SAVE_POLICIES
from .training.loss import LOSS_CHOICES, TRAIN_REDUCTIONS
from .training.lr import SCHEDULER_CHOICES
from .training.optim import OPTIMIZER_CHOICES, WEIGHT_DECAY_FILTER_CHOICES
from .training.train_step import AMP_LEVELS, LOSS_SCALE_TYPES

DEVICE_CHOICES = ("auto", "Ascend", "GPU", "CPU")
_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Key:
    default: Any
    kind: str  # bool | int | float | str | floats | ints
    help: str
    choices: Optional[tuple] = None
    nullable: bool = False
    length: Optional[int] = None  # for floats/ints lists


def _k(default, kind, help, choices=None, nullable=False, length=None):
    return Key(default, kind, help, tuple(choices) if choices else None, nullable, length)


# Groups only organise --help; keys are flat, as in mindcv's recipes.
SCHEMA = {
    "system": {
        "mode": _k(0, "int", "0 = graph mode (production), 1 = PyNative", choices=(0, 1)),
        "device_target": _k("auto", "str", "auto picks Ascend, then GPU, then CPU", choices=DEVICE_CHOICES),
        "jit_level": _k("", "str", "graph kernel-by-kernel (O0), fused (O1) or whole-graph sink (O2); '' = MindSpore's "
                        "default for the device; applied where the device supports it", choices=("", "O0", "O1", "O2")),
        "distribute": _k(None, "bool", "data-parallel over msrun workers; default: what the launcher environment says",
                         nullable=True),
        "val_while_train": _k(False, "bool", "evaluate on val_split every val_interval epochs"),
        "val_interval": _k(1, "int", "epochs between validations"),
        "log_interval": _k(100, "int", "steps between log lines inside an epoch (non-sink mode)"),
        "seed": _k(42, "int", "seed for MindSpore, numpy, random and the data pipeline"),
        "pretrained": _k(False, "bool", "start from the model's released weights (local cache)"),
        "ckpt_path": _k("", "str", "start from this checkpoint (weights; see resume for full state)"),
        "resume": _k("", "str", "continue a run: a checkpoint path, or 'auto' for the newest in ckpt_save_dir"),
        "resume_opt": _k(False, "bool", "mindcv's flag: with ckpt_path, also restore optimizer state and epoch"),
    },
    "dataset": {
        "dataset": _k("imagenet", "str", "imagenet = any ImageFolder tree; cifar10 = CIFAR-10 binary",
                      choices=tuple(DATASET_READERS)),
        "data_dir": _k("./", "str", "dataset root holding the split folders"),
        "train_split": _k("train", "str", "training split folder under data_dir"),
        "val_split": _k("val", "str", "validation split folder under data_dir"),
        "dataset_download": _k(False, "bool", "accepted for mindcv recipes; downloading is not supported"),
        "num_parallel_workers": _k(8, "int", "data pipeline workers per process (capped at the CPU count)"),
        "shuffle": _k(True, "bool", "shuffle the training set every epoch"),
        "num_samples": _k(None, "int", "use only this many samples", nullable=True),
        "batch_size": _k(128, "int", "batch size per device (global batch = batch_size x devices)"),
        "drop_remainder": _k(True, "bool", "drop the last incomplete training batch"),
        "aug_repeats": _k(0, "int", "repeated augmentation; only 0 or 1 (off) is supported"),
    },
    "augmentation": {
        "image_resize": _k(224, "int", "training crop / eval crop size"),
        "scale": _k([0.08, 1.0], "floats", "RandomResizedCrop area range", length=2),
        "ratio": _k([0.75, 1.333], "floats", "RandomResizedCrop aspect-ratio range", length=2),
        "hflip": _k(0.5, "float", "horizontal flip probability"),
        "vflip": _k(0.0, "float", "vertical flip probability"),
        "color_jitter": _k(0.4, "float", "brightness/contrast/saturation jitter (ignored when auto_augment is set)",
                           nullable=True),
        "interpolation": _k("bilinear", "str", "resize interpolation", choices=tuple(INTERPOLATIONS)),
        "auto_augment": _k(None, "str", "randaug-m9-mstd0.5 style, autoaug or trivialaug", nullable=True),
        "re_prob": _k(0.0, "float", "random erasing probability"),
        "re_scale": _k([0.02, 0.33], "floats", "random erasing area range", length=2),
        "re_ratio": _k([0.3, 3.3], "floats", "random erasing aspect-ratio range", length=2),
        "re_value": _k(0, "int", "random erasing fill value"),
        "re_max_attempts": _k(10, "int", "random erasing attempts"),
        "mean": _k(list(IMAGENET_MEAN), "floats", "normalisation mean (0-255 scale)", length=3),
        "std": _k(list(IMAGENET_STD), "floats", "normalisation std (0-255 scale)", length=3),
        "crop_pct": _k(0.875, "float", "eval: resize to image_resize / crop_pct, then center crop"),
        "mixup": _k(0.0, "float", "mixup alpha (0 = off)"),
        "cutmix": _k(0.0, "float", "cutmix alpha (0 = off)"),
        "mixup_prob": _k(1.0, "float", "probability of applying mixup/cutmix to a batch"),
    },
    "model": {
        "model": _k("mobilenet_v2_100", "str", "a name from mindcv_mobile.models.list_models()"),
        "num_classes": _k(1000, "int", "classifier size"),
        "in_channels": _k(3, "int", "input channels"),
        "drop_rate": _k(None, "float", "dropout before the classifier; None = model default", nullable=True),
        "drop_path_rate": _k(None, "float", "accepted for mindcv recipes; must be None or 0", nullable=True),
        "amp_level": _k("O0", "str", "mixed precision for training (CPU resolves O1-O3 to O0 unless forced)",
                        choices=AMP_LEVELS),
        "amp_force": _k(False, "bool", "use amp_level even on CPU, where fp16 is 3-4x slower"),
        "val_amp_level": _k("O0", "str", "mixed precision for validation", choices=AMP_LEVELS),
        "keep_checkpoint_max": _k(10, "int", "epoch checkpoints kept (the best is kept separately)"),
        "ckpt_save_dir": _k("./ckpt", "str", "the run directory: config, checkpoints, metrics.jsonl, log"),
        "ckpt_save_interval": _k(1, "int", "epochs between checkpoints"),
        "ckpt_save_policy": _k("latest_k", "str", "which epoch checkpoints to keep", choices=SAVE_POLICIES),
        "epoch_size": _k(90, "int", "training epochs"),
        "dataset_sink_mode": _k(True, "bool", "feed the device through a data queue (where supported)"),
        "ema": _k(False, "bool", "keep an exponential moving average of the weights; validate with it"),
        "ema_decay": _k(0.9999, "float", "EMA decay per step"),
        "clip_grad": _k(False, "bool", "clip gradients by global norm"),
        "clip_value": _k(15.0, "float", "global-norm bound for clip_grad"),
        "gradient_accumulation_steps": _k(1, "int", "only 1 is supported"),
    },
    "optimizer": {
        "opt": _k("adam", "str", "optimizer", choices=OPTIMIZER_CHOICES),
        "momentum": _k(0.9, "float", "momentum (momentum, rmsprop)"),
        "weight_decay": _k(1e-6, "float", "weight decay"),
        "weight_decay_filter": _k("disable", "str", "disable = decay everything; auto / norm_and_bias = "
                                  "no decay on BN and biases", choices=WEIGHT_DECAY_FILTER_CHOICES),
        "use_nesterov": _k(False, "bool", "Nesterov momentum"),
        "eps": _k(1e-10, "float", "optimizer epsilon (rmsprop, adam)"),
        "loss_scale": _k(1.0, "float", "loss scale (initial value when dynamic)"),
        "loss_scale_type": _k("auto", "str", "auto = dynamic on Ascend/GPU, fixed on CPU",
                              choices=LOSS_SCALE_TYPES),
        "drop_overflow_update": _k(False, "bool", "fixed loss scale: skip steps whose gradients overflow"),
    },
    "scheduler": {
        "scheduler": _k("cosine_decay", "str", "LR schedule, computed per step",
                        choices=SCHEDULER_CHOICES),
        "lr": _k(0.001, "float", "peak learning rate"),
        "min_lr": _k(1e-6, "float", "final learning rate (cosine_decay, polynomial)"),
        "warmup_epochs": _k(3, "float", "linear warmup epochs"),
        "warmup_factor": _k(0.0, "float", "warmup starts at lr * warmup_factor"),
        "decay_epochs": _k(100, "int", "epochs of decay after warmup (cosine/polynomial) or between steps"),
        "decay_rate": _k(0.9, "float", "decay factor (step, multi_step, exponential)"),
        "multi_step_decay_milestones": _k([30, 60, 90], "ints", "epochs at which multi_step_decay decays"),
        "lr_epoch_stair": _k(False, "bool", "hold the LR constant within each epoch"),
        "num_cycles": _k(1, "int", "cosine restarts"),
        "cycle_decay": _k(1.0, "float", "peak LR factor per cosine cycle"),
        "poly_power": _k(1.0, "float", "exponent of the polynomial schedule"),
    },
    "loss": {
        "loss": _k("CE", "str", "CE = softmax cross-entropy, BCE = sigmoid binary cross-entropy", choices=LOSS_CHOICES),
        "label_smoothing": _k(0.0, "float", "label smoothing epsilon"),
        "aux_factor": _k(0.0, "float", "accepted for mindcv recipes (MobileNets have no aux head)"),
        "reduction": _k("mean", "str", "loss reduction", choices=TRAIN_REDUCTIONS),
    },
    # Quantization-aware training (mindcv_mobile/quant): MobileNetV2, int8 weights per channel,
    # uint8 activations, BN folded. Step counts are optimizer steps of this run.
    "quant": {
        "quant": _k(False, "bool", "quantization-aware training / evaluation / int8 export of MobileNetV2"),
        "quant_delay": _k(10_000_000, "int", "steps during which activation observers track their EMA "
                          "min/max; then the ranges freeze (default: never, as MindSpore 1.x)"),
        "freeze_bn": _k(10_000_000, "int", "steps that use batch statistics in the folded conv-BN; then the "
                        "moving statistics, frozen (default: never, MindSpore 1.x's value)"),
        "quant_ema_decay": _k(0.999, "float", "decay of the observers' min/max moving average"),
    },
}

KEYS = {name: key for group in SCHEMA.values() for name, key in group.items()}
# Names older mindcv recipes or other tools use for the same key.
ALIASES = {"cutmix_prob": "mixup_prob", "ckpt_interval": "ckpt_save_interval", "nesterov": "use_nesterov",
           "resize": "image_resize", "device": "device_target"}


class ConfigError(ValueError):
    """A recipe or command line that cannot be used, with the reason in one line."""


class Config(dict):
    """The resolved configuration: a dict whose keys are also attributes (``cfg.lr``).

    ``origins`` records where each non-default value came from (a recipe path, "command line"
    or "overrides"): a recipe's ``distribute: True`` is a production default that may fall back
    to a standalone run, an explicit ``--distribute True`` is not.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "origins", {})

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}{closest_hint(name)}") from None

    def __setattr__(self, name: str, value) -> None:
        self[name] = value


def closest_hint(name: str) -> str:
    close = difflib.get_close_matches(name, list(KEYS) + list(ALIASES), n=3, cutoff=0.6)
    close = [ALIASES.get(c, c) for c in close]
    return f"; did you mean {' or '.join(dict.fromkeys(close))}?" if close else ""


def _type_error(name: str, key: Key, value, source: str) -> ConfigError:
    want = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
            "floats": f"a list of {key.length or 'some'} numbers", "ints": "a list of integers"}[key.kind]
    if key.nullable:
        want += " or null"
    return ConfigError(f"{source}: {name} must be {want}, got {value!r}")


def _number_string(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def coerce(name: str, value, source: str = "config"):
    """Check ``value`` against the schema for ``name`` and return it in the key's type."""
    key = KEYS[name]
    if value is None:
        if key.nullable:
            return None
        raise _type_error(name, key, value, source)
    kind = key.kind
    if kind == "bool":
        if isinstance(value, bool):
            out = value
        elif isinstance(value, int) and value in (0, 1):
            out = bool(value)
        elif isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            out = value.lower() in ("true", "yes", "1")
        else:
            raise _type_error(name, key, value, source)
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _type_error(name, key, value, source)
        out = value
    elif kind == "float":
        # PyYAML (YAML 1.1) reads 1e-5 without a dot as a string; Python reads it as a number.
        value = _number_string(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(name, key, value, source)
        out = float(value)
    elif kind == "str":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _type_error(name, key, value, source)
        out = str(value)
    else:  # floats / ints
        if not isinstance(value, (list, tuple)) or (key.length and len(value) != key.length):
            raise _type_error(name, key, value, source)
        item = float if kind == "floats" else int
        value = [_number_string(v) for v in value]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise _type_error(name, key, value, source)
        if item is int and any(float(v) != int(v) for v in value):
            raise _type_error(name, key, value, source)
        out = [item(v) for v in value]
    if key.choices is not None and out not in key.choices:
        choices = ", ".join(repr(c) if c == "" else str(c) for c in key.choices)
        raise ConfigError(f"{source}: {name}={out!r} is not one of: {choices}")
    return out


def defaults() -> Config:
    return Config({name: (list(k.default) if isinstance(k.default, list) else k.default) for name, k in KEYS.items()})


def read_yaml(path: str) -> dict:
    """Read a flat YAML recipe; syntax errors name the file and line."""
    if not os.path.isfile(path):
        raise ConfigError(f"recipe not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        # An unclosed bracket or quote is noticed on a later line; the context says where it opened.
        opened = err.context_mark
        context = (f" ({err.context} started at line {opened.line + 1})"
                   if err.context and opened and err.problem_mark and opened.line != err.problem_mark.line else "")
        raise ConfigError(f"{path}: YAML syntax error at {where}: {err.problem or err}{context}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of key: value lines, got {type(data).__name__}")
    return data


def merge(cfg: Config, values: dict, source: str) -> Config:
    """Apply ``values`` (already parsed) onto ``cfg``, checking names and types."""
    for raw_name, value in values.items():
        name = ALIASES.get(raw_name, raw_name)
        if isinstance(value, dict):
            raise ConfigError(f"{source}: {raw_name} is a section; recipes are flat key: value lines like mindcv's")
        if name not in KEYS:
            raise ConfigError(f"{source}: unknown key {raw_name!r}{closest_hint(raw_name)}")
        cfg[name] = coerce(name, value, source)
        cfg.origins[name] = source
    return cfg


def validate(cfg: Config) -> Config:
    """Checks that involve values, not just types (ranges, combinations)."""
    positive = ("batch_size", "epoch_size", "image_resize", "num_classes", "in_channels", "val_interval",
                "ckpt_save_interval", "log_interval", "num_parallel_workers", "keep_checkpoint_max")
    for name in positive:
        if cfg[name] <= 0:
            raise ConfigError(f"{name} must be positive, got {cfg[name]}")
    if cfg.lr <= 0:
        raise ConfigError(f"lr must be positive, got {cfg.lr}")
    if cfg.loss_scale <= 0:
        raise ConfigError(f"loss_scale must be positive, got {cfg.loss_scale}")
    for name in ("hflip", "vflip", "re_prob", "mixup_prob"):
        if not 0.0 <= cfg[name] <= 1.0:
            raise ConfigError(f"{name} is a probability in [0, 1], got {cfg[name]}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if not 0.0 < cfg.crop_pct <= 1.0:
        raise ConfigError(f"crop_pct must be in (0, 1], got {cfg.crop_pct}")
    if cfg.dataset_download:
        raise ConfigError("dataset_download: True is not supported (no network is assumed); "
                          "place the dataset under data_dir and set dataset_download: False")
    if cfg.aug_repeats > 1:
        raise ConfigError(f"aug_repeats={cfg.aug_repeats} (repeated augmentation) is not supported; use 0")
    if cfg.gradient_accumulation_steps != 1:
        raise ConfigError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} is not supported; use 1")
    if cfg.aux_factor:
        raise ConfigError(f"aux_factor={cfg.aux_factor}: MobileNets have no auxiliary head; use 0")
    if cfg.resume and cfg.ckpt_path:
        raise ConfigError("set either resume (continue a run) or ckpt_path (start from weights), not both")
    if cfg.pretrained and cfg.ckpt_path:
        raise ConfigError("set either pretrained: True or ckpt_path, not both")
    if cfg.quant:
        try:
            check_quant_config(cfg)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return cfg


def load_config(recipe: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Defaults, then the YAML ``recipe``, then ``overrides`` (a dict of key: value)."""
    cfg = defaults()
    if recipe:
        merge(cfg, read_yaml(recipe), recipe)
    if overrides:
        merge(cfg, overrides, "overrides")
    return validate(cfg)


def save_config(cfg: Config, path: str) -> str:
    """Write the resolved config as YAML, atomically."""
    return write_yaml(path, dict(cfg), "config")


def copy_config(cfg: Config) -> Config:
    """An independent copy of ``cfg`` that keeps its ``origins``."""
    out = Config(copy.deepcopy(dict(cfg)))
    out.origins.update(getattr(cfg, "origins", {}))
    return out


# Keys of a run's config.yaml that describe how that run started, not how to use its weights.
_RUN_START_KEYS = ("pretrained", "ckpt_path", "resume", "resume_opt", "distribute")


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
        validate(out)
    except ConfigError as err:
        raise ValueError(f"{err} (read from the run directory of {weights}; pass -c RECIPE to use another)") from None
    _logger.info("configuration from %s (no -c given)", run_config)
    return out
