"""Real small data for tests and quick runs: scikit-learn's handwritten digits as an ImageFolder.

``load_digits()`` ships with scikit-learn (no download): 1,797 8x8 grayscale scans (values
0..16) of the digits 0-9 from the UCI "Optical Recognition of Handwritten Digits" set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

SPLITS = ("train", "val")
_MANIFEST = "digits.json"


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified: each class puts round(n_class * val_fraction) of its samples in val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


def _count_tree(root: str) -> dict[str, dict[str, int]]:
    counts = {}
    for split in SPLITS:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            return {}
        counts[split] = {
            c: len([f for f in os.listdir(os.path.join(split_dir, c)) if f.endswith(".png")])
            for c in sorted(os.listdir(split_dir))
            if os.path.isdir(os.path.join(split_dir, c))
        }
    return counts


def write_digits_imagefolder(
    root: str, image_size: int = 64, val_fraction: float = 0.2, seed: int = 0, overwrite: bool = False
) -> dict:
    """Write ``<root>/{train,val}/<0..9>/<index>.png`` (RGB, image_size x image_size).

    Pixels 0..16 are scaled to 0..255 and upscaled bilinearly. The split is stratified and
    fixed by ``seed``. Idempotent: a tree written with the same arguments and complete counts
    is left as is (``written`` False); a different or incomplete one needs ``overwrite=True``.
    The tree is built in a temporary folder beside ``root`` and renamed into place.

    Returns {"root", "image_size", "val_fraction", "seed", "num_classes", "train", "val",
    "per_class": {split: {class: count}}, "written"}.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (the scans are 8x8); got {image_size!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
    image_size, val_fraction, seed = int(image_size), float(val_fraction), int(seed)

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    splits = _split_indices(labels, val_fraction, seed)
    expected = {s: {str(c): int((labels[idx] == c).sum()) for c in range(10)} for s, idx in splits.items()}
    params = {"image_size": image_size, "val_fraction": val_fraction, "seed": seed}
    result = {
        "root": os.path.abspath(root),
        **params,
        "num_classes": 10,
        "train": len(splits["train"]),
        "val": len(splits["val"]),
        "per_class": expected,
    }

    manifest_path = os.path.join(root, _MANIFEST)
    if os.path.exists(root):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            manifest = None
        if manifest == params and _count_tree(root) == expected:
            return {**result, "written": False}
        if not overwrite:
            raise FileExistsError(
                f"{root!r} exists but is not a digits tree written with {params}; pass "
                f"overwrite=True (--overwrite) to replace it, or choose another root"
            )

    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".digits-", dir=parent)
    try:
        for split, idx in splits.items():
            for c in range(10):
                os.makedirs(os.path.join(tmp, split, str(c)))
            for i in idx:
                gray = (digits.images[i] * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
                img = Image.fromarray(gray, mode="L").resize((image_size, image_size), Image.BILINEAR).convert("RGB")
                img.save(os.path.join(tmp, split, str(labels[i]), f"{i:04d}.png"))
        with open(os.path.join(tmp, _MANIFEST), "w", encoding="utf-8") as f:
            json.dump(params, f)
        if os.path.exists(root):
            old = tempfile.mkdtemp(prefix=".digits-old-", dir=parent)
            os.rename(root, os.path.join(old, "tree"))
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, "written": True}
