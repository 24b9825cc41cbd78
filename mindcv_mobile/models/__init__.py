"""The MobileNet model zoo: ``create_model``, ``list_models`` and the per-model records."""

from .checkpoint import LoadReport, load_checkpoint, load_model_weights, pretrained_path, save_checkpoint
from .features import DEFAULT_OUT_INDICES, MobileNetFeatures
from .layers import make_divisible
from .records import ModelCfg, get_model_cfg, list_models, register_model
from .registry import check_input_size, create_model

__all__ = [
    "create_model",
    "list_models",
    "get_model_cfg",
    "register_model",
    "check_input_size",
    "ModelCfg",
    "make_divisible",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "pretrained_path",
    "LoadReport",
    "MobileNetFeatures",
    "DEFAULT_OUT_INDICES",
]
