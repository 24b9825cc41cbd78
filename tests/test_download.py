"""download.py, pretrained weights and dataset_download, served from a local HTTP server.

Every url is redirected by $MINDCV_MOBILE_DOWNLOAD_BASE to http.server on 127.0.0.1; nothing
here reaches another host. The references are the bytes / numpy arrays each test wrote.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import logging
import os
import socket
import struct
import tarfile
import threading

import numpy as np
import pytest

from mindcv_mobile.data import cifar, create_dataset, mnist
from mindcv_mobile.download import (
    DOWNLOAD_BASE_ENV,
    ArchiveError,
    DownloadError,
    download,
    ensure_file,
    extract,
    resolve_url,
)

SHORT = "short.bin"  # served with a Content-Length larger than its body: a cut connection


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def translate_path(self, path):  # /<any folders>/<name> serves <folder>/<name>
        return os.path.join(self.directory, path.split("?", 1)[0].rsplit("/", 1)[-1])

    def do_GET(self):
        if self.path.endswith("/" + SHORT):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder served at $MINDCV_MOBILE_DOWNLOAD_BASE, that base url)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/mirror"
    monkeypatch.setenv(DOWNLOAD_BASE_ENV, base)
    yield folder, base
    server.shutdown()
    server.server_close()
    thread.join(5)


def dead_base() -> str:
    """An url of a port on 127.0.0.1 that nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


ORIGIN = "https://download.mindspore.cn/toolkits/mindcv/some/folder/"


# --------------------------------------------------------------------------- download()
def test_base_env_keeps_only_the_file_name(monkeypatch):
    url = "https://download.mindspore.cn/toolkits/mindcv/mobilenet/mobilenetv3/mobilenet_v3_small_100-509c6047.ckpt"
    monkeypatch.delenv(DOWNLOAD_BASE_ENV, raising=False)
    assert resolve_url(url) == url
    for base in ("http://127.0.0.1:8000/x", "http://127.0.0.1:8000/x/"):
        monkeypatch.setenv(DOWNLOAD_BASE_ENV, base)
        assert resolve_url(url) == "http://127.0.0.1:8000/x/mobilenet_v3_small_100-509c6047.ckpt"
    assert resolve_url(url + "?raw=1") == "http://127.0.0.1:8000/x/mobilenet_v3_small_100-509c6047.ckpt"


def test_download_writes_the_bytes_and_shows_progress(served, tmp_path, monkeypatch, caplog):
    folder, base = served
    data = blob(300 * 1024)
    (folder / "weights.bin").write_bytes(data)
    dest = tmp_path / "out" / "weights.bin"
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    with caplog.at_level(logging.INFO, logger="mindcv_mobile.download"):
        assert download(ORIGIN + "weights.bin", dest, sha256_prefix=sha(data)[:10]) == str(dest)
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["weights.bin"]  # no temporary file left
    bar = tty.getvalue()
    assert "weights.bin" in bar and "100.0%" in bar and "300.0 KiB / 300.0 KiB" in bar and "ETA" in bar
    assert bar.endswith("\n")
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"downloading {base}/weights.bin") for m in logged)
    assert any(m.startswith(f"downloaded {dest}") for m in logged)
    # Not a terminal: no bar at all (the start/end lines still go to logging).
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    download(ORIGIN + "weights.bin", tmp_path / "again.bin")
    assert plain.getvalue() == "" and (tmp_path / "again.bin").read_bytes() == data


def test_bad_hash_leaves_nothing(served, tmp_path):
    folder, base = served
    data = blob(5000)
    (folder / "w.bin").write_bytes(data)
    out = tmp_path / "out"
    wrong = "0" * 8 if not sha(data).startswith("0") else "f" * 8
    with pytest.raises(DownloadError) as err:
        download(ORIGIN + "w.bin", out / "w.bin", sha256_prefix=wrong)
    msg = str(err.value)
    assert (
        msg == f"{base}/w.bin (${DOWNLOAD_BASE_ENV} mirror of {ORIGIN}w.bin) has sha256 {sha(data)[:8]}..., "
        f"expected {wrong}...; nothing was written to {out / 'w.bin'}"
    )
    assert os.listdir(out) == []
    # An existing file there is kept as it was.
    (out / "w.bin").write_bytes(b"old")
    with pytest.raises(DownloadError):
        download(ORIGIN + "w.bin", out / "w.bin", sha256_prefix=wrong)
    assert os.listdir(out) == ["w.bin"] and (out / "w.bin").read_bytes() == b"old"
    with pytest.raises(ValueError, match="sha256_prefix must be up to 64 hex digits"):
        download(ORIGIN + "w.bin", out / "x.bin", sha256_prefix="xyz")


@pytest.mark.parametrize("case", ["404", "server down", "cut connection"])
def test_failed_download_is_one_line_and_leaves_nothing(served, tmp_path, monkeypatch, case):
    folder, base = served
    name = {"404": "missing.bin", "server down": "w.bin", "cut connection": SHORT}[case]
    if case == "server down":
        base = dead_base()
        monkeypatch.setenv(DOWNLOAD_BASE_ENV, base)
    dest = tmp_path / "out" / name
    with pytest.raises(DownloadError) as err:
        download(ORIGIN + name, dest)
    msg = str(err.value)
    reason = {
        "404": "HTTP 404 File not found",
        "server down": "Connection refused",
        "cut connection": "interrupted after 1000 ",
    }[case]
    assert msg.startswith(f"cannot download {base}/{name} (${DOWNLOAD_BASE_ENV} mirror of {ORIGIN}{name}): ")
    assert reason in msg and msg.endswith(f"; place the file at {dest} by hand") and "\n" not in msg
    assert isinstance(err.value, FileNotFoundError)  # the file is still missing
    assert os.listdir(dest.parent) == []


def test_ensure_file_keeps_a_file_with_another_hash(served, tmp_path):
    folder, _ = served
    data = blob(2000, seed=1)
    (folder / "a.bin").write_bytes(data)
    path = tmp_path / "a.bin"
    assert ensure_file(ORIGIN + "a.bin", path, sha(data)[:8]) == str(path)
    assert path.read_bytes() == data
    (folder / "a.bin").write_bytes(b"changed upstream")
    assert ensure_file(ORIGIN + "a.bin", path, sha(data)[:8]) == str(path)  # present and right: not fetched
    path.write_bytes(b"corrupt")
    with pytest.raises(
        ValueError,
        match=rf"{path} has sha256 {sha(b'corrupt')[:8]}\.\.\., expected "
        rf"{sha(data)[:8]}\.\.\. .*delete it to download it again",
    ):
        ensure_file(ORIGIN + "a.bin", path, sha(data)[:8])
    assert path.read_bytes() == b"corrupt"


# --------------------------------------------------------------------------- extract()
def _tar(path, entries) -> str:
    """entries: (name, bytes) files, (name, None) folders, (name, "->target") symlinks."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_extract_tar_gz_and_gz(tmp_path):
    dest = tmp_path / "dest"
    archive = _tar(tmp_path / "a.tar.gz", [("top", None), ("top/x.bin", b"xx"), ("top/sub/y.txt", b"why")])
    written = extract(archive, dest)
    assert sorted(written) == sorted([str(dest / "top" / "x.bin"), str(dest / "top" / "sub" / "y.txt")])
    assert (dest / "top" / "x.bin").read_bytes() == b"xx" and (dest / "top" / "sub" / "y.txt").read_bytes() == b"why"
    assert sorted(os.listdir(dest)) == ["top"]  # no staging folder left
    gz = tmp_path / "idx-ubyte.gz"
    gz.write_bytes(gzip.compress(b"payload" * 100))
    assert extract(gz, dest) == [str(dest / "idx-ubyte")]
    assert (dest / "idx-ubyte").read_bytes() == b"payload" * 100


@pytest.mark.parametrize(
    "entry",
    [("../evil.txt", b"x"), ("top/../../evil.txt", b"x"), ("/tmp/evil.txt", b"x"), ("top/link", "->/etc/passwd")],
)
def test_extract_refuses_entries_outside_the_folder(tmp_path, entry):
    dest = tmp_path / "a" / "dest"
    archive = _tar(tmp_path / "bad.tar.gz", [("top/ok.txt", b"ok"), entry])
    with pytest.raises(ArchiveError, match="refusing"):
        extract(archive, dest)
    assert os.listdir(dest) == [] and sorted(os.listdir(tmp_path / "a")) == ["dest"]


def test_extract_damaged_or_unknown_archives(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(blob(5000))[:-40])  # truncated
    with pytest.raises(ArchiveError, match=r"cannot extract .*x\.gz: .*damaged archive"):
        extract(bad, tmp_path / "d")
    assert os.listdir(tmp_path / "d") == []
    junk = tmp_path / "y.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ArchiveError, match="damaged archive"):
        extract(junk, tmp_path / "d")
    (tmp_path / "empty.gz").write_bytes(b"")
    with pytest.raises(ArchiveError, match="the file is empty"):
        extract(tmp_path / "empty.gz", tmp_path / "d")
    with pytest.raises(ArchiveError, match=r"unknown archive type; accepted: \.tar\.gz"):
        extract(tmp_path / "z.zip", tmp_path / "d")


# --------------------------------------------------------------------------- pretrained weights
def test_pretrained_path_downloads_into_the_cache(served, tmp_path, monkeypatch):
    from mindspore import nn

    from mindcv_mobile.models import load_checkpoint, pretrained_path, records, save_checkpoint

    folder, base = served
    net = nn.Dense(3, 2)
    tiny = save_checkpoint(net, str(tmp_path / "tiny.ckpt"))
    data = open(tiny, "rb").read()
    name = f"tiny_net-{sha(data)[:8]}.ckpt"
    (folder / name).write_bytes(data)
    cfg = records.ModelCfg(url=f"https://download.mindspore.cn/toolkits/mindcv/tiny/{name}")
    monkeypatch.setitem(records._REGISTRY, "tiny_net", (lambda **kw: nn.Dense(3, 2), cfg))
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(cache))

    path = pretrained_path("tiny_net")
    assert path == str(cache / name) and os.listdir(cache) == [name]
    loaded = load_checkpoint(path)
    assert np.array_equal(loaded["weight"].asnumpy(), net.weight.asnumpy())
    monkeypatch.setenv(DOWNLOAD_BASE_ENV, dead_base())
    assert pretrained_path("tiny_net") == path  # cached: no network needed

    # Served bytes with another hash: an error, and nothing lands in a fresh cache.
    monkeypatch.setenv(DOWNLOAD_BASE_ENV, base)
    (folder / name).write_bytes(data + b"tampered")
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(fresh))
    with pytest.raises(DownloadError, match=rf"released weights for tiny_net .* expected {sha(data)[:8]}\.\.\."):
        pretrained_path("tiny_net")
    assert not fresh.exists() or os.listdir(fresh) == []
    # Offline: one line naming the url and where to put the file.
    monkeypatch.setenv(DOWNLOAD_BASE_ENV, dead_base())
    with pytest.raises(DownloadError) as err:
        pretrained_path("tiny_net")
    assert f"mirror of {cfg.url}" in str(err.value) and f"place the file at {fresh / name} by hand" in str(err.value)
    # A cached file with another hash stays an error and stays in place.
    (fresh / name).write_bytes(data[:-1] + b"!")
    with pytest.raises(ValueError, match=rf"expected {sha(data)[:8]}.*delete it"):
        pretrained_path("tiny_net")
    assert (fresh / name).exists()


# --------------------------------------------------------------------------- dataset_download
def _records(n: int, label_bytes: int, seed: int) -> np.ndarray:
    """n CIFAR records: random labels, pixels that compress well yet differ per row."""
    rng = np.random.default_rng(seed)
    rec = np.tile((np.arange(label_bytes + 3072) * 7 % 256).astype(np.uint8), (n, 1))
    rec[:, :label_bytes] = rng.integers(0, 10 if label_bytes == 1 else 20, (n, label_bytes))
    if label_bytes == 2:
        rec[:, 1] = rng.integers(0, 100, n)
    rec[:, label_bytes] = np.arange(n) % 256
    rec[:, label_bytes + 1] = np.arange(n) // 256
    rec[:, label_bytes + 500 : label_bytes + 504] = rng.integers(0, 256, (n, 4))
    return rec


def _all_rows(dataset):
    got = list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    return np.stack([img for img, _ in got]), np.array([int(lab) for _, lab in got])


def _hwc(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_dataset_download_cifar(served, tmp_path, monkeypatch, name):
    folder, base = served
    fmt = cifar.CIFAR_FORMATS[name]
    archive_name = fmt.url.rsplit("/", 1)[1]
    label_bytes = fmt.record_bytes - 3072
    test_file = fmt.splits["test"][1][0]
    rec = _records(fmt.file_records[test_file], label_bytes, seed=3)
    entries = [(fmt.folder, None), (f"{fmt.folder}/{test_file}", rec.tobytes())]
    names = [f"fine{i:02d}" for i in range(100)]
    if name == "cifar100":
        entries.append((f"{fmt.folder}/fine_label_names.txt", ("\n".join(names) + "\n\n").encode()))
    with tarfile.open(folder / archive_name, "w:gz", compresslevel=1) as tar:
        for entry, data in entries:
            info = tarfile.TarInfo(entry)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    root = tmp_path / "root"
    # The official hash rejects the synthetic archive: nothing is left in root.
    with pytest.raises(DownloadError, match=f"expected {fmt.sha256[:64]}"):
        create_dataset(name, str(root), "test", download=True)
    assert os.listdir(root) == []
    monkeypatch.setitem(cifar.CIFAR_FORMATS, name, fmt._replace(sha256=sha((folder / archive_name).read_bytes())))
    ds = create_dataset(name, str(root), "test", shuffle=False, download=True)
    images, labels = _all_rows(ds)
    assert np.array_equal(images, _hwc(rec[:, label_bytes:]))
    assert np.array_equal(labels, rec[:, label_bytes - 1])  # cifar100: the fine label, not the coarse one
    assert ds.classes == (names if name == "cifar100" else list(cifar.CIFAR10_CLASSES))
    assert sorted(os.listdir(root)) == [fmt.folder]  # archive removed once extracted
    monkeypatch.setenv(DOWNLOAD_BASE_ENV, dead_base())  # present now: no download attempted
    assert create_dataset(name, str(root), "val", download=True, num_samples=2).get_dataset_size() == 2


def _idx(images: np.ndarray, labels: np.ndarray) -> tuple[bytes, bytes]:
    n = len(labels)
    return (struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(), struct.pack(">II", 2049, n) + labels.tobytes())


def test_dataset_download_mnist(served, tmp_path, monkeypatch):
    folder, _ = served
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 37).astype(np.uint8)
    for name, data in zip(("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), _idx(images, labels)):
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        monkeypatch.setitem(mnist.MNIST_FILES, name, sha((folder / f"{name}.gz").read_bytes()))
    root = tmp_path / "mnist"
    ds = create_dataset("mnist", str(root), "val", shuffle=False, download=True)
    got_images, got_labels = _all_rows(ds)
    assert np.array_equal(got_images, np.repeat(images[..., None], 3, axis=-1))
    assert np.array_equal(got_labels, labels) and ds.classes == [str(d) for d in range(10)]
    assert sorted(os.listdir(root)) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    # The train files are not served: one line naming the url and the path.
    with pytest.raises(DownloadError, match=r"cannot download .*train-images-idx3-ubyte\.gz.*HTTP 404.*by hand"):
        create_dataset("mnist", str(root), "train", download=True)
    assert sorted(os.listdir(root)) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_imagenet_cannot_be_downloaded(tmp_path):
    with pytest.raises(ValueError, match=r"dataset 'imagenet' cannot be downloaded \(no public archive\)"):
        create_dataset("imagenet", str(tmp_path), "train", download=True)
