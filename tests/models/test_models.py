"""Model zoo: registry, architectures against published tables, checkpoints."""

import logging
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindcv_mobile.models import (
    check_input_size,
    create_model,
    get_model_cfg,
    list_models,
    load_model_weights,
    save_checkpoint,
)


def n_params(net):
    return sum(int(np.prod(p.shape)) for p in net.get_parameters())


def test_registry_has_every_documented_name():
    names = set(list_models())
    expected = {f"mobilenet_v1_{a}" for a in ("025", "050", "075", "100")}
    expected |= {f"mobilenet_v2_{a}" for a in ("035", "050", "075", "100", "130", "140")}
    expected |= {f"mobilenet_v2_{a}_{r}" for a in ("035", "050") for r in (224, 192, 160, 128, 96)}
    expected |= {f"mobilenet_v2_{a}_{r}" for a in ("075", "100") for r in (192, 160, 128, 96)}
    expected |= {"mobilenet_v2_130_224"}
    expected |= {f"mobilenet_v3_{k}_{a}" for k in ("small", "large") for a in ("075", "100")}
    assert names == expected
    assert list_models("mobilenet_v3_*") == [
        "mobilenet_v3_large_075",
        "mobilenet_v3_large_100",
        "mobilenet_v3_small_075",
        "mobilenet_v3_small_100",
    ]


# Counts include BN moving mean/variance (mindcv's params(M) convention). Exact values are
# mindcv's/torchvision's totals for these architectures; the published tables round to 0.01M.
@pytest.mark.parametrize(
    "name,num_classes,total,tensors",
    [
        ("mobilenet_v1_100", 1001, 4_254_889, 137),
        ("mobilenet_v2_100", 1000, 3_538_984, 262),
        ("mobilenet_v2_140", 1000, 6_156_712, 262),
        ("mobilenet_v3_large_100", 1000, 5_507_432, 266),
        ("mobilenet_v3_small_100", 1000, 2_554_968, 210),
    ],
)
@pytest.mark.slow
def test_exact_parameter_counts(name, num_classes, total, tensors):
    net = create_model(name, num_classes=num_classes)
    assert n_params(net) == total
    assert len(list(net.get_parameters())) == tensors


@pytest.mark.parametrize("name", [n for n in list_models() if get_model_cfg(n).params_m])
def test_params_match_published_table(name):
    cfg = get_model_cfg(name)
    count = n_params(create_model(name, num_classes=cfg.num_classes)) / 1e6
    # 0.5%, or the table's own precision (0.01M) where that is coarser (v1_025: 0.4758M -> "0.47").
    assert abs(count - cfg.params_m) <= max(0.005 * cfg.params_m, 0.01), (name, count, cfg.params_m)


@pytest.mark.parametrize(
    "name,published",
    [
        ("mobilenet_v1_100", 4.25),
        ("mobilenet_v2_075", 2.66),
        ("mobilenet_v2_100", 3.54),
        ("mobilenet_v3_small_100", 2.55),
        ("mobilenet_v3_large_100", 5.51),
    ],
)
def test_params_within_half_percent_at_1000_classes(name, published):
    count = n_params(create_model(name, num_classes=1000)) / 1e6
    assert abs(count - published) <= 0.005 * published


def test_v1_widths_are_not_rounded_to_8():
    net = create_model("mobilenet_v1_025")
    assert net.features[0].weight.shape[0] == 8  # int(32 * 0.25), not make_divisible -> 8 anyway
    assert net.features[3][3].weight.shape[0] == 16
    assert net.classifier.weight.shape == (1000, 256)


def test_v3_depthwise_uses_same_padding_and_se_names():
    net = create_model("mobilenet_v3_large_100")
    names = {p.name for p in net.get_parameters()}
    assert "features.6.layers.6.conv_reduce.weight" in names
    assert "features.18.weight" in names and "classifier.3.weight" in names
    dw = net.features[4].layers[3]
    assert dw.group == dw.in_channels and dw.pad_mode == "same"


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_forward_shape_pynative_at_registered_resolution(name, pynative):
    size = get_model_cfg(name).image_size
    net = create_model(name, num_classes=7)
    net.set_train(False)
    out = net(ms.Tensor(np.random.rand(2, 3, size, size).astype(np.float32)))
    assert out.shape == (2, 7)
    assert np.isfinite(out.asnumpy()).all()


# Graph mode: one model per architecture family and width, and the full resolution grid once.
@pytest.mark.parametrize(
    "name,sizes",
    [
        ("mobilenet_v1_025", (64,)),
        ("mobilenet_v2_035", (96, 128, 160, 192, 224)),
        ("mobilenet_v3_small_075", (64,)),
        ("mobilenet_v3_large_100", (96,)),
    ],
)
@pytest.mark.slow
def test_forward_shape_graph_mode(name, sizes):
    ms.set_context(mode=ms.GRAPH_MODE)
    net = create_model(name, num_classes=5)
    net.set_train(False)
    for size in sizes:
        out = net(ms.Tensor(np.random.rand(1, 3, size, size).astype(np.float32)))
        assert out.shape == (1, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small_075"])
def test_backward_reaches_every_trainable_parameter(name, pynative):
    net = create_model(name, num_classes=4, drop_rate=0.0)
    net.set_train(True)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    params = net.trainable_params()
    grad_fn = ms.value_and_grad(lambda x, y: loss_fn(net(x), y), None, params)
    x = ms.Tensor(np.random.rand(4, 3, 64, 64).astype(np.float32))
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    _, grads = grad_fn(x, y)
    dead = [p.name for p, g in zip(params, grads) if not np.any(g.asnumpy())]
    assert not dead, f"no gradient reaches {dead}"


def test_in_channels_and_drop_rate():
    net = create_model("mobilenet_v2_050", num_classes=3, in_channels=1, drop_rate=0.5)
    assert net.features[0].weight.shape[1] == 1
    assert net.classifier[0].p == 0.5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"model_name": "mobilenet_v3_smal_100"}, "closest: mobilenet_v3_small_100"),
        ({"model_name": "mobilenet_v2_100", "num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"model_name": "mobilenet_v2_100", "num_classes": -3}, "got -3"),
        ({"model_name": "mobilenet_v2_100", "in_channels": 0}, "in_channels"),
        ({"model_name": "mobilenet_v2_100", "drop_rate": 1.5}, "drop_rate must be in"),
        ({"model_name": "mobilenet_v2_100", "drop_path_rate": 1.5}, "drop_path_rate must be a number in"),
        ({"model_name": "mobilenet_v2_100", "pretrained": True, "checkpoint_path": "x.ckpt"}, "not both"),
    ],
)
def test_bad_arguments_are_clear_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(**kwargs)


@pytest.mark.parametrize("size", [0, 16, 31, 224.0, "224", True])
def test_input_size_the_model_cannot_take(size):
    with pytest.raises(ValueError, match="at least 32 px"):
        check_input_size("mobilenet_v2_100", size)
    assert check_input_size("mobilenet_v2_100", 32) == 32


def test_registry_records():
    v1 = get_model_cfg("mobilenet_v1_100")
    assert v1.num_classes == 1001 and v1.classifier == "classifier"
    assert v1.url.endswith("mobilenetv1/mobilenet_v1_100-91c7b206.ckpt") and v1.sha256_prefix == "91c7b206"
    assert get_model_cfg("mobilenet_v2_075_160").input_size == (3, 160, 160)
    assert get_model_cfg("mobilenet_v2_100").classifier == "classifier.1"
    assert get_model_cfg("mobilenet_v3_small_100").classifier == "classifier.3"
    assert get_model_cfg("mobilenet_v3_large_100").top1 == 75.23


# ---------------------------------------------------------------------------- checkpoints


def test_save_and_load_roundtrip(tmp_path, pynative):
    net = create_model("mobilenet_v3_small_075", num_classes=6)
    path = save_checkpoint(net, str(tmp_path / "w.ckpt"))
    other = create_model("mobilenet_v3_small_075", num_classes=6, checkpoint_path=path)
    assert other.load_report.missing == [] and other.load_report.unexpected == []
    for a, b in zip(net.get_parameters(), other.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_other_num_classes_drops_head_with_warning(tmp_path, caplog):
    path = save_checkpoint(create_model("mobilenet_v2_035", num_classes=10), str(tmp_path / "w.ckpt"))
    src = ms.load_checkpoint(path)
    with caplog.at_level(logging.WARNING):
        net = create_model("mobilenet_v2_035", num_classes=3, checkpoint_path=path)
    assert net.load_report.head.startswith("dropped (10 classes")
    assert net.load_report.missing == []
    assert "classifier" in caplog.text and "fine-tuning" in caplog.text
    np.testing.assert_array_equal(net.features[0].weight.asnumpy(), src["features.0.weight"].asnumpy())


def test_1001_class_head_is_sliced_to_1000(tmp_path):
    path = save_checkpoint(create_model("mobilenet_v1_025", num_classes=1001), str(tmp_path / "v1.ckpt"))
    src = ms.load_checkpoint(path)
    net = create_model("mobilenet_v1_025", num_classes=1000, checkpoint_path=path)
    assert net.load_report.head == "sliced 1001 -> 1000 classes"
    np.testing.assert_array_equal(net.classifier.weight.asnumpy(), src["classifier.weight"].asnumpy()[:1000])
    np.testing.assert_array_equal(net.classifier.bias.asnumpy(), src["classifier.bias"].asnumpy()[:1000])


@pytest.mark.slow
def test_shape_mismatch_outside_head_names_the_parameter(tmp_path):
    path = save_checkpoint(create_model("mobilenet_v2_050"), str(tmp_path / "w.ckpt"))
    with pytest.raises(
        ValueError, match=r"parameter features\.0\.weight has shape \(16, 3, 3, 3\).*expects \(32, 3, 3, 3\)"
    ):
        create_model("mobilenet_v2_100", checkpoint_path=path)


@pytest.mark.slow
def test_missing_and_unexpected_keys_are_reported(tmp_path):
    net = create_model("mobilenet_v1_025")
    params = [{"name": p.name, "data": p} for p in net.get_parameters() if p.name != "features.1.gamma"]
    params.append({"name": "extra.weight", "data": ms.Tensor(np.zeros(2, np.float32))})
    params.append({"name": "moments.features.0.weight", "data": ms.Tensor(np.zeros(2, np.float32))})
    path = save_checkpoint(params, str(tmp_path / "w.ckpt"))
    report = load_model_weights(create_model("mobilenet_v1_025"), path)
    assert report.missing == ["features.1.gamma"]
    assert report.unexpected == ["extra.weight"]  # optimizer state is not "unexpected"
    with pytest.raises(ValueError, match="strict load failed"):
        load_model_weights(create_model("mobilenet_v1_025"), path, strict=True)


def test_missing_and_truncated_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.ckpt"):
        create_model("mobilenet_v1_025", checkpoint_path=str(tmp_path / "nope.ckpt"))
    path = save_checkpoint(create_model("mobilenet_v1_025"), str(tmp_path / "w.ckpt"))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint .*w.ckpt"):
        create_model("mobilenet_v1_025", checkpoint_path=path)


def test_pretrained_without_cached_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path))
    cfg = get_model_cfg("mobilenet_v3_small_100")
    with pytest.raises(FileNotFoundError) as err:
        create_model("mobilenet_v3_small_100", pretrained=True)
    assert cfg.url in str(err.value) and str(tmp_path / "mobilenet_v3_small_100-509c6047.ckpt") in str(err.value)
    with pytest.raises(ValueError, match="no released weights"):
        create_model("mobilenet_v3_small_075", pretrained=True)


def test_pretrained_checks_sha256_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path))
    bogus = tmp_path / "mobilenet_v3_small_100-509c6047.ckpt"
    save_checkpoint(create_model("mobilenet_v3_small_100"), str(bogus))
    with pytest.raises(ValueError, match="expected 509c6047"):
        create_model("mobilenet_v3_small_100", pretrained=True)
