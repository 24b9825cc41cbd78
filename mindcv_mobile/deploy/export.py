"""``export_model``: the one export path, for float and QAT (int8) checkpoints alike.

The network comes from ``build.load_eval_network`` (checked weights; the QAT network when
``cfg.quant``). What is written depends on it:

* a float network: one file of the requested format (MINDIR, ONNX, AIR); an ONNX file is
  rewritten for inference (``writer.optimize_onnx``: BatchNorm folded into the convs, ONNX's
  HardSwish / HardSigmoid ops, opset 14), and checked like any other against the Cell;
* a QAT network, for an output stem ``S`` (default ``<model>_int8``): ``S.mindir``, the deploy
  graph (BN folded, weights on the int8 grid, float arithmetic); ``S_fp32.onnx``, that graph as
  ONNX; ``S.onnx``, the int8 QDQ model quantized from it with the QAT observers' ranges.

Every file goes through ``writer`` and gets ``<file>.json`` metadata from ``metadata``. ONNX files
have a dynamic batch axis, MINDIR and AIR the exported batch. Then (unless ``verify=False``; AIR
cannot run here) every file is run on random images and compared with its reference by
``verify``: float files with the Cell they were exported from, the int8 ONNX with MindSpore's QAT
simulation; one failure removes the whole export.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..build import eval_config, load_eval_network
from ..config import Config
from ..quant import build_deploy_net
from ..runtime import pick_device
from .metadata import BATCH_DIM, ExportedFile, write_metadata
from .onnx_int8 import ONNX_OPSET, check_trained_qat, onnx_range_overrides, quantize_onnx
from .verify import Reference, verify_or_remove
from .writer import EXPORT_FORMATS, remove_export, write_cell

# Random images every exported file is checked on (at least the exported batch): more than one,
# so a dynamic batch axis and the chunking of fixed-batch files are exercised too.
VERIFY_IMAGES = 8
FLOAT_PRECISION = "float32"
DEPLOY_PRECISION = "float32 deploy graph: BN folded, int8-grid weights"
INT8_PRECISION = "int8 QDQ: uint8 activations (QAT ranges), per-channel int8 weights"


@dataclasses.dataclass
class ExportResult:
    """The files of one export (the first is the main one) and the checkpoint they came from."""

    files: list
    checkpoint: str

    def file(self, role: str) -> ExportedFile:
        """The file of ``role`` ("model"; "deploy", "int8", "fp32" for a QAT checkpoint)."""
        for exported in self.files:
            if exported.role == role:
                return exported
        raise KeyError(f"this export wrote no {role!r} file; it has {[f.role for f in self.files]}")

    # The main file's fields, read through (path, file_format, input_shape, metadata_path,
    # max_abs_diff, max_abs_logit, tolerance, ...).
    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("files", "checkpoint"):
            raise AttributeError(name)
        return getattr(self.files[0], name)


@dataclasses.dataclass
class _Plan:
    """What an export writes, in order (each file with the call that writes it), and what each
    file is checked against."""

    steps: list = dataclasses.field(default_factory=list)
    references: dict = dataclasses.field(default_factory=dict)

    def add(self, exported: ExportedFile, write: Callable[[], object], reference: Optional[Reference]) -> None:
        self.steps.append((exported, write))
        if reference is not None:
            self.references[exported.path] = reference

    @property
    def files(self) -> list:
        return [exported for exported, _ in self.steps]


def _check_arguments(file_format: str, batch_size: int) -> str:
    fmt = str(file_format).upper()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"file_format {file_format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"export batch size must be a positive integer, got {batch_size!r}")
    return fmt


def _output_path(cfg: Config, file_format: str, output: Optional[str]) -> str:
    ext = EXPORT_FORMATS[file_format]
    path = output or f"{cfg.model}{ext}"
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        path = os.path.join(path, f"{cfg.model}{ext}")
    root, given = os.path.splitext(path)
    if not given:
        return path + ext
    if given.lower() != ext:
        raise ValueError(
            f"--output {path} ends in {given} but --file_format {file_format} writes {ext} files; "
            f"use --output {root}{ext}"
        )
    return path


def _quant_stem(cfg: Config, output: Optional[str]) -> str:
    path = output or f"{cfg.model}_int8"
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        path = os.path.join(path, f"{cfg.model}_int8")
    for suffix in (".onnx", ".mindir"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _float_plan(
    net: nn.Cell, file_format: str, path: str, x: np.ndarray, images: Optional[np.ndarray], seed: int
) -> _Plan:
    batch = BATCH_DIM if file_format == "ONNX" else len(x)
    exported = ExportedFile(path, file_format, "model", FLOAT_PRECISION, (batch,) + x.shape[1:])
    # The reference is taken before the export traces the Cell.
    reference = Reference.of_float_cell("the MindSpore Cell", net, images, seed) if images is not None else None
    plan = _Plan()
    plan.add(exported, lambda: write_cell(net, ms.Tensor(x), file_format, path, optimize=True), reference)
    return plan


def _quant_plan(net: nn.Cell, stem: str, x: np.ndarray, images: Optional[np.ndarray], seed: int) -> _Plan:
    check_trained_qat(net)
    dynamic = (BATCH_DIM,) + x.shape[1:]
    mindir = ExportedFile(stem + ".mindir", "MINDIR", "deploy", DEPLOY_PRECISION, x.shape)
    fp32 = ExportedFile(stem + "_fp32.onnx", "ONNX", "fp32", DEPLOY_PRECISION, dynamic)
    int8 = ExportedFile(stem + ".onnx", "ONNX", "int8", INT8_PRECISION, dynamic)
    deploy_reference = simulation = None
    if images is not None:
        deploy_reference = Reference.of_float_cell("the deploy-graph Cell", build_deploy_net(net), images, seed)
        simulation = Reference.of_int8_simulation(net, images)
    plan = _Plan()
    # A fresh deploy Cell per file: MindSpore 2.10 crashes exporting one Cell instance twice.
    plan.add(mindir, lambda: write_cell(build_deploy_net(net), ms.Tensor(x), "MINDIR", mindir.path), deploy_reference)
    plan.add(
        fp32,
        lambda: write_cell(build_deploy_net(net), ms.Tensor(x[:1]), "ONNX", fp32.path, ONNX_OPSET),
        deploy_reference,
    )
    plan.add(int8, lambda: quantize_onnx(fp32.path, int8.path, onnx_range_overrides(fp32.path, net)), simulation)
    return plan


def export_model(
    cfg: Config,
    file_format: str = "MINDIR",
    output: Optional[str] = None,
    batch_size: int = 1,
    verify: bool = True,
    seed: int = 0,
) -> ExportResult:
    """Export the weights of ``cfg`` (``ckpt_path`` or ``pretrained``; a QAT checkpoint when
    ``cfg.quant``) and check every written file against its reference.

    Args:
        cfg: the configuration; the input is ``batch_size x in_channels x image_resize x
            image_resize``, with ``image_resize`` from the model record unless set (as in validation).
        file_format: "MINDIR", "ONNX" or "AIR" (AIR needs the Ascend backend) for a float network;
            a QAT network always writes the deploy MINDIR and the int8 and fp32 ONNX files.
        output: the file to write (a missing extension is added), or the stem of a QAT export;
            default ``<model>.<ext>`` / ``<model>_int8``.
        batch_size: the batch of MINDIR and AIR files (ONNX files take any batch).
        verify: run every file and compare its logits with its reference (not for AIR).
        seed: seed of the random check images.

    The caller sets up MindSpore (``runtime.init_runtime``; ``tasks.export`` does).
    """
    fmt = _check_arguments(file_format, batch_size)
    cfg = eval_config(cfg)
    if fmt == "AIR" and cfg.quant:
        raise ValueError(
            "--quant True writes a deploy-graph MINDIR and int8 ONNX files, not AIR; use --file_format MINDIR or ONNX"
        )
    if fmt == "AIR" and pick_device(cfg.device_target) != "Ascend":
        raise RuntimeError(
            f"AIR export needs Ascend: MindSpore writes AIR files only with the Ascend backend, and "
            f"this process runs on {pick_device(cfg.device_target)}; use --file_format MINDIR or ONNX"
        )
    target = _quant_stem(cfg, output) if cfg.quant else _output_path(cfg, fmt, output)
    net = load_eval_network(cfg)  # a fresh Cell for every export
    size = (cfg.in_channels, cfg.image_resize, cfg.image_resize)
    images = np.random.default_rng(seed).standard_normal((max(batch_size, VERIFY_IMAGES),) + size).astype(np.float32)
    x = images[:batch_size]
    check = images if verify and fmt != "AIR" else None
    plan = _quant_plan(net, target, x, check, seed) if cfg.quant else _float_plan(net, fmt, target, x, check, seed)
    checkpoint = net.load_report.path
    written = []
    try:
        for exported, write in plan.steps:
            write()  # a failed write leaves the previous file at its path intact
            written.append(exported.path)
            write_metadata(cfg, exported, checkpoint)
    except BaseException:
        remove_export(written)  # no half export: the files written so far would not match the others
        raise
    if check is not None:
        verify_or_remove(plan.files, plan.references, check)
    return ExportResult(files=plan.files, checkpoint=checkpoint)


__all__ = [
    "DEPLOY_PRECISION",
    "EXPORT_FORMATS",
    "FLOAT_PRECISION",
    "INT8_PRECISION",
    "VERIFY_IMAGES",
    "ExportResult",
    "export_model",
]
