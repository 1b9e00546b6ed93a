// The console's only script: the copy button of a new secret, and Edit's scope toggle (a
// Read-only key cannot pick a write permission). Everything works without it but copying.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const done = button.parentElement.querySelector(".copied");
  const say = (text) => { if (done) done.textContent = text; };
  field.select();
  if (navigator.clipboard) {
    navigator.clipboard.writeText(field.value).then(() => say("Copied."), () => say("Select the text and copy it."));
  } else {
    say("Select the text and copy it.");
  }
});

function applyScope() {
  const readOnly = document.querySelector('input[name="scope"][value="read"]');
  if (!readOnly) return;
  for (const box of document.querySelectorAll("input[data-write]")) {
    box.disabled = readOnly.checked;
    if (readOnly.checked) box.checked = false;
  }
}

document.addEventListener("change", (event) => {
  if (event.target.name === "scope") applyScope();
});
document.addEventListener("DOMContentLoaded", applyScope);
