// The classify page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const classifyForm = document.getElementById("classify-form");
onSubmitBusy(classifyForm, submit);
async function submit() {
  const file = classifyForm.image.files[0];
  const data = new FormData();
  data.append("image", file);
  const [ok, body] = await postForm(document.body.dataset.classifyUrl, data);
  const result = document.getElementById("classify-result");
  if (!ok) { showError("classify-error", body.error); result.hidden = true; return; }
  showError("classify-error", null);
  const warning = document.getElementById("cell-warning");
  warning.textContent = body.warning || "";
  warning.hidden = !body.warning;
  document.getElementById("preview").src = URL.createObjectURL(file);
  document.getElementById("label").textContent = body.label;
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
  document.getElementById("model-line").textContent = `model ${body.model.name} v${body.model.version}`;
  result.hidden = false;
}
