"""Where the process meets the machine: CPU ISA, device, execution mode, distribution, seeds.

Every device-dependent decision of the project is made here (or in ``training/train_step.py``
for the loss scale) and logged once, so the rest of the code never asks ``if device == ...``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shlex
import sys

from .host import ISA_SETTING, cpu_cores, data_workers  # isort: skip  (first: the ISA cap precedes MindSpore)

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

from . import kernels  # noqa: E402

_logger = logging.getLogger(__name__)

DEVICES = ("Ascend", "GPU", "CPU")
# Environment variables msrun (and the older mpirun/rank-table launchers) set for each worker.
# msrun (MindSpore 2.10, checked in parallel/cluster/process_entity/_api.py and by running it) sets
# MS_ROLE (MS_WORKER; MS_SCHED for its scheduler process, which runs the same script), MS_WORKER_NUM,
# MS_SCHED_HOST/PORT, MS_TOPO_TIMEOUT, RANK_SIZE, DEVICE_ID, and RANK_ID / MS_NODE_ID when the rank
# is known before init(); RANK_TABLE_FILE only with --rank_table_file.
LAUNCHER_ENV = ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE")
MSRUN_ROLES = ("MS_WORKER", "MS_SCHED")

# What init_runtime decided for the CPU, for the log line and for benchmarks/bench.py.
CPU_SETTINGS: dict = {}


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What this process runs on, decided once by :func:`init_runtime`."""

    device: str
    mode: int
    rank: int = 0
    group_size: int = 1
    distribute: bool = False
    speed: str = ""  # the speed defaults applied (threads, data workers, sink mode), for the log
    # The compiled CPU kernels can be used here (CPU only): the training path builds its model
    # with build_model(cfg, cpu_kernels=rt.cpu_kernels). Nothing else changes with it.
    cpu_kernels: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """One line for the run's log: versions, device, mode, CPU ISA, rank and pid."""
        # The pid lets scripts/run_distribute_train.sh name the rank of a worker msrun reports dead.
        return (
            f"MindSpore {ms.__version__} on {self.device}, {'graph' if self.mode == 0 else 'PyNative'} mode, "
            f"{ISA_SETTING}{'; ' + self.speed if self.speed else ''}; rank {self.rank} of {self.group_size} "
            f"(pid {os.getpid()})"
        )


def launched_by_launcher() -> bool:
    return any(os.environ.get(k) for k in LAUNCHER_ENV)


def launched_by_msrun() -> bool:
    """True in a process msrun started: one of its workers or its scheduler."""
    return os.environ.get("MS_ROLE") in MSRUN_ROLES


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> the first of Ascend, GPU, CPU that MindSpore can use here."""
    if requested == "auto":
        return next(d for d in DEVICES if d == "CPU" or ms.hal.is_available(d))
    if requested not in DEVICES:
        raise ValueError(f"device_target must be auto, {', '.join(DEVICES)}; got {requested!r}")
    if requested != "CPU" and not ms.hal.is_available(requested):
        # Never fall back silently: a run meant for Ascend that trains on CPU wastes days.
        available = ", ".join(d for d in DEVICES if d == "CPU" or ms.hal.is_available(d))
        raise RuntimeError(
            f"device_target={requested} but MindSpore cannot use {requested} here; available here: {available} "
            f"(or auto)"
        )
    return requested


def set_seed(seed: int) -> None:
    """Seed MindSpore, numpy, random and the data pipeline."""
    ms.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    ms.dataset.config.set_seed(seed)


def _apply_cpu_threads() -> str:
    """One MindSpore CPU kernel thread per core of this process's affinity mask. MindSpore sizes
    its pool from the host's core count (up to 25), which oversubscribes a process pinned to
    fewer cores. The setting is process-wide and may be made once: a value set before (by the
    user, or an earlier init_runtime) is kept."""
    if "threads" in CPU_SETTINGS:
        return CPU_SETTINGS["threads_note"]
    threads = cpu_cores()
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
        note = f"{threads} CPU kernel threads (one per core)"
    except RuntimeError:  # "can not be set repeatedly": the user set it before init_runtime
        threads, note = None, "CPU kernel threads as set before init_runtime"
    CPU_SETTINGS.update(threads=threads, threads_note=note)
    return note


def resolve_sink_mode(cfg) -> bool:
    """Whether Model.train feeds the device through a data queue (``dataset_sink_mode``).

    Only in graph mode. The recipe's value is kept on every device: on CPU, sink mode was measured
    faster (it saves the per-step Python round trip; see benchmarks/README.md)."""
    return bool(cfg.dataset_sink_mode) and cfg.mode == 0


def speed_defaults(cfg, device: str) -> str:
    """Apply the speed defaults for ``device`` and say what they are, in one line. The ISA cap was
    applied at import; the amp level is resolved in ``training/train_step.py``.

    On CPU it also says whether the compiled kernels are available (building them on first use)
    and records it in ``CPU_SETTINGS["cpu_kernels"]`` (``Runtime.cpu_kernels``); it turns nothing
    on: only a model built with ``create_model(..., cpu_kernels=True)`` uses them."""
    sink = resolve_sink_mode(cfg)
    workers = data_workers(cfg.num_parallel_workers)
    parts = [
        f"{workers} data workers"
        + (f" (recipe {cfg.num_parallel_workers}, {cpu_cores()} cores)" if workers != cfg.num_parallel_workers else ""),
        f"dataset sink mode {'on' if sink else 'off'}",
    ]
    if device == "CPU":
        parts.insert(0, _apply_cpu_threads())
    library, why_not = kernels.library() if device == "CPU" else ("", "")
    if device == "CPU":
        parts.append(
            "compiled CPU kernels for depthwise conv, squeeze-excite and hard-swish"
            if library
            else f"MindSpore's depthwise conv, squeeze-excite and hard-swish ops ({why_not})"
        )
    CPU_SETTINGS.update(sink_mode=sink, data_workers=workers, cpu_kernels=bool(library))
    return ", ".join(parts)


def check_openmpi_launch(device: str) -> None:
    """Refuse an OpenMPI launch (``mpirun -n N python train.py``) that MindSpore cannot join.

    On CPU, MindSpore 2.10's collective library needs msrun's cluster variables: under mpirun
    alone ``init()`` fails in every process (measured with OpenMPI 4.1). The error shows the msrun
    command that runs the same job."""
    workers = os.environ.get("OMPI_COMM_WORLD_SIZE")
    if not workers or device != "CPU" or launched_by_msrun() or os.environ.get("RANK_TABLE_FILE"):
        return
    script = " ".join(shlex.quote(a) for a in sys.argv)
    raise RuntimeError(
        f"mpirun started this process ({workers} workers) but MindSpore on CPU cannot form a cluster from "
        f"OpenMPI; run the same job with: msrun --worker_num {workers} --local_worker_num {workers} "
        f"--join True python {script}"
    )


def init_runtime(cfg) -> Runtime:
    """Set device, execution mode, jit level, distribution and seeds from a Config; log it once."""
    device = pick_device(cfg.device_target)
    check_openmpi_launch(device)
    distribute = launched_by_launcher() if cfg.distribute is None else cfg.distribute
    origin = getattr(cfg, "origins", {}).get("distribute", "")
    if distribute and not launched_by_launcher() and origin.endswith((".yaml", ".yml")):
        # Published recipes say distribute: True; run them standalone rather than refuse.
        _logger.warning(
            "%s sets distribute: True but no launcher started this process: training standalone on "
            "one device (msrun --worker_num N python train.py ... to distribute)",
            origin,
        )
        distribute = False
    if distribute and not launched_by_launcher():
        # One line: entry points print it as `prog: error: ...`.
        raise RuntimeError(
            f"distribute=True but no launcher started this process (none of {', '.join(LAUNCHER_ENV)} is set); "
            f"start one process per device with `msrun --worker_num 8 --local_worker_num 8 --join True python "
            f"train.py -c RECIPE ...`, or run standalone with --distribute False"
        )
    if not distribute and launched_by_msrun():
        # msrun runs the script in every worker and in its scheduler: standalone, each would train
        # the same run into the same run directory (measured: 3 runs for --worker_num 2).
        workers = os.environ.get("MS_WORKER_NUM", "?")
        if not origin.endswith((".yaml", ".yml")):
            raise RuntimeError(
                f"distribute=False but msrun started this process (one of its {workers} workers "
                f"or its scheduler): drop --distribute False, or run python train.py without msrun"
            )
        _logger.warning(
            "%s sets distribute: False but msrun started this process (%s workers): training data-parallel",
            origin,
            workers,
        )
        distribute = True
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
        ms.set_auto_parallel_context(
            parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=group_size
        )
    set_seed(cfg.seed)
    speed = speed_defaults(cfg, device)
    rt = Runtime(
        device=device,
        mode=cfg.mode,
        rank=rank,
        group_size=group_size,
        distribute=distribute,
        speed=speed,
        cpu_kernels=device == "CPU" and bool(CPU_SETTINGS.get("cpu_kernels")),
    )
    _logger.info(
        "runtime: %s, seed %d%s",
        rt.describe(),
        cfg.seed,
        f", jit_level {cfg.jit_level}" if cfg.jit_level and device == "Ascend" else "",
    )
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
