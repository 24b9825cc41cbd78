"""The speed defaults (runtime.py) and a smoke run of benchmarks/bench.py: every code path the
published numbers come from runs, and its JSON has the fields the README table is built from.
No timing is asserted: the machine is shared."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mindcv_mobile import host, runtime
from mindcv_mobile.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert bench.variant_env("ours").get("ONEDNN_MAX_CPU_ISA") == bench.BASE_ENV.get("ONEDNN_MAX_CPU_ISA")


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


@pytest.mark.slow
def test_smoke_run_writes_json_and_table(bench, digits_root, tmp_path):
    out = tmp_path / "smoke"
    cmd = [
        sys.executable,
        BENCH,
        "--models",
        "mobilenet_v3_small_100",
        "--variants",
        "ours",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--infer-batch",
        "4",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--min-repeat-s",
        "0",
        "--e2e-steps",
        "2",
        "--data-dir",
        digits_root,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "MindSpore 2.10" in proc.stdout and "ONEDNN_MAX_CPU_ISA" in proc.stdout
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["environment"]["mindspore"].startswith("2.10")
    assert report["batch_size"] == 4 and report["image_size"] == 32
    (result,) = report["results"]
    assert result["model"] == "mobilenet_v3_small_100" and result["variant"] == "ours"
    assert round(result["params_m"], 2) == 2.55  # mindcv's table, BN statistics included
    assert result["threads"] == runtime.cpu_cores()
    from mindcv_mobile import kernels

    assert result["cpu_kernels"] is bool(kernels.library()[0])  # what the training path uses
    train = result["train"]
    for stats in (
        train["ms_per_step"],
        train["img_per_s"],
        train["cpu_ms_per_step"],
        result["infer"]["img_per_s"],
        result["latency_b1_ms"],
    ):
        assert 0 < stats["min"] <= stats["median"] <= stats["max"]
    assert train["compile_s"] > 0 and train["first_step_s"] >= train["compile_s"]
    assert result["peak_rss_mb"] > 100  # MindSpore alone maps more than this
    pipeline = report["pipeline"]
    assert pipeline["img_per_s"]["median"] > 0 and pipeline["workers"] == runtime.data_workers(8)
    e2e = report["e2e"]["mobilenet_v3_small_100"]
    assert e2e["img_per_s"]["median"] > 0 and e2e["epochs"] == 2 and e2e["sink_mode"] is True
    assert report["ratios"]["mobilenet_v3_small_100"]["pipeline_vs_train"] > 0
    table = (tmp_path / "smoke.md").read_text()
    assert "| mobilenet_v3_small_100 | ours | 2.55 |" in table
    assert f" | {'yes' if result['cpu_kernels'] else 'no'} | " in table
