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
