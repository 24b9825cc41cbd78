"""MindSpore ops over the compiled library: each ``make_*(path, ...)`` returns ``(op, cfg)``, an
``ops.Custom(func_type="aot")`` with its ``bprop`` and the int32 config tensor it takes last.

The ops run the same math as MindSpore's (checked in tests/kernels/test_kernel_ops.py) and have no
parameters of their own: a layer keeps its ``weight``, so checkpoints do not depend on them.
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, ops

from ..host import cpu_cores

# (kernel, stride) pairs the depthwise conv is instantiated for (every MobileNet depthwise conv).
DEPTHWISE_SUPPORTED = {(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)}


def _out_size(size: int, kernel: int, stride: int, pad_mode: str, padding: int) -> int:
    if pad_mode == "same":
        return -(-size // stride)
    if pad_mode == "valid":
        padding = 0
    return (size + 2 * padding - kernel) // stride + 1


def _threads_cfg() -> Tensor:
    # The kernels split work over this process's cores (its affinity mask), as MindSpore's pool does.
    return Tensor(np.array([cpu_cores()], np.int32))


def _tag(geometry: str, *prims) -> None:
    # PyNative caches a Custom op's inferred output shape by its attributes and input shapes: two
    # layers of one input shape but different geometry must not share it.
    for prim in prims:
        prim.add_prim_attr("geometry", geometry)


def make_depthwise(path: str, kernel: int, stride: int, pad_mode: str, padding: int) -> tuple:
    """``(op, cfg)``: ``op(x, weight, cfg)`` is the depthwise conv, differentiable in x and weight."""
    if pad_mode not in ("same", "pad", "valid"):
        raise ValueError(f"pad_mode must be 'same', 'pad' or 'valid', got {pad_mode!r}")
    mode = 1 if pad_mode == "same" else 0
    cfg = Tensor(np.array([stride, mode, padding if pad_mode == "pad" else 0, cpu_cores()], np.int32))

    def out_shape(x, weight, cfg):
        return (x[0], x[1]) + tuple(_out_size(s, kernel, stride, pad_mode, padding) for s in x[2:])

    backward_data = ops.Custom(
        f"{path}:DepthwiseBackwardData",
        out_shape=lambda dy, w, c, x: x,
        out_dtype=lambda dy, w, c, x: x,
        func_type="aot",
    )
    backward_weight = ops.Custom(
        f"{path}:DepthwiseBackwardWeight",
        out_shape=lambda dy, x, c, w: w,
        out_dtype=lambda dy, x, c, w: w,
        func_type="aot",
    )

    def bprop(x, weight, cfg, out, dout):
        return backward_data(dout, weight, cfg, x), backward_weight(dout, x, cfg, weight), ops.zeros_like(cfg)

    op = ops.Custom(
        f"{path}:DepthwiseForward", out_shape=out_shape, out_dtype=lambda x, w, c: x, func_type="aot", bprop=bprop
    )
    _tag(f"k{kernel}s{stride}{pad_mode}{padding}", op, backward_data, backward_weight)
    return op, cfg


def _unary(path: str, name: str, out_shape, backward_takes_x: bool) -> tuple:
    """``(op, cfg)`` for a kernel ``op(x, cfg)`` with a compiled backward ``name + "Backward"``
    taking ``(dout, cfg, x)`` (shape from x) or ``(dout, x, cfg)``."""
    backward = ops.Custom(
        f"{path}:{name}Backward",
        out_shape=lambda *shapes: shapes[2 if backward_takes_x else 1],
        out_dtype=lambda *types: types[2 if backward_takes_x else 1],
        func_type="aot",
    )

    def bprop(x, cfg, out, dout):
        return (backward(dout, cfg, x) if backward_takes_x else backward(dout, x, cfg)), ops.zeros_like(cfg)

    op = ops.Custom(f"{path}:{name}", out_shape=out_shape, out_dtype=lambda x, c: x, func_type="aot", bprop=bprop)
    _tag(name, op, backward)
    return op, _threads_cfg()


def make_channel_mean(path: str) -> tuple:
    """``(op, cfg)``: ``op(x, cfg)`` is ``x.mean((2, 3), keep_dims=True)``, differentiable in x."""
    return _unary(path, "ChannelMean", lambda x, c: (x[0], x[1], 1, 1), backward_takes_x=True)


def make_channel_scale(path: str) -> tuple:
    """``(op, cfg)``: ``op(x, s, cfg)`` is ``x * s`` for s of shape (N, C, 1, 1), differentiable in both."""
    backward = ops.Custom(
        f"{path}:ChannelScaleBackward",
        out_shape=lambda d, x, s, c: (x, s),
        out_dtype=lambda d, x, s, c: (x, s),
        func_type="aot",
    )

    def bprop(x, scale, cfg, out, dout):
        dx, dscale = backward(dout, x, scale, cfg)
        return dx, dscale, ops.zeros_like(cfg)

    op = ops.Custom(
        f"{path}:ChannelScale", out_shape=lambda x, s, c: x, out_dtype=lambda x, s, c: x, func_type="aot", bprop=bprop
    )
    _tag("channel_scale", op, backward)
    return op, _threads_cfg()


def make_hardswish(path: str) -> tuple:
    """``(op, cfg)``: ``op(x, cfg)`` is ``x * relu6(x + 3) / 6``, differentiable in x."""
    return _unary(path, "HardSwish", lambda x, c: x, backward_takes_x=False)


# The activations the BatchNorm op can apply to its output (cfg code; None: none).
NORM_ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2, "hswish": 3}


def _norm_cfg(act, eps: float, batch_weight: float, fixed_statistics: bool) -> Tensor:
    if act not in NORM_ACTIVATIONS:
        raise ValueError(f"the BatchNorm kernel applies one of {sorted(NORM_ACTIVATIONS, key=str)}, got {act!r}")
    floats = np.array([eps, batch_weight], np.float32).view(np.int32)  # passed as their bits
    return Tensor(np.array([cpu_cores(), NORM_ACTIVATIONS[act], *floats, int(fixed_statistics)], np.int32))


def _norm_backward(path: str):
    """``backward(dy, x, gamma, beta, mean, stats, cfg) -> (dx, dgamma, dbeta)``."""
    return ops.Custom(
        f"{path}:BatchNormBackward",
        out_shape=lambda dy, x, g, b, m, s, c: (x, g, g),
        out_dtype=lambda dy, x, g, b, m, s, c: (x, g, g),
        func_type="aot",
    )


def make_batch_norm(path: str, act, eps: float, batch_weight: float) -> tuple:
    """``(op, cfg)``: ``op(x, gamma, beta, moving_mean, moving_var, cfg)`` is BatchNorm with batch
    statistics followed by ``act``, returning ``(y, mean, 1/std, new_moving_mean, new_moving_var)``;
    differentiable in x, gamma and beta. ``batch_weight``: the batch's weight in the moving averages
    (``ops.BatchNorm``'s momentum, 1 - ``nn.BatchNorm2d``'s)."""
    backward = _norm_backward(path)

    def bprop(x, gamma, beta, moving_mean, moving_var, cfg, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, beta, out[1], out[2], cfg)
        return dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var), ops.zeros_like(cfg)

    op = ops.Custom(
        f"{path}:BatchNormTraining",
        out_shape=lambda x, g, b, m, v, c: (x, g, g, g, g),
        out_dtype=lambda x, g, b, m, v, c: (x, g, g, g, g),
        func_type="aot",
        bprop=bprop,
    )
    return op, _norm_cfg(act, eps, batch_weight, False)


def make_batch_norm_inference(path: str, act, eps: float) -> tuple:
    """``(op, cfg)``: ``op(x, gamma, beta, moving_mean, moving_var, cfg)`` is BatchNorm with the
    moving statistics followed by ``act``, differentiable in x, gamma and beta (the statistics are
    constants there)."""
    backward = _norm_backward(path)

    def bprop(x, gamma, beta, moving_mean, moving_var, cfg, out, dout):
        dx, dgamma, dbeta = backward(dout, x, gamma, beta, moving_mean, moving_var, cfg)
        return dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var), ops.zeros_like(cfg)

    op = ops.Custom(
        f"{path}:BatchNormInference",
        out_shape=lambda x, g, b, m, v, c: x,
        out_dtype=lambda x, g, b, m, v, c: x,
        func_type="aot",
        bprop=bprop,
    )
    return op, _norm_cfg(act, eps, 0.0, True)


def make_squeeze_excite(path: str) -> tuple:
    """``(op, cfg)``: ``op(x, w1, b1, w2, b2, cfg)[0]`` is the squeeze-and-excite block
    ``x * hard_sigmoid(conv2(relu(conv1(mean(x)))))`` with 1x1 convs ``w1``, ``b1`` (reduce) and
    ``w2``, ``b2`` (expand); differentiable in x and the four parameters. The other outputs are the
    mean, the hidden activation and the gate's input, kept for the gradient."""
    backward = ops.Custom(
        f"{path}:SqueezeExciteBackward",
        out_shape=lambda dy, x, w1, w2, m, h, t, c: (x, w1, (w1[0],), w2, (w2[0],)),
        out_dtype=lambda dy, x, w1, w2, m, h, t, c: (x, w1, w1, w2, w2),
        func_type="aot",
    )

    def bprop(x, w1, b1, w2, b2, cfg, out, dout):
        dx, dw1, db1, dw2, db2 = backward(dout[0], x, w1, w2, out[1], out[2], out[3], cfg)
        return dx, dw1, db1, dw2, db2, ops.zeros_like(cfg)

    op = ops.Custom(
        f"{path}:SqueezeExcite",
        out_shape=lambda x, w1, b1, w2, b2, c: (x, (x[0], x[1]), (x[0], w1[0]), (x[0], x[1])),
        out_dtype=lambda x, w1, b1, w2, b2, c: (x, x, x, x),
        func_type="aot",
        bprop=bprop,
    )
    return op, _threads_cfg()
