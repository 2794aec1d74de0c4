"""Fuzzing the fingerprinting path: a mutated image gives a Fingerprint or ImageRejected.

Seeds are small images in every accepted format, written here by Pillow.
Hypothesis mutates them the ways broken and hostile files differ from good
ones: flipped bits, truncation, overwritten header bytes, rewritten header
fields (dimensions, bit depths, colour types, TIFF tags), and spliced ranges.

`FUZZ_EXAMPLES` (environment) raises the number of examples per format for a
long local run; the default keeps the suite quick.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import zlib
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shotstamp_service.http.errors import STATUS
from shotstamp_service.matching.decode import HEIF_SUPPORTED
from shotstamp_service.matching.fingerprint import (
    DecodeLimits,
    Fingerprint,
    ImageRejected,
    fingerprint,
)
from shotstamp_service.matching.pool import FingerprintPool
from tests.kit import badimages, imagegen

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
# Small limits so that a mutated header cannot make one example decode for seconds.
LIMITS = DecodeLimits(max_pixels=4_000_000, max_frames=50)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@cache
def seeds() -> dict[str, bytes]:
    base = imagegen.photo(7, (64, 48))
    frames = [base, imagegen.photo(8, (64, 48))]
    grey16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    palettes = [frame.convert("P") for frame in frames]
    out = {
        "jpeg": _save(base, "JPEG", quality=80),
        "jpeg-progressive": _save(base, "JPEG", quality=80, progressive=True),
        "jpeg-cmyk": _save(base.convert("CMYK"), "JPEG"),
        "png": _save(base, "PNG"),
        "png-palette": _save(base.convert("P"), "PNG", transparency=3),
        "png-16bit": _save(grey16, "PNG"),
        "apng": _save(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "gif": _save(palettes[0], "GIF", save_all=True, append_images=palettes[1:]),
        "tiff": _save(base, "TIFF"),
        "tiff-deflate": _save(base, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-lzw-pages": _save(
            frames[0], "TIFF", compression="tiff_lzw", save_all=True, append_images=frames[1:]
        ),
        "tiff-jpeg": _save(base, "TIFF", compression="jpeg"),
        "webp": _save(base, "WEBP", quality=70),
        "webp-lossless-alpha": _save(base.convert("RGBA"), "WEBP", lossless=True),
        "webp-animated": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "avif": _save(base, "AVIF", quality=60),
    }
    if HEIF_SUPPORTED:
        out["heif"] = _save(base, "HEIF", quality=60)
    return out


def _png_rewrite_ihdr(data: bytes, fields: tuple[int, int, int, int, int]) -> bytes:
    at = data.index(b"IHDR")
    body = struct.pack(">IIBBBBB", fields[0], fields[1], fields[2], fields[3], 0, 0, fields[4])
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[: at + 4] + body + crc + data[at + 4 + 13 + 4 :]


def _jpeg_rewrite_sof(data: bytes, fields: tuple[int, int, int, int, int]) -> bytes:
    out = bytearray(data)
    pos = 2
    while pos + 4 <= len(out) and out[pos] == 0xFF:
        marker = out[pos + 1]
        (length,) = struct.unpack_from(">H", out, pos + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            out[pos + 4] = fields[2] & 0xFF  # precision
            struct.pack_into(">HH", out, pos + 5, fields[1] & 0xFFFF, fields[0] & 0xFFFF)
            out[pos + 9] = fields[3] & 0xFF  # component count
            return bytes(out)
        pos += 2 + length
    return data


def _gif_rewrite_screen(data: bytes, fields: tuple[int, int, int, int, int]) -> bytes:
    out = bytearray(data)
    struct.pack_into("<HHB", out, 6, fields[0] & 0xFFFF, fields[1] & 0xFFFF, fields[4] & 0xFF)
    return bytes(out)


def _tiff_rewrite_entry(data: bytes, fields: tuple[int, int, int, int, int]) -> bytes:
    out = bytearray(data)
    order = "<" if out[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", out, 4)
    if ifd + 2 > len(out):
        return data
    (count,) = struct.unpack_from(order + "H", out, ifd)
    if count == 0:
        return data
    entry = ifd + 2 + 12 * (fields[3] % count)
    if entry + 12 > len(out):
        return data
    struct.pack_into(order + "I", out, entry + 8, fields[0])  # the value (or its offset)
    if fields[4] & 1:
        struct.pack_into(order + "I", out, entry + 4, fields[1])  # the count
    return bytes(out)


def _header_fields(data: bytes, fields: tuple[int, int, int, int, int]) -> bytes:
    try:
        return _rewrite(data, fields)
    except (struct.error, ValueError, IndexError):  # an earlier mutation left no such header
        return data


def _rewrite(data: bytes, fields: tuple[int, int, int, int, int]) -> bytes:
    if data.startswith(b"\x89PNG"):
        return _png_rewrite_ihdr(data, fields)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_rewrite_sof(data, fields)
    if data.startswith(b"GIF"):
        return _gif_rewrite_screen(data, fields)
    if data[:2] in (b"II", b"MM"):
        return _tiff_rewrite_entry(data, fields)
    out = bytearray(data)  # RIFF/WebP and ISO-BMFF: dimensions sit in the first 64 bytes
    at = 12 + fields[3] % max(1, min(64, len(out) - 16))
    struct.pack_into("<I", out, at, fields[0])
    return bytes(out)


dims = st.one_of(
    st.sampled_from([0, 1, 2, 63, 64, 65, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
depths = st.sampled_from([0, 1, 2, 4, 8, 12, 16, 255])
header_fields = st.tuples(dims, dims, depths, st.integers(0, 255), st.integers(0, 255))
MUTATIONS = ["flip", "truncate", "header-bytes", "header-fields", "splice"]


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    data = seeds()[name]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        if not data:
            break
        if kind == "flip":
            out = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                at = draw(st.integers(0, len(out) - 1))
                out[at] ^= 1 << draw(st.integers(0, 7))
            data = bytes(out)
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif kind == "header-bytes":
            at = draw(st.integers(0, min(len(data), 128) - 1))
            patch = draw(st.binary(min_size=1, max_size=8))
            data = data[:at] + patch + data[at + len(patch) :]
        elif kind == "header-fields":
            data = _header_fields(data, draw(header_fields))
        else:  # splice: repeat or drop a range, as broken uploads and crafted files do
            start = draw(st.integers(0, len(data) - 1))
            end = draw(st.integers(start, min(len(data), start + 4096)))
            data = data[:start] + (data[start:end] * draw(st.integers(0, 3))) + data[end:]
    return data


def _check(data: bytes) -> None:
    try:
        result = fingerprint(data, LIMITS)
    except ImageRejected as exc:
        assert STATUS[exc.reason] in (413, 415, 422), exc.reason
        assert exc.message
    else:
        assert isinstance(result, Fingerprint)
        assert len(result.hashes["phash"]) == 8


@pytest.mark.parametrize("name", sorted(seeds()))
def test_mutated_images_only_fingerprint_or_are_rejected(name):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples in CI every time; FUZZ_EXAMPLES widens the net
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(mutated(name))
    def run(data: bytes) -> None:
        _check(data)

    run()


def test_unmutated_seeds_all_fingerprint():
    for name, data in seeds().items():
        assert isinstance(fingerprint(data, LIMITS), Fingerprint), name


async def test_mutations_through_the_process_pool_and_a_worker_crash():
    """The real pool: mutants come back as fingerprints or rejections; a killed
    worker becomes a 4xx for the uploads it held, and the pool recovers."""
    import signal

    pool = FingerprintPool(2, DecodeLimits(max_pixels=40_000_000, max_frames=50))
    try:
        samples = [d for name in sorted(seeds()) for d in _cheap_mutants(seeds()[name])]
        results = await asyncio.gather(*(pool(d) for d in samples), return_exceptions=True)
        for result in results:
            assert isinstance(result, Fingerprint | ImageRejected), repr(result)

        # Slow (allowed) images keep both workers busy while they are killed,
        # as the kernel's OOM killer would: ~0.3 s each to inflate 108 MB.
        slow = [asyncio.ensure_future(pool(badimages.png_zlib_bomb(6000))) for _ in range(4)]
        await asyncio.sleep(0.15)
        workers = pool.worker_pids()
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, ImageRejected)]
        assert failed, outcomes
        assert all(400 <= STATUS[o.reason] < 500 for o in failed)
        assert all(isinstance(o, ImageRejected | Fingerprint) for o in outcomes), outcomes
        # Recovered: the next upload is fingerprinted by a fresh pool.
        assert isinstance(await pool(seeds()["jpeg"]), Fingerprint)
        assert not pool.worker_pids() & workers
    finally:
        pool.close()


def _cheap_mutants(data: bytes) -> list[bytes]:
    out = [data[: len(data) // 2], data[:16], bytes(len(data))]
    flipped = bytearray(data)
    for at in range(0, len(flipped), max(1, len(flipped) // 7)):
        flipped[at] ^= 0x5A
    out.append(bytes(flipped))
    return out
