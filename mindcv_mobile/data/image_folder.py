"""ImageFolder trees ``<root>/<split>/<class_name>/<images>``: a split's index and its reader,
and the decoding of image files.

A split is scanned once (``index.scan_split``: every file is routed by ``image_files``, in sorted
order, the same on every rank) and the scan is stored beside the data (``index.build_index``), so
the later processes of a run (every rank, validation) load it instead of scanning again. Native
files are served as their encoded bytes, reencode files as PNG bytes; skipped files are left out
and named in a warning. Files whose extension is not an image extension (README.txt, .DS_Store)
are not images of the tree and are ignored without a warning; a *.jpg that is not an image is
skipped with one. Paths are kept as one byte string with offsets (``PathTable``): ~45 bytes per
file instead of ~130 for Python strings in a list.

Labels are positions in a class list: the split's own sorted class folders by default, or the
run's class list when one is given, so a validation split that lacks some classes still labels
the others as training did.
"""

from __future__ import annotations

import collections
import io
import logging
import operator
import os
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Sequence

import mindspore.dataset as ds
import numpy as np

from .image_files import IMAGE_EXTENSIONS, route_content
from .sampler import ShardSampler

_logger = logging.getLogger(__name__)

# Warn per bad file up to this many, then once with the remaining count, so a tree with
# thousands of broken files does not bury the log.
_MAX_FILE_WARNINGS = 50
# Known classes shown in the error for a class folder outside the run's class list.
_SHOWN_CLASSES = 5
_LOADED: dict = {}  # in this process: (split, folder mtimes, classes) -> labelled index


class PathTable(SequenceABC):
    """Paths ``<base>/<relative path>``: the relative paths are one bytes object (file-system
    encoding, each ending in NUL, which no path contains) and the offsets where they start, so a
    million paths are two objects. Indexing gives the path as ``str``."""

    def __init__(self, base: str, blob: bytes):
        ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 0)
        self.base, self.blob, self.starts = base, blob, np.concatenate([np.zeros(1, np.int64), ends + 1])

    def __len__(self) -> int:
        return len(self.starts) - 1

    def relative(self, i: int) -> str:
        return os.fsdecode(self.blob[self.starts[i] : self.starts[i + 1] - 1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n, i = len(self), operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"path index {i} out of range for {n} paths")
        return os.path.join(self.base, self.relative(i % n))


@dataclass
class ImageFolderIndex:
    """The usable files of ``<root>/<split>`` in sorted order, with labels."""

    split_dir: str  # absolute
    classes: list[str]  # label order: label i is classes[i]
    folders: list[str]  # the split's class folders, sorted
    paths: PathTable
    labels: np.ndarray  # int32
    folder: np.ndarray  # int32: paths[i] lies in folders[folder[i]]
    reencode: np.ndarray  # bool: True -> decode with PIL, serve PNG
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0  # how long the scan took
    origin: str = "scan"  # "scan", or the index file this was loaded from

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def empty_classes(self) -> list[str]:
        """Class folders without a usable image."""
        counts = np.bincount(self.folder, minlength=len(self.folders))
        return [name for name, count in zip(self.folders, counts) if not count]


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


def label_index(scan, classes: Sequence[str] | None = None, split: str | None = None) -> ImageFolderIndex:
    """The labelled view of an ``index.SplitScan`` (labels: positions in ``classes``, or in its own
    folders when None), after saying what it holds: a warning per unusable file (one line when it
    was loaded: the scan that stored it named them), per class folder without images, and one
    summary line. Raises when a folder is not among ``classes`` or no file is usable."""
    split = split or os.path.basename(scan.split_dir)
    classes, folder_labels = _label_folders(scan.split_dir, split, scan.folders, classes)
    index = ImageFolderIndex(
        split_dir=scan.split_dir,
        classes=classes,
        folders=scan.folders,
        paths=PathTable(scan.split_dir, scan.paths),
        labels=np.asarray(folder_labels, dtype=np.int32)[scan.folder],
        folder=scan.folder,
        reencode=scan.reencode,
        skipped=[(os.path.join(scan.split_dir, path), why) for path, why in scan.skipped],
        seconds=scan.seconds,
        origin=scan.origin,
    )
    if index.origin == "scan":
        for path, reason in index.skipped[:_MAX_FILE_WARNINGS]:
            _logger.warning("skipping %s: %s", path, reason)
        if len(index.skipped) > _MAX_FILE_WARNINGS:
            _logger.warning(
                "skipping %d more unusable files under %s (first %d listed above)",
                len(index.skipped) - _MAX_FILE_WARNINGS,
                index.split_dir,
                _MAX_FILE_WARNINGS,
            )
    elif index.skipped:
        _logger.warning(
            "skipping %d unusable files under %s, named when its index %s was built: %s",
            len(index.skipped),
            index.split_dir,
            index.origin,
            _preview([path for path, _ in scan.skipped]),
        )
    for name in index.empty_classes:
        _logger.warning(
            "class folder %s has no usable images (extensions %s); its label index %d is kept",
            os.path.join(index.split_dir, name),
            "/".join(IMAGE_EXTENSIONS),
            classes.index(name),
        )
    if not len(index):
        raise ValueError(
            f"no usable images under {index.split_dir!r} ({len(index.folders)} class folders, "
            f"{len(index.skipped)} unusable files); expected {index.split_dir}/<class_name>/<images> "
            f"with extensions {IMAGE_EXTENSIONS}"
        )
    _logger.info(
        "%s: %d images in %d classes (%d re-encoded via PIL, %d skipped), %s",
        index.split_dir,
        len(index),
        len(index.folders),
        int(index.reencode.sum()),
        len(index.skipped),
        f"scanned in {index.seconds:.1f} s" if index.origin == "scan" else f"index loaded from {index.origin}",
    )
    return index


def scan_image_folder(
    root: str, split: str = "train", workers: int | None = None, classes: Sequence[str] | None = None
) -> ImageFolderIndex:
    """List and probe every image of ``<root>/<split>`` (sorted, same order on every rank),
    without reading or writing a stored index (``load_index`` does).

    ``classes``: the run's class list; labels are then positions in it, and a class folder not in
    it is an error. Warns once per unusable file and per class folder without images; raises when
    the split has no class folder or no usable image at all. ``workers``: scanning processes
    (``host.data_workers``).
    """
    from .index import scan_split  # here: ``python -m mindcv_mobile.data.index`` runs on its own

    folders = folder_classes(root, split)
    _label_folders(os.path.join(root, split), split, folders, classes)  # its errors before the scan
    return label_index(scan_split(os.path.join(root, split), folders, workers), classes, split)


def load_index(
    root: str, split: str = "train", classes: Sequence[str] | None = None, workers: int | None = None
) -> ImageFolderIndex:
    """``scan_image_folder`` through the stored index (``index.build_index``): loaded when valid,
    else scanned once (processes starting together wait for one scan) and stored. Remembered in
    this process while the folders are unchanged, so a pipeline rebuilt every epoch reads nothing."""
    from .index import build_index, folder_stamp

    split_dir = os.path.abspath(os.path.join(root, split))
    _label_folders(split_dir, split, folder_classes(root, split), classes)  # its errors before a scan
    key = (split_dir, repr(folder_stamp(split_dir)), None if classes is None else tuple(classes))
    if key not in _LOADED:
        scan, _ = build_index(split_dir, workers)
        if len(_LOADED) >= 8:
            _LOADED.clear()
        _LOADED[key] = label_index(scan, classes, split)
    return _LOADED[key]


# --------------------------------------------------------------------------- decoding
def pil_to_rgb_uint8(img) -> np.ndarray:
    """Any PIL image as an HxWx3 uint8 array; 16-bit and float modes are scaled, not clipped."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's convert("RGB") clips 16-bit values at 255 instead of scaling them.
        gray = (np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        if gray.size and gray.max() <= 1.0:
            gray = gray * 255.0
        gray = gray.clip(0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _decode_with_pil(source: str | bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        img.seek(0)  # first frame of an animated GIF/WebP
        return pil_to_rgb_uint8(img)


def reencode_as_png(path: str) -> bytes:
    """A file of the reencode route as PNG bytes of its RGB uint8 pixels (fast, low compression)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_decode_with_pil(path)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def read_image(path: str) -> np.ndarray:
    """One image file as HxWx3 uint8 RGB, for inference: routed like a dataset's files, so a JPEG
    or PNG is decoded by MindSpore's ``Decode`` (the pixels validation sees) only when it passed
    the structure check, and anything else by PIL. Raises ValueError for a file neither decodes."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e.strerror or e}") from None
    route, reason = route_content(data)
    if route == "skip":
        raise ValueError(f"cannot read image {path}: {reason}")
    if route == "native":
        import mindspore.dataset.vision as vision

        try:
            return vision.Decode()(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError:
            pass  # a file libjpeg/libpng rejects past its headers: PIL decodes it or says why not
    try:
        return _decode_with_pil(data)
    except Exception as e:  # noqa: BLE001  PIL raises many types for broken files
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------- reader
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
    index = load_index(root, split, classes=classes, workers=workers)
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
