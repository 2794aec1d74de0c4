"""bench/fullscale.py: its distractors are registrations the service reads, perturbed as stated."""

from __future__ import annotations

import numpy as np
import pytest

from bench import fullscale
from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.fingerprint import DecodeLimits, Fingerprint
from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail
from tests.kit import imagegen
from tests.kit.corpus import corpus_dir


@pytest.fixture(scope="module")
def seed() -> fullscale.Seed:
    data = imagegen.encode(imagegen.detailed_photo(3))
    fp, thumb = fingerprint_and_thumbnail(data, DecodeLimits(), 256)
    perceptual, features = fp.to_store()
    return fullscale.Seed("gen|original", "gen", perceptual, features, thumb, fp.width,
                          fp.height, fp.sha256)


def test_a_distractor_is_a_feature_blob_the_service_reads_with_its_pdq_moved_by_the_mask(seed):
    rng = np.random.default_rng(1)
    prepared = fullscale.prepare(seed, rng)
    assert prepared is not None
    masks = fullscale.flip_masks(rng, np.array([0.07]))
    flips = fullscale.pdq_masks(rng, np.array([40]), count=8)
    original = LocalFeatures.from_bytes(seed.features or b"")
    for _ in range(20):
        perceptual, blob = fullscale.perturb(prepared, rng, masks, flips)
        local = LocalFeatures.from_bytes(blob)
        fp = Fingerprint.from_store("x" * 64, perceptual, blob, seed.width, seed.height)
        assert fp.features == blob  # parsed as an engine blob, not dropped as foreign
        assert local.thumbnail.shape == local.thumbnail_shape
        h, w = local.shape
        assert (local.xy >= 0).all() and (local.xy[:, 0] <= w).all() and (
            local.xy[:, 1] <= h).all()
        assert 0.84 * len(original) <= len(local) <= len(original)
        assert (local.quality, local.trim_quality) == (original.quality, original.trim_quality)
        for name in ("pdq", "pdq_trim"):
            if name in seed.perceptual:
                a = int(seed.perceptual[name], 16)
                assert (a ^ int(perceptual[name], 16)).bit_count() == 40
        assert perceptual.get("phash") == seed.perceptual.get("phash")


def test_descriptors_are_flipped_at_the_masks_rate(seed):
    rng = np.random.default_rng(2)
    prepared = fullscale.prepare(seed, rng)
    assert prepared is not None
    masks = fullscale.flip_masks(rng, np.array([0.07]))
    # Keypoints that survive keep their order: compare each variant's descriptors before and
    # after the flip, which is all `perturb` changes in them.
    _, blob = fullscale.perturb(prepared, np.random.default_rng(3), masks,
                                fullscale.pdq_masks(rng, np.array([0]), count=1))
    local = LocalFeatures.from_bytes(blob)
    variant = next(d for d in prepared.descriptors if len(d) == len(local))
    rate = np.unpackbits(variant ^ local.descriptors).mean()
    assert 0.05 < rate < 0.09


def test_queries_distractor_sources_and_unseen_photos_are_disjoint():
    root = corpus_dir()
    if not (root / "manifest.tsv").exists():
        pytest.skip(f"no corpus at {root}")
    from tests.kit.corpus import known_copies, same_picture

    queries, sources, unseen = fullscale.split_corpus(root)
    assert queries and sources and unseen
    assert not (set(queries) & set(sources) or set(queries) & set(unseen)
                or set(sources) & set(unseen))
    partners = {p for ps in same_picture().values() for p in ps}
    copies = {f for o, c, _ in known_copies(root) for f in (o, c)}
    assert not set(sources) & (partners | copies)
