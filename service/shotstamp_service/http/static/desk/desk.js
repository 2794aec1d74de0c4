// The dispute desk: sign in with a staff key, compare a suspected copy, verify
// a proof, look up a registration. Plain DOM; every text from the service or
// a file goes through textContent, never HTML (the page holds a staff key).

import {
  formatTimestamp,
  hasWebCrypto,
  parseVkey,
  verifyBundle,
  verifyCheckpointNote,
} from "./verify.js";
import { differenceView, explain, keypointView, outlinedImage } from "./evidence.js";

const KEY_STORAGE = "shotstamp.desk.key";
const $ = (id) => document.getElementById(id);

let apiKey = null;
let trustedKeys = []; // parsed verifier keys from GET /v1/keys
let keyWarnings = [];

// -- small DOM helpers ---------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function details(pairs) {
  const dl = el("dl", { class: "details" });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(el("dt", {}, term), el("dd", {}, value));
  }
  return dl;
}

function time(iso) {
  // The API's RFC 3339 UTC time, shown readably and kept exact in datetime=.
  return el("time", { datetime: iso }, iso.replace("T", " ").replace(/Z$/, " UTC"));
}

function code(text) {
  return el("code", { class: "hash" }, text);
}

const objectUrls = new Map(); // slot -> URL, revoked when the slot is reused

function objectUrl(slot, blob) {
  if (objectUrls.has(slot)) URL.revokeObjectURL(objectUrls.get(slot));
  const url = URL.createObjectURL(blob);
  objectUrls.set(slot, url);
  return url;
}

function busy(container, text) {
  container.setAttribute("aria-busy", "true");
  container.replaceChildren(el("p", { class: "status" }, text));
}

function done(container, ...children) {
  container.replaceChildren(...children);
  container.removeAttribute("aria-busy");
}

function errorBox(err) {
  return el("div", { class: "error-box", role: "alert" }, el("p", {}, describeError(err)));
}

// -- the API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function describeError(err) {
  if (err instanceof ApiError) return `The service refused: ${err.message} (HTTP ${err.status}, ${err.code})`;
  if (err instanceof TypeError && /fetch/i.test(err.message)) return `Could not reach the service: ${err.message}`;
  return `Something went wrong: ${err.message}`;
}

/** Call the API with the staff key; non-2xx answers throw ApiError with the API's message. */
async function api(path, { method = "GET", body = null, key = apiKey, as = "json", headers = {} } = {}) {
  const response = await fetch(path, {
    method,
    body,
    headers: { ...headers, Authorization: `Bearer ${key}` },
    cache: "no-store",
  });
  if (!response.ok) {
    let code = "error";
    let message = response.statusText || "no message";
    try {
      const payload = await response.json();
      code = payload.error || code;
      message = payload.message || message;
    } catch {
      // Not JSON (a proxy's page): the status line is all there is.
    }
    throw new ApiError(response.status, code, message);
  }
  if (as === "response") return response;
  if (as === "text") return response.text();
  if (as === "blob") return response.blob();
  return response.json();
}

async function serviceVerify(bundleText) {
  return api("/v1/verify", { method: "POST", body: bundleText, headers: { "Content-Type": "application/json" } });
}

// -- signing in -----------------------------------------------------------------

async function loadKeys() {
  trustedKeys = [];
  keyWarnings = [];
  const response = await fetch("/v1/keys", { cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, "keys", "could not load the log's public keys");
  const body = await response.json();
  if (!hasWebCrypto()) return; // every check goes to the service; see verify.js
  for (const entry of body.keys || []) {
    try {
      trustedKeys.push(await parseVkey(entry.vkey));
    } catch (err) {
      keyWarnings.push(err.message);
    }
  }
}

async function signIn(candidate) {
  const session = await api("/v1/desk/session", { key: candidate });
  apiKey = candidate;
  sessionStorage.setItem(KEY_STORAGE, candidate);
  await loadKeys();
  $("session-who").textContent = `Signed in as ${session.seller} (staff key ${session.key_id})`;
  $("session").hidden = false;
  $("sign-in").hidden = true;
  $("main").hidden = false;
}

function signOut() {
  apiKey = null;
  sessionStorage.removeItem(KEY_STORAGE);
  $("session").hidden = true;
  $("main").hidden = true;
  $("sign-in").hidden = false;
  for (const id of ["compare-result", "verify-result", "lookup-result"]) $(id).replaceChildren();
  $("key-input").value = "";
  $("key-input").focus();
}

async function submitKey(event) {
  event.preventDefault();
  const candidate = $("key-input").value.trim();
  const error = $("key-error");
  error.textContent = "";
  if (!candidate) {
    error.textContent = "Type or paste a staff API key.";
    return;
  }
  try {
    await signIn(candidate);
    $("key-input").value = "";
    $("tab-compare").focus();
  } catch (err) {
    error.textContent = describeError(err);
    $("key-input").focus();
  }
}

// -- tabs (WAI-ARIA tabs pattern: arrows, Home, End) ------------------------------

const TABS = ["compare", "verify", "lookup"];

function selectTab(name, { focus = true } = {}) {
  for (const other of TABS) {
    const tab = $(`tab-${other}`);
    const selected = other === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`panel-${other}`).hidden = !selected;
  }
  if (focus) $(`tab-${name}`).focus();
}

function tabKeys(event) {
  const current = TABS.indexOf(event.target.id.replace("tab-", ""));
  const moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: TABS.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length]);
}

// -- drop zones: each is also a plain, keyboard-reachable file input ---------------

function dropZones() {
  for (const zone of document.querySelectorAll(".dropzone")) {
    const input = $(zone.dataset.for);
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
  }
  // A file dropped beside a zone must not navigate away from the desk.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// -- compare a suspected copy ---------------------------------------------------------

async function compare() {
  const file = $("suspect-file").files[0];
  const out = $("compare-result");
  if (!file) return;
  busy(out, `Checking ${file.name} against every registration…`);
  const suspectUrl = objectUrl("suspect", file);
  try {
    const form = new FormData();
    form.append("image", file, file.name);
    const check = await api("/v1/checks", { method: "POST", body: form });
    // Oldest first: the earliest registration is the one that counts.
    const matches = [...check.matches].sort((a, b) => (a.received_at < b.received_at ? -1 : a.received_at > b.received_at ? 1 : 0));
    const summary = matches.length
      ? el(
          "p",
          { class: "verdict", id: "compare-summary" },
          `Registered first by ${matches[0].seller ?? "another seller"} at `,
          time(matches[0].received_at),
          ` (registration ${matches[0].registration_id}). `,
          `${matches.length} matching registration${matches.length === 1 ? "" : "s"}, oldest first.`,
        )
      : el("p", { class: "verdict none", id: "compare-summary" }, `No registration matches ${file.name}.`);
    const list = el("ol", { class: "matches" });
    matches.forEach((match, position) => list.append(matchCard(match, position, suspectUrl, file)));
    done(
      out,
      summary,
      details([
        ["Suspected file", file.name],
        ["Its SHA-256", code(check.sha256)],
        ["Its fingerprints", Object.entries(check.perceptual).map(([k, v]) => `${k} ${v}`).join(", ")],
      ]),
      matches.length ? list : null,
    );
    for (const match of matches) loadThumbnail(match.registration_id, `thumb-${match.registration_id}`, match.geometry);
  } catch (err) {
    done(out, errorBox(err));
  }
}

function matchCard(match, position, suspectUrl, file, { idPrefix = "" } = {}) {
  const headingId = `${idPrefix}match-${match.registration_id}`;
  const figureId = `${idPrefix}thumb-${match.registration_id}`;
  const distances = Object.entries(match.distances || {}).map(([name, d]) => `${name} ${d}`).join(", ");
  const views = el("div", { class: "views" });
  const card = el(
    "li",
    { class: `match ${match.verdict}`, "aria-labelledby": headingId, "data-registration": match.registration_id },
    el(
      "h3",
      { id: headingId },
      `${position + 1}. ${match.seller ?? "another seller"} `,
      el("span", { class: `badge ${match.verdict}` }, match.exact ? "exact copy" : match.verdict),
      position === 0 ? el("span", { class: "badge first" }, "registered first") : null,
    ),
    el("p", { class: "explanation" }, explain(match)),
    el(
      "div",
      { class: "pair" },
      el("figure", {}, el("img", { class: "suspect", src: suspectUrl, alt: `Suspected image ${file.name}` }), el("figcaption", {}, "Suspected image")),
      el(
        "figure",
        { id: figureId },
        el("p", { class: "status" }, "Loading the registered image…"),
        el("figcaption", {}, match.geometry ? `Registered image (${match.registration_id}), the suspect outlined` : `Registered image (${match.registration_id})`),
      ),
    ),
    el(
      "div",
      { class: "row actions" },
      match.geometry ? el("button", { type: "button", class: "quiet show-keypoints", onclick: () => toggleKeypoints(card, match, suspectUrl) }, "Show matched keypoints") : null,
      el("button", { type: "button", class: "quiet show-difference", onclick: () => toggleDifference(card, match) }, "Show differences"),
      el("button", { type: "button", class: "dispute-html", onclick: () => disputeFile(card, match, file, "html") }, "Dispute file (HTML)"),
      el("button", { type: "button", class: "quiet dispute-pdf", onclick: () => disputeFile(card, match, file, "pdf") }, "PDF"),
    ),
    views,
    el("p", { class: "download" }),
    el(
      "details",
      { class: "engine" },
      el("summary", {}, "Details"),
      details([
        ["Registration", code(match.registration_id)],
        ["Seller", match.seller ?? "(not shown)"],
        ["Registered at", time(match.received_at)],
        ["Verdict", match.exact ? "copy: the very same file" : match.verdict],
        ["Decided by", match.clause ? `stage ${match.stage}, clause ${match.clause} (GET /v1/config → matching.rule)` : null],
        ["Distance", String(match.distance)],
        ["Engine figures", distances],
        ["Alignment", match.geometry ? `${match.geometry.model}: scale ${match.geometry.scale}, rotation ${match.geometry.rotation}°, covers ${Math.round(match.geometry.covered * 100)} %, ${match.geometry.pairs.length} keypoint pairs shown` : null],
        ["Status", match.status],
        ["Title", match.title],
        ["Reference", match.reference],
      ]),
    ),
    el("button", { type: "button", class: "quiet", onclick: () => lookUp(match.registration_id) }, `Look up ${match.registration_id} and its proof`),
  );
  return card;
}

function registeredImg(card) {
  return card.querySelector(".pair figure:last-child img");
}

function toggleKeypoints(card, match, suspectUrl) {
  const views = card.querySelector(".views");
  const shown = views.querySelector(".keypoints");
  const button = card.querySelector(".show-keypoints");
  if (shown) {
    shown.remove();
    button.textContent = "Show matched keypoints";
    return;
  }
  const img = registeredImg(card);
  if (!img) return;
  views.prepend(keypointView(match.geometry, suspectUrl, img.src));
  button.textContent = "Hide matched keypoints";
}

async function toggleDifference(card, match) {
  const views = card.querySelector(".views");
  const shown = views.querySelector(".difference");
  const button = card.querySelector(".show-difference");
  if (shown) {
    shown.remove();
    button.textContent = "Show differences";
    return;
  }
  const img = registeredImg(card);
  if (!img) return;
  try {
    views.append(await differenceView(img, card.querySelector("img.suspect"), match.geometry));
    button.textContent = "Hide differences";
  } catch (err) {
    views.append(errorBox(err));
  }
}

/** The dispute file for this match, made by the service, offered as a download. */
async function disputeFile(card, match, file, format) {
  const slot = card.querySelector(".download");
  busy(slot, format === "pdf" ? "Making the PDF…" : "Making the dispute file…");
  try {
    const form = new FormData();
    form.append("registration_id", match.registration_id);
    form.append("suspect_name", file.name);
    form.append("image", file, file.name);
    const blob = await api(`/v1/desk/evidence${format === "pdf" ? "?format=pdf" : ""}`, { method: "POST", body: form, as: "blob" });
    const name = `shotstamp-dispute-${match.registration_id}.${format}`;
    const link = el("a", { href: objectUrl(`dispute-${match.registration_id}-${format}`, blob), download: name, class: "dispute-link" }, `Save ${name}`);
    done(slot, link, ` (${Math.round(blob.size / 1024)} KB)`);
    link.click();
  } catch (err) {
    done(slot, errorBox(err));
  }
}

async function loadThumbnail(registrationId, figureId, geometry = null) {
  const figure = $(figureId);
  if (!figure) return;
  const placeholder = figure.querySelector(".status");
  try {
    const blob = await api(`/v1/registrations/${encodeURIComponent(registrationId)}/thumbnail`, { as: "blob" });
    const img = el("img", { src: objectUrl(figureId, blob), alt: `Registered image of ${registrationId} (thumbnail)` });
    placeholder.replaceWith(geometry ? outlinedImage(img, geometry) : img);
  } catch (err) {
    placeholder.textContent = err instanceof ApiError && err.code === "no_thumbnail" ? `No thumbnail: ${err.message}` : describeError(err);
    placeholder.className = "status missing";
  }
}

// -- verify a proof ---------------------------------------------------------------------

async function readText(file) {
  // Strict UTF-8, as the SDK reads a file; a BOM is dropped, as Python's json does.
  return new TextDecoder("utf-8", { fatal: true }).decode(await file.arrayBuffer());
}

async function proofFileChosen() {
  const file = $("proof-file").files[0];
  if (!file) return;
  try {
    $("proof-text").value = await readText(file);
  } catch {
    $("verify-result").replaceChildren(errorBox(new Error(`${file.name} is not UTF-8 text, so it is not a proof bundle`)));
  }
}

async function submitVerify(event) {
  event.preventDefault();
  const out = $("verify-result");
  const text = $("proof-text").value;
  if (!text.trim()) {
    done(out, el("p", { class: "error-box", role: "alert" }, "Choose a proof file or paste a proof bundle first."));
    return;
  }
  const imageFile = $("proof-image").files[0] || null;
  busy(out, "Verifying…");
  try {
    const image = imageFile ? new Uint8Array(await imageFile.arrayBuffer()) : null;
    const outcome = await verifyBundle(text, { keys: trustedKeys, image, serviceVerify });
    done(out, renderVerification(outcome, { imageName: imageFile ? imageFile.name : null }));
    const imageCheck = outcome.checks.find((c) => c.name === "image");
    const leafId = outcome.bundle?.leaf?.id;
    if (imageFile && imageCheck?.status === "fail" && typeof leafId === "string") await compareWithRegistered(out, imageFile, leafId);
  } catch (err) {
    done(out, errorBox(err));
  }
}

/** A photo that is not the registered file: is it a copy of it? The same picture as Compare. */
async function compareWithRegistered(out, file, registrationId) {
  const box = el("section", { class: "subsection", id: "verify-compare", "aria-labelledby": "verify-compare-title" }, el("h3", { id: "verify-compare-title" }, `Is ${file.name} a copy of ${registrationId}?`));
  out.append(box);
  try {
    const form = new FormData();
    form.append("image", file, file.name);
    const check = await api("/v1/checks", { method: "POST", body: form });
    const match = check.matches.find((m) => m.registration_id === registrationId);
    if (!match) {
      box.append(el("p", { class: "verdict none", id: "verify-compare-summary" }, `No: the service does not find ${file.name} to be a copy of registration ${registrationId}, nor similar to it.`));
      return;
    }
    const words = match.verdict === "copy" ? "Yes: it is a copy of it" : "Not a copy, but similar to it";
    box.append(
      el("p", { class: `verdict ${match.verdict === "copy" ? "bad" : ""}`, id: "verify-compare-summary" }, `${words}. The photo is not the registered file itself, so the proof's image check fails; the comparison below shows how the two relate.`),
      el("ol", { class: "matches" }, matchCard(match, 0, objectUrl("verify-suspect", file), file, { idPrefix: "verify-" })),
    );
    await loadThumbnail(registrationId, `verify-thumb-${registrationId}`, match.geometry);
  } catch (err) {
    box.append(errorBox(err));
  }
}

function clearVerify() {
  $("verify-form").reset();
  $("verify-result").replaceChildren();
}

const STATUS_WORDS = { pass: "passed", fail: "FAILED", skip: "skipped", "not-run": "not run" };
const STATUS_MARKS = { pass: "✓", fail: "✗", skip: "–", "not-run": "·" };

/** Headline, checks by name, what the proof says, and the Merkle path. */
function renderVerification(outcome, { imageName = null } = {}) {
  const box = el("div", { class: `verification ${outcome.verified ? "verified" : "failed"}` });
  const leaf = outcome.bundle?.leaf;
  // Format 2 bundles carry the seller beside the leaf, which holds only a commitment to it.
  const seller = outcome.bundle?.seller ?? leaf?.seller;
  const cp = outcome.checkpoint;
  const when = cp && cp.timestampNs !== null ? formatTimestamp(cp.timestampNs) : null;
  if (outcome.failed) {
    const failed = outcome.checks.find((c) => c.name === outcome.failed);
    box.append(el("p", { class: "verdict bad", "data-failed": outcome.failed }, `Not verified: the ${outcome.failed} check failed. `, failed.message));
  } else if (!outcome.verified) {
    const unchecked = outcome.checks.find((c) => c.name === outcome.unchecked);
    box.append(el("p", { class: "verdict bad", "data-unchecked": outcome.unchecked }, `Not verified: the ${outcome.unchecked} check could not be run. `, unchecked.message));
  } else {
    box.append(
      el(
        "p",
        { class: "verdict good" },
        leaf && typeof leaf.id === "string" ? `Verified: registration ${leaf.id} by ${seller} was in the log` : "Verified: the proof holds",
        when ? [" no later than ", time(when)] : "",
        ".",
        photoNote(outcome.checks.find((c) => c.name === "image")),
      ),
    );
  }
  const list = el("ol", { class: "checks", "aria-label": "Checks, in the order the SDK runs them" });
  for (const check of outcome.checks) {
    list.append(
      el(
        "li",
        { class: `check ${check.status}`, "data-check": check.name, "data-status": check.status, "data-by": check.by },
        el("span", { class: "mark", "aria-hidden": "true" }, STATUS_MARKS[check.status]),
        el("code", { class: "name" }, check.name),
        el("span", { class: "status-word" }, STATUS_WORDS[check.status]),
        check.by === "service" ? el("span", { class: "badge service" }, "verified by the service") : null,
        el("span", { class: "message" }, check.message),
      ),
    );
  }
  box.append(list);
  if (outcome.checks.some((c) => c.by === "service")) {
    box.append(
      el("p", { class: "help" }, "This browser cannot check Ed25519 signatures here, so the checks marked \u201cverified by the service\u201d were done by the shotstamp service with its own keys."),
    );
  }
  if (keyWarnings.length) box.append(el("p", { class: "help" }, `Keys ignored: ${keyWarnings.join("; ")}`));
  if (leaf && outcome.bundle) {
    box.append(
      el("h3", {}, outcome.verified ? "What the proof says" : "What the proof claims (not verified)"),
      details([
        ["Registration", typeof leaf.id === "string" ? code(leaf.id) : null],
        ["Seller", typeof seller === "string" ? seller : null],
        ["File SHA-256", typeof leaf.sha256 === "string" ? code(leaf.sha256) : null],
        ["Received at", typeof leaf.received_at === "string" ? leaf.received_at : null],
        ["Photo checked", imageName],
        ["Leaf index", String(outcome.bundle.leafIndex)],
        ["Tree size", String(outcome.bundle.treeSize)],
        ["Checkpoint time", when ? time(when) : null],
        ["Log", cp ? cp.origin : null],
        ["Signed root", cp ? code(hex(cp.root)) : null],
        ["Signed by", outcome.signers.length ? outcome.signers.map((s) => s.slot).join(", ") : null],
      ]),
    );
  }
  if (outcome.path) box.append(merklePath(outcome));
  return box;
}

function photoNote(image) {
  if (image.status === "pass") return "";
  if (image.status === "skip") return " The photo itself was not checked: none was given.";
  return ` The photo itself was not checked: ${image.message}.`;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function merklePath(outcome) {
  const { steps, root, expected } = outcome.path;
  const table = el(
    "table",
    { class: "path" },
    el("caption", {}, `Merkle path: from leaf ${outcome.bundle.leafIndex} up to the root of tree size ${outcome.bundle.treeSize}`),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Step"), el("th", { scope: "col" }, "Sibling"), el("th", { scope: "col" }, "Sibling hash"), el("th", { scope: "col" }, "Hash so far"))),
  );
  const body = el("tbody", {});
  body.append(el("tr", {}, el("th", { scope: "row" }, "leaf"), el("td", {}, "–"), el("td", {}, "–"), el("td", {}, code(hex(outcome.leafHash)))));
  steps.forEach((step, i) =>
    body.append(
      el("tr", {}, el("th", { scope: "row" }, String(i + 1)), el("td", {}, step.side === "left" ? "on the left" : "on the right"), el("td", {}, code(step.sibling)), el("td", {}, code(step.result))),
    ),
  );
  table.append(body);
  const same = root === expected;
  return el(
    "div",
    { class: "path-box" },
    table,
    el("p", { class: same ? "good" : "bad" }, same ? "The path ends at the signed root." : `The path ends at ${root}, but the signed root is ${expected}.`),
  );
}

// -- look up a registration -----------------------------------------------------------------

async function lookUp(id) {
  selectTab("lookup", { focus: false });
  $("lookup-id").value = id;
  await runLookup();
  $("lookup-title").focus();
}

async function submitLookup(event) {
  event.preventDefault();
  await runLookup();
}

async function runLookup() {
  const out = $("lookup-result");
  const id = $("lookup-id").value.trim();
  if (!id) {
    done(out, el("p", { class: "error-box", role: "alert" }, "Type a registration id first."));
    return;
  }
  busy(out, `Looking up ${id}…`);
  const path = `/v1/registrations/${encodeURIComponent(id)}`;
  let reg;
  try {
    reg = await api(path);
  } catch (err) {
    done(out, errorBox(err));
    return;
  }
  const thumbId = `lookup-thumb-${reg.id}`;
  const proofBox = el("section", { class: "subsection", "aria-labelledby": "lookup-proof-title" }, el("h3", { id: "lookup-proof-title" }, "Proof"), el("p", { class: "status" }, "Fetching the proof…"));
  const checkpointBox = el("section", { class: "subsection", "aria-labelledby": "lookup-cp-title" }, el("h3", { id: "lookup-cp-title" }, "The log's latest checkpoint"), el("p", { class: "status" }, "Fetching…"));
  done(
    out,
    el("h3", {}, `Registration ${reg.id}`),
    el(
      "div",
      { class: "lookup-top" },
      el("figure", { id: thumbId }, el("p", { class: "status" }, "Loading the registered image…"), el("figcaption", {}, "Registered image (thumbnail)")),
      details([
        ["Seller", reg.seller],
        ["Registered at", time(reg.received_at)],
        ["Status", reg.status],
        ["Title", reg.title],
        ["Reference", reg.reference],
        ["File SHA-256", code(reg.sha256)],
        ["Fingerprints", Object.entries(reg.perceptual).map(([k, v]) => `${k} ${v}`).join(", ")],
        ["Size", reg.width && reg.height ? `${reg.width} × ${reg.height} px` : null],
        ["Leaf index", reg.leaf_index === undefined ? null : String(reg.leaf_index)],
      ]),
    ),
    proofBox,
    checkpointBox,
  );
  loadThumbnail(reg.id, thumbId);
  await Promise.all([showProof(reg, proofBox), showLatestCheckpoint(checkpointBox)]);
}

async function showProof(reg, box) {
  const heading = box.querySelector("h3");
  try {
    // Waits (up to the service's limit) for a registration sealed within the second.
    const response = await api(`/v1/registrations/${encodeURIComponent(reg.id)}/proof?wait=true`, { as: "response" });
    if (response.status === 202) {
      const pending = await response.json();
      box.replaceChildren(heading, el("p", { class: "status" }, `Not sealed yet: ${pending.message}`));
      return;
    }
    const text = await response.text();
    const outcome = await verifyBundle(text, { keys: trustedKeys, serviceVerify });
    const download = el("a", { href: objectUrl("proof-download", new Blob([text], { type: "application/json" })), download: `shotstamp-proof-${reg.id}.json` }, "Download the proof bundle");
    box.replaceChildren(heading, renderVerification(outcome), el("p", {}, download));
  } catch (err) {
    box.replaceChildren(heading, errorBox(err));
  }
}

async function showLatestCheckpoint(box) {
  const heading = box.querySelector("h3");
  try {
    const latest = await api("/v1/checkpoints/latest");
    let signature;
    try {
      const checked = await verifyCheckpointNote(latest.note, trustedKeys);
      signature =
        checked.by === "browser"
          ? `✓ signature verified by this browser (${checked.signers.map((s) => s.slot).join(", ")})`
          : "signature not checked: this browser cannot verify Ed25519 here";
    } catch (err) {
      signature = `✗ signature NOT verified: ${err.message}`;
    }
    box.replaceChildren(
      heading,
      details([
        ["Tree size", String(latest.tree_size)],
        ["Root hash", code(latest.root_hash)],
        ["Time", time(latest.timestamp)],
        ["Signature", el("span", { id: "latest-signature" }, signature)],
      ]),
      el("details", {}, el("summary", {}, "The signed note"), el("pre", {}, latest.note)),
    );
  } catch (err) {
    box.replaceChildren(heading, errorBox(err));
  }
}

// -- start ------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", submitKey);
  $("forget-key").addEventListener("click", signOut);
  for (const name of TABS) {
    const tab = $(`tab-${name}`);
    tab.addEventListener("click", () => selectTab(name));
    tab.addEventListener("keydown", tabKeys);
  }
  dropZones();
  $("suspect-file").addEventListener("change", compare);
  $("proof-file").addEventListener("change", proofFileChosen);
  $("verify-form").addEventListener("submit", submitVerify);
  $("verify-clear").addEventListener("click", clearVerify);
  $("lookup-form").addEventListener("submit", submitLookup);
  $("lookup-title").tabIndex = -1;

  const stored = sessionStorage.getItem(KEY_STORAGE);
  if (stored) {
    signIn(stored).catch((err) => {
      sessionStorage.removeItem(KEY_STORAGE);
      $("key-error").textContent = describeError(err);
    });
  }
  document.body.dataset.ready = "true";
}

start();
