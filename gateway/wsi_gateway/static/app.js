// The web UI: plain JavaScript over the gateway's JSON API. Live updates come
// from each workflow's Server-Sent Events stream (read with fetch, so the
// identity header can be sent), not from polling.
//
// Identity: a user id (X-User-ID) in trusted-header mode, an API token
// (Authorization: Bearer) in token mode; the gateway's /auth says which. A
// token is kept for the tab only (sessionStorage), a user id across visits.
// Switching identity clears everything of the previous one, and answers that
// arrive for an identity no longer selected are dropped (each carries the
// "epoch" it was asked in).
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { mode: "header", identity: "", epoch: 0, workflows: new Map(), streams: new Map(), blobs: new Set() };
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

class Stale extends Error {}  // an answer for an identity that is no longer selected

function identityHeaders() {
  return state.mode === "token" ? { Authorization: `Bearer ${state.identity}` } : { "X-User-ID": state.identity };
}

function storage() {
  return state.mode === "token" ? sessionStorage : localStorage;
}

async function api(method, path, body) {
  const epoch = state.epoch;
  const headers = identityHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = reply.headers.get("content-type")?.includes("json") ? await reply.json() : null;
  if (epoch !== state.epoch) throw new Stale();
  if (!reply.ok) throw new Error(data?.message || `${reply.status} ${reply.statusText}`);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// ---- workflow form --------------------------------------------------------

// The parameter inputs take their bounds, defaults and choices from /job-params:
// the schema the scheduler checks against, so the form refuses what it would.
const PARAMS = ["tile_size", "target_mpp", "slide_mpp", "backend"];
let paramSchema = {};
// Result file names by role (cells, tissue, preview, ...), from /result-files.
let resultFiles = {};

function fitParams(row) {
  for (const name of PARAMS) {
    const input = row.querySelector(`[name=${name}]`);
    const field = paramSchema[name];
    if (!input || !field) continue;
    if (field.choices) {
      // Short option names; what each is for and costs in its tooltip. Asked
      // again once the identity is known, the choices can narrow: what was
      // picked stays picked while it is still offered.
      const help = field.choice_help || {};
      const picked = input.value;
      if (field.default_help) input.options[0].title = field.default_help;
      while (input.options.length > 1) input.remove(1);
      for (const choice of field.choices) {
        input.append(el("option", { value: choice, title: help[choice] || "" }, choice));
      }
      input.value = field.choices.includes(picked) ? picked : "";
    } else {
      input.min = String(field.min);
      input.max = String(field.max);
      const shown = field.default_shown || String(field.default);
      input.placeholder = shown;
      input.title = `${field.help}: ${field.min} to ${field.max} (default ${shown})`;
    }
  }
}

function addRow(values = {}) {
  const row = $("#job-row-template").content.firstElementChild.cloneNode(true);
  fitParams(row);
  for (const [name, value] of Object.entries(values)) row.querySelector(`[name=${name}]`).value = value;
  row.querySelector(".remove-row").addEventListener("click", () => row.remove());
  $("#job-rows tbody").append(row);
}

async function submitWorkflow(event) {
  event.preventDefault();
  $("#create-error").textContent = "";
  const jobs = [...$("#job-rows tbody").rows].map((row) => {
    const get = (name) => row.querySelector(`[name=${name}]`).value.trim();
    const params = {};
    for (const name of PARAMS) {
      const value = get(name);
      if (value) params[name] = paramSchema[name]?.choices ? value : Number(value);
    }
    return {
      key: get("key"),
      branch: get("branch"),
      job_type: get("job_type"),
      wsi_path: get("wsi_path"),
      depends_on: get("depends_on").split(",").map((s) => s.trim()).filter(Boolean),
      params,
    };
  });
  try {
    const workflow = await api("POST", "/workflows", { name: $("#wf-name").value.trim(), jobs });
    upsert(workflow);
    follow(workflow);
  } catch (error) {
    if (!(error instanceof Stale)) $("#create-error").textContent = error.message;
  }
}

// ---- workflows and live updates --------------------------------------------

function upsert(workflow) {
  state.workflows.set(workflow.workflow_id, workflow);
  render();
}

function applyEvent(event) {
  if (event.kind === "SNAPSHOT") {
    upsert(event.workflow);
    return;
  }
  const workflow = state.workflows.get(event.job.workflow_id);
  if (!workflow) return;
  workflow.jobs = workflow.jobs.map((job) => (job.job_id === event.job.job_id ? event.job : job));
  workflow.state = event.workflow_state;
  workflow.progress = event.workflow_progress;
  workflow.sequence = event.sequence;
  render();
  if (event.kind === "JOB_STATE") refreshStats();
}

async function follow(workflow) {
  const id = workflow.workflow_id;
  if (state.streams.has(id) || TERMINAL.has(workflow.state)) return;
  const controller = new AbortController();
  state.streams.set(id, controller);
  let after = workflow.sequence || 0;
  try {
    while (!controller.signal.aborted) {
      const reply = await fetch(`/workflows/${id}/events?after=${after}`, {
        headers: identityHeaders(), signal: controller.signal,
      });
      if (!reply.ok) break;
      const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          after = event.sequence;
          applyEvent(event);
        }
      }
      if (TERMINAL.has(state.workflows.get(id)?.state)) break;
      await new Promise((r) => setTimeout(r, 1000)); // dropped: resume after the last sequence
    }
  } catch (error) {
    if (error.name !== "AbortError") console.warn("event stream", id, error.message);
  } finally {
    state.streams.delete(id);
  }
}

function percent(progress) {
  return Math.round(progress?.percent || 0);
}

function bar(progress) {
  const fill = el("div");
  fill.style.width = `${percent(progress)}%`; // CSSOM: allowed by the page's CSP, unlike a style attribute
  return el("div", { class: "bar", role: "progressbar", "aria-valuenow": String(percent(progress)) }, fill);
}

// Durations and ages as people read them (the CLI's wsi_client.digest does the same).
function humanDuration(seconds) {
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) {
    const whole = Math.round(seconds);
    const rest = whole % 60;
    return rest ? `${Math.floor(whole / 60)} min ${rest} s` : `${whole / 60} min`;
  }
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function humanAge(seconds) {
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function jobSeconds(job) {
  return job.start_time && job.end_time ? (Date.parse(job.end_time) - Date.parse(job.start_time)) / 1000 : null;
}

// What a person compares between runs: backend, nuclei, time taken.
function jobFacts(job) {
  const summary = job.result?.summary || {};
  const seconds = jobSeconds(job);
  const facts = [
    summary.backend || null,
    typeof summary.nuclei === "number" ? `${summary.nuclei.toLocaleString("en")} nuclei` : null,
    seconds !== null ? humanDuration(seconds) : null,
  ].filter(Boolean);
  return facts.join(" · ");
}

function workflowFacts(wf) {
  const slides = [...new Set(wf.jobs.map((job) => job.wsi_path.split("/").pop()))];
  const backends = [...new Set(wf.jobs.map((job) => job.result?.summary?.backend).filter(Boolean))];
  const counts = wf.jobs.map((job) => job.result?.summary?.nuclei).filter((n) => typeof n === "number");
  const starts = wf.jobs.map((job) => job.start_time).filter(Boolean).map(Date.parse);
  const ends = wf.jobs.map((job) => job.end_time).filter(Boolean).map(Date.parse);
  const facts = [slides.join(", ")];
  if (backends.length) facts.push(backends.join(", "));
  if (counts.length) facts.push(`${counts.reduce((a, b) => a + b, 0).toLocaleString("en")} nuclei`);
  if (TERMINAL.has(wf.state) && starts.length && ends.length === wf.jobs.length) {
    facts.push(`took ${humanDuration((Math.max(...ends) - Math.min(...starts)) / 1000)}`);
  }
  if (wf.create_time) facts.push(`created ${humanAge((Date.now() - Date.parse(wf.create_time)) / 1000)}`);
  return facts.join(" · ");
}

function jobRow(job) {
  const tiles = job.progress?.tiles_total ? `${job.progress.tiles_done} / ${job.progress.tiles_total} tiles` : "";
  const actions = [];
  if (!TERMINAL.has(job.state)) {
    actions.push(el("button", { class: "cancel-job", onclick: () => act(() => api("POST", `/jobs/${job.job_id}/cancel`)) }, "Cancel"));
  }
  if (job.state === "SUCCEEDED") {
    actions.push(el("button", { class: "show-result", onclick: () => showResult(job) }, "Result"));
  }
  return el("tr", { "data-job": job.key, "data-state": job.state },
    el("td", {}, el("strong", {}, job.key), el("div", { class: "muted" }, `${job.branch} · ${job.job_type}`),
      el("div", { class: "muted slide" }, job.wsi_path),
      job.state === "SUCCEEDED" ? el("div", { class: "muted job-facts" }, jobFacts(job)) : null),
    el("td", {}, el("span", { class: `badge ${job.state}` }, job.state),
      job.attempt > 1 ? el("div", { class: "muted" }, `attempt ${job.attempt}`) : null),
    el("td", { class: "progress-cell" }, bar(job.progress), el("div", { class: "tiles" }, tiles ? `${tiles} · ${percent(job.progress)}%` : `${percent(job.progress)}%`),
      // Before its first tile a running job reads the slide, finds the tissue and
      // loads its segmenter (a model takes seconds): say so, not just "0 %".
      job.state === "RUNNING" && !job.progress?.tiles_done ? el("div", { class: "phase muted" }, "preparing: reading the slide, finding the tissue, loading the segmenter") : null,
      job.state === "PENDING" && job.pending_reason ? el("div", { class: "reason muted" }, job.pending_reason) : null,
      job.error ? el("div", { class: "err" }, job.error) : null),
    el("td", {}, actions));
}

function render() {
  const list = $("#workflow-list");
  const workflows = [...state.workflows.values()].sort((a, b) => (b.create_time || "").localeCompare(a.create_time || ""));
  $("#no-workflows").hidden = workflows.length > 0;
  list.replaceChildren(...workflows.map((wf) =>
    el("article", { class: "workflow", "data-workflow": wf.workflow_id, "data-state": wf.state },
      el("div", { class: "workflow-head" },
        el("span", { class: "name" }, wf.name || "workflow"),
        el("span", { class: `badge ${wf.state}` }, wf.state),
        el("span", { class: "spacer" }),
        el("span", { class: "muted workflow-percent" }, `${percent(wf.progress)}%`),
        el("button", { class: "workflow-table", title: "one row per job: state, error, nuclei, density, measurements", onclick: () => act(() => saveAs(`/workflows/${wf.workflow_id}/table`, `workflow-${wf.workflow_id.slice(0, 8)}.csv`)) }, "Table (CSV)"),
        TERMINAL.has(wf.state) ? null : el("button", { class: "cancel-workflow", onclick: () => act(() => api("POST", `/workflows/${wf.workflow_id}/cancel`)) }, "Cancel all")),
      el("div", { class: "muted workflow-facts" }, workflowFacts(wf)),
      bar(wf.progress),
      el("table", { class: "jobs" }, el("tbody", {}, wf.jobs.map(jobRow))))));
}

async function act(action) {
  try {
    await action();
  } catch (error) {
    if (!(error instanceof Stale)) alert(error.message);
  }
}

// ---- results ----------------------------------------------------------------

async function blobUrl(path) {
  const epoch = state.epoch;
  const reply = await fetch(path, { headers: identityHeaders() });
  if (!reply.ok) throw new Error(`${reply.status} ${path}`);
  const blob = await reply.blob();
  if (epoch !== state.epoch) throw new Stale();
  const url = URL.createObjectURL(blob);
  state.blobs.add(url);
  return url;
}

// An answer saved as a file: fetched with the identity header, which a plain link cannot send.
async function saveAs(path, name) {
  el("a", { href: await blobUrl(path), download: name }).click();
}

function revokeBlobs() {
  for (const url of state.blobs) URL.revokeObjectURL(url);
  state.blobs.clear();
}

// ---- slide viewer -------------------------------------------------------------

let slideViewer = null;

function closeViewer() {
  slideViewer?.close();
  slideViewer = null;
  window.wsiViewer = null;
  $("#viewer").replaceChildren();
  $("#viewer").removeAttribute("data-mode");
  $("#viewer").removeAttribute("data-nuclei");
  $("#viewer-panel").hidden = true;
  $("#viewer-error").textContent = "";
  $("#density-legend").textContent = "";
  $("#result-dialog").classList.remove("viewing");
  delete $("#region-status").dataset.workflow;
  clearRegion();
  showNucleus(null);
}

// ---- a region of the slide, analysed as a new job ----------------------------

function clearRegion() {
  $("#draw-region").setAttribute("aria-pressed", "false");
  $("#region-actions").hidden = true;
  $("#region-size").textContent = "";
  $("#region-status").textContent = "";
}

function drawRegion(job) {
  const viewer = slideViewer;
  if (!viewer) return;
  clearRegion();
  $("#draw-region").setAttribute("aria-pressed", "true");
  $("#region-status").textContent = "Drag on the slide to draw the region.";
  viewer.drawRegion((box) => {
    if (slideViewer !== viewer) return;
    clearRegion();
    if (!box) return;
    const [x0, y0, x1, y1] = box;
    $("#region-size").textContent = `${x1 - x0} x ${y1 - y0} px from (${x0}, ${y0}):`;
    $("#region-actions").hidden = false;
    $("#analyse-region").onclick = () => act(() => analyseRegion(job, box));
  });
}

// A new workflow of one job: this job's type, slide and parameters, limited to the box.
async function analyseRegion(job, box) {
  const params = { ...(job.params || {}), region: box.join(",") };
  const workflow = await api("POST", "/workflows", {
    name: `${job.key}: region ${box.join(",")}`,
    jobs: [{ key: "region", branch: "region", job_type: job.job_type, wsi_path: job.wsi_path, params }],
  });
  upsert(workflow);
  follow(workflow);
  $("#region-actions").hidden = true;
  $("#region-status").textContent = `Submitted: workflow ${workflow.workflow_id}, in the list below.`;
  $("#region-status").dataset.workflow = workflow.workflow_id;
}

function layers() {
  return { tissue: $("#layer-tissue").checked, nuclei: $("#layer-nuclei").checked, density: $("#layer-density").checked };
}

function showNucleus(feature) {
  const measured = feature?.properties?.measurements || {};
  $("#cell-hint").textContent = feature ? "" : "none selected";
  $("#cell-info").replaceChildren(...(feature ? [["id", feature.id], ...Object.entries(measured)] : [])
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-measure": k }, v)]));
}

async function openViewer(job) {
  closeViewer();
  const epoch = state.epoch;
  $("#result-dialog").classList.add("viewing");
  $("#viewer-panel").hidden = false;
  const hasCells = resultFiles.cells in (job.result?.files || {});
  $("#layer-nuclei").disabled = $("#layer-density").disabled = !hasCells;
  const viewer = new SlideViewer({
    job, headers: identityHeaders(), element: $("#viewer"), layers: layers(), onSelect: showNucleus,
    names: resultFiles,
  });
  slideViewer = viewer;
  try {
    await viewer.open();
  } catch (error) {
    if (epoch !== state.epoch || slideViewer !== viewer) return;
    closeViewer();
    $("#viewer-error").textContent = `The slide viewer cannot open: ${error.message}`;
    return;
  }
  if (slideViewer !== viewer) return;
  $("#draw-region").onclick = () => drawRegion(job);
  $("#density-legend").textContent = viewer.densityLegend();
  window.wsiViewer = viewer; // for scripts and tests driving the view
}

function clearResult() {
  closeViewer();
  const dialog = $("#result-dialog");
  if (dialog.open) dialog.close();
  $("#result-preview").removeAttribute("src");
  $("#result-title").textContent = "Result";
  $("#result-summary").replaceChildren();
  $("#result-links").replaceChildren();
  revokeBlobs();
}

// The backend and what ran it: "learned (onnx-int8, cpu)".
function backendRan(summary) {
  if (!summary.backend) return "–";
  const details = summary.backend_details || {};
  const ran = [details.engine, details.device].filter((v) => typeof v === "string" && v);
  return ran.length ? `${summary.backend} (${ran.join(", ")})` : summary.backend;
}

async function showResult(job) {
  clearResult();
  const dialog = $("#result-dialog");
  $("#result-title").textContent = `${job.key} — ${job.job_type}`;
  const summary = job.result?.summary || {};
  const facts = {
    "nuclei": summary.nuclei ?? "–",
    "tissue share": summary.tissue_fraction !== undefined ? `${Math.round(summary.tissue_fraction * 100)} %` : "–",
    "tiles processed / skipped": `${summary.tiles_processed ?? 0} / ${summary.tiles_skipped ?? 0}`,
    "pixel size used": summary.mpp_used ? `${summary.mpp_used} µm/px (level ${summary.level})` : `level ${summary.level ?? 0}`,
    "backend": backendRan(summary),
    "time": summary.timings?.total_s ? humanDuration(summary.timings.total_s) : "–",
  };
  // Why the pixel size is not the one asked for, or what a slide without one was taken as.
  if (summary.mpp_note) facts["pixel size note"] = summary.mpp_note;
  $("#result-summary").replaceChildren(...Object.entries(facts).flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, v)]));
  const links = $("#result-links");
  for (const name of Object.keys(job.result?.files || {}).sort()) {
    const link = el("a", { href: "#", "data-file": name }, name);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      act(() => saveAs(`/jobs/${job.job_id}/results/${name}`, name));
    });
    links.append(link);
  }
  $("#open-viewer").onclick = () => act(() => openViewer(job));
  // The image first, then the dialog: it never shows an earlier picture.
  const preview = await blobUrl(`/jobs/${job.job_id}/results/${resultFiles.preview}`);
  $("#result-preview").src = preview;
  dialog.showModal();
}

// ---- dashboard ----------------------------------------------------------------

// The slide picker: the names /slides lists, offered in every job row's slide field.
// The job row a picked slide goes to: the one whose slide field was used
// last, else the last row.
let slideTarget = null;

function pickSlide(name) {
  const rows = [...document.querySelectorAll("#job-rows tbody [name=wsi_path]")];
  const target = rows.includes(slideTarget) ? slideTarget : rows[rows.length - 1];
  if (!target) return;
  target.value = name;
  target.focus();
}

// A cohort from the picker: every listed slide of a folder, one job row each.
function folderButtons(names) {
  const folders = new Map();
  for (const name of names) {
    const cut = name.lastIndexOf("/");
    if (cut > 0) folders.set(name.slice(0, cut), [...(folders.get(name.slice(0, cut)) || []), name]);
  }
  return [...folders].map(([folder, slides]) =>
    el("li", {}, el("button", { type: "button", class: "add-folder", "data-folder": folder, onclick: () => addFolder(slides) },
      `Add all ${slides.length} slide${slides.length === 1 ? "" : "s"} of ${folder}/`)));
}

// One job row per slide, each in its own branch (named after the file), with the
// job type and parameters of the row whose slide field was used last (its template);
// that row takes the first slide if its slide field is empty.
function addFolder(slides) {
  const rows = [...document.querySelectorAll("#job-rows tbody tr")];
  const template = rows.find((row) => row.querySelector("[name=wsi_path]") === slideTarget) || rows[rows.length - 1];
  const copied = {};
  for (const name of ["job_type", ...PARAMS]) copied[name] = template.querySelector(`[name=${name}]`).value;
  let fill = template.querySelector("[name=wsi_path]").value ? null : template;
  for (const slide of slides) {
    const branch = slide.slice(slide.lastIndexOf("/") + 1);
    if (fill) {
      fill.querySelector("[name=wsi_path]").value = slide;
      fill.querySelector("[name=branch]").value = branch;
      fill = null;
    } else {
      addRow({ ...copied, wsi_path: slide, branch });
    }
  }
}

async function loadSlides() {
  try {
    const listing = await api("GET", "/slides?page_size=1000");
    const described = listing.slides.map((slide) => [slide.name, slide.error ? slide.error
      : [`${slide.width} x ${slide.height} px`, slide.mpp ? `${Number(slide.mpp).toFixed(3)} µm/px` : "", slide.vendor]
        .filter(Boolean).join(", ")]);
    $("#slide-list").replaceChildren(...described.map(([name, facts]) => el("option", { value: name }, facts)));
    $("#slide-picker-list").replaceChildren(...folderButtons(listing.slides.map((slide) => slide.name)),
      ...described.map(([name, facts]) =>
        el("li", {}, el("button", { type: "button", "data-slide": name, onclick: () => pickSlide(name) },
          el("strong", {}, name), " ", el("span", { class: "muted" }, facts)))));
  } catch (error) {
    if (!(error instanceof Stale)) console.warn("slides", error.message);
  }
}

async function refreshStats() {
  if (!state.identity) return;
  try {
    const stats = await api("GET", "/stats");
    $("#stat-running").textContent = stats.running_jobs;
    $("#stat-pending").textContent = stats.my_pending_jobs;
    $("#stat-users").textContent = `${stats.active_users} / ${stats.waiting_users}`;
    $("#stat-slots").textContent = `${stats.worker_slots_busy} / ${stats.worker_slots_total}`;
    $("#stat-branches").replaceChildren(...stats.branches.map((b) => el("li", {}, `${b.branch}: ${b.pending} queued, ${b.running} running`)));
  } catch (error) {
    if (!(error instanceof Stale)) console.warn("stats", error.message);
  }
}

// ---- start ----------------------------------------------------------------------

function clearForm() {
  $("#wf-name").value = "";
  $("#create-error").textContent = "";
  $("#job-rows tbody").replaceChildren();
  addRow();
}

function clearDashboard() {
  for (const id of ["#stat-running", "#stat-pending", "#stat-users", "#stat-slots"]) $(id).textContent = "–";
  $("#stat-branches").replaceChildren();
  $("#slide-list").replaceChildren();
  $("#slide-picker-list").replaceChildren();
}

async function useIdentity(identity) {
  state.epoch += 1; // every answer still on its way for the previous identity is dropped
  for (const controller of state.streams.values()) controller.abort();
  state.streams.clear();
  state.identity = identity;
  state.workflows.clear();
  // Nothing of the previous identity stays on screen while the new one's answers are on their way.
  clearResult();
  clearForm();
  clearDashboard();
  render();
  storage().setItem("wsi-identity", identity);
  $("#user-id").value = state.mode === "token" ? "" : identity;
  try {
    // This deployment's bounds and the backends its workers offer, asked again: workers come and go.
    paramSchema = await api("GET", "/job-params");
    for (const row of document.querySelectorAll("#job-rows tbody tr")) fitParams(row);
  } catch (error) {
    if (error instanceof Stale) throw error;
    console.warn("job params", error.message);
  }
  const page = await api("GET", "/workflows?page_size=50");
  for (const wf of page.workflows) state.workflows.set(wf.workflow_id, wf);
  render();
  page.workflows.forEach(follow);
  refreshStats();
  loadSlides();
}

async function configure() {
  try {
    const reply = await fetch("/auth");
    if (reply.ok) state.mode = (await reply.json()).mode;
  } catch (error) {
    console.warn("auth mode", error.message);
  }
  try {
    const reply = await fetch("/job-params");
    if (reply.ok) paramSchema = await reply.json();
  } catch (error) {
    console.warn("job params", error.message);
  }
  try {
    const reply = await fetch("/result-files");
    if (reply.ok) resultFiles = await reply.json();
  } catch (error) {
    console.warn("result files", error.message);
  }
  const input = $("#user-id");
  if (state.mode === "token") {
    $("#user-label").textContent = "API token";
    input.type = "password";
    input.placeholder = "your API token";
    input.removeAttribute("pattern");
    input.autocomplete = "off";
  }
  addRow();
}

function start() {
  // The forms are wired at once, before the page has asked how it is to work:
  // a submit in that moment waits for it, and never leaves as a plain form
  // submission (which would put what was typed, a token too, into a URL).
  const ready = configure();
  const later = (action) => (event) => {
    event.preventDefault();
    act(async () => {
      await ready;
      await action(event);
    });
  };
  $("#user-form").addEventListener("submit", later(() => useIdentity($("#user-id").value.trim())));
  $("#create-form").addEventListener("submit", later(submitWorkflow));
  $("#add-row").addEventListener("click", later(() => addRow()));
  $("#job-rows").addEventListener("focusin", (event) => {
    if (event.target.getAttribute("name") === "wsi_path") slideTarget = event.target;
  });
  $("#result-dialog").addEventListener("close", () => {
    $("#result-preview").removeAttribute("src");
    closeViewer();
  });
  for (const id of ["#layer-tissue", "#layer-nuclei", "#layer-density"]) {
    $(id).addEventListener("change", () => {
      if (!slideViewer) return;
      slideViewer.layers = layers();
      slideViewer.draw();
    });
  }
  setInterval(refreshStats, 2000);
  ready.then(() => {
    const stored = storage().getItem("wsi-identity") || "";
    if (stored) act(() => useIdentity(stored));
  });
}

start();
