"""Checkpoints: atomic save, checked load, released-weights cache.

Loading never silently leaves random weights behind: every parameter of the network is either
loaded, or reported (head dropped for fine-tuning), or the load fails naming the parameter.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..download import DownloadError, ensure_file
from ..files import WriteError, atomic_path
from ..host import CACHE_ENV, cache_dir
from .records import ModelCfg, get_model_cfg

_logger = logging.getLogger(__name__)

# Entries a training checkpoint holds besides the network's own parameters (optimizer slots,
# loss scale, step counters). They are not "unexpected" when loading weights only.
TRAIN_STATE_PREFIXES = (
    "moments.",
    "accum.",
    "moment1.",
    "moment2.",
    "mean_grad.",
    "mean_square.",
    "beta1_power",
    "beta2_power",
    "learning_rate",
    "global_step",
    "scale_sense",
    "current_iterator_step",
    "last_overflow_iterator_step",
    "epoch_num",
    "step_num",
    "loss_scale",
    "ema.",
    "adam_",
    "train_state.",
    "momentum",
)


class CheckpointWriteError(WriteError):
    """A checkpoint could not be written (disk full, no permission); nothing was replaced."""


@dataclasses.dataclass
class LoadReport:
    """What a weight load did. ``missing``: network params left at init; ``unexpected``:
    checkpoint entries that match nothing; ``head``: what happened to the classifier;
    ``skipped``: entries of layers the model leaves out by design (a ``features_only`` backbone
    has no classifier and nothing after its deepest output)."""

    path: str
    missing: list
    unexpected: list
    head: str = "loaded"
    skipped: list = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        why = " (mindcv's 1001-class release, unused last logit)" if self.head.startswith("sliced") else ""
        skipped = f"; {len(self.skipped)} skipped {self.skipped[:5]}" if self.skipped else ""
        return (
            f"loaded {self.path}: head {self.head}{why}; {len(self.missing)} missing "
            f"{self.missing[:5]}; {len(self.unexpected)} unexpected {self.unexpected[:5]}{skipped}"
        )


def pretrained_path(model_name: str) -> str:
    """Path of ``model_name``'s released weights in the cache (``host.cache_dir()``), downloaded
    from the record's url on first use (``$MINDCV_MOBILE_DOWNLOAD_BASE`` names a mirror).

    The file's sha256 must start with the hash in its name. A download that fails (offline, HTTP
    error, wrong hash) is a ``DownloadError`` naming the url and the path to place the file at by
    hand, and writes nothing; a cached file with another hash is a ValueError and is kept.
    """
    cfg = get_model_cfg(model_name)
    if not cfg.url:
        raise ValueError(f"{model_name} has no released weights; train it or pass checkpoint_path")
    path = cache_dir() / cfg.filename
    try:
        return ensure_file(cfg.url, path, cfg.sha256_prefix or None)
    except DownloadError as err:
        raise DownloadError(f"released weights for {model_name} are not in the cache (${CACHE_ENV}): {err}") from None


def save_checkpoint(params, path: str, append_dict: Optional[dict] = None) -> str:
    """Write a ``.ckpt`` atomically: to a temporary file beside ``path``, then rename.

    A process killed mid-write leaves the previous file at ``path`` intact.
    ``params`` is a Cell or a list of Parameters / ``{"name": ..., "data": ...}`` dicts.
    """
    path = os.fspath(path)
    try:
        with atomic_path(path, what="checkpoint") as tmp:
            try:
                ms.save_checkpoint(params, tmp, append_dict=append_dict)
            except RuntimeError as err:  # MindSpore reports a full disk as a RuntimeError
                raise OSError(0, str(err).splitlines()[0]) from err
    except WriteError as err:
        raise CheckpointWriteError(err.errno or 0, err.strerror) from err.__cause__
    return path


def load_checkpoint(path: str) -> dict:
    """Read a ``.ckpt`` into ``{name: Parameter}``; a missing or unreadable file is a clear error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError with long internals
        raise ValueError(
            f"cannot read checkpoint {path} (truncated or not a MindSpore .ckpt): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err


def _is_train_state(name: str) -> bool:
    return name.startswith(TRAIN_STATE_PREFIXES)


def load_model_weights(net: nn.Cell, source, cfg: Optional[ModelCfg] = None, strict: bool = False) -> LoadReport:
    """Load a checkpoint (path or ``{name: Parameter}``) into ``net`` and report what happened.

    - head (``cfg.classifier``) of another size: a 1001-row head into 1000 classes keeps rows
      [:1000] (mindcv's MobileNetV1 releases); any other size is dropped with a warning and
      the head keeps its initialisation (fine-tuning);
    - a 3-channel stem into a 1-channel model is summed over RGB;
    - any other shape mismatch raises a ValueError naming the parameter;
    - ``strict``: missing or unexpected entries raise instead of being reported;
    - entries under ``net.unbuilt_prefixes`` (a ``features_only`` backbone's absent layers and
      classifier) are ``skipped``, reported at info level.
    """
    path = source if isinstance(source, (str, os.PathLike)) else "<param dict>"
    ckpt = load_checkpoint(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    classifier = cfg.classifier if cfg else "classifier"
    first_conv = f"{cfg.first_conv if cfg else 'features.0'}.weight"
    own = {p.name: p for p in net.get_parameters()}
    unbuilt = tuple(getattr(net, "unbuilt_prefixes", ()))
    head = "not built (features only)" if unbuilt and (classifier + ".").startswith(unbuilt) else "loaded"
    to_load = {}
    for name, value in ckpt.items():
        if name not in own:
            continue
        want, have = tuple(own[name].shape), tuple(value.shape)
        if want == have:
            to_load[name] = value
        elif name.startswith(classifier + "."):
            if have[0] == want[0] + 1 == 1001 and have[1:] == want[1:]:
                # TF-slim's background class is row 0 in TF but mindcv trained its V1 on
                # ImageFolder labels 0..999 with an unused last logit, so rows [:1000] are right.
                to_load[name] = ms.Parameter(ms.Tensor(value.asnumpy()[: want[0]]), name=name)
                head = "sliced 1001 -> 1000 classes"
            else:
                head = f"dropped ({have[0]} classes in checkpoint, model has {want[0]})"
        elif name == first_conv and have[1] == 3 and want[1] == 1 and have[0] == want[0] and have[2:] == want[2:]:
            summed = value.asnumpy().sum(axis=1, keepdims=True)
            to_load[name] = ms.Parameter(ms.Tensor(summed.astype(np.float32)), name=name)
        else:
            raise ValueError(
                f"checkpoint {path}: parameter {name} has shape {have}, the model "
                f"({type(net).__name__}) expects {want}: is it a checkpoint of another model or width?"
            )
    if head.startswith("dropped"):
        # Head params were skipped as a group: no partial head (weight without bias).
        to_load = {k: v for k, v in to_load.items() if not k.startswith(classifier + ".")}
        _logger.warning("%s: classifier %s, kept at initialisation for fine-tuning", path, head)
    if not to_load:
        # Another naming scheme (e.g. MindSpore model-zoo "backbone.*" checkpoints) matches no name:
        # training would start from random weights with nothing but a "missing" warning.
        theirs = [n for n in ckpt if not _is_train_state(n)] or list(ckpt)
        raise ValueError(
            f"checkpoint {path} holds none of the {len(own)} parameters of {type(net).__name__} "
            f"(it has {theirs[:2]}..., the model expects {list(own)[:2]}...): is it a checkpoint of "
            f"another model?"
        )
    ms.load_param_into_net(net, to_load, strict_load=False)
    head_dropped = head.startswith("dropped")
    missing = [n for n in own if n not in to_load and not (head_dropped and n.startswith(classifier + "."))]
    skipped = [n for n in ckpt if n not in own and unbuilt and n.startswith(unbuilt)]
    unexpected = [
        n for n in ckpt if n not in own and not _is_train_state(n) and not (unbuilt and n.startswith(unbuilt))
    ]
    report = LoadReport(str(path), missing, unexpected, head, skipped)
    if strict and (missing or unexpected):
        raise ValueError(f"strict load failed: {report}")
    if missing or unexpected:
        _logger.warning("%s", report)
    else:
        _logger.info("%s", report)
    return report
