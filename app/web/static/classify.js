// The classify page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const classifyForm = document.getElementById("classify-form");
onSubmitBusy(classifyForm, submit);
async function submit() {
  const file = classifyForm.image.files[0];
  const data = new FormData();
  data.append("image", file);
  const response = await fetch(document.body.dataset.classifyUrl, {method: "POST", body: data});
  const body = await response.json();
  const error = document.getElementById("classify-error");
  const result = document.getElementById("classify-result");
  if (!response.ok) { error.textContent = body.error; error.hidden = false; result.hidden = true; return; }
  error.hidden = true;
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
