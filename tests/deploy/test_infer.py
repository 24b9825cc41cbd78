"""infer.py on a run trained by scripts/run_standalone_train.sh: top-5 with names, .ckpt, .onnx and .mindir;
and on a folder holding a corrupt image (skipped with a warning, the others predicted).

One short fine-tuning run (1 epoch on 120 digits, from a checkpoint given as the script's third
argument) provides what infer.py reads from a run directory: the checkpoint, config.yaml and
classes.json. Predictions are checked against validate() on the same images, which reads them
through the dataset pipeline instead of infer's per-file decoding.
"""

import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops
from PIL import Image

from mindcv_mobile.cli import run_main
from mindcv_mobile.config import config_from_run_dir, defaults
from mindcv_mobile.deploy import preprocess
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.tasks import validate
from mindcv_mobile.tasks.export import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
TRAIN_SCRIPT = os.path.join(ROOT, "scripts", "run_standalone_train.sh")
MODEL = "mobilenet_v3_small_100"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_script"), os.path.join(ROOT, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_checkpoint(path, images):
    """A random MobileNetV3-small whose BN statistics come from ``images`` (momentum-1 train pass):
    its predictions differ between images, unlike a fresh network's."""
    net = create_model(MODEL, num_classes=10)
    rng = np.random.default_rng(0)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.bn_train = ops.BatchNorm(is_training=True, epsilon=cell.eps, momentum=1.0, data_format=cell.format)
        elif isinstance(cell, nn.Dense):
            out, inp = cell.weight.shape
            cell.weight.set_data(ms.Tensor(rng.normal(0, 2 / np.sqrt(inp), (out, inp)).astype(np.float32)))
    net.set_train(True)
    net(ms.Tensor(images))
    save_checkpoint(net, str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny(digits_root, tmp_path_factory):
    """12 train and 3 val images per digit."""
    root = tmp_path_factory.mktemp("tiny")
    for split, per_class in (("train", 12), ("val", 3)):
        for cls in sorted(os.listdir(os.path.join(digits_root, split))):
            os.makedirs(root / split / cls)
            for name in sorted(os.listdir(os.path.join(digits_root, split, cls)))[:per_class]:
                shutil.copy(os.path.join(digits_root, split, cls, name), root / split / cls / name)
    return str(root)


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("train")
    train_files = sorted(
        os.path.join(tiny, "train", c, f)
        for c in os.listdir(os.path.join(tiny, "train"))
        for f in os.listdir(os.path.join(tiny, "train", c))
    )
    cfg = defaults()
    cfg.update(crop_pct=1.0, image_resize=32)
    start = start_checkpoint(work / "start.ckpt", preprocess(cfg, train_files))
    env = dict(os.environ, RECIPE=DIGITS_RECIPE)
    for key in ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE"):
        env.pop(key, None)
    proc = subprocess.run(
        [
            "bash",
            TRAIN_SCRIPT,
            "imagenet2012",
            tiny,
            start,
            "--image_resize",
            "32",
            "--epoch_size",
            "1",
            "--batch_size",
            "12",
            "--warmup_epochs",
            "0",
            "--decay_epochs",
            "1",
            "--lr",
            "0.0001",
            "--mode",
            "1",
            "--ckpt_save_dir",
            str(work / "run"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "run", proc


@pytest.mark.slow
def test_standalone_train_script_passes_dataset_and_pretrained_checkpoint(run):
    run_dir, proc = run
    assert f"loaded {run_dir.parent / 'start.ckpt'}: head loaded; 0 missing" in proc.stderr
    assert json.loads((run_dir / "classes.json").read_text()) == [str(i) for i in range(10)]
    assert (run_dir / f"{MODEL}-best.ckpt").is_file()


@pytest.mark.parametrize("args", [[], ["imagenet"], ["cifar10", "/no/such/dir"]])
def test_standalone_train_script_usage_on_wrong_arguments(args):
    proc = subprocess.run(["bash", TRAIN_SCRIPT, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Usage: bash" in proc.stderr and "[PRETRAINED_CKPT_PATH](optional)" in proc.stderr


def top1_top5_hits(predictions):
    labels = [int(os.path.basename(os.path.dirname(p["path"]))) for p in predictions]
    top1 = np.mean([int(p["top"][0]["class"]) == y for p, y in zip(predictions, labels)])
    top5 = np.mean([y in [int(t["class"]) for t in p["top"]] for p, y in zip(predictions, labels)])
    return top1, top5


@pytest.mark.slow
def test_checkpoint_inference_agrees_with_validate(run, tiny, tmp_path, capsys):
    run_dir, _ = run
    ckpt = str(run_dir / f"{MODEL}-best.ckpt")
    out = tmp_path / "predictions.json"
    # No -c: model, classes and preprocessing come from the run directory.
    assert (
        load_script("infer.py").main(
            ["--ckpt_path", ckpt, "--mode", "1", os.path.join(tiny, "val"), "--output", str(out)]
        )
        == 0
    )
    printed = [line for line in capsys.readouterr().out.splitlines() if ".png: " in line]
    predictions = json.loads(out.read_text())
    assert len(predictions) == len(printed) == 30
    for p in predictions:
        probs = [t["probability"] for t in p["top"]]
        assert [t["rank"] for t in p["top"]] == [1, 2, 3, 4, 5]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert [t["class"] for t in p["top"]] == [str(t["index"]) for t in p["top"]]  # names from classes.json
    assert len({p["top"][0]["index"] for p in predictions}) >= 3, "predictions should spread over classes"
    cfg = config_from_run_dir(defaults(), ckpt)
    cfg.update(ckpt_path=ckpt, data_dir=tiny, mode=1)
    metrics = validate(cfg)
    top1, top5 = top1_top5_hits(predictions)
    assert metrics["samples"] == 30
    assert metrics["Top_1_Accuracy"] == pytest.approx(top1, abs=1e-9)
    assert metrics["Top_5_Accuracy"] == pytest.approx(top5, abs=1e-9)


@pytest.mark.slow
def test_onnx_inference_matches_checkpoint_inference(run, tiny, tmp_path, capsys):
    run_dir, _ = run
    ckpt = str(run_dir / f"{MODEL}-best.ckpt")
    cfg = config_from_run_dir(defaults(), ckpt)
    cfg.update(ckpt_path=ckpt, mode=1)
    exported = export(cfg, "ONNX", str(tmp_path / "digits.onnx"))  # checked against the Cell inside
    print(
        f"{MODEL} ONNX vs Cell: {exported.max_abs_diff:.3g} (max |logit| {exported.max_abs_logit:.3g}, "
        f"tolerance {exported.tolerance:.3g})"
    )
    infer = load_script("infer.py")
    val = os.path.join(tiny, "val")
    assert infer.main(["--ckpt_path", ckpt, "--mode", "1", val, "--output", str(tmp_path / "ckpt.json")]) == 0
    # the .onnx has a dynamic batch: 30 images in one run; preprocessing and names from its .json
    assert infer.main(["--ckpt_path", exported.path, val, "--output", str(tmp_path / "onnx.csv")]) == 0
    capsys.readouterr()
    by_ckpt = json.loads((tmp_path / "ckpt.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "onnx.csv")))
    assert len(rows) == 30 and list(rows[0])[:4] == ["path", "top1_class", "top1_index", "top1_probability"]
    for p, row in zip(by_ckpt, rows):
        assert row["path"] == p["path"]
        for t in p["top"]:
            assert row[f"top{t['rank']}_index"] == str(t["index"]) and row[f"top{t['rank']}_class"] == t["class"]
            assert float(row[f"top{t['rank']}_probability"]) == pytest.approx(t["probability"], abs=1e-3)
    print(
        "max probability difference ONNX vs checkpoint:",
        max(
            abs(float(row[f"top{t['rank']}_probability"]) - t["probability"])
            for p, row in zip(by_ckpt, rows)
            for t in p["top"]
        ),
    )


@pytest.mark.slow
def test_class_names_option_and_one_line_errors(run, tiny, tmp_path, capsys):
    run_dir, _ = run
    ckpt = str(run_dir / f"{MODEL}-best.ckpt")
    image = os.path.join(tiny, "val", "7", sorted(os.listdir(os.path.join(tiny, "val", "7")))[0])
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    infer = load_script("infer.py")
    assert (
        infer.main(["--ckpt_path", ckpt, "--mode", "1", "--classes", str(tmp_path / "names.txt"), "--topk", "3", image])
        == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{image}: ") and len(line.split(", ")) == 3
    assert all(part.split()[0] in names for part in line[len(image) + 2 :].split(", "))

    (tmp_path / "nine.txt").write_text("\n".join(names[:9]))
    for argv, message in [
        (["--classes", str(tmp_path / "nine.txt"), image], "9 class names for a model with 10 classes"),
        ([image, "--output", str(tmp_path / "p.txt")], "the extension must be .csv or .json"),
        ([str(tmp_path / "missing.png")], "no such image file or folder"),
    ]:
        code = run_main(lambda argv=argv: infer.main(["--ckpt_path", ckpt, "--mode", "1"] + argv), "infer.py")
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("infer.py: error:") and message in err[-1], err[-1:]


@pytest.mark.slow
def test_mindir_inference_matches_checkpoint_inference(run, tiny, tmp_path, capsys):
    run_dir, _ = run
    ckpt = str(run_dir / f"{MODEL}-best.ckpt")
    cfg = config_from_run_dir(defaults(), ckpt)
    cfg.update(ckpt_path=ckpt, mode=1)
    # batch 4: the 30 images go through the file in 8 runs, the last one padded
    exported = export(cfg, "MINDIR", str(tmp_path / "digits.mindir"), batch_size=4)
    assert exported.input_shape == (4, 3, 32, 32) and exported.max_abs_diff <= exported.tolerance
    infer = load_script("infer.py")
    val = os.path.join(tiny, "val")
    assert infer.main(["--ckpt_path", ckpt, "--mode", "1", val, "--output", str(tmp_path / "by_ckpt.json")]) == 0
    # no run directory beside the file: 32 px, crop_pct 1.0 and the class names come from its .json
    assert (
        infer.main(["--ckpt_path", exported.path, "--mode", "1", val, "--output", str(tmp_path / "by_mindir.json")])
        == 0
    )
    capsys.readouterr()
    by_ckpt = json.loads((tmp_path / "by_ckpt.json").read_text())
    by_mindir = json.loads((tmp_path / "by_mindir.json").read_text())
    assert len(by_mindir) == 30 and [p["path"] for p in by_mindir] == [p["path"] for p in by_ckpt]
    for a, b in zip(by_ckpt, by_mindir):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        np.testing.assert_allclose(
            [t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]], atol=1e-5
        )


def bad_huffman_jpeg(image: Image.Image) -> bytes:
    """``image`` as a JPEG whose first Huffman table claims 255 codes of every length (more than
    fit): the file MindSpore 2.10's ``Decode`` kills the process on (as in test_image_files)."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(data)


@pytest.mark.slow
def test_a_corrupt_jpeg_is_skipped_and_the_other_images_predicted(digits_root, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    digit = os.path.join(digits_root, "val", "3")
    images = [Image.open(os.path.join(digit, name)).convert("RGB") for name in sorted(os.listdir(digit))[:4]]
    good = [str(folder / name) for name in ("good0.jpg", "good1.png", "good2.png")]
    for image, path in zip(images, good):
        image.save(path)
    bad = folder / "corrupt.jpg"  # sorted first: the run goes on past it
    bad.write_bytes(bad_huffman_jpeg(images[3]))
    ckpt = str(tmp_path / "random.ckpt")
    save_checkpoint(create_model("mobilenet_v1_025", num_classes=10), ckpt)
    out = tmp_path / "predictions.json"
    # A subprocess: MindSpore's decoder on that file is a segmentation fault (exit -11), not an exception.
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "infer.py"),
            "--ckpt_path",
            ckpt,
            "--model",
            "mobilenet_v1_025",
            "--num_classes",
            "10",
            "--image_resize",
            "32",
            "--mode",
            "1",
            str(folder),
            "--output",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    warnings = [line for line in proc.stderr.splitlines() if " WARNING " in line and str(bad) in line]
    assert len(warnings) == 1 and f"cannot read image {bad}: not a decodable image" in warnings[0], proc.stderr[-3000:]
    assert f"skipped 1 unreadable image(s): {bad}" in proc.stderr
    predictions = json.loads(out.read_text())
    assert [p["path"] for p in predictions] == sorted(good)
    assert all(len(p["top"]) == 5 for p in predictions)
    printed = [line for line in proc.stdout.splitlines() if line.startswith(str(folder))]
    assert len(printed) == 3 and not any(line.startswith(f"{bad}:") for line in printed)
