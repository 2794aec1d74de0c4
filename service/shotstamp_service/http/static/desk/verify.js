// Proof verification in the browser: a port of the SDK's `shotstamp.verify`.
//
// Same checks, same names, same order as `verify_proof` (sdk/shotstamp/verify.py):
// format, checkpoint-signature, checkpoint-body, tree-size, leaf, seller, leaf-hash,
// inclusion, image. The SDK stops at the first failure; this runs every check
// whose inputs exist, so staff see everything that is wrong, and reports as
// `failed` the first failure in that order, which is the check the SDK names.
// Hashing and Ed25519 use WebCrypto. Where the browser cannot do Ed25519 (or
// has no WebCrypto at all: pages not served over HTTPS or from localhost) the
// caller's `serviceVerify` asks the service, and those checks say so.
//
// No DOM here: desk.js renders; tests import this module directly.

export const FORMAT = "shotstamp-proof/1";
// The leaf commits to the seller with a salt only the bundle carries (docs/security.md).
export const FORMAT_V2 = "shotstamp-proof/2";
export const FORMATS = [FORMAT, FORMAT_V2];
export const SALT_SIZE = 32;
export const CHECKS = [
  "format",
  "checkpoint-signature",
  "checkpoint-body",
  "tree-size",
  "leaf",
  "seller",
  "leaf-hash",
  "inclusion",
  "image",
];
export const LEAF_FIELDS = ["id", "seller", "sha256", "perceptual", "received_at"];
export const LEAF_FIELDS_V2 = ["id", "seller_commitment", "sha256", "perceptual", "received_at"];

const KNOWN_KEYS = ["format", "leaf", "leaf_index", "tree_size", "inclusion_path", "checkpoint", "leaf_hash", "seller", "seller_salt"];
const HEX_HASH = /^[0-9a-f]{64}$/;
const HEX = /^(?:[0-9a-f]{2})+$/;
const RFC3339 =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(Z|[+-]([0-9]{2}):([0-9]{2}))$/;
const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
const SIGNATURE_PREFIX = "\u2014 "; // em dash, space
const TIMESTAMP_PREFIX = "Timestamp: ";
const MAX_SIGNATURES = 100;
const MAX_TREE_SIZE = 2n ** 64n - 1n;
const MAX_TIMESTAMP_NS = 253402300800n * 10n ** 9n - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const ALG_ED25519 = 0x01;
// Python's str.isspace() set, which the SDK's key-name rule uses (JS \s differs).
const PY_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** A failed check, named as the SDK names it. */
export class CheckError extends Error {
  constructor(check, message) {
    super(message);
    this.check = check;
  }
}

// -- strict JSON ---------------------------------------------------------------

/** A number written with a fraction or exponent: Python's json reads it as a float. */
export class JsonFloat {
  constructor(text) {
    this.text = text;
    this.value = Number(text);
  }
}

/**
 * JSON.parse as the SDK's parser sees it: duplicate keys are refused (two
 * parsers keeping different copies would verify different bundles), integers
 * beyond 2^53 stay exact (BigInt), and 1.0 or 1e2 stay floats (JsonFloat).
 * Objects have no prototype, so a key "__proto__" is an ordinary key.
 */
// Sticky (y): matched at `lastIndex`, so parsing stays linear in the text.
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

export function parseJSON(text) {
  let at = 0;
  const fail = (why) => {
    throw new SyntaxError(`${why} at character ${at}`);
  };
  const ws = () => {
    while (at < text.length && " \t\n\r".includes(text[at])) at++;
  };
  const value = (depth) => {
    if (depth > 500) fail("nesting too deep");
    ws();
    const c = text[at];
    if (c === "{") return object(depth);
    if (c === "[") return array(depth);
    if (c === '"') return string();
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    for (const [word, result] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, at)) {
        at += word.length;
        return result;
      }
    }
    return fail("unexpected " + (c === undefined ? "end of text" : JSON.stringify(c)));
  };
  const object = (depth) => {
    const out = Object.create(null);
    at++;
    ws();
    if (text[at] === "}") {
      at++;
      return out;
    }
    for (;;) {
      ws();
      if (text[at] !== '"') fail("expected a key");
      const key = string();
      if (Object.hasOwn(out, key)) fail(`duplicate key ${JSON.stringify(key)}`);
      ws();
      if (text[at] !== ":") fail("expected ':'");
      at++;
      out[key] = value(depth + 1);
      ws();
      if (text[at] === ",") {
        at++;
        continue;
      }
      if (text[at] === "}") {
        at++;
        return out;
      }
      fail("expected ',' or '}'");
    }
  };
  const array = (depth) => {
    const out = [];
    at++;
    ws();
    if (text[at] === "]") {
      at++;
      return out;
    }
    for (;;) {
      out.push(value(depth + 1));
      ws();
      if (text[at] === ",") {
        at++;
        continue;
      }
      if (text[at] === "]") {
        at++;
        return out;
      }
      fail("expected ',' or ']'");
    }
  };
  const string = () => {
    // The grammar is JSON's; JSON.parse decodes the escapes exactly.
    STRING.lastIndex = at;
    const match = STRING.exec(text);
    if (!match) fail("invalid string");
    at += match[0].length;
    return JSON.parse(match[0]);
  };
  const number = () => {
    NUMBER.lastIndex = at;
    const match = NUMBER.exec(text);
    if (!match) fail("invalid number");
    at += match[0].length;
    if (match[1] !== undefined || match[2] !== undefined) return new JsonFloat(match[0]);
    const big = BigInt(match[0]);
    return big >= -MAX_SAFE && big <= MAX_SAFE ? Number(big) : big;
  };
  const result = value(0);
  ws();
  if (at !== text.length) fail("extra data");
  return result;
}

// -- RFC 8785 canonical JSON -------------------------------------------------------

/**
 * RFC 8785 (JCS) for the subset shotstamp emits, as `shotstamp.canonical`:
 * objects, arrays, strings, safe integers, booleans, null. Floats and lone
 * surrogates are refused, as the SDK refuses them.
 */
export function canonicalJSON(value) {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "number" || typeof value === "bigint") {
    if (typeof value === "number" && !Number.isInteger(value)) {
      throw new TypeError(`floats are not canonicalised, got ${value}`);
    }
    const big = BigInt(value);
    if (big < -MAX_SAFE || big > MAX_SAFE) {
      throw new RangeError(`integer ${big} is outside the JSON safe range`);
    }
    return big.toString();
  }
  if (value instanceof JsonFloat) throw new TypeError(`floats are not canonicalised, got ${value.text}`);
  if (typeof value === "string") {
    const lone = LONE_SURROGATE.exec(value);
    if (lone) {
      const code = lone[0].charCodeAt(0).toString(16).toUpperCase();
      throw new RangeError(`string contains a lone surrogate U+${code}`);
    }
    // ECMAScript's JSON.stringify is the string serialisation RFC 8785 specifies.
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJSON).join(",") + "]";
  if (typeof value === "object") {
    // The default sort compares UTF-16 code units, which is JCS's key order.
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => canonicalJSON(k) + ":" + canonicalJSON(value[k])).join(",") + "}";
  }
  throw new TypeError(`${typeof value} is not a JSON value`);
}

// -- bytes, hex, base64, hashing --------------------------------------------------

const encoder = new TextEncoder();

export function utf8(text) {
  return encoder.encode(text);
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Standard base64 as Python's `base64.b64decode(validate=True)` reads it
 * (what the SDK uses): alphabet checked, padding required, excess `=` after a
 * whole quantum tolerated. Returns null where Python raises.
 */
export function b64decode(text) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  const data = text.replace(/=+$/, "");
  const pad = text.length - data.length;
  const rest = data.length % 4;
  if (data.length === 0 && pad > 0) return null;
  if (rest === 1 || (rest === 2 && pad !== 2) || (rest === 3 && pad !== 1)) return null;
  const full = data + "=".repeat((4 - rest) % 4);
  const raw = atob(full);
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

export function b64encode(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// RFC 9162 section 2.1.1 domain separation.
export async function leafHash(data) {
  return sha256(concat(Uint8Array.of(0x00), data));
}

export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(0x01), left, right));
}

// -- RFC 9162 inclusion (port of transparency-dev/merkle, as shotstamp.merkle) ------

function bitLength(n) {
  return n === 0n ? 0 : n.toString(2).length;
}

function popCount(n) {
  return [...n.toString(2)].filter((b) => b === "1").length;
}

/**
 * The root `proof` leads to from `leaf` at `index` in a tree of `size`, and
 * each step taken (for display). Throws CheckError("inclusion") for a proof
 * of the wrong shape.
 */
export async function rootFromInclusionProof(index, size, leaf, proof) {
  if (index >= size) throw new CheckError("inclusion", `index is beyond size: ${index} >= ${size}`);
  const inner = bitLength(index ^ (size - 1n));
  const border = popCount(index >> BigInt(inner));
  if (proof.length !== inner + border) {
    throw new CheckError("inclusion", `wrong proof size ${proof.length}, want ${inner + border}`);
  }
  const steps = [];
  let hash = leaf;
  for (let i = 0; i < proof.length; i++) {
    // Below the border bit i of |index| says which side the sibling is on;
    // along the right border every sibling is on the left.
    const siblingLeft = i >= inner || ((index >> BigInt(i)) & 1n) === 1n;
    hash = siblingLeft ? await nodeHash(proof[i], hash) : await nodeHash(hash, proof[i]);
    steps.push({ sibling: toHex(proof[i]), side: siblingLeft ? "left" : "right", result: toHex(hash) });
  }
  return { root: hash, steps };
}

// -- signed notes and checkpoints (as shotstamp.checkpoint) -----------------------

function hasControl(text, allowNewline) {
  for (const ch of text) if (ch < " " && !(allowNewline && ch === "\n")) return true;
  return false;
}

function isUnicodeText(text) {
  return !LONE_SURROGATE.test(text);
}

function isLine(text) {
  return text.length > 0 && isUnicodeText(text) && !hasControl(text, false);
}

function isValidName(name) {
  return name.length > 0 && !name.includes("+") && !PY_SPACE.test(name) && !hasControl(name, false) && isUnicodeText(name);
}

function malformedNote(why) {
  return new Error(`malformed note: ${why}`);
}

/** Parse a C2SP signed note; throws Error("malformed note: ...") where the SDK would. */
export function parseSignedNote(note) {
  if (hasControl(note, true)) throw malformedNote("contains control characters");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw malformedNote("no blank line before the signatures");
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block.endsWith("\n")) throw malformedNote("signature block does not end in a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw malformedNote(`${lines.length} signatures, at most ${MAX_SIGNATURES}`);
  const signatures = lines.map((line) => {
    if (!line.startsWith(SIGNATURE_PREFIX)) {
      throw malformedNote("signature line does not start with an em dash and a space");
    }
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(" ");
    const name = space < 0 ? rest : rest.slice(0, space);
    const encoded = space < 0 ? "" : rest.slice(space + 1);
    if (!isValidName(name)) throw malformedNote(`invalid key name ${JSON.stringify(name)}`);
    const raw = b64decode(encoded);
    if (raw === null) throw malformedNote(`signature by ${JSON.stringify(name)} is not base64`);
    if (raw.length <= 4) {
      throw malformedNote(`signature by ${JSON.stringify(name)} has ${raw.length} bytes, want more than 4`);
    }
    return { name, keyHash: raw.slice(0, 4), signature: raw.slice(4) };
  });
  if (!isUnicodeText(text)) throw malformedNote("text is not valid Unicode");
  if (text.startsWith("\n") || text.includes("\n\n")) throw malformedNote("text contains a blank line");
  return { text, signatures };
}

function malformedCheckpoint(why) {
  return new Error(`malformed checkpoint: ${why}`);
}

/** Parse a tlog-checkpoint body: origin, size (BigInt), root hash, extensions. */
export function parseCheckpoint(text) {
  if (!text.endsWith("\n")) throw malformedCheckpoint("missing final newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length === 1) throw malformedCheckpoint("missing tree size");
  if (lines.length === 2) throw malformedCheckpoint("missing root hash");
  const [origin, sizeLine, rootLine, ...extensions] = lines;
  if (!isLine(origin)) throw malformedCheckpoint("invalid origin");
  if (!DECIMAL.test(sizeLine) || BigInt(sizeLine) > MAX_TREE_SIZE) throw malformedCheckpoint("invalid tree size");
  const root = b64decode(rootLine);
  // Only the canonical encoding, so one checkpoint has one text.
  if (root === null || b64encode(root) !== rootLine || root.length !== 32) {
    throw malformedCheckpoint("invalid root hash");
  }
  if (extensions.some((line) => !line)) throw malformedCheckpoint("empty extension line");
  if (extensions.some((line) => !isLine(line))) throw malformedCheckpoint("invalid extension line");
  const stamps = extensions.filter((line) => line.startsWith("Timestamp:"));
  if (stamps.length > 1) throw malformedCheckpoint("more than one timestamp");
  let timestampNs = null;
  if (stamps.length) {
    const digits = stamps[0].slice(TIMESTAMP_PREFIX.length);
    if (!stamps[0].startsWith(TIMESTAMP_PREFIX) || !DECIMAL.test(digits) || BigInt(digits) > MAX_TIMESTAMP_NS) {
      throw malformedCheckpoint("invalid timestamp");
    }
    timestampNs = BigInt(digits);
  }
  return { origin, size: BigInt(sizeLine), root, extensions, timestampNs };
}

/** Unix nanoseconds as RFC 3339 UTC with microseconds, the API's time format. */
export function formatTimestamp(ns) {
  const seconds = ns / 1000000000n;
  const micros = ((ns % 1000000000n) / 1000n).toString().padStart(6, "0");
  return new Date(Number(seconds) * 1000).toISOString().slice(0, 19) + "." + micros + "Z";
}

async function keyHash(name, publicKey) {
  return (await sha256(concat(utf8(name + "\n"), Uint8Array.of(ALG_ED25519), publicKey))).slice(0, 4);
}

/** Parse a signed-note verifier key `name+<8 hex>+base64(0x01 || key)`; throws Error. */
export async function parseVkey(vkey) {
  const first = vkey.indexOf("+");
  const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
  if (second < 0) throw new Error(`malformed verifier key ${vkey}: want name+hash+key`);
  const name = vkey.slice(0, first);
  const hashHex = vkey.slice(first + 1, second);
  const raw = b64decode(vkey.slice(second + 1));
  if (!isValidName(name)) throw new Error(`malformed verifier key ${vkey}: invalid name`);
  if (!/^[0-9a-fA-F]{8}$/.test(hashHex)) throw new Error(`malformed verifier key ${vkey}: key hash is not 8 hex digits`);
  if (raw === null || raw.length !== 33 || raw[0] !== ALG_ED25519) {
    throw new Error(`malformed verifier key ${vkey}: not an Ed25519 key`);
  }
  const publicKey = raw.slice(1);
  const computed = await keyHash(name, publicKey);
  if (toHex(computed) !== hashHex.toLowerCase()) {
    throw new Error(`malformed verifier key ${vkey}: key hash does not match name and key`);
  }
  return { name, keyHash: computed, publicKey, vkey };
}

/** WebCrypto exists only in secure contexts (HTTPS, localhost). */
export function hasWebCrypto() {
  return typeof crypto !== "undefined" && Boolean(crypto.subtle);
}

let ed25519Support = null;

/** Whether this browser's WebCrypto verifies Ed25519 (asked once, with a real key). */
export async function browserHasEd25519(publicKey) {
  if (ed25519Support === null) {
    try {
      await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
      ed25519Support = true;
    } catch {
      ed25519Support = false;
    }
  }
  return ed25519Support;
}

async function ed25519Verify(publicKey, signature, message) {
  // The SDK refuses any other length before asking the library.
  if (signature.length !== 64) return false;
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

const slotOf = (name, hash) => `${name}+${toHex(hash)}`;

/**
 * Verify a signed note's signatures against known keys (c2sp.org/signed-note,
 * as the SDK's `open_note`): signatures by unknown keys are ignored, one by a
 * known key that fails rejects the note, at least one must verify.
 * Returns the names of the signers that verified; throws CheckError.
 */
export async function openNote(note, keys) {
  const known = new Map(keys.map((k) => [slotOf(k.name, k.keyHash), k]));
  const seen = new Set();
  const verified = [];
  for (const sig of note.signatures) {
    const slot = slotOf(sig.name, sig.keyHash);
    const key = known.get(slot);
    if (!key || seen.has(slot)) continue;
    seen.add(slot);
    if (!(await ed25519Verify(key.publicKey, sig.signature, utf8(note.text)))) {
      throw new CheckError("checkpoint-signature", `invalid signature for key ${slot}`);
    }
    verified.push({ name: sig.name, slot });
  }
  if (!verified.length) {
    const signers = note.signatures.map((s) => slotOf(s.name, s.keyHash)).join(", ");
    const trusted = [...known.keys()].join(", ");
    throw new CheckError(
      "checkpoint-signature",
      `note has no signature by a known key: signed by ${signers}; known keys ${trusted}`,
    );
  }
  return verified;
}

/** The known-key signature lines of a note, whether or not they verify. */
function knownSigners(note, keys) {
  const known = new Set(keys.map((k) => slotOf(k.name, k.keyHash)));
  return note.signatures.filter((s) => known.has(slotOf(s.name, s.keyHash))).map((s) => ({ name: s.name, slot: slotOf(s.name, s.keyHash) }));
}

// -- the bundle and the leaf (as shotstamp.verify) ------------------------------

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof JsonFloat);
}

function isCount(v) {
  return (typeof v === "number" && Number.isInteger(v) && v >= 0) || (typeof v === "bigint" && v >= 0n);
}

function malformed(field, why) {
  return new CheckError("format", `proof bundle does not parse: malformed proof bundle: field '${field}' ${why}`);
}

/** ProofBundle.from_json: the structure of a shotstamp-proof/1 bundle. Throws CheckError("format"). */
export function parseBundle(text) {
  let decoded;
  try {
    decoded = parseJSON(text);
  } catch (err) {
    throw new CheckError("format", `proof bundle does not parse: not JSON: ${err.message}`);
  }
  if (!isObject(decoded)) throw new CheckError("format", "proof bundle does not parse: not a JSON object");
  for (const field of ["format", "leaf", "leaf_index", "tree_size", "inclusion_path", "checkpoint"]) {
    if (!Object.hasOwn(decoded, field)) throw malformed(field, "is missing");
  }
  if (typeof decoded.format !== "string") throw malformed("format", "must be a string");
  if (!Array.isArray(decoded.inclusion_path)) throw malformed("inclusion_path", "must be a list of hex hashes");
  decoded.inclusion_path.forEach((element, position) => {
    if (typeof element !== "string" || !HEX_HASH.test(element)) {
      throw malformed("inclusion_path", `element ${position} must be 64 lowercase hex digits`);
    }
  });
  const rawLeafHash = Object.hasOwn(decoded, "leaf_hash") ? decoded.leaf_hash : null;
  if (rawLeafHash !== null && (typeof rawLeafHash !== "string" || !HEX_HASH.test(rawLeafHash))) {
    throw malformed("leaf_hash", "must be 64 lowercase hex digits");
  }
  const rawSalt = Object.hasOwn(decoded, "seller_salt") ? decoded.seller_salt : null;
  if (rawSalt !== null && (typeof rawSalt !== "string" || !HEX_HASH.test(rawSalt))) {
    throw malformed("seller_salt", "must be 64 lowercase hex digits");
  }
  const seller = Object.hasOwn(decoded, "seller") ? decoded.seller : null;
  if (!FORMATS.includes(decoded.format)) {
    throw malformed("format", `is ${JSON.stringify(decoded.format)}, want one of ${FORMATS.join(", ")}`);
  }
  if (decoded.format === FORMAT_V2) {
    if (typeof seller !== "string" || !seller) throw malformed("seller", "must be a non-empty string");
    if (LONE_SURROGATE.test(seller)) throw malformed("seller", "is not Unicode text");
    if (rawSalt === null) throw malformed("seller_salt", `must be ${SALT_SIZE} bytes`);
  } else if (seller !== null || rawSalt !== null) {
    throw malformed("seller", `and 'seller_salt' belong to ${FORMAT_V2} only`);
  }
  if (!isObject(decoded.leaf)) throw malformed("leaf", "must be an object");
  if (!isCount(decoded.leaf_index)) throw malformed("leaf_index", "must be a non-negative integer");
  if (!isCount(decoded.tree_size)) throw malformed("tree_size", "must be a non-negative integer");
  if (typeof decoded.checkpoint !== "string" || !decoded.checkpoint) throw malformed("checkpoint", "must be a non-empty string");
  return {
    format: decoded.format,
    seller,
    sellerSalt: rawSalt === null ? null : fromHex(rawSalt),
    leaf: decoded.leaf,
    leafIndex: BigInt(decoded.leaf_index),
    treeSize: BigInt(decoded.tree_size),
    inclusionPath: decoded.inclusion_path.map(fromHex),
    checkpoint: decoded.checkpoint,
    leafHash: rawLeafHash === null ? null : fromHex(rawLeafHash),
  };
}

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

// What Python's datetime.fromisoformat refuses among RFC3339-shaped strings.
function validTime(match) {
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 && leap ? 29 : DAYS[month - 1];
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > days) return false;
  if (hour > 23 || minute > 59 || second > 59) return false;
  if (match[7] !== "Z" && Number(match[8]) * 60 + Number(match[9]) >= 24 * 60) return false;
  return true;
}

/** _check_leaf: the leaf record's fields, for the bundle's format. Throws CheckError("leaf"). */
export function checkLeaf(leaf, format = FORMAT) {
  const fail = (why) => new CheckError("leaf", `leaf record ${why}`);
  const fields = format === FORMAT_V2 ? LEAF_FIELDS_V2 : LEAF_FIELDS;
  const missing = fields.filter((name) => !Object.hasOwn(leaf, name));
  if (missing.length) throw fail(`is missing ${missing.join(", ")}`);
  const unexpected = Object.keys(leaf).filter((name) => !fields.includes(name)).sort();
  if (unexpected.length) throw fail(`has unexpected fields ${unexpected.join(", ")}`);
  for (const name of format === FORMAT_V2 ? ["id"] : ["id", "seller"]) {
    if (typeof leaf[name] !== "string" || !leaf[name]) throw fail(`field '${name}' must be a non-empty string`);
  }
  if (format === FORMAT_V2 && (typeof leaf.seller_commitment !== "string" || !HEX_HASH.test(leaf.seller_commitment))) {
    throw fail("field 'seller_commitment' must be 64 lowercase hex digits");
  }
  if (typeof leaf.sha256 !== "string" || !HEX_HASH.test(leaf.sha256)) {
    throw fail("field 'sha256' must be 64 lowercase hex digits");
  }
  const perceptual = leaf.perceptual;
  if (!isObject(perceptual) || !Object.values(perceptual).every((v) => typeof v === "string" && HEX.test(v))) {
    throw fail("field 'perceptual' must map names to lowercase hex strings");
  }
  const match = typeof leaf.received_at === "string" ? RFC3339.exec(leaf.received_at) : null;
  if (!match) throw fail("field 'received_at' must be an RFC 3339 time");
  if (!validTime(match)) throw fail("field 'received_at' is not a valid time");
}

// -- the whole verification ------------------------------------------------------

/**
 * Verify a proof bundle (its JSON text). Options:
 *   keys          parsed verifier keys (parseVkey), every key the log has used
 *   image         the photo's bytes (Uint8Array), optional
 *   serviceVerify async (bundleText) => the service's POST /v1/verify answer;
 *                 used only for what this browser cannot do itself
 * Returns {verified, failed, unchecked, checks: [{name, status: pass|fail|skip|not-run,
 *          by: browser|service, message}], bundle, checkpoint, leafHash, path, signers}:
 * `failed` names the first failing check (the SDK's), `unchecked` the first
 * that could not run; `verified` means neither, the photo aside.
 */
export async function verifyBundle(text, { keys, image = null, serviceVerify = null } = {}) {
  const results = new Map();
  const set = (name, status, message, who = "browser") => {
    results.set(name, { name, status, message, by: who });
  };
  const outcome = { checks: [], failed: null, bundle: null, checkpoint: null, leafHash: null, path: null, signers: [], service: null };

  if (!hasWebCrypto()) return verifyByService(text, { image, serviceVerify, outcome });

  // (1) format
  let bundle;
  try {
    bundle = parseBundle(text);
    outcome.bundle = bundle;
    set("format", "pass", `the bundle parses as ${bundle.format}`);
  } catch (err) {
    set("format", "fail", err.message);
    return finish(outcome, results);
  }

  // (2) checkpoint-signature
  let note = null;
  try {
    note = parseSignedNote(bundle.checkpoint);
  } catch (err) {
    set("checkpoint-signature", "fail", `checkpoint note does not parse: ${err.message}`);
  }
  if (note) {
    const useService = !(keys.length && (await browserHasEd25519(keys[0].publicKey)));
    if (!useService) {
      try {
        outcome.signers = await openNote(note, keys);
        const names = outcome.signers.map((s) => s.slot).join(", ");
        set("checkpoint-signature", "pass", `Ed25519 signature by ${names}`);
      } catch (err) {
        set("checkpoint-signature", "fail", err.message);
      }
    } else if (!serviceVerify) {
      set("checkpoint-signature", "not-run", "this browser cannot verify Ed25519 and no service is available");
    } else {
      try {
        const answer = await serviceVerify(text);
        outcome.service = answer;
        if (answer.checks.includes("checkpoint-signature")) {
          outcome.signers = knownSigners(note, keys);
          set("checkpoint-signature", "pass", "Ed25519 signature checked by the service with its keys", "service");
        } else if (answer.failed && answer.failed.check === "checkpoint-signature") {
          set("checkpoint-signature", "fail", answer.failed.message, "service");
        } else {
          const why = answer.failed ? `${answer.failed.check}: ${answer.failed.message}` : "no answer";
          set("checkpoint-signature", "not-run", `the service stopped before the signature (${why})`, "service");
        }
      } catch (err) {
        set("checkpoint-signature", "not-run", `the service could not be asked: ${err.message}`, "service");
      }
    }
  }

  // (3) checkpoint-body and tree-size
  let checkpoint = null;
  if (note) {
    try {
      checkpoint = parseCheckpoint(note.text);
      outcome.checkpoint = checkpoint;
    } catch (err) {
      set("checkpoint-body", "fail", `signed checkpoint does not parse: ${err.message}`);
    }
  }
  if (checkpoint) {
    // Whose signature counts: the verified signers, or (signature failed or
    // not checked) the known keys' lines, so this check still says something.
    const signers = results.get("checkpoint-signature")?.status === "pass" ? outcome.signers : knownSigners(note, keys);
    if (signers.some((s) => s.name === checkpoint.origin)) {
      set("checkpoint-body", "pass", `a checkpoint of ${checkpoint.origin}`);
    } else {
      const names = note.signatures.map((s) => `'${s.name}'`).join(", ");
      set("checkpoint-body", "fail", `checkpoint origin '${checkpoint.origin}' is not the name of the key that signed it (${names})`);
    }
    if (checkpoint.size === bundle.treeSize) {
      set("tree-size", "pass", `tree size ${checkpoint.size}`);
    } else {
      set("tree-size", "fail", `checkpoint is for tree size ${checkpoint.size}, bundle says ${bundle.treeSize}`);
    }
  }

  // (4) leaf and leaf-hash
  let computed = null;
  try {
    checkLeaf(bundle.leaf, bundle.format);
    let canonical;
    try {
      canonical = canonicalJSON(bundle.leaf);
    } catch (err) {
      throw new CheckError("leaf", `leaf record is not canonical JSON: ${err.message}`);
    }
    computed = await leafHash(utf8(canonical));
    outcome.leafHash = computed;
    const seller = bundle.format === FORMAT_V2 ? bundle.seller : bundle.leaf.seller;
    set("leaf", "pass", `registration ${bundle.leaf.id} by ${seller}`);
  } catch (err) {
    set("leaf", "fail", err.message);
  }
  // (4b) seller: the bundle's seller and salt open the leaf's commitment (format 2 only)
  if (bundle.format !== FORMAT_V2) {
    set("seller", "skip", "the leaf names the seller (shotstamp-proof/1)");
  } else if (computed) {
    const opened = toHex(await sha256(concat(bundle.sellerSalt, utf8(bundle.seller))));
    if (opened === bundle.leaf.seller_commitment) {
      set("seller", "pass", `the salt opens the leaf's commitment to ${bundle.seller}`);
    } else {
      set("seller", "fail", "the bundle's seller and salt do not open the leaf's seller_commitment");
    }
  }
  if (computed) {
    if (bundle.leafHash === null) {
      set("leaf-hash", "skip", "the bundle states no leaf hash");
    } else if (equalBytes(computed, bundle.leafHash)) {
      set("leaf-hash", "pass", `leaf hash ${toHex(computed)}`);
    } else {
      set("leaf-hash", "fail", `leaf record hashes to ${toHex(computed)}, bundle says ${toHex(bundle.leafHash)}`);
    }
  }

  // (5) inclusion
  if (computed && checkpoint) {
    const where = `leaf ${bundle.leafIndex} is not in the checkpoint's tree of size ${bundle.treeSize}`;
    try {
      const { root, steps } = await rootFromInclusionProof(bundle.leafIndex, bundle.treeSize, computed, bundle.inclusionPath);
      outcome.path = { steps, root: toHex(root), expected: toHex(checkpoint.root) };
      if (equalBytes(root, checkpoint.root)) {
        set("inclusion", "pass", `the path of ${steps.length} hashes leads to the signed root`);
      } else {
        set(
          "inclusion",
          "fail",
          `${where}: calculated root ${toHex(root)} at tree size ${bundle.treeSize} does not match expected root ${toHex(checkpoint.root)}`,
        );
      }
    } catch (err) {
      set("inclusion", "fail", `${where}: ${err.message}`);
    }
  }

  // (6) image
  if (image === null) {
    set("image", "skip", "no image given");
  } else if (results.get("leaf")?.status === "pass") {
    const digest = toHex(await sha256(image));
    if (digest === bundle.leaf.sha256) set("image", "pass", `the image's SHA-256 ${digest} is the registered one`);
    else set("image", "fail", `image sha256 ${digest} is not the registered sha256 ${bundle.leaf.sha256}`);
  }
  return finish(outcome, results);
}

function finish(outcome, results) {
  outcome.checks = CHECKS.map(
    (name) => results.get(name) || { name, status: "not-run", by: "browser", message: "not run: what it checks could not be read" },
  );
  const failed = outcome.checks.find((c) => c.status === "fail");
  outcome.failed = failed ? failed.name : null;
  // A check that could not run proves nothing: only the photo may be left out.
  const unchecked = outcome.checks.find((c) => c.status === "not-run" && c.name !== "image");
  outcome.unchecked = unchecked ? unchecked.name : null;
  outcome.verified = !failed && !unchecked;
  return outcome;
}

// No WebCrypto at all (a page not served over HTTPS or from localhost): every
// check but the image is the service's; the image cannot be hashed here.
async function verifyByService(text, { image, serviceVerify, outcome }) {
  const results = new Map();
  const answer = serviceVerify ? await serviceVerify(text) : null;
  outcome.service = answer;
  // Read what the bundle claims, for display only: the verdicts are the service's.
  try {
    outcome.bundle = parseBundle(text);
    outcome.checkpoint = parseCheckpoint(parseSignedNote(outcome.bundle.checkpoint).text);
  } catch {
    // Unreadable here too; the service's answer says why.
  }
  for (const name of CHECKS.filter((n) => n !== "image")) {
    let result = { name, status: "not-run", by: "service", message: "not run: an earlier check failed" };
    if (!answer) {
      result = { name, status: "not-run", by: "browser", message: "this page has no WebCrypto and no service to ask" };
    } else if (answer.checks.includes(name)) {
      result = { name, status: "pass", by: "service", message: "checked by the service" };
    } else if (answer.failed && answer.failed.check === name) {
      result = { name, status: "fail", by: "service", message: answer.failed.message };
    } else if (name === "leaf-hash" && !answer.failed) {
      result = { name, status: "skip", by: "service", message: "the bundle states no leaf hash" };
    } else if (name === "seller" && !answer.failed) {
      result = { name, status: "skip", by: "service", message: "the leaf names the seller (shotstamp-proof/1)" };
    }
    results.set(name, result);
  }
  results.set(
    "image",
    image === null
      ? { name: "image", status: "skip", by: "browser", message: "no image given" }
      : { name: "image", status: "not-run", by: "browser", message: "not checked: this page has no WebCrypto to hash the image (serve the desk over HTTPS)" },
  );
  return finish(outcome, results);
}

/** Verify a checkpoint note on its own (the log's latest), by the browser or the service. */
export async function verifyCheckpointNote(noteText, keys) {
  const note = parseSignedNote(noteText);
  const checkpoint = parseCheckpoint(note.text);
  if (!(keys.length && (await browserHasEd25519(keys[0].publicKey)))) {
    return { checkpoint, signers: null, by: "none" };
  }
  const signers = await openNote(note, keys);
  if (!signers.some((s) => s.name === checkpoint.origin)) {
    throw new CheckError("checkpoint-body", `checkpoint origin '${checkpoint.origin}' is not the name of the key that signed it`);
  }
  return { checkpoint, signers, by: "browser" };
}
