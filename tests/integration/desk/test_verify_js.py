"""The desk's verify.js against the SDK, run in the real browser.

verify.js is a second implementation of `shotstamp.verify_proof`; these tests
hold it to the first. Each corruption of a real proof is verified by both,
and both must name the same failing check (or both accept it); canonical
JSON and base64 are compared on inputs chosen to trip a careless port.
Then the fallbacks: a browser without Ed25519 asks the service for the
signature, and a page without WebCrypto asks it for everything, saying so.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from shotstamp import VerificationError, verify_proof
from shotstamp._canonical import canonical_json
from shotstamp._checkpoint import NoteSignature, NoteSigner, SignedNote
from shotstamp._verify import CHECKS, TRUSTED_CHECKS
from shotstamp_service.log.signer import load_or_create_key, read_key
from tests.kit import TESTDATA, imagegen

MODULE = "/desk/verify.js"


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _sdk(text: str, vkeys: list[str], image: bytes | None) -> dict[str, Any]:
    try:
        result = verify_proof(text, keys=vkeys, image=image)
    except VerificationError as exc:
        return {"failed": exc.check, "passed": None}
    return {"failed": None, "passed": list(result.checks)}


def _js_verify(
    page: Any, cases: list[dict[str, Any]], vkeys: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run verify.js's verifyBundle on each case in the page, with the service's keys
    (or `vkeys`)."""
    return page.evaluate(
        """async ({module, cases, vkeys}) => {
            const m = await import(module);
            const listed = vkeys ?? (await (await fetch("/v1/keys")).json()).keys
                .map((k) => k.vkey);
            const keys = await Promise.all(listed.map((k) => m.parseVkey(k)));
            const out = [];
            for (const c of cases) {
                const image = c.image === null ? null
                    : Uint8Array.from(atob(c.image), (ch) => ch.charCodeAt(0));
                const o = await m.verifyBundle(c.text, {keys, image});
                out.push({
                    failed: o.failed,
                    passed: o.verified ? o.checks.filter((x) => x.status === "pass")
                                                  .map((x) => x.name) : null,
                    unchecked: o.unchecked,
                });
            }
            return out;
        }""",
        {"module": MODULE, "cases": cases, "vkeys": vkeys},
    )


@pytest.fixture(scope="module")
def corpus(
    desk_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[tuple[str, str, bytes | None]], list[str]]:
    """(label, bundle text, image) for a real proof and over a hundred variations of it."""
    server = desk_server
    # Earlier leaves give the proof a real path (it is against the first
    # checkpoint holding the leaf: index 5 of 6 has a path of 2 hashes).
    for extra in range(5):
        server.register(server.globex, imagegen.jpeg(800 + extra))
    photo = imagegen.jpeg(80)
    proof = server.register(server.acme, photo)["proof"]
    vkeys = server.vkeys()
    note = SignedNote.from_text(proof["checkpoint"])
    origin, size_line, root_line, *extensions = note.text[:-1].split("\n")
    # The log's own key, from its data directory: to sign checkpoint bodies
    # that are wrong in ways only a signed note can be.
    (key_file,) = (server.data / "keys").glob("signing-*.key")
    signer = NoteSigner(origin, read_key(key_file))

    def signed(*lines: str) -> str:
        return signer.sign("".join(line + "\n" for line in lines)).to_text()

    def raw_signed(text: str) -> str:
        # A signature over text NoteSigner would refuse to sign.
        sig = signer._private_key.sign(text.encode())
        line = base64.b64encode(signer.key_hash + sig).decode()
        return f"{text}\n— {origin} {line}\n"

    cases: list[tuple[str, Any, bytes | None]] = []

    def add(label: str, bundle: Any, image: bytes | None = None) -> None:
        cases.append((label, bundle, image))

    def variant(label: str, **changes: Any) -> None:
        bundle = copy.deepcopy(proof)
        for key, value in changes.items():
            if value is _DROP:
                bundle.pop(key, None)
            else:
                bundle[key] = value
        add(label, bundle)

    def leaf_variant(label: str, **changes: Any) -> None:
        leaf = copy.deepcopy(proof["leaf"])
        for key, value in changes.items():
            if value is _DROP:
                leaf.pop(key, None)
            else:
                leaf[key] = value
        variant(label, leaf=leaf)

    text = json.dumps(proof)
    add("good", proof)
    add("good with the photo", proof, photo)
    add("another photo", proof, imagegen.jpeg(81))
    add("good, indented, BOM-free", json.dumps(proof, indent=2))
    add("good, non-ASCII kept", json.dumps(proof, ensure_ascii=False))
    variant("no leaf_hash", leaf_hash=_DROP)
    variant("leaf_hash null", leaf_hash=None)
    variant("unknown extra field", note_to_staff="hello")
    for bad in ("{", "[]", "null", '"text"', "", "{} {}", text + "x"):
        add(f"not a bundle: {bad[:12]!r}", bad)
    for field in ("format", "leaf", "leaf_index", "tree_size", "inclusion_path", "checkpoint"):
        variant(f"missing {field}", **{field: _DROP})
    variant("format v2", format="shotstamp-proof/2")
    variant("format number", format=1)
    for value in (-1, "1", True, None, 2**64, proof["leaf_index"] + 1, proof["leaf_index"] - 1):
        variant(f"leaf_index {value!r}", leaf_index=value)
    for value in (0, proof["tree_size"] * 2, proof["tree_size"] + 1, 2**70):
        variant(f"tree_size {value!r}", tree_size=value)
    add(
        "leaf_index as 3.0",
        text.replace(f'"leaf_index": {proof["leaf_index"]}', '"leaf_index": 3.0'),
    )
    add("tree_size as 1e1", text.replace(f'"tree_size": {proof["tree_size"]}', '"tree_size": 1e1'))
    add("tree_size as -0", text.replace(f'"tree_size": {proof["tree_size"]}', '"tree_size": -0'))
    add(
        "duplicate key",
        text.replace('"leaf_index":', f'"leaf_index": {proof["leaf_index"]}, "leaf_index":', 1),
    )
    path = proof["inclusion_path"]
    assert len(path) >= 2
    variant("path not a list", inclusion_path="abc")
    variant("path uppercase", inclusion_path=[path[0].upper(), *path[1:]])
    variant("path short element", inclusion_path=[path[0][:-2], *path[1:]])
    variant("path extra element", inclusion_path=[*path, path[0]])
    variant("path missing element", inclusion_path=path[:-1])
    variant("path reversed", inclusion_path=path[::-1])
    variant("path empty", inclusion_path=[])
    for i in range(len(path)):
        for bit in (0, 255):
            flipped = list(path)
            flipped[i] = f"{int(path[i], 16) ^ (1 << bit):064x}"
            variant(f"path[{i}] bit {bit}", inclusion_path=flipped)
    variant("leaf_hash flipped", leaf_hash=f"{int(proof['leaf_hash'], 16) ^ 1:064x}")
    variant("leaf_hash uppercase", leaf_hash=proof["leaf_hash"].upper())
    variant("leaf a list", leaf=[1, 2])
    for field in ("id", "seller", "sha256", "perceptual", "received_at"):
        leaf_variant(f"leaf without {field}", **{field: _DROP})
    leaf_variant("leaf extra field", title="Blue kettle")
    leaf_variant("leaf __proto__ field", __proto__="x")
    leaf_variant("empty id", id="")
    leaf_variant("seller number", seller=5)
    leaf_variant("seller renamed", seller="thief")
    leaf_variant("seller astral", seller="acme 😀 ☃ Ω é")
    leaf_variant("sha256 uppercase", sha256=proof["leaf"]["sha256"].upper())
    leaf_variant("sha256 changed", sha256="0" * 64)
    leaf_variant("perceptual empty", perceptual={})
    leaf_variant("perceptual odd hex", perceptual={"phash": "abc"})
    leaf_variant("perceptual empty hex", perceptual={"phash": ""})
    leaf_variant("perceptual number", perceptual={"phash": 5})
    leaf_variant("perceptual list", perceptual=["ab"])
    for moment in (
        "2024-02-30T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T23:59:60Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+23:59",
        "2024-01-01T00:00:00+23:60",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00.1234567Z",
        "0000-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
    ):
        leaf_variant(f"received_at {moment}", received_at=moment)
    # Format 2: the seller and salt beside the leaf open its seller_commitment.
    assert proof["format"] == "shotstamp-proof/2"
    salt = proof["seller_salt"]
    variant("seller salt flipped", seller_salt=f"{int(salt, 16) ^ 1:064x}")
    variant("seller salt of another registration", seller_salt="ab" * 32)
    variant("seller salt missing", seller_salt=_DROP)
    variant("seller salt short", seller_salt=salt[:-2])
    variant("seller salt uppercase", seller_salt=salt.upper())
    variant("seller missing", seller=_DROP)
    variant("seller beside the leaf renamed", seller="thief")
    variant("seller beside the leaf empty", seller="")
    variant("seller beside the leaf a number", seller=7)
    variant("format 1 with a salt", format="shotstamp-proof/1")
    leaf_variant("seller_commitment changed", seller_commitment="0" * 64)
    leaf_variant("seller_commitment uppercase", seller_commitment=salt.upper())
    leaf_variant("seller named in a format 2 leaf", seller="acme")
    add(
        "lone surrogate in seller",
        text.replace('"seller": "acme"', '"seller": "acme\\ud800"'),
    )
    add(
        "escaped seller spelled differently",
        text.replace('"seller": "acme"', '"seller": "\\u0061cme"'),
    )

    # Checkpoint notes: envelopes first (signature checks), then signed bodies.
    cp = proof["checkpoint"]
    (sig_line,) = [line for line in cp.split("\n") if line.startswith("— ")]
    other = NoteSigner(
        "other.example/log", load_or_create_key(tmp_path_factory.mktemp("other") / "other.key")
    )
    foreign = other.sign(note.text).signatures[0].to_line()
    variant("origin edited", checkpoint=cp.replace(origin, origin + "x", 1))
    variant("no signature", checkpoint=note.text + "\n")
    variant("foreign signature only", checkpoint=note.text + "\n" + foreign)
    variant("foreign signature too", checkpoint=cp + foreign)
    variant("signature twice", checkpoint=cp + sig_line + "\n")
    variant("signature not base64", checkpoint=cp.replace(sig_line, sig_line[:-3] + "!!!"))
    variant("signature short", checkpoint=note.text + "\n— " + origin + " AAAAAA==\n")
    variant("signature with extra padding", checkpoint=cp.replace(sig_line, sig_line + "="))
    variant("no blank line", checkpoint=cp.replace("\n\n", "\n"))
    variant("control character", checkpoint=cp.replace(origin, origin + "\x07", 1))
    variant("no final newline", checkpoint=cp[:-1])
    variant("key name with a space", checkpoint=cp.replace(f"— {origin} ", f"— {origin}\u3000x "))
    variant("signature line without em dash", checkpoint=cp.replace("— ", "- "))
    timestamp = [e for e in extensions if e.startswith("Timestamp: ")]
    variant(
        "signed: origin differs", checkpoint=signed("other/log", size_line, root_line, *extensions)
    )
    variant(
        "signed: size differs",
        checkpoint=signed(origin, str(int(size_line) + 1), root_line, *extensions),
    )
    variant("signed: size 07", checkpoint=signed(origin, "0" + size_line, root_line, *extensions))
    variant("signed: size 2^64", checkpoint=signed(origin, str(2**64), root_line, *extensions))
    variant("signed: no timestamp", checkpoint=signed(origin, size_line, root_line))
    variant(
        "signed: two timestamps",
        checkpoint=signed(origin, size_line, root_line, *timestamp, *timestamp),
    )
    variant(
        "signed: timestamp 01", checkpoint=signed(origin, size_line, root_line, "Timestamp: 01")
    )
    variant(
        "signed: timestamp colon only",
        checkpoint=signed(origin, size_line, root_line, "Timestamp:5"),
    )
    variant(
        "signed: timestamp far",
        checkpoint=signed(origin, size_line, root_line, f"Timestamp: {10**30}"),
    )
    variant(
        "signed: other extension",
        checkpoint=signed(origin, size_line, root_line, "Anchor: x", *extensions),
    )
    wrong_root = base64.b64encode(bytes(32)).decode()
    variant("signed: other root", checkpoint=signed(origin, size_line, wrong_root, *extensions))
    # 32 bytes in base64 leave 2 spare bits in the last digit: set one.
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    loose = root_line[:42] + digits[digits.index(root_line[42]) | 1] + "="
    assert loose != root_line and base64.b64decode(loose) == base64.b64decode(root_line)
    variant("signed: non-canonical root", checkpoint=signed(origin, size_line, loose, *extensions))
    variant("signed: short root", checkpoint=signed(origin, size_line, root_line[:-4], *extensions))
    variant("signed: root missing", checkpoint=signed(origin, size_line))
    variant(
        "signed: blank line in text",
        checkpoint=raw_signed(f"{origin}\n\n{size_line}\n{root_line}\n"),
    )

    out = []
    for label, bundle, image in cases:
        out.append((label, bundle if isinstance(bundle, str) else json.dumps(bundle), image))
    return out, vkeys


_DROP = object()


def test_verify_js_names_the_same_failing_check_as_the_sdk(desk, corpus):
    cases, vkeys = corpus
    assert len(cases) > 100
    desk.open()
    js = _js_verify(
        desk.page,
        [
            {"text": text, "image": None if image is None else base64.b64encode(image).decode()}
            for _, text, image in cases
        ],
    )
    disagreements = []
    outcomes = set()
    for (label, text, image), got in zip(cases, js, strict=True):
        want = _sdk(text, vkeys, image)
        outcomes.add(want["failed"])
        if (got["failed"], got["passed"]) != (want["failed"], want["passed"]):
            disagreements.append((label, want, got))
    assert not disagreements, "\n".join(
        f"{label}: SDK {w}, page {g}" for label, w, g in disagreements
    )
    # The corpus reaches every check, and some cases verify. (The page has no
    # trusted checkpoint to check against: those checks are the SDK's and CLI's.)
    assert outcomes == {None, *(set(CHECKS) - set(TRUSTED_CHECKS))}


def test_verify_js_verifies_format_1_bundles_as_the_sdk_does(desk):
    """A bundle made before leaf version 2 (tests/testdata/proof_v1.json) still verifies."""
    fixture = json.loads((TESTDATA / "proof_v1.json").read_text())
    bundle, vkeys = fixture["bundle"], fixture["vkeys"]
    photo = imagegen.jpeg(fixture["photo_seed"])
    renamed = copy.deepcopy(bundle)
    renamed["leaf"]["seller"] = "thief"
    salted = {**bundle, "seller": "acme-shop", "seller_salt": "00" * 32}
    cases = [(bundle, None), (bundle, photo), (renamed, None), (salted, None)]
    desk.open()
    js = _js_verify(
        desk.page,
        [
            {"text": json.dumps(b), "image": None if i is None else base64.b64encode(i).decode()}
            for b, i in cases
        ],
        vkeys,
    )
    sdk = [_sdk(json.dumps(b), vkeys, i) for b, i in cases]
    assert [(g["failed"], g["passed"]) for g in js] == [(s["failed"], s["passed"]) for s in sdk]
    assert [s["failed"] for s in sdk] == [None, None, "leaf-hash", "format"]
    assert "image" in sdk[1]["passed"] and "seller" not in sdk[0]["passed"]
    assert all(g["unchecked"] is None for g in js[:2])


CANONICAL_VALUES: list[Any] = [
    "",
    "plain",
    '"quoted" and \\ backslashed',
    "\b\f\n\r\t",
    "".join(chr(c) for c in range(0x20)),
    "\x7f DEL stays raw",
    "\u2028\u2029 line separators stay raw",
    "é Ω ☃ 😀 \ue000 \uffff",
    "</script><!--",
    {"\ue000": 1, "😀": 2, "a": 3, "A": 4, "": 5, "é": 6, "__proto__": 7, "10": 8, "9": 9},
    {"b": [1, None, True, False, {"z": "", "y": []}], "a": {}},
    [0, -1, 2**53 - 1, -(2**53 - 1)],
    {
        "id": "01JD00000000000000000000",
        "seller": 'Ünïcødé "quotes" \\ 😀\u2028',
        "sha256": "ab" * 32,
        "perceptual": {"phash": "00ff" * 4, "dhash": "", "😀": "aa"},
        "received_at": "2024-01-01T00:00:00.000000Z",
    },
]


def test_canonical_json_matches_the_sdk_on_tricky_values(desk):
    desk.open()
    texts = [json.dumps(v, ensure_ascii=ascii) for v in CANONICAL_VALUES for ascii in (True, False)]
    got = desk.page.evaluate(
        """async ({module, texts}) => {
            const m = await import(module);
            return Promise.all(texts.map(async (t) => {
                const c = m.canonicalJSON(m.parseJSON(t));
                return [c, m.toHex(await m.leafHash(m.utf8(c)))];
            }));
        }""",
        {"module": MODULE, "texts": texts},
    )
    from shotstamp._merkle import leaf_hash

    for text, (canonical, hashed) in zip(texts, got, strict=True):
        want = canonical_json(json.loads(text))
        assert canonical == want.decode("utf-8"), text
        assert hashed == leaf_hash(want).hex(), text

    # What the SDK refuses, the page refuses.
    refused = ['"\\ud800"', '{"a": "x\\udc00y"}', "1.5", "1e2", str(2**53), str(-(2**53))]
    for text in refused:
        with pytest.raises((TypeError, ValueError)):
            canonical_json(json.loads(text))
    errors = desk.page.evaluate(
        """async ({module, texts}) => {
            const m = await import(module);
            return texts.map((t) => {
                try { m.canonicalJSON(m.parseJSON(t)); return null; }
                catch (err) { return err.message; }
            });
        }""",
        {"module": MODULE, "texts": refused},
    )
    assert all(errors), list(zip(refused, errors, strict=True))


def test_base64_reads_exactly_what_the_sdk_reads(desk):
    samples = [
        "",
        "QQ",
        "QQ=",
        "QQ==",
        "QR==",
        "QUE",
        "QUE=",
        "QUE==",
        "QUFB",
        "QUFB=",
        "QUFB==",
        "Q",
        "Q===",
        "QUFBQ",
        "QUFBQQ==",
        "====",
        "=",
        "QU FB",
        "QUFB\n",
        "QU=B",
        "-_8=",
        "////",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ]
    desk.open()
    got = desk.page.evaluate(
        """async ({module, samples}) => {
            const m = await import(module);
            return samples.map((s) => {
                const b = m.b64decode(s);
                return b === null ? null : m.toHex(b);
            });
        }""",
        {"module": MODULE, "samples": samples},
    )
    for sample, value in zip(samples, got, strict=True):
        try:
            want = base64.b64decode(sample.encode("ascii"), validate=True).hex()
        except ValueError:
            want = None
        assert value == want, sample


# -- fallbacks ------------------------------------------------------------------------
NO_ED25519 = """
(() => {
  const importKey = SubtleCrypto.prototype.importKey;
  SubtleCrypto.prototype.importKey = function (format, key, algorithm, ...rest) {
    const name = typeof algorithm === "string" ? algorithm : algorithm && algorithm.name;
    if (name === "Ed25519") {
      return Promise.reject(new DOMException("Ed25519 is not supported", "NotSupportedError"));
    }
    return importKey.call(this, format, key, algorithm, ...rest);
  };
})();
"""
NO_WEBCRYPTO = """
Object.defineProperty(Crypto.prototype, "subtle", { get() { return undefined; } });
"""


def _verify(desk: Any, bundle: Any, image: bytes | None = None) -> Any:
    page = desk.page
    page.get_by_role("tab", name="Verify a proof").click()
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Or paste the proof bundle").fill(json.dumps(bundle))
    if image is not None:
        page.get_by_label("Photo (optional)").set_input_files(
            {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": image}
        )
    page.locator("#verify-form").get_by_role("button", name="Verify").click()
    result = page.locator("#verify-result .verification")
    expect(result).to_be_visible()
    rows = result.locator("ol.checks > li")
    return result, {
        rows.nth(i).get_attribute("data-check"): (
            rows.nth(i).get_attribute("data-status"),
            rows.nth(i).get_attribute("data-by"),
        )
        for i in range(rows.count())
    }


def test_without_ed25519_the_signature_is_verified_by_the_service_and_says_so(desk):
    server = desk.server
    photo = imagegen.jpeg(82)
    proof = server.register(server.acme, photo)["proof"]
    desk.page.context.add_init_script(NO_ED25519)
    desk.sign_in()
    probe = "async () => (await import('/desk/verify.js')).browserHasEd25519(new Uint8Array(32))"
    assert desk.page.evaluate(probe) is False

    result, rows = _verify(desk, proof, photo)
    assert rows.pop("checkpoint-signature") == ("pass", "service")
    assert all(v == ("pass", "browser") for v in rows.values()), rows
    expect(result.locator('li[data-check="checkpoint-signature"]')).to_contain_text(
        "verified by the service"
    )
    expect(result.locator(".verdict")).to_contain_text("Verified: registration")
    expect(result).to_contain_text("This browser cannot check Ed25519 signatures here")
    desk.screenshot("verify-fallback-service-signature")

    note = SignedNote.from_text(proof["checkpoint"])
    (signature,) = note.signatures
    bad = NoteSignature(signature.name, signature.key_hash, bytes(64))
    tampered = dict(proof, checkpoint=SignedNote(note.text, (bad,)).to_text())
    result, rows = _verify(desk, tampered)
    assert rows["checkpoint-signature"] == ("fail", "service")
    expect(result.locator(".verdict")).to_have_attribute("data-failed", "checkpoint-signature")
    expect(result.locator(".verdict")).to_contain_text("invalid signature for key")

    # The latest checkpoint is shown, its signature honestly not checked here.
    desk.page.get_by_role("tab", name="Look up a registration").click()
    desk.page.get_by_label("Registration id").fill(proof["leaf"]["id"])
    desk.page.get_by_label("Registration id").press("Enter")
    expect(desk.page.locator("#latest-signature")).to_contain_text(
        "signature not checked: this browser cannot verify Ed25519 here"
    )


def test_without_webcrypto_every_check_is_the_services(desk):
    server = desk.server
    photo = imagegen.jpeg(83)
    proof = server.register(server.acme, photo)["proof"]
    desk.page.context.add_init_script(NO_WEBCRYPTO)
    desk.sign_in()
    assert desk.page.evaluate("Boolean(crypto.subtle)") is False

    result, rows = _verify(desk, proof, photo)
    assert rows.pop("image") == ("not-run", "browser")
    assert all(v == ("pass", "service") for v in rows.values()), rows
    verdict = result.locator(".verdict")
    expect(verdict).to_contain_text(f"Verified: registration {proof['leaf']['id']} by acme")
    expect(verdict).to_contain_text("The photo itself was not checked")

    tampered = copy.deepcopy(proof)
    tampered["seller"] = "thief"  # format 2: the seller sits beside the leaf's commitment
    result, rows = _verify(desk, tampered)
    assert rows["seller"] == ("fail", "service")
    assert rows["leaf-hash"] == ("not-run", "service")
    expect(result.locator(".verdict")).to_have_attribute("data-failed", "seller")
    desk.screenshot("verify-fallback-no-webcrypto")
