"""Evidence a person can see and take away: the match drawn on the desk, and dispute files.

A real service process and Debian's Chromium, as in test_desk_browser.py. Screenshots go to
test-artifacts/desk/ (and, with SHOTSTAMP_SCREENSHOTS=DIR, to DIR: docs/screenshots/).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from shotstamp_service.http import dispute
from tests.kit import ROOT, imagegen

ORIGINAL_SIZE = (800, 600)
CROP = (40, 60, 40 + 560, 60 + 470)  # the left 70 % of the width (and a little in from it)
ANGLE = 4.0


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def jpeg_file(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/jpeg", "buffer": data}


def keep(desk: Any, name: str) -> None:
    """A screenshot as a test artifact, and for the docs when asked."""
    path = desk.screenshot(name)
    target = os.environ.get("SHOTSTAMP_SCREENSHOTS")
    if target:
        shutil.copy(path, Path(target) / path.name)


def a_cropped_turned_copy() -> tuple[bytes, bytes, list[tuple[float, float]]]:
    """(original, suspect, where the suspect's corners lie in the original's pixels)."""
    image = imagegen.detailed_photo(5, ORIGINAL_SIZE)
    suspect, corners = imagegen.crop_and_turn(image, CROP, ANGLE)
    return imagegen.encode(image), imagegen.encode(suspect), corners


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f"{value}\r\n").encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
             'filename="suspect.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode()
    body += image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def dispute_file(server: Any, registration_id: str, image: bytes, *, key: str | None = None,
                 fmt: str = "html") -> tuple[int, bytes, str]:
    import urllib.error
    import urllib.request

    body, content_type = multipart(
        {"registration_id": registration_id, "suspect_name": "listing.jpg"}, image)
    request = urllib.request.Request(
        f"{server.base}/v1/desk/evidence" + ("?format=pdf" if fmt == "pdf" else ""),
        data=body, method="POST")
    request.add_header("Authorization", f"Bearer {key or server.staff}")
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


@pytest.fixture(scope="module")
def registered(desk_server: Any) -> dict[str, Any]:
    """acme's original, registered and sealed, and a cropped, turned copy of it."""
    original, suspect, corners = a_cropped_turned_copy()
    reg = desk_server.register(desk_server.acme, original)
    return {"reg": reg, "original": original, "suspect": suspect, "corners": corners}


def outline_on_screen(page: Any, figure: Any) -> tuple[list[list[float]], dict[str, float]]:
    """The drawn outline's corners and the registered image's content box, in CSS pixels."""
    return figure.evaluate(
        """figure => {
            const polygon = figure.querySelector(".overlay .outline");
            const ctm = polygon.getScreenCTM();
            const corners = [...polygon.points].map((p) => {
                const q = p.matrixTransform(ctm);
                return [q.x, q.y];
            });
            const img = figure.querySelector("img");
            const box = img.getBoundingClientRect();
            return [corners, {x: box.left + img.clientLeft, y: box.top + img.clientTop,
                              width: img.clientWidth, height: img.clientHeight}];
        }"""
    )


# -- show the match -----------------------------------------------------------------------
def test_a_cropped_turned_copy_is_outlined_where_the_crop_lies(desk, registered):
    desk.sign_in()
    page = desk.page
    page.get_by_label("Suspected image").set_input_files(
        jpeg_file("listing.jpg", registered["suspect"]))
    card = page.locator("ol.matches > li").first
    expect(card).to_have_attribute("data-registration", registered["reg"]["id"])
    expect(card.locator("h3")).to_contain_text("copy")
    figure = card.locator(".pair figure").nth(1)
    expect(figure.locator(".overlay .outline")).to_be_attached()
    figure.locator("img").evaluate("img => img.decode()")
    corners, box = outline_on_screen(page, figure)
    k = box["width"] / ORIGINAL_SIZE[0]
    assert abs(box["height"] / ORIGINAL_SIZE[1] - k) < 0.01  # the thumbnail is not stretched
    for (x, y), (tx, ty) in zip(corners, registered["corners"], strict=True):
        assert abs(x - (box["x"] + tx * k)) < 3 and abs(y - (box["y"] + ty * k)) < 3, (
            corners, registered["corners"], box)
    # In words, at a glance: the share it covers, where, and the turn.
    explanation = card.locator(".explanation")
    expect(explanation).to_contain_text("turned 4.")
    expect(explanation).to_contain_text("anticlockwise")
    expect(explanation).to_contain_text("the left part of the registered photo (70 % of its width")
    # The engine's counters are folded away under Details.
    figures = card.locator("details.engine dd", has_text="orb_inliers")
    expect(figures).to_be_hidden()
    card.locator("details.engine summary").click()
    expect(figures).to_be_visible()
    card.locator("details.engine summary").click()
    keep(desk, "compare-outline")

    card.get_by_role("button", name="Show matched keypoints").click()
    lines = card.locator("svg.keypoints line.pair")
    assert 12 <= lines.count() <= 100
    keep(desk, "compare-keypoints")
    card.get_by_role("button", name="Hide matched keypoints").click()
    expect(card.locator("svg.keypoints")).to_have_count(0)

    card.get_by_role("button", name="Show differences").click()
    difference = card.locator(".difference")
    expect(difference).to_be_visible()
    # Laid onto the registered image through the fitted transform, a copy differs little.
    assert float(difference.get_attribute("data-differing")) < 0.15
    difference.get_by_role("button", name="Flip to the suspect").click()
    expect(difference.locator("canvas.aligned")).to_be_visible()
    expect(difference.locator("canvas.registered")).to_be_hidden()
    keep(desk, "compare-difference-aligned")


def test_a_copy_by_its_hash_gets_a_difference_view_and_a_whole_picture_sentence(desk):
    server = desk.server
    original = imagegen.jpeg(71)
    server.register(server.acme, original)
    desk.sign_in()
    page = desk.page
    page.get_by_label("Suspected image").set_input_files(
        jpeg_file("resized.jpg", imagegen.recompressed_copy(original, scale=0.5, quality=60)))
    card = page.locator("ol.matches > li").first
    # The engine's own words for a copy by its whole-image hash (matching.rule, clause "pdq").
    expect(card.locator(".explanation")).to_contain_text("The same picture, re-saved or resized")
    expect(card.locator(".overlay")).to_have_count(0)  # no geometry: nothing to outline
    expect(card.get_by_role("button", name="Show matched keypoints")).to_have_count(0)
    card.get_by_role("button", name="Show differences").click()
    difference = card.locator(".difference")
    expect(difference.locator("canvas.heat")).to_be_visible()
    assert float(difference.get_attribute("data-differing")) < 0.1
    keep(desk, "compare-difference-stage1")
    # A different photo stretched over it differs almost everywhere: the view can fail.
    page.get_by_label("Suspected image").set_input_files(
        jpeg_file("other.jpg", imagegen.jpeg(72)))
    expect(page.locator("#compare-summary")).to_contain_text("No registration matches")


def test_verify_with_a_copy_instead_of_the_registered_file_leads_to_the_comparison(
        desk, registered):
    server = desk.server
    status, proof = server.request(
        "GET", f"/v1/registrations/{registered['reg']['id']}/proof", key=server.staff)
    assert status == 200
    desk.sign_in()
    page = desk.page
    page.get_by_role("tab", name="Verify a proof").click()
    page.get_by_label("Or paste the proof bundle").fill(json.dumps(proof))
    page.get_by_label("Photo (optional)").set_input_files(
        jpeg_file("listing.jpg", registered["suspect"]))
    page.locator("#verify-form").get_by_role("button", name="Verify").click()
    expect(page.locator("#verify-result .verdict.bad").first).to_contain_text("image check failed")
    summary = page.locator("#verify-compare-summary")
    expect(summary).to_contain_text("Yes: it is a copy of it")
    figure = page.locator("#verify-compare .pair figure").nth(1)
    expect(figure.locator(".overlay .outline")).to_be_attached()
    figure.locator("img").evaluate("img => img.decode()")
    corners, box = outline_on_screen(page, figure)
    k = box["width"] / ORIGINAL_SIZE[0]
    for (x, y), (tx, ty) in zip(corners, registered["corners"], strict=True):
        assert abs(x - (box["x"] + tx * k)) < 3 and abs(y - (box["y"] + ty * k)) < 3
    page.locator("#verify-compare").scroll_into_view_if_needed()
    keep(desk, "verify-leads-to-compare")
    # The registered file itself: no comparison needed, none shown.
    page.get_by_label("Photo (optional)").set_input_files(
        jpeg_file("original.jpg", registered["original"]))
    page.locator("#verify-form").get_by_role("button", name="Verify").click()
    expect(page.locator("#verify-result .verdict.good")).to_be_visible()
    expect(page.locator("#verify-compare")).to_have_count(0)


# -- the dispute file ---------------------------------------------------------------------
def _open_offline(chromium: Any, path: Path) -> tuple[Any, Any, list[str]]:
    """`path` in a browser with the network off; the URLs it asked for."""
    context = chromium.new_context(offline=True, viewport={"width": 1100, "height": 900})
    asked: list[str] = []

    def only_the_file(route: Any) -> None:
        asked.append(route.request.url)
        if route.request.url == path.as_uri():
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    page.locator("#proof-check:not([data-state=running])").wait_for(timeout=20_000)
    assert not errors, errors
    return context, page, asked


def test_the_dispute_file_checks_its_proof_offline_and_fails_loudly_when_changed(
        desk, registered, chromium, tmp_path):
    server = desk.server
    reg_id = registered["reg"]["id"]
    status, body, content_type = dispute_file(server, reg_id, registered["suspect"])
    assert status == 200, body[:500]
    assert content_type.startswith("text/html")
    path = tmp_path / "case.html"
    path.write_bytes(body)
    context, page, asked = _open_offline(chromium, path)
    try:
        check = page.locator("#proof-check")
        expect(check).to_have_attribute("data-state", "verified")
        expect(check.locator(".headline")).to_contain_text(f"registration {reg_id} by acme")
        # Every check but the image's: the format-2 proof has the seller check too.
        expect(check.locator("li.pass")).to_have_count(8)
        # Only the file itself and what it carries: no request left the page.
        assert asked == [path.as_uri()]
        # The two pictures are inside the file, and the outline is drawn on the original.
        for element in ("#suspect-image", "#registered-image"):
            image = page.locator(element)
            assert image.get_attribute("src").startswith("data:image/jpeg;base64,")
            assert image.evaluate("img => img.naturalWidth") > 0
        expect(page.locator(".overlay .outline")).to_be_attached()
        expect(page.locator("#explanation")).to_contain_text("turned 4.")
        expect(page.locator("body")).to_contain_text("No anchor covers this registration yet")
        page.screenshot(path=str(desk_artifact("dispute-file")), full_page=True)
        copy_for_docs("dispute-file")
    finally:
        context.close()

    # One byte of the proof changed: a digit of the leaf's file hash.
    proof_start = body.index(b'<pre id="proof-json">')
    at = body.index(registered["reg"]["sha256"].encode(), proof_start)
    digit = body[at:at + 1]
    tampered = body[:at] + (b"0" if digit != b"0" else b"1") + body[at + 1:]
    bad = tmp_path / "tampered.html"
    bad.write_bytes(tampered)
    context, page, _ = _open_offline(chromium, bad)
    try:
        check = page.locator("#proof-check")
        expect(check).to_have_attribute("data-state", "failed")
        expect(check.locator(".headline")).to_contain_text("NOT VERIFIED")
        expect(check.locator("li.fail").first).to_contain_text("FAILED")
        page.locator("#proof-check").scroll_into_view_if_needed()
        page.screenshot(path=str(desk_artifact("dispute-file-tampered")))
        copy_for_docs("dispute-file-tampered")
    finally:
        context.close()


def desk_artifact(name: str) -> Path:
    artifacts = ROOT / "test-artifacts" / "desk"
    artifacts.mkdir(parents=True, exist_ok=True)
    return artifacts / f"{name}.png"


def copy_for_docs(name: str) -> None:
    target = os.environ.get("SHOTSTAMP_SCREENSHOTS")
    if target:
        shutil.copy(desk_artifact(name), Path(target) / f"{name}.png")


def test_the_desk_button_downloads_the_dispute_file(desk, registered):
    desk.sign_in()
    page = desk.page
    page.get_by_label("Suspected image").set_input_files(
        jpeg_file("listing.jpg", registered["suspect"]))
    card = page.locator("ol.matches > li").first
    with page.expect_download(timeout=60_000) as download:
        card.get_by_role("button", name="Dispute file (HTML)").click()
    saved = download.value
    assert saved.suggested_filename == f"shotstamp-dispute-{registered['reg']['id']}.html"
    text = Path(saved.path()).read_text(encoding="utf-8")
    assert registered["reg"]["sha256"] in text and "listing.jpg" in text


def test_the_pdf_has_the_pages_and_pictures_of_the_page(desk, registered):
    server = desk.server
    status, body, content_type = dispute_file(
        server, registered["reg"]["id"], registered["suspect"], fmt="pdf")
    assert status == 200, body[:500]
    assert content_type == "application/pdf"
    reader = PdfReader(io.BytesIO(body))
    assert len(reader.pages) >= 3
    first = reader.pages[0].extract_text()
    assert registered["reg"]["id"] in first
    # NFKC: Chromium's fonts set "fi" as one ligature glyph
    text = unicodedata.normalize("NFKC", "".join(p.extract_text() for p in reader.pages))
    at = text.find("Checked in your browser")
    assert "Verified in this browser" in text, text[at:at + 600]  # Chromium ran the check
    assert "shotstamp verify proof.json" in text
    assert registered["reg"]["sha256"] in text.replace("\n", "")
    # the suspect, the registered image, and the drawn views (keypoints, differences)
    pictures = [image for page in reader.pages for image in page.images]
    assert len(reader.pages[0].images) >= 2
    assert len(pictures) >= 4
    sizes = sorted((i.image.width, i.image.height) for i in pictures[:2])
    assert all(w >= 100 and h >= 100 for w, h in sizes)


def test_dispute_files_are_for_staff_and_for_matches(desk, registered):
    server = desk.server
    reg_id = registered["reg"]["id"]
    status, body, _ = dispute_file(server, reg_id, registered["suspect"], key=server.acme)
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    status, body, _ = dispute_file(server, reg_id, imagegen.jpeg(99))
    assert status == 422 and json.loads(body)["error"] == "no_match"
    status, body, _ = dispute_file(server, "nosuchid", registered["suspect"])
    assert status == 404
    status, body, _ = dispute_file(server, "", registered["suspect"])
    assert status == 400 and json.loads(body)["error"] == "missing_field"


def test_without_chromium_a_pdf_is_a_clear_501(monkeypatch):
    monkeypatch.setenv(dispute.CHROMIUM_ENV, "/nonexistent/chromium")
    with pytest.raises(dispute.ApiError) as raised:
        dispute._chromium()
    assert raised.value.status == 501 and "no Chromium at /nonexistent/chromium" in str(
        raised.value)


def test_the_cli_saves_the_same_dispute_file_and_its_pdf(desk, registered, tmp_path):
    from tests.kit.processes import run

    server = desk.server
    suspect = tmp_path / "listing.jpg"
    suspect.write_bytes(registered["suspect"])
    env = {"SHOTSTAMP_URL": server.base, "SHOTSTAMP_API_KEY": server.staff}
    reg_id = registered["reg"]["id"]
    done = run("shotstamp", "evidence", reg_id, "--suspect", str(suspect),
               "-o", str(tmp_path / "case.html"), env=env)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "case.html").read_text(encoding="utf-8")
    assert '<pre id="proof-json">' in page and registered["reg"]["sha256"] in page
    assert "Suspect image (listing.jpg)" in page
    done = run("shotstamp", "evidence", reg_id, "--suspect", str(suspect),
               "-o", str(tmp_path / "case.pdf"), env=env)
    assert done.returncode == 0, done.stderr
    assert len(PdfReader(tmp_path / "case.pdf").pages) >= 3
    # A seller key is refused, in words, with the service's exit status.
    done = run("shotstamp", "evidence", reg_id, "--suspect", str(suspect),
               "-o", str(tmp_path / "no.html"), env={**env, "SHOTSTAMP_API_KEY": server.acme})
    assert done.returncode == 4 and "staff key" in done.stderr
    assert not (tmp_path / "no.html").exists()


def test_every_anchor_is_listed_with_its_check_and_every_text_is_escaped():
    page = dispute.render_dispute_html(
        match={"registration_id": "R1", "verdict": "copy", "distances": {"pdq": 3},
               "explanation": "the same photo <b>re-encoded</b>"},
        registration={"id": "R1", "seller": "<script>alert(1)</script>", "sha256": "ab" * 32,
                      "received_at": "2026-01-01T00:00:00Z", "leaf_index": 0},
        suspect={"name": "x</script><script>alert(2)</script>.jpg", "sha256": "cd" * 32,
                 "bytes": 10},
        suspect_image=None, registered_image=None,
        bundle_text='{"leaf": {"seller": "</pre><script>alert(3)</script>"}}',
        vkeys=["log+01234567+AAAA"],
        anchors=[
            {"name": "tsa", "type": "rfc3161", "status": "verified", "tree_size": 9,
             "statement": "the root of tree 9 existed", "time": "2026-01-01T00:00:05Z",
             "authority": "CN=Test TSA", "checks": ["anchor-format", "tsa-signature"]},
            {"name": "chain", "type": "evm", "status": "skipped", "tree_size": 9,
             "reason": "give an RPC URL"},
        ],
        service_check={"verified": True, "checks": ["format", "inclusion"]},
        made_at="2026-01-01T00:00:10Z", service_url="https://stamp.example",
    )
    assert "tsa (rfc3161): verified by the service when this file was made" in page
    assert "CN=Test TSA" in page and "anchor-format, tsa-signature" in page
    assert "chain (evm): not checked by the service" in page and "give an RPC URL" in page
    assert "alert" in page and "<script>alert" not in page
    assert "<b>re-encoded" not in page
    # the match's JSON for the page's script cannot close its <script> element
    data = page.split('id="match-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["explanation"] == "the same photo <b>re-encoded</b>"
