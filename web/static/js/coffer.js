// Coffer web UI behaviours that htmx has no attribute for. Loaded as a
// file (the Content-Security-Policy allows no inline script); every
// behaviour hangs off a data- attribute, so pages stay plain HTML and work
// without it where they can.
"use strict";

// <button data-copy="#id">: copies the text of #id to the clipboard and
// says so in the button's label for a moment.
document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  const label = button.textContent;
  navigator.clipboard.writeText(source.textContent.trim()).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Copy failed: select and copy by hand"; },
  );
  setTimeout(() => { button.textContent = label; }, 2000);
});

// <button type="button" data-remove="li">: removes the closest element
// matching the selector (a row of an editable list, such as a plan's
// include paths) and moves focus to a neighbouring row's field, so that
// keyboard users are not dropped at the top of the page.
document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-remove]");
  if (!button) return;
  const row = button.closest(button.dataset.remove);
  if (!row) return;
  const neighbour = row.nextElementSibling || row.previousElementSibling;
  row.remove();
  const field = neighbour && neighbour.querySelector("input, button");
  if (field) field.focus();
});

// <form data-reset-on-success>: clears the form once htmx has sent it and
// the server accepted it (an "add a row" form whose row was appended).
document.addEventListener("htmx:afterRequest", (ev) => {
  const form = ev.detail.elt;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-reset-on-success") && ev.detail.successful) {
    form.reset();
  }
});

// A running job's progress wrapper with data-reload-when-done (a detail
// page): when the live stream swaps in its final state, reload the page so
// that it shows everything the job recorded. The page then renders the
// finished job without the attribute, so this happens once.
const finalStates = ["succeeded", "partial", "failed", "canceled"];
document.addEventListener("htmx:sseMessage", (ev) => {
  const wrapper = ev.target.closest && ev.target.closest("[data-reload-when-done]");
  if (!wrapper) return;
  const badge = wrapper.querySelector("[data-state]");
  if (badge && finalStates.includes(badge.dataset.state)) {
    wrapper.removeAttribute("data-reload-when-done");
    window.location.reload();
  }
});
