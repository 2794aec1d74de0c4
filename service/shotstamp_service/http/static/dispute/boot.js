// A dispute file's own script (http/dispute.py): loads the desk's verify.js and evidence.js,
// inlined beside it, draws the match and re-runs the proof check; no network.
const source = (id) => document.getElementById(id).textContent;
const load = (id) => import(URL.createObjectURL(new Blob([source(id)], { type: "text/javascript" })));
const box = document.getElementById("proof-check");
const say = (state, headline, items) => {
  box.dataset.state = state;
  box.querySelector(".headline").textContent = headline;
  const list = box.querySelector("ol");
  list.replaceChildren(...items.map(([cls, text]) => {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    return li;
  }));
};
try {
  const [verify, evidence] = await Promise.all([load("verify-js"), load("evidence-js")]);
  const match = JSON.parse(source("match-data"));
  document.getElementById("explanation").textContent = evidence.explain(match);
  const registered = document.getElementById("registered-image");
  const suspect = document.getElementById("suspect-image");
  if (match.geometry && registered) {
    const stage = evidence.outlinedImage(registered.cloneNode(), match.geometry);
    registered.replaceWith(stage);
    stage.querySelector("img").id = "registered-image";
    document.getElementById("keypoint-view").append(
      evidence.keypointView(match.geometry, suspect.src, registered.src));
  }
  if (registered && suspect) {
    const view = await evidence.differenceView(document.getElementById("registered-image"),
      suspect, match.geometry || null);
    view.querySelector(".aligned").hidden = false;
    view.querySelector(".registered").hidden = true;
    view.querySelector(".flip-label").textContent = "The suspect laid onto the registered image";
    document.getElementById("difference-view").append(view);
  }
  const bundleText = source("proof-json");
  const keys = [];
  for (const line of source("log-keys").split("\n")) {
    if (line.trim()) keys.push(await verify.parseVkey(line.trim()));
  }
  for (const [id, text, name] of [["proof-download", bundleText, "proof.json"],
                                  ["keys-download", source("log-keys"), "keys.txt"]]) {
    const link = document.getElementById(id);
    link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    link.download = name;
  }
  const outcome = await verify.verifyBundle(bundleText, { keys });
  const items = outcome.checks.map((c) => [c.status, `${c.name}: ${c.status === "pass" ? "passed" : c.status === "fail" ? "FAILED" : c.status} \u2014 ${c.message}`]);
  if (outcome.verified) {
    const leaf = outcome.bundle.leaf;
    // Format 2 bundles carry the seller beside the leaf, which holds only a commitment to it.
    const seller = outcome.bundle.seller ?? leaf.seller;
    const when = outcome.checkpoint.timestampNs !== null ? verify.formatTimestamp(outcome.checkpoint.timestampNs) : null;
    say("verified", `Verified in this browser: registration ${leaf.id} by ${seller} is in the log${when ? ` no later than ${when}` : ""}.`, items);
  } else if (outcome.failed) {
    say("failed", `NOT VERIFIED: the ${outcome.failed} check failed. Do not rely on this file.`, items);
  } else {
    say("failed", `NOT VERIFIED: the ${outcome.unchecked} check could not be run in this browser. Check the proof with the command below.`, items);
  }
} catch (err) {
  say("failed", `NOT VERIFIED: the check could not run (${err.message}). Check the proof with the command below.`, []);
}
