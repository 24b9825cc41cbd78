"""Quantization-aware MobileNetV2 and its int8 deployment (mindcv_mobile/quant).

Cheap tests first (model surgery, the quantizer arithmetic, one folded layer in PyNative);
then one module fixture that trains a QAT model for 3 steps in graph mode through ``train``,
validates it through ``validate`` and exports it through ``tasks.export`` (graph compile
of a QAT MobileNetV2 on CPU is the slow part: ~40 s on an idle 2-core machine).
"""

import importlib.util
import json
import os

import mindspore as ms
import numpy as np
import onnx
import pytest
from mindspore import nn
from onnx import numpy_helper

from mindcv_mobile.cli import run_main
from mindcv_mobile.config import ConfigError, load_config
from mindcv_mobile.deploy import export_int8_onnx, onnx_session, run_exported, runtime_op_types
from mindcv_mobile.models import create_model, list_models, save_checkpoint
from mindcv_mobile.quant import (
    QuantConvBN,
    build_deploy_net,
    count_fake_quant,
    expected_fake_quant,
    observer_weights,
    quantize_model,
)
from mindcv_mobile.tasks import train, validate
from mindcv_mobile.tasks.export import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv2_quant", "mobilenet_v2_quant_digits_cpu.yaml")
ASCEND_RECIPE = os.path.join(ROOT, "configs", "mobilenetv2_quant", "mobilenet_v2_quant_ascend.yaml")
WIDTHS = sorted({name[: len("mobilenet_v2_035")] for name in list_models("mobilenet_v2_*")})


@pytest.fixture(autouse=True)
def _pynative_by_default():
    # Cheap tests run eagerly; the module fixture's train() / validate() set graph mode from the recipe.
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _random_bn_statistics(net, seed=0):
    """Non-trivial BN parameters, so folding them into the convs is actually exercised."""
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            c = cell.gamma.shape[0]
            cell.gamma.set_data(ms.Tensor(rng.uniform(0.5, 1.5, c).astype(np.float32)))
            cell.beta.set_data(ms.Tensor(rng.normal(0, 0.5, c).astype(np.float32)))
            cell.moving_mean.set_data(ms.Tensor(rng.normal(0, 0.5, c).astype(np.float32)))
            cell.moving_variance.set_data(ms.Tensor(rng.uniform(0.5, 2.0, c).astype(np.float32)))


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS)
def test_fake_quant_points_match_the_architecture(width):
    net = create_model(width, num_classes=10)
    qat = quantize_model(net)
    # By hand, every width (Table 2 of the paper): convs = stem 1 + block t=1 (dw, pw) 2 + 16 blocks
    # x (expand, dw, project) 48 + last 1x1 1 = 52; residual adds = stride-1 repeats with equal
    # widths: 1 + 2 + 3 + 2 + 2 = 10; activations = input + 52 + 10 + classifier input = 64;
    # weight tensors = 52 convs + the classifier = 53.
    assert expected_fake_quant(net) == {"activations": 64, "weights": 53}
    assert count_fake_quant(qat) == expected_fake_quant(net)
    # Float names and values carry over: a float checkpoint loads into the QAT model unchanged.
    qat_params = {p.name: p for p in qat.get_parameters()}
    for p in net.get_parameters():
        assert p.name in qat_params, p.name
        np.testing.assert_array_equal(qat_params[p.name].asnumpy(), p.asnumpy())
    extra = sorted(set(qat_params) - {p.name for p in net.get_parameters()})
    assert len(extra) == 2 * 64 + 1 and "quant_step" in extra and "features.0.act_quant.min_val" in extra


def test_quantize_model_refuses_other_architectures():
    with pytest.raises(ValueError, match="supports MobileNetV2 .*; found HardSwish at features.2"):
        quantize_model(create_model("mobilenet_v3_small_100", num_classes=10))
    with pytest.raises(ValueError, match="quant_delay must be an integer number of steps >= 1"):
        quantize_model(create_model("mobilenet_v2_035", num_classes=10), quant_delay=0)


@pytest.mark.slow
def test_deploy_weights_are_on_the_int8_grid():
    net = create_model("mobilenet_v2_035", num_classes=10)
    _random_bn_statistics(net)
    qat = quantize_model(net)
    int8 = {p.name: p.asnumpy() for p in build_deploy_net(qat).get_parameters()}
    folded = {p.name: p.asnumpy() for p in build_deploy_net(qat, int8_weights=False).get_parameters()}
    weights = [n for n in int8 if n.endswith(".weight")]
    assert len(weights) == 53
    for name in weights:
        w = int8[name].reshape(int8[name].shape[0], -1)
        scale = np.abs(folded[name].reshape(w.shape)).max(axis=1, keepdims=True) / 127
        q = w / scale
        # every channel: integers in [-127, 127] (<= 255 distinct values), the largest is +-127,
        # and each weight moved at most half a step from its BN-folded float value
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)
        assert np.abs(np.round(q)).max() <= 127 and np.all(np.abs(np.round(q)).max(axis=1) == 127)
        assert max(len(np.unique(row)) for row in w) <= 255
        assert np.all(np.abs(w - folded[name].reshape(w.shape)) <= scale / 2 + 1e-7)
    # not a no-op: the 1x1 convs have more distinct float values per channel than the grid keeps
    big = int8["features.20.weight"].reshape(int8["features.20.weight"].shape[0], -1)
    assert len(np.unique(folded["features.20.weight"].reshape(big.shape)[0])) > len(np.unique(big[0]))
    # biases are the BN shift beta - gamma * mean / std, kept in float
    assert not np.allclose(int8["features.0.bias"], 0)


def test_observer_schedule():
    decay, delay = 0.9, 3
    got = [
        [float(v.asnumpy()) for v in observer_weights(ms.Tensor(step, ms.int32), delay, decay)]
        for step in (0, 1, 2, 3, 10)
    ]
    # (keep, batch): first step takes the batch range, then EMA, frozen from step quant_delay on
    np.testing.assert_allclose(got, [[0.0, 1.0], [0.9, 0.1], [0.9, 0.1], [1.0, 0.0], [1.0, 0.0]], atol=1e-7)


def test_folded_conv_bn_matches_batchnorm_and_freezes():
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(8, 16, 3, 1, pad_mode="pad", padding=1, has_bias=False)
    bn = nn.BatchNorm2d(16, momentum=0.9)
    for param, value in (
        (conv.weight, rng.normal(0, 0.2, (16, 8, 3, 3))),
        (bn.gamma, rng.uniform(0.5, 1.5, 16)),
        (bn.beta, rng.normal(0, 1, 16)),
        (bn.moving_mean, rng.normal(0, 1, 16)),
        (bn.moving_variance, rng.uniform(0.5, 1.5, 16)),
    ):
        param.set_data(ms.Tensor(value.astype(np.float32)))
    layer = QuantConvBN(conv, bn, None, "c", "b")
    layer.act_quant.construct = lambda x, flags: (x, None)  # the BN fold alone
    x = ms.Tensor(rng.normal(0, 1, (4, 8, 10, 10)).astype(np.float32))
    x_scale = ms.Tensor(np.float32(0.02))
    one, zero = ms.Tensor(1.0), ms.Tensor(0.0)
    layer.set_train(True)
    bn.set_train(True)
    expected = bn(conv(x)).asnumpy()
    got = layer(x, x_scale, (one, zero, one, zero))[0].asnumpy()  # batch statistics, float bias
    # equal up to the int8 rounding of the weights (~0.4% of a channel's largest weight)
    assert np.abs(got - expected).max() < 0.01 * np.abs(expected).max()
    np.testing.assert_allclose(layer.moving_mean.asnumpy(), bn.moving_mean.asnumpy(), atol=1e-3)
    np.testing.assert_allclose(layer.moving_variance.asnumpy(), bn.moving_variance.asnumpy(), atol=1e-3)
    frozen_mean = layer.moving_mean.asnumpy().copy()
    frozen = layer(x, x_scale, (one, zero, zero, zero))[0].asnumpy()  # after freeze_bn: moving statistics
    np.testing.assert_array_equal(layer.moving_mean.asnumpy(), frozen_mean)
    layer.set_train(False)
    np.testing.assert_allclose(layer(x, x_scale, (one, zero, zero, zero))[0].asnumpy(), frozen, atol=1e-5)
    weight, bias = layer.folded_weight_and_bias()
    deployed = ms.ops.conv2d(x, weight, pad_mode="pad", padding=1) + bias.reshape((1, -1, 1, 1))
    np.testing.assert_allclose(deployed.asnumpy(), frozen, atol=1e-5)
    # quantized activations: the bias moves onto the int32 grid input scale x weight scale
    int8_out = layer(x, x_scale, (one, zero, zero, one))[0].asnumpy()
    weight, bias = layer.folded_weight_and_bias(input_scale=0.02)
    grid = 0.02 * np.abs(weight.asnumpy()).reshape(16, -1).max(axis=1) / 127
    np.testing.assert_allclose(bias.asnumpy() / grid, np.round(bias.asnumpy() / grid), rtol=1e-6)
    assert 0 < np.abs(bias.asnumpy() - layer.folded_weight_and_bias()[1].asnumpy()).max() <= grid.max() / 2 + 1e-6
    deployed = ms.ops.conv2d(x, weight, pad_mode="pad", padding=1) + bias.reshape((1, -1, 1, 1))
    np.testing.assert_allclose(deployed.asnumpy(), int8_out, atol=1e-5)


def test_recipes_and_config_checks():
    ascend = load_config(ASCEND_RECIPE)
    assert (ascend.quant, ascend.model, ascend.pretrained, ascend.epoch_size, ascend.batch_size) == (
        True,
        "mobilenet_v2_100",
        True,
        60,
        192,
    )
    assert (
        ascend.momentum,
        ascend.weight_decay,
        ascend.label_smoothing,
        ascend.loss_scale,
        ascend.loss_scale_type,
        ascend.warmup_epochs,
    ) == (0.9, 4e-5, 0.1, 1024.0, "fixed", 0.0)
    digits = load_config(DIGITS_RECIPE)
    assert digits.quant and digits.ckpt_path.endswith("mobilenet_v2_100-best.ckpt")
    with pytest.raises(ConfigError, match="supports the mobilenet_v2_\\* models, got model mobilenet_v3_small_100"):
        load_config(DIGITS_RECIPE, {"model": "mobilenet_v3_small_100"})
    with pytest.raises(ConfigError, match="set amp_level: O0, got O3"):
        load_config(DIGITS_RECIPE, {"amp_level": "O3"})
    with pytest.raises(ConfigError, match="quant_delay must be >= 1"):
        load_config(DIGITS_RECIPE, {"quant_delay": 0})


# ------------------------------------------------------------------ one QAT run, graph mode
@pytest.fixture(scope="module")
def qat_run(digits_root, tmp_path_factory):
    """3 QAT steps (batch 8, 32 px) in graph mode from a float checkpoint, then validate and export."""
    work = tmp_path_factory.mktemp("qat")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    float_net = create_model("mobilenet_v2_035", num_classes=10)
    _random_bn_statistics(float_net)
    float_ckpt = save_checkpoint(float_net, str(work / "float.ckpt"))
    overrides = {
        "data_dir": digits_root,
        "image_resize": 32,
        "model": "mobilenet_v2_035",
        "ckpt_path": float_ckpt,
        "ckpt_save_dir": str(work / "run"),
        "epoch_size": 1,
        "num_samples": 24,
        "batch_size": 8,
        "val_while_train": False,
        "decay_epochs": 1,
        "quant_delay": 2,
        "freeze_bn": 1,
        "num_parallel_workers": 1,
    }
    cfg = load_config(DIGITS_RECIPE, overrides)
    result = train(cfg)
    ckpt = result.last_checkpoint
    # Evaluation and export in PyNative: graph mode was exercised by training; a second graph
    # compile of the QAT network (eval) would double this fixture's time and test nothing new.
    eval_cfg = load_config(DIGITS_RECIPE, {**overrides, "ckpt_path": ckpt, "batch_size": 120, "mode": 1})
    metrics = validate(eval_cfg)
    exported = export(eval_cfg, output=str(work / "export" / "qat"))  # the float export's path
    return {
        "cfg": eval_cfg,
        "float_ckpt": float_ckpt,
        "ckpt": ckpt,
        "metrics": metrics,
        "export": exported,
        "work": work,
    }


@pytest.mark.slow
def test_qat_trains_in_graph_mode(qat_run):
    state = ms.load_checkpoint(qat_run["ckpt"])
    float_state = ms.load_checkpoint(qat_run["float_ckpt"])
    assert int(state["quant_step"].asnumpy()) == 3
    ranges = {
        name[: -len(".min_val")]: (
            float(state[name].asnumpy()),
            float(state[name[: -len("min_val")] + "max_val"].asnumpy()),
        )
        for name in state
        if name.endswith(".min_val")
    }
    # every one of the 64 quant points sat in the forward pass and observed a real range
    assert len(ranges) == 64 and all(hi > lo for lo, hi in ranges.values())
    lo, hi = ranges["features.0.act_quant"]
    assert lo == 0.0 and 0.0 < hi <= 6.0  # after ReLU6
    assert ranges["input_quant"][0] < 0 < ranges["input_quant"][1]  # normalised pixels
    # the optimizer moved the float weights; freeze_bn 1: BN statistics moved on step 0 only
    assert not np.array_equal(state["features.0.weight"].asnumpy(), float_state["features.0.weight"].asnumpy())
    assert not np.array_equal(
        state["features.1.moving_mean"].asnumpy(), float_state["features.1.moving_mean"].asnumpy()
    )


@pytest.mark.slow
def test_validate_evaluates_the_qat_checkpoint(qat_run):
    metrics = qat_run["metrics"]
    assert metrics["samples"] == 359 and 0.0 <= metrics["Top_1_Accuracy"] <= 1.0
    # a float checkpoint has no ranges to simulate: a one-line error, not a silent float eval
    cfg = load_config(DIGITS_RECIPE, {**dict(qat_run["cfg"]), "ckpt_path": qat_run["float_ckpt"]})
    with pytest.raises(ValueError, match="is a float checkpoint \\(no QAT observer ranges\\)"):
        validate(cfg)


@pytest.mark.slow
def test_int8_onnx_runs_int8_kernels_with_the_qat_ranges(qat_run):
    exported = qat_run["export"]
    stem = str(qat_run["work"] / "export" / "qat")
    assert [(f.role, f.path) for f in exported.files] == [
        ("deploy", stem + ".mindir"),
        ("fp32", stem + "_fp32.onnx"),
        ("int8", stem + ".onnx"),
    ]
    for f in exported.files:
        meta = json.load(open(f.metadata_path))
        assert os.path.isfile(f.path) and meta["precision"] == f.precision and meta["crop_pct"] == 1.0
        assert meta["input_shape"] == ([1, 3, 32, 32] if f.file_format == "MINDIR" else ["batch", 3, 32, 32])
    int8_path = exported.file("int8").path
    model = onnx.load(int8_path)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) == 64  # one per activation quant point
    # per-channel int8 weights: a DequantizeLinear whose int8 input is a conv weight, one scale per channel
    stem = next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and init.get(n.input[0]) is not None and init[n.input[0]].ndim == 4
    )
    assert init[stem.input[0]].dtype == np.int8 and init[stem.input[1]].shape == (init[stem.input[0]].shape[0],)
    # the first conv's input uses the QAT input observer's scale and zero point
    state = ms.load_checkpoint(qat_run["ckpt"])
    lo, hi = float(state["input_quant.min_val"].asnumpy()), float(state["input_quant.max_val"].asnumpy())
    q_input = next(n for n in quantize if n.input[0] == "image")
    assert float(init[q_input.input[1]]) == pytest.approx((max(hi, 0) - min(lo, 0)) / 255, rel=1e-6)
    assert init[q_input.input[2]].dtype == np.uint8
    ops = runtime_op_types(int8_path)
    assert ops["QLinearConv"] == 52 and ops["QLinearAdd"] == 10 and ops["QGemm"] == 1 and "Conv" not in ops


@pytest.mark.slow
def test_int8_onnx_agrees_with_the_simulation(qat_run):
    from mindcv_mobile.build import build_eval_loader, load_eval_network

    exported = qat_run["export"]
    # the export's own checks: the float files against the deploy-graph Cell, the int8 one against the simulation
    assert [f.compared_with for f in exported.files] == ["the deploy-graph Cell"] * 2 + ["the QAT simulation"]
    assert all(f.max_abs_diff <= f.tolerance for f in exported.files)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    images, _ = next(build_eval_loader(qat_run["cfg"], batch_size=48).create_tuple_iterator(output_numpy=True))
    # the deploy MINDIR (batch 1, run image by image) is the fp32 ONNX's graph
    from_mindir = run_exported(exported.file("deploy").path, images)
    assert np.abs(from_mindir - run_exported(exported.file("fp32").path, images)).max() < 1e-4
    simulated = load_eval_network(qat_run["cfg"])(ms.Tensor(images)).asnumpy()
    session = onnx_session(exported.file("int8").path)
    int8 = session.run(None, {"image": images})[0]
    scale = np.abs(simulated).max()
    # int8 kernels requantize each layer with integer rounding; the simulation's float logits
    # are within a few output steps of them
    agreement = (int8.argmax(1) == simulated.argmax(1)).mean()
    assert np.abs(int8 - simulated).max() < 0.05 * max(scale, 1.0), (np.abs(int8 - simulated).max(), scale)
    assert agreement >= 0.95, agreement


def test_export_refuses_untrained_qat_models(tmp_path):
    qat = quantize_model(create_model("mobilenet_v2_035", num_classes=10))
    with pytest.raises(ValueError, match="has not trained a single step"):
        export_int8_onnx(qat, str(tmp_path / "x.onnx"), 32)


@pytest.mark.slow
def test_export_script_writes_the_int8_files_through_the_one_export_path(qat_run, capsys):
    spec = importlib.util.spec_from_file_location("export_script", os.path.join(ROOT, "export.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stem = qat_run["work"] / "script" / "digits_int8"
    argv = [
        "-c",
        DIGITS_RECIPE,
        "--ckpt_path",
        qat_run["ckpt"],
        "--model",
        "mobilenet_v2_035",
        "--image_resize",
        "32",
        "--mode",
        "1",
        "--output",
        f"{stem}.onnx",
    ]
    assert run_main(lambda: script.main(argv), "export.py") == 0
    printed = capsys.readouterr().out
    assert f"exported MINDIR {stem}.mindir: input 1x3x32x32, float32 deploy graph" in printed
    assert f"exported ONNX {stem}.onnx: input Nx3x32x32, int8 QDQ" in printed
    assert f"exported ONNX {stem}_fp32.onnx: input Nx3x32x32" in printed
    assert "max abs difference vs the QAT simulation:" in printed
    assert sorted(os.listdir(stem.parent)) == sorted(
        f"digits_int8{suffix}{meta}" for suffix in (".mindir", ".onnx", "_fp32.onnx") for meta in ("", ".json")
    )
