"""Compile ``cpu_kernels.cc`` once per machine into the cache folder, and load only what this toolkit built.

The cache folder (``host.cache_dir()``) is also where released weights go, and it may be shared or
filled by hand; a shared object found there runs with this process's rights as soon as MindSpore
loads it. So a library is handed out only when

* its folder (``<cache>/kernels``, created with mode 0700) and the file itself belong to this user
  and neither is writable by group or others: nobody else can have put or changed them;
* its sha256 equals the digest recorded beside it (``<library>.sha256``) when this toolkit compiled
  it: a file copied in, truncated or changed since is refused, not run.

A library without a recorded digest (built by an older version, or a crash between the two renames)
is rebuilt, never loaded. The compiler writes to a private ``mkstemp`` name in the same folder that
is renamed into place; builds are serialised by a lock file, since ranks of one job start together.
Any refusal is a one-line reason, and layers keep MindSpore's ops.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from functools import cache
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no file locks, and no ownership to check either
    fcntl = None

from ..files import write_text
from ..host import CACHE_ENV, cache_dir

# Compiled together into one library.
SOURCES = tuple(Path(__file__).with_name(name) for name in ("cpu_kernels.cc", "batch_norm.cc", "squeeze_excite.cc"))
FLAGS = ("-O3", "-march=native", "-pthread", "-shared", "-fPIC", "-std=c++14")
SWITCH_ENV = "MINDCV_MOBILE_CPU_KERNELS"
FOLDER = "kernels"
DIGEST_SUFFIX = ".sha256"
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class Refused(Exception):
    """The compiled kernels cannot be used here; the message says why, in one line."""


def kernels_dir() -> Path:
    """Where compiled libraries are cached: ``<cache>/kernels``."""
    return cache_dir() / FOLDER


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: a library built on one CPU may not run on another (a
    cache directory shared across machines)."""
    text = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                elif not line.strip() and text:
                    break
    except OSError:
        pass
    return platform.machine() + "\n" + text


def _compiler() -> tuple:
    """``(compiler, its --version output)``; Refused when there is none that runs."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise Refused("no C++ compiler found (g++, c++ or $CXX)")
    try:
        proc = subprocess.run([compiler, "--version"], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Refused(f"{compiler} --version failed: {exc}") from exc
    return compiler, proc.stdout


def _check_private(path: Path, is_dir: bool) -> None:
    """Refused unless ``path`` is a directory (followed) / a regular file (not a link) of this user
    that group and others cannot write."""
    what = "folder" if is_dir else "file"
    info = os.stat(path) if is_dir else os.lstat(path)
    kind_ok = stat.S_ISDIR(info.st_mode) if is_dir else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        raise Refused(f"not loading compiled kernels: {path} is not a {'folder' if is_dir else 'regular file'}")
    if info.st_uid != os.getuid():
        raise Refused(
            f"not loading compiled kernels: the {what} {path} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); set {CACHE_ENV} to a folder of your own"
        )
    if info.st_mode & _OTHERS_WRITE:
        raise Refused(
            f"not loading compiled kernels: the {what} {path} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):o}); only a {what} no one else can write is trusted: chmod go-w "
            f"it"
        )


def _private_folder(folder: Path) -> None:
    """Create ``folder`` with mode 0700, or check that the existing one is private."""
    if not os.path.lexists(folder):
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another rank made it just now: checked below like any other
            pass
        except OSError as exc:
            raise Refused(f"cannot create {folder}: {exc.strerror or exc}") from exc
    _check_private(folder, is_dir=True)


def _recorded_digest(digest_file: Path) -> str:
    """The digest written at build time, '' when there is none; Refused when the file is not ours
    or holds no digest."""
    if not os.path.lexists(digest_file):
        return ""
    _check_private(digest_file, is_dir=False)
    text = digest_file.read_text(encoding="ascii", errors="replace").strip()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise Refused(
            f"not loading compiled kernels: {digest_file} holds no sha256 digest; delete it and the "
            f"library beside it to rebuild"
        )
    return text


def _verify(library: Path, recorded: str) -> None:
    _check_private(library, is_dir=False)
    actual = sha256_file(library)
    if actual != recorded:
        raise Refused(
            f"not loading {library}: its sha256 {actual[:16]}... differs from {recorded[:16]}... recorded "
            f"when it was built (the file changed since); delete it to rebuild"
        )


def _write_digest(digest_file: Path, digest: str) -> None:
    """The sidecar, private to its owner and written atomically."""
    write_text(str(digest_file), digest + "\n", "kernel digest", mode=0o600)


def _compile(compiler: str, library: Path, digest_file: Path) -> None:
    """Compile into a private temporary name, record its digest, rename both into place."""
    # A digest left from an earlier library must not vouch for the one about to replace it.
    digest_file.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{library.name}.", suffix=".tmp", dir=library.parent)
    os.close(fd)
    try:
        try:
            proc = subprocess.run(
                [compiler, *FLAGS, *map(str, SOURCES), "-o", tmp],
                check=False,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise Refused(f"{compiler} failed: {exc}") from exc
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise Refused(f"{compiler} failed ({proc.returncode}): {lines[-1] if lines else 'no output'}")
        # The linker recreates its output with 0777 & ~umask: owner-only whatever the umask.
        os.chmod(tmp, 0o700)
        digest = sha256_file(tmp)
        # Library first: a crash between the renames leaves a library without a digest, which is
        # rebuilt, never a digest beside another library.
        os.replace(tmp, library)
        _write_digest(digest_file, digest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _locked_build_or_verify(compiler: str, library: Path, digest_file: Path) -> None:
    lock_path = library.parent / ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while another rank compiles; checks again after
        recorded = _recorded_digest(digest_file)
        if recorded and os.path.lexists(library):
            _verify(library, recorded)
            return
        _compile(compiler, library, digest_file)
        _verify(library, _recorded_digest(digest_file))
    finally:
        os.close(fd)  # releases the lock


def _find_or_build() -> Path:
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        raise Refused(f"{SWITCH_ENV}={os.environ[SWITCH_ENV]}")
    compiler, version = _compiler()
    if fcntl is None or not hasattr(os, "getuid"):
        raise Refused(f"compiled CPU kernels need a POSIX system (file ownership and locks), not {platform.system()}")
    sources = [source.read_text() for source in SOURCES]
    key = hashlib.sha256("\0".join([*sources, " ".join(FLAGS), version, _cpu_identity()]).encode())
    folder = kernels_dir()
    library = folder / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    white_list = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if white_list and not str(library.resolve()).startswith(str(Path(white_list).resolve())):
        raise Refused(f"MS_CUSTOM_AOT_WHITE_LIST={white_list} does not include {folder}")
    digest_file = library.with_name(library.name + DIGEST_SUFFIX)
    try:
        _private_folder(folder)
        _locked_build_or_verify(compiler, library, digest_file)
    except OSError as exc:
        raise Refused(f"cannot build or check the compiled kernels in {folder}: {exc.strerror or exc}") from exc
    return library


@cache
def library() -> tuple:
    """``(path, "")`` of the compiled library, built on first use and checked (owner, mode, sha256)
    once per process, or ``("", reason)``: why layers keep MindSpore's ops. ``library.cache_clear()``
    looks again (another cache folder, a rebuilt library)."""
    try:
        return str(_find_or_build()), ""
    except Refused as why:
        return "", str(why)
