"""Every edit family on real photos that every run has: the ones scikit-image's wheel ships
(`tests/kit/bundled_photos.py`). These run in CI, where the development corpus is absent;
with the corpus present, test_matching_engine.py runs the same families on corpus photos too.

Each edited copy goes through both stages as the service runs them (`Matcher.match`: search →
candidates → verify → decide) against a registry of eight photos, and must be called a `copy`
of its own original and of nothing else. Three more photos are never registered: neither they
nor any edit of them may be called a copy of anything.
"""

from __future__ import annotations

from itertools import product

import pytest
from PIL import Image

from shotstamp_service.matching.engine import Match, Matcher
from shotstamp_service.matching.fingerprint import fingerprint
from tests.kit.bundled_photos import BUNDLED_PHOTOS
from tests.kit.edits import EDITS, EDITS_BY_NAME, apply_edit

NAMES = {p.file: p.name for p in BUNDLED_PHOTOS}

# Every edit family is asserted on each of these: a portrait, an animal, an object on a table,
# objects on a plain background, a greyscale scene. They are used at the size the wheel ships
# them (300–600 px high), as a seller's upload might be.
EDIT_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "coins.png", "camera.png")
# Registered beside them: look-alike textures (gravel, held out below, is grass's) and a scene.
ALSO_REGISTERED = ("brick.png", "grass.png", "hubble_deep_field.jpg")
# Never registered: any copy verdict for them or their edits is a false match.
HELD_OUT = ("rocket.jpg", "gravel.png", "retina.jpg")
REGISTERED = EDIT_PHOTOS + ALSO_REGISTERED

# (photo, family) pairs the engine misses here, with why. Reported as xfailed on every run
# (and as XPASS once caught); a copy verdict for a different photo still fails it.
# Measured over 12 other seeds per randomised family (November 2026): every other case here is
# caught at every seed except coins + combination, caught at 8 of 12 (its seed here is one of
# them; a miss is again too few word votes, never weak stage-2 evidence). If a change to the
# word index turns it into a miss, that is this family's measured recall, not a new bug: check
# bench/matching.py before listing it here.
# chelsea + combination was listed here until the word index's signatures (bench/matching.py:
# combination 62.8 → 69.4 %) gave its original the votes stage 2 needs.
KNOWN_MISSES: dict[tuple[str, str], str] = {}

Registry = tuple[Matcher, dict[int, bytes]]


class Missed(AssertionError):
    """The true original was not called a copy (as opposed to a wrong copy verdict)."""


def _register(files: tuple[str, ...], bundled: dict[str, tuple[bytes, Image.Image]]) -> Registry:
    """A matcher holding `files` as refs 0, 1, …, and their feature blobs."""
    matcher = Matcher(background=False)
    features: dict[int, bytes] = {}
    for ref, file in enumerate(files):
        fp = fingerprint(bundled[file][0])
        assert fp.features is not None
        matcher.add(ref, fp)
        features[ref] = fp.features
    return matcher, features


@pytest.fixture(scope="module")
def registry(bundled: dict[str, tuple[bytes, Image.Image]]) -> Registry:
    return _register(REGISTERED, bundled)


def _copies(registry: Registry, data: bytes) -> tuple[list[int], list[Match]]:
    matcher, features = registry
    matches = matcher.match(fingerprint(data), features.get)
    return [m.ref for m in matches if m.verdict == "copy"], matches


def _cases() -> list[object]:
    cases: list[object] = []
    for file, edit in product(EDIT_PHOTOS, EDITS):
        why = KNOWN_MISSES.get((file, edit.name))
        marks = [pytest.mark.xfail(raises=Missed, reason=why, strict=False)] if why else []
        cases.append(pytest.param(file, edit.name, marks=marks,
                                  id=f"{file.split('.')[0]}-{edit.name}"))
    return cases


def test_known_misses_name_real_cases() -> None:
    for file, edit in KNOWN_MISSES:
        assert file in EDIT_PHOTOS and edit in EDITS_BY_NAME


@pytest.mark.parametrize(("file", "edit_name"), _cases())
def test_edit_family_is_caught(file: str, edit_name: str, registry: Registry,
                               bundled: dict[str, tuple[bytes, Image.Image]]) -> None:
    edit = EDITS_BY_NAME[edit_name]
    ref = REGISTERED.index(file)
    copies, matches = _copies(registry, apply_edit(edit, bundled[file][1], photo=NAMES[file]))
    wrong = [REGISTERED[r] for r in copies if r != ref]
    assert not wrong, f"{file} [{edit_name}] called a copy of {wrong}: {matches}"
    if copies != [ref]:
        raise Missed(f"{file} [{edit_name}]: its original not called a copy: {matches}")


def test_registered_photos_are_copies_of_themselves_only(
    registry: Registry, bundled: dict[str, tuple[bytes, Image.Image]],
) -> None:
    for ref, file in enumerate(REGISTERED):
        copies, matches = _copies(registry, bundled[file][0])
        assert copies == [ref], f"{file}: {matches}"


@pytest.mark.parametrize("file", HELD_OUT)
def test_unregistered_photo_and_its_edits_are_not_copies(
    file: str, registry: Registry, bundled: dict[str, tuple[bytes, Image.Image]],
) -> None:
    data, image = bundled[file]
    queries = {"original": data}
    queries.update((e.name, apply_edit(e, image, photo=NAMES[file])) for e in EDITS)
    for label, query in queries.items():
        copies, matches = _copies(registry, query)
        assert copies == [], f"{file} [{label}] called a copy of " \
                             f"{[REGISTERED[r] for r in copies]}: {matches}"


def test_held_out_photos_are_found_once_registered(
    bundled: dict[str, tuple[bytes, Image.Image]],
) -> None:
    """The held-out photos are not trivially unmatchable: registered, they are found."""
    matcher, features = _register(HELD_OUT, bundled)
    for ref, file in enumerate(HELD_OUT):
        copy = apply_edit(EDITS_BY_NAME["jpeg_q50"], bundled[file][1], photo=NAMES[file])
        found = [m.ref for m in matcher.match(fingerprint(copy), features.get)
                 if m.verdict == "copy"]
        assert found == [ref], file
