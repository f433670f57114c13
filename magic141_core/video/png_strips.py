"""Decoding a large PNG in horizontal strips, never holding the full-size image (used by `image_files` to read a
huge start image reduced, with memory bounded by the output size).

Pillow has no reduced PNG decoder: `Image.load()` allocates the whole image (RGB at 4 bytes per pixel, 256 MB for
8000 x 8000). Here the file's chunks are parsed (lengths, order and CRCs checked, CRCs of the image data too, which
Pillow's own decoder skips), the concatenated IDAT data is inflated piece by piece with `zlib.decompressobj` and a
bounded `max_length`, and each strip of rows is handed to Pillow as a small PNG of its own (its data in stored,
uncompressed deflate blocks): the same IHDR except the height, the same PLTE and tRNS, and, above the strip's
filtered rows, the previous strip's last reconstructed row stored with filter type 0, so Up, Average and Paeth of
the strip's first row see the right prior row (the PNG specification, section 9: filters refer to the previous
row's reconstructed bytes). Pillow then unfilters and converts each strip exactly as it does the whole file, so the
pixels are the same bytes.

Only files where a reconstructed row equals Pillow's decoded bytes are taken (`strippable`): non-interlaced, bit
depth 8, colour types 0/2/3/4/6 (Pillow modes L, RGB, P, LA, RGBA), not animated. 16-bit samples are decoded by
Pillow to their high byte (the raw row is lost, so the next strip's prior row cannot be rebuilt; 16-bit RGB and
RGBA have no 8-bit colour type with the same bytes per pixel to decode them raw through), bit depths 1/2/4 are
unpacked or scaled, and interlaced rows are not stored in order: those keep Pillow's full decode.

Decompression is bounded by the header: the image data must inflate to exactly height x (1 + row bytes); data that
inflates beyond that is refused (`ValueError`) after at most one extra byte is produced, never allocated. Chunks
after the image data (a late eXIf, text) are read the way Pillow reads them: `header_image` gives a one-row PNG
carrying every chunk but the pixels, so its `info` (EXIF, XMP orientation) is the one Pillow's full decode makes.
Errors: `ValueError` / `OSError` with a message saying what is wrong (the caller names the file).
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel at bit depth 8
MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}  # what Pillow opens each as
_PIECE = 1 << 20  # compressed bytes read at a time
_MAX_CHUNK = 2**31 - 1  # the PNG specification's limit on a chunk length
_CHUNK_TYPE = re.compile(rb"\w\w\w\w")  # what Pillow's PngStream.read accepts as a chunk type


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type + data (PNG specification, section 5.3)."""
    return b"".join(_chunk_parts(kind, [data]))


def _chunk_parts(kind: bytes, parts: list) -> list:
    """`chunk` as a list of pieces around the data pieces (joined once by the caller: no copy per piece)."""
    crc = zlib.crc32(kind)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [struct.pack(">I", sum(len(part) for part in parts)), kind, *parts, struct.pack(">I", crc)]


def _stored_zlib(raw: bytes) -> list:
    """A zlib stream holding `raw` uncompressed, as pieces: the RFC 1950 header, stored deflate blocks of at most
    65535 bytes (RFC 1951, section 3.2.4: header byte BFINAL/BTYPE=00, LEN, one's complement NLEN, the bytes), the
    Adler-32 of `raw`. What `zlib.compress(raw, 0)` makes, without its copy through the deflate window."""
    view, size = memoryview(raw), len(raw)
    parts = [b"\x78\x01"]
    for start in range(0, size, 65535):
        block = view[start:start + 65535]
        parts += [struct.pack("<BHH", start + 65535 >= size, len(block), 0xFFFF ^ len(block)), block]
    return parts + [struct.pack(">I", zlib.adler32(raw))]


@dataclass
class PngLayout:
    """What `scan` found: the IHDR fields, the raw chunks before and after the image data, where that starts."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int
    before: list[tuple[bytes, bytes]] = field(default_factory=list)  # (type, whole raw chunk), IHDR excluded
    after: bytes = b""  # raw bytes of the chunks after the image data, as Pillow would read them
    idat_offset: int = 0  # file offset of the first IDAT chunk

    @property
    def strippable(self) -> bool:
        """Whether `strips` can decode this file (see module): 8-bit, non-interlaced, not animated."""
        return (self.bit_depth == 8 and self.colour_type in CHANNELS and self.interlace == 0
                and not any(kind in (b"acTL", b"fcTL") for kind, _ in self.before))

    @property
    def stride(self) -> int:
        """Bytes per stored row: the filter-type byte plus width x samples (bit depth 8)."""
        return 1 + self.width * CHANNELS[self.colour_type]

    def _ihdr(self, height: int) -> bytes:
        return chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, height, self.bit_depth, self.colour_type, 0, 0,
                                          self.interlace))

    def header_image(self) -> Image.Image:
        """A loaded one-row Pillow image with every chunk of the file but its pixels (pixel row all zero): its
        `info` is what Pillow's full decode of the file gives (late eXIf and text chunks included)."""
        data = (SIGNATURE + self._ihdr(1) + b"".join(raw for _, raw in self.before)
                + chunk(b"IDAT", zlib.compress(b"\0" * self.stride)) + self.after)
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    def strips(self, path: str | os.PathLike, bounds: list[int]) -> Iterator[tuple[int, Image.Image, int]]:
        """Decode rows bounds[0]=0 .. bounds[-1]=height in strips [bounds[i], bounds[i+1]); yields (first row,
        loaded Pillow image, top) per strip, the strip's rows being image rows top .. top + rows (top is 1 when
        the previous strip's last row sits above them). Mode as Pillow opens the file; uint8 samples.
        Raises ValueError / OSError for damaged data (bad CRC, truncated, bad filter type, too much data)."""
        keep = b"".join(raw for kind, raw in self.before if kind in (b"PLTE", b"tRNS"))
        with open(path, "rb") as f:
            f.seek(self.idat_offset)
            pieces = _idat_pieces(f)
            inflate = zlib.decompressobj()
            prior = None
            for start, stop in zip(bounds[:-1], bounds[1:]):
                rows = _inflate(inflate, pieces, (stop - start) * self.stride)
                raw = rows if prior is None else b"".join((b"\0", prior, rows))
                height = stop - start + (prior is not None)
                data = b"".join([SIGNATURE, self._ihdr(height), keep, *_chunk_parts(b"IDAT", _stored_zlib(raw)),
                                 chunk(b"IEND", b"")])
                del raw, rows
                image = Image.open(io.BytesIO(data))
                image.load()
                del data
                prior = image.crop((0, height - 1, self.width, height)).tobytes()
                yield start, image, int(height > stop - start)
            _refuse_extra(inflate, pieces, self)


def scan(path: str | os.PathLike) -> PngLayout:
    """Parse a PNG's chunk layout without reading the image data (it is skipped with seeks; strips reads it). For a
    file that is not `strippable` only the chunks before the image data are read.

    Raises ValueError for a file that is not a well-formed PNG, OSError when it ends inside its image data."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(8) != SIGNATURE:
            raise ValueError("not a PNG signature")
        kind, length = _header(f)
        if kind != b"IHDR" or length != 13:
            raise ValueError("the first chunk is not a 13-byte IHDR")
        data = _body(f, kind, length)
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data)
        layout = PngLayout(width, height, depth, colour, interlace)
        while True:  # chunks before the image data: kept whole (Pillow has read and checked them already)
            start = f.tell()
            kind, length = _header(f)
            if kind == b"IDAT":
                break
            if kind == b"IEND":
                raise ValueError("no image data (IEND before any IDAT chunk)")
            layout.before.append((kind, chunk(kind, _body(f, kind, length))))  # CRC checked: the same bytes
        layout.idat_offset = start
        if not layout.strippable:
            return layout  # decoded whole by Pillow: its own checks apply, none of these
        while kind == b"IDAT":  # the image data: only its length is checked here
            if f.tell() + length + 4 > size:
                raise OSError("image file is truncated (it ends inside its image data)")
            f.seek(length + 4, os.SEEK_CUR)
            head = f.read(8)
            if len(head) < 8:
                return layout  # no IEND: Pillow accepts a file that ends after its image data
            length, kind = struct.unpack(">I4s", head)
        layout.after = _after(f, head, size)
        return layout


def _after(f, head: bytes, size: int) -> bytes:
    """The raw chunks after the image data up to IEND, as Pillow's load_end reads them: a broken chunk header ends
    them; further IDAT chunks are skipped as Pillow skips them; a chunk cut short is kept cut (Pillow refuses it)."""
    out = []
    while True:
        length, kind = struct.unpack(">I4s", head)
        if not _CHUNK_TYPE.match(kind):
            break
        if kind == b"IDAT":
            if f.tell() + length > size:
                raise OSError("image file is truncated (it ends inside an IDAT chunk)")
            f.seek(length + 4, os.SEEK_CUR)
        else:
            out.append(head + f.read(min(length + 4, size - f.tell())))
            if kind == b"IEND":
                break
        head = f.read(8)
        if len(head) < 8:
            break
    return b"".join(out)


def _header(f) -> tuple[bytes, int]:
    head = f.read(8)
    if len(head) < 8:
        raise OSError("image file is truncated (it ends before its image data)")
    length, kind = struct.unpack(">I4s", head)
    if length > _MAX_CHUNK or not _CHUNK_TYPE.match(kind):
        raise ValueError(f"broken PNG chunk header {head!r}")
    return kind, length


def _body(f, kind: bytes, length: int) -> bytes:
    data = f.read(length)
    crc = f.read(4)
    if len(data) < length or len(crc) < 4:
        raise OSError(f"image file is truncated (it ends inside its {kind.decode()} chunk)")
    if struct.unpack(">I", crc)[0] != zlib.crc32(data, zlib.crc32(kind)):
        raise ValueError(f"broken PNG file (bad CRC in its {kind.decode()} chunk)")
    return data


def _idat_pieces(f) -> Iterator[bytes]:
    """The compressed image data of consecutive IDAT chunks, in pieces of at most 1 MiB, each chunk's CRC checked
    before its last piece is given out; ends at the first other chunk."""
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        if kind != b"IDAT":
            return
        crc, left = zlib.crc32(kind), length
        while left:
            data = f.read(min(_PIECE, left))
            if not data:
                raise OSError("image file is truncated (it ends inside its image data)")
            crc, left = zlib.crc32(data, crc), left - len(data)
            if not left:  # checked before the chunk's last piece is inflated (a small chunk: before any of it)
                stored = f.read(4)
                if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
                    raise ValueError("broken PNG file (bad CRC in an IDAT chunk)")
            yield data
        if not length:
            f.read(4)  # an empty IDAT chunk: nothing to check against


def _inflate(inflate, pieces: Iterator[bytes], size: int) -> bytearray:
    """Exactly `size` inflated bytes (never more: max_length), or OSError when the data ends first."""
    out = bytearray()
    while len(out) < size:
        data = inflate.unconsumed_tail or (b"" if inflate.eof else next(pieces, b""))
        if not data:
            raise OSError("image file is truncated (its image data ends before the last row)")
        try:
            out += inflate.decompress(data, size - len(out))
        except zlib.error as e:
            raise OSError(f"broken data stream in the image data ({e})") from None
    return out


def _refuse_extra(inflate, pieces: Iterator[bytes], layout: PngLayout) -> None:
    """After the last row: any further inflated byte means the data does not match the header; refused."""
    while not inflate.eof:
        data = inflate.unconsumed_tail or next(pieces, b"")
        if not data:
            return  # the stream ends without its trailer, after every row: Pillow accepts this
        try:
            extra = inflate.decompress(data, 1)
        except zlib.error as e:
            raise OSError(f"broken data stream in the image data ({e})") from None
        if extra:
            raise ValueError(f"its image data inflates beyond the {layout.width} x {layout.height} pixels its header "
                             "declares (refused without inflating the rest)")
