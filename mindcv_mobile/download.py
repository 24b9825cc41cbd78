"""Fetching released weights and public data sets: one file per call, checked and atomic.

``download(url, dest)`` streams the file into a private temporary file beside ``dest``,
checks its sha256 prefix when one is given, and only then renames it to ``dest``: a failed,
refused or interrupted download leaves nothing behind and raises one line naming the url,
the reason and the path to place the file at by hand. ``ensure_file`` reuses a file already
at ``dest`` after checking its hash. ``extract`` unpacks the .tar.gz / .gz archives the data
sets ship as, refusing any entry that would land outside the destination folder.

Mirrors: when ``$MINDCV_MOBILE_DOWNLOAD_BASE`` is set, everything in a url up to and
including its last "/" (scheme, host and folders; a query string is dropped) is replaced by
that value, so only the file name of the original url is kept:

    MINDCV_MOBILE_DOWNLOAD_BASE=http://127.0.0.1:8000/x
    https://download.mindspore.cn/toolkits/mindcv/mobilenet/mobilenetv3/mobilenet_v3_small_100-509c6047.ckpt
      -> http://127.0.0.1:8000/x/mobilenet_v3_small_100-509c6047.ckpt

A trailing "/" on the value makes no difference; a ``file:///folder`` value reads from a local
folder. Every file is then fetched from that one place, weights and data sets alike.

Nothing here imports MindSpore or a package module above ``files``/``host``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

from .files import WriteError, atomic_open, atomic_path

_logger = logging.getLogger(__name__)

DOWNLOAD_BASE_ENV = "MINDCV_MOBILE_DOWNLOAD_BASE"
TIMEOUT_S = 60.0  # per connect / read, not for the whole file
_CHUNK = 1 << 16
_USER_AGENT = "mindcv_mobile-download/1"


class DownloadError(WriteError, FileNotFoundError):
    """A file could not be fetched (offline, HTTP error, wrong hash, interrupted): nothing was
    written at the destination, so the file is still missing there."""

    def __init__(self, message: str):
        super().__init__(0, message)


class ArchiveError(ValueError):
    """An archive is damaged, of an unknown type, or holds an entry that would escape its folder."""


def resolve_url(url: str) -> str:
    """``url``, or its file name under ``$MINDCV_MOBILE_DOWNLOAD_BASE`` when that is set."""
    base = os.environ.get(DOWNLOAD_BASE_ENV, "").strip()
    if not base:
        return url
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    if not name:
        raise ValueError(f"url {url!r} ends without a file name to put under ${DOWNLOAD_BASE_ENV}={base!r}")
    return base.rstrip("/") + "/" + name


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked_prefix(sha256_prefix: str | None) -> str:
    prefix = (sha256_prefix or "").strip().lower()
    if prefix and (len(prefix) > 64 or any(c not in "0123456789abcdef" for c in prefix)):
        raise ValueError(f"sha256_prefix must be up to 64 hex digits or None; got {sha256_prefix!r}")
    return prefix


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GiB"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _ProgressBar:
    """One status line on stderr, redrawn at most 10 times a second; silent unless stderr is a TTY."""

    def __init__(self, name: str, total: int | None, enabled: bool):
        self.name, self.total, self.start, self.drawn = name, total, time.monotonic(), 0.0
        stream = sys.stderr
        self.stream = stream if enabled and stream is not None and stream.isatty() else None

    def update(self, done: int, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self.drawn < 0.1:
            return
        self.drawn = now
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed
        if self.total:
            eta = (self.total - done) / rate if rate > 0 else 0.0
            line = (
                f"{self.name}: {_size(done)} / {_size(self.total)} {100.0 * done / self.total:5.1f}% "
                f"{_size(rate)}/s ETA {_clock(eta)}"
            )
        else:
            line = f"{self.name}: {_size(done)} {_size(rate)}/s {_clock(elapsed)}"
        self.stream.write("\r" + line.ljust(78))
        self.stream.flush()

    def close(self, done: int) -> None:
        if self.stream is not None:
            self.update(done, final=True)
            self.stream.write("\n")
            self.stream.flush()


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):
            return str(err.reason)
        err = err.reason
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.splitlines()[0]


def _stream(source: str, tmp: str, name: str, progress: bool, fail) -> tuple[str, int]:
    """Copy ``source`` into ``tmp``; (sha256, bytes). Network trouble raises ``fail(reason)``;
    a local write error stays an OSError (``atomic_path`` names the destination)."""
    request = urllib.request.Request(source, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        err.close()
        raise fail(_reason(err)) from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise fail(_reason(err)) from None
    digest, done = hashlib.sha256(), 0
    with response, open(tmp, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = _ProgressBar(name, total, progress)
        try:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise fail(f"interrupted after {done} bytes ({_reason(err)})") from None
                if not block:
                    break
                out.write(block)
                digest.update(block)
                done += len(block)
                bar.update(done)
        finally:
            bar.close(done)
    if total is not None and done != total:
        raise fail(f"interrupted after {done} of {total} bytes")
    return digest.hexdigest(), done


def download(url: str, dest_path, sha256_prefix: str | None = None, progress: bool = True) -> str:
    """Fetch ``url`` (through ``resolve_url``) to ``dest_path`` and return that path.

    The bytes go to a temporary file in the destination folder; when ``sha256_prefix`` is given
    the file's sha256 must start with it. Only a complete, matching file is renamed to
    ``dest_path`` (replacing what was there). ``progress``: a progress bar (bytes, %, rate, ETA)
    on stderr when it is a terminal; a start and an end line go to logging either way.

    Raises ``DownloadError`` (one line) when the file cannot be fetched or has another hash;
    a local write failure (full disk) raises ``files.WriteError``. Neither leaves a file behind.
    """
    dest = os.fspath(dest_path)
    expected = _checked_prefix(sha256_prefix)
    source = resolve_url(url)
    via = f" (${DOWNLOAD_BASE_ENV} mirror of {url})" if source != url else ""

    def fail(reason: str) -> DownloadError:
        return DownloadError(f"cannot download {source}{via}: {reason}; place the file at {dest} by hand")

    _logger.info("downloading %s to %s", source, dest)
    start = time.monotonic()
    with atomic_path(dest, what="download") as tmp:
        actual, size = _stream(source, tmp, os.path.basename(dest), progress, fail)
        if expected and not actual.startswith(expected):
            raise DownloadError(
                f"{source}{via} has sha256 {actual[: len(expected)]}..., expected "
                f"{expected}...; nothing was written to {dest}"
            )
    _logger.info("downloaded %s (%s in %.1f s)", dest, _size(size), time.monotonic() - start)
    return dest


def ensure_file(url: str, path, sha256_prefix: str | None = None, progress: bool = True) -> str:
    """``path`` when a file is there, else ``download(url, path, ...)``.

    A file already at ``path`` whose sha256 does not start with ``sha256_prefix`` is a
    ValueError that says to delete it: it is never replaced silently.
    """
    path = os.fspath(path)
    expected = _checked_prefix(sha256_prefix)
    if not os.path.isfile(path):
        return download(url, path, expected or None, progress)
    if expected:
        actual = file_sha256(path)
        if not actual.startswith(expected):
            raise ValueError(
                f"{path} has sha256 {actual[: len(expected)]}..., expected {expected}... (the "
                f"file at {url}); it is corrupt or another version: delete it to download it again"
            )
    return path


def _archive_kind(archive: str) -> str:
    name = os.path.basename(archive).lower()
    for suffix, kind in ((".tar.gz", "tar"), (".tgz", "tar"), (".tar", "tar"), (".gz", "gz")):
        if name.endswith(suffix):
            return kind
    raise ArchiveError(f"cannot extract {archive}: unknown archive type; accepted: .tar.gz, .tgz, .tar, .gz")


def _member_target(member: tarfile.TarInfo, dest: str, archive: str) -> str:
    """Where a tar entry would land; an entry that escapes ``dest`` or is not a plain file or
    folder (links, devices) is refused before anything is extracted."""
    name = member.name
    target = os.path.normpath(os.path.join(dest, name))
    if (
        os.path.isabs(name)
        or ".." in name.replace("\\", "/").split("/")
        or not (target == dest or target.startswith(dest + os.sep))
    ):
        raise ArchiveError(f"{archive} holds {name!r}, which points outside {dest}; refusing to extract it")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(
            f"{archive} holds {name!r}, a link or special file; only files and folders are extracted, refusing it"
        )
    return target


def _extract_tar(archive: str, dest: str) -> list[str]:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        targets = [_member_target(m, dest, archive) for m in members]
        staging = tempfile.mkdtemp(prefix=".extract-", dir=dest)
        try:
            staged = []
            for i, (member, target) in enumerate(zip(members, targets)):
                if member.isfile():
                    tmp = os.path.join(staging, str(i))
                    with tar.extractfile(member) as src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    staged.append((tmp, target))
            # Every entry was read whole before any file is put in place; each rename is atomic.
            for tmp, target in staged:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(tmp, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    for member, target in zip(members, targets):
        if member.isdir():
            os.makedirs(target, exist_ok=True)
    return [t for m, t in zip(members, targets) if m.isfile()]


def _gunzip(archive: str, dest: str) -> list[str]:
    target = os.path.join(dest, os.path.basename(archive)[: -len(".gz")])
    with atomic_open(target, binary=True, what="extracted file") as out:
        try:
            with gzip.open(archive, "rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise ArchiveError(
                f"cannot extract {archive}: {_reason(err)} (damaged archive; delete it and download it again)"
            ) from None
    return [target]


def extract(archive, dest_dir) -> list[str]:
    """Unpack a .tar.gz / .tgz / .tar (its files, under their archive paths) or a .gz (one file,
    named without ".gz") into ``dest_dir``; return the paths of the files written.

    Raises ``ArchiveError`` (one line) for an unknown type, a damaged archive, or an entry with an
    absolute path, "..", a link or a device; those are refused before any file is written.
    """
    archive, dest = os.fspath(archive), os.path.abspath(os.fspath(dest_dir))
    kind = _archive_kind(archive)
    if not os.path.isfile(archive):
        raise FileNotFoundError(f"archive not found: {archive}")
    if os.path.getsize(archive) == 0:
        raise ArchiveError(f"cannot extract {archive}: the file is empty (delete it and download it again)")
    os.makedirs(dest, exist_ok=True)
    if kind == "gz":
        return _gunzip(archive, dest)
    try:
        return _extract_tar(archive, dest)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ArchiveError(
            f"cannot extract {archive}: {_reason(err)} (damaged archive; delete it and download it again)"
        ) from None
