"""Image files: which decoder may see a file, and reading one file for inference.

Every file is routed by a cheap check of its bytes (first and last bytes, JPEG marker segments,
PNG chunk CRCs; no decode), by ``probe_image`` for a training/validation tree and by
``read_image`` for one file at inference, so both paths hand the same files to the same decoder:

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
import os
import re

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TAIL_BYTES = 32


# --------------------------------------------------------------------------- routing
def probe_image(path: str) -> tuple[str, str]:
    """Route of one file: ("native" | "reencode" | "skip", reason); reads the first and last bytes,
    the whole file only for the structure checks it needs."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_PNG_MAGIC))
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as e:
        return "skip", f"cannot read ({e.strerror or e})"
    return _route(head, tail, size, path)


def _route(head: bytes, tail: bytes, size: int, source: str | bytes) -> tuple[str, str]:
    """The routing rule; ``source`` is the file's path, or its whole content when already read
    (then the bytes checked are exactly the bytes decoded)."""
    if size == 0:
        return "skip", "empty file"
    if head.startswith(_JPEG_MAGIC):
        # Padding after EOI is common (cameras, some encoders) and harmless to libjpeg.
        if tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") and not _jpeg_problem(source):
            return "native", ""
    elif head.startswith(_PNG_MAGIC):
        if b"IEND" in tail[-12:] and _png_chunks_intact(source):
            return "native", ""
    # Other formats, or a JPEG/PNG without its end marker: only what PIL decodes fully is kept.
    return _verify_with_pil(source)


def _open_pil(source: str | bytes):
    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _verify_with_pil(source: str | bytes) -> tuple[str, str]:
    try:
        with _open_pil(source) as img:
            img.load()  # truncated data raises here (ImageFile.LOAD_TRUNCATED_IMAGES is False)
    except Exception as e:  # noqa: BLE001  PIL raises many types for broken files
        return "skip", f"not a decodable image ({type(e).__name__}: {e})"
    return "reencode", ""


def _png_chunks_intact(source: str | bytes) -> bool:
    """Every chunk's CRC matches (PIL's verify reads the chunks, it does not decode)."""
    try:
        with _open_pil(source) as img:
            img.verify()
    except Exception:  # noqa: BLE001  PIL raises many types for broken files
        return False
    return True


def _jpeg_problem(source: str | bytes) -> str:
    if isinstance(source, bytes):
        return jpeg_structure_problem(source)
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


def _u16(buf, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def jpeg_structure_problem(buf) -> str:
    """What in a JPEG's marker segments libjpeg stops on, or "" when nothing.

    The checks are those libjpeg makes with a fatal error (jdmarker.c, jdhuff.c, jdphuff.c,
    jdinput.c): unknown markers, segment lengths, quantization and Huffman table definitions
    (code-space overflow included), frame and scan headers, tables a scan uses, progression
    parameters and sequence, and a scan with no data. MindSpore 2.10's decoder turns those
    errors into a crash of the whole process, so such files must not reach it. Corrupt
    entropy-coded data is not checked: libjpeg warns about it and decodes what it can.
    Costs ~0.07 ms for a 500x375 baseline JPEG (header only; progressive files are read whole).
    """
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
                if seg[i] >> 4 == 0 and any(v > 15 for v in values):  # DC symbols are bit counts
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
                for c in ids:
                    bits = coef_bits.setdefault(c, [-1] * 64)
                    if (ss and bits[0] < 0) or any(ah != max(bits[i], 0) for i in range(ss, se + 1)):
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
        elif not (0xE0 <= marker <= 0xEF or marker in (0xFE, 0xDC)):  # APPn, COM, DNL
            return f"unknown marker 0xFF{marker:02X}"


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
    with _open_pil(source) as img:
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
    route, reason = _route(data[: len(_PNG_MAGIC)], data[-_TAIL_BYTES:], len(data), data)
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
