"""The squeeze-and-excite block as one compiled op (kernels/squeeze_excite.cc) against the same
block on MindSpore's ops (mean, 1x1 convs with bias, ReLU, hard-sigmoid, multiply), and bitwise
reproducibility for any thread count.

Tolerance: 1e-5 of the reference's largest magnitude (the sums run in another order than
MindSpore's; a missing or wrong term of the gradient is off by far more)."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from mindcv_mobile import kernels
from mindcv_mobile.models.layers import SqueezeExcite


def _pair(path, channels, rng):
    with kernels.use(path):
        fused = SqueezeExcite(channels)
    with kernels.use(""):
        plain = SqueezeExcite(channels)
    assert fused.kernel_op is not None and plain.kernel_op is None
    for name, param in plain.parameters_and_names():
        # Large enough that the gate's input leaves [-3, 3] and the ReLU cuts some hidden units.
        value = ms.Tensor((rng.standard_normal(param.shape) * 1.5).astype(np.float32))
        param.set_data(value)
        dict(fused.parameters_and_names())[name].set_data(value)
    return fused, plain


@pytest.mark.parametrize("shape", [(4, 16, 7, 7), (3, 24, 5, 9), (2, 40, 1, 1)])
def test_forward_and_every_gradient_equal_the_block_on_mindspores_ops(kernel_path, mode, shape):
    rng = np.random.default_rng(11)
    fused, plain = _pair(kernel_path, shape[1], rng)
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)
    results = []
    for cell in (fused, plain):
        params = ms.ParameterTuple(cell.trainable_params())
        (dx,), dparams = grad(cell, params)(x, dy)
        results.append([cell(x), dx, *dparams])
    names = ["y", "dx"] + [p.name for p in fused.trainable_params()]
    assert len(names) == 6  # y, dx, two conv weights, two biases
    for name, got, want in zip(names, *results):
        got, want = got.asnumpy(), want.asnumpy()
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=name)


def test_results_are_bitwise_the_same_for_any_thread_count(kernel_path):
    rng = np.random.default_rng(12)
    fused, _ = _pair(kernel_path, 64, rng)
    x = ms.Tensor(rng.standard_normal((16, 64, 28, 28)).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(x.shape).astype(np.float32))
    grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)
    params = ms.ParameterTuple(fused.trainable_params())
    runs = []
    for threads in (1, 2, 3, 1):
        fused.kernel_cfg = ms.Tensor(np.array([threads], np.int32))
        (dx,), dparams = grad(fused, params)(x, dy)
        runs.append([t.asnumpy() for t in (fused(x), dx, *dparams)])
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


def test_summary_of_a_kernel_model_counts_the_squeeze_excite_convs(kernel_path):
    """The compiled block never calls its 1x1 convs, whose forward hooks count the MACs: the summary
    of a network built on the kernels must still equal the plain network's (hand-counted in
    tests/models/test_summary.py), and leave the compiled op in place."""
    from mindcv_mobile.models import create_model
    from mindcv_mobile.models.summary import summarize

    plain = summarize(create_model("mobilenet_v3_small_100", num_classes=10), image_size=64)
    net = create_model("mobilenet_v3_small_100", num_classes=10, cpu_kernels=True)
    blocks = [cell for _, cell in net.cells_and_names() if isinstance(cell, SqueezeExcite)]
    assert blocks and all(cell.kernel_op is not None for cell in blocks)
    compiled = summarize(net, image_size=64)
    assert compiled.macs == plain.macs and [r.macs for r in compiled.rows] == [r.macs for r in plain.rows]
    assert all(cell.kernel_op is not None for cell in blocks)
