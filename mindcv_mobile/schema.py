"""The recipe schema: every key, its type, default, help and choices, in one table, plus the
aliases other tools use for the same keys. Choices are read from the factories' own tables, so a
factory and the schema can never disagree on what is accepted.

Groups only organise ``--help``; keys are flat, as in mindcv's recipes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

from .data import DATASET_READERS, INTERPOLATIONS
from .errors import ConfigError
from .models.registry import IMAGENET_MEAN, IMAGENET_STD
from .run_dir import SAVE_POLICIES
from .training.loss import LOSS_CHOICES, TRAIN_REDUCTIONS
from .training.lr import SCHEDULER_CHOICES
from .training.optim import OPTIMIZER_CHOICES, WEIGHT_DECAY_FILTER_CHOICES
from .training.train_step import AMP_LEVELS, LOSS_SCALE_TYPES

DEVICE_CHOICES = ("auto", "Ascend", "GPU", "CPU")


@dataclasses.dataclass(frozen=True)
class Key:
    default: Any
    kind: str  # bool | int | float | str | floats | ints | strs | jitter | fill
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
        "compile_cache": _k(
            True,
            "bool",
            "graph mode: keep the compiled training graph in <cache>/compile/<key> and load it in a later run "
            "of the same recipe (key: recipe, step count, package sources, MindSpore version, device, rank)",
        ),
        "jit_level": _k(
            "",
            "str",
            "graph kernel-by-kernel (O0), fused (O1) or whole-graph sink (O2); '' = MindSpore's "
            "default for the device; applied where the device supports it",
            choices=("", "O0", "O1", "O2"),
        ),
        "distribute": _k(
            None, "bool", "data-parallel over msrun workers; default: what the launcher environment says", nullable=True
        ),
        "val_while_train": _k(False, "bool", "evaluate on val_split every val_interval epochs"),
        "val_interval": _k(1, "int", "epochs between validations"),
        "log_interval": _k(
            100,
            "int",
            "steps between progress lines and TensorBoard step scalars inside an epoch (in sink mode on "
            "Ascend/GPU: about the size of each device sink)",
        ),
        "tensorboard": _k(
            True,
            "bool",
            "write TensorBoard event files (per log_interval steps and per epoch) to <run dir>/tensorboard "
            "(needs the viz extra: pip install mindcv_mobile[viz])",
        ),
        "seed": _k(42, "int", "seed for MindSpore, numpy, random and the data pipeline"),
        "pretrained": _k(
            False, "bool", "start from the model's released weights (downloaded into the cache once, sha256 checked)"
        ),
        "ckpt_path": _k("", "str", "start from this checkpoint (weights; see resume for full state)"),
        "resume": _k("", "str", "continue a run: a checkpoint path, or 'auto' for the newest in ckpt_save_dir"),
        "resume_opt": _k(False, "bool", "mindcv's flag: with ckpt_path, also restore optimizer state and epoch"),
    },
    "dataset": {
        "dataset": _k(
            "imagenet",
            "str",
            "imagenet = any ImageFolder tree; cifar10 = CIFAR-10 binary",
            choices=tuple(DATASET_READERS),
        ),
        "data_dir": _k("./", "str", "dataset root holding the split folders"),
        "train_split": _k("train", "str", "training split folder under data_dir"),
        "val_split": _k("val", "str", "validation split folder under data_dir"),
        "dataset_download": _k(
            False, "bool", "fetch cifar10 / cifar100 / mnist from their official archives into data_dir when missing"
        ),
        "num_parallel_workers": _k(8, "int", "data pipeline workers per process (capped at the CPU count)"),
        "shuffle": _k(True, "bool", "shuffle the training set every epoch"),
        "num_samples": _k(None, "int", "use only this many samples", nullable=True),
        "batch_size": _k(128, "int", "batch size per device (global batch = batch_size x devices)"),
        "drop_remainder": _k(True, "bool", "drop the last incomplete training batch"),
        "aug_repeats": _k(
            0,
            "int",
            "repeated augmentation: an epoch holds about N/r images, each r times, copies on different devices "
            "(0 or 1 = off)",
        ),
        "eval_shuffle": _k(False, "bool", "shuffle the validation data (mindcv's key; metrics do not change)"),
    },
    "augmentation": {
        "image_resize": _k(224, "int", "training crop / eval crop size"),
        "scale": _k([0.08, 1.0], "floats", "RandomResizedCrop area range", length=2),
        "ratio": _k([0.75, 1.333], "floats", "RandomResizedCrop aspect-ratio range", length=2),
        "hflip": _k(0.5, "float", "horizontal flip probability"),
        "vflip": _k(0.0, "float", "vertical flip probability"),
        "color_jitter": _k(
            0.4,
            "jitter",
            "brightness/contrast/saturation jitter, or a list [b, c, s] or [b, c, s, hue] "
            "(ignored when auto_augment is set)",
            nullable=True,
        ),
        "interpolation": _k("bilinear", "str", "resize interpolation", choices=tuple(INTERPOLATIONS)),
        "auto_augment": _k(
            None, "str", "randaug-m9-mstd0.5 style, autoaug, trivialaugwide or augmix-m3-w3", nullable=True
        ),
        "aug_splits": _k(0, "int", "augmentation splits (mindcv's AugMix + JSD); only 0 is supported"),
        "re_prob": _k(0.0, "float", "random erasing probability"),
        "re_scale": _k([0.02, 0.33], "floats", "random erasing area range", length=2),
        "re_ratio": _k([0.3, 3.3], "floats", "random erasing aspect-ratio range", length=2),
        "re_value": _k(0, "fill", "random erasing fill: a value 0-255, [r, g, b], or 'random' (per-pixel normal)"),
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
        "drop_path_rate": _k(
            None,
            "float",
            "stochastic depth of the V2/V3 residual blocks, growing linearly with depth to this rate; "
            "no effect on V1 (no residuals); null or 0 = off",
            nullable=True,
        ),
        "amp_level": _k(
            "O0", "str", "mixed precision for training (CPU resolves O1-O3 to O0 unless forced)", choices=AMP_LEVELS
        ),
        "amp_force": _k(False, "bool", "use amp_level even on CPU, where fp16 is 3-4x slower"),
        "val_amp_level": _k("O0", "str", "mixed precision for validation", choices=AMP_LEVELS),
        "amp_cast_list": _k(
            None,
            "strs",
            "cell types amp_level O1 casts to fp16 (white list) or O2 keeps in fp32 (black list), e.g. "
            "[nn.Conv2d, nn.BatchNorm2d]; null = MindSpore's lists",
            nullable=True,
        ),
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
        "gradient_accumulation_steps": _k(1, "int", "accumulate the gradients of this many batches per update"),
        "layer_decay": _k(
            None, "float", "layer-wise LR decay: the stem's LR is lr * layer_decay**depth", nullable=True
        ),
    },
    "optimizer": {
        "opt": _k("adam", "str", "optimizer", choices=OPTIMIZER_CHOICES),
        "momentum": _k(0.9, "float", "momentum (momentum, rmsprop)"),
        "weight_decay": _k(1e-6, "float", "weight decay"),
        "weight_decay_filter": _k(
            "disable",
            "str",
            "disable = decay everything; auto / norm_and_bias = no decay on BN and biases",
            choices=WEIGHT_DECAY_FILTER_CHOICES,
        ),
        "use_nesterov": _k(False, "bool", "Nesterov momentum"),
        "eps": _k(1e-10, "float", "optimizer epsilon (rmsprop, adam)"),
        "loss_scale": _k(1.0, "float", "loss scale (initial value when dynamic)"),
        "loss_scale_type": _k(
            "fixed",
            "str",
            "fixed (mindcv's default), dynamic, or auto = dynamic on Ascend/GPU; CPU is always fixed",
            choices=LOSS_SCALE_TYPES,
        ),
        "drop_overflow_update": _k(False, "bool", "fixed loss scale: skip steps whose gradients overflow"),
    },
    "scheduler": {
        "scheduler": _k("cosine_decay", "str", "LR schedule, computed per step", choices=SCHEDULER_CHOICES),
        "lr": _k(0.001, "float", "peak learning rate"),
        "min_lr": _k(
            1e-6,
            "float",
            "final LR of cosine_decay, polynomial and one_cycle; base LR of cyclic (step, multi_step, "
            "exponential and polynomial_decay decay past it, as in mindcv)",
        ),
        "warmup_epochs": _k(3, "float", "linear warmup epochs (may be fractional; 0 for one_cycle and cyclic)"),
        "warmup_factor": _k(0.0, "float", "warmup starts at lr * warmup_factor"),
        "decay_epochs": _k(
            100,
            "float",
            "epochs of decay after warmup (cosine_decay, polynomial) or between steps (step_decay); may be fractional",
        ),
        "decay_rate": _k(0.9, "float", "decay factor (step, multi_step, exponential); exponent of polynomial_decay"),
        "multi_step_decay_milestones": _k([30, 60, 90], "floats", "epochs at which multi_step_decay decays"),
        "lr_epoch_stair": _k(False, "bool", "hold the LR constant within each epoch"),
        "num_cycles": _k(1, "int", "cosine restarts; cycles of cyclic"),
        "cycle_decay": _k(1.0, "float", "peak LR factor per cosine cycle"),
        "poly_power": _k(1.0, "float", "exponent of polynomial (mindcv's polynomial_decay uses decay_rate)"),
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
        "quant_delay": _k(
            10_000_000,
            "int",
            "steps during which activation observers track their EMA "
            "min/max; then the ranges freeze (default: never, as MindSpore 1.x)",
        ),
        "freeze_bn": _k(
            10_000_000,
            "int",
            "steps that use batch statistics in the folded conv-BN; then the "
            "moving statistics, frozen (default: never, MindSpore 1.x's value)",
        ),
        "quant_ema_decay": _k(0.999, "float", "decay of the observers' min/max moving average"),
    },
}

KEYS = {name: key for group in SCHEMA.values() for name, key in group.items()}
# Names older mindcv recipes or other tools use for the same key.
ALIASES = {
    "cutmix_prob": "mixup_prob",
    "ckpt_interval": "ckpt_save_interval",
    "nesterov": "use_nesterov",
    "resize": "image_resize",
    "device": "device_target",
    # The MindSpore model zoo's MobileNet scripts and the MobileNetV2 example (README "Coming from
    # the model zoo"); seed 004's config keys not listed are spelt as here already.
    "data_url": "data_dir",
    "dataset_path": "data_dir",
    "pretrain_ckpt": "ckpt_path",
    "platform": "device_target",
    "label_smooth": "label_smoothing",
    "save_checkpoint_epochs": "ckpt_save_interval",
    "save_checkpoint_path": "ckpt_save_dir",
}


# ------------------------------------------------------------------------ value checking
_WANT = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "ints": "a list of integers",
    "strs": "a list of names such as [nn.Conv2d, nn.BatchNorm2d]",
    "jitter": "a number >= 0 or a list [brightness, contrast, saturation(, hue)]",
    "fill": "a value 0-255, a list [r, g, b] of them, or 'random'",
}


def _type_error(name: str, key: Key, value, source: str) -> ConfigError:
    want = _WANT.get(key.kind) or f"a list of {key.length or 'some'} numbers"
    if key.nullable:
        want += " or null"
    return ConfigError(f"{source}: {name} must be {want}, got {value!r}")


def number_string(value):
    """``value`` as a float when it is a string spelling a number: PyYAML (YAML 1.1) reads 1e-5
    without a dot as a string, where Python reads a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(name: str, key: Key, value, source: str, item=float) -> list:
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, key, value, source)
    value = [number_string(v) for v in value]
    if not all(_is_number(v) for v in value) or (item is int and any(float(v) != int(v) for v in value)):
        raise _type_error(name, key, value, source)
    return [item(v) for v in value]


def _names(name: str, key: Key, value, source: str) -> list:
    # mindcv writes a Python list as a string ("[nn.Conv2d, nn.BatchNorm2d]") and eval()s it;
    # here it is only split into names, which the precision step resolves against nn.
    if isinstance(value, str):
        value = [v for v in re.split(r"[\s,\[\]()]+", value) if v]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise _type_error(name, key, value, source)
    return list(value)


def _coerce_kind(name: str, key: Key, value, source: str):
    kind = key.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise _type_error(name, key, value, source)
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(name, key, value, source)
        return value
    if kind == "float":
        value = number_string(value)
        if not _is_number(value):
            raise _type_error(name, key, value, source)
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {name} must be a finite number, got {value}")
        return float(value)
    if kind == "str":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _type_error(name, key, value, source)
        return str(value)
    if kind == "strs":
        return _names(name, key, value, source)
    if kind == "jitter":
        value = number_string(value)
        if _is_number(value):
            return float(value)
        out = _numbers(name, key, value, source)
        if len(out) not in (3, 4):
            raise _type_error(name, key, value, source)
        return out
    if kind == "fill":
        value = number_string(value)
        if isinstance(value, str) and value.lower() == "random":
            return "random"
        out = [value] if _is_number(value) else _numbers(name, key, value, source, item=int)
        if len(out) not in (1, 3) or any(float(v) != int(v) or not 0 <= v <= 255 for v in out):
            raise _type_error(name, key, value, source)
        return int(out[0]) if _is_number(value) else out
    out = _numbers(name, key, value, source, item=float if kind == "floats" else int)
    if key.length and len(out) != key.length:
        raise _type_error(name, key, value, source)
    return out


def coerce(name: str, value, source: str = "config"):
    """Check ``value`` against the schema for ``name`` and return it in the key's type."""
    key = KEYS[name]
    if value is None:
        if key.nullable:
            return None
        raise _type_error(name, key, value, source)
    out = _coerce_kind(name, key, value, source)
    if key.choices is not None and isinstance(out, str) and out not in key.choices:
        # Names match whatever their case (opt: SGD, loss: ce, as mindcv accepts); the table's spelling is kept.
        out = next((c for c in key.choices if isinstance(c, str) and c.lower() == out.lower()), out)
    if key.choices is not None and out not in key.choices:
        choices = ", ".join(repr(c) if c == "" else str(c) for c in key.choices)
        raise ConfigError(f"{source}: {name}={out!r} is not one of: {choices}")
    return out
