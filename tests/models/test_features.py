"""``create_model(name, features_only=True, out_indices=...)``: for every registered MobileNet the
backbone returns the feature maps the classification model computes at strides 2..32 (checked by
running the classification model's ``features`` layers one by one), describes them in
``feature_info``, and takes a classification checkpoint with only the head's entries unused."""

import logging
import zlib

import mindspore as ms
import numpy as np
import pytest

from mindcv_mobile.models import create_model, get_model_cfg, list_models, load_model_weights

SIZE = 64
INPUT = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
ALL_LEVELS = (0, 1, 2, 3, 4)
# timm's feature channels for these architectures (``feature_info.channels()`` of its
# mobilenetv2_100, mobilenetv3_large_100 / small_100) and, for V1, Table 1 of the paper.
PUBLISHED_CHANNELS = {
    "mobilenet_v1_100": (64, 128, 256, 512, 1024),
    "mobilenet_v2_100": (16, 24, 32, 96, 320),
    "mobilenet_v3_large_100": (16, 24, 40, 112, 960),
    "mobilenet_v3_small_100": (16, 16, 24, 48, 576),
}


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def randomized(net, seed_name: str):
    """Every parameter redrawn (He-scaled weights, random BN statistics/affine, biases), in eval
    mode: with the default init BN is the identity and a wrongly wired layer could go unseen."""
    rng = np.random.default_rng(zlib.crc32(seed_name.encode()))
    for param in net.get_parameters():
        shape, name = param.shape, param.name
        if name.endswith(".weight") and len(shape) >= 2:
            value = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        elif name.endswith(("moving_variance", "gamma")):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        param.set_data(ms.Tensor(value.astype(np.float32)))
    net.set_train(False)
    return net


def layer_outputs(features, x) -> list:
    """The output of each layer of a classification model's ``features``, run one at a time."""
    outs = []
    for cell in features:
        x = cell(x)
        outs.append(x.asnumpy())
    return outs


def expected_modules(name: str, outs: list) -> list:
    """Per level, the index of the last layer whose output has that level's resolution. V2's
    trunk ends at its last block: the 1x1 conv to 1280 channels (3 layers) is its head."""
    trunk = outs[:-3] if name.startswith("mobilenet_v2") else outs
    return [max(k for k, out in enumerate(trunk) if out.shape[-1] == SIZE // 2 ** (i + 1)) for i in ALL_LEVELS]


@pytest.mark.parametrize("name", list_models())
def test_features_are_the_classification_models_activations(name, tmp_path, pynative, caplog):
    full = randomized(create_model(name), name)
    path = str(tmp_path / "full.ckpt")
    ms.save_checkpoint(full, path)
    with caplog.at_level(logging.INFO, logger="mindcv_mobile"):
        net = create_model(name, features_only=True, out_indices=ALL_LEVELS, checkpoint_path=path)
    report = net.load_report

    own = {p.name for p in net.get_parameters()}
    unused = [p.name for p in full.get_parameters() if p.name not in own]
    assert report.missing == [] and report.unexpected == []
    assert report.skipped == unused and report.head == "not built (features only)"
    assert any(p.startswith(get_model_cfg(name).classifier + ".") for p in report.skipped)
    # Nothing about this load deserves a warning; the skipped head is said at info level.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("skipped" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)

    outs = layer_outputs(full.features, ms.Tensor(INPUT))
    modules = expected_modules(name, outs)
    assert [info["module"] for info in net.feature_info] == [f"features.{k}" for k in modules]
    net.set_train(False)
    feats = net(ms.Tensor(INPUT))
    assert isinstance(feats, tuple) and len(feats) == len(ALL_LEVELS)
    for level, (feat, info, k) in enumerate(zip(feats, net.feature_info, modules)):
        feat = feat.asnumpy()
        stride = 2 ** (level + 1)
        assert info["reduction"] == stride
        assert feat.shape == (1, info["chs"], SIZE // stride, SIZE // stride)
        assert np.abs(outs[k]).max() > 1e-2  # a live activation, not an all-zero map
        np.testing.assert_allclose(feat, outs[k], rtol=1e-5, atol=1e-5 * np.abs(outs[k]).max())
    # Nothing after the deepest output is built.
    assert len(net.features) == modules[-1] + 1
    if name in PUBLISHED_CHANNELS:
        assert tuple(info["chs"] for info in net.feature_info) == PUBLISHED_CHANNELS[name]


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small_075"])
def test_default_levels_are_strides_4_to_32_in_graph_mode(name):
    ms.set_context(mode=ms.GRAPH_MODE)
    net = create_model(name, features_only=True)
    net.set_train(False)
    assert [info["reduction"] for info in net.feature_info] == [4, 8, 16, 32]
    assert net.out_channels == [info["chs"] for info in net.feature_info]
    feats = net(ms.Tensor(INPUT))
    assert [f.shape[-1] for f in feats] == [SIZE // 4, SIZE // 8, SIZE // 16, SIZE // 32]
    assert [f.shape[1] for f in feats] == net.out_channels


def test_shallow_levels_build_only_the_layers_they_need(pynative):
    full = randomized(create_model("mobilenet_v2_100"), "shallow")
    params = {p.name: p for p in full.get_parameters()}
    net = create_model("mobilenet_v2_100", features_only=True, out_indices=[0, 2])
    report = load_model_weights(net, params, get_model_cfg("mobilenet_v2_100"))
    assert [(i["reduction"], i["chs"], i["module"]) for i in net.feature_info] == [
        (2, 16, "features.3"),
        (8, 32, "features.8"),
    ]
    assert len(net.features) == 9
    assert not [n for n in (p.name for p in net.get_parameters()) if int(n.split(".")[1]) > 8]
    assert report.missing == [] and report.unexpected == []
    assert "features.9." in net.unbuilt_prefixes and "features.19.layers.0.weight" in report.skipped
    outs = layer_outputs(full.features, ms.Tensor(INPUT))
    net.set_train(False)
    feats = net(ms.Tensor(INPUT))
    np.testing.assert_array_equal(feats[0].asnumpy(), outs[3])
    np.testing.assert_array_equal(feats[1].asnumpy(), outs[8])


def test_mindcv_checkpoint_loads_into_the_backbone(tmp_path, pynative):
    """mindcv's MobileNetV3 saved whole: the backbone takes it and returns what mindcv's own layers
    compute (elementwise vs fused hard-swish: 1e-5 of the activations' scale)."""
    mindcv_models = pytest.importorskip("mindcv.models", reason="mindcv 0.3.0 is the reference checkpoint format")
    name = "mobilenet_v3_large_100"
    reference = randomized(mindcv_models.create_model(name), "mindcv")
    path = str(tmp_path / "mindcv.ckpt")
    ms.save_checkpoint(reference, path)
    net = create_model(name, features_only=True, checkpoint_path=path)
    assert net.load_report.missing == [] and net.load_report.unexpected == []
    assert {n.split(".")[0] for n in net.load_report.skipped} == {"classifier"}
    outs = layer_outputs(reference.features, ms.Tensor(INPUT))
    net.set_train(False)
    for feat, info in zip(net(ms.Tensor(INPUT)), net.feature_info):
        want = outs[int(info["module"].split(".")[1])]
        np.testing.assert_allclose(feat.asnumpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("out_indices", [(5,), (-1, 2), (), (2, 2), (3, 1), (1.0, 2), (True,), "12", 3])
def test_invalid_out_indices_name_the_valid_levels(out_indices):
    with pytest.raises(ValueError, match=r"out_indices must be increasing distinct levels in 0\.\.4 .*stride 32"):
        create_model("mobilenet_v3_small_075", features_only=True, out_indices=out_indices)


def test_out_indices_need_features_only():
    with pytest.raises(ValueError, match="features_only=True"):
        create_model("mobilenet_v3_small_075", out_indices=(1, 2))


def test_classification_checkpoint_of_another_width_still_fails(tmp_path):
    """Skipping the head does not hide a checkpoint of the wrong model."""
    path = str(tmp_path / "w.ckpt")
    ms.save_checkpoint(create_model("mobilenet_v2_050"), path)
    with pytest.raises(ValueError, match=r"features\.0\.weight has shape \(16, 3, 3, 3\)"):
        create_model("mobilenet_v2_100", features_only=True, checkpoint_path=path)
