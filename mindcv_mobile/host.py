"""The machine this process runs on, decided without MindSpore: CPU ISA cap, cores, data
workers and the toolkit's cache folder (with the checked save/load of folders kept there).

Imported first by ``mindcv_mobile/__init__.py``: the oneDNN ISA cap only takes effect when it is
in the environment before ``import mindspore``. Nothing here imports MindSpore or another module
of the package, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable

# MindSpore 2.10 hands oneDNN plain NCHW tensors. On any CPU with AVX-512 (the choice depends on
# the ISA, not the vendor) its oneDNN then runs every convolution but 1x1 as
# "jit_uni_ncsp:conv+ref:any", a reference kernel: a 3x3 depthwise conv, 144 ch at 56x56, batch
# 32, takes 1.3 s forward instead of 54 ms; capped at AVX2 it picks "gemm:jit" (both seen with
# ONEDNN_VERBOSE=1). Whole train steps run 4-8x faster capped; what the cap could cost on another
# AVX-512 CPU (AVX-512 GEMMs for 1x1 convs) is what `benchmarks/bench.py --variants ours,ours_noisa`
# measures.
ISA_ENV = "ONEDNN_MAX_CPU_ISA"
ISA_CAP = "AVX2"
CACHE_ENV = "MINDCV_MOBILE_HOME"
MANIFEST = "files.json"  # in a saved folder: {relative path: sha256} of its files, written last


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def apply_cpu_isa_default() -> str:
    """Cap oneDNN at AVX2 on AVX-512 x86 CPUs unless the user chose a value; say what was done."""
    if ISA_ENV in os.environ:
        return f"{ISA_ENV}={os.environ[ISA_ENV]} (set by user)"
    if "mindspore" in sys.modules:
        return f"{ISA_ENV} unset (MindSpore was imported before mindcv_mobile; too late to set it)"
    if "avx512f" not in cpu_flags():
        return f"{ISA_ENV} unset (no AVX-512 on this CPU)"
    os.environ[ISA_ENV] = ISA_CAP
    return f"{ISA_ENV}={ISA_CAP} (AVX-512 CPU: avoids oneDNN's reference NCHW conv kernel)"


ISA_SETTING = apply_cpu_isa_default()
# MindSpore's C++ and Python warnings (deprecations, kernel selection notes) bury the run's own
# log on every start; 3 = errors only. A user's GLOG_v wins.
os.environ.setdefault("GLOG_v", "3")


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, cgroup cpusets), not the host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def data_workers(requested: int | None = None) -> int:
    """Dataset workers: the recipe's ``num_parallel_workers`` (8 in mindcv's recipes; 8 when not
    given), at most one per core of this process; more only time-slice the same cores and add a
    copy of the pipeline each."""
    return max(1, min(8 if requested is None else int(requested), cpu_cores()))


def cache_dir() -> Path:
    """The toolkit's cache folder: released weights, compiled kernels (``$MINDCV_MOBILE_HOME``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mindcv_mobile")


def cache_subfolder(name: str) -> Path:
    """``<cache>/<name>``, made with mode 0700; OSError unless it is a folder of this user that no
    one else can write (what is kept there is loaded and run without asking)."""
    root = cache_dir() / name
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.stat(root)
    if (hasattr(os, "getuid") and info.st_uid != os.getuid()) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(f"{root} is not a folder of yours that only you can write (set ${CACHE_ENV})")
    return root


def file_digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        pass
    return True


def work_folder(root: Path) -> Path:
    """A new folder of this process under ``<root>/.work``, named ``<host>.<pid>.<random>``; those
    of ended processes of this host are removed first."""
    work_root, prefix = root / ".work", socket.gethostname() + "."
    work_root.mkdir(mode=0o700, exist_ok=True)
    for old in work_root.iterdir():
        pid = old.name[len(prefix) :].split(".")[0] if old.name.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=work_root))


def folder_files(folder: Path, keep: Callable[[str], bool] = lambda name: True) -> dict:
    """{relative path: sha256} of the files under ``folder`` whose name ``keep`` accepts (manifest aside)."""
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST and keep(path.name)
    }


def load_saved_folder(saved: Path, work: Path) -> bool:
    """Copy the files of ``saved`` (written by :func:`save_folder`) into ``work``, each checked
    against the sha256 its manifest records. False when nothing is saved there; ValueError or
    OSError (naming the file) when it cannot be used (corrupt, changed, unreadable, not a folder),
    and then nothing was written to ``work``."""
    if not os.path.lexists(saved):
        return False
    files = json.loads((saved / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{MANIFEST} lists no files")
    contents = {}
    for rel, digest in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{MANIFEST} names {rel!r}, outside the folder")
        contents[rel] = (saved / rel).read_bytes()
        if hashlib.sha256(contents[rel]).hexdigest() != digest:
            raise ValueError(f"{rel} is not the file saved there (its sha256 differs)")
    for rel, data in contents.items():  # written only once all are checked
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    return True


def save_folder(work: Path, saved: Path, keep: Callable[[str], bool], required: str) -> bool:
    """Make ``saved`` hold the files of ``work`` that ``keep`` accepts (with a manifest of their
    sha256), replacing what it held in one rename; nothing changes when it holds them already or
    no kept file ends with ``required``. True if it was replaced. The work folder is removed in
    any case; OSError if the replacement failed (e.g. another process replaced it at that moment)."""
    try:
        files = folder_files(work, keep)
        try:
            held = json.loads((saved / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            held = None
        if held == files or not any(rel.endswith(required) for rel in files):
            return False
        new = Path(tempfile.mkdtemp(prefix=work.name + ".", dir=work.parent))
        for rel in files:
            (new / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / rel, new / rel)
        (new / MANIFEST).write_text(json.dumps(files, indent=1), encoding="utf-8")
        if os.path.lexists(saved):
            os.rename(saved, new.with_name(new.name + ".old"))
        os.rename(new, saved)
        return True
    finally:
        for folder in work.parent.glob(work.name + "*"):
            shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink()
