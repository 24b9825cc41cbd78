"""validate.py on exported files: an ``.onnx`` (onnxruntime) and a ``.mindir`` (MindSpore) export of
a checkpoint score what the checkpoint scores, with the preprocessing and class list of their .json.

The checkpoint is a random MobileNetV1 0.25 calibrated on digits at 32 px (its predictions spread
over the classes), in a run directory whose classes.json lists the digits in another order than
the folders ("1" before "0"): labels must follow that list. The exported files' numbers are
checked against onnxruntime run outside the pipeline (eval transforms of ``deploy.preprocess``,
numpy argsort / bincount, a float64 numpy cross-entropy with the recipe's label smoothing) and
against the checkpoint's own validation: the same prediction for every image, except where the
checkpoint's two first classes (or fifth and sixth) are closer than the runtimes' float32 rounding
apart (onnxruntime folds BatchNorm and orders sums differently: ~1e-4 on logits of ~20 here), which
either runtime may rank either way; at most a handful of the 359 images, often none.
"""

import csv
import importlib.util
import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
import yaml
from netutils import calibrated  # tests/netutils.py

from mindcv_mobile.cli import run_main
from mindcv_mobile.config import load_config
from mindcv_mobile.deploy import onnx_session, preprocess, run_exported
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.tasks.export import export
from mindcv_mobile.tasks.validate import checkpoint_configs, exported_config, validate_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
MODEL = "mobilenet_v1_025"
SWAPPED = ["1", "0"] + [str(i) for i in range(2, 10)]  # the run's class order
MINDIR_BATCH = 16  # 359 val images: 22 full batches and a padded one of 7


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_script"), os.path.join(ROOT, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def val_files(root):
    return [
        (os.path.join(root, "val", c, f), c)
        for c in sorted(os.listdir(os.path.join(root, "val")))
        for f in sorted(os.listdir(os.path.join(root, "val", c)))
    ]


def numpy_confusion(labels, predicted, n=10):
    return np.bincount(labels * n + predicted, minlength=n * n).reshape(n, n)


def in_64(run, images):
    return np.concatenate([run(images[i : i + 64]) for i in range(0, len(images), 64)])


def first(logits):
    """The class ranked first, as the top-1 metric ranks (a descending argsort)."""
    return np.argsort(-logits, axis=1)[:, 0]


def top5(logits, labels):
    return (np.argsort(-logits, axis=1)[:, :5] == labels[:, None]).any(axis=1)


def smoothed_ce(logits, labels, eps):
    """Softmax cross-entropy against (1 - eps) * one_hot + eps / C, per image, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    targets = np.full(z.shape, eps / z.shape[1])
    targets[np.arange(len(labels)), labels] += 1.0 - eps
    return -(targets * log_p).sum(axis=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_root):
    """A run directory as training leaves it: config.yaml (the digits recipe with MobileNetV1 0.25 at
    32 px, crop_pct 1.0, label smoothing 0.1), classes.json (SWAPPED) and an epoch-7 checkpoint."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(DIGITS_RECIPE, {"data_dir": digits_root, "model": MODEL, "image_resize": 32, "mode": 1})
    cfg.batch_size = 64
    (run / "config.yaml").write_text(yaml.safe_dump(dict(cfg)))
    (run / "classes.json").write_text(json.dumps(SWAPPED))
    train = sorted(
        os.path.join(digits_root, "train", c, f)
        for c in os.listdir(os.path.join(digits_root, "train"))
        for f in os.listdir(os.path.join(digits_root, "train", c))
    )[::10]
    images = preprocess(load_config(DIGITS_RECIPE, {"image_resize": 32}), train)
    net = calibrated(create_model(MODEL, num_classes=10), images, 3)
    save_checkpoint(net, str(run / "w.ckpt"), append_dict={"epoch_num": 7})
    return str(run)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """(onnx, mindir) exports of the run's checkpoint in another folder, as export.py writes them
    without -c (the run's config.yaml): their .json names the checkpoint and holds SWAPPED."""
    out = tmp_path_factory.mktemp("exported")
    cfg = load_config(os.path.join(run, "config.yaml"), {"ckpt_path": os.path.join(run, "w.ckpt")})
    onnx = export(cfg, "ONNX", str(out / "w.onnx")).path
    mindir = export(cfg, "MINDIR", str(out / "w.mindir"), batch_size=MINDIR_BATCH).path
    return onnx, mindir


def fake_export(folder, name="m.onnx", **changes):
    """An exported file's place (bytes no runtime reads) and its .json: for checks made before loading."""
    path = folder / name
    path.write_bytes(b"not a model")
    meta = {
        "model": MODEL,
        "num_classes": 10,
        "file_format": "ONNX",
        "input_shape": ["batch", 3, 40, 40],
        "dataset": "imagenet",
        "image_resize": 40,
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": [1.0, 2.0, 3.0],
        "std": [50.0, 60.0, 70.0],
        "checkpoint": "",
        "classes": SWAPPED,
    }
    meta.update(changes)
    (folder / (name + ".json")).write_text(json.dumps(meta))
    return str(path)


# ------------------------------------------------------------------------------- fast checks
def test_the_json_replaces_the_recipe_and_the_command_line_must_agree(tmp_path):
    path = fake_export(tmp_path)
    # The digits recipe says mobilenet_v3_small_100, 64 px, crop_pct 1.0, bilinear, ImageNet mean/std.
    cfg = exported_config(load_config(DIGITS_RECIPE, {"ckpt_path": path}))
    assert (cfg.model, cfg.num_classes, cfg.image_resize, cfg.crop_pct, cfg.interpolation) == (
        MODEL,
        10,
        40,
        0.95,
        "bicubic",
    )
    assert list(cfg.mean) == [1.0, 2.0, 3.0] and list(cfg.std) == [50.0, 60.0, 70.0]
    assert cfg.origins["image_resize"] == path + ".json"
    # a value given explicitly that agrees is fine; one that disagrees is a one-line error
    assert exported_config(load_config(None, {"ckpt_path": path, "image_resize": 40})).image_resize == 40
    with pytest.raises(ValueError, match=r"^--crop_pct 0\.875 but .*m\.onnx was exported with crop_pct 0\.95 \("):
        exported_config(load_config(None, {"ckpt_path": path, "crop_pct": 0.875}))
    # the input size is the file's input shape, whatever the .json's image_resize says
    odd = fake_export(tmp_path, "odd.onnx", image_resize=224)
    assert exported_config(load_config(None, {"ckpt_path": odd})).image_resize == 40


def test_script_errors_missing_json_and_disagreeing_option(tmp_path, capsys):
    script = load_script("validate.py")

    def main(args):
        return run_main(lambda: script.main(args), "validate.py")

    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"not a model")
    assert main(["--ckpt_path", str(lone), "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"validate.py: error: {lone}.json not found: scoring {lone} needs the .json that export.py writes "
        f"beside it (input shape, preprocessing, class names); export the checkpoint again with export.py"
    )
    assert main(["--ckpt_path", str(tmp_path / "none.mindir")]) == 2
    assert capsys.readouterr().err.strip() == f"validate.py: error: exported file not found: {tmp_path / 'none.mindir'}"
    path = fake_export(tmp_path)
    assert main(["--ckpt_path", path, "--image_resize", "64", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"validate.py: error: --image_resize 64 but {path} was exported with image_resize 40 ({path}.json); "
        f"drop --image_resize: an exported file is scored as it was exported"
    ]


def test_run_config_of_an_exported_file_comes_from_its_checkpoint_run(tmp_path):
    """Without -c, the recipe (data, loss) is that of the run the exported checkpoint came from."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data_dir": "/data/x", "label_smoothing": 0.3, "model": MODEL}))
    path = fake_export(tmp_path, checkpoint=str(run / "w.ckpt"))
    cfg = checkpoint_configs(load_config(None, {"val_split": "test"}), [path])[0]
    assert (cfg.ckpt_path, cfg.data_dir, cfg.label_smoothing, cfg.val_split) == (path, "/data/x", 0.3, "test")
    # a config.yaml beside the exported file is its run's
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data_dir": "/data/y", "model": MODEL}))
    assert checkpoint_configs(load_config(None, {}), [path])[0].data_dir == "/data/y"
    # with -c (from_run False) the recipe given is used
    assert checkpoint_configs(load_config(None, {"data_dir": "/data/z"}), [path], from_run=False)[0].data_dir == (
        "/data/z"
    )


# ----------------------------------------------------------------------- exported and scored
@pytest.mark.slow
def test_exported_files_score_what_the_checkpoint_scores(run, exported, digits_root):
    onnx, mindir = exported
    base = load_config(None, {"data_dir": digits_root, "mode": 1})
    reports = validate_checkpoints(checkpoint_configs(base, [os.path.join(run, "w.ckpt"), onnx, mindir]))
    ckpt_report, onnx_report, mindir_report = reports
    assert [r.model for r in reports] == [MODEL, f"{MODEL} (ONNX)", f"{MODEL} (MINDIR)"]
    assert [r.epoch for r in reports] == [7, 7, 7]  # the exported files': that of their checkpoint
    assert all(r.classes == SWAPPED for r in reports)

    # Reference: each file run outside the pipeline on the eval transforms of the .json, labels by
    # the run's class order; the checkpoint as a Cell.
    files = val_files(digits_root)
    meta = json.load(open(onnx + ".json"))
    assert (meta["image_resize"], meta["crop_pct"], meta["classes"]) == (32, 1.0, SWAPPED)
    images = preprocess(load_config(os.path.join(run, "config.yaml")), [f for f, _ in files])
    labels = np.array([SWAPPED.index(c) for _, c in files])
    session = onnx_session(onnx)
    onnx_logits = in_64(lambda x: session.run(None, {"image": x})[0], images)
    cell = create_model(MODEL, num_classes=10)
    ms.load_param_into_net(cell, ms.load_checkpoint(os.path.join(run, "w.ckpt")))
    cell.set_train(False)
    cell_logits = in_64(lambda x: cell(ms.Tensor(x)).asnumpy(), images)
    mindir_logits = run_exported(mindir, images)  # batches of 16, the last one padded

    expected = numpy_confusion(labels, first(onnx_logits))
    assert len(set(first(onnx_logits).tolist())) >= 3, "the random network should spread its predictions"
    # the class list matters: folder-order labels would give another matrix
    assert not np.array_equal(expected, numpy_confusion(np.array([int(c) for _, c in files]), first(onnx_logits)))
    np.testing.assert_array_equal(onnx_report.confusion, expected)
    assert onnx_report.metrics["Top_5_Accuracy"] == pytest.approx(top5(onnx_logits, labels).mean(), abs=1e-12)
    loss = float(smoothed_ce(onnx_logits, labels, 0.1).mean())
    assert onnx_report.metrics["loss"] == pytest.approx(loss, rel=1e-5)
    np.testing.assert_array_equal(mindir_report.confusion, numpy_confusion(labels, first(mindir_logits)))
    np.testing.assert_array_equal(ckpt_report.confusion, numpy_confusion(labels, first(cell_logits)))

    # Against the checkpoint: the same prediction for every image but those within float32 rounding
    # of a tie (first / second class; fifth / sixth for top-5), which runtimes may rank either way.
    ranked = np.sort(cell_logits, axis=1)
    for report, logits in ((onnx_report, onnx_logits), (mindir_report, mindir_logits)):
        noise = float(np.abs(logits - cell_logits).max())
        near1 = ranked[:, -1] - ranked[:, -2] <= 2 * noise
        near5 = ranked[:, -5] - ranked[:, -6] <= 2 * noise
        print(f"{report.model}: max |logit - checkpoint's| {noise:.3g}, {near1.sum()} / {near5.sum()} near ties")
        assert near1.sum() + near5.sum() <= 5, "the check needs almost every image to be decided"
        assert not ((first(logits) != first(cell_logits)) & ~near1).any()
        assert not ((top5(logits, labels) != top5(cell_logits, labels)) & ~near5).any()
        assert abs(report.correct - ckpt_report.correct) <= near1.sum()
        assert abs(report.metrics["Top_5_Accuracy"] - ckpt_report.metrics["Top_5_Accuracy"]) * 359 <= near5.sum() + 1e-9
        if not near1.any():  # then the matrices, per-class rows and top-1 are equal
            np.testing.assert_array_equal(report.confusion, ckpt_report.confusion)
            assert report.metrics["Top_1_Accuracy"] == ckpt_report.metrics["Top_1_Accuracy"]
            assert report.per_class() == ckpt_report.per_class()
        assert report.metrics["samples"] == ckpt_report.metrics["samples"] == 359
        assert report.metrics["loss"] == pytest.approx(ckpt_report.metrics["loss"], rel=1e-4)


@pytest.mark.slow
def test_script_scores_exported_files_with_their_json_over_the_recipe(run, exported, digits_root, tmp_path, capsys):
    """-c with the digits recipe (mobilenet_v3_small_100 at 64 px, graph mode): the files' .json
    wins; the table, the per-file confusion matrices (not overwriting each other) and the dict lines."""
    onnx, mindir = exported
    script = load_script("validate.py")
    assert script.main(["--ckpt_path", onnx, mindir, "--data_dir", digits_root, "--per_class", "False"]) == 0
    without_recipe = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{'Top_1")]
    table, png = tmp_path / "t.csv", tmp_path / "cm.png"
    # the recipe's graph mode: the loss Cell on the files' logits compiled; the run's batch (the
    # same chunks for onnxruntime, so the same logits)
    args = ["-c", DIGITS_RECIPE, "--data_dir", digits_root, "--batch_size", "64", "--ckpt_path", onnx, mindir]
    try:
        assert script.main(args + ["--table", str(table), "--confusion", str(png)]) == 0
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    out = capsys.readouterr().out.strip().splitlines()
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["checkpoint"] for r in rows] == [onnx, mindir] and [r["epoch"] for r in rows] == ["7", "7"]
    dicts = [line for line in out if line.startswith("{'Top_1_Accuracy'")]
    assert len(dicts) == len(without_recipe) == 2
    for line, alone in zip(dicts, without_recipe):
        metrics, expected = eval(line), eval(alone)  # the dict line scripts read
        assert metrics["samples"] == expected["samples"] == 359
        assert (metrics["Top_1_Accuracy"], metrics["Top_5_Accuracy"]) == (
            expected["Top_1_Accuracy"],
            expected["Top_5_Accuracy"],
        )
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert any(line.startswith(f"{onnx}: {MODEL} (ONNX) on ") for line in out)
    # one matrix per file (PATH-<name>_<format>), each that of its own dict line
    for name, line in zip(["cm-w_onnx.csv", "cm-w_mindir.csv"], dicts):
        with open(tmp_path / name, newline="") as f:
            cells = list(csv.reader(f))
        assert cells[0] == ["true \\ predicted", *SWAPPED] and [r[0] for r in cells[1:]] == SWAPPED
        matrix = np.array([[int(v) for v in r[1:]] for r in cells[1:]])
        assert matrix.sum() == 359 and np.trace(matrix) == round(eval(line)["Top_1_Accuracy"] * 359)


@pytest.mark.slow
def test_a_folder_the_exported_model_does_not_know_is_an_error(exported, digits_root, tmp_path):
    data = tmp_path / "data"
    for name in ("0", "1"):
        shutil.copytree(os.path.join(digits_root, "val", name), data / "val" / name)
    shutil.copytree(os.path.join(digits_root, "val", "2"), data / "val" / "cat")
    cfg = load_config(None, {"data_dir": str(data), "ckpt_path": exported[0], "mode": 1})
    with pytest.raises(ValueError, match=r"class folders \['cat'\] of split 'val' .* are not among the 10 classes"):
        validate_checkpoints([cfg])
    # a split with some of the classes only: labelled by the file's class list
    shutil.rmtree(data / "val" / "cat")
    report = validate_checkpoints([cfg])[0]
    assert report.metrics["samples"] == int(report.confusion.sum()) == 72
    counts = report.confusion.sum(axis=1)
    assert counts[SWAPPED.index("0")] == len(os.listdir(data / "val" / "0")) and counts[2:].sum() == 0
