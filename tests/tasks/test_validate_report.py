"""What validate.py shows beyond the dict line: the summary, per-class accuracy, the confusion
matrix (CSV and image) and the table of several checkpoints.

Checkpoints are random MobileNetV1 0.25 networks calibrated on digits at 32 px (their predictions
spread over the classes); every number is compared with the network run outside the pipeline
(eval transforms of ``deploy.preprocess``, numpy argsort / bincount), or with separate
single-checkpoint validations.
"""

import csv
import importlib.util
import json
import os
import re
import shutil
import sys

import mindspore as ms
import numpy as np
import pytest
import yaml
from netutils import calibrated  # tests/netutils.py
from PIL import Image

from mindcv_mobile import evaluation
from mindcv_mobile.build import resolve_eval_config
from mindcv_mobile.config import load_config
from mindcv_mobile.deploy import preprocess
from mindcv_mobile.evaluation import TopOneConfusion, per_class_rows, per_class_table, write_confusion
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.tasks import validate
from mindcv_mobile.tasks.validate import (
    checkpoint_configs,
    run_checkpoints,
    validate_checkpoints,
    validate_report,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
MODEL = "mobilenet_v1_025"
TASK = sys.modules["mindcv_mobile.tasks.validate"]


def cfg_for(data_dir, ckpt, **overrides):
    values = {"data_dir": data_dir, "ckpt_path": ckpt, "model": MODEL, "image_resize": 32, "mode": 1, "batch_size": 64}
    values.update(overrides)
    return load_config(DIGITS_RECIPE, values)


def val_files(root):
    return [
        (os.path.join(root, "val", c, f), c)
        for c in sorted(os.listdir(os.path.join(root, "val")))
        for f in sorted(os.listdir(os.path.join(root, "val", c)))
    ]


def make_ckpt(path, images, seed, epoch=None):
    net = calibrated(create_model(MODEL, num_classes=10), images, seed)
    return save_checkpoint(net, str(path), append_dict=None if epoch is None else {"epoch_num": epoch})


def reference(cfg, ckpt, root, classes=None):
    """(labels, first-ranked class, logits) of the checkpoint on the val images, outside the pipeline."""
    net = create_model(MODEL, num_classes=10)
    ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    net.set_train(False)
    files = val_files(root)
    images = preprocess(resolve_eval_config(cfg), [f for f, _ in files])
    logits = np.concatenate([net(ms.Tensor(images[i : i + 64])).asnumpy() for i in range(0, len(images), 64)])
    index = {name: i for i, name in enumerate(classes or [str(i) for i in range(10)])}
    labels = np.array([index[c] for _, c in files])
    return labels, np.argsort(-logits, axis=1)[:, 0], logits


def numpy_confusion(labels, predicted, n=10):
    return np.bincount(labels * n + predicted, minlength=n * n).reshape(n, n)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_script"), os.path.join(ROOT, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def calib(digits_root):
    files = [f for f, _ in val_files(digits_root)][::10]
    return preprocess(load_config(DIGITS_RECIPE, {"image_resize": 32}), files)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, calib):
    return make_ckpt(tmp_path_factory.mktemp("ckpt") / "random.ckpt", calib, seed=3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, calib, digits_root):
    """A run directory as training leaves it: config.yaml, classes.json, epoch checkpoints
    (epoch 10 after epoch 2: ordered by number, not by name) and the best."""
    run = tmp_path_factory.mktemp("run")
    cfg = cfg_for(digits_root, "")
    (run / "config.yaml").write_text(yaml.safe_dump(dict(cfg)))
    (run / "classes.json").write_text(json.dumps([str(i) for i in range(10)]))
    make_ckpt(run / f"{MODEL}-2_12.ckpt", calib, seed=1, epoch=2)
    make_ckpt(run / f"{MODEL}-10_60.ckpt", calib, seed=2, epoch=10)
    shutil.copy(run / f"{MODEL}-2_12.ckpt", run / f"{MODEL}-best.ckpt")
    return str(run)


def test_top_one_confusion_ranks_ties_as_top1_accuracy():
    """Equal logits: the confusion matrix's trace is the count Top1CategoricalAccuracy accepts."""
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 2, (200, 6)).astype(np.float32)  # many ties
    labels = rng.integers(0, 6, 200)
    top1, cm = ms.train.Top1CategoricalAccuracy(), TopOneConfusion(6)
    top1.update(logits, labels)
    cm.update(logits, labels)
    matrix = cm.eval()
    assert matrix.dtype == np.int64 and matrix.sum() == 200
    assert np.trace(matrix) == round(top1.eval() * 200)
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=6))
    # one-hot labels count as their class
    cm.clear()
    cm.update(logits, np.eye(6, dtype=np.float32)[labels])
    np.testing.assert_array_equal(cm.eval(), matrix)


def test_per_class_rows_worst_first_and_table():
    matrix = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    rows = per_class_rows(matrix, ["cat", "dog", "e|mpty"])
    assert [(r["class"], r["images"], r["correct"], r["accuracy"]) for r in rows] == [
        ("cat", 4, 3, 0.75),
        ("dog", 4, 4, 1.0),
        ("e|mpty", 0, 0, None),
    ]
    lines = per_class_table(rows).splitlines()
    assert lines[0].split("|")[1:-1] == [" class   ", " images ", " correct ", " accuracy "]
    assert lines[1] == "|---------|-------:|--------:|---------:|"
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["cat", "4", "3", "75.00%"]
    assert lines[4].startswith("| e\\|mpty |") and lines[4].rstrip("| ").endswith("n/a")


def test_run_checkpoints_order(tmp_path):
    for name in ["m-best.ckpt", "m-10_50.ckpt", "m-2_10.ckpt", "zz.ckpt", ".m-3_1.ckpt.tmp.ckpt", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [os.path.basename(p) for p in run_checkpoints(str(tmp_path))] == [
        "m-2_10.ckpt",
        "m-10_50.ckpt",
        "zz.ckpt",
        "m-best.ckpt",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.ckpt file in .*empty; pass a run directory"):
        run_checkpoints(str(tmp_path / "empty"))


def test_report_matches_numpy(digits_root, ckpt):
    cfg = cfg_for(digits_root, ckpt)
    report = validate_report(cfg)
    labels, predicted, logits = reference(cfg, ckpt, digits_root)
    expected = numpy_confusion(labels, predicted)
    np.testing.assert_array_equal(report.confusion, expected)
    assert len(set(predicted.tolist())) >= 3, "the random network should spread its predictions"
    correct = int((predicted == labels).sum())
    # per-class numbers come from the same predictions as top-1
    assert sum(r["correct"] for r in report.per_class()) == report.correct == correct
    assert report.metrics["samples"] == len(labels) == 359
    assert report.metrics["Top_1_Accuracy"] == pytest.approx(correct / 359, abs=1e-12)
    per_class = {str(c): (int((labels == c).sum()), int(((labels == c) & (predicted == c)).sum())) for c in range(10)}
    rows = report.per_class()
    assert {r["class"]: (r["images"], r["correct"]) for r in rows} == per_class
    accuracies = [r["accuracy"] for r in rows]
    assert accuracies == sorted(accuracies)
    top5 = (np.argsort(-logits, axis=1)[:, :5] == labels[:, None]).any(1).mean()
    pattern = (
        rf"{MODEL} on {re.escape(os.path.join(digits_root, 'val'))}: top-1 {100 * correct / 359:.2f}% "
        rf"\({correct}/359\), top-5 {100 * top5:.2f}%, loss {report.metrics['loss']:.4f}, "
        r"359 images in \d+\.\d s \(\d+ img/s\)"
    )
    assert re.fullmatch(pattern, report.summary())
    assert report.epoch is None and report.checkpoint == ckpt


def test_script_prints_per_class_summary_dict_and_writes_confusion(digits_root, ckpt, tmp_path, capsys):
    script = load_script("validate.py")
    png = tmp_path / "out" / "cm.png"
    args = [
        "-c",
        DIGITS_RECIPE,
        "--ckpt_path",
        ckpt,
        "--data_dir",
        digits_root,
        "--model",
        MODEL,
        "--image_resize",
        "32",
        "--mode",
        "1",
        "--num_classes",
        "10",
        "--batch_size",
        "64",  # the reference's batches: the same kernels, bit-identical logits
    ]
    assert script.main(args + ["--confusion", str(png)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    # The dict stays the last line (scripts read it); the summary is just above it.
    assert re.fullmatch(
        r"\{'Top_1_Accuracy': [0-9.e-]+, 'Top_5_Accuracy': [0-9.e-]+, 'loss': [0-9.e-]+, 'samples': 359\}", lines[-1]
    )
    assert lines[-2].startswith(f"{MODEL} on ") and "359 images in" in lines[-2]
    # 10 classes: the per-class table is printed by default
    assert lines[0] == "per class:" and lines[1].startswith("| class ") and len(lines) == 1 + 2 + 10 + 2

    labels, predicted, _ = reference(cfg_for(digits_root, ckpt), ckpt, digits_root)
    expected = numpy_confusion(labels, predicted)
    table = {}
    for line in lines[3:13]:
        name, images, correct, accuracy = [c.strip() for c in line.split("|")[1:-1]]
        table[name] = (int(images), int(correct), accuracy)
    for c in range(10):
        images, correct = int(expected[c].sum()), int(expected[c, c])
        assert table[str(c)] == (images, correct, f"{100 * correct / images:.2f}%")

    with open(tmp_path / "out" / "cm.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *[str(c) for c in range(10)]]
    assert [r[0] for r in rows[1:]] == [str(c) for c in range(10)]
    np.testing.assert_array_equal(np.array([[int(v) for v in r[1:]] for r in rows[1:]]), expected)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
        image.verify()
    assert f"confusion matrix: {png}, {tmp_path / 'out' / 'cm.csv'}" in captured.err

    # --per_class False: summary and dict only
    assert script.main(args + ["--per_class", "False"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_confusion_without_matplotlib_writes_csv_and_says_how(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    matrix = np.array([[2, 1], [0, 3]])
    csv_path, image, note = write_confusion(str(tmp_path / "cm.png"), matrix, ["a", "b"])
    assert image is None and not (tmp_path / "cm.png").exists()
    assert note == f"{tmp_path / 'cm.png'} not written: drawing it needs matplotlib (pip install mindcv_mobile[viz])"
    assert (tmp_path / "cm.csv").read_text() == "true \\ predicted,a,b\na,2,1\nb,0,3\n"
    with pytest.raises(ValueError, match=r"--confusion .*cm\.jpg: the image path must end in \.png, \.svg, \.pdf"):
        write_confusion(str(tmp_path / "cm.jpg"), matrix, ["a", "b"])


def test_confusion_image_names_and_counts(tmp_path):
    """The figure itself: class names on both axes, a count in every non-zero cell up to 30 classes."""
    matrix = np.array([[5, 1, 0], [0, 2, 2], [1, 0, 7]])
    fig = evaluation.confusion_figure(matrix, ["zero", "one", "two"], "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["zero", "one", "two"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["zero", "one", "two"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in matrix[matrix > 0])
    big = evaluation.confusion_figure(np.eye(31, dtype=int), [str(i) for i in range(31)])
    assert not big.axes[0].texts


def test_run_directory_table_equals_single_runs(digits_root, run_dir, tmp_path, capsys):
    script = load_script("validate.py")
    table, out = tmp_path / "t.csv", tmp_path / "m.json"
    assert script.main(["--ckpt_path", run_dir, "--table", str(table), "--output", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    names = [f"{MODEL}-2_12.ckpt", f"{MODEL}-10_60.ckpt", f"{MODEL}-best.ckpt"]
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r["checkpoint"]) for r in rows] == names
    assert [r["epoch"] for r in rows] == ["2", "10", "2"]
    markdown = printed[-5:]
    assert [c.strip() for c in markdown[0].split("|")[1:-1]] == [
        "checkpoint",
        "epoch",
        "top-1",
        "top-5",
        "loss",
        "images",
    ]
    singles = {}
    for row, line in zip(rows, markdown[2:]):
        # -best.ckpt is a copy of the epoch 2 checkpoint: its row must equal that validation too
        key = row["checkpoint"].replace("-best.ckpt", "-2_12.ckpt")
        single = singles[key] = singles.get(key) or validate(cfg_for(digits_root, key))
        assert float(row["Top_1_Accuracy"]) == single["Top_1_Accuracy"]
        assert float(row["Top_5_Accuracy"]) == single["Top_5_Accuracy"]
        assert float(row["loss"]) == single["loss"] and int(row["samples"]) == single["samples"] == 359
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells == [
            row["checkpoint"],
            row["epoch"],
            f"{100 * single['Top_1_Accuracy']:.2f}%",
            f"{100 * single['Top_5_Accuracy']:.2f}%",
            f"{single['loss']:.4f}",
            "359",
        ]
    assert rows[0]["Top_1_Accuracy"] == rows[2]["Top_1_Accuracy"]  # the same weights
    assert rows[0]["Top_1_Accuracy"] != rows[1]["Top_1_Accuracy"]
    saved = json.loads(out.read_text())
    assert [s["checkpoint"] for s in saved] == [r["checkpoint"] for r in rows]
    # more than one checkpoint: no per-class table unless asked
    assert not any(line.startswith("per class") for line in printed)
    # --table X.md writes the printed markdown table
    evaluation.write_checkpoints_table(str(tmp_path / "t.md"), saved)
    assert (tmp_path / "t.md").read_text().strip().splitlines() == markdown


@pytest.mark.slow
def test_one_compiled_network_for_many_checkpoints_in_graph_mode(digits_root, run_dir, calib, tmp_path, monkeypatch):
    """Graph mode: one eval network (one compilation) for a run's checkpoints and one from another
    run whose classes.json orders the classes differently; each scored as alone, with its run's labels."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(open(os.path.join(run_dir, "config.yaml")).read())
    swapped = ["1", "0"] + [str(i) for i in range(2, 10)]
    (other / "classes.json").write_text(json.dumps(swapped))
    third = make_ckpt(other / "w.ckpt", calib, seed=4)
    built = []
    real = TASK.build_eval_network
    monkeypatch.setattr(TASK, "build_eval_network", lambda cfg, net: built.append(cfg.ckpt_path) or real(cfg, net))
    base = load_config(None, {"mode": 0})
    cfgs = checkpoint_configs(base, [run_dir, third])
    assert [c.mode for c in cfgs] == [0, 0, 0, 0]  # mode from the command line over the runs' configs
    reports = validate_checkpoints(cfgs)
    assert len(built) == 1
    # different weights, different predictions: each report saw its own checkpoint's weights
    assert not np.array_equal(reports[0].confusion, reports[1].confusion)
    assert not np.array_equal(reports[1].confusion, reports[3].confusion)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the reference networks: no graph compilation each
    for report, cfg in zip(reports, cfgs):
        classes = swapped if report.checkpoint == third else None
        labels, predicted, _ = reference(cfg, cfg.ckpt_path, digits_root, classes)
        np.testing.assert_array_equal(report.confusion, numpy_confusion(labels, predicted))
        assert report.metrics["Top_1_Accuracy"] == pytest.approx(float((predicted == labels).mean()), abs=1e-12)
    assert reports[-1].classes == swapped
