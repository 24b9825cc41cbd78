"""The compiled CPU kernels (depthwise conv, channel mean, channel scale, hard-swish): the same
forward and gradients as MindSpore's ops, used only by a model that asks for them
(``create_model(..., cpu_kernels=True)``), never by one built after init_runtime without asking,
so never in an exported file. The cache's safety checks are in test_kernel_cache.py."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from mindcv_mobile import kernels
from mindcv_mobile.models import create_model
from mindcv_mobile.models.layers import ChannelMean, ChannelScale, DepthwiseConv2d, HardSwish


@pytest.fixture
def with_kernel(kernel_path):
    """Layers built in the test use the kernels (as inside create_model(..., cpu_kernels=True))."""
    with kernels.use(kernel_path):
        yield kernel_path


def _kernel_layers(net) -> int:
    return sum(getattr(cell, "kernel_op", None) is not None for _, cell in net.cells_and_names())


def _run(conv, x, dy):
    """Forward, d(x) and d(weight) for the upstream gradient dy."""
    grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)
    (dx,), (dw,) = grad(conv, ms.ParameterTuple(conv.trainable_params()))(x, dy)
    return conv(x).asnumpy(), dx.asnumpy(), dw.asnumpy()


@pytest.mark.parametrize(
    "batch,channels,size,kernel,stride,pad_mode",
    [
        (3, 8, 7, 5, 1, "same"),  # MobileNetV3's last stage
        (2, 6, 15, 5, 2, "same"),  # odd size, stride 2: the extra padding row/column after
        (2, 6, 16, 3, 2, "same"),  # even size, stride 2: padding only after
        (3, 5, 9, 3, 1, "pad"),  # MobileNetV2
        (1, 4, 11, 3, 2, "pad"),  # batch 1 (single-threaded path)
        (2, 3, 8, 7, 2, "pad"),
        (2, 4, 9, 3, 1, "valid"),
        (2, 3, 40, 3, 1, "pad"),  # wider than the flat-row path (row by row)
        (2, 3, 36, 5, 1, "same"),
        (2, 3, 41, 3, 2, "same"),  # stride 2, 21 outputs wide: phase-split forward, row-by-row dW
        (2, 3, 40, 5, 2, "pad"),
    ],
)
def test_forward_and_gradients_equal_mindspores_conv(with_kernel, batch, channels, size, kernel, stride, pad_mode):
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
    weight = ms.Tensor(rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32))
    padding = (kernel - 1) // 2 if pad_mode == "pad" else 0
    results = []
    for library in ("", with_kernel):
        with kernels.use(library):
            conv = DepthwiseConv2d(channels, kernel, stride, pad_mode=pad_mode, padding=padding)
        assert (conv.kernel_op is not None) == bool(library)
        conv.weight.set_data(weight)
        if not results:
            dy = ms.Tensor(rng.standard_normal(conv(x).shape).astype(np.float32))
        results.append(_run(conv, x, dy))
    for plain, compiled in zip(*results):
        assert compiled.shape == plain.shape
        np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())


@pytest.mark.parametrize("shape", [(3, 5, 7, 7), (2, 4, 13, 11), (1, 9, 1, 1)])
def test_channel_mean_and_scale_equal_mindspores_ops(with_kernel, shape):
    rng = np.random.default_rng(3)
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    scale = ms.Tensor(rng.standard_normal(shape[:2] + (1, 1)).astype(np.float32))
    mean, mul = ChannelMean(), ChannelScale()
    assert mean.kernel_op is not None and mul.kernel_op is not None
    with kernels.use(""):
        plain_mean, plain_mul = ChannelMean(), ChannelScale()
    np.testing.assert_allclose(mean(x).asnumpy(), plain_mean(x).asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mul(x, scale).asnumpy(), plain_mul(x, scale).asnumpy(), rtol=1e-6)
    dmean = ms.Tensor(rng.standard_normal(shape[:2] + (1, 1)).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    grad = ops.GradOperation(get_all=True, sens_param=True)
    for cell, plain, args, sens in ((mean, plain_mean, (x,), dmean), (mul, plain_mul, (x, scale), dy)):
        for got, want in zip(grad(cell)(*args, sens), grad(plain)(*args, sens)):
            assert got.shape == want.shape
            want = want.asnumpy()
            np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_hardswish_equals_mindspores_fused_op_boundaries_included(with_kernel):
    values = np.concatenate(
        [
            np.array([-3.0, 3.0, -3.0001, 2.9999, 0.0, -6.0, 6.0], np.float32),
            np.random.default_rng(4).uniform(-5, 5, 299_999).astype(np.float32),
        ]
    )
    x = ms.Tensor(values.reshape(1, 1, -1, 7))
    dy = ms.Tensor(np.random.default_rng(5).standard_normal(x.shape).astype(np.float32))
    act = HardSwish()
    assert act.kernel_op is not None
    fused = ops.hardswish
    np.testing.assert_allclose(act(x).asnumpy(), fused(x).asnumpy(), rtol=1e-6, atol=1e-6)
    grad = ops.GradOperation(sens_param=True)
    np.testing.assert_allclose(grad(act)(x, dy).asnumpy(), grad(fused)(x, dy).asnumpy(), rtol=1e-6, atol=1e-6)


def test_layers_of_one_input_shape_and_different_strides_stay_apart(with_kernel):
    """PyNative caches a Custom op's inferred shape: a stride-2 layer's output shape must not be
    reused for a stride-1 layer that sees the same input shape (it was, before the geometry
    became a primitive attribute; the next conv then failed in oneDNN)."""
    x = ms.Tensor(np.random.default_rng(2).standard_normal((2, 6, 16, 16)).astype(np.float32))
    for stride, size in ((2, 8), (1, 16), (2, 8)):
        conv = DepthwiseConv2d(6, 3, stride, padding=1)
        assert conv.kernel_op is not None
        y = conv(x)
        assert y.shape == (2, 6, size, size)
        with kernels.use(""):
            plain = DepthwiseConv2d(6, 3, stride, padding=1)
        plain.weight.set_data(conv.weight.value())
        np.testing.assert_allclose(y.asnumpy(), plain(x).asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_graph_mode_training_step_matches_and_is_deterministic(with_kernel):
    """Two MobileNetV3 train steps in graph mode: the same updated weights as MindSpore's ops (to
    float rounding), and bitwise the same on a second run (resume depends on it). Batch 32: at
    batch 4 a rounding-level difference flips single ReLU decisions in 4x4 maps, and with batch
    statistics over 64 values that moves some BN gradients by percents (measured: a 1e-6 input
    perturbation alone moves them by 3e-4); that is the model's conditioning, not the kernels'."""
    rng = np.random.default_rng(1)
    x = ms.Tensor(rng.standard_normal((32, 3, 64, 64)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 10, 32).astype(np.int32))
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    weights = []
    try:
        for use_kernels in (False, True, True):
            ms.set_seed(0)
            # with_kernel's block around the call changes nothing: only cpu_kernels= decides.
            net = create_model("mobilenet_v3_small_100", num_classes=10, cpu_kernels=use_kernels)
            # 11 depthwise convs, 9 squeeze-excite blocks (the block, its mean and scale), the head's
            # pool, the classifier's hard-swish, 34 BatchNorms (running the other 18 hard-swishes)
            assert _kernel_layers(net) == (11 + 3 * 9 + 1 + 1 + 34 if use_kernels else 0)
            step = nn.TrainOneStepCell(
                nn.WithLossCell(net, nn.CrossEntropyLoss()), nn.Momentum(net.trainable_params(), 0.1, 0.9)
            )
            step.set_train(True)
            for _ in range(2):
                step(x, y)
            weights.append({p.name: p.asnumpy().copy() for p in net.get_parameters()})
    finally:
        ms.set_context(mode=previous)
    plain, first, second = weights
    assert first.keys() == plain.keys()
    for name in plain:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_allclose(first[name], plain[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_layers_built_in_a_plain_block_use_mindspores_ops(with_kernel):
    with kernels.use(""):
        net = create_model("mobilenet_v2_050", num_classes=10)
        conv = DepthwiseConv2d(4, 3, 1, padding=1)
    assert kernels.current() == with_kernel  # restored
    assert conv.kernel_op is None
    layers = [cell for _, cell in net.cells_and_names() if hasattr(cell, "kernel_op")]
    assert len(layers) == 17 + 1 and all(cell.kernel_op is None for cell in layers)  # 17 depthwise, the pool


def test_float16_inputs_take_the_plain_conv(with_kernel):
    conv = DepthwiseConv2d(4, 3, 1, padding=1)
    conv.to_float(ms.float16)
    x = ms.Tensor(np.ones((1, 4, 5, 5), np.float16))
    assert conv(x).dtype == ms.float16


def test_switch_and_missing_compiler_fall_back_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path))
    try:
        monkeypatch.setenv(kernels.SWITCH_ENV, "0")
        kernels.library.cache_clear()
        assert kernels.library() == ("", f"{kernels.SWITCH_ENV}=0")
        monkeypatch.delenv(kernels.SWITCH_ENV)
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
        kernels.library.cache_clear()
        path, why_not = kernels.library()
        assert path == "" and "no-such-compiler" in why_not
        assert not list(tmp_path.rglob("*.so"))
        # Asked for, unavailable: the model is built, with MindSpore's ops.
        assert _kernel_layers(create_model("mobilenet_v2_035", num_classes=3, cpu_kernels=True)) == 0
    finally:
        kernels.library.cache_clear()


def test_runtime_reports_the_kernels_and_turns_nothing_on(kernel_path):
    from mindcv_mobile import runtime
    from mindcv_mobile.config import load_config

    cfg = load_config(None, dict(model="mobilenet_v3_small_100", device_target="CPU", mode=1, distribute=False))
    line = runtime.speed_defaults(cfg, "CPU")
    assert "compiled CPU kernels for depthwise conv, BatchNorm+activation, squeeze-excite, hard-swish" in line
    assert runtime.CPU_SETTINGS["cpu_kernels"] is True
    assert runtime.init_runtime(cfg).cpu_kernels is True
    assert kernels.current() == ""
    assert _kernel_layers(create_model("mobilenet_v3_small_075", num_classes=3)) == 0
    line = runtime.speed_defaults(cfg, "Ascend")
    assert "kernels" not in line and runtime.CPU_SETTINGS["cpu_kernels"] is False


def test_create_model_with_cpu_kernels_uses_them(kernel_path):
    """The opt-in: every supported layer of the model gets a compiled op, and nothing outlives the call."""
    net = create_model("mobilenet_v2_050", num_classes=10, cpu_kernels=True)
    layers = [cell for _, cell in net.cells_and_names() if hasattr(cell, "kernel_op")]
    # 17 depthwise, the pool, 52 BatchNorms
    assert len(layers) == 17 + 1 + 52 and all(cell.kernel_op is not None for cell in layers)
    assert kernel_path in layers[0].kernel_op.func
    assert kernels.current() == ""
    assert _kernel_layers(create_model("mobilenet_v2_050", num_classes=10)) == 0
    with pytest.raises(ValueError, match="cpu_kernels must be True or False, got 'yes'"):
        create_model("mobilenet_v2_050", cpu_kernels="yes")
    with pytest.raises(TypeError, match="got 1"):
        with kernels.use(1):
            pass


def _custom_ops_in_onnx(path) -> list:
    import onnx

    model = onnx.load(str(path))
    return sorted({node.op_type for node in model.graph.node if "custom" in node.op_type.lower()})


@pytest.mark.slow
def test_model_after_init_runtime_exports_without_kernels(tmp_path, kernel_path):
    """init_runtime on CPU finds the kernels but does not turn them on: the default model exports to
    MINDIR and ONNX with MindSpore's ops only. (A fresh Cell per export: MindSpore 2.10 crashes when
    one Cell is exported to ONNX twice.)"""
    from mindcv_mobile import runtime
    from mindcv_mobile.config import load_config

    cfg = load_config(None, dict(model="mobilenet_v3_small_100", device_target="CPU", mode=0, distribute=False))
    rt = runtime.init_runtime(cfg)
    assert rt.device == "CPU" and rt.cpu_kernels is True
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))

    net = create_model("mobilenet_v3_small_100")
    net.set_train(False)
    assert _kernel_layers(net) == 0
    ms.export(net, x, file_name=str(tmp_path / "model"), file_format="MINDIR")
    data = (tmp_path / "model.mindir").read_bytes()
    for marker in (kernel_path, "cpu_kernels-", "DepthwiseForward", "Custom"):
        assert marker.encode() not in data, marker

    net = create_model("mobilenet_v3_small_100")
    net.set_train(False)
    ms.onnx.export(net, x, file_name=str(tmp_path / "model.onnx"), input_names=["images"], output_names=["logits"])
    assert _custom_ops_in_onnx(tmp_path / "model.onnx") == []
