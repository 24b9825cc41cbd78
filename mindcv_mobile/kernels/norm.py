"""BatchNorm and the activation after it as one compiled op, for the [conv, BatchNorm, activation]
layers of a model built inside ``use(path)``.

:class:`BatchNormAct2d` is an ``nn.BatchNorm2d`` (same parameters and names, same moving-statistics
rule, so checkpoints, EMA, the data-parallel statistics sync and QAT folding see a BatchNorm) whose
float32 forward also applies the activation. The activation's own cell stays at its index as a
pass-through (:data:`PASS_THROUGH`): checkpoint indices do not move, and ReLU/ReLU6 keep their type
for code that reads the layer list (QAT folds [Conv2d, BatchNorm2d, ReLU6] with its own math).
"""

from __future__ import annotations

from mindspore import dtype as mstype
from mindspore import nn, ops

from .ops import NORM_ACTIVATIONS, make_batch_norm, make_batch_norm_inference


class BatchNormAct2d(nn.BatchNorm2d):
    """``act(BatchNorm2d(x))`` with the compiled op for float32 input (training: batch statistics,
    moving statistics updated as ``nn.BatchNorm2d`` updates them; eval: the moving statistics);
    MindSpore's ops otherwise. ``act``: None, "relu", "relu6" or "hswish"; ``path``: the library."""

    def __init__(self, num_features: int, momentum: float, eps: float, act, path: str) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        if act not in NORM_ACTIVATIONS:
            raise ValueError(f"BatchNormAct2d applies one of {sorted(NORM_ACTIVATIONS, key=str)}, got {act!r}")
        self.act = act
        self.kernel_op, self.kernel_cfg, self.infer_op, self.infer_cfg = None, None, None, None
        if path:
            # self.momentum is MindSpore's stored 1 - momentum: the batch's weight.
            self.kernel_op, self.kernel_cfg = make_batch_norm(path, act, eps, self.momentum)
            self.infer_op, self.infer_cfg = make_batch_norm_inference(path, act, eps)

    def construct(self, x):
        if self.kernel_op is not None and x.dtype == mstype.float32 and x.ndim == 4:
            if self.training:
                y, _, _, mean, var = self.kernel_op(
                    x, self.gamma, self.beta, self.moving_mean, self.moving_variance, self.kernel_cfg
                )
                ops.assign(self.moving_mean, mean)
                ops.assign(self.moving_variance, var)
                return y
            return self.infer_op(x, self.gamma, self.beta, self.moving_mean, self.moving_variance, self.infer_cfg)
        y = super().construct(x)
        if self.act == "relu":
            return ops.relu(y)
        if self.act == "relu6":
            return ops.relu6(y)
        if self.act == "hswish":
            return ops.hardswish(y)
        return y


class _PassThrough:
    """The activation that the BatchNormAct2d before it applied: returns its input."""

    def construct(self, x):
        return x


class AppliedReLU(_PassThrough, nn.ReLU):
    """ReLU applied by the preceding :class:`BatchNormAct2d`."""


class AppliedReLU6(_PassThrough, nn.ReLU6):
    """ReLU6 applied by the preceding :class:`BatchNormAct2d`."""


class AppliedHardSwish(_PassThrough, nn.Cell):
    """Hard-swish applied by the preceding :class:`BatchNormAct2d`."""


PASS_THROUGH = {"relu": AppliedReLU, "relu6": AppliedReLU6, "hswish": AppliedHardSwish}


def make_norm_act(path: str, channels: int, momentum: float, eps: float, act) -> tuple:
    """``(norm, act_cell)`` for [BatchNorm, activation ``act``] on the library at ``path``: the
    activation's pass-through cell when the norm applies it, else None (no activation, or one the
    op does not have: the caller adds its own cell)."""
    fused = act if act in PASS_THROUGH else None
    norm = BatchNormAct2d(channels, momentum, eps, fused, path)
    return norm, PASS_THROUGH[fused]() if fused else None
