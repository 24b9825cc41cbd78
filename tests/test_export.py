"""export_model / export.py: MINDIR and ONNX files give the eval-mode Cell's logits, for V1, V2, V3.

Tolerance (deploy.export_tolerance): max(1e-5 * max(1, max |logit|), 10 * noise), where noise is
how far the Cell's own logits move when its input changes by one float32 ulp. The networks here
are random, calibrated on digits so that their logits are of order 1 and depend on the input;
such high-gain networks amplify float32 rounding ~1000x (measured: ONNX vs Cell 3e-5 to 1.5e-4,
noise 4e-5 to 1.7e-4), which the noise term measures instead of guessing. MINDIR runs MindSpore's
own kernels: 0. A wrong export (train-mode BatchNorm, other padding, a missing layer) moves the
logits by 1e-1 and more; the last assertion of the first test shows that margin.
"""
import importlib.util
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from mindcv_mobile.cli import run_main
from mindcv_mobile.config import load_config
from mindcv_mobile.deploy import export_model, export_tolerance, float32_noise, preprocess, run_exported
from mindcv_mobile.models import create_model, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
SIZE = 48  # not the 224 default: --image_resize reaches the exported input


def calibrated(net: nn.Cell, images: np.ndarray, seed: int) -> nn.Cell:
    """Random BN affine and unit-scale Dense weights, BN statistics set from ``images`` (one
    train-mode pass with momentum 1): logits of order 1 that depend on the input."""
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            n = cell.num_features
            cell.gamma.set_data(ms.Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            cell.beta.set_data(ms.Tensor(rng.normal(0, 0.1, n).astype(np.float32)))
            cell.bn_train = ops.BatchNorm(is_training=True, epsilon=cell.eps, momentum=1.0, data_format=cell.format)
        elif isinstance(cell, nn.Dense):
            out, inp = cell.weight.shape
            cell.weight.set_data(ms.Tensor(rng.normal(0, 2 / np.sqrt(inp), (out, inp)).astype(np.float32)))
    net.set_train(True)
    net(ms.Tensor(images))
    net.set_train(False)
    return net


def digits(root, split, step):
    files = sorted(os.path.join(root, split, c, f) for c in os.listdir(os.path.join(root, split))
                   for f in os.listdir(os.path.join(root, split, c)))[::step]
    return preprocess(load_config(DIGITS_RECIPE, {"image_resize": SIZE}), files)


@pytest.fixture(scope="module")
def calib(digits_root):
    return digits(digits_root, "train", 12)


@pytest.fixture(scope="module")
def val_batch(digits_root):
    return digits(digits_root, "val", 90)  # 4 images of different digits


def make_ckpt(path, model, calib, num_classes=10):
    save_checkpoint(calibrated(create_model(model, num_classes=num_classes), calib, 0), str(path))
    return str(path)


def cell(model, ckpt, train=False):
    net = create_model(model, num_classes=10)
    ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    net.set_train(train)
    return net


@pytest.mark.parametrize("model", ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small_075"])
def test_mindir_and_onnx_match_the_eval_cell(model, calib, val_batch, tmp_path):
    ckpt = make_ckpt(tmp_path / "w.ckpt", model, calib)
    cfg = load_config(None, {"model": model, "num_classes": 10, "ckpt_path": ckpt, "image_resize": SIZE, "mode": 1})
    net = cell(model, ckpt)
    reference = net(ms.Tensor(val_batch)).asnumpy()
    scale = float(np.abs(reference).max())
    assert scale > 1.0 and reference.std(axis=0).mean() > 0.1, "logits must be sizeable and input-dependent"
    noise = float32_noise(net, val_batch)
    tolerance = export_tolerance(scale, noise)
    for fmt, ext in (("ONNX", ".onnx"), ("MINDIR", ".mindir")):
        result = export_model(cfg, fmt, str(tmp_path / model), batch_size=4, verify=fmt == "ONNX")
        assert result.path == str(tmp_path / model) + ext and os.path.getsize(result.path) > 100_000
        diff = float(np.abs(run_exported(result.path, val_batch) - reference).max())
        print(f"{model} {fmt}: max abs diff {diff:.3g}, max |logit| {scale:.3g}, noise {noise:.3g}")
        assert diff <= tolerance
        if fmt == "ONNX":  # export_model's own check (random normal input) passed and said by how much
            assert result.max_abs_diff is not None and result.max_abs_diff <= result.tolerance
        meta = json.load(open(result.metadata_path))
        assert meta["input_shape"] == [4, 3, SIZE, SIZE] and meta["model"] == model and meta["num_classes"] == 10
    # The comparison can see a BatchNorm-mode error: batch statistics move the logits far more.
    train_mode = cell(model, ckpt, train=True)(ms.Tensor(val_batch)).asnumpy()
    assert np.abs(train_mode - reference).max() > 10 * tolerance


def test_exporting_twice_in_one_process_uses_a_fresh_cell(calib, val_batch, tmp_path):
    # MindSpore 2.10 crashes exporting the same Cell instance to ONNX twice.
    ckpt = make_ckpt(tmp_path / "w.ckpt", "mobilenet_v1_025", calib)
    cfg = load_config(None, {"model": "mobilenet_v1_025", "num_classes": 10, "ckpt_path": ckpt,
                             "image_resize": SIZE, "mode": 1})
    first = export_model(cfg, "ONNX", str(tmp_path / "a.onnx"), batch_size=4, verify=False)
    second = export_model(cfg, "ONNX", str(tmp_path / "b.onnx"), batch_size=4, verify=False)
    np.testing.assert_allclose(run_exported(first.path, val_batch), run_exported(second.path, val_batch), atol=1e-6)


def test_air_off_ascend_is_refused_before_trying(tmp_path):
    cfg = load_config(None, {"model": "mobilenet_v1_025", "ckpt_path": str(tmp_path / "never_read.ckpt")})
    with pytest.raises(RuntimeError, match="AIR export needs Ascend.*runs on CPU; use --file_format MINDIR or ONNX"):
        export_model(cfg, "AIR", str(tmp_path / "m.air"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="file_format 'TFLITE' is not one of MINDIR, ONNX, AIR"):
        export_model(cfg, "TFLITE")
    with pytest.raises(ValueError, match=r"ends in \.mindir but --file_format ONNX writes \.onnx files; use --output"):
        export_model(cfg, "ONNX", str(tmp_path / "m.mindir"))


def test_export_script(calib, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_script", os.path.join(ROOT, "export.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run_dir = tmp_path / "run"
    ckpt = make_ckpt(run_dir / "best.ckpt", "mobilenet_v3_small_075", calib)
    (run_dir / "classes.json").write_text(json.dumps([f"digit {i}" for i in range(10)]))
    out = tmp_path / "deploy" / "digits"
    # The recipe's batch_size (32) is a training batch: the exported batch stays 1.
    argv = ["-c", DIGITS_RECIPE, "--model", "mobilenet_v3_small_075", "--ckpt_path", ckpt, "--image_resize", "32",
            "--mode", "1", "--file_format", "onnx", "--output", str(out)]
    assert run_main(lambda: script.main(argv), "export.py") == 0
    printed = capsys.readouterr().out
    assert f"exported ONNX {out}.onnx: input 1x3x32x32" in printed
    assert "max abs difference vs the MindSpore Cell:" in printed
    meta = json.load(open(f"{out}.onnx.json"))
    assert meta["classes"][3] == "digit 3" and meta["crop_pct"] == 1.0 and meta["input_shape"] == [1, 3, 32, 32]
    code = run_main(lambda: script.main(argv[:-4] + ["--file_format", "AIR"]), "export.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("export.py: error: AIR export needs Ascend")
