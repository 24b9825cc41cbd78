"""``infer(cfg, images)``: top-k classes with names for image files, from a checkpoint, an ``.onnx``
or a ``.mindir`` file.

The workflow behind ``infer.py``: class names from a file when given, the MindSpore runtime when
the model runs in MindSpore (checkpoints, MINDIR), ``deploy.classify`` (unreadable images are
skipped with a warning), and the predictions file.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

from ..build import standalone_config
from ..config import Config
from ..deploy import classify, is_exported, predictions_format, read_class_names, write_predictions
from ..runtime import init_runtime, setup_logging


@dataclasses.dataclass
class InferResult:
    """``predictions`` as ``deploy.classify`` gives them, ``skipped`` unreadable images as
    ``[(path, reason)]``, and the predictions file written (or None)."""

    predictions: list
    skipped: list
    output: Optional[str] = None


def infer(
    cfg: Config,
    inputs: Sequence[str],
    classes: Union[str, Sequence[str], None] = None,
    topk: int = 5,
    output: Optional[str] = None,
) -> InferResult:
    """Classify the images of ``inputs`` (files and folders) with ``cfg.ckpt_path`` (a checkpoint,
    ``.onnx`` or ``.mindir``) or the released weights (``pretrained``).

    ``classes``: class names, or a file of them (JSON list, or one per line); ``output``: also
    write the predictions to this ``.csv`` or ``.json`` file.
    """
    if output:
        predictions_format(output)  # a wrong extension fails before any work is done
    names = read_class_names(classes) if isinstance(classes, str) else classes
    setup_logging(None)
    if not cfg.ckpt_path.lower().endswith(".onnx"):
        init_runtime(standalone_config(cfg))  # checkpoints and MINDIR files run in MindSpore
    result = classify(cfg, inputs, classes=names, topk=topk)
    written = write_predictions(result.predictions, output) if output else None
    return InferResult(predictions=result.predictions, skipped=result.skipped, output=written)


def reads_run_config(cfg: Config) -> bool:
    """Whether the weights of ``cfg`` are a checkpoint whose run directory's config.yaml may describe
    the model (an exported file carries its own ``.json`` metadata instead)."""
    return bool(cfg.ckpt_path) and not is_exported(cfg.ckpt_path)


__all__ = ["InferResult", "infer", "reads_run_config"]
