// Shared by the pages (loaded before each page's own script).
"use strict";
// Run `handler` on submit with the form's button disabled (busy) until it is done.
function onSubmitBusy(form, handler) {
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try { await handler(); } finally { button.disabled = false; }
  });
}
// POST `data` to `url`; returns [ok, body]. A server that cannot be reached, or an answer that is not
// JSON (a proxy's 413 page), becomes an error body the page shows like any other.
async function postForm(url, data) {
  let response;
  try {
    response = await fetch(url, {method: "POST", body: data});
  } catch (_) {
    return [false, {error: "The server could not be reached: check the connection and try again."}];
  }
  try {
    return [response.ok, await response.json()];
  } catch (_) {
    const error = response.status === 413 ? "The upload is too large for the server."
      : `The server answered ${response.status} ${response.statusText}.`;
    return [false, {error}];
  }
}
// Show `message` in the page's error line, or hide it (null).
function showError(id, message) {
  const line = document.getElementById(id);
  line.textContent = message || "";
  line.hidden = !message;
}
