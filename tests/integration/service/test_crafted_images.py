"""Crafted images (issue 19): bounded CPU and memory per upload, whatever the bytes."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from shotstamp_service.http.errors import STATUS
from shotstamp_service.matching.decode import DecodeLimits, ImageRejected, _jpeg_scans, open_image
from shotstamp_service.matching.fingerprint import fingerprint
from shotstamp_service.matching.pool import FingerprintPool
from tests.kit import ROOT, badimages, imagegen


def test_the_scan_bomb_is_a_real_progressive_jpeg():
    data = badimages.progressive_jpeg_scan_bomb(side=480, ac_scans=20)
    decoded = open_image(data, DecodeLimits())
    assert (decoded.format, decoded.width, decoded.height) == ("JPEG", 480, 480)
    assert _jpeg_scans(data, 1000) == 21


def test_a_progressive_jpeg_of_thousands_of_scans_is_refused_before_decoding():
    data = badimages.progressive_jpeg_scan_bomb()  # 6000×6000, 3,001 scans: ~22 s to decode
    assert len(data) < 300_000
    with pytest.raises(ImageRejected) as caught:
        open_image(data, DecodeLimits())
    assert (STATUS[caught.value.reason], caught.value.code) == (422, "image_too_costly")
    assert "100 scans" in caught.value.message


def test_ordinary_progressive_jpegs_are_well_under_the_scan_cap():
    for mode in ("RGB", "L"):
        buffer = io.BytesIO()
        imagegen.photo(5, (640, 480)).convert(mode).save(buffer, "JPEG", progressive=True)
        assert 1 < _jpeg_scans(buffer.getvalue(), 1000) <= 10
        open_image(buffer.getvalue(), DecodeLimits())
    assert _jpeg_scans(imagegen.jpeg(3), 1000) == 1


def test_scans_are_counted_past_segments_that_hold_marker_like_bytes():
    image = imagegen.photo(6, (64, 48))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", progressive=True, comment=b"\xff\xda" * 200)
    assert _jpeg_scans(buffer.getvalue(), 1000) == _jpeg_scans(
        badimages.encode(image, "JPEG", progressive=True), 1000
    )


@pytest.mark.parametrize("size", [(1, 39_999_999), (39_999_999, 1), (20_001, 100)])
def test_a_side_over_the_cap_is_refused_from_the_header(size):
    width, height = size
    data = badimages.png_raw(width, height, zlib.compress(b"\x00\x00" * 4, 9), colour=0)
    with pytest.raises(ImageRejected) as caught:
        open_image(data, DecodeLimits())
    assert (STATUS[caught.value.reason], caught.value.code) == (413, "image_too_large")
    assert "20000" in caught.value.message


def _grey_png(width: int, height: int, *, bit_depth: int = 8, palette: bool = False) -> bytes:
    pixels = np.add.outer(np.arange(height), np.arange(width)) % 251
    if bit_depth == 16:
        image = Image.fromarray((pixels * 257).astype(np.uint16))
    else:
        image = Image.fromarray(pixels.astype(np.uint8))
    if palette:
        image = image.convert("P")
        return badimages.encode(image, "PNG", transparency=0)
    return badimages.encode(image, "PNG")


def _peak_rss_mb(data: bytes) -> float:
    """Fingerprint `data` in a fresh process; its peak RSS above its RSS before, in MB.

    Writing 5 to /proc/self/clear_refs resets the kernel's peak (VmHWM) to the current RSS,
    so the imports' own high-water mark does not hide the decode's.
    """
    script = (
        "import sys\n"
        "from shotstamp_service.matching.fingerprint import fingerprint\n"
        "def kb(field):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(field):\n"
        "            return int(line.split()[1])\n"
        "data = sys.stdin.buffer.read()\n"
        "from tests.kit import imagegen\n"
        "fingerprint(data[:0] + imagegen.jpeg(1))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kb('VmRSS:')\n"
        "fingerprint(data)\n"
        "print((kb('VmHWM:') - before) / 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=data,
        capture_output=True,
        check=True,
        timeout=120,
        cwd=ROOT,  # for tests.kit
    )
    return float(done.stdout)


@pytest.mark.parametrize(
    "shape, options",
    [
        ((800, 20_000), {}),  # the most extreme shape the side cap lets through at 16 Mpx
        ((4000, 4000), {"bit_depth": 16}),  # was converted whole through float64: 312 MB
        ((4000, 4000), {"palette": True}),  # was converted whole to RGBA, then RGB: 229 MB
    ],
)
def test_memory_per_upload_stays_within_the_documented_bytes_per_pixel(shape, options):
    """docs/security.md: at most 8 bytes per declared pixel above the worker's RSS before
    the upload (16 Mpx here: 128 MB; these grey files need far less, measured ~32 MB)."""
    data = _grey_png(*shape, **options)
    assert fingerprint(data).width == shape[0]
    assert _peak_rss_mb(data) < 8 * shape[0] * shape[1] / 2**20


def test_reduced_16bit_and_palette_decodes_match_a_whole_conversion():
    grey16 = _grey_png(600, 400, bit_depth=16)
    whole = open_image(grey16, DecodeLimits()).image
    reduced = open_image(grey16, DecodeLimits(), draft=(100, 100)).image
    assert reduced.size == (150, 100) and reduced.mode == "L"
    expected = whole.reduce(4)
    assert np.abs(np.asarray(reduced, float) - np.asarray(expected, float)).max() <= 1
    keyed = _grey_png(600, 400, palette=True)
    reduced = open_image(keyed, DecodeLimits(), draft=(100, 100))
    whole_keyed = open_image(keyed, DecodeLimits())
    assert reduced.alpha is not None and whole_keyed.alpha is not None
    assert reduced.image.size == (150, 100)
    expected = whole_keyed.image.reduce(4)
    assert np.abs(np.asarray(reduced.image, float) - np.asarray(expected, float)).mean() < 2


async def test_a_job_over_its_cpu_limit_costs_one_request_and_the_pool_recovers():
    # No scan cap here: the bomb must reach the decoder to test the deadline behind the cap.
    limits = DecodeLimits(max_scans=100_000)
    pool = FingerprintPool(2, limits, cpu_seconds=1)
    await pool.start()
    try:
        before = pool.worker_pids()
        bomb = asyncio.ensure_future(pool(badimages.progressive_jpeg_scan_bomb()))
        await asyncio.sleep(0.2)  # the bomb holds one worker
        images = [imagegen.jpeg(seed) for seed in range(8)]
        got = await asyncio.gather(*(pool(data) for data in images))
        assert not bomb.done(), "another seller's uploads waited for the bomb"
        assert got == [fingerprint(data, limits) for data in images]
        with pytest.raises(ImageRejected) as caught:
            await bomb
        assert (STATUS[caught.value.reason], caught.value.code) == (422, "image_too_costly")
        for _ in range(200):
            if len(pool.worker_pids()) == 2 and pool._idle is not None and pool._idle.qsize() == 2:
                break
            await asyncio.sleep(0.05)
        after = pool.worker_pids()
        assert len(after) == 2 and len(after & before) == 1
        assert await asyncio.gather(*(pool(d) for d in images[:4])) == got[:4]
    finally:
        pool.close()


@pytest.mark.parametrize(
    "build, status, code",
    [
        (badimages.progressive_jpeg_scan_bomb, 422, "image_too_costly"),
        (lambda: _grey_png(1, 20_001), 413, "image_too_large"),
    ],
)
async def test_crafted_uploads_get_a_json_4xx_and_store_nothing(service, build, status, code):
    key = await service.key("mallory")
    for path in ("/v1/checks", "/v1/registrations"):
        resp = await service.upload(key, build(), path=path)
        assert resp.status == status, await resp.text()
        body = await resp.json()
        assert body["error"] == code and body["message"]
    honest = await service.key("acme")
    resp = await service.upload(honest, imagegen.jpeg(31), params={"wait": "true"})
    assert resp.status == 201
    assert (await resp.json())["proof"]["leaf_index"] == 0  # the refused uploads took none
