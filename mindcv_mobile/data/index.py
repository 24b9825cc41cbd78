"""The stored index of an ImageFolder split: the first process scans it, later ones load it.

    python -m mindcv_mobile.data.index DIR [--split train]     # build it ahead of a run

``build_index(split_dir)`` (behind ``image_folder.load_index``, the "imagenet" reader's) loads the
split's index file when it is still valid, else scans (``scan_split``) and writes it through
``files.atomic_open``: ``<root>/.mindcv_mobile_index-<split>.npz``, beside the split folder, not in
it (tools listing a split expect class folders only), or when ``<root>`` takes no file, in the
cache folder as ``<cache>/image_folder_index/<hash of the split's path>-<split>.npz``.

Valid: same format version, absolute split path, and mtimes of the split folder, of each class
folder (by name) and of each folder inside one that the scan read. Adding, removing or renaming
an image changes its folder's mtime, so the split is scanned again; a file whose content is
replaced in place changes no folder and is not noticed (the reader still skips a file that fails
at read time; rebuild with the command above).

Once: processes starting together (msrun ranks, validation beside training) agree through a lock
file beside the index (O_CREAT|O_EXCL, holding pid, host and a token): its holder scans and
writes, the others wait and load. The holder touches the lock every few seconds; a lock whose
process is gone (same host) or untouched for a minute (another host, a hung process) is taken
over; a waiter that times out scans itself.

Format: an uncompressed ``.npz`` (numpy's zip, CRC-checked on read, no pickle): the relative paths
as one NUL-separated byte array, each file's folder (int32) and reencode flag, and a JSON header
(version, split path, mtimes, folders, skipped files). A file that does not read back complete and
consistent is ignored and rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import NamedTuple, Sequence

import numpy as np

from ..files import atomic_open
from ..host import cache_dir, data_workers
from .image_files import probe_folders

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_PREFIX = ".mindcv_mobile_index-"
CACHE_FOLDER = "image_folder_index"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
WAIT_SECONDS = 1800.0


class SplitScan(NamedTuple):
    """What a scan found under a split's class folders (``image_folder.ImageFolderIndex`` is the
    labelled view of it); paths are relative to ``split_dir``."""

    split_dir: str  # absolute
    folders: list  # the class folders, sorted
    paths: bytes  # the usable files, each ending in NUL (file-system encoding)
    folder: np.ndarray  # int32: the position in ``folders`` of each file
    reencode: np.ndarray  # bool: decode with PIL, serve PNG
    skipped: list  # (path, reason)
    subdirs: list  # folders inside class folders read by the scan: (path, mtime_ns)
    seconds: float  # how long the scan took
    origin: str  # "scan", or the index file it was loaded from


def scan_split(split_dir: str, folders: Sequence[str], workers: int | None = None) -> SplitScan:
    """List and probe every image file under the class ``folders`` of ``split_dir`` (sorted: the
    same order on every rank). ``workers``: processes (``host.data_workers``)."""
    start, split_dir = time.perf_counter(), os.path.abspath(split_dir)
    found = probe_folders(os.fsencode(split_dir), [os.fsencode(f) for f in folders], data_workers(workers))
    paths, routes, bad, below = zip(*found) if found else ((), (), (), ())
    return SplitScan(
        split_dir=split_dir,
        folders=list(folders),
        paths=b"".join(paths),
        folder=np.repeat(np.arange(len(folders), dtype=np.int32), [len(r) for r in routes]),
        reencode=np.frombuffer(b"".join(routes), dtype=np.uint8) == ord("r"),
        skipped=[(os.fsdecode(path), why) for rows in bad for path, why in rows],
        subdirs=[(os.fsdecode(path), mtime) for rows in below for path, mtime in rows],
        seconds=time.perf_counter() - start,
        origin="scan",
    )


# --------------------------------------------------------------------------- validity
def folder_stamp(split_dir: str) -> dict:
    """What an index is valid for: the split folder's mtime and its class folders' (by name)."""
    split_mtime = os.stat(split_dir).st_mtime_ns  # before the listing: a change during it shows
    with os.scandir(split_dir) as entries:
        folders = sorted([e.name, e.stat().st_mtime_ns] for e in entries if not e.name.startswith(".") and e.is_dir())
    return {"split": split_mtime, "folders": folders}


def _settled_stamp(split_dir: str) -> dict:
    """``folder_stamp`` once the newest mtime is older than the step of the mtime clock (a few ms, or
    whole seconds): a change after the stamp then moves an mtime. Waits 2 s at most."""
    stamp = folder_stamp(split_dir)
    times = [stamp["split"]] + [mtime for _, mtime in stamp["folders"]]
    settle = 2_000_000_000 if all(t % 1_000_000_000 == 0 for t in times) else 50_000_000
    wait = (max(times) + settle - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(min(wait, 2.0))
        stamp = folder_stamp(split_dir)
    return stamp


def _what_changed(old: dict, new: dict) -> str:
    before, now = dict(old["folders"]), dict(new["folders"])
    if before.keys() != now.keys():
        return f"class folders added or removed ({len(before)} then, {len(now)} now)"
    changed = [name for name in now if now[name] != before[name]]
    return f"class folder {changed[0]!r} changed ({len(changed)} in all)" if changed else "the split folder changed"


def index_locations(split_dir: str) -> list[str]:
    """Where the index of ``split_dir`` goes: beside the split folder, else in the cache folder."""
    split_dir = os.path.abspath(split_dir)
    root, split = os.path.split(split_dir)
    digest = hashlib.sha256(os.fsencode(split_dir)).hexdigest()[:16]
    return [
        os.path.join(root, f"{INDEX_PREFIX}{split}.npz"),
        os.path.join(cache_dir(), CACHE_FOLDER, f"{digest}-{split}.npz"),
    ]


# --------------------------------------------------------------------------- file
def save_index(scan: SplitScan, stamp: dict, path: str) -> None:
    """Write ``scan`` (made when the split had ``stamp``) to ``path`` atomically."""
    meta = {
        "version": FORMAT_VERSION,
        "split_dir": scan.split_dir,
        "stamp": stamp,
        "folders": scan.folders,
        "subdirs": scan.subdirs,
        "skipped": scan.skipped,
        "scan_seconds": round(scan.seconds, 3),
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with atomic_open(path, binary=True, what="image folder index") as f:
        np.savez(
            f,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            paths=np.frombuffer(scan.paths, dtype=np.uint8),
            folder=scan.folder.astype(np.int32, copy=False),
            reencode=scan.reencode.astype(bool, copy=False),
        )


def read_index(path: str, split_dir: str, stamp: dict) -> tuple[SplitScan | None, str]:
    """(the index at ``path``, "") when complete and valid for ``stamp``, else (None, why not)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(stored["meta"].tobytes())
            if meta.get("version") != FORMAT_VERSION:
                return None, f"format version {meta.get('version')}, not {FORMAT_VERSION}"
            if meta["split_dir"] != split_dir:
                return None, f"it indexes {meta['split_dir']}"
            if meta["stamp"] != stamp:
                return None, _what_changed(meta["stamp"], stamp)
            for rel, mtime in meta["subdirs"]:
                if os.stat(os.path.join(split_dir, rel)).st_mtime_ns != mtime:
                    return None, f"folder {rel!r} changed"
            paths, folder, reencode = stored["paths"], stored["folder"], stored["reencode"]
    except FileNotFoundError:
        return None, "absent"
    except Exception as e:  # noqa: BLE001  a partial or foreign file fails in many ways
        return None, f"unreadable ({type(e).__name__}: {e})"
    count, folders = int(np.count_nonzero(paths == 0)), meta["folders"]
    if paths[-1:].tolist() not in ([], [0]) or {folder.shape, reencode.shape} != {(count,)} or reencode.dtype != bool:
        return None, "inconsistent (path, folder and flag arrays do not match)"
    if folder.dtype != np.int32 or (count and not 0 <= folder.min() <= folder.max() < len(folders)):
        return None, "inconsistent (bad folder numbers)"
    rows = {"skipped": [tuple(row) for row in meta["skipped"]], "subdirs": [tuple(row) for row in meta["subdirs"]]}
    return SplitScan(
        split_dir, folders, paths.tobytes(), folder, reencode, seconds=meta["scan_seconds"], origin=path, **rows
    ), ""


# --------------------------------------------------------------------------- lock
def _host() -> str:
    """This machine, and its process-id namespace (containers sharing a host name)."""
    try:
        return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _identity(path: str) -> tuple | None:
    try:
        return tuple(os.stat(path)[1:3])  # (inode, device)
    except OSError:
        return None


def _alive(pid) -> bool:
    if os.name != "posix":  # signal 0 probes a process only on POSIX (Windows would end it)
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, TypeError, OverflowError):
        return True  # another user's process, or a value that cannot be checked: assume alive
    return True


class BuildLock:
    """The lock file of one index location: who is building it."""

    def __init__(self, path: str):
        self.path, self.token, self._ident, self._stop = path, uuid.uuid4().hex, None, threading.Event()

    def acquire(self) -> bool:
        """True when this process now holds the lock, False when another one does; OSError when
        no file can be created there (read-only folder)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            holder = {"pid": os.getpid(), "host": _host(), "token": self.token, "since": time.time()}
            os.write(fd, json.dumps(holder).encode())
            self._ident = tuple(os.fstat(fd)[1:3])
        except OSError:
            os.remove(self.path)  # a lock naming no one would hold the others for a minute
            raise
        finally:
            os.close(fd)
        threading.Thread(target=self._heartbeat, daemon=True, name="index-lock").start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if _identity(self.path) == self._ident:
                try:
                    os.utime(self.path)
                except OSError:
                    pass

    def release(self) -> None:
        self._stop.set()
        if _identity(self.path) == self._ident:  # not a lock that replaced ours after a take-over
            try:
                os.remove(self.path)
            except OSError:
                pass

    def stale(self) -> tuple[tuple, str] | None:
        """(the lock file's identity, why it is stale) when its holder is gone, else None."""
        try:
            info = os.stat(self.path)
            with open(self.path, "rb") as f:
                holder = json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            holder = {}  # being written, or not ours: judged by age alone
        ident, age = tuple(info[1:3]), time.time() - info.st_mtime
        who = f"process {holder.get('pid')} on {holder.get('host', '?').split('/')[0]}"
        if holder.get("host") == _host() and not _alive(holder.get("pid")):
            return ident, f"{who} is gone"
        if age > STALE_SECONDS:
            return ident, f"{who} has not touched it for {age:.0f} s"
        return None

    def take_over(self, ident: tuple) -> None:
        """Remove the lock file judged stale, and only that one (another waiter may have
        replaced it meanwhile: then it is put back)."""
        grabbed = f"{self.path}.{self.token}"
        try:
            os.rename(self.path, grabbed)
        except OSError:
            return
        if _identity(grabbed) != ident:
            try:
                os.link(grabbed, self.path)
            except OSError:
                pass
        os.remove(grabbed)


# --------------------------------------------------------------------------- load or build
def _scan_and_save(split_dir: str, path: str | None, workers) -> tuple[SplitScan, str | None]:
    """(a fresh scan, ``path`` once it is written there, or None after a warning saying why not)."""
    stamp = _settled_stamp(split_dir)
    index = scan_split(split_dir, [name for name, _ in stamp["folders"]], workers)
    if path is not None:
        try:
            save_index(index, stamp, path)
        except OSError as e:  # files.WriteError: full disk, quota; the scan is still good
            _logger.warning("%s; later processes scan %s again", e, split_dir)
            path = None
    return index, path


def _build_here(split_dir: str, path: str, workers, rebuild: bool, timeout: float):
    """(index, path) through the lock beside ``path``; OSError when nothing can be written there."""
    lock, deadline, seen, pause = BuildLock(path[: -len(".npz")] + ".lock"), time.monotonic() + timeout, None, 0.05
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    while True:
        if lock.acquire():
            try:
                if not rebuild:  # another process may have written it just before
                    index, _ = read_index(path, split_dir, folder_stamp(split_dir))
                    if index is not None:
                        return index, path
                _logger.info("scanning %s for its index %s (processes starting now wait for it)", split_dir, path)
                return _scan_and_save(split_dir, path, workers)
            finally:
                lock.release()
        stale = lock.stale()
        if stale:
            _logger.warning("taking over the lock %s: %s", lock.path, stale[1])
            lock.take_over(stale[0])
            continue
        try:
            info = os.stat(path)
            current = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            current = None
        if current is not None and current != seen:  # a new file: the holder may be done
            seen = current
            index, _ = read_index(path, split_dir, folder_stamp(split_dir))
            if index is not None:
                return index, path
        if time.monotonic() > deadline:
            _logger.warning("waited %.0f s for the index of %s (lock %s); scanning here", timeout, split_dir, lock.path)
            return _scan_and_save(split_dir, path, workers)
        if seen is None and pause == 0.05:
            _logger.info("waiting for another process to build the index of %s (lock %s)", split_dir, lock.path)
        time.sleep(pause)
        pause = min(1.0, pause * 1.5)


def build_index(
    split_dir: str, workers: int | None = None, rebuild: bool = False, timeout: float = WAIT_SECONDS
) -> tuple[SplitScan, str | None]:
    """(the index of ``split_dir``, the file it was loaded from or written to, or None when no
    folder takes one). ``rebuild``: scan even when a valid index exists."""
    split_dir = os.path.abspath(split_dir)
    locations = index_locations(split_dir)
    if not rebuild:
        stamp = folder_stamp(split_dir)
        for path in locations:
            index, why = read_index(path, split_dir, stamp)
            if index is not None:
                return index, path
            if why != "absent":
                _logger.info("not using the index %s: %s", path, why)
    for path in locations:
        try:
            return _build_here(split_dir, path, workers, rebuild, timeout)
        except OSError as e:
            _logger.info("cannot keep the index of %s in %s (%s)", split_dir, os.path.dirname(path), e)
    _logger.warning("no folder takes the index of %s (see above); scanning it in every process", split_dir)
    return _scan_and_save(split_dir, None, workers)


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mindcv_mobile.data.index",
        description="Scan an ImageFolder split and store its index, so that training and validation load it "
        "instead of scanning.",
    )
    parser.add_argument("dir", help="dataset root holding <split>/<class_name>/<images>")
    parser.add_argument("--split", default="train", help="split folder under DIR (default: train)")
    parser.add_argument("--workers", type=int, default=None, help="scanning processes (default: one per core, max 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    split_dir, start = os.path.join(args.dir, args.split), time.perf_counter()
    try:
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(f"split folder {split_dir!r} not found; expected DIR/<split>/<class_name>/<images>")
        index, path = build_index(split_dir, args.workers, rebuild=True)
    except (OSError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    empty = int(np.count_nonzero(np.bincount(index.folder, minlength=len(index.folders)) == 0))
    reencoded, skipped = int(index.reencode.sum()), len(index.skipped)
    print(f"{index.split_dir}: {len(index.folders)} classes ({empty} without images), ", end="")
    print(f"{len(index.folder)} images ({reencoded} re-encoded via PIL), {skipped} skipped")
    for file, why in index.skipped[:10]:
        print(f"  skipped {file}: {why}")
    more = f"  ... and {len(index.skipped) - 10} more skipped files\n" if len(index.skipped) > 10 else ""
    print(f"{more}index {f'written to {path}' if path else 'not written'} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
