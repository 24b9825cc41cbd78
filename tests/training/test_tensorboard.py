"""TensorBoard event files and curves.png: what a run leaves to look at besides its log.

Event files are read back with TensorBoard's own reader (EventAccumulator); the reference for the
epoch scalars is metrics.jsonl, for the step scalars the losses and LRs fed to the monitor.
"""

import importlib
import json
import os
import sys
import types

import numpy as np
import pytest
from mindspore import nn

from mindcv_mobile.run_dir import RunDir
from mindcv_mobile.training.callbacks import MonitorPlan, TrainMonitor
from mindcv_mobile.training.progress import Progress
from mindcv_mobile.training.tensorboard import ScalarWriter, open_scalar_writer

trainer = importlib.import_module("mindcv_mobile.tasks.train")  # the module (the package exports its function)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
EPOCH_TAGS = {
    "train/epoch_loss": "loss",
    "val/top1": "Top_1_Accuracy",
    "val/top5": "Top_5_Accuracy",
    "val/loss": "val_loss",
    "perf/img_per_s": "img_per_s",
    "perf/epoch_time_s": "epoch_time_s",
}


def read_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class Context:
    def __init__(self, cb):
        self.cb = cb

    def original_args(self):
        return self.cb


def loss_at(step):
    return 2.0 + np.sin(step)  # no trend: interval means differ from any single step's loss


def drive(monitor, epochs, steps, first_epoch=1, stop_after=None):
    """MindSpore's host-fed loop (one step callback per step)."""
    cb = types.SimpleNamespace(cur_epoch_num=0, cur_step_num=0, batch_num=steps, net_outputs=None)
    ctx = Context(cb)
    for epoch in range(first_epoch, epochs + 1):
        cb.cur_epoch_num = epoch
        monitor.on_train_epoch_begin(ctx)
        for _ in range(steps):
            cb.cur_step_num += 1
            step = (epoch - 1) * steps + (cb.cur_step_num - 1) % steps + 1
            cb.net_outputs = (np.float32(loss_at(step)), np.bool_(False), np.float32(1024.0))
            monitor.on_train_step_end(ctx)
            if stop_after is not None and step == stop_after:
                return
        monitor.on_train_epoch_end(ctx)


VAL = [  # what validation returns after epoch 1, 2
    {"Top_1_Accuracy": 0.4, "Top_5_Accuracy": 0.9, "val_loss": 1.7},
    {"Top_1_Accuracy": 0.625, "Top_5_Accuracy": 0.95, "val_loss": 1.25},
]


def monitor_for(run, writer, epochs=2, steps=20, log_interval=5, history=None):
    net = nn.Dense(2, 2)
    monitor = TrainMonitor(
        run,
        "m",
        [0.01 * (i + 1) for i in range(epochs * steps)],
        32,
        MonitorPlan(epochs, log_interval=log_interval),
        save_params=lambda: net,
        history=history,
        tensorboard=writer,
        progress=Progress(epochs, log_interval, 32, tty=False),
    )
    monitor.evaluate = lambda: VAL[len(monitor.history)]  # rows so far = the epoch's index
    return monitor


def test_event_scalars_match_metrics_rows_and_fed_losses(tmp_path):
    run = RunDir(str(tmp_path))
    monitor = monitor_for(run, ScalarWriter(run.file("tensorboard"), start_step=1))
    drive(monitor, epochs=2, steps=20)
    monitor.close()
    scalars = read_scalars(run.file("tensorboard"))
    rows = [json.loads(line) for line in open(run.file("metrics.jsonl"))]
    assert set(EPOCH_TAGS) | {"train/loss", "train/lr", "train/loss_scale"} == set(scalars)
    for tag, key in EPOCH_TAGS.items():
        assert [s for s, _ in scalars[tag]] == [r["global_step"] for r in rows] == [20, 40]
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in rows], rel=1e-6)
    # Every 5 steps: the mean loss of the 5 steps, the LR of the last one (schedule index step - 1).
    steps = list(range(5, 41, 5))
    assert [s for s, _ in scalars["train/loss"]] == steps
    expected = [np.mean([np.float32(loss_at(k)) for k in range(s - 4, s + 1)]) for s in steps]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(expected, rel=1e-6)
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([0.01 * s for s in steps], rel=1e-6)
    assert [v for _, v in scalars["train/loss_scale"]] == [1024.0] * len(steps)


def test_a_resumed_run_appends_and_supersedes_what_the_killed_run_wrote_after_its_checkpoint(tmp_path):
    run = RunDir(str(tmp_path))
    logdir = run.file("tensorboard")
    killed = monitor_for(run, ScalarWriter(logdir, start_step=1))
    drive(killed, epochs=2, steps=20, stop_after=30)  # killed mid-epoch 2, after its line at step 30
    killed.tensorboard.close()  # what the killed process had flushed
    assert [s for s, _ in read_scalars(logdir)["train/loss"]] == [5, 10, 15, 20, 25, 30]

    # Continues from epoch 1's checkpoint (step 20) with its rows, as the trainer does.
    resumed = monitor_for(run, ScalarWriter(logdir, start_step=21), history=run.read_metrics()[:1])
    drive(resumed, epochs=2, steps=20, first_epoch=2)
    resumed.close()
    assert len(os.listdir(logdir)) == 2
    scalars = read_scalars(logdir)
    assert [s for s, _ in scalars["train/loss"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [s for s, _ in scalars["train/epoch_loss"]] == [20, 40]
    assert [v for _, v in scalars["val/top1"]] == pytest.approx([0.4, 0.625])


def test_missing_tensorboard_is_one_info_line_and_no_writer(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)
    assert open_scalar_writer(str(tmp_path / "tb")) is None
    lines = [r for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "INFO"
    assert "pip install mindcv_mobile[viz]" in lines[0].getMessage()
    assert not os.path.exists(tmp_path / "tb")


def test_curves_without_matplotlib_is_an_info_line_and_other_errors_propagate(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")

    class Missing(ImportError):
        pass

    def no_matplotlib(run_dirs, out, labels=None):
        raise Missing("training curves need matplotlib: pip install mindcv_mobile[viz]")

    monkeypatch.setattr(trainer, "plot_runs", no_matplotlib)
    trainer._write_curves(RunDir(str(tmp_path)))
    assert [r.levelname for r in caplog.records if "need matplotlib" in r.getMessage()] == ["INFO"]

    def broken(run_dirs, out, labels=None):
        raise ValueError("a bug in plotting")

    monkeypatch.setattr(trainer, "plot_runs", broken)
    with pytest.raises(ValueError, match="a bug in plotting"):
        trainer._write_curves(RunDir(str(tmp_path)))


@pytest.mark.slow
def test_a_training_run_writes_events_and_curves(digits_root, tmp_path, caplog):
    from mindcv_mobile.config import load_config

    caplog.set_level("INFO", logger="mindcv_mobile")
    cfg = load_config(
        DIGITS_RECIPE,
        {
            "data_dir": digits_root,
            "ckpt_save_dir": str(tmp_path / "run"),
            "model": "mobilenet_v1_025",
            "image_resize": 32,
            "epoch_size": 2,
            "warmup_epochs": 1,
            "decay_epochs": 1,
            "log_interval": 20,
        },
    )
    result = trainer.train(cfg)
    scalars = read_scalars(os.path.join(result.run_dir, "tensorboard"))
    rows = [json.loads(line) for line in open(os.path.join(result.run_dir, "metrics.jsonl"))]
    for tag, key in EPOCH_TAGS.items():
        assert [s for s, _ in scalars[tag]] == [44, 88]
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert [s for s, _ in scalars["train/loss"]] == [20, 40, 64, 84]
    assert [s for s, _ in scalars["train/lr"]] == [20, 40, 64, 84]
    curves = os.path.join(result.run_dir, "curves.png")
    assert open(curves, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"training curves: {curves}" in caplog.text
    assert f"tensorboard --logdir {os.path.join(result.run_dir, 'tensorboard')}" in caplog.text
