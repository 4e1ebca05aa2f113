// The jobs page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const form = document.getElementById("job-form");
const statusLine = document.getElementById("status");
const summary = document.getElementById("summary");
const rawBox = document.getElementById("raw-box");
const resultBox = document.getElementById("result");
const heatmapBox = document.getElementById("heatmap-box");
const cancelButton = document.getElementById("cancel");
const button = form.querySelector("button[type=submit]");
let current = null;  // the URL of the job being watched
// The form asks for what the chosen model takes: a text, or an image file (a file picked for an image
// model is dropped once another model is chosen, so it is never sent to a text model).
function followModel() {
  const kind = form.model.selectedOptions[0].dataset.kind;
  document.getElementById("text-input").hidden = kind === "image";
  document.getElementById("file-input").hidden = kind !== "image";
  form.text.required = kind !== "image";
  form.payload.required = kind === "image";
  if (kind !== "image") form.payload.value = "";
}
form.model.addEventListener("change", followModel);
followModel();
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  button.disabled = true;
  const data = new FormData();
  data.append("model", form.model.value);
  if (form.model.selectedOptions[0].dataset.kind === "image") data.append("payload", form.payload.files[0]);
  else data.append("text", form.text.value);
  summary.replaceChildren(); rawBox.hidden = true; heatmapBox.hidden = true;
  let response, job;
  try {
    response = await fetch(document.body.dataset.jobsUrl, {method: "POST", body: data});
    job = await response.json();
  } catch (_) {
    statusLine.textContent = "Error: the server could not be reached; check the connection and try again.";
    button.disabled = false;
    return;
  }
  if (!response.ok) { statusLine.textContent = "Error: " + job.error; button.disabled = false; return; }
  current = response.headers.get("Location");
  cancelButton.hidden = false;
  poll(current, Date.now());
});
cancelButton.addEventListener("click", async () => {
  cancelButton.disabled = true;
  try {
    const response = await fetch(current, {method: "DELETE"});
    const body = await response.json();
    if (!response.ok) statusLine.textContent = "Could not cancel: " + body.error;
  } catch (_) {
    statusLine.textContent = "Could not cancel: the server could not be reached.";
  } finally {
    cancelButton.disabled = false;
  }
});
// What a job is doing, in words.
function describe(job, started) {
  const attempt = `attempt ${job.attempts} of ${job.max_attempts}`;
  if (job.status === "queued") {
    const waiting = Date.now() - started > 5000 && job.attempts === 0
      ? ": no worker has taken it yet (jobs run on pull workers: modelserve worker --server URL)" : "";
    return `Job ${job.id}: waiting for a worker${waiting}.`;
  }
  if (job.status === "running" && !job.started_at) {
    return `Job ${job.id}: handed to worker ${job.worker}, waiting for it to start (${attempt}).`;
  }
  if (job.status === "running") {
    return `Job ${job.id}: running on worker ${job.worker} since ${new Date(job.started_at).toLocaleTimeString()} (${attempt}).`;
  }
  return `Job ${job.id}: ${job.status}${job.error ? ": " + job.error : ""}.`;
}
async function poll(url, started) {
  if (url !== current) return;  // a newer job is being watched
  let job;
  try {
    job = await (await fetch(url)).json();
  } catch (_) {  // the job is kept on the server: keep asking, and let a new one be submitted meanwhile
    statusLine.textContent = "The server could not be reached; still trying. The job is kept on the server.";
    button.disabled = false;
    setTimeout(() => poll(url, started), 2000);
    return;
  }
  statusLine.textContent = describe(job, started);
  if (["queued", "running"].includes(job.status)) { setTimeout(() => poll(url, started), 500); return; }
  button.disabled = false;
  cancelButton.hidden = true;
  showResult(job);
}
// A readable answer (label, then each probability as a percentage), the heat map, and the raw JSON folded away.
function showResult(job) {
  const result = Object.assign({}, job.result || {});
  if (result.heatmap_png_base64) {
    document.getElementById("heatmap").src = "data:image/png;base64," + result.heatmap_png_base64;
    heatmapBox.hidden = false;
    result.heatmap_png_base64 = "(shown above)";
  }
  if (result.label !== undefined) {
    const verdict = document.createElement("p");
    verdict.className = "verdict";
    verdict.append("Prediction: ");
    const label = document.createElement("strong");
    label.textContent = String(result.label);
    verdict.append(label);
    summary.append(verdict);
    const list = document.createElement("ul");
    for (const [name, p] of Object.entries(result.probabilities || {})) {
      const item = document.createElement("li");
      item.textContent = `${name}: ${(100 * p).toFixed(1)} %`;
      list.append(item);
    }
    summary.append(list);
  }
  resultBox.textContent = JSON.stringify(job.error ? {error: job.error} : result, null, 2);
  rawBox.hidden = false;
}
