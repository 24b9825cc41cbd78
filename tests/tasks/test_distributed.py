"""Data-parallel training under msrun on CPU: real worker processes, real all-reduce.

One job (~60 s) runs scripts/run_distribute_train.sh with 2 workers on the digits tree at 32 px
(MobileNetV1-0.25, 2 epochs, graph mode) through tests/dist_worker.py, which is train.py plus
per-rank dumps of the final weights and of the sample indices each rank's shard yielded. Two
more jobs (~35 s each, PyNative) kill or crash one rank on purpose and check that the whole job ends,
non-zero, naming that rank.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types

import numpy as np
import psutil
import pytest

from mindcv_mobile.config import load_config
from mindcv_mobile.runtime import LAUNCHER_ENV, init_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "run_distribute_train.sh")
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")
# The digits recipe says distribute: False; under msrun that must still train data-parallel.
RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
BIN = os.path.dirname(sys.executable)  # msrun starts the `python` found on PATH: this venv's
MSRUN = shutil.which("msrun", path=os.pathsep.join([BIN, os.environ.get("PATH", "")]))
TRAIN_ARGS = [
    "--model",
    "mobilenet_v1_025",
    "--image_resize",
    "32",
    "--epoch_size",
    "2",
    "--warmup_epochs",
    "0",
    "--decay_epochs",
    "2",
    "--batch_size",
    "32",
    "--lr",
    "0.1",
]
EPOCHS, BATCH, DEVICES = 2, 32, 2
JOB_TIMEOUT = 420  # seconds; a hang fails the test instead of blocking the suite

# Every test here launches msrun.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MSRUN is None, reason="msrun (MindSpore) not installed")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree(proc: subprocess.Popen) -> None:
    # msrun starts each worker in its own session: killing msrun's group would orphan them.
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family + [psutil.Process(proc.pid)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def run_job(digits_root: str, work, extra_args=(), **fault) -> types.SimpleNamespace:
    """Run the distributed script on 2 workers; ``fault`` = env of tests/dist_worker.py's hook."""
    job = types.SimpleNamespace(run_dir=str(work / "run"), out_dir=str(work / "dumps"), log_dir=str(work / "logs"))
    env = dict(
        os.environ,
        PATH=os.pathsep.join([BIN, os.environ.get("PATH", "")]),
        LOG_DIR=job.log_dir,
        MASTER_PORT=str(_free_port()),
        TRAIN_SCRIPT=WORKER,
        DIST_TEST_OUT=job.out_dir,
        CLUSTER_TIME_OUT="120",
        **fault,
    )
    for key in LAUNCHER_ENV:  # the test process itself must not look launched
        env.pop(key, None)
    cmd = [
        "bash",
        SCRIPT,
        str(DEVICES),
        digits_root,
        RECIPE,
        "--",
        *TRAIN_ARGS,
        *extra_args,
        "--ckpt_save_dir",
        job.run_dir,
    ]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job.output, _ = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        pytest.fail(f"msrun job still running after {JOB_TIMEOUT} s (a hang); logs in {job.log_dir}")
    job.seconds = time.time() - start
    job.returncode = proc.returncode
    return job


def _worker_log(job, rank: int) -> str:
    with open(os.path.join(job.log_dir, f"worker_{rank}.log"), encoding="utf-8") as f:
        return f.read()


def _dump(job, rank: int):
    weights = np.load(os.path.join(job.out_dir, f"rank{rank}_weights.npz"))
    with open(os.path.join(job.out_dir, f"rank{rank}_samples.json"), encoding="utf-8") as f:
        return weights, json.load(f)


def _num_train_images(digits_root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(os.path.join(digits_root, "train")))


@pytest.fixture(scope="module")
def job(digits_root, tmp_path_factory):
    job = run_job(digits_root, tmp_path_factory.mktemp("msrun"))
    assert job.returncode == 0, job.output[-3000:]
    return job


# ------------------------------------------------------------------ the successful job
def test_both_ranks_finish_with_identical_weights(job):
    (w0, s0), (w1, s1) = _dump(job, 0), _dump(job, 1)
    assert [row["epoch"] for row in s0["history"]] == [1, 2] and [row["epoch"] for row in s1["history"]] == [1, 2]
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) == 137  # MobileNetV1: 137 tensors
    different = [name for name in w0.files if not np.array_equal(w0[name], w1[name])]
    assert different == [], f"parameters that differ between ranks: {different[:5]}"
    # BN running statistics are per-rank until averaged: they are equal only through the sync.
    assert any(name.endswith("moving_mean") for name in w0.files)
    # Each rank's training loss is over its own shard, so the ranks did see different data.
    assert s0["history"][0]["loss"] != s1["history"][0]["loss"]


def test_gradient_accumulation_keeps_the_ranks_identical(digits_root, tmp_path):
    """Each rank accumulates its own batches; the buffers are all-reduced at the update, so the
    ranks' weights stay equal (unreduced buffers would let them drift apart at the first update)."""
    job = run_job(digits_root, tmp_path, ["--gradient_accumulation_steps", "2", "--epoch_size", "1"])
    assert job.returncode == 0, job.output[-3000:]
    (w0, s0), (w1, _) = _dump(job, 0), _dump(job, 1)
    different = [name for name in w0.files if not np.array_equal(w0[name], w1[name])]
    assert different == [], f"parameters that differ between ranks: {different[:5]}"
    steps = _num_train_images(digits_root) // DEVICES // BATCH
    assert s0["history"][0]["global_step"] == steps
    assert "gradient accumulation 2" in _worker_log(job, 0)


def test_each_rank_reads_a_disjoint_half_per_epoch(job, digits_root):
    n = _num_train_images(digits_root)
    (_, s0), (_, s1) = _dump(job, 0), _dump(job, 1)
    assert len(s0["epochs"]) == len(s1["epochs"]) == EPOCHS
    for epoch0, epoch1 in zip(s0["epochs"], s1["epochs"]):
        assert len(epoch0) == len(epoch1) == n // DEVICES
        assert set(epoch0).isdisjoint(epoch1)
        assert len(set(epoch0) | set(epoch1)) == DEVICES * (n // DEVICES)
        assert set(epoch0) | set(epoch1) <= set(range(n))
    assert s0["epochs"][0] != s0["epochs"][1], "the shard must be reshuffled every epoch"


def test_only_rank0_writes_the_run_directory(job):
    files = set(os.listdir(job.run_dir))
    assert {
        "config.yaml",
        "classes.json",
        "train.log",
        "metrics.jsonl",
        "last_checkpoint.json",
        "mobilenet_v1_025-1_22.ckpt",
        "mobilenet_v1_025-2_44.ckpt",
        "mobilenet_v1_025-best.ckpt",
        "curves.png",
        "tensorboard",
    } == files
    assert len(os.listdir(os.path.join(job.run_dir, "tensorboard"))) == 1  # rank 0's event file only
    with open(os.path.join(job.run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: a second rank would double the rows
    with open(os.path.join(job.run_dir, "train.log"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines and all("[rank 0]" in line for line in lines)
    # every rank logs to msrun's per-worker log
    assert "rank 1 of 2 (pid" in _worker_log(job, 1) and "epoch [2/2]" in _worker_log(job, 1)


def test_log_states_global_batch_and_lr(job):
    log = open(os.path.join(job.run_dir, "train.log"), encoding="utf-8").read()
    assert f"batch {BATCH} x {DEVICES} device(s) = global batch {BATCH * DEVICES}" in log
    assert "lr 0.1 is used as set, not rescaled for global batch 64" in log
    # the recipe's distribute: False is overridden by the launcher, loudly
    assert "sets distribute: False but msrun started this process" in _worker_log(job, 0)


def test_validation_matches_single_process_validation(job, digits_root):
    from mindcv_mobile.tasks import validate

    (_, s0), (_, s1) = _dump(job, 0), _dump(job, 1)
    val_keys = ("Top_1_Accuracy", "Top_5_Accuracy", "val_loss")
    last0 = {k: s0["history"][-1][k] for k in val_keys}
    assert last0 == {k: s1["history"][-1][k] for k in val_keys}, "ranks validated different networks"
    assert last0["Top_1_Accuracy"] > 0.2  # learnt something (chance is 0.1): the comparison is not vacuous

    last_ckpt = json.load(open(os.path.join(job.run_dir, "last_checkpoint.json")))["path"]
    cfg = load_config(
        RECIPE,
        {
            "data_dir": digits_root,
            "model": "mobilenet_v1_025",
            "image_resize": 32,
            "batch_size": BATCH,
            "distribute": False,
            "ckpt_path": last_ckpt,
        },
    )
    single = validate(cfg)  # what validate.py reports for the saved checkpoint
    assert round(single["Top_1_Accuracy"], 6) == last0["Top_1_Accuracy"]
    assert round(single["Top_5_Accuracy"], 6) == last0["Top_5_Accuracy"]
    assert single["loss"] == pytest.approx(last0["val_loss"], rel=1e-4)


# ------------------------------------------------------------------ a worker dies
def _pids(job) -> list:
    return [int(p) for rank in range(DEVICES) for p in re.findall(r"\(pid (\d+)\)", _worker_log(job, rank))]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    "rank,mode,message",
    [
        (1, "kill", "rank 1 (pid {pid}) was killed by signal 9 (SIGKILL)"),
        (0, "raise", "rank 0 (pid {pid}) exited with code 2"),
    ],
)
def test_dead_worker_ends_the_job_naming_its_rank(digits_root, tmp_path, rank, mode, message):
    # The scheduler declares the stopped peers dead after MS_NODE_TIMEOUT s (30 s by default);
    # PyNative skips the graph compile: the all-reduce a dead peer leaves hanging is the same.
    job = run_job(
        digits_root,
        tmp_path,
        extra_args=["--mode", "1"],
        DIST_TEST_FAIL_RANK=str(rank),
        DIST_TEST_FAIL_STEP="2",
        DIST_TEST_FAIL_MODE=mode,
        MS_NODE_TIMEOUT="10",
    )
    assert job.returncode != 0, job.output[-3000:]
    pid = re.search(r"rank %d of 2 \(pid (\d+)\)" % rank, _worker_log(job, rank)).group(1)
    assert message.format(pid=pid) in job.output, job.output[-3000:]
    if mode == "raise":  # the worker's own last words are shown with its rank
        assert "rank 0 of 2 failed: RuntimeError: fault injected by the test at step 2" in job.output
    assert job.seconds < 240
    assert len(_pids(job)) == DEVICES and not any(_alive(p) for p in _pids(job)), "a worker outlived the job"
    assert not os.path.exists(os.path.join(job.out_dir, f"rank{1 - rank}_weights.npz")), "the peer went on"


# ------------------------------------------------------------------ no launcher / wrong arguments
def test_distribute_true_without_launcher_shows_msrun_command(monkeypatch):
    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match=r"msrun --worker_num 8 --local_worker_num 8 --join True python train.py"):
        init_runtime(load_config(None, {"distribute": True}))


def test_distribute_false_under_msrun_is_an_error(monkeypatch):
    monkeypatch.setenv("MS_ROLE", "MS_WORKER")
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    with pytest.raises(RuntimeError, match=r"msrun started this process \(one of its 2 workers.*drop --distribute"):
        init_runtime(load_config(None, {"distribute": False}))


@pytest.mark.parametrize(
    "args,expected",
    [
        ([], "usage: bash scripts/run_distribute_train.sh DEVICE_NUM DATA_DIR RECIPE [PRETRAINED_CKPT]"),
        (["two", ".", RECIPE], "DEVICE_NUM must be a positive integer, got 'two'"),
        (["2", "/no/such/dir", RECIPE], "DATA_DIR '/no/such/dir' is not a folder"),
        (["2", ".", "missing.yaml"], "RECIPE 'missing.yaml' not found"),
        (["2", ".", RECIPE, "missing.ckpt"], "PRETRAINED_CKPT 'missing.ckpt' not found"),
    ],
)
def test_script_rejects_wrong_arguments(args, expected):
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
