"""Image files: which decoder may see a file, for one file and for every file of a folder.

Every file is routed by a cheap check of its bytes (first and last bytes, JPEG marker segments,
PNG chunk CRCs; no decode), by ``probe_image`` for a training/validation tree (``probe_folders``)
and by ``route_content`` for one file read at inference (``image_folder.read_image``), so both
paths hand the same files to the same decoder:

* native  -- a JPEG ending in EOI whose marker segments libjpeg accepts (see
  ``jpeg_structure_problem``), or a PNG ending in IEND whose chunk CRCs match: its encoded
  bytes go to MindSpore's C++ ``Decode`` / ``RandomCropDecodeResize``. MindSpore 2.10 decodes
  CMYK JPEG, grayscale, palette, RGBA/LA and 16-bit PNG to RGB uint8 itself (checked
  pixel-equal to PIL), so a file's colour mode does not matter here.
* reencode -- any other format (WebP, GIF, TIFF, BMP, PPM...), or a JPEG/PNG whose end marker
  is missing but which PIL still decodes completely: decoded by PIL and converted to RGB uint8
  (a dataset serves it re-encoded as PNG, so the transforms see one kind of input).
* skip -- PIL cannot decode it (not an image, empty, truncated). A truncated JPEG must never
  reach MindSpore 2.10's ``Decode``: it raises "libjpeg: Empty input file" and stops the whole
  pipeline (and dumps the file to ./abnormal_image.jpg). A JPEG with both end markers but a
  broken header (a bad Huffman table, a garbled frame header) is worse: the same ``Decode``
  kills the process (segmentation fault, "stack smashing detected"), and a PNG with a corrupt
  chunk stops the pipeline; hence the structure check of the native route.
"""

from __future__ import annotations

import io
import mmap
import multiprocessing
import os
import re
import stat
import time

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TAIL_BYTES = 32


# --------------------------------------------------------------------------- routing
# One read of this many first bytes holds a small file whole, and a large JPEG's marker segments
# up to its first scan unless an EXIF thumbnail is bigger (then the whole file is read).
_HEAD_BYTES = 16384
# O_NONBLOCK: a FIFO named *.jpg is refused at once instead of blocking the scan forever.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _read_at(fd: int, count: int, offset: int) -> bytes:
    """``count`` bytes from ``offset`` (fewer at the end of the file)."""
    if offset:
        os.lseek(fd, offset, os.SEEK_SET)
    data = os.read(fd, count)
    while 0 < len(data) < count:  # short reads (network file systems) continue
        more = os.read(fd, count - len(data))
        if not more:
            break
        data += more
    return data


def probe_image(path: str | bytes) -> tuple[str, str]:
    """Route of one file: ("native" | "reencode" | "skip", reason). Reads the first 16 KiB (a
    small file whole) and the last bytes; the whole file only when its structure check needs it
    (progressive JPEGs, marker segments past the first 16 KiB)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        return "skip", f"cannot read ({e.strerror or e})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "skip", "not a regular file"
        head = _read_at(fd, min(info.st_size, _HEAD_BYTES), 0)
        size = info.st_size if len(head) == _HEAD_BYTES else len(head)
        tail = head[-_TAIL_BYTES:] if size == len(head) else _read_at(fd, _TAIL_BYTES, size - _TAIL_BYTES)
    except OSError as e:
        return "skip", f"cannot read ({e.strerror or e})"
    finally:
        os.close(fd)
    return _route(head, tail, size, os.fsdecode(path))


def route_content(data: bytes) -> tuple[str, str]:
    """``probe_image`` of a file already read whole."""
    return _route(data, data[-_TAIL_BYTES:], len(data), data)


def _route(head: bytes, tail: bytes, size: int, source: str | bytes) -> tuple[str, str]:
    """The routing rule. ``head``: the file's first bytes (all when ``len(head) == size``);
    ``source``: the file's path, or its whole content when already read (then the bytes checked
    are exactly the bytes decoded)."""
    if size == 0:
        return "skip", "empty file"
    if head.startswith(_JPEG_MAGIC):
        # Padding after EOI is common (cameras, some encoders) and harmless to libjpeg.
        if tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") and not _jpeg_problem(head, size, source):
            return "native", ""
    elif head.startswith(_PNG_MAGIC):
        if b"IEND" in tail[-12:] and _png_chunks_intact(source):
            return "native", ""
    # Other formats, or a JPEG/PNG without its end marker: only what PIL decodes fully is kept.
    return _verify_with_pil(source)


def _open_pil(source: str | bytes):
    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


_IN_MEMORY_NAME = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _verify_with_pil(source: str | bytes) -> tuple[str, str]:
    try:
        with _open_pil(source) as img:
            img.load()  # truncated data raises here (ImageFile.LOAD_TRUNCATED_IMAGES is False)
    except Exception as e:  # noqa: BLE001  PIL raises many types for broken files
        # PIL names an in-memory file by its object's repr; the caller names the file.
        reason = _IN_MEMORY_NAME.sub("", str(e))
        return "skip", f"not a decodable image ({type(e).__name__}: {reason})"
    return "reencode", ""


def _png_chunks_intact(source: str | bytes) -> bool:
    """Every chunk's CRC matches (PIL's verify reads the chunks, it does not decode)."""
    try:
        with _open_pil(source) as img:
            img.verify()
    except Exception:  # noqa: BLE001  PIL raises many types for broken files
        return False
    return True


def _jpeg_problem(head: bytes, size: int, source: str | bytes) -> str:
    # A verdict of "" on the first bytes holds for the whole file (the walk reads bytes in order
    # and stops at the first scan of a sequential JPEG); anything else is decided on all of it.
    problem = jpeg_structure_problem(head)
    if not problem or len(head) == size:
        return problem
    try:  # mmap: progressive files are walked whole, without copying them into memory
        with open(source, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return jpeg_structure_problem(buf)
    except (OSError, ValueError) as e:
        return f"cannot read ({e})"


# --------------------------------------------------------------------------- JPEG structure
# JPEG frames MindSpore 2.10's libjpeg decodes: baseline, extended sequential and progressive
# Huffman. Arithmetic, lossless and hierarchical frames take the PIL route.
_SOF_SEQUENTIAL = (0xC0, 0xC1)
_SOF_PROGRESSIVE = 0xC2
# A marker inside entropy-coded data: 0xFF followed by anything but stuffing (00), RSTn or fill.
_MARKER_IN_DATA = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# ``_sequential_header`` of files found sound by the whole walk (at most 4096, then forgotten).
_SOUND_HEADERS: set = set()


def _u16(buf, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def _sequential_header(buf) -> bytes | None:
    """The segments the verdict on a sequential JPEG depends on (tables, frame, restart
    interval, first scan; in order, the frame's size replaced by a constant), or None when the
    file is anything else: progressive, fill bytes or other markers, a zero size, bad lengths, no
    data after the scan header. Two files with the same header get the same verdict."""
    n, pos, parts = len(buf), 2, []
    while pos + 4 <= n and buf[pos] == 0xFF:
        marker, end = buf[pos + 1], pos + 2 + _u16(buf, pos + 2)
        if end <= pos + 3 or end > n:
            return None
        if marker in (0xDB, 0xC4, 0xDD):
            parts.append(buf[pos:end])
        elif marker in _SOF_SEQUENTIAL:
            if end < pos + 10 or not _u16(buf, pos + 5) or not _u16(buf, pos + 7):
                return None
            parts.append(buf[pos : pos + 5] + b"\x01\x01\x01\x01" + buf[pos + 9 : end])
        elif marker == 0xDA:
            if end + 1 >= n or (buf[end] == 0xFF and buf[end + 1] != 0x00):
                return None
            parts.append(buf[pos:end])
            return b"".join(parts)
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return None
        pos = end
    return None


def jpeg_structure_problem(buf) -> str:
    """What in a JPEG's marker segments libjpeg stops on, or "" when nothing.

    The checks are those libjpeg makes with a fatal error (jdmarker.c, jdhuff.c, jdphuff.c,
    jdinput.c): unknown markers, segment lengths, quantization and Huffman table definitions
    (code-space overflow included), frame and scan headers, tables a scan uses, progression
    parameters and sequence, and a scan with no data. MindSpore 2.10's decoder turns those
    errors into a crash of the whole process, so such files must not reach it. Corrupt
    entropy-coded data is not checked: libjpeg warns about it and decodes what it can.
    ``buf``: bytes or an mmap. A sequential file is walked up to its first scan (~40 us), or not
    at all (~5 us) when one with the same tables, frame and scan header was found sound before,
    the common case as a dataset's files come from a few encoders; a progressive file is walked
    whole (~150 us for a small one).
    """
    header = _sequential_header(buf)
    if header in _SOUND_HEADERS:
        return ""
    problem = _walk(buf)
    if header is not None and not problem:
        if len(_SOUND_HEADERS) >= 4096:
            _SOUND_HEADERS.clear()
        _SOUND_HEADERS.add(header)
    return problem


def _walk(buf) -> str:
    n = len(buf)
    pos, frame, quant, huffman, coef_bits, scans = 2, None, set(), set(), {}, 0
    while True:
        if pos >= n or buf[pos] != 0xFF:
            return f"no JPEG marker at byte {pos}"
        while pos < n and buf[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            return "ends inside a marker"
        marker = buf[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return "" if scans else "no image data before the end marker"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no segment
            continue
        if pos + 2 > n or _u16(buf, pos) < 2 or pos + _u16(buf, pos) > n:
            return f"segment 0xFF{marker:02X} at byte {pos - 2} runs past the end of the file"
        if 0xE0 <= marker <= 0xEF or marker in (0xFE, 0xDC):  # APPn, COM, DNL: skipped unread
            pos += _u16(buf, pos)
            continue
        seg = bytes(buf[pos + 2 : pos + _u16(buf, pos)])
        pos += 2 + len(seg)
        if marker == 0xDB:  # DQT
            i = 0
            while i < len(seg):
                if seg[i] >> 4 > 1 or seg[i] & 15 > 3:
                    return "bad quantization table"
                quant.add(seg[i] & 15)
                i += 1 + 64 * ((seg[i] >> 4) + 1)
            if i != len(seg):
                return "bad quantization table length"
        elif marker == 0xC4:  # DHT
            i = 0
            while i < len(seg):
                if i + 17 > len(seg) or seg[i] >> 4 > 1 or seg[i] & 15 > 3:
                    return "bad Huffman table"
                counts = seg[i + 1 : i + 17]
                values = seg[i + 17 : i + 17 + sum(counts)]
                if sum(counts) > 256 or len(values) < sum(counts):
                    return "bad Huffman table"
                code = 0
                for bits, count in enumerate(counts, 1):
                    code += count  # no code may be all ones: codes of b bits stay below 2**b
                    if code >= 1 << bits:
                        return "bad Huffman table"
                    code <<= 1
                if seg[i] >> 4 == 0 and values and max(values) > 15:  # DC symbols are bit counts
                    return "bad Huffman table"
                huffman.add((seg[i] >> 4, seg[i] & 15))
                i += 17 + len(values)
        elif marker in _SOF_SEQUENTIAL or marker == _SOF_PROGRESSIVE:
            if frame is not None or len(seg) < 6:
                return "bad frame header"
            precision, height, width, ncomp = seg[0], _u16(seg, 1), _u16(seg, 3), seg[5]
            if precision != 8 or not height or not width or ncomp not in (1, 3, 4) or len(seg) != 6 + 3 * ncomp:
                return f"unsupported frame ({precision}-bit, {width}x{height}, {ncomp} components)"
            comps = {seg[6 + 3 * k]: (seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k]) for k in range(ncomp)}
            hmax, vmax = max(h for h, _, _ in comps.values()), max(v for _, v, _ in comps.values())
            if len(comps) != ncomp or any(
                not (1 <= h <= 4 and 1 <= v <= 4) or q > 3 or hmax % h or vmax % v for h, v, q in comps.values()
            ):
                return "bad frame header"
            frame = (marker, comps)
        elif 0xC0 <= marker <= 0xCF:  # other frame types, DAC (arithmetic coding)
            return f"frame type 0xFF{marker:02X} (not baseline or progressive Huffman)"
        elif marker == 0xDA:  # SOS
            if frame is None:
                return "scan before the frame header"
            ns = seg[0] if seg else 0
            if not 1 <= ns <= 4 or len(seg) != 4 + 2 * ns:
                return "bad scan header"
            ids = [seg[1 + 2 * k] for k in range(ns)]
            if len(set(ids)) != ns or any(c not in frame[1] or frame[1][c][2] not in quant for c in ids):
                return "scan of an undefined component or quantization table"
            ss, se, ah, al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns] >> 4, seg[3 + 2 * ns] & 15
            progressive = frame[0] == _SOF_PROGRESSIVE
            # Tables a scan decodes with: DC and AC (sequential), DC (first DC scan of a
            # progressive file), AC (AC scans); DC refinement scans use none.
            kinds = (0, 1) if not progressive else ((1,) if ss else (() if ah else (0,)))
            if any(
                (kind, seg[2 + 2 * k] >> 4 if kind == 0 else seg[2 + 2 * k] & 15) not in huffman
                for k in range(ns)
                for kind in kinds
            ):
                return "scan uses an undefined Huffman table"
            if progressive:
                if ((se != 0) if ss == 0 else (ss > se or se > 63 or ns != 1)) or (ah and al != ah - 1) or al > 13:
                    return "bad progression parameters"
                # libjpeg only warns "Inconsistent progression sequence", but MindSpore 2.10
                # raises on it: each scan must refine exactly what earlier scans left.
                for c in ids:  # coefficient bits sent so far, -1 (none) counting as 0
                    bits = coef_bits.setdefault(c, [-1] * 64)
                    if (ss and bits[0] < 0) or {max(b, 0) for b in set(bits[ss : se + 1])} != {ah}:
                        return "inconsistent progression sequence"
                    bits[ss : se + 1] = [al] * (se + 1 - ss)
            scans += 1
            if pos + 1 >= n or (buf[pos] == 0xFF and buf[pos + 1] != 0x00):
                return "a scan without data"
            if not progressive:
                return ""  # the rest is entropy-coded data
            found = _MARKER_IN_DATA.search(buf, pos)  # later scans bring their own tables
            pos = found.start() if found else n
        elif marker == 0xDD:  # DRI
            if len(seg) != 2:
                return "bad restart interval"
        else:
            return f"unknown marker 0xFF{marker:02X}"


# --------------------------------------------------------------------------- folders
_EXTENSIONS = tuple(e.encode() for e in IMAGE_EXTENSIONS)
_SERIAL_SECONDS = 0.25


def probe_folder(split_dir: bytes, folder: bytes) -> tuple[bytes, bytes, list, list]:
    """``probe_image`` of every image file under ``split_dir/folder``, in os.walk's top-down order
    with sorted names (hidden entries left out, a folder reached twice through links read once):
    (the usable files' paths relative to ``split_dir``, each ending in NUL; their routes, a byte
    each, "n" native or "r" reencode; skipped files as (relative path, reason); the subfolders
    read, as (relative path, mtime_ns taken before they were listed))."""
    found, routes, skipped, subdirs, seen, pending = [], bytearray(), [], [], set(), [folder]
    while pending:
        rel = pending.pop()
        try:
            info = os.stat(split_dir + b"/" + rel)
            entries = sorted((e.name, e) for e in os.scandir(split_dir + b"/" + rel) if not e.name.startswith(b"."))
        except OSError:
            continue  # unreadable or gone: os.walk leaves such folders out too
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        if rel != folder:
            subdirs.append((rel, info.st_mtime_ns))
        below = []
        for name, entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                below.append(rel + b"/" + name)
            elif name.lower().endswith(_EXTENSIONS):
                route, reason = probe_image(split_dir + b"/" + rel + b"/" + name)
                if route == "skip":
                    skipped.append((rel + b"/" + name, reason))
                else:
                    found.append(rel + b"/" + name + b"\0")
                    routes += b"r" if route == "reencode" else b"n"
        pending.extend(reversed(below))
    return b"".join(found), bytes(routes), skipped, subdirs


def probe_folders(split_dir: bytes, folders: list, workers: int) -> list:
    """``probe_folder`` of each of ``folders``, in order: in this process, and once that has taken
    ``_SERIAL_SECONDS`` the rest in ``workers`` forked processes (probing is Python code: threads
    would share one core). Small trees never pay for starting processes."""
    results, start = [], time.perf_counter()
    for i, folder in enumerate(folders):
        rest = len(folders) - i
        if workers > 1 and rest > 1 and time.perf_counter() - start > _SERIAL_SECONDS and _can_fork():
            try:
                pool = multiprocessing.get_context("fork").Pool(min(workers, rest))
            except OSError:  # no room for more processes: carry on here
                workers = 1
            else:
                with pool:
                    tasks = [(split_dir, f) for f in folders[i:]]
                    return results + pool.starmap(probe_folder, tasks, chunksize=max(1, rest // (8 * workers)))
        results.append(probe_folder(split_dir, folder))
    return results


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon
