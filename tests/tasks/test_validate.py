"""validate(cfg) / validate.py / scripts/run_eval.sh on the digits tree.

Checkpoints here are random networks calibrated on digits (see ``calibrated``), so their
predictions spread over the classes and every number below is checked against an independent
numpy computation.
"""

import importlib.util
import json
import logging
import os
import shutil
import subprocess

import mindspore as ms
import numpy as np
import pytest
import yaml
from netutils import calibrated  # tests/netutils.py

from mindcv_mobile.build import build_eval_loader, load_eval_network, resolve_eval_config
from mindcv_mobile.cli import parse_args, run_main
from mindcv_mobile.config import load_config
from mindcv_mobile.deploy import preprocess
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.tasks import validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
MODEL = "mobilenet_v3_small_075"


def digits_images(root, split="train", step=10, size=32) -> np.ndarray:
    files = [f for f, _ in split_files(root, split)][::step]
    return preprocess(load_config(DIGITS_RECIPE, {"image_resize": size}), files)


def make_ckpt(path, images, model=MODEL, num_classes=10, seed=0) -> str:
    save_checkpoint(calibrated(create_model(model, num_classes=num_classes), images, seed), str(path))
    return str(path)


def cfg_for(data_dir, ckpt, **overrides):
    values = {"data_dir": data_dir, "ckpt_path": ckpt, "model": MODEL, "image_resize": 32, "mode": 1, "batch_size": 64}
    values.update(overrides)
    return load_config(DIGITS_RECIPE, values)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_script"), os.path.join(ROOT, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def calib(digits_root):
    return digits_images(digits_root)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, calib):
    return make_ckpt(tmp_path_factory.mktemp("ckpt") / "random.ckpt", calib)


@pytest.fixture(scope="module")
def three_classes(digits_root, tmp_path_factory):
    """digits 0, 1, 2 with 5 val images each: 15 images, batch 4 leaves a remainder of 3."""
    root = tmp_path_factory.mktemp("three")
    for split in ("train", "val"):
        for cls in ("0", "1", "2"):
            os.makedirs(root / split / cls)
            for name in sorted(os.listdir(os.path.join(digits_root, split, cls)))[:5]:
                shutil.copy(os.path.join(digits_root, split, cls, name), root / split / cls / name)
    return str(root)


def split_files(root, split="val"):
    return [
        (os.path.join(root, split, c, f), int(c))
        for c in sorted(os.listdir(os.path.join(root, split)))
        for f in sorted(os.listdir(os.path.join(root, split, c)))
    ]


@pytest.mark.slow
def numpy_logits(cfg, ckpt, files):
    """Logits of the checkpoint on ``files`` (path, label) outside the pipeline under test, and the labels."""
    net = create_model(MODEL, num_classes=10)
    ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    net.set_train(False)
    images = preprocess(resolve_eval_config(cfg), [f for f, _ in files])
    logits = np.concatenate([net(ms.Tensor(images[i : i + 50])).asnumpy() for i in range(0, len(images), 50)])
    return logits, np.array([label for _, label in files])


def test_metrics_equal_numpy_over_every_image(digits_root, ckpt):
    cfg = cfg_for(digits_root, ckpt)
    files = split_files(digits_root)
    assert len(files) % cfg.batch_size != 0, "the test needs a partial last batch"
    result = validate(cfg)

    logits, labels = numpy_logits(cfg, ckpt, files)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    eps = cfg.label_smoothing
    targets = np.full(logits.shape, eps / 10) + (1 - eps) * np.eye(10)[labels]
    expected_loss = float(-(targets * log_p).sum(1).mean())

    assert result["samples"] == len(files) == 359
    assert result["Top_1_Accuracy"] == pytest.approx(float((top5[:, 0] == labels).mean()), abs=1e-12)
    assert result["Top_5_Accuracy"] == pytest.approx(float((top5 == labels[:, None]).any(1).mean()), abs=1e-12)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # The randomised network is a real classifier of sorts: predictions spread over the classes.
    assert len(set(top5[:, 0].tolist())) >= 3


@pytest.mark.slow
def test_top5_not_applicable_and_remainder_via_run_eval_script(three_classes, calib, tmp_path):
    """run_eval.sh -> validate.py: 3 classes, 15 images in batches of 4, JSON written."""
    ckpt3 = make_ckpt(tmp_path / "three.ckpt", calib, num_classes=3)
    out = tmp_path / "metrics.json"
    env = dict(os.environ, RECIPE=DIGITS_RECIPE)
    proc = subprocess.run(
        [
            "bash",
            os.path.join(ROOT, "scripts", "run_eval.sh"),
            "imagenet2012",
            three_classes,
            ckpt3,
            "--model",
            MODEL,
            "--num_classes",
            "3",
            "--image_resize",
            "32",
            "--batch_size",
            "4",
            "--mode",
            "1",
            "--output",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{'Top_1_Accuracy'")]
    assert len(printed) == 1 and "'Top_5_Accuracy': None" in printed[0] and "'samples': 15}" in printed[0]
    saved = json.loads(out.read_text())
    assert saved["Top_5_Accuracy"] is None and saved["samples"] == 15
    assert 0.0 <= saved["Top_1_Accuracy"] <= 1.0 and saved["loss"] > 0
    assert "Top_5_Accuracy: n/a (3 classes" in proc.stderr


@pytest.mark.parametrize("args", [[], ["mnist", "/data", "w.ckpt"], ["cifar10", "/no/such/dir", "w.ckpt"]])
def test_run_eval_script_usage_on_wrong_arguments(args):
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "run_eval.sh"), *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "Usage: bash" in proc.stderr and "[cifar10|imagenet2012] [DATASET_PATH] [CHECKPOINT_PATH]" in proc.stderr


@pytest.mark.slow
def test_classifier_of_another_size_is_an_error(digits_root, ckpt):
    with pytest.raises(ValueError, match=r"10-class classifier .*num_classes is 12; evaluate with --num_classes 10"):
        validate(cfg_for(digits_root, ckpt, num_classes=12))


@pytest.mark.slow
def test_missing_unreadable_or_foreign_checkpoint_is_an_error(digits_root, calib, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.ckpt"):
        validate(cfg_for(digits_root, str(tmp_path / "nope.ckpt")))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        validate(cfg_for(digits_root, str(junk)))
    with pytest.raises(ValueError, match="no weights to evaluate: pass --ckpt_path"):
        validate(cfg_for(digits_root, ""))
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="released weights for mobilenet_v3_small_100 are not in the cache"):
        validate(cfg_for(digits_root, "", model="mobilenet_v3_small_100", pretrained=True))
    # A MobileNetV2 checkpoint into MobileNetV3: never scored with what happens to match.
    v2 = make_ckpt(tmp_path / "v2.ckpt", calib, model="mobilenet_v2_035")
    with pytest.raises(ValueError, match="another model"):
        validate(cfg_for(digits_root, v2))


@pytest.mark.slow
def test_v1_1001_class_release_is_sliced_to_1000(digits_root, calib, tmp_path, caplog):
    ckpt1001 = make_ckpt(tmp_path / "v1.ckpt", calib, model="mobilenet_v1_025", num_classes=1001)
    cfg = cfg_for(digits_root, ckpt1001, model="mobilenet_v1_025", num_classes=1000)
    with caplog.at_level(logging.INFO, logger="mindcv_mobile"):
        net = load_eval_network(cfg)
    assert any("sliced 1001 -> 1000" in r.getMessage() for r in caplog.records)
    full = create_model("mobilenet_v1_025", num_classes=1001)
    ms.load_param_into_net(full, ms.load_checkpoint(ckpt1001))
    full.set_train(False)
    x = ms.Tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32))
    np.testing.assert_array_equal(net(x).asnumpy(), full(x).asnumpy()[:, :1000])
    result = validate(cfg)
    assert result["samples"] == 359 and result["Top_5_Accuracy"] is not None


@pytest.mark.slow
def test_ema_weights_are_validated_when_ema_is_set(digits_root, calib, tmp_path):
    raw = calibrated(create_model(MODEL, num_classes=10), calib, 0)
    shadow = calibrated(create_model(MODEL, num_classes=10), calib, 1)
    entries = [{"name": p.name, "data": p} for p in raw.get_parameters()]
    entries += [{"name": "ema." + p.name, "data": p} for p in shadow.get_parameters()]
    path = save_checkpoint(entries, str(tmp_path / "ema.ckpt"))
    x = ms.Tensor(np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with_ema = load_eval_network(cfg_for(digits_root, path, ema=True))(x).asnumpy()
    without = load_eval_network(cfg_for(digits_root, path))(x).asnumpy()
    np.testing.assert_array_equal(with_ema, shadow(x).asnumpy())
    np.testing.assert_array_equal(without, raw(x).asnumpy())
    with pytest.raises(ValueError, match="holds no ema"):
        load_eval_network(cfg_for(digits_root, make_ckpt(tmp_path / "plain.ckpt", calib), ema=True))


@pytest.mark.slow
def test_eval_resolution_follows_the_model_record_unless_set(digits_root, three_classes, calib, tmp_path, caplog):
    # mobilenet_v2_<alpha>_<res>: the record's input size when the user set none ...
    cfg = load_config(None, {"model": "mobilenet_v2_050_96", "data_dir": digits_root})
    resolved = resolve_eval_config(cfg)
    assert resolved.image_resize == 96 and cfg.image_resize == 224
    images, _ = next(build_eval_loader(resolved, batch_size=4).create_tuple_iterator(output_numpy=True))
    assert images.shape == (4, 3, 96, 96)
    # ... and the user's --image_resize when given (seed 002: --model mobilenet_v2_075 --image_resize 192).
    cli, _ = parse_args(["--model", "mobilenet_v2_075", "--image_resize", "192"])
    assert resolve_eval_config(cli).image_resize == 192
    assert resolve_eval_config(load_config(None, {"model": "mobilenet_v2_075_160"})).image_resize == 160
    # a recipe's image_resize holds for the recipe's model, not for a model named on the command line
    recipe, _ = parse_args(["-c", DIGITS_RECIPE])
    assert recipe.image_resize == 64 and resolve_eval_config(recipe).image_resize == 64
    other, _ = parse_args(["-c", DIGITS_RECIPE, "--model", "mobilenet_v2_075_160"])
    assert resolve_eval_config(other).image_resize == 160
    # validate logs the resolution it used: 96 px, shorter side resized to int(96 / 0.875) = 109
    values = {
        "data_dir": three_classes,
        "model": "mobilenet_v2_050_96",
        "num_classes": 10,
        "mode": 1,
        "ckpt_path": make_ckpt(tmp_path / "v2_96.ckpt", calib, model="mobilenet_v2_050_96"),
    }
    with caplog.at_level(logging.INFO, logger="mindcv_mobile"):
        result = validate(load_config(None, values))
    assert result["samples"] == 15
    assert any("96 px (resize 109, bilinear)" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_validate_script_one_line_error_and_run_dir_config(digits_root, ckpt, tmp_path, capsys):
    script = load_script("validate.py")
    code = run_main(
        lambda: script.main(["--ckpt_path", str(tmp_path / "missing.ckpt"), "--data_dir", digits_root]), "validate.py"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("validate.py: error: checkpoint not found:")
    # No -c: a checkpoint inside a run directory brings its config.yaml (model, classes, size).
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(ckpt, run_dir / "best.ckpt")
    cfg = cfg_for(digits_root, "", batch_size=100)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(cfg)))
    out = tmp_path / "m.json"
    assert script.main(["--ckpt_path", str(run_dir / "best.ckpt"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "'samples': 359}" in printed and json.loads(out.read_text())["samples"] == 359


@pytest.fixture(scope="module")
def val_without_zero(digits_root, tmp_path_factory):
    """The digits tree whose val split lacks class folder 0 (train keeps all ten)."""
    root = tmp_path_factory.mktemp("val_without_zero")
    shutil.copytree(os.path.join(digits_root, "train"), root / "train")
    shutil.copytree(
        os.path.join(digits_root, "val"), root / "val", ignore=lambda d, names: ["0"] if d.endswith("val") else []
    )
    return str(root)


def test_val_split_missing_a_class_is_labelled_with_the_run_classes(digits_root, val_without_zero, ckpt):
    """Labels come from the run's class list, not from the val folder's own sorted folders: with
    val/0 absent, val/1 is still label 1 (it was scored as label 0 before, top-1 ~2%)."""
    cfg = cfg_for(val_without_zero, ckpt)
    result = validate(cfg)
    files = [(f, label) for f, label in split_files(digits_root) if label != 0]
    logits, labels = numpy_logits(cfg, ckpt, files)
    assert result["samples"] == len(files)
    assert result["Top_1_Accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()), abs=1e-12)


def test_val_class_the_model_does_not_know_is_an_error(digits_root, ckpt, tmp_path):
    """A run's classes.json beside the checkpoint is the class list; a val folder outside it is named."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "model.ckpt")
    (run / "classes.json").write_text(json.dumps([str(i) for i in range(1, 10)] + ["ten"]))
    with pytest.raises(ValueError, match=r"class folders \['0'\] of split 'val' .* are not among the 10 classes"):
        validate(cfg_for(digits_root, str(run / "model.ckpt")))
