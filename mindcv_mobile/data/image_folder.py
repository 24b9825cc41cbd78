"""ImageFolder trees ``<root>/<split>/<class_name>/<images>``: the scanned index and its reader.

The file list of a split is scanned once, sorted (the same order on every rank), and each file
is routed by ``image_files.probe_image``: native files are served as their encoded bytes,
reencode files as PNG bytes, skipped files are dropped with one warning naming them. Files whose
extension is not an image extension (README.txt, .DS_Store) are not images of the tree and are
ignored without a warning; a *.jpg that is not an image is skipped with one.

Labels are positions in a class list: the split's own sorted class folders by default, or the
run's class list when one is given, so a validation split that lacks some classes still labels
the others as training did.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import mindspore.dataset as ds
import numpy as np

from ..host import data_workers
from .image_files import IMAGE_EXTENSIONS, probe_image, reencode_as_png
from .sampler import ShardSampler

_logger = logging.getLogger(__name__)

# Warn per bad file up to this many, then once with the remaining count, so a tree with
# thousands of broken files does not bury the log.
_MAX_FILE_WARNINGS = 50
# Known classes shown in the error for a class folder outside the run's class list.
_SHOWN_CLASSES = 5


@dataclass
class ImageFolderIndex:
    """The scanned content of ``<root>/<split>``: usable files in sorted order, with labels."""

    split_dir: str
    classes: list[str]  # label order: label i is classes[i]
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    reencode: list[bool] = field(default_factory=list)  # True -> decode with PIL, serve PNG
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    empty_classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def _split_dir(root: str, split: str) -> str:
    """``<root>/<split>`` after checking both exist, with an error that shows what does."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"dataset root {root!r} does not exist or is not a folder; expected an ImageFolder "
            f"tree <root>/<split>/<class_name>/<images>"
        )
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        present = sorted(e.name for e in os.scandir(root) if e.is_dir())
        raise FileNotFoundError(
            f"split folder {split_dir!r} not found; {root!r} has subfolders {present}; expected "
            f"<root>/<split>/<class_name>/<images> with split={split!r}"
        )
    return split_dir


def is_split_folder(path: str, probe: int = 3) -> bool:
    """Whether ``path`` is itself a split (class folders holding images directly), as the model
    zoo's ``--dataset_path`` is, rather than a root holding split folders. Only the first
    ``probe`` class folders are looked into, so the check stays cheap on ImageNet."""
    if not os.path.isdir(path):
        return False
    folders = sorted(e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    for folder in folders[:probe]:
        with os.scandir(folder) as entries:
            if any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
                return True
    return False


def folder_classes(root: str, split: str = "train") -> list[str]:
    """The sorted class folders of ``<root>/<split>`` (hidden ones left out); raises when none."""
    split_dir = _split_dir(root, split)
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(
            f"split folder {split_dir!r} has no class subfolders; expected {split_dir}/<class_name>/<images>"
        )
    return classes


def _preview(names: Sequence[str]) -> str:
    shown = repr(list(names[:_SHOWN_CLASSES]))
    return shown if len(names) <= _SHOWN_CLASSES else f"{shown[:-1]}, ...] ({len(names)} in all)"


def _label_folders(
    split_dir: str, split: str, folders: list[str], classes: Sequence[str] | None
) -> tuple[list[str], list[int]]:
    """(the class list, the label of each folder): a folder's position in ``classes`` when given,
    else in the split's own folder list."""
    if classes is None:
        return folders, list(range(len(folders)))
    classes = list(classes)
    repeated = sorted(c for c, n in collections.Counter(classes).items() if n > 1)
    if repeated:
        raise ValueError(f"classes lists {repeated} more than once; each class name must appear once")
    unknown = [f for f in folders if f not in classes]
    if unknown:
        raise ValueError(
            f"class folders {_preview(unknown)} of split {split!r} ({split_dir}) are not among the "
            f"{len(classes)} classes the model knows: {_preview(classes)}"
        )
    label_of = {name: i for i, name in enumerate(classes)}
    return classes, [label_of[f] for f in folders]


def _scan_class(args: tuple[int, str]) -> tuple[int, list[tuple[str, str, str]]]:
    label, class_dir = args
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, name)
            route, reason = probe_image(path)
            found.append((path, route, reason))
    return label, found


def scan_image_folder(
    root: str, split: str = "train", workers: int | None = None, classes: Sequence[str] | None = None
) -> ImageFolderIndex:
    """List and probe every image of ``<root>/<split>`` (sorted, same order on every rank).

    ``classes``: the run's class list; labels are then positions in it, and a class folder not in
    it is an error. Warns once per unusable file and per class folder without images; raises when
    the split has no class folder or no usable image at all. ``workers``: probing threads
    (``host.data_workers``).
    """
    folders = folder_classes(root, split)
    split_dir = os.path.join(root, split)
    classes, labels = _label_folders(split_dir, split, folders, classes)
    index = ImageFolderIndex(split_dir=split_dir, classes=classes)
    start = time.perf_counter()
    jobs = [(label, os.path.join(split_dir, c)) for label, c in zip(labels, folders)]
    # Probing is open + two small reads per file: I/O bound, so threads overlap the latency
    # of network file systems; the result order does not depend on the pool (map keeps it).
    with ThreadPoolExecutor(max_workers=min(data_workers(workers), len(jobs))) as pool:
        for label, found in pool.map(_scan_class, jobs):
            n_before = len(index.paths)
            for path, route, reason in found:
                if route == "skip":
                    index.skipped.append((path, reason))
                    continue
                index.paths.append(path)
                index.labels.append(label)
                index.reencode.append(route == "reencode")
            if len(index.paths) == n_before:
                index.empty_classes.append(classes[label])

    for path, reason in index.skipped[:_MAX_FILE_WARNINGS]:
        _logger.warning("skipping %s: %s", path, reason)
    if len(index.skipped) > _MAX_FILE_WARNINGS:
        _logger.warning(
            "skipping %d more unusable files under %s (first %d listed above)",
            len(index.skipped) - _MAX_FILE_WARNINGS,
            split_dir,
            _MAX_FILE_WARNINGS,
        )
    for name in index.empty_classes:
        _logger.warning(
            "class folder %s has no usable images (extensions %s); its label index %d is kept",
            os.path.join(split_dir, name),
            "/".join(IMAGE_EXTENSIONS),
            classes.index(name),
        )
    if not index.paths:
        raise ValueError(
            f"no usable images under {split_dir!r} ({len(folders)} class folders, "
            f"{len(index.skipped)} unusable files); expected {split_dir}/<class_name>/<images> "
            f"with extensions {IMAGE_EXTENSIONS}"
        )
    _logger.info(
        "%s: %d images in %d classes (%d re-encoded via PIL, %d skipped), scanned in %.1f s",
        split_dir,
        len(index),
        len(folders),
        sum(index.reencode),
        len(index.skipped),
        time.perf_counter() - start,
    )
    return index


_SCAN_CACHE: dict = {}


def _scan_cached(root: str, split: str, classes: Sequence[str] | None) -> ImageFolderIndex:
    """``scan_image_folder``, remembered while the split's folders are unchanged (mtimes), so a
    trainer that rebuilds its pipeline every epoch does not rescan ImageNet every epoch."""
    split_dir = os.path.abspath(os.path.join(root, split))
    try:
        stamp = (os.stat(split_dir).st_mtime_ns,) + tuple(
            sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(split_dir) if e.is_dir())
        )
    except OSError:
        return scan_image_folder(root, split, classes=classes)  # raises the descriptive error
    key = (split_dir, stamp, None if classes is None else tuple(classes))
    if key not in _SCAN_CACHE:
        if len(_SCAN_CACHE) >= 8:
            _SCAN_CACHE.clear()
        _SCAN_CACHE[key] = scan_image_folder(root, split, classes=classes)
    return _SCAN_CACHE[key]


class EncodedImageSource:
    """Random-access source of (encoded image bytes as uint8 array, int32 label)."""

    def __init__(self, index: ImageFolderIndex):
        self.paths = index.paths
        self.labels = np.asarray(index.labels, dtype=np.int32)
        self.reencode = index.reencode

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> bytes:
        if self.reencode[i]:
            return reencode_as_png(self.paths[i])
        with open(self.paths[i], "rb") as f:
            return f.read()

    def __getitem__(self, i: int):
        i = int(i)
        # A file that vanished or broke after the scan must not stop a multi-day run:
        # serve the next readable file in the list instead (with a warning naming it).
        for attempt in range(min(len(self.paths), 16)):
            j = (i + attempt) % len(self.paths)
            try:
                data = self._read(j)
            except Exception as e:  # noqa: BLE001
                _logger.warning(
                    "skipping %s at read time (%s: %s); serving the next file", self.paths[j], type(e).__name__, e
                )
                continue
            return np.frombuffer(data, dtype=np.uint8), self.labels[j]
        raise OSError(f"16 consecutive files from {self.paths[i]!r} could not be read")


def read_image_folder(root: str, split: str, sampler_args: dict, workers: int, classes: Sequence[str] | None = None):
    """Reader "imagenet" of ``create_dataset``: (dataset of encoded images, its class list)."""
    index = _scan_cached(root, split, classes)
    sampler = ShardSampler(len(index), **sampler_args)
    if len(sampler) == 0:
        raise ValueError(
            f"{index.split_dir!r} has {len(index)} images, too few for num_shards={sampler_args['num_shards']}"
        )
    # Threads, not processes: the source only reads bytes (the GIL is released during I/O)
    # and decoding happens in the C++ map. Two reader threads hide file latency; measured on
    # 500x375 JPEGs this costs ~10% more CPU per image than ImageFolderDataset's C++ reader.
    dataset = ds.GeneratorDataset(
        EncodedImageSource(index),
        column_names=["image", "label"],
        sampler=sampler,
        num_parallel_workers=min(2, workers),
        python_multiprocessing=False,
    )
    return dataset, list(index.classes)
