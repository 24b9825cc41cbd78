"""How the deploy package writes a model file, and removes an export that failed.

MindSpore's exporters accept only ``[0-9a-zA-Z@_-.:/\\]`` in a file name and leave read-only
files, so they (and onnxruntime's quantizer) write into a private folder from ``mkdtemp``; the
result is then copied into place through ``files.atomic_path``: a failed export leaves no
partial file, and an unwritable destination is an error naming that destination.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from typing import Iterator, Optional, Sequence

import mindspore as ms
from mindspore import nn

from ..files import atomic_path
from .metadata import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, metadata_path

EXPORT_FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
_MS_FILE_NAME = re.compile(r"^[0-9a-zA-Z@\_\-\.\:\/\\]+$")


@contextlib.contextmanager
def private_folder() -> Iterator[str]:
    """A fresh folder whose path MindSpore's exporters accept; removed with its content afterwards."""
    base = tempfile.gettempdir()
    work = tempfile.mkdtemp(prefix="mindcv_mobile_export_", dir=base if _MS_FILE_NAME.match(base) else "/tmp")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install(produced: str, path: str, what: str) -> str:
    """Copy the finished file ``produced`` to ``path`` atomically (readable by everyone)."""
    with atomic_path(path, what=what) as tmp:
        shutil.copyfile(produced, tmp)
    return path


def write_onnx(model, path: str) -> str:
    """Save an in-memory ONNX model to ``path`` atomically."""
    import onnx

    with atomic_path(path, what="ONNX model") as tmp:
        onnx.save(model, tmp)
    return path


def dynamic_batch(model, opset: Optional[int] = None):
    """``model`` (an ``onnx.ModelProto``) with its first input and output axes named ``BATCH_DIM``,
    converted to ``opset`` when it is older; checked with ``onnx.checker``.

    MindSpore traces one batch size, but the MobileNets have no reshape with a batch in it: only
    the declared input/output shapes (and the inferred ``value_info``, dropped here) pin it.
    """
    import onnx
    from onnx import version_converter

    if opset and model.opset_import[0].version < opset:
        model = version_converter.convert_version(model, opset)
    del model.graph.value_info[:]
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    onnx.checker.check_model(model)
    return model


def write_cell(cell: nn.Cell, x: ms.Tensor, file_format: str, path: str, opset: Optional[int] = None) -> str:
    """Export ``cell`` traced on ``x`` as ``file_format`` to ``path``. ONNX files get a dynamic
    batch axis (and ``opset``, see :func:`dynamic_batch`); MINDIR and AIR keep ``x``'s batch.

    MindSpore 2.10 crashes (in BatchNorm) exporting one Cell instance to ONNX twice: callers
    pass a fresh Cell per file.
    """
    with private_folder() as work:
        stem = os.path.join(work, "model")
        if file_format == "ONNX":
            ms.onnx.export(cell, x, file_name=stem + ".onnx", input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        else:
            ms.export(cell, x, file_name=stem, file_format=file_format)
        produced = stem + EXPORT_FORMATS[file_format]
        if not os.path.isfile(produced):
            raise RuntimeError(f"MindSpore wrote no {file_format} file for {path}")
        if file_format == "ONNX":
            import onnx

            return write_onnx(dynamic_batch(onnx.load(produced), opset), path)
        return install(produced, path, f"{file_format} model")


def remove_export(paths: Sequence[str]) -> list:
    """Remove the files of an export and their ``.json`` metadata; returns what was removed."""
    removed = []
    for path in paths:
        for candidate in (path, metadata_path(path)):
            if os.path.exists(candidate):
                os.remove(candidate)
                removed.append(candidate)
    return removed


__all__ = ["EXPORT_FORMATS", "dynamic_batch", "install", "private_folder", "remove_export", "write_cell", "write_onnx"]
