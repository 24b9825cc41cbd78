"""CIFAR-10, binary version: <root>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin."""
from __future__ import annotations

import os
from typing import Sequence

import mindspore.dataset as ds

from .sampler import ShardSampler

# Each batch file holds 10000 records of 1 label byte + 32*32*3 pixel bytes (R, G, B planes).
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3
CIFAR10_FILE_RECORDS = 10000
CIFAR10_SPLITS = {
    "train": ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
    "val": ("test", ["test_batch.bin"]),
    "test": ("test", ["test_batch.bin"]),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def read_cifar10(root: str, split: str, sampler_args: dict, workers: int,
                 classes: Sequence[str] | None = None):
    """Reader "cifar10" of ``create_dataset``: (dataset of decoded 32x32x3 uint8 images, its class
    list). The labels are fixed by the files, so a given ``classes`` must be ``CIFAR10_CLASSES``."""
    if split not in CIFAR10_SPLITS:
        raise ValueError(f"unknown cifar10 split {split!r}; choose one of {sorted(CIFAR10_SPLITS)}")
    if classes is not None and list(classes) != list(CIFAR10_CLASSES):
        raise ValueError(f"cifar10 labels are fixed to {list(CIFAR10_CLASSES)}; got classes={list(classes)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} does not exist; expected "
                                f"<root>/{CIFAR10_DIR}/ (CIFAR-10 binary version)")
    data_dir = os.path.join(root, CIFAR10_DIR)
    usage, files = CIFAR10_SPLITS[split]
    missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 binary files {missing} not found in {data_dir!r}; "
                                f"expected the extracted cifar-10-binary.tar.gz there")
    for f in files:
        size = os.path.getsize(os.path.join(data_dir, f))
        if size != CIFAR10_FILE_RECORDS * CIFAR10_RECORD_BYTES:
            # MindSpore's Cifar10 reader fails mid-epoch on a short file; fail here instead.
            raise ValueError(f"{os.path.join(data_dir, f)!r} has {size} bytes; a CIFAR-10 binary "
                             f"batch has {CIFAR10_FILE_RECORDS * CIFAR10_RECORD_BYTES} "
                             f"({CIFAR10_FILE_RECORDS} records of {CIFAR10_RECORD_BYTES} bytes)")
    sampler = ShardSampler(CIFAR10_FILE_RECORDS * len(files), **sampler_args)
    dataset = ds.Cifar10Dataset(data_dir, usage=usage, sampler=sampler, num_parallel_workers=workers)
    return dataset, list(CIFAR10_CLASSES)
