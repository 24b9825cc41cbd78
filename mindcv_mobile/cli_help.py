"""What each entry point's ``--help`` lists: the recipe keys it reads, each with the meaning it has
there, in mindcv's groups for train.py, with defaults written the short way.

Every schema key is accepted by every entry point (a recipe holds all of them, and ``-c RECIPE
--lr 0.1`` must work on validate.py too); the keys an entry point does not read, and the other
tools' names for keys, are only left out of its ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from typing import Optional

from .build import MODEL_RECORD_KEYS
from .config import ALIASES, KEYS, LEGACY_KEYS, SCHEMA
from .models import list_models


@dataclasses.dataclass(frozen=True)
class EntryHelp:
    """One entry point's command line. ``keys``: the schema keys its ``--help`` describes, in this
    order; ``also``: keys it reads with their training meaning (tuning, runtime), only named;
    ``help`` / ``defaults``: a key's meaning and default here where the schema's (training)
    wording does not fit; ``recipe``: the ``-c`` help; ``multiple``: keys taking one or more values."""

    keys: tuple
    also: tuple = ()
    help: dict = dataclasses.field(default_factory=dict)
    defaults: dict = dataclasses.field(default_factory=dict)
    recipe: str = "YAML recipe (mindcv's keys)"
    multiple: tuple = ()


# What the evaluating entry points read (tasks/validate.py, tasks/export.py, tasks/infer.py,
# build.eval_config / load_eval_network / build_eval_loader, deploy/). in_channels is only
# listed where it shapes the result (export): the image pipeline yields 3 channels.
_RUNTIME = ("device_target", "mode", "jit_level")
_WEIGHTS = ("ckpt_path", "pretrained", "model", "num_classes", "ema", "quant")
_PREPROCESSING = ("dataset", "image_resize", "crop_pct", "interpolation", "mean", "std")
_SCORING = (*_WEIGHTS, "data_dir", "val_split", "train_split", *_PREPROCESSING[1:], "batch_size", "val_amp_level")
_SCORING_ALSO = (
    "dataset",
    "dataset_download",
    "num_parallel_workers",
    "loss",
    "label_smoothing",
    "amp_force",
    "amp_cast_list",
)
_FROM_RUN = "recipe (default: the checkpoint run's config.yaml)"
_MODEL_RECORD = {key: "the model's" for key in MODEL_RECORD_KEYS}

_EVAL_HELP = {
    "model": "",
    "pretrained": "the model's released weights",
    "num_classes": "classifier size of the weights",
    "ema": "the EMA weights the checkpoint holds",
    "quant": "a quantization-aware checkpoint",
    "dataset": "the training data: decides the eval transforms",
    "image_resize": "input (crop) size",
    "crop_pct": "centre-crop fraction",
    "interpolation": "resize",
    "mean": "normalisation mean (0-255)",
    "std": "normalisation std (0-255)",
}
_SCORING_HELP = {
    **_EVAL_HELP,
    "ckpt_path": "checkpoint to score",
    "pretrained": "score the model's released weights",
    "ema": "score the EMA weights the checkpoint holds",
    "data_dir": "dataset root holding val_split",
    "val_split": "split folder to score",
    "train_split": "its class folders name the labels",
    "batch_size": "images per batch",
    "val_amp_level": "mixed precision",
}

ENTRIES = {
    "train": EntryHelp(keys=tuple(KEYS), help={"model": ""}),
    "validate": EntryHelp(
        keys=_SCORING,
        also=(*_SCORING_ALSO, *_RUNTIME),
        help={
            **_SCORING_HELP,
            "ckpt_path": "checkpoint(s) to score: one or more .ckpt files, or a run directory (every checkpoint in "
            "it); .onnx/.mindir",
        },
        defaults=_MODEL_RECORD,
        recipe=_FROM_RUN,
        multiple=("ckpt_path",),
    ),
    "eval": EntryHelp(
        keys=_SCORING,
        also=(*_SCORING_ALSO, *_RUNTIME),
        help={
            **_SCORING_HELP,
            "ckpt_path": "checkpoint to score (model zoo: --pretrain_ckpt)",
            "data_dir": "root of val_split, or that folder (model zoo: --dataset_path)",
        },
        defaults=_MODEL_RECORD,
        recipe=f"{_FROM_RUN}, else the MobileNetV1 recipe of the dataset",
    ),
    "export": EntryHelp(
        keys=(*_WEIGHTS, "in_channels", "image_resize", "batch_size", *_PREPROCESSING[2:], "dataset"),
        also=_RUNTIME,
        help={
            **_EVAL_HELP,
            "ckpt_path": "checkpoint to export",
            "pretrained": "export the model's released weights",
            "ema": "export the EMA weights the checkpoint holds",
            "quant": "a quantization-aware checkpoint: int8 files",
            "in_channels": "input channels",
            "batch_size": "batch of MINDIR / AIR files (ONNX: any)",
            "crop_pct": "for the .json: centre-crop fraction",
            "interpolation": "for the .json: resize interpolation",
            "mean": "for the .json: normalisation mean (0-255)",
            "std": "for the .json: normalisation std (0-255)",
            "dataset": "for the .json: the training data",
        },
        defaults={**_MODEL_RECORD, "batch_size": "1"},
        recipe=_FROM_RUN,
    ),
    "infer": EntryHelp(
        keys=(*_WEIGHTS, *_PREPROCESSING, "batch_size"),
        also=_RUNTIME,
        help={
            **_EVAL_HELP,
            "ckpt_path": "model to run: a .ckpt, or an exported .onnx / .mindir",
            "pretrained": "classify with the model's released weights",
            "ema": "classify with the checkpoint's EMA weights",
            "batch_size": "images per forward pass (checkpoints)",
        },
        defaults={key: "the model's or .json's" for key in MODEL_RECORD_KEYS},
        recipe=f"{_FROM_RUN}; an exported file: its .json",
    ),
}

# mindcv's config.py groups, in its order. The schema's groups map onto them; the keys mindcv
# files elsewhere move: the start weights under Model, precision and loss scaling under AMP.
GROUP_TITLES = {
    "system": "System parameters",
    "dataset": "Dataset parameters",
    "augmentation": "Augmentation parameters",
    "model": "Model parameters",
    "optimizer": "Optimizer parameters",
    "scheduler": "Scheduler parameters",
    "loss": "Loss parameters",
    "amp": "Auto mixed precision parameters",
    "quant": "Quantization-aware training parameters",
}
_MOVED = {
    "aug_repeats": "augmentation",
    **dict.fromkeys(("pretrained", "ckpt_path", "resume", "resume_opt"), "model"),
    **dict.fromkeys(("amp_level", "amp_force", "val_amp_level", "amp_cast_list"), "amp"),
    **dict.fromkeys(("loss_scale", "loss_scale_type", "drop_overflow_update"), "amp"),
}


def key_groups() -> dict:
    """``{title: [key, ...]}`` for train.py's ``--help``: every schema key under mindcv's group
    title; keys moved into a group follow its own keys."""
    native = {name: group for group, keys in SCHEMA.items() for name in keys}
    out = {title: [] for title in GROUP_TITLES.values()}
    for moved in (False, True):
        for name, group in native.items():
            if (name in _MOVED) == moved:
                out[GROUP_TITLES[_MOVED.get(name, group)]].append(name)
    return {title: names for title, names in out.items() if names}


def default_text(value) -> str:
    """A default as --help writes it: floats in their shortest form after rounding away binary
    noise (57.120000000000005 -> 57.12), lists as [0.08, 1.0]."""
    if isinstance(value, float):
        return repr(float(f"{value:.12g}"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(default_text(v) for v in value) + "]"
    return str(value)


def _braces(items) -> str:
    return items[0] if len(items) == 1 else "{" + ",".join(items) + "}"


def model_families() -> str:
    """The registered models in brace form, e.g. mobilenet_v3_{large,small}_{075,100}; the input
    sizes some names end with are written [_{96,...,224}] (``list_models()`` has every name)."""
    families: dict = {}
    for name in list_models():
        match = re.fullmatch(r"(.+?)_(\d{3})(?:_(\d+))?", name)
        family, width, size = match.groups() if match else (name, None, None)
        widths, sizes = families.setdefault(family, (set(), set()))
        widths.update([width] if width else [])
        sizes.update([size] if size else [])
    # Families differing in their last word only, with the same widths and sizes, share an entry.
    merged: dict = {}
    for family, (widths, sizes) in families.items():
        stem, _, last = family.rpartition("_")
        merged.setdefault((stem, tuple(sorted(widths)), tuple(sorted(sizes, key=int))), []).append(last)
    parts = []
    for (stem, widths, sizes), lasts in merged.items():
        text = f"{stem}_{_braces(lasts)}" if stem else _braces(lasts)
        text += f"_{_braces(widths)}" if widths else ""
        if sizes:  # the input sizes some names end with: the first and last of them
            text += f"[_{_braces(sizes if len(sizes) < 4 else (sizes[0], '...', sizes[-1]))}]"
        parts.append(text)
    return ", ".join(parts)


def _says_something(default) -> bool:
    """Whether ``(default: ...)`` is worth a line: not for an empty string, None or a flag's False."""
    return not (default is None or default is False or default == "" or default is argparse.SUPPRESS)


class HelpFormatter(argparse.HelpFormatter):
    """Defaults only where they say something, written by :func:`default_text`; ``-c, --config
    RECIPE`` names the value once."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=24)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        said = "(default:" in text or "%(default)" in text
        if not action.option_strings or said or not _says_something(action.default):
            return text
        return f"{text} (default: {default_text(action.default).replace('%', '%%')})"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if len(action.option_strings) < 2 or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"


class _ListModels(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print("\n".join(list_models()))
        parser.exit()


def _key_help(entry: EntryHelp, name: str) -> str:
    key = KEYS[name]
    text = entry.help.get(name, key.help)
    if name == "model":
        text = f"{text}: " if text else ""
        text += f"{model_families()} (all: --list_models)"
    if key.choices:
        text += f" {{{', '.join(repr(c) if c == '' else str(c) for c in key.choices)}}}"
    default = entry.defaults.get(name, key.default)
    if _says_something(default) and "(default:" not in text:
        text += f" (default: {default_text(default)})"
    return text.replace("%", "%%")


def _add_key(group, entry: EntryHelp, name: str, shown: bool) -> None:
    kind = KEYS[name].kind if name in KEYS else LEGACY_KEYS.get(name) or KEYS[ALIASES[name]].kind
    if name in entry.multiple:
        how = {"nargs": "+"}
    else:
        # A bare boolean flag means True, as in mindcv (--distribute, --ema); --flag False still works.
        how = {"nargs": "?", "const": "True"} if kind == "bool" else {}
    group.add_argument(
        f"--{name}",
        dest=name,
        default=argparse.SUPPRESS,
        metavar=kind.upper(),
        help=_key_help(entry, name) if shown else argparse.SUPPRESS,
        **how,
    )


class _PositionalsOnly:
    """Takes an entry point's own arguments and keeps the positional ones (for the usage line)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_argument(self, *names, **kwargs) -> None:
        if not names[0].startswith("-"):
            self.parser.add_argument(*names, **kwargs)


def _usage(prog: str, extra_arguments) -> str:
    """One usage line: ``[--KEY VALUE ...]`` stands for the command's options and the recipe keys,
    which --help lists; positional arguments are written out."""
    probe = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    probe.add_argument("-c", metavar="RECIPE")
    probe.add_argument("--KEY", metavar="VALUE")
    if extra_arguments:
        extra_arguments(_PositionalsOnly(probe))
    return probe.format_usage()[len("usage: ") :].strip().replace("[--KEY VALUE]", "[--KEY VALUE ...]")


def _description(description: str, entry: EntryHelp, every_key: bool) -> str:
    """The entry's description, then (unless it reads every key) which recipe keys it uses."""
    if every_key:
        return description
    also = ", ".join(f"--{name}" for name in entry.also)
    note = "Reads the recipe keys below" + (f" and, as train.py --help describes them, {also}" if also else "")
    note += "; other keys are accepted and unused."
    return f"{description.rstrip('.')}. {note}" if description else note


def build_parser(entry_name: str, description: str = "", extra_arguments=None, prog: Optional[str] = None):
    """The parser of one entry point (a key of ``ENTRIES``): ``-c RECIPE``, its own arguments
    (``extra_arguments(parser)``) and ``--<key>`` for every schema key, of which only the keys
    the entry reads are in ``--help``."""
    if entry_name not in ENTRIES:
        raise ValueError(f"no entry point {entry_name!r}; one of: {', '.join(ENTRIES)}")
    entry = ENTRIES[entry_name]
    every_key = set(entry.keys) == set(KEYS)
    prog = prog or os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=_usage(prog, extra_arguments).replace("%", "%%"),
        description=_description(description, entry, every_key).replace("%", "%%"),
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-c", "--config", default="", metavar="RECIPE", help=entry.recipe)
    parser.add_argument("--list_models", action=_ListModels, help="print every model name and exit")
    if extra_arguments:
        extra_arguments(parser)
    groups = key_groups() if every_key else {"recipe keys used here": list(entry.keys)}
    for title, names in groups.items():
        group = parser.add_argument_group(title)
        for name in names:
            _add_key(group, entry, name, shown=True)
    # The other keys, and other tools' names (aliases, model-zoo keys), are accepted but not listed.
    listed = {name for names in groups.values() for name in names}
    for name in [*(k for k in KEYS if k not in listed), *ALIASES, *LEGACY_KEYS]:
        _add_key(parser, entry, name, shown=False)
    return parser


__all__ = ["ENTRIES", "GROUP_TITLES", "EntryHelp", "HelpFormatter", "build_parser", "default_text", "key_groups"]
