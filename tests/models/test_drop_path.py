"""Stochastic depth (``drop_path_rate``) on MobileNetV2/V3's residual blocks: identity in eval (a
checkpoint gives the same logits with or without it), per-sample drop with probability p and
1/(1-p) scaling of the kept branches in training, rates growing linearly with the block index."""

import logging
import zlib

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindcv_mobile.models import create_model, get_model_cfg, load_model_weights
from mindcv_mobile.models.layers import DropPath, InvertedResidual

INPUT = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def params_of(net) -> dict:
    return {p.name: ms.Parameter(p.data.copy(), name=p.name) for p in net.get_parameters()}


def randomize(net, seed: int):
    """Every parameter redrawn: He-scaled weights, random BN statistics and affine parameters,
    biases. With the default init the logits are tiny and barely depend on the input, and a
    block's branch is small next to its shortcut, so a wrong drop would hardly show."""
    rng = np.random.default_rng(seed)
    for param in net.get_parameters():
        shape, name = param.shape, param.name
        if name.endswith(".weight") and len(shape) >= 2:
            value = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        elif name.endswith(("moving_variance", "gamma")):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        param.set_data(ms.Tensor(value.astype(np.float32)))
    return net


@pytest.mark.parametrize("name", ["mobilenet_v2_035", "mobilenet_v3_small_075", "mobilenet_v3_large_075"])
def test_eval_is_unchanged_and_training_is_not(name, pynative):
    plain = randomize(create_model(name, num_classes=10, drop_rate=0.0), zlib.crc32(name.encode()))
    dropped = create_model(name, num_classes=10, drop_rate=0.0, drop_path_rate=0.3)
    # Same parameters, same names: DropPath adds none.
    assert [p.name for p in dropped.get_parameters()] == [p.name for p in plain.get_parameters()]
    report = load_model_weights(dropped, params_of(plain), get_model_cfg(name))
    assert (report.missing, report.unexpected) == ([], [])
    x = ms.Tensor(INPUT)
    for net in (plain, dropped):
        net.set_train(False)
    np.testing.assert_array_equal(dropped(x).asnumpy(), plain(x).asnumpy())

    # In training (batch statistics, no head dropout) the plain model is deterministic; with drop
    # path some residual branch of some sample is dropped in at least one of five steps.
    for net in (plain, dropped):
        net.set_train(True)
    reference = plain(x).asnumpy()
    np.testing.assert_array_equal(plain(x).asnumpy(), reference)
    ms.set_seed(0)
    assert any(np.abs(dropped(x).asnumpy() - reference).max() > 1e-4 for _ in range(5))


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_one_block_drops_a_fraction_p_of_samples_and_scales_the_rest(mode):
    """n = 4000 samples through one residual block with p = 0.3. Each sample's output minus its
    input must be exactly 0 (branch dropped) or the branch / (1 - p) (kept); the dropped fraction
    is Binomial(n, p) / n, std sqrt(p (1 - p) / n) = 0.0072, and must lie within 4 std (0.029)
    of p: a fixed seed makes the draw reproducible, the bound keeps the test valid for another
    seed or random generator while a swapped keep/drop (0.7) or per-element mask (no sample
    wholly dropped) fails it."""
    ms.set_context(mode=mode)
    p, n = 0.3, 4000
    try:
        ms.set_seed(7)
        block = InvertedResidual(8, 16, 8, stride=1, drop_path_rate=p)
        assert block.use_res_connect and isinstance(block.drop_path, DropPath)
        block.set_train(True)
        x = np.random.default_rng(2).standard_normal((n, 8, 4, 4)).astype(np.float32)
        branch = block.layers(ms.Tensor(x)).asnumpy()  # batch statistics: the same in both calls
        delta = block(ms.Tensor(x)).asnumpy() - x
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert np.abs(branch).reshape(n, -1).max(axis=1).min() > 1e-3  # every branch is non-zero
    dropped = np.all(delta == 0.0, axis=(1, 2, 3))
    kept_err = np.abs(delta - branch / (1.0 - p)).reshape(n, -1).max(axis=1)
    # float32: (x + b / 0.7) - x carries the rounding of x (|x| < ~5): ~1e-6.
    assert np.all(dropped | (kept_err < 1e-5))
    assert abs(dropped.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_drop_path_cell(pynative):
    """Identity in eval and at rate 0; a float16 input (mixed precision) stays float16."""
    half = DropPath(0.5)
    half.set_train(True)
    out = half(ms.Tensor(np.ones((256, 3, 2, 2), np.float16))).asnumpy()
    assert out.dtype == np.float16 and set(np.unique(out)) == {0.0, 2.0}
    x = ms.Tensor(np.random.default_rng(3).standard_normal((64, 4, 2, 2)).astype(np.float32))
    cell = DropPath(0.5)
    cell.set_train(False)
    np.testing.assert_array_equal(cell(x).asnumpy(), x.asnumpy())
    zero = DropPath(0.0)
    zero.set_train(True)
    np.testing.assert_array_equal(zero(x).asnumpy(), x.asnumpy())
    with pytest.raises(ValueError, match=r"in \[0, 1\), got 1.0"):
        DropPath(1.0)


# Blocks counted as in timm's MobileNet architectures: V2 has 17 blocks (its 1x1 conv to 1280 is
# the head); V3 counts its final 1x1 conv as a stage, so 15 + 1 for large and 11 + 1 for small.
@pytest.mark.parametrize(
    "name,num_blocks,residual",
    [
        ("mobilenet_v2_100", 17, {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}),
        ("mobilenet_v3_large_100", 16, {0, 2, 4, 5, 7, 8, 9, 11, 13, 14}),
        ("mobilenet_v3_small_100", 12, {2, 4, 5, 7, 9, 10}),
    ],
)
def test_block_rates_grow_linearly_with_depth(name, num_blocks, residual):
    rate = 0.2
    net = create_model(name, drop_path_rate=rate)
    blocks = [cell for cell in net.features if isinstance(cell, InvertedResidual)]
    assert {i for i, block in enumerate(blocks) if block.use_res_connect} == residual
    for i, block in enumerate(blocks):
        expected = rate * i / num_blocks
        if i in residual and expected > 0:
            assert isinstance(block.drop_path, DropPath)
            assert block.drop_path.drop_prob == pytest.approx(expected, abs=1e-12)
        else:  # no shortcut (nothing to keep when the branch drops), or rate 0 at block 0
            assert isinstance(block.drop_path, nn.Identity)


def test_v1_accepts_drop_path_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        net = create_model("mobilenet_v1_025", drop_path_rate=0.1)
    warned = [r for r in caplog.records if "drop_path_rate=0.1 has no effect on MobileNetV1" in r.getMessage()]
    assert len(warned) == 1 and "residual" in warned[0].getMessage()
    assert not any(isinstance(cell, DropPath) for _, cell in net.cells_and_names())


@pytest.mark.parametrize("rate", [1.0, -0.1, "0.1", True])
def test_invalid_drop_path_rate(rate):
    with pytest.raises(ValueError, match=r"drop_path_rate must be a number in \[0, 1\), got"):
        create_model("mobilenet_v2_035", drop_path_rate=rate)


def test_mindcv_checkpoint_gives_mindcv_logits_with_drop_path(tmp_path, pynative):
    """A mindcv checkpoint in a drop-path model: nothing missing or unexpected, mindcv's eval logits."""
    mindcv_models = pytest.importorskip("mindcv.models", reason="mindcv 0.3.0 is the reference checkpoint format")
    name = "mobilenet_v2_050_224"
    reference = randomize(mindcv_models.create_model(name, num_classes=10), 5)
    reference.set_train(False)
    path = str(tmp_path / "mindcv.ckpt")
    ms.save_checkpoint(reference, path)
    ours = create_model(name, num_classes=10, checkpoint_path=path, drop_path_rate=0.2)
    assert (ours.load_report.missing, ours.load_report.unexpected) == ([], [])
    ours.set_train(False)
    want = reference(ms.Tensor(INPUT)).asnumpy()
    np.testing.assert_allclose(ours(ms.Tensor(INPUT)).asnumpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
def test_drop_path_trains_in_graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    net = create_model("mobilenet_v3_small_075", num_classes=4, drop_path_rate=0.2)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), nn.Momentum(net.trainable_params(), 0.01, 0.9))
    step.set_train(True)
    before = net.features[5].layers[0].weight.asnumpy().copy()  # a block that drops (rate 0.2 * 2 / 12)
    x, y = ms.Tensor(INPUT), ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    losses = [float(step(x, y).asnumpy()) for _ in range(2)]
    assert np.isfinite(losses).all()
    assert np.abs(net.features[5].layers[0].weight.asnumpy() - before).max() > 0
