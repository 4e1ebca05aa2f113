// The jobs page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const form = document.getElementById("job-form");
const statusLine = document.getElementById("status");
const resultBox = document.getElementById("result");
const heatmap = document.getElementById("heatmap");
const button = form.querySelector("button[type=submit]");
// A file chosen for an image model must not be sent once another model is picked.
form.model.addEventListener("change", () => { form.payload.value = ""; });
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  button.disabled = true;
  const data = new FormData();
  data.append("model", form.model.value);
  if (form.payload.files.length) data.append("payload", form.payload.files[0]);
  else data.append("text", form.text.value);
  resultBox.textContent = ""; heatmap.hidden = true;
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
  poll(response.headers.get("Location"), Date.now());
});
async function poll(url, started) {
  let job;
  try {
    job = await (await fetch(url)).json();
  } catch (_) {  // the job is kept on the server: keep asking, and let a new one be submitted meanwhile
    statusLine.textContent = "The server could not be reached; still trying. The job is kept on the server.";
    button.disabled = false;
    setTimeout(() => poll(url, started), 2000);
    return;
  }
  let line = `Job ${job.id}: ${job.status} (attempt ${job.attempts} of ${job.max_attempts})`;
  if (job.status === "queued" && job.attempts === 0 && Date.now() - started > 5000) {
    line += ". No worker has taken it yet: jobs run on pull workers (modelserve worker --server URL).";
  }
  statusLine.textContent = line;
  if (["queued", "running"].includes(job.status)) { setTimeout(() => poll(url, started), 500); return; }
  button.disabled = false;
  const result = Object.assign({}, job.result || {});
  if (result.heatmap_png_base64) {
    heatmap.src = "data:image/png;base64," + result.heatmap_png_base64; heatmap.hidden = false;
    result.heatmap_png_base64 = "(shown below)";
  }
  resultBox.textContent = JSON.stringify(job.error ? {error: job.error} : result, null, 2);
}
