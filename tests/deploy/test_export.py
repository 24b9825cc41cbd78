"""tasks.export / export.py (deploy.export_model): MINDIR and ONNX files give the eval-mode Cell's logits,
for V1, V2, V3; ONNX files take any batch; a failed write or check leaves nothing behind.

Tolerance (deploy.verify.export_tolerance): max(1e-5 * max(1, max |logit|), 10 * noise), where noise is
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
from netutils import calibrated  # tests/netutils.py

from mindcv_mobile.cli import run_main
from mindcv_mobile.config import load_config
from mindcv_mobile.deploy import OnnxPredictor, export_tolerance, float32_noise, onnx_session, preprocess, run_exported
from mindcv_mobile.files import WriteError
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.tasks.export import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
SIZE = 48  # not the 224 default: --image_resize reaches the exported input


def digits(root, split, step):
    files = sorted(
        os.path.join(root, split, c, f)
        for c in os.listdir(os.path.join(root, split))
        for f in os.listdir(os.path.join(root, split, c))
    )[::step]
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


@pytest.mark.slow
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
        result = export(cfg, fmt, str(tmp_path / model), batch_size=4, verify=fmt == "ONNX")
        assert result.path == str(tmp_path / model) + ext and os.path.getsize(result.path) > 100_000
        diff = float(np.abs(run_exported(result.path, val_batch) - reference).max())
        print(f"{model} {fmt}: max abs diff {diff:.3g}, max |logit| {scale:.3g}, noise {noise:.3g}")
        assert diff <= tolerance
        if fmt == "ONNX":  # the export's own check (random normal input) passed and said by how much
            assert result.max_abs_diff is not None and result.max_abs_diff <= result.tolerance
        meta = json.load(open(result.metadata_path))
        # ONNX files have a dynamic batch axis; MINDIR keeps the exported batch
        batch = "batch" if fmt == "ONNX" else 4
        assert meta["input_shape"] == [batch, 3, SIZE, SIZE] and meta["model"] == model and meta["num_classes"] == 10
        assert meta["precision"] == "float32" and meta["input_name"] == "image"
    # The comparison can see a BatchNorm-mode error: batch statistics move the logits far more.
    train_mode = cell(model, ckpt, train=True)(ms.Tensor(val_batch)).asnumpy()
    assert np.abs(train_mode - reference).max() > 10 * tolerance


@pytest.mark.slow
def test_exporting_twice_in_one_process_uses_a_fresh_cell(calib, val_batch, tmp_path):
    # MindSpore 2.10 crashes exporting the same Cell instance to ONNX twice.
    ckpt = make_ckpt(tmp_path / "w.ckpt", "mobilenet_v1_025", calib)
    cfg = load_config(
        None, {"model": "mobilenet_v1_025", "num_classes": 10, "ckpt_path": ckpt, "image_resize": SIZE, "mode": 1}
    )
    first = export(cfg, "ONNX", str(tmp_path / "a.onnx"), batch_size=4, verify=False)
    second = export(cfg, "ONNX", str(tmp_path / "b.onnx"), batch_size=4, verify=False)
    np.testing.assert_allclose(run_exported(first.path, val_batch), run_exported(second.path, val_batch), atol=1e-6)


def test_air_off_ascend_is_refused_before_trying(tmp_path):
    cfg = load_config(None, {"model": "mobilenet_v1_025", "ckpt_path": str(tmp_path / "never_read.ckpt")})
    with pytest.raises(RuntimeError, match="AIR export needs Ascend.*runs on CPU; use --file_format MINDIR or ONNX"):
        export(cfg, "AIR", str(tmp_path / "m.air"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="file_format 'TFLITE' is not one of MINDIR, ONNX, AIR"):
        export(cfg, "TFLITE")
    with pytest.raises(ValueError, match=r"ends in \.mindir but --file_format ONNX writes \.onnx files; use --output"):
        export(cfg, "ONNX", str(tmp_path / "m.mindir"))


@pytest.mark.slow
def test_export_script(calib, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_script", os.path.join(ROOT, "export.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run_dir = tmp_path / "run"
    ckpt = make_ckpt(run_dir / "best.ckpt", "mobilenet_v3_small_075", calib)
    (run_dir / "classes.json").write_text(json.dumps([f"digit {i}" for i in range(10)]))
    out = tmp_path / "deploy" / "digits"
    argv = [
        "-c",
        DIGITS_RECIPE,
        "--model",
        "mobilenet_v3_small_075",
        "--ckpt_path",
        ckpt,
        "--image_resize",
        "32",
        "--mode",
        "1",
        "--file_format",
        "onnx",
        "--output",
        str(out),
    ]
    assert run_main(lambda: script.main(argv), "export.py") == 0
    printed = capsys.readouterr().out
    assert f"exported ONNX {out}.onnx: input Nx3x32x32, float32" in printed
    assert "max abs difference vs the MindSpore Cell:" in printed
    meta = json.load(open(f"{out}.onnx.json"))
    assert meta["classes"][3] == "digit 3" and meta["crop_pct"] == 1.0 and meta["input_shape"] == ["batch", 3, 32, 32]
    # MINDIR keeps a fixed batch: the recipe's batch_size (32) is a training batch, the exported one is 1
    mindir_argv = argv[:-4] + ["--file_format", "MINDIR", "--output", str(out)]
    assert run_main(lambda: script.main(mindir_argv), "export.py") == 0
    assert f"exported MINDIR {out}.mindir: input 1x3x32x32, float32" in capsys.readouterr().out
    code = run_main(lambda: script.main(argv[:-4] + ["--file_format", "AIR"]), "export.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("export.py: error: AIR export needs Ascend")


@pytest.mark.slow
def test_onnx_takes_any_batch_and_matches_the_cell(calib, val_batch, tmp_path):
    model = "mobilenet_v3_small_075"
    ckpt = make_ckpt(tmp_path / "w.ckpt", model, calib)
    cfg = load_config(None, {"model": model, "num_classes": 10, "ckpt_path": ckpt, "image_resize": SIZE, "mode": 1})
    result = export(cfg, "ONNX", str(tmp_path / "m"))  # traced on one image
    session = onnx_session(result.path)
    assert session.get_inputs()[0].shape[0] == "batch" and session.get_outputs()[0].shape[0] == "batch"
    net = cell(model, ckpt)
    for images in (val_batch, val_batch[:3], np.concatenate([val_batch, val_batch])[:7]):
        reference = net(ms.Tensor(images)).asnumpy()
        got = session.run(None, {"image": images})[0]  # the whole batch in one run
        assert got.shape == reference.shape
        assert np.abs(got - reference).max() <= export_tolerance(
            float(np.abs(reference).max()), float32_noise(net, images)
        )


@pytest.mark.slow
def test_fixed_batch_onnx_from_elsewhere_is_fed_in_chunks(calib, val_batch, tmp_path):
    # MindSpore's own exporter, without the dynamic batch axis export() adds: a fixed batch of 3
    net = calibrated(create_model("mobilenet_v1_025", num_classes=10), calib, 0)
    path = str(tmp_path / "fixed.onnx")
    ms.onnx.export(net, ms.Tensor(val_batch[:3]), file_name=path, input_names=["x"], output_names=["y"])
    predictor = OnnxPredictor(path)
    assert predictor.input_shape == (3, 3, SIZE, SIZE)
    images = np.concatenate([val_batch, val_batch[:1]])  # 5 images: a full chunk and a padded one
    reference = net(ms.Tensor(images)).asnumpy()
    tolerance = export_tolerance(float(np.abs(reference).max()), float32_noise(net, images))
    assert np.abs(predictor(images) - reference).max() <= tolerance


@pytest.mark.slow
def test_a_file_failing_its_check_is_removed_with_its_metadata(calib, tmp_path, monkeypatch):
    from mindcv_mobile.deploy import verify

    ckpt = make_ckpt(tmp_path / "w.ckpt", "mobilenet_v1_025", calib)
    cfg = load_config(
        None, {"model": "mobilenet_v1_025", "num_classes": 10, "ckpt_path": ckpt, "image_resize": SIZE, "mode": 1}
    )
    honest = verify.run_exported
    monkeypatch.setattr(verify, "run_exported", lambda path, images: honest(path, images) + 0.5)
    out = tmp_path / "out"
    with pytest.raises(
        RuntimeError,
        match=r"m\.onnx: logits differ from the MindSpore Cell's by up to 0\.5 "
        r"\(tolerance .*\); the export is not faithful and was removed \(.*m\.onnx, "
        r".*m\.onnx\.json\)$",
    ):
        export(cfg, "ONNX", str(out / "m.onnx"))
    assert os.listdir(out) == []


@pytest.mark.slow
def test_unwritable_destination_is_named_in_the_error(calib, tmp_path, capsys):
    ckpt = make_ckpt(tmp_path / "w.ckpt", "mobilenet_v1_025", calib)
    cfg = load_config(
        None, {"model": "mobilenet_v1_025", "num_classes": 10, "ckpt_path": ckpt, "image_resize": SIZE, "mode": 1}
    )
    as_root = os.geteuid() == 0
    if as_root:  # root writes into read-only folders; a folder under a regular file fails for everyone
        (tmp_path / "a_file").write_text("")
        folder = tmp_path / "a_file" / "deploy"
    else:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        for fmt in ("ONNX", "MINDIR"):
            dest = folder / f"m.{fmt.lower()}"
            with pytest.raises(WriteError) as info:
                export(cfg, fmt, str(dest), verify=False)
            assert str(info.value).startswith(f"cannot write {fmt} model {dest}: ") and ".tmp" not in str(info.value)
        spec = importlib.util.spec_from_file_location("export_script", os.path.join(ROOT, "export.py"))
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        argv = [
            "--model",
            "mobilenet_v1_025",
            "--num_classes",
            "10",
            "--ckpt_path",
            ckpt,
            "--image_resize",
            str(SIZE),
            "--mode",
            "1",
            "--file_format",
            "ONNX",
            "--output",
            str(folder / "m.onnx"),
        ]
        assert run_main(lambda: script.main(argv), "export.py") == 2
        assert (
            capsys.readouterr()
            .err.strip()
            .splitlines()[-1]
            .startswith(f"export.py: error: cannot write ONNX model {folder / 'm.onnx'}: ")
        )
    finally:
        if not as_root:
            folder.chmod(0o755)
    assert as_root or os.listdir(folder) == []
