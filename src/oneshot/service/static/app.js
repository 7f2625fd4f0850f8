// The oneshot page: plain JavaScript over the JSON API (/v1). No build step, no dependencies.
"use strict";

const state = { info: null, token: sessionStorage.getItem("oneshot-token") || "", shots: {}, stream: null, target: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(method, path, body) {
  const opts = { method, headers: headers() };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  let res;
  try { res = await fetch(path, opts); } catch (e) { throw new Error("the service cannot be reached: is it running?"); }
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : `HTTP ${res.status}`;
    const err = new Error(msg);
    err.code = data && data.error ? data.error.code : "http_" + res.status;
    if (err.code === "unauthorized") $("token-section").hidden = false;
    throw err;
  }
  return data;
}

function fmt(x) { return x === null || x === undefined ? "–" : Number(x).toFixed(3); }

function showError(box, err) {
  box.replaceChildren(el("p", { class: "error" }, "Error: " + err.message));
}

async function loadInfo() {
  try {
    const info = await api("GET", "/v1/info");
    state.info = info;
    const s = info.service;
    const th = info.thresholds.identify;
    $("summary").textContent = `${info.classes} classes · ${info.modality} encoder ${info.encoder} (${info.dim}-d) · ` +
      (th === null ? "not calibrated: every best match is accepted" : `identify threshold ${fmt(th)}`) +
      (info.false_accept_rate ? ` (calibrated false-accept rate ${info.false_accept_rate.target})` : "") +
      (s.writes_need_token ? " · changes need the token" : "");
    $("token-section").hidden = !(s.writes_need_token && !state.token);
    const textual = info.modality !== "image";
    for (const d of document.querySelectorAll(".example-file")) d.hidden = textual;
    for (const d of document.querySelectorAll(".example-text")) d.hidden = !textual;
    const camera = !textual && navigator.mediaDevices && navigator.mediaDevices.getUserMedia;
    for (const d of document.querySelectorAll(".camera")) d.hidden = !camera;
  } catch (err) {
    $("summary").textContent = "Error: " + err.message;
  }
}

function exampleForm(form, target) {
  const fd = new FormData();
  const file = form.querySelector("input[type=file]");
  const text = form.querySelector("textarea");
  if (state.info && state.info.modality !== "image") {
    if (!text.value.trim()) throw new Error("type an example first");
    fd.append("value", text.value);
  } else if (file.files.length) {
    for (const f of file.files) fd.append("files", f, f.name);
  } else if (state.shots[target]) {
    fd.append("files", state.shots[target], "camera.png");
  } else {
    throw new Error("choose a picture first (or take one with the camera)");
  }
  return fd;
}

async function enrol(ev) {
  ev.preventDefault();
  const box = $("enrol-result");
  try {
    const fd = exampleForm(ev.target, "enrol");
    fd.append("label", $("enrol-label").value);
    box.replaceChildren(el("p", {}, "Enrolling…"));
    const r = await api("POST", "/v1/classes", fd);
    const items = [el("p", { class: "decision accept", id: "enrol-decision" },
      `${r.created ? "Enrolled" : "Refined"} ${r.label}: ${r.n_examples} example${r.n_examples === 1 ? "" : "s"}`)];
    if (r.nearest_other) items.push(el("p", {}, `Closest other class: ${r.nearest_other.label} (score ${fmt(r.nearest_other.score)})`));
    if (r.warnings.length) items.push(el("ul", { "aria-label": "Enrolment warnings" }, ...r.warnings.map((w) => el("li", { class: "warning" }, "Warning: " + w))));
    for (const n of r.notes) items.push(el("p", {}, "Note: " + n));
    box.replaceChildren(...items);
    ev.target.reset();
    delete state.shots.enrol;
    await Promise.all([loadClasses(), loadInfo()]);
  } catch (err) { showError(box, err); }
}

async function identify(ev) {
  ev.preventDefault();
  const box = $("identify-result");
  try {
    const fd = exampleForm(ev.target, "identify");
    fd.append("k", $("identify-k").value || "3");
    box.replaceChildren(el("p", {}, "Identifying…"));
    const r = await api("POST", "/v1/identify", fd);
    const res = r.results[0];
    const known = res.known;
    const decision = el("p", { class: "decision " + (known ? "accept" : "unknown"), id: "identify-decision", "data-label": res.label },
      known ? `Recognised: ${res.label}` : "Unknown: no enrolled class is close enough");
    const why = r.threshold === null
      ? "No calibrated threshold: the best match is shown as recognised."
      : `Best score ${fmt(res.score)} ${known ? "≥" : "<"} threshold ${fmt(r.threshold)}` +
        (r.false_accept_rate ? ` (calibrated for a false-accept rate of ${r.false_accept_rate.target})` : "");
    const rows = res.candidates.map((c, i) => el("tr", {}, el("td", {}, String(i + 1)), el("td", {}, c.label), el("td", {}, fmt(c.score))));
    const table = el("table", {}, el("caption", {}, "Top matches"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "#"), el("th", { scope: "col" }, "class"), el("th", { scope: "col" }, "score"))),
      el("tbody", {}, ...rows));
    box.replaceChildren(decision, el("p", {}, why), table);
    delete state.shots.identify;
  } catch (err) { showError(box, err); }
}

function classCard(c) {
  const li = el("li", { "data-label": c.label });
  const renameId = "rename-" + Math.random().toString(36).slice(2);
  const input = el("input", { id: renameId, value: c.label, required: true, maxLength: 128, autocomplete: "off" });
  const rename = el("form", {}, el("label", { htmlFor: renameId }, "New name"), input, el("button", { type: "submit" }, "Rename"));
  rename.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await api("PATCH", "/v1/classes/" + encodeURIComponent(c.label), { label: input.value }); await loadClasses(); }
    catch (err) { $("gallery-state").textContent = "Error: " + err.message; }
  });
  const forget = el("button", { type: "button", class: "forget" }, `Forget ${c.label}`);
  let armed = false;
  forget.addEventListener("click", async () => {
    if (!armed) { armed = true; forget.textContent = `Press again to forget ${c.label}`; setTimeout(() => { armed = false; forget.textContent = `Forget ${c.label}`; }, 5000); return; }
    try {
      await api("DELETE", "/v1/classes/" + encodeURIComponent(c.label));
      $("gallery-state").textContent = `Forgot ${c.label}.`;
      await Promise.all([loadClasses(), loadInfo()]);
    } catch (err) { $("gallery-state").textContent = "Error: " + err.message; }
  });
  li.append(el("div", { class: "name" }, c.label), el("div", { class: "count" }, `${c.n_examples} example${c.n_examples === 1 ? "" : "s"}`), rename, forget);
  return li;
}

async function loadClasses() {
  try {
    const r = await api("GET", "/v1/classes?limit=200");
    $("classes").replaceChildren(...r.classes.map(classCard));
    $("gallery-state").textContent = r.total === 0 ? "No classes yet: enrol one above." :
      (r.total > r.classes.length ? `Showing the first ${r.classes.length} of ${r.total} classes.` : `${r.total} classes.`);
  } catch (err) { $("gallery-state").textContent = "Error: " + err.message; }
}

async function startCamera(target) {
  state.target = target;
  $("camera-section").hidden = false;
  try {
    state.stream = state.stream || await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $("camera-video").srcObject = state.stream;
    $("camera-state").textContent = `Camera on: the picture will be used to ${target}.`;
    $("camera-shoot").focus();
  } catch (err) {
    $("camera-state").textContent = "The camera is not available here: " + err.message + ". Choose a file instead.";
  }
}

function stopCamera() {
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  state.stream = null;
  $("camera-section").hidden = true;
}

function shoot() {
  const v = $("camera-video");
  if (!v.videoWidth) { $("camera-state").textContent = "No picture yet: wait for the preview."; return; }
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  const target = state.target;
  c.toBlob((blob) => {
    state.shots[target] = blob;
    $("camera-state").textContent = `Picture taken for ${target}: press ${target === "enrol" ? "Enrol" : "Identify"}.`;
    stopCamera();
    $(target + "-submit").focus();
  }, "image/png");
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("oneshot-token", state.token);
  $("token").value = "";
  $("token-state").textContent = "Token set.";
  $("token-section").hidden = true;
});
$("enrol-form").addEventListener("submit", enrol);
$("identify-form").addEventListener("submit", identify);
$("refresh").addEventListener("click", () => { loadInfo(); loadClasses(); });
for (const b of document.querySelectorAll(".camera-start")) b.addEventListener("click", () => startCamera(b.dataset.target));
$("camera-shoot").addEventListener("click", shoot);
$("camera-stop").addEventListener("click", stopCamera);
loadInfo().then(loadClasses);
