"""mindcv checkpoints load unchanged: for every MobileNet both projects register, a checkpoint saved
from mindcv's own model (mindcv 0.3.0) loads into ours with nothing missing or unexpected and gives
the same eval-mode logits; mindcv's 1001-class V1 heads work through a recipe; ``validate`` on a
mindcv checkpoint scores what mindcv's model scores."""

import logging
import zlib
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from mindcv_mobile.config import load_config
from mindcv_mobile.models import create_model, get_model_cfg, list_models, load_model_weights

mindcv_models = pytest.importorskip(
    "mindcv.models", reason="mindcv is the reference for checkpoint compatibility: pip install mindcv==0.3.0 --no-deps"
)

REPO = Path(__file__).resolve().parents[2]
V1_RECIPE = str(REPO / "configs/mobilenetv1/mobilenet_v1_0.25_ascend.yaml")
COMMON = sorted(set(mindcv_models.list_models("mobilenet*")) & set(list_models()))
# Five stride-2 stages and TF-style "same" padding at each: an even input size exercises the
# asymmetric padding of every stride-2 depthwise conv, and 32 px keeps 30 models fast.
INPUT = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
TOLERANCE = 1e-5


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def mindcv_reference(name: str, num_classes: int = 1000):
    """mindcv's model in eval mode with every parameter redrawn: He-scaled weights (with mindcv's
    own init, V2/V3 logits are ~1e-9 and barely depend on the input) and random BatchNorm
    statistics, affine parameters and inner biases, so a mis-mapped parameter or a different
    padding shows in the logits. The head bias stays 0."""
    net = mindcv_models.create_model(name, num_classes=num_classes)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    head = get_model_cfg(name).classifier + "."
    for param in net.get_parameters():
        shape, pname = param.shape, param.name
        if pname.endswith(".weight") and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            gain = 1.0 if len(shape) == 2 else 2.0  # Dense: linear; conv: followed by (h)swish/ReLU
            value = rng.normal(0.0, np.sqrt(gain / fan_in), shape)
        elif pname.endswith(("moving_variance", "gamma")):
            value = rng.uniform(0.8, 1.2, shape)
        elif pname.startswith(head):
            continue
        else:  # moving_mean, beta, conv/Dense biases
            value = rng.normal(0.0, 0.1, shape)
        param.set_data(ms.Tensor(value.astype(np.float32)))
    net.set_train(False)
    # Logits of magnitude 1: float32 rounding is relative (V1/V2 match bit for bit; V3's elementwise
    # hard-swish here against mindcv's fused nn.HSwish differs by ~3e-6 of the logits' scale, e.g.
    # 3.5e-5 on mobilenet_v3_large_100 logits of magnitude 10), so the bound is 1e-5 of that scale.
    head_weight = net.parameters_dict()[head + "weight"]
    head_weight.set_data(head_weight.data / float(np.abs(logits(net)).max()))
    return net


def logits(net, x=INPUT) -> np.ndarray:
    return net(ms.Tensor(x)).asnumpy()


def test_both_projects_register_the_same_mobilenets():
    ours, theirs = set(list_models()), set(mindcv_models.list_models("mobilenet*"))
    assert len(theirs) == 30 and theirs <= ours
    # Ours also names the plain V2 widths mindcv registers only with a resolution suffix.
    assert ours - theirs == {"mobilenet_v2_035", "mobilenet_v2_050", "mobilenet_v2_130"}


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMON)
def test_mindcv_checkpoint_loads_with_identical_logits(name, tmp_path, pynative):
    reference = mindcv_reference(name)
    path = tmp_path / f"{name}.ckpt"
    ms.save_checkpoint(reference, str(path))
    try:
        ours = create_model(name, num_classes=1000, checkpoint_path=str(path))
    finally:
        path.unlink()  # up to 25 MB each: keep pytest's retained tmp dirs small
    report = ours.load_report
    assert (report.missing, report.unexpected, report.head) == ([], [], "loaded")
    assert len(list(ours.get_parameters())) == len(list(reference.get_parameters()))
    ours.set_train(False)
    expected, actual = logits(reference), logits(ours)
    # Logits that hardly depend on the input would make the comparison meaningless.
    assert np.abs(expected[0] - expected[1]).max() > 100 * TOLERANCE
    assert np.abs(actual - expected).max() < TOLERANCE


@pytest.mark.slow
def test_logit_comparison_detects_one_changed_bn_statistic(pynative):
    """The bound above is tight enough to see a 10% change in one BatchNorm's variances."""
    reference = mindcv_reference("mobilenet_v3_small_100")
    params = {p.name: ms.Parameter(p.data.copy(), name=p.name) for p in reference.get_parameters()}
    changed = "features.8.layers.4.moving_variance"
    assert changed in params
    params[changed].set_data(params[changed].data * 1.1)
    ours = create_model("mobilenet_v3_small_100", num_classes=1000)
    load_model_weights(ours, params, get_model_cfg("mobilenet_v3_small_100"))
    ours.set_train(False)
    assert np.abs(logits(ours) - logits(reference)).max() > 10 * TOLERANCE


def test_v1_1001_class_release_through_the_recipe(tmp_path, pynative, caplog):
    """mindcv's V1 releases have 1001 classes trained on labels 0..999: with num_classes 1000 the
    first 1000 rows are kept (as mindcv's loader does), said once in the log."""
    reference = mindcv_reference("mobilenet_v1_025", num_classes=1001)
    path = str(tmp_path / "mobilenet_v1_025_1001.ckpt")
    ms.save_checkpoint(reference, path)
    expected = logits(reference)
    assert load_config(V1_RECIPE).num_classes == 1001

    cfg = load_config(V1_RECIPE, {"num_classes": 1000, "ckpt_path": path})
    with caplog.at_level(logging.INFO):
        net = create_model(
            cfg.model,
            num_classes=cfg.num_classes,
            checkpoint_path=cfg.ckpt_path,
            in_channels=cfg.in_channels,
            drop_rate=cfg.drop_rate,
            drop_path_rate=cfg.drop_path_rate,
        )
    report = net.load_report
    assert (report.missing, report.unexpected, report.head) == ([], [], "sliced 1001 -> 1000 classes")
    assert net.classifier.weight.shape == (1000, 256)
    net.set_train(False)
    assert np.abs(logits(net) - expected[:, :1000]).max() < TOLERANCE
    explained = [r for r in caplog.records if "unused last logit" in r.getMessage()]
    assert len(explained) == 1 and path in explained[0].getMessage()

    # The recipe as published (1001 classes) takes the head whole.
    own = load_config(V1_RECIPE, {"ckpt_path": path})
    whole = create_model(own.model, num_classes=own.num_classes, checkpoint_path=own.ckpt_path)
    whole.set_train(False)
    assert whole.load_report.head == "loaded"
    assert np.abs(logits(whole) - expected).max() < TOLERANCE


@pytest.mark.slow
def test_validate_on_mindcv_checkpoint_reports_mindcv_top1(digits_root, tmp_path, pynative):
    """A mindcv V1 (1001-class head, as released) with a linear probe fitted on the digits: our
    validate() through the published recipe scores exactly what mindcv's own model scores."""
    from mindcv_mobile.build import build_eval_loader, resolve_eval_config, standalone_config
    from mindcv_mobile.config import copy_config
    from mindcv_mobile.tasks import validate

    reference = mindcv_reference("mobilenet_v1_025", num_classes=1001)
    path = str(tmp_path / "mindcv_v1_025_digits.ckpt")
    cfg = load_config(
        V1_RECIPE,
        {
            "num_classes": 1000,
            "ckpt_path": path,
            "data_dir": digits_root,
            "image_resize": 32,
            "batch_size": 90,
            "mode": 1,
            "num_parallel_workers": 1,
        },
    )
    eval_cfg = resolve_eval_config(standalone_config(cfg))  # the preprocessing validate() uses

    def batches(split: str):
        split_cfg = copy_config(eval_cfg)
        split_cfg.val_split = split
        return build_eval_loader(split_cfg).create_tuple_iterator(num_epochs=1)

    # Ridge probe on standardised train features into rows 0..9; rows 10..1000 never win. Were the
    # head sliced as TF's background-first layout ([1:]), every prediction would shift by one.
    pairs = [(reference.pool(reference.forward_features(x)).asnumpy(), y.asnumpy()) for x, y in batches("train")]
    feats = np.concatenate([f for f, _ in pairs]).astype(np.float64)
    targets = np.eye(10)[np.concatenate([y for _, y in pairs])]
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    scaled = (feats - mean) / std
    probe = np.linalg.solve(
        scaled.T @ scaled + 0.1 * len(scaled) * np.eye(scaled.shape[1]), scaled.T @ (targets - targets.mean(0))
    )
    weight = np.zeros((1001, feats.shape[1]), np.float32)
    bias = np.full((1001,), -100.0, np.float32)
    weight[:10], bias[:10] = (probe / std[:, None]).T, targets.mean(0) - (mean / std) @ probe
    reference.classifier.weight.set_data(ms.Tensor(weight))
    reference.classifier.bias.set_data(ms.Tensor(bias))
    ms.save_checkpoint(reference, path)

    hits, gaps = [], []
    for x, y in batches("val"):
        scores = logits(reference, x.asnumpy())
        hits.append(np.argmax(scores, axis=1) == y.asnumpy())
        gaps.append(np.diff(np.sort(scores, axis=1)[:, -2:], axis=1))
    mindcv_top1 = float(np.concatenate(hits).mean())
    assert np.concatenate(gaps).min() > 1e-5  # no near-ties, which metrics may break either way
    assert mindcv_top1 > 0.3  # well above chance (0.1): equal scores below mean equal predictions
    result = validate(cfg)
    assert result["samples"] == len(np.concatenate(hits)) > 300
    assert result["Top_1_Accuracy"] == pytest.approx(mindcv_top1, abs=1e-9)
