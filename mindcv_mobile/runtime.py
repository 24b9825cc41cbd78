"""Where the process meets the machine: CPU ISA, device, execution mode, distribution, seeds.

Every device-dependent decision of the project is made here (or in ``training/train_step.py``
for the loss scale) and logged once, so the rest of the code never asks ``if device == ...``.
"""

from __future__ import annotations

import ast
import atexit
import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import re
import shlex
import sys
from pathlib import Path

from .host import ISA_ENV, ISA_SETTING, cpu_cores, data_workers  # isort: skip  (first: the ISA cap precedes MindSpore)
from .host import cache_subfolder, file_digest, load_saved_folder, save_folder, work_folder  # isort: skip

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
            "compiled CPU kernels for depthwise conv, BatchNorm+activation, squeeze-excite, hard-swish"
            if library
            else f"MindSpore's depthwise conv, BatchNorm, squeeze-excite, hard-swish ops ({why_not})"
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
    if _COMPILE_CACHE:  # an earlier run of this process used it: only that run's graphs go there
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"
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


# ------------------------------------------------------------------------------------ compile cache
# MindSpore 2.10's compile cache (graph/api.py, and measured): with MS_COMPILER_CACHE_ENABLE=1 the
# n-th graph a process compiles is saved as <path>/rank_<r>/graph_cache/compile_cache_<n>.mindir and
# loaded by that number in the next process; the first such compile fixes <path> for the process.
# MindSpore only checks a hash of the entry script and of the local files it imports: a graph of
# other input shapes or LR schedule length loads as it is (measured: a batch-32 graph fed batch 16
# gave loss nan; a 15-step schedule's graph failed at step 16 of 30). Corrupt files are recompiled.
MS_CACHE_ENV = ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH")
COMPILE_FOLDER = "compile"
# Recipe keys that cannot change the training graph: where files are, how long, how often to log,
# validate and save (the step count is keyed as the LR schedule's length), and resolved elsewhere.
NOT_IN_GRAPH = frozenset(
    {
        "data_dir", "train_split", "val_split", "dataset_download", "ckpt_save_dir", "ckpt_path", "resume",
        "resume_opt", "epoch_size", "log_interval", "val_interval", "ckpt_save_interval", "ckpt_save_policy",
        "keep_checkpoint_max", "tensorboard", "device_target", "distribute",
    }
)  # fmt: skip
_USER_CACHE_ENV = {k: os.environ[k] for k in MS_CACHE_ENV if k in os.environ}
_LATER_GRAPH = re.compile(r"cache_(?:after_opt_)?0*[1-9]")  # a file of graph 1, 2, ... (not 0)
_COMPILE_CACHE: dict = {}  # {"key_dir", "work"} once a run of this process enabled it


@functools.cache
def package_digest(root: str = os.path.dirname(os.path.abspath(__file__))) -> str:
    """sha256 over the package's source files (``*.py`` and ``*.cc`` under ``root``: names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.suffix in (".py", ".cc") and path.is_file():
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _entry_script() -> str:
    """The script MindSpore checks its cache against (``sys.argv[0]``), or "" when that is no
    Python file (``python -c``, stdin): MindSpore would fail reading it at the first compile."""
    path = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    try:
        with open(path, encoding="utf-8") as f:
            ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return ""
    return path


def compile_cache_key(cfg, rt: Runtime, schedule_steps: int) -> str:
    """24 hex digits of a sha256 over everything the training graph depends on:

    * the resolved recipe, every key but those of ``NOT_IN_GRAPH`` (paths, ``epoch_size``, log,
      validation and checkpoint intervals and policies, TensorBoard, and ``device_target`` /
      ``distribute``, keyed as resolved below); in dataset sink mode ``epoch_size`` and
      ``log_interval`` are kept (they set the sink's length). ``mode`` and ``jit_level`` are recipe keys;
    * ``schedule_steps``: the LR schedule's length (epochs x steps per epoch), a shape in the graph;
    * MindSpore's version, this package's version and :func:`package_digest` of its sources;
    * the device, rank, group size and data-parallel flag (one cache per rank under msrun), whether
      the compiled CPU kernels are in the model, and ``ONEDNN_MAX_CPU_ISA``;
    * the entry script's path and sha256 (MindSpore checks that one itself too).
    """
    from . import __version__

    skip = NOT_IN_GRAPH - ({"epoch_size", "log_interval"} if resolve_sink_mode(cfg) else set())
    entry = _entry_script()
    what = {
        "recipe": {k: cfg[k] for k in sorted(cfg) if k not in skip},
        "schedule_steps": int(schedule_steps),
        "versions": [ms.__version__, __version__, package_digest()],
        "runtime": [rt.device, rt.rank, rt.group_size, rt.distribute, rt.cpu_kernels, os.environ.get(ISA_ENV, "")],
        "entry": [entry, file_digest(entry) if entry else ""],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=repr).encode()).hexdigest()[:24]


def _save_graph(key_dir: Path, work: Path) -> None:
    """At exit: this run's graph 0 (and the dependency hash) becomes what ``key_dir`` holds."""
    try:
        save_folder(work, key_dir, lambda name: not _LATER_GRAPH.search(name), ".mindir")
    except OSError as err:
        _logger.warning("compile cache: this run's graph not saved in %s: %s", key_dir, err)


def _cache_off(cfg) -> str:
    """Why the compile cache stays off for this run, or ""."""
    if cfg.mode != 0:
        return "PyNative mode compiles no graph"
    if not getattr(cfg, "compile_cache", True):
        return "compile_cache: False"
    if _USER_CACHE_ENV:
        setting = ", ".join(f"{k}={v}" for k, v in _USER_CACHE_ENV.items())
        return f"{setting} set in the environment: MindSpore's own cache, not keyed to the recipe"
    if _COMPILE_CACHE:
        return "an earlier run of this process holds it (MindSpore takes one cache folder per process)"
    if not _entry_script():
        return "no script file started this process (python -c, stdin): MindSpore keys on one"
    return ""


def enable_compile_cache(cfg, rt: Runtime, schedule_steps: int) -> str:
    """Let a later run of the same recipe load the training graph this run compiles: call it once
    the LR schedule exists (``schedule_steps``: its length), before the first step compiles. Logs and
    returns ``compile cache: <folder> (hit|new)``, ``... unreadable (why); compiling`` or ``... off (why)``.

    The folder, ``<cache>/compile/<key>`` (:func:`compile_cache_key`), keeps graph 0 of the process
    only: the training step, compiled first (later graphs, validation or a last partial batch, have
    shapes the data decides). MindSpore works in a folder of this process, into which the saved graph
    is copied with each file checked against its recorded sha256; at exit a new or changed graph 0
    replaces the saved one in one rename. Off in PyNative mode, with ``compile_cache: False``, when
    MS_COMPILER_CACHE_* are set in the environment (MindSpore's own cache then), without an entry
    script file, and for a second run in one process.
    """
    why = _cache_off(cfg)
    if not why:
        try:
            root = cache_subfolder(COMPILE_FOLDER)
        except OSError as err:
            why = str(err)
    if why:
        _logger.info("compile cache: off (%s)", why)
        return f"compile cache: off ({why})"
    key_dir = root / compile_cache_key(cfg, rt, schedule_steps)
    work = work_folder(root)
    try:
        note = f"compile cache: {key_dir} ({'hit' if load_saved_folder(key_dir, work) else 'new'})"
    except (OSError, ValueError) as err:  # nothing was copied
        note = f"compile cache: {key_dir} unreadable ({err}); compiling, and saving this run's graph there"
    _COMPILE_CACHE.update(key_dir=key_dir, work=work)
    os.environ.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=str(work))
    atexit.register(_save_graph, key_dir, work)
    (_logger.warning if "unreadable" in note else _logger.info)("%s", note)
    return note


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
