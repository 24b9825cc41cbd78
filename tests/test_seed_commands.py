"""Every command line of the seed documents (the model zoo's MobileNetV1 README, the MobileNetV2
example, the mobilenetv2_quant README), run as written on the digits tree at 32 px, 1 epoch.

Each test starts the real script as a subprocess and checks its exit code and the line the seed
shows (README "Coming from the model zoo / the MobileNetV2 example"). Runtime ~3 min on 2 cores.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from mindcv_mobile.cli import parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MSRUN = shutil.which("msrun", path=os.pathsep.join([BIN, os.environ.get("PATH", "")]))
MPIRUN = shutil.which("mpirun")
# Short runs: the seed commands plus these keep each training to a few seconds.
TINY = [
    "--epoch_size",
    "1",
    "--num_samples",
    "128",
    "--batch_size",
    "16",
    "--warmup_epochs",
    "0",
    "--decay_epochs",
    "1",
]
TIMEOUT = 300


def _env(**extra) -> dict:
    env = dict(os.environ, PATH=os.pathsep.join([BIN, os.environ.get("PATH", "")]), **extra)
    for name in ("MS_ROLE", "MS_WORKER_NUM", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE"):
        env.pop(name, None)  # a test run under a launcher must not pass it on
    return env


def run(args, cwd, **env) -> subprocess.CompletedProcess:
    """Run a repository script (``train.py`` or ``scripts/x.sh``) as a user would, from ``cwd``."""
    script = os.path.join(ROOT, args[0])
    cmd = (["bash", script] if script.endswith(".sh") else [sys.executable, script]) + list(args[1:])
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("[")]
    return lines[-1] if lines else ""


def _free_port() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _checkpoint(run_dir: str) -> str:
    with open(os.path.join(run_dir, "last_checkpoint.json"), encoding="utf-8") as f:
        return json.load(f)["path"]


def test_flags_translate(capsys):
    """The translations themselves, without training (fast)."""
    cfg, _ = parse_args("--arch mobilenetv2 --alpha 0.75 --resize 192 --pretrained True --data_url /d".split())
    assert (cfg.model, cfg.image_resize, cfg.pretrained, cfg.data_dir) == ("mobilenet_v2_075", 192, True, "/d")
    cfg, _ = parse_args("--platform CPU --dataset imagenet2012 --dataset_path /d --pretrain_ckpt w.ckpt".split())
    assert (cfg.device_target, cfg.dataset, cfg.data_dir, cfg.ckpt_path) == ("CPU", "imagenet", "/d", "w.ckpt")
    for bad, says in [
        ("--start_epoch 200", "use --resume"),
        ("--save_checkpoint False", "keep_checkpoint_max"),
        ("--arch mobilenetv1 --alpha 0.35", "accepted: 0.25, 0.5, 0.75, 1"),
    ]:
        with pytest.raises(SystemExit):
            parse_args(bad.split())
        assert says in capsys.readouterr().err


@pytest.fixture(scope="module")
def v2_run(digits_root, tmp_path_factory):
    """Seed 002's training command (MobileNetV2 0.35 at 32 px instead of 1.0 at 224)."""
    work = tmp_path_factory.mktemp("v2")
    args = ["train.py", "--arch", "mobilenetv2", "--alpha", "0.35", "--resize", "32", "--data_url", digits_root]
    proc = run(args + TINY + ["--num_classes", "10", "--ckpt_save_dir", str(work / "run")], cwd=work)
    return proc, str(work / "run")


@pytest.mark.slow
def test_train_mobilenetv2_example(v2_run):
    proc, run_dir = v2_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert last_line(proc.stdout) == f"run directory: {run_dir}"
    recipe = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert (recipe["model"], recipe["image_resize"]) == ("mobilenet_v2_035", 32)


@pytest.mark.slow
def test_validate_mobilenetv2_example(v2_run, digits_root, tmp_path):
    # As written: the released 0.75 weights, which this machine has no copy of -> one-line error.
    seed = ["validate.py", "--arch", "mobilenetv2", "--alpha", "0.75", "--resize", "192", "--pretrained", "True"]
    proc = run(seed + ["--data_url", digits_root], cwd=tmp_path, MINDCV_MOBILE_HOME=str(tmp_path))
    assert proc.returncode == 2
    assert re.fullmatch(r"validate\.py: error: released weights for mobilenet_v2_075 .*", last_line(proc.stderr))
    # The same flags on the run trained above print the seed's dict.
    args = ["validate.py", "--arch", "mobilenetv2", "--alpha", "0.35", "--resize", "32", "--data_url", digits_root]
    proc = run(args + ["--ckpt_path", _checkpoint(v2_run[1])], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.match(r"\{'Top_1_Accuracy': [0-9.]+, 'Top_5_Accuracy': [0-9.]+", last_line(proc.stdout))


@pytest.mark.slow
def test_train_model_zoo(v2_run, digits_root, tmp_path):
    """Seed 003: `python train.py --platform Ascend --dataset_path DIR`, and the CPU form with
    --dataset imagenet2012 and --pretrain_ckpt, DIR being the training folder itself."""
    proc = run(["train.py", "--platform", "Ascend", "--dataset_path", os.path.join(digits_root, "train")], cwd=tmp_path)
    assert proc.returncode == 2
    assert last_line(proc.stderr).startswith("train.py: error: device_target=Ascend but MindSpore cannot use Ascend")
    assert "available here: CPU" in last_line(proc.stderr)
    run_dir = str(tmp_path / "run")
    args = ["train.py", "--platform", "CPU", "--dataset", "imagenet2012", "--dataset_path"]
    args += [os.path.join(digits_root, "train"), "--pretrain_ckpt", _checkpoint(v2_run[1])]
    args += ["--arch", "mobilenetv2", "--alpha", "0.35", "--resize", "32", "--num_classes", "10"]
    proc = run(args + TINY + ["--ckpt_save_dir", run_dir], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"read as data_dir={digits_root} train_split=train" in proc.stderr
    assert last_line(proc.stdout) == f"run directory: {run_dir}"
    # Without --arch the flags mean what they mean in the model zoo's MobileNetV1 folder: its
    # recipe of the dataset (mobilenet_v1_100), here shrunk to a few steps.
    run_dir = str(tmp_path / "run_v1")
    args = ["train.py", "--platform", "CPU", "--dataset_path", os.path.join(digits_root, "train"), "--resize", "32"]
    proc = run(args + TINY + ["--ckpt_save_dir", run_dir], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model-zoo flags without -c: training " in proc.stderr and "v1_1.0_imagenet2012_ascend.yaml" in proc.stderr
    assert "model mobilenet_v1_100" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_eval_model_zoo(v2_run, digits_root, tmp_path):
    ckpt = _checkpoint(v2_run[1])
    val = os.path.join(digits_root, "val")
    args = ["eval.py", "--dataset", "imagenet2012", "--dataset_path", val, "--pretrain_ckpt", ckpt]
    proc = run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pattern = r"result: \{'top_5_accuracy': [0-9.]+, 'top_1_accuracy': [0-9.]+\} ckpt=" + re.escape(ckpt)
    assert re.fullmatch(pattern, last_line(proc.stdout))


def _rank_table(path, devices: int) -> str:
    device = [{"device_id": str(i), "device_ip": f"192.98.9{i}.100", "rank_id": str(i)} for i in range(devices)]
    table = {"version": "1.0", "server_count": "1", "server_list": [{"server_id": "127.0.0.1", "device": device}]}
    path.write_text(json.dumps(table))
    return str(path)


@pytest.mark.slow
@pytest.mark.skipif(MSRUN is None, reason="msrun (MindSpore) not installed")
def test_run_distribute_train_model_zoo(digits_root, tmp_path):
    """Seed 003: `bash run_distribute_train.sh imagenet2012 RANK_TABLE DIR`: 2 msrun workers."""
    table = _rank_table(tmp_path / "rank_table_2p.json", 2)
    run_dir = str(tmp_path / "run")
    extra = ["--", "--model", "mobilenet_v1_025", "--image_resize", "32", "--num_classes", "10"]
    args = ["scripts/run_distribute_train.sh", "imagenet2012", table, digits_root]
    proc = run(args + extra + TINY + ["--ckpt_save_dir", run_dir], cwd=tmp_path, MASTER_PORT=_free_port())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 worker(s), 2 on this node" in proc.stderr
    assert "rank 1 of 2" in proc.stdout and f"run directory: {run_dir}" in proc.stdout
    assert os.path.isfile(_checkpoint(run_dir))


@pytest.mark.slow
@pytest.mark.skipif(MSRUN is None, reason="msrun (MindSpore) not installed")
def test_run_train_quant_and_infer(digits_root, tmp_path):
    """Seed 004: `bash run_train.sh CPU 0,1 DIR` (QAT, 2 msrun workers), then
    `bash run_infer_quant.sh CPU DIR CKPT` and `bash run_infer.sh ...` print result:{'acc':...}."""
    run_dir = str(tmp_path / "run")
    # No per-epoch validation: its QAT eval graph would double the compile time (graph mode is
    # still faster than PyNative here: ~4x for this model, measured).
    extra = ["--", "--model", "mobilenet_v2_035", "--image_resize", "32", "--val_while_train", "False"]
    extra += ["--quant_delay", "4", "--freeze_bn", "6", "--ckpt_save_dir", run_dir]
    args = ["scripts/run_train.sh", "CPU", "0,1", os.path.join(digits_root, "train")]
    proc = run(args + extra + TINY, cwd=tmp_path, MASTER_PORT=_free_port())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "quantization-aware training from random weights" in proc.stderr
    assert "rank 1 of 2" in proc.stdout
    ckpt = _checkpoint(run_dir)
    for script in ("scripts/run_infer_quant.sh", "scripts/run_infer.sh"):
        proc = run([script, "CPU", os.path.join(digits_root, "val"), ckpt], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert re.fullmatch(r"result:\{'acc':[0-9.]+\}", last_line(proc.stdout))
        # ... and leave it in ./val/infer.log, where the seed says to find it.
        assert (tmp_path / "val" / "infer.log").read_text().strip() == last_line(proc.stdout)


@pytest.mark.slow
def test_mpirun_points_to_msrun(digits_root, tmp_path):
    """Seed 002: `mpirun -n 2 python train.py ...`. MindSpore 2.10 on CPU cannot form a cluster
    from OpenMPI, so every process stops with one line giving the equivalent msrun command.
    Under a real mpirun when OpenMPI is installed; else with the environment mpirun gives each
    process (OMPI_COMM_WORLD_SIZE), which is what the check reads."""
    seed = ["train.py", "--arch", "mobilenetv2", "--alpha", "1.0", "--resize", "224", "--data_url", digits_root]
    if MPIRUN:
        root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        cmd, env = [MPIRUN, "-n", "2", "--oversubscribe", *root, "python", *seed], _env()
    else:
        cmd, env = [sys.executable, *seed], dict(_env(), OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "msrun --worker_num 2 --local_worker_num 2 --join True python train.py --arch mobilenetv2" in proc.stderr
