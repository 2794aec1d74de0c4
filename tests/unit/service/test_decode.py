"""decode.open_image: every accepted format, every limit, every awkward colour mode."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageFile

from shotstamp_service.http.errors import STATUS
from shotstamp_service.matching.decode import (
    ALLOWED_FORMATS,
    HEIF_SUPPORTED,
    DecodeLimits,
    ImageRejected,
    open_image,
)
from shotstamp_service.matching.fingerprint import fingerprint
from tests.kit import badimages, imagegen

LIMITS = DecodeLimits(max_pixels=40_000_000, max_frames=1000)


def photo(seed: int = 1, size: tuple[int, int] = (160, 120)) -> Image.Image:
    return imagegen.photo(seed, size)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())


def rejected(data: bytes, limits: DecodeLimits = LIMITS, **kwargs: object) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        open_image(data, limits, **kwargs)  # type: ignore[arg-type]
    assert info.value.message
    return info.value


def status(error: ImageRejected) -> int:
    """The HTTP status the service answers `error` with."""
    return STATUS[error.reason]


FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "AVIF"] + (["HEIF"] if HEIF_SUPPORTED else [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_accepted_format_decodes_to_8bit_rgb(fmt):
    source = photo(3)
    decoded = open_image(badimages.encode(source, fmt), LIMITS)
    assert decoded.format == fmt
    assert decoded.image.mode in ("RGB", "L")
    assert (decoded.width, decoded.height) == source.size == decoded.image.size
    # Lossy formats and the GIF palette change pixels, not the picture.
    assert mean_diff(decoded.image.convert("RGB"), source) < 12


def test_mpo_from_phones_is_a_jpeg():
    frames = [photo(1), photo(2)]
    data = badimages.encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    decoded = open_image(data, LIMITS)
    assert decoded.format == "MPO"
    assert mean_diff(decoded.image, frames[0]) < 6


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("BMP", {}),
        ("ICO", {}),
        ("PPM", {}),
        ("TGA", {}),
        ("PCX", {}),
        ("JPEG2000", {}),
        ("PDF", {}),
        ("EPS", {}),
        ("QOI", {}),
        ("DDS", {}),
    ],
)
def test_other_formats_get_415(fmt, options):
    image = photo(4, (64, 64))
    try:
        data = badimages.encode(image, fmt, **options)
    except (OSError, KeyError, ValueError) as exc:
        pytest.skip(f"this Pillow cannot write {fmt}: {exc}")
    error = rejected(data)
    assert (status(error), error.code) == (415, "unsupported_format")
    assert "supported format" in error.message


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"%PDF-1.4\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x00" * 4096],
)
def test_non_images_get_415(data):
    assert status(rejected(data)) == 415


def test_allowlist_names_what_is_accepted():
    assert {"JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "AVIF"} <= ALLOWED_FORMATS
    assert ("HEIF" in ALLOWED_FORMATS) == HEIF_SUPPORTED


# -- limits ----------------------------------------------------------------------
BOMBS = {
    "png-100000x100000": badimages.png_dimension_bomb,
    "jpeg-65000x65000": badimages.jpeg_dimension_bomb,
    "tiff-8192-tiles": badimages.tiff_tile_bomb,
    "png-7000x6000": lambda: badimages.png_dimension_bomb(7000, 6000),  # just over 40 M
}


@pytest.mark.parametrize("name", BOMBS)
def test_decompression_bombs_are_refused_quickly(name):
    data = BOMBS[name]()
    started = time.perf_counter()
    error = rejected(data)
    assert (status(error), error.code) == (413, "image_too_large")
    assert time.perf_counter() - started < 0.2


def test_pixel_limit_is_configurable():
    data = badimages.encode(photo(5, (200, 100)), "PNG")
    assert open_image(data, DecodeLimits(max_pixels=20_000)).width == 200
    error = rejected(data, DecodeLimits(max_pixels=19_999))
    assert status(error) == 413 and "19999" in error.message


@pytest.mark.parametrize(
    "build",
    [badimages.gif_frames, badimages.apng_frames, badimages.tiff_pages],
    ids=["gif", "apng", "tiff"],
)
def test_too_many_frames_get_413_and_are_not_all_walked(build):
    few = build(3)
    decoded = open_image(few, LIMITS)
    assert decoded.frames == 3
    many = build(5000)
    started = time.perf_counter()
    error = rejected(many)
    assert (status(error), error.code) == (413, "too_many_frames")
    assert time.perf_counter() - started < 0.5
    assert open_image(build(5), DecodeLimits(max_frames=5)).frames == 5
    assert status(rejected(build(6), DecodeLimits(max_frames=5))) == 413


def test_a_huge_gif_of_tiny_frames_is_counted_with_a_cap():
    data = badimages.gif_frames(300_000)  # ~6 MB; Pillow's n_frames walks all of it
    started = time.perf_counter()
    assert rejected(data).code == "too_many_frames"
    assert time.perf_counter() - started < 0.2


def test_animated_gif_gives_its_first_frame():
    frames = [photo(seed, (64, 64)).convert("P") for seed in (6, 7, 8)]
    data = badimages.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = open_image(data, LIMITS)
    assert decoded.frames == 3
    assert mean_diff(decoded.image, frames[0].convert("RGB")) < 1


# -- corrupt ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_images_get_422(fmt):
    data = badimages.encode(photo(9, (256, 192)), fmt)
    for keep in (0.5, 0.9):
        error = rejected(data[: int(len(data) * keep)])
        assert status(error) in (415, 422), (fmt, keep, error.message)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg_is_corrupt_not_grey_filled():
    data = imagegen.jpeg(10)
    error = rejected(data[: len(data) * 2 // 3])
    assert (status(error), error.code) == (422, "corrupt_image")
    assert "truncated" in error.message


def test_png_with_a_broken_chunk_checksum_is_corrupt():
    data = bytearray(badimages.encode(photo(11), "PNG"))
    at = data.index(b"IDAT") + 20
    data[at] ^= 0xFF
    assert status(rejected(bytes(data))) == 422


# -- colour modes ----------------------------------------------------------------
def test_cmyk_jpeg_and_tiff_become_rgb():
    source = photo(12)
    cmyk = source.convert("CMYK")
    for fmt in ("JPEG", "TIFF"):
        decoded = open_image(badimages.encode(cmyk, fmt), LIMITS)
        assert decoded.image.mode == "RGB"
        assert mean_diff(decoded.image, cmyk.convert("RGB")) < 4


def test_16bit_grey_is_scaled_not_clipped():
    data, pixels = badimages.grey16(13)
    decoded = open_image(data, LIMITS)
    assert decoded.image.mode == "L"
    eight = np.rint(pixels / 257).astype(np.uint8)
    assert np.abs(np.asarray(decoded.image, dtype=int) - eight).max() <= 1
    assert np.asarray(decoded.image).std() > 20  # not a white page


def test_16bit_rgb_png_is_decoded_to_8bit():
    rng = np.random.default_rng(14)
    rgb16 = rng.integers(0, 65536, (48, 64, 3), dtype=np.uint16)
    raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(48))
    import zlib

    data = badimages.png_raw(64, 48, zlib.compress(raw), bit_depth=16, colour=2)
    decoded = open_image(data, LIMITS)
    assert decoded.image.mode == "RGB"
    assert np.abs(np.asarray(decoded.image, dtype=int) - (rgb16 >> 8)).max() <= 1


def test_16bit_tiff_is_scaled():
    grey = (np.asarray(photo(15).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    data = badimages.encode(Image.fromarray(grey), "TIFF")
    decoded = open_image(data, LIMITS)
    assert decoded.image.mode == "L"
    assert mean_diff(decoded.image, photo(15).convert("L")) < 1


def test_float_tiff_is_stretched_and_survives_nan_and_infinity():
    pixels = np.asarray(photo(28).convert("L"), dtype=np.float32) / 255.0
    decoded = open_image(badimages.encode(Image.fromarray(pixels, "F"), "TIFF"), LIMITS)
    assert decoded.image.mode == "L"
    assert mean_diff(decoded.image, photo(28).convert("L")) < 8
    pixels[:10] = np.nan
    pixels[10:20] = np.inf
    decoded = open_image(badimages.encode(Image.fromarray(pixels, "F"), "TIFF"), LIMITS)
    assert decoded.image.mode == "L"
    nothing = np.full((8, 8), np.nan, dtype=np.float32)
    assert open_image(badimages.encode(Image.fromarray(nothing, "F"), "TIFF"), LIMITS).width == 8


def test_transparency_is_composited_onto_white():
    rgba = photo(16).convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    alpha.paste(255, (0, 0, rgba.width // 2, rgba.height))
    rgba.putalpha(alpha)
    for fmt in ("PNG", "WEBP", "TIFF"):
        options = {"lossless": True} if fmt == "WEBP" else {}
        decoded = open_image(badimages.encode(rgba, fmt, **options), LIMITS)
        pixels = np.asarray(decoded.image)
        assert decoded.image.mode == "RGB"
        assert (pixels[:, rgba.width // 2 + 1 :] == 255).all(), fmt  # transparent half: white
        assert pixels[:, : rgba.width // 2].mean() < 250  # opaque half: the picture

    la = rgba.convert("LA")
    decoded = open_image(badimages.encode(la, "PNG"), LIMITS)
    assert decoded.image.mode == "L"
    assert (np.asarray(decoded.image)[:, rgba.width // 2 + 1 :] == 255).all()


def test_palette_with_transparency_is_composited_onto_white():
    source = photo(17, (64, 64)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pixels = np.asarray(source).copy()
    pixels[:, 32:] = 15  # the right half: palette entry 15, marked transparent below
    image = Image.fromarray(pixels, "P")
    image.putpalette(source.getpalette() or [])
    for fmt in ("PNG", "GIF"):
        decoded = open_image(badimages.encode(image, fmt, transparency=15), LIMITS)
        assert decoded.image.mode == "RGB"
        assert (np.asarray(decoded.image)[:, 32:] == 255).all(), fmt


def test_bilevel_and_grey_stay_grey():
    grey = photo(18).convert("L")
    assert open_image(badimages.encode(grey, "PNG"), LIMITS).image.mode == "L"
    bilevel = grey.convert("1")
    decoded = open_image(badimages.encode(bilevel, "TIFF"), LIMITS)
    assert decoded.image.mode == "L"
    assert set(np.unique(np.asarray(decoded.image))) <= {0, 255}


def test_mode_can_be_forced():
    data = imagegen.jpeg(19)
    assert open_image(data, LIMITS, mode="L").image.mode == "L"
    grey = badimages.encode(photo(19).convert("L"), "PNG")
    assert open_image(grey, LIMITS, mode="RGB").image.mode == "RGB"


# -- orientation -----------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied_once(fmt, orientation):
    upright = photo(20, (160, 96))
    data = badimages.with_orientation(upright, orientation, fmt)
    decoded = open_image(data, LIMITS)
    assert decoded.image.size == upright.size
    assert (decoded.width, decoded.height) == upright.size
    assert mean_diff(decoded.image, upright) < 6


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_reduced_jpeg_decode_is_upright_and_reports_the_full_size(orientation):
    upright = photo(21, (1200, 800))
    data = badimages.with_orientation(upright, orientation, "JPEG")
    decoded = open_image(data, LIMITS, draft=(256, 256), mode="L")
    assert (decoded.width, decoded.height) == (1200, 800)
    assert decoded.image.width >= 256 and decoded.image.height >= 256
    assert decoded.image.width < 1200  # libjpeg decoded at a reduced scale
    small = upright.convert("L").resize(decoded.image.size, Image.Resampling.BOX)
    assert mean_diff(decoded.image, small) < 6


def test_reduced_decode_of_other_formats():
    source = photo(22, (1200, 800))
    decoded = open_image(badimages.encode(source, "PNG"), LIMITS, draft=(256, 256))
    assert (decoded.width, decoded.height) == (1200, 800)
    assert 256 <= decoded.image.height < 800


def test_corrupt_exif_does_not_cost_the_photo():
    data = bytearray(badimages.with_orientation(photo(23), 6, "JPEG"))
    at = data.index(b"Exif\0\0") + 6
    data[at : at + 8] = b"XX\x00\x2a\xff\xff\xff\xff"  # a byte order that does not exist
    decoded = open_image(bytes(data), LIMITS)
    assert decoded.image.mode == "RGB"


# -- through fingerprint -----------------------------------------------------------
def test_fingerprint_reports_the_full_upright_size():
    data = badimages.with_orientation(photo(24, (1200, 800)), 6, "JPEG")
    fp = fingerprint(data)
    assert (fp.width, fp.height) == (1200, 800)
    assert fp.format == "JPEG"


def test_rotated_and_cmyk_copies_fingerprint_like_the_original():
    upright = photo(25, (640, 480))
    original = fingerprint(badimages.encode(upright, "JPEG", quality=92))
    for copy in (
        badimages.with_orientation(upright, 6, "JPEG"),
        badimages.encode(upright.convert("CMYK"), "JPEG", quality=92),
        badimages.encode(upright, "PNG"),
        badimages.encode(upright.convert("RGBA"), "WEBP", quality=90),
    ):
        fp = fingerprint(copy)
        distance = bin(
            int.from_bytes(fp.hashes["phash"], "big")
            ^ int.from_bytes(original.hashes["phash"], "big")
        ).count("1")
        assert distance <= 6


def test_load_truncated_images_stays_off_after_importing_the_service():
    import shotstamp_service.http.app  # noqa: F401 - everything the server imports

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_rejections_survive_pickling():
    import pickle

    error = rejected(badimages.png_dimension_bomb())
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.code, again.message) == (error.reason, error.code, error.message)


def test_desk_thumbnails_decode_through_open_image_too():
    from shotstamp_service.matching.thumbnail import make_thumbnail

    data, _ = badimages.grey16(27, (400, 300))
    thumb = Image.open(io.BytesIO(make_thumbnail(data, 128)))
    assert max(thumb.size) == 128
    assert np.asarray(thumb.convert("L")).mean() < 200  # scaled, not clipped to white
    with pytest.raises(ImageRejected):
        make_thumbnail(badimages.png_dimension_bomb(), 128)
