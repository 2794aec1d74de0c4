"""Small uploads: a stamp or sprite shrunk to a quarter (~40 px) has too few pixels for
keypoints, so under the alignment a near PDQ code implies its pixels are compared one by one at
its own size (`verification.residual`, `matching.GLOBAL_RESIDUAL_COPY`).

The sprites are the hard case for that rule: one silhouette, one body colour, on white, told
apart only by what is engraved on them, as the corpus's tuxpaint gravestones are.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shotstamp_service.matching import engine as rule
from shotstamp_service.matching import verification
from shotstamp_service.matching.decode import canonical_grey
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.features import LocalFeatures, extract
from shotstamp_service.matching.fingerprint import fingerprint
from tests.kit import imagegen
from tests.kit.edits import EDITS_BY_NAME, apply_edit

SPRITE_SIZE = (120, 180)  # width, height: a quarter is 30 × 45


def _sprite(variant: int) -> Image.Image:
    return imagegen.stamp(variant, SPRITE_SIZE)


def _quarter(image: Image.Image, name: str) -> bytes:
    return apply_edit(EDITS_BY_NAME["downscale_25"], image, photo=name)


def _features(image: Image.Image) -> LocalFeatures:
    return extract(canonical_grey(image), source=(image.height, image.width))


def _residual(query: LocalFeatures,
              stored: LocalFeatures) -> tuple[float, int, float] | None:
    return verification.residual(query, stored,
                                 verification.global_transform(query, stored, "pdq", "pdq"))


SPRITES = range(6)


def test_a_quarter_size_copy_has_a_small_residual_and_a_variant_a_large_one() -> None:
    stored = {v: _features(_sprite(v)) for v in SPRITES}
    for v in SPRITES:
        copy = Image.open(io.BytesIO(_quarter(_sprite(v), f"sprite{v}")))
        query = _features(copy)
        assert query.source == (45, 30)
        own = _residual(query, stored[v])
        assert own is not None
        assert own[0] <= min(rule.GLOBAL_RESIDUAL_COPY, rule.GLOBAL_RESIDUAL_SHARE * own[2]), own
        assert own[1] >= rule.GLOBAL_RESIDUAL_PIXELS
        for other in SPRITES:
            if other != v:
                theirs = _residual(query, stored[other])
                assert theirs is not None and theirs[0] > rule.GLOBAL_RESIDUAL_COPY, (v, other)


def test_the_residual_is_only_taken_for_small_queries_of_known_size() -> None:
    stored = _features(_sprite(0))
    large = _sprite(0).resize((2 * verification.NATIVE_SIDE // 3, 2 * verification.NATIVE_SIDE))
    assert _residual(_features(large), stored) is None
    side = verification.NATIVE_SIDE
    assert _residual(_features(_sprite(0).resize((side * 2 // 3, side))), stored) is not None
    # Features stored before the upload's size was kept do not say the query is small.
    unknown = extract(canonical_grey(Image.open(io.BytesIO(_quarter(_sprite(0), "s")))))
    assert unknown.source is None and _residual(unknown, stored) is None


def test_blank_pixels_are_left_out() -> None:
    """White in both images says nothing: a sprite's residual is taken over the sprite, not
    diluted by its background."""
    sprite = _sprite(1)
    padded = Image.new("RGB", (2 * SPRITE_SIZE[0], 2 * SPRITE_SIZE[1]), "white")
    padded.paste(sprite, (SPRITE_SIZE[0] // 2, SPRITE_SIZE[1] // 2))
    on_white = _features(padded)
    other = _sprite(2)
    other_padded = Image.new("RGB", padded.size, "white")
    other_padded.paste(other, (SPRITE_SIZE[0] // 2, SPRITE_SIZE[1] // 2))
    query = _features(Image.open(io.BytesIO(_quarter(other_padded, "other"))))
    tight = _residual(_features(Image.open(io.BytesIO(_quarter(other, "other")))),
                      _features(sprite))
    loose = _residual(query, on_white)
    assert tight is not None and loose is not None
    # The same pixels differ by about as much; the white around them does not count.
    assert loose[1] < 0.4 * (padded.width // 4) * (padded.height // 4)
    assert loose[0] > rule.GLOBAL_RESIDUAL_COPY and abs(loose[0] - tight[0]) < 0.35 * tight[0]


@pytest.fixture(scope="module")
def registry() -> tuple[Matcher, dict[int, bytes]]:
    matcher = Matcher(background=False)
    features: dict[int, bytes] = {}
    for ref in REGISTERED:
        fp = fingerprint(imagegen.encode(_sprite(ref), "PNG"))
        assert fp.features is not None
        matcher.add(ref, fp)
        features[ref] = fp.features
    return matcher, features


REGISTERED = range(6)
# (variant, size, JPEG quality) of copies whose PDQ lands past PDQ_COPY but within
# PDQ_CANDIDATE, with too few keypoints for the other global clauses: the pixels decide.
BEYOND_PDQ = [(0, (20, 30), 75), (2, (20, 30), 75), (3, (20, 30), 90), (3, (20, 30), 75),
              (5, (20, 30), 75)]


def _small_copy(variant: int, size: tuple[int, int], quality: int) -> bytes:
    return imagegen.encode(_sprite(variant).resize(size, Image.Resampling.LANCZOS),
                           quality=quality)


@pytest.mark.parametrize(("variant", "size", "quality"), BEYOND_PDQ)
def test_a_small_copy_past_the_pdq_threshold_is_called_a_copy_by_its_pixels(
        variant: int, size: tuple[int, int], quality: int,
        registry: tuple[Matcher, dict[int, bytes]]) -> None:
    matcher, features = registry
    matches = matcher.match(fingerprint(_small_copy(variant, size, quality)), features.get)
    copies = [m for m in matches if m.verdict == "copy"]
    assert [m.ref for m in copies] == [variant], matches
    d = copies[0].distances
    assert rule.PDQ_COPY < d["pdq"] <= rule.PDQ_CANDIDATE
    assert d["global_inliers"] < rule.GLOBAL_INLIERS_COPY
    assert d["global_residual"] <= rule.GLOBAL_RESIDUAL_COPY
    assert d["global_residual"] <= rule.GLOBAL_RESIDUAL_SHARE * d["global_contrast"]
    assert d["global_pixels"] >= rule.GLOBAL_RESIDUAL_PIXELS


@pytest.mark.parametrize("variant", range(10))
def test_small_copies_of_a_stamp_are_copies_of_it_only(
        variant: int, registry: tuple[Matcher, dict[int, bytes]]) -> None:
    """Every registered stamp's quarter-size copy is caught by some clause; no copy of an
    unregistered variant (same outline, another engraving) is taken for a registered one."""
    matcher, features = registry
    for size, quality in (((30, 45), 90), ((24, 36), 90), ((20, 30), 90), ((20, 30), 75)):
        query = fingerprint(_small_copy(variant, size, quality))
        copies = [m.ref for m in matcher.match(query, features.get) if m.verdict == "copy"]
        if variant in REGISTERED:
            assert copies in ([], [variant]), (size, quality, copies)
        else:
            assert copies == [], (size, quality, copies)
    query = fingerprint(_quarter(_sprite(variant), f"sprite{variant}"))
    copies = [m.ref for m in matcher.match(query, features.get) if m.verdict == "copy"]
    assert copies == ([variant] if variant in REGISTERED else [])


def test_the_residual_follows_the_mirror_codes_alignment() -> None:
    """A mirrored copy, under the alignment the mirror code implies, lines up as a plain resize
    does (the stamp is nearly symmetric: only its engraving tells the two ways apart)."""
    sprite = _sprite(3)
    mirrored = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    query = _features(Image.open(io.BytesIO(_quarter(mirrored, "mirrored"))))
    stored = _features(sprite)
    aligned = verification.residual(
        query, stored, verification.global_transform(query, stored, "pdq_mirror", "pdq"))
    unaligned = _residual(query, stored)
    assert aligned is not None and unaligned is not None
    assert aligned[0] <= min(rule.GLOBAL_RESIDUAL_COPY, rule.GLOBAL_RESIDUAL_SHARE * aligned[2])
    assert unaligned[0] > rule.GLOBAL_RESIDUAL_COPY
