"""How the deploy package writes a model file, and removes an export that failed.

MindSpore's exporters accept only ``[0-9a-zA-Z@_-.:/\\]`` in a file name and leave read-only
files, so they (and onnxruntime's quantizer) write into a private folder from ``mkdtemp``; the
result is then copied into place through ``files.atomic_path``: a failed export leaves no
partial file, and an unwritable destination is an error naming that destination.

Float ONNX files are rewritten for inference (:func:`optimize_onnx`): MindSpore writes every
BatchNorm as its own node and hard-swish / hard-sigmoid as the elementwise graph of the eval
Cells (its exporter has no mapping for the fused ops), which onnxruntime's fusions cannot see
through: each activation then leaves its blocked (NCHWc) conv layout and comes back, four
memory passes plus two reorders per activation.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from typing import Iterator, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from ..files import atomic_path
from .metadata import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, metadata_path

EXPORT_FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
# The opset of optimized ONNX files: HardSwish exists from opset 14.
OPTIMIZED_OPSET = 14
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


class _GraphIndex:
    """Who produces and who reads each tensor of an ONNX model's graph, its constants, and (on
    demand, from ONNX shape inference) the rank of its tensors."""

    def __init__(self, model) -> None:
        self.model = model
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_outputs = {v.name for v in graph.output}
        self.consumers: dict = {}
        self.producer = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.producer[name] = node
        self._ranks: Optional[dict] = None

    def array(self, name: str) -> Optional[np.ndarray]:
        from onnx import numpy_helper

        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def is_scalar(self, name: str, value: float) -> bool:
        array = self.array(name)
        return array is not None and array.size == 1 and float(array.reshape(())) == value

    def rank(self, name: str) -> Optional[int]:
        if self._ranks is None:
            from onnx import shape_inference

            graph = shape_inference.infer_shapes(self.model).graph
            self._ranks = {
                v.name: len(v.type.tensor_type.shape.dim)
                for v in list(graph.value_info) + list(graph.input)
                if v.type.tensor_type.HasField("shape")
            }
        return self._ranks.get(name)

    def sole_reader(self, name: str, op_type: str):
        """The node reading tensor ``name`` if it is its only reader and of ``op_type``."""
        readers = self.consumers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == op_type and name not in self.graph_outputs:
            return readers[0]
        return None

    @staticmethod
    def other_input(node, name: str) -> Optional[str]:
        """The other input of the two-input ``node`` one of whose inputs is ``name``."""
        if len(node.input) == 2 and list(node.input).count(name) == 1:
            return node.input[1] if node.input[0] == name else node.input[0]
        return None


# A rewrite takes the index and a node of its op type and returns (the nodes it replaces, the
# nodes replacing them, new initializers) or None when the node does not start its pattern.


def _fold_batch_norm(index: _GraphIndex, norm):
    """Conv -> BatchNormalization (inference form, constant statistics) as one Conv whose
    weight and bias carry the normalisation, computed in float64: ``w * s`` and
    ``(b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``."""
    from onnx import helper, numpy_helper

    conv = index.producer.get(norm.input[0])
    if conv is None or conv.op_type != "Conv" or index.sole_reader(conv.output[0], "BatchNormalization") is not norm:
        return None
    params = [index.array(name) for name in norm.input[1:5]]
    weight_name = conv.input[1]
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
    weight, bias = index.array(weight_name), index.array(bias_name) if bias_name else None
    if len(norm.output) != 1 or weight is None or any(p is None for p in params) or (bias_name and bias is None):
        return None
    if any(a.name == "training_mode" and a.i for a in norm.attribute):
        return None  # normalises with the batch's statistics
    if any(len(index.consumers[name]) != 1 for name in (weight_name, bias_name) if name):
        return None  # a constant shared with another node keeps its value
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + epsilon)
    if not bias_name:
        bias = np.zeros(weight.shape[0])
        bias_name = weight_name[: -len("weight")] + "bias" if weight_name.endswith(".weight") else ""
        if not bias_name or bias_name in index.initializers:
            bias_name = f"{norm.output[0]}_bias"
    folded_weight = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    folded_bias = (bias.astype(np.float64) - mean) * scale + beta
    fused = helper.make_node("Conv", [conv.input[0], weight_name, bias_name], [norm.output[0]], name=conv.name)
    fused.attribute.extend(conv.attribute)
    constants = [
        numpy_helper.from_array(folded_weight.astype(np.float32), weight_name),
        numpy_helper.from_array(folded_bias.astype(np.float32), bias_name),
    ]
    return [conv, norm], [fused], constants


def _hard_activation(index: _GraphIndex, add):
    """``Add(x, 3) -> Clip(0, 6) -> Div(6)`` as HardSigmoid(x) (alpha 1/6, beta 1/2), and
    ``Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(6)`` as HardSwish(x)."""
    from onnx import helper

    x = next((name for name in add.input if not index.is_scalar(name, 3.0)), None)
    if x is None or not index.is_scalar(index.other_input(add, x) or "", 3.0):
        return None
    clip = index.sole_reader(add.output[0], "Clip")
    if clip is None or len(clip.input) != 3 or clip.input[0] != add.output[0]:
        return None
    if not (index.is_scalar(clip.input[1], 0.0) and index.is_scalar(clip.input[2], 6.0)):
        return None
    div = index.sole_reader(clip.output[0], "Div")
    if div is not None and div.input[0] == clip.output[0] and index.is_scalar(div.input[1], 6.0):
        return [add, clip, div], [helper.make_node("HardSigmoid", [x], [div.output[0]], alpha=1.0 / 6.0, beta=0.5)], []
    mul = index.sole_reader(clip.output[0], "Mul")
    if mul is None or index.other_input(mul, clip.output[0]) != x:
        return None
    div = index.sole_reader(mul.output[0], "Div")
    if div is not None and div.input[0] == mul.output[0] and index.is_scalar(div.input[1], 6.0):
        return [add, clip, mul, div], [helper.make_node("HardSwish", [x], [div.output[0]])], []
    return None


def _global_pool(index: _GraphIndex, mean):
    """ReduceMean over H and W of an NCHW tensor as GlobalAveragePool (+ Flatten when it drops
    the axes): onnxruntime keeps that pool in the blocked layout of the convs around it."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in mean.attribute}
    axes = sorted(attributes.get("axes") or [])
    if len(mean.input) != 1 or axes not in ([2, 3], [-2, -1]) or index.rank(mean.input[0]) != 4:
        return None
    if attributes.get("keepdims", 1):
        return [mean], [helper.make_node("GlobalAveragePool", [mean.input[0]], [mean.output[0]])], []
    pooled = f"{mean.output[0]}_pooled"
    pool = helper.make_node("GlobalAveragePool", [mean.input[0]], [pooled])
    return [mean], [pool, helper.make_node("Flatten", [pooled], [mean.output[0]], axis=1)], []


_REWRITES = (("BatchNormalization", _fold_batch_norm), ("Add", _hard_activation), ("ReduceMean", _global_pool))


def _apply(model, op_type: str, rewrite) -> int:
    """``rewrite`` on every ``op_type`` node of ``model``, in place; returns the number of matches.
    The new nodes of a match take the place of the last node it replaces (its inputs come earlier).
    Nodes are told apart by their outputs (unique in a valid graph)."""
    graph = model.graph
    index = _GraphIndex(model)
    position = {tuple(node.output): i for i, node in enumerate(graph.node)}
    removed, placed, constants = set(), {}, {}
    for node in graph.node:
        if node.op_type != op_type or tuple(node.output) in removed:
            continue
        match = rewrite(index, node)
        if match is None:
            continue
        old, new, tensors = match
        removed.update(tuple(n.output) for n in old)
        placed[max(position[tuple(n.output)] for n in old)] = new
        constants.update((t.name, t) for t in tensors)
    nodes = []
    for i, node in enumerate(graph.node):
        nodes.extend(placed.get(i, [] if tuple(node.output) in removed else [node]))
    initializers = [constants.pop(t.name, t) for t in graph.initializer] + list(constants.values())
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    return len(placed)


def optimize_onnx(model):
    """``model`` (an ``onnx.ModelProto``, converted to opset ``OPTIMIZED_OPSET`` when older,
    else rewritten in place) with every Conv -> BatchNormalization folded into one Conv, the
    elementwise hard-swish and hard-sigmoid graphs replaced by ONNX's HardSwish and HardSigmoid
    ops, and ReduceMean over H, W by GlobalAveragePool; constants left unused are dropped. The
    same function up to float32 rounding; onnxruntime then fuses each activation into its conv."""
    import onnx
    from onnx import version_converter

    if model.opset_import[0].version < OPTIMIZED_OPSET:
        model = version_converter.convert_version(model, OPTIMIZED_OPSET)
    for op_type, rewrite in _REWRITES:
        _apply(model, op_type, rewrite)
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


def write_cell(
    cell: nn.Cell, x: ms.Tensor, file_format: str, path: str, opset: Optional[int] = None, optimize: bool = False
) -> str:
    """Export ``cell`` traced on ``x`` as ``file_format`` to ``path``. ONNX files get a dynamic
    batch axis (and ``opset``, see :func:`dynamic_batch`), with ``optimize`` the rewrites of
    :func:`optimize_onnx`; MINDIR and AIR keep ``x``'s batch.

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

            model = onnx.load(produced)
            return write_onnx(dynamic_batch(optimize_onnx(model) if optimize else model, opset), path)
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


__all__ = [
    "EXPORT_FORMATS",
    "OPTIMIZED_OPSET",
    "dynamic_batch",
    "install",
    "optimize_onnx",
    "private_folder",
    "remove_export",
    "write_cell",
    "write_onnx",
]
