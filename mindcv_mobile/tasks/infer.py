"""``infer(cfg, images)``: top-k classes with names for image files, from a checkpoint, an ``.onnx``
or a ``.mindir`` file.

The workflow behind ``infer.py``: class names from a file when given, the MindSpore runtime when
the model runs in MindSpore (checkpoints, MINDIR), ``deploy.ClassificationStream`` (images read
batch by batch; unreadable ones skipped with a warning), the predictions file written as the
predictions come, progress (a bar on a terminal, a log line every ``LOG_EVERY_S`` seconds
otherwise) and a closing summary line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from typing import Callable, Optional, Sequence, Union

from ..build import standalone_config
from ..config import Config
from ..deploy import ClassificationStream, PredictionsWriter, is_exported, predictions_format, read_class_names
from ..runtime import init_runtime, setup_logging

_logger = logging.getLogger(__name__)

# Without a terminal, a progress line at most this often (seconds).
LOG_EVERY_S = 10.0


@dataclasses.dataclass
class InferResult:
    """``predictions`` as ``deploy.classify`` gives them (empty when they were handed to
    ``on_prediction``), ``skipped`` unreadable images as ``[(path, reason)]``, the predictions
    file written (or None), the number of images classified and the seconds it took."""

    predictions: list
    skipped: list
    output: Optional[str] = None
    count: int = 0
    seconds: float = 0.0


class _Progress:
    """Files read out of ``total``: a tqdm bar when stderr is a terminal (log records pass above
    it), else an INFO line at most every ``LOG_EVERY_S`` seconds."""

    def __init__(self, total: int) -> None:
        self.total, self.start = total, time.perf_counter()
        self.logged = self.start
        self.bar = self._redirect = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total, desc="infer", unit="img", dynamic_ncols=True, leave=False)
            self._redirect = logging_redirect_tqdm([logging.getLogger("mindcv_mobile")])
            self._redirect.__enter__()

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        now = time.perf_counter()
        if now - self.logged >= LOG_EVERY_S and done < self.total:
            self.logged = now
            _logger.info("%d/%d images, %.1f img/s", done, self.total, done / (now - self.start))

    def printing(self):
        """A context in which lines can be printed without breaking the bar."""
        return self.bar.external_write_mode() if self.bar is not None else contextlib.nullcontext()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self._redirect.__exit__(None, None, None)
            self.bar = None


def prediction_line(prediction: dict, digits: int = 4) -> str:
    """``path: class probability, class probability, ...``: one prediction as ``infer.py`` prints it."""
    top = ", ".join(f"{t['class']} {t['probability']:.{digits}f}" for t in prediction["top"])
    return f"{prediction['path']}: {top}"


def infer(
    cfg: Config,
    inputs: Sequence[str],
    classes: Union[str, Sequence[str], None] = None,
    topk: int = 5,
    output: Optional[str] = None,
    on_prediction: Optional[Callable[[dict], None]] = None,
) -> InferResult:
    """Classify the images of ``inputs`` (files and folders) with ``cfg.ckpt_path`` (a checkpoint,
    ``.onnx`` or ``.mindir``) or the released weights (``pretrained``).

    ``classes``: class names, or a file of them (JSON list, or one per line); ``output``: also
    write the predictions to this ``.csv`` or ``.json`` file, as they come. ``on_prediction``:
    called with each prediction as it is made (printing from it does not break the progress bar);
    without it the predictions are collected into the result, so memory grows with the images.
    """
    if output:
        predictions_format(output)  # a wrong extension fails before any work is done
    names = read_class_names(classes) if isinstance(classes, str) else classes
    setup_logging(None)
    if not cfg.ckpt_path.lower().endswith(".onnx"):
        init_runtime(standalone_config(cfg))  # checkpoints and MINDIR files run in MindSpore
    stream = ClassificationStream(cfg, inputs, classes=names, topk=topk)
    kept: list = []
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(PredictionsWriter(output)) if output else None
        progress = _Progress(len(stream.paths))
        stack.callback(progress.close)  # closed first: an error message then starts on a clean line
        for batch in stream:
            if writer is not None:
                for p in batch:
                    writer.write(p)
            if on_prediction is None:
                kept += batch
            else:
                with progress.printing():
                    for p in batch:
                        on_prediction(p)
            progress.update(stream.done)
    seconds = time.perf_counter() - start
    skipped = f"; {len(stream.skipped)} unreadable skipped" if stream.skipped else ""
    _logger.info(
        "classified %d images in %.1f s (%.1f img/s)%s",
        stream.count,
        seconds,
        stream.count / max(seconds, 1e-9),
        skipped,
    )
    return InferResult(
        predictions=kept, skipped=stream.skipped, output=output or None, count=stream.count, seconds=seconds
    )


def reads_run_config(cfg: Config) -> bool:
    """Whether the weights of ``cfg`` are a checkpoint whose run directory's config.yaml may describe
    the model (an exported file carries its own ``.json`` metadata instead)."""
    return bool(cfg.ckpt_path) and not is_exported(cfg.ckpt_path)


__all__ = ["LOG_EVERY_S", "InferResult", "infer", "prediction_line", "reads_run_config"]
