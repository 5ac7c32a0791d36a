// R-Adapt playground: classify through the public /v1/classify API in both modes, attack through
// /playground/api/attack. Plain JS, no build step, nothing loaded from another host.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, image: null, clean: null };

function key() {
  return $("api-key").value.trim() || sessionStorage.getItem("radapt-key") || "";
}

function headers() {
  const h = { "content-type": "application/json" };
  const k = key();
  if (k) h.authorization = "Bearer " + k;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const err = new Error(error.message || `HTTP ${response.status}`);
    err.status = response.status;
    err.code = error.code || "";
    throw err;
  }
  return { data, response };
}

function status(text) { $("status").textContent = text; }

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = err.code ? `${err.message} (${err.code})` : err.message;
  if (err.status === 401 || err.status === 403) $("key-row").hidden = false;
}

function busy(on) {
  for (const id of ["classify", "attack"]) $(id).disabled = on;
  $("results").setAttribute("aria-busy", on ? "true" : "false");
}

function labels() {
  return $("labels").value.split("\n").map((x) => x.trim()).filter((x) => x.length > 0);
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.append(o);
}

function fillAdapters() {
  const model = state.config.models.find((m) => m.id === $("model").value);
  const select = $("adapter");
  select.replaceChildren();
  for (const name of (model ? model.adapters : [])) option(select, name, name);
}

function fillSamples() {
  const list = $("sample-list");
  list.replaceChildren();
  const samples = state.config.samples.filter((s) => s.model === $("model").value);
  $("samples").hidden = samples.length === 0;
  samples.forEach((sample, i) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "sample";
    input.value = sample.id;
    input.addEventListener("change", () => chooseImage(sample.image, `Sample ${i + 1}: ${sample.label}`));
    const img = document.createElement("img");
    img.src = sample.image;
    img.alt = "";
    img.className = "pixelated";
    const text = document.createElement("span");
    text.textContent = sample.label;
    label.append(input, img, text);
    list.append(label);
  });
}

async function loadConfig() {
  try {
    const { data } = await call("GET", "/playground/api/config");
    state.config = data;
  } catch (err) {
    if (err.status === 503) {  // still loading its models: try again shortly
      status("The server is still loading its models…");
      setTimeout(loadConfig, 2000);
      return;
    }
    showError(err);
    status(err.status === 401 || err.status === 403 ? "Enter the API key to continue." : "The server did not answer.");
    return;
  }
  showError(null);
  const c = state.config;
  $("key-row").hidden = !(c.needs_api_key || c.attack.needs_admin_key);
  const select = $("model");
  select.replaceChildren();
  for (const m of c.models) option(select, m.id, m.id);
  if (c.default_model) select.value = c.default_model;
  $("labels").value = c.labels.join("\n");
  $("template").value = c.template;
  const eps = $("eps");
  eps.max = String(c.attack.max_eps);
  eps.value = String(c.attack.default_eps);
  showEps();
  $("steps").max = String(c.attack.max_steps);
  $("steps").value = String(c.attack.default_steps);
  fillAdapters();
  fillSamples();
  status(c.models.length ? "Pick a sample or upload an image." : "This server serves no CLIP model.");
}

function showEps() { $("eps-value").textContent = `${$("eps").value}/255`; }

function chooseImage(dataUri, caption) {
  state.image = dataUri;
  $("chosen").src = dataUri;
  $("chosen").alt = caption;
  $("chosen-caption").textContent = caption;
  classify();
}

function clearCell(id) { $(id).replaceChildren(); }

function renderCell(id, results, mode, clean) {
  const cell = $(id);
  cell.replaceChildren();
  cell.dataset.top = results[0].label;
  if (clean) {
    const held = results[0].label === clean;
    const badge = document.createElement("span");
    badge.className = "verdict " + (held ? "held" : "fooled");
    badge.textContent = held ? `held: ${clean}` : `fooled: ${clean} → ${results[0].label}`;
    cell.dataset.verdict = held ? "held" : "fooled";
    cell.append(badge);
  }
  const list = document.createElement("ol");
  list.className = "bars " + mode;
  for (const r of results) {
    const li = document.createElement("li");
    const pct = (100 * r.score).toFixed(1) + "%";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.label;
    name.title = r.label;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", `${mode} score of ${r.label}`);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", (100 * r.score).toFixed(1));
    track.setAttribute("aria-valuetext", pct);
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * r.score).toFixed(2) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = pct;
    li.append(name, track, value);
    list.append(li);
  }
  cell.append(list);
}

function showAdapter(name, id) {
  const span = $("robust-adapter");
  span.textContent = name ? `(adapter ${name}${id ? ", id " + id.slice(0, 12) : ""})` : "";
  span.title = id || "";
  span.dataset.adapterId = id || "";
}

function request(extra) {
  const body = { model: $("model").value, image: state.image, labels: labels(), ...extra };
  const template = $("template").value;
  if (template) body.template = template;
  return body;
}

async function classify() {
  if (!state.image) { status("Pick a sample or upload an image first."); return; }
  busy(true);
  showError(null);
  status("Classifying in both modes…");
  try {
    const adapter = $("adapter").value || undefined;
    const [standard, robust] = await Promise.all([
      call("POST", "/v1/classify", request({ robust: false })),
      call("POST", "/v1/classify", request({ robust: true, adapter })),
    ]);
    renderCell("standard-clean", standard.data.results, "standard");
    renderCell("robust-clean", robust.data.results, "robust");
    clearCell("standard-attacked");
    clearCell("robust-attacked");
    $("attack-images").hidden = true;
    showAdapter(robust.data.adapter, robust.response.headers.get("x-adapter-id"));
    state.clean = { standard: standard.data.results[0].label, robust: robust.data.results[0].label };
    status(`Clean image: standard says ${state.clean.standard}, robust says ${state.clean.robust}.`);
  } catch (err) {
    showError(err);
    status("Classification failed.");
  } finally {
    busy(false);
  }
}

async function attack() {
  if (!state.image) { status("Pick a sample or upload an image first."); return; }
  busy(true);
  showError(null);
  const target = document.querySelector("input[name=target]:checked").value;
  status(`Attacking ${target} mode: ${$("steps").value} PGD steps at ε ${$("eps").value}/255…`);
  try {
    const { data } = await call("POST", "/playground/api/attack", request({
      eps: Number($("eps").value), steps: Number($("steps").value), target,
      adapter: $("adapter").value || undefined,
    }));
    const s = data.standard, r = data.robust;
    renderCell("standard-clean", s.clean, "standard");
    renderCell("robust-clean", r.clean, "robust");
    renderCell("standard-attacked", s.attacked, "standard", s.clean[0].label);
    renderCell("robust-attacked", r.attacked, "robust", r.clean[0].label);
    showAdapter(r.adapter, r.adapter_id);
    $("img-original").src = data.images.original;
    $("img-attacked").src = data.images.attacked;
    $("img-perturbation").src = data.images.perturbation;
    $("perturbation-caption").textContent =
      `Perturbation ×${data.images.magnification} (max ${data.linf}/255)`;
    $("attack-images").hidden = false;
    const verdict = (mode, rows) => rows.attacked[0].label === rows.clean[0].label
      ? `${mode} held (${rows.clean[0].label})` : `${mode} fooled (${rows.clean[0].label} → ${rows.attacked[0].label})`;
    status(`Attack done in ${data.timings.attack_s.toFixed(2)} s: ${verdict("standard", s)}; ${verdict("robust", r)}.`);
  } catch (err) {
    showError(err);
    status("Attack failed.");
  } finally {
    busy(false);
  }
}

function upload(event) {
  const file = event.target.files && event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    for (const input of document.querySelectorAll("input[name=sample]")) input.checked = false;
    chooseImage(reader.result, `Uploaded: ${file.name}`);
  };
  reader.onerror = () => showError(new Error("could not read the file"));
  reader.readAsDataURL(file);
}

document.addEventListener("DOMContentLoaded", () => {
  $("classify").addEventListener("click", classify);
  $("attack").addEventListener("click", attack);
  $("eps").addEventListener("input", showEps);
  $("upload").addEventListener("change", upload);
  $("model").addEventListener("change", () => { fillAdapters(); fillSamples(); });
  $("key-row").addEventListener("submit", (event) => event.preventDefault());
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("radapt-key", $("api-key").value.trim());
    if (!state.config) loadConfig();
  });
  loadConfig();
});
