"""Checking exported files: each is run on random images and its logits compared with a reference
(the eval-mode Cell, the deploy-graph Cell or the QAT simulation). A file that fails is not left
looking like a finished export: the whole export, metadata included, is removed and the error
says so.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from .metadata import ExportedFile
from .runtimes import run_exported
from .writer import remove_export

_logger = logging.getLogger(__name__)

# Float exports must match their Cell within max(LOGIT_TOLERANCE * max(1, max |logit|),
# NOISE_FACTOR * noise), noise being how far the Cell's own logits move when its input is
# perturbed by one float32 ulp (relative 2^-23): the float32 rounding any other kernel order
# produces is of that size. Trained MobileNets are well conditioned (digits V3-small: noise ~1e-6,
# ONNX vs Cell 9.5e-7 with logits near 3), where 1e-5 of the logit scale applies; high-gain random
# networks amplify rounding ~1000x (ONNX vs Cell 3e-5 to 1.5e-4, noise 4e-5 to 1.7e-4, logits
# 1-3), where the noise term applies. Real export faults (train-mode BatchNorm, other padding, a
# dropped layer) move logits by 1e-1 and more.
LOGIT_TOLERANCE = 1e-5
NOISE_FACTOR = 10.0
# int8 kernels accumulate in int32 and requantize with fixed-point rounding where the QAT
# simulation rounds float32 values: a value on a rounding boundary lands one step apart and that
# propagates. Measured on the digits QAT model: max 0.10 on logits up to 5.4 (2%), identical
# top-1 on 100%. Relative to max(1, max |logit|).
INT8_TOLERANCE = 0.05


def export_tolerance(max_abs_logit: float, noise: float) -> float:
    """How far a float export's logits may be from its Cell's (see LOGIT_TOLERANCE)."""
    return max(LOGIT_TOLERANCE * max(1.0, max_abs_logit), NOISE_FACTOR * noise)


def float32_noise(net: nn.Cell, images: np.ndarray, seed: int = 0) -> float:
    """How far ``net``'s outputs move when every input value is changed by one float32 ulp (2^-23
    relative, random sign): the size of the rounding differences another kernel order gives."""
    sign = np.sign(np.random.default_rng(seed).standard_normal(images.shape)).astype(np.float32)
    nudged = (images * (1 + np.float32(2.0**-23) * sign)).astype(np.float32)
    return float(np.abs(net(ms.Tensor(nudged)).asnumpy() - net(ms.Tensor(images)).asnumpy()).max())


@dataclasses.dataclass
class Reference:
    """What one exported file must reproduce on the check images, and how closely."""

    name: str
    logits: np.ndarray
    tolerance: float

    @classmethod
    def of_float_cell(cls, name: str, net: nn.Cell, images: np.ndarray, seed: int = 0) -> "Reference":
        """The Cell's logits with the float tolerance (its own float32 noise included)."""
        logits = net(ms.Tensor(images)).asnumpy()
        return cls(name, logits, export_tolerance(float(np.abs(logits).max()), float32_noise(net, images, seed)))

    @classmethod
    def of_int8_simulation(cls, net: nn.Cell, images: np.ndarray) -> "Reference":
        """A QAT network's simulated logits with the int8 tolerance."""
        logits = net(ms.Tensor(images)).asnumpy()
        return cls("the QAT simulation", logits, INT8_TOLERANCE * max(1.0, float(np.abs(logits).max())))


def verify_or_remove(files: Sequence[ExportedFile], references: dict, images: np.ndarray) -> None:
    """Run every file with a reference (``{path: Reference}``) on ``images`` and record the largest
    logit difference and the top-1 agreement on it. If any file is off by more than its tolerance,
    every file of the export and its metadata is removed and a RuntimeError says which failed."""
    failures = []
    for exported in files:
        reference = references.get(exported.path)
        if reference is None:
            continue
        logits = run_exported(exported.path, images)
        exported.compared_with, exported.tolerance = reference.name, reference.tolerance
        exported.max_abs_diff = float(np.abs(logits - reference.logits).max())
        exported.max_abs_logit = float(np.abs(reference.logits).max())
        exported.top1_agreement = float((logits.argmax(1) == reference.logits.argmax(1)).mean())
        if exported.max_abs_diff > reference.tolerance:
            failures.append(
                f"{exported.path}: logits differ from {reference.name}'s by up to "
                f"{exported.max_abs_diff:.3g} (tolerance {reference.tolerance:.3g})"
            )
        else:
            _logger.info(
                "%s: logits match %s's within %.3g (tolerance %.3g, max |logit| %.3g)",
                exported.path,
                reference.name,
                exported.max_abs_diff,
                reference.tolerance,
                exported.max_abs_logit,
            )
    if failures:
        removed = remove_export([f.path for f in files])
        raise RuntimeError(f"{'; '.join(failures)}; the export is not faithful and was removed ({', '.join(removed)})")


__all__ = [
    "INT8_TOLERANCE",
    "LOGIT_TOLERANCE",
    "NOISE_FACTOR",
    "Reference",
    "export_tolerance",
    "float32_noise",
    "verify_or_remove",
]
