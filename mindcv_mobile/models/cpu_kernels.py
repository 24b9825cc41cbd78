"""Compiled CPU kernels for the MobileNet layers MindSpore 2.10's CPU backend runs slowly.

Profiled (MobileNetV3-small, batch 32, 224 px, one training step): depthwise convs took 320 of
540 ms of oneDNN time (one small GEMM per image and channel), and the squeeze-and-excite
block's mean, its gradient (Tile) and the x * scale gradient (ReduceSum) about 90 ms more, and
hard-swish with its gradient about 50 ms.
``cpu_kernels.cc`` computes the same math with plain loops (benchmarks/README.md has the
per-layer and whole-step figures). It is compiled once per machine with the system's C++ compiler
into the cache directory and used through ``ops.Custom(func_type="aot")`` with a ``bprop``;
layers keep their parameters, so checkpoints are unchanged.

``runtime.init_runtime`` turns the kernels on for CPU runs (``activate``); layers read the switch
when they are built (``active()``), and ``layers.portable_layers()`` builds models for export
without them. Where the library cannot be built (no compiler, compile error,
``MS_CUSTOM_AOT_WHITE_LIST`` excluding the cache, ``MINDCV_MOBILE_CPU_KERNELS=0``) layers keep
MindSpore's ops and init_runtime logs why.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
FLAGS = ("-O3", "-march=native", "-pthread", "-shared", "-fPIC", "-std=c++14")
SWITCH_ENV = "MINDCV_MOBILE_CPU_KERNELS"
# (kernel, stride) pairs the depthwise conv is instantiated for (every MobileNet depthwise conv).
DEPTHWISE_SUPPORTED = {(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)}
# The library layers built now use ("" = MindSpore's ops): set by runtime.init_runtime on CPU.
_active = ""


def active() -> str:
    return _active


def activate(path: str) -> None:
    global _active
    _active = path


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


def _cache_dir() -> Path:
    from .checkpoint import cache_dir

    return cache_dir() / "kernels"


@lru_cache(maxsize=None)
def library() -> tuple:
    """``(path, "")`` of the compiled library, building it on first use, or ``("", reason)``."""
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return "", f"{SWITCH_ENV}={os.environ[SWITCH_ENV]}"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        return "", "no C++ compiler found (g++, c++ or $CXX)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return "", f"{compiler} --version failed: {exc}"
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_identity()]).encode())
    out = _cache_dir() / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    white_list = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if white_list and not str(out.resolve()).startswith(str(Path(white_list).resolve())):
        return "", f"MS_CUSTOM_AOT_WHITE_LIST={white_list} does not include {out.parent}"
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return "", f"cannot create {out.parent}: {exc}"
        # Unique temporary name, then an atomic rename: ranks of one job may build at once.
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            proc = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True,
                                  timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            tmp.unlink(missing_ok=True)
            return "", f"{compiler} failed: {exc}"
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            return "", f"{compiler} failed ({proc.returncode}): {lines[-1] if lines else 'no output'}"
        os.replace(tmp, out)
    return str(out), ""


def threads() -> int:
    from ..runtime import cpu_cores  # here: runtime imports this module when it starts

    return cpu_cores()


def build(factory, *args) -> tuple:
    """``factory(library, *args)`` -> ``(op, cfg)`` while the kernels are active, else ``(None, None)``."""
    return factory(_active, *args) if _active else (None, None)


def _out_size(size: int, kernel: int, stride: int, pad_mode: str, padding: int) -> int:
    if pad_mode == "same":
        return -(-size // stride)
    if pad_mode == "valid":
        padding = 0
    return (size + 2 * padding - kernel) // stride + 1


def _threads_cfg():
    from mindspore import Tensor

    return Tensor(np.array([threads()], np.int32))


def _tag(geometry: str, *prims) -> None:
    # PyNative caches a Custom op's inferred output shape by its attributes and input shapes: two
    # layers of one input shape but different geometry must not share it.
    for prim in prims:
        prim.add_prim_attr("geometry", geometry)


def make_depthwise(path: str, kernel: int, stride: int, pad_mode: str, padding: int):
    """``(op, cfg)``: ``op(x, weight, cfg)`` is the depthwise conv, differentiable in x and weight."""
    from mindspore import Tensor, ops

    mode = {"same": 1, "pad": 0, "valid": 0}[pad_mode]
    cfg = Tensor(np.array([stride, mode, padding if pad_mode == "pad" else 0, threads()], np.int32))

    def out_shape(x, weight, cfg):
        return (x[0], x[1]) + tuple(_out_size(s, kernel, stride, pad_mode, padding) for s in x[2:])

    backward_data = ops.Custom(f"{path}:DepthwiseBackwardData", out_shape=lambda dy, w, c, x: x,
                               out_dtype=lambda dy, w, c, x: x, func_type="aot")
    backward_weight = ops.Custom(f"{path}:DepthwiseBackwardWeight", out_shape=lambda dy, x, c, w: w,
                                 out_dtype=lambda dy, x, c, w: w, func_type="aot")

    def bprop(x, weight, cfg, out, dout):
        return backward_data(dout, weight, cfg, x), backward_weight(dout, x, cfg, weight), ops.zeros_like(cfg)

    op = ops.Custom(f"{path}:DepthwiseForward", out_shape=out_shape, out_dtype=lambda x, w, c: x,
                    func_type="aot", bprop=bprop)
    _tag(f"k{kernel}s{stride}{pad_mode}{padding}", op, backward_data, backward_weight)
    return op, cfg


def make_channel_mean(path: str):
    """``(op, cfg)``: ``op(x, cfg)`` is ``x.mean((2, 3), keep_dims=True)``, differentiable in x."""
    from mindspore import ops

    backward = ops.Custom(f"{path}:ChannelMeanBackward", out_shape=lambda d, c, x: x, out_dtype=lambda d, c, x: x,
                          func_type="aot")

    def bprop(x, cfg, out, dout):
        return backward(dout, cfg, x), ops.zeros_like(cfg)

    op = ops.Custom(f"{path}:ChannelMean", out_shape=lambda x, c: (x[0], x[1], 1, 1), out_dtype=lambda x, c: x,
                    func_type="aot", bprop=bprop)
    _tag("channel_mean", op, backward)
    return op, _threads_cfg()


def make_channel_scale(path: str):
    """``(op, cfg)``: ``op(x, s, cfg)`` is ``x * s`` for s of shape (N, C, 1, 1), differentiable in both."""
    from mindspore import ops

    backward = ops.Custom(f"{path}:ChannelScaleBackward", out_shape=lambda d, x, s, c: (x, s),
                          out_dtype=lambda d, x, s, c: (x, s), func_type="aot")

    def bprop(x, scale, cfg, out, dout):
        dx, dscale = backward(dout, x, scale, cfg)
        return dx, dscale, ops.zeros_like(cfg)

    op = ops.Custom(f"{path}:ChannelScale", out_shape=lambda x, s, c: x, out_dtype=lambda x, s, c: x,
                    func_type="aot", bprop=bprop)
    _tag("channel_scale", op, backward)
    return op, _threads_cfg()


def make_hardswish(path: str):
    """``(op, cfg)``: ``op(x, cfg)`` is ``x * relu6(x + 3) / 6``, differentiable in x."""
    from mindspore import ops

    backward = ops.Custom(f"{path}:HardSwishBackward", out_shape=lambda d, x, c: x, out_dtype=lambda d, x, c: x,
                          func_type="aot")

    def bprop(x, cfg, out, dout):
        return backward(dout, x, cfg), ops.zeros_like(cfg)

    op = ops.Custom(f"{path}:HardSwish", out_shape=lambda x, c: x, out_dtype=lambda x, c: x, func_type="aot",
                    bprop=bprop)
    _tag("hardswish", op, backward)
    return op, _threads_cfg()
