"""Fake quantization with public MindSpore ops: the arithmetic shared by training and export.

Quantization scheme (Jacob et al., 2018, https://arxiv.org/abs/1712.05877; the scheme
onnxruntime's CPU int8 kernels run):

* weights: int8, symmetric, per output channel, ``q in [-127, 127]`` (255 levels, zero point 0):
  ``scale_c = max|w_c| / 127``. onnxruntime's symmetric int8 range is the same narrow range, so
  a weight already on this grid is re-quantized by it to the identical integers.
* activations: uint8, asymmetric, per tensor, ``q in [0, 255]``: the observed ``[min, max]`` is
  widened to contain 0 (so zero padding and ReLU zeros are exact), ``scale = (max - min) / 255``,
  ``zero_point = round(-min / scale)`` (onnxruntime's ``compute_scale_zp``).

Gradients use the straight-through estimator ``x + stop_gradient(q(x) - x)`` (Bengio et al.,
2013). MindSpore 2.10 has no CPU kernel for its FakeQuant* primitives; round/min/max/
stop_gradient run everywhere, in graph and PyNative mode. Every function here is written with
as few primitives as possible: a QAT MobileNetV2 has 117 quantizers, and graph-compile time on
CPU grows with the op count.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

WEIGHT_QMAX = 127  # int8 symmetric narrow range: [-127, 127]
ACT_QMIN, ACT_QMAX = 0, 255  # uint8
# onnxruntime replaces a scale below float32's smallest normal by 1.0 (all values 0 then).
_TINY = 1.1754944e-38

_reduce_max_keep = ops.ReduceMax(keep_dims=True)


def weight_scale_per_channel(weight: Tensor) -> Tensor:
    """``max|w| / 127`` per output channel (axis 0), shaped to broadcast against ``weight``.

    A channel of zeros gets scale 1 (its weights quantize to 0, as in onnxruntime).
    """
    axes = tuple(range(1, len(weight.shape)))
    scale = _reduce_max_keep(ops.abs(weight), axes) / WEIGHT_QMAX
    return scale + ops.cast(scale < _TINY, scale.dtype)


def quantize_weight(weight: Tensor) -> tuple:
    """(per-channel symmetric int8 fake-quantized ``weight`` with a straight-through gradient,
    its per-channel scale shaped like ``weight``'s first axis + ones).

    ``|w / scale| <= 127`` by construction, so no clamp is needed. The scale is a constant of
    the step (no gradient through ``max|w|``), as observers are in every QAT implementation.
    """
    scale = ops.stop_gradient(weight_scale_per_channel(weight))
    return weight + ops.stop_gradient(ops.round(weight / scale) * scale - weight), scale


def fake_quant_weight(weight: Tensor) -> Tensor:
    """Per-channel symmetric int8 fake quantization with a straight-through gradient."""
    return quantize_weight(weight)[0]


def fake_quant_bias(bias: Tensor, grid: Tensor, enabled) -> Tensor:
    """``bias`` on the int32 grid ``grid = input_scale * weight_scale`` (per channel) that int8
    kernels add to their int32 accumulator; straight-through gradient. Matters for channels with
    a large weight scale (BN with a tiny running variance), where the grid is coarse.
    ``enabled`` (0/1) leaves the bias float while the activations are not quantized yet."""
    return bias + enabled * ops.stop_gradient(ops.round(bias / grid) * grid - bias)


def activation_qparams(min_val: Tensor, max_val: Tensor) -> tuple:
    """uint8 (scale, zero_point) for the range ``[min_val, max_val]`` widened to contain 0.

    Float32 arithmetic, identical in the simulated graph and in the values written to ONNX.
    A degenerate range (all zeros) gets scale 1, zero point 0.
    """
    rmin = ops.minimum(min_val, 0.0)
    scale = (ops.maximum(max_val, 0.0) - rmin) / float(ACT_QMAX - ACT_QMIN)
    scale = scale + ops.cast(scale < _TINY, scale.dtype)
    # rmin <= 0 <= rmax keeps the zero point inside [0, 255].
    return scale, ops.round(ACT_QMIN - rmin / scale)


def fake_quant_activation(x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """uint8 fake quantization of ``x``; gradient 1 inside the representable range, 0 outside
    (TensorFlow's FakeQuantWithMinMaxVars gradient)."""
    low = (ACT_QMIN - zero_point) * scale
    high = (ACT_QMAX - zero_point) * scale
    clipped = ops.minimum(ops.maximum(x, low), high)
    # round(clip(x)/s) == clip(round(x/s) + zp) - zp because zp is an integer.
    return clipped + ops.stop_gradient(ops.round(clipped / scale) * scale - clipped)


def observer_weights(step: Tensor, observe_steps: int, ema_decay: float) -> tuple:
    """Weights ``(a, b)`` of ``range = a * range + b * batch_range`` at training step ``step``:
    the first step takes the batch's range, then an EMA, frozen from ``observe_steps`` on.
    Computed once per step for all observers."""
    observe = ops.cast(step < observe_steps, ms.float32)
    first = ops.cast(step == 0, ms.float32)
    batch = observe * (first + (1.0 - first) * (1.0 - ema_decay))
    return 1.0 - batch, batch


class ActivationQuant(nn.Cell):
    """One activation fake-quant point: EMA min/max observer + uint8 fake quantization.

    Training: the range is updated as ``observer_weights`` says (batch range on the first step,
    EMA ``decay * ema + (1 - decay) * batch`` while observing, frozen after) and the tensor is
    fake-quantized with the updated range. Evaluation: quantized with the stored range once the
    network has trained at least one step (``enabled``), else passed through, so a freshly
    converted float model evaluates as itself.

    Args:
        name: parameter prefix; the range is stored as ``<name>.min_val`` / ``<name>.max_val``.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.observed = name
        self.min_val = Parameter(Tensor(0.0, ms.float32), name=f"{name}.min_val", requires_grad=False)
        self.max_val = Parameter(Tensor(0.0, ms.float32), name=f"{name}.max_val", requires_grad=False)
        self.param_names = {"min_val": f"{name}.min_val", "max_val": f"{name}.max_val"}

    def qparams(self) -> tuple:
        """(scale, zero_point) of the stored range, as Python floats (for exporters)."""
        scale, zero_point = activation_qparams(self.min_val.value(), self.max_val.value())
        return float(scale.asnumpy()), int(zero_point.asnumpy())

    def construct(self, x, flags):
        """-> (fake-quantized x, its scale): the next layer's int32 bias grid needs the scale."""
        keep, batch, _, enabled = flags
        if self.training:
            stat = ops.stop_gradient(x)
            new_min = keep * self.min_val + batch * ops.reduce_min(stat)
            new_max = keep * self.max_val + batch * ops.reduce_max(stat)
            x = ops.depend(x, ops.assign(self.min_val, new_min))
            x = ops.depend(x, ops.assign(self.max_val, new_max))
            scale, zero_point = activation_qparams(new_min, new_max)
            return fake_quant_activation(x, scale, zero_point), scale
        scale, zero_point = activation_qparams(self.min_val, self.max_val)
        return enabled * fake_quant_activation(x, scale, zero_point) + (1.0 - enabled) * x, scale
