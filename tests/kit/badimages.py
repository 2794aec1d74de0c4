"""Hostile and awkward uploads, built byte by byte where no encoder would write them.

Each builder returns the file's bytes. The bombs are small files that declare
(or imply) far more pixels, tile memory or frames than the service allows.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.kit import imagegen


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_raw(width: int, height: int, idat: bytes, *, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG with this IHDR and one IDAT of these (already compressed) bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_dimension_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """Declares width×height RGB pixels; the data is a few hundred bytes of zero rows."""
    return png_raw(width, height, zlib.compress(bytes(width * 3 + 1) * 4, 9))


def png_zlib_bomb(side: int) -> bytes:
    """A side×side PNG of zeros: tiny on the wire, side²×3 bytes once decoded."""
    rows = zlib.compressobj(9)
    row = bytes(side * 3 + 1)
    body = b"".join(rows.compress(row) for _ in range(side)) + rows.flush()
    return png_raw(side, side, body)


def jpeg_dimension_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A real small JPEG whose SOF header is patched to declare width×height."""
    data = bytearray(imagegen.jpeg(1, (64, 64)))
    pos = 2
    while pos < len(data):
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, pos + 5, height, width)
            return bytes(data)
        pos += 2 + length
    raise AssertionError("no SOF marker")


@functools.cache
def tiff_tile_bomb(tile: int = 8192, side: int = 16) -> bytes:
    """A side×side deflate TIFF with one tile declared tile×tile.

    libtiff sizes its buffer by the tile, not the image: decoding this 0.2 MB
    file would fill 200 MB (with tile=16384, 0.8 MB fills 800 MB).
    """
    packer = zlib.compressobj(6)
    row = bytes(tile * 3)  # compressed a row at a time: building the bomb allocates little
    payload = b"".join(packer.compress(row) for _ in range(tile)) + packer.flush()
    data_at = 8
    bps_at = data_at + len(payload)
    ifd_at = bps_at + 6
    entries = [
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 3, bps_at),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2),  # RGB
        (277, 3, 1, 3),
        (284, 3, 1, 1),
        (322, 4, 1, tile),
        (323, 4, 1, tile),
        (324, 4, 1, data_at),
        (325, 4, 1, len(payload)),
    ]
    out = b"II*\0" + struct.pack("<I", ifd_at) + payload + struct.pack("<3H", 8, 8, 8)
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if kind == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0)


def gif_frames(count: int, side: int = 4) -> bytes:
    """An animated GIF of `count` frames, assembled from one frame Pillow wrote.

    (Pillow's own writer merges identical frames, so it cannot make this file.)
    """
    single = encode(Image.new("P", (side, side), 1), "GIF")
    flags = single[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    assert single.endswith(b"\x3b")
    body = single[start:-1]  # [graphic control extension] image descriptor, data
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return single[:start] + loop + body * count + b"\x3b"


def apng_frames(count: int) -> bytes:
    """A two-frame APNG from Pillow whose acTL chunk is patched to declare `count` frames."""
    frames = [imagegen.photo(seed, (64, 64)) for seed in (2, 3)]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    at = data.index(b"acTL") - 4
    return data[:at] + _png_chunk(b"acTL", struct.pack(">II", count, 0)) + data[at + 20 :]


def tiff_pages(count: int, side: int = 8) -> bytes:
    """A TIFF of `count` grey pages (IFDs chained one after another, all sharing one strip)."""
    strip_at = 8
    strip = bytes(range(side * side))
    first_ifd = strip_at + len(strip)
    entries = 8
    ifd_size = 2 + entries * 12 + 4
    out = bytearray(b"II*\0" + struct.pack("<I", first_ifd) + strip)
    for page in range(count):
        at = first_ifd + page * ifd_size
        following = at + ifd_size if page + 1 < count else 0
        out += struct.pack("<H", entries)
        for tag, kind, value in (
            (256, 4, side),
            (257, 4, side),
            (258, 3, 8),
            (259, 3, 1),  # uncompressed
            (262, 3, 1),  # black is zero
            (273, 4, strip_at),
            (278, 4, side),
            (279, 4, len(strip)),
        ):
            if kind == 3:
                out += struct.pack("<HHIHH", tag, kind, 1, value, 0)
            else:
                out += struct.pack("<HHII", tag, kind, 1, value)
        out += struct.pack("<I", following)
    return bytes(out)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_orientation(image: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    """`image` stored sideways/mirrored so that EXIF `orientation` makes it upright again."""
    inverse = {
        2: [Image.Transpose.FLIP_LEFT_RIGHT],
        3: [Image.Transpose.ROTATE_180],
        4: [Image.Transpose.FLIP_TOP_BOTTOM],
        5: [Image.Transpose.TRANSPOSE],
        6: [Image.Transpose.ROTATE_90],
        7: [Image.Transpose.TRANSVERSE],
        8: [Image.Transpose.ROTATE_270],
    }
    stored = image
    for op in inverse.get(orientation, []):
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    options: dict[str, object] = {"exif": exif.tobytes()}
    if fmt == "JPEG":
        options["quality"] = 95
    if fmt == "TIFF":
        options = {"tiffinfo": {274: orientation}}
    return encode(stored.convert("RGB"), fmt, **options)


def grey16(seed: int, size: tuple[int, int] = (128, 96)) -> tuple[bytes, np.ndarray]:
    """A 16-bit greyscale PNG and its pixels."""
    grey = np.asarray(imagegen.photo(seed, size).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG"), grey


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def progressive_jpeg_scan_bomb(side: int = 6000, ac_scans: int = 3000) -> bytes:
    """A greyscale progressive (SOF2) JPEG: one DC scan, then `ac_scans` AC scans that code
    nothing but end-of-band runs.

    Every scan is a few bytes (one EOBRUN of 32,767 blocks per Huffman code), yet libjpeg
    walks every block of the image once per scan: at 6000×6000 and 3,000 scans a 244 KB-class
    file costs tens of seconds of CPU, under every size limit.
    """
    blocks = ((side + 7) // 8) ** 2
    dqt = _jpeg_segment(0xDB, b"\x00" + bytes([1] * 64))
    sof2 = _jpeg_segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    # DC table 0: one 1-bit code, category 0 (every DC difference is zero).
    dht_dc = _jpeg_segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    # AC table 0: one 1-bit code, symbol 0xE0 = EOBRUN with 14 extra bits (runs up to 32,767).
    dht_ac = _jpeg_segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")

    def bits_to_bytes(bits: str) -> bytes:
        bits += "1" * (-len(bits) % 8)  # pad with ones, as the standard asks
        out = bytearray()
        for i in range(0, len(bits), 8):
            byte = int(bits[i : i + 8], 2)
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        return bytes(out)

    dc_scan = _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + bits_to_bytes("0" * blocks)
    # EOBRUN 32,767 (the longest) as often as needed; libjpeg drops what overshoots the scan.
    runs = -(-blocks // 32_767)
    ac_data = bits_to_bytes(("0" + format(32_767 - (1 << 14), "014b")) * runs)
    ac_scan = _jpeg_segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + ac_data
    return b"\xff\xd8" + dqt + sof2 + dht_dc + dht_ac + dc_scan + ac_scan * ac_scans + b"\xff\xd9"
