"""The metrics of an evaluation, shared by training-time validation and ``validate.py`` so a
checkpoint validates to the number its training run reported.

The loss is averaged per image and ``samples`` counts the images scored: the last partial batch
is evaluated, never dropped. Top-5 is not applicable below 5 classes (it would always be 1).
"""

from __future__ import annotations

import numpy as np
from mindspore import nn


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


def eval_metrics(num_classes: int, count_samples: bool = False) -> dict:
    """Metrics for ``ms.train.Model(..., eval_indexes=[0, 1, 2])`` over (loss, logits, label).

    Top-5 is left out below 5 classes: it would always be 1 and is reported as not applicable.
    """
    metrics = {"Top_1_Accuracy": nn.Top1CategoricalAccuracy(), "loss": MeanLoss()}
    if num_classes >= 5:
        metrics["Top_5_Accuracy"] = nn.Top5CategoricalAccuracy()
    if count_samples:
        metrics["samples"] = SampleCount()
    return metrics


def named_metrics(raw: dict) -> dict:
    """The trainer's names for one evaluation (``val_loss``; Top_5 None when not applicable)."""
    return {
        "Top_1_Accuracy": raw["Top_1_Accuracy"],
        "Top_5_Accuracy": raw.get("Top_5_Accuracy"),
        "val_loss": raw["loss"],
    }


__all__ = ["MeanLoss", "SampleCount", "eval_metrics", "named_metrics"]
