"""The recipe schema: every key, its type, default, help and choices, in one table, plus the
aliases other tools use for the same keys. Choices are read from the factories' own tables, so a
factory and the schema can never disagree on what is accepted.

Groups only organise ``--help``; keys are flat, as in mindcv's recipes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from .data import DATASET_READERS, INTERPOLATIONS
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
        "log_interval": _k(100, "int", "steps between log lines inside an epoch (non-sink mode)"),
        "seed": _k(42, "int", "seed for MindSpore, numpy, random and the data pipeline"),
        "pretrained": _k(False, "bool", "start from the model's released weights (local cache)"),
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
        "color_jitter": _k(
            0.4, "float", "brightness/contrast/saturation jitter (ignored when auto_augment is set)", nullable=True
        ),
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
        "amp_level": _k(
            "O0", "str", "mixed precision for training (CPU resolves O1-O3 to O0 unless forced)", choices=AMP_LEVELS
        ),
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
