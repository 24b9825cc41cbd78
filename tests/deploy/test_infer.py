"""infer.py on a run trained by scripts/run_standalone_train.sh: top-5 with names, .ckpt, .onnx and .mindir;
and on a folder holding a corrupt image (skipped with a warning, the others predicted).

One short fine-tuning run (1 epoch on 120 digits, from a checkpoint given as the script's third
argument) provides what infer.py reads from a run directory: the checkpoint, config.yaml and
classes.json. Predictions are checked against validate() on the same images, which reads them
through the dataset pipeline instead of infer's per-file decoding.
"""

import csv
import importlib
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

from mindcv_mobile.build import build_transforms, eval_config
from mindcv_mobile.cli import run_main
from mindcv_mobile.config import config_from_run_dir, defaults, load_config
from mindcv_mobile.data import read_image
from mindcv_mobile.deploy import PredictionsWriter, image_batches, onnx_session, preprocess, write_predictions
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.tasks import validate
from mindcv_mobile.tasks.export import export
from mindcv_mobile.tasks.infer import infer

# Modules (their names in the packages are the functions).
classify_module = importlib.import_module("mindcv_mobile.deploy.classify")
infer_module = importlib.import_module("mindcv_mobile.tasks.infer")
runtimes = importlib.import_module("mindcv_mobile.deploy.runtimes")

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


# ----------------------------------------------------------------------------- streaming inference
# infer() reads, transforms and classifies the images batch by batch. The reference below is a
# direct forward of the network over the eval-transformed images in chunks of the same batch,
# with softmax and top-k computed here in numpy.


def val_files(tiny):
    val = os.path.join(tiny, "val")
    return [os.path.join(val, c, f) for c in sorted(os.listdir(val)) for f in sorted(os.listdir(os.path.join(val, c)))]


@pytest.fixture(scope="module")
def random_ckpt(tiny, tmp_path_factory):
    train = os.path.join(tiny, "train")
    files = sorted(os.path.join(train, c, f) for c in os.listdir(train) for f in os.listdir(os.path.join(train, c)))
    cfg = defaults()
    cfg.update(crop_pct=1.0, image_resize=32)
    return start_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.ckpt", preprocess(cfg, files))


def stream_config(ckpt, **overrides):
    values = {"model": MODEL, "num_classes": 10, "image_resize": 32, "batch_size": 8, "mode": 1, "ckpt_path": ckpt}
    return load_config(None, {**values, **overrides})


def transformed(cfg, paths):
    """The eval transforms of ``cfg`` (after the model record is applied) on each file."""
    cfg = eval_config(cfg)
    ops = build_transforms(cfg, False)[1:]  # imagenet eval: Decode first; read_image decodes
    out = []
    for path in paths:
        image = read_image(path)
        for op in ops:
            image = op(image)
        out.append(image)
    return np.stack(out).astype(np.float32)


def reference_predictions(paths, logits, k=5):
    z = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    out = []
    for path, row, scores in zip(paths, probs, logits):
        order = np.argsort(-scores, kind="stable")[:k]
        top = [
            {"rank": r + 1, "index": int(i), "class": str(i), "probability": float(row[i])} for r, i in enumerate(order)
        ]
        out.append({"path": path, "top": top})
    return out


def network_logits(ckpt, images, batch):
    net = create_model(MODEL, num_classes=10)
    missing, unused = ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    assert missing == [] and unused == []
    net.set_train(False)
    return np.concatenate([net(ms.Tensor(images[i : i + batch])).asnumpy() for i in range(0, len(images), batch)])


def expected_csv(predictions):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    k = len(predictions[0]["top"])
    writer.writerow(["path"] + [f"top{r}_{f}" for r in range(1, k + 1) for f in ("class", "index", "probability")])
    for p in predictions:
        writer.writerow(
            [p["path"]] + [v for t in p["top"] for v in (t["class"], t["index"], f"{t['probability']:.6f}")]
        )
    return buf.getvalue()


def test_streamed_predictions_equal_a_direct_forward_in_order(tiny, random_ckpt, tmp_path, caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    paths = val_files(tiny)
    assert len(paths) == 30  # batches of 8: 8, 8, 8 and a remainder of 6
    cfg = stream_config(random_ckpt)
    expected = reference_predictions(paths, network_logits(random_ckpt, transformed(cfg, paths), 8))
    assert len({p["top"][0]["index"] for p in expected}) >= 3, "the reference should spread over classes"
    result = infer(cfg, [os.path.join(tiny, "val")], output=str(tmp_path / "p.csv"))
    assert result.predictions == expected and result.skipped == [] and result.count == 30
    # The file has the columns, order and numbers of the whole-list writer (the JSON file: below).
    assert (tmp_path / "p.csv").read_bytes().decode() == expected_csv(expected)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("classified 30 images in ")]
    assert summary and summary[-1].endswith(" img/s)")


def test_images_are_read_one_batch_ahead_at_most(tiny, random_ckpt, monkeypatch):
    paths = val_files(tiny)
    cfg = eval_config(stream_config(random_ckpt))
    reads = []
    real = classify_module.read_image
    monkeypatch.setattr(classify_module, "read_image", lambda path: reads.append(path) or real(path))
    sizes, kept, skipped = [], [], []
    for i, (images, batch_paths, done) in enumerate(image_batches(cfg, paths, 4, skipped)):
        assert len(reads) <= 4 * (i + 2), "more than the current and the next batch were read"
        assert done == len(kept) + len(batch_paths)
        sizes.append(len(images))
        kept += batch_paths
        np.testing.assert_array_equal(images, transformed(cfg, batch_paths))
    assert sizes == [4] * 7 + [2] and kept == paths and reads == paths and skipped == []


def test_a_corrupt_file_is_skipped_with_a_warning_and_batches_stay_full(tiny, random_ckpt, tmp_path, caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    folder = tmp_path / "photos"
    shutil.copytree(os.path.join(tiny, "val"), folder)
    images = [Image.open(p).convert("RGB") for p in val_files(tiny)[:2]]
    bad = folder / "3" / "0000_corrupt.jpg"  # a bad Huffman table: MindSpore's Decode crashes on it
    bad.write_bytes(bad_huffman_jpeg(images[0]))
    (folder / "7" / "empty.png").write_bytes(b"")
    paths = sorted(str(p) for p in folder.rglob("*.*"))
    good = [p for p in paths if p not in (str(bad), str(folder / "7" / "empty.png"))]
    cfg = stream_config(random_ckpt)
    expected = reference_predictions(good, network_logits(random_ckpt, transformed(cfg, good), 8))
    result = infer(cfg, [str(folder)])
    assert result.predictions == expected  # the 30 readable images in 8, 8, 8, 6 as without the bad ones
    assert [path for path, _ in result.skipped] == [str(bad), str(folder / "7" / "empty.png")]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"cannot read image {bad}: not a decodable image" in warnings[0] and warnings[0].endswith("; skipped")
    assert warnings[1] == f"cannot read image {folder / '7' / 'empty.png'}: empty file; skipped"
    assert any(m.getMessage().endswith("; 2 unreadable skipped") for m in caplog.records)
    (folder / "only").mkdir()
    (folder / "only" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ValueError, match=r"none of the 1 images could be read: cannot read image .*broken\.jpg"):
        infer(cfg, [str(folder / "only")], output=str(tmp_path / "none.csv"))
    assert not (tmp_path / "none.csv").exists()


def test_progress_lines_without_a_terminal_and_a_bar_on_one(tiny, random_ckpt, monkeypatch, caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    cfg = stream_config(random_ckpt)
    val = os.path.join(tiny, "val")
    monkeypatch.setattr(infer_module, "LOG_EVERY_S", 0.0)
    seen = []
    result = infer(cfg, [val], on_prediction=seen.append)
    progress = [r.getMessage() for r in caplog.records if "/30 images, " in r.getMessage()]
    assert [m.split(",")[0] for m in progress] == ["8/30 images", "16/30 images", "24/30 images"]
    assert all(m.endswith(" img/s") for m in progress)
    assert result.predictions == [] and [p["path"] for p in seen] == val_files(tiny)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    lines = []
    infer(cfg, [val], on_prediction=lambda p: lines.append(infer_module.prediction_line(p)))
    # tqdm draws its bar when created; later redraws depend on its 0.1 s minimum interval, and with
    # leave=False the final state is cleared rather than redrawn, so only the first draw is certain
    assert "infer:   0%|" in terminal.getvalue() and "| 0/30 [" in terminal.getvalue()
    assert "8/30 images, " not in terminal.getvalue()  # the bar instead of progress lines
    assert "classified 30 images in " in terminal.getvalue()
    assert lines[0].startswith(f"{val_files(tiny)[0]}: ") and len(lines[0].split(", ")) == 5


def test_predictions_writer_writes_the_bytes_of_the_whole_list_writers(tmp_path):
    rng = np.random.default_rng(0)
    names = ["cat", 'say "hi"', "naïve, comma", "日本"]
    predictions = [
        {
            "path": f"/photos/{i}.jpg",
            "top": [
                {"rank": r + 1, "index": int(c), "class": names[c], "probability": float(rng.random())}
                for r, c in enumerate(rng.permutation(4)[:3])
            ],
        }
        for i in range(5)
    ]
    for ext, expected in ((".json", json.dumps(predictions, indent=1)), (".csv", expected_csv(predictions))):
        with PredictionsWriter(str(tmp_path / f"p{ext}")) as writer:
            for p in predictions:
                writer.write(p)
        assert (tmp_path / f"p{ext}").read_bytes().decode() == expected
    write_predictions([], str(tmp_path / "empty.json"))
    write_predictions([], str(tmp_path / "empty.csv"))
    assert (tmp_path / "empty.json").read_text() == "[]" and (tmp_path / "empty.csv").read_bytes() == b"path\r\n"
    with pytest.raises(RuntimeError, match="stopped"), PredictionsWriter(str(tmp_path / "half.csv")) as writer:
        writer.write(predictions[0])
        raise RuntimeError("stopped")
    assert not (tmp_path / "half.csv").exists()


@pytest.mark.slow
def test_onnx_stream_equals_onnxruntime_on_the_whole_array(tiny, random_ckpt, tmp_path, monkeypatch):
    cfg = stream_config(random_ckpt)
    exported = export(cfg, "ONNX", str(tmp_path / "random.onnx"))
    monkeypatch.setattr(runtimes, "RUN_BATCH", 8)  # 30 images: 8, 8, 8 and a remainder of 6
    paths = val_files(tiny)
    images = transformed(cfg, paths)
    session = onnx_session(exported.path)
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    expected = reference_predictions(paths, logits)
    result = infer(
        load_config(None, {"ckpt_path": exported.path}), [os.path.join(tiny, "val")], output=str(tmp_path / "o.csv")
    )
    assert [p["path"] for p in result.predictions] == paths
    for got, want in zip(result.predictions, expected):
        assert [t["index"] for t in got["top"]] == [t["index"] for t in want["top"]]
        np.testing.assert_allclose(
            [t["probability"] for t in got["top"]], [t["probability"] for t in want["top"]], atol=1e-6
        )
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [r["path"] for r in rows] == paths and rows[0]["top1_class"] == result.predictions[0]["top"][0]["class"]
    by_ckpt = infer(cfg, [os.path.join(tiny, "val")])
    for a, b in zip(by_ckpt.predictions, result.predictions):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
