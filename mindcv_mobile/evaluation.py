"""The metrics of an evaluation, shared by training-time validation and ``validate.py`` so a
checkpoint validates to the number its training run reported, and how they are shown.

The loss is averaged per image and ``samples`` counts the images scored: the last partial batch
is evaluated, never dropped. Top-5 is not applicable below 5 classes (it would always be 1).

The confusion matrix (rows: true class, columns: predicted class) counts the class each image's
logits rank first, ranked exactly as the top-1 metric ranks them: per-class correct counts (its
diagonal) add up to the images top-1 counts as correct.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Optional, Sequence

import numpy as np
from mindspore import nn
from mindspore.train import ConfusionMatrix

from .files import atomic_open, write_text

INSTALL_VIZ = "pip install mindcv_mobile[viz]"
# Class counts up to which the confusion image writes each cell's count and names every class.
CELL_COUNTS_MAX = 30
AXIS_NAMES_MAX = 100


class MeanLoss(nn.Loss):
    """``nn.Loss`` that averages per image when given per-image losses.

    A scalar (batch-mean) loss counts once per batch, exactly as ``nn.Loss``; a vector of
    per-image losses counts each image once, so a short last batch weighs what it holds.
    """

    def update(self, *inputs) -> None:
        if len(inputs) != 1:
            raise ValueError(f"MeanLoss.update takes one input (the loss), got {len(inputs)}")
        loss = self._convert_data(inputs[0])
        if loss.ndim == 0:
            super().update(loss)
        elif loss.ndim == 1:
            self._sum_loss += float(loss.astype(np.float64).sum())
            self._total_num += loss.shape[0]
        else:
            raise ValueError(f"MeanLoss.update: loss must be a scalar or a vector, got shape {loss.shape}")


class SampleCount(nn.Metric):
    """How many images were scored (the label batch sizes summed)."""

    def __init__(self) -> None:
        super().__init__()
        self.clear()

    def clear(self) -> None:
        self._count = 0

    def update(self, *inputs) -> None:
        self._count += int(self._convert_data(inputs[1]).shape[0])

    def eval(self) -> int:
        return self._count


class TopOneConfusion(ConfusionMatrix):
    """MindSpore's ``ConfusionMatrix`` over the class ranked first the way
    ``nn.Top1CategoricalAccuracy`` ranks it (a descending argsort; ``argmax`` could break a tie
    the other way), so its trace is the top-1 correct count. ``eval()`` gives integer counts."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, normalize="no_norm")

    def update(self, *inputs) -> None:
        if len(inputs) != 2:
            raise ValueError(f"TopOneConfusion.update takes (logits, labels), got {len(inputs)} inputs")
        logits, labels = self._convert_data(inputs[0]), self._convert_data(inputs[1])
        if labels.ndim == logits.ndim:  # one-hot labels, as the top-k metrics accept them
            labels = labels.argmax(axis=1)
        first = np.argsort(-logits, axis=1)[:, 0]
        super().update(first.astype(np.int64), labels.astype(np.int64))

    def eval(self) -> np.ndarray:
        # The counts as accumulated (the base class would also divide for normalisations unused here).
        if not self._is_update:
            raise RuntimeError("TopOneConfusion.eval: no batch was evaluated")
        return np.rint(self.confusion_matrix).astype(np.int64)


def eval_metrics(num_classes: int, count_samples: bool = False, confusion: bool = False) -> dict:
    """Metrics for ``ms.train.Model(..., eval_indexes=[0, 1, 2])`` over (loss, logits, label).

    Top-5 is left out below 5 classes: it would always be 1 and is reported as not applicable.
    ``confusion``: also the ``num_classes`` x ``num_classes`` confusion matrix (``TopOneConfusion``).
    """
    metrics = {"Top_1_Accuracy": nn.Top1CategoricalAccuracy(), "loss": MeanLoss()}
    if num_classes >= 5:
        metrics["Top_5_Accuracy"] = nn.Top5CategoricalAccuracy()
    if count_samples:
        metrics["samples"] = SampleCount()
    if confusion:
        metrics["confusion"] = TopOneConfusion(num_classes)
    return metrics


def named_metrics(raw: dict) -> dict:
    """The trainer's names for one evaluation (``val_loss``; Top_5 None when not applicable)."""
    return {
        "Top_1_Accuracy": raw["Top_1_Accuracy"],
        "Top_5_Accuracy": raw.get("Top_5_Accuracy"),
        "val_loss": raw["loss"],
    }


# ------------------------------------------------------------------------------ reporting
def class_labels(classes: Sequence[str], num_classes: int) -> list:
    """Names of the ``num_classes`` outputs: the class list, then ``(output i)`` for outputs no
    class of the list maps to (a model with more outputs than the run has classes)."""
    return [str(c) for c in classes[:num_classes]] + [f"(output {i})" for i in range(len(classes), num_classes)]


def per_class_rows(confusion: np.ndarray, classes: Sequence[str]) -> list:
    """``[{"class", "index", "images", "correct", "accuracy"}]`` from the confusion matrix (rows:
    true class), one per class of ``classes``, worst first: by accuracy, then most images first;
    classes with no image (accuracy None) come last."""
    rows = []
    for i, name in enumerate(classes):
        images, correct = int(confusion[i].sum()), int(confusion[i, i])
        rows.append(
            {
                "class": str(name),
                "index": i,
                "images": images,
                "correct": correct,
                "accuracy": correct / images if images else None,
            }
        )
    return sorted(rows, key=lambda r: (r["accuracy"] is None, r["accuracy"] or 0.0, -r["images"], r["index"]))


def percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], right: Sequence[int] = ()) -> str:
    """A markdown table whose columns are padded to line up in a terminal; columns ``right`` are
    right-aligned (numbers)."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def per_class_table(rows: Sequence[dict]) -> str:
    """The rows of :func:`per_class_rows` as a markdown table (accuracy with 2 decimals)."""
    body = [[r["class"], r["images"], r["correct"], percent(r["accuracy"])] for r in rows]
    return markdown_table(["class", "images", "correct", "accuracy"], body, right=(1, 2, 3))


def summary_line(model: str, data: str, metrics: dict, correct: int, seconds: float) -> str:
    """``<model> on <data>: top-1 97.49% (350/359), top-5 99.72%, loss 0.1234, 359 images in
    3.2 s (112 img/s)``."""
    n = int(metrics["samples"])
    rate = f"{n / seconds:.0f}" if seconds > 0 else "-"
    return (
        f"{model} on {data}: top-1 {percent(metrics['Top_1_Accuracy'])} ({correct}/{n}), "
        f"top-5 {percent(metrics['Top_5_Accuracy'])}, loss {metrics['loss']:.4f}, "
        f"{n} images in {seconds:.1f} s ({rate} img/s)"
    )


# Columns of the checkpoints table; the CSV keeps the metric names and full precision.
TABLE_HEADER = ("checkpoint", "epoch", "top-1", "top-5", "loss", "images")
TABLE_CSV_HEADER = ("checkpoint", "epoch", "Top_1_Accuracy", "Top_5_Accuracy", "loss", "samples")


def checkpoints_markdown(rows: Sequence[dict]) -> str:
    """One row per ``{"checkpoint", "epoch", "Top_1_Accuracy", "Top_5_Accuracy", "loss", "samples"}``."""
    body = [
        [
            r["checkpoint"],
            "-" if r["epoch"] is None else r["epoch"],
            percent(r["Top_1_Accuracy"]),
            percent(r["Top_5_Accuracy"]),
            f"{r['loss']:.4f}",
            r["samples"],
        ]
        for r in rows
    ]
    return markdown_table(TABLE_HEADER, body, right=(1, 2, 3, 4, 5))


def checkpoints_csv(rows: Sequence[dict]) -> str:
    """The checkpoints table as CSV: accuracies in [0, 1] and the loss at full precision, empty
    cells for an unknown epoch or a top-5 that does not apply."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TABLE_CSV_HEADER)
    for r in rows:
        writer.writerow(["" if r[k] is None else r[k] for k in TABLE_CSV_HEADER])
    return out.getvalue()


def write_checkpoints_table(path: str, rows: Sequence[dict]) -> str:
    """The checkpoints table into ``path``: markdown when it ends in .md, else CSV."""
    text = checkpoints_markdown(rows) + "\n" if path.lower().endswith(".md") else checkpoints_csv(rows)
    return write_text(path, text, "checkpoints table")


def confusion_csv(confusion: np.ndarray, names: Sequence[str]) -> str:
    """The matrix as CSV: a header of predicted class names, then one row per true class."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, confusion):
        writer.writerow([name, *(int(v) for v in row)])
    return out.getvalue()


IMAGE_FORMATS = (".png", ".svg", ".pdf")


def confusion_paths(path: str) -> tuple:
    """(image, csv) for ``--confusion PATH``: the CSV is PATH with .csv; ValueError on a PATH
    matplotlib would not write."""
    stem, ext = os.path.splitext(path)
    if ext.lower() not in IMAGE_FORMATS:
        raise ValueError(f"--confusion {path}: the image path must end in {', '.join(IMAGE_FORMATS)} (e.g. cm.png)")
    return path, stem + ".csv"


def confusion_figure(confusion: np.ndarray, names: Sequence[str], title: str = ""):
    """The matrix as a :class:`matplotlib.figure.Figure` on an Agg canvas (pyplot is not used).
    Colour is each true class's share (rows sum to 1, so rare classes stay visible); cells hold
    their counts up to ``CELL_COUNTS_MAX`` classes, the axes name the classes up to
    ``AXIS_NAMES_MAX``. ImportError without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(names)
    side = min(3.5 + 0.45 * n, 24.0)
    fig = Figure(figsize=(side + 1.5, side + 0.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's images")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    font = max(5.0, min(10.0, 260.0 / max(n, 1)))
    if n <= AXIS_NAMES_MAX:
        ticks = np.arange(n)
        long_names = max(len(str(name)) for name in names) > 3
        ax.set_xticks(ticks, labels=list(names), rotation=90 if long_names else 0, fontsize=font)
        ax.set_yticks(ticks, labels=list(names), fontsize=font)
    if n <= CELL_COUNTS_MAX:
        for i, j in zip(*np.nonzero(confusion)):
            color = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", color=color, fontsize=font)
    return fig


def write_confusion(path: str, confusion: np.ndarray, names: Sequence[str], title: str = "") -> tuple:
    """Write the matrix as CSV beside ``path`` and as the image ``path``; returns
    ``(csv_path, image_path or None, note)``: without matplotlib only the CSV is written and the
    note says how to get the image."""
    image_path, csv_path = confusion_paths(path)
    write_text(csv_path, confusion_csv(confusion, names), "confusion matrix")
    try:
        fig = confusion_figure(confusion, names, title)
    except ImportError:
        return csv_path, None, f"{image_path} not written: drawing it needs matplotlib ({INSTALL_VIZ})"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=os.path.splitext(image_path)[1][1:].lower())
    with atomic_open(image_path, binary=True, what="confusion matrix image") as f:
        f.write(buffer.getvalue())
    return csv_path, image_path, ""


__all__ = [
    "MeanLoss",
    "SampleCount",
    "TopOneConfusion",
    "checkpoints_csv",
    "checkpoints_markdown",
    "class_labels",
    "confusion_csv",
    "confusion_figure",
    "confusion_paths",
    "eval_metrics",
    "markdown_table",
    "named_metrics",
    "per_class_rows",
    "per_class_table",
    "percent",
    "summary_line",
    "write_checkpoints_table",
    "write_confusion",
]
