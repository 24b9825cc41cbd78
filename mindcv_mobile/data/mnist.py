"""MNIST as its four idx files, read by MindSpore's C++ ``MnistDataset``.

Looked for in ``root`` (where mindcv's download puts them and where MindSpore reads them),
then in ``<root>/MNIST/raw`` (torchvision's layout):
    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte
An images file is a big-endian header (magic 2051, count, 28, 28) and count*28*28 pixel bytes,
a labels file a header (magic 2049, count) and count label bytes. The 1-channel digits are
yielded as 28x28x3 uint8 (the grey value in every channel) so RGB models and the transforms
of the other decoded data sets apply unchanged.
"""

from __future__ import annotations

import os
import struct
from typing import Sequence

import mindspore.dataset as ds
import mindspore.dataset.vision as vision

from ..download import ensure_file, extract
from .sampler import ShardSampler

MNIST_SUBDIRS = ("", os.path.join("MNIST", "raw"))
MNIST_CLASSES = tuple(str(d) for d in range(10))
MNIST_SPLITS = {"train": ("train", "train"), "val": ("test", "t10k"), "test": ("test", "t10k")}
MNIST_IMAGE_MAGIC, MNIST_LABEL_MAGIC, MNIST_SIDE = 2051, 2049, 28
# The gzipped files and their sha256, as recorded for this mirror of the original files.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_FILES = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def _split_files(split: str | None) -> list[str]:
    prefixes = sorted({p for _, p in MNIST_SPLITS.values()}) if split is None else [MNIST_SPLITS[split][1]]
    return [f"{p}-{kind}" for p in prefixes for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def mnist_dir(root: str, files: Sequence[str] | None = None) -> str | None:
    """The folder holding ``files`` (default: all four): ``root`` or ``<root>/MNIST/raw``."""
    files = list(MNIST_FILES) if files is None else list(files)
    for sub in MNIST_SUBDIRS:
        folder = os.path.join(root, sub) if sub else root
        if all(os.path.isfile(os.path.join(folder, f)) for f in files):
            return folder
    return None


def _header(path: str, magic: int, fields: int) -> tuple[int, ...]:
    with open(path, "rb") as f:
        head = f.read(4 * fields)
    values = struct.unpack(f">{fields}I", head) if len(head) == 4 * fields else ()
    if not values or values[0] != magic:
        raise ValueError(
            f"{path!r} is not an MNIST idx file (expected the magic number {magic} in its "
            f"first 4 bytes); gunzip the downloaded .gz or pass download=True"
        )
    return values


def _count_rows(images: str, labels: str) -> int:
    """Rows of an images/labels pair, after checking both headers and file sizes."""
    _, n_images, rows, cols = _header(images, MNIST_IMAGE_MAGIC, 4)
    _, n_labels = _header(labels, MNIST_LABEL_MAGIC, 2)
    if (rows, cols) != (MNIST_SIDE, MNIST_SIDE):
        raise ValueError(f"{images!r} holds {rows}x{cols} images; MNIST images are {MNIST_SIDE}x{MNIST_SIDE}")
    if n_images != n_labels:
        raise ValueError(f"{images!r} holds {n_images} images but {labels!r} {n_labels} labels")
    for path, want in ((images, 16 + n_images * rows * cols), (labels, 8 + n_labels)):
        if os.path.getsize(path) != want:
            raise ValueError(
                f"{path!r} has {os.path.getsize(path)} bytes; its header promises {want} "
                f"({n_images} records): the file is truncated or padded"
            )
    return n_images


def read_mnist(root: str, split: str, sampler_args: dict, workers: int, classes: Sequence[str] | None = None):
    """Reader "mnist" of ``create_dataset``: (dataset of 28x28x3 uint8 images, ["0", ..., "9"])."""
    if split not in MNIST_SPLITS:
        raise ValueError(f"unknown mnist split {split!r}; choose one of {sorted(MNIST_SPLITS)}")
    if classes is not None and list(classes) != list(MNIST_CLASSES):
        raise ValueError(f"mnist labels are fixed to {list(MNIST_CLASSES)}; got classes={list(classes)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} does not exist; expected the MNIST idx files in it")
    usage, prefix = MNIST_SPLITS[split]
    files = _split_files(split)
    data_dir = mnist_dir(root, files)
    if data_dir is None:
        missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
        raise FileNotFoundError(
            f"MNIST files {missing} not found in {root!r} or "
            f"{os.path.join(root, MNIST_SUBDIRS[1])!r}; gunzip the official .gz files "
            f"there or pass download=True (dataset_download: True)"
        )
    rows = _count_rows(*(os.path.join(data_dir, f) for f in files))
    sampler = ShardSampler(rows, **sampler_args)
    source = ds.MnistDataset(data_dir, usage=usage, sampler=sampler, num_parallel_workers=workers)
    dataset = source.map(
        [vision.ConvertColor(vision.ConvertMode.COLOR_GRAY2RGB)], input_columns="image", num_parallel_workers=workers
    )
    dataset.sampler = source.sampler  # create_dataset sets the epoch on it
    return dataset, list(MNIST_CLASSES)


def download_mnist(root: str, split: str | None = None, progress: bool = True) -> bool:
    """Fetch and gunzip into ``root`` the idx files of ``split`` (None: all four) that
    ``mnist_dir`` does not find; True when something was extracted. A ``.gz`` already in
    ``root`` (e.g. placed by hand) is used when its hash matches; it is deleted once extracted."""
    if split is not None and split not in MNIST_SPLITS:
        raise ValueError(f"unknown mnist split {split!r}; choose one of {sorted(MNIST_SPLITS)}")
    files = _split_files(split)
    if mnist_dir(root, files) is not None:
        return False
    for name in files:
        if os.path.isfile(os.path.join(root, name)):
            continue
        archive = ensure_file(MNIST_URL + name + ".gz", os.path.join(root, name + ".gz"), MNIST_FILES[name], progress)
        extract(archive, root)
        os.remove(archive)
    return True
