"""Deployment: one export path for float and QAT (int8) checkpoints, the files' metadata and
verification, ONNX / MINDIR runtimes, and image classification for ``infer.py``.

``export_model`` writes MINDIR / ONNX / AIR files (a QAT checkpoint: deploy-graph MINDIR, int8 and
fp32 ONNX) with ``<file>.json`` metadata and checks each against its reference; ``classify`` runs
a checkpoint, an ``.onnx`` or a ``.mindir`` file on image files (``ClassificationStream`` batch by
batch, ``PredictionsWriter`` writing the predictions file as they come). The workflows behind the entry
scripts are ``tasks.export`` and ``tasks.infer``.
"""

from .classify import (
    Classification,
    ClassificationStream,
    PredictionsWriter,
    classify,
    find_images,
    image_batches,
    predictions_format,
    preprocess,
    write_predictions,
)
from .export import ExportResult, export_model
from .metadata import BATCH_DIM, ExportedFile, read_class_names, read_metadata, write_metadata
from .onnx_int8 import (
    ONNX_OPSET,
    Int8Export,
    export_deploy_mindir,
    export_deploy_onnx,
    export_int8_onnx,
    onnx_range_overrides,
    quantize_onnx,
)
from .runtimes import (
    MindirPredictor,
    OnnxPredictor,
    is_exported,
    load_predictor,
    onnx_session,
    run_exported,
    runtime_op_types,
)
from .verify import INT8_TOLERANCE, LOGIT_TOLERANCE, NOISE_FACTOR, export_tolerance, float32_noise
from .writer import EXPORT_FORMATS

__all__ = [
    "BATCH_DIM",
    "EXPORT_FORMATS",
    "INT8_TOLERANCE",
    "LOGIT_TOLERANCE",
    "NOISE_FACTOR",
    "ONNX_OPSET",
    "Classification",
    "ClassificationStream",
    "ExportResult",
    "ExportedFile",
    "Int8Export",
    "MindirPredictor",
    "OnnxPredictor",
    "PredictionsWriter",
    "classify",
    "export_deploy_mindir",
    "export_deploy_onnx",
    "export_int8_onnx",
    "export_model",
    "export_tolerance",
    "find_images",
    "float32_noise",
    "image_batches",
    "is_exported",
    "load_predictor",
    "onnx_range_overrides",
    "onnx_session",
    "predictions_format",
    "preprocess",
    "quantize_onnx",
    "read_class_names",
    "read_metadata",
    "run_exported",
    "runtime_op_types",
    "write_metadata",
    "write_predictions",
]
