"""Classifying image files: top-k classes with names, from a checkpoint (MindSpore) or an exported
``.onnx`` (onnxruntime) / ``.mindir`` (MindSpore) file.

Images are decoded by ``data.read_image``, which routes each file through the same structure
probe as the training data: a corrupt file is refused before MindSpore's decoder sees it (its
``Decode`` kills the process on a JPEG with a broken Huffman table). An unreadable image is
skipped with a warning naming it; the others are still classified.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from typing import Optional, Sequence

import mindspore as ms
import numpy as np

from ..build import build_transforms, eval_config, load_eval_network, resolve_eval_config, standalone_config
from ..config import Config, copy_config
from ..data import DATASET_INPUTS, IMAGE_EXTENSIONS, read_image
from ..files import atomic_open
from ..run_dir import classes_near
from .metadata import PREPROCESSING_KEYS, metadata_path, read_metadata
from .runtimes import in_batches, is_exported, load_predictor

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Classification:
    """``predictions``: ``[{"path", "top": [{"rank", "index", "class", "probability"}, ...]}, ...]``
    for every readable image; ``skipped``: ``[(path, reason), ...]`` for the others."""

    predictions: list
    skipped: list


def find_images(inputs: Sequence[str]) -> list:
    """Image files from files and folders (searched recursively, sorted; image extensions only)."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [
                    os.path.join(dirpath, n)
                    for n in sorted(filenames)
                    if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
                ]
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"no such image file or folder: {item}")
    if not found:
        raise ValueError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {list(inputs)}")
    return found


def _preprocessed(cfg: Config, paths: Sequence[str], skip_unreadable: bool) -> tuple:
    """(NCHW float32 images, paths kept, [(path, reason)] skipped) with the eval transforms of ``cfg``."""
    ops = build_transforms(cfg, False)
    if DATASET_INPUTS[cfg.dataset] == "encoded":
        ops = ops[1:]  # the pipeline's Decode: files are decoded by read_image
    images, kept, skipped = [], [], []
    for path in paths:
        try:
            image = read_image(path)
        except ValueError as err:
            if not skip_unreadable:
                raise
            _logger.warning("%s; skipped", err)
            skipped.append((path, str(err)))
            continue
        for op in ops:
            image = op(image)
        images.append(image)
        kept.append(path)
    if not images:
        raise ValueError(f"none of the {len(paths)} images could be read: {skipped[0][1]}")
    return np.stack(images).astype(np.float32), kept, skipped


def preprocess(cfg: Config, paths: Sequence[str]) -> np.ndarray:
    """The eval transforms of ``cfg`` (resize, centre crop, normalise) on image files -> NCHW
    float32; an unreadable file is a ValueError naming it."""
    return _preprocessed(cfg, paths, skip_unreadable=False)[0]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _exported_model(cfg: Config, path: str) -> tuple:
    """(predictor, preprocessing config, class names or None) of an exported file: the metadata
    of its ``.json`` wherever the user set nothing."""
    predictor = load_predictor(path)
    meta = read_metadata(path)
    out = copy_config(cfg)
    if meta:
        for key in PREPROCESSING_KEYS:
            if key in meta and key not in cfg.origins:
                out[key] = meta[key]
    else:
        _logger.warning(
            "%s not found: preprocessing from the recipe / defaults (mean/std %s)", metadata_path(path), out.mean
        )
    size = predictor.image_size
    if size is None:
        out = resolve_eval_config(out)
    elif "image_resize" in cfg.origins and cfg.image_resize != size:
        raise ValueError(f"--image_resize {cfg.image_resize} but {path} takes {size}x{size} inputs")
    else:
        out.image_resize = size
    return predictor, out, meta.get("classes")


def _checkpoint_model(cfg: Config) -> tuple:
    """(predictor, preprocessing config, class names or None) of the weights of ``cfg`` in MindSpore."""
    cfg = eval_config(cfg)
    net = load_eval_network(cfg)

    def predictor(images: np.ndarray) -> np.ndarray:
        return in_batches(lambda chunk: net(ms.Tensor(chunk)).asnumpy(), images, cfg.batch_size, pad=False)

    return predictor, cfg, classes_near(net.load_report.path)


def classify(
    cfg: Config,
    inputs: Sequence[str],
    model_file: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
    topk: int = 5,
) -> Classification:
    """Top-``topk`` classes of every readable image in ``inputs`` (files or folders).

    ``model_file``: an ``.onnx`` or ``.mindir`` file, or a checkpoint / None for the weights of
    ``cfg`` (``ckpt_path`` or ``pretrained``). Class names: ``classes``, else the exported file's
    metadata, else ``classes.json`` beside the weights, else label indices. MindSpore must be set
    up by the caller for checkpoints and MINDIR files (``tasks.infer`` does).
    """
    if isinstance(topk, bool) or int(topk) != topk or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    paths = find_images(inputs)
    cfg = standalone_config(cfg)
    model_file = model_file or cfg.ckpt_path or None
    if is_exported(model_file):
        predictor, cfg, found_names = _exported_model(cfg, model_file)
    else:
        if model_file:
            cfg.ckpt_path, cfg.pretrained = model_file, False
        predictor, cfg, found_names = _checkpoint_model(cfg)
    names = list(classes) if classes else found_names
    images, kept, skipped = _preprocessed(cfg, paths, skip_unreadable=True)
    logits = predictor(images)
    num_classes = logits.shape[1]
    if names is not None and len(names) != num_classes:
        raise ValueError(
            f"{len(names)} class names for a model with {num_classes} classes; pass --classes with one name per class"
        )
    names = names or [str(i) for i in range(num_classes)]
    probs = _softmax(logits)
    k = min(int(topk), num_classes)
    predictions = []
    for path, row, scores in zip(kept, probs, logits):
        # Ranked by logits: probabilities of confident predictions underflow to equal zeros.
        order = np.argsort(-scores, kind="stable")[:k]
        predictions.append(
            {
                "path": path,
                "top": [
                    {"rank": r + 1, "index": int(i), "class": names[i], "probability": float(row[i])}
                    for r, i in enumerate(order)
                ],
            }
        )
    return Classification(predictions=predictions, skipped=skipped)


def predictions_format(path: str) -> str:
    """ ".csv" or ".json" from ``path``'s extension; anything else is an error."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json"):
        raise ValueError(f"--output {path}: the extension must be .csv or .json")
    return ext


def write_predictions(predictions: list, path: str) -> str:
    """Write ``classify`` predictions as CSV (one row per image) or JSON, by ``path``'s extension."""
    ext = predictions_format(path)
    with atomic_open(path, what="predictions") as f:
        if ext == ".json":
            json.dump(predictions, f, indent=1)
        else:
            k = max((len(p["top"]) for p in predictions), default=0)
            writer = csv.writer(f)
            writer.writerow(
                ["path"] + [f"top{r}_{field}" for r in range(1, k + 1) for field in ("class", "index", "probability")]
            )
            for p in predictions:
                writer.writerow(
                    [p["path"]] + [v for t in p["top"] for v in (t["class"], t["index"], f"{t['probability']:.6f}")]
                )
    return path


__all__ = ["Classification", "classify", "find_images", "predictions_format", "preprocess", "write_predictions"]
