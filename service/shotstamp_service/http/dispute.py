"""Dispute files: one self-contained page (and its PDF) that anyone can check without us.

`POST /v1/desk/evidence` (staff) takes a registration id and the suspect image, compares
them as `/v1/checks` does, and answers with an HTML page holding the two pictures (data:
URIs), the match and its explanation, the registration's proof bundle, the log's public
keys, every anchor with the service's check of it, and how to check it all independently.
The page carries the desk's own `verify.js` and `evidence.js` inline and re-runs the proof
check in the reader's browser with no network. `?format=pdf` prints that page with
Chromium (through Playwright) for case systems; without them the answer is a 501.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from shotstamp._anchor_bundle import AnchorResult
from shotstamp._anchors import averify_anchors
from shotstamp._checkpoint import NoteVerifier
from shotstamp._exceptions import VerificationError
from shotstamp._verify import verify_proof
from shotstamp_service.http.desk import STATIC_DIR, require_staff
from shotstamp_service.http.errors import ApiError
from shotstamp_service.http.keys import CONFIG, REGISTRY, SIGNING_KEYS, STORE, UPLOAD_SLOTS
from shotstamp_service.http.routes import match_json, read_upload
from shotstamp_service.log.proofs import proof_bundle
from shotstamp_service.records import format_time, utc_now

__all__ = ["CHROMIUM_ENV", "render_dispute_html", "routes"]

routes = web.RouteTableDef()

CHROMIUM_ENV = "SHOTSTAMP_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# A PDF costs a Chromium start (~1 s of CPU): one at a time, staff wait their turn.
_PDF_SLOTS = asyncio.Semaphore(1)
# How long the page may take to run its proof check before it is printed anyway.
PDF_CHECK_TIMEOUT_MS = 20_000
ANCHOR_TIMEOUT = 10.0
_PRINT_URL = "https://dispute-file.invalid/"

_SCRIPTS = ("verify.js", "evidence.js")


def _script(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # Inlined in a <script> element: its text must not end that element early.
    if "</script" in text.lower():
        raise RuntimeError(f"{path.name} contains '</script' and cannot be inlined")
    return text


def _json_for_script(value: Any) -> str:
    """JSON that may sit inside a <script> element (no '<' to end it)."""
    return json.dumps(value, ensure_ascii=True).replace("<", "\\u003c")


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _image_mime(data: bytes) -> str | None:
    """The MIME type of an image a browser shows, from its first bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _anchor_json(result: AnchorResult) -> dict[str, Any]:
    out: dict[str, Any] = {"name": result.name, "type": result.type, "status": result.status}
    if result.tree_size is not None:
        out["tree_size"] = result.tree_size
    if result.statement:
        out["statement"] = result.statement
    if result.time is not None:
        out["time"] = format_time(result.time)
    if result.authority:
        out["authority"] = result.authority
    if result.checks:
        out["checks"] = list(result.checks)
    if result.error is not None:
        out["error"] = f"{result.error.check}: {result.error}"
    if result.reason:
        out["reason"] = result.reason
    return out


async def _check_anchors(
    request: web.Request, bundle: dict[str, Any], verifiers: list[NoteVerifier]
) -> list[dict[str, Any]]:
    """Each anchor of `bundle` as the SDK checks it, with what this service trusts."""
    if not bundle.get("anchors"):
        return []
    config = request.app[CONFIG]
    tsa = [config.tsa_ca_file] if config.tsa_ca_file is not None else None
    rpcs = [config.evm_rpc_url] if config.evm_rpc_url else []
    try:
        report = await averify_anchors(
            bundle, keys=verifiers, tsa_certs=tsa, chain_rpcs=rpcs, timeout=ANCHOR_TIMEOUT
        )
    except (VerificationError, ImportError) as exc:
        return [
            {"name": a.get("name", "?"), "type": a.get("type", "?"), "status": "failed",
             "error": str(exc)}
            for a in bundle["anchors"]
        ]
    return [_anchor_json(r) for r in report.results]


@routes.post("/v1/desk/evidence")
async def dispute_file(request: web.Request) -> web.Response:
    """The dispute file for one registration and a suspect image: HTML, or PDF."""
    who = await require_staff(request, "upload")  # it decodes and matches an image
    fmt = request.query.get("format", "html")
    if fmt not in ("html", "pdf"):
        raise ApiError(400, "invalid_parameter", "format must be html or pdf")
    if fmt == "pdf":
        chromium = _chromium()  # before the work: a 501 should come at once
    async with request.app[UPLOAD_SLOTS]:
        image, fields = await read_upload(request, ("registration_id", "suspect_name"))
        registration_id = fields.get("registration_id", "").strip()
        if not registration_id:
            raise ApiError(
                400, "missing_field", "give registration_id, the registration to compare with"
            )
        store = request.app[STORE]
        reg = await store.get_registration(registration_id)
        if reg is None:
            raise ApiError(404, "not_found", f"no registration {registration_id}")
        if not reg.sealed:
            raise ApiError(
                409, "not_sealed", f"registration {reg.id} is not sealed yet; retry in a second"
            )
        fp, suspect_thumb, matches = await request.app[REGISTRY].check_with_thumbnail(image)
    match = next((m for m in matches if m.registration.id == reg.id), None)
    if match is None:
        raise ApiError(
            422,
            "no_match",
            f"the image is neither a copy of registration {reg.id} nor similar to it: "
            "there is no match to put in a dispute file",
        )
    bundle = await proof_bundle(store, reg)
    bundle_text = json.dumps(bundle, indent=2)
    records = await request.app[SIGNING_KEYS].records()
    verifiers = [NoteVerifier(k.name, k.public_key) for k in records]
    try:
        verified = verify_proof(bundle_text, keys=verifiers)
        service_check = {"verified": True, "checks": list(verified.checks)}
    except VerificationError as exc:  # never for a bundle just made; said if it happens
        service_check = {"verified": False, "failed": exc.check, "message": str(exc)}
    match_body = match_json(request, match, who)
    registered_thumb = await store.get_thumbnail(reg.seq)
    suspect_picture = suspect_thumb if suspect_thumb is not None else (
        image if _image_mime(image) else None)
    page = render_dispute_html(
        match=match_body,
        registration={
            "id": reg.id, "seller": reg.seller, "sha256": reg.sha256,
            "received_at": reg.received_at, "leaf_index": reg.leaf_index,
            "width": reg.width, "height": reg.height,
        },
        suspect={
            "name": fields.get("suspect_name") or "the suspect image",
            "sha256": fp.sha256, "bytes": len(image),
        },
        suspect_image=suspect_picture,
        registered_image=registered_thumb,
        bundle_text=bundle_text,
        vkeys=[k.vkey for k in verifiers],
        anchors=await _check_anchors(request, bundle, verifiers),
        service_check=service_check,
        made_at=format_time(utc_now()),
        service_url=f"{request.scheme}://{request.host}",
    )
    name = f"shotstamp-dispute-{reg.id}"
    if fmt == "pdf":
        pdf = await _print_pdf(page, chromium)
        return web.Response(
            body=pdf, content_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
        )
    return web.Response(
        text=page, content_type="text/html", charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.html"',
                 "X-Content-Type-Options": "nosniff"},
    )


def _chromium() -> str:
    """The Chromium to print with, or a 501 saying what is missing."""
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        raise ApiError(
            501, "pdf_unavailable",
            "this service cannot print PDFs: the 'playwright' package is not installed; "
            "ask for the HTML dispute file (without ?format=pdf) and print it from a browser",
        ) from exc
    if not (Path(path).exists() or shutil.which(path)):
        raise ApiError(
            501, "pdf_unavailable",
            f"this service cannot print PDFs: no Chromium at {path} (set {CHROMIUM_ENV}); "
            "ask for the HTML dispute file and print it from a browser",
        )
    return path


async def _print_pdf(page_html: str, chromium: str) -> bytes:
    """The page printed by Chromium, after its in-page proof check has run; no network."""
    from playwright.async_api import async_playwright

    async with _PDF_SLOTS, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = await browser.new_context()
            page = await context.new_page()

            async def only_the_page(route: Any) -> None:
                if route.request.url == _PRINT_URL:
                    await route.fulfill(status=200, content_type="text/html; charset=utf-8",
                                        body=page_html)
                else:
                    await route.abort()

            # The page is served from an https URL answered here (WebCrypto needs a secure
            # context, which about:blank is not); every other request is refused.
            await page.route("**/*", only_the_page)
            await page.goto(_PRINT_URL, wait_until="load")
            # printed anyway if it times out: the page then says the check did not finish
            with contextlib.suppress(Exception):
                await page.wait_for_selector(
                    "#proof-check:not([data-state=running])", timeout=PDF_CHECK_TIMEOUT_MS
                )
            await page.emulate_media(media="print")
            return await page.pdf(format="A4", print_background=True,
                                  margin={"top": "14mm", "bottom": "14mm",
                                          "left": "12mm", "right": "12mm"})
        finally:
            await browser.close()


# -- the page ---------------------------------------------------------------------
DISPUTE_DIR = STATIC_DIR.parent / "dispute"


def _static_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")



def _rows(pairs: list[tuple[str, Any]]) -> str:
    out = []
    for term, value in pairs:
        if value is None or value == "":
            continue
        out.append(f"<tr><th>{html.escape(term)}</th><td>{value}</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _anchor_html(anchor: dict[str, Any]) -> str:
    status = anchor.get("status", "?")
    words = {
        "verified": "verified by the service when this file was made",
        "failed": "FAILED the service's check",
        "skipped": "not checked by the service",
        "unavailable": "could not be checked (the chain could not be asked)",
    }.get(status, status)
    return (
        f'<div class="anchor {_esc(status)}"><h3>{_esc(anchor.get("name"))} '
        f'({_esc(anchor.get("type"))}): {_esc(words)}</h3>'
        + _rows([
            ("What it proves", _esc(anchor["statement"]) if "statement" in anchor else None),
            ("Time", _esc(anchor["time"]) if "time" in anchor else None),
            ("Authority", _esc(anchor["authority"]) if "authority" in anchor else None),
            ("Anchored tree size", _esc(anchor["tree_size"]) if "tree_size" in anchor else None),
            ("Checks passed", _esc(", ".join(anchor.get("checks", []))) or None),
            ("Failure", _esc(anchor["error"]) if "error" in anchor else None),
            ("Why not checked", _esc(anchor["reason"]) if "reason" in anchor else None),
        ])
        + "</div>"
    )


def render_dispute_html(
    *,
    match: dict[str, Any],
    registration: dict[str, Any],
    suspect: dict[str, Any],
    suspect_image: bytes | None,
    registered_image: bytes | None,
    bundle_text: str,
    vkeys: list[str],
    anchors: list[dict[str, Any]],
    service_check: dict[str, Any],
    made_at: str,
    service_url: str,
) -> str:
    """The dispute file: everything inline, every text escaped, scripts from the desk."""
    reg_id = _esc(registration["id"])
    verdict = match.get("verdict", "copy")
    exact = match.get("exact", False)
    headline = (
        "The suspect image is the registered file itself" if exact
        else f"The suspect image is a {'copy of' if verdict == 'copy' else 'photo similar to'} "
        f"registration {registration['id']}"
    )
    picture = ""
    for element_id, data, caption in (
        ("suspect-image", suspect_image, f"Suspect image ({suspect['name']})"),
        ("registered-image", registered_image,
         f"Registered image {registration['id']} (the service's thumbnail)"
         + (", the suspect outlined" if match.get("geometry") else "")),
    ):
        mime = _image_mime(data) if data else None
        body = (f'<img id="{element_id}" src="{_data_uri(data, mime)}" alt="{_esc(caption)}">'
                if data and mime else '<p class="muted">(no picture kept)</p>')
        picture += f"<figure>{body}<figcaption>{_esc(caption)}</figcaption></figure>"
    distances = ", ".join(f"{k} {v}" for k, v in match.get("distances", {}).items())
    geometry = match.get("geometry")
    alignment = (
        f"{_esc(geometry['model'])} transform between the two 256-px analysis copies: turned "
        f"{_esc(geometry['rotation'])}°, scale {_esc(geometry['scale'])}, covering "
        f"{round(geometry['covered'] * 100)} % of the registered image; "
        f"{len(geometry['pairs'])} matched keypoint pairs drawn"
        if geometry else "none: matched as a whole picture by its perceptual hash"
    )
    service_line = (
        "passed every check: " + ", ".join(service_check["checks"])
        if service_check.get("verified")
        else f"FAILED the {service_check.get('failed')} check: {service_check.get('message')}"
    )
    scripts = "".join(
        f'<script type="text/plain" id="{name.replace(".", "-")}">{_script(STATIC_DIR / name)}'
        "</script>"
        for name in _SCRIPTS
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dispute file: registration {reg_id}</title>
<style>{_static_text(DISPUTE_DIR / "dispute.css")}</style>
</head>
<body>
<header>
<p class="muted">shotstamp dispute file · made {_esc(made_at)} by {_esc(service_url)}</p>
<h1>{_esc(headline)}</h1>
</header>

<h2>The finding</h2>
<p class="finding {_esc(verdict)}" id="explanation">{_esc(match.get("explanation") or headline)}
</p>
<div class="pair">{picture}</div>
<div id="keypoint-view"></div>
<div id="difference-view"></div>
{_rows([
    ("Verdict", _esc("copy: the very same file" if exact else verdict)),
    ("Alignment", alignment),
    ("Engine figures", _esc(distances)),
    ("Suspect file SHA-256", f"<code>{_esc(suspect['sha256'])}</code>"),
    ("Suspect file size", _esc(f"{suspect['bytes']:,} bytes")),
])}

<h2>The registration</h2>
{_rows([
    ("Registration", f"<code>{reg_id}</code>"),
    ("Seller", _esc(registration["seller"])),
    ("Registered at", _esc(registration["received_at"])),
    ("File SHA-256", f"<code>{_esc(registration['sha256'])}</code>"),
    ("Size", _esc(f"{registration['width']} × {registration['height']} px")
     if registration.get("width") else None),
    ("Leaf index in the log", _esc(registration["leaf_index"])),
])}

<h2>Is it in the log? Checked in your browser</h2>
<div id="proof-check" data-state="running" role="status">
<p class="headline">The check has not run: this viewer runs no JavaScript. Check the proof with
the command below.</p><ol></ol>
</div>
<p class="muted">When the service made this file, its copy of the proof {_esc(service_line)}.
The check above runs again in your browser, from the proof and keys printed in this file, with
no network.</p>

<h2>Anchors: outside witnesses of the log's state</h2>
{"".join(_anchor_html(a) for a in anchors) or
 '<p class="muted">No anchor covers this registration yet.</p>'}

<h2 class="newpage">How to check this file yourself</h2>
<p>Nothing here needs the shotstamp service. The proof bundle and the log's public keys are
printed below (<a class="download" id="proof-download">save the proof as proof.json</a>,
<a class="download" id="keys-download">the keys as keys.txt</a>).</p>
<h3>With the shotstamp command line</h3>
<pre>pip install shotstamp
shotstamp verify proof.json --key keys.txt --image ORIGINAL_FILE
# anchors too: --tsa-cert TSA_ROOT.pem --chain-rpc https://YOUR-ETHEREUM-NODE</pre>
<p>Exit status 0 means every check passed; otherwise the output names the failed check.
<code>--image</code> takes the registered file, if you hold it: its SHA-256 must be the
leaf's <code>sha256</code>.</p>
<h3>By hand, with RFC 9162 (Certificate Transparency 2.0) and C2SP signed notes</h3>
<ol>
<li><b>Leaf.</b> Serialise the bundle's <code>leaf</code> object as RFC 8785 canonical JSON
(UTF-8). Its leaf hash is SHA-256(0x00 ‖ those bytes) and must equal <code>leaf_hash</code>.
The leaf names the file's SHA-256, its perceptual hashes and the time the service received it,
and the seller: by name in format 1, in format 2 (<code>shotstamp-proof/2</code>) as
<code>seller_commitment</code>, which must equal SHA-256(<code>seller_salt</code> ‖ UTF-8
<code>seller</code>) from the bundle.</li>
<li><b>Inclusion.</b> Starting from the leaf hash, combine it with each hash of
<code>inclusion_path</code> in turn as RFC 9162 §2.1.3.2 describes for
<code>leaf_index</code> in a tree of <code>tree_size</code> leaves: an interior node is
SHA-256(0x01 ‖ left ‖ right). The result must be the root hash of the checkpoint.</li>
<li><b>Checkpoint.</b> <code>checkpoint</code> is a C2SP signed note
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint): its body is the log's origin, the tree size
and the base64 root hash, one per line. One of its signature lines must be a valid Ed25519
signature over the body by a key in the list below (the 4-byte key hash selects it).</li>
<li><b>Time.</b> The checkpoint's timestamp line, and each anchor's RFC 3161 token or chain
transaction over a later checkpoint (with the consistency proof in the bundle), says the
registration existed no later than that time.</li>
<li><b>Picture.</b> The registered file's SHA-256 is in the leaf; the comparison above is the
service's finding, shown so that people can see it. The log proves who registered which file
when, not that the images match.</li>
</ol>

<h2>The proof bundle</h2>
<pre id="proof-json">{_esc(bundle_text)}</pre>
<h2>The log's public keys (C2SP verifier keys)</h2>
<pre id="log-keys">{_esc(chr(10).join(vkeys))}</pre>
<p class="muted">Compare them with the keys the log publishes at {_esc(service_url)}/v1/keys,
or with a copy you obtained earlier.</p>

<script type="application/json" id="match-data">{_json_for_script(match)}</script>
{scripts}
<script type="module">{_script(DISPUTE_DIR / "boot.js")}</script>
</body>
</html>
"""
