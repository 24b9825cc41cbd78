"""The one way the toolkit writes a file: a private temporary file in the destination folder,
flushed and fsynced, then renamed over the destination (and the folder fsynced).

A reader, or a process killed mid-write, sees the previous complete file or the new one; a
failed write (full disk, no permission) leaves no temporary file behind and names the
destination, not the temporary name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

import yaml


class WriteError(OSError):
    """A file could not be written; the previous file at the destination is intact."""

    def __str__(self) -> str:
        # The message names the path and the reason; OSError would prefix "[Errno 28] ".
        return self.strerror or super().__str__()


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, mode: int = 0o644, what: str = "file") -> Iterator[str]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (MindSpore's
    checkpoint writer, a copy); on success it is fsynced and renamed to ``path``.

    ``mode`` is applied before the rename (mkstemp's 0600 would hide a model from other users).
    Any failure removes the temporary file and raises ``WriteError`` naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        # The destination's extension is kept: some writers (MindSpore's) append theirs otherwise.
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=os.path.splitext(path)[1], dir=folder)
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # a writer may have left the file read-only
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        reason = err.strerror or str(err)
        kept = " (the previous file there is intact)" if os.path.exists(path) else ""
        raise WriteError(err.errno or 0, f"cannot write {what} {path}: {reason}{kept}") from err
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: str, binary: bool = False, what: str = "file", mode: int = 0o644):
    """``with atomic_open(path) as f: f.write(...)``: an open file whose content replaces ``path``
    only when the block ends without an error."""
    with atomic_path(path, mode=mode, what=what) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()


def write_text(path: str, text: str, what: str = "file", mode: int = 0o644) -> str:
    with atomic_open(path, what=what, mode=mode) as f:
        f.write(text)
    return path


def write_json(path: str, data, what: str = "file") -> str:
    return write_text(path, json.dumps(data, indent=1) + "\n", what)


def write_jsonl(path: str, rows: list, what: str = "file") -> str:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows), what)


def write_yaml(path: str, data: dict, what: str = "file") -> str:
    return write_text(path, yaml.safe_dump(data, sort_keys=False), what)
