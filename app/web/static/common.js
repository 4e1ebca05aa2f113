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
