"""data/index.py: the stored index of an ImageFolder split, built once, loaded by later processes.

The reference listing of every test tree is os.walk's (written here, independent of the scan). An
index is valid while the mtimes of the split folder, its class folders and the folders inside them
are unchanged: adding a file to any of them is noticed; replacing a file's content in place changes
no folder and is not (documented in index.py; the reader still skips a file that fails at read
time). "Another process" is either a real one (fork) or this one with the in-process memo cleared.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from mindcv_mobile.data import create_dataset, image_files, image_folder, index
from mindcv_mobile.data.image_folder import PathTable, load_index

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def encoded(seed: int, fmt: str = "JPEG", **kw) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kw)
    return buf.getvalue()


def bad_huffman_jpeg() -> bytes:
    """Both end markers intact, a Huffman table claiming more codes than fit: what MindSpore
    2.10's Decode kills the process on, so the scan must skip it."""
    data = bytearray(encoded(0, quality=90))
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(data)


BAD = {
    "train/emu/huffman.jpg": bad_huffman_jpeg(),
    "train/emu/truncated.jpg": encoded(1)[:200],
    "train/emu/truncated.png": encoded(2, "PNG")[:100],
    "train/emu/html.jpg": b"<html>404 not found</html>",
    "train/emu/empty.png": b"",
}


def write(root, rel: str, data: bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def tree(root) -> str:
    """A split with nested, hidden and non-image entries, a re-encoded WebP, a progressive JPEG
    and the BAD files; returns its split folder."""
    files = {
        "train/cat/b.jpg": encoded(3),
        "train/cat/A.JPEG": encoded(4, quality=70),
        "train/cat/notes.txt": b"not an image",
        "train/cat/.hidden.jpg": encoded(5),
        "train/cat/sub/c.png": encoded(6, "PNG"),
        "train/cat/sub/deeper/d.jpg": encoded(7, optimize=True),
        "train/cat/.git/e.jpg": encoded(8),
        "train/dog/f.webp": encoded(9, "WEBP", lossless=True),
        "train/dog/g.jpg": encoded(10, progressive=True),
        "train/emu/ok.jpg": encoded(11),
        "train/.cache/h.jpg": encoded(12),
        "train/README.md": b"# not a class",
        **BAD,
    }
    for rel, data in files.items():
        write(root, rel, data)
    return os.path.join(str(root), "train")


def walk_listing(split_dir: str) -> list[tuple[str, int]]:
    """(path relative to the split, class position) of every image-extension file, os.walk's way."""
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)) and d[0] != ".")
    rows = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, name), followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and f.lower().endswith(EXTENSIONS):
                    rows.append((os.path.relpath(os.path.join(dirpath, f), split_dir), label))
    return rows


def contents(scan) -> list:
    """(relative path, folder, reencode) of every file of an index.SplitScan."""
    table = PathTable(scan.split_dir, scan.paths)
    return [(table.relative(i), int(f), bool(r)) for i, (f, r) in enumerate(zip(scan.folder, scan.reencode))]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(image_folder, "_LOADED", {})


def other_process(monkeypatch) -> None:
    """What a new process has: no index in memory."""
    monkeypatch.setattr(image_folder, "_LOADED", {})


# --------------------------------------------------------------------------- contents
def test_index_equals_an_os_walk_listing_and_is_stored_beside_the_split(tmp_path, monkeypatch, caplog):
    split_dir = tree(tmp_path / "data")
    bad = {os.path.relpath(os.path.join(tmp_path, "data", rel), split_dir) for rel in BAD}
    expected = [(rel, label) for rel, label in walk_listing(split_dir) if rel not in bad]
    assert [rel for rel, _ in expected] == [
        "cat/A.JPEG", "cat/b.jpg", "cat/sub/c.png", "cat/sub/deeper/d.jpg", "dog/f.webp", "dog/g.jpg", "emu/ok.jpg",
    ]  # fmt: skip
    built = load_index(str(tmp_path / "data"), "train")
    assert built.origin == "scan" and built.classes == ["cat", "dog", "emu"]
    assert [(os.path.relpath(p, split_dir), int(y)) for p, y in zip(built.paths, built.labels)] == expected
    assert built.reencode.tolist() == [rel.endswith(".webp") for rel, _ in expected]
    stored = tmp_path / "data" / ".mindcv_mobile_index-train.npz"
    assert stored.is_file() and sorted(os.listdir(split_dir)) == [".cache", "README.md", "cat", "dog", "emu"]
    other_process(monkeypatch)
    loaded = load_index(str(tmp_path / "data"), "train")
    assert loaded.origin == str(stored)
    assert list(loaded.paths) == list(built.paths) and loaded.labels.tolist() == built.labels.tolist()
    assert loaded.reencode.tolist() == built.reencode.tolist()
    # the run's class list relabels a loaded index as it does a scan
    relabelled = load_index(str(tmp_path / "data"), "train", classes=["ant", "cat", "dog", "emu"])
    assert relabelled.labels.tolist() == [label + 1 for _, label in expected]
    # the "imagenet" reader of create_dataset reads through it
    other_process(monkeypatch)
    with caplog.at_level(logging.INFO, logger="mindcv_mobile.data"):
        dataset = create_dataset("imagenet", str(tmp_path / "data"), "train", shuffle=False)
    assert dataset.get_dataset_size() == len(expected) and f"index loaded from {stored}" in caplog.text
    labels = [int(label) for _, label in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    assert labels == [label for _, label in expected]


def test_scan_in_worker_processes_equals_scan_in_one(tmp_path, monkeypatch):
    split_dir = tree(tmp_path / "data")
    serial = index.scan_split(split_dir, ["cat", "dog", "emu"], workers=1)
    real_probe, log = image_files.probe_image, tmp_path / "probed_by"

    def logged_probe(path):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real_probe(path)

    monkeypatch.setattr(image_files, "probe_image", logged_probe)
    monkeypatch.setattr(image_files, "_SERIAL_SECONDS", 0.0)  # every folder goes to the worker processes
    pooled = index.scan_split(split_dir, ["cat", "dog", "emu"], workers=2)
    assert os.getpid() not in {int(pid) for pid in log.read_text().split()}
    assert contents(pooled) == contents(serial) and pooled.skipped == serial.skipped
    assert pooled.subdirs == serial.subdirs and [rel for rel, _ in serial.subdirs] == ["cat/sub", "cat/sub/deeper"]


def test_path_table_indexes_like_a_list(tmp_path):
    names = ["a/x.jpg", "b/ünï cödé.png", "c/d/e.jpg"]
    table = PathTable(str(tmp_path), b"".join(os.fsencode(n) + b"\0" for n in names))
    listed = [os.path.join(str(tmp_path), n) for n in names]
    assert len(table) == 3 and list(table) == listed and table[-1] == listed[-1] and table[1:] == listed[1:]
    assert table[np.int64(1)] == listed[1]
    with pytest.raises(IndexError):
        table[3]
    assert len(PathTable(str(tmp_path), b"")) == 0


def test_bad_files_are_skipped_named_and_named_again_when_loaded(tmp_path, monkeypatch, caplog):
    tree(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="mindcv_mobile.data"):
        built = load_index(str(tmp_path / "data"), "train")
    messages = [r.getMessage() for r in caplog.records]
    for rel in BAD:
        name = os.path.basename(rel)
        assert len([m for m in messages if f"emu/{name}: " in m]) == 1, (name, messages)
        assert (os.path.join(str(tmp_path / "data"), rel), name) in [(p, os.path.basename(p)) for p, _ in built.skipped]
    assert dict((os.path.basename(p), why) for p, why in built.skipped)["empty.png"] == "empty file"
    caplog.clear()
    other_process(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mindcv_mobile.data"):
        loaded = load_index(str(tmp_path / "data"), "train")
    assert loaded.origin.endswith(".npz") and sorted(loaded.skipped) == sorted(built.skipped)
    (line,) = [r.getMessage() for r in caplog.records]  # one line: count and the first names
    assert line.startswith(f"skipping 5 unusable files under {loaded.split_dir}, named when its index")
    assert "'emu/empty.png', 'emu/html.jpg', 'emu/huffman.jpg', 'emu/truncated.jpg', 'emu/truncated.png'" in line


# --------------------------------------------------------------------------- validity
def test_a_file_added_to_any_folder_invalidates_the_index(tmp_path, monkeypatch):
    split_dir = tree(tmp_path / "data")
    stored = str(tmp_path / "data" / ".mindcv_mobile_index-train.npz")
    assert index.build_index(split_dir)[0].origin == "scan"
    assert index.build_index(split_dir)[0].origin == stored
    for rel in ("train/dog/new.jpg", "train/cat/sub/deeper/new.jpg", "train/zebra/new.jpg"):
        write(tmp_path / "data", rel, encoded(20))
        why = index.read_index(stored, split_dir, index.folder_stamp(split_dir))[1]
        assert why in ("class folder 'dog' changed (1 in all)", "folder 'cat/sub/deeper' changed") or why.startswith(
            "class folders added or removed (3 then, 4 now)"
        ), why
        scan = index.build_index(split_dir)[0]
        assert scan.origin == "scan" and os.path.relpath(rel, "train") in [r for r, _, _ in contents(scan)]
        other_process(monkeypatch)
        assert [p for p, _ in walk_listing(split_dir) if p.endswith("new.jpg")] == [
            r for r, _, _ in contents(index.build_index(split_dir)[0]) if r.endswith("new.jpg")
        ]
    # Not noticed, as documented: new content under an existing name changes no folder's mtime.
    write(tmp_path / "data", "train/dog/new.jpg", b"<html>gone</html>")
    assert index.build_index(split_dir)[0].origin == stored


def test_read_only_data_folder_keeps_the_index_in_the_cache_folder(tmp_path, monkeypatch):
    split_dir = tree(tmp_path / "data")
    root = str(tmp_path / "data")
    if os.geteuid() == 0:  # root writes into any mode: make the folder immutable instead
        if subprocess.run(["chattr", "+i", root], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available to make a folder read-only for root")
        undo = ["chattr", "-i", root]
    else:
        os.chmod(root, 0o555)
        undo = ["chmod", "755", root]
    try:
        with pytest.raises(OSError):
            open(os.path.join(root, "probe"), "w").close()
        scan, path = index.build_index(split_dir)
        loaded, path_again = index.build_index(split_dir)
    finally:
        subprocess.run(undo, check=True)
    cache_file = index.index_locations(split_dir)[1]
    assert path == path_again == cache_file == loaded.origin and scan.origin == "scan"
    assert os.path.dirname(cache_file) == str(tmp_path / "cache" / "image_folder_index")
    assert sorted(os.listdir(root)) == ["train"]  # nothing written beside the data
    assert contents(loaded) == contents(scan)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "inconsistent arrays", "other folder"])
def test_corrupt_or_partial_index_is_rebuilt(tmp_path, damage):
    split_dir = tree(tmp_path / "data")
    scan, stored = index.build_index(split_dir)
    with open(stored, "rb") as f:
        data = f.read()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = data[:100] + bytes(200) + data[300:]
    elif damage == "empty":
        data = b""
    if damage in ("inconsistent arrays", "other folder"):
        meta = json.loads(np.load(stored)["meta"].tobytes())
        meta["split_dir"] = "/elsewhere/train" if damage == "other folder" else split_dir
        np.savez(stored, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), paths=np.zeros(3, np.uint8),
                 folder=np.zeros(5, np.int32), reencode=np.zeros(5, bool))  # fmt: skip
    else:
        with open(stored, "wb") as f:
            f.write(data)
    why = index.read_index(stored, split_dir, index.folder_stamp(split_dir))[1]
    assert why.startswith(
        {"other folder": "it indexes /elsewhere", "inconsistent arrays": "inconsistent"}.get(damage, "unreadable")
    )
    rebuilt, path = index.build_index(split_dir)
    assert rebuilt.origin == "scan" and path == stored and contents(rebuilt) == contents(scan)
    assert index.build_index(split_dir)[0].origin == stored


# --------------------------------------------------------------------------- one scan for many processes
def _start_together(barrier, results, split_dir):
    barrier.wait()
    scan, path = index.build_index(split_dir, workers=1)
    results.put((os.getpid(), scan.origin, path, hashlib.md5(repr(contents(scan)).encode()).hexdigest()))


def test_processes_starting_together_scan_once(tmp_path, monkeypatch):
    split_dir = tree(tmp_path / "data")
    real_probe = image_files.probe_image

    def slow_probe(path):  # a scan long enough for every process to find it under way
        time.sleep(0.05)
        return real_probe(path)

    monkeypatch.setattr(image_files, "probe_image", slow_probe)  # inherited by the forked processes
    ctx = multiprocessing.get_context("fork")
    count = 4
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_start_together, args=(barrier, results, split_dir)) for _ in range(count)]
    for p in procs:
        p.start()
    found = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    stored = str(tmp_path / "data" / ".mindcv_mobile_index-train.npz")
    origins = [origin for _, origin, _, _ in found]
    assert origins.count("scan") == 1 and origins.count(stored) == count - 1, found
    assert {path for _, _, path, _ in found} == {stored} and len({digest for *_, digest in found}) == 1
    reference = [rel for rel, _ in walk_listing(split_dir) if f"train/{rel}" not in BAD]
    assert [rel for rel, _, _ in contents(index.build_index(split_dir)[0])] == reference
    assert not os.path.exists(stored[: -len(".npz")] + ".lock")


def _lock_file(split_dir: str, pid: int, host: str, age: float = 0.0) -> str:
    lock = index.index_locations(split_dir)[0][: -len(".npz")] + ".lock"
    with open(lock, "w") as f:
        json.dump({"pid": pid, "host": host, "token": "t", "since": time.time() - age}, f)
    os.utime(lock, (time.time() - age, time.time() - age))
    return lock


def test_a_dead_or_silent_holder_s_lock_is_taken_over(tmp_path, caplog):
    split_dir = tree(tmp_path / "data")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process
    lock = _lock_file(split_dir, gone.pid, index._host())
    with caplog.at_level(logging.WARNING, logger="mindcv_mobile.data"):
        scan, _ = index.build_index(split_dir, rebuild=True)
    assert scan.origin == "scan" and not os.path.exists(lock)
    assert f"taking over the lock {lock}: process {gone.pid} on " in caplog.text and "is gone" in caplog.text
    # a live process on another host that stopped touching its lock a while ago
    lock = _lock_file(split_dir, os.getpid(), "elsewhere", age=index.STALE_SECONDS + 5)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mindcv_mobile.data"):
        assert index.build_index(split_dir, rebuild=True)[0].origin == "scan"
    assert "has not touched it for" in caplog.text and not os.path.exists(lock)


def test_a_waiter_that_times_out_scans_itself(tmp_path, caplog):
    split_dir = tree(tmp_path / "data")
    lock = _lock_file(split_dir, os.getpid(), index._host())  # alive, fresh: a holder at work
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="mindcv_mobile.data"):
        scan, path = index.build_index(split_dir, timeout=0.5)
    assert 0.5 <= time.perf_counter() - start < 10 and scan.origin == "scan" and os.path.isfile(path)
    assert f"waited 0 s for the index of {split_dir} (lock {lock}); scanning here" in caplog.text
    assert os.path.exists(lock)  # not ours to remove
    os.remove(lock)


# --------------------------------------------------------------------------- command line
def test_command_line_builds_and_reports(tmp_path, capsys):
    tree(tmp_path / "data")
    assert index.main([str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out.splitlines()
    split_dir = os.path.join(str(tmp_path / "data"), "train")
    assert out[0] == f"{split_dir}: 3 classes (0 without images), 7 images (1 re-encoded via PIL), 5 skipped"
    names = ("empty.png", "html.jpg", "huffman.jpg", "truncated.jpg", "truncated.png")
    assert [line.split(": ", 1)[0] for line in out[1:6]] == [f"  skipped emu/{name}" for name in names]
    assert out[1].endswith(": empty file") and all(": not a decodable image (" in line for line in out[2:6])
    stored = os.path.join(str(tmp_path / "data"), ".mindcv_mobile_index-train.npz")
    assert out[6].startswith(f"index written to {stored} in ") and out[6].endswith(" s") and len(out) == 7
    assert index.main([str(tmp_path / "data"), "--split", "val"]) == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert err == (
        f"python -m mindcv_mobile.data.index: error: split folder '{tmp_path / 'data' / 'val'}' not found; "
        "expected DIR/<split>/<class_name>/<images>"
    )


def test_module_runs_with_help_and_without_warnings(tmp_path):
    tree(tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "train" / "emu")
    run = subprocess.run(
        [sys.executable, "-m", "mindcv_mobile.data.index", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    )
    assert run.returncode == 0 and "Warning" not in run.stderr, run.stderr
    assert run.stdout.splitlines()[0].endswith(
        "2 classes (0 without images), 6 images (1 re-encoded via PIL), 0 skipped"
    )
    with pytest.raises(SystemExit) as done:
        index.main(["--help"])
    assert done.value.code == 0


def test_benchmark_measurements_run_on_a_small_tree(tmp_path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    spec = importlib.util.spec_from_file_location("dataset_index_bench", os.path.join(path, "dataset_index.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tree(tmp_path / "data")
    rows = {mode: bench.child(mode, str(tmp_path / "data")) for mode in ("cold", "build", "warm")}
    assert {row["files"] for row in rows.values()} == {12} and rows["build"]["index_mb"] > 0
    assert rows["warm"]["index_arrays_mb"] > 0 and all(row["seconds"] > 0 for row in rows.values())
    env = {"date": "d", "cpu": "c", "cores": 2, "python": "3", "loadavg_start": [1], "loadavg_end": [1], "command": "x"}
    table = [{"tree": "t", "label": "after", "mode": m, "runs": [row, row]} for m, row in rows.items()]
    text = bench.markdown({"environment": env, "table": table})
    assert text.count("\n| t | after | ") == 3 and "| 12 |" in text
