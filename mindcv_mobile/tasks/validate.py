"""``validate(cfg)``: score a checkpoint's top-1 / top-5 on a split, with checked weights;
``validate_checkpoints(cfgs)``: several checkpoints, one network per model; an exported
``.onnx`` / ``.mindir`` file is scored like a checkpoint, in its runtime.

What validation adds to the trainer's evaluation:

- weights are mandatory and checked (``build.load_eval_network``): a missing or unreadable file,
  a checkpoint that leaves any parameter at its initialisation, or a classifier of another size
  than ``num_classes`` is an error (training drops such a head to fine-tune; scoring it would
  measure random weights). The one exception is mindcv's 1001-class MobileNetV1 release
  validated with 1000 classes, whose first 1000 rows are the ImageFolder classes.
- the eval resolution follows the model's record where the user set none
  (``build.resolve_eval_config``).
- a report per checkpoint (:class:`ValidationReport`): the metrics, the confusion matrix of the
  same predictions (per-class accuracy), the class names and the time taken.

An exported file (see :func:`exported_config`) is scored with the preprocessing, model name,
class count and class names of the ``<file>.json`` export.py wrote beside it: they replace the
recipe's (or the run's config.yaml) values, and a command-line value that disagrees is an error,
so the number reported is the file's as deployed. Images come from the same dataset pipeline
(its workers prepare the next batches while the runtime works): ONNX files take ``batch_size``
images per run, MINDIR files their exported batch (the last batch padded, the padding's outputs
dropped). The loss is the recipe's loss Cell on the file's logits, as for a checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from typing import Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from ..build import (
    build_eval_loader,
    build_eval_network,
    build_loss,
    eval_config,
    eval_precision,
    fetch_dataset,
    load_eval_network,
    weights_path,
)
from ..config import Config, config_from_run_dir, copy_config, merge
from ..data import class_names
from ..deploy import OnnxPredictor, is_exported, load_predictor, read_metadata
from ..deploy.metadata import metadata_image_size, metadata_path
from ..evaluation import class_labels, eval_metrics, per_class_rows, summary_line
from ..run_dir import CONFIG as RUN_CONFIG
from ..run_dir import classes_near
from ..runtime import Runtime, init_runtime, setup_logging
from ..schema import SCHEMA

_logger = logging.getLogger(__name__)

# Keys that shape the evaluated network (its loss included): checkpoints whose configurations
# agree on them are scored by one network, compiled once, with each checkpoint's weights loaded.
NETWORK_KEYS = (
    "mode",
    "device_target",
    "jit_level",
    "model",
    "num_classes",
    "in_channels",
    "drop_rate",
    "val_amp_level",
    "amp_force",
    "amp_cast_list",
    *SCHEMA["loss"],
    *SCHEMA["quant"],
)
# ... and these, with the class list, the val loader.
LOADER_KEYS = (*NETWORK_KEYS, *SCHEMA["dataset"], *SCHEMA["augmentation"])
# "<model>-<epoch>_<step>.ckpt" (training's epoch checkpoints) and "<model>-best.ckpt".
EPOCH_CHECKPOINT = re.compile(r"-(\d+)_(\d+)\.ckpt$")
BEST_SUFFIX = "-best.ckpt"
# What an exported file's .json fixes for its scoring (the input size: its input_shape).
EXPORTED_KEYS = ("model", "num_classes", "dataset", "image_resize", "crop_pct", "interpolation", "mean", "std")


@dataclasses.dataclass
class ValidationReport:
    """One checkpoint (or exported file) scored. ``metrics``: ``{'Top_1_Accuracy', 'Top_5_Accuracy'
    (None below 5 classes), 'loss', 'samples'}``; ``confusion``: ``num_classes`` x ``num_classes``
    counts, rows true class, columns the class ranked first (its trace is the top-1 correct count)."""

    checkpoint: str
    epoch: Optional[int]
    model: str
    data: str
    classes: list
    metrics: dict
    confusion: np.ndarray
    seconds: float

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def names(self) -> list:
        """A name for every output (the confusion matrix's rows and columns)."""
        return class_labels(self.classes, self.confusion.shape[0])

    def per_class(self) -> list:
        return per_class_rows(self.confusion, self.classes)

    def summary(self) -> str:
        return summary_line(self.model, self.data, self.metrics, self.correct, self.seconds)

    def row(self) -> dict:
        """The checkpoints-table row: ``{"checkpoint", "epoch", **metrics}``."""
        return {"checkpoint": self.checkpoint, "epoch": self.epoch, **self.metrics}


def run_classes(cfg: Config) -> tuple:
    """The class list labels come from, and where it was found: the ``classes.json`` of the run
    that wrote the checkpoint, else the training split beside the val split, else (no training
    split) the val split's own class folders."""
    near = classes_near(weights_path(cfg))
    if near is not None:
        return near, f"the class list of {weights_path(cfg)}'s run"
    train_dir = os.path.join(cfg.data_dir, cfg.train_split)
    split = cfg.train_split if cfg.dataset != "imagenet" or os.path.isdir(train_dir) else cfg.val_split
    if split == cfg.val_split:
        _logger.info(
            "no classes.json beside the checkpoint and no %s: labels follow the class folders of %s/%s",
            train_dir,
            cfg.data_dir,
            cfg.val_split,
        )
    return class_names(cfg.data_dir, split, cfg.dataset), f"{cfg.data_dir}/{split}"


def run_checkpoints(folder: str) -> list:
    """The ``.ckpt`` files of a run directory: epoch checkpoints by epoch, any others by name,
    then the best."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".ckpt") and not n.startswith("."))
    if not names:
        raise FileNotFoundError(f"no .ckpt file in {folder}; pass a run directory (ckpt_save_dir) or .ckpt files")
    epochs = sorted((n for n in names if EPOCH_CHECKPOINT.search(n)), key=_epoch_step)
    best = [n for n in names if n.endswith(BEST_SUFFIX)]
    others = [n for n in names if n not in epochs and n not in best]
    return [os.path.join(folder, n) for n in epochs + others + best]


def _epoch_step(name: str) -> tuple:
    match = EPOCH_CHECKPOINT.search(name)
    return int(match.group(1)), int(match.group(2)), name


def exported_metadata(path: str) -> dict:
    """The ``<file>.json`` of an exported file; FileNotFoundError when the file or its .json is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported file not found: {path}")
    meta = read_metadata(path)
    if not meta:
        raise FileNotFoundError(
            f"{metadata_path(path)} not found: scoring {path} needs the .json that export.py writes beside it "
            f"(input shape, preprocessing, class names); export the checkpoint again with export.py"
        )
    return meta


def exported_config(cfg: Config) -> Config:
    """``cfg`` for scoring the exported file ``cfg.ckpt_path``: the keys of ``EXPORTED_KEYS`` from
    its .json (the input size from its input shape) over the recipe's; ValueError when a value set
    on the command line disagrees with the file's."""
    path = cfg.ckpt_path
    meta = exported_metadata(path)
    recorded = {key: meta[key] for key in EXPORTED_KEYS if key in meta}
    if metadata_image_size(meta) is not None:
        recorded["image_resize"] = metadata_image_size(meta)
    out = merge(copy_config(cfg), recorded, metadata_path(path))
    for key in recorded:
        if cfg.origins.get(key) in ("command line", "overrides") and cfg[key] != out[key]:
            raise ValueError(
                f"--{key} {cfg[key]} but {path} was exported with {key} {out[key]} ({metadata_path(path)}); "
                f"drop --{key}: an exported file is scored as it was exported"
            )
    return out


def _run_weights(path: str) -> str:
    """The file whose run directory holds the recipe of ``path``: itself, or for an exported file
    without a run config.yaml beside it, the checkpoint it was exported from (its .json says which)."""
    if not is_exported(path) or os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(path)), RUN_CONFIG)):
        return path
    return exported_metadata(path).get("checkpoint") or path


def checkpoint_configs(cfg: Config, paths: Sequence[str], from_run: bool = True) -> list:
    """One configuration per checkpoint of ``paths`` (files, or run directories for all their
    checkpoints, see :func:`run_checkpoints`): ``cfg`` with that ``ckpt_path`` and, when
    ``from_run`` (no -c given), rebuilt on the ``config.yaml`` of the checkpoint's run (for an
    exported file: of the run of the checkpoint it was exported from, unless one is beside it)."""
    files = []
    for path in [p for p in paths if p] or [cfg.ckpt_path]:
        files.extend(run_checkpoints(path) if path and os.path.isdir(path) else [path])
    out = []
    for path in files:
        one = copy_config(cfg)
        one.ckpt_path = path
        if from_run and path:
            one = config_from_run_dir(one, _run_weights(path))
            one.ckpt_path = path
        out.append(one)
    return out


def checkpoint_epoch(path: str) -> Optional[int]:
    """The epoch a training checkpoint was written at (its ``epoch_num``, else its file name)."""
    try:
        state = ms.load_checkpoint(path, choice_func=lambda name: name == "epoch_num")
    except Exception:  # a released or foreign checkpoint may be in any format; the epoch is optional
        state = {}
    if "epoch_num" in state:
        return int(state["epoch_num"].asnumpy())
    match = EPOCH_CHECKPOINT.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def _key(cfg: Config, keys: Sequence[str]) -> str:
    return repr([(k, cfg[k]) for k in keys])


def _check_classes(cfg: Config, classes: list, source: str) -> None:
    if len(classes) > cfg.num_classes:
        raise ValueError(
            f"{source} has {len(classes)} classes but num_classes is {cfg.num_classes}; "
            f"set --num_classes {len(classes)}"
        )


def _report(cfg: Config, path: str, epoch, model: str, classes: list, raw: dict, seconds: float) -> ValidationReport:
    """The report of one evaluation from the raw values of :func:`eval_metrics`."""
    metrics = {
        "Top_1_Accuracy": float(raw["Top_1_Accuracy"]),
        "Top_5_Accuracy": float(raw["Top_5_Accuracy"]) if "Top_5_Accuracy" in raw else None,
        "loss": float(raw["loss"]),
        "samples": int(raw["samples"]),
    }
    if metrics["Top_5_Accuracy"] is None:
        _logger.info("Top_5_Accuracy: n/a (%d classes: top-5 would always be 1)", cfg.num_classes)
    data = os.path.join(cfg.data_dir, cfg.val_split)
    return ValidationReport(path, epoch, model, data, list(classes), metrics, raw["confusion"], seconds)


def _exported_logits(predictor, fixed: Optional[int], images: np.ndarray) -> np.ndarray:
    if fixed is None and isinstance(predictor, OnnxPredictor):  # a dynamic batch axis: the batch in one run
        return predictor.session.run(None, {predictor.input_name: np.ascontiguousarray(images, np.float32)})[0]
    return predictor(images)  # chunks of the fixed batch, the last one padded and its padding dropped


class _Scorer:
    """Evaluates checkpoints, keeping one network (and its compiled graph) per ``NETWORK_KEYS``
    and one loader per ``LOADER_KEYS`` and class list."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.networks = {}  # key -> (net that holds the weights, ms.train.Model)
        self.loaders = {}
        self.losses = {}

    def _network(self, cfg: Config):
        """The network with ``cfg``'s checkpoint loaded (checked by ``load_eval_network``), and its Model."""
        fresh = load_eval_network(cfg)
        key = _key(cfg, NETWORK_KEYS)
        if key not in self.networks:
            net = eval_precision(cfg, fresh, self.rt.device)
            model = ms.train.Model(
                net,
                eval_network=build_eval_network(cfg, net),
                metrics=eval_metrics(cfg.num_classes, count_samples=True, confusion=True),
                eval_indexes=[0, 1, 2],
            )
            self.networks[key] = (fresh, model)
            return fresh, model
        held, model = self.networks[key]
        # New values into the parameters the compiled graph already uses: no recompilation.
        ms.load_param_into_net(held, {p.name: p for p in fresh.get_parameters()}, strict_load=True)
        held.load_report = fresh.load_report
        return held, model

    def _loader(self, cfg: Config, classes: list, batch: Optional[int] = None):
        key = _key(cfg, LOADER_KEYS) + repr(classes) + repr(batch)
        if key not in self.loaders:
            self.loaders[key] = build_eval_loader(cfg, batch_size=batch, classes=classes)
        return self.loaders[key]

    def score(self, cfg: Config) -> ValidationReport:
        fetch_dataset(cfg)
        if is_exported(cfg.ckpt_path):
            return self._score_exported(cfg)
        classes, source = run_classes(cfg)
        _check_classes(cfg, classes, source)
        net, model = self._network(cfg)
        loader = self._loader(cfg, classes)
        _logger.info(
            "validating %s (%d classes) from %s on %s/%s: %d px (resize %d, %s), batch %d",
            cfg.model,
            cfg.num_classes,
            net.load_report.path,
            cfg.data_dir,
            cfg.val_split,
            cfg.image_resize,
            int(cfg.image_resize / cfg.crop_pct),
            cfg.interpolation,
            cfg.batch_size,
        )
        start = time.perf_counter()
        raw = model.eval(loader, dataset_sink_mode=False)
        seconds = time.perf_counter() - start
        path = weights_path(cfg)
        epoch = checkpoint_epoch(path) if cfg.ckpt_path else None
        return _report(cfg, path, epoch, cfg.model, classes, raw, seconds)

    def _score_exported(self, cfg: Config) -> ValidationReport:
        """An ``.onnx`` / ``.mindir`` file (``cfg`` from :func:`exported_config`) in its runtime,
        labelled by the class names of its .json: the same metrics on its logits."""
        path = cfg.ckpt_path
        meta = exported_metadata(path)
        classes, source = (meta["classes"], metadata_path(path)) if meta.get("classes") else run_classes(cfg)
        _check_classes(cfg, classes, source)
        predictor = load_predictor(path)
        fixed = predictor.input_shape[0] if isinstance(predictor, OnnxPredictor) else predictor.batch
        loader = self._loader(cfg, classes, fixed or cfg.batch_size)
        key = (cfg.loss, cfg.label_smoothing)
        loss = self.losses[key] = self.losses.get(key) or build_loss(cfg, reduction="none")
        metrics = eval_metrics(cfg.num_classes, count_samples=True, confusion=True)
        fmt = str(meta.get("file_format") or os.path.splitext(path)[1][1:]).upper()
        _logger.info(
            "validating %s (%s, %d classes) on %s/%s: %d px (resize %d, %s), batch %d",
            path,
            fmt,
            cfg.num_classes,
            cfg.data_dir,
            cfg.val_split,
            cfg.image_resize,
            int(cfg.image_resize / cfg.crop_pct),
            cfg.interpolation,
            fixed or cfg.batch_size,
        )
        start = time.perf_counter()
        for images, labels in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
            logits = _exported_logits(predictor, fixed, images)
            if logits.shape != (len(images), cfg.num_classes):
                raise ValueError(
                    f"{path} gives logits of shape {logits.shape} for {len(images)} images but its .json says "
                    f"num_classes {cfg.num_classes}; export it again with export.py"
                )
            losses = loss(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()
            for metric in metrics.values():  # what ms.train.Model feeds them: the loss, or (logits, labels)
                metric.update(*((losses,) if isinstance(metric, nn.Loss) else (logits, labels)))
        seconds = time.perf_counter() - start
        raw = {name: metric.eval() for name, metric in metrics.items()}
        source_ckpt = meta.get("checkpoint")
        epoch = checkpoint_epoch(source_ckpt) if source_ckpt else None
        return _report(cfg, path, epoch, f"{cfg.model} ({fmt})", classes, raw, seconds)


def validate_checkpoints(cfgs: Sequence[Config], rt: Optional[Runtime] = None) -> list:
    """A :class:`ValidationReport` per configuration (one per checkpoint or exported file, see
    :func:`checkpoint_configs`), in order. Checkpoints of the same network share one network, so
    graph mode compiles it once; each keeps its own run's class list (an exported file: its .json's)."""
    cfgs = [eval_config(exported_config(cfg) if is_exported(cfg.ckpt_path) else cfg) for cfg in cfgs]
    if not cfgs:
        raise ValueError("no checkpoint to validate: pass --ckpt_path FILE.ckpt [FILE.ckpt ...] or a run directory")
    rt = rt or init_runtime(cfgs[0])
    setup_logging(None, rt.rank)
    scorer = _Scorer(rt)
    return [scorer.score(cfg) for cfg in cfgs]


def validate_report(cfg: Config, rt: Optional[Runtime] = None) -> ValidationReport:
    """The full report of one checkpoint (see :func:`validate`)."""
    return validate_checkpoints([cfg], rt)[0]


def validate(cfg: Config, rt: Optional[Runtime] = None) -> dict:
    """Score a checkpoint (or an exported ``.onnx`` / ``.mindir`` file) on ``cfg.val_split`` of
    ``cfg.data_dir`` with the model's eval transforms (an exported file: those of its .json).

    Returns ``{'Top_1_Accuracy', 'Top_5_Accuracy' (None below 5 classes), 'loss', 'samples'}``:
    accuracies in [0, 1], the recipe's loss (label smoothing included) averaged per image, and the
    number of images scored, which is every image of the split.
    """
    return validate_report(cfg, rt).metrics
