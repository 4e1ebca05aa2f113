// The jobs page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const form = document.getElementById("job-form");
const statusLine = document.getElementById("status");
const resultBox = document.getElementById("result");
const heatmap = document.getElementById("heatmap");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData();
  data.append("model", form.model.value);
  if (form.payload.files.length) data.append("payload", form.payload.files[0]);
  else data.append("text", form.text.value);
  resultBox.textContent = ""; heatmap.hidden = true;
  const response = await fetch(document.body.dataset.jobsUrl, {method: "POST", body: data});
  const job = await response.json();
  if (!response.ok) { statusLine.textContent = "Error: " + job.error; return; }
  poll(response.headers.get("Location"));
});
async function poll(url) {
  const job = await (await fetch(url)).json();
  statusLine.textContent = `Job ${job.id}: ${job.status} (attempt ${job.attempts} of ${job.max_attempts})`;
  if (["queued", "running"].includes(job.status)) { setTimeout(() => poll(url), 500); return; }
  const result = Object.assign({}, job.result || {});
  if (result.heatmap_png_base64) {
    heatmap.src = "data:image/png;base64," + result.heatmap_png_base64; heatmap.hidden = false;
    result.heatmap_png_base64 = "(shown below)";
  }
  resultBox.textContent = JSON.stringify(job.error ? {error: job.error} : result, null, 2);
}
