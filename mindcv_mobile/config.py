"""A run's configuration: the schema's defaults (``schema.py``), then a YAML recipe, then overrides.

A run's configuration is the schema's defaults, then a YAML recipe (``-c``), then command-line
overrides (``--lr 0.1``). Key names are mindcv's wherever mindcv has the concept, so its
MobileNet recipes run unchanged. An unknown key or a value of the wrong type is an error that
names the closest valid key or the accepted values.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
from typing import Optional

import yaml

from .data import DATASET_DOWNLOADS, is_split_folder
from .errors import ConfigError
from .files import write_yaml
from .models.registry import list_models
from .quant import check_quant_config
from .run_dir import CONFIG as RUN_CONFIG
from .schema import ALIASES, KEYS, SCHEMA, coerce, number_string

__all__ = [
    "ALIASES",
    "KEYS",
    "LEGACY_KEYS",
    "SCHEMA",
    "Config",
    "ConfigError",
    "closest_hint",
    "coerce",
    "config_from_run_dir",
    "copy_config",
    "defaults",
    "load_config",
    "merge",
    "read_yaml",
    "resolve_split_folder",
    "save_config",
    "translate_legacy",
    "validate",
]
_logger = logging.getLogger(__name__)


class Config(dict):
    """The resolved configuration: a dict whose keys are also attributes (``cfg.lr``).

    ``origins`` records where each non-default value came from (a recipe path, "command line"
    or "overrides"): a recipe's ``distribute: True`` is a production default that may fall back
    to a standalone run, an explicit ``--distribute True`` is not.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "origins", {})

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}{closest_hint(name)}") from None

    def __setattr__(self, name: str, value) -> None:
        self[name] = value


def closest_hint(name: str) -> str:
    close = difflib.get_close_matches(name, list(KEYS) + list(ALIASES) + list(LEGACY_KEYS), n=3, cutoff=0.6)
    close = [ALIASES.get(c, c) for c in close]
    return f"; did you mean {' or '.join(dict.fromkeys(close))}?" if close else ""


def defaults() -> Config:
    return Config({name: (list(k.default) if isinstance(k.default, list) else k.default) for name, k in KEYS.items()})


def read_yaml(path: str) -> dict:
    """Read a flat YAML recipe; syntax errors name the file and line."""
    if not os.path.isfile(path):
        raise ConfigError(f"recipe not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        # An unclosed bracket or quote is noticed on a later line; the context says where it opened.
        opened = err.context_mark
        context = (
            f" ({err.context} started at line {opened.line + 1})"
            if err.context and opened and err.problem_mark and opened.line != err.problem_mark.line
            else ""
        )
        raise ConfigError(f"{path}: YAML syntax error at {where}: {err.problem or err}{context}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of key: value lines, got {type(data).__name__}")
    return data


# Keys of the model zoo's MobileNet scripts and the MobileNetV2 example whose values need
# translating (plain renames are schema.ALIASES), with the kind their command-line text has.
LEGACY_KEYS = {"arch": "str", "alpha": "float", "save_checkpoint": "bool", "start_epoch": "int"}
LEGACY_ARCHS = {
    "mobilenetv1": "mobilenet_v1",
    "mobilenetv2": "mobilenet_v2",
    "mobilenetv3_small": "mobilenet_v3_small",
    "mobilenetv3_large": "mobilenet_v3_large",
}
LEGACY_DATASETS = {"imagenet2012": "imagenet"}


def _legacy_model(cfg: Config, values: dict, source: str) -> str:
    """The model ``--arch`` and ``--alpha`` name; a missing one is taken from the current model
    (``--alpha`` alone changes the width of the recipe's family) or 1.0."""
    if "arch" in values:
        arch = str(values["arch"]).lower()
        if arch not in LEGACY_ARCHS:
            raise ConfigError(f"{source}: arch={values['arch']!r} is not one of: {', '.join(LEGACY_ARCHS)}")
        family = LEGACY_ARCHS[arch]
    else:
        arch = next((a for a, f in LEGACY_ARCHS.items() if cfg.model.startswith(f + "_")), None)
        if arch is None:
            raise ConfigError(f"{source}: alpha needs arch (one of: {', '.join(LEGACY_ARCHS)}) with model {cfg.model}")
        family = LEGACY_ARCHS[arch]
    alpha = number_string(values.get("alpha", 1.0))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ConfigError(f"{source}: alpha must be a number such as 0.75, got {alpha!r}")
    widths = sorted(int(m[len(family) + 1 :]) for m in list_models() if re.fullmatch(rf"{family}_\d{{3}}", m))
    name = f"{family}_{round(alpha * 100):03d}"
    if name not in list_models():
        accepted = ", ".join(f"{w / 100:g}" for w in widths)
        raise ConfigError(f"{source}: {arch} has no width alpha={alpha}; accepted: {accepted}")
    return name


def translate_legacy(cfg: Config, values: dict, source: str) -> dict:
    """``values`` with the model zoo's keys that need translating replaced by schema keys.

    ``arch`` + ``alpha`` -> ``model``; ``dataset: imagenet2012`` -> ``imagenet``;
    ``save_checkpoint: True`` is what every run does; ``save_checkpoint: False`` and
    ``start_epoch`` have no equivalent here and are errors that say what to use instead.
    """
    out = {k: v for k, v in values.items() if k not in LEGACY_KEYS}
    if "arch" in values or "alpha" in values:
        model = _legacy_model(cfg, values, source)
        if "model" in out and out["model"] != model:
            raise ConfigError(f"{source}: model={out['model']} and arch/alpha ({model}) disagree; give one of them")
        out["model"] = model
    if isinstance(out.get("dataset"), str) and out["dataset"].lower() in LEGACY_DATASETS:
        out["dataset"] = LEGACY_DATASETS[out["dataset"].lower()]
    save = str(values.get("save_checkpoint", True)).lower()
    if save not in ("true", "1", "yes", "false", "0", "no"):
        raise ConfigError(f"{source}: save_checkpoint must be true or false, got {values['save_checkpoint']!r}")
    if save in ("false", "0", "no"):
        raise ConfigError(
            f"{source}: save_checkpoint=False is not supported (every run writes checkpoints to ckpt_save_dir); "
            f"use --keep_checkpoint_max 1 to keep only the newest"
        )
    if "start_epoch" in values:
        raise ConfigError(
            f"{source}: start_epoch={values['start_epoch']} has no meaning here (a run's epochs count from 0); "
            f"to continue a run use --resume CKPT (or --resume auto)"
        )
    return out


def resolve_split_folder(cfg: Config, split_key: str) -> Optional[str]:
    """Read ``cfg.data_dir`` as the split folder itself when it is one, as the model zoo's
    ``--dataset_path`` is: its parent becomes ``data_dir`` and its name ``cfg[split_key]``
    (``train_split`` or ``val_split``). Only when ``data_dir`` holds class folders with images and
    no ``<split>`` folder. Returns a line saying what was used, or None when nothing changed."""
    split_dir = os.path.join(cfg.data_dir, cfg[split_key])
    if cfg.dataset != "imagenet" or os.path.isdir(split_dir) or not is_split_folder(cfg.data_dir):
        return None
    path = os.path.abspath(cfg.data_dir)
    merge(cfg, {"data_dir": os.path.dirname(path), split_key: os.path.basename(path)}, "dataset_path")
    return f"{path} holds class folders: read as data_dir={cfg.data_dir} {split_key}={cfg[split_key]}"


def merge(cfg: Config, values: dict, source: str) -> Config:
    """Apply ``values`` (already parsed) onto ``cfg``, checking names and types."""
    values = translate_legacy(cfg, {ALIASES.get(k, k): v for k, v in values.items()}, source)
    for raw_name, value in values.items():
        name = ALIASES.get(raw_name, raw_name)
        if isinstance(value, dict):
            raise ConfigError(f"{source}: {raw_name} is a section; recipes are flat key: value lines like mindcv's")
        if name not in KEYS:
            raise ConfigError(f"{source}: unknown key {raw_name!r}{closest_hint(raw_name)}")
        cfg[name] = coerce(name, value, source)
        cfg.origins[name] = source
    return cfg


def validate(cfg: Config) -> Config:
    """Checks that involve values, not just types (ranges, combinations)."""
    positive = (
        "batch_size",
        "epoch_size",
        "image_resize",
        "num_classes",
        "in_channels",
        "val_interval",
        "ckpt_save_interval",
        "log_interval",
        "num_parallel_workers",
        "keep_checkpoint_max",
    )
    for name in positive:
        if cfg[name] <= 0:
            raise ConfigError(f"{name} must be positive, got {cfg[name]}")
    if cfg.lr <= 0:
        raise ConfigError(f"lr must be positive, got {cfg.lr}")
    if cfg.loss_scale <= 0:
        raise ConfigError(f"loss_scale must be positive, got {cfg.loss_scale}")
    for name in ("hflip", "vflip", "re_prob", "mixup_prob"):
        if not 0.0 <= cfg[name] <= 1.0:
            raise ConfigError(f"{name} is a probability in [0, 1], got {cfg[name]}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.crop_pct <= 0:
        # Above 1 the eval resize is smaller than the crop, which pads (mindcv's volo_d4 uses 1.15).
        raise ConfigError(f"crop_pct must be > 0, got {cfg.crop_pct}")
    if cfg.dataset_download and cfg.dataset not in DATASET_DOWNLOADS:
        raise ConfigError(
            f"dataset_download: True works for {', '.join(sorted(DATASET_DOWNLOADS))}, not dataset={cfg.dataset!r} "
            "(ImageNet has no public archive); place the folder tree under data_dir"
        )
    for name in ("aug_repeats", "aux_factor", "gradient_accumulation_steps"):
        if cfg[name] < (1 if name == "gradient_accumulation_steps" else 0):
            raise ConfigError(f"{name} must be >= {int(name == 'gradient_accumulation_steps')}, got {cfg[name]}")
    if cfg.aug_splits:
        raise ConfigError(
            f"aug_splits={cfg.aug_splits} (mindcv's AugMix with clean/augmented splits and a JSD loss) is not "
            "supported; use aug_splits: 0 with auto_augment: augmix (AugMix on every image, cross-entropy)"
        )
    if cfg.aux_factor:
        # mindcv applies aux_factor only to a model's auxiliary logits; MobileNets have none.
        _logger.warning("aux_factor=%s has no effect: MobileNets have no auxiliary head", cfg.aux_factor)
    if cfg.resume and cfg.ckpt_path:
        raise ConfigError("set either resume (continue a run) or ckpt_path (start from weights), not both")
    if cfg.pretrained and cfg.ckpt_path:
        raise ConfigError("set either pretrained: True or ckpt_path, not both")
    if cfg.quant:
        try:
            check_quant_config(cfg)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return cfg


def load_config(recipe: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Defaults, then the YAML ``recipe``, then ``overrides`` (a dict of key: value)."""
    cfg = defaults()
    if recipe:
        merge(cfg, read_yaml(recipe), recipe)
    if overrides:
        merge(cfg, overrides, "overrides")
    return validate(cfg)


def save_config(cfg: Config, path: str) -> str:
    """Write the resolved config as YAML, atomically."""
    return write_yaml(path, dict(cfg), "config")


def copy_config(cfg: Config) -> Config:
    """An independent copy of ``cfg`` that keeps its ``origins``."""
    out = Config(copy.deepcopy(dict(cfg)))
    out.origins.update(getattr(cfg, "origins", {}))
    return out


# Keys of a run's config.yaml that describe how that run started, not how to use its weights.
_RUN_START_KEYS = ("pretrained", "ckpt_path", "resume", "resume_opt", "distribute")


def config_from_run_dir(cfg: Config, weights: str) -> Config:
    """``cfg`` rebuilt on the ``config.yaml`` of the run directory holding ``weights``, when there is one.

    For entry points called without ``-c``: a checkpoint written by ``train.py`` sits beside the
    resolved recipe it was trained with (model, num_classes, image size, normalisation), which is
    then the base, with every key given on the command line applied on top. Keys describing how
    the run started (pretrained, ckpt_path, resume, distribute) are not taken from it.
    """
    run_config = os.path.join(os.path.dirname(os.path.abspath(weights)), RUN_CONFIG)
    if not weights or not os.path.isfile(run_config):
        return cfg
    values = {k: v for k, v in read_yaml(run_config).items() if k not in _RUN_START_KEYS}
    out = defaults()
    try:
        merge(out, values, run_config)
        merge(out, {k: cfg[k] for k in cfg.origins}, "command line")
        validate(out)
    except ConfigError as err:
        raise ValueError(f"{err} (read from the run directory of {weights}; pass -c RECIPE to use another)") from None
    _logger.info("configuration from %s (no -c given)", run_config)
    return out
