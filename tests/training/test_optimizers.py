"""The optimizers beyond MindSpore's basic set (lion, nadam, adan, lamb, adagrad, nesterov) and
layer-wise LR decay, checked against numpy implementations of the published rules and, where
the rule is the same, against mindcv 0.3.0's own cells."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindcv_mobile.config import load_config
from mindcv_mobile.models import create_model
from mindcv_mobile.training import create_optimizer
from mindcv_mobile.training.optim import layer_ids, list_optimizers, optimizer_kwargs
from mindcv_mobile.training.optimizers import Adan, Lion, NAdam

RNG = np.random.default_rng(7)
W0 = {"w.weight": RNG.normal(size=(3, 4)).astype(np.float32), "w.bias": RNG.normal(size=(4,)).astype(np.float32)}
GRADS = [{k: RNG.normal(size=v.shape).astype(np.float32) for k, v in W0.items()} for _ in range(4)]
SCHEDULE = [0.02, 0.05, 0.03, 0.01]
WD = 0.1


def _params():
    return [Parameter(Tensor(w.copy()), name=name) for name, w in W0.items()]


def _run(optimizer, params, scale=1.0, steps=None):
    for grads in GRADS[:steps]:
        optimizer(tuple(Tensor(grads[p.name] * np.float32(scale)) for p in params))
    return {p.name: p.asnumpy() for p in params}


# --------------------------------------------------------------- numpy references (float64)
# Each takes one parameter's start value, its gradients, the per-step lr and its weight decay.


def _np_lion(w, grads, lrs, wd, b1=0.9, b2=0.99):
    # Chen et al. 2023 (arXiv:2302.06675), Algorithm 2; mindcv's decoupled decay w -= lr*wd*w.
    m = np.zeros_like(w)
    for g, lr in zip(grads, lrs):
        w = w - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * w)
        m = b2 * m + (1 - b2) * g
    return w


def _np_nadam(w, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-8, psi=4e-3):
    # Dozat 2016 (ICLR workshop), with the 0.96**(t*psi) momentum schedule of mindcv / PyTorch;
    # L2 decay added to the gradient (mindcv's decay_weight).
    m, v, prod = np.zeros_like(w), np.zeros_like(w), 1.0
    for t, (g, lr) in enumerate(zip(grads, lrs), 1):
        g = g + wd * w
        mu, mu_next = b1 * (1 - 0.5 * 0.96 ** (t * psi)), b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod *= mu
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat = mu_next * m / (1 - prod * mu_next) + (1 - mu) * g / (1 - prod)
        w = w - lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def _np_adan(w, grads, lrs, wd, b1=0.98, b2=0.92, b3=0.99, eps=1e-8):
    # Xie et al. 2022 (arXiv:2208.06677) as the authors' optimizer computes it: betas weigh the
    # history, the first step takes g_prev = g, bias-corrected moments, proximal decay.
    m, v, n, prev = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w), None
    for t, (g, lr) in enumerate(zip(grads, lrs), 1):
        d = g - (g if prev is None else prev)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * d
        n = b3 * n + (1 - b3) * (g + b2 * d) ** 2
        denom = np.sqrt(n) / np.sqrt(1 - b3**t) + eps
        w = w - lr / (1 - b1**t) * m / denom - lr * b2 / (1 - b2**t) * v / denom
        w, prev = w / (1 + lr * wd), g
    return w


def _np_lamb(w, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-6):
    # You et al. 2020 (arXiv:1904.00962), Algorithm 2 with phi = identity, as nn.Lamb documents.
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(grads, lrs), 1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * w
        w = w - lr * np.linalg.norm(w) / np.linalg.norm(r) * r
    return w


def _np_adagrad(w, grads, lrs, wd, accum0=0.1):
    # Duchi et al. 2011, MindSpore's form: accumulator starts at 0.1, no epsilon, L2 decay.
    acc = np.full_like(w, accum0)
    for g, lr in zip(grads, lrs):
        g = g + wd * w
        acc = acc + g * g
        w = w - lr * g / np.sqrt(acc)
    return w


REFERENCES = {"lion": _np_lion, "nadam": _np_nadam, "adan": _np_adan, "lamb": _np_lamb, "adagrad": _np_adagrad}


@pytest.mark.parametrize("opt", ["Lion", "NADAM", "adan", "lamb", "AdaGrad"])
@pytest.mark.parametrize("schedule", [False, True], ids=["constant-lr", "schedule"])
def test_optimizer_matches_the_published_rule(mode, opt, schedule):
    # Weight decay on the 2-D weight only (norm_and_bias exempts the bias); a schedule, and a
    # loss scale the optimizer must divide out (lamb has none).
    lrs = SCHEDULE if schedule else [0.03] * len(GRADS)
    scale = 1.0 if opt == "lamb" else 8.0
    params = _params()
    optimizer = create_optimizer(
        params,
        opt,
        lr=SCHEDULE if schedule else 0.03,
        weight_decay=WD,
        weight_decay_filter="norm_and_bias",
        loss_scale=scale,
    )
    got = _run(optimizer, params, scale)
    reference = REFERENCES[opt.lower()]
    for name, w in W0.items():
        grads = [g[name].astype(np.float64) for g in GRADS]
        expected = reference(w.astype(np.float64), grads, lrs, WD if name == "w.weight" else 0.0)
        assert np.abs(expected - w).max() > 1e-2  # the steps moved the weights
        np.testing.assert_allclose(got[name], expected, rtol=2e-6, atol=1e-7, err_msg=f"{opt} {name}")


def _groups(params):
    return [{"params": [params[0]], "weight_decay": WD}, {"params": [params[1]], "weight_decay": 0.0}]


@pytest.mark.parametrize("schedule", [False, True], ids=["constant-lr", "schedule"])
def test_lion_agrees_with_mindcv(mode, schedule):
    mindcv_lion = pytest.importorskip("mindcv.optim.lion")
    lr = Tensor(np.array(SCHEDULE, np.float32)) if schedule else 0.03
    results = []
    for cls in (Lion, mindcv_lion.Lion):
        params = _params()
        results.append(_run(cls(_groups(params), lr), params))
    for name in W0:
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_adan_groups_keep_their_own_lr_and_weight_decay(mode):
    # One group with its own lr schedule and decay, the other on the optimizer's schedule and
    # decay; a loss scale divided out.
    own_lrs = [0.5 * lr for lr in SCHEDULE]
    params = _params()
    groups = [{"params": [params[0]], "lr": own_lrs, "weight_decay": 0.3}, {"params": [params[1]]}]
    got = _run(Adan(groups, SCHEDULE, weight_decay=WD, loss_scale=4.0), params, scale=4.0)
    for name, lrs, wd in (("w.weight", own_lrs, 0.3), ("w.bias", SCHEDULE, WD)):
        grads = [g[name].astype(np.float64) for g in GRADS]
        expected = _np_adan(W0[name].astype(np.float64), grads, lrs, wd)
        np.testing.assert_allclose(got[name], expected, rtol=2e-6, atol=1e-7, err_msg=name)


def test_adan_differs_from_mindcv_0_3(mode):
    # mindcv 0.3.0 reads the same default betas as weights of the newest term and skips the bias
    # correction, so the same inputs lead elsewhere.
    mindcv_adan = pytest.importorskip("mindcv.optim.adan")
    results = []
    for cls in (Adan, mindcv_adan.Adan):
        params = _params()
        results.append(_run(cls(params, 0.03, weight_decay=WD), params, steps=3))
    for name in W0:
        assert np.abs(results[0][name] - results[1][name]).max() > 1e-3, name


def test_nadam_first_step_agrees_with_mindcv(mode):
    # mindcv's NAdam counts steps only when the lr is a schedule (and then from 2), so its
    # momentum schedule drifts from the published one after the first step with a constant lr;
    # the first step is the rule itself.
    mindcv_nadam = pytest.importorskip("mindcv.optim.nadam")
    results = []
    for cls in (NAdam, mindcv_nadam.NAdam):
        params = _params()
        results.append(_run(cls(_groups(params), 0.03), params, steps=1))
    for name in W0:
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_nesterov_opt_is_momentum_with_nesterov(pynative_mode):
    # Two steps, g = 1, lr 0.1, mu 0.9: Nesterov moves w by lr*(g + mu*accum) = 0.19, then 0.271.
    params = _params()
    optimizer = create_optimizer(params, "Nesterov", lr=0.1, momentum=0.9)
    assert isinstance(optimizer, nn.SGD)  # nn.Momentum ignores use_nesterov on CPU
    for _ in range(2):
        optimizer(tuple(Tensor(np.ones(p.shape, np.float32)) for p in params))
    np.testing.assert_allclose(params[0].asnumpy() - W0["w.weight"], -(0.19 + 0.271), rtol=1e-5)


# --------------------------------------------------------------- layer-wise LR decay


def _v3_small_layer(name: str) -> int:
    # mobilenet_v3_small: features.0/1 = stem conv + BN, features.3..13 = the 11 inverted
    # residual blocks, features.14/15 = the 1x1 conv + BN before pooling, then the classifier.
    parts = name.split(".")
    if parts[0] != "features":
        return 12
    index = int(parts[1])
    return 0 if index < 3 else 12 if index > 13 else index - 2


@pytest.fixture(scope="module")
def v3_small():
    return create_model("mobilenet_v3_small_100", num_classes=10)


def test_layer_ids_of_mobilenet_v3_small(v3_small):
    names = [p.name for p in v3_small.trainable_params()]
    assert layer_ids(names) == [_v3_small_layer(n) for n in names]


def test_layer_ids_fallback_groups_twelve_parameters_and_puts_the_head_last():
    names = [f"body{i}.weight" for i in range(26)] + ["fc.weight", "fc.bias"]
    assert layer_ids(names) == [0] * 12 + [1] * 12 + [2] * 2 + [3, 3]
    assert layer_ids(["a.weight", "b.weight"]) == [0, 0]


def test_layer_decay_gives_each_layer_its_lr_and_exempts_1d_params(pynative_mode, v3_small):
    params = v3_small.trainable_params()
    optimizer = create_optimizer(params, "adamw", lr=0.1, weight_decay=0.05, layer_decay=0.5)
    assert [p.name for p in optimizer.parameters] == [p.name for p in params]
    weight_decay = [float(wd.asnumpy()) for wd in optimizer.weight_decay]
    for p, wd in zip(params, weight_decay):
        lr = float(optimizer.get_lr_parameter(p).asnumpy())
        assert lr == pytest.approx(0.1 * 0.5 ** (12 - _v3_small_layer(p.name)), rel=1e-6), p.name
        assert wd == (0.0 if p.ndim == 1 else pytest.approx(0.05)), p.name
    head = [p for p in params if p.name == "classifier.3.weight"][0]
    assert float(optimizer.get_lr_parameter(head).asnumpy()) == pytest.approx(0.1)


def test_layer_decay_step_matches_manual_sgd_with_a_schedule(pynative_mode, v3_small):
    params = v3_small.trainable_params()
    start = {p.name: p.asnumpy().copy() for p in params}
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=p.shape).astype(np.float32) for p in params]
    schedule, wd, decay = [0.2, 0.1], 0.01, 0.8
    optimizer = create_optimizer(
        params, "sgd", lr=schedule, momentum=0.0, weight_decay=wd, weight_decay_filter="auto", layer_decay=decay
    )
    expected = {p.name: start[p.name].astype(np.float64) for p in params}
    for lr in schedule:
        optimizer(tuple(Tensor(g) for g in grads))
        for p, g in zip(params, grads):
            p_wd = 0.0 if p.ndim == 1 or "gamma" in p.name or "beta" in p.name else wd
            w = expected[p.name]
            expected[p.name] = w - lr * decay ** (12 - _v3_small_layer(p.name)) * (g + p_wd * w)
    for p in params:
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=1e-7, err_msg=p.name)


def test_recipe_layer_decay_reaches_the_optimizer():
    kwargs = optimizer_kwargs(load_config(None, {"opt": "Lion", "layer_decay": 0.65, "weight_decay": 0.1}))
    assert kwargs["layer_decay"] == 0.65
    params = _params()
    optimizer = create_optimizer(params, lr=0.1, **kwargs)
    assert isinstance(optimizer, Lion)
    # No features.* blocks: the fallback puts both parameters in one layer, the head (full lr).
    assert [float(optimizer.get_lr_parameter(p).asnumpy()) for p in params] == pytest.approx([0.1, 0.1])
    assert [float(wd.asnumpy()) for wd in optimizer.weight_decay] == pytest.approx([0.1, 0.0])


# --------------------------------------------------------------- errors


def test_all_mindcv_names_are_accepted():
    mindcv_names = {"sgd", "nesterov", "momentum", "adam", "adamw", "lion", "nadam", "adan", "rmsprop", "adagrad"}
    assert mindcv_names | {"lamb"} <= set(list_optimizers())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"opt": "lamb", "loss_scale": 8.0}, "opt 'lamb' cannot undo loss_scale=8.0; use loss_scale=1.0"),
        ({"opt": "sgd", "layer_decay": 1.5}, "layer_decay must be in (0.0, 1.0], got 1.5"),
        ({"opt": "adan", "betas": (0.9, 0.99)}, "betas of opt 'adan' must be 3 numbers, got (0.9, 0.99)"),
        ({"opt": "lion", "nesterov": True}, "nesterov=True is not supported by opt 'lion'; accepted with: momentum"),
        ({"opt": "nesterov", "momentum": 0.0}, "Nesterov momentum (opt 'nesterov') needs momentum > 0, got 0.0"),
        ({"opt": "adann"}, "unknown optimizer 'adann'; did you mean 'adan'?"),
    ],
)
def test_one_line_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        create_optimizer(_params(), **kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
