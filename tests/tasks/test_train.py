"""End to end: train on real digits, resume, and run mindcv's published recipe unchanged."""

import json
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import yaml

from mindcv_mobile.config import load_config
from mindcv_mobile.tasks import train

# Every test here trains (or launches msrun).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
MINDCV_V3_SMALL = os.path.join(ROOT, "tests", "fixtures", "mindcv_mobilenet_v3_small_ascend.yaml")


def digits_cfg(digits_root, run_dir, **overrides):
    values = {
        "data_dir": digits_root,
        "ckpt_save_dir": str(run_dir),
        "image_resize": 32,
        "epoch_size": 4,
        "warmup_epochs": 1,
        "decay_epochs": 3,
    }
    values.update(overrides)
    return load_config(DIGITS_RECIPE, values)


@pytest.fixture(scope="module")
def trained(digits_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = train(digits_cfg(digits_root, run_dir))
    return run_dir, result


def test_digits_training_learns(trained):
    run_dir, result = trained
    # 10 classes: chance is 10%. Four epochs from scratch at 32 px land at 85-95% here; 70%
    # leaves room for run-to-run variation while catching a broken loss, LR or pipeline.
    assert result.best_top1 >= 0.70, result.history
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


def test_run_directory_contents(trained):
    run_dir, result = trained
    files = set(os.listdir(run_dir))
    assert {
        "config.yaml",
        "classes.json",
        "train.log",
        "metrics.jsonl",
        "last_checkpoint.json",
        "mobilenet_v3_small_100-best.ckpt",
    } <= files
    # keep_checkpoint_max: 2 in the recipe
    assert sorted(f for f in files if f.endswith(".ckpt") and "best" not in f) == [
        "mobilenet_v3_small_100-3_132.ckpt",
        "mobilenet_v3_small_100-4_176.ckpt",
    ]
    assert json.load(open(os.path.join(run_dir, "classes.json"))) == [str(i) for i in range(10)]
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "lr", "Top_1_Accuracy", "Top_5_Accuracy", "val_loss", "img_per_s", "ms_per_step"} <= set(rows[0])
    assert result.best_top1 == pytest.approx(max(r["Top_1_Accuracy"] for r in rows))
    saved = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert saved["image_resize"] == 32 and saved["model"] == "mobilenet_v3_small_100"
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "epoch [4/4]" in log and "global batch 32" in log


def test_checkpoint_holds_training_state(trained):
    run_dir, result = trained
    state = ms.load_checkpoint(result.last_checkpoint)
    assert int(state["epoch_num"].asnumpy()) == 4 and int(state["step_num"].asnumpy()) == 176
    assert int(state["global_step"].asnumpy().reshape(-1)[0]) == 176
    assert any(k.startswith("moments.") for k in state), "optimizer state missing"


def test_resume_continues_from_saved_epoch(trained, digits_root, tmp_path):
    run_dir, result = trained
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed_dir)
    pointer = resumed_dir / "last_checkpoint.json"
    moved = json.load(open(pointer))
    moved["path"] = str(resumed_dir / os.path.basename(moved["path"]))
    pointer.write_text(json.dumps(moved))
    cfg = digits_cfg(digits_root, resumed_dir, epoch_size=5, decay_epochs=4, resume="auto")
    before = ms.load_checkpoint(result.last_checkpoint)
    out = train(cfg)
    # the run's history continues the resumed run's rows
    assert [row["epoch"] for row in out.history] == [1, 2, 3, 4, 5]
    assert out.history[:4] == result.history
    after = ms.load_checkpoint(out.last_checkpoint)
    assert int(after["global_step"].asnumpy().reshape(-1)[0]) == 5 * 44
    assert not np.array_equal(after["features.0.weight"].asnumpy(), before["features.0.weight"].asnumpy())
    rows = [json.loads(line) for line in open(resumed_dir / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    # the LR continues from its position: epoch 5 ends at the schedule's last step (cosine -> 0),
    # not at the end of a restarted first epoch
    assert rows[-1]["lr"] < 0.01 * cfg.lr


def test_mindcv_recipe_runs_unchanged(digits_root, tmp_path):
    """mindcv's MobileNetV3-small Ascend recipe, with only data_dir, epoch_size and batch_size
    overridden: distribute falls back to standalone, O3 to fp32 on CPU, dynamic-free loss scale."""
    tiny = tmp_path / "tiny"
    for split, per_class in (("train", 6), ("val", 3)):
        for cls in sorted(os.listdir(os.path.join(digits_root, split))):
            os.makedirs(tiny / split / cls)
            for name in sorted(os.listdir(os.path.join(digits_root, split, cls)))[:per_class]:
                shutil.copy(os.path.join(digits_root, split, cls, name), tiny / split / cls / name)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for key in ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE"):
        env.pop(key, None)
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            "-c",
            MINDCV_V3_SMALL,
            "--data_dir",
            str(tiny),
            "--epoch_size",
            "1",
            "--batch_size",
            "8",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training standalone" in proc.stderr
    assert "amp_level O3 -> O0 on CPU" in proc.stderr
    rows = [json.loads(line) for line in open(tmp_path / "ckpt" / "metrics.jsonl")]
    assert rows[0]["epoch"] == 1 and "Top_1_Accuracy" in rows[0]
