"""Bad uploads over HTTP: each gets a 4xx JSON error that says what is wrong, the
server stays up, and (against a real process) its memory stays bounded."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from shotstamp_service.matching.decode import HEIF_SUPPORTED
from tests.kit import badimages, imagegen
from tests.kit.liveserver import LiveServer, http, multipart, peak_rss_kib, rss_kib

MAX_UPLOAD = 2 * 1024 * 1024


@pytest.fixture
def service_config(service_config):
    return dataclasses.replace(service_config, max_upload_bytes=MAX_UPLOAD)


async def _assert_error(resp: Any, status: int, code: str, *words: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], body


async def _still_up(service: Any, key: str, seed: int) -> None:
    assert (await service.client.get("/healthz")).status == 200
    assert (await service.upload(key, imagegen.jpeg(seed))).status == 201


IMAGES: dict[str, tuple[Callable[[], bytes], int, str, str]] = {
    "text": (lambda: b"just some text, not a photo", 415, "unsupported_format", "JPEG"),
    "pdf": (lambda: b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", 415, "unsupported_format", "format"),
    "svg": (lambda: b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_format", ""),
    "bmp": (
        lambda: badimages.encode(imagegen.photo(1, (64, 64)), "BMP"),
        415,
        "unsupported_format",
        "",
    ),
    "truncated-jpeg": (
        lambda: imagegen.jpeg(2)[:5000],
        422,
        "corrupt_image",
        "truncated",
    ),
    "truncated-png": (
        lambda: badimages.encode(imagegen.photo(3), "PNG")[:3000],
        422,
        "corrupt_image",
        "",
    ),
    "png-bad-checksum": (
        lambda: _flip(badimages.encode(imagegen.photo(4), "PNG"), b"IDAT", 30),
        422,
        "corrupt_image",
        "",
    ),
    "png-100000x100000": (badimages.png_dimension_bomb, 413, "image_too_large", "pixels"),
    "jpeg-65000x65000": (badimages.jpeg_dimension_bomb, 413, "image_too_large", "pixels"),
    "tiff-tile-bomb": (badimages.tiff_tile_bomb, 413, "image_too_large", "tiles"),
    "gif-5000-frames": (
        lambda: badimages.gif_frames(5000),
        413,
        "too_many_frames",
        "1000",
    ),
    "apng-5000-frames": (
        lambda: badimages.apng_frames(5000),
        413,
        "too_many_frames",
        "frames",
    ),
    "tiff-1500-pages": (
        lambda: badimages.tiff_pages(1500),
        413,
        "too_many_frames",
        "frames",
    ),
}


def _flip(data: bytes, near: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[data.index(near) + offset] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("name", IMAGES)
async def test_bad_images_get_a_clear_4xx_and_the_server_stays_up(service, name):
    build, status, code, word = IMAGES[name]
    key = await service.key("acme")
    data = build()
    for path in ("/v1/registrations", "/v1/checks"):
        resp = await service.upload(key, data, path=path)
        await _assert_error(resp, status, code, word)
    await _still_up(service, key, 100)


ACCEPTED: dict[str, Callable[[], bytes]] = {
    "cmyk-jpeg": lambda: badimages.encode(imagegen.photo(5).convert("CMYK"), "JPEG"),
    "16bit-png": lambda: badimages.grey16(6, (320, 240))[0],
    "exif-rotated-jpeg": lambda: badimages.with_orientation(imagegen.photo(7), 6),
    "palette-transparent-png": lambda: badimages.encode(
        imagegen.photo(8).convert("P"), "PNG", transparency=0
    ),
    "rgba-webp": lambda: badimages.encode(imagegen.photo(9).convert("RGBA"), "WEBP"),
    "gif": lambda: badimages.encode(imagegen.photo(10).convert("P"), "GIF"),
    "tiff": lambda: badimages.encode(imagegen.photo(11), "TIFF"),
    "avif": lambda: badimages.encode(imagegen.photo(12), "AVIF"),
    "mpo": lambda: badimages.encode(
        imagegen.photo(13), "MPO", save_all=True, append_images=[imagegen.photo(14)]
    ),
}
if HEIF_SUPPORTED:
    ACCEPTED["heic"] = lambda: badimages.encode(imagegen.photo(15), "HEIF")


@pytest.mark.parametrize("name", ACCEPTED)
async def test_awkward_but_valid_images_register(service, name):
    key = await service.key("acme")
    resp = await service.upload(key, ACCEPTED[name](), params={"wait": "true"})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["status"] == "sealed"
    assert body["width"] == 640 or name == "16bit-png" or name == "exif-rotated-jpeg"


async def test_an_exif_rotated_copy_of_another_sellers_photo_is_a_conflict(service):
    acme, thief = await service.key("acme"), await service.key("thief")
    upright = imagegen.photo(16)
    resp = await service.upload(acme, badimages.encode(upright, "JPEG", quality=92))
    assert resp.status == 201
    original = await resp.json()
    assert (original["width"], original["height"]) == (640, 480)
    # Stored sideways with orientation 6: the same picture once EXIF is applied.
    resp = await service.upload(thief, badimages.with_orientation(upright, 6))
    await _assert_error_conflict(resp, original["id"])
    # CMYK and 16-bit grey re-encodings are the same picture too.
    resp = await service.upload(thief, badimages.encode(upright.convert("CMYK"), "JPEG"))
    await _assert_error_conflict(resp, original["id"])


async def _assert_error_conflict(resp: Any, original_id: str) -> None:
    assert resp.status == 409, await resp.text()
    body = await resp.json()
    assert [m["registration_id"] for m in body["matches"]] == [original_id]


# -- the HTTP envelope ---------------------------------------------------------
async def test_oversized_bodies_get_413(service):
    key = await service.key("acme")
    big = b"\xff\xd8" + bytes(MAX_UPLOAD + 10)
    resp = await service.upload(key, big)  # declared Content-Length over the cap
    await _assert_error(resp, 413, "body_too_large", str(MAX_UPLOAD))

    body, ctype = multipart(big)

    async def stream():  # no Content-Length: the cap applies as the part streams in
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    resp = await service.client.post(
        "/v1/registrations",
        data=stream(),
        headers={**service.auth(key), "Content-Type": ctype},
    )
    await _assert_error(resp, 413, "body_too_large", str(MAX_UPLOAD))
    await _still_up(service, key, 101)


async def test_multipart_without_the_image_field(service):
    key = await service.key("acme")
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("title", "no photo here")
    resp = await service.client.post("/v1/registrations", data=form, headers=service.auth(key))
    await _assert_error(resp, 400, "missing_image", "'image'")


async def test_two_files_in_the_image_field(service):
    key = await service.key("acme")
    form = aiohttp.FormData()
    form.add_field("image", imagegen.jpeg(20), filename="a.jpg", content_type="image/jpeg")
    form.add_field("image", imagegen.jpeg(21), filename="b.jpg", content_type="image/jpeg")
    resp = await service.client.post("/v1/registrations", data=form, headers=service.auth(key))
    await _assert_error(resp, 400, "too_many_files", "exactly one")


async def test_an_empty_image_field(service):
    key = await service.key("acme")
    resp = await service.upload(key, b"")
    await _assert_error(resp, 400, "empty_image", "empty")


@pytest.mark.parametrize(
    "content_type",
    [
        "image/jpeg",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/mixed; boundary=x",
        "application/octet-stream",
        None,
    ],
)
async def test_wrong_content_types_get_415(service, content_type):
    key = await service.key("acme")
    headers = service.auth(key)
    if content_type:
        headers["Content-Type"] = content_type
    resp = await service.client.post(
        "/v1/registrations",
        data=imagegen.jpeg(22),
        headers=headers,
        skip_auto_headers=["Content-Type"],
    )
    await _assert_error(resp, 415, "unsupported_media_type", "multipart/form-data")


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage with no boundary at all",
        b'--wrong-boundary\r\nContent-Disposition: form-data; name="image"\r\n\r\nxx\r\n',
        b"",
    ],
)
async def test_malformed_multipart_gets_400(service, raw):
    key = await service.key("acme")
    resp = await service.client.post(
        "/v1/registrations",
        data=raw,
        headers={**service.auth(key), "Content-Type": "multipart/form-data; boundary=right"},
    )
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] in ("bad_multipart", "missing_image") and body["message"]


@pytest.mark.parametrize("field", ["title", "reference"])
async def test_invalid_utf8_and_overlong_text_fields_get_400(service, field):
    key = await service.key("acme")
    for value, words in (
        (b"caf\xe9 \xff\xfe", ("UTF-8", field)),
        ("x".join("é" for _ in range(600)).encode(), ("longer than", field)),
    ):
        body, ctype = multipart(imagegen.jpeg(23), {field: value})
        resp = await service.client.post(
            "/v1/registrations", data=body, headers={**service.auth(key), "Content-Type": ctype}
        )
        await _assert_error(resp, 400, "invalid_text", *words)
    await _still_up(service, key, 102)


async def test_unknown_fields_are_refused_and_text_is_kept(service):
    key = await service.key("acme")
    body, ctype = multipart(imagegen.jpeg(24), {"title": "Tea pot – ü".encode(), "colour": b"\xff"})
    resp = await service.client.post(
        "/v1/registrations", data=body, headers={**service.auth(key), "Content-Type": ctype}
    )
    assert resp.status == 400
    refused = await resp.json()
    assert (refused["error"], refused["field"]) == ("unknown_field", "colour")
    assert "'colour'" in refused["message"]
    body, ctype = multipart(imagegen.jpeg(24), {"title": "Tea pot – ü".encode()})
    resp = await service.client.post(
        "/v1/registrations", data=body, headers={**service.auth(key), "Content-Type": ctype}
    )
    assert resp.status == 201
    assert (await resp.json())["title"] == "Tea pot – ü"


# -- a real process under a barrage ----------------------------------------------
def test_a_barrage_of_bad_uploads_leaves_memory_bounded_and_the_server_up(tmp_path):
    """Against the real service with its default limits: bombs, oversized and
    corrupt uploads from 8 clients at once, several times over."""
    slots = 4
    server = LiveServer(
        tmp_path / "data",
        env={
            "SHOTSTAMP_MAX_INFLIGHT_UPLOADS": str(slots),
            "SHOTSTAMP_UPLOAD_RATE": "0",
            "SHOTSTAMP_FINGERPRINT_WORKERS": "2",
        },
    )
    key = server.create_key("acme")
    server.start()
    try:
        for seed in range(5):  # warm every part of the path first
            body, ctype = multipart(imagegen.jpeg(200 + seed))
            assert (
                http(
                    "POST",
                    f"{server.base}/v1/registrations",
                    key=key,
                    body=body,
                    content_type=ctype,
                )[0]
                == 201
            )
        main = server.pid
        workers = [pid for pid in server.pids() if pid != main]
        before = rss_kib(main)
        # A worker's start (the bound below is growth over it; a first start's size against a
        # later one's is test_startup_kernels').
        worker_start = max(peak_rss_kib(pid) for pid in workers)

        cap = 32 * 1024 * 1024
        payloads: list[tuple[str, bytes, int]] = [
            ("png-bomb", badimages.png_dimension_bomb(), 413),
            ("jpeg-bomb", badimages.jpeg_dimension_bomb(), 413),
            ("tiff-tile-bomb", badimages.tiff_tile_bomb(), 413),
            ("png-7000x6000", badimages.png_dimension_bomb(7000, 6000), 413),
            ("gif-frames", badimages.gif_frames(5000), 413),
            ("tiff-pages", badimages.tiff_pages(1500), 413),
            ("truncated", imagegen.jpeg(300)[:4000], 422),
            ("not-an-image", b"hello" * 1000, 415),
            ("oversized", b"\xff\xd8" + bytes(cap + 1), 413),
        ]
        failures: list[Any] = []
        lock = threading.Lock()
        jobs: list[tuple[str, bytes, int]] = []

        def client() -> None:
            while True:
                with lock:
                    if not jobs:
                        return
                    name, data, want = jobs.pop()
                body, ctype = multipart(data)
                try:
                    status, reply, _ = http(
                        "POST",
                        f"{server.base}/v1/registrations",
                        key=key,
                        body=body,
                        content_type=ctype,
                    )
                except OSError as exc:
                    with lock:
                        failures.append((name, repr(exc)))
                    continue
                if status != want or set(reply) != {"error", "message"}:
                    with lock:
                        failures.append((name, status, reply))

        def barrage() -> float:
            jobs.extend(p for _ in range(6) for p in payloads)
            started = time.monotonic()
            threads = [threading.Thread(target=client) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            assert not failures, failures[:5]
            return time.monotonic() - started

        elapsed = barrage()
        first = rss_kib(main)
        elapsed += barrage()

        # Still up and working.
        body, ctype = multipart(imagegen.jpeg(299))
        assert (
            http("POST", f"{server.base}/v1/registrations", key=key, body=body, content_type=ctype)[
                0
            ]
            == 201
        )
        assert sorted(pid for pid in server.pids() if pid != main) == sorted(workers), (
            "a worker died"
        )

        after = rss_kib(main)
        main_peak = peak_rss_kib(main)
        worker_peak = max(peak_rss_kib(pid) for pid in workers)
        print(
            f"\nbarrage of 2 × {6 * len(payloads)} in {elapsed:.1f} s: main RSS {before // 1024} MB"
            f" -> {first // 1024} -> {after // 1024} MB (peak {main_peak // 1024} MB); worker peak"
            f" {worker_start // 1024} -> {worker_peak // 1024} MB"
        )
        # Nothing retained: the bodies are gone once answered. The allocator may keep one
        # body's worth of freed heap (glibc raises its mmap threshold up to 32 MB), so the
        # first barrage may leave up to `cap` more; the second (54 uploads more) leaves no more.
        assert first - before < (cap + 32 * 1024 * 1024) // 1024
        assert after - first < 32 * 1024
        # At most `slots` bodies of up to `cap` bytes (twice, while a part is joined) at once.
        assert main_peak - before < (slots * 2 * cap + 64 * 1024 * 1024) // 1024
        # No bomb was ever decoded: a worker's peak grew no more than a small photo's decode
        # would make it (the smallest bomb, 7000×6000, is 126 MB as RGB).
        assert worker_peak - worker_start < 100 * 1024
    finally:
        server.stop()
