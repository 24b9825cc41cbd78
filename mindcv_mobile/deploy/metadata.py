"""``<file>.json`` beside every exported file: what a runtime needs to feed it.

Input name and shape, the eval preprocessing (resize, crop, normalisation), the precision and,
when the checkpoint's run directory has them, the class names. ``infer.py`` reads it back for
``.onnx`` and ``.mindir`` files, so an exported file classifies images without its recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from ..config import Config
from ..files import write_json
from ..run_dir import classes_near, read_json

INPUT_NAME, OUTPUT_NAME = "image", "logits"
# The name of a dynamic batch axis, in ONNX graphs and in the metadata's input_shape.
BATCH_DIM = "batch"
# Metadata keys that set the preprocessing of an exported file where the user set nothing.
PREPROCESSING_KEYS = ("dataset", "crop_pct", "interpolation", "mean", "std", "model", "num_classes")


@dataclasses.dataclass
class ExportedFile:
    """One written file and, once checked, how far its logits are from its reference.

    ``role``: "model" (a float export), or for a QAT checkpoint "deploy" (the deploy-graph MINDIR),
    "int8" (the int8 ONNX) and "fp32" (the float ONNX the int8 one was quantized from).
    ``input_shape`` holds ``BATCH_DIM`` for a dynamic batch axis.
    """

    path: str
    file_format: str
    role: str
    precision: str
    input_shape: tuple
    compared_with: str = ""
    max_abs_diff: Optional[float] = None
    max_abs_logit: Optional[float] = None
    tolerance: Optional[float] = None
    top1_agreement: Optional[float] = None

    @property
    def metadata_path(self) -> str:
        return metadata_path(self.path)

    @property
    def shape_text(self) -> str:
        """``1x3x224x224``, or ``Nx3x224x224`` for a dynamic batch."""
        return "x".join("N" if d == BATCH_DIM else str(d) for d in self.input_shape)


def metadata_path(path: str) -> str:
    return os.fspath(path) + ".json"


def write_metadata(cfg: Config, exported: ExportedFile, checkpoint: str) -> str:
    """Write ``<file>.json`` for ``exported`` (preprocessing from ``cfg``, class names from the run
    directory of ``checkpoint`` when it has a classes.json); returns its path."""
    meta = {
        "model": cfg.model,
        "num_classes": cfg.num_classes,
        "file_format": exported.file_format,
        "precision": exported.precision,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": list(exported.input_shape),
        "dataset": cfg.dataset,
        "image_resize": cfg.image_resize,
        "crop_pct": cfg.crop_pct,
        "interpolation": cfg.interpolation,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "checkpoint": checkpoint,
    }
    names = classes_near(checkpoint) if checkpoint else None
    if names is not None:
        meta["classes"] = names
    return write_json(exported.metadata_path, meta, what="export metadata")


def read_metadata(path: str) -> dict:
    """The ``<file>.json`` of an exported file, or {} when there is none."""
    meta_path = metadata_path(path)
    if not os.path.isfile(meta_path):
        return {}
    meta = read_json(meta_path, "export metadata")
    if not isinstance(meta, dict):
        raise ValueError(f"export metadata {meta_path} must hold a JSON object, got {type(meta).__name__}")
    return meta


def metadata_batch(meta: dict) -> Optional[int]:
    """The fixed batch the metadata records, or None (dynamic or unknown)."""
    shape = meta.get("input_shape") or [None]
    return shape[0] if isinstance(shape[0], int) else None


def metadata_image_size(meta: dict) -> Optional[int]:
    """The input's height (= width) the metadata records, or None."""
    shape = meta.get("input_shape") or []
    return shape[-1] if len(shape) == 4 and isinstance(shape[-1], int) else None


def read_class_names(path: str) -> list:
    """Class names in label order from a JSON list (``classes.json`` of a run) or a text file
    with one name per line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"class names file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise ValueError(f"{path} must hold a JSON list of class names, got {type(names).__name__}")
        return [str(n) for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


__all__ = [
    "BATCH_DIM",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PREPROCESSING_KEYS",
    "ExportedFile",
    "metadata_batch",
    "metadata_image_size",
    "metadata_path",
    "read_class_names",
    "read_metadata",
    "write_metadata",
]
