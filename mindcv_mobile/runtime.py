"""Where the process meets the machine: CPU ISA, device, execution mode, distribution, seeds.

Every device-dependent decision of the project is made here (or in ``training/train_step.py``
for the loss scale) and logged once, so the rest of the code never asks ``if device == ...``.
"""
from __future__ import annotations

import logging
import os
import sys

_logger = logging.getLogger(__name__)

# MindSpore 2.10's oneDNN picks an AVX-512 code path for non-1x1 convolutions on AVX-512 CPUs
# that is a slow reference kernel (a 3x3 depthwise conv runs ~25x slower than under AVX2).
# Capping the ISA must happen before MindSpore loads oneDNN, i.e. before `import mindspore`.
ISA_ENV = "ONEDNN_MAX_CPU_ISA"
ISA_CAP = "AVX2"


def _cpu_flags() -> set[str]:
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
    if "avx512f" not in _cpu_flags():
        return f"{ISA_ENV} unset (no AVX-512 on this CPU)"
    os.environ[ISA_ENV] = ISA_CAP
    return f"{ISA_ENV}={ISA_CAP} (AVX-512 CPU: avoids MindSpore 2.10's slow AVX-512 conv path)"


ISA_SETTING = apply_cpu_isa_default()
# MindSpore's C++ and Python warnings (deprecations, kernel selection notes) bury the run's own
# log on every start; 3 = errors only. A user's GLOG_v wins.
os.environ.setdefault("GLOG_v", "3")

import dataclasses  # noqa: E402  (after the environment is set for MindSpore)
import random  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

DEVICES = ("Ascend", "GPU", "CPU")
# Environment variables msrun (and the older mpirun/rank-table launchers) set for each worker.
LAUNCHER_ENV = ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What this process runs on, decided once by :func:`init_runtime`."""

    device: str
    mode: int
    rank: int = 0
    group_size: int = 1
    distribute: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_launcher() -> bool:
    return any(os.environ.get(k) for k in LAUNCHER_ENV)


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> the first of Ascend, GPU, CPU that MindSpore can use here."""
    if requested == "auto":
        return next(d for d in DEVICES if d == "CPU" or ms.hal.is_available(d))
    if requested not in DEVICES:
        raise ValueError(f"device_target must be auto, {', '.join(DEVICES)}; got {requested!r}")
    if requested != "CPU" and not ms.hal.is_available(requested):
        raise RuntimeError(f"device_target={requested} but MindSpore cannot use {requested} here; "
                           f"use --device_target auto or CPU")
    return requested


def set_seed(seed: int) -> None:
    """Seed MindSpore, numpy, random and the data pipeline."""
    ms.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    ms.dataset.config.set_seed(seed)


def init_runtime(cfg) -> Runtime:
    """Set device, execution mode, jit level, distribution and seeds from a Config; log it once."""
    device = pick_device(cfg.device_target)
    distribute = launched_by_launcher() if cfg.distribute is None else cfg.distribute
    origin = getattr(cfg, "origins", {}).get("distribute", "")
    if distribute and not launched_by_launcher() and origin.endswith((".yaml", ".yml")):
        # Published recipes say distribute: True; run them standalone rather than refuse.
        _logger.warning("%s sets distribute: True but no launcher started this process: training standalone on "
                        "one device (msrun --worker_num N python train.py ... to distribute)", origin)
        distribute = False
    if distribute and not launched_by_launcher():
        raise RuntimeError(
            "distribute=True needs a launcher that starts one process per device, e.g.\n"
            "  msrun --worker_num 8 --local_worker_num 8 python train.py -c RECIPE ...\n"
            "or run standalone with --distribute False")
    if ms.get_context("device_target") != device:
        # set_device may only be called before the first kernel runs (a second train() in one
        # process, e.g. tests, must not call it again).
        ms.set_device(device)
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == 0 else ms.PYNATIVE_MODE)
    if cfg.jit_level and device == "Ascend":
        ms.set_context(jit_config={"jit_level": cfg.jit_level})
    rank, group_size = 0, 1
    if distribute:
        from mindspore.communication import get_group_size, get_rank, init

        init()
        rank, group_size = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
    set_seed(cfg.seed)
    rt = Runtime(device=device, mode=cfg.mode, rank=rank, group_size=group_size, distribute=distribute)
    _logger.info("runtime: MindSpore %s on %s, %s mode%s, %s; rank %d of %d, seed %d", ms.__version__, device,
                 "graph" if cfg.mode == 0 else "PyNative",
                 f" (jit_level {cfg.jit_level})" if cfg.jit_level and device == "Ascend" else "",
                 ISA_SETTING, rank, group_size, cfg.seed)
    return rt


def setup_logging(log_file: str | None = None, rank: int = 0, level: int = logging.INFO) -> None:
    """Log to stderr (every rank, prefixed with the rank when distributed) and, on rank 0, to
    ``log_file``. Safe to call again (handlers are replaced, not stacked)."""
    root = logging.getLogger("mindcv_mobile")
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_mindcv_mobile", False):
            root.removeHandler(handler)
            handler.close()
    prefix = f"[rank {rank}] " if launched_by_launcher() else ""
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._mindcv_mobile = True
        root.addHandler(handler)
