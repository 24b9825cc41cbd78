"""Running exported files: ``.onnx`` in onnxruntime (CPU) and ``.mindir`` in MindSpore.

Every onnxruntime session of the project comes from :func:`onnx_session` (CPU provider, all
graph optimisations: int8 Q/DQ pairs fuse into QLinearConv / QLinearAdd / QGemm kernels). A
predictor is ``predictor(images NCHW float32) -> logits``; files with a fixed batch (MINDIR, or
ONNX exported elsewhere) are fed in chunks of that batch, the last one zero-padded. Its
``run_batch`` is the chunk: a caller streaming images hands over batches of that size.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Callable, Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..host import cpu_cores
from .metadata import metadata_batch, metadata_image_size, read_metadata

EXPORTED_SUFFIXES = (".onnx", ".mindir")
# Images per run for files that take any batch: bounds the activation memory of a long image list.
RUN_BATCH = 32


def is_exported(path: str) -> bool:
    """Whether ``path`` names a file :func:`load_predictor` runs (rather than a checkpoint)."""
    return bool(path) and path.lower().endswith(EXPORTED_SUFFIXES)


def in_batches(
    run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: Optional[int], pad: bool = True
) -> np.ndarray:
    """``run`` on ``images`` in chunks of ``batch``. ``batch`` None (any batch size): chunks of
    ``RUN_BATCH``, unpadded; otherwise with ``pad`` the last chunk is zero-padded to ``batch`` (a
    fixed input shape) and the padding's outputs dropped."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    if batch is None:
        batch, pad = RUN_BATCH, False
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        real = len(chunk)
        if pad and real < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - real,) + chunk.shape[1:], np.float32)])
        outputs.append(run(chunk)[:real])
    return np.concatenate(outputs)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("running .onnx files needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def onnx_session(path: str, optimized_model_path: Optional[str] = None, threads: int = 0):
    """An onnxruntime CPU session for ``path`` with all graph optimisations (conv + activation
    fusion, the blocked NCHWc conv layout) and ``threads`` intra-op threads, by default one per
    core this process may run on (its affinity mask, as MindSpore's runtime counts them;
    onnxruntime's own default counts the host's physical cores)."""
    ort = _onnxruntime()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # not the note that a saved optimized model is CPU-specific
    options.intra_op_num_threads = threads or cpu_cores()
    if optimized_model_path:
        options.optimized_model_filepath = optimized_model_path
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for unreadable files
        raise ValueError(f"cannot load {path} with onnxruntime: {str(err).splitlines()[0]}") from err


class OnnxPredictor:
    """An ``.onnx`` file in onnxruntime: any batch size through a dynamic batch axis, chunks
    of the fixed batch otherwise."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.session = onnx_session(path)
        node = self.session.get_inputs()[0]
        self.input_name = node.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in node.shape)

    @property
    def image_size(self) -> Optional[int]:
        return self.input_shape[-1] if len(self.input_shape) == 4 else None

    @property
    def run_batch(self) -> int:
        """Images per run: the file's fixed batch, else ``RUN_BATCH``."""
        return (self.input_shape[0] if self.input_shape else None) or RUN_BATCH

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = self.input_shape[0] if self.input_shape else None
        return in_batches(lambda chunk: self.session.run(None, {self.input_name: chunk})[0], images, batch)


class MindirPredictor:
    """A ``.mindir`` file in MindSpore (``ms.load`` + ``nn.GraphCell``), fed in chunks of the
    batch its ``.json`` metadata records (of ``RUN_BATCH`` without metadata)."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MINDIR file not found: {path}")
        self.path = path
        meta = read_metadata(path)
        self.batch, self._image_size = metadata_batch(meta), metadata_image_size(meta)
        try:
            self.graph = nn.GraphCell(ms.load(path))
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"cannot load {path} with MindSpore: {str(err).splitlines()[0]}") from err

    @property
    def image_size(self) -> Optional[int]:
        return self._image_size

    @property
    def run_batch(self) -> int:
        """Images per run: the batch of the file's metadata, else ``RUN_BATCH``."""
        return self.batch or RUN_BATCH

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return in_batches(lambda chunk: self.graph(ms.Tensor(chunk)).asnumpy(), images, self.batch)


def load_predictor(path: str):
    """The predictor of an exported ``.onnx`` or ``.mindir`` file."""
    if path.lower().endswith(".onnx"):
        return OnnxPredictor(path)
    if path.lower().endswith(".mindir"):
        return MindirPredictor(path)
    raise ValueError(f"cannot run {path}: expected a .mindir or .onnx file")


def run_exported(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of an exported ``.mindir`` or ``.onnx`` file on ``images``."""
    return load_predictor(path)(images)


def runtime_op_types(path: str) -> Counter:
    """Op types onnxruntime actually runs for the model at ``path`` (after its graph
    optimisations), e.g. QLinearConv for an int8 conv."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        onnx_session(path, optimized_model_path=optimized)
        return Counter(node.op_type for node in onnx.load(optimized).graph.node)


__all__ = [
    "EXPORTED_SUFFIXES",
    "RUN_BATCH",
    "MindirPredictor",
    "OnnxPredictor",
    "in_batches",
    "is_exported",
    "load_predictor",
    "onnx_session",
    "run_exported",
    "runtime_op_types",
]
