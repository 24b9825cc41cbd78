"""What the entry points share: the command line (``-c RECIPE`` plus ``--<key>`` for every
schema key; ``cli_help`` decides what each entry's ``--help`` lists) and turning expected
failures into one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

import yaml

from .cli_help import ENTRIES, build_parser
from .config import (
    ALIASES,
    KEYS,
    LEGACY_KEYS,
    ConfigError,
    closest_hint,
    coerce,
    defaults,
    merge,
    read_yaml,
    validate,
)

# Failures a user can fix from the message (bad path, bad value, no launcher, diverged loss);
# anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError, FloatingPointError)


def run_main(main: Callable[[], int], prog: str) -> int:
    """Run ``main()``; print expected errors as ``prog: error: message`` and return 2.
    ``MINDCV_MOBILE_DEBUG=1`` shows the traceback too."""
    try:
        return main()
    except USER_ERRORS as err:
        if os.environ.get("MINDCV_MOBILE_DEBUG"):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _parse_cli_value(name: str, text: str):
    """A command-line value in its key's type. Strings (paths, names) stay as typed: YAML would
    read 0x1F as 31, 010 as 8 and yes as True. Other kinds are YAML scalars or lists: "0.1" ->
    float, "[0.08, 1.0]" -> list, "True" -> bool; "None"/"null" -> None everywhere."""
    if text in ("None", "none", "null"):
        return None
    kind = LEGACY_KEYS[name] if name in LEGACY_KEYS else KEYS[ALIASES.get(name, name)].kind
    if kind == "str":
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_args(argv: Optional[Sequence[str]] = None, description: str = "", extra_arguments=None, entry: str = "train"):
    """Parse an entry point's command line: returns (Config, namespace of the extra arguments).

    ``entry`` (a key of ``cli_help.ENTRIES``) decides which keys ``--help`` lists and what they
    mean there; every key is accepted. A key the entry takes one or more values of (validate.py's
    ``--ckpt_path``) sets the config to the first value and ``extras.<key>s`` to all of them.
    Unknown flags are errors naming the closest key (argparse alone would only say
    'unrecognized arguments').
    """
    parser = build_parser(entry, description, extra_arguments)
    argv = list(sys.argv[1:] if argv is None else argv)
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        name = flag.lstrip("-").split("=", 1)[0]
        parser.exit(2, f"{parser.prog}: error: unknown option {flag}{closest_hint(name)}\n")
    accepted = {**KEYS, **ALIASES, **LEGACY_KEYS}
    values = {name: value for name, value in vars(known).items() if name in accepted}
    extras = argparse.Namespace(**{k: v for k, v in vars(known).items() if k not in accepted})
    many = {}
    for name in ENTRIES[entry].multiple:
        if name in values:
            many[name] = [_parse_cli_value(name, v) for v in values[name]]
            values[name] = values[name][0]
    cli = {name: _parse_cli_value(name, value) for name, value in values.items()}
    try:
        cfg = defaults()
        if known.config:
            merge(cfg, read_yaml(known.config), known.config)
        cfg = validate(merge(cfg, cli, "command line"))
        for name in ENTRIES[entry].multiple:
            listed = many.get(name, [cfg[name]] if cfg[name] else [])
            setattr(extras, f"{name}s", [coerce(name, v, "command line") for v in listed])
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return cfg, extras


# The model zoo's MobileNetV1 train.py/eval.py run their recipe of each dataset; the flags only
# they have (--dataset_path, --platform, --pretrain_ckpt), given without -c or a model, pick it.
MODEL_ZOO_FLAGS = ("--dataset_path", "--platform", "--pretrain_ckpt")
MODEL_ZOO_RECIPES = {
    "imagenet": "configs/mobilenetv1/mobilenet_v1_1.0_imagenet2012_ascend.yaml",
    "cifar10": "configs/mobilenetv1/mobilenet_v1_1.0_cifar10_ascend.yaml",
}


def model_zoo_recipe(argv: Sequence[str], cfg, extras, root: str) -> Optional[str]:
    """The MobileNetV1 recipe a model-zoo command line means (under ``root``, the repository),
    or None when the command names a recipe (-c) or a model (--model, --arch) itself."""
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    if extras.config or "model" in cfg.origins or not flags & set(MODEL_ZOO_FLAGS):
        return None
    return os.path.join(root, MODEL_ZOO_RECIPES[cfg.dataset])
