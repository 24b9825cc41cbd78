"""Loss, LR schedule, optimizer and EMA factories, checked against hand-computed numbers."""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindcv_mobile.training import EMA, create_loss, create_lr_schedule, create_optimizer, split_weight_decay
from mindcv_mobile.training.lr import list_schedulers


class Tiny(nn.Cell):
    """Conv (no bias) + BN + Dense: every kind of parameter a MobileNet has."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Dense(4, 2)

    def construct(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def _cos_lr(lr, min_lr, progress):
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- LR schedules


def test_cosine_with_warmup_golden_values():
    # 10 steps/epoch, 2 warm-up epochs (20 steps), cosine over the remaining 8 epochs (80 steps).
    s = create_lr_schedule("cosine_decay", lr=0.4, steps_per_epoch=10, num_epochs=10, warmup_epochs=2)
    assert len(s) == 100
    assert s[0] == 0.0
    assert s[10] == pytest.approx(0.2)  # 0.4 * 10/20
    assert s[19] == pytest.approx(0.38)  # 0.4 * 19/20
    assert s[20] == pytest.approx(0.4)  # warm-up end: exactly lr
    assert s[60] == pytest.approx(0.2)  # cosine midpoint (40 of 80 decay steps)
    assert s[99] == pytest.approx(0.2 * (1 + math.cos(math.pi * 79 / 80)))
    assert max(s) == pytest.approx(0.4)


def test_cosine_min_lr_warmup_factor_and_end_of_decay():
    s = create_lr_schedule(
        "cosine_decay",
        lr=0.4,
        steps_per_epoch=10,
        num_epochs=10,
        min_lr=0.04,
        warmup_epochs=2,
        warmup_factor=0.1,
        decay_epochs=4,
    )
    assert s[0] == pytest.approx(0.04)  # lr * warmup_factor
    assert s[10] == pytest.approx(0.4 * (0.1 + 0.9 * 0.5))
    assert s[20] == pytest.approx(0.4)
    assert s[40] == pytest.approx(0.22)  # midpoint of a 40-step cosine: min_lr + (lr - min_lr) / 2
    assert s[59] == pytest.approx(_cos_lr(0.4, 0.04, 39 / 40))
    assert s[60:] == [0.04] * 40  # after decay_epochs the LR stays at min_lr


def test_cosine_restarts_with_cycle_decay():
    s = create_lr_schedule(
        "cosine_decay", lr=0.4, steps_per_epoch=10, num_epochs=10, decay_epochs=4, num_cycles=2, cycle_decay=0.5
    )
    assert s[0] == pytest.approx(0.4)
    assert s[39] == pytest.approx(_cos_lr(0.4, 0.0, 39 / 40))
    assert s[40] == pytest.approx(0.2)  # second cycle restarts at lr * cycle_decay
    assert s[60] == pytest.approx(0.1)
    assert s[80:] == [0.0] * 20


def test_step_decay_golden_values():
    s = create_lr_schedule(
        "step_decay", lr=0.1, steps_per_epoch=4, num_epochs=6, warmup_epochs=1, decay_epochs=2, decay_rate=0.5
    )
    assert len(s) == 24
    assert s[0] == 0.0 and s[2] == pytest.approx(0.05)
    assert s[4] == pytest.approx(0.1)  # warm-up end
    assert s[11] == pytest.approx(0.1)  # decay step 7: still the first interval
    assert s[12] == pytest.approx(0.05)  # decay step 8 = 2 epochs after warm-up
    assert s[23] == pytest.approx(0.025)


def test_step_decay_fractional_epochs():
    # timm/torchvision MobileNetV3 recipes decay every 2.4 epochs; here 2.5 epochs = 10 steps.
    s = create_lr_schedule("step_decay", lr=0.1, steps_per_epoch=4, num_epochs=6, decay_epochs=2.5, decay_rate=0.5)
    assert s[9] == pytest.approx(0.1)
    assert s[10] == pytest.approx(0.05)
    assert s[20] == pytest.approx(0.025)


def test_multi_step_decay_milestones_count_from_warmup_end():
    s = create_lr_schedule(
        "multi_step_decay",
        lr=0.1,
        steps_per_epoch=4,
        num_epochs=6,
        warmup_epochs=1,
        decay_rate=0.1,
        multi_step_decay_milestones=[2, 4],
    )
    assert s[4] == pytest.approx(0.1)
    assert s[11] == pytest.approx(0.1)
    assert s[12] == pytest.approx(0.01)  # 2 epochs after warm-up
    assert s[19] == pytest.approx(0.01)
    assert s[20] == pytest.approx(0.001)
    assert s[23] == pytest.approx(0.001)


def test_constant_with_warmup():
    s = create_lr_schedule("constant", lr=0.5, steps_per_epoch=4, num_epochs=3, warmup_epochs=0.5)
    assert s == pytest.approx([0.0, 0.25] + [0.5] * 10)


def test_epoch_stair_holds_first_step_value_of_each_epoch():
    refined = create_lr_schedule("cosine_decay", lr=0.4, steps_per_epoch=10, num_epochs=10, warmup_epochs=2)
    stair = create_lr_schedule(
        "cosine_decay", lr=0.4, steps_per_epoch=10, num_epochs=10, warmup_epochs=2, lr_epoch_stair=True
    )
    assert stair[:10] == [0.0] * 10
    assert stair[15] == pytest.approx(0.2)
    assert stair[29] == pytest.approx(0.4)
    assert stair[35] == pytest.approx(_cos_lr(0.4, 0.0, 10 / 80))
    assert stair[99] == pytest.approx(refined[90])
    assert stair != refined


def test_mindcv_v3_large_recipe_schedule_shape():
    # mobilenet_v3_large_ascend.yaml: lr 1.08, 420 epochs, 4 warm-up + 416 decay epochs.
    s = create_lr_schedule(
        "cosine_decay", lr=1.08, steps_per_epoch=20, num_epochs=420, warmup_epochs=4, decay_epochs=416
    )
    assert len(s) == 8400
    assert s[80] == pytest.approx(1.08)
    assert s[80 + 4160] == pytest.approx(0.54)
    assert s[-1] == pytest.approx(0.54 * (1 + math.cos(math.pi * 8319 / 8320)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -0.1}, "lr must be > 0"),
        ({"min_lr": -1e-3}, "min_lr"),
        ({"min_lr": 0.5}, "min_lr"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"warmup_factor": 1.5}, "warmup_factor"),
        ({"decay_epochs": 0}, "decay_epochs"),
        ({"num_cycles": 0}, "num_cycles"),
    ],
)
def test_lr_schedule_rejects_bad_values(kwargs, message):
    args = {"scheduler": "cosine_decay", "lr": 0.1, "steps_per_epoch": 5, "num_epochs": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        create_lr_schedule(**args)


def test_short_run_of_long_recipe_stops_inside_warmup(caplog):
    # mindcv's V3 recipe (warmup 4) run with --epoch_size 1: the first epoch of the recipe's LR.
    s = create_lr_schedule("cosine_decay", lr=0.8, steps_per_epoch=5, num_epochs=1, warmup_epochs=4, decay_epochs=466)
    assert s == pytest.approx([0.8 * i / 20 for i in range(5)])
    assert "ends inside the linear warmup" in caplog.text


def test_lr_schedule_rejects_wrong_types():
    with pytest.raises(TypeError, match="steps_per_epoch"):
        create_lr_schedule("constant", 0.1, steps_per_epoch=True, num_epochs=2)
    with pytest.raises(TypeError, match="lr"):
        create_lr_schedule("constant", "0.1", steps_per_epoch=2, num_epochs=2)


def test_unknown_scheduler_names_choices():
    with pytest.raises(ValueError) as err:
        create_lr_schedule("cosine", 0.1, 5, 10)
    text = str(err.value)
    assert "'cosine'" in text and "did you mean 'cosine_decay'" in text
    for name in list_schedulers():
        assert name in text


# --------------------------------------------------------------------------- losses

LOGITS = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], np.float32)
LABELS = np.array([2, 0], np.int32)


def _ce_reference(logits, targets):
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -(targets * log_p).sum(-1)


def _smooth(onehot, eps):
    return onehot * (1 - eps) + eps / onehot.shape[-1]


def test_ce_label_smoothing_golden_value(pynative_mode):
    # softmax([ln 1, ln 3]) = [0.25, 0.75]; eps 0.2 -> target [0.1, 0.9].
    logits = Tensor(np.array([[0.0, math.log(3.0)]], np.float32))
    loss = create_loss("CE", label_smoothing=0.2)(logits, Tensor(np.array([1], np.int32)))
    assert float(loss) == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)), rel=1e-5)
    uniform = create_loss("CE", label_smoothing=0.3)(Tensor(np.zeros((2, 4), np.float32)), Tensor(LABELS))
    assert float(uniform) == pytest.approx(math.log(4.0), rel=1e-5)
    unsmoothed = create_loss("CE")(logits, Tensor(np.array([1], np.int32)))
    assert float(unsmoothed) == pytest.approx(-math.log(0.75), rel=1e-5)


@pytest.mark.slow
def test_ce_int_and_soft_labels_in_graph_mode_with_fp16_logits(graph_mode):
    class Wrapped(nn.Cell):
        def __init__(self, loss):
            super().__init__()
            self.loss = loss

        def construct(self, logits, labels):
            return self.loss(logits, labels)

    net = Wrapped(create_loss("CE", label_smoothing=0.1))
    logits16 = Tensor(LOGITS.astype(np.float16))
    expected = _ce_reference(LOGITS, _smooth(np.eye(3)[LABELS], 0.1)).mean()
    from_int = net(logits16, Tensor(LABELS))
    from_onehot = net(logits16, Tensor(np.eye(3, dtype=np.float32)[LABELS]))
    assert from_int.dtype == ms.float32
    assert float(from_int) == pytest.approx(expected, rel=1e-5)
    assert float(from_onehot) == pytest.approx(expected, rel=1e-5)
    mixed = (0.7 * np.eye(3)[[1, 2]] + 0.3 * np.eye(3)[[0, 0]]).astype(np.float16)  # mixup of two label pairs
    from_mixed = net(Tensor(LOGITS), Tensor(mixed))
    expected_mixed = _ce_reference(LOGITS, _smooth(mixed.astype(np.float64), 0.1)).mean()
    assert float(from_mixed) == pytest.approx(expected_mixed, rel=1e-5)


def test_ce_reductions(pynative_mode):
    per_sample = create_loss("CE", reduction="none")(Tensor(LOGITS), Tensor(LABELS))
    assert per_sample.shape == (2,)
    np.testing.assert_allclose(per_sample.asnumpy(), _ce_reference(LOGITS, np.eye(3)[LABELS]), rtol=1e-5)
    total = create_loss("CE", reduction="sum")(Tensor(LOGITS), Tensor(LABELS))
    assert float(total) == pytest.approx(per_sample.asnumpy().sum(), rel=1e-5)


def test_bce_with_smoothed_targets(pynative_mode):
    assert float(create_loss("BCE")(Tensor(np.zeros((2, 3), np.float32)), Tensor(LABELS))) == pytest.approx(
        math.log(2.0), rel=1e-5
    )
    targets = _smooth(np.eye(3)[LABELS], 0.1)
    prob = 1 / (1 + np.exp(-LOGITS.astype(np.float64)))
    expected = -(targets * np.log(prob) + (1 - targets) * np.log(1 - prob))
    loss = create_loss("bce", label_smoothing=0.1)
    assert float(loss(Tensor(LOGITS.astype(np.float16)), Tensor(LABELS))) == pytest.approx(expected.mean(), rel=1e-5)
    per_item = create_loss("BCE", label_smoothing=0.1, reduction="none")(Tensor(LOGITS), Tensor(LABELS))
    np.testing.assert_allclose(per_item.asnumpy(), expected, rtol=1e-5)
    big = create_loss("BCE")(Tensor(np.array([[100.0, -100.0]], np.float32)), Tensor(np.array([0], np.int32)))
    assert float(big) == pytest.approx(0.0, abs=1e-6)  # no overflow for large logits


@pytest.mark.parametrize("eps", [1.0, -0.1, 1.5])
def test_loss_rejects_label_smoothing_outside_unit_interval(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        create_loss("CE", label_smoothing=eps)


def test_loss_unknown_names():
    with pytest.raises(ValueError, match=r"unknown loss 'CEE'; did you mean 'CE'\? accepted: CE, BCE"):
        create_loss("CEE")
    with pytest.raises(ValueError, match="unknown reduction 'avg'.*mean, sum, none"):
        create_loss("CE", reduction="avg")


# --------------------------------------------------------------------------- optimizers


def _names(params):
    return [p.name for p in params]


def test_weight_decay_filters_split_groups():
    params = Tiny().trainable_params()
    assert _names(params) == ["conv.weight", "bn.gamma", "bn.beta", "fc.weight", "fc.bias"]
    decay, no_decay = split_weight_decay(params, "disable")
    assert _names(decay) == _names(params) and no_decay == []
    decay, no_decay = split_weight_decay(params, "auto")  # MindSpore's default: BN affine only
    assert _names(decay) == ["conv.weight", "fc.weight", "fc.bias"]
    assert _names(no_decay) == ["bn.gamma", "bn.beta"]
    decay, no_decay = split_weight_decay(params, "norm_and_bias")
    assert _names(decay) == ["conv.weight", "fc.weight"]
    assert _names(no_decay) == ["bn.gamma", "bn.beta", "fc.bias"]
    with pytest.raises(ValueError, match="did you mean 'norm_and_bias'"):
        split_weight_decay(params, "norm_bias")


def _step_with_grads(opt, grads):
    opt(tuple(Tensor(g) for g in grads))


@pytest.mark.parametrize(
    "wd_filter, exempt",
    [("disable", set()), ("auto", {"bn.gamma", "bn.beta"}), ("norm_and_bias", {"bn.gamma", "bn.beta", "fc.bias"})],
)
@pytest.mark.parametrize("loss_scale", [1.0, 8.0])
def test_weight_decay_reaches_exactly_the_decay_group(pynative_mode, wd_filter, exempt, loss_scale):
    # Zero gradient, plain SGD: w <- w - lr * wd * w for decayed params, unchanged otherwise;
    # the loss scale must not change the effective decay.
    net = Tiny()
    params = net.trainable_params()
    for p in params:
        p.set_data(Tensor(np.full(p.shape, 2.0, np.float32)))
    opt = create_optimizer(
        params, "sgd", lr=0.1, momentum=0.0, weight_decay=0.5, weight_decay_filter=wd_filter, loss_scale=loss_scale
    )
    _step_with_grads(opt, [np.zeros(p.shape, np.float32) for p in params])
    for p in params:
        expected = 2.0 if p.name in exempt else 2.0 - 0.1 * 0.5 * 2.0
        np.testing.assert_allclose(p.asnumpy(), expected, rtol=1e-5, err_msg=p.name)


@pytest.mark.parametrize(
    "opt, kwargs, expected_delta",
    [
        ("momentum", {}, -0.1),  # first step: accum = g
        ("momentum", {"nesterov": True}, -0.1 * (1 + 0.9)),  # w -= lr * (g + mu * accum)
        ("sgd", {}, -0.1),
        ("sgd", {"nesterov": True}, -0.1 * (1 + 0.9)),
        ("rmsprop", {}, -0.1 / math.sqrt(1.0 + 1e-10)),  # TF-style: mean square starts at 1
        ("adam", {"eps": 1e-8}, -0.1 * 1 / (1 + 1e-8)),  # bias-corrected m/v
        ("adam", {"eps": 1e-8, "nesterov": True}, -0.1 * (0.9 + 0.1) / 0.1 * 0.1 * 1.9),
        ("adamw", {"eps": 1e-8}, -0.1 * 0.1 / (math.sqrt(0.001) + 1e-8)),  # no bias correction in MindSpore
    ],
)
def test_each_optimizer_takes_a_step(pynative_mode, opt, kwargs, expected_delta):
    params = Tiny().trainable_params()
    before = [p.asnumpy().copy() for p in params]
    optimizer = create_optimizer(params, opt, lr=0.1, **kwargs)
    _step_with_grads(optimizer, [np.ones(p.shape, np.float32) for p in params])
    for p, w0 in zip(params, before):
        np.testing.assert_allclose(p.asnumpy() - w0, expected_delta, rtol=1e-4, atol=1e-6, err_msg=p.name)


@pytest.mark.parametrize("nesterov, expected", [(False, -(0.1 + 0.19)), (True, -(0.19 + 0.271))])
def test_momentum_nesterov_flag_changes_the_update(pynative_mode, nesterov, expected):
    # Two steps, g = 1, lr 0.1, mu 0.9: accum 1 then 1.9. Plain: w -= lr*accum (0.1, 0.19);
    # Nesterov: w -= lr*(g + mu*accum) (0.19, 0.271).
    params = Tiny().trainable_params()
    before = params[0].asnumpy().copy()
    optimizer = create_optimizer(params, "momentum", lr=0.1, momentum=0.9, nesterov=nesterov)
    assert isinstance(optimizer, nn.SGD if nesterov else nn.Momentum)
    grads = [np.ones(p.shape, np.float32) for p in params]
    _step_with_grads(optimizer, grads)
    _step_with_grads(optimizer, grads)
    np.testing.assert_allclose(params[0].asnumpy() - before, expected, rtol=1e-5)


def test_loss_scale_divides_gradients(pynative_mode):
    params = Tiny().trainable_params()
    before = [p.asnumpy().copy() for p in params]
    optimizer = create_optimizer(params, "momentum", lr=0.1, loss_scale=1024.0)
    _step_with_grads(optimizer, [np.full(p.shape, 1024.0, np.float32) for p in params])
    for p, w0 in zip(params, before):
        np.testing.assert_allclose(p.asnumpy() - w0, -0.1, rtol=1e-5)


def test_per_step_lr_schedule_is_followed(pynative_mode):
    params = Tiny().trainable_params()
    before = params[0].asnumpy().copy()
    optimizer = create_optimizer(params, "sgd", lr=[0.1, 0.3], momentum=0.0)
    grads = [np.ones(p.shape, np.float32) for p in params]
    _step_with_grads(optimizer, grads)
    np.testing.assert_allclose(params[0].asnumpy() - before, -0.1, rtol=1e-5)
    _step_with_grads(optimizer, grads)
    np.testing.assert_allclose(params[0].asnumpy() - before, -0.4, rtol=1e-5)


def test_optimizer_rejects_bad_choices_and_values():
    params = Tiny().trainable_params()
    with pytest.raises(ValueError) as err:
        create_optimizer(params, "adamx")
    assert "unknown optimizer 'adamx'" in str(err.value)
    assert "accepted: momentum, sgd, rmsprop, adam, adamw" in str(err.value)
    with pytest.raises(ValueError, match="loss_scale"):
        create_optimizer(params, "adamw", loss_scale=1024.0)
    with pytest.raises(ValueError, match="weight_decay"):
        create_optimizer(params, weight_decay=-1e-5)
    with pytest.raises(ValueError, match="momentum"):
        create_optimizer(params, momentum=1.0)
    with pytest.raises(ValueError, match="params is empty"):
        create_optimizer([])


# --------------------------------------------------------------------------- EMA


def _fill(net, value):
    for p in net.get_parameters():
        p.set_data(Tensor(np.full(p.shape, value, np.float32)))


def test_ema_covers_weights_and_bn_stats_with_prefixed_names():
    net = Tiny()
    ema = EMA(net)
    names = [p.name for p in net.get_parameters()]
    assert "bn.moving_mean" in names and "bn.moving_variance" in names
    assert [s.name for s in ema.shadow] == ["ema." + n for n in names]
    assert "ema_num_updates" in [p.name for p in ema.get_parameters()]


def test_ema_constant_decay_golden_value(pynative_mode):
    net = Tiny()
    _fill(net, 0.0)
    ema = EMA(net, decay=0.9, warmup=False)
    _fill(net, 1.0)
    for _ in range(3):
        ema.update()
    # s = 0.9^3 * 0 + (1 - 0.9^3) * 1
    for shadow in ema.shadow:
        np.testing.assert_allclose(shadow.asnumpy(), 0.271, rtol=1e-5, err_msg=shadow.name)
    assert float(ema.num_updates.asnumpy()) == 3.0


def test_ema_warmup_decay_golden_value(pynative_mode):
    net = Tiny()
    _fill(net, 0.0)
    ema = EMA(net, decay=0.9999)
    _fill(net, 1.0)
    ema()
    d1 = 0.9999 * (1 - math.exp(-1 / 2000))  # 4.99825e-4: the shadow nearly jumps to the weights
    np.testing.assert_allclose(ema.shadow[0].asnumpy(), 1 - d1, rtol=1e-5)
    _fill(net, 3.0)
    ema()
    d2 = 0.9999 * (1 - math.exp(-2 / 2000))
    np.testing.assert_allclose(ema.shadow[0].asnumpy(), d2 * (1 - d1) + (1 - d2) * 3.0, rtol=1e-5)


def test_ema_swap_in_out_and_copy_to(pynative_mode):
    net = Tiny()
    _fill(net, 0.0)
    ema = EMA(net, decay=0.5, warmup=False)
    _fill(net, 4.0)
    ema.update()  # shadow 2.0, live 4.0
    ema.swap_in()
    assert np.all(net.fc.weight.asnumpy() == 2.0) and np.all(net.bn.moving_mean.asnumpy() == 2.0)
    with pytest.raises(RuntimeError, match="already swapped in"):
        ema.swap_in()
    other = Tiny()
    ema.copy_to(other)
    assert np.all(other.conv.weight.asnumpy() == 2.0)
    ema.swap_out()
    assert np.all(net.fc.weight.asnumpy() == 4.0) and np.all(ema.shadow[0].asnumpy() == 2.0)
    with pytest.raises(RuntimeError, match="not swapped in"):
        ema.swap_out()


@pytest.mark.slow
def test_ema_updates_after_optimizer_in_graph_train_step(graph_mode):
    class Step(nn.Cell):
        def __init__(self, net, optimizer):
            super().__init__(auto_prefix=False)
            self.net = net
            self.optimizer = optimizer
            self.ema = EMA(net, decay=0.5, warmup=False)
            self.grad_fn = ms.value_and_grad(self.forward, None, optimizer.parameters)

        def forward(self, x):
            return self.net(x).sum()

        def construct(self, x):
            loss, grads = self.grad_fn(x)
            loss = ops.depend(loss, self.optimizer(grads))
            return ops.depend(loss, self.ema.update())

    ms.set_seed(0)
    net = Tiny()
    step = Step(net, create_optimizer(net.trainable_params(), "sgd", lr=0.1, momentum=0.0))
    step.set_train()
    assert "fc.weight" in [p.name for p in step.get_parameters()]  # no auto prefix
    x = Tensor(np.random.default_rng(0).random((2, 3, 5, 5), np.float32))
    expected = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    for _ in range(3):
        step(x)
        expected = {p.name: 0.5 * expected[p.name] + 0.5 * p.asnumpy() for p in net.get_parameters()}
    for shadow in step.ema.shadow:
        np.testing.assert_allclose(shadow.asnumpy(), expected[shadow.name[len("ema.") :]], rtol=1e-5, atol=1e-7)
    shadow_mean = next(s for s in step.ema.shadow if s.name == "ema.bn.moving_mean")
    assert not np.allclose(shadow_mean.asnumpy(), 0.0)  # BN statistics moved and were tracked
