// The review page (loaded as a file: the pages' CSP allows no inline script).
"use strict";
const reviewForm = document.getElementById("review-form");
let lastReview = null, lastLabel = null, lastVersion = null;
const feedbackButtons = () => [document.getElementById("correct"), document.getElementById("incorrect")];
onSubmitBusy(reviewForm, submit);
// An example fills the box and is predicted at once.
document.querySelectorAll("button.example").forEach((example) => {
  example.addEventListener("click", () => { reviewForm.review.value = example.dataset.text; reviewForm.requestSubmit(); });
});
async function submit() {
  const started = performance.now();
  const [ok, body] = await postForm(document.body.dataset.reviewUrl, new FormData(reviewForm));
  const elapsed = performance.now() - started;
  if (!ok) {
    // The earlier answer goes with its buttons: feedback must never be stored for another review.
    lastReview = lastLabel = lastVersion = null;
    feedbackButtons().forEach((button) => { button.disabled = true; });
    document.getElementById("review-result").hidden = true;
    showError("review-error", body.error);
    return;
  }
  showError("review-error", null);
  lastReview = reviewForm.review.value; lastLabel = body.label; lastVersion = body.model.version;
  feedbackButtons().forEach((button) => { button.disabled = false; });  // one answer per prediction
  document.getElementById("sentiment").textContent = body.label;
  document.getElementById("probability").textContent = (100 * body.probability_positive).toFixed(1) + " %";
  document.getElementById("feedback-status").textContent = "";
  document.getElementById("latency").textContent = `answered in ${elapsed.toFixed(0)} ms`;
  const endpoint = new URL(document.body.dataset.reviewUrl, window.location.href).href;
  document.getElementById("code-curl").textContent = `curl -F review=${shellQuote(lastReview)} ${endpoint}`;
  document.getElementById("code-python").textContent = `import requests\nanswer = requests.post(${JSON.stringify(endpoint)}, ` +
    `data={"review": ${JSON.stringify(lastReview)}}).json()\nprint(answer["label"], answer["probability_positive"])`;
  document.getElementById("review-result").hidden = false;
}
async function sendFeedback(correct) {
  feedbackButtons().forEach((button) => { button.disabled = true; });
  const label = correct ? lastLabel : (lastLabel === "positive" ? "negative" : "positive");
  const data = new FormData();
  data.append("review", lastReview); data.append("label", label); data.append("version", lastVersion);
  const [ok, body] = await postForm(document.body.dataset.feedbackUrl, data);
  document.getElementById("feedback-status").textContent = ok
    ? `Thank you: stored as ${label}. The model learns from it at the next update.`
    : `Could not store the feedback: ${body.error}`;
}
document.getElementById("correct").addEventListener("click", () => sendFeedback(true));
document.getElementById("incorrect").addEventListener("click", () => sendFeedback(false));
// A string as one single-quoted shell word.
function shellQuote(text) { return "'" + text.replace(/'/g, "'\\''") + "'"; }
