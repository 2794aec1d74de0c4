// Where a suspected copy sits in the registered image, drawn from a match's `geometry`
// (openapi.py, MatchGeometry): the outline, the matched keypoints, a difference view, and a
// sentence. Used by the desk and inlined into dispute files; plain DOM, no network.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function html(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

const percent = (share) => `${Math.round(share * 100)} %`;

/** Where the suspect sits in the registered photo, in words, from the geometry alone. */
export function placement(g) {
  const [w, h] = g.registered_size;
  const [tl, tr, , bl] = g.outline;
  const across = Math.hypot(tr[0] - tl[0], tr[1] - tl[1]) / w; // the suspect's own edges
  const down = Math.hypot(bl[0] - tl[0], bl[1] - tl[1]) / h;
  const cx = g.outline.reduce((sum, p) => sum + p[0], 0) / 4 / w;
  const cy = g.outline.reduce((sum, p) => sum + p[1], 0) / 4 / h;
  const side = (v, low, high) => (v < 0.42 ? low : v > 0.58 ? high : "");
  const where = [side(cy, "top", "bottom"), side(cx, "left", "right")].filter(Boolean).join(" ") || "central";
  const parts = [];
  if (g.covered > 0.97) parts.push("the whole registered photo");
  else parts.push(`the ${where} part of the registered photo (${percent(Math.min(across, 1))} of its width, ${percent(Math.min(down, 1))} of its height; ${percent(g.covered)} of its area)`);
  const turn = Math.abs(g.rotation);
  if (turn >= 0.5) parts.push(`turned ${turn.toFixed(turn < 10 ? 1 : 0)}° ${g.rotation > 0 ? "anticlockwise" : "clockwise"}`);
  if (g.mirrored) parts.push("mirrored left to right");
  return `the suspect shows ${parts.join(", ")}`;
}

/** The verdict in words: the engine's own explanation (its rule's clause), then where the
 * suspect sits when stage 2 fitted a geometry; a sentence of our own for answers without one. */
export function explain(match) {
  const placed = match.geometry ? placement(match.geometry) : "";
  if (typeof match.explanation === "string" && match.explanation) {
    return placed ? `${match.explanation}. Where: ${placed}.` : match.explanation;
  }
  if (match.exact) return "The very same file, byte for byte.";
  if (!placed) {
    const pdq = match.distances?.pdq;
    return `The whole picture is the same${pdq === undefined ? "" : ` (its perceptual hash differs in ${pdq} of 256 bits)`}: re-encoded, resized or recoloured, not cut down.`;
  }
  const verdict = match.verdict === "copy" ? "A copy" : "Similar";
  return `${verdict}: ${placed}.`;
}

/** An SVG laid over the registered image (same box), with the suspect's outline on it. */
export function outlineOverlay(g) {
  const [w, h] = g.registered_size;
  const points = g.outline.map((p) => `${p[0]},${p[1]}`).join(" ");
  const [tl, tr] = g.outline;
  return svg(
    "svg",
    { class: "overlay", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", "aria-hidden": "true" },
    svg("polygon", { class: "outline", points, "data-corners": JSON.stringify(g.outline), "vector-effect": "non-scaling-stroke" }),
    // The suspect's top edge, thicker: which way up it sits.
    svg("line", { class: "top-edge", x1: tl[0], y1: tl[1], x2: tr[0], y2: tr[1], "vector-effect": "non-scaling-stroke" }),
  );
}

/** The registered image with the outline drawn over it, in one box. */
export function outlinedImage(img, g) {
  const stage = html("div", { class: "stage" });
  stage.append(img, outlineOverlay(g));
  return stage;
}

/** Both images side by side, a line between each matched keypoint pair. */
export function keypointView(g, suspectSrc, registeredSrc) {
  const [w, h] = g.registered_size;
  const [qw, qh] = g.suspect_size;
  const k = h / qh; // the suspect drawn as tall as the registered image
  const gap = 16;
  const left = qw * k;
  const view = svg("svg", { class: "keypoints", viewBox: `0 0 ${left + gap + w} ${h}`, role: "img", "aria-label": `${g.pairs.length} matched keypoint pairs` });
  view.append(
    svg("image", { href: suspectSrc, x: 0, y: 0, width: left, height: h, preserveAspectRatio: "none" }),
    svg("image", { href: registeredSrc, x: left + gap, y: 0, width: w, height: h, preserveAspectRatio: "none" }),
  );
  g.pairs.forEach(([qx, qy, sx, sy], i) => {
    const hue = (i * 47) % 360;
    view.append(svg("line", { class: "pair", x1: qx * k, y1: qy * k, x2: left + gap + sx, y2: sy, stroke: `hsl(${hue} 90% 50%)` }));
  });
  return view;
}

async function loaded(img) {
  if (!img.complete || !img.naturalWidth) await img.decode();
  return img;
}

/**
 * A difference view: the suspect drawn onto the registered image's frame (through the fitted
 * transform, or stretched over the whole frame when the match is by hash alone), a button to
 * flip between the two, and a heat map of where they differ.
 */
export async function differenceView(registeredImg, suspectImg, g) {
  await Promise.all([loaded(registeredImg), loaded(suspectImg)]);
  const width = registeredImg.naturalWidth;
  const height = registeredImg.naturalHeight;
  const canvas = (id) => Object.assign(document.createElement("canvas"), { width, height, className: id });
  const registered = canvas("registered");
  registered.getContext("2d").drawImage(registeredImg, 0, 0, width, height);
  const aligned = canvas("aligned");
  const ctx = aligned.getContext("2d");
  if (g) {
    // suspect pixels → suspect canonical → registered canonical (the transform) → this frame
    const k = width / g.registered_size[0];
    const [[a, c, e], [b, d, f]] = g.transform;
    const q = g.suspect_size[0] / suspectImg.naturalWidth;
    ctx.setTransform(k * a * q, k * b * q, k * c * q, k * d * q, k * e, k * f);
    ctx.drawImage(suspectImg, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
  } else {
    ctx.drawImage(suspectImg, 0, 0, width, height);
  }
  const heat = canvas("heat");
  const one = registered.getContext("2d").getImageData(0, 0, width, height).data;
  const two = ctx.getImageData(0, 0, width, height).data;
  const out = heat.getContext("2d").createImageData(width, height);
  const grey = (px, i) => 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
  let differing = 0;
  let covered = 0;
  for (let i = 0; i < one.length; i += 4) {
    const base = grey(one, i);
    if (two[i + 3] < 250) {
      // outside the suspect: the registered image, faded
      out.data.set([base * 0.3 + 170, base * 0.3 + 170, base * 0.3 + 170, 255], i);
      continue;
    }
    covered += 1;
    const d = Math.min(255, Math.abs(base - grey(two, i)) * 3);
    if (d > 90) differing += 1;
    // grey where they agree, red where they differ
    const g = (base * 0.45 + 120) * (1 - d / 255);
    out.data.set([g + d, g, g, 255], i);
  }
  heat.getContext("2d").putImageData(out, 0, 0);
  const share = covered ? differing / covered : 0;
  const flip = html("div", { class: "flip" }, registered, aligned);
  aligned.hidden = true;
  const label = html("p", { class: "flip-label" }, "Showing: the registered image");
  const button = html("button", { type: "button", class: "quiet flip-button" }, "Flip to the suspect");
  button.addEventListener("click", () => {
    const showSuspect = aligned.hidden;
    aligned.hidden = !showSuspect;
    registered.hidden = showSuspect;
    label.textContent = showSuspect ? "Showing: the suspect, laid onto the registered image" : "Showing: the registered image";
    button.textContent = showSuspect ? "Flip to the registered image" : "Flip to the suspect";
  });
  return html(
    "div",
    { class: "difference", "data-differing": share.toFixed(3) },
    html("figure", {}, flip, html("figcaption", {}, label, button)),
    html("figure", {}, heat, html("figcaption", {}, `Heat map: red where they differ (${percent(share)} of the shared pixels by more than a tenth of the grey scale)`)),
  );
}
