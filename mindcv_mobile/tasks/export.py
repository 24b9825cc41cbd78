"""``export(cfg)``: a checkpoint in, checked deployable files out (float, or int8 with ``quant``).

The workflow behind ``export.py``: one-process configuration with the model record's
preprocessing, the MindSpore runtime, the exported batch size, then ``deploy.export_model``
(which writes, adds metadata and verifies every file).
"""

from __future__ import annotations

from typing import Optional

from ..build import eval_config
from ..config import Config
from ..deploy import ExportResult, export_model
from ..runtime import init_runtime, setup_logging


def export_batch_size(cfg: Config) -> int:
    """The batch of exported MINDIR / AIR files: ``batch_size`` when given on the command line,
    else 1 (a recipe's ``batch_size`` is a training batch, not a deployment one)."""
    return cfg.batch_size if cfg.origins.get("batch_size") == "command line" else 1


def export(
    cfg: Config,
    file_format: str = "MINDIR",
    output: Optional[str] = None,
    batch_size: Optional[int] = None,
    verify: bool = True,
) -> ExportResult:
    """Export the weights of ``cfg`` (see ``deploy.export_model``); ``batch_size`` None follows
    :func:`export_batch_size`."""
    cfg = eval_config(cfg)
    rt = init_runtime(cfg)
    setup_logging(None, rt.rank)
    return export_model(cfg, file_format, output, batch_size or export_batch_size(cfg), verify=verify)


__all__ = ["export", "export_batch_size"]
