"""Transparent uploads: a cut-out's copy flattened onto black is caught as well as onto white."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shotstamp_service.matching import engine as rule
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from tests.kit import imagegen


def _cut_out(seed: int) -> Image.Image:
    """A product photo cut out of its background: a detailed photo under an irregular mask."""
    rng = np.random.default_rng(seed)
    photo = imagegen.detailed_photo(seed, (640, 640)).convert("RGBA")
    mask = Image.new("L", photo.size, 0)
    points = [(320 + float(r) * np.cos(a), 320 + float(r) * np.sin(a))
              for a, r in zip(np.linspace(0, 2 * np.pi, 12, endpoint=False),
                              rng.uniform(150, 300, 12), strict=True)]
    ImageDraw.Draw(mask).polygon(points, fill=255)
    photo.putalpha(mask)
    return photo


def _png(image: Image.Image) -> bytes:
    return imagegen.encode(image, "PNG")


def _flattened(image: Image.Image, background: tuple[int, int, int], quality: int = 85) -> bytes:
    canvas = Image.new("RGB", image.size, background)
    canvas.paste(image, mask=image.getchannel("A"))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def cut_outs() -> list[Image.Image]:
    return [_cut_out(seed) for seed in (11, 12, 13)]


def _copies_of(matcher: Matcher, fp: Fingerprint, features: dict[int, bytes | None]) -> list[int]:
    return [m.ref for m in matcher.match(fp, features.get) if m.verdict == "copy"]


def test_only_transparent_uploads_get_a_black_composite_hash(cut_outs: list[Image.Image]) -> None:
    transparent = fingerprint(_png(cut_outs[0]))
    assert "pdq_black" in transparent.hashes and transparent.black_quality is not None
    opaque = fingerprint(_flattened(cut_outs[0], (255, 255, 255)))
    assert "pdq_black" not in opaque.hashes and opaque.black_quality is None
    # A fully opaque alpha channel is no transparency.
    solid = cut_outs[0].copy()
    solid.putalpha(255)
    assert "pdq_black" not in fingerprint(_png(solid)).hashes


@pytest.mark.parametrize("background", [(0, 0, 0), (255, 255, 255)])
def test_a_flattened_copy_of_a_registered_cut_out_is_a_copy(
        cut_outs: list[Image.Image], background: tuple[int, int, int]) -> None:
    matcher, features = Matcher(background=False), {}
    for ref, image in enumerate(cut_outs):
        fp = fingerprint(_png(image))
        matcher.add(ref, fp)
        features[ref] = fp.features
    for ref, image in enumerate(cut_outs):
        copy = fingerprint(_flattened(image, background))
        assert _copies_of(matcher, copy, features) == [ref]
        # Found by its hash alone, as any re-encoding is.
        (first,) = [m for m in matcher.search(copy) if m.ref == ref]
        assert first.verdict == "copy" and "orb_inliers" not in first.distances


def test_a_cut_out_uploaded_after_its_black_flattened_original_is_a_copy(
        cut_outs: list[Image.Image]) -> None:
    matcher, features = Matcher(background=False), {}
    for ref, image in enumerate(cut_outs):
        fp = fingerprint(_flattened(image, (0, 0, 0), quality=92))
        matcher.add(ref, fp)
        features[ref] = fp.features
    for ref, image in enumerate(cut_outs):
        assert _copies_of(matcher, fingerprint(_png(image)), features) == [ref]


def test_different_cut_outs_on_black_are_not_copies(cut_outs: list[Image.Image]) -> None:
    # The black composites share a background and a silhouette style; nothing else.
    fps = [fingerprint(_png(image)) for image in cut_outs]
    for i, a in enumerate(fps):
        for b in fps[i + 1:]:
            assert a - b > rule.PDQ_CANDIDATE


def test_black_quality_survives_the_store_and_old_blobs_still_parse(
        cut_outs: list[Image.Image]) -> None:
    fp = fingerprint(_png(cut_outs[0]))
    assert fp.features is not None
    back = Fingerprint.from_store(fp.sha256, fp.perceptual(), fp.features, fp.width, fp.height)
    assert back.black_quality == fp.black_quality
    assert [n for n, _, _ in back.pdq_codes()] == [n for n, _, _ in fp.pdq_codes()]
    local = LocalFeatures.from_bytes(fp.features)
    assert local.source == (fp.height, fp.width)
    # Blobs written before the upload's size was kept (SSF2: four header bytes fewer) and
    # before the black composite (SSF1: one more fewer) still parse.
    header = struct.Struct("<4sHHHHHBBBHH")
    fields = header.unpack_from(fp.features)
    body = fp.features[header.size:]
    v2 = struct.pack("<4sHHHHHBBB", b"SSF2", *fields[1:9]) + body
    v1 = struct.pack("<4sHHHHHBB", b"SSF1", *fields[1:8]) + body
    for blob, black in ((v2, local.black_quality), (v1, 255)):
        old = LocalFeatures.from_bytes(blob)
        assert old.black_quality == black and old.quality == local.quality
        assert old.source is None
        assert np.array_equal(old.descriptors, local.descriptors)
        assert old.thumbnail_jpeg == local.thumbnail_jpeg
