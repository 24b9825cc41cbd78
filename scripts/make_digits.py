"""Write scikit-learn's handwritten digits as an ImageFolder tree (real small data, no download).

python scripts/make_digits.py --root data/digits --image_size 64
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mindcv_mobile.data.digits import write_digits_imagefolder  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/digits", help="output folder (default data/digits)")
    parser.add_argument("--image_size", type=int, default=64, help="side in pixels (default 64)")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="default 0.2")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different tree at --root")
    args = parser.parse_args(argv)
    info = write_digits_imagefolder(args.root, args.image_size, args.val_fraction, args.seed, args.overwrite)
    action = "wrote" if info["written"] else "already present, unchanged:"
    print(
        f"{action} {info['root']}: train {info['train']} / val {info['val']} images, "
        f"{info['num_classes']} classes, {info['image_size']}x{info['image_size']} RGB PNG"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
