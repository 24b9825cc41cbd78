"""Exact resume: a run SIGKILLed mid-epoch and restarted with --resume auto ends where an
uninterrupted run ends, bit for bit, with the same metrics rows."""

import json
import os
import signal
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

# Every test here trains (or launches msrun).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
TIMING = {"epoch_time_s", "ms_per_step", "img_per_s", "val_time_s"}


def run(script, run_dir, digits_root, *extra, env_extra=None):
    # Non-sink graph mode, fixed seed; V1 has no dropout, whose generator state MindSpore 2.10
    # cannot save (with dropout, resume is exact in everything but the dropout masks).
    args = [
        sys.executable,
        script,
        "-c",
        RECIPE,
        "--data_dir",
        digits_root,
        "--ckpt_save_dir",
        str(run_dir),
        "--model",
        "mobilenet_v1_025",
        "--image_resize",
        "32",
        "--epoch_size",
        "3",
        "--warmup_epochs",
        "1",
        "--decay_epochs",
        "2",
        "--lr",
        "0.1",
        "--keep_checkpoint_max",
        "5",
        "--dataset_sink_mode",
        "False",
        "--hflip",
        "0.5",
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def final_weights(run_dir):
    pointer = json.load(open(os.path.join(run_dir, "last_checkpoint.json")))
    state = ms.load_checkpoint(pointer["path"])
    # Tensors as arrays; the recorded recipe (a string) as it is.
    return pointer, {
        k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in state.items() if not k.startswith("learning_rate")
    }


def rows(run_dir):
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in open(os.path.join(run_dir, "metrics.jsonl"))
    ]


@pytest.fixture(scope="module")
def uninterrupted(digits_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    proc = run(os.path.join(ROOT, "train.py"), run_dir, digits_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def test_sigkill_mid_epoch_then_resume_auto_is_exact(uninterrupted, digits_root, tmp_path):
    run_dir = tmp_path / "killed"
    # 44 steps per epoch: step 66 is the middle of epoch 2, after epoch 1's checkpoint.
    killed = run(os.path.join(ROOT, "tests", "kill_at_step.py"), run_dir, digits_root, env_extra={"KILL_AT_STEP": "66"})
    assert killed.returncode == -signal.SIGKILL
    assert json.load(open(run_dir / "last_checkpoint.json"))["epoch"] == 1
    assert [r["epoch"] for r in rows(run_dir)] == [1]

    resumed = run(os.path.join(ROOT, "train.py"), run_dir, digits_root, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr and "epoch 1, global step 44" in resumed.stderr

    (p_a, a), (p_b, b) = final_weights(uninterrupted), final_weights(run_dir)
    assert (p_a["epoch"], p_a["global_step"]) == (p_b["epoch"], p_b["global_step"]) == (3, 132)
    assert set(a) == set(b)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    assert rows(run_dir) == rows(uninterrupted)  # loss, lr, val top-1/top-5/loss per epoch


def test_kept_checkpoints_and_pointer_survive_resume(uninterrupted):
    pointer = json.load(open(os.path.join(uninterrupted, "last_checkpoint.json")))
    assert [os.path.basename(k) for k in pointer["kept"]] == [
        "mobilenet_v1_025-1_44.ckpt",
        "mobilenet_v1_025-2_88.ckpt",
        "mobilenet_v1_025-3_132.ckpt",
    ]
    assert all(os.path.isfile(k) for k in pointer["kept"])


def test_diverging_lr_stops_naming_step_and_last_good_checkpoint(digits_root, tmp_path):
    # Epoch 1 trains normally; at the epoch-2 milestone the LR jumps x1e8 and the loss blows up.
    proc = run(
        os.path.join(ROOT, "train.py"),
        tmp_path / "nan",
        digits_root,
        "--scheduler",
        "multi_step_decay",
        "--warmup_epochs",
        "0",
        "--multi_step_decay_milestones",
        "[1]",
        "--decay_rate",
        "1e8",
        "--val_while_train",
        "False",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: loss is ") and " at epoch 2 step " in last
    assert "Last good checkpoint: " + str(tmp_path / "nan" / "mobilenet_v1_025-1_44.ckpt") in last
    assert "Traceback" not in proc.stderr
    assert [r["epoch"] for r in rows(tmp_path / "nan")] == [1]  # nothing recorded for the diverged epoch
    ms.load_checkpoint(str(tmp_path / "nan" / "mobilenet_v1_025-1_44.ckpt"))  # and it is loadable
