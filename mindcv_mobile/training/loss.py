"""Classification losses with label smoothing (mindcv's ``create_loss``).

Both losses take logits ``(N, C)`` and either integer labels ``(N,)`` or soft / one-hot
float labels ``(N, C)`` (mixup, cutmix). The branch on the label rank is resolved when the
graph is compiled (shapes are static in GRAPH_MODE), so one Cell serves both kinds.

Label smoothing (timm, mindcv): ``target = (1 - eps) * y + eps / C`` with ``y`` the one-hot
or soft label. It is applied to soft labels too, so a data pipeline that mixes labels must
not smooth them a second time.

The loss is computed in float32 whatever the logits' dtype (amp O2/O3 give float16 logits).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..errors import unknown_choice

__all__ = ["CrossEntropySmooth", "BinaryCrossEntropySmooth", "create_loss", "list_losses"]

_REDUCTIONS = ("mean", "sum", "none")


class _SmoothedTargetLoss(nn.Cell):
    """Shared target building and reduction; subclasses give the per-item loss."""

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.reduction = reduction
        self.one = Tensor(1.0, ms.float32)
        self.zero = Tensor(0.0, ms.float32)

    def _targets(self, labels: Tensor, num_classes: int) -> Tensor:
        if labels.ndim == 1:
            targets = ops.one_hot(labels, num_classes, self.one, self.zero)
        else:
            targets = ops.cast(labels, ms.float32)
        if self.label_smoothing > 0:
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return targets

    def _reduce(self, loss: Tensor) -> Tensor:
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def _item_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def construct(self, logits, labels):
        logits = ops.cast(logits, ms.float32)
        targets = self._targets(labels, logits.shape[-1])
        return self._reduce(self._item_loss(logits, targets))


class CrossEntropySmooth(_SmoothedTargetLoss):
    """Softmax cross-entropy against smoothed targets; ``reduction="none"`` gives shape ``(N,)``."""

    def _item_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return -(targets * ops.log_softmax(logits, axis=-1)).sum(axis=-1)


class BinaryCrossEntropySmooth(_SmoothedTargetLoss):
    """Sigmoid binary cross-entropy per class against smoothed targets (timm's BCE).

    ``reduction="mean"`` averages over all ``N * C`` entries; ``"none"`` gives ``(N, C)``.
    """

    def _item_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        # log(1 + exp(-|x|)) form: no overflow for large |logits|.
        return ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


_LOSSES: dict[str, type[_SmoothedTargetLoss]] = {
    "CE": CrossEntropySmooth,
    "BCE": BinaryCrossEntropySmooth,
}


def list_losses() -> list[str]:
    """Names accepted by :func:`create_loss`."""
    return sorted(_LOSSES)


LOSS_CHOICES = tuple(_LOSSES)
# Training reduces the batch to a scalar; "none" (per image) is for evaluation.
TRAIN_REDUCTIONS = ("mean", "sum")


def loss_kwargs(cfg, reduction: str | None = None) -> dict:
    """:func:`create_loss`'s arguments from a recipe; ``reduction`` overrides the recipe's."""
    return {"name": cfg.loss, "label_smoothing": cfg.label_smoothing, "reduction": reduction or cfg.reduction}


def create_loss(
    name: str = "CE",
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> nn.Cell:
    """Build the training loss ``loss(logits, labels)``.

    Args:
        name: ``"CE"`` (softmax cross-entropy) or ``"BCE"`` (per-class sigmoid cross-entropy);
            case-insensitive, as in mindcv.
        label_smoothing: ``eps`` in ``[0, 1)``; targets become ``(1 - eps) * y + eps / C``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: unknown ``name`` / ``reduction`` (listing the accepted ones), or a value out of range.
    """
    if not isinstance(name, str) or name.upper() not in _LOSSES:
        raise unknown_choice("loss", name, list(_LOSSES))
    if reduction not in _REDUCTIONS:
        raise unknown_choice("reduction", reduction, _REDUCTIONS)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"label_smoothing must be a number, got {label_smoothing!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return _LOSSES[name.upper()](label_smoothing=label_smoothing, reduction=reduction)
