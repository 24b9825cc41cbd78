"""Training's building blocks: loss, per-step LR schedule, optimizers (with Lion, NAdam, Adan and a
CPU-capable LAMB as cells of their own), weight EMA, the train step and the loop's callbacks. The loop
itself is ``mindcv_mobile.tasks.train``."""

from .ema import EMA
from .loss import create_loss
from .lr import create_lr_schedule
from .optim import create_optimizer, layer_ids, split_weight_decay
from .optimizers import Adan, Lamb, Lion, NAdam
from .train_step import Precision, TrainStep, resolve_precision

__all__ = [
    "EMA",
    "create_loss",
    "create_lr_schedule",
    "create_optimizer",
    "split_weight_decay",
    "layer_ids",
    "Lion",
    "NAdam",
    "Adan",
    "Lamb",
    "Precision",
    "TrainStep",
    "resolve_precision",
]
