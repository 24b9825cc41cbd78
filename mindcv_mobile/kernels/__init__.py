"""Compiled CPU kernels for the MobileNet layers MindSpore 2.10's CPU backend runs slowly.

Profiled (MobileNetV3-small, batch 32, 224 px, one training step): depthwise convs took 320 of
540 ms of oneDNN time (one small GEMM per image and channel), and the squeeze-and-excite
block's mean, its gradient (Tile) and the x * scale gradient (ReduceSum) about 90 ms more, and
hard-swish with its gradient about 50 ms; with those compiled, BatchNorm (oneDNN) was the largest
op left, about 120 ms forward and backward, plus a separate activation pass after each.
``cpu_kernels.cc`` computes the same math with plain loops, ``batch_norm.cc`` BatchNorm with the
activation after it in one pass, ``squeeze_excite.cc`` the whole squeeze-and-excite block
(benchmarks/README.md has the per-layer and whole-step figures).
They are compiled once per machine with the system's C++ compiler
into the cache folder (:mod:`.cache`, which loads only a library it built and can verify) and
used through ``ops.Custom(func_type="aot")`` with a ``bprop`` (:mod:`.ops`); layers keep their
parameters, so checkpoints are unchanged. :mod:`.norm` has the BatchNorm layer over its op.

Opt-in, per model: ``models.create_model(name, cpu_kernels=True)`` builds the layers inside
``with use(library()[0]):`` (:mod:`.context`); every other model uses MindSpore's ops, so it
exports to MINDIR/ONNX and runs on any device. ``runtime.init_runtime`` only reports whether the
library is available (``Runtime.cpu_kernels``), for the training path to pass on. Where it is
not (no compiler, compile error, an untrusted cache folder, ``MS_CUSTOM_AOT_WHITE_LIST``
excluding the cache, ``MINDCV_MOBILE_CPU_KERNELS=0``) ``library()`` says why.

Imports nothing of the package but :mod:`mindcv_mobile.host`.
"""

from .cache import SWITCH_ENV, kernels_dir, library
from .context import build, current, use
from .norm import PASS_THROUGH, BatchNormAct2d, make_norm_act
from .ops import (
    DEPTHWISE_SUPPORTED,
    NORM_ACTIVATIONS,
    make_batch_norm,
    make_batch_norm_inference,
    make_channel_mean,
    make_channel_scale,
    make_depthwise,
    make_hardswish,
    make_squeeze_excite,
)

__all__ = [
    "BatchNormAct2d",
    "DEPTHWISE_SUPPORTED",
    "NORM_ACTIVATIONS",
    "PASS_THROUGH",
    "SWITCH_ENV",
    "build",
    "current",
    "kernels_dir",
    "library",
    "make_batch_norm",
    "make_batch_norm_inference",
    "make_channel_mean",
    "make_channel_scale",
    "make_depthwise",
    "make_hardswish",
    "make_norm_act",
    "make_squeeze_excite",
    "use",
]
