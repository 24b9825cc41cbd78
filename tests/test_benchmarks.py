"""The speed defaults (runtime.py) and benchmarks/bench.py: the worker of every variant the published
numbers come from runs on a tiny input (skipped, naming the package, when that package is missing),
the paired-round ratios are computed as documented, and a driver run writes the JSON and table the
README quotes. No timing is asserted: the machine is shared."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mindcv_mobile import host, runtime
from mindcv_mobile.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench.py")
MODEL = "mobilenet_v3_small_100"
TINY = ["--batch-size", "2", "--image-size", "32", "--infer-batch", "2", "--warmup", "0", "--repeats", "2"]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


def test_data_workers_follow_the_cores(monkeypatch):
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {0, 1})
    assert host.cpu_cores() == 2
    assert host.data_workers(8) == 2  # mindcv's recipes ask for 8
    assert host.data_workers(1) == 1


def test_sink_mode_follows_recipe_in_graph_mode_only():
    assert runtime.resolve_sink_mode(load_config(None, {"dataset_sink_mode": True, "mode": 0})) is True
    assert runtime.resolve_sink_mode(load_config(None, {"dataset_sink_mode": True, "mode": 1})) is False
    assert runtime.resolve_sink_mode(load_config(None, {"dataset_sink_mode": False, "mode": 0})) is False


def test_isa_rule_says_what_it_did():
    flags = host.cpu_flags()
    if host.ISA_ENV in os.environ and "set by user" in host.ISA_SETTING:
        pytest.skip("ONEDNN_MAX_CPU_ISA was set before the tests started")
    if "avx512f" in flags:
        assert os.environ[host.ISA_ENV] == "AVX2"
        assert host.ISA_SETTING.startswith("ONEDNN_MAX_CPU_ISA=AVX2")
    else:
        assert host.ISA_SETTING == "ONEDNN_MAX_CPU_ISA unset (no AVX-512 on this CPU)"


def test_a_user_isa_setting_is_never_overridden():
    code = "import os, mindcv_mobile.host as r; print(os.environ['ONEDNN_MAX_CPU_ISA'], '|', r.ISA_SETTING)"
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "AVX512_CORE | ONEDNN_MAX_CPU_ISA=AVX512_CORE (set by user)"


def test_variant_environments(bench):
    # mindcv "as its users run it" must not get the cap the package would set on import.
    assert bench.variant_env("mindcv")["ONEDNN_MAX_CPU_ISA"] == "ALL"
    assert bench.variant_env("ours_noisa")["ONEDNN_MAX_CPU_ISA"] == "ALL"
    assert bench.variant_env("ours_nokern")["MINDCV_MOBILE_CPU_KERNELS"] == "0"
    for variant in ("ours", "mindcv_isa", "timm", "timm_cl"):
        assert bench.variant_env(variant).get("ONEDNN_MAX_CPU_ISA") == bench.BASE_ENV.get("ONEDNN_MAX_CPU_ISA")


def test_recipe_and_name_lookup(bench):
    assert bench.find_recipe("mobilenet_v3_small_100").endswith("configs/mobilenetv3/mobilenet_v3_small_ascend.yaml")
    assert bench.find_recipe("mobilenet_v2_075").endswith("configs/mobilenetv2/mobilenet_v2_0.75_ascend.yaml")
    # a resolution variant is the same network: its base model's recipe
    assert bench.find_recipe("mobilenet_v2_100_160").endswith("configs/mobilenetv2/mobilenet_v2_1.0_ascend.yaml")
    assert bench.find_recipe("mobilenet_v1_100").endswith("configs/mobilenetv1/mobilenet_v1_1.0_ascend.yaml")
    with pytest.raises(ValueError, match="no recipe for model 'resnet50'"):
        bench.find_recipe("resnet50")
    assert bench.timm_name("mobilenet_v3_large_100") == "mobilenetv3_large_100"
    assert bench.timm_name("mobilenet_v2_100_160") == "mobilenetv2_100"
    assert bench.summarize([3.0, 1.0, 2.0], 10.0) == {"median": 20.0, "min": 10.0, "max": 30.0}


def test_a_missing_package_is_named(bench, monkeypatch):
    real = bench.util.find_spec
    for missing, variant in (("timm", "timm_cl"), ("torch", "timm"), ("mindcv", "mindcv_isa")):
        # Only `missing` is absent (the others count as installed, whether or not they are here).
        monkeypatch.setattr(bench.util, "find_spec", lambda name, m=missing: None if name == m else object())
        assert bench.available(variant).startswith(f"{missing} is not installed (pip install ")
    monkeypatch.setattr(bench.util, "find_spec", real)
    assert bench.available("ours") is None and bench.available("ours_nokern") is None


def test_every_variant_is_measured_against_ours(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--variants", "timm,mindcv_isa", "--no-pipeline", "--no-e2e"])
    assert "--variants must include ours" in capsys.readouterr().err


def _rounds(walls, cpu_scale=0.5):
    return [{"steps": 10, "wall_s": w, "cpu_s": w * cpu_scale, "peak_rss_mb": 100.0} for w in walls]


def _side(walls, params=2.55):
    info = {"params_m": params, "threads": 2, "isa": "AVX2", "cpu_kernels": True, "framework": "x"}
    info["memory_format"] = "NCHW"
    prepare = {p: {"first_s": 1.0, "compile_s": 2.0, "output_shape": None} for p in ("train", "infer", "latency")}
    return {"info": info, "prepare": prepare, "rounds": {p: _rounds(walls) for p in ("train", "infer", "latency")}}


def test_ratios_pair_round_k_with_round_k(bench):
    # Per-round ratio of (peer s/step) / (ours s/step), then the median: not the ratio of medians.
    ours = {"timm_cl": [1.0, 3.0, 2.0], "mindcv_isa": [1.0, 1.0, 1.0]}
    peers = {"timm_cl": [3.0, 3.0, 1.0], "mindcv_isa": [2.0, 2.5, 1.5]}
    duels = [
        {"model": MODEL, "peer": p, "workers": {"ours": _side(ours[p]), p: _side(peers[p])}}
        for p in ("timm_cl", "mindcv_isa")
    ]
    ratios = bench.compute_ratios(duels)[MODEL]["train"]
    for peer in ("timm_cl", "mindcv_isa"):
        expected = np.array(peers[peer]) / np.array(ours[peer])
        got = ratios["vs"][peer]
        assert got["per_round"] == pytest.approx(list(expected))
        assert (got["median"], got["min"], got["max"]) == pytest.approx(
            (np.median(expected), expected.min(), expected.max())
        )
    assert ratios["vs"]["timm_cl"]["median"] == pytest.approx(1.0)  # the ratio of medians would say 1.5
    assert ratios["best_peer"] == "timm_cl"  # lowest median ratio: the fastest relative to ours
    # ours' own row pools its rounds of both duels; throughput is batch / seconds per step
    summary = bench.variant_summary(duels, MODEL, "ours", {"train": 32, "infer": 32, "latency": 1})
    assert summary["processes"] == 2 and summary["train"]["rounds"] == 6
    assert summary["train"]["img_per_s"]["median"] == pytest.approx(
        32 / np.median(ours["timm_cl"] + ours["mindcv_isa"])
    )
    report = {
        "environment": dict(
            bench.environment(), loadavg_end=[0.1, 0.1, 0.1], command="python benchmarks/bench.py --steps 10"
        ),
        "settings": dict(
            batch_size=32,
            image_size=224,
            infer_batch=32,
            warmup=2,
            repeats=3,
            steps=10,
            infer_steps=10,
            latency_steps=50,
        ),
        "variants": ["ours", "timm_cl", "mindcv_isa"],
        "skipped": {},
        "ratios": bench.compute_ratios(duels),
        "summary": {
            MODEL: {
                v: bench.variant_summary(duels, MODEL, v, {"train": 32, "infer": 32, "latency": 1})
                for v in ("ours", "timm_cl", "mindcv_isa")
            }
        },  # fmt: skip
        "quiet": bench.quiet_check(duels),
        "duels": duels,
    }
    table = bench.markdown(report)
    header = next(line for line in table.splitlines() if line.startswith("| model | ours img/s | best peer"))
    assert "ours / timm channels_last" in header and "ours / mindcv + ISA fix" in header
    assert f"| {MODEL} | " in table and "| timm channels_last | 1.00x (0.50-3.00) |" in table
    assert "Smoke setting" not in table and "Busy machine" not in table


def test_a_busy_machine_is_flagged(bench):
    side = _side([1.0, 1.0])
    for phase_rounds in side["rounds"].values():
        for r in phase_rounds:
            r.update(others_cpu_share=0.30, steal_share=0.01, idle_peer_cpu_s=0.0)
    side["rounds"]["train"][1]["loss"] = float("nan")
    quiet = bench.quiet_check([{"model": MODEL, "peer": None, "workers": {"ours": side}}])
    assert quiet["others_cpu_share"]["median"] == pytest.approx(0.30) and quiet["rounds_busy"] == 6
    line = bench.quiet_line(quiet)
    assert "Busy machine" in line and f"Non-finite training loss in: {MODEL} / ours." in line


WORKER_VARIANTS = ["ours", "ours_noisa", "ours_nokern", "mindcv", "mindcv_isa", "timm", "timm_cl"]


def test_every_variant_has_a_worker_test(bench):
    assert sorted(WORKER_VARIANTS) == sorted(bench.VARIANTS)


@pytest.mark.slow  # launches a process that imports a framework, builds a network and trains it
@pytest.mark.parametrize("variant", WORKER_VARIANTS)
def test_the_worker_of_every_variant_runs(bench, variant):
    why = bench.available(variant)
    if why:
        pytest.skip(why)
    _, args = bench.parse_args(TINY + ["--steps", "1"])
    worker = bench.Worker(args, variant, MODEL)
    try:
        info = worker.info
        replies = {}
        for phase in bench.PHASES:
            prepared = worker.request(cmd="prepare", phase=phase)
            rounds = [worker.request(cmd="run", phase=phase, steps=s) for s in (1, 2)]
            replies[phase] = prepared, rounds
    finally:
        worker.close()
    assert worker.proc.returncode == 0
    assert round(info["params_m"], 2) == 2.55  # mindcv's table for v3-small, BN statistics included
    assert info["variant"] == variant and info["model"] == MODEL
    expected_isa = bench.variant_env(variant).get("ONEDNN_MAX_CPU_ISA")
    if variant in ("ours", "ours_nokern", "mindcv_isa") and "avx512f" in host.cpu_flags():
        expected_isa = expected_isa or "AVX2"  # the package's rule, applied in the worker
    assert info["isa"] == (expected_isa or "unset")
    if variant in ("ours", "ours_noisa"):
        from mindcv_mobile import kernels

        assert info["cpu_kernels"] is bool(kernels.library()[0]) and info["threads"] == runtime.cpu_cores()
    else:
        assert info["cpu_kernels"] is False
    assert info["memory_format"] == ("channels_last" if variant == "timm_cl" else "NCHW")
    if variant.startswith("timm") and importlib.util.find_spec("torchvision") is None:
        assert info["framework"].endswith("torchvision stub")  # _import_timm's stand-in, said in the report
    train_prep, train_rounds = replies["train"]
    assert (train_prep["compile_s"] is None) == variant.startswith("timm")
    losses = [r["loss"] for r in train_rounds]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[0] != losses[1]  # the timed calls update the weights
    assert replies["infer"][0]["output_shape"] == [2, 1000] and replies["latency"][0]["output_shape"] == [1, 1000]
    for prepared, rounds in replies.values():
        assert prepared["first_s"] > 0 and [r["steps"] for r in rounds] == [1, 2]
        assert all(r["wall_s"] > 0 and r["cpu_s"] >= 0 and r["peak_rss_mb"] > 100 for r in rounds)


@pytest.mark.slow
def test_driver_writes_paired_rounds_json_and_table(bench, digits_root, tmp_path):
    out = tmp_path / "smoke"
    args = ["--models", MODEL, "--variants", "ours,ours_nokern", "--steps", "1", "--infer-steps", "1"]
    args += ["--latency-steps", "2", "--e2e-steps", "2", "--pipeline-batches", "2", "--data-dir", digits_root]
    env = dict(os.environ)
    if "set by user" not in host.ISA_SETTING:  # the cap the test session's import set: not the user's
        env.pop(host.ISA_ENV, None)
    proc = subprocess.run(
        [sys.executable, BENCH, *TINY, *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    env_info = report["environment"]
    assert env_info["mindspore"].startswith("2.10") and env_info["cores"] == host.cpu_cores()
    assert len(env_info["loadavg_start"]) == 3 and len(env_info["loadavg_end"]) == 3
    assert env_info["command"].startswith("python benchmarks/bench.py --batch-size 2")
    (duel,) = report["duels"]
    assert duel["peer"] == "ours_nokern" and "error" not in duel
    for phase in ("train", "infer", "latency"):
        ours = duel["workers"]["ours"]["rounds"][phase]
        theirs = duel["workers"]["ours_nokern"]["rounds"][phase]
        assert len(ours) == len(theirs) == 2
        ratios = report["ratios"][MODEL][phase]["vs"]["ours_nokern"]
        assert ratios["per_round"] == pytest.approx([t["wall_s"] / o["wall_s"] for o, t in zip(ours, theirs)])
        for r in ours + theirs:
            assert r["others_cpu_share"] is not None and r["steal_share"] is not None
    assert duel["workers"]["ours_nokern"]["info"]["cpu_kernels"] is False
    assert report["quiet"]["idle_peer_cpu_s_max"] is not None
    assert report["e2e"][MODEL]["img_per_s"]["median"] > 0 and report["e2e"][MODEL]["sink_mode"] is True
    assert report["pipeline"]["img_per_s"]["median"] > 0
    table = (tmp_path / "smoke.md").read_text()
    assert "Smoke setting (1 training steps per round" in table
    assert "| ours / ours without compiled kernels |" in table
    assert f"| {MODEL} | ours | 2.55 |" in table


@pytest.mark.slow  # an export subprocess and a timing subprocess per model
def test_onnx_speed_exports_both_graphs_and_times_every_runner(bench, tmp_path):
    """benchmarks/onnx_speed.py on a tiny input: the "after" file is the rewritten one (no
    BatchNormalization, HardSwish present) and every runner of every batch size and policy has its
    rounds and ratios in the JSON and rows in the table. No timing is asserted."""
    for package in ("torch", "timm"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (benchmarks/README.md, Install)")
    out = tmp_path / "onnx"
    argv = ["--models", MODEL, "--image-size", "32", "--batch-sizes", "2,1", "--rounds", "2", "--iters", "1"]
    argv += ["--warmup", "0", "--min-segment-s", "0", "--policies", "default,sleep", "--out", str(out)]
    script = os.path.join(ROOT, "benchmarks", "onnx_speed.py")
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out.with_suffix(".json")).read_text())
    result = report["results"][MODEL]
    files = result["export"]["files"]
    assert files["onnx_before"]["op_types"]["BatchNormalization"] > 0
    assert "BatchNormalization" not in files["onnx_after"]["op_types"]
    assert files["onnx_after"]["op_types"]["HardSwish"] > 0
    assert sorted(result["timing"]) == ["default", "sleep"]
    for timing in result["timing"].values():
        for batch in ("2", "1"):
            row = timing["batches"][batch]
            assert sorted(row["img_per_s"]) == sorted(["onnx_before", "onnx_after", "timm", "timm_cl"])
            assert all(s["n"] == 2 and s["median"] > 0 for s in row["img_per_s"].values())
            assert row["ratios"]["onnx_after/timm_cl"]["n"] == 2
    table = out.with_suffix(".md").read_text()
    # a row per batch size and policy (and again over quiet rounds, when there were any), the graphs' row
    assert table.count(f"| {MODEL} |") >= 2 * 2 + 1
