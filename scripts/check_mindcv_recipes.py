"""Check that mindcv recipes, with their model switched to a MobileNet, load here and build every
object a training run would (transforms, LR schedule, optimizer, train step).

python scripts/check_mindcv_recipes.py path/to/mindcv/configs --model mobilenet_v3_small_100

Prints one line per recipe that is refused (with the reason) and a count; exits 1 if any is refused.
"""

import argparse
import collections
import glob
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mindcv_mobile.build import (  # noqa: E402
    build_lr_schedule,
    build_optimizer,
    build_precision,
    build_train_step,
    build_transforms,
)
from mindcv_mobile.config import load_config, read_yaml  # noqa: E402
from mindcv_mobile.models import create_model  # noqa: E402

STEPS_PER_EPOCH = 2


def check_recipe(path: str, model: str) -> str:
    """'' when ``path`` (model replaced by ``model``) loads and builds; else the reason."""
    values = read_yaml(path)
    values["model"] = model
    try:
        cfg = load_config(overrides=values)
        build_transforms(cfg, True)
        build_transforms(cfg, False)
        schedule = build_lr_schedule(cfg, STEPS_PER_EPOCH)
        net = create_model(
            cfg.model, num_classes=cfg.num_classes, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate
        )
        build_train_step(cfg, net, build_optimizer(cfg, net, schedule), build_precision(cfg, "CPU"))
    except Exception as err:  # noqa: BLE001 -- every refusal is reported, none stops the sweep
        return f"{type(err).__name__}: {err}"
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", help="a folder of mindcv recipes (searched recursively for *.yaml)")
    parser.add_argument("--model", default="mobilenet_v3_small_100", help="the MobileNet swapped in")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    paths = sorted(glob.glob(os.path.join(args.configs, "**", "*.yaml"), recursive=True))
    if not paths:
        print(f"no *.yaml under {args.configs}", file=sys.stderr)
        return 2
    reasons = collections.Counter()
    for path in paths:
        reason = check_recipe(path, args.model)
        if reason:
            reasons[reason] += 1
            print(f"refused {os.path.relpath(path, args.configs)}: {reason}")
    print(f"{len(paths) - sum(reasons.values())} of {len(paths)} recipes accepted with model {args.model}")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
