"""Classifying image files: top-k classes with names, from a checkpoint (MindSpore) or an exported
``.onnx`` (onnxruntime) / ``.mindir`` (MindSpore) file.

Images are decoded by ``data.read_image``, which routes each file through the same structure
probe as the training data: a corrupt file is refused before MindSpore's decoder sees it (its
``Decode`` kills the process on a JPEG with a broken Huffman table). An unreadable image is
skipped with a warning naming it; the others are still classified.

``ClassificationStream`` works batch by batch: a background thread decodes and transforms the
next batch while the model runs the current one, so at most two batches of images are held,
however many files there are. Batches are exactly the chunks the model runs (``batch_size`` for a
checkpoint, the file's batch for an exported one), the readable images in file order, so the
numbers do not depend on how the files were split. ``PredictionsWriter`` writes the predictions
file as they come.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Sequence

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


def _eval_ops(cfg: Config) -> list:
    ops = build_transforms(cfg, False)
    if DATASET_INPUTS[cfg.dataset] == "encoded":
        ops = ops[1:]  # the pipeline's Decode: files are decoded by read_image
    return ops


def _transformed(ops: list, path: str) -> np.ndarray:
    image = read_image(path)
    for op in ops:
        image = op(image)
    return image


def preprocess(cfg: Config, paths: Sequence[str]) -> np.ndarray:
    """The eval transforms of ``cfg`` (resize, centre crop, normalise) on image files -> NCHW
    float32; an unreadable file is a ValueError naming it."""
    ops = _eval_ops(cfg)
    return np.stack([_transformed(ops, path) for path in paths]).astype(np.float32)


def image_batches(cfg: Config, paths: Sequence[str], batch: int, skipped: list) -> Iterator[tuple]:
    """``(NCHW float32 images, their paths, files read so far)`` for batches of ``batch`` readable
    images of ``paths`` in order, with the eval transforms of ``cfg``; each unreadable file is
    logged and appended to ``skipped`` as ``(path, reason)``. The next batch is prepared in a
    background thread while the caller works on the current one."""
    ops = _eval_ops(cfg)
    read = 0

    def readable():
        nonlocal read
        for path in paths:
            read += 1
            try:
                image = _transformed(ops, path)
            except ValueError as err:
                _logger.warning("%s; skipped", err)
                skipped.append((path, str(err)))
                continue
            yield path, image

    source = readable()

    def take() -> tuple:
        chunk = list(itertools.islice(source, batch))
        return chunk, read

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer-images") as pool:
        pending = pool.submit(take)
        while True:
            chunk, done = pending.result()
            if not chunk:
                return
            pending = pool.submit(take)
            images = np.stack([image for _, image in chunk]).astype(np.float32, copy=False)
            yield images, [path for path, _ in chunk], done


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

    predictor.run_batch = cfg.batch_size
    return predictor, cfg, classes_near(net.load_report.path)


def _check_topk(topk) -> int:
    if isinstance(topk, bool) or int(topk) != topk or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return int(topk)


class ClassificationStream:
    """The predictions of :func:`classify`, one list per batch as the model makes them.

    Built with the arguments of :func:`classify`: the model is loaded and the files found at once
    (``paths``), images are read while iterating. ``skipped`` grows as unreadable files are met,
    ``done`` counts the files read so far (readable or not) and ``count`` the images classified.
    Iterating raises ValueError at the end when no file was readable.
    """

    def __init__(
        self,
        cfg: Config,
        inputs: Sequence[str],
        model_file: Optional[str] = None,
        classes: Optional[Sequence[str]] = None,
        topk: int = 5,
    ) -> None:
        self.topk = _check_topk(topk)
        self.paths = find_images(inputs)
        cfg = standalone_config(cfg)
        model_file = model_file or cfg.ckpt_path or None
        if is_exported(model_file):
            self.predictor, self.cfg, found_names = _exported_model(cfg, model_file)
        else:
            if model_file:
                cfg.ckpt_path, cfg.pretrained = model_file, False
            self.predictor, self.cfg, found_names = _checkpoint_model(cfg)
        self.names = list(classes) if classes else found_names
        self.skipped: list = []
        self.done = self.count = 0

    def __iter__(self) -> Iterator[list]:
        for images, paths, done in image_batches(self.cfg, self.paths, self.predictor.run_batch, self.skipped):
            predictions = self._predictions(paths, self.predictor(images))
            self.done, self.count = done, self.count + len(predictions)
            yield predictions
        self.done = len(self.paths)
        if not self.count:
            raise ValueError(f"none of the {len(self.paths)} images could be read: {self.skipped[0][1]}")

    def _predictions(self, paths: list, logits: np.ndarray) -> list:
        num_classes = logits.shape[1]
        if self.names is not None and len(self.names) != num_classes:
            raise ValueError(
                f"{len(self.names)} class names for a model with {num_classes} classes; "
                f"pass --classes with one name per class"
            )
        names = self.names or [str(i) for i in range(num_classes)]
        probs = _softmax(logits)
        k = min(self.topk, num_classes)
        predictions = []
        for path, row, scores in zip(paths, probs, logits):
            # Ranked by logits: probabilities of confident predictions underflow to equal zeros.
            order = np.argsort(-scores, kind="stable")[:k]
            top = [
                {"rank": r + 1, "index": int(i), "class": names[i], "probability": float(row[i])}
                for r, i in enumerate(order)
            ]
            predictions.append({"path": path, "top": top})
        return predictions


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
    up by the caller for checkpoints and MINDIR files (``tasks.infer`` does). All predictions are
    kept in memory: :class:`ClassificationStream` hands them over batch by batch.
    """
    stream = ClassificationStream(cfg, inputs, model_file=model_file, classes=classes, topk=topk)
    predictions = [p for batch in stream for p in batch]
    return Classification(predictions=predictions, skipped=stream.skipped)


def predictions_format(path: str) -> str:
    """ ".csv" or ".json" from ``path``'s extension; anything else is an error."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json"):
        raise ValueError(f"--output {path}: the extension must be .csv or .json")
    return ext


class PredictionsWriter:
    """``with PredictionsWriter(path) as w: w.write(prediction)``: a predictions file (CSV, one row
    per image, or a JSON list, by ``path``'s extension) written as predictions come. The file
    appears, complete, when the block ends without an error; its bytes are those of
    ``json.dump(predictions, f, indent=1)`` or of the CSV of :func:`write_predictions`."""

    def __init__(self, path: str) -> None:
        self.ext = predictions_format(path)
        self.path = path
        self.count = 0

    def __enter__(self) -> "PredictionsWriter":
        self._opened = atomic_open(self.path, what="predictions")
        self._file = self._opened.__enter__()
        self._csv = csv.writer(self._file) if self.ext == ".csv" else None
        return self

    def write(self, prediction: dict) -> None:
        if self._csv is not None:
            if not self.count:
                self._header(len(prediction["top"]))
            top = prediction["top"]
            self._csv.writerow(
                [prediction["path"]] + [v for t in top for v in (t["class"], t["index"], f"{t['probability']:.6f}")]
            )
        else:
            text = json.dumps(prediction, indent=1).replace("\n", "\n ")
            self._file.write(("[\n " if not self.count else ",\n ") + text)
        self.count += 1

    def _header(self, k: int) -> None:
        fields = [f"top{r}_{field}" for r in range(1, k + 1) for field in ("class", "index", "probability")]
        self._csv.writerow(["path"] + fields)

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            if self._csv is not None and not self.count:
                self._header(0)
            elif self._csv is None:
                self._file.write("\n]" if self.count else "[]")
        return self._opened.__exit__(*exc)


def write_predictions(predictions: list, path: str) -> str:
    """Write ``classify`` predictions as CSV (one row per image) or JSON, by ``path``'s extension."""
    with PredictionsWriter(path) as writer:
        for p in predictions:
            writer.write(p)
    return path


__all__ = [
    "Classification",
    "ClassificationStream",
    "PredictionsWriter",
    "classify",
    "find_images",
    "image_batches",
    "predictions_format",
    "preprocess",
    "write_predictions",
]
