"""Scalars for TensorBoard, written with the ``tensorboard`` package's own event-file writer.

No TensorFlow or PyTorch is needed: the ``viz`` extra (``pip install mindcv_mobile[viz]``) brings
the writer and the viewer (``tensorboard --logdir RUN_DIR/tensorboard``). Without the package a run
says so once and goes on without event files.

A run continued with ``--resume`` adds a new event file to the same folder. Its first record is a
session start at the first step it trains, so TensorBoard drops the points a killed run had written
after the checkpoint it continues from, and each curve reads as one uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Optional

_logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
INSTALL_HINT = "pip install mindcv_mobile[viz] (or pip install tensorboard)"


class ScalarWriter:
    """One event file in ``logdir``; scalars at a step (the global step: batches).

    Args:
        logdir: folder of the event files (created when missing).
        start_step: the first step this process trains (a resumed run's checkpoint step + 1):
            points at this step or later in earlier event files of the folder are superseded.
    """

    def __init__(self, logdir: str, start_step: int = 0) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2, summary_pb2
        self.logdir = logdir
        self._writer = EventFileWriter(logdir)
        self._writer.add_event(
            event_pb2.Event(
                step=int(start_step),
                wall_time=time.time(),
                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
            )
        )

    def scalars(self, values: Mapping[str, Optional[float]], step: int) -> None:
        """Each ``tag: value`` at ``step``; ``None`` values are left out."""
        if self._writer is None:
            return
        summary = self._summary.Summary(
            value=[
                self._summary.Summary.Value(tag=tag, simple_value=float(value))
                for tag, value in values.items()
                if value is not None
            ]
        )
        if summary.value:
            self._writer.add_event(self._event.Event(step=int(step), wall_time=time.time(), summary=summary))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Write what is pending and close the file; later calls do nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_scalar_writer(logdir: str, start_step: int = 0) -> Optional[ScalarWriter]:
    """A :class:`ScalarWriter`, or None (said once, at info level) when ``tensorboard`` is missing."""
    try:
        return ScalarWriter(logdir, start_step)
    except ImportError as err:
        _logger.info("no TensorBoard event files: the tensorboard package is not installed (%s); %s", err, INSTALL_HINT)
        return None
