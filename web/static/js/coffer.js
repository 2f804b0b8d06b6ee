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
