"""The run directory: what a run writes, that a re-run never overwrites it, checkpoint rotation
(latest_k / top_k) and the resume checks."""

import hashlib
import json
import os

import numpy as np
import pytest
from mindspore import nn

from mindcv_mobile.config import load_config
from mindcv_mobile.files import WriteError, write_json
from mindcv_mobile.run_dir import RunDir
from mindcv_mobile.tasks import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _epochs(paths):
    return sorted(int(os.path.basename(p).split("-")[-1].split("_")[0]) for p in paths)


def test_top_k_keeps_the_best_by_val_top1_and_latest_k_the_newest(tmp_path):
    net = nn.Dense(2, 2)
    scores = {1: 0.50, 2: 0.90, 3: 0.70, 4: 0.60, 5: 0.80}
    for policy, expected in (("top_k", [2, 5]), ("latest_k", [4, 5])):
        run = RunDir(str(tmp_path / policy))
        kept = []
        for epoch, top1 in scores.items():
            kept = run.save_epoch_checkpoint(
                net, "m", epoch, 10 * epoch, {"epoch_num": epoch}, kept, keep_max=2, policy=policy, score=top1
            )
        assert _epochs(kept) == expected
        on_disk = [f for f in os.listdir(run.path) if f.endswith(".ckpt")]
        assert _epochs(on_disk) == expected
        # The resume pointer names the newest checkpoint whatever the policy keeps.
        assert run.pointer()["path"].endswith("m-5_50.ckpt") and os.path.isfile(run.pointer()["path"])


def test_damaged_resume_pointer_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "last_checkpoint.json").write_text('{"path": ')
    with pytest.raises(ValueError, match=r"resume pointer .*last_checkpoint.json is not valid JSON"):
        RunDir(str(tmp_path)).resume_path()


def test_atomic_writer_names_the_destination_and_leaves_no_temp(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError, match=r"cannot write file .*file/sub/out.json"):
        write_json(str(blocker / "sub" / "out.json"), {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["file"]


# ------------------------------------------------------------------------- runs (train)
def cfg(digits_root, run_dir, **overrides):
    values = {
        "data_dir": digits_root,
        "ckpt_save_dir": str(run_dir),
        "model": "mobilenet_v1_025",
        "image_resize": 32,
        "epoch_size": 1,
        "warmup_epochs": 0,
        "decay_epochs": 1,
        "num_samples": 64,
        "batch_size": 16,
        "dataset_sink_mode": False,
        "val_while_train": True,
    }
    values.update(overrides)
    return load_config(DIGITS_RECIPE, values)


@pytest.fixture(scope="module")
def first_run(digits_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    result = train(cfg(digits_root, run_dir))
    return run_dir, result


@pytest.mark.slow
def test_a_rerun_into_a_used_run_directory_goes_to_a_new_one(first_run, digits_root, caplog):
    run_dir, first = first_run
    before = {
        name: _sha(run_dir / name)
        for name in os.listdir(run_dir)
        if name != "train.log" and os.path.isfile(run_dir / name)
    }
    second = train(cfg(digits_root, run_dir))
    assert second.run_dir == str(run_dir) + "-1"
    assert {name: _sha(run_dir / name) for name in before} == before
    assert "holds a previous run" in caplog.text and str(run_dir) + "-1" in caplog.text
    assert os.path.isfile(os.path.join(second.run_dir, "config.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, named",
    [
        ({"batch_size": 32}, "batch_size 16 -> 32"),
        ({"num_classes": 12}, "num_classes 10 -> 12"),
        ({"model": "mobilenet_v1_050"}, "model mobilenet_v1_025 -> mobilenet_v1_050"),
    ],
)
def test_resume_refuses_a_changed_config_naming_the_keys(first_run, digits_root, change, named, capfd, caplog):
    run_dir, _ = first_run
    with pytest.raises(ValueError, match=f"cannot resume .*: {named}"):
        train(cfg(digits_root, run_dir, resume="auto", epoch_size=2, **change))
    assert "CRITICAL" not in capfd.readouterr().err
    if "num_classes" in change:  # 10 class folders under a 12-way head: said, not silent
        assert "has 10 class folders but num_classes is 12: outputs 10-11 are never a target" in caplog.text


@pytest.mark.slow
def test_resume_with_a_longer_schedule_continues(first_run, digits_root, tmp_path):
    """epoch_size may grow (the LR schedule is recomputed); the epoch and step continue."""
    run_dir, first = first_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    pointer = json.load(open(copy / "last_checkpoint.json"))
    pointer["path"] = str(copy / os.path.basename(pointer["path"]))
    pointer["kept"] = [pointer["path"]]
    (copy / "last_checkpoint.json").write_text(json.dumps(pointer))
    # No validation in the continued epoch: no new best, and the run still names the one it has.
    result = train(cfg(digits_root, copy, resume="auto", epoch_size=2, val_while_train=False))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert [row["global_step"] for row in result.history] == [4, 8]
    assert result.run_dir == str(copy)
    assert np.isfinite(result.history[-1]["loss"]) and result.history[-1]["loss_steps"] == 4
    assert result.best_top1 == pytest.approx(first.best_top1, rel=1e-6)  # saved as float32
    assert result.best_checkpoint == str(copy / "mobilenet_v1_025-best.ckpt")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"auto_augment": "bogus"}, "auto_augment"),
        ({"in_channels": 1}, r"in_channels=1 but the data pipeline yields RGB images \(3 channels\)"),
    ],
)
def test_a_run_that_fails_before_training_leaves_no_run_directory(digits_root, tmp_path, overrides, message):
    run_dir = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        train(cfg(digits_root, run_dir, **overrides))
    assert not run_dir.exists()


def test_one_class_is_an_error(digits_root, tmp_path):
    import shutil

    shutil.copytree(os.path.join(digits_root, "train", "3"), tmp_path / "data" / "train" / "3")
    with pytest.raises(ValueError, match=r"train has 1 class folder \(\['3'\]\): a classifier needs at least 2"):
        train(cfg(str(tmp_path / "data"), tmp_path / "run", val_while_train=False))


def test_start_notes_name_what_the_run_does_differently(caplog):
    """top_k without validation, a val_amp_level training-time validation cannot use, and what a
    row's loss is in sink mode: each said once at the start."""
    from mindcv_mobile.runtime import Runtime
    from mindcv_mobile.tasks.train import _notes
    from mindcv_mobile.training.train_step import resolve_precision

    caplog.set_level("INFO", logger="mindcv_mobile")
    recipe = load_config(DIGITS_RECIPE, {"ckpt_save_policy": "top_k", "val_while_train": False, "amp_level": "O2"})
    _notes(recipe, Runtime(device="Ascend", mode=0), resolve_precision(recipe, "Ascend"), sink=True)
    assert "ckpt_save_policy top_k ranks checkpoints by val top-1, but val_while_train is False" in caplog.text
    assert "each epoch's loss (log, metrics.jsonl) is its last step's" in caplog.text
    caplog.clear()
    recipe = load_config(DIGITS_RECIPE, {"val_while_train": True, "amp_level": "O2", "val_amp_level": "O0"})
    _notes(recipe, Runtime(device="Ascend", mode=0), resolve_precision(recipe, "Ascend"), sink=False)
    assert "validation during training runs the training network at amp O2; val_amp_level O0" in caplog.text


def test_rank_averaging_covers_qat_observer_ranges():
    from mindcv_mobile.models import create_model
    from mindcv_mobile.quant import quantize_model
    from mindcv_mobile.training.callbacks import SyncBatchNormStatistics

    net = quantize_model(create_model("mobilenet_v2_035", num_classes=3))
    names = [p.name for p in SyncBatchNormStatistics(net, group_size=2).params]
    observers = [p.name for p in net.get_parameters() if p.name.endswith((".min_val", ".max_val"))]
    assert observers and set(observers) <= set(names)
    assert any(n.endswith("moving_mean") for n in names)
