"""The matching engine over HTTP: edited copies by another seller are refused, naming the original.

Each edit is one a thief applies to a product photo; the crop and the watermark
are beyond the global hashes and are caught by stage 2 (local features,
verified in the fingerprint pool's worker process).
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from shotstamp_service.matching.rule import CLAUSES
from tests.kit import imagegen

CLAUSE_NAMES = {c.name for c in CLAUSES}


def _crop_90(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 20, h // 20, w - w // 20, h - h // 20))


def _pad_white(image: Image.Image) -> Image.Image:
    w, h = image.size
    out = Image.new("RGB", (w + w // 5, h + h // 5), "white")
    out.paste(image, (w // 10, h // 10))
    return out


def _watermark(image: Image.Image) -> Image.Image:
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    font = ImageFont.load_default(size=base.width // 8)
    ImageDraw.Draw(layer).text(
        (base.width * 0.08, base.height * 0.42), "STOLEN SHOP", font=font, fill=(255, 255, 255, 140)
    )
    return Image.alpha_composite(base, layer).convert("RGB")


EDITS = {
    "crop_90": _crop_90,
    "mirror": ImageOps.mirror,
    "pad_white": _pad_white,
    "watermark": _watermark,
}


async def test_edited_copies_by_another_seller_are_conflicts_naming_the_original(service):
    acme, thief = await service.key("acme"), await service.key("thief")
    original = imagegen.detailed_photo(31)
    resp = await service.upload(acme, imagegen.encode(original))
    assert resp.status == 201, await resp.text()
    registered = await resp.json()
    assert {"pdq", "phash"} <= set(registered["perceptual"])

    for name, edit in EDITS.items():
        copy = imagegen.encode(edit(original), quality=85)
        resp = await service.upload(thief, copy)
        assert resp.status == 409, (name, await resp.text())
        body = await resp.json()
        assert registered["id"] in body["message"], name
        (match,) = body["matches"]
        assert match["registration_id"] == registered["id"], name
        assert match["verdict"] == "copy", name
        assert {"pdq", "phash"} <= set(match["distances"]), (name, match)
        assert match["distance"] == match["distances"]["pdq"]
        if name == "crop_90":  # beyond the global hashes: stage 2's keypoints decided
            assert match["distances"]["orb_inliers"] >= 20, match
        # The verdict in words, and the clause and stage of the rule that decided.
        assert match["clause"] in CLAUSE_NAMES and match["explanation"], match
        assert match["stage"] == (1 if match["clause"] == "pdq" else 2), match
        if name == "crop_90":  # 90 % of each side: ~81 % of the area
            assert match["stage"] == 2 and "cropped to ~8" in match["explanation"], match
        if name == "mirror":
            assert "mirrored" in match["explanation"], match

    # A different photo is new, and only it was registered besides the original.
    resp = await service.upload(thief, imagegen.encode(imagegen.detailed_photo(32)))
    assert resp.status == 201, await resp.text()
    health = await (await service.client.get("/healthz")).json()
    assert health["indexed"] == 2


async def test_simultaneous_original_and_crop_register_once(service):
    """Stage 2 awaits the pool; the upload path still never registers both."""
    acme, thief = await service.key("acme"), await service.key("thief")
    original = imagegen.detailed_photo(33)
    crop = imagegen.encode(_crop_90(original), quality=85)
    responses = await asyncio.gather(
        service.upload(acme, imagegen.encode(original)), service.upload(thief, crop)
    )
    assert sorted(r.status for r in responses) == [201, 409]
    health = await (await service.client.get("/healthz")).json()
    assert health["indexed"] == 1


async def test_config_reports_the_rule_in_use(service):
    matching = (await (await service.client.get("/v1/config")).json())["matching"]
    assert matching["primary"] == "pdq"
    assert any("pdq hamming <= 16" in rule for rule in matching["copy"])
    # The clause table itself, as decide() applies it.
    assert [c["name"] for c in matching["rule"]["clauses"]] == [c.name for c in CLAUSES]
    assert matching["registrations"] == 0


@pytest.mark.parametrize("background", [(255, 255, 255)])
async def test_transparent_cutout_and_its_copy_on_white_are_one_photo(service, background):
    acme, thief = await service.key("acme"), await service.key("thief")
    cutout = imagegen.detailed_photo(34, (400, 300)).convert("RGBA")
    alpha = Image.new("L", cutout.size, 0)
    ImageDraw.Draw(alpha).ellipse((40, 20, 360, 280), fill=255)
    cutout.putalpha(alpha)
    resp = await service.upload(acme, imagegen.encode(cutout, "PNG"))
    assert resp.status == 201
    flat = Image.new("RGB", cutout.size, background)
    flat.paste(cutout, mask=alpha)
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=85)
    assert (await service.upload(thief, buffer.getvalue())).status == 409


async def test_a_stamp_shrunk_to_a_quarter_is_a_conflict_and_its_variant_is_not(service):
    """A 30 × 45 px copy has no keypoints to speak of: its own pixels decide (global_residual),
    and a stamp of the same outline with another engraving is not taken for it."""
    acme, thief = await service.key("acme"), await service.key("thief")
    resp = await service.upload(acme, imagegen.encode(imagegen.stamp(3), "PNG"))
    assert resp.status == 201, await resp.text()
    registered = await resp.json()
    # PDQ puts this copy past its copy threshold; stage 2 compares the pixels.
    small = imagegen.stamp(3).resize((20, 30), Image.LANCZOS)
    resp = await service.upload(thief, imagegen.encode(small, quality=90))
    assert resp.status == 409, await resp.text()
    (match,) = (await resp.json())["matches"]
    assert match["registration_id"] == registered["id"] and match["verdict"] == "copy"
    assert match["distances"]["pdq"] > 16
    assert match["distances"]["global_residual"] <= match["distances"]["global_contrast"]
    variant = imagegen.stamp(2).resize((20, 30), Image.LANCZOS)
    resp = await service.upload(thief, imagegen.encode(variant, quality=90))
    assert resp.status == 201, await resp.text()
