"""mindcv's recipes and value forms, with the model switched to a MobileNet, load and build here.

tests/fixtures/mindcv_recipes/ holds mindcv recipes (HEAD 51b0636, configs/) chosen because each
uses a value form the loader once refused: warmup_cosine_decay, re_value 'random', color_jitter
lists, lion, aug_repeats, crop_pct above 1, aux_factor, gradient accumulation, multi-step
milestones, cosine cycles, eps written as a string. scripts/check_mindcv_recipes.py runs the same
check over a whole mindcv checkout.
"""

import glob
import importlib.util
import io
import logging
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from PIL import Image

from mindcv_mobile.config import ConfigError, load_config
from mindcv_mobile.data import create_transforms
from mindcv_mobile.training.train_step import cast_cells, mixed_precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "mindcv_recipes", "*.yaml")))


def _checker():
    spec = importlib.util.spec_from_file_location(
        "check_mindcv_recipes", os.path.join(ROOT, "scripts", "check_mindcv_recipes.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", RECIPES, ids=[os.path.basename(p)[:-5] for p in RECIPES])
def test_mindcv_recipe_with_a_mobilenet_builds_every_training_object(path):
    assert len(RECIPES) == 11
    assert _checker().check_recipe(path, "mobilenet_v3_small_100") == ""


def test_checker_reports_a_refused_recipe(tmp_path):
    (tmp_path / "bad.yaml").write_text("opt: adamm\n")
    assert "opt='adamm' is not one of" in _checker().check_recipe(str(tmp_path / "bad.yaml"), "mobilenet_v1_025")
    assert _checker().main([str(tmp_path)]) == 1


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"color_jitter": [0.4, 0.4, 0.4]}, {"color_jitter": [0.4, 0.4, 0.4]}),
        ({"color_jitter": "0.3"}, {"color_jitter": 0.3}),
        ({"color_jitter": [0.1, 0.2, 0.3, 0.05]}, {"color_jitter": [0.1, 0.2, 0.3, 0.05]}),
        ({"re_value": "Random"}, {"re_value": "random"}),
        ({"re_value": [124, 116, 104]}, {"re_value": [124, 116, 104]}),
        ({"re_value": 0.0}, {"re_value": 0}),
        ({"amp_cast_list": "[nn.Conv2d, nn.BatchNorm2d]"}, {"amp_cast_list": ["nn.Conv2d", "nn.BatchNorm2d"]}),
        ({"amp_cast_list": ["BatchNorm2d"]}, {"amp_cast_list": ["BatchNorm2d"]}),
        ({"decay_epochs": 2.4, "scheduler": "step_decay"}, {"decay_epochs": 2.4}),
        ({"opt": "Nadam", "loss": "ce", "scheduler": "Polynomial_Decay"}, {"opt": "nadam", "loss": "CE"}),
        ({"crop_pct": 1.15, "eval_shuffle": False, "aug_splits": 0}, {"crop_pct": 1.15}),
        ({"dataset": "cifar100", "dataset_download": True}, {"dataset_download": True}),
        ({"gradient_accumulation_steps": 2, "aug_repeats": 3, "layer_decay": 0.75}, {"aug_repeats": 3}),
    ],
)
def test_mindcv_value_forms_load_with_their_meaning(values, expected):
    cfg = load_config(None, values)
    assert {key: cfg[key] for key in expected} == expected


@pytest.mark.parametrize(
    "values, message",
    [
        ({"color_jitter": [0.4, 0.4]}, r"color_jitter must be a number >= 0 or a list \[brightness"),
        ({"re_value": 256}, r"re_value must be a value 0-255, a list \[r, g, b\] of them, or 'random', got 256"),
        ({"re_value": "noise"}, r"re_value must be .* got 'noise'"),
        ({"aug_splits": 3}, r"aug_splits=3 .* is not supported; use aug_splits: 0 with auto_augment: augmix"),
        (
            {"dataset_download": True},
            r"dataset_download: True works for cifar10, cifar100, mnist, not dataset='imagenet'",
        ),
        ({"gradient_accumulation_steps": 0}, r"gradient_accumulation_steps must be >= 1, got 0"),
        ({"crop_pct": 0}, r"crop_pct must be > 0, got 0"),
    ],
)
def test_values_mindcv_would_also_refuse_are_one_line_errors(values, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, values)
    assert "\n" not in str(err.value)


def test_aux_factor_is_accepted_and_said_to_have_no_effect(caplog):
    with caplog.at_level(logging.WARNING):
        assert load_config(None, {"aux_factor": 0.1}).aux_factor == 0.1
    assert "aux_factor=0.1 has no effect: MobileNets have no auxiliary head" in caplog.text


def test_crop_pct_above_one_pads_the_eval_crop_as_mindcv():
    """mindcv's volo_d4 recipe: crop_pct 1.15 resizes the shorter side to floor(64 / 1.15) = 55
    and center-crops 64, so the crop is padded with black (normalised: -mean/std) around it."""
    image = Image.fromarray(np.full((80, 120, 3), 200, np.uint8))
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    ops = create_transforms("imagenet", 64, is_training=False, crop_pct=1.15, mean=mean, std=std)
    out = np.frombuffer(encoded.getvalue(), np.uint8)
    for op in ops:
        out = op(out)
    assert out.shape == (3, 64, 64)
    # Resized to 55 x 82 then cropped to 64 x 64: (64 - 55) // 2 = 4 padded rows above.
    pad = (0.0 - np.array(mean)) / np.array(std)
    inside = (200.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out[:, 0, 32], pad, atol=1e-5)
    np.testing.assert_allclose(out[:, 32, 32], inside, atol=1e-5)
    rows_padded = int(np.sum(np.isclose(out[0, :, 32], pad[0], atol=1e-5)))
    assert rows_padded == 64 - 55


def test_amp_cast_list_chooses_which_cells_run_in_float16():
    """O1 with a white list casts exactly the listed cell types: a Dense-only network listed as
    [nn.Conv2d] computes in float32 (bitwise equal), listed as [nn.Dense] in float16 (rounded)."""
    ms.set_seed(0)
    net = nn.SequentialCell([nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 4)])
    x = Tensor(np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32))
    fp32 = net(x).asnumpy()

    def rebuilt(cast_list):
        copy = nn.SequentialCell([nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 4)])
        ms.load_param_into_net(copy, {p.name: p for p in net.get_parameters()})
        return mixed_precision(copy, "O1", cast_list)(x).asnumpy()

    np.testing.assert_array_equal(rebuilt(["nn.Conv2d"]), fp32)
    as_fp16 = rebuilt(["nn.Dense"])
    assert not np.array_equal(as_fp16, fp32)
    np.testing.assert_allclose(as_fp16, fp32, atol=1e-2)
    # O2 with a black list: float16 everywhere but the listed cells, float32 out.
    copy = nn.SequentialCell([nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 4)])
    ms.load_param_into_net(copy, {p.name: p for p in net.get_parameters()})
    out = mixed_precision(copy, "O2", ["nn.ReLU"])(x)
    assert out.dtype == ms.float32 and not np.array_equal(out.asnumpy(), fp32)
    np.testing.assert_allclose(out.asnumpy(), fp32, atol=1e-2)
    assert sorted(p.name for p in copy.get_parameters()) == sorted(p.name for p in net.get_parameters())


def test_amp_cast_list_names_are_resolved_without_eval():
    assert cast_cells(["nn.Conv2d", "BatchNorm2d", "mindspore.nn.Dense"]) == (nn.Conv2d, nn.BatchNorm2d, nn.Dense)
    with pytest.raises(
        ValueError, match=r"amp_cast_list: 'nn.Conv2D' is not a mindspore.nn cell class; did you mean nn.Conv2d"
    ):
        cast_cells(["nn.Conv2D"])
    with pytest.raises(ValueError, match="is not a mindspore.nn cell class"):
        cast_cells(["__import__('os').system('true')"])


def test_amp_cast_list_on_a_mobilenet_in_graph_mode_keeps_parameter_names():
    from mindcv_mobile.models import create_model

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = create_model("mobilenet_v1_025", num_classes=10)
        names = [p.name for p in net.get_parameters()]
        wrapped = mixed_precision(net, "O2", ["nn.BatchNorm2d"])
        wrapped.set_train(False)
        out = wrapped(Tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)))
    finally:
        ms.set_context(mode=previous)
    assert out.dtype == ms.float32 and out.shape == (2, 10) and np.all(np.isfinite(out.asnumpy()))
    assert [p.name for p in wrapped.get_parameters()] == names
