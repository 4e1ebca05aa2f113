// The classify page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const classifyForm = document.getElementById("classify-form");
onSubmitBusy(classifyForm, () => classify(classifyForm.image.files[0]));
// One click on an example cell: fetch the file from this server and classify it like an upload.
document.querySelectorAll("button.example").forEach((example) => {
  example.addEventListener("click", async () => {
    example.disabled = true;
    try {
      const response = await fetch(example.dataset.src);
      if (!response.ok) { showError("classify-error", "The example could not be loaded."); return; }
      const blob = await response.blob();
      await classify(new File([blob], example.dataset.name, {type: "image/png"}));
    } catch (_) {
      showError("classify-error", "The server could not be reached: check the connection and try again.");
    } finally {
      example.disabled = false;
    }
  });
});
async function classify(file) {
  const data = new FormData();
  data.append("image", file);
  const url = document.body.dataset.classifyUrl;
  const started = performance.now();
  const [ok, body] = await postForm(url + "?explain=true", data);
  const elapsed = performance.now() - started;
  const result = document.getElementById("classify-result");
  if (!ok) { showError("classify-error", body.error); result.hidden = true; return; }
  showError("classify-error", null);
  const warning = document.getElementById("cell-warning");
  warning.textContent = body.warning || "";
  warning.hidden = !body.warning;
  document.getElementById("preview").src = URL.createObjectURL(file);
  document.getElementById("label").textContent = body.label;
  document.getElementById("latency").textContent = `answered in ${elapsed.toFixed(0)} ms, with the heat map`;
  const list = document.getElementById("probabilities");
  list.replaceChildren(...Object.entries(body.probabilities).map(([label, p]) => {
    const item = document.createElement("li");
    const name = document.createElement("span"), meter = document.createElement("meter"), share = document.createElement("span");
    name.textContent = label;
    Object.assign(meter, {min: 0, max: 1, value: p});
    share.textContent = `${(100 * p).toFixed(1)} %`;
    item.append(name, " ", meter, " ", share);
    return item;
  }));
  const explanation = document.getElementById("explanation");
  if (body.heatmap_png_base64) {
    document.getElementById("heatmap").src = "data:image/png;base64," + body.heatmap_png_base64;
    document.getElementById("heatmap-caption").textContent =
      `Where covering the cell with a small black patch lowers the model's probability of ${body.label} the most ` +
      `(${body.heatmap_method}): red regions are what the answer rests on. It shows where the model looks, ` +
      "not whether it is right.";
  }
  explanation.hidden = !body.heatmap_png_base64;
  document.getElementById("model-line").textContent = `model ${body.model.name} v${body.model.version}`;
  const endpoint = new URL(url, window.location.href).href;
  const name = file.name.replace(/'/g, "");
  document.getElementById("code-curl").textContent = `curl -F image=@'${name}' ${endpoint}`;
  document.getElementById("code-python").textContent =
    `import requests\nwith open(${JSON.stringify(name)}, "rb") as f:\n` +
    `    answer = requests.post(${JSON.stringify(endpoint)}, files={"image": f}).json()\n` +
    `print(answer["label"], answer["probabilities"])`;
  result.hidden = false;
}
