"""Gradient accumulation in TrainStep: N batches accumulated = one update on their concatenation.

The reference is the same network updated once on the concatenated batch (loss averaged over
every image), which is what accumulation promises; the network has no BatchNorm, whose batch
statistics would differ between N small batches and one large one.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from mindcv_mobile.training.train_step import Precision, TrainStep

FIXED = Precision("O0", 1.0, dynamic=False, check_overflow=False)
RNG = np.random.default_rng(0)
IMAGES = RNG.standard_normal((8, 6)).astype(np.float32)
LABELS = RNG.integers(0, 3, 8).astype(np.int32)

pytestmark = pytest.mark.usefixtures("mode")  # every test in PyNative, then in graph mode


def _step(accumulation: int, lr, clip: bool = False) -> TrainStep:
    ms.set_seed(1)
    net = nn.SequentialCell([nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 3)])
    optimizer = nn.Momentum(net.trainable_params(), lr, momentum=0.9, weight_decay=1e-3)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    return TrainStep(
        nn.WithLossCell(net, loss), optimizer, FIXED, clip_grad=clip, clip_value=0.05, accumulation_steps=accumulation
    )


def _weights(step: TrainStep) -> list:
    return [p.asnumpy().copy() for p in step.network.trainable_params()]


def _run(step: TrainStep, batches) -> TrainStep:
    for images, labels in batches:
        step(Tensor(images), Tensor(labels))
    return step


def _split(n: int) -> list:
    """The 8 images as n equal batches."""
    return list(zip(np.split(IMAGES, n), np.split(LABELS, n)))


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
def test_n_batches_equal_one_update_on_their_concatenation(n, clip):
    lr = [0.1 * (k + 1) for k in range(2 * n)]  # one value per batch: the update uses its batch's
    accumulated = _run(_step(n, lr, clip), _split(n) * 2)
    # Two updates: batches 1..n, then the same n again. The reference updates twice on the whole.
    reference = _step(1, [lr[n - 1], lr[2 * n - 1]], clip)
    _run(reference, [(IMAGES, LABELS)] * 2)
    for got, want in zip(_weights(accumulated), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The LR position counts batches (as in mindcv): 2n steps, 2 updates.
    assert int(accumulated.optimizer.global_step.asnumpy()[0]) == 2 * n
    assert np.count_nonzero(accumulated.accum_count.asnumpy()) == 0
    assert all(not np.any(b.asnumpy()) for b in accumulated.accum_grads)


def test_no_update_before_the_nth_batch():
    step = _step(3, 0.1)
    before = _weights(step)
    _run(step, _split(4)[:2])
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(step)))
    assert int(step.accum_count.asnumpy()) == 2 and any(np.any(b.asnumpy()) for b in step.accum_grads)


def test_checkpoint_mid_accumulation_resumes_exactly(tmp_path):
    batches = _split(4) + _split(4)
    uninterrupted = _run(_step(3, 0.1), batches)
    first = _run(_step(3, 0.1), batches[:4])  # stops with one batch in the buffers
    path = str(tmp_path / "mid.ckpt")
    ms.save_checkpoint(first, path)
    resumed = _step(3, 0.1)
    missing, _ = ms.load_param_into_net(resumed, ms.load_checkpoint(path))
    assert missing == []
    _run(resumed, batches[4:])
    for got, want in zip(_weights(resumed), _weights(uninterrupted)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_accumulation_steps_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match=f"gradient_accumulation_steps must be an integer >= 1, got {bad!r}"):
        _step(bad, 0.1)
