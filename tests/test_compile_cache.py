"""The compile cache (``runtime.enable_compile_cache``): what its key follows, the checked saved
folder it keeps (``host.save_folder`` / ``load_saved_folder``), and real graph-mode runs in fresh
processes: a second run loads the saved graph and trains bit for bit as the first, a corrupt or
unreadable cache is compiled afresh."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mindcv_mobile import host, runtime
from mindcv_mobile.config import load_config
from mindcv_mobile.runtime import Runtime, compile_cache_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
CPU = Runtime(device="CPU", mode=0)


def key(overrides=None, rt=CPU, steps=150):
    return compile_cache_key(load_config(RECIPE, {"device_target": "CPU", **(overrides or {})}), rt, steps)


# ------------------------------------------------------------------------------------ the key
@pytest.mark.parametrize(
    "name, value",
    [("model", "mobilenet_v3_large_100"), ("batch_size", 16), ("amp_level", "O2"), ("image_resize", 96)],
)
def test_key_changes_with_a_graph_key(name, value):
    assert load_config(RECIPE)[name] != value
    assert key({name: value}) != key()


@pytest.mark.parametrize("name, value", [("data_dir", "/elsewhere/digits"), ("epoch_size", 99), ("log_interval", 3)])
def test_key_ignores_paths_epochs_and_intervals(name, value):
    assert load_config(RECIPE)[name] != value
    assert key({name: value}) == key()


def test_key_follows_schedule_length_rank_and_sink_mode():
    # The LR schedule's length is a shape in the graph (a longer schedule fails at the old length).
    assert key(steps=151) != key()
    assert key(rt=Runtime(device="CPU", mode=0, rank=1, group_size=2, distribute=True)) != key()
    # In sink mode epoch_size and log_interval may set the sink's length: kept in the key there.
    sink = {"dataset_sink_mode": True}
    assert key({**sink, "epoch_size": 99}) != key(sink)
    assert key({**sink, "log_interval": 3}) != key(sink)


def test_key_changes_with_the_package_sources(monkeypatch):
    before = key()
    monkeypatch.setattr(runtime, "package_digest", lambda: "0" * 64)
    assert key() != before


def test_package_digest_reads_names_and_contents(tmp_path):
    digest = runtime.package_digest.__wrapped__  # uncached
    for copy in ("a", "b"):
        shutil.copytree(os.path.join(ROOT, "mindcv_mobile", "kernels"), tmp_path / copy)
    assert digest(str(tmp_path / "a")) == digest(str(tmp_path / "b"))  # the same sources elsewhere
    source = tmp_path / "b" / "cpu_kernels.cc"
    source.write_text(source.read_text() + "\n// changed\n")
    assert digest(str(tmp_path / "a")) != digest(str(tmp_path / "b"))
    (tmp_path / "a" / "notes.txt").write_text("not a source file")
    (tmp_path / "a" / "__init__.py").rename(tmp_path / "a" / "init.py")
    assert digest(str(tmp_path / "a")) != digest(str(tmp_path / "b"))


# ------------------------------------------------------------------------------------ the saved folder
def graph_zero(name):
    return not runtime._LATER_GRAPH.search(name)


def fake_work(folder):
    files = {
        "rank_0/graph_cache/compile_cache_0.mindir": b"graph zero",
        "rank_0/graph_cache/compile_cache_1.mindir": b"validation graph",
        "rank_0/graph_cache/compile_cache_12.mindir": b"another graph",
        "rank_0/graph_cache/compile_dependency.hash": b"0123abcd",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def test_only_graph_zero_is_saved_with_its_sha256(tmp_path):
    work, saved = host.work_folder(tmp_path), tmp_path / "key"
    files = fake_work(work)
    assert host.save_folder(work, saved, graph_zero, ".mindir") is True
    assert not work.exists()
    kept = ("rank_0/graph_cache/compile_cache_0.mindir", "rank_0/graph_cache/compile_dependency.hash")
    manifest = json.loads((saved / host.MANIFEST).read_text())
    assert manifest == {rel: hashlib.sha256(files[rel]).hexdigest() for rel in kept}
    again = host.work_folder(tmp_path)
    assert host.load_saved_folder(saved, again) is True
    assert {p.relative_to(again).as_posix(): p.read_bytes() for p in again.rglob("*") if p.is_file()} == {
        rel: files[rel] for rel in kept
    }
    # The same graph again: the saved folder is left as it is; no mindir: nothing to save.
    mtime = (saved / host.MANIFEST).stat().st_mtime_ns
    assert host.save_folder(again, saved, graph_zero, ".mindir") is False
    assert (saved / host.MANIFEST).stat().st_mtime_ns == mtime
    empty = host.work_folder(tmp_path)
    (empty / "compile_dependency.hash").write_bytes(b"x")
    assert host.save_folder(empty, tmp_path / "other", graph_zero, ".mindir") is False
    assert not (tmp_path / "other").exists()
    assert host.load_saved_folder(tmp_path / "other", tmp_path) is False


def test_a_corrupt_or_odd_saved_folder_is_refused_and_nothing_copied(tmp_path):
    work = host.work_folder(tmp_path)
    fake_work(work)
    saved = tmp_path / "key"
    host.save_folder(work, saved, graph_zero, ".mindir")
    graph = saved / "rank_0/graph_cache/compile_cache_0.mindir"
    target = host.work_folder(tmp_path)
    graph.write_bytes(b"graph zerO")
    with pytest.raises(ValueError, match="compile_cache_0.mindir is not the file saved there"):
        host.load_saved_folder(saved, target)
    assert list(target.iterdir()) == []
    (saved / host.MANIFEST).write_text(json.dumps({"../../escape": "0" * 64}))
    with pytest.raises(ValueError, match="outside the folder"):
        host.load_saved_folder(saved, target)
    (saved / host.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError):
        host.load_saved_folder(saved, target)
    shutil.rmtree(saved)
    saved.write_text("a file where the folder should be")
    with pytest.raises(OSError):
        host.load_saved_folder(saved, target)
    # Saving replaces it, whatever it was.
    work = host.work_folder(tmp_path)
    fake_work(work)
    assert host.save_folder(work, saved, graph_zero, ".mindir") is True
    assert host.load_saved_folder(saved, target) is True


def test_work_folders_of_ended_processes_are_removed(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".work" / f"{host.socket.gethostname()}.{int(ended.stdout)}.abc"
    stale.mkdir(parents=True)
    (tmp_path / ".work" / f"{stale.name}.def.old").write_text("left by a save the process did not finish")
    other_host = tmp_path / ".work" / f"elsewhere.{int(ended.stdout)}.abc"
    other_host.mkdir()
    mine = host.work_folder(tmp_path)
    assert sorted(p.name for p in (tmp_path / ".work").iterdir()) == sorted([other_host.name, mine.name])
    assert host.work_folder(tmp_path) != mine and mine.exists()  # a live process keeps its folder


def test_cache_off_cases_leave_mindspore_alone(monkeypatch):
    monkeypatch.delenv("MS_COMPILER_CACHE_ENABLE", raising=False)
    # A graph-mode train() earlier in this process (another test) holds the process's cache folder.
    monkeypatch.setattr(runtime, "_COMPILE_CACHE", {})
    cfg = load_config(RECIPE, {"device_target": "CPU"})
    pynative = load_config(RECIPE, {"device_target": "CPU", "mode": 1})
    assert runtime.enable_compile_cache(pynative, CPU, 10) == "compile cache: off (PyNative mode compiles no graph)"
    cfg["compile_cache"] = False
    assert runtime.enable_compile_cache(cfg, CPU, 10) == "compile cache: off (compile_cache: False)"
    del cfg["compile_cache"]
    monkeypatch.setattr(runtime, "_USER_CACHE_ENV", {"MS_COMPILER_CACHE_ENABLE": "1"})
    assert "MS_COMPILER_CACHE_ENABLE=1 set in the environment" in runtime.enable_compile_cache(cfg, CPU, 10)
    monkeypatch.setattr(runtime, "_USER_CACHE_ENV", {})
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert "no script file started this process" in runtime.enable_compile_cache(cfg, CPU, 10)
    monkeypatch.setattr(runtime, "_COMPILE_CACHE", {"key_dir": "k", "work": "w"})
    assert "an earlier run of this process holds it" in runtime.enable_compile_cache(cfg, CPU, 10)
    assert "MS_COMPILER_CACHE_ENABLE" not in os.environ


# ------------------------------------------------------------------------------------ real runs
# A tiny training graph, built as train.py builds it, trained 3 steps on fixed tensors.
SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import mindcv_mobile
    import numpy as np
    import mindspore as ms
    from mindcv_mobile import build, runtime
    from mindcv_mobile.config import load_config

    cfg = load_config(sys.argv[1], dict(device_target="CPU", image_resize=32, batch_size=4, warmup_epochs=0))
    rt = runtime.init_runtime(cfg)
    precision = build.build_precision(cfg, rt.device)
    net = build.build_model(cfg, cpu_kernels=rt.cpu_kernels, amp_level=precision.amp_level)
    lr = build.build_lr_schedule(cfg, 3)
    step = build.build_train_step(cfg, net, build.build_optimizer(cfg, net, lr), precision)
    note = runtime.enable_compile_cache(cfg, rt, len(lr)) if sys.argv[2] == "on" else "off"
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 10, 4).astype(np.int32))
    losses = [float(step(x, y).asnumpy()) for _ in range(3)]
    weights = hashlib.sha256(b"".join(p.asnumpy().tobytes() for p in step.get_parameters())).hexdigest()
    print(json.dumps({"note": note, "losses": losses, "weights": weights}))
    """
)


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compile_cache")
    (folder / "train_tiny.py").write_text(SCRIPT)
    env = dict(os.environ, MINDCV_MOBILE_HOME=str(folder / "home"))
    for name in runtime.MS_CACHE_ENV:
        env.pop(name, None)
    kernels = host.cache_dir() / "kernels"
    (folder / "home").mkdir()
    if kernels.is_dir():  # the compiled kernels of this machine, not built again
        (folder / "home" / "kernels").symlink_to(kernels)
    else:
        env["MINDCV_MOBILE_CPU_KERNELS"] = "0"
    return folder, env


def run(cache_home, cache="on") -> dict:
    folder, env = cache_home
    cmd = [sys.executable, str(folder / "train_tiny.py"), RECIPE, cache]
    proc = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def saved_folder(note: str):
    return Path(note.split("compile cache: ", 1)[1].split(" ")[0])


def assert_saved_intact(folder):
    manifest = json.loads((folder / host.MANIFEST).read_text())
    assert any(rel.endswith("compile_cache_0.mindir") for rel in manifest)
    for rel, digest in manifest.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest


@pytest.fixture(scope="module")
def first_runs(cache_home):
    return run(cache_home, "off"), run(cache_home), run(cache_home)


@pytest.mark.slow
def test_second_run_loads_the_graph_and_trains_bit_for_bit(first_runs):
    off, cold, warm = first_runs
    assert off["note"] == "off"
    assert cold["note"].endswith("(new)") and warm["note"].endswith("(hit)"), (cold["note"], warm["note"])
    assert saved_folder(cold["note"]) == saved_folder(warm["note"])
    assert_saved_intact(saved_folder(cold["note"]))
    for other in (cold, warm):
        assert other["losses"] == off["losses"] and other["weights"] == off["weights"]
    assert not list((saved_folder(cold["note"]).parent / ".work").iterdir())  # work folders removed at exit


@pytest.mark.slow
def test_a_corrupt_cache_is_compiled_afresh_with_the_same_results(cache_home, first_runs):
    off = first_runs[0]
    folder = saved_folder(first_runs[1]["note"])
    graph = next(folder.rglob("compile_cache_0.mindir"))
    graph.chmod(0o600)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
    graph.write_bytes(bytes(data))
    corrupt = run(cache_home)
    assert "unreadable (rank_0/graph_cache/compile_cache_0.mindir is not the file saved there" in corrupt["note"]
    assert_saved_intact(folder)  # saved again at exit
    # Garbage that matches its recorded sha256 gets past the check: MindSpore refuses it and compiles.
    graph = next(folder.rglob("compile_cache_0.mindir"))
    graph.chmod(0o600)
    graph.write_bytes(b"not a graph")
    manifest = json.loads((folder / host.MANIFEST).read_text())
    manifest[graph.relative_to(folder).as_posix()] = hashlib.sha256(b"not a graph").hexdigest()
    (folder / host.MANIFEST).write_text(json.dumps(manifest))
    garbage = run(cache_home)
    assert garbage["note"].endswith("(hit)")
    shutil.rmtree(folder)
    folder.write_text("a file where the folder should be")
    not_a_folder = run(cache_home)
    assert "unreadable" in not_a_folder["note"] and folder.is_dir()
    for result in (corrupt, garbage, not_a_folder):
        assert result["losses"] == off["losses"] and result["weights"] == off["weights"]
    assert_saved_intact(folder)
    assert run(cache_home)["note"].endswith("(hit)")
