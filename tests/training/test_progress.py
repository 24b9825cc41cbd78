"""Progress inside the epochs: log lines every log_interval steps with h:mm:ss ETAs off a terminal,
a tqdm bar on one, and device sinks mapped back to real epochs.

The monitor is driven the way MindSpore 2.10's Model.train drives its callbacks (host-fed: one step
callback per step; device sink on Ascend/GPU: one per sink of sink_size steps, each sink counted as
an epoch), with a fake clock, so every count and ETA below is worked out in the test.
"""

import math
import os
import re
import types

import numpy as np
import pytest
from mindspore import nn

from mindcv_mobile.run_dir import RunDir
from mindcv_mobile.training.callbacks import MonitorPlan, SyncBatchNormStatistics, TrainMonitor
from mindcv_mobile.training.progress import Progress, format_eta, log_sink_note, sink_plan, sink_size_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS_RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
LINE = re.compile(
    r"epoch \[(\d+)/(\d+)\] step \[(\d+)/(\d+)\] \((\d+)/(\d+) in the run\) loss (\S+) lr (\S+) (\S+) img/s, "
    r"ETA epoch (\d+:\d\d:\d\d) run (\d+:\d\d:\d\d)"
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Context:
    def __init__(self, cb):
        self.cb = cb

    def original_args(self):
        return self.cb


def loss_at(step):
    return 3.0 - 0.01 * step


def drive_host_fed(monitor, clock, epochs, steps, first_epoch=1, step_seconds=0.5, first_step=5.0, between=0.0):
    """MindSpore's host-fed loop: cur_epoch_num = epoch, cur_step_num counts this call's steps."""
    cb = types.SimpleNamespace(cur_epoch_num=0, cur_step_num=0, batch_num=steps, net_outputs=None)
    ctx = Context(cb)
    for epoch in range(first_epoch, epochs + 1):
        cb.cur_epoch_num = epoch
        monitor.on_train_epoch_begin(ctx)
        for i in range(steps):
            clock.now += first_step if (epoch == first_epoch and i == 0) else step_seconds
            cb.cur_step_num += 1
            cb.net_outputs = np.float32(loss_at((epoch - 1) * steps + i + 1))
            monitor.on_train_step_end(ctx)
        monitor.on_train_epoch_end(ctx)
        clock.now += between
    monitor.on_train_end(ctx)


def drive_device_sink(callbacks, clock, epochs, steps, sink, initial_epoch=0, step_seconds=0.5):
    """MindSpore's sink loop in graph mode with sink_size=sink: Model.train(epochs * sinks, ...,
    initial_epoch=resumed epochs * sinks); every sink is an 'epoch' of batch_num=sink steps, with one
    step callback whose outputs are the sink's last step's."""
    sinks = steps // sink
    cb = types.SimpleNamespace(cur_epoch_num=0, cur_step_num=0, batch_num=sink, net_outputs=None)
    ctx = Context(cb)
    for ms_epoch in range(initial_epoch * sinks + 1, epochs * sinks + 1):
        cb.cur_epoch_num = ms_epoch
        for c in callbacks:
            c.on_train_epoch_begin(ctx)
        clock.now += sink * step_seconds
        cb.cur_step_num += sink
        cb.net_outputs = np.float32(loss_at(ms_epoch * sink))
        for c in callbacks:
            c.on_train_step_end(ctx)
        for c in callbacks:
            c.on_train_epoch_end(ctx)


def monitor_for(epochs, log_interval, clock, run_dir=None, evaluate=None, sinks_per_epoch=1, steps=30):
    plan = MonitorPlan(epochs, log_interval=log_interval, sinks_per_epoch=sinks_per_epoch, keep_checkpoint_max=10)
    lr = [0.001 * (i + 1) for i in range(epochs * steps)]
    net = nn.Dense(2, 2)
    return TrainMonitor(
        run_dir,
        "m",
        lr,
        32,
        plan,
        evaluate=evaluate,
        save_params=lambda: net,
        progress=Progress(epochs, log_interval, 32, tty=False, clock=clock),
    )


def progress_lines(caplog):
    return [LINE.search(r.getMessage()).groups() for r in caplog.records if LINE.search(r.getMessage())]


def test_format_eta_is_h_mm_ss():
    assert format_eta(0) == "0:00:00"
    assert format_eta(59.6) == "0:01:00"
    assert format_eta(3599) == "0:59:59"
    assert format_eta(27 * 3600 + 3 * 60 + 9) == "27:03:09"
    assert [format_eta(v) for v in (None, -1.0, math.nan, math.inf)] == ["?"] * 4


def test_sink_size_divides_the_epoch_nearest_log_interval():
    assert sink_size_for(2502, 100) == 139  # 2502 = 2 * 3^2 * 139: 139 is nearer 100 (x1.39) than 18 (x5.6)
    assert sink_size_for(44, 10) == 11
    assert sink_size_for(44, 100) == 44  # log_interval past the epoch: one sink per epoch
    assert sink_size_for(1009, 100) == 1009  # prime: 1 step per sink would give up sinking
    for steps in range(1, 200):
        for interval in (1, 3, 10, 50, 100):
            size = sink_size_for(steps, interval)
            assert steps % size == 0
            # No divisor is nearer log_interval by ratio (brute force over every divisor).
            gap = abs(math.log(size / interval))
            assert all(abs(math.log(d / interval)) >= gap - 1e-12 for d in range(1, steps + 1) if steps % d == 0)
    with pytest.raises(ValueError, match="log_interval 0 must"):
        sink_size_for(10, 0)


def test_sinks_are_planned_only_where_the_device_sinks():
    assert sink_plan(True, "Ascend", 2502, 100) == (139, 18)
    assert sink_plan(True, "GPU", 44, 10) == (11, 4)
    # CPU runs sink mode host-fed in MindSpore 2.10 (a step callback per step): no sink_size.
    assert sink_plan(True, "CPU", 44, 10) == (-1, 1)
    assert sink_plan(False, "Ascend", 44, 10) == (-1, 1)
    assert sink_plan(True, "Ascend", 1009, 100) == (-1, 1)  # one sink per epoch: MindSpore's default


def test_sink_note_says_what_a_rows_loss_is_where_the_device_sinks(caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    log_sink_note("CPU", 1, -1, 100)
    assert not caplog.records  # CPU: every step's loss reaches the monitor
    log_sink_note("Ascend", 18, 139, 100)
    assert "18 device sinks of 139 steps" in caplog.text and "mean of its sinks' last-step losses" in caplog.text
    caplog.clear()
    log_sink_note("GPU", 1, 44, 100)
    assert "each epoch's loss (log, metrics.jsonl) is its last step's" in caplog.text


def test_log_lines_every_log_interval_with_counts_and_etas(caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    clock = Clock()

    def evaluate():
        clock.now += 3.0  # validation: time between epochs that the run ETA must include
        return {"Top_1_Accuracy": 0.5}

    monitor = monitor_for(3, 10, clock, evaluate=evaluate)
    drive_host_fed(monitor, clock, epochs=3, steps=30)
    lines = progress_lines(caplog)
    # Steps 10 and 20 of each epoch; step 30's line is the epoch line.
    assert [(int(e), int(s), int(g)) for e, _, s, _, g, _, _, _, _, _, _ in lines] == [
        (1, 10, 10),
        (1, 20, 20),
        (2, 10, 40),
        (2, 20, 50),
        (3, 10, 70),
        (3, 20, 80),
    ]
    assert all((n, total, run_total) == ("3", "30", "90") for _, n, _, total, _, run_total, *_ in lines)
    first = lines[0]
    # The mean loss of steps 1-10, the LR of step 10 (index 9), 32 images x 10 steps in 5 + 9 x 0.5 s.
    assert float(first[6]) == pytest.approx(np.mean([loss_at(s) for s in range(1, 11)]), abs=1e-4)
    assert float(first[7]) == pytest.approx(0.010)
    assert float(first[8]) == pytest.approx(320 / 9.5, abs=0.05)
    # 0.5 s/step measured after the first (compiling) step: 20 steps left in the epoch, 80 in the run.
    assert first[9:] == ("0:00:10", "0:00:40")
    assert float(lines[1][8]) == pytest.approx(320 / 5.0, abs=0.05)
    # Epoch 2, step 10: 20 + 30 steps at 0.5 s, plus 3 s between epochs for epochs 2 and 3.
    assert lines[2][9:] == ("0:00:10", "0:00:31")
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch [1/3] steps 30")]
    # After epoch 1's validation: 2 epochs x (30 x 0.5 s + 3 s).
    assert len(epoch_lines) == 1 and epoch_lines[0].endswith("run ETA 0:00:36")
    assert [row["global_step"] for row in monitor.history] == [30, 60, 90]
    assert [row["loss_steps"] for row in monitor.history] == [30, 30, 30]


def test_a_terminal_gets_a_bar_with_the_run_eta_and_no_lines(caplog):
    caplog.set_level("INFO", logger="mindcv_mobile")
    clock = Clock()
    progress = Progress(3, 10, 32, tty=True, clock=clock)
    progress.start_epoch(1, 30)
    for step in range(1, 11):
        clock.now += 0.5
        progress.advance(step, loss_at(step), 0.01)
    assert progress._bar.n == 10 and progress._bar.total == 30 and progress._bar.desc.startswith("epoch 1/3")
    assert "run ETA 0:00:40" in progress._bar.postfix and "loss 2.9000" in progress._bar.postfix
    progress.end_epoch()
    assert progress._bar is None
    assert not progress_lines(caplog)


def test_device_sinks_map_back_to_epochs_rows_checkpoints_and_bn_sync(tmp_path, caplog):
    """44 steps per epoch in sinks of 11 (log_interval 10): a line per sink, one row, one checkpoint
    and one BatchNorm synchronisation per real epoch, then a resumed run from epoch 1."""
    caplog.set_level("INFO", logger="mindcv_mobile")
    run = RunDir(str(tmp_path))
    clock = Clock()
    monitor = monitor_for(2, 10, clock, run_dir=run, sinks_per_epoch=4, steps=44)
    synced = []  # MindSpore's epoch (sink) numbers at which the statistics were averaged

    class CountingSync(SyncBatchNormStatistics):
        def on_train_epoch_end(self, run_context):
            self.sink = run_context.original_args().cur_epoch_num
            super().on_train_epoch_end(run_context)

        def synchronize(self):
            synced.append(self.sink)

    sync = CountingSync(nn.Dense(2, 2), group_size=2, sinks_per_epoch=4)
    drive_device_sink([sync, monitor], clock, epochs=2, steps=44, sink=11)
    lines = progress_lines(caplog)
    # Steps 11, 22, 33 of each epoch (each crosses a multiple of 10); 44 ends the epoch.
    assert [(int(line[0]), int(line[2]), int(line[4])) for line in lines] == [
        (1, 11, 11),
        (1, 22, 22),
        (1, 33, 33),
        (2, 11, 55),
        (2, 22, 66),
        (2, 33, 77),
    ]
    assert [(r["epoch"], r["global_step"], r["loss_steps"]) for r in run.read_metrics()] == [(1, 44, 4), (2, 88, 4)]
    # The loss of a row: the mean of its sinks' last-step losses.
    assert run.read_metrics()[0]["loss"] == pytest.approx(np.mean([loss_at(11 * k) for k in (1, 2, 3, 4)]), abs=1e-5)
    assert run.read_metrics()[1]["lr"] == pytest.approx(0.088)
    assert sorted(f for f in os.listdir(run.path) if f.endswith(".ckpt")) == ["m-1_44.ckpt", "m-2_88.ckpt"]
    assert synced == [4, 8]

    # Resumed after epoch 1: Model.train(2 * 4, ..., initial_epoch=1 * 4).
    resumed_dir = RunDir(str(tmp_path / "resumed"))
    again = monitor_for(2, 10, Clock(), run_dir=resumed_dir, sinks_per_epoch=4, steps=44)
    again.history = list(run.read_metrics()[:1])
    drive_device_sink([again], Clock(), epochs=2, steps=44, sink=11, initial_epoch=1)
    assert [(r["epoch"], r["global_step"]) for r in resumed_dir.read_metrics()] == [(1, 44), (2, 88)]
    assert [f for f in os.listdir(resumed_dir.path) if f.endswith(".ckpt")] == ["m-2_88.ckpt"]


@pytest.mark.slow
def test_sink_mode_run_on_cpu_logs_every_log_interval(digits_root, tmp_path, caplog):
    """dataset_sink_mode True on CPU: MindSpore feeds from the host with a step callback per step,
    so progress lines come every log_interval steps; one row per epoch at the right global step."""
    from mindcv_mobile.config import load_config
    from mindcv_mobile.tasks import train

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
            "dataset_sink_mode": True,
            "log_interval": 10,
            "val_while_train": False,
            "tensorboard": False,
        },
    )
    result = train(cfg)
    assert [(r["epoch"], r["global_step"], r["loss_steps"]) for r in result.history] == [(1, 44, 44), (2, 88, 44)]
    lines = progress_lines(caplog)
    assert [(int(line[0]), int(line[2]), int(line[4])) for line in lines] == [
        (e, s, (e - 1) * 44 + s) for e in (1, 2) for s in (10, 20, 30, 40)
    ]
    assert all(line[3] == "44" and line[5] == "88" for line in lines)
    assert "44 steps/epoch, 88 steps in all" in caplog.text
    assert "epoch [1/2] steps 44" in caplog.text and re.search(r"run ETA \d+:\d\d:\d\d", caplog.text)
    log = open(os.path.join(result.run_dir, "train.log")).read()
    assert "epoch [2/2] step [40/44] (84/88 in the run)" in log
