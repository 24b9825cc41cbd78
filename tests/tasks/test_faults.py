"""Bad input, one test per row of the README's Troubleshooting table (issue 8, point 4).

Each row goes through the entry point a user hits (``train(cfg)``, ``load_config``,
``validate(cfg)``, or the train.py / validate.py command line) and asserts the exact outcome:
a one-line error naming the value and what would be accepted, or a warning naming the file
plus a run that trained on exactly the images it should. Data rows build an ImageFolder tree
of 4 digits images (32 px, 3 classes) plus the bad files and train MobileNetV1-0.25 for one
epoch of batch 4 in PyNative mode (no graph compile).

Point 5 of the issue (a worker that dies under msrun ends the job non-zero, naming its rank) is
tests/tasks/test_distributed.py::test_dead_worker_ends_the_job_naming_its_rank.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys

import mindspore as ms
import mindspore.dataset.vision as vision
import numpy as np
import pytest
from PIL import Image

from mindcv_mobile.cli import run_main
from mindcv_mobile.config import ConfigError, load_config
from mindcv_mobile.models import create_model, load_checkpoint, save_checkpoint
from mindcv_mobile.models.checkpoint import CheckpointWriteError
from mindcv_mobile.runtime import LAUNCHER_ENV
from mindcv_mobile.tasks import train, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "mobilenet_v1_025"
CLASSES = ("0", "1", "2")
# "<split dir>: N images in C classes (R re-encoded via PIL, S skipped), scanned in ..." (data/image_folder.py)
SCAN_LINE = re.compile(r"train: (\d+) images in (\d+) classes \((\d+) re-encoded via PIL, (\d+) skipped\)")


# --------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # MindSpore dumps images it cannot decode to ./abnormal_image.jpg; no launcher is around.
    monkeypatch.chdir(tmp_path)
    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)


def digits_tree(digits_root: str, dst, per_class=(2, 1, 1)):
    """``dst/train/{0,1,2}/`` holding the first digits images of each class: 4 images, 1 step of batch 4."""
    for cls, count in zip(CLASSES, per_class):
        os.makedirs(dst / "train" / cls, exist_ok=True)
        for name in sorted(os.listdir(os.path.join(digits_root, "train", cls)))[:count]:
            shutil.copy(os.path.join(digits_root, "train", cls, name), dst / "train" / cls / name)
    return dst


def digit(digits_root: str, cls: str = "0", k: int = 0) -> np.ndarray:
    """A digits image as HxWx3 uint8 (the tree's PNGs are RGB with equal channels)."""
    name = sorted(os.listdir(os.path.join(digits_root, "train", cls)))[k]
    return np.asarray(Image.open(os.path.join(digits_root, "train", cls, name)).convert("RGB"))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def tiny_cfg(data_dir, run_dir, **overrides):
    values = {
        "data_dir": str(data_dir),
        "ckpt_save_dir": str(run_dir),
        "model": MODEL,
        "num_classes": 3,
        "image_resize": 32,
        "batch_size": 4,
        "mode": 1,
        "val_while_train": False,
        "epoch_size": 1,
        "warmup_epochs": 0,
        "decay_epochs": 1,
        "opt": "momentum",
        "lr": 0.01,
        "num_parallel_workers": 1,
    }
    values.update(overrides)
    return load_config(None, values)


def train_logged(cfg, caplog):
    """train(cfg) -> (result, the training split's scan counts, warning messages)."""
    with caplog.at_level(logging.INFO, logger="mindcv_mobile"):
        result = train(cfg)
    scans = [SCAN_LINE.search(r.getMessage()) for r in caplog.records]
    images, classes, reencoded, skipped = map(int, next(m for m in scans if m).groups())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return result, {"images": images, "classes": classes, "reencoded": reencoded, "skipped": skipped}, warnings


def assert_trained(result, steps: int) -> None:
    """One epoch of ``steps`` steps with a finite loss."""
    assert [row["global_step"] for row in result.history] == [steps]
    assert math.isfinite(result.history[0]["loss"])


def run_script(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_one_line_error(stderr: str, prog: str) -> str:
    """The last stderr line is ``prog: error: ...`` and no traceback was printed; returns the message."""
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), stderr
    return last[len(f"{prog}: error: ") :]


def cli(monkeypatch, script: str, *args: str) -> int:
    """Run ``python <script> args`` in this process as its ``__main__`` block does; the exit code."""
    spec = importlib.util.spec_from_file_location(script.replace(".py", "_faults"), os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *args])  # argparse names the program after argv[0]
    try:
        return run_main(module.main, script)
    except SystemExit as exit_:
        return exit_.code


def write_recipe(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def ckpt3(tmp_path_factory) -> str:
    """A 3-class MobileNetV1-0.25 checkpoint (random weights: these rows fail before scoring)."""
    return save_checkpoint(create_model(MODEL, num_classes=3), str(tmp_path_factory.mktemp("ckpt") / "v1_3.ckpt"))


@pytest.fixture(scope="module")
def val_tree(digits_root, tmp_path_factory):
    """``val/{0,1,2}`` with 2 images each, for validate(cfg)."""
    root = tmp_path_factory.mktemp("valtree")
    for cls in CLASSES:
        os.makedirs(root / "val" / cls)
        for name in sorted(os.listdir(os.path.join(digits_root, "val", cls)))[:2]:
            shutil.copy(os.path.join(digits_root, "val", cls, name), root / "val" / cls / name)
    return root


# --------------------------------------------------------------------------- data
@pytest.mark.slow
def test_missing_data_dir(digits_root, tmp_path):
    proc = run_script(
        "train.py",
        "--data_dir",
        str(tmp_path / "nowhere"),
        "--model",
        MODEL,
        "--mode",
        "1",
        "--ckpt_save_dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert assert_one_line_error(proc.stderr, "train.py") == (
        f"dataset root '{tmp_path / 'nowhere'}' does not exist or is not a folder; expected an ImageFolder tree "
        f"<root>/<split>/<class_name>/<images>"
    )
    # A split folder that is not there: the error lists the folders that are.
    tree = digits_tree(digits_root, tmp_path / "data")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"split folder '{tree / 'val'}' not found; '{tree}' has subfolders ['train']; expected "
            f"<root>/<split>/<class_name>/<images> with split='val'"
        ),
    ):
        train(tiny_cfg(tree, tmp_path / "run", val_while_train=True))


def test_empty_split(tmp_path):
    split = tmp_path / "data" / "train"
    split.mkdir(parents=True)
    with pytest.raises(
        ValueError,
        match=re.escape(f"split folder '{split}' has no class subfolders; expected {split}/<class_name>/<images>"),
    ):
        train(tiny_cfg(tmp_path / "data", tmp_path / "run"))
    for cls in CLASSES:
        (split / cls).mkdir()
    (split / "0" / "notes.txt").write_text("not an image")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"no usable images under '{split}' (3 class folders, 0 unusable files); expected "
            f"{split}/<class_name>/<images> with extensions"
        ),
    ):
        train(tiny_cfg(tmp_path / "data", tmp_path / "run"))


@pytest.mark.slow
def test_class_folder_with_no_images(digits_root, tmp_path, caplog):
    tree = digits_tree(digits_root, tmp_path / "data", per_class=(2, 0, 2))
    result, scan, warnings = train_logged(tiny_cfg(tree, tmp_path / "run"), caplog)
    assert scan == {"images": 4, "classes": 3, "reencoded": 0, "skipped": 0}
    assert_trained(result, steps=1)
    assert warnings == [
        f"class folder {tree / 'train' / '1'} has no usable images (extensions "
        f".jpg/.jpeg/.png/.bmp/.ppm/.pgm/.tif/.tiff/.webp/.gif); its label index 1 is kept"
    ]
    # Labels stay those of the folder names: class 2 is still label 2.
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["0", "1", "2"]


def _corrupt_jpeg(kind: str, jpeg: bytes) -> bytes:
    data = bytearray(jpeg)
    if kind == "bad Huffman table":  # counts of 255 codes per length: more codes than fit
        dht = jpeg.index(b"\xff\xc4")
        data[dht + 5 : dht + 21] = b"\xff" * 16
    else:  # zeroed bytes inside the entropy-coded data; both end markers intact
        sos = jpeg.index(b"\xff\xda")
        mid = (sos + len(jpeg)) // 2
        data[mid : mid + 24] = bytes(24)
    return bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bad Huffman table", "corrupt scan data"])
def test_corrupt_jpeg(digits_root, tmp_path, caplog, kind):
    # Before the structure check in data/image_files.py, MindSpore 2.10's decoder killed the whole
    # process on the first kind (segmentation fault); the second only makes libjpeg warn.
    tree = digits_tree(digits_root, tmp_path / "data")
    bad = tree / "train" / "1" / "corrupt.jpg"
    bad.write_bytes(_corrupt_jpeg(kind, encoded(Image.fromarray(digit(digits_root, "1", 5)), "JPEG", quality=90)))
    result, scan, warnings = train_logged(tiny_cfg(tree, tmp_path / "run"), caplog)
    if kind == "bad Huffman table":
        assert scan == {"images": 4, "classes": 3, "reencoded": 0, "skipped": 1}
        assert warnings == [
            f"skipping {bad}: not a decodable image (OSError: broken data stream when reading image file)"
        ]
    else:  # decoded as far as the data goes, trained on (as PIL-based loaders do)
        assert scan == {"images": 5, "classes": 3, "reencoded": 0, "skipped": 0}
        assert warnings == []
    assert_trained(result, steps=1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cut in half", "corrupt chunk, end intact"])
def test_truncated_png(digits_root, tmp_path, caplog, kind):
    # The second kind (IEND present, so it looked whole) used to stop the pipeline mid-epoch.
    png = encoded(Image.fromarray(digit(digits_root, "2", 5)), "PNG")
    if kind == "cut in half":
        data = png[: len(png) // 2]
    else:
        idat = png.index(b"IDAT")
        data = png[: idat + 10] + bytes(8) + png[idat + 18 :]
    tree = digits_tree(digits_root, tmp_path / "data")
    bad = tree / "train" / "2" / "broken.png"
    bad.write_bytes(data)
    result, scan, warnings = train_logged(tiny_cfg(tree, tmp_path / "run"), caplog)
    assert scan == {"images": 4, "classes": 3, "reencoded": 0, "skipped": 1}
    assert len(warnings) == 1 and warnings[0].startswith(f"skipping {bad}: not a decodable image (")
    assert_trained(result, steps=1)


def _unusual_images(rgb: np.ndarray) -> dict:
    """row -> [(file name, bytes, the RGB uint8 array MindSpore must decode it to)] x 4."""
    gray = rgb[..., 0]
    cmyk = encoded(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    rgba = np.dstack([rgb, np.full(gray.shape, 100, np.uint8)])
    as_rgb = np.repeat(gray[..., None], 3, axis=2)
    return {
        "CMYK JPEG": [
            (f"cmyk{i}.jpg", cmyk, np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB"))) for i in range(4)
        ],
        # 8-bit values v stored as v * 257: decoded back to v (scaled, not clipped at 255)
        "16-bit PNG": [
            (f"gray16_{i}.png", encoded(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"), as_rgb) for i in range(4)
        ],
        "grayscale and RGBA": [(f"gray{i}.png", encoded(Image.fromarray(gray), "PNG"), as_rgb) for i in range(2)]
        + [(f"rgba{i}.png", encoded(Image.fromarray(rgba), "PNG"), rgb) for i in range(2)],
    }


@pytest.mark.slow
@pytest.mark.parametrize("row", ["CMYK JPEG", "16-bit PNG", "grayscale and RGBA"])
def test_unusual_but_valid_images_are_trained_on(digits_root, tmp_path, caplog, row):
    tree = digits_tree(digits_root, tmp_path / "data")
    files = _unusual_images(digit(digits_root, "0", 7))[row]
    for k, (name, data, expected) in enumerate(files):
        path = tree / "train" / CLASSES[k % 3] / name
        path.write_bytes(data)
        # What the native route hands to the C++ pipeline decodes to the right RGB pixels.
        decoded = vision.Decode()(np.frombuffer(data, np.uint8))
        assert decoded.shape == expected.shape and decoded.dtype == np.uint8, name
        assert np.abs(decoded.astype(int) - expected).max() <= 2, name
    result, scan, warnings = train_logged(tiny_cfg(tree, tmp_path / "run"), caplog)
    assert scan == {"images": 8, "classes": 3, "reencoded": 0, "skipped": 0}  # 4 + 4: none skipped
    assert warnings == []
    assert_trained(result, steps=2)


@pytest.mark.slow
def test_non_image_file_among_images(digits_root, tmp_path, caplog):
    tree = digits_tree(digits_root, tmp_path / "data")
    (tree / "train" / "0" / "README.txt").write_text("labelled by hand, 2024")  # not an image extension
    (tree / "train" / "0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    fake = tree / "train" / "1" / "photo.jpg"  # an image extension, HTML inside (a failed download)
    fake.write_text("<html><body>404 Not Found</body></html>")
    result, scan, warnings = train_logged(tiny_cfg(tree, tmp_path / "run"), caplog)
    assert scan == {"images": 4, "classes": 3, "reencoded": 0, "skipped": 1}
    assert warnings == [
        f"skipping {fake}: not a decodable image (UnidentifiedImageError: cannot identify image file '{fake}')"
    ]
    assert_trained(result, steps=1)


# --------------------------------------------------------------------------- recipe and command line
def test_yaml_syntax_error_names_the_line(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, "lr: 0.1\nopt: momentum\nscale: [0.08, 1.0\nmomentum: 0.9\n")
    with pytest.raises(ConfigError) as err:
        load_config(recipe)
    assert str(err.value) == (
        f"{recipe}: YAML syntax error at line 4, column 9: expected ',' or ']', but got ':' "
        f"(while parsing a flow sequence started at line 3)"
    )
    assert cli(monkeypatch, "train.py", "-c", recipe) == 2
    assert capsys.readouterr().err == f"train.py: error: {err.value}\n"


def test_unknown_key(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError) as err:
        load_config(write_recipe(tmp_path, "lr: 0.1\nepochs: 90\n"))  # timm's / torchvision's name
    assert str(err.value) == (
        f"{tmp_path / 'recipe.yaml'}: unknown key 'epochs'; did you mean epoch_size or eps or decay_epochs?"
    )
    assert cli(monkeypatch, "train.py", "--lr", "0.1", "--label_smothing", "0.1") == 2
    assert capsys.readouterr().err == (
        "train.py: error: unknown option --label_smothing; did you mean label_smoothing?\n"
    )


def test_wrong_value_type(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError) as err:
        load_config(write_recipe(tmp_path, "batch_size: 32x\n"))
    assert str(err.value) == f"{tmp_path / 'recipe.yaml'}: batch_size must be an integer, got '32x'"
    for args, message in [
        (["--lr", "fast"], "command line: lr must be a number, got 'fast'"),
        (["--val_while_train", "maybe"], "command line: val_while_train must be true or false, got 'maybe'"),
        (
            ["--interpolation", "cubic"],
            "command line: interpolation='cubic' is not one of: bilinear, bicubic, pilcubic, nearest, area",
        ),
    ]:
        assert cli(monkeypatch, "validate.py", *args) == 2
        assert capsys.readouterr().err == f"validate.py: error: {message}\n"
    # argparse's type=bool trap: the string "False" must be false.
    assert load_config(None, {"val_while_train": "False"}).val_while_train is False


@pytest.mark.slow
def test_distribute_true_without_msrun(digits_root, tmp_path):
    tree = digits_tree(digits_root, tmp_path / "data")
    proc = run_script(
        "train.py",
        "--distribute",
        "True",
        "--data_dir",
        str(tree),
        "--model",
        MODEL,
        "--mode",
        "1",
        "--ckpt_save_dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert assert_one_line_error(proc.stderr, "train.py") == (
        f"distribute=True but no launcher started this process (none of {', '.join(LAUNCHER_ENV)} is set); start "
        f"one process per device with `msrun --worker_num 8 --local_worker_num 8 --join True python train.py -c "
        f"RECIPE ...`, or run standalone with --distribute False"
    )
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_path_missing(digits_root, val_tree, tmp_path):
    missing = tmp_path / "weights" / "best.ckpt"
    tree = digits_tree(digits_root, tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=f"^checkpoint not found: {re.escape(str(missing))}$"):
        train(tiny_cfg(tree, tmp_path / "run", ckpt_path=str(missing)))
    with pytest.raises(FileNotFoundError, match=f"^checkpoint not found: {re.escape(str(missing))}$"):
        validate(tiny_cfg(val_tree, tmp_path / "run", ckpt_path=str(missing)))


@pytest.mark.slow
def test_checkpoint_of_another_model(digits_root, val_tree, tmp_path):
    tree = digits_tree(digits_root, tmp_path / "data")
    wider = save_checkpoint(create_model("mobilenet_v1_050", num_classes=3), str(tmp_path / "v1_050.ckpt"))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"checkpoint {wider}: parameter features.0.weight has shape (16, 3, 3, 3), the model (MobileNet) "
            f"expects (8, 3, 3, 3): is it a checkpoint of another model or width?"
        ),
    ):
        train(tiny_cfg(tree, tmp_path / "run", ckpt_path=wider))
    # Another naming scheme (MindSpore model-zoo style "backbone.*"): nothing matches. This used to
    # train from random weights with only a "137 missing" warning.
    net = create_model(MODEL, num_classes=3)
    zoo = save_checkpoint(
        [{"name": "backbone." + p.name, "data": p} for p in net.get_parameters()], str(tmp_path / "zoo.ckpt")
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"checkpoint {zoo} holds none of the 137 parameters of MobileNet (it has ['backbone.features.0.weight', "
            f"'backbone.features.1.moving_mean']..., the model expects ['features.0.weight', 'features.1.moving_mean']"
            f"...): is it a checkpoint of another model?"
        ),
    ):
        train(tiny_cfg(tree, tmp_path / "run", ckpt_path=zoo))
    v2 = save_checkpoint(create_model("mobilenet_v2_035", num_classes=3), str(tmp_path / "v2.ckpt"))
    with pytest.raises(ValueError, match=r"parameter features\.0\.weight has shape \(16, 3, 3, 3\).*another model"):
        validate(tiny_cfg(val_tree, tmp_path / "run", ckpt_path=v2))


def test_truncated_checkpoint_file(digits_root, val_tree, ckpt3, tmp_path):
    data = open(ckpt3, "rb").read()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) * 2 // 3])
    expected = re.escape(
        f"cannot read checkpoint {cut} (truncated or not a MindSpore .ckpt): Failed to read the checkpoint file {cut}."
    )
    tree = digits_tree(digits_root, tmp_path / "data")
    with pytest.raises(ValueError, match=expected):
        train(tiny_cfg(tree, tmp_path / "run", ckpt_path=str(cut)))
    with pytest.raises(ValueError, match=expected):
        validate(tiny_cfg(val_tree, tmp_path / "run", ckpt_path=str(cut)))


@pytest.mark.slow
def test_num_classes_mismatch(digits_root, val_tree, ckpt3, tmp_path, caplog):
    # validate: a classifier of another size would score an untrained head -> error.
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{ckpt3} has a 3-class classifier (classifier.weight (3, 256)) but num_classes is 5; evaluate with "
            f"--num_classes 3"
        ),
    ):
        validate(tiny_cfg(val_tree, tmp_path / "run", ckpt_path=ckpt3, num_classes=5))
    # train: fewer classes than the data has -> error.
    tree = digits_tree(digits_root, tmp_path / "data")
    with pytest.raises(
        ValueError, match=re.escape(f"{tree}/train has 3 classes but num_classes is 2; set --num_classes 3")
    ):
        train(tiny_cfg(tree, tmp_path / "run", num_classes=2))
    # train, fine-tuning a 10-class checkpoint on 3 classes: head dropped with a warning, the rest loaded.
    src = create_model(MODEL, num_classes=10)
    ckpt10 = save_checkpoint(src, str(tmp_path / "v1_10.ckpt"))
    result, scan, warnings = train_logged(tiny_cfg(tree, tmp_path / "run", ckpt_path=ckpt10, lr=1e-6), caplog)
    assert warnings == [
        f"{ckpt10}: classifier dropped (10 classes in checkpoint, model has 3), kept at initialisation for fine-tuning"
    ]
    assert_trained(result, steps=1)
    trained = load_checkpoint(result.last_checkpoint)
    assert trained["classifier.weight"].shape == (3, 256)
    # lr 1e-6 for 1 step: the loaded body is still the checkpoint's (a fresh init differs by ~0.1).
    np.testing.assert_allclose(trained["features.3.3.weight"].asnumpy(), src.features[3][3].weight.asnumpy(), atol=1e-4)


# --------------------------------------------------------------------------- run directory
@pytest.mark.parametrize("where", ["under a regular file", "under /proc"])
def test_output_dir_not_writable(digits_root, tmp_path, capsys, monkeypatch, where):
    # Tests run as root, where chmod does not stop writes: use paths no one can create.
    if where == "under a regular file":
        (tmp_path / "results").write_text("a file, not a folder")
        run_dir, reason = tmp_path / "results" / "run1", "Not a directory"
    else:
        run_dir, reason = "/proc/mindcv_mobile_run", "No such file or directory"
    tree = digits_tree(digits_root, tmp_path / "data")
    cfg = tiny_cfg(tree, run_dir)
    with pytest.raises(
        PermissionError,
        match=re.escape(
            f"ckpt_save_dir {run_dir} is not writable ({reason}); pass --ckpt_save_dir DIR for a folder you can "
            f"write to"
        ),
    ):
        train(cfg)
    # train.py: the same message as one line, exit code 2.
    assert (
        cli(
            monkeypatch,
            "train.py",
            "--data_dir",
            str(tree),
            "--model",
            MODEL,
            "--mode",
            "1",
            "--ckpt_save_dir",
            str(run_dir),
        )
        == 2
    )
    assert assert_one_line_error(capsys.readouterr().err, "train.py").startswith(f"ckpt_save_dir {run_dir} is not")


@pytest.mark.slow
def test_disk_full_on_save(digits_root, tmp_path, monkeypatch, caplog):
    real_save = ms.save_checkpoint
    written = []

    def disk_full_after_first(params, path, *args, **kwargs):
        written.append(path)
        if len(written) == 1:
            return real_save(params, path, *args, **kwargs)
        with open(path, "wb") as f:  # what a full disk leaves: the start of the file
            f.write(b"\x0a\x80\x08partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ms, "save_checkpoint", disk_full_after_first)
    run = tmp_path / "run"
    tree = digits_tree(digits_root, tmp_path / "data")
    with pytest.raises(CheckpointWriteError) as err:
        train(tiny_cfg(tree, run, epoch_size=2, decay_epochs=2))
    # str() is what train.py prints after "train.py: error: " (cli.run_main).
    failed = re.fullmatch(r"cannot write checkpoint (\S+): No space left on device", str(err.value))
    assert err.value.errno == errno.ENOSPC and failed, str(err.value)
    assert os.path.dirname(failed.group(1)) == str(run) and not os.path.exists(failed.group(1))
    # Epoch 1's checkpoint is what --resume auto finds, and it loads completely.
    previous = json.loads((run / "last_checkpoint.json").read_text())["path"]
    assert previous != failed.group(1) and int(load_checkpoint(previous)["epoch_num"].asnumpy()) == 1
    report = create_model(MODEL, num_classes=3, checkpoint_path=previous).load_report
    assert report.missing == [] and report.unexpected == []
    assert not [f for f in os.listdir(run) if f.startswith(".tmp")]
    # Overwriting a file (as <model>-best.ckpt is) on a full disk keeps the old file, loadable.
    best = str(run / "best.ckpt")
    monkeypatch.setattr(ms, "save_checkpoint", real_save)
    net = create_model(MODEL, num_classes=3)
    save_checkpoint(net, best)
    monkeypatch.setattr(ms, "save_checkpoint", disk_full_after_first)
    with pytest.raises(
        CheckpointWriteError,
        match=re.escape(f"cannot write checkpoint {best}: No space left on device (the previous file there is intact)"),
    ):
        save_checkpoint(create_model(MODEL, num_classes=3), best)
    np.testing.assert_array_equal(
        load_checkpoint(best)["features.0.weight"].asnumpy(), net.features[0].weight.asnumpy()
    )
    assert not [f for f in os.listdir(run) if f.startswith(".tmp")]
