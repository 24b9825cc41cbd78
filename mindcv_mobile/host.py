"""The machine this process runs on, decided without MindSpore: CPU ISA cap, cores, data
workers and the toolkit's cache folder.

Imported first by ``mindcv_mobile/__init__.py``: the oneDNN ISA cap only takes effect when it is
in the environment before ``import mindspore``. Nothing here imports MindSpore or another module
of the package, so every layer may use it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
