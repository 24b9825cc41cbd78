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
    "summarize",
    "Summary",
    "SummaryRow",
]

_SUMMARY_NAMES = ("summarize", "Summary", "SummaryRow")


def __getattr__(name: str):
    # Imported on first use: ``python -m mindcv_mobile.models.summary`` must find the module not yet
    # loaded by its package, or runpy warns.
    if name in _SUMMARY_NAMES:
        from . import summary

        return getattr(summary, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
