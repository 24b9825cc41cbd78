"""Deployment: export a checkpoint to MINDIR / ONNX / AIR, run exported files, classify images.

Export builds a fresh network for every file: MindSpore 2.10 crashes (in BatchNorm) when the same
Cell instance is exported to ONNX twice in one process. Every export is checked by default: the
file is loaded back (MINDIR with ``ms.load`` + ``nn.GraphCell``, ONNX with onnxruntime) and its
logits are compared with the eval-mode Cell on the same random input.

Beside each exported file ``<file>.json`` records what a runtime needs to feed it: input shape,
resize / crop / normalisation and, when the checkpoint's run directory has them, class names.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from .config import Config
from .data import DATASET_INPUTS, IMAGE_EXTENSIONS
from .data.dataset import pil_to_rgb_uint8
from .evaluation import (RUN_CLASSES, build_transforms, copy_config, load_eval_network, resolve_eval_config,
                         standalone_config)
from .models.layers import portable_layers
from .runtime import init_runtime, pick_device

_logger = logging.getLogger(__name__)

EXPORT_FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Exported logits must match the Cell's within max(LOGIT_TOLERANCE * max(1, max |logit|),
# NOISE_FACTOR * noise), noise being how far the Cell's own logits move when its input is
# perturbed by one float32 ulp (relative 2^-23): the float32 rounding any other kernel order
# produces is of that size. Trained MobileNets are well conditioned (digits V3-small: noise ~1e-6,
# ONNX vs Cell 9.5e-7 with logits near 3), where 1e-5 of the logit scale applies; high-gain random
# networks amplify rounding ~1000x (ONNX vs Cell 3e-5 to 1.5e-4, noise 4e-5 to 1.7e-4, logits
# 1-3), where the noise term applies. Real export faults (train-mode BatchNorm, other padding, a
# dropped layer) move logits by 1e-1 and more.
LOGIT_TOLERANCE = 1e-5
NOISE_FACTOR = 10.0
# MindSpore's exporters accept only these characters in a file name; exports are written under
# a temporary name and moved, so any destination path works.
_MS_FILE_NAME = re.compile(r"^[0-9a-zA-Z@\_\-\.\:\/\\]+$")
_JPEG_MAGIC, _PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass
class ExportResult:
    """An exported file and, when it was checked, how far its logits are from the Cell's."""

    path: str
    file_format: str
    input_shape: tuple
    metadata_path: str
    checkpoint: str = ""
    max_abs_diff: Optional[float] = None
    max_abs_logit: Optional[float] = None
    noise: Optional[float] = None

    @property
    def tolerance(self) -> Optional[float]:
        if self.max_abs_logit is None:
            return None
        return export_tolerance(self.max_abs_logit, self.noise or 0.0)


def export_tolerance(max_abs_logit: float, noise: float) -> float:
    """How far exported logits may be from the Cell's (see LOGIT_TOLERANCE)."""
    return max(LOGIT_TOLERANCE * max(1.0, max_abs_logit), NOISE_FACTOR * noise)


def float32_noise(net: nn.Cell, images: np.ndarray, seed: int = 0) -> float:
    """How far ``net``'s outputs move when every input value is changed by one float32 ulp (2^-23
    relative, random sign): the size of the rounding differences another kernel order gives."""
    sign = np.sign(np.random.default_rng(seed).standard_normal(images.shape)).astype(np.float32)
    nudged = (images * (1 + np.float32(2.0 ** -23) * sign)).astype(np.float32)
    return float(np.abs(net(ms.Tensor(nudged)).asnumpy() - net(ms.Tensor(images)).asnumpy()).max())


# ---------------------------------------------------------------------------------------- export
def _output_path(cfg: Config, file_format: str, output: Optional[str]) -> str:
    ext = EXPORT_FORMATS[file_format]
    path = output or f"{cfg.model}{ext}"
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        path = os.path.join(path, f"{cfg.model}{ext}")
    root, given = os.path.splitext(path)
    if not given:
        return path + ext
    if given.lower() != ext:
        raise ValueError(f"--output {path} ends in {given} but --file_format {file_format} writes {ext} files; "
                         f"use --output {root}{ext}")
    return path


def _class_names_near(path: str) -> Optional[list]:
    candidate = os.path.join(os.path.dirname(os.path.abspath(path)), RUN_CLASSES)
    return read_class_names(candidate) if os.path.isfile(candidate) else None


def _write_export(net: nn.Cell, x: ms.Tensor, file_format: str, path: str) -> None:
    """Export into a private temporary folder (MindSpore restricts file-name characters and makes
    the file read-only), then move into place so a failed export never leaves a partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = tempfile.gettempdir()
    work = tempfile.mkdtemp(prefix="mindcv_mobile_export_", dir=base if _MS_FILE_NAME.match(base) else "/tmp")
    try:
        stem = os.path.join(work, "model")
        if file_format == "ONNX":
            ms.onnx.export(net, x, file_name=stem + ".onnx", input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        else:
            ms.export(net, x, file_name=stem, file_format=file_format)
        produced = stem + EXPORT_FORMATS[file_format]
        if not os.path.isfile(produced):
            raise RuntimeError(f"MindSpore wrote no {file_format} file for {path}")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=EXPORT_FORMATS[file_format], dir=folder)
        os.close(fd)
        try:
            shutil.copyfile(produced, tmp)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from other users
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_model(cfg: Config, file_format: str = "MINDIR", output: Optional[str] = None, batch_size: int = 1,
                 verify: bool = True, seed: int = 0) -> ExportResult:
    """Export the weights of ``cfg`` (``ckpt_path`` or ``pretrained``) as ``file_format``.

    Args:
        cfg: the configuration; the input is ``batch_size x in_channels x image_resize x
            image_resize``, with ``image_resize`` from the model record unless set (as in validation).
        file_format: "MINDIR", "ONNX" or "AIR" (AIR needs the Ascend backend).
        output: the file to write; default ``<model>.<ext>``; a missing extension is added.
        batch_size: the exported input's (fixed) batch dimension.
        verify: load the file back and compare its logits with the eval-mode Cell (not for AIR).
        seed: seed of the random check input.
    """
    fmt = str(file_format).upper()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"file_format {file_format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"export batch size must be a positive integer, got {batch_size!r}")
    cfg = resolve_eval_config(standalone_config(cfg))
    if fmt == "AIR" and pick_device(cfg.device_target) != "Ascend":
        raise RuntimeError(f"AIR export needs Ascend: MindSpore writes AIR files only with the Ascend backend, and "
                           f"this process runs on {pick_device(cfg.device_target)}; use --file_format MINDIR or ONNX")
    path = _output_path(cfg, fmt, output)
    init_runtime(cfg)
    with portable_layers():  # MindSpore's own ops only: the file runs elsewhere
        net = load_eval_network(cfg)  # a fresh Cell for every export
    shape = (int(batch_size), cfg.in_channels, cfg.image_resize, cfg.image_resize)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    reference = net(ms.Tensor(x)).asnumpy() if verify and fmt != "AIR" else None
    noise = float32_noise(net, x, seed) if reference is not None else None
    _write_export(net, ms.Tensor(x), fmt, path)
    result = ExportResult(path=path, file_format=fmt, input_shape=shape, metadata_path=path + ".json",
                          checkpoint=net.load_report.path)
    _write_metadata(cfg, result)
    if reference is not None:
        exported = run_exported(path, x)
        result.max_abs_diff = float(np.abs(exported - reference).max())
        result.max_abs_logit = float(np.abs(reference).max())
        result.noise = noise
        if result.max_abs_diff > result.tolerance:
            for written in (path, result.metadata_path):
                os.remove(written)  # an unfaithful model must not look like a finished export
            raise RuntimeError(f"{path}: exported logits differ from the Cell's by up to {result.max_abs_diff:.3g} "
                               f"(tolerance {result.tolerance:.3g}); the export is not faithful and was removed")
        _logger.info("%s: logits match the Cell within %.3g (max |logit| %.3g, float32 noise %.3g, tolerance "
                     "%.3g)", path, result.max_abs_diff, result.max_abs_logit, noise, result.tolerance)
    return result


def _write_metadata(cfg: Config, result: ExportResult) -> None:
    meta = {"model": cfg.model, "num_classes": cfg.num_classes, "file_format": result.file_format,
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "input_shape": list(result.input_shape),
            "dataset": cfg.dataset, "image_resize": cfg.image_resize, "crop_pct": cfg.crop_pct,
            "interpolation": cfg.interpolation, "mean": list(cfg.mean), "std": list(cfg.std),
            "checkpoint": result.checkpoint}
    names = _class_names_near(cfg.ckpt_path) if cfg.ckpt_path else None
    if names is not None:
        meta["classes"] = names
    tmp = result.metadata_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, result.metadata_path)


# ------------------------------------------------------------------------------ exported runtimes
def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("running .onnx files needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


class OnnxPredictor:
    """An exported ``.onnx`` file in onnxruntime (CPU): ``predictor(images NCHW float32) -> logits``.

    A fixed batch dimension (MindSpore exports static shapes) is served in chunks, the last one
    zero-padded.
    """

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file not found: {path}")
        ort = _onnxruntime()
        try:
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable files
            raise ValueError(f"cannot load {path} with onnxruntime: {str(err).splitlines()[0]}") from err
        node = self.session.get_inputs()[0]
        self.input_name = node.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in node.shape)

    @property
    def image_size(self) -> Optional[int]:
        return self.input_shape[-1] if len(self.input_shape) == 4 else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = self.input_shape[0] if self.input_shape and self.input_shape[0] else len(images)
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch].astype(np.float32)
            real = len(chunk)
            if real < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - real,) + chunk.shape[1:], np.float32)])
            outputs.append(self.session.run(None, {self.input_name: chunk})[0][:real])
        return np.concatenate(outputs)


def run_exported(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of an exported ``.mindir`` (``ms.load`` + ``nn.GraphCell``) or ``.onnx`` (onnxruntime) file."""
    if path.lower().endswith(".onnx"):
        return OnnxPredictor(path)(images)
    if path.lower().endswith(".mindir"):
        graph = nn.GraphCell(ms.load(path))
        return graph(ms.Tensor(np.ascontiguousarray(images, dtype=np.float32))).asnumpy()
    raise ValueError(f"cannot run {path}: expected a .mindir or .onnx file")


# ------------------------------------------------------------------------------- classification
def read_class_names(path: str) -> list:
    """Class names in label order from a JSON list (``classes.json`` of a run) or a text file
    with one name per line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith(".json"):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise ValueError(f"{path} must hold a JSON list of class names, got {type(names).__name__}")
        return [str(n) for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_images(inputs: Sequence[str]) -> list:
    """Image files from files and folders (searched recursively, sorted; image extensions only)."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [os.path.join(dirpath, n) for n in sorted(filenames)
                          if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"no such image file or folder: {item}")
    if not found:
        raise ValueError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {list(inputs)}")
    return found


def decode_image(path: str) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB: JPEG/PNG with MindSpore's decoder (as in validation),
    other formats with PIL."""
    import mindspore.dataset.vision as vision

    with open(path, "rb") as f:
        data = f.read()
    if data.startswith((_JPEG_MAGIC, _PNG_MAGIC)):
        try:
            return vision.Decode()(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError:
            pass  # truncated or unusual: PIL below decodes what it can or says why not
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.seek(0)
            return pil_to_rgb_uint8(img)
    except Exception as err:  # noqa: BLE001  PIL raises many types for broken files
        raise ValueError(f"cannot decode {path}: {type(err).__name__}: {err}") from None


def preprocess(cfg: Config, paths: Sequence[str]) -> np.ndarray:
    """The eval transforms of ``cfg`` (resize, centre crop, normalise) on decoded images -> NCHW float32."""
    ops = build_transforms(cfg, False)
    if DATASET_INPUTS[cfg.dataset] == "encoded":
        ops = ops[1:]  # the pipeline's Decode: images are decoded by decode_image
    images = []
    for path in paths:
        image = decode_image(path)
        for op in ops:
            image = op(image)
        images.append(image)
    return np.stack(images).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _onnx_config(cfg: Config, path: str, predictor: OnnxPredictor) -> tuple:
    """Preprocessing for an exported file: its ``.json`` metadata where the user set nothing."""
    out = copy_config(cfg)
    meta_path = path + ".json"
    meta = {}
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        for key in ("dataset", "crop_pct", "interpolation", "mean", "std", "model", "num_classes"):
            if key in meta and key not in cfg.origins:
                out[key] = meta[key]
    else:
        _logger.warning("%s not found: preprocessing from the recipe / defaults (mean/std %s)", meta_path, out.mean)
    size = predictor.image_size
    if size is None:
        out = resolve_eval_config(out)
    elif "image_resize" in cfg.origins and cfg.image_resize != size:
        raise ValueError(f"--image_resize {cfg.image_resize} but {path} takes {size}x{size} inputs")
    else:
        out.image_resize = size
    return out, meta.get("classes")


def classify(cfg: Config, inputs: Sequence[str], model_file: Optional[str] = None,
             classes: Optional[Sequence[str]] = None, topk: int = 5) -> list:
    """Top-``topk`` classes of every image in ``inputs`` (files or folders).

    ``model_file``: a ``.onnx`` file (onnxruntime), or a ``.ckpt`` / None for the weights of
    ``cfg`` (``ckpt_path`` or ``pretrained``) in MindSpore. Class names: ``classes``, else the
    exported file's metadata, else ``classes.json`` beside the weights, else label indices.
    Returns ``[{"path", "top": [{"rank", "index", "class", "probability"}, ...]}, ...]``.
    """
    if isinstance(topk, bool) or int(topk) != topk or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    paths = find_images(inputs)
    cfg = standalone_config(cfg)
    model_file = model_file or cfg.ckpt_path or None
    if model_file and model_file.lower().endswith(".onnx"):
        predictor = OnnxPredictor(model_file)
        cfg, meta_classes = _onnx_config(cfg, model_file, predictor)
        names = list(classes) if classes else meta_classes
    else:
        if model_file:
            cfg.ckpt_path, cfg.pretrained = model_file, False
        cfg = resolve_eval_config(cfg)
        init_runtime(cfg)
        net = load_eval_network(cfg)
        batch = cfg.batch_size

        def predictor(images):
            return np.concatenate([net(ms.Tensor(images[i:i + batch])).asnumpy()
                                   for i in range(0, len(images), batch)])

        names = list(classes) if classes else (_class_names_near(model_file) if model_file else None)
    images = preprocess(cfg, paths)
    logits = predictor(images)
    num_classes = logits.shape[1]
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} classes; "
                         f"pass --classes with one name per class")
    names = names or [str(i) for i in range(num_classes)]
    probs = _softmax(logits)
    k = min(int(topk), num_classes)
    results = []
    for path, row, scores in zip(paths, probs, logits):
        # Ranked by logits: probabilities of confident predictions underflow to equal zeros.
        order = np.argsort(-scores, kind="stable")[:k]
        results.append({"path": path, "top": [
            {"rank": r + 1, "index": int(i), "class": names[i], "probability": float(row[i])}
            for r, i in enumerate(order)]})
    return results


def predictions_format(path: str) -> str:
    """".csv" or ".json" from ``path``'s extension; anything else is an error."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json"):
        raise ValueError(f"--output {path}: the extension must be .csv or .json")
    return ext


def write_predictions(predictions: list, path: str) -> str:
    """Write ``classify`` results as CSV (one row per image) or JSON, by ``path``'s extension."""
    ext = predictions_format(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        if ext == ".json":
            json.dump(predictions, f, indent=1)
        else:
            k = max((len(p["top"]) for p in predictions), default=0)
            writer = csv.writer(f)
            writer.writerow(["path"] + [f"top{r}_{field}" for r in range(1, k + 1)
                                        for field in ("class", "index", "probability")])
            for p in predictions:
                writer.writerow([p["path"]] + [v for t in p["top"]
                                               for v in (t["class"], t["index"], f"{t['probability']:.6f}")])
    os.replace(tmp, path)
    return path


__all__ = [
    "EXPORT_FORMATS", "LOGIT_TOLERANCE", "NOISE_FACTOR", "ExportResult", "OnnxPredictor", "classify", "decode_image",
    "export_model", "export_tolerance", "find_images", "float32_noise", "predictions_format", "preprocess",
    "read_class_names", "run_exported", "write_predictions",
]
